"""Stage: tracing — NumPy's API on tracers, expressed in primitives.

`apply_ufunc` and `apply_function` receive what `Tracer.__array_ufunc__` and
`__array_function__` see. Composite functions (mean, clip, dot, tensordot, stack, squeeze,
logsumexp, ...) are rewritten here into the small primitive set of `core/primitives.py`, so that the
code generators and derivative rules only ever see primitives. A function that is not traced
raises a TracingError saying what to use instead (`untraced`, alternatives.py); NumPy's random
draws are refused too, since in a trace they would be constants.
"""

from __future__ import annotations

import sys

import numpy as np

from ..core.primitives import TABLE
from .alternatives import instead
from .linalg import HANDLERS as LINALG_HANDLERS, SCIPY_LINALG
from .structural import HANDLERS as STRUCTURAL_HANDLERS
from .tracer import NUMPY_API, RunTracer, Tracer, TracingError, bind, constant

UFUNC_ALIASES = {"divide": "true_divide", "abs": "absolute", "fabs": "absolute",
                 "mod": "remainder", "conjugate": None}


def _prim_for_ufunc(ufunc):
    name = UFUNC_ALIASES.get(ufunc.__name__, ufunc.__name__)
    if name == "matmul":
        return "matmul"
    if name in TABLE and TABLE[name].kind == "elementwise":
        return name
    return None


def apply_ufunc(ufunc, method, inputs, kwargs):
    if any(isinstance(x, RunTracer) for x in inputs):
        return run_ufunc(ufunc, method, inputs, kwargs)
    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", None)
    if kwargs.pop("out", None) is not None or method != "__call__" or kwargs:
        raise TracingError(f"np.{ufunc.__name__}.{method} with {sorted(kwargs) or 'out='}",
                           "only plain calls of ufuncs are supported")
    prim = _prim_for_ufunc(ufunc)
    if prim is None:
        raise untraced(_ufunc_name(ufunc))
    if prim == "matmul":
        return matmul(*inputs)
    if prim in ("logical_and", "logical_or", "logical_xor", "logical_not"):
        inputs = [_as_bool(x) for x in inputs]
    out = bind(prim, inputs)
    return astype(out, dtype) if dtype is not None else out


def _ufunc_name(ufunc):
    """np.exp2, or scipy.special.gammaln for one of scipy.special's ufuncs."""
    if getattr(np, ufunc.__name__, None) is ufunc:
        return f"np.{ufunc.__name__}"
    special = sys.modules.get("scipy.special")
    if special is not None and getattr(special, ufunc.__name__, None) is ufunc:
        return f"scipy.special.{ufunc.__name__}"
    return f"the ufunc {ufunc.__name__}"


def untraced(op):
    """The TracingError for operation `op` ("np.linalg.pinv"), saying what to use instead
    where a traced alternative exists (alternatives.py)."""
    return TracingError(op, instead(op, lambda f: f in HANDLERS))


def _as_bool(x):
    if isinstance(x, Tracer) and x.dtype != np.bool_:
        return bind("not_equal", [x, 0])
    return x


def astype(x, dtype):
    dtype = np.dtype(dtype)
    if not isinstance(x, Tracer):
        return np.asarray(x).astype(dtype)
    if x.dtype == dtype:
        return x
    if dtype.kind not in "biuf":
        raise TracingError(f".astype({dtype})", "only bool, integer and float dtypes")
    return bind("convert", [x], dtype=dtype)


def _shape(x):
    return x.shape if isinstance(x, Tracer) else np.shape(x)


def _ndim(x):
    return len(_shape(x))


def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < max(ndim, 1):
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


# -- reductions -----------------------------------------------------------------------------------

def _reduce(prim, x, axis=None, keepdims=False, dtype=None, **unsupported):
    _reject(prim, unsupported)
    if dtype is not None:
        x = astype(x, dtype)
    if _ndim(x) == 0:
        return x if prim in ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min") \
            else bind("not_equal", [x, 0])
    out = bind(prim, [x], axes=_norm_axes(axis, _ndim(x)), keepdims=bool(keepdims))
    return _as_asked(out, dtype)


