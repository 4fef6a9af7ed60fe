"""Stage: tracing — the arrays a traced function names become inputs of the trace.

`with_traced_captures` rebuilds a function with tracers in place of the arrays in its closure,
globals and defaults (NumPy cannot index an array by a tracer, so they must be tracers before
it runs), and with `numpy_api.py`'s views of the modules whose names do not dispatch on tracers.
Helper functions it calls get the same treatment when they run.
"""

from __future__ import annotations

import functools
import types

import numpy as np

from ..core.context import current_trace
from .numpy_api import traced_replacement
from .tracer import Tracer


def with_traced_captures(fn, trace):
    """`fn` with the arrays it names in its closure, globals and defaults replaced by tracers.

    NumPy cannot index an array by a tracer (`X[i, j]` with traced `i`), so the arrays a
    function reads by name enter the trace as capture inputs before it runs. Returns
    (function, {capture Var id: name}) — the names serve error messages (strict=True).
    """
    if not isinstance(fn, types.FunctionType) or hasattr(fn, "__numbascan_helper__"):
        return fn, {}
    names = {}

    def swap(value, name):
        replacement = traced_replacement(value) if not isinstance(value, np.ndarray) else None
        if replacement is not None:
            return replacement
        if isinstance(value, types.FunctionType) and _is_user_function(value):
            return _traced_helper(value)
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            t = Tracer(trace, trace.lift(value))
            names[t.var.id] = name
            return t
        return value

    code = fn.__code__
    closure = fn.__closure__
    if closure:
        cells = []
        for name, cell in zip(code.co_freevars, closure):
            try:
                cells.append(types.CellType(swap(cell.cell_contents, name)))
            except ValueError:                      # an empty cell
                cells.append(cell)
        closure = tuple(cells)
    glob = fn.__globals__
    swapped = {n: swap(glob[n], n) for n in _global_names(code) if n in glob}
    if any(v is not glob[n] for n, v in swapped.items()):
        glob = dict(glob)
        glob.update(swapped)
    defaults = fn.__defaults__ and tuple(swap(d, f"default {i}")
                                         for i, d in enumerate(fn.__defaults__))
    new = types.FunctionType(code, glob, fn.__name__, defaults, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    return new, names


_LIBRARIES = ("numpy", "scipy", "numbascan", "numba", "jax", "pytensor", "builtins")


def _is_user_function(fn):
    module = getattr(fn, "__module__", None) or ""
    return not module.split(".")[0] in _LIBRARIES and not hasattr(fn, "__numbascan_helper__")


def _traced_helper(fn):
    """A helper the traced function calls sees tracers for its named arrays too."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        trace = current_trace()
        target = with_traced_captures(fn, trace)[0] if trace is not None else fn
        return target(*args, **kwargs)
    call.__numbascan_helper__ = True
    return call


def _global_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _global_names(const)
    return names
