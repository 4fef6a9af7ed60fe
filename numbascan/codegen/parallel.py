"""Stage: IR -> CPU source — whether a parallel map (ns.vmap's) runs its batch across threads.

A parallel region costs little while the cores are idle, but on a machine whose cores are busy
it waits for its threads: numba's default threading layer is OpenMP, whose threads spin while
they wait, and a thread whose core is taken runs only at the scheduler's next time slice.
Measured on 2 cores, ns.vmap of a small batched scan (B=16, T=50, H=4, an RNN per batch
element, about 50 us of work): 0.11-0.13 ms a call (median) with idle cores, 5-16 ms while
other processes (test suites, benchmarks, a spinning process per core) kept the cores busy;
run in the calling thread, 0.13-0.14 ms in every case.

So a map runs its steps in a plain loop, in the calling thread, when the whole batch is less
work than `PARALLEL_MIN_WORK` (the estimate below, in nanoseconds of one core, roughly: it
overestimated the RNNs measured by 2-2.5x), and with prange otherwise. The generated function
decides at each call from its batch size (`n_steps`), so one compiled function serves every
batch size; the results are the same either way (each batch element is computed by the same
step function, alone). The regions that do run wait passively (random.start_threads).

`NUMBASCAN_PARALLEL_MIN_WORK` overrides the threshold (`0`: always across threads), read when
a map's loop is generated, its first call for a given function and shapes.
"""

from __future__ import annotations

import os

from ..core.ir import IR
from ..core.primitives import TABLE

PARALLEL_MIN_WORK = 200_000
ENV = "NUMBASCAN_PARALLEL_MIN_WORK"

# estimated nanoseconds per element (one core): an arithmetic operation ~1, a transcendental
# function ~10, a normal draw ~25 (libm's log and cos), a Philox uniform ~3 per counter
TRANSCENDENTAL = {"exp", "expm1", "log", "log1p", "sin", "cos", "tan", "arcsin", "arccos",
                  "arctan", "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "power",
                  "arctan2", "expit", "logit", "erf"}
DRAW = {"uniform": 3, "normal": 25, "binomial": 3}
STEP_CALL = 50       # calling a step function (its temporaries are allocated at each call)


def min_work() -> int:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return PARALLEL_MIN_WORK
    try:
        work = int(float(value))
    except ValueError:
        raise ValueError(f"{ENV}: expected a number of nanoseconds (0: always across "
                         f"threads), found {value!r}") from None
    return max(work, 0)


def step_work(step: IR) -> int:
    """Estimated work of one run of `step`, in nanoseconds of one core: each equation's
    output elements times their cost (a reduction's input elements), a matmul's multiply-adds,
    a nested scan's steps times its step's work (the most steps an until-scan may run)."""
    work = 0
    for e in step.eqns:
        if e.prim == "scan":
            n = e.p.get("n_steps")
            work += (n if isinstance(n, int) and n > 0 else 1) * (step_work(e.p["step"]) + 5)
        elif e.prim == "matmul":
            a = e.inputs[0]
            work += e.outputs[0].size * (a.shape[-1] if a.shape else 1)
        elif e.prim == "random":
            p = e.p
            per = DRAW.get(p["kind"], 25) * (p["dist"][0] if p["kind"] == "binomial" else 1)
            work += e.outputs[0].size * max(int(per), 1)
        elif getattr(TABLE.get(e.prim), "kind", None) == "reduce":
            work += e.inputs[0].size
        else:
            work += e.outputs[0].size * (10 if e.prim in TRANSCENDENTAL else 1)
    return work


def serial_below(step: IR) -> int:
    """The batch size below which a parallel map of `step` runs in the calling thread."""
    threshold = min_work()
    if threshold == 0:
        return 0
    per_element = step_work(step) + STEP_CALL
    return -(-threshold // per_element)
