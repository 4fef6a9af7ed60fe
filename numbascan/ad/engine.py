"""Stage: IR -> IR derivatives — forward (jvp) and reverse (vjp) mode by replaying programs.

A program is differentiated by replaying its equations on tracers of a new trace: the primal
equation is bound again and the rule of `rules.py` records the derivative next to it. Forward
mode carries a tangent beside each value. Reverse mode replays forward, then walks the equations
backwards accumulating cotangents. Scans have their own rules (`scan_rules.py`, found in the
tables of `rules.py`): the same transformations applied to the step program, run as new scans.
`None` stands for a zero tangent or cotangent everywhere.
"""

from __future__ import annotations

import numpy as np

from ..core.context import current_trace
from ..core.ir import IR, Lit, Var, dead_code_elimination
from ..core.passes import simplify
from ..trace.tracer import Trace, constant
from . import rules


class DerivativeError(TypeError):
    pass


def differentiable(v):
    return np.dtype(v.dtype).kind == "f"


def zeros_like(x):
    return constant(np.zeros(np.shape(x), x.dtype))


def cast_like(t, like):
    return t if t.dtype == like.dtype else t.astype(like.dtype)


def _read(env, v):
    return v.value if isinstance(v, Lit) else env[v.id]


def bind_like(e, ins):
    """Bind equation `e`'s primitive on new inputs in the current trace; return its outputs."""
    return current_trace().bind(e.prim, ins, **e.p)


def replay(ir: IR, args):
    """Bind every equation of `ir` again on `args` (tracers or arrays); return its outputs."""
    env = {v.id: a for v, a in zip(ir.inputs, args)}
    for e in ir.eqns:
        for v, o in zip(e.outputs, bind_like(e, [_read(env, v) for v in e.inputs])):
            env[v.id] = o
    return [_read(env, v) for v in ir.outputs]


# ------------------------------------------------------------------------------------------------
# forward mode


def jvp_replay(ir: IR, primals, tangents):
    """Replay `ir` on primals with tangents (None = zero); return (outputs, output tangents)."""
    env = {v.id: a for v, a in zip(ir.inputs, primals)}
    tenv = {v.id: t for v, t in zip(ir.inputs, tangents) if t is not None}
    for e in ir.eqns:
        ins = [_read(env, v) for v in e.inputs]
        tins = [tenv.get(v.id) if isinstance(v, Var) else None for v in e.inputs]
        if e.prim in rules.JVP_RULES and any(t is not None for t in tins):
            outs, touts = rules.JVP_RULES[e.prim](e, ins, tins)
        else:
            outs = bind_like(e, ins)
            touts = jvp_rule(e, ins, outs, tins) if any(t is not None for t in tins) \
                else [None] * len(outs)
        for v, o, t in zip(e.outputs, outs, touts):
            env[v.id] = o
            if t is not None and differentiable(v):
                tenv[v.id] = cast_like(t, v)
    outs = [_read(env, v) for v in ir.outputs]
    touts = [tenv.get(v.id) if isinstance(v, Var) else None for v in ir.outputs]
    return outs, touts


def jvp_rule(e, ins, outs, tins):
    prim, p = e.prim, e.p
    ans = outs[0]
    if prim in rules.ZERO_DERIVATIVE or not differentiable(e.outputs[0]):
        return [None] * len(outs)
    if len(outs) > 1 and prim in rules.JVP:   # a rule of several outputs sees all, gives a list
        return rules.JVP[prim](tins, tuple(outs), *ins, **p)
    if prim in rules.ELEMENTWISE:
        total = None
        for rule, t in zip(rules.ELEMENTWISE[prim], tins):
            if t is not None and rule is not None:
                total = rules._add(total, rule(t, ans, *ins, **p))
        if total is not None and np.shape(total) != ans.shape:
            total = np.broadcast_to(total, ans.shape)
        return [total]
    if prim in rules.LINEAR:
        linear = rules.LINEAR[prim]
        slots = range(len(ins)) if linear == "all" else linear
        new = list(ins)
        for i in slots:
            new[i] = tins[i] if tins[i] is not None else zeros_like(ins[i])
        return [bind_like(e, new)[0]]
    if prim in rules.JVP:
        return [rules.JVP[prim](tins, ans, *ins, **p)]
    raise DerivativeError(f"no forward-mode rule for primitive {prim!r}")


# ------------------------------------------------------------------------------------------------
# reverse mode


def active_vars(ir: IR, active_inputs):
    """Ids of the variables that depend on the active inputs (float values only)."""
    active = {v.id for v, a in zip(ir.inputs, active_inputs) if a and differentiable(v)}
    for e in ir.eqns:
        if any(isinstance(v, Var) and v.id in active for v in e.inputs):
            if e.prim in rules.ZERO_DERIVATIVE:
                continue
            active.update(v.id for v in e.outputs if differentiable(v))
    return active


