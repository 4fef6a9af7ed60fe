"""Stage: IR -> IR derivatives of scans — tangents beside the loop, and a tape for reverse mode.

Forward mode: one new scan whose step is the jvp of the step; tangents of fed-back outputs are
carried as extra states, only for the carries whose tangent can be nonzero (a fixpoint over
the step's dependencies, as in JAX).

Reverse mode: the step's vjp is split by partial evaluation into a forward part (the primal
step plus the intermediates the backward pass needs: the *residuals*) and a backward part. The
forward scan stores every state and one row of residuals per step (the tape). The backward
scan runs the step's backward part from the last step to the first (`go_backwards=True`):

    sequences      the primal sequences and stored states, read at the same taps (negated,
                   because the walk is reversed), the tape, and output cotangents
    carried        per fed-back output a window of L pending cotangents (window[j] belongs to
                   out[t - j]); per non-sequence or captured input an accumulator
    map outputs    one cotangent per sequence tap, placed into the sequence's cotangent after
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..core.context import current_trace
from ..core.ir import IR, Var, dead_code_elimination
from ..core.layout import Layout, OutLayout, SeqLayout
from ..trace.tracer import bind, constant
from . import rules
from .engine import (Backward, active_vars, jvp_replay, replay, split_known, trace_closure,
                     zeros_like)


@dataclass
class Parts:
    """An outer scan equation's inputs, by role (see loop/primitive.py for the order)."""
    seqs: list
    inits: list
    rest: list          # non_sequences then captures
    rng: list

    dynamic: list = ()  # (trip, origin) of a scan with a run-time trip count

    @classmethod
    def split(cls, layout: Layout, ins):
        return cls(*layout.split_inputs(ins))


def step_input_mask(layout, seq_on, state_on, rest_on):
    mask = []
    for sl, on in zip(layout.seqs, seq_on):
        mask += [on] * len(sl.taps)
    for o, on in zip(layout.fed, state_on):
        mask += [on] * len(layout.outs[o].taps)
    return mask + list(rest_on) + [False] * layout.n_rng_args


def activity(step: IR, layout: Layout, seq_on, state_on, rest_on):
    """Fixpoint: which states carry derivatives, given which inputs do."""
    state_on = list(state_on)
    fed = layout.fed
    while True:
        mask = step_input_mask(layout, seq_on, state_on, rest_on)
        act = active_vars(step, mask)
        out_on = [isinstance(v, Var) and v.id in act for v in step.outputs[:len(layout.outs)]]
        grown = False
        for k, o in enumerate(fed):
            if out_on[o] and not state_on[k]:
                state_on[k] = grown = True
        if not grown:
            return mask, out_on, state_on


def state_aval(init, taps):
    return (init.dtype, tuple(init.shape) if taps == (-1,) else tuple(init.shape[1:]))


def device_params(e):
    """The mode a derived scan inherits from the scan equation `e` it is derived from."""
    return {"mode": "cuda"} if e.p.get("mode") == "cuda" else {}


def bind_scan_program(step_fn, seqs, seq_layouts, out_layouts, inits, rest, rng, layout_rng,
                      n_steps, go_backwards=False, name="derivative step", params=None,
                      parallel=False, until=False, dynamic=()):
    """Trace `step_fn` (arguments in Layout order, rng pairs last) and bind it as a scan;
    `until`: its last result is the stop condition; `dynamic`: (trip, origin) or ()."""
    avals = []
    for s, sl in zip(seqs, seq_layouts):
        avals += [(s.dtype, tuple(s.shape[1:]))] * len(sl.taps)
    fed = [o for o in out_layouts if o.taps]
    for init, o in zip(inits, fed):
        avals += [state_aval(init, o.taps)] * len(o.taps)
    avals += [(np.dtype(r.dtype), tuple(np.shape(r))) for r in rest]
    avals += [(np.dtype(np.uint64), ())] * len(rng)
    ir, sources = trace_closure(step_fn, avals, name)
    layout = Layout(seqs=tuple(seq_layouts), outs=tuple(out_layouts), n_outputs=len(out_layouts),
                    n_nonseqs=len(rest), n_captures=len(sources), rng=tuple(layout_rng),
                    go_backwards=go_backwards, parallel=parallel, until=until,
                    trip=bool(dynamic))
    n_args, nr = len(avals), layout.n_rng_args     # the captures go before the rng inputs
    inputs = ir.inputs[:n_args - nr] + ir.inputs[n_args:] + ir.inputs[n_args - nr:n_args]
    ir = IR(inputs, ir.eqns, ir.outputs)
    return current_trace().bind("scan", list(seqs) + list(inits) + list(rest) + list(sources) +
                                list(rng) + list(dynamic), step=ir, layout=layout,
                                n_steps=n_steps, **(params or {}))


