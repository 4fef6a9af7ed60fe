"""Stage: tracing — NumPy's structural functions as compositions of traced operations.

np.split and its family, einsum, diag/diagonal/trace/triu/tril, cross, kron, flip, roll,
take_along_axis, moveaxis, linalg.norm, sort and argsort are written here in terms of operations
that already trace: basic slicing (negative steps included), reshape, transpose, concatenate,
stack, elementwise arithmetic and comparisons, np.where with constant or traced masks,
reductions and tensordot (and, for the matrix norms of singular values, np.linalg.eigvalsh).
None of them is a primitive: the derivative rules and the CPU and CUDA code generators see only
what these functions are made of, so they need no rules of their own.

Every function is called by `numpy_api.apply_function` through NumPy's `__array_function__`
protocol (numpy_api.py adds `HANDLERS` below to its own), with at least one traced argument.
Arguments that are NumPy arrays become inputs of the trace (`_arr`), read at each call like any
array the user's function names. The functions call NumPy's own entry points (`np.reshape`,
`np.sum`, ...), which dispatch back to numpy_api on tracers, so this module never imports
numpy_api. Arrays made here from shapes alone (masks, index ranges, zeros) are marked as
constants of the trace with `constant`.

Selections by a mask (take_along_axis, sort) are `np.where(mask, x, 0)` summed over the
selected-from axis: exactly one term of each sum is x, the others are zeros (never `mask * x`,
whose 0 * inf would turn an unselected infinity into a NaN). Their work and memory grow as the
product of the two axes' lengths: meant for the small sizes of a step. np.sort is such a
selection by ranks counted from all pairwise comparisons, rather than a new primitive or a
sorting network: it has no size limit, follows NumPy's stable order (NaNs last) and its
derivative is the permutation's.
"""

from __future__ import annotations

import numpy as np

from ..core.context import current_trace
from .tracer import Tracer, TracingError, constant


# -- helpers ---------------------------------------------------------------------------------------

def _arr(x):
    """x as a tracer: a NumPy array (or anything np.asarray takes) becomes an input of the trace,
    so that an array the user's function names is read at each call, as every such array is
    (trace/tracer.py), and the operations below trace on it rather than run on its values."""
    if isinstance(x, Tracer):
        return x
    if isinstance(x, (list, tuple)) and any(isinstance(i, Tracer) for i in x):
        return np.stack(x)
    trace = current_trace()
    if trace is None:                      # not reached from apply_function; kept for safety
        return np.asarray(x)
    source = x if isinstance(x, np.ndarray) else constant(np.asarray(x))
    return Tracer(trace, trace.lift(source))


def _axis(axis, ndim):
    """`axis` (an int, possibly negative) as an index in range(ndim), or NumPy's AxisError."""
    if isinstance(axis, Tracer):
        raise TracingError("a traced axis", "axes must be Python ints")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim


