"""Stage: generated code's matrix products — the loops of a float matmul, called, not written out.

A matmul of a step or a program that is neither unrolled into scalar code (loopnest.py's
budget) nor large enough for BLAS (`BLAS_MIN_WORK`) calls one of these functions from the CPU
code. Written out, each product is a triple loop nest that numba types, post-processes and
lowers statement by statement: a Kalman filter's gradient has 17 of them in its two loop
functions, and its compile spent about 0.08 s per nest; a call costs numba one call to type,
and the compiled loops come from numba's disk cache (one compile per machine for each layout
of the operands). LLVM still inlines the call into the loop function, with the sizes read from
the arrays instead of literals.

Layouts: `a @ b` into `out`, every operand 2-d (m, k) @ (k, n) -> (m, n), or a matrix-vector
(m, k) @ (k,) -> (m,), or a vector-matrix (k,) @ (k, n) -> (n,); `out` is distinct from `a`
and `b`. The sums run in the order of the loop nests they replace (p ascending), so results
are bit for bit those of the written-out loops.
"""

from __future__ import annotations

from ..random import _njit_cached


def matmul_loops(a, b, out):
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
        for p in range(k):
            x = a[i, p]
            for j in range(n):
                out[i, j] += x * b[p, j]


def matvec_loops(a, b, out):
    m, k = a.shape
    for i in range(m):
        out[i] = 0
        for p in range(k):
            out[i] += a[i, p] * b[p]


def vecmat_loops(a, b, out):
    k, n = b.shape
    for j in range(n):
        out[j] = 0
    for p in range(k):
        x = a[p]
        for j in range(n):
            out[j] += x * b[p, j]


_njit = _njit_cached(error_model="numpy", nogil=True, fastmath={"contract"})
matmul_nb = _njit(matmul_loops)
matvec_nb = _njit(matvec_loops)
vecmat_nb = _njit(vecmat_loops)
