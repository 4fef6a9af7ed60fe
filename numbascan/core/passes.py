"""Stage: IR -> IR optimisation passes run before code generation.

`keep_only_last_steps`: a scan output whose only uses are `out[-1]` keeps only its last step
(a ring of L + 1 rows instead of n + L), Theano's "scan notices this and does not waste memory".
For a scan that stops early, `out[-1]` is the row `max(n_run - 1, 0)` of its run-time count.
"""

from __future__ import annotations

from collections import defaultdict

from .ir import Eqn, IR, Lit, Var


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
