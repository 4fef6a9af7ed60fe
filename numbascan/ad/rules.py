"""Stage: derivative rules — one short entry per primitive and mode.

Elementwise primitives: `ELEMENTWISE[prim]` holds, per input, `g -> g * d ans / d input`
written with NumPy on tracers (`ans` is the output, `x, y, ...` the inputs). Because the partial
derivatives are diagonal, the same entry is the forward rule (g = the input's tangent) and the
reverse rule (g = the output's cotangent, then summed over broadcast axes).
Linear primitives: the forward rule applies the primitive to the tangent; `TRANSPOSE[prim]`
is the reverse rule. `None` marks an input without a derivative. A rule of a primitive with
several outputs (slogdet, eigh) sees them all: `ans` and `g` are tuples, a JVP rule gives a list.
"""

from __future__ import annotations

import math

import numpy as np

from ..trace.linalg import solve_triangular
from ..trace.linrec import linear_recurrence
from ..trace.tracer import bind, constant

ZERO_DERIVATIVE = {  # piecewise constant, integer- or bool-valued: no derivative
    "sign", "floor", "ceil", "logical_not", "invert", "isnan", "isfinite", "equal", "not_equal",
    "less", "less_equal", "greater", "greater_equal", "logical_and", "logical_or", "logical_xor",
    "bitwise_and", "bitwise_or", "bitwise_xor", "floor_divide", "argmax", "argmin", "random",
}


def _safe_log(x):
    return np.log(np.where(x > 0, x, 1.0))


def _power_below(x, y):
    """x ** (y - 1), and 0 where y == 0. A Python exponent (a literal of the program) stays a
    Python number: NumPy on it would make an array that the trace cannot find again."""
    if isinstance(y, (int, float, np.number)):
        return 0.0 if y == 0 else x ** (y - 1)
    return np.where(y == 0, 0.0, x ** np.where(y == 0, 1, y - 1))


ELEMENTWISE = {
    "add": (lambda g, ans, x, y: g, lambda g, ans, x, y: g),
    "subtract": (lambda g, ans, x, y: g, lambda g, ans, x, y: -g),
    "multiply": (lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x),
    "true_divide": (lambda g, ans, x, y: g / y, lambda g, ans, x, y: -g * ans / y),
    "power": (lambda g, ans, x, y: g * y * _power_below(x, y),
              lambda g, ans, x, y: g * ans * _safe_log(x)),
    "remainder": (lambda g, ans, x, y: g, lambda g, ans, x, y: -g * np.floor_divide(x, y)),
    "maximum": (lambda g, ans, x, y: g * np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0)),
                lambda g, ans, x, y: g * np.where(y > x, 1.0, np.where(x == y, 0.5, 0.0))),
    "minimum": (lambda g, ans, x, y: g * np.where(x < y, 1.0, np.where(x == y, 0.5, 0.0)),
                lambda g, ans, x, y: g * np.where(y < x, 1.0, np.where(x == y, 0.5, 0.0))),
    "arctan2": (lambda g, ans, y, x: g * x / (x * x + y * y),
                lambda g, ans, y, x: -g * y / (x * x + y * y)),
    "negative": (lambda g, ans, x: -g,),
    "absolute": (lambda g, ans, x: g * np.sign(x),),
    "exp": (lambda g, ans, x: g * ans,),
    "expm1": (lambda g, ans, x: g * (ans + 1),),
    "log": (lambda g, ans, x: g / x,),
    "log1p": (lambda g, ans, x: g / (x + 1),),
    "sqrt": (lambda g, ans, x: g / (2 * ans),),
    "square": (lambda g, ans, x: g * 2 * x,),
    "reciprocal": (lambda g, ans, x: -g * ans * ans,),
    "sin": (lambda g, ans, x: g * np.cos(x),),
    "cos": (lambda g, ans, x: -g * np.sin(x),),
    "tan": (lambda g, ans, x: g * (1 + ans * ans),),
    "arcsin": (lambda g, ans, x: g / np.sqrt(1 - x * x),),
    "arccos": (lambda g, ans, x: -g / np.sqrt(1 - x * x),),
    "arctan": (lambda g, ans, x: g / (1 + x * x),),
    "sinh": (lambda g, ans, x: g * np.cosh(x),),
    "cosh": (lambda g, ans, x: g * np.sinh(x),),
    "tanh": (lambda g, ans, x: g * (1 - ans * ans),),
    "arcsinh": (lambda g, ans, x: g / np.sqrt(x * x + 1),),
    "arccosh": (lambda g, ans, x: g / np.sqrt(x * x - 1),),
    "arctanh": (lambda g, ans, x: g / (1 - x * x),),
    "expit": (lambda g, ans, x: g * ans * (1 - ans),),
    "logit": (lambda g, ans, x: g / (x * (1 - x)),),
    "erf": (lambda g, ans, x: g * (2 / math.sqrt(math.pi)) * np.exp(-x * x),),
    "where": (None, lambda g, ans, c, x, y: np.where(c, g, 0.0),
              lambda g, ans, c, x, y: np.where(c, 0.0, g)),
    "convert": (lambda g, ans, x, dtype=None: g,),
}

