"""Stage: generated code's linear recurrences — the loops of the `linrec` primitive.

`linrec` (core/primitives.py) solves x_t = a_t * x_{t-1} + b_t (the diagonal kind) or
x_t = x_{t-1} @ a_t + b_t (the matrix kind, row vectors), from x_{-1} = x0, or backwards in
time from x_T = x0 (`reverse`). Generated code calls these functions (codegen/loopnest.py's
`Renderer.r_linrec`), as does the eager `ns.linear_recurrence` (api/linrec.py).

Layouts (callers reshape to them):

    diagonal  a (Ta, m), b (T, m), x0 (m,), out (T, m)       m: the state's size, flattened
    matrix    a (Ta, n, n), b (T, n), x0 (n,), out (T, n)

with the rows of a, b and out in the recurrence's order: a backward recurrence passes the
views `b[::-1]`, `out[::-1]` (and `a[::-1]`), so that every loop counts its rows up from 0
(indices that run backwards, or that numba cannot see are not negative, cost the scalar loop
2x). `Ta` is 1 for a loop-invariant coefficient (no time axis) and T otherwise: a one-row
`a` is the coefficient of every row (when T == 1 the two readings agree). `out` is distinct
from the operands. A forward call passes C-contiguous arrays and a backward one strided
views: numba compiles each loop once per dtype and direction, for eager calls and generated
code alike, and keeps it in its disk cache.

Sequential loops (`diagonal_scan`, `matrix_scan`; plain Python that calls nothing, so that
CUDA kernels call them too): the dependence from one step to the next is one multiply-add per
state element, whose latency (4 cycles) bounds a scalar state's loop. A scalar state (m == 1)
therefore runs 4 steps at a time: with the group's partial products p_k = a_k ... a_1 and its
scan from zero q_k (independent of the state) the states are x_k = p_k x + q_k, and only
x_4 = p_4 x + q_4 is on the chain (T = 2*10^6 steps of x = 0.9 x + u on this machine: 2.3 ms a
step at a time, 1.0-1.2 ms four at a time). Results differ from the step-at-a-time loop by
rounding only; a product of four consecutive coefficients that overflows while the state is
zero gives nan where that loop gives 0.

Parallel in time, across P threads:

  * diagonal: P blocks of T // P rows (the last to T). (1) side by side, each block scanned
    from zero (block 0 from x0) and the product of its coefficients taken; (2) serially, the
    carry-in of block j + 1 is coef_j * carry_j + (block j's last state from zero); (3) each
    block j >= 1 fixed up, x_k = y_k + (a_0 ... a_k) carry_j, only as far as that term is
    a normal number (`diagonal_fixup`): a decaying recurrence forgets its carry-in (0.9^k
    carry is subnormal after about 6700 rows), so the fix-up costs almost nothing. With
    P == 2 it runs in the calling thread.
  * matrix: a head of h rows and P blocks of s rows (h + P s = T). (1) side by side, the head
    run from x0 and blocks 1 .. P-1 scanned from zero, with their coefficients' products
    (a^s for an invariant a); (2) serially, the carry-ins carry_{j+1} = carry_j @ coef_j +
    (block j's last state from zero); (3) side by side, blocks 1 .. P run again from their
    carry-ins. A block's first pass costs `ratio` of the head's run (1 for an invariant a;
    about n + 1 when it multiplies n x n matrices at every step), so the head is `ratio`
    blocks long and the whole costs (1 + ratio) / (P + ratio) of the sequential loop: it runs
    sequentially unless that promises MIN_SPEEDUP.

Blocks are at least MIN_BLOCK rows. The phases run in threads of the process
(`run_in_threads`): the compiled loops release the GIL, the products and carry-ins are
NumPy's. Generated code reaches them through an object-mode block (`linrec_*_parallel_nb`),
not through prange: with numba's parfor pipeline the first call of such a program took
6.3-6.8 s in a new process with an empty cache (the loops compiled again into each parfor
body), against 2.6-2.7 s this way, where the loops are those eager calls compile (1.1 s for
the sequential loop, 1.7 s with the fix-up). Whether a recurrence is long enough to be worth
threads (PARALLEL_MIN, or NUMBASCAN_LINREC_PARALLEL_MIN: `parallel_below`) is read at each
call; generated code also reads it when it is generated, and below it calls the sequential
loop directly.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np
from numba import objmode
from numba.extending import register_jitable

from ..random import _njit_cached

try:      # how numba's own parfors read the thread count: code that calls it can be cached
    from numba.np.ufunc.parallel import _iget_num_threads as threads_nb
except ImportError:       # another numba: its public function (code calling it is not cached)
    from numba import get_num_threads as threads_nb

# state elements times steps (the sequential loop's multiply-adds: T m, or T n^2) from which
# a recurrence runs across threads, per kind. Measured on this project's 2-core machine (other
# work sharing it; docs): the diagonal kind across 2 threads took 1.2-1.4 times the
# sequential loop at every length up to 2^23 (one core already streams at the memory's
# bandwidth, about 30 GB/s, and starting a thread costs 0.05-0.4 ms), so its default is high;
# an invariant 4 x 4 or 8 x 8 matrix took 0.8-0.9 times it from 2^22.
PARALLEL_MIN = {"diagonal": 1 << 23, "matrix": 1 << 22}
ENV = "NUMBASCAN_LINREC_PARALLEL_MIN"

MIN_BLOCK = 64
MIN_SPEEDUP = 1.2
RATIO_MATRIX_INVARIANT = 1.0


def parallel_below(kind="diagonal") -> int:
    """NUMBASCAN_LINREC_PARALLEL_MIN (read at each call), else PARALLEL_MIN[kind]: the work
    (state elements times steps) below which a recurrence runs in one thread; 0 lets any
    recurrence long enough for two blocks run across threads."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return PARALLEL_MIN[kind]
    try:
        work = int(float(value))
    except ValueError:
        raise ValueError(f"{ENV}: expected a number of state elements times steps (0: "
                         f"across threads whenever there are two blocks), found "
                         f"{value!r}") from None
    return max(work, 0)


