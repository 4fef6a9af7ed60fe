"""Stage: user API — `scan` and its family, argument checking and the three ways to run a scan.

`scan` normalises Theano-style arguments into a `ScanArgs`, then either
  * records a scan equation when called inside a trace (a nested scan, `ns.jit`, derivatives),
  * runs the user's step in a plain Python loop (`mode="python"`, the reference), or
  * traces the step, compiles its loop with numba (`codegen.cpu`) and drives it (`mode="cpu"`),
  * or hands it to `codegen.cuda` (`mode="cuda"`).
"""

from __future__ import annotations

import collections
import contextlib
import os
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from . import random as nsrandom
from .ir import IR, dead_code_elimination
from .layout import Layout, OutLayout, SeqLayout
from .shared import Shared, Updates, _PYTHON_STATES
from .trace import RunTracer, Trace, Tracer, TracingError, current_trace, with_traced_captures

MODES = ("cpu", "python", "cuda")
# The mode of a scan without `mode=` in this context (None: NUMBASCAN_MODE); a python-mode scan
# sets it to "python" while its steps run, so scans inside them run in python mode too.
_MODE: ContextVar = ContextVar("numbascan_mode", default=None)


class until:
    """Returned by a step (alone or in a tuple) to stop the scan after the step where `condition` holds."""

    def __init__(self, condition):
        self.condition = condition

    def __repr__(self):
        return f"until({self.condition!r})"


class ScanError(ValueError):
    pass


def choose_mode(asked=None, inputs=(), batched=None):
    """Which of MODES runs an eager scan or program; the one place that decides it.

    `asked` (the `mode=` argument) when given; else "cuda" when one of `inputs` is a device
    array, or when `batched` (the ScanArgs of ns.vmap's map) has a scan in its step that asks
    for cuda; else this context's default (`default_mode`), else NUMBASCAN_MODE, else "cpu".
    """
    mode = asked
    if mode is None and (any(_is_device_array(x) for x in inputs) or
                         (batched is not None and _map_asks_for_cuda(batched))):
        mode = "cuda"
    if mode is None:
        mode = _MODE.get() or os.environ.get("NUMBASCAN_MODE", "cpu")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, found {mode!r}")
    return mode


@contextlib.contextmanager
def default_mode(mode):
    """Inside this block, in this context only, a scan without `mode=` runs in `mode`."""
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


# ------------------------------------------------------------------------------------------------
# argument normalisation


def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _value(x, what):
    """A NumPy array or a tracer for a user-provided input; never copies a NumPy array."""
    if isinstance(x, Tracer):
        return x
    if isinstance(x, Shared):
        return x.current()
    if _is_device_array(x):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{what}: expected an array, found {type(x).__name__}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected a numeric array (bool, int or float), found "
                        f"{type(x).__name__} with dtype {arr.dtype}")
    return arr


def _is_device_array(x):
    """A CUDA array: numba's device arrays (also the CUDA simulator's), or anything with
    `__cuda_array_interface__` (CuPy, PyTorch...)."""
    return not isinstance(x, np.ndarray) and (hasattr(x, "__cuda_array_interface__") or
                                              hasattr(x, "copy_to_host"))


def _length(seq):
    """A sequence's number of rows; for the rows of an until-scan, their bound."""
    return seq.var.shape[0] if isinstance(seq, Tracer) else len(seq)


def _taps(raw, what, default):
    if raw is None:
        return default
    taps = [raw] if isinstance(raw, (int, np.integer)) else list(raw)
    if not taps or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                           for t in taps):
        raise ScanError(f"{what}: taps must be a non-empty list of ints, found {raw!r}")
    if len(set(taps)) != len(taps):
        raise ScanError(f"{what}: taps must be distinct, found {raw!r}")
    return tuple(int(t) for t in taps)