def _as_asked(out, dtype):
    """A sum, product or cumsum with `dtype=` has that dtype, as in NumPy (the primitive sums a
    small or 32-bit integer in int64, as NumPy does without `dtype=`; the wrapped result is
    the same modulo 2**bits)."""
    return astype(out, dtype) if dtype is not None else out


def _reject(name, unsupported):
    unsupported = {k: v for k, v in unsupported.items() if v is not None and k != "initial"
                   and v is not np._NoValue}
    if unsupported:
        raise TracingError(f"{name} with {sorted(unsupported)}")


def mean(x, axis=None, dtype=None, keepdims=False, **unsupported):
    _reject("np.mean", unsupported)
    x = astype(x, dtype) if dtype is not None else x
    if x.dtype.kind in "biu":
        x = astype(x, np.float64)
    axes = _norm_axes(axis, _ndim(x))
    count = int(np.prod([x.shape[a] for a in axes])) if x.ndim else 1
    return np.true_divide(_reduce("reduce_sum", x, axis, keepdims), count)


def _arg(prim, x, axis=None, keepdims=False, **unsupported):
    _reject(prim, unsupported)
    if axis is None:
        flat = np.reshape(x, (-1,))
        out = bind(prim, [flat], axis=0, keepdims=False)
        return np.reshape(out, (1,) * x.ndim) if keepdims else out
    return bind(prim, [x], axis=_norm_axes(axis, x.ndim)[0], keepdims=bool(keepdims))


def cumsum(x, axis=None, dtype=None, **unsupported):
    _reject("np.cumsum", unsupported)
    if dtype is not None:
        x = astype(x, dtype)
    if axis is None:
        x, axis = np.reshape(x, (-1,)), 0
    return _as_asked(bind("cumsum", [x], axis=_norm_axes(axis, x.ndim)[0]), dtype)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    if b is not None or return_sign:
        raise TracingError("scipy.special.logsumexp with b= or return_sign=")
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis) if axis is not None \
        else np.reshape(s, ())


# -- linear algebra -------------------------------------------------------------------------------

def matmul(a, b):
    na, nb = _ndim(a), _ndim(b)
    if na == 0 or nb == 0:
        raise ValueError("matmul: input operand does not have enough dimensions "
                         "(use * for scalars)")
    if na > 2 or nb > 2:
        raise TracingError(f"matmul of {na}-d and {nb}-d arrays", "only 1-d and 2-d operands")
    return bind("matmul", [a, b])


def dot(a, b, out=None):
    if out is not None:
        raise TracingError("np.dot with out=")
    if _ndim(a) == 0 or _ndim(b) == 0:
        return np.multiply(a, b)
    if _ndim(b) > 2:
        return tensordot(a, b, axes=([_ndim(a) - 1], [_ndim(b) - 2]))
    if _ndim(a) > 2:
        return tensordot(a, b, axes=([_ndim(a) - 1], [0]))
    return matmul(a, b)


def inner(a, b):
    if _ndim(a) == 0 or _ndim(b) == 0:
        return np.multiply(a, b)
    return tensordot(a, b, axes=([_ndim(a) - 1], [_ndim(b) - 1]))


def outer(a, b, out=None):
    return np.multiply(np.reshape(a, (-1, 1)), np.reshape(b, (1, -1)))


def tensordot(a, b, axes=2):
    na, nb = _ndim(a), _ndim(b)
    if isinstance(axes, (int, np.integer)):
        ax_a, ax_b = list(range(na - axes, na)), list(range(axes))
    else:
        ax_a, ax_b = axes
        ax_a = [ax_a] if isinstance(ax_a, (int, np.integer)) else list(ax_a)
        ax_b = [ax_b] if isinstance(ax_b, (int, np.integer)) else list(ax_b)
    ax_a = [x % na for x in ax_a]
    ax_b = [x % nb for x in ax_b]
    sa, sb = _shape(a), _shape(b)
    for i, j in zip(ax_a, ax_b):
        if sa[i] != sb[j]:
            raise ValueError(f"tensordot: shape mismatch for sum: {sa[i]} vs {sb[j]}")
    free_a = [i for i in range(na) if i not in ax_a]
    free_b = [i for i in range(nb) if i not in ax_b]
    k = int(np.prod([sa[i] for i in ax_a]))
    at = np.reshape(np.transpose(a, free_a + ax_a), (-1, k))
    bt = np.reshape(np.transpose(b, ax_b + free_b), (k, -1))
    out = matmul(at, bt)
    return np.reshape(out, tuple(sa[i] for i in free_a) + tuple(sb[i] for i in free_b))


