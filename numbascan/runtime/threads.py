"""Stage: runtime — the threads of numbascan's parallel code, and the eager loop by chunks.

`NUMBASCAN_NUM_THREADS=n` caps the threads of every parallel code numbascan runs (a scan by
chunks of its state, codegen/chunks.py; ns.vmap's parallel map); unset (or 0), numba's thread
count of the calling thread (`numba.get_num_threads()`, which `numba.set_num_threads` sets for
that thread). It is read at each call.

`ChunkedLoop` runs an eager scan by chunks: the chunk function runs the chunks of one share in
each of `thread_count()` Python threads (the calling thread runs the first share), the GIL
released (nogil). Threads are started at each call and joined before it returns: 0.12 ms on
2 cores, where a prange loop (what an ns.jit program runs, codegen/chunks.py) costs 0.01 ms a
call but 0.44 s more at its first, for numba's parfor compile. A call whose estimated work is
below `NUMBASCAN_WIDE_MIN_WORK` runs its chunks in the calling thread. The chunks' size
depends on the threads (chunks.chunk_elements), the results do not.

`ThreadsCapped` wraps compiled code that runs prange loops (an ns.jit program calling a chunked
scan, a parallel map): while it runs, the calling thread's numba thread count is the cap, and
it is restored afterwards (numba's thread count is thread-local: other threads are not
affected).
"""

from __future__ import annotations

import os
import threading

import numba

from ..codegen.chunks import ChunkPlan, chunk_elements
from ..random import start_threads
from . import log

ENV = "NUMBASCAN_NUM_THREADS"


def requested():
    """The cap `NUMBASCAN_NUM_THREADS` asks for, or None (unset or 0: no cap)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{ENV}: expected a positive number of threads (0: numba's thread "
                         f"count), found {value!r}") from None
    if n < 0:
        raise ValueError(f"{ENV}: expected a positive number of threads (0: numba's thread "
                         f"count), found {value!r}")
    return n or None


def thread_count():
    """The threads parallel code may use in this call: numba's thread count of the calling
    thread, capped by `NUMBASCAN_NUM_THREADS`."""
    cap = requested()
    start_threads()                      # numba's threading layer, waiting passively
    n = numba.get_num_threads()
    return max(1, min(n, cap) if cap else n)


class ChunkedLoop:
    """An eager scan's loop run by chunks: called like a scan's loop function, (n_steps,
    seq..., buf..., non_seq..., capture...) -> n_steps."""

    def __init__(self, chunks, plan: ChunkPlan):
        self.chunks, self.plan = chunks, plan
        self.py_func = chunks.py_func

    def compile_for(self, args, what):
        """Compile the chunk function for the loop's arguments `args` (log.first_call)."""
        if not self.chunks.overloads:
            lead = (0, 0, 0)               # c0, c1, size
            log.compile_logged(self.chunks, tuple(self.chunks.typeof_pyval(a)
                                                  for a in lead + tuple(args)), what)

    def __call__(self, n_steps, *args):
        plan = self.plan
        n_threads = thread_count() if plan.on_threads(n_steps) else 1
        size = chunk_elements(plan.size, n_threads, plan.resident, plan.streams)
        n_chunks = -(-plan.size // size)
        per = -(-n_chunks // n_threads)
        shares = [(k * per, min((k + 1) * per, n_chunks)) for k in range(n_threads)]
        shares = [s for s in shares if s[0] < s[1]]
        errors = []

        def run(c0, c1):
            try:
                self.chunks(c0, c1, size, n_steps, *args)
            except BaseException as err:   # raised in the calling thread below
                errors.append(err)

        others = [threading.Thread(target=run, args=s, daemon=True) for s in shares[1:]]
        for th in others:
            th.start()
        try:
            self.chunks(*shares[0], size, n_steps, *args)
        finally:
            for th in others:
                th.join()
        if errors:
            raise errors[0]
        return n_steps


class ThreadsCapped:
    """Compiled code with prange loops, run on at most `NUMBASCAN_NUM_THREADS` threads."""

    def __init__(self, fn):
        self.call = fn
        self.fn = getattr(fn, "fn", fn)   # what log.first_call compiles
        self.py_func = fn.py_func

    def __call__(self, *args):
        cap = requested()
        if cap is None:
            return self.call(*args)
        start_threads()
        previous = numba.get_num_threads()
        n = min(cap, previous)
        if n == previous:
            return self.call(*args)
        numba.set_num_threads(n)
        try:
            return self.call(*args)
        finally:
            numba.set_num_threads(previous)


def capped(fn, runs_prange: bool):
    """`fn` itself, or wrapped in ThreadsCapped when its code runs prange loops
    (`Module.calls_parallel`)."""
    return ThreadsCapped(fn) if runs_prange else fn


def eager_loop(module, name, rendered):
    """What an eager scan calls as the loop function `name` of imported generated `module`
    (`rendered`: its codegen Module): the function itself, or a ChunkedLoop over its chunk
    function when the scan runs by chunks (its prange driver is for ns.jit programs)."""
    plan = rendered.chunked.get(name)
    if plan is None:
        return getattr(module, name)
    return ChunkedLoop(getattr(module, plan.function), plan)
