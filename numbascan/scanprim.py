"""Stage: the scan primitive — a scan as one equation of a traced program.

Inside `ns.jit`, a derivative or another scan's step, `ns.scan` does not run: it traces its
step into a sub-program and records `scan[step=..., layout=..., n_steps=...]`. Its inputs are

    [sequences] [initial states of fed-back outputs and updated shared] [non_sequences]
    [captures] [(key, base) of every random stream]

and its outputs one value per layout output: (n_steps, *shape) when every step is kept,
(*shape) when only the last is (keep="last"), in the order of `layout.outs`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import primitives
from .api import ScanArgs, trace_step
from .ir import IR, eval_ir
from .shared import Updates
from .trace import Tracer, current_trace


def _abstract(inputs, step, layout, n_steps, **_):
    avals = []
    for o, v in zip(layout.outs, step.outputs):
        shape = tuple(v.shape) if o.keep == "last" else (n_steps,) + tuple(v.shape)
        avals.append((v.dtype, shape))
    return avals


def _impl(*args, step, layout, n_steps, **_):
    """Reference semantics of a scan equation (the interpreter's loop)."""
    ns, nr = len(layout.seqs), 2 * len(layout.rng)
    n_fed = sum(1 for o in layout.outs if o.taps)
    seqs, inits = args[:ns], list(args[ns:ns + n_fed])
    rest = list(args[ns + n_fed:len(args) - nr])
    rng = args[len(args) - nr:]
    hist, collected = [], [[] for _ in layout.outs]
    for o in layout.outs:
        if o.taps:
            init = np.asarray(inits.pop(0))
            hist.append([init] if o.taps == (-1,) else list(init))
        else:
            hist.append(None)
    for t in range(n_steps):
        step_args = []
        for s, sl in zip(seqs, layout.seqs):
            step_args += sl.rows(s, t, layout.go_backwards)
        for o, h in zip(layout.outs, hist):
            for tap in o.taps:
                step_args.append(h[o.L + t + tap])
        step_args += rest
        for j, (offset, per_step) in enumerate(layout.rng):
            step_args += [rng[2 * j], np.uint64((int(rng[2 * j + 1]) + offset + t * per_step)
                                                % 2**64)]
        res = eval_ir(step, step_args)
        for o, h, c, r in zip(layout.outs, hist, collected, res):
            r = np.asarray(r)
            c.append(r)
            if h is not None:
                h.append(r)
        if layout.until and bool(res[-1]):
            break
    outs = []
    for o, h, c, v in zip(layout.outs, hist, collected, step.outputs):
        if o.keep == "last":
            outs.append(c[-1] if c else h[-1])
        else:
            outs.append(np.stack(c) if c else np.empty((0,) + tuple(v.shape), v.dtype))
    return tuple(outs)


primitives._def("scan", "special", _impl, abstract=_abstract)


def asks_for_cuda(ir: IR) -> bool:
    """Whether a scan of this program (or of a step inside it) was asked to run on CUDA."""
    return any(e.prim == "scan" and (e.p.get("mode") == "cuda" or asks_for_cuda(e.p["step"]))
               for e in ir.eqns)


def _fixed_trip_count(ts):
    """A scan with ns.until inside a traced program runs the number of steps its eager run took
    (api.UNTIL_TRIPS); inside another scan's step that number is not static: an error."""
    from .api import UNTIL_TRIPS, UntilInTrace
    from .trace import _STACK
    nested = any(t.kind != "program" for t in _STACK)
    if nested or UNTIL_TRIPS.replay is None or not UNTIL_TRIPS.replay:
        raise UntilInTrace(
            "until: a scan that stops early has a data-dependent number of steps; numbascan "
            "supports it in eager calls, and in ns.jit and derivatives at the top level of the "
            "traced function, but not inside another scan's step" if nested else
            "until: this scan's number of steps is found by an eager run first")
    n_run = UNTIL_TRIPS.replay.pop(0)
    step = IR(ts.ir.inputs, ts.ir.eqns, ts.ir.outputs[:-1])
    return replace(ts, ir=step, layout=replace(ts.layout, until=False)), n_run


def bind_scan(sa: ScanArgs):
    """Record a scan equation on the innermost trace; return (outputs, updates)."""
    outer = current_trace()
    ts = trace_step(sa)
    n_steps = sa.n_steps
    if ts.layout.until:
        ts, n_steps = _fixed_trip_count(ts)
    rng_layout, rng_inputs = [], []
    for s, (_, per_step) in zip(ts.streams, ts.layout.rng):
        key, base = outer.rng_vars(s)
        rng_layout.append((outer.rng_used[s], per_step))
        outer.rng_used[s] += sa.n_steps * per_step
        rng_inputs += [Tracer(outer, key), Tracer(outer, base)]
    layout = replace(ts.layout, rng=tuple(rng_layout))
    inputs = (list(sa.seqs) + [i for i in sa.inits if i is not None] + list(ts.shared_states) +
              list(sa.nonseqs) + list(ts.captures) + rng_inputs)
    device = {"mode": "cuda"} if sa.mode == "cuda" else {}
    outs = outer.bind("scan", inputs, step=ts.ir, layout=layout, n_steps=n_steps,
                      truncate=sa.truncate_gradient, checkpoint=sa.checkpoint, **device)
    updates = Updates(zip(ts.shared_states, outs[ts.n_outputs:]))
    return outs[:ts.n_outputs], updates
