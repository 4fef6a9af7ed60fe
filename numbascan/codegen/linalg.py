"""Stage: generated code's linear algebra — the loops of the linear algebra primitives.

The primitives `solve`, `slogdet`, `cholesky`, `triangular_solve` and `eigh`
(core/primitives.py) of a matrix of order n <= LOOP_MAX run these loops: Gaussian elimination
with partial pivoting, Cholesky-Banachiewicz, forward and back substitution, cyclic Jacobi
rotations, on the operands and on scratch buffers (eigh's two in float64, whatever the
matrix's dtype) that the generated function allocates with its other buffers (a CUDA local
array in a kernel): no LAPACK call and no allocation per step. A Kalman filter's 2-10
unknowns cost a few hundred multiply-adds, less than one LAPACK call's checks and copies (a
Jacobi eigh of 10 rows, about 7 sweeps, costs about what numba's LAPACK call does). Larger
matrices call numba's `np.linalg` (LAPACK) on the CPU (`Renderer.large_linalg`); on CUDA they
are an error (`LARGE_ON_CUDA`). A triangular solve is these loops at every size (the work of
LAPACK's trsm: no factorisation, no scratch).

The loops are plain Python functions that call nothing (so that either target compiles them;
`eigh_lapack`, the CPU's LAPACK eigh, is the exception), called from generated code: compiled
with `njit` for the
CPU (`*_nb`), with `cuda.jit(device=True)` by a CUDA module (codegen/cuda.py). Called, not
written out in each generated function: numba types and lowers every statement it is given,
and a step with 4 solves written out compiled in 1.4 s, as 4 calls of one compiled function in
0.3 s (and a gradient has more: each solve's derivative solves again); numba's disk cache
keeps the compiled loops across processes. Sizes are read from the arrays.

Layouts: `a` is the n x n matrix; a right-hand side `b` and its solution `x` are (n, m)
(generated code passes a 1-d one as `b[:, None]`), `x` distinct from `a` and `b`. A singular
matrix divides by zero: inf/nan (the interpreter raises NumPy's LinAlgError); a matrix that
is not positive definite gives a nan Cholesky factor. eigh's eigenvalues `w` are (n,), its
eigenvectors `v` (n, n), both distinct from `a`.
"""

from __future__ import annotations

import math

import numpy as np

from ..random import _njit_cached

LOOP_MAX = 10


def lu_solve_loops(a, b, lu, x):
    """x = a^-1 b by Gaussian elimination with partial pivoting. lu (n, n) starts as a copy of
    a and ends with U on and above its diagonal (the multipliers are not kept: lu[i, k] for
    i > k is stale); x starts as b, is row-swapped and reduced with lu, then back substituted."""
    n, m = a.shape[0], b.shape[1]
    for i in range(n):
        for j in range(n):
            lu[i, j] = a[i, j]
        for j in range(m):
            x[i, j] = b[i, j]
    for k in range(n):
        p = k                        # the pivot: the first row of the largest |lu[i, k]|
        big = abs(lu[k, k])
        for i in range(k + 1, n):
            if abs(lu[i, k]) > big:
                big = abs(lu[i, k])
                p = i
        if p != k:
            for j in range(k, n):
                t = lu[k, j]
                lu[k, j] = lu[p, j]
                lu[p, j] = t
            for j in range(m):
                t = x[k, j]
                x[k, j] = x[p, j]
                x[p, j] = t
        for i in range(k + 1, n):
            f = lu[i, k] / lu[k, k]
            for j in range(k + 1, n):
                lu[i, j] -= f * lu[k, j]
            for j in range(m):
                x[i, j] -= f * x[k, j]
    for i in range(n - 1, -1, -1):
        for j in range(m):
            t = x[i, j]
            for k in range(i + 1, n):
                t -= lu[i, k] * x[k, j]
            x[i, j] = t / lu[i, i]