# -- shape manipulation ---------------------------------------------------------------------------

def reshape(x, shape=None, order="C", newshape=None, copy=None):
    shape = newshape if shape is None else shape
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(_shape(x)))
    if shape.count(-1) == 1:
        rest = int(np.prod([s for s in shape if s != -1]))
        shape = tuple(size // rest if s == -1 else s for s in shape)
    if int(np.prod(shape)) != size:
        raise ValueError(f"cannot reshape array of shape {_shape(x)} into shape {shape}")
    if shape == tuple(_shape(x)):
        return x
    return bind("reshape", [x], shape=shape)


def transpose(x, axes=None):
    n = _ndim(x)
    axes = tuple(reversed(range(n))) if axes is None else tuple(int(a) % n for a in axes)
    if axes == tuple(range(n)):
        return x
    return bind("transpose", [x], axes=axes)


def swapaxes(x, a, b):
    axes = list(range(_ndim(x)))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)


def expand_dims(x, axis):
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    n = _ndim(x) + len(axes)
    axes = sorted(a % n for a in axes)
    shape = list(_shape(x))
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def squeeze(x, axis=None):
    shape = _shape(x)
    if axis is None:
        axes = [i for i, s in enumerate(shape) if s == 1]
    else:
        axes = list(_norm_axes(axis, len(shape)))
        for a in axes:
            if shape[a] != 1:
                raise ValueError(f"cannot select an axis to squeeze out which has size not equal "
                                 f"to one (axis {a} has size {shape[a]})")
    return reshape(x, tuple(s for i, s in enumerate(shape) if i not in axes))


def ravel(x, order="C"):
    return reshape(x, (-1,))


def broadcast_to(x, shape, subok=False):
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if tuple(_shape(x)) == shape:
        return x
    return bind("broadcast_to", [x], shape=shape)


def concatenate(arrays, axis=0, out=None, dtype=None, casting=None):
    arrays = list(arrays)
    if axis is None:
        arrays, axis = [ravel(a) for a in arrays], 0
    nd = _ndim(arrays[0])
    if nd == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    out = bind("concatenate", arrays, axis=int(axis) % nd)
    return astype(out, dtype) if dtype is not None else out


def stack(arrays, axis=0, out=None, dtype=None, casting=None):
    arrays = list(arrays)
    nd = _ndim(arrays[0]) + 1
    axis = int(axis) % nd
    return concatenate([expand_dims(a, axis) for a in arrays], axis=axis, dtype=dtype)


def where(cond, x=None, y=None):
    if x is None or y is None:
        raise untraced("np.where with one argument")
    return bind("where", [_as_bool(cond), x, y])


def clip(a, a_min=None, a_max=None, out=None, **kw):
    if a_min is not None:
        a = np.maximum(a, a_min)
    if a_max is not None:
        a = np.minimum(a, a_max)
    return a


def _like(fill):
    def like(a, dtype=None, order="K", subok=True, shape=None, device=None, *args):
        return constant(np.full(_shape(a) if shape is None else shape, fill,
                                dtype=a.dtype if dtype is None else dtype))
    return like


def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, device=None):
    if isinstance(fill_value, Tracer):
        return broadcast_to(astype(fill_value, dtype or a.dtype), _shape(a))
    return constant(np.full(_shape(a) if shape is None else shape, fill_value,
                            dtype=a.dtype if dtype is None else dtype))


def round_(a, decimals=0, out=None):
    raise untraced("np.round")


