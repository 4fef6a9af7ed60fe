"""Stage: user API — `ns.vmap` as a parallel map over a leading batch axis.

`vmap(f)(*args)` moves each batched argument's batch axis to the front and runs `f` on one
batch element per step of a map (`ns.map`) whose steps are marked independent
(`Layout.parallel`). The map's step is `f` traced once, scans inside it included, so the whole
of `f` runs per batch element inside one compiled loop: `prange` across cores on the CPU, one
thread (or one block, for larger states) per batch element in one CUDA kernel. Being a scan,
the map composes with `ns.jit` and with derivatives.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar

import numpy as np

from ..loop.args import _is_device_array
from ..runtime.cache import function_key
from ..trace.tracer import Tracer
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
    """
    if not callable(f):
        raise TypeError(f"vmap: f: expected a callable, found {type(f).__name__}")

    # names and docstring only: `f`'s attributes (an ns.jit function's own function) are not
    # the batched function's
    @functools.wraps(f, updated=())
    def batched(*args):
        axes = _per_argument(in_axes, len(args), "in_axes")
        seqs, seq_pos, rest, rest_pos, static, sizes = [], [], [], [], [], {}
        for i, (x, axis) in enumerate(zip(args, axes)):
            if not _is_array(x) and (isinstance(x, (list, tuple)) or np.ndim(x) > 0):
                x = np.asarray(x)
            if axis is None:
                if _is_array(x):
                    rest.append(x)
                    rest_pos.append(i)
                else:
                    static.append((i, x))
                continue
            if not _is_array(x) or x.ndim == 0:
                raise ValueError(f"vmap: argument {i}: in_axes asks for axis {axis}, found a "
                                 f"value without axes ({type(x).__name__})")
            axis = _check_axis(axis, x.ndim, f"in_axes of argument {i}")
            seqs.append(_move_axis(x, axis, 0, f"in_axes of argument {i}"))
            seq_pos.append(i)
            sizes[i] = x.shape[axis]
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
        call = _VmapCall(kind_key)
        token = _RECORDING.set(call)
        try:
            outs, _ = scan(step, sequences=seqs, non_sequences=rest, return_list=True,
                           name=getattr(f, "__name__", None), _parallel=True)
        finally:
            _RECORDING.reset(token)
        if call.ran:                      # f ran (traced, or in python mode) during this call
            kind = call.kind
        else:                             # the step came from the trace cache
            kind = _OUTPUT_KIND[kind_key]
        if out_axes is None or (isinstance(out_axes, (list, tuple)) and None in out_axes):
            raise ValueError("vmap: out_axes: every output has the batch axis; expected ints, "
                             f"found {out_axes!r}")
        oaxes = _per_argument(out_axes, len(outs), "out_axes") if kind is not None else \
            [out_axes[0] if isinstance(out_axes, (list, tuple)) else out_axes]
        moved = [_move_axis(o, 0, _check_axis(ax, o.ndim, "out_axes"), "out_axes")
                 for o, ax in zip(outs, oaxes)]
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
