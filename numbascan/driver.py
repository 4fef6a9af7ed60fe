"""Stage: driver — check inputs, allocate buffers, call compiled code, slice results.

`scan_cpu` runs an eager scan through a compiled loop function (`codegen.cpu`); the same
buffer layout (`layout.py`) is used by `ns.jit` programs, which allocate inside generated code.
Compiled functions are memoised in memory by the fingerprint of (step program, layout); changing
only array values or the number of steps never recompiles.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numba.core.errors import NumbaPerformanceWarning

from . import blas
from .api import ScanArgs, TracedStep, trace_step
from .codegen.cpu import Module, render_main_function, render_scan_function, program_hash
from .codegen.source import load_module
from .ir import IR
from .layout import Layout
from .shared import Shared, Updates
from .trace import TracingError
from .tracecache import capture_readers, function_key, guards_hold, read_captures

# The caches of this module are read without a lock: an entry is stored whole, by one dict
# assignment, after it is complete. Threads that miss together render the same source (imported
# once, see codegen.source) and store equal entries; the last store wins.
_COMPILED: dict[str, object] = {}


def compile_scan(step: IR, layout: Layout):
    key = "scan:" + program_hash(step.fingerprint(), layout)
    fn = _COMPILED.get(key)
    if fn is None:
        module = Module()
        name = render_scan_function(module, step, layout)
        loaded = load_module(module.source(f"scan {name}"))
        fn = blas.for_code(getattr(loaded, name), module.uses_blas)
        _COMPILED[key] = fn
    return fn


def compile_main(ir: IR):
    key = "main:" + program_hash(ir.fingerprint())
    fn = _COMPILED.get(key)
    if fn is None:
        module = Module()
        name = render_main_function(module, ir)
        loaded = load_module(module.source(f"program {name}"))
        fn = blas.for_code(getattr(loaded, name), module.uses_blas)
        _COMPILED[key] = fn
    return fn


def scan_source(step: IR, layout: Layout) -> str:
    module = Module()
    name = render_scan_function(module, step, layout)
    return module.source(f"scan {name}")


def call_compiled(fn, *args):
    """Call generated code; numba's advice about BLAS on non-contiguous views is not for users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        return fn(*args)


def as_argument(x):
    """How a value is passed to compiled code: 0-d values as scalars, arrays C-contiguous (a
    strided view is copied once per call: compiled code then has one type signature and can
    reshape rows without copying)."""
    if isinstance(x, Shared):
        x = x.get_value(borrow=True)
    x = np.ascontiguousarray(x) if np.ndim(x) else np.asarray(x)
    return x[()] if x.ndim == 0 else x


# How buffers are made and read: numpy arrays here, device arrays in the CUDA driver (gpu.py),
# which passes its own versions of these hooks to the functions below.

def _write_rows(rows, init, shape):
    rows[...] = np.reshape(init, shape)


def _read_row(buf, k):
    return buf[k]


def _as_is(x, shape):
    return x


def layout_buffers(layout: Layout, avals, inits, n: int, empty=np.empty,
                   write_rows=_write_rows):
    """One buffer per layout output for `n` steps, with its initial states written (layout.py
    fixes the rows). `avals`: (dtype, shape) of each output's value at one step; `inits`: the
    initial states of the fed-back outputs, in order. `empty(shape, dtype)` allocates a
    buffer, `write_rows(rows, init, shape)` writes `init`, reshaped to `shape`, into `rows`."""
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


@dataclass
class CachedScan:
    ts: TracedStep
    fn: object
    readers: list
    capture_avals: list


_SCANS: dict = {}        # (function key, argument signature) -> CachedScan
# (id of the step's code, argument signature, compile) -> (step function, guards of its key,
# CachedScan, capture values): the last call of each step, checked by guards, not keyed
_LAST: dict = {}


def traced_scan(sa: ScanArgs, compile=True):
    """(traced step, compiled loop, capture values): from the trace cache when the function
    and what it can see are unchanged (tracecache.py), else traced and compiled now.
    `compile=False`: no CPU loop (the CUDA driver compiles its own kernel); an entry traced
    that way gets its loop when a later call asks for it."""
    signature = sa.signature()
    last_key = (id(getattr(sa.fn, "__code__", sa.fn)), signature)
    last = _LAST.get(last_key)
    if last is not None and last[0] is sa.fn and guards_hold(last[1]):
        return last[2].ts, _compiled(last[2], compile), last[3]
    guards = []
    key, arrays = function_key(sa.fn, guards)
    if key is not None:
        key = (key, signature)
        hit = _SCANS.get(key)
        if hit is not None:
            captures = read_captures(sa.fn, hit.readers, hit.capture_avals)
            if captures is not None:
                _LAST[last_key] = (sa.fn, guards, hit, captures)
                return hit.ts, _compiled(hit, compile), captures
    ts = trace_step(sa)
    fn = compile_scan(ts.ir, ts.layout) if compile else None
    readers = capture_readers(ts.captures, arrays, ts.created) if key is not None else None
    if readers is not None:
        avals = [(np.asarray(c).dtype, np.shape(c)) if not isinstance(c, Shared) else None
                 for c in ts.captures]
        entry = CachedScan(ts, fn, readers, avals)
        _SCANS[key] = entry
        _LAST[last_key] = (sa.fn, guards, entry, ts.captures)
    return ts, fn, ts.captures


def _compiled(entry: CachedScan, compile):
    if compile and entry.fn is None:
        entry.fn = compile_scan(entry.ts.ir, entry.ts.layout)
    return entry.fn


def scan_cpu(sa: ScanArgs):
    try:
        ts, fn, captures = traced_scan(sa)
    except TracingError as err:
        from .fallback import scan_untraced
        return (*scan_untraced(sa, err), sa.n_steps)
    n = sa.n_steps
    bufs = state_buffers(ts, sa, n)
    if ts.layout.keep_last_map_empty(n):
        raise ValueError("reduce/foldl with n_steps=0 has no last step for a map output")
    n_run = call_compiled(fn, n, *call_arguments(ts, sa, bufs, captures, as_argument))
    advance_streams(ts, n_run)
    return (*results(ts, bufs, n_run), n_run)
