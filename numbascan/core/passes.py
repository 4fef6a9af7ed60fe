"""Stage: IR -> IR optimisation passes run before code generation.

`keep_only_last_steps`: a scan output whose only uses are `out[-1]` keeps only its last step
(a ring of L + 1 rows instead of n + L), Theano's "scan notices this and does not waste memory".
For a scan that stops early, `out[-1]` is the row `max(n_run - 1, 0)` of its run-time count.

`simplify`: common subexpressions merged (an equation of the primitive table repeating an
earlier one's primitive, inputs and parameters is dropped for it; random draws excepted) and
transposes of transposes folded, then dead code removed. Derivative rules repeat structural
work (`S.T` once per use, `A.T.T`); every equation dropped here is a loop nest numba does not
compile.
"""

from __future__ import annotations

from collections import defaultdict

from . import primitives
from .ir import Eqn, IR, Lit, Var, dead_code_elimination

NOT_MERGED = {"random"}     # two draws with equal inputs are still two draws


def _subst(x, table):
    return table.get(x.id, x) if isinstance(x, Var) else x


def _last_run_rows(ir: IR, uses):
    """Ids of the values `max(n - 1, 0)` of each scan's run-time step count n."""
    made = {v.id: e for e in ir.eqns for v in e.outputs}

    def is_lit(x, value):
        return isinstance(x, Lit) and x.value == value
    found = set()
    for e in ir.eqns:
        if e.prim == "maximum" and is_lit(e.inputs[1], 0) and isinstance(e.inputs[0], Var):
            a = made.get(e.inputs[0].id)
            if a is not None and a.prim == "add" and is_lit(a.inputs[1], -1) and \
                    isinstance(a.inputs[0], Var):
                found.add((a.inputs[0].id, e.outputs[0].id))
    return found


def keep_only_last_steps(ir: IR) -> IR:
    uses = defaultdict(list)
    for k, e in enumerate(ir.eqns):
        for v in e.inputs:
            if isinstance(v, Var):
                uses[v.id].append(k)
    last_run_rows = _last_run_rows(ir, uses)
    program_outputs = {v.id for v in ir.outputs if isinstance(v, Var)}
    table, dropped, eqns = {}, set(), []
    for k, e in enumerate(ir.eqns):
        if k in dropped:
            continue
        params = e.p
        if e.prim == "scan":
            params["step"] = keep_only_last_steps(params["step"])
            layout, n = params["layout"], params["n_steps"]
            outputs = list(e.outputs)
            last = []
            n_run = e.outputs[-1].id if layout.counts_steps else None
            for j, (o, v) in enumerate(zip(layout.outs, e.outputs)):
                users = uses[v.id]
                if (o.keep == "all" and n > 0 and users and v.id not in program_outputs and
                        all(_is_last_row(ir.eqns[u], v, n, n_run, last_run_rows)
                            for u in users)):
                    last.append(j)
                    outputs[j] = Var(v.dtype, v.shape[1:])
                    for u in users:
                        table[ir.eqns[u].outputs[0].id] = outputs[j]
                        dropped.add(u)
            if last:
                params["layout"] = layout.keep_last(last)
            e = Eqn(e.prim, e.inputs, tuple(outputs), tuple(sorted(params.items())))
        eqns.append(Eqn(e.prim, tuple(_subst(v, table) for v in e.inputs), e.outputs, e.params))
    return IR(ir.inputs, tuple(eqns), tuple(_subst(v, table) for v in ir.outputs))


def _is_last_row(e, v, n, n_run, last_run_rows):
    if e.prim != "index" or e.inputs[0] is not v:
        return False
    if n_run is None:
        return e.p["spec"] == (("int", n - 1),)
    return (e.p["spec"] == (("dyn", n),) and isinstance(e.inputs[1], Var) and
            (n_run, e.inputs[1].id) in last_run_rows)


def _operand_key(x):
    if isinstance(x, Var):
        return x.id
    return ("lit", type(x.value).__name__, repr(x.value))


def _eqn_key(e):
    """A hashable identity of what `e` computes, or None when it must not be merged."""
    if e.prim not in primitives.TABLE or e.prim in NOT_MERGED:
        return None
    key = (e.prim, tuple(_operand_key(x) for x in e.inputs), e.params)
    try:
        hash(key)
    except TypeError:                          # an array-valued parameter: left alone
        return None
    return key


def _axes(e, ndim):
    axes = e.p.get("axes")
    return tuple(range(ndim))[::-1] if axes is None else tuple(axes)


def simplify(ir: IR) -> IR:
    """`ir` with repeated equations merged and transpose(transpose(x)) folded (see above)."""
    table: dict = {}                           # id of a dropped value -> the value that replaces it
    seen: dict = {}                            # _eqn_key -> outputs of its first equation
    made: dict = {}                            # id -> the equation that made it
    eqns = []
    for e in ir.eqns:
        e = Eqn(e.prim, tuple(_subst(x, table) for x in e.inputs), e.outputs, e.params)
        src = made.get(e.inputs[0].id) if e.prim == "transpose" and \
            isinstance(e.inputs[0], Var) else None
        if src is not None and src.prim == "transpose":
            inner, outer = _axes(src, src.inputs[0].ndim), _axes(e, e.inputs[0].ndim)
            axes = tuple(inner[a] for a in outer)
            if axes == tuple(range(len(axes))):
                table[e.outputs[0].id] = src.inputs[0]
                continue
            e = Eqn("transpose", (src.inputs[0],), e.outputs, (("axes", axes),))
        key = _eqn_key(e)
        if key is not None and key in seen:
            for v, w in zip(e.outputs, seen[key]):
                table[v.id] = w
            continue
        if key is not None:
            seen[key] = e.outputs
        for v in e.outputs:
            made[v.id] = e
        eqns.append(e)
    out = IR(ir.inputs, tuple(eqns), tuple(_subst(v, table) for v in ir.outputs))
    return dead_code_elimination(out)