# linear in the listed inputs: forward rule = the primitive applied to the tangent
LINEAR = {"reshape": (0,), "transpose": (0,), "broadcast_to": (0,), "reduce_sum": (0,),
          "cumsum": (0,), "index": (0,), "index_add": (0, 1), "concatenate": "all",
          "convert": (0,), "reverse_rows": (0,)}


def unbroadcast(g, shape):
    """Sum `g` over the axes that broadcasting added or stretched to reach g's shape."""
    gshape = np.shape(g)
    if tuple(gshape) == tuple(shape):
        return g
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and gshape[lead + i] != 1)
    if axes:
        g = np.sum(g, axis=axes)
    return np.reshape(g, shape)


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _expand(g, x, axes, keepdims):
    """Cotangent of a reduction over `axes`, broadcast back to x's shape."""
    if not keepdims:
        g = np.reshape(g, _keepdims_shape(x.shape, axes))
    return np.broadcast_to(g, x.shape)


def _flip(x, axis):
    key = [slice(None)] * x.ndim
    key[axis] = slice(None, None, -1)
    return x[tuple(key)]


def _matmul_transpose(g, a, b):
    """Cotangents (of a, of b) for ans = a @ b, a and b 1-d or 2-d."""
    if a.ndim == 1 and b.ndim == 1:
        return g * b, g * a
    if a.ndim == 1:                         # (k) @ (k, n)
        return b @ g, np.outer(a, g)
    if b.ndim == 1:                         # (m, k) @ (k)
        return np.outer(g, b), g @ a
    return g @ b.T, a.T @ g


def _concat_transpose(g, *xs, axis):
    outs, start = [], 0
    for x in xs:
        key = [slice(None)] * g.ndim
        key[axis] = slice(start, start + x.shape[axis])
        outs.append(g[tuple(key)])
        start += x.shape[axis]
    return outs