def _axes(axis, ndim):
    """`axis` (None: all; an int; a sequence of ints) as a tuple of distinct axes, in order."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(_axis(a, ndim) for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))
    if len(set(axes)) != len(axes):
        raise ValueError("repeated axis")
    return axes


def _along(x, axis, key):
    """x[..., key, ...] with `key` (a slice or an int) on `axis`."""
    return x[(slice(None),) * axis + (key,)]


def _zero(x):
    """A zero of x's dtype (a literal: it does not change the dtype of np.where's result)."""
    return x.dtype.type(0)


def _static_int(value, what):
    if isinstance(value, Tracer):
        raise TracingError(f"{what} given as a traced value", f"{what} must be a Python int "
                           f"(the shapes of a traced function are static)")
    return int(value)


def _select(mask, x, axis):
    """The element of `x` where `mask` holds, along `axis` (at most one per position); zero
    where none holds. `mask` and `x` broadcast together."""
    if x.dtype == np.bool_:
        return np.any(np.logical_and(mask, x), axis=axis)
    # the sum of small integers is an int64 (numbascan's np.sum ignores dtype= there): back
    return np.sum(np.where(mask, x, _zero(x)), axis=axis).astype(x.dtype)


# -- moving axes ----------------------------------------------------------------------------------

def moveaxis(a, source, destination):
    """np.moveaxis: a transpose."""
    a = _arr(a)
    n = a.ndim
    src = [_axis(s, n) for s in (source if isinstance(source, (tuple, list)) else (source,))]
    dst = [_axis(d, n) for d in (destination if isinstance(destination, (tuple, list))
                                 else (destination,))]
    if len(src) != len(dst):
        raise ValueError("`source` and `destination` arguments must have the same number of "
                         "elements")
    order = [i for i in range(n) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return np.transpose(a, order)


# -- splitting ------------------------------------------------------------------------------------

def _split_bounds(n, indices_or_sections, equal):
    """[(start, stop)] of the pieces of an axis of length n (Python slice bounds)."""
    if isinstance(indices_or_sections, Tracer):
        raise TracingError("np.split at traced indices", "the pieces' sizes must be static")
    if np.ndim(indices_or_sections) == 0:
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ValueError("number sections must be larger than 0.")
        if equal and n % sections:
            raise ValueError("array split does not result in an equal division")
        each, extra = divmod(n, sections)
        sizes = [each + 1] * extra + [each] * (sections - extra)
        bounds = [0] + [int(b) for b in np.cumsum(sizes)]
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    return list(zip(bounds[:-1], bounds[1:]))


def array_split(ary, indices_or_sections, axis=0):
    """np.array_split: static slices along `axis`."""
    x = _arr(ary)
    axis = _axis(axis, x.ndim)
    return [_along(x, axis, slice(start, stop))
            for start, stop in _split_bounds(x.shape[axis], indices_or_sections, False)]


def split(ary, indices_or_sections, axis=0):
    """np.split: as array_split, but equal sections must divide the axis."""
    x = _arr(ary)
    axis = _axis(axis, x.ndim)
    return [_along(x, axis, slice(start, stop))
            for start, stop in _split_bounds(x.shape[axis], indices_or_sections, True)]


def hsplit(ary, indices_or_sections):
    x = _arr(ary)
    if x.ndim == 0:
        raise ValueError("hsplit only works on arrays of 1 or more dimensions")
    return split(x, indices_or_sections, axis=1 if x.ndim > 1 else 0)


def vsplit(ary, indices_or_sections):
    x = _arr(ary)
    if x.ndim < 2:
        raise ValueError("vsplit only works on arrays of 2 or more dimensions")
    return split(x, indices_or_sections, axis=0)


def dsplit(ary, indices_or_sections):
    x = _arr(ary)
    if x.ndim < 3:
        raise ValueError("dsplit only works on arrays of 3 or more dimensions")
    return split(x, indices_or_sections, axis=2)


# -- diagonals and triangles ----------------------------------------------------------------------

def diagonal(a, offset=0, axis1=0, axis2=1):
    """np.diagonal: the (axis1, axis2) plane moved last and flattened, then a slice of stride
    m + 1 (element (i, i + offset) of an n x m plane is its element i * (m + 1) + offset)."""
    x = _arr(a)
    offset = _static_int(offset, "the diagonal's offset")
    if x.ndim < 2:
        raise ValueError("diag requires an array of at least two dimensions")
    ax1, ax2 = _axis(axis1, x.ndim), _axis(axis2, x.ndim)
    if ax1 == ax2:
        raise ValueError("axis1 and axis2 cannot be the same")
    x = moveaxis(x, (ax1, ax2), (-2, -1))
    n, m = x.shape[-2:]
    if offset >= 0:
        length, start = max(0, min(n, m - offset)), offset
    else:
        length, start = max(0, min(n + offset, m)), -offset * m
    flat = np.reshape(x, x.shape[:-2] + (n * m,))
    if length == 0:
        return flat[..., 0:0]
    return flat[..., start:start + (length - 1) * (m + 1) + 1:m + 1]


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    """np.trace: the sum of the diagonal."""
    if out is not None:
        raise TracingError("np.trace with out=")
    return np.sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


def diag(v, k=0):
    """np.diag: a matrix's diagonal, or the matrix with a vector on its k-th diagonal (the
    vector, padded with |k| zeros, broadcast along rows (k >= 0) or columns and kept where
    the constant mask np.eye(N, k=k) is set)."""
    x = _arr(v)
    k = _static_int(k, "the diagonal's offset")
    if x.ndim == 2:
        return diagonal(x, k)
    if x.ndim != 1:
        raise ValueError("Input must be 1- or 2-d.")
    size = x.shape[0] + abs(k)
    if k:
        x = np.concatenate([x, constant(np.zeros(abs(k), x.dtype))])
    values = x[:, None] if k >= 0 else x[None, :]
    return np.where(constant(np.eye(size, k=k, dtype=bool)), values, _zero(x))


def _triangle(m, k, lower):
    x = _arr(m)
    k = _static_int(k, "the diagonal's offset")
    if x.ndim == 0:
        raise ValueError("np.triu/np.tril need an array of at least one dimension")
    rows, cols = x.shape[-2:] if x.ndim >= 2 else (x.shape[-1], x.shape[-1])
    mask = np.tri(rows, cols, k if lower else k - 1, dtype=bool)
    return np.where(constant(mask if lower else ~mask), x, _zero(x))


def triu(m, k=0):
    """np.triu: elements on and above the k-th diagonal (of the last two axes) kept."""
    return _triangle(m, k, lower=False)


def tril(m, k=0):
    """np.tril: elements on and below the k-th diagonal (of the last two axes) kept."""
    return _triangle(m, k, lower=True)


# -- products -------------------------------------------------------------------------------------

def _times(p, q):
    return None if p is None or q is None else p * q


def _minus(p, q):
    if q is None:
        return p
    return -q if p is None else p - q


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """np.cross of 3-vectors (or 2-vectors: a missing third component is zero; two 2-vectors
    give the scalar third component) along the given axes, broadcasting the others."""
    if axis is not None:
        axisa = axisb = axisc = axis
    x, y = _arr(a), _arr(b)
    x = moveaxis(x, _axis(axisa, x.ndim), -1)
    y = moveaxis(y, _axis(axisb, y.ndim), -1)
    if x.shape[-1] not in (2, 3) or y.shape[-1] not in (2, 3):
        raise ValueError("incompatible dimensions for cross product\n"
                         "(dimension must be 2 or 3)")
    a0, a1, a2 = (x[..., i] if i < x.shape[-1] else None for i in range(3))
    b0, b1, b2 = (y[..., i] if i < y.shape[-1] else None for i in range(3))
    c2 = a0 * b1 - a1 * b0
    if a2 is None and b2 is None:
        return c2
    c0 = _minus(_times(a1, b2), _times(a2, b1))
    c1 = _minus(_times(a2, b0), _times(a0, b2))
    c = np.stack([c0, c1, c2], axis=-1)        # all three of the operands' broadcast shape
    return moveaxis(c, -1, _axis(axisc, c.ndim))


def kron(a, b):
    """np.kron: a with a unit axis after each of its axes times b with one before each of its
    axes, reshaped: element (i0 * n0 + j0, ...) = a[i0, ...] * b[j0, ...]."""
    x, y = _arr(a), _arr(b)
    nd = max(x.ndim, y.ndim)
    sa = (1,) * (nd - x.ndim) + tuple(x.shape)
    sb = (1,) * (nd - y.ndim) + tuple(y.shape)
    x = np.reshape(x, tuple(s for d in sa for s in (d, 1)))
    y = np.reshape(y, tuple(s for d in sb for s in (1, d)))
    return np.reshape(x * y, tuple(p * q for p, q in zip(sa, sb)))


def _einsum_labels(subscripts, shapes):
    """(input labels per operand, output labels) of an einsum with explicit letters."""
    subs = subscripts.replace(" ", "")
    if "." in subs:
        raise TracingError("np.einsum with an ellipsis ('...')", "write a label for every axis")
    if "->" in subs:
        ins, out = subs.split("->")
    else:                                 # NumPy's implicit output: letters used once, sorted
        ins = subs
        letters = ins.replace(",", "")
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    ins = ins.split(",")
    if len(ins) != len(shapes):
        raise ValueError(f"np.einsum: {len(ins)} operand subscripts in {subscripts!r} for "
                         f"{len(shapes)} operands")
    sizes = {}
    for k, (labels, shape) in enumerate(zip(ins, shapes)):
        if not all(c.isalpha() for c in labels):
            raise ValueError(f"np.einsum: invalid subscript in {labels!r}: only letters")
        if len(labels) != len(shape):
            raise ValueError(f"np.einsum: operand {k} has {len(shape)} dimensions but "
                             f"{len(labels)} subscripts ({labels!r})")
        for c, s in zip(labels, shape):
            if sizes.setdefault(c, s) != s:
                raise ValueError(f"np.einsum: label {c!r} has size {sizes[c]} in one place "
                                 f"and {s} in another")
    for c in out:
        if c not in sizes:
            raise ValueError(f"np.einsum: output subscript {c!r} appears in no operand")
        if out.count(c) > 1:
            raise ValueError(f"np.einsum: output subscript {c!r} appears more than once")
    return [list(labels) for labels in ins], list(out)


def _einsum_align(labels, x, order):
    """x (axes `labels`) transposed to the order of `order` with unit axes for the labels of
    `order` it does not have."""
    mine = [c for c in order if c in labels]
    x = np.transpose(x, [labels.index(c) for c in mine])
    return np.reshape(x, tuple(x.shape[mine.index(c)] if c in mine else 1 for c in order))


def einsum(*operands, out=None, dtype=None, order="K", casting="safe", optimize=False):
    """np.einsum with subscripts as a string: repeated labels of one operand become diagonals,
    labels of one operand only are summed first, then the operands combine left to right (a
    tensordot when no shared label survives, else a broadcast product summed over the shared
    labels no later operand or the output needs), and a final transpose orders the output."""
    if out is not None:
        raise TracingError("np.einsum with out=")
    if not operands or not isinstance(operands[0], str):
        raise TracingError("np.einsum with operands and sublists of axes",
                           "give the subscripts as a string, e.g. np.einsum('ij,jk->ik', a, b)")
    subscripts, xs = operands[0], [_arr(x) for x in operands[1:]]
    if dtype is not None:
        xs = [x.astype(dtype) for x in xs]
    in_labels, out_labels = _einsum_labels(subscripts, [x.shape for x in xs])
    terms = []
    for labels, x in zip(in_labels, xs):
        labels = list(labels)
        while len(set(labels)) < len(labels):       # a repeated label: its diagonal, moved last
            c = next(c for c in labels if labels.count(c) > 1)
            p = labels.index(c)
            q = labels.index(c, p + 1)
            x = diagonal(x, 0, p, q)
            labels = [d for i, d in enumerate(labels) if i not in (p, q)] + [c]
        terms.append([labels, x])
    for k, (labels, x) in enumerate(terms):          # labels no other operand nor the output has
        others = set(out_labels).union(*(t[0] for j, t in enumerate(terms) if j != k))
        alone = [i for i, c in enumerate(labels) if c not in others]
        if alone:
            terms[k] = [[c for c in labels if c in others], np.sum(x, axis=tuple(alone))]
    while len(terms) > 1:
        (la, a), (lb, b) = terms[0], terms[1]
        keep = set(out_labels).union(*(t[0] for t in terms[2:]))
        shared = [c for c in la if c in lb]
        summed = [c for c in shared if c not in keep]
        if summed and len(summed) == len(shared):
            x = np.tensordot(a, b, axes=([la.index(c) for c in summed],
                                         [lb.index(c) for c in summed]))
            labels = [c for c in la if c not in summed] + [c for c in lb if c not in summed]
        else:
            union = la + [c for c in lb if c not in la]
            x = _einsum_align(la, a, union) * _einsum_align(lb, b, union)
            if summed:
                x = np.sum(x, axis=tuple(union.index(c) for c in summed))
            labels = [c for c in union if c not in summed]
        terms = [[labels, x]] + terms[2:]
    labels, x = terms[0]
    return np.transpose(x, [labels.index(c) for c in out_labels])


# -- reordering -----------------------------------------------------------------------------------

def flip(m, axis=None):
    """np.flip: a slice of step -1 along each axis."""
    x = _arr(m)
    axes = _axes(axis, x.ndim)
    if not axes:
        return x
    return x[tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(x.ndim))]


def fliplr(m):
    x = _arr(m)
    if x.ndim < 2:
        raise ValueError("Input must be >= 2-d.")
    return flip(x, 1)


def flipud(m):
    x = _arr(m)
    if x.ndim < 1:
        raise ValueError("Input must be >= 1-d.")
    return flip(x, 0)


def roll(a, shift, axis=None):
    """np.roll: the last `shift` elements of each axis concatenated before the others."""
    x = _arr(a)
    if axis is None:
        return np.reshape(roll(np.ravel(x), shift, 0), x.shape)
    shifts = shift if isinstance(shift, (tuple, list)) else (shift,)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    if len(axes) == 1:
        axes = axes * len(shifts)
    if len(shifts) != len(axes):
        raise ValueError("'shift' and 'axis' should be scalars or 1D sequences")
    total = {}
    for s, ax in zip(shifts, axes):
        ax = _axis(ax, x.ndim)
        total[ax] = total.get(ax, 0) + _static_int(s, "np.roll's shift")
    for ax, s in sorted(total.items()):
        n = x.shape[ax]
        s = s % n if n else 0
        if s:
            x = np.concatenate([_along(x, ax, slice(n - s, None)),
                                _along(x, ax, slice(0, n - s))], axis=ax)
    return x


def take_along_axis(arr, indices, axis=-1):
    """np.take_along_axis: out[..., k, ...] = arr[..., indices[..., k, ...], ...] as a mask
    selection (`_select`). The indices may be traced; an array of them is read at each call,
    like any array the function names, and checked against the axis now: an index out of
    range at run time selects zero."""
    x = _arr(arr)
    if axis is None:
        x, axis = np.ravel(x), 0
    if not isinstance(indices, Tracer):                # checked now, read at each call
        static = np.asarray(indices)
        if static.dtype.kind in "iu" and static.ndim == x.ndim and static.size:
            n = x.shape[_axis(axis, x.ndim)]
            if static.min() < -n or static.max() >= n:
                bad = static.min() if static.min() < -n else static.max()
                raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
    ix = _arr(indices)
    if ix.dtype.kind not in "iu":
        raise IndexError("`indices` must be an integer array")
    if ix.ndim != x.ndim:
        raise ValueError("`indices` and `arr` must have the same number of dimensions")
    axis = _axis(axis, x.ndim)
    n = x.shape[axis]
    ix = np.where(ix < 0, ix + n, ix)
    x, ix = moveaxis(x, axis, -1), moveaxis(ix, axis, -1)
    hit = np.equal(ix[..., :, None], constant(np.arange(n)))          # (..., k, i)
    return moveaxis(_select(hit, x[..., None, :], -1), -1, axis)


def _sort_ranks(a, axis):
    """(x with `axis` moved last, the mask hit[..., k, i]: element i has rank k). Element i's
    rank is the number of elements j that precede it in NumPy's stable order, NaNs last:
    an earlier j (j < i) precedes i unless it is larger, a later one only if it is smaller."""
    x = _arr(a)
    if axis is None:
        x, axis = np.ravel(x), 0
    x = moveaxis(x, _axis(axis, x.ndim), -1)
    n = x.shape[-1]
    xi, xj = x[..., :, None], x[..., None, :]                          # (..., i, j)
    j_le_i, i_le_j = np.less_equal(xj, xi), np.less_equal(xi, xj)
    if x.dtype.kind == "f":                  # NaN above everything: x <= NaN, NaN <= NaN
        nan = np.isnan(x)
        j_le_i = np.logical_or(j_le_i, nan[..., :, None])
        i_le_j = np.logical_or(i_le_j, nan[..., None, :])
    earlier = constant(np.tri(n, n, -1, dtype=bool))                     # j < i
    rank = np.sum(np.where(earlier, j_le_i, np.logical_not(i_le_j)), axis=-1)
    return x, np.equal(rank[..., None, :], constant(np.arange(n)[:, None]))   # (..., k, i)


def sort(a, axis=-1, kind=None, order=None, stable=None):
    """np.sort by ranks (`_sort_ranks`): output k selects the element of rank k. The selection
    is a mask built from comparisons, so the derivative flows through the permutation exactly
    (ties keep their order: each tied output's derivative is that of the element NumPy puts
    there). O(n^2) work and memory along the axis."""
    if order is not None:
        raise TracingError("np.sort with order=", "structured arrays are not traced")
    x, hit = _sort_ranks(a, axis)
    out = _select(hit, x[..., None, :], -1)
    return moveaxis(out, -1, x.ndim - 1 if axis is None else _axis(axis, x.ndim))


def argsort(a, axis=-1, kind=None, order=None, stable=None):
    """np.argsort (stable): output k is the index of the element of rank k (`_sort_ranks`)."""
    if order is not None:
        raise TracingError("np.argsort with order=", "structured arrays are not traced")
    x, hit = _sort_ranks(a, axis)
    out = _select(hit, constant(np.arange(x.shape[-1])), -1)
    return moveaxis(out, -1, x.ndim - 1 if axis is None else _axis(axis, x.ndim))


# -- norms ----------------------------------------------------------------------------------------

def _vector_norm(x, ord, axis, keepdims):
    if ord is None or ord == 2:
        return np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))
    if isinstance(ord, str):
        raise ValueError(f"Invalid norm order '{ord}' for vectors")
    if ord == np.inf:
        return np.max(np.abs(x), axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return np.min(np.abs(x), axis=axis, keepdims=keepdims)
    if ord == 0:
        return np.sum(np.not_equal(x, 0), axis=axis, keepdims=keepdims).astype(x.dtype)
    if ord == 1:
        return np.sum(np.abs(x), axis=axis, keepdims=keepdims)
    return np.power(np.sum(np.power(np.abs(x), ord), axis=axis, keepdims=keepdims), 1.0 / ord)


def _singular_value_norm(x, ord):
    """The largest singular value of a 2-d x (ord=2), the smallest (-2) or their sum ('nuc'),
    from the eigenvalues (np.linalg.eigvalsh) of the smaller of the Gram matrices x^T x and
    x x^T: a singular value is the square root of one, clipped at 0 (rounding can make the
    smallest slightly negative). The largest is accurate to rounding; a small one s is off by
    about eps * max(s)^2 / s. Derivatives need distinct, nonzero singular values. Which two
    axes are the matrix's does not matter (x and x.T have the same singular values)."""
    if x.ndim != 2:
        raise TracingError(f"np.linalg.norm with ord={ord!r} over two axes of an array of "
                           f"shape {tuple(x.shape)}", "numbascan computes it for one 2-d "
                           "matrix; for a batch of matrices, map over it with ns.vmap or ns.map")
    rows, cols = x.shape
    w = np.linalg.eigvalsh(x.T @ x if cols <= rows else x @ x.T)     # ascending
    if ord == "nuc":
        return np.sum(np.sqrt(np.maximum(w, 0.0)))
    return np.sqrt(np.maximum(w[-1 if ord == 2 else 0], 0.0))