def _reductions(reduce, mean, arg):
    """NumPy's reductions, by function, in terms of `reduce(prim, x, axis, keepdims, dtype)`,
    `mean` and `arg(prim, x, axis, keepdims)` (of traced values, or of the rows of a run)."""
    return {
        np.sum: lambda a, axis=None, dtype=None, out=None, keepdims=False, **k:
            reduce("reduce_sum", a, axis, keepdims, dtype, out=out, **k),
        np.prod: lambda a, axis=None, dtype=None, out=None, keepdims=False, **k:
            reduce("reduce_prod", a, axis, keepdims, dtype, out=out, **k),
        np.max: lambda a, axis=None, out=None, keepdims=False, **k:
            reduce("reduce_max", a, axis, keepdims, out=out, **k),
        np.min: lambda a, axis=None, out=None, keepdims=False, **k:
            reduce("reduce_min", a, axis, keepdims, out=out, **k),
        np.all: lambda a, axis=None, out=None, keepdims=False, **k:
            reduce("reduce_all", a, axis, keepdims, out=out, **k),
        np.any: lambda a, axis=None, out=None, keepdims=False, **k:
            reduce("reduce_any", a, axis, keepdims, out=out, **k),
        np.mean: mean,
        np.argmax: lambda a, axis=None, out=None, keepdims=False: arg("argmax", a, axis,
                                                                       keepdims),
        np.argmin: lambda a, axis=None, out=None, keepdims=False: arg("argmin", a, axis,
                                                                       keepdims),
    }


HANDLERS = {
    **_reductions(_reduce, mean, _arg),
    np.cumsum: cumsum,
    np.dot: dot, np.inner: inner, np.outer: outer, np.tensordot: tensordot,
    np.matmul: matmul,
    np.reshape: reshape, np.transpose: transpose, np.swapaxes: swapaxes,
    np.expand_dims: expand_dims, np.squeeze: squeeze, np.ravel: ravel,
    np.broadcast_to: broadcast_to, np.concatenate: concatenate, np.stack: stack,
    np.where: where, np.clip: clip,
    np.zeros_like: _like(0), np.ones_like: _like(1), np.empty_like: _like(0),
    np.full_like: full_like,
    np.copy: lambda a, order="K", subok=False: a,
    np.shape: _shape, np.ndim: _ndim, np.size: lambda a, axis=None: int(np.prod(_shape(a))),
    np.round: round_,
}
for _name in ("amax", "amin"):
    if hasattr(np, _name):
        HANDLERS[getattr(np, _name)] = HANDLERS[np.max if _name == "amax" else np.min]
HANDLERS.update(STRUCTURAL_HANDLERS)     # split, einsum, diag, sort, linalg.norm, ...
HANDLERS.update(LINALG_HANDLERS)         # linalg.solve, inv, det, slogdet, cholesky


def apply_function(func, args, kwargs):
    if _holds_run(args) or _holds_run(kwargs.values()):
        return run_function(func, args, kwargs)
    handler = HANDLERS.get(func)
    if handler is None:
        mod = getattr(func, "__module__", "numpy") or "numpy"
        prefix = "np." if mod.startswith("numpy") else mod + "."
        sub = mod.split(".")[1] + "." if mod.startswith("numpy.") and mod.split(".")[1] \
            not in ("_core", "core", "lib", "fromnumeric") else ""
        raise untraced(f"{prefix}{sub}{func.__name__}")
    return handler(*args, **kwargs)


# -- indexing -------------------------------------------------------------------------------------

def getitem(x, key):
    if isinstance(x, RunTracer):
        return run_getitem(x, key)
    if not isinstance(key, tuple):
        key = (key,)
    shape = x.shape
    n_consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_consumed > len(shape):
        raise IndexError(f"too many indices for array: array is {len(shape)}-dimensional, "
                         f"but {n_consumed} were indexed")
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - n_consumed) + key[i + 1:]
    spec, dyn, final_shape, axis = [], [], [], 0
    for k in key:
        if k is None:
            final_shape.append(1)
            continue
        dim = shape[axis]
        if isinstance(k, Tracer):
            if k.ndim != 0 or k.dtype.kind not in "iu":
                raise TracingError(f"indexing by a traced {k.dtype} array of shape {k.shape}",
                                   "only scalar integer indices may be traced values")
            spec.append(("dyn", dim))
            dyn.append(k)
        elif isinstance(k, (bool, np.bool_)) or (isinstance(k, (list, np.ndarray))):
            raise TracingError("fancy or boolean-mask indexing of a traced value",
                               "use integer scalars, slices, np.where or np.take-free forms")
        elif isinstance(k, slice):
            start, stop, step = k.indices(dim)
            length = len(range(start, stop, step))
            spec.append(("slice", start, step, length))
            final_shape.append(length)
        else:
            k = int(k)
            if not -dim <= k < dim:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {dim}")
            spec.append(("int", k % dim))
        axis += 1
    final_shape += list(shape[axis:])
    while spec and spec[-1] == ("slice", 0, 1, shape[len(spec) - 1]):
        spec.pop()
    if not spec:
        out = x
    else:
        out = bind("index", [x, *dyn], spec=tuple(spec))
    return reshape(out, tuple(final_shape))



