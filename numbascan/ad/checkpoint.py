"""Stage: IR -> IR rewrite for reverse mode — checkpointed scans.

`checkpoint=N` rewrites a scan of n steps into a scan over S = n // N segments whose step runs
the original step N times (an inner scan), followed by a tail scan of the n - S*N steps left.
The segment scan is marked `remat`: its reverse mode stores only the states at segment starts
(S windows of the last L states) and recomputes each segment, with its own tape of N rows,
during the backward pass. The tape is O(N + n/N) rows instead of O(n); "sqrt" picks N = √n.

Sequences are cut into overlapping blocks of N + m + M rows (the halo holds the rows that the
taps of a segment's last steps reach into the next segment).
"""

from __future__ import annotations

import math

import numpy as np

from ..core.ir import IR
from ..core.layout import OutLayout, SeqLayout
from ..trace.tracer import Trace
from . import rules
from .engine import bind_like, replay
from .scan_rules import Parts, bind_scan_program, device_params


def segment_length(checkpoint, n_steps):
    if checkpoint is None:
        return None
    if checkpoint == "sqrt":
        return max(1, int(math.isqrt(max(n_steps, 1))))
    return int(checkpoint)


def needs_expansion(ir: IR):
    for e in ir.eqns:
        if e.prim == "scan":
            N = segment_length(e.p.get("checkpoint"), e.p["n_steps"])
            if N is not None and N < e.p["n_steps"] and not e.p["layout"].counts_steps:
                return True
    return False


def expand_checkpoints(ir: IR):
    """`ir` with its checkpointed scans rewritten; returns (IR, extra input values)."""
    with Trace("checkpoint", kind="program") as tr:
        args = [tr.new_arg(v.dtype, v.shape) for v in ir.inputs]
        env = {v.id: a for v, a in zip(ir.inputs, args)}
        read = (lambda v: v.value if not hasattr(v, "id") else env[v.id])
        for e in ir.eqns:
            ins = [read(v) for v in e.inputs]
            N = segment_length(e.p.get("checkpoint"), e.p["n_steps"]) if e.prim == "scan" \
                else None
            if N is not None and N < e.p["n_steps"] and not e.p["layout"].counts_steps:
                outs = checkpointed_scan(e, ins, N)
            else:
                outs = bind_like(e, ins)
            for v, o in zip(e.outputs, outs):
                env[v.id] = o
        outputs = tuple(tr.lift(read(v)) for v in ir.outputs)
    new = IR(tuple(tr.args) + tuple(c.var for c in tr.captures), tuple(tr.eqns), outputs)
    return new, [c.source for c in tr.captures]


def _blocks(eff, sl, S, N):
    """(S, N + m + M, ...) overlapping blocks: block k holds eff[k*N : k*N + N + m + M]."""
    row = tuple(eff.shape[1:])
    body = np.reshape(eff[:S * N], (S, N) + row)
    if not sl.halo:
        return body
    extra = np.stack([eff[N + i:N + i + S * N:N] for i in range(sl.halo)], axis=1)
    return np.concatenate([body, extra], axis=1)


def checkpointed_scan(e, ins, N):
    step, layout, n = e.p["step"], e.p["layout"], e.p["n_steps"]
    S, r = n // N, n % N
    P = Parts.split(layout, ins)
    fed = layout.fed
    outs_all = [OutLayout(o.taps, "all") for o in layout.outs]
    effs = [s[::-1] if layout.go_backwards else s for s in P.seqs]
    windows = [init[None] if layout.outs[o].taps == (-1,) else init
               for init, o in zip(P.inits, fed)]
    kept = [o for o, ol in enumerate(layout.outs) if ol.keep == "all" or not ol.taps]

    def inner_inits(wins):
        return [w[0] if layout.outs[o].taps == (-1,) else w for w, o in zip(wins, fed)]

    def segment(*args):
        it = iter(args)
        blocks = [next(it) for _ in P.seqs]
        wins = [next(it) for _ in fed]
        rest = [next(it) for _ in P.rest]
        rng = list(it)
        inner = bind_scan_program(lambda *a: replay(step, a), blocks, layout.seqs, outs_all,
                                  inner_inits(wins), rest, rng,
                                  [(0, per) for _, per in layout.rng], N, name="segment",
                                  params=device_params(e))
        new_wins = [np.concatenate([w, inner[o]])[N:N + layout.outs[o].L]
                    for w, o in zip(wins, fed)]
        return new_wins + [inner[o] for o in kept]

    seg = bind_scan_program(
        segment, [_blocks(eff, sl, S, N) for eff, sl in zip(effs, layout.seqs)],
        [SeqLayout((0,))] * len(P.seqs),
        [OutLayout((-1,), "all")] * len(fed) + [OutLayout(())] * len(kept),
        windows, P.rest, P.rng, [(off, N * per) for off, per in layout.rng], S,
        name="checkpoint segments", params={"remat": True, **device_params(e)})
    final = [w[S - 1] for w in seg[:len(fed)]]
    seg_out = {o: np.reshape(v, (S * N,) + tuple(v.shape[2:]))
               for o, v in zip(kept, seg[len(fed):])}
    tail = None
    if r:
        tail = bind_scan_program(
            lambda *a: replay(step, a),
            [eff[S * N:sl.length(n)] for eff, sl in zip(effs, layout.seqs)], layout.seqs,
            outs_all, inner_inits(final), P.rest, P.rng,
            [(off + S * N * per, per) for off, per in layout.rng], r, name="checkpoint tail",
            params=device_params(e))
    results = []
    for o, ol in enumerate(layout.outs):
        if ol.keep == "all":
            results.append(np.concatenate([seg_out[o], tail[o]]) if r else seg_out[o])
        elif ol.taps:
            results.append(tail[o][r - 1] if r else final[fed.index(o)][ol.window_row(-1)])
        else:
            results.append(tail[o][r - 1] if r else seg_out[o][S * N - 1])
    return results


def checkpoint_pass(ir: IR):
    """Reverse mode's IR pass: (`ir` with its checkpointed scans rewritten, the values of
    its new inputs); (`ir`, []) when it has none."""
    return expand_checkpoints(ir) if needs_expansion(ir) else (ir, [])


rules.VJP_PASSES["checkpoint"] = checkpoint_pass