@dataclass(frozen=True)
class ScanArgs:
    """A scan's arguments, checked; built once by `normalize` (a variant: dataclasses.replace)."""
    fn: object
    seqs: list                 # arrays or tracers
    seq_layouts: list
    inits: list                # per output: None (map) or array/tracer of shape (L, ...) or (...)
    out_taps: list             # per output: () or taps
    nonseqs: list
    n_steps: int
    go_backwards: bool
    truncate_gradient: int
    name: str
    strict: bool
    return_list: bool
    checkpoint: object
    keep_last: bool = False
    parallel: bool = False     # steps independent of each other (ns.vmap's map)
    mode: str = None           # as asked for; recorded on scan equations of traced programs
    state_avals: list = field(default_factory=list)   # per fed-back output: (dtype, step shape)

    def signature(self):
        """Everything about the arguments that shapes the traced step (not n_steps)."""
        def aval(x):
            return (np.dtype(x.dtype).str, tuple(x.shape))
        return (tuple((np.dtype(s.dtype).str, tuple(s.shape[1:]), sl.taps)
                      for s, sl in zip(self.seqs, self.seq_layouts)),
                tuple(None if i is None else aval(i) for i in self.inits), tuple(self.out_taps),
                tuple(aval(v) for v in self.nonseqs), self.go_backwards, self.keep_last,
                self.parallel,
                self.strict, self.name)

    def arg_avals(self):
        avals = []
        for s, sl in zip(self.seqs, self.seq_layouts):
            avals += [(s.dtype, tuple(s.shape[1:]))] * len(sl.taps)
        state_avals = iter(self.state_avals)
        for taps in self.out_taps:
            if taps:
                avals += [next(state_avals)] * len(taps)
        avals += [(v.dtype, tuple(v.shape)) for v in self.nonseqs]
        return avals


