"""Stage: the scan primitive — a scan as one equation of a traced program.

Inside `ns.jit`, a derivative or another scan's step, `ns.scan` does not run: it traces its
step into a sub-program and records `scan[step=..., layout=..., n_steps=...]`. Its inputs are

    [sequences] [initial states of fed-back outputs and updated shared] [non_sequences]
    [captures] [(key, base) of every random stream] [(trip, origin) when layout.trip]

and its outputs one value per layout output: (n_steps, *shape) when every step is kept,
(*shape) when only the last is (keep="last"), in the order of `layout.outs`; then, when the
scan counts its steps (until or a run-time trip), the number of steps that ran (int64).
`n_steps` is static: the bound of a scan that stops early, which sizes its buffers.
"""

from __future__ import annotations

import collections
from dataclasses import replace

import numpy as np

from ..core import primitives
from ..core.context import current_trace
from ..core.ir import IR, eval_ir
from ..shared import Updates
from ..trace.tracer import RunTracer
from .args import ScanArgs, ScanError
from .step import trace_step


def _abstract(inputs, step, layout, n_steps, **_):
    avals = []
    for o, v in zip(layout.outs, step.outputs):
        shape = tuple(v.shape) if o.keep == "last" else (n_steps,) + tuple(v.shape)
        avals.append((v.dtype, shape))
    if layout.counts_steps:
        avals.append((np.dtype(np.int64), ()))
    return avals


def _impl(*args, step, layout, n_steps, **_):
    """Reference semantics of a scan equation (the interpreter's loop). Outputs kept whole
    have `n_steps` rows; the rows past the steps that ran are zeros."""
    seqs, inits, rest, rng, dynamic = layout.split_inputs(args)
    trip, origin = (int(dynamic[0]), int(dynamic[1])) if dynamic else (n_steps, None)
    n = max(0, min(n_steps, trip))
    fed = iter(inits)
    hist, collected = [], [[] for _ in layout.outs]
    for o in layout.outs:            # a window of the last L states of each fed-back output
        if o.taps:
            init = np.asarray(next(fed))
            hist.append(collections.deque([init] if o.taps == (-1,) else list(init),
                                          maxlen=o.L))
        else:
            hist.append(None)
    n_run = 0
    for t in range(n):
        step_args = []
        for s, sl in zip(seqs, layout.seqs):
            step_args += sl.rows(s, t, layout.go_backwards, origin)
        for o, h in zip(layout.outs, hist):
            step_args += [h[o.window_row(tap)] for tap in o.taps]
        step_args += rest
        for j in range(len(layout.rng)):
            step_args += [rng[2 * j], np.uint64(layout.rng_base(j, int(rng[2 * j + 1]), t))]
        res = eval_ir(step, step_args)
        for o, h, c, r in zip(layout.outs, hist, collected, res):
            r = np.asarray(r)
            c.append(r)
            if h is not None:
                h.append(r)
        n_run = t + 1
        if layout.until and bool(res[-1]):
            break
    outs = []
    for o, h, c, v in zip(layout.outs, hist, collected, step.outputs):
        if o.keep == "last":
            outs.append(c[-1] if c else h[-1])
        else:
            buf = np.zeros((n_steps,) + tuple(v.shape), v.dtype)
            if c:
                buf[:len(c)] = np.stack(c)
            outs.append(buf)
    if layout.counts_steps:
        outs.append(np.int64(n_run))
    return tuple(outs)


primitives._def("scan", "special", _impl, abstract=_abstract)


def asks_for_cuda(ir: IR) -> bool:
    """Whether a scan or a linear recurrence of this program (or of a step inside it) was
    asked to run on CUDA."""
    return any((e.prim == "linrec" and e.p.get("mode") == "cuda") or
               (e.prim == "scan" and (e.p.get("mode") == "cuda" or asks_for_cuda(e.p["step"])))
               for e in ir.eqns)


def _run_trip(sa: ScanArgs):
    """The run-time number of steps the sequences that are rows of until-scans support
    (None when every sequence has a static length)."""
    trip = None
    for i, (s, sl) in enumerate(zip(sa.seqs, sa.seq_layouts)):
        if not isinstance(s, RunTracer):
            continue
        if sa.go_backwards:
            raise ScanError(f"sequences[{i}]: go_backwards over the rows of a scan that stops "
                            f"early (ns.until) is not supported: their number is a run-time "
                            f"value; walk them forwards, or reverse them in the step's scan")
        support = sl.steps(s.n)
        trip = support if trip is None else np.minimum(trip, support)
    return trip


def _no_runs(values, what):
    for i, v in enumerate(values):
        if isinstance(v, RunTracer):
            raise ScanError(f"{what}[{i}]: the rows of a scan that stops early (ns.until) "
                            f"have a run-time length; pass them as a sequence, or pass "
                            f"xs[-1] or a reduction")


def bind_scan(sa: ScanArgs):
    """Record a scan equation on the innermost trace; return (outputs, updates).

    A scan that stops early (until), or that reads the rows of one (a run-time trip count),
    returns its outputs kept whole as RunTracers: the rows that ran, counted at run time.
    Its random streams advance by the draws of the steps that ran in a program; inside
    another scan's step, by the draws of every step it may run (its bound), so that each
    outer step reserves the same counters in every mode."""
    outer = current_trace()
    _no_runs([i for i in sa.inits if i is not None], "outputs_info")
    _no_runs(sa.nonseqs, "non_sequences")
    ts = trace_step(sa)
    trip = _run_trip(sa)
    layout = replace(ts.layout, trip=True) if trip is not None else ts.layout
    rng_layout, rng_inputs = [], []
    for s, (_, per_step) in zip(ts.streams, ts.layout.rng):
        key, base, offset = outer.rng_next(s)
        rng_layout.append((offset, per_step))
        rng_inputs += [key, base]
    layout = replace(layout, rng=tuple(rng_layout))
    seqs = [s.buffer if isinstance(s, RunTracer) else s for s in sa.seqs]
    inputs = (seqs + [i for i in sa.inits if i is not None] + list(ts.shared_states) +
              list(sa.nonseqs) + list(ts.captures) + rng_inputs +
              ([trip, trip] if trip is not None else []))
    device = {"mode": "cuda"} if sa.mode == "cuda" else {}
    outs = outer.bind("scan", inputs, step=ts.ir, layout=layout, n_steps=sa.n_steps,
                      truncate=sa.truncate_gradient, checkpoint=sa.checkpoint, **device)
    n_run = outs.pop() if layout.counts_steps else None
    for s, (_, per_step) in zip(ts.streams, ts.layout.rng):
        if n_run is not None and outer.kind == "program":
            outer.rng_advance(s, n_run.astype(np.uint64) * np.uint64(per_step))
        else:
            outer.rng_advance(s, sa.n_steps * per_step)
    if n_run is not None:
        outs = [RunTracer(outer, v.var, n_run) if o.keep == "all" else v
                for o, v in zip(layout.outs, outs)]
    updates = Updates(zip(ts.shared_states, outs[ts.n_outputs:]))
    return outs[:ts.n_outputs], updates