# -- the rows of a scan that stops early ----------------------------------------------------------
# A RunTracer is a buffer of `bound` rows of which the first `n` ran (tracer.py). Operations
# along the rows see those `n`: reductions over them mask the others with their identity,
# elementwise results keep `n`, xs[-k] reads row n - k; everything else is an error.

def _holds_run(values):
    return any(isinstance(x, RunTracer) or
               (isinstance(x, (list, tuple)) and _holds_run(x)) for x in values)


def _run_of(values):
    """The row count shared by the RunTracers among `values`."""
    runs = [x for x in values if isinstance(x, RunTracer)]
    n = runs[0].n
    if any(r.n is not n for r in runs[1:]):
        raise TracingError("arithmetic between the rows of two scans that stop early (ns.until)",
                           "their numbers of rows are run-time values that may differ; "
                           "combine xs[-1] or reductions instead")
    return n


def _unrun(x):
    return x.buffer if isinstance(x, RunTracer) else x


def _run_elementwise(compute, values, what):
    """`compute` on the buffers; the result keeps the rows when the rows stay its first axis."""
    n = _run_of(values)
    plain = [_unrun(x) for x in values]
    out = compute(*plain)
    nd = _ndim(out)
    for x in values:
        if isinstance(x, RunTracer) and x.ndim != nd:
            raise TracingError(f"{what} broadcasting the rows of a scan that stops early "
                               f"(ns.until) into a later axis", RunTracer.SUPPORTED)
        if not isinstance(x, RunTracer) and _ndim(x) == nd and _shape(x)[0] != 1:
            raise ValueError(f"{what}: operands could not be broadcast together: the rows of "
                             f"a scan that stops early have a run-time length, the other "
                             f"operand {_shape(x)[0]} rows")
    return RunTracer(out.trace, out.var, n)


def run_ufunc(ufunc, method, inputs, kwargs):
    if ufunc is np.matmul:
        a, b = inputs
        if isinstance(a, RunTracer) and not isinstance(b, RunTracer) and a.ndim == 2:
            return _run_elementwise(lambda a: matmul(a, b), [a], "matmul")
        raise TracingError("matmul contracting the rows of a scan that stops early (ns.until)",
                           "mask them with np.where(np.arange(bound)[:, None] < xs.shape[0], "
                           "...) or reduce them first; xs @ W is supported")
    return _run_elementwise(lambda *xs: apply_ufunc(ufunc, method, xs, kwargs), inputs,
                            f"np.{ufunc.__name__}")


# reductions: identity of the masked rows (by dtype kind) for each reduction
_MASK_FILL = {"reduce_sum": lambda dt: 0, "reduce_prod": lambda dt: 1,
              "reduce_all": lambda dt: True, "reduce_any": lambda dt: False,
              "reduce_max": lambda dt: -np.inf if dt.kind == "f" else
              (False if dt.kind == "b" else np.iinfo(dt).min),
              "reduce_min": lambda dt: np.inf if dt.kind == "f" else
              (True if dt.kind == "b" else np.iinfo(dt).max)}
_MASK_FILL["argmax"] = _MASK_FILL["reduce_max"]
_MASK_FILL["argmin"] = _MASK_FILL["reduce_min"]


