"""Stage: user API — `ns.vmap` as a parallel map over a leading batch axis.

`vmap(f)(*args)` moves each batched argument's batch axis to the front and runs `f` on one
batch element per step of a map (`ns.map`) whose steps are marked independent
(`Layout.parallel`). The map's step is `f` traced once, scans inside it included, so the whole
of `f` runs per batch element inside one compiled loop: `prange` across cores on the CPU, one
thread (or one block, for larger states) per batch element in one CUDA kernel. Being a scan,
the map composes with `ns.jit` and with derivatives.

`ns.vmap` returns a `VmappedFunction`: called with a dask array among its arguments it builds a
lazy dask array instead, one batched call per block (api/dask.py). It pickles by reference to
`f` (`pickled_by_name`, api/jit.py), so a dask worker traces and compiles `f` itself.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from ..loop.args import _is_device_array, normalize
from ..runtime.cache import function_key, traced_scan
from ..trace.tracer import Tracer
from .dask import has_dask_array, map_over_blocks
from .jit import pickled_by_name
from .scan import scan


def _is_array(x):
    return isinstance(x, (np.ndarray, Tracer)) or _is_device_array(x)


def _per_argument(axes, n, what):
    if isinstance(axes, (list, tuple)):
        if len(axes) != n:
            raise ValueError(f"vmap: {what}: expected one entry per argument ({n}), found "
                             f"{len(axes)}")
        return list(axes)
    return [axes] * n


def _check_axis(axis, ndim, what):
    if axis is None:
        return None
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"vmap: {what}: expected an int or None, found {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"vmap: {what}: axis {axis} is out of range for an array with "
                         f"{ndim} dimensions")
    return int(axis) % ndim


def _move_axis(x, source, destination, what):
    if source == destination:
        return x
    if isinstance(x, Tracer):
        order = [a for a in range(x.ndim) if a != source]
        order.insert(destination, source)
        return np.transpose(x, order)
    if _is_device_array(x):
        raise ValueError(f"vmap: {what}: a device array can only have its batch axis at 0, "
                         f"found axis {source if destination == 0 else destination}")
    return np.moveaxis(x, source, destination)


def vmap(f, in_axes=0, out_axes=0):
    """`f` mapped over an axis of its arguments (`in_axes`: an int, None for an argument that
    is not batched, or one entry per argument); the results get the batch axis at `out_axes`.
    Over dask arrays: a lazy dask array, one compiled call per block (api/dask.py).
    """
    if not callable(f):
        raise TypeError(f"vmap: f: expected a callable, found {type(f).__name__}")
    return VmappedFunction(f, in_axes, out_axes)


@dataclass(frozen=True)
class Described:
    """What a batched call gives, found by tracing `f` without running or compiling it."""
    out_avals: tuple        # (dtype, shape of one batch element) per result
    kind: object            # None: f returns one array; else its tuple, list or namedtuple type
    streams: tuple          # the RandomStreams f draws from, in the order of the trace
    per_element: tuple      # counters each batch element draws from each of them


class VmappedFunction:
    """What `ns.vmap(f, in_axes, out_axes)` returns. `fn` is the batched function of NumPy
    arrays and tracers (a closure over `f` and the axes: what traces and the trace cache
    see, runtime/cache.py); a call with a dask array goes to api/dask.py."""

    def __init__(self, f, in_axes, out_axes):
        # names and docstring only: `f`'s attributes (an ns.jit function's own function) are
        # not the batched function's
        functools.update_wrapper(self, f, updated=())
        self.f, self.in_axes, self.out_axes = f, in_axes, out_axes
        self.fn = _batched_function(f, in_axes, out_axes)

    def __call__(self, *args):
        if has_dask_array(args):
            return map_over_blocks(self, args)
        return self.fn(*args)

    def __reduce__(self):
        return pickled_by_name(self) or (vmap, (self.f, self.in_axes, self.out_axes))

    def __repr__(self):
        return (f"ns.vmap({getattr(self.f, '__qualname__', type(self.f).__name__)}, "
                f"in_axes={self.in_axes!r}, out_axes={self.out_axes!r})")

    def batch_axes(self, args):
        """Each argument's batch axis, checked and made non-negative (None: not batched)."""
        return _arrange(self.f, self.in_axes, args).axes

    def result_axes(self, kind, ndims):
        """Where the batch axis goes in each result (`kind`: Described.kind; `ndims`: their
        dimensions, batch axis included)."""
        return _result_axes(self.out_axes, kind, ndims)

    def describe(self, args) -> Described:
        """The results' dtypes and element shapes, what `f` returns and the streams it draws
        from, for these arguments (values unread: zero-strided stand-ins do), from the trace
        cache or traced now; nothing is compiled. The trace is the one a call with arguments
        of the same dtypes and element shapes then takes from the trace cache."""
        batch = _arrange(self.f, self.in_axes, args)
        sa = normalize(batch.step, list(batch.seqs), None, list(batch.rest), None, -1, False,
                       batch.name, False, True, None, parallel=True)
        call = _VmapCall(batch.kind_key)
        token = _RECORDING.set(call)
        try:
            ts = traced_scan(sa, compile=False)[0]
        finally:
            _RECORDING.reset(token)
        return Described(tuple((np.dtype(d), tuple(s)) for d, s in ts.out_avals),
                         _kind_of(call, batch.kind_key), tuple(ts.streams),
                         tuple(int(n) for _, n in ts.layout.rng))


