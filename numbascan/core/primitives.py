"""Stage: primitives — the closed set of operations the IR may contain.

Each primitive has a NumPy implementation (`impl`, used by the interpreter and for shape and
dtype inference on dummy values) and a kind that tells the code generators how to render it.
Elementwise primitives also carry `scalar`, a template over scalar operands `{0}, {1}, ...`
that the CPU and CUDA renderers wrap in loop nests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..random import draw_numpy


@dataclass(frozen=True)
class Primitive:
    name: str
    kind: str                      # "elementwise" | "reduce" | "structural" | "special"
    impl: Callable
    scalar: Optional[str] = None   # elementwise only
    abstract: Optional[Callable] = None


TABLE: dict[str, Primitive] = {}


def _def(name, kind, impl, scalar=None, abstract=None):
    TABLE[name] = Primitive(name, kind, impl, scalar, abstract)


# elementwise: name -> scalar template (NumPy ufunc of the same name is the implementation)
UNARY = {
    "negative": "(-{0})", "absolute": "np.abs({0})", "exp": "np.exp({0})", "expm1": "np.expm1({0})",
    "log": "np.log({0})", "log1p": "np.log1p({0})", "sqrt": "np.sqrt({0})", "square": "({0} * {0})",
    "sin": "np.sin({0})", "cos": "np.cos({0})", "tan": "np.tan({0})", "arcsin": "np.arcsin({0})",
    "arccos": "np.arccos({0})", "arctan": "np.arctan({0})", "sinh": "np.sinh({0})",
    "cosh": "np.cosh({0})", "tanh": "np.tanh({0})", "arcsinh": "np.arcsinh({0})",
    "arccosh": "np.arccosh({0})", "arctanh": "np.arctanh({0})", "sign": "np.sign({0})",
    "floor": "np.floor({0})", "ceil": "np.ceil({0})", "logical_not": "(not {0})",
    "invert": "(~{0})", "isnan": "np.isnan({0})", "isfinite": "np.isfinite({0})",
    "reciprocal": "(1.0 / {0})",
}
BINARY = {
    "add": "({0} + {1})", "subtract": "({0} - {1})", "multiply": "({0} * {1})",
    "true_divide": "({0} / {1})", "floor_divide": "({0} // {1})",
    "power": "({0} ** {1})", "remainder": "np.remainder({0}, {1})",
    "maximum": "np.maximum({0}, {1})", "minimum": "np.minimum({0}, {1})",
    "arctan2": "np.arctan2({0}, {1})", "equal": "({0} == {1})", "not_equal": "({0} != {1})",
    "less": "({0} < {1})", "less_equal": "({0} <= {1})", "greater": "({0} > {1})",
    "greater_equal": "({0} >= {1})", "logical_and": "({0} and {1})", "logical_or": "({0} or {1})",
    "logical_xor": "({0} != {1})", "bitwise_and": "({0} & {1})", "bitwise_or": "({0} | {1})",
    "bitwise_xor": "({0} ^ {1})",
}
SPECIAL_UNARY = {  # scipy.special ufuncs
    "expit": "(1.0 / (1.0 + np.exp(-{0})))",
    "logit": "np.log({0} / (1.0 - {0}))",
    "erf": "math.erf({0})",
}


def _scipy_special(name):
    """scipy.special's ufunc `name`, imported at its first use (importing scipy is slow)."""
    def impl(*args, **kwargs):
        import scipy.special
        return getattr(scipy.special, name)(*args, **kwargs)
    impl.__name__ = name
    return impl


for _n, _t in {**UNARY, **BINARY}.items():
    _def(_n, "elementwise", getattr(np, _n), _t)
for _n, _t in SPECIAL_UNARY.items():
    _def(_n, "elementwise", _scipy_special(_n), _t)
_def("where", "elementwise", np.where, "({1} if {0} else {2})")
_def("convert", "elementwise", lambda x, dtype: np.asarray(x).astype(dtype), None)