def _step_args(layout, seq_taps, state_taps, rest, rng):
    return list(seq_taps) + list(state_taps) + list(rest) + list(rng)


# ------------------------------------------------------------------------------------------------
# forward mode


def scan_jvp(e, ins, tins):
    step, layout, n = e.p["step"], e.p["layout"], e.p["n_steps"]
    P, T = Parts.split(layout, ins), Parts.split(layout, tins)
    seq_on = [t is not None for t in T.seqs]
    rest_on = [t is not None for t in T.rest]
    mask, out_on, state_on = activity(step, layout, seq_on, [t is not None for t in T.inits],
                                      rest_on)
    fed = layout.fed
    for k, o in enumerate(fed):   # a state whose initial value has a tangent carries one,
        out_on[o] = out_on[o] or state_on[k]   # even if its new values have none
    act_seqs = [j for j, on in enumerate(seq_on) if on]
    act_rest = [i for i, on in enumerate(rest_on) if on]
    act_outs = [o for o, on in enumerate(out_on) if on]
    n_out = len(layout.outs)
    tinits = [T.inits[k] if T.inits[k] is not None else zeros_like(P.inits[k])
              for k, o in enumerate(fed) if o in act_outs]

    def step_fn(*args):
        it = iter(args)
        seq_taps = [[next(it) for _ in sl.taps] for sl in layout.seqs]
        tseq_taps = {j: [next(it) for _ in layout.seqs[j].taps] for j in act_seqs}
        state_taps = [[next(it) for _ in layout.outs[o].taps] for o in fed]
        tstate_taps = {o: [next(it) for _ in layout.outs[o].taps] for o in act_outs
                       if layout.outs[o].taps}
        rest = [next(it) for _ in P.rest]
        trest = {i: next(it) for i in act_rest}
        rng = list(it)
        X = [x for taps in seq_taps for x in taps] + [x for taps in state_taps for x in taps] \
            + rest + rng
        TX = [t for j, sl in enumerate(layout.seqs) for t in tseq_taps.get(j, [None] * len(sl.taps))]
        TX += [t for o in fed for t in tstate_taps.get(o, [None] * len(layout.outs[o].taps))]
        TX += [trest.get(i) for i in range(len(rest))] + [None] * len(rng)
        outs, touts = jvp_replay(step, X, TX)
        tangents = [touts[o] if touts[o] is not None else zeros_like(outs[o]) for o in act_outs]
        return outs[:n_out] + tangents + outs[n_out:n_out + layout.until]

    out_layouts = list(layout.outs) + [layout.outs[o] for o in act_outs]
    new = bind_scan_program(
        step_fn, P.seqs + [T.seqs[j] for j in act_seqs],
        list(layout.seqs) + [layout.seqs[j] for j in act_seqs], out_layouts,
        P.inits + tinits, P.rest + [T.rest[i] for i in act_rest], P.rng, layout.rng, n,
        layout.go_backwards, "jvp step", params=device_params(e), parallel=layout.parallel,
        until=layout.until, dynamic=P.dynamic)
    touts = [None] * len(e.outputs)
    for k, o in enumerate(act_outs):
        touts[o] = new[n_out + k]
    return new[:n_out] + new[n_out + len(act_outs):], touts


# ------------------------------------------------------------------------------------------------
# reverse mode


@dataclass
class Tape:
    """What the forward scan of reverse mode recorded, for the backward scan."""
    backward: IR               # inputs: step inputs, extra captures, residuals, cotangents
    extra_sources: list        # outer values of the extra captures
    residuals: list            # outer tracers, one row per step
    states: list               # per fed-back output: every state, (n, *shape)
    in_mask: list              # which step inputs get cotangents
    out_on: list               # which step outputs take cotangents
    state_on: list
    n_run: object              # the steps that ran: an int, or a traced int64 scalar