TRANSPOSE = {   # reverse rules of linear and structural primitives: g -> input cotangents
    "reshape": lambda g, ans, x, shape: [np.reshape(g, x.shape)],
    "transpose": lambda g, ans, x, axes: [np.transpose(g, tuple(np.argsort(axes)))],
    "broadcast_to": lambda g, ans, x, shape: [unbroadcast(g, x.shape)],
    "reduce_sum": lambda g, ans, x, axes, keepdims: [_expand(g, x, axes, keepdims)],
    "cumsum": lambda g, ans, x, axis: [_flip(np.cumsum(_flip(g, axis), axis=axis), axis)],
    "concatenate": lambda g, ans, *xs, axis: _concat_transpose(g, *xs, axis=axis),
    "index": lambda g, ans, x, *dyn, spec:
        [bind("index_add", [constant(np.zeros(x.shape, g.dtype)), g, *dyn], spec=spec)] + [None] * len(dyn),
    "index_add": lambda g, ans, base, upd, *dyn, spec:
        [g, bind("index", [g, *dyn], spec=spec)] + [None] * len(dyn),
    "matmul": lambda g, ans, a, b: list(_matmul_transpose(g, a, b)),
    "reverse_rows": lambda g, ans, x, n: [bind("reverse_rows", [g, n]), None],
    "reduce_prod": lambda g, ans, x, axes, keepdims:
        [_expand(g, x, axes, keepdims) * _expand(ans, x, axes, keepdims) / x],
    "reduce_max": lambda g, ans, x, axes, keepdims: [_extremum(g, ans, x, axes, keepdims)],
    "reduce_min": lambda g, ans, x, axes, keepdims: [_extremum(g, ans, x, axes, keepdims)],
    # linear algebra (x = ans; slogdet's g and ans are the pairs (sign, logabsdet))
    "solve": lambda g, x, a, b: _solve_cotangents(np.linalg.solve(a.T, g), x),
    "triangular_solve": lambda g, x, a, b, lower, transpose: _triangular_cotangents(
        solve_triangular(a, g, trans=not transpose, lower=lower), x, lower, transpose),
    "slogdet": lambda g, ans, a: [None if g[1] is None else g[1] * np.linalg.inv(a).T],
    "cholesky": lambda g, L, a: [_phi(_symmetric_part_cotangent(
        _inverse_sandwich(L, _phi(L.T @ g), transpose=True)))],
    # eigh (g and ans are the pairs (w, V)): the cotangent of the symmetric matrix,
    # V (diag(g_w) + F o (V^T g_V)) V^T, taken to a's lower triangle as for cholesky
    "eigh": lambda g, ans, a: [_phi(_symmetric_part_cotangent(_eigh_cotangent(g, *ans)))],
    # linrec: the cotangents' recurrence runs the other way in time (see the helpers below)
    "linrec": lambda g, xs, a, b, x0, **p: _linrec_cotangents(g, xs, a, b, x0, **p),
}


def _reduce_jvp(weights):
    return lambda t, ans, x, axes, keepdims: np.sum(t * weights(ans, x, axes, keepdims),
                                                    axis=axes, keepdims=keepdims)


JVP = {   # forward rules of nonlinear, non-elementwise primitives: tangents -> output tangent
    "matmul": lambda ts, ans, a, b: _add(None if ts[0] is None else ts[0] @ b,
                                         None if ts[1] is None else a @ ts[1]),
    "reduce_prod": lambda ts, ans, x, **p: _reduce_jvp(
        lambda ans, x, axes, keepdims: _expand(ans, x, axes, keepdims) / x)(ts[0], ans, x, **p),
    "reduce_max": lambda ts, ans, x, **p: _reduce_jvp(_share)(ts[0], ans, x, **p),
    "reduce_min": lambda ts, ans, x, **p: _reduce_jvp(_share)(ts[0], ans, x, **p),
    # linear algebra: dx = A^-1 (db - dA x); d log|det A| = trace(A^-1 dA); the Cholesky
    # factor's L Phi(L^-1 dS L^-T), dS the symmetric matrix of dA's lower triangle
    "solve": lambda ts, x, a, b: np.linalg.solve(a, _add(ts[1], _minus_product(ts[0], x))),
    "triangular_solve": lambda ts, x, a, b, lower, transpose: solve_triangular(
        a, _add(ts[1], _minus_product(_op(_triangle(ts[0], lower), transpose), x)),
        trans=transpose, lower=lower),
    "slogdet": lambda ts, ans, a: [None, _trace(np.linalg.solve(a, ts[0]))],
    "cholesky": lambda ts, L, a: L @ _phi(_inverse_sandwich(L, _phi(ts[0]) + _phi(ts[0]).T)),
    # eigh, with M = V^T dS V (dS as for cholesky): dw = diag(M), dV = V (F o M)
    "eigh": lambda ts, ans, a: _eigh_tangents(_sandwich(ans[1], _phi(ts[0]) + _phi(ts[0]).T),
                                              *ans),
    # linrec: dx_t = a_t dx_{t-1} + (da_t x_{t-1} + db_t), a recurrence of the same a
    "linrec": lambda ts, xs, a, b, x0, **p: _linrec_tangent(ts, xs, a, b, x0, **p),
}