@dataclass(frozen=True)
class _Batch:
    """One call's arguments arranged for the map: batched ones with their batch axis first
    (`seqs`), whole ones (`rest`), Python values folded into the step."""
    step: object
    seqs: tuple
    rest: tuple
    axes: tuple             # per argument: its batch axis (non-negative) or None
    kind_key: object        # see _OUTPUT_KIND
    name: str


def _arrange(f, in_axes, args) -> _Batch:
    axes = _per_argument(in_axes, len(args), "in_axes")
    seqs, seq_pos, rest, rest_pos, static, sizes, checked = [], [], [], [], [], {}, []
    for i, (x, axis) in enumerate(zip(args, axes)):
        if not _is_array(x) and (isinstance(x, (list, tuple)) or np.ndim(x) > 0):
            x = np.asarray(x)
        if axis is None:
            if _is_array(x):
                rest.append(x)
                rest_pos.append(i)
            else:
                static.append((i, x))
            checked.append(None)
            continue
        if not _is_array(x) or x.ndim == 0:
            raise ValueError(f"vmap: argument {i}: in_axes asks for axis {axis}, found a "
                             f"value without axes ({type(x).__name__})")
        axis = _check_axis(axis, x.ndim, f"in_axes of argument {i}")
        seqs.append(_move_axis(x, axis, 0, f"in_axes of argument {i}"))
        seq_pos.append(i)
        sizes[i] = x.shape[axis]
        checked.append(axis)
    if not seqs:
        raise ValueError("vmap: in_axes: expected at least one batched argument, found "
                         f"none (in_axes={in_axes!r})")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"vmap: the batched arguments have different sizes along their "
                         f"in_axes: {', '.join(f'argument {i}: {n}' for i, n in sizes.items())}")
    step = _batched_step(f, (tuple(seq_pos), tuple(rest_pos), len(args)), tuple(static))
    # the trace cache's key of the step (f, what it can see, static arguments) and the
    # argument types: what decides the kind of f's result
    fkey = function_key(step)[0]
    kind_key = None if fkey is None else (fkey, tuple(
        (np.dtype(x.dtype).str, tuple(x.shape[1:])) for x in seqs) + tuple(
        (np.dtype(x.dtype).str, tuple(x.shape)) for x in rest))
    return _Batch(step, tuple(seqs), tuple(rest), tuple(checked), kind_key,
                  getattr(f, "__name__", None))


