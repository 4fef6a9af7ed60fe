"""Stage: IR -> CPU source — a scan's large random draws, drawn ahead of the steps that use them.

The draws of a step depend on the step's index alone, never on the state (core/layout.py:
stream j's draws at step t start at counter base + offset + t * per_step). So the loop of a
scan can draw those of many steps in one call. A draw of at least AHEAD_MIN numbers per step
is bound to a row of a buffer holding the draws of K consecutive steps (about AHEAD_COUNTERS
counters), which one call of a kernel (`random.*_ahead_nb`) refills whenever a step falls
outside it: one parallel region per K steps, long enough to be worth starting threads
(random.PARALLEL_MIN), where a region per step would be too short (a geometric Brownian motion
of 10000 paths, one region of 10000 draws per step, measured on 2 cores with other processes
running: no faster than serial with passive OpenMP threads, 25x slower with spinning ones;
drawn ahead, 252 steps in 10 regions: 36 ms against 60 ms serial with idle cores).

Only the loop of a scan that is called from Python or from an `ns.jit` program's body draws
ahead: a scan nested in another scan's step, or in a parallel map's, may itself run in a
parallel region (and draws per step, serially), and an until-scan may stop long before K steps.
"""

from __future__ import annotations

from ..core.ir import IR
from ..core.layout import Layout
from .emit import dtype_src

AHEAD_MIN = 1024
AHEAD_COUNTERS = 1 << 18
AHEAD_KERNELS = {"uniform": "uniform_ahead_nb", "normal": "normal_ahead_nb",
                 "binomial": "binomial_ahead_nb"}


def draws_ahead(r, step: IR, layout: Layout, binds: list, rng_params, time="t") -> set:
    """Bind each draw of `step` of at least AHEAD_MIN numbers to its row of a drawn-ahead
    buffer (allocated in `r.alloc`, its binding appended to `binds`). `rng_params`: the loop
    function's (rng_key, rng_base) parameter names, by stream. -> the indices of the bound
    equations (not rendered in the step)."""
    rng_vars = layout.split_step_inputs(step.inputs)[3]
    stream = {rng_vars[2 * j + 1].id: j for j in range(len(layout.rng))}
    found = set()
    for k, e in enumerate(step.eqns):
        if e.prim != "random":
            continue
        key, base = e.inputs
        res, p = e.outputs[0], e.p
        j = stream.get(base.id)
        width = p["dist"][0] if p["kind"] == "binomial" else 1
        if j is None or key is not rng_vars[2 * j] or res.size < AHEAD_MIN or width < 1:
            continue
        offset, per_step = layout.rng[j]
        rows = -(-AHEAD_COUNTERS // (res.size * width))     # a full buffer: a parallel refill
        buf, held = r.fresh("ahead"), r.fresh("held")
        r.alloc(f"{buf} = np.empty((max(1, min({rows}, n_steps)), {res.size}), "
                f"dtype={dtype_src(res.dtype)})")
        r.alloc(f"{held} = np.full(1, -1, dtype=np.int64)")
        first = (offset + p["offset"]) % 2**64
        args = ", ".join(repr(a) for a in p["dist"])
        expr = (f"{AHEAD_KERNELS[p['kind']]}({time}, n_steps, {rng_params[2 * j]}, "
                f"{rng_params[2 * j + 1]} + np.uint64({first}), np.uint64({per_step}), {args}, "
                f"{buf}, {held})")
        if res.ndim != 1:
            expr += f".reshape({tuple(res.shape)!r})"
        binds.append((res, expr))
        r.module.draws = r.module.calls_parallel = True
        found.add(k)
    return found