def normalize(fn, sequences, outputs_info, non_sequences, n_steps, truncate_gradient,
              go_backwards, name, strict, return_list, checkpoint, *, keep_last=False,
              parallel=False, mode=None) -> ScanArgs:
    if not callable(fn):
        raise TypeError(f"fn: expected a callable step function, found {type(fn).__name__}")
    seqs, seq_layouts = [], []
    for i, s in enumerate(_as_list(sequences)):
        what = f"sequences[{i}]"
        if isinstance(s, dict):
            unknown = set(s) - {"input", "taps"}
            if unknown or "input" not in s:
                raise ScanError(f"{what}: expected dict(input=array, taps=[...]), found keys "
                                f"{sorted(s)}")
            arr, taps = s["input"], _taps(s.get("taps", [0]), what, (0,))
        else:
            arr, taps = s, (0,)
        arr = _value(arr, what)
        if arr.ndim == 0:
            raise ScanError(f"{what}: expected an array with a leading time axis, found a "
                            f"0-d value")
        seqs.append(arr)
        seq_layouts.append(SeqLayout(taps))

    raw_outs = outputs_info if isinstance(outputs_info, (list, tuple)) else \
        ([] if outputs_info is None else [outputs_info])
    inits, out_taps, state_avals = [], [], []
    for i, o in enumerate(raw_outs):
        what = f"outputs_info[{i}]"
        if isinstance(o, dict):
            unknown = set(o) - {"initial", "taps"}
            if unknown:
                raise ScanError(f"{what}: unknown keys {sorted(unknown)}; expected "
                                f"dict(initial=..., taps=[...])")
            init = o.get("initial")
            if init is None or ("taps" in o and o["taps"] is None):   # Theano: a map output
                inits.append(None)
                out_taps.append(())
                continue
            taps = _taps(o.get("taps", [-1]), what, (-1,))
        elif o is None:
            inits.append(None)
            out_taps.append(())
            continue
        else:
            init, taps = o, (-1,)
        if any(t >= 0 for t in taps):
            raise ScanError(f"{what}: output taps must be negative (past steps), found "
                            f"{list(taps)}")
        init = _value(init, what)
        L = max(-t for t in taps)
        if taps == (-1,):
            step_shape = tuple(init.shape)
        else:
            if init.ndim == 0 or init.shape[0] < L:
                raise ScanError(
                    f"{what}: taps {list(taps)} need an initial state with a leading axis of "
                    f"length {L} (initial[k] plays out[k - {L}]), found shape "
                    f"{tuple(init.shape)}")
            if init.shape[0] > L:
                init = init[:L]
            step_shape = tuple(init.shape[1:])
        inits.append(init)
        out_taps.append(taps)
        state_avals.append((init.dtype, step_shape))

    nonseqs = [_value(v, f"non_sequences[{i}]") for i, v in enumerate(_as_list(non_sequences))]

    max_steps = [_length(s) - sl.m - sl.M for s, sl in zip(seqs, seq_layouts)]
    for i, (s, sl, ms) in enumerate(zip(seqs, seq_layouts, max_steps)):
        if ms < 0:
            raise ScanError(f"sequences[{i}]: taps {list(sl.taps)} need at least {sl.m + sl.M} "
                            f"entries, found length {_length(s)}")
    if n_steps is None:
        if not seqs:
            raise ScanError("n_steps: required when there are no sequences (found None)")
        n = min(max_steps)
    else:
        if isinstance(n_steps, Tracer):
            raise ScanError("n_steps: expected a Python int, found a traced value "
                            "(inside ns.jit the number of steps must be static)")
        if isinstance(n_steps, np.ndarray) and n_steps.ndim == 0:
            n_steps = n_steps.item()
        if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool):
            raise ScanError(f"n_steps: expected an int, found {type(n_steps).__name__}")
        n = int(n_steps)
        if n < 0:
            raise ScanError(f"n_steps: expected a non-negative int, found {n}")
        for i, (s, sl, ms) in enumerate(zip(seqs, seq_layouts, max_steps)):
            if ms < n:
                raise ScanError(
                    f"sequences[{i}]: too short for n_steps={n}: with taps {list(sl.taps)} it "
                    f"needs length {n + sl.m + sl.M}, found {_length(s)}")
    if not isinstance(truncate_gradient, (int, np.integer)):
        raise TypeError(f"truncate_gradient: expected an int, found {truncate_gradient!r}")
    if checkpoint is not None and checkpoint != "sqrt" and not (
            isinstance(checkpoint, (int, np.integer)) and checkpoint >= 1):
        raise ValueError(f"checkpoint: expected None, a positive int or 'sqrt', found "
                         f"{checkpoint!r}")
    return ScanArgs(fn, seqs, seq_layouts, inits, out_taps, nonseqs, n, bool(go_backwards),
                    int(truncate_gradient), name, strict, return_list, checkpoint,
                    keep_last=keep_last, parallel=parallel, mode=mode,
                    state_avals=state_avals)


# ------------------------------------------------------------------------------------------------
# splitting what a step returns


def split_step_result(ret, where="fn"):
    """(outputs list, updates dict, until condition or None) from what the step returned."""
    items = list(ret) if isinstance(ret, (tuple, list)) else [ret]
    outputs, updates, cond, special = [], {}, None, False
    for item in items:
        if isinstance(item, until):
            cond, special = item.condition, True
        elif isinstance(item, dict):
            updates.update(item)
            special = True
        else:
            outputs.append(item)
    if special and len(outputs) == 1 and isinstance(outputs[0], (list, tuple)):
        outputs = list(outputs[0])
    for k in updates:
        if not isinstance(k, Shared):
            raise TypeError(f"{where}: an updates dict must map ns.shared variables to new "
                            f"values, found key {type(k).__name__}")
    return outputs, updates, cond