# reductions over `axes` (a tuple), with keepdims
REDUCE = {
    "reduce_sum": (np.sum, "{acc} + {x}", "0"),
    "reduce_prod": (np.prod, "{acc} * {x}", "1"),
    "reduce_max": (np.max, "np.maximum({acc}, {x})", None),
    "reduce_min": (np.min, "np.minimum({acc}, {x})", None),
    "reduce_all": (np.all, "{acc} and {x} != 0", "True"),
    "reduce_any": (np.any, "{acc} or {x} != 0", "False"),
}
for _n, (_f, _t, _init) in REDUCE.items():
    _def(_n, "reduce", (lambda f: lambda x, axes, keepdims: np.asarray(f(x, axis=axes, keepdims=keepdims)))(_f))

_def("argmax", "reduce", lambda x, axis, keepdims: np.asarray(np.argmax(x, axis=axis, keepdims=keepdims)))
_def("argmin", "reduce", lambda x, axis, keepdims: np.asarray(np.argmin(x, axis=axis, keepdims=keepdims)))
_def("cumsum", "structural", lambda x, axis: np.cumsum(x, axis=axis))
_def("matmul", "structural", lambda a, b: np.asarray(np.matmul(a, b)))
_def("reshape", "structural", lambda x, shape: np.reshape(x, shape))
_def("transpose", "structural", lambda x, axes: np.transpose(x, axes))
_def("broadcast_to", "structural", lambda x, shape: np.broadcast_to(x, shape).copy())
_def("concatenate", "structural", lambda *xs, axis: np.concatenate(xs, axis=axis))


# linear algebra on one 2-d matrix `a` (n, n), with a right-hand side `b` of shape (n,) or (n, k)
# of a's dtype (float32 or float64; trace/linalg.py converts): `solve` is a @ x = b by LU with
# partial pivoting, `triangular_solve` op(a) @ x = b reading only a's `lower` (or upper)
# triangle, op(a) = a.T when `transpose`, `cholesky` the lower factor (a's lower triangle read),
# `slogdet` two outputs (sign, log|det|). The interpreter raises NumPy's LinAlgError on a
# singular (or, for cholesky, not positive definite) matrix; compiled code gives inf/nan.
def _solve_triangular(a, b, lower, transpose):
    import scipy.linalg
    return scipy.linalg.solve_triangular(a, b, trans=int(transpose), lower=lower,
                                         check_finite=False)


def _like_b(inputs, **params):
    return [(inputs[1].dtype, tuple(inputs[1].shape))]


_def("solve", "special", lambda a, b: np.linalg.solve(a, b), abstract=_like_b)
_def("triangular_solve", "special", _solve_triangular, abstract=_like_b)
_def("cholesky", "special", np.linalg.cholesky,
     abstract=lambda inputs: [(inputs[0].dtype, tuple(inputs[0].shape))])
_def("slogdet", "special", lambda a: tuple(np.asarray(r, a.dtype) for r in np.linalg.slogdet(a)),
     abstract=lambda inputs: [(inputs[0].dtype, ()), (inputs[0].dtype, ())])


# `eigh`: two outputs, the eigenvalues w (n,) in ascending order and the eigenvectors v (n, n)
# as columns, of the symmetric matrix made from a's lower triangle (NumPy's UPLO='L'). Each
# column's sign is fixed (the same rule in every mode and on every path, codegen/linalg.py's
# loops included): its first entry of magnitude at least 1 / (2 sqrt(n)) is positive (a unit
# vector has an entry of magnitude 1 / sqrt(n) or more, so there is one).
def eigenvector_signs(v):
    """v with each column's sign fixed by `eigh`'s rule."""
    n = v.shape[0]
    if n == 0:
        return v
    first = np.argmax(np.abs(v) >= 0.5 / np.sqrt(n), axis=0)
    return v * np.where(v[first, np.arange(n)] < 0, -1, 1).astype(v.dtype)


def _eigh(a):
    w, v = np.linalg.eigh(a)
    return w, eigenvector_signs(v)


_def("eigh", "special", _eigh,
     abstract=lambda inputs: [(inputs[0].dtype, tuple(inputs[0].shape[:1])),
                              (inputs[0].dtype, tuple(inputs[0].shape))])