def slogdet_loops(a, lu):
    """(sign, log|det a|) as float64, from the elimination of lu_solve_loops (each row swap
    flips the sign). A zero pivot gives NumPy's answer for a singular matrix, (0, -inf)."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            lu[i, j] = a[i, j]
    sign = 1.0
    logabsdet = 0.0
    for k in range(n):
        p = k                        # the pivot: the first row of the largest |lu[i, k]|
        big = abs(lu[k, k])
        for i in range(k + 1, n):
            if abs(lu[i, k]) > big:
                big = abs(lu[i, k])
                p = i
        if p != k:
            sign = -sign
            for j in range(k, n):
                t = lu[k, j]
                lu[k, j] = lu[p, j]
                lu[p, j] = t
        d = lu[k, k]
        if d == 0:
            return 0.0, -math.inf
        if d < 0:
            sign = -sign
        logabsdet += math.log(abs(d))
        for i in range(k + 1, n):
            f = lu[i, k] / d
            for j in range(k + 1, n):
                lu[i, j] -= f * lu[k, j]
    return sign, logabsdet


def cholesky_loops(a, x):
    """x = the lower factor L of a = L L^T, row by row of its lower triangle (Cholesky-
    Banachiewicz), reading a's lower triangle only; x's upper triangle is set to zero."""
    n = a.shape[0]
    for i in range(n):
        for j in range(i + 1):
            t = a[i, j]
            for k in range(j):
                t -= x[i, k] * x[j, k]
            x[i, j] = math.sqrt(t) if i == j else t / x[j, j]
        for j in range(i + 1, n):
            x[i, j] = 0.0


def triangular_loops(a, b, x, lower, transpose):
    """x = op(a)^-1 b, op(a) = a.T when `transpose`, reading a's lower (or upper) triangle:
    forward substitution when op(a) is lower triangular, back substitution when upper."""
    n, m = a.shape[0], b.shape[1]
    forward = lower != transpose
    for j in range(m):
        for r in range(n):
            i = r if forward else n - 1 - r
            t = b[i, j]
            for s in range(r):
                k = s if forward else n - 1 - s
                t -= (a[k, i] if transpose else a[i, k]) * x[k, j]
            x[i, j] = t / a[i, i]


JACOBI_SWEEPS = 50     # at most; a well-separated 10 x 10 matrix takes 6-8


def eigh_loops(a, s, q, w, v):
    """w, v = the eigenvalues (ascending) and eigenvectors (columns) of the symmetric matrix
    of a's lower triangle, by cyclic Jacobi rotations computed in float64: s (n, n) starts as
    that matrix and is rotated to a diagonal one, q (n, n) starts as the identity and
    accumulates the rotations, its rows the eigenvectors (rows, not columns: each rotation
    updates two contiguous rows of s, copied to its columns, and two of q). The rotation of
    p < k zeroes s[p, k], with the tangent of its angle as Numerical Recipes' `jacobi` computes
    it; an s[p, k] that adding (times 100) to both diagonal entries would not change is set to
    zero instead. The sweeps end when one rotates nothing (every off-diagonal entry is then
    zero), or after JACOBI_SWEEPS (NaNs). Then the diagonal is sorted, q's rows with it, and
    each eigenvector's sign fixed by core/primitives.py's rule (`eigenvector_signs`)."""
    n = a.shape[0]
    for i in range(n):
        for j in range(i + 1):
            s[i, j] = a[i, j]
            s[j, i] = a[i, j]
            q[i, j] = 0.0
            q[j, i] = 0.0
        q[i, i] = 1.0
    for sweep in range(JACOBI_SWEEPS):
        rotated = False
        for p in range(n - 1):
            for k in range(p + 1, n):
                apk, app, akk = s[p, k], s[p, p], s[k, k]
                if apk == 0.0:
                    continue
                g = 100.0 * abs(apk)
                if abs(app) + g == abs(app) and abs(akk) + g == abs(akk):
                    s[p, k] = 0.0
                    s[k, p] = 0.0
                    continue
                rotated = True
                h = akk - app
                if abs(h) + g == abs(h):
                    t = apk / h              # the angle's tangent, for a tiny apk / h
                else:
                    theta = 0.5 * h / apk
                    t = 1.0 / (abs(theta) + math.sqrt(1.0 + theta * theta))
                    if theta < 0.0:
                        t = -t
                c = 1.0 / math.sqrt(1.0 + t * t)
                sn = t * c
                for i in range(n):
                    x, y = s[p, i], s[k, i]
                    s[p, i] = c * x - sn * y
                    s[k, i] = sn * x + c * y
                for i in range(n):
                    s[i, p] = s[p, i]
                    s[i, k] = s[k, i]
                s[p, p] = app - t * apk
                s[k, k] = akk + t * apk
                s[p, k] = 0.0
                s[k, p] = 0.0
                for i in range(n):
                    x, y = q[p, i], q[k, i]
                    q[p, i] = c * x - sn * y
                    q[k, i] = sn * x + c * y
        if not rotated:
            break
    for k in range(n - 1):           # selection sort of the diagonal, q's rows with it
        m = k
        for i in range(k + 1, n):
            if s[i, i] < s[m, m]:
                m = i
        if m != k:
            t = s[k, k]
            s[k, k] = s[m, m]
            s[m, m] = t
            for i in range(n):
                t = q[k, i]
                q[k, i] = q[m, i]
                q[m, i] = t
    for k in range(n):
        w[k] = s[k, k]
        least = 0.5 / math.sqrt(n)   # the sign rule: the first entry this large is positive
        i = 0
        while i < n - 1 and abs(q[k, i]) < least:
            i += 1
        sign = -1.0 if q[k, i] < 0.0 else 1.0
        for i in range(n):
            v[i, k] = sign * q[k, i]


def eigh_lapack(a, w, v):
    """w, v as eigh_loops gives them, by numba's np.linalg.eigh (LAPACK's syevd, reading a's
    lower triangle): the larger matrices of the CPU (calls numba's np.linalg: CPU only)."""
    n = a.shape[0]
    values, vectors = np.linalg.eigh(a)
    for k in range(n):
        w[k] = values[k]
        least = 0.5 / math.sqrt(n)   # eigh_loops's sign rule
        i = 0
        while i < n - 1 and abs(vectors[i, k]) < least:
            i += 1
        sign = -1.0 if vectors[i, k] < 0.0 else 1.0
        for i in range(n):
            v[i, k] = sign * vectors[i, k]


_njit = _njit_cached(error_model="numpy", nogil=True)
lu_solve_nb = _njit(lu_solve_loops)
slogdet_nb = _njit(slogdet_loops)
cholesky_nb = _njit(cholesky_loops)
triangular_nb = _njit(triangular_loops)
eigh_nb = _njit(eigh_loops)
eigh_lapack_nb = _njit(eigh_lapack)

# numba's np.linalg (LAPACK) for the larger matrices of the CPU
LAPACK = {
    "solve": "{x}[{all}] = np.linalg.solve({a}, {b})",
    "slogdet": "{sign}, {logabsdet} = np.linalg.slogdet({a})",
    "cholesky": "{x}[:, :] = np.linalg.cholesky({a})",
    "eigh": "eigh_lapack_nb({a}, {w}, {v})",
}

# what a user called, for messages about a primitive
OPERATIONS = {"solve": "np.linalg.solve (or inv)", "slogdet": "np.linalg.slogdet (or det)",
              "cholesky": "np.linalg.cholesky",
              "eigh": "np.linalg.eigh (or eigvalsh, or norm with ord=2, -2 or 'nuc')"}

LARGE_ON_CUDA = ("mode='cuda': {op} of a {n} x {n} matrix: CUDA kernels run linear algebra on "
                 "matrices of at most {max} rows; run this step with mode='cpu' (which calls "
                 "LAPACK for larger matrices)")
