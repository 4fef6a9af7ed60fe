"""Stage: runtime — an eager linear recurrence, solved by codegen/linrec.py's compiled loops.

`compiled(a, b, x0, rec)` takes operands that trace/linrec.py's `operands` checked (NumPy
arrays of one float dtype, `rec` their `Recurrence`), puts them in the loops' layouts (the
state flattened; a backward recurrence as reversed views) and runs them: across threads
(`thread_count`: numba's thread count, capped by `NUMBASCAN_NUM_THREADS`) when the work (state
elements times steps) is at least `NUMBASCAN_LINREC_PARALLEL_MIN`, both read at each call;
else in the calling thread. Used by `ns.linear_recurrence` (api/linrec.py) and by the eager
parallel-in-time scan.
"""

from __future__ import annotations

import numpy as np

from ..codegen import linrec as kernels
from .threads import thread_count


def compiled(a, b, x0, rec):
    """The states x_0 .. x_{T-1} (an array of b's shape and dtype)."""
    b = np.asarray(b)
    T = b.shape[0]
    out = np.empty(b.shape, b.dtype)
    if T == 0:
        return out
    m = int(np.prod(b.shape[1:], dtype=np.int64))
    if rec.kind == "diagonal":
        shapes = [(1, m) if rec.invariant else (T, m), (T, m), (m,)]
    else:
        shapes = [(1, m, m) if rec.invariant else (T, m, m), (T, m), (m,)]
    a, b, x0 = (np.ascontiguousarray(x, b.dtype).reshape(s) for x, s in zip((a, b, x0), shapes))
    rows = out.reshape(shapes[1])
    if rec.reverse:                      # rows in the recurrence's order (codegen/linrec.py)
        a, b, rows = (a if rec.invariant else a[::-1]), b[::-1], rows[::-1]
    threads = 1
    if kernels.work(rec.kind, b.shape) >= kernels.parallel_below(rec.kind):
        threads = thread_count()
    if threads > 1:
        kernels.run_in_threads(rec.kind, a, b, x0, rows, threads)
    else:
        kernels.SEQUENTIAL[rec.kind](a, b, x0, rows)
    return out
