"""Stage: tracing — what to use instead of a NumPy or SciPy function numbascan does not trace.

A `TracingError` for one of the functions below says what to write instead, with operations
that are traced (tests/test_messages.py traces every alternative shown). An alternative that
uses a function the tracer may lack (`needs`) is shown only while that function is traced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alternative:
    text: str              # what to write instead, and when it gives the same result
    needs: tuple = ()      # NumPy functions it uses that must be in the tracer's table


_LEAST_SQUARES = Alternative("np.linalg.solve(A.T @ A, A.T @ b) (least squares) when A has "
                             "full column rank")
_SINGULAR_VALUES = (
    Alternative("np.sqrt(np.maximum(np.linalg.eigh(A.T @ A)[0], 0.0)) for the singular values "
                "alone (ascending)", (np.linalg.eigh,)),
    Alternative("np.linalg.norm(A, 2) for the largest one", (np.linalg.eigvalsh,)),
    Alternative("np.linalg.slogdet(A) for log |det A| (the log of their product)"),
)
_SYMMETRIC_EIGEN = (Alternative("np.linalg.eigh(A) when A is symmetric (eigenvalues ascending, "
                                "eigenvectors as columns)", (np.linalg.eigh,)),)
_SYMMETRIC_EIGENVALUES = (Alternative("np.linalg.eigh(A)[0] when A is symmetric (ascending)",
                                      (np.linalg.eigh,)),)
_DATA_DEPENDENT = (Alternative("a mask that keeps the shape (the result's shape would depend on "
                               "the values, which traced code cannot have), e.g. np.where(x > 0, "
                               "x, 0.0), with np.sum(x > 0) for a count"),)
_CONCATENATE = (Alternative("np.concatenate and slicing: np.concatenate([x, v]) for "
                            "np.append(x, v), np.concatenate([x[:i], v, x[i:]]) for "
                            "np.insert(x, i, v), np.concatenate([x[:i], x[i + 1:]]) for "
                            "np.delete(x, i)"),)
_QR = (_LEAST_SQUARES,
       Alternative("np.linalg.cholesky(A.T @ A).T for R (up to the signs of its rows)"))
_LU = (Alternative("np.linalg.solve(A, b) for the solves it serves"),)
_ROUND = (Alternative("np.floor(x + 0.5), which rounds halves up (NumPy rounds them to even)"),)
_TRUNC = (Alternative("np.where(x < 0, np.ceil(x), np.floor(x))"),)
_WHOLE_ARRAY = (Alternative("whole-array operations (ufuncs, np.where, reductions) on the "
                            "arrays themselves"),)

# by the name a TracingError gives the operation
ALTERNATIVES: dict[str, tuple] = {
    # linear algebra
    "np.linalg.pinv": (Alternative("np.linalg.solve(A, b) when A is square and invertible"),
                       _LEAST_SQUARES),
    "np.linalg.lstsq": (_LEAST_SQUARES,
                        Alternative("scipy.linalg.cho_solve((np.linalg.cholesky(A.T @ A), True), "
                                    "A.T @ b), the same through a Cholesky factor")),
    "np.linalg.svd": _SINGULAR_VALUES,
    "np.linalg.svdvals": _SINGULAR_VALUES,
    "np.linalg.eig": _SYMMETRIC_EIGEN,
    "np.linalg.eigvals": _SYMMETRIC_EIGENVALUES,
    "np.linalg.qr": _QR,
    "np.linalg.matrix_power": (Alternative("products written out, A @ A @ A, for a small fixed "
                                           "power, or numbascan.lax.fori_loop(0, k, lambda i, "
                                           "M: M @ A, np.eye(n))"),),
    "scipy.linalg.inv": (Alternative("np.linalg.inv(A)"),),
    "scipy.linalg.solve": (Alternative("np.linalg.solve(A, b)"),),
    "scipy.linalg.det": (Alternative("np.linalg.det(A)"),),
    "scipy.linalg.cholesky": (Alternative("np.linalg.cholesky(A).T for scipy's default upper "
                                          "factor (np.linalg.cholesky(A) for lower=True)"),),
    "scipy.linalg.cho_factor": (Alternative("(np.linalg.cholesky(A), True), which "
                                            "scipy.linalg.cho_solve takes"),),
    "scipy.linalg.lu_factor": _LU,
    "scipy.linalg.lu": _LU,
    "scipy.linalg.qr": _QR,
    "scipy.linalg.lu_solve": (Alternative("np.linalg.solve(A, b)"),),
    "scipy.linalg.pinv": (_LEAST_SQUARES,),
    "scipy.linalg.lstsq": (_LEAST_SQUARES,),
    "scipy.linalg.svd": _SINGULAR_VALUES,
    "scipy.linalg.svdvals": _SINGULAR_VALUES,
    "scipy.linalg.eig": _SYMMETRIC_EIGEN,
    "scipy.linalg.eigvals": _SYMMETRIC_EIGENVALUES,
    "scipy.linalg.eigh": (Alternative("np.linalg.eigh(A)", (np.linalg.eigh,)),),
    "scipy.linalg.eigvalsh": (Alternative("np.linalg.eigvalsh(A)", (np.linalg.eigvalsh,)),),
    # results whose shape depends on the values
    **{f"np.{name}": _DATA_DEPENDENT for name in (
        "unique", "nonzero", "argwhere", "flatnonzero", "extract", "compress")},
    "np.where with one argument": _DATA_DEPENDENT,
    # building arrays
    **{f"np.{name}": _CONCATENATE for name in ("append", "insert", "delete")},
    "np.pad": (Alternative("np.concatenate([np.zeros(k), x, np.zeros(k)]) for np.pad(x, k) of a "
                           "1-d x"),),
    "np.tile": (Alternative("np.broadcast_to(x, (k, n)).reshape(-1) for np.tile(x, k) of a 1-d "
                            "x"),),
    "np.repeat": (Alternative("np.broadcast_to(x[:, None], (n, k)).reshape(-1) for "
                              "np.repeat(x, k) of a 1-d x"),),
    "np.diff": (Alternative("x[1:] - x[:-1] (x[..., 1:] - x[..., :-1] along the last axis)"),),
    "np.vectorize": _WHOLE_ARRAY,
    # elementwise functions and reductions
    "np.round": _ROUND, "np.around": _ROUND, "np.rint": _ROUND,
    "np.trunc": _TRUNC, "np.fix": _TRUNC,
    "np.log2": (Alternative("np.log(x) / np.log(2.0)"),),
    "np.log10": (Alternative("np.log(x) / np.log(10.0)"),),
    "np.exp2": (Alternative("2.0 ** x"),),
    "np.cbrt": (Alternative("np.sign(x) * np.abs(x) ** (1.0 / 3.0)"),),
    "np.hypot": (Alternative("np.sqrt(x ** 2 + y ** 2)"),),
    "np.logaddexp": (Alternative("np.maximum(a, b) + np.log1p(np.exp(-np.abs(a - b)))"),),
    "np.isclose": (Alternative("np.abs(a - b) <= atol + rtol * np.abs(b)"),),
    "np.allclose": (Alternative("np.all(np.abs(a - b) <= atol + rtol * np.abs(b))"),),
    "np.nan_to_num": (Alternative("np.where(np.isnan(x), 0.0, x)"),),
    "np.count_nonzero": (Alternative("np.sum(x != 0)"),),
    "np.var": (Alternative("np.mean((x - np.mean(x, axis, keepdims=True)) ** 2, axis)"),),
    "np.std": (Alternative("np.sqrt(np.mean((x - np.mean(x, axis, keepdims=True)) ** 2, "
                           "axis))"),),
    "np.average": (Alternative("np.sum(w * x, axis) / np.sum(w, axis)"),),
    "np.median": (Alternative("np.sort(x) and its middle entries: s[n // 2] for an odd n, "
                              "(s[n // 2 - 1] + s[n // 2]) / 2 for an even n"),),
    "np.cumprod": (Alternative("np.exp(np.cumsum(np.log(x))) for a positive x, or a scan that "
                               "carries the running product"),),
    "np.trapezoid": (Alternative("0.5 * np.sum((y[1:] + y[:-1]) * (x[1:] - x[:-1]))"),),
    # scipy.special
    "scipy.special.softmax": (Alternative("np.exp(x - scipy.special.logsumexp(x, axis=-1, "
                                          "keepdims=True))"),),
    "scipy.special.log_softmax": (Alternative("x - scipy.special.logsumexp(x, axis=-1, "
                                              "keepdims=True)"),),
    "scipy.special.erfc": (Alternative("1.0 - scipy.special.erf(x)"),),
    "scipy.special.ndtr": (Alternative("0.5 * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))"),),
    "scipy.special.log_ndtr": (Alternative("np.log(0.5 * (1.0 + scipy.special.erf(x / "
                                           "np.sqrt(2.0)))), which loses accuracy far in the "
                                           "left tail"),),
    "scipy.special.log_expit": (Alternative("np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))"),),
    "scipy.special.xlogy": (Alternative("x * np.log(np.where(x == 0, 1.0, y))"),),
    "scipy.special.xlog1py": (Alternative("x * np.log1p(np.where(x == 0, 0.0, y))"),),
}

RANDOM = (Alternative("an ns.RandomStreams(seed) made outside the traced code: "
                      "rng.normal(size=..., "
                      "avg=..., std=...), rng.uniform(size=..., low=..., high=...) or "
                      "rng.binomial(size=..., n=..., p=...), fresh at every step and the same "
                      "numbers in every mode (NumPy's draws in traced code would be constants "
                      "of the trace)"),)


def alternatives(op, traced) -> tuple:
    """The alternatives to show for `op` (NumPy's `np.random.*` share one entry); `traced(f)`:
    whether NumPy function `f` is in the tracer's table."""
    found = RANDOM if op.startswith("np.random.") else ALTERNATIVES.get(op, ())
    return tuple(a for a in found if all(traced(f) for f in a.needs))


def instead(op, traced) -> str:
    """The detail of a TracingError for `op`: what to use instead, or "" when nothing is known."""
    shown = alternatives(op, traced)
    return "instead, use " + ", or ".join(a.text for a in shown) if shown else ""