def _share(ans, x, axes, keepdims):
    hit = np.where(x == _expand(ans, x, axes, keepdims), 1.0, 0.0)
    return hit / np.broadcast_to(np.sum(hit, axis=axes, keepdims=True), x.shape)


def _extremum(g, ans, x, axes, keepdims):
    """Cotangent of max/min: shared equally by the elements that attain it."""
    return _expand(g, x, axes, keepdims) * _share(ans, x, axes, keepdims)


def _add(a, b):
    return b if a is None else a if b is None else a + b


# Rules of primitives whose derivatives bind new equations themselves (a scan's are new
# scans), and the IR passes reverse mode runs first: ad/scan_rules.py and ad/checkpoint.py
# fill them when imported (ad/__init__.py imports both). The engine looks a primitive up
# here before the tables above.
JVP_RULES: dict = {}            # prim -> (eqn, ins, tangents) -> (outs, tangents)
VJP_FORWARD_RULES: dict = {}    # prim -> (eqn, ins, live) -> (outs, saved)
VJP_BACKWARD_RULES: dict = {}   # prim -> (eqn, ins, outs, cotangents, saved) -> in cts
VJP_PASSES: dict = {}           # name -> (ir -> (ir, values of its new inputs))


# -- linear algebra helpers (x is a solve's solution, 1-d or 2-d like its right-hand side) ------

def _minus_product(t, x):
    return None if t is None else -(t @ x)


def _op(m, transpose):
    return None if m is None else m.T if transpose else m


def _outer(g, x):
    """g x^T for the columns of a right-hand side (vectors: the outer product)."""
    return np.outer(g, x) if np.ndim(x) == 1 else g @ x.T


def _solve_cotangents(gb, x):
    """Cotangents (of A, of b) of x = A^-1 b, from gb = A^-T g: gA = -gb x^T."""
    return [-_outer(gb, x), gb]


def _triangle_mask(n, lower, dtype, diagonal=1.0):
    """The 0/1 mask of an n x n matrix's lower (or upper) triangle, `diagonal` on it."""
    mask = np.tril(np.ones((n, n), dtype)) if lower else np.triu(np.ones((n, n), dtype))
    np.fill_diagonal(mask, diagonal)
    return constant(mask)


def _triangle(m, lower):
    """The triangle of `m` that a triangular solve reads (the other entries: zero)."""
    return None if m is None else m * _triangle_mask(m.shape[0], lower, m.dtype)


def _triangular_cotangents(gb, x, lower, transpose):
    """Cotangents of x = op(A)^-1 b from gb = op(A)^-T g: g op(A) = -gb x^T, on A's triangle."""
    return [_triangle(_op(-_outer(gb, x), transpose), lower), gb]


def _trace(m):
    return np.sum(m * constant(np.eye(m.shape[0], dtype=m.dtype)))


def _phi(m):
    """The lower triangle of m with its diagonal halved."""
    return m * _triangle_mask(m.shape[0], True, m.dtype, diagonal=0.5)


def _inverse_sandwich(L, s, transpose=False):
    """L^-1 s L^-T for a lower triangular L (L^-T s L^-1 when `transpose`): with y = L^-1 s,
    the product is (L^-1 y^T)^T."""
    y = solve_triangular(L, s, trans=transpose, lower=True)
    return solve_triangular(L, y.T, trans=transpose, lower=True).T


def _symmetric_part_cotangent(g):
    """Cotangent of dA for a function of the symmetric dS = Phi(dA) + Phi(dA)^T, without Phi."""
    return g + g.T


# -- eigh helpers (w ascending, V's columns the eigenvectors; derivatives need distinct w) -----

def _eye(n, dtype):
    return constant(np.eye(n, dtype=dtype))


def _eigen_gaps(w):
    """F with F[i, j] = 1 / (w[j] - w[i]) off the diagonal and 0 on it (equal eigenvalues
    divide by zero: inf/nan)."""
    n = w.shape[0]
    return constant(1 - np.eye(n, dtype=w.dtype)) / (w[None, :] - w[:, None] + _eye(n, w.dtype))


