"""Stage: the scan loop — `mode="python"`, the reference every compiled path is tested against.

`scan_python` runs the user's step in a plain Python loop on NumPy values. The random-draw hook
(`random.traced_draw_hook`, installed here) records a draw on the current trace or, inside a
python-mode step, draws from the counters a compiled step would use.
"""

from __future__ import annotations

import collections
from contextvars import ContextVar

import numpy as np

from .. import random as nsrandom
from ..core.context import current_trace
from ..core.layout import OutLayout
from ..shared import Updates, _PYTHON_STATES
from ..trace.tracer import TracingError
from .args import ScanArgs, ScanError, _MODE, check_buffer_bytes
from .step import (_check_update, call_step, check_call_form, check_returned_value,
                   check_step_outputs, split_step_result, trace_step)

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


def in_python_step() -> bool:
    """Whether this context is running the step of a python-mode scan."""
    return _FRAME.get() is not None


def scan_python(sa: ScanArgs, on_step=None):
    """Run the scan in a Python loop; `on_step(n)` (when given) after each step, `n` the steps
    run so far."""
    if sa.strict:
        _check_strict(sa)
    n = sa.n_steps
    seqs = [_readonly(np.asarray(s)) for s in sa.seqs]
    nonseqs = [_readonly(np.asarray(v)) for v in sa.nonseqs]
    hist = []          # per fed-back output: a window of its last L states (core/layout.py)
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
            outputs, updates, cond = split_step_result(call_step(sa, sa.fn, args))
            check_call_form(sa, outputs)
            for i, o in enumerate(outputs):
                check_returned_value(f"output {i}", o)
            outputs = [np.asarray(o) for o in outputs]
            check_step_outputs(sa, outputs, [(o.dtype, o.shape) for o in outputs])
            if collected is None:
                # the buffers a compiled loop allocates before its first step, checked here
                # before the list of kept steps can grow
                check_buffer_bytes(n, _buffers(sa, outputs, updates))
                collected = [[] for _ in outputs]
                shared_keys = list(updates)
            for i, (c, o) in enumerate(zip(collected, outputs)):
                if sa.keeps_last(i):       # reduce/foldl/foldr keep only the last step
                    c.clear()
                c.append(o.copy())
            for k, (i, _) in enumerate(fed):
                hist[k].append(outputs[i].copy())
            # every new value is read before any is written: updates are simultaneous
            new_values = []
            for k, v in updates.items():
                check_returned_value(f"updates[{k!r}]", v)
                v = np.array(v)
                _check_update(k, v.dtype, v.shape)
                new_values.append((id(k), v))
            shared_frame.update(new_values)
            frame.end_step()
            n_run = t + 1
            if on_step is not None:
                on_step(n_run)
            if cond is not None:
                check_returned_value("until", cond)
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
    out_arrays = [_last(a, i, sa) if sa.keeps_last(i) else a for i, a in enumerate(out_arrays)]
    return out_arrays, updates, n_run


def _last(a, i, sa):
    if len(a):
        return a[-1]
    taps = sa.out_taps[i] if i < len(sa.out_taps) else ()
    if taps:
        init = np.asarray(sa.inits[i])
        return init.copy() if taps == (-1,) else init[-1].copy()
    raise ScanError("reduce/foldl with n_steps=0 has no last step for a map output")


def _buffers(sa, outputs, updates):
    """(rows, dtype, step shape) of each buffer the compiled loop (runtime/cpu.py) allocates
    for this scan: the step's outputs (every step kept, or only the last), then the updated
    shared variables (their last value)."""
    bufs = []
    for i, o in enumerate(outputs):
        taps = sa.out_taps[i] if i < len(sa.out_taps) else ()
        keep = "last" if sa.keeps_last(i) else "all"
        bufs.append((OutLayout(taps, keep).buffer_rows(sa.n_steps), o.dtype, o.shape))
    for k in updates:
        rows = OutLayout((-1,), keep="last").buffer_rows(sa.n_steps)
        bufs.append((rows, k.dtype, tuple(k.shape)))
    return bufs


def _check_strict(sa):
    """strict=True (Theano's meaning) checked as in compiled modes, on the traced step: fn may
    not read arrays from its closure or globals, nor shared variables it does not update.
    A step numbascan cannot trace is not checked, as in the compiled modes."""
    try:
        trace_step(sa)
    except TracingError:
        pass