def check_step_outputs(sa: ScanArgs, outputs, avals):
    """avals: (dtype, shape) of each returned output. Raises on a mismatch with outputs_info."""
    n_info = len(sa.out_taps)
    if sa.out_taps and len(outputs) != n_info:
        raise ScanError(f"fn returned {len(outputs)} output(s) but outputs_info has {n_info} "
                        f"entries; give one outputs_info entry (None for a map output) per output")
    k = 0
    for i, (dtype, shape) in enumerate(avals):
        if i < n_info and sa.out_taps[i]:
            want_dtype, want_shape = sa.state_avals[k]
            k += 1
            if tuple(shape) != tuple(want_shape):
                raise ScanError(
                    f"output {i}: the step returned shape {tuple(shape)} but its initial state "
                    f"(outputs_info[{i}]) has step shape {tuple(want_shape)}; return an array of "
                    f"the initial state's shape")
            if np.dtype(dtype) != np.dtype(want_dtype):
                raise ScanError(
                    f"output {i}: the step returned dtype {np.dtype(dtype)} but its initial state "
                    f"(outputs_info[{i}]) has dtype {np.dtype(want_dtype)}; cast the result with "
                    f".astype(np.{np.dtype(want_dtype).name}) or give an initial state of dtype "
                    f"{np.dtype(dtype)}")


def _check_update(k, dtype, shape):
    v = k.get_value(borrow=True)
    if tuple(shape) != v.shape or np.dtype(dtype) != v.dtype:
        raise ScanError(f"updates: the new value for {k!r} has dtype {np.dtype(dtype)} and shape "
                        f"{tuple(shape)}, but the shared variable holds dtype {v.dtype} and shape "
                        f"{v.shape}; cast or reshape the update")


# ------------------------------------------------------------------------------------------------
# the step, traced


@dataclass
class TracedStep:
    ir: IR
    layout: Layout
    shared_states: list        # Shared objects carried as states (order of layout.outs tail)
    shared_reads: list         # Shared objects read but not updated (they are captures)
    captures: list             # sources of the capture inputs: arrays, outer tracers, Shared
    streams: list              # RandomStreams, in the order of the rng inputs
    out_avals: list            # (dtype, shape) per fn output
    n_outputs: int
    created: dict = field(default_factory=dict)   # constants made while tracing


def step_name(sa: ScanArgs):
    fn = getattr(sa.fn, "fn", sa.fn)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return repr(name) + (f" of scan {sa.name!r}" if sa.name else "")


