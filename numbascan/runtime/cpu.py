"""Stage: runtime — the CPU driver: check inputs, allocate buffers, call code, slice results.

`scan_cpu` runs an eager scan through its compiled loop function, which `cache.py` traces and
compiles once per step and layout; changing only array values or the number of steps never
recompiles. The buffer layout (`core/layout.py`) is the one `ns.jit` programs allocate inside
generated code.
"""

from __future__ import annotations

import warnings

import numpy as np
from numba.core.errors import NumbaPerformanceWarning

from ..codegen.cpu import render_scan_function
from ..codegen.emit import Module
from ..core.ir import IR
from ..core.layout import Layout
from ..loop.args import ScanArgs, check_buffer_bytes
from ..loop.step import TracedStep
from ..shared import Shared, Updates
from ..trace.tracer import TracingError
from . import log, progress as bars
from .cache import traced_scan
from .fallback import scan_untraced


def scan_source(step: IR, layout: Layout) -> str:
    module = Module()
    name = render_scan_function(module, step, layout)
    return module.source(f"scan {name}")


def call_compiled(fn, *args, what=None):
    """Call generated code; numba's advice about BLAS on non-contiguous views is not for users.
    A first call compiles `fn` first, timed and logged as the code of `what` (log.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        log.first_call(fn, args, what)
        return fn(*args)


def compile_for(fn, args, what=None):
    """Compile `fn` for `args` now (as its first call would), without calling it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        log.first_call(fn, args, what)


def as_argument(x):
    """How a value is passed to compiled code: 0-d values as scalars, arrays C-contiguous (a
    strided view is copied once per call: compiled code then has one type signature and can
    reshape rows without copying)."""
    if isinstance(x, Shared):
        x = x.get_value(borrow=True)
    x = np.ascontiguousarray(x) if np.ndim(x) else np.asarray(x)
    return x[()] if x.ndim == 0 else x


# How buffers are made and read: numpy arrays here, device arrays in the CUDA driver (cuda.py),
# which passes its own versions of these hooks to the functions below.

def _write_rows(rows, init, shape):
    rows[...] = np.reshape(init, shape)


def _read_row(buf, k):
    return buf[k]


def _as_is(x, shape):
    return x


def layout_buffers(layout: Layout, avals, inits, n: int, empty=np.empty,
                   write_rows=_write_rows):
    """One buffer per layout output for `n` steps, with its initial states written (core/layout.py
    fixes the rows). `avals`: (dtype, shape) of each output's value at one step; `inits`: the
    initial states of the fed-back outputs, in order. `empty(shape, dtype)` allocates a
    buffer, `write_rows(rows, init, shape)` writes `init`, reshaped to `shape`, into `rows`.
    Buffers larger than the machine's memory are an error naming n_steps, before any is made."""
    check_buffer_bytes(n, [(o.buffer_rows(n), dtype, shape)
                           for o, (dtype, shape) in zip(layout.outs, avals)])
    bufs, fed = [], iter(inits)
    for o, (dtype, shape) in zip(layout.outs, avals):
        buf = empty((o.buffer_rows(n),) + tuple(shape), dtype)
        if o.taps:
            write_rows(buf[o.init_rows], next(fed), (o.L,) + tuple(shape))
        bufs.append(buf)
    return bufs


def layout_values(layout: Layout, bufs, n_run, n_rows, read_row=_read_row):
    """The value of each layout output after `n_run` steps: the rows of its first `n_rows`
    steps when it keeps all, its last row (`read_row(buf, k)`) when it keeps the last."""
    return [buf[o.step_rows(n_rows)] if o.keep == "all" else read_row(buf, o.last_row(n_run))
            for o, buf in zip(layout.outs, bufs)]


def state_buffers(ts: TracedStep, sa: ScanArgs, n: int, empty=np.empty,
                  write_rows=_write_rows):
    """`layout_buffers` of an eager scan: the initial states are those of `outputs_info`, then
    the values of the updated shared variables."""
    inits = [i for i in sa.inits if i is not None]
    inits += [k.get_value(borrow=True) for k in ts.shared_states]
    avals = list(ts.out_avals) + [(k.dtype, k.shape) for k in ts.shared_states]
    return layout_buffers(ts.layout, avals, inits, n, empty, write_rows)


def results(ts: TracedStep, bufs, n_run, read_row=_read_row, output=_as_is, update=_as_is):
    """(outputs, updates) of an eager scan after `n_run` steps. `output(value, shape)` and
    `update(value, shape)` finish each output and each shared variable's new value (the
    CUDA driver copies them to the host)."""
    values = layout_values(ts.layout, bufs, n_run, n_run, read_row)
    outs = [output(v, tuple(shape) if o.keep == "last" else (n_run,) + tuple(shape))
            for v, o, (_, shape) in zip(values, ts.layout.outs, ts.out_avals)]
    updates = Updates((k, update(v, tuple(k.shape)))
                      for k, v in zip(ts.shared_states, values[ts.n_outputs:]))
    return outs, updates


def stream_arguments(ts: TracedStep):
    """The (key, counter base) arguments of the step's random streams."""
    args = []
    for s in ts.streams:
        args += [np.uint64(s.key), np.uint64(s.counter % 2**64)]
    return args


def advance_streams(ts: TracedStep, n_run):
    """Each random stream moves past the draws of the `n_run` steps that ran."""
    for s, (_, per_step) in zip(ts.streams, ts.layout.rng):
        s.counter += n_run * per_step


def call_arguments(ts: TracedStep, sa: ScanArgs, bufs, captures, convert):
    """The arguments of a compiled loop or kernel that follow n_steps (`convert(x)`: how
    each array is passed)."""
    return ([convert(s) for s in sa.seqs] + bufs + [convert(v) for v in sa.nonseqs] +
            [convert(c) for c in captures] + stream_arguments(ts))


def scan_cpu(sa: ScanArgs, progress=False):
    """Run an eager scan compiled; `progress=True` runs the loop's progress variant, with a
    bar (progress.py) of the steps run (not for ns.vmap's parallel map, nor an untraced step)."""
    progress = progress and not sa.parallel
    try:
        ts, fn, captures = traced_scan(sa, progress=progress)
    except TracingError as err:
        return (*scan_untraced(sa, err), sa.n_steps)
    n = sa.n_steps
    bufs = state_buffers(ts, sa, n)
    if ts.layout.keep_last_map_empty(n):
        raise ValueError("reduce/foldl with n_steps=0 has no last step for a map output")
    args = call_arguments(ts, sa, bufs, captures, as_argument)
    if progress:
        published = bars.counts(n)
        args = [n, *args, published]
        compile_for(fn, args, sa)              # before the bar: its clock times the loop
        n_run = bars.run_with_bar(lambda: call_compiled(fn, *args), published, n,
                                  bars.describe(sa.fn, sa.name))
    else:
        n_run = call_compiled(fn, n, *args, what=sa)
    advance_streams(ts, n_run)
    return (*results(ts, bufs, n_run), n_run)