def scan_vjp_forward(e, ins, live):
    step, layout, n = e.p["step"], e.p["layout"], e.p["n_steps"]
    P, live = Parts.split(layout, ins), Parts.split(layout, live)
    in_mask, out_on, state_on = activity(step, layout, live.seqs, live.inits, live.rest)
    if n == 0:
        return current_trace().bind("scan", ins, **e.p), None
    n_out = len(layout.outs)
    x_avals = [(v.dtype, v.shape) for v in step.inputs]
    ct_avals = [(step.outputs[o].dtype, step.outputs[o].shape) for o in range(n_out) if out_on[o]]

    def vjp_fn(*args):
        X, cts = args[:len(x_avals)], list(args[len(x_avals):])
        bw = Backward(step, X, in_mask)
        g = [cts.pop(0) if o < n_out and out_on[o] else None for o in range(len(step.outputs))]
        in_cts = bw.run(g)
        return bw.outputs[:n_out + layout.until] + [c if c is not None else zeros_like(x)
                                                    for c, x, on in zip(in_cts, X, in_mask)
                                                    if on]

    V, extra_sources = trace_closure(vjp_fn, x_avals + ct_avals, "vjp step")
    nx, nct = len(x_avals), len(ct_avals)
    X_vars, ct_vars, extra = V.inputs[:nx], V.inputs[nx:nx + nct], V.inputs[nx + nct:]
    n_cond = int(layout.until)          # the stop condition, computed by the forward step
    late = V.outputs[n_out + n_cond:]
    known, unknown, residuals = split_known(V, ct_vars, late)
    if e.p.get("remat"):               # record nothing: the backward step recomputes the step
        unknown, residuals = V.eqns, []
    nr = layout.n_rng_args                # the extra captures go before the rng inputs
    fwd_inputs = X_vars[:nx - nr] + extra + X_vars[nx - nr:]
    forward = dead_code_elimination(IR(fwd_inputs, tuple(known),
                                       tuple(V.outputs[:n_out]) + tuple(residuals) +
                                       tuple(V.outputs[n_out:n_out + n_cond])))
    backward = dead_code_elimination(IR(tuple(X_vars) + tuple(extra) + tuple(residuals) +
                                        tuple(ct_vars), tuple(unknown), tuple(late)))
    fwd_layout = replace(
        layout, outs=tuple(replace(o, keep="all") if o.taps else o for o in layout.outs) +
        tuple(OutLayout(()) for _ in residuals), n_outputs=n_out + len(residuals),
        n_captures=layout.n_captures + len(extra))
    fwd_ins = P.seqs + P.inits + P.rest + list(extra_sources) + P.rng + list(P.dynamic)
    outs = current_trace().bind("scan", fwd_ins, **{**e.p, "step": forward,
                                                     "layout": fwd_layout, "checkpoint": None})
    n_run = outs.pop() if layout.counts_steps else n
    primal, states = [], []
    inits = iter(P.inits)
    for o, (ol, v) in enumerate(zip(layout.outs, outs[:n_out])):
        if ol.taps:
            states.append(v)
            init = next(inits)
            primal.append(_last_state(v, n_run, init, ol) if ol.keep == "last" else v)
        else:
            primal.append(v)
    if layout.counts_steps:
        primal.append(n_run)
    tape = Tape(backward, list(extra_sources), list(outs[n_out:]), states, in_mask, out_on,
                state_on, n_run)
    return primal, tape


def _last_state(states, n_run, init, ol):
    """The state after `n_run` steps from every state (n_steps rows): a static row, or the
    row of a run-time count (the initial state when no step ran)."""
    if isinstance(n_run, (int, np.integer)):
        return states[n_run - 1]
    last = states[np.maximum(n_run - 1, 0)]
    first = init if ol.taps == (-1,) else init[ol.window_row(-1)]
    return np.where(n_run > 0, last, first)


def _pad_rows(x, before, after):
    parts = []
    if before:
        parts.append(constant(np.zeros((before,) + tuple(x.shape[1:]), x.dtype)))
    parts.append(x)
    if after:
        parts.append(constant(np.zeros((after,) + tuple(x.shape[1:]), x.dtype)))
    return np.concatenate(parts) if len(parts) > 1 else x