def trace_step(sa: ScanArgs) -> TracedStep:
    with Trace(sa.name or "step", sa.fn, kind="step") as tr:
        args = [tr.new_arg(d, s) for d, s in sa.arg_avals()]
        fn, capture_names = with_traced_captures(getattr(sa.fn, "fn", sa.fn), tr)
        try:
            ret = fn(*args)
        except TracingError as err:
            err.add_context(f"step function {step_name(sa)}")
            raise
        outputs, updates, cond = split_step_result(ret)
        for i, o in enumerate(outputs):
            if isinstance(o, RunTracer):
                raise ScanError(
                    f"output {i}: the step returned the rows of a scan that stops early "
                    f"(ns.until), whose number differs from one call of the step to the next "
                    f"(one batch element of ns.vmap to the next); return xs[-1] or a "
                    f"reduction such as xs.sum(axis=0) instead")
        out_tracers = [o if isinstance(o, Tracer) else _lift_const(tr, o) for o in outputs]
        check_step_outputs(sa, out_tracers, [(o.dtype, o.shape) for o in out_tracers])
        upd_values = []
        for k, v in updates.items():
            v = v if isinstance(v, Tracer) else _lift_const(tr, v)
            _check_update(k, v.dtype, v.shape)
            upd_values.append(v)
        cond_t = None
        if cond is not None:
            cond_t = cond if isinstance(cond, Tracer) else _lift_const(tr, cond)
            if cond_t.shape != ():
                raise ScanError(f"until: the condition must be a scalar, found shape "
                                f"{cond_t.shape}")
            if cond_t.dtype != np.bool_:
                cond_t = cond_t != 0
        results = out_tracers + upd_values + ([cond_t] if cond_t is not None else [])
        result_vars = tuple(tr.lift(r) for r in results)

    shared_states = list(updates)
    state_vars = [tr.shared_var(k) for k in shared_states]
    shared_reads = [k for k in tr.shared if k not in updates]
    if sa.strict:
        _check_strict(tr, shared_reads, capture_names)
    captures = [c.source for c in tr.captures] + shared_reads
    capture_vars = [c.var for c in tr.captures] + [tr.shared[k] for k in shared_reads]
    streams = list(tr.rng)
    rng_vars = [v for s in streams for v in tr.rng[s]]
    n_args = len(tr.args)
    n_before_nonseq = n_args - len(sa.nonseqs)
    inputs = (tuple(tr.args[:n_before_nonseq]) + tuple(state_vars) +
              tuple(tr.args[n_before_nonseq:]) + tuple(capture_vars) + tuple(rng_vars))
    ir = dead_code_elimination(IR(inputs, tuple(tr.eqns), result_vars))
    outs = tuple(OutLayout(taps) for taps in sa.out_taps)
    outs += tuple(OutLayout(()) for _ in range(len(out_tracers) - len(outs)))
    outs += tuple(OutLayout((-1,), keep="last") for _ in shared_states)
    layout = Layout(
        seqs=tuple(sa.seq_layouts), outs=outs, n_outputs=len(out_tracers),
        n_nonseqs=len(sa.nonseqs), n_captures=len(captures),
        rng=tuple((0, tr.rng_used[s]) for s in streams), until=cond is not None,
        go_backwards=sa.go_backwards, parallel=sa.parallel)
    if sa.keep_last:
        layout = layout.keep_last(range(len(outs)))
    return TracedStep(ir, layout, shared_states, shared_reads, captures, streams,
                      [(o.dtype, o.shape) for o in out_tracers], len(out_tracers), tr.created)


def _lift_const(tr, value):
    """A step may return a constant (a Python number or an array): it becomes an input.
    A Shared stands for its value at the start of the step (its state input)."""
    if isinstance(value, Shared):
        return Tracer(tr, tr.shared_var(value))
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"fn: a step must return numeric arrays, found {type(value).__name__}")
    if arr is not value:
        tr.created[id(arr)] = arr
    return Tracer(tr, tr.lift(arr))


def _check_strict(tr, shared_reads, capture_names):
    for c in tr.captures:
        if c.var.id in capture_names or isinstance(c.source, Tracer):
            name = capture_names.get(c.var.id, "a value of the enclosing function")
            raise ScanError(f"strict=True: fn reads {name!r} from its closure or globals; pass it "
                            f"in non_sequences instead")
    if shared_reads:
        raise ScanError(f"strict=True: fn reads shared variable {shared_reads[0]!r} without an "
                        f"update; pass it in non_sequences instead")


# ------------------------------------------------------------------------------------------------
# random draws: one hook for traces and python-mode steps


# The innermost python-mode scan running in this context (its frame links to the enclosing one).
_FRAME: ContextVar = ContextVar("numbascan_python_frame", default=None)


class _PythonFrame:
    """Random-stream bookkeeping for one python-mode scan (see layout of counters in random.py)."""

    def __init__(self, parent=None):
        self.parent = parent          # the python-mode scan whose step runs this one, or None
        self.bases, self.per_step, self.used, self.t = {}, {}, {}, 0

    def next_base(self, stream):
        if stream not in self.bases:
            self.bases[stream] = _enclosing_next_base(self)(stream)
        return self.bases[stream] + self.t * self.per_step.get(stream, 0) + \
            self.used.get(stream, 0)

    def end_step(self):
        if self.t == 0:
            self.per_step = dict(self.used)
        self.used = {}
        self.t += 1

    def finish(self, n_steps):
        advance = _enclosing_advance(self)
        for s in self.bases:
            advance(s, n_steps * self.per_step.get(s, 0))