def _masked(x: RunTracer, fill):
    """x's buffer with the rows past those that ran replaced by `fill`."""
    rows = constant(np.arange(x.bound).reshape((-1,) + (1,) * (x.ndim - 1)))
    return where(np.less(rows, x.n), x.buffer, np.asarray(fill, x.dtype)[()])


def _along_rows(out, x: RunTracer):
    """`out`, a reduction of x's buffer over axes other than the rows: it keeps x's rows."""
    return RunTracer(out.trace, out.var, x.n)


def _run_reduce(prim, x, axis=None, keepdims=False, dtype=None, **unsupported):
    _reject(prim, unsupported)
    if dtype is not None:
        x = x.astype(dtype)
    axes = _norm_axes(axis, x.ndim)
    if 0 not in axes:
        return _along_rows(_reduce(prim, x.buffer, axes, keepdims, dtype), x)
    return _reduce(prim, _masked(x, _MASK_FILL[prim](x.dtype)), axes, keepdims, dtype)


def _run_mean(x, axis=None, dtype=None, keepdims=False, **unsupported):
    _reject("np.mean", unsupported)
    x = x.astype(dtype) if dtype is not None else x
    if x.dtype.kind in "biu":
        x = x.astype(np.float64)
    axes = _norm_axes(axis, x.ndim)
    if 0 not in axes:
        return _along_rows(mean(x.buffer, axes, keepdims=keepdims), x)
    total = _reduce("reduce_sum", _masked(x, 0), axes, keepdims)
    others = int(np.prod([x.var.shape[a] for a in axes if a != 0]))
    return np.true_divide(total, astype(x.n, x.dtype) * others)


def _run_arg(prim, x, axis=None, keepdims=False, **unsupported):
    if axis is not None and 0 not in _norm_axes(axis, x.ndim):
        return _along_rows(_arg(prim, x.buffer, axis, keepdims, **unsupported), x)
    return _arg(prim, _masked(x, _MASK_FILL[prim](x.dtype)), axis, keepdims, **unsupported)


def _run_cumsum(x, axis=None, dtype=None, **unsupported):
    if axis is None and x.ndim != 1:
        raise TracingError("np.cumsum without axis of the rows of a scan that stops early "
                           "(ns.until)", "give axis=0")
    return _run_elementwise(lambda b: cumsum(b, 0 if axis is None else axis, dtype,
                                             **unsupported), [x], "np.cumsum")


def _run_like(fill):
    def like(a, *args, **kwargs):
        out = HANDLERS[fill](a.buffer, *args, **kwargs)
        return RunTracer(a.trace, out.var, a.n) if isinstance(out, Tracer) and \
            _shape(out) == _shape(a.buffer) else out
    return like


RUN_HANDLERS = {
    **_reductions(_run_reduce, _run_mean, _run_arg),
    np.cumsum: _run_cumsum,
    np.where: lambda c, x, y: _run_elementwise(where, [c, x, y], "np.where"),
    np.clip: clip,
    np.dot: lambda a, b, out=None: run_ufunc(np.matmul, "__call__", (a, b), {}),
    np.matmul: lambda a, b, **k: run_ufunc(np.matmul, "__call__", (a, b), {}),
    np.copy: lambda a, order="K", subok=False: a,
    np.shape: lambda a: a.shape,
    np.ndim: lambda a: a.ndim,
    np.zeros_like: _run_like(np.zeros_like), np.ones_like: _run_like(np.ones_like),
    np.empty_like: _run_like(np.empty_like), np.full_like: _run_like(np.full_like),
}
for _name in ("amax", "amin"):
    if hasattr(np, _name):
        RUN_HANDLERS[getattr(np, _name)] = RUN_HANDLERS[np.max if _name == "amax" else np.min]


def run_function(func, args, kwargs):
    handler = RUN_HANDLERS.get(func)
    if handler is None:
        raise TracingError(f"np.{getattr(func, '__name__', func)} of the rows of a scan that "
                           f"stops early (ns.until)", RunTracer.SUPPORTED)
    return handler(*args, **kwargs)


def _run_index(x: RunTracer, k):
    """The row for index `k` (an int: negative counts from the last row that ran)."""
    if isinstance(k, Tracer):
        return getitem(x.buffer, k)
    k = int(k)
    if k >= 0:
        return getitem(x.buffer, k)
    return getitem(x.buffer, np.maximum(x.n + k, 0))


