"""Stage: IR -> CPU source — a wide elementwise recurrence by chunks of its state, on every core.

A step is *element-separable* (`chunk_plan`) when element k of each new state depends on
element k of the states, of the sequence rows and of the non-sequences only, and on scalars:
every equation is elementwise, each of its operands a scalar or a value of the states' shape
S, and every output has shape S (the logistic map `a * x * (1 - x) + s_t`, a leaky
integrator, an ensemble of independent oscillators). A reduction, a matmul, a roll, a slice
or a broadcast of a row against a column mixes or moves elements: such a step runs the
one-core loop (codegen/cpu.py). So does a step that draws random numbers, stops early
(ns.until), runs inside another scan's step or shows a progress bar.

Such a scan of N = prod(S) elements, N at least `NUMBASCAN_WIDE_MIN_SIZE` (`WIDE_MIN_SIZE`),
runs as independent scans of chunks of its flattened state: chunk c holds elements
[c * size, min((c + 1) * size, N)) and runs the whole time loop on them, so its states stay in
cache from one step to the next, and the chunks are shared out among threads. Each element
sees the same operations in the same order whatever the chunking, so the results do not depend
on the number of threads, bit for bit.

    chunks_<h>(c0, c1, size, n_steps, seq..., buf..., non_seq..., capture...) -> n_steps

runs chunks c0 .. c1 - 1. Threads run the chunks when the scan's estimated work (`n_steps *
step_work`, codegen/parallel.py) reaches `NUMBASCAN_WIDE_MIN_WORK` (`WIDE_MIN_WORK`), else the
calling thread runs them all. An eager scan (runtime/threads.py) decides at each call and runs
the chunk function in one Python thread per share, the GIL released: no parfor loop to
compile. An `ns.jit` program decides from the scan's static number of steps, when it is
rendered: below the threshold it calls the chunk function itself; above it, the scan's loop
function

    scan_<h>(chunks_address, n_steps, seq..., buf..., non_seq..., capture...) -> n_steps

which shares the chunks out with prange and calls the chunk function at `chunks_address`
(codegen/calls.py). That prange loop is a parfor for numba to compile: 0.44 s more on the
program's first call (W4's scan in ns.jit, 2 cores; numba's disk cache keeps it).

Buffers (core/layout.py) keep their layout; per chunk, the kernel reads and writes their
columns i0:i1 (the flattened state's elements) of the rows the layout fixes for step t. A state
kept last with taps (-1,) is read and written in row 0, in place (like the one-core loop's
`in_place_outputs`), and copied to row 1 after an odd number of steps (its last row). Every
element's inputs are loaded before any of its results is stored: the states may be written in
place whatever the order in which the step reads them.

Chunk sizes (`chunk_elements`): the elements a chunk keeps resident (its states' rows and its
per-element non-sequences) fill at most `RESIDENT_BYTES` of cache, in a multiple of the threads'
number of chunks. A step that streams a row of N values per step from memory (a sequence of
shape (T, *S), an output kept at every step) is bound by memory bandwidth, not cache: its chunks
are as large as `STREAM_BYTES` allows, one per thread at W4's sizes (smaller chunks cut the
sequence's rows into pieces: W4 on 2 cores took 45 ms in chunks of 25000 elements, 34 ms in one
chunk per thread).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

try:      # how numba's own parfors read the thread count: code that calls it can be cached
    from numba.np.ufunc.parallel import _iget_num_threads as threads_nb
except ImportError:       # another numba: its public function (code calling it is not cached)
    from numba import get_num_threads as threads_nb

from ..core.ir import IR, Lit, Var
from ..core.layout import Layout
from ..core.primitives import TABLE
from .emit import FUNCTION_TEMPLATE, Lines, Module
from .loopnest import Renderer
from .parallel import step_work
from .scanloop import signature

# elements of the state at and above which an element-separable scan runs by chunks
WIDE_MIN_SIZE = 4096
SIZE_ENV = "NUMBASCAN_WIDE_MIN_SIZE"
# estimated nanoseconds (codegen/parallel.py's step_work times n_steps) at and above which the
# chunks run on several threads. The estimate counts an elementwise operation as 1 ns, a
# vectorised loop takes 0.03-0.1 ns; starting and joining a Python thread costs about 0.12 ms
# (runtime/threads.py), a prange region 0.01 ms. Measured on 2 cores with W4's step (N=10^5,
# eager): at 10^7 two threads ran as fast as one (0.56 against 0.53 ms with a scalar s_t,
# 1.34 against 1.32 ms with a row of s_t), at 3 * 10^7 1.3 times faster, at 10^8 1.4-1.6
WIDE_MIN_WORK = 20_000_000
WORK_ENV = "NUMBASCAN_WIDE_MIN_WORK"

# bytes of cache a chunk keeps resident: an eighth of a 2 MiB L2 when only the chunk's own
# values are read and written at every step; when rows are streamed from memory, large chunks
RESIDENT_BYTES = 256 * 1024
STREAM_BYTES = 1024 * 1024
# chunk sizes are multiples of this many elements: chunks start on cache lines of their own
ALIGN = 16


def _env_int(name, default, what):
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(float(value))
    except ValueError:
        raise ValueError(f"{name}: expected {what}, found {value!r}") from None
    return max(number, 0)


def min_size() -> int:
    """`NUMBASCAN_WIDE_MIN_SIZE`, else WIDE_MIN_SIZE (read when a scan's loop is rendered)."""
    return _env_int(SIZE_ENV, WIDE_MIN_SIZE, "a number of elements (0: every separable step)")


def min_work() -> int:
    """`NUMBASCAN_WIDE_MIN_WORK`, else WIDE_MIN_WORK (eager scans read it at each call)."""
    return _env_int(WORK_ENV, WIDE_MIN_WORK, "a number of nanoseconds (0: always on every "
                    "thread)")


def settings():
    """What the rendered code depends on besides the program: part of the compiled code's
    key (runtime/cache.py)."""
    return ("chunks", min_size(), min_work())


@dataclass(frozen=True)
class ChunkPlan:
    """How an element-separable scan runs by chunks (see the module docstring)."""
    function: str          # the chunk function, chunks_<h>
    size: int              # N, elements of the flattened state
    resident: int          # bytes per element a chunk keeps resident across its steps
    streams: bool          # a row of N values is read or written at every step
    work: int              # estimated nanoseconds of one step (codegen/parallel.py)
    in_place: frozenset    # outputs read and written in row 0 of their buffer

    def on_threads(self, n_steps) -> bool:
        """Whether `n_steps` steps are enough work to share the chunks among threads."""
        return n_steps * self.work >= min_work()

    def serial_size(self):
        """Elements per chunk on one thread."""
        return chunk_elements(self.size, 1, self.resident, self.streams)


def chunk_elements(n, n_threads, resident, streams):
    """Elements per chunk for `n_threads` threads: a multiple of ALIGN, chunks of at most
    RESIDENT_BYTES (STREAM_BYTES when rows are streamed) resident, their number a multiple of
    the threads. -> size (the chunks: ceil(n / size))."""
    budget = STREAM_BYTES if streams else RESIDENT_BYTES
    per_thread = max(1, -(-n * resident // (n_threads * budget)))
    size = -(-n // (n_threads * per_thread))
    return -(-size // ALIGN) * ALIGN


def _separable_shape(step: IR, layout: Layout):
    """The states' shape S when `step` is element-separable (module docstring), else None."""
    if (layout.parallel or layout.until or layout.trip or layout.rng or
            not layout.fed or not step.outputs):
        return None
    shape = tuple(step.outputs[0].shape)
    if len(shape) == 0 or any(not isinstance(v, Var) or tuple(v.shape) != shape
                              for v in step.outputs):
        return None

    def fits(v):
        return isinstance(v, Lit) or tuple(v.shape) in ((), shape)

    # inputs that nothing reads (a matrix another step needs) may have any shape
    read = _read_ids(step)
    if not all(fits(v) for v in step.inputs if v.id in read):
        return None
    for e in step.eqns:
        if TABLE[e.prim].kind != "elementwise" or len(e.outputs) != 1:
            return None
        if not all(fits(v) for v in e.inputs) or not fits(e.outputs[0]):
            return None
    return shape


def _read_ids(step: IR):
    """Ids of the values the step's equations read or its outputs are."""
    return ({v.id for e in step.eqns for v in e.inputs if isinstance(v, Var)} |
            {v.id for v in step.outputs})


def chunk_plan(step: IR, layout: Layout, name: str):
    """The plan of `step`'s scan by chunks, or None when it runs the one-core loop."""
    shape = _separable_shape(step, layout)
    if shape is None:
        return None
    n = math.prod(shape)
    if n < max(min_size(), 2):
        return None
    _, state_taps, rest, _ = layout.split_step_inputs(step.inputs)
    in_place = frozenset(j for j, o in enumerate(layout.outs)
                         if o.keep == "last" and o.taps == (-1,))
    resident, streams = 0, False
    for j, (o, v) in enumerate(zip(layout.outs, step.outputs)):
        itemsize = np.dtype(v.dtype).itemsize
        if o.keep == "all":
            streams = True
            resident += o.L * itemsize
        else:
            resident += (1 if j in in_place else o.buffer_rows(1)) * itemsize
    read = _read_ids(step)
    resident += sum(np.dtype(v.dtype).itemsize for v in rest if v.shape != () and v.id in read)
    seq_taps = layout.split_step_inputs(step.inputs)[0]
    streams = streams or any(v.shape != () and v.id in read for taps in seq_taps for v in taps)
    return ChunkPlan("chunks" + name[4:], n, max(resident, 1), streams, step_work(step),
                     in_place)


# the loop function an ns.jit program calls (`scan_<h>`): the chunks shared out with prange
DRIVER_TEMPLATE = '''\
@njit(cache=True, error_model="numpy", nogil=True, parallel=True)
def {name}(chunks_address, {params}):
    n_threads = threads_nb() if n_steps >= {serial_below} else 1
    per_thread = -(-{need} // (n_threads * {budget}))
    if per_thread < 1:
        per_thread = 1
    size = -(-{n} // (n_threads * per_thread))
    size = -(-size // {align}) * {align}
    n_chunks = -(-{n} // size)
    if n_threads == 1:
        call_address(chunks_address, (0, n_chunks, size, {args}))
    else:
        per = -(-n_chunks // n_threads)
        for k in prange(n_threads):
            c1 = (k + 1) * per
            if c1 > n_chunks:
                c1 = n_chunks
            call_address(chunks_address, (k * per, c1, size, {args}))
    return n_steps
'''


def render_chunked(module: Module, step: IR, layout: Layout, plan: ChunkPlan, name: str):
    """Render the chunk function of `plan` and the loop function `name` that runs it."""
    seqs, bufs, rest, _ = signature(layout)
    args = ["n_steps"] + seqs + bufs + rest
    module.add(FUNCTION_TEMPLATE, name=plan.function,
               params=", ".join(["c0", "c1", "size"] + args),
               body=_chunk_body(module, step, layout, plan, seqs, bufs, rest).text())
    serial_below = -(-min_work() // max(plan.work, 1))
    module.add(DRIVER_TEMPLATE, name=name, params=", ".join(args), args=", ".join(args),
               serial_below=serial_below, n=plan.size, need=plan.size * plan.resident,
               budget=STREAM_BYTES if plan.streams else RESIDENT_BYTES, align=ALIGN)
    module.chunked[name] = plan
    return name


def _chunk_body(module, step, layout, plan, seqs, bufs, rest_params):
    r = Renderer(module)                 # its scalar expressions, as the loop nests write them
    body = Lines()
    shape = tuple(step.outputs[0].shape)
    n = plan.size
    seq_taps, state_taps, rest_vars, _ = layout.split_step_inputs(step.inputs)
    read = _read_ids(step)               # inputs nothing reads are not bound
    names: dict[int, str] = {}           # var id -> scalar local, or view of the chunk
    views: set[int] = set()              # var ids named by a view (read at [i])

    def flat(param, rows):
        """`param` with its state axes flattened (a view: arguments are C-contiguous)."""
        if len(shape) == 1:
            return param
        body(f"{param}f = {param}.reshape(({param}.shape[0], {n}))" if rows else
             f"{param}f = {param}.reshape({n})")
        return f"{param}f"

    flat_seqs = [flat(s, True) if any(v.shape != () and v.id in read for v in taps) else s
                 for s, taps in zip(seqs, seq_taps)]
    flat_bufs = [flat(b, True) for b in bufs]
    rest_read = [(p, v) for p, v in zip(rest_params, rest_vars) if v.id in read]
    flat_rest = [flat(p, False) if v.shape != () else p for p, v in rest_read]
    body("for c in range(c0, c1):")
    body.indent()
    body("i0 = c * size")
    body("i1 = i0 + size")
    body(f"if i1 > {n}:")                 # (not min(): it costs numba 0.1 s to type)
    body(f"    i1 = {n}")
    body("m = i1 - i0")
    for p, (_, v) in zip(flat_rest, rest_read):
        if v.shape == ():
            names[v.id] = p
        else:
            names[v.id] = f"{p}_c"
            views.add(v.id)
            body(f"{p}_c = {p}[i0:i1]")
    for j in sorted(plan.in_place):
        body(f"state{j} = {flat_bufs[j]}[0, i0:i1]")
    body("for t in range(n_steps):")
    body.indent()
    for k, (sname, fname, sl, taps) in enumerate(zip(seqs, flat_seqs, layout.seqs, seq_taps)):
        for tap, v in zip(sl.taps, taps):
            if v.id not in read:
                continue
            row = sl.row("t", tap, layout.go_backwards, f"{sname}.shape[0]")
            local = f"seq{k}_{len(names)}"
            names[v.id] = local
            if v.shape == ():
                body(f"{local} = {sname}[{row}]")
            else:
                views.add(v.id)
                body(f"{local} = {fname}[{row}, i0:i1]")
    targets = []
    for j, (o, taps) in enumerate(zip(layout.outs, state_taps)):
        for tap, v in zip(o.taps, taps):
            views.add(v.id)
            if j in plan.in_place:
                names[v.id] = f"state{j}"
            else:
                names[v.id] = f"old{j}_{o.window_row(tap)}"
                body(f"{names[v.id]} = {flat_bufs[j]}[{o.read_row('t', tap)}, i0:i1]")
        if j in plan.in_place:
            targets.append(f"state{j}")
        else:
            targets.append(f"new{j}")
            body(f"new{j} = {flat_bufs[j]}[{o.write_row('t')}, i0:i1]")

    def operand(e, v):
        if isinstance(v, Lit):
            return r.lit_operand(e, v)
        return names[v.id]

    # locals are numbered in the order they are made (never by var id: the source text, the
    # key of numba's disk cache, must not depend on what was traced before)
    for e in step.eqns:
        res = e.outputs[0]
        if res.shape == ():               # scalars of this step: computed once, before its loop
            names[res.id] = f"s{len(names)}"
            expr = r.scalar_expr(e, [operand(e, v) for v in e.inputs])
            body(f"{names[res.id]} = {r.cast(expr, res.dtype)}")
    body("for i in range(m):")
    body.indent()
    # every input of this element first: the results below may overwrite states in place
    local: dict[int, str] = {}
    for v in [v for e in step.eqns for v in e.inputs if isinstance(v, Var)] + list(step.outputs):
        if v.id in views and v.id not in local:
            local[v.id] = f"x{len(local)}"
            body(f"{local[v.id]} = {names[v.id]}[i]")
    for e in step.eqns:
        res = e.outputs[0]
        if res.shape == ():
            continue
        ops = [r.lit_operand(e, v) if isinstance(v, Lit) else local.get(v.id, names.get(v.id))
               for v in e.inputs]
        local[res.id] = f"e{len(local)}"
        body(f"{local[res.id]} = {r.cast(r.scalar_expr(e, ops), res.dtype)}")
    for target, v in zip(targets, step.outputs):
        body(f"{target}[i] = {local[v.id]}")
    body.dedent()
    body.dedent()
    for j in sorted(plan.in_place):
        # the last state is read at row n_steps % 2 (OutLayout.last_row)
        body("if n_steps % 2 == 1:")
        body(f"    last{j} = {flat_bufs[j]}[1, i0:i1]")
        body("    for i in range(m):")
        body(f"        last{j}[i] = state{j}[i]")
    body.dedent()
    body("return n_steps")
    return body
