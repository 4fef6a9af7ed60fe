"""Stage: the scan loop — the step, traced once into an IR with its `Layout`.

`trace_step` calls the step on tracers and returns a `TracedStep`: its program, layout, shared
states, captures and random streams. The checks of what a step returns (`split_step_result`,
`check_step_outputs`) serve the traced and the Python paths alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.ir import IR
from ..core.passes import simplify
from ..core.layout import Layout, OutLayout
from ..shared import Shared
from ..trace.captures import with_traced_captures
from ..trace.names import describe, function_name
from ..trace.tracer import RunTracer, Trace, Tracer, TracingError
from .args import (ScanArgs, ScanError, check_arity, output_count_error, reads_like_jax,
                   until)


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


def check_returned_value(what, value):
    """What the step returned for `what` (output i, an update, the until condition) must be
    one numeric array or number (a Shared stands for its value); the same check, and message,
    in every mode. A tuple or list of plain numbers is one array; one holding arrays is not."""
    if isinstance(value, (Tracer, Shared)):
        return
    if isinstance(value, (tuple, list)) and any(
            isinstance(v, (Tracer, Shared, np.ndarray, tuple, list)) for v in value):
        raise ScanError(
            f"{what}: the step returned {_describe(value)}, where scan expects one array; a "
            f"step returns its outputs as one flat tuple (out0, out1, ...) with one "
            f"outputs_info entry per output (np.stack(...) makes one array of several)")
    if value is None:
        raise TypeError(f"{what}: the step returned None, but scan expects a numeric array "
                        f"(bool, int or float); does the step end with `return`?")
    try:
        dtype = np.asarray(value).dtype
    except ValueError:                    # a ragged nesting of numbers
        raise ScanError(f"{what}: the step returned {_describe(value)}, which is not one "
                        f"array; return one numeric array per output") from None
    if dtype.kind not in "biuf":
        found = (f"an array of dtype {dtype}" if isinstance(value, np.ndarray) else
                 f"a {dtype} scalar" if isinstance(value, np.generic) else
                 f"a {type(value).__name__} (NumPy dtype {dtype})")
        raise TypeError(
            f"{what}: the step returned {found}, but scan expects a numeric array (bool, int "
            f"or float); convert it, e.g. np.real(...) or .astype(np.float64)")


def _describe(value, depth=0):
    """A short description of a returned value for error messages: its type, the shape of
    an array, the items of a tuple or list."""
    if isinstance(value, (tuple, list)):
        if depth > 1:
            return f"a {type(value).__name__}"
        inner = ", ".join(_describe(v, depth + 1) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"a {type(value).__name__} of {len(value)} ({inner}{more})"
    if isinstance(value, (Tracer, np.ndarray)):
        return f"an array of shape {tuple(value.shape)}"
    return type(value).__name__


def check_call_form(sa: ScanArgs, outputs):
    """Before the outputs are checked one by one: a step whose results read as JAX's (carry,
    y), of a call that reads like JAX's scan(f, init, xs), raises the count error that says
    so (its y may be None, or its carry a tuple, which the checks of one output would name)."""
    if sa.out_taps and len(outputs) != len(sa.out_taps) and reads_like_jax(sa, len(outputs)):
        raise output_count_error(sa, len(outputs))


def check_step_outputs(sa: ScanArgs, outputs, avals):
    """avals: (dtype, shape) of each returned output. Raises on a mismatch with outputs_info."""
    n_info = len(sa.out_taps)
    if sa.out_taps and len(outputs) != n_info:
        raise output_count_error(sa, len(outputs))
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


def call_step(sa: ScanArgs, fn, args):
    """fn(*args), for the step of `sa` (fn: the step or its traced rebuild); a step that
    cannot take the arguments scan passes raises an error saying which they are."""
    try:
        return fn(*args)
    except TypeError as err:
        if not isinstance(err, TracingError):
            check_arity(sa)
        raise


def step_name(sa: ScanArgs):
    return repr(function_name(getattr(sa.fn, "fn", sa.fn))) + _of_scan(sa)


def describe_step(sa: ScanArgs):
    """The step as the chain of a TracingError names it: "step function 'kf_step'", or a
    transformation's label ("ns.jacfwd(f)")."""
    return describe(getattr(sa.fn, "fn", sa.fn), "step function") + _of_scan(sa)


def _of_scan(sa: ScanArgs):
    return f" of scan {sa.name!r}" if sa.name else ""


def trace_step(sa: ScanArgs) -> TracedStep:
    with Trace(sa.name or "step", sa.fn, kind="step") as tr:
        args = [tr.new_arg(d, s) for d, s in sa.arg_avals()]
        fn, capture_names = with_traced_captures(getattr(sa.fn, "fn", sa.fn), tr)
        try:
            ret = call_step(sa, fn, args)
        except TracingError as err:
            err.add_context(describe_step(sa))
            raise
        outputs, updates, cond = split_step_result(ret)
        check_call_form(sa, outputs)
        for i, o in enumerate(outputs):
            check_returned_value(f"output {i}", o)
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
            check_returned_value(f"updates[{k!r}]", v)
            v = v if isinstance(v, Tracer) else _lift_const(tr, v)
            _check_update(k, v.dtype, v.shape)
            upd_values.append(v)
        cond_t = None
        if cond is not None:
            check_returned_value("until", cond)
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
    ir = simplify(IR(inputs, tuple(tr.eqns), result_vars))
    outs = tuple(OutLayout(taps) for taps in sa.out_taps)
    outs += tuple(OutLayout(()) for _ in range(len(out_tracers) - len(outs)))
    outs += tuple(OutLayout((-1,), keep="last") for _ in shared_states)
    layout = Layout(
        seqs=tuple(sa.seq_layouts), outs=outs, n_outputs=len(out_tracers),
        n_nonseqs=len(sa.nonseqs), n_captures=len(captures),
        rng=tuple((0, tr.rng_used[s]) for s in streams), until=cond is not None,
        go_backwards=sa.go_backwards, parallel=sa.parallel)
    layout = layout.keep_last([i for i in range(len(outs)) if sa.keeps_last(i)])
    return TracedStep(ir, layout, shared_states, shared_reads, captures, streams,
                      [(o.dtype, o.shape) for o in out_tracers], len(out_tracers), tr.created)


def _lift_const(tr, value):
    """A step may return a constant (a Python number or an array): it becomes an input.
    A Shared stands for its value at the start of the step (its state input)."""
    if isinstance(value, Shared):
        return Tracer(tr, tr.shared_var(value))
    arr = np.asarray(value)                   # numeric: check_returned_value ran
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