def _enclosing_next_base(frame):
    if frame.parent is not None:
        return frame.parent.next_base
    return lambda s: s.counter


def _enclosing_advance(frame):
    parent = frame.parent
    if parent is not None:
        return lambda s, n: parent.used.__setitem__(s, parent.used.get(s, 0) + n)

    def adv(s, n):
        s.counter += n
    return adv


def _draw_hook(stream, kind, size, params):
    tr = current_trace()
    if tr is not None:
        key, base, offset = tr.rng_next(stream)
        tr.rng_advance(stream, nsrandom.counters_used(kind, size, params))
        return tr.bind1("random", [key, base], kind=kind, size=tuple(size),
                        dist=tuple(params), offset=offset)
    frame = _FRAME.get()
    if frame is not None:
        base = frame.next_base(stream)
        frame.used[stream] = frame.used.get(stream, 0) + nsrandom.counters_used(kind, size,
                                                                                 params)
        return nsrandom.draw_numpy(stream.key, base, kind, size, params)
    return NotImplemented


nsrandom.traced_draw_hook = _draw_hook


# ------------------------------------------------------------------------------------------------
# mode="python": the reference loop


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


def scan_python(sa: ScanArgs):
    n = sa.n_steps
    seqs = [_readonly(np.asarray(s)) for s in sa.seqs]
    nonseqs = [_readonly(np.asarray(v)) for v in sa.nonseqs]
    hist = []          # per fed-back output: a window of its last L states (layout.py)
    for init, taps in zip(sa.inits, sa.out_taps):
        if taps:
            init = np.asarray(init)
            rows = [init.copy()] if taps == (-1,) else [np.array(x) for x in init]
            hist.append(collections.deque(rows, maxlen=len(rows)))
    fed = [(i, OutLayout(taps)) for i, taps in enumerate(sa.out_taps) if taps]
    collected, shared_frame, frame = None, {}, _PythonFrame(_FRAME.get())
    shared_keys, n_run = [], 0
    tokens = (_FRAME.set(frame), _PYTHON_STATES.set(_PYTHON_STATES.get() + (shared_frame,)),
              _MODE.set("python"))
    try:
        for t in range(n):
            args = []
            for s, sl in zip(seqs, sa.seq_layouts):
                args += sl.rows(s, t, sa.go_backwards)
            for k, (_, ol) in enumerate(fed):
                args += [_readonly(hist[k][ol.window_row(tap)]) for tap in ol.taps]
            args += nonseqs
            outputs, updates, cond = split_step_result(sa.fn(*args))
            outputs = [np.asarray(o) for o in outputs]
            check_step_outputs(sa, outputs, [(o.dtype, o.shape) for o in outputs])
            if collected is None:
                collected = [[] for _ in outputs]
                shared_keys = list(updates)
            for c, o in zip(collected, outputs):
                if sa.keep_last:           # reduce/foldl/foldr keep only the last step
                    c.clear()
                c.append(o.copy())
            for k, (i, _) in enumerate(fed):
                hist[k].append(outputs[i].copy())
            # every new value is read before any is written: updates are simultaneous
            new_values = []
            for k, v in updates.items():
                v = np.array(v)
                _check_update(k, v.dtype, v.shape)
                new_values.append((id(k), v))
            shared_frame.update(new_values)
            frame.end_step()
            n_run = t + 1
            if cond is not None:
                cond = np.asarray(cond)
                if cond.shape != ():
                    raise ScanError(f"until: the condition must be a scalar, found shape "
                                    f"{cond.shape}")
                if bool(cond):
                    break
        # a scan inside a python-mode step reserves the counters of every step it may run
        # (compiled steps draw at offsets fixed per step); one at the top, of those that ran
        frame.finish(n if frame.parent is not None else n_run)
    finally:
        _MODE.reset(tokens[2])
        _PYTHON_STATES.reset(tokens[1])
        _FRAME.reset(tokens[0])
    if collected is None:          # no step ran: shapes from a trace of the step
        ts = trace_step(sa)
        collected = [[] for _ in ts.out_avals]
        out_arrays = [np.empty((0,) + tuple(s), d) for d, s in ts.out_avals]
        shared_keys = ts.shared_states
    else:
        out_arrays = [np.stack(c) for c in collected]
    updates = Updates({k: shared_frame.get(id(k), k.get_value()) for k in shared_keys})
    if sa.keep_last:
        out_arrays = [_last(a, i, sa) for i, a in enumerate(out_arrays)]
    return out_arrays, updates, n_run