def work(kind, b_shape) -> int:
    """The sequential loop's multiply-adds for a right-hand side of shape `b_shape`."""
    T = b_shape[0]
    m = int(np.prod(b_shape[1:], dtype=np.int64))
    return T * m * (m if kind == "matrix" else 1)


# -- sequential loops (CPU and CUDA) ------------------------------------------------------------

@register_jitable
def diagonal_scan(a, b, x0, out):
    """out[k] = a[k] * x_{k-1} + b[k] for the rows k of b, from x_{-1} = x0."""
    count, m = b.shape
    if count == 0:
        return
    invariant = a.shape[0] == 1
    if m == 1:
        x = x0[0]
        groups = count // 4
        if invariant:
            c = a[0, 0]
            c2 = c * c
            c3 = c2 * c
            c4 = c2 * c2
            for g in range(groups):
                k = 4 * g
                b0 = b[k, 0]
                q2 = c * b0 + b[k + 1, 0]
                q3 = c * q2 + b[k + 2, 0]
                q4 = c * q3 + b[k + 3, 0]
                out[k, 0] = c * x + b0
                out[k + 1, 0] = c2 * x + q2
                out[k + 2, 0] = c3 * x + q3
                x = c4 * x + q4
                out[k + 3, 0] = x
        else:
            for g in range(groups):
                k = 4 * g
                a0 = a[k, 0]
                a1 = a[k + 1, 0]
                a2 = a[k + 2, 0]
                a3 = a[k + 3, 0]
                b0 = b[k, 0]
                p2 = a1 * a0
                q2 = a1 * b0 + b[k + 1, 0]
                p3 = a2 * p2
                q3 = a2 * q2 + b[k + 2, 0]
                p4 = a3 * p3
                q4 = a3 * q3 + b[k + 3, 0]
                out[k, 0] = a0 * x + b0
                out[k + 1, 0] = p2 * x + q2
                out[k + 2, 0] = p3 * x + q3
                x = p4 * x + q4
                out[k + 3, 0] = x
        for k in range(4 * groups, count):
            x = a[0 if invariant else k, 0] * x + b[k, 0]
            out[k, 0] = x
        return
    for j in range(m):
        out[0, j] = a[0, j] * x0[j] + b[0, j]
    for k in range(1, count):
        r = 0 if invariant else k
        for j in range(m):
            out[k, j] = a[r, j] * out[k - 1, j] + b[k, j]


@register_jitable
def matrix_scan(a, b, x0, out):
    """out[k] = x_{k-1} @ a[k] + b[k] for the rows k of b, from x_{-1} = x0 (the products
    summed over p ascending, after b)."""
    count, n = b.shape
    invariant = a.shape[0] == 1
    for k in range(count):
        r = 0 if invariant else k
        for j in range(n):
            out[k, j] = b[k, j]
        for p in range(n):
            xp = x0[p] if k == 0 else out[k - 1, p]
            for j in range(n):
                out[k, j] += xp * a[r, p, j]


# -- the parallel phases' loops (CPU) -----------------------------------------------------------