def _eigh_tangents(m, w, V):
    """Tangents (of w, of V) of eigh from m = V^T dS V: diag(m) and V (F o m)."""
    return [np.sum(m * _eye(w.shape[0], w.dtype), axis=1), V @ (_eigen_gaps(w) * m)]


def _sandwich(V, s):
    return V.T @ s @ V


def _eigh_cotangent(g, w, V):
    """V (diag(g_w) + F o (V^T g_V)) V^T, the transpose of dS -> (dw, dV); g = (g_w, g_V),
    either None."""
    g_w, g_V = g
    inner = _add(None if g_w is None else g_w[:, None] * _eye(w.shape[0], w.dtype),
                 None if g_V is None else _eigen_gaps(w) * (V.T @ g_V))
    return V @ inner @ V.T


# -- linrec helpers (xs the states, x_prev[t] the state step t reads: x_{t-1}, or x_{t+1} when
# `reverse`, x0 at the first step; T = 0 has no derivative to carry) --------------------------

def _linrec_previous(xs, x0, reverse):
    """The state each step reads: xs shifted by one step along the recurrence, x0 first."""
    first = np.reshape(x0, (1,) + tuple(x0.shape))
    if xs.shape[0] == 1:
        return first
    return np.concatenate([xs[1:], first] if reverse else [first, xs[:-1]], axis=0)


def _zeros(shape, dtype):
    return constant(np.zeros(shape, dtype))


def _linrec_product(kind, invariant, da, prev):
    """da_t x_{t-1}: elementwise, or x_{t-1} @ da_t (row vectors)."""
    if kind == "diagonal":
        return da * prev
    if invariant:
        return prev @ da
    T, n = prev.shape
    return np.sum(np.reshape(prev, (T, n, 1)) * da, axis=1)


def _linrec_tangent(ts, xs, a, b, x0, kind, reverse, invariant, mode=None):
    if b.shape[0] == 0:
        return None
    da, db, dx0 = ts
    rhs = db
    if da is not None:
        rhs = _add(rhs, _linrec_product(kind, invariant, da, _linrec_previous(xs, x0, reverse)))
    if rhs is None:
        rhs = _zeros(b.shape, b.dtype)
    if dx0 is None:
        dx0 = _zeros(x0.shape, b.dtype)
    return linear_recurrence(a, rhs, dx0, reverse, kind=kind, mode=mode)


def _linrec_cotangents(g, xs, a, b, x0, kind, reverse, invariant, mode=None):
    """lam_t = g_t + a_{t+1} lam_{t+1} (lam_{t+1} @ a_{t+1}^T; a_{t-1} and lam_{t-1} when
    `reverse`): the recurrence of the transposed coefficients, one step later along the
    recurrence, run the other way from zero (its last coefficient multiplies that zero).
    Then db = lam, da_t = lam_t x_{t-1} (the outer product x_{t-1}^T lam_t; summed over time
    for an invariant a), dx0 = a_0 lam_0 (lam_0 @ a_0^T; step T - 1's when `reverse`)."""
    T = b.shape[0]
    if T == 0:
        return [None, None, None]
    at = a if kind == "diagonal" else np.swapaxes(a, -1, -2)
    if not invariant and T > 1:
        at = np.concatenate([at[:1], at[:-1]] if reverse else [at[1:], at[-1:]], axis=0)
    lam = linear_recurrence(at, g, _zeros(x0.shape, b.dtype), not reverse, kind=kind, mode=mode)
    prev = _linrec_previous(xs, x0, reverse)
    first = T - 1 if reverse else 0
    a_first = a if invariant else a[first]
    if kind == "diagonal":
        da = lam * prev
        if invariant:
            da = np.sum(da, axis=0)
        return [da, lam, a_first * lam[first]]
    if invariant:
        da = prev.T @ lam
    else:
        n = x0.shape[0]
        da = np.reshape(prev, (T, n, 1)) * np.reshape(lam, (T, 1, n))
    return [da, lam, lam[first] @ a_first.T]