def _last(a, i, sa):
    if len(a):
        return a[-1]
    taps = sa.out_taps[i] if i < len(sa.out_taps) else ()
    if taps:
        init = np.asarray(sa.inits[i])
        return init.copy() if taps == (-1,) else init[-1].copy()
    raise ScanError("reduce/foldl with n_steps=0 has no last step for a map output")


# ------------------------------------------------------------------------------------------------
# the public family


def scan(fn, sequences=None, outputs_info=None, non_sequences=None, n_steps=None,
         truncate_gradient=-1, go_backwards=False, mode=None, name=None, strict=False,
         return_list=False, checkpoint=None, _keep_last=False, _parallel=False):
    """Theano's scan: run `fn` over sequences, feeding back outputs. See docs/guide.md."""
    sa = normalize(fn, sequences, outputs_info, non_sequences, n_steps, truncate_gradient,
                   go_backwards, name, strict, return_list, checkpoint, keep_last=_keep_last,
                   parallel=_parallel, mode=mode)
    inputs = sa.seqs + sa.nonseqs + [i for i in sa.inits if i is not None]
    traced = current_trace() is not None or any(isinstance(x, Tracer) for x in inputs)
    if traced:
        from .scanprim import bind_scan
        outs, updates = bind_scan(sa)
    else:
        mode = choose_mode(mode, inputs, batched=sa if sa.parallel else None)
        if mode == "python":
            outs, updates, n_run = scan_python(sa)
        elif mode == "cpu":
            from .driver import scan_cpu
            outs, updates, n_run = scan_cpu(sa)
        else:
            from .gpu import scan_cuda
            outs, updates, n_run = scan_cuda(sa, batched=sa.parallel)
    if len(outs) == 1 and not return_list:
        return outs[0], updates
    return list(outs), updates


def _map_asks_for_cuda(sa):
    """Whether a scan in the step of ns.vmap's map asks for cuda (a step that cannot be
    traced asks for nothing)."""
    from .driver import traced_scan
    from .scanprim import asks_for_cuda
    try:
        ts = traced_scan(sa, compile=False)[0]
    except TracingError:
        return False
    return asks_for_cuda(ts.ir)


def map(fn, sequences, non_sequences=None, go_backwards=False, mode=None, name=None):
    return scan(fn, sequences=sequences, outputs_info=None, non_sequences=non_sequences,
                go_backwards=go_backwards, mode=mode, name=name)


def reduce(fn, sequences, outputs_info, non_sequences=None, go_backwards=False, mode=None,
           name=None):
    return scan(fn, sequences=sequences, outputs_info=outputs_info,
                non_sequences=non_sequences, go_backwards=go_backwards, mode=mode, name=name,
                _keep_last=True)


def foldl(fn, sequences, outputs_info, non_sequences=None, mode=None, name=None):
    return reduce(fn, sequences, outputs_info, non_sequences, go_backwards=False, mode=mode,
                  name=name)


def foldr(fn, sequences, outputs_info, non_sequences=None, mode=None, name=None):
    return reduce(fn, sequences, outputs_info, non_sequences, go_backwards=True, mode=mode,
                  name=name)
