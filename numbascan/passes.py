"""Stage: IR -> IR optimisation passes run before code generation.

`keep_only_last_steps`: a scan output whose only uses are `out[-1]` keeps only its last step
(a ring of L + 1 rows instead of n + L), Theano's "scan notices this and does not waste memory".
"""

from __future__ import annotations

from collections import defaultdict

from .ir import IR, Eqn, Var


def _subst(x, table):
    return table.get(x.id, x) if isinstance(x, Var) else x


def keep_only_last_steps(ir: IR) -> IR:
    uses = defaultdict(list)
    for k, e in enumerate(ir.eqns):
        for v in e.inputs:
            if isinstance(v, Var):
                uses[v.id].append(k)
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
            for j, (o, v) in enumerate(zip(layout.outs, e.outputs)):
                users = uses[v.id]
                if (o.keep == "all" and n > 0 and users and v.id not in program_outputs and
                        all(ir.eqns[u].prim == "index" and ir.eqns[u].inputs[0] is v and
                            ir.eqns[u].p["spec"] == (("int", n - 1),) for u in users)):
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