def _kind_of(call, kind_key):
    if call.ran:                      # f ran (traced, or in python mode) during this call
        return call.kind
    return _OUTPUT_KIND[kind_key]     # the step came from the trace cache


def _result_axes(out_axes, kind, ndims):
    """Each result's batch axis (`kind`: what f returns, see Described; `ndims`: the results'
    dimensions, batch axis included)."""
    if out_axes is None or (isinstance(out_axes, (list, tuple)) and None in out_axes):
        raise ValueError("vmap: out_axes: every output has the batch axis; expected ints, "
                         f"found {out_axes!r}")
    axes = _per_argument(out_axes, len(ndims), "out_axes") if kind is not None else \
        [out_axes[0] if isinstance(out_axes, (list, tuple)) else out_axes]
    return [_check_axis(ax, n, "out_axes") for ax, n in zip(axes, ndims)]


def _batched_function(f, in_axes, out_axes):
    """`VmappedFunction.fn`: the batched function of NumPy arrays, device arrays and
    tracers."""
    # names and docstring only (as VmappedFunction's)
    @functools.wraps(f, updated=())
    def batched(*args):
        batch = _arrange(f, in_axes, args)
        call = _VmapCall(batch.kind_key)
        token = _RECORDING.set(call)
        try:
            outs, _ = scan(batch.step, sequences=list(batch.seqs),
                           non_sequences=list(batch.rest), return_list=True, name=batch.name,
                           _parallel=True)
        finally:
            _RECORDING.reset(token)
        kind = _kind_of(call, batch.kind_key)
        axes = _result_axes(out_axes, kind, [o.ndim for o in outs])
        moved = [_move_axis(o, 0, ax, "out_axes") for o, ax in zip(outs, axes)]
        if kind is None:
            return moved[0]
        return kind(*moved) if hasattr(kind, "_fields") else kind(moved)   # a namedtuple

    return batched


# what f returned (None: one array; else its tuple or list type), by the step's trace-cache key
# and argument types: a step taken from the trace cache does not run f, and returns the kind
# recorded when it was traced
_OUTPUT_KIND: dict = {}
# the innermost ns.vmap call in progress in this context
_RECORDING: ContextVar = ContextVar("numbascan_vmap_call", default=None)


class _VmapCall:
    """One ns.vmap call in progress: what `f` returned, once it has run during the call."""

    __slots__ = ("kind_key", "ran", "kind")

    def __init__(self, kind_key):
        self.kind_key, self.ran, self.kind = kind_key, False, None

    def record(self, kind):
        self.ran, self.kind = True, kind
        if self.kind_key is not None:
            # stored while f is traced, before the traced step enters the trace cache: a call
            # (in any thread) that takes the step from there finds its kind here
            _OUTPUT_KIND[self.kind_key] = kind


def _batched_step(f, positions, static):
    """The map's step: one batch element's arguments back in `f`'s order."""
    seq_pos, rest_pos, n_args = positions

    def step(*values):
        call = [None] * n_args
        for i, v in zip(seq_pos + rest_pos, values):
            call[i] = v
        for i, v in static:
            call[i] = v
        return _record_kind(f(*call))
    # warnings and errors about the step name the user's function
    step.__name__ = getattr(f, "__name__", type(f).__name__)
    step.__qualname__ = getattr(f, "__qualname__", step.__name__)
    return step


def _record_kind(out):
    """Note what `f` returned in the innermost ns.vmap call; -> the map's outputs. A module
    function, not a dict or list in the step itself: the trace cache keys a step by what it
    can see, and a mutable container there would make it uncacheable (retraced at every
    call)."""
    many = isinstance(out, (tuple, list))
    call = _RECORDING.get()
    if call is not None:
        call.record(type(out) if many else None)
    return list(out) if many else out
