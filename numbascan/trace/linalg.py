"""Stage: tracing — NumPy's and SciPy's linear algebra on tracers, in five primitives.

`solve`, `triangular_solve`, `cholesky`, `slogdet` and `eigh` (core/primitives.py) are the only
primitives; the rest is written on them here: `inv(a)` is `solve(a, I)`, `det(a)` is
`sign * exp(logabsdet)`, `cho_solve((c, lower), b)` two triangular solves, `cholesky(a,
upper=True)` the transpose of the lower factor, `eigvalsh` eigh's first output, UPLO='U' the
eigh of the transpose. (np.linalg.norm's matrix 2-norm and nuclear norm, in structural.py, are
eigh's of the Gram matrix.) numpy_api.py registers `HANDLERS` (NumPy's
functions, reached through `__array_function__`) and `SCIPY_LINALG` (scipy.linalg's, which do
not dispatch: a traced function sees them in place of SciPy's through a view of the module).

Operands are one 2-d matrix and a 1-d or 2-d right-hand side; both are converted to one float
dtype first (NumPy's result dtype: float64 for integers). Batches of matrices are refused with
a TracingError that says what to use instead.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from ..core.context import current_trace
from .tracer import Tracer, TracingError, bind, constant

SlogdetResult = namedtuple("SlogdetResult", "sign logabsdet")
EighResult = namedtuple("EighResult", "eigenvalues eigenvectors")

BATCH_HINT = ("numbascan traces one 2-d matrix (with a 1-d or 2-d right-hand side); for a "
              "batch of matrices, map over it with ns.vmap or ns.map")


def _shape(x):
    return x.shape if isinstance(x, Tracer) else np.shape(x)


def _float_dtype(*xs):
    dtype = np.result_type(*[x.dtype if isinstance(x, Tracer) else np.asarray(x).dtype
                             for x in xs])
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def _as(x, dtype):
    if isinstance(x, Tracer):
        return x if x.dtype == dtype else x.astype(dtype)
    arr = np.asarray(x, dtype)
    return arr if arr is x else constant(arr)       # an array made here is a constant


def _square(a, what, arg="a"):
    """Check that `a` (the argument named `arg`) is one square matrix; return its order n."""
    shape = _shape(a)
    if len(shape) > 2:
        raise TracingError(f"{what} of an array of shape {tuple(shape)}", BATCH_HINT)
    if len(shape) != 2:
        raise np.linalg.LinAlgError(f"{what}: {arg}: {len(shape)}-dimensional array given. "
                                    f"Array must be at least two-dimensional")
    if shape[0] != shape[1]:
        raise np.linalg.LinAlgError(f"{what}: {arg}: expected a square matrix, found shape "
                                    f"{tuple(shape)} (last 2 dimensions of the array must be "
                                    f"square)")
    return shape[0]


def _rhs(a, b, what, arg="a"):
    """Check a square `a` against right-hand side `b`; return both in one float dtype."""
    n = _square(a, what, arg)
    shape = _shape(b)
    if len(shape) > 2 or len(shape) == 0:
        raise TracingError(f"{what} with a right-hand side of shape {tuple(shape)}",
                           BATCH_HINT)
    if shape[0] != n:
        raise ValueError(f"{what}: the right-hand side has {shape[0]} rows, the matrix "
                         f"{n} (shapes {tuple(_shape(a))} and {tuple(shape)})")
    dtype = _float_dtype(a, b)
    return _as(a, dtype), _as(b, dtype)


# -- NumPy -------------------------------------------------------------------------------------

def solve(a, b):
    a, b = _rhs(a, b, "np.linalg.solve")
    return bind("solve", [a, b])


def inv(a):
    n = _square(a, "np.linalg.inv")
    a = _as(a, _float_dtype(a))
    return bind("solve", [a, constant(np.eye(n, dtype=a.dtype))])


def slogdet(a):
    _square(a, "np.linalg.slogdet")
    sign, logabsdet = current_trace().bind("slogdet", [_as(a, _float_dtype(a))])
    return SlogdetResult(sign, logabsdet)


def det(a):
    _square(a, "np.linalg.det")
    sign, logabsdet = slogdet(a)
    return sign * np.exp(logabsdet)


def cholesky(a, /, *, upper=False):
    _square(a, "np.linalg.cholesky")
    lower = bind("cholesky", [_as(a, _float_dtype(a))])
    return np.transpose(lower) if upper else lower


def _symmetric_operand(a, UPLO, what):
    """The matrix whose lower triangle the `eigh` primitive reads: `a` for UPLO='L', its
    transpose for 'U' (a's upper triangle is the lower triangle of a.T)."""
    if isinstance(UPLO, Tracer) or UPLO not in ("L", "U"):
        raise ValueError(f"{what}: UPLO: expected 'L' or 'U', found {UPLO!r}")
    _square(a, what)
    a = _as(a, _float_dtype(a))
    return a if UPLO == "L" else np.transpose(a)


def eigh(a, UPLO="L"):
    """np.linalg.eigh: eigenvalues (ascending) and eigenvectors (columns) of the symmetric
    matrix that a's lower (UPLO='L') or upper triangle makes; signs as core/primitives.py
    fixes them."""
    w, v = current_trace().bind("eigh", [_symmetric_operand(a, UPLO, "np.linalg.eigh")])
    return EighResult(w, v)


def eigvalsh(a, UPLO="L"):
    return current_trace().bind("eigh", [_symmetric_operand(a, UPLO, "np.linalg.eigvalsh")])[0]


HANDLERS = {np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.det: det,
            np.linalg.slogdet: slogdet, np.linalg.cholesky: cholesky, np.linalg.eigh: eigh,
            np.linalg.eigvalsh: eigvalsh}


# -- SciPy -------------------------------------------------------------------------------------

TRANS = {0: False, "N": False, 1: True, "T": True, 2: True, "C": True}   # real matrices: C is T


def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False,
                     check_finite=True):
    """scipy.linalg.solve_triangular: op(a) @ x = b with op(a) = a (trans=0) or a.T (1),
    reading only a's lower (lower=True) or upper triangle."""
    what = "scipy.linalg.solve_triangular"
    if unit_diagonal:
        raise TracingError(f"{what} with unit_diagonal=True",
                           "pass a matrix with ones on its diagonal instead")
    if isinstance(trans, (Tracer, np.ndarray)) or trans not in TRANS:
        raise ValueError(f"{what}: trans: expected 0, 1, 2, 'N', 'T' or 'C', found {trans!r}")
    if isinstance(lower, Tracer):
        raise TracingError(f"{what} with a traced `lower`", "pass a Python bool")
    a, b = _rhs(a, b, what)
    return bind("triangular_solve", [a, b], lower=bool(lower), transpose=TRANS[trans])


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """scipy.linalg.cho_solve((c, lower), b): solves (c @ c.T) x = b with c lower triangular
    (lower=True), (c.T @ c) x = b with c upper triangular: two triangular solves."""
    what = "scipy.linalg.cho_solve"
    try:
        c, lower = c_and_lower
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected the pair (c, lower) that scipy.linalg.cho_factor "
                         f"returns as the first argument") from None
    if isinstance(lower, Tracer):
        raise TracingError(f"{what} with a traced `lower`", "pass a Python bool")
    c, b = _rhs(c, b, what, "c")
    lower = bool(lower)
    # lower: L y = b, then L.T x = y; upper: U.T y = b, then U x = y
    y = bind("triangular_solve", [c, b], lower=lower, transpose=not lower)
    return bind("triangular_solve", [c, y], lower=lower, transpose=lower)


SCIPY_LINALG = {"solve_triangular": solve_triangular, "cho_solve": cho_solve}