def run_getitem(x: RunTracer, key):
    key = key if isinstance(key, tuple) else (key,)
    if key and key[0] is Ellipsis:
        key = (slice(None),) * (x.ndim - (len(key) - 1)) + key[1:]
    if not key:
        return x
    first, rest = key[0], key[1:]
    if first is None or isinstance(first, (list, np.ndarray, bool, np.bool_)):
        raise TracingError(f"indexing the rows of a scan that stops early (ns.until) by "
                           f"{type(first).__name__}", RunTracer.SUPPORTED)
    if not isinstance(first, slice):
        row = _run_index(x, first)
        return getitem(row, rest) if rest else row
    start, stop, step = first.start, first.stop, first.step
    if step not in (None, 1) or (start is not None and start < 0):
        raise TracingError(f"the slice [{first.start}:{first.stop}:{first.step}] of the rows "
                           f"of a scan that stops early (ns.until)",
                           "supported: xs[a:b] with a >= 0 and step 1 (b may be negative)")
    start = start or 0
    n = x.n
    if stop is not None:
        n = np.minimum(n, stop) if stop >= 0 else n + stop
    n = np.maximum(n - start, 0) if start else np.maximum(n, 0)
    buf = getitem(x.buffer, (slice(start, None),) + (slice(None),) * (x.ndim - 1))
    out = getitem(buf, (slice(None),) + rest) if rest else buf
    return RunTracer(out.trace, out.var, n)


# -- names that NumPy does not dispatch on tracers ----------------------------------------------
# np.full(shape, traced) and np.array([traced, ...]) never reach __array_function__, and
# scipy.special.logsumexp is not a ufunc. While a function is traced, the modules it names in
# its globals and closure are replaced by these views (see trace.with_traced_captures).

def _contains_tracer(x):
    if isinstance(x, Tracer):
        return True
    return isinstance(x, (list, tuple)) and any(_contains_tracer(i) for i in x)


def _array(a, dtype=None, *args, **kwargs):
    if isinstance(a, (list, tuple)) and _contains_tracer(a):
        a = stack([_array(x) for x in a])
    if isinstance(a, Tracer):
        return astype(a, dtype) if dtype is not None else a
    return constant(_REAL["array"](a, dtype, *args, **kwargs))


def _asarray(a, dtype=None, *args, **kwargs):
    if _contains_tracer(a):
        return _array(a, dtype)
    out = _REAL["asarray"](a, dtype, *args, **kwargs)
    return constant(out) if out is not a else out


def _full(shape, fill_value, dtype=None, *args, **kwargs):
    if isinstance(fill_value, Tracer):
        return broadcast_to(astype(fill_value, dtype or fill_value.dtype), shape)
    return constant(_REAL["full"](shape, fill_value, dtype, *args, **kwargs))


def _creating(f):
    """np.zeros, np.eye, ... called while tracing: their results are constants of the trace."""
    def create(*args, **kwargs):
        return constant(f(*args, **kwargs))
    create.__name__ = f.__name__
    return create


def _refused(op, real=None):
    """A stand-in for `op` in traced code: a call raises `untraced(op)`; with `real` (a getter
    of the function: a SciPy function, an np.vectorize), only a call with a traced value among
    its arguments does, others are the real function's."""
    def call(*args, **kwargs):
        if real is None or _contains_tracer(args) or _contains_tracer(list(kwargs.values())):
            raise untraced(op)
        return real()(*args, **kwargs)
    call.__name__ = op.rsplit(".", 1)[-1]
    return call


class _Draws:
    """np.random, or a NumPy Generator or RandomState, as traced code sees it: its functions
    raise (their draws would be constants of the trace, the same at every step and call); its
    classes and other attributes are NumPy's."""

    def __init__(self, target, name):
        self._target, self._name = target, name

    def __getattr__(self, attr):
        value = getattr(self._target, attr)
        if callable(value) and not isinstance(value, type):
            return _refused(f"{self._name}.{attr}")
        return value

    def __repr__(self):
        return f"<traced view of {self._name}>"