@register_jitable
def _at_most_one(a, start):
    """Whether every coefficient of rows start .. of a per-step `a` is at most 1 in size."""
    for k in range(start, a.shape[0]):
        for j in range(a.shape[1]):
            if abs(a[k, j]) > 1:
                return False
    return True


@register_jitable
def diagonal_fixup(a, b, carry, out, p, tiny):
    """out, a block's scan from zero, becomes its scan from `carry`: x_k = y_k + p_k carry
    with p_k = a_0 ... a_k. It stops where every p_k carry is below `tiny` (the dtype's
    smallest normal number) and no later coefficient exceeds 1 in size: the later terms are
    subnormal (a decaying recurrence forgets its carry-in; the loop itself loses it to
    rounding much sooner), and subnormal arithmetic is slow. A carry-in that is not finite is
    refused (inf * 0 would be nan): False, `out` as it was, for the caller to run the block
    again from it. `p` (m,): scratch."""
    count, m = b.shape
    invariant = a.shape[0] == 1
    finite = True
    zero = True
    for j in range(m):
        finite = finite and math.isfinite(carry[j])
        zero = zero and carry[j] == 0
    if zero:
        return True
    if not finite:
        return False
    # per-step coefficients: whether the rows after the first negligible term were checked
    checked = invariant and abs(a[0, 0]) > 1
    if m == 1:
        pc = carry[0]                   # p_{k-1} carry before row k
        groups = count // 4
        if invariant:
            a1 = a[0, 0]
            a2 = a1 * a1
            a3 = a2 * a1
            a4 = a2 * a2
            for g in range(groups):
                k = 4 * g
                out[k, 0] += a1 * pc
                out[k + 1, 0] += a2 * pc
                out[k + 2, 0] += a3 * pc
                pc = a4 * pc
                out[k + 3, 0] += pc
                if not checked and abs(pc) < tiny:
                    return True
        else:
            for g in range(groups):
                k = 4 * g
                q1 = a[k, 0]
                q2 = q1 * a[k + 1, 0]
                q3 = q2 * a[k + 2, 0]
                q4 = q3 * a[k + 3, 0]
                out[k, 0] += q1 * pc
                out[k + 1, 0] += q2 * pc
                out[k + 2, 0] += q3 * pc
                pc = q4 * pc
                out[k + 3, 0] += pc
                if not checked and abs(pc) < tiny:
                    if _at_most_one(a, k + 4):
                        return True
                    checked = True
        for k in range(4 * groups, count):
            pc = a[0 if invariant else k, 0] * pc
            out[k, 0] += pc
        return True
    if invariant:
        for j in range(m):
            checked = checked or abs(a[0, j]) > 1
    for j in range(m):
        p[j] = carry[j]
    for k in range(count):
        r = 0 if invariant else k
        for j in range(m):
            p[j] = p[j] * a[r, j]
            out[k, j] += p[j]
        if not checked and k % 16 == 15:
            negligible = True
            for j in range(m):
                negligible = negligible and abs(p[j]) < tiny
            if negligible:
                if invariant or _at_most_one(a, k + 1):
                    return True
                checked = True
    return True


def _blocks(T, threads, ratio):
    """(P, h, s) of the matrix kind: P blocks of s rows after a head of h rows, h + P s = T,
    h about `ratio` s; P = 0: sequential."""
    P = threads
    if P < 2 or (ratio + P) < MIN_SPEEDUP * (ratio + 1.0):
        return 0, T, 0
    s = int(T / (P + ratio))
    if s < MIN_BLOCK:
        return 0, T, 0
    return P, T - P * s, s


# -- compiled ---------------------------------------------------------------------------------

_njit = _njit_cached(error_model="numpy", nogil=True, fastmath={"contract"})
diagonal_scan_nb = _njit(diagonal_scan)
matrix_scan_nb = _njit(matrix_scan)
diagonal_fixup_nb = _njit(diagonal_fixup)
SEQUENTIAL = {"diagonal": diagonal_scan_nb, "matrix": matrix_scan_nb}


# -- eager calls: the phases in threads of this process -----------------------------------------

def _in_threads(calls):
    """Run the calls (function, args) side by side, the first in the calling thread (the
    compiled loops release the GIL); the first error is raised here."""
    errors = []

    def run(fn, args):
        try:
            fn(*args)
        except BaseException as error:           # raised in the calling thread below
            errors.append(error)

    others = [threading.Thread(target=run, args=call, daemon=True) for call in calls[1:]]
    for thread in others:
        thread.start()
    try:
        run(*calls[0])
    finally:
        for thread in others:
            thread.join()
    if errors:
        raise errors[0]