def _matrix_norm(x, ord, row, col, keepdims):
    if ord is None or ord in ("fro", "f"):
        out = np.sqrt(np.sum(x * x, axis=(row, col)))
    elif ord in (1, -1):
        sums = np.sum(np.abs(x), axis=row)
        out = (np.max if ord == 1 else np.min)(sums, axis=col - 1 if col > row else col)
    elif ord in (np.inf, -np.inf):
        sums = np.sum(np.abs(x), axis=col)
        out = (np.max if ord == np.inf else np.min)(sums, axis=row - 1 if row > col else row)
    elif ord in (2, -2, "nuc"):
        out = _singular_value_norm(x, ord)
    else:
        raise ValueError("Invalid norm order for matrices.")
    if keepdims:
        shape = list(x.shape)
        shape[row] = shape[col] = 1
        out = np.reshape(out, tuple(shape))
    return out


def norm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: vector norms (any ord) along one axis, the Frobenius norm, the
    ord=+-1, +-inf matrix norms and (of a 2-d array) the ord=+-2 and nuclear norms over two;
    axis=None is the 2-norm of all elements when ord is None, else the vector norm of a 1-d or
    the matrix norm of a 2-d array."""
    x = _arr(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if axis is None:
        if ord is None or (ord in ("fro", "f") and x.ndim == 2) or (ord == 2 and x.ndim == 1):
            out = np.sqrt(np.sum(x * x))
            return np.reshape(out, (1,) * x.ndim) if keepdims else out
        if x.ndim not in (1, 2):
            raise ValueError("Improper number of dimensions to norm.")
        axis = tuple(range(x.ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(_axis(a, x.ndim) for a in axes)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes, keepdims)
    if len(axes) == 2:
        if axes[0] == axes[1]:
            raise ValueError("Duplicate axes given.")
        return _matrix_norm(x, ord, axes[0], axes[1], keepdims)
    raise ValueError("Improper number of dimensions to norm.")


# what numpy_api.py adds to its HANDLERS (NumPy function -> traced implementation)
HANDLERS = {
    np.moveaxis: moveaxis,
    np.split: split, np.array_split: array_split, np.hsplit: hsplit, np.vsplit: vsplit,
    np.dsplit: dsplit,
    np.diagonal: diagonal, np.trace: trace, np.diag: diag, np.triu: triu, np.tril: tril,
    np.cross: cross, np.kron: kron, np.einsum: einsum,
    np.flip: flip, np.fliplr: fliplr, np.flipud: flipud, np.roll: roll,
    np.take_along_axis: take_along_axis, np.sort: sort, np.argsort: argsort,
    np.linalg.norm: norm,
}