def _vectorize(pyfunc=np._NoValue, *args, **kwargs):
    real = np.vectorize(pyfunc, *args, **kwargs)
    return real if pyfunc is np._NoValue else _refused("np.vectorize", lambda: real)


_REAL = {"array": np.array, "asarray": np.asarray, "full": np.full}
NUMPY_OVERRIDES = {"array": _array, "asarray": _asarray, "asanyarray": _asarray,
                   "ascontiguousarray": _asarray, "full": _full,
                   "random": _Draws(np.random, "np.random"), "vectorize": _vectorize,
                   **{name: _creating(getattr(np, name)) for name in (
                       "zeros", "ones", "empty", "eye", "identity", "arange", "linspace",
                       "tri", "diag")}}


class TracingView:
    """A module as a traced function sees it: the same attributes, with some overridden."""

    def __init__(self, module, overrides):
        self._module = module
        self._overrides = overrides

    def __getattr__(self, name):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._module, name)

    def __repr__(self):
        return f"<traced view of {self._module.__name__}>"


def traced_replacement(value):
    """What a traced function should see instead of `value` (None: `value` itself)."""
    if value is np:
        return _VIEWS["numpy"]
    if value is np.full or value is np.array or value is np.asarray:
        return NUMPY_OVERRIDES[value.__name__]
    if value is np.random:
        return NUMPY_OVERRIDES["random"]
    if isinstance(value, (np.random.Generator, np.random.RandomState)):
        return _Draws(value, "np.random." + type(value).__name__)
    if isinstance(getattr(value, "__self__", None), np.random.RandomState):
        return _refused(f"np.random.{value.__name__}")     # from numpy.random import normal
    if isinstance(value, np.vectorize):
        return _refused("np.vectorize", lambda: value)
    # a function can only name scipy once its user imported it: never import it here
    scipy = sys.modules.get("scipy")
    if scipy is None:
        return None
    if value is scipy:
        return _scipy_views()["scipy"]
    for sub, overrides in SCIPY_OVERRIDES.items():
        module = sys.modules.get(f"scipy.{sub}")
        if module is None:
            continue
        if value is module:
            return _scipy_views()[sub]
        for name, traced in overrides.items():
            if value is getattr(module, name, None):
                return traced
    return None


def _scipy_refused(sub, names):
    """Stand-ins for the functions `names` of scipy.`sub` that numbascan does not trace: a
    call on traced values names the function (and what to use instead), where SciPy's own
    conversion of a tracer would name only np.asarray."""
    def real(name):
        return lambda: getattr(sys.modules[f"scipy.{sub}"], name)
    return {name: _refused(f"scipy.{sub}.{name}", real(name)) for name in names}


# scipy's submodules with functions that do not dispatch on tracers, and their traced versions
SCIPY_OVERRIDES = {
    "special": {**_scipy_refused("special", ("softmax", "log_softmax")),
                "logsumexp": logsumexp},
    "linalg": {**_scipy_refused("linalg", (
        "inv", "solve", "det", "cholesky", "cho_factor", "lu_factor", "lu_solve", "lu", "qr",
        "pinv", "lstsq", "svd", "svdvals", "eig", "eigvals", "eigh", "eigvalsh", "expm",
        "sqrtm", "logm")), **SCIPY_LINALG},
}


def _scipy_views():
    """Views of scipy and of those submodules its user imported (more may come: one entry
    per set). An entry is stored whole: another thread may be reading the table."""
    loaded = tuple(sub for sub in SCIPY_OVERRIDES if f"scipy.{sub}" in sys.modules)
    views = _VIEWS.get(loaded)
    if views is None:
        subs = {sub: TracingView(sys.modules[f"scipy.{sub}"], SCIPY_OVERRIDES[sub])
                for sub in loaded}
        views = {**subs, "scipy": TracingView(sys.modules["scipy"], subs)}
        _VIEWS[loaded] = views
    return views


_VIEWS = {"numpy": TracingView(np, NUMPY_OVERRIDES)}


# what the tracer's dunders and methods call (trace/tracer.py reads this table)
NUMPY_API.update(apply_function=apply_function, apply_ufunc=apply_ufunc, astype=astype,
                 getitem=getitem)