def _matrix_product(a):
    """a[0] @ a[1] @ ... (NumPy: log2 levels of batched products of neighbours)."""
    while a.shape[0] > 1:
        pairs = a[0:a.shape[0] - 1:2] @ a[1::2]
        a = np.concatenate([pairs, a[-1:]]) if a.shape[0] % 2 else pairs
    return a[0]


def run_in_threads(kind, a, b, x0, out, threads):
    """An eager call's recurrence across `threads` threads (the module docstring's phases);
    sequential when the plan says so. Operands in the layouts above."""
    T, m = b.shape
    rows = (lambda start, stop: a[start:stop] if a.shape[0] > 1 else a)
    if kind == "diagonal":
        P = threads if threads >= 2 and T >= threads * MIN_BLOCK else 0
        if P == 0:
            diagonal_scan_nb(a, b, x0, out)
            return
        s = T // P
        bounds = [(j * s, T if j == P - 1 else (j + 1) * s) for j in range(P)]
        zeros = np.zeros(m, b.dtype)
        coef = [None] * P

        def first(j, start, stop):
            diagonal_scan_nb(rows(start, stop), b[start:stop], x0 if j == 0 else zeros,
                             out[start:stop])
            if 0 < j < P - 1:
                coef[j] = (a[0] ** (stop - start) if a.shape[0] == 1 else
                           np.prod(a[start:stop], axis=0))

        _in_threads([(first, (j, *bounds[j])) for j in range(P)])
        carries = [None, out[s - 1].copy()]
        for j in range(1, P - 1):
            c, last = carries[j], out[bounds[j][1] - 1]
            with np.errstate(all="ignore"):   # a zero carry stays out of an overflowed product
                carries.append(np.where(c == 0, last, coef[j] * c + last).astype(b.dtype))

        tiny = float(np.finfo(b.dtype).tiny)

        def fix(j, start, stop):
            if not diagonal_fixup_nb(rows(start, stop), b[start:stop], carries[j],
                                     out[start:stop], np.empty(m, b.dtype), tiny):
                diagonal_scan_nb(rows(start, stop), b[start:stop], carries[j], out[start:stop])

        _in_threads([(fix, (j, *bounds[j])) for j in range(1, P)])
        return
    P, h, s = _blocks(T, threads, RATIO_MATRIX_INVARIANT if a.shape[0] == 1 and T > 1
                      else m + 1.0)
    if P == 0:
        matrix_scan_nb(a, b, x0, out)
        return
    bounds = [(0, h)] + [(h + (j - 1) * s, h + j * s) for j in range(1, P + 1)]
    zeros = np.zeros(m, b.dtype)
    coef = [None] * P

    def first(j, start, stop):
        matrix_scan_nb(rows(start, stop), b[start:stop], x0 if j == 0 else zeros,
                       out[start:stop])
        if j > 0:
            coef[j] = (np.linalg.matrix_power(a[0], stop - start) if a.shape[0] == 1 else
                       _matrix_product(a[start:stop]))

    _in_threads([(first, (j, *bounds[j])) for j in range(P)])
    carries = [None, out[h - 1].copy()]
    for j in range(1, P):
        c = carries[j]
        live = c != 0                 # a zero carry stays out of an overflowed product
        carries.append((c[live] @ coef[j][live] + out[bounds[j][1] - 1]).astype(b.dtype))
    _in_threads([(matrix_scan_nb, (rows(start, stop), b[start:stop], carries[j],
                                   out[start:stop]))
                 for j, (start, stop) in enumerate(bounds) if j > 0])


# -- generated code ------------------------------------------------------------------------------

def run(kind, a, b, x0, out, threads):
    """A long recurrence of generated code: across `threads` threads when its work is at least
    parallel_below() (read at each call), else the sequential loop."""
    if threads > 1 and work(kind, b.shape) >= parallel_below(kind):
        run_in_threads(kind, a, b, x0, out, threads)
    else:
        SEQUENTIAL[kind](a, b, x0, out)


def _diagonal_in_threads(a, b, x0, out, threads):
    with objmode():
        run("diagonal", a, b, x0, out, threads)


def _matrix_in_threads(a, b, x0, out, threads):
    with objmode():
        run("matrix", a, b, x0, out, threads)


def _threads():
    return threads_nb()


# without nogil: numba warns of an object-mode block in a nogil function (the block takes the
# GIL; it starts the threads itself)
_njit_gil = _njit_cached(error_model="numpy", fastmath={"contract"})
linrec_diagonal_parallel_nb = _njit_gil(_diagonal_in_threads)
linrec_matrix_parallel_nb = _njit_gil(_matrix_in_threads)
# numba's thread count in the calling thread (numba.set_num_threads), for generated code
linrec_threads_nb = _njit(_threads)