def _rows_before(x, n_rows):
    """Rows 0..n_rows-1 of `x` (n_rows a traced int64 scalar), the others zeros."""
    rows = constant(np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1)))
    return np.where(rows < n_rows, x, constant(np.zeros((), x.dtype)))


def _row_at(g, row, n_rows):
    """An array of `n_rows` rows, `g` at `row` and zeros elsewhere."""
    if isinstance(row, (int, np.integer)):
        return _pad_rows(g[None], row, n_rows - 1 - row)
    rows = constant(np.arange(n_rows).reshape((-1,) + (1,) * g.ndim))
    return np.where(rows == row, g[None], constant(np.zeros((), g.dtype)))


def _reverse(x, n_rows):
    """x's first n_rows rows in reverse order, zeros after (all of x reversed when static)."""
    if isinstance(n_rows, (int, np.integer)) and n_rows == x.shape[0]:
        return x[::-1]
    return bind("reverse_rows", [x, n_rows])


def scan_vjp_backward(e, ins, outs, gs, tape: Tape):
    """The backward scan: a go_backwards walk over the steps that ran, from the last (its
    origin is the forward scan's number of steps run, so nothing is sliced; with
    truncate_gradient=k it runs min(k, steps run) steps)."""
    step, layout, n = e.p["step"], e.p["layout"], e.p["n_steps"]
    P = Parts.split(layout, ins)
    fed = layout.fed
    if tape is None:                                     # zero steps: outputs are the inits
        cts = [None] * len(ins)
        for k, o in enumerate(fed):
            if gs[o] is not None and layout.outs[o].keep == "last":
                cts[len(P.seqs) + k] = gs[o] if layout.outs[o].taps == (-1,) else \
                    _pad_rows(gs[o][None], layout.outs[o].window_row(-1), 0)
        return cts
    n_run = tape.n_run
    static = isinstance(n_run, (int, np.integer))
    trunc = e.p.get("truncate", -1)
    if trunc > 0:
        nb = min(n_run, trunc) if static else np.minimum(n_run, trunc)
    else:
        nb = n_run
    n_out = len(layout.outs)
    # forward step t reads eff[t + m + tap] of each sequence
    eff_len = []
    sequences, seq_layouts = [], []
    for s, sl in zip(P.seqs, layout.seqs):
        if not layout.go_backwards:
            eff, k = s, None
        elif layout.trip:                                # walked back from its origin
            k = sl.length(P.dynamic[1])
            eff = _reverse(s, k)
        else:
            eff, k = s[::-1], s.shape[0]
        eff_len.append(k)
        sequences.append(eff)
        seq_layouts.append(SeqLayout(tuple(-t for t in sl.taps)))
    for k, o in enumerate(fed):
        ol = layout.outs[o]
        init = P.inits[k]
        rows = init[None] if ol.taps == (-1,) else init
        sequences.append(np.concatenate([rows, tape.states[k]]))
        seq_layouts.append(SeqLayout(tuple(-t for t in ol.taps)))
    for r in tape.residuals:
        sequences.append(r)
        seq_layouts.append(SeqLayout((0,)))
    ybar_from = {}
    for o in range(n_out):
        g, ol = gs[o], layout.outs[o]
        if g is None or not tape.out_on[o]:
            continue
        if ol.keep == "all":
            ybar_from[o] = len(sequences)
            sequences.append(g)
        elif not ol.taps:
            ybar_from[o] = len(sequences)
            sequences.append(_row_at(g, n_run - 1, n))
        else:
            continue
        seq_layouts.append(SeqLayout((0,)))
    act_fed = [k for k, o in enumerate(fed) if tape.state_on[k]]
    windows = []
    for k in act_fed:
        o = fed[k]
        ol, init = layout.outs[o], P.inits[k]
        shape = tuple(init.shape) if ol.taps == (-1,) else tuple(init.shape[1:])
        w = constant(np.zeros((ol.L,) + shape, init.dtype))
        if ol.keep == "last" and gs[o] is not None:      # the last state's cotangent
            w = _pad_rows(gs[o][None].astype(init.dtype), 0, ol.L - 1)
        windows.append(w)
    n_seq_in, n_state_in = layout.n_seq_args, layout.n_state_args
    seq_masks, _, rest_mask, _ = layout.split_step_inputs(tape.in_mask)
    act_rest = [i for i, on in enumerate(rest_mask) if on]
    accs = [zeros_like(P.rest[i]) for i in act_rest]
    seq_mask = [on for mask in seq_masks for on in mask]
    n_res = len(tape.residuals)
    nr = layout.n_rng_args
    backward = tape.backward

    def bwd_step(*args):
        it = iter(args)
        seq_taps = [next(it) for _ in range(n_seq_in)]
        state_taps = [next(it) for _ in range(n_state_in)]
        res = [next(it) for _ in range(n_res)]
        ybar = {o: next(it) for o in ybar_from}
        wins = [next(it) for _ in act_fed]
        acc = [next(it) for _ in act_rest]
        rest = [next(it) for _ in P.rest]
        extra = [next(it) for _ in tape.extra_sources]
        X = seq_taps + state_taps + rest + [np.uint64(0)] * nr
        win_of = dict(zip([fed[k] for k in act_fed], wins))
        cts = []
        for o in range(n_out):
            if not tape.out_on[o]:
                continue
            g = ybar.get(o)
            if o in win_of:
                g = rules._add(g, win_of[o][0])
            cts.append(g if g is not None else constant(np.zeros(step.outputs[o].shape,
                                                        step.outputs[o].dtype)))
        in_cts = iter(replay(backward, X + extra + res + cts))
        per_input = [next(in_cts) if on else None for on in tape.in_mask]
        seq_in, state_in, rest_cts, _ = layout.split_step_inputs(per_input)
        seq_cts = [c for c, on in zip([x for xs in seq_in for x in xs], seq_mask) if on]
        tap_cts = {(o, tap): c for o in fed for tap, c in zip(layout.outs[o].taps, state_in[o])}
        new_wins = []
        for k, w in zip(act_fed, wins):
            o = fed[k]
            L = layout.outs[o].L
            rows = []
            for j in range(L):
                row = w[j + 1] if j + 1 < L else constant(np.zeros(w.shape[1:], w.dtype))
                c = tap_cts.get((o, -(j + 1)))
                rows.append(row + c if c is not None else row)
            new_wins.append(np.stack(rows))
        new_acc = [a + rest_cts[i] for a, i in zip(acc, act_rest)]
        return new_wins + new_acc + seq_cts

    inits = windows + accs
    out_layouts = [OutLayout((-1,), keep="last") for _ in inits] + \
        [OutLayout(()) for _ in range(sum(seq_mask))]
    result = bind_scan_program(
        bwd_step, sequences, seq_layouts, out_layouts, inits,
        list(P.rest) + list(tape.extra_sources), [], [], n, go_backwards=True,
        name="backward step", params=device_params(e), dynamic=(nb, n_run))
    cts = [None] * len(ins)
    it = iter(result)
    for k in act_fed:
        w = next(it)
        ol = layout.outs[fed[k]]
        w = w[0] if ol.taps == (-1,) else w[::-1]
        if trunc > 0:                                  # reached the initial state?
            if static:
                w = w if n_run <= trunc else None
            else:
                w = np.where(n_run <= trunc, w, constant(np.zeros((), w.dtype)))
        cts[len(P.seqs) + k] = w
    base = len(P.seqs) + len(P.inits)
    for i in act_rest:
        cts[base + i] = next(it)
    for j, (s, sl, mask) in enumerate(zip(P.seqs, layout.seqs, seq_masks)):
        total = None
        for tap, on in zip(sl.taps, mask):
            if not on:
                continue
            c = next(it)                    # row i: step n_run - 1 - i, for i < nb
            if static:                      # steps n_run - nb .. n_run - 1, in order
                c = c[:nb][::-1]
                before = sl.row(n_run - nb, tap)
            else:
                c = bind("reverse_rows", [_rows_before(c, nb) if trunc > 0 else c, n_run])
                before = sl.row(0, tap)
            placed = _pad_rows(c, before, s.shape[0] - before - c.shape[0])
            total = rules._add(total, placed)
        if total is not None:
            if layout.go_backwards:
                total = _reverse(total, eff_len[j])
            cts[j] = total
    return cts


rules.JVP_RULES["scan"] = scan_jvp
rules.VJP_FORWARD_RULES["scan"] = scan_vjp_forward
rules.VJP_BACKWARD_RULES["scan"] = scan_vjp_backward
