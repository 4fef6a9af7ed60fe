"""Stage: trace cache — reuse a traced program when a function is called again.

Tracing costs far more than calling compiled code, so a traced program (and its compiled
function) is kept per (function code, argument signature, *what the function can see*). What
it can see is every value reachable by name: closure cells, referenced globals and default
arguments, followed into helper functions it calls. Arrays there enter the key by dtype and
shape (their values are read at each call, through a recorded path); Python scalars by value
(they are compiled in); modules, library functions, shared variables and random streams by
identity. A value of any other kind (an object whose attributes might change) makes the
function uncacheable: it is traced at every call, which is always correct.

Computing that key walks everything the function can see. A cached call can instead check
`guards`, recorded on the same walk: every place a name was read (closure cell, globals entry,
default, list item) still holds the very object it held then, and every array there still has
its dtype and shape. Guards keep those objects alive, so an identity cannot be reused by a new
object; a guard that fails only sends the call back to the full key.
"""

from __future__ import annotations

import types

import numpy as np

SCALARS = (bool, int, float, complex, str, bytes, type(None), np.generic)
MAX_DEPTH = 4


class Uncacheable(Exception):
    pass


def _is_library(obj):
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in ("numpy", "scipy", "numbascan", "numba", "builtins", "math")


def _is_own(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "numbascan"


def _names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


MISSING = object()           # an empty closure cell, a name not (yet) among the globals


def _locations(fn, guards):
    """(path step, value) for everything `fn` can read by name."""
    code = fn.__code__
    guards.append(("attr", fn, "__code__", code))
    guards.append(("attr", fn, "__defaults__", fn.__defaults__))
    for i, cell in enumerate(fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:
            guards.append(("cell", cell, None, MISSING))
            continue
        guards.append(("cell", cell, None, value))
        yield ("closure", i), value
    glob = fn.__globals__
    builtins = glob.get("__builtins__", {})
    for name in sorted(_names(code)):
        guards.append(("global", glob, name, glob.get(name, MISSING)))
        if name in glob:
            yield ("global", name), glob[name]
        elif not (isinstance(builtins, dict) and name in builtins or hasattr(builtins, name)):
            yield ("global", name), None             # not defined yet: part of the key
    for i, d in enumerate(fn.__defaults__ or ()):
        yield ("default", i), d


def guards_hold(guards):
    """Whether everything recorded by `guards` is as it was (see the module's docstring)."""
    for kind, obj, key, expected in guards:
        if kind == "global":
            if obj.get(key, MISSING) is not expected:
                return False
        elif kind == "attr":
            if getattr(obj, key, MISSING) is not expected:
                return False
        elif kind == "array":
            if obj.dtype != expected[0] or obj.shape != expected[1]:
                return False
        elif kind == "item":
            if len(obj) <= key or obj[key] is not expected:
                return False
        elif kind == "len":
            if len(obj) != expected:
                return False
        else:                                                  # a closure cell
            try:
                if obj.cell_contents is not expected:
                    return False
            except ValueError:
                if expected is not MISSING:
                    return False
    return True


def _key_of(value, path, arrays, depth, guards):
    from .random import RandomStreams
    from .shared import Shared
    if isinstance(value, np.ndarray):
        arrays[id(value)] = path
        guards.append(("array", value, None, (value.dtype, value.shape)))
        return ("a", value.dtype.str, value.shape)
    if isinstance(value, SCALARS):
        return ("v", type(value).__name__, value)
    if isinstance(value, (types.ModuleType, Shared, RandomStreams, type)):
        return ("o", id(value))
    if isinstance(value, (tuple, list)) and len(value) <= 16:
        if isinstance(value, list):                    # a list may change in place
            guards.append(("len", value, None, len(value)))
            guards.extend(("item", value, i, v) for i, v in enumerate(value))
        return (type(value).__name__,) + tuple(
            _key_of(v, path + (("item", i),), arrays, depth, guards)
            for i, v in enumerate(value))
    if isinstance(value, types.FunctionType):
        # numbascan's own closures (what ns.grad, ns.vmap... return) hold the user's function:
        # look inside them like a user's function
        if _is_library(value) and not (value.__closure__ and _is_own(value)):
            return ("o", id(value))
        if depth >= MAX_DEPTH:
            raise Uncacheable(value)
        return ("f", id(value.__code__)) + visible_key(value, path, arrays, depth + 1, guards)
    if isinstance(value, (types.BuiltinFunctionType, np.ufunc)) or _is_library(value):
        return ("o", id(value))
    if hasattr(value, "fn") and type(value).__name__ == "JitFunction":
        guards.append(("attr", value, "fn", value.fn))
        return ("j",) + _key_of(value.fn, path + (("attr", "fn"),), arrays, depth, guards)
    raise Uncacheable(value)


def visible_key(fn, path=(), arrays=None, depth=0, guards=None):
    """Key of what `fn` can see; fills `arrays` with id(array) -> path to read it again, and
    `guards` with what `guards_hold` checks."""
    arrays = {} if arrays is None else arrays
    guards = [] if guards is None else guards
    if not isinstance(fn, types.FunctionType):
        raise Uncacheable(fn)
    return tuple((step, _key_of(v, path + (step,), arrays, depth, guards))
                 for step, v in _locations(fn, guards))


def function_key(fn, guards=None):
    """(key, arrays) for `fn`, or (None, None) when it must be traced at every call. A list
    passed as `guards` receives the guards of the key (see `guards_hold`)."""
    target = getattr(fn, "fn", fn) if type(fn).__name__ == "JitFunction" else fn
    arrays = {}
    if guards is not None and target is not fn:
        guards.append(("attr", fn, "fn", target))
    try:
        return (id(target.__code__), visible_key(target, (), arrays, 0, guards)), arrays
    except (Uncacheable, AttributeError, TypeError):
        return None, None


def fetch(fn, path):
    """Follow a recorded path from `fn` to the value it names now."""
    obj = getattr(fn, "fn", fn) if type(fn).__name__ == "JitFunction" else fn
    for kind, arg in path:
        if kind == "closure":
            obj = obj.__closure__[arg].cell_contents
        elif kind == "global":
            obj = obj.__globals__[arg]
        elif kind == "default":
            obj = obj.__defaults__[arg]
        elif kind == "item":
            obj = obj[arg]
        else:
            obj = getattr(obj, arg)
    return obj


def capture_readers(sources, arrays, created):
    """How to read each capture at call time: a path, or the value itself (a constant made
    while tracing, a shared variable). None when some capture cannot be found again."""
    from .shared import Shared
    readers = []
    for src in sources:
        if isinstance(src, Shared):
            readers.append(("value", src))
        elif id(src) in arrays:
            readers.append(("path", arrays[id(src)]))
        elif id(src) in created:
            readers.append(("value", src))
        else:
            return None
    return readers


def read_captures(fn, readers, avals):
    """Current capture values, or None if one no longer has the traced dtype and shape."""
    values = []
    for (kind, how), aval in zip(readers, avals):
        value = how if kind == "value" else fetch(fn, how)
        if kind == "path" and (not isinstance(value, np.ndarray) or value.dtype != aval[0] or
                               value.shape != aval[1]):
            return None
        values.append(value)
    return values