# `linrec`: the states xs (T,) + S of a linear recurrence from operands (a, b, x0) of one float
# dtype (trace/linrec.py checks them). kind "diagonal": x_t = a_t * x_{t-1} + b_t elementwise,
# b (T,) + S, x0 S, a (T,) + S or, `invariant`, S; kind "matrix": x_t = x_{t-1} @ a_t + b_t
# (row vectors), b (T, n), x0 (n,), a (T, n, n) or, `invariant`, (n, n). From x_{-1} = x0;
# `reverse`: t from T - 1 down to 0 from x_T = x0 (x_{t+1} in place of x_{t-1}). xs holds
# x_0 .. x_{T-1} in index order. This NumPy loop is the reference of codegen/linrec.py's.
def _linrec(a, b, x0, kind, reverse, invariant, mode=None):
    a, b = np.asarray(a), np.asarray(b)
    out = np.empty(b.shape, b.dtype)
    x = np.array(x0, dtype=b.dtype)
    for t in (range(b.shape[0] - 1, -1, -1) if reverse else range(b.shape[0])):
        at = a if invariant else a[t]
        x = (at * x if kind == "diagonal" else x @ at) + b[t]
        out[t] = x
    return out


_def("linrec", "special", _linrec,
     abstract=lambda inputs, **params: [(inputs[1].dtype, tuple(inputs[1].shape))])


def index_tuple(spec, dyn):
    """spec: one entry per leading axis: ("int", k) | ("slice", start, step, length) | ("dyn", dim)."""
    it = iter(dyn)
    out = []
    for s in spec:
        if s[0] == "int":
            out.append(s[1])
        elif s[0] == "slice":
            start, step, length = s[1:]
            stop = start + step * length
            out.append(slice(start, stop if stop >= 0 else None, step))
        else:
            out.append(int(next(it)))
    return tuple(out)


_def("index", "structural", lambda x, *dyn, spec: np.asarray(x[index_tuple(spec, dyn)]).copy())


def _index_add(base, update, *dyn, spec):
    out = np.array(base, copy=True)
    out[index_tuple(spec, dyn)] += update
    return out


_def("index_add", "structural", _index_add)


def _reverse_rows(x, n):
    """Rows 0..n-1 of `x` in reverse order, then zeros: out[i] = x[n - 1 - i] for i < n (the
    forward order of what a backward walk over the n rows that ran produced). Linear in x,
    and its own transpose."""
    n = max(0, min(int(n), x.shape[0]))
    out = np.zeros_like(x)
    out[:n] = x[:n][::-1]
    return out


_def("reverse_rows", "structural", _reverse_rows)


def abstract_eval(prim: str, inputs, params):
    """Output (dtype, shape) pairs, found by running the NumPy implementation on dummies."""
    p = TABLE[prim]
    if p.abstract is not None:
        return p.abstract(inputs, **params)
    if prim == "matmul":                 # from the shapes: the product of large dummies is slow
        sa, sb = inputs[0].shape, inputs[1].shape
        shape = (sa[:-1] if len(sa) > 1 else ()) + (sb[-1:] if len(sb) > 1 else ())
        dtype = np.result_type(inputs[0].dtype, inputs[1].dtype)
        return [(dtype, tuple(shape))]
    elementwise = p.kind == "elementwise"
    dummies = []
    for v in inputs:
        if hasattr(v, "value"):          # Lit: keep its Python type for NEP 50 promotion
            dummies.append(v.value)
        elif prim in ("index", "index_add") and len(dummies) >= (1 if prim == "index" else 2):
            dummies.append(0)
        elif elementwise:                # dtype from 0-d values, shape from broadcasting
            dummies.append(np.ones((), v.dtype))
        else:                            # zero-stride: no memory for large shapes
            dummies.append(np.broadcast_to(np.ones((), v.dtype), v.shape))
    with np.errstate(all="ignore"):
        out = p.impl(*dummies, **params)
    if elementwise:
        shape = np.broadcast_shapes(*[np.shape(v) for v in inputs if not hasattr(v, "value")])
        return [(np.asarray(out).dtype, shape)]
    outs = out if isinstance(out, tuple) else (out,)
    return [(np.asarray(o).dtype, np.shape(o)) for o in outs]


def _random_impl(key, base, kind, size, dist, offset):
    return draw_numpy(key, (int(base) + offset) % 2**64, kind, size, dist)


_def("random", "special", _random_impl,
     abstract=lambda inputs, kind, size, dist, offset:
     [(np.dtype(np.int64 if kind == "binomial" else np.float64), tuple(size))])