class Backward:
    """The forward replay of a program, kept so that `run(cotangents)` can walk it backwards."""

    def __init__(self, ir: IR, primals, active_inputs):
        self.n_inputs = len(ir.inputs)
        for ir_pass in rules.VJP_PASSES.values():
            ir, extra = ir_pass(ir)
            primals = list(primals) + extra
            active_inputs = list(active_inputs) + [False] * len(extra)
        self.ir = ir
        self.active = active_vars(ir, active_inputs)
        self.env = {v.id: a for v, a in zip(ir.inputs, primals)}
        self.saved = {}                                  # eqn index -> scan tape information
        for k, e in enumerate(ir.eqns):
            ins = [_read(self.env, v) for v in e.inputs]
            live = [isinstance(v, Var) and v.id in self.active for v in e.inputs]
            if e.prim in rules.VJP_FORWARD_RULES and any(live):
                outs, self.saved[k] = rules.VJP_FORWARD_RULES[e.prim](e, ins, live)
            else:
                outs = bind_like(e, ins)
            for v, o in zip(e.outputs, outs):
                self.env[v.id] = o
        self.outputs = [_read(self.env, v) for v in ir.outputs]

    def run(self, cotangents):
        """Cotangents of the inputs (None where zero or inactive) for output cotangents."""
        ct = {}
        for v, g in zip(self.ir.outputs, cotangents):
            if g is not None and isinstance(v, Var) and v.id in self.active:
                ct[v.id] = rules._add(ct.get(v.id), cast_like(g, v))
        for k in reversed(range(len(self.ir.eqns))):
            e = self.ir.eqns[k]
            gs = [ct.pop(v.id, None) for v in e.outputs]
            if all(g is None for g in gs):
                continue
            ins = [_read(self.env, v) for v in e.inputs]
            outs = [self.env[v.id] for v in e.outputs]
            if e.prim in rules.VJP_BACKWARD_RULES:
                in_cts = rules.VJP_BACKWARD_RULES[e.prim](e, ins, outs, gs, self.saved[k])
            else:
                in_cts = vjp_rule(e, ins, outs, gs)
            for v, g in zip(e.inputs, in_cts):
                if g is not None and isinstance(v, Var) and v.id in self.active:
                    ct[v.id] = rules._add(ct.get(v.id), cast_like(g, v))
        return [ct.get(v.id) for v in self.ir.inputs[:self.n_inputs]]


def vjp_rule(e, ins, outs, gs):
    prim, p = e.prim, e.p
    g, ans = gs[0], outs[0]
    if len(outs) > 1 and prim in rules.TRANSPOSE:     # a rule of several outputs sees all
        return rules.TRANSPOSE[prim](tuple(gs), tuple(outs), *ins, **p)
    if prim in rules.ZERO_DERIVATIVE:
        return [None] * len(ins)
    if prim in rules.ELEMENTWISE:
        cts = []
        for x, rule in zip(ins, rules.ELEMENTWISE[prim]):
            if rule is None or isinstance(x, (int, float, bool)) or \
                    np.dtype(getattr(x, "dtype", np.float64)).kind != "f":
                cts.append(None)
            else:
                cts.append(rules.unbroadcast(rule(g, ans, *ins, **p), np.shape(x)))
        return cts
    if prim in rules.TRANSPOSE:
        return rules.TRANSPOSE[prim](g, ans, *ins, **p)
    raise DerivativeError(f"no reverse-mode rule for primitive {prim!r}")


# ------------------------------------------------------------------------------------------------
# building step programs for derivative scans


def trace_closure(fn, avals, name="derivative"):
    """Trace `fn` on tracers of `avals`; return (IR with inputs args + captures, capture sources).

    Captures (arrays built by rules, values of enclosing traces) are inputs after the args.
    """
    with Trace(name, fn) as tr:
        args = [tr.new_arg(d, s) for d, s in avals]
        results = fn(*args)
        out_vars = tuple(tr.lift(r) for r in results)
    if tr.rng or tr.shared:
        raise DerivativeError("a derivative step read a random stream or a shared variable")
    ir = IR(tuple(tr.args) + tuple(c.var for c in tr.captures), tuple(tr.eqns), out_vars)
    return simplify(ir), [c.source for c in tr.captures]


CHEAP_TO_REDO = {"reshape", "transpose", "broadcast_to", "index", "convert"}


def split_known(ir: IR, unknown_inputs, late_outputs):
    """Partial evaluation: split `ir` into the equations that can run before `unknown_inputs`
    are known (forward) and the rest (backward).

    Returns (known eqns, unknown eqns, residuals): residuals are values made by known equations
    that unknown equations or `late_outputs` need — what a forward loop must record.
    """
    unknown = {v.id for v in unknown_inputs}
    known_eqns, unknown_eqns = [], []
    for e in ir.eqns:
        if any(isinstance(v, Var) and v.id in unknown for v in e.inputs):
            unknown_eqns.append(e)
            unknown.update(v.id for v in e.outputs)
        else:
            known_eqns.append(e)
    # structural equations of inputs are cheaper to redo in the backward pass than to record
    inputs = {v.id for v in ir.inputs}
    redo, redo_ids = [], set(inputs)
    for e in known_eqns:
        if e.prim in CHEAP_TO_REDO and all(not isinstance(v, Var) or v.id in redo_ids
                                           for v in e.inputs):
            redo.append(e)
            redo_ids.update(v.id for v in e.outputs)
    produced = {v.id for e in known_eqns for v in e.outputs} - redo_ids
    residuals, seen = [], set()
    for v in [v for e in unknown_eqns for v in e.inputs] + list(late_outputs):
        if isinstance(v, Var) and v.id in produced and v.id not in seen:
            seen.add(v.id)
            residuals.append(v)
    return known_eqns, redo + unknown_eqns, residuals
