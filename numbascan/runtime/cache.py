"""Stage: runtime — traced steps and programs, and their compiled code, kept for the next call.

Tracing costs far more than calling compiled code, so a traced program (and its compiled
function) is kept per (function code, argument signature, *what the function can see*). What
it can see is every value reachable by name: closure cells, referenced globals and default
arguments, followed into helper functions it calls. Arrays there enter the key by dtype and
shape (their values are read at each call, through a recorded path); Python scalars by value
(they are compiled in); shared variables by identity and the dtype and shape of their value;
modules, library functions and random streams by identity. numbascan's own closures (what
ns.grad returns) are seen through their cells (the user's function, its options), and its
callable objects (what ns.jit and ns.vmap return) through their `fn`; their globals are the
library's own. A value of any other kind (an object whose attributes might change) makes the
function uncacheable: it is traced at every call, which is always correct. `cache_info` counts
the traces.

Computing that key walks everything the function can see. A cached call can instead check
`guards`, recorded on the same walk: every place a name was read (closure cell, globals entry,
default, list item) still holds the very object it held then, and every array there still has
its dtype and shape. Guards keep those objects alive, so an identity cannot be reused by a new
object; a guard that fails only sends the call back to the full key.

A shared variable is compiled in by the dtype and shape of its value, which `set_value` may
change: the key holds them for each shared variable the function names, and every entry keeps
`shared_guards` over each shared variable its trace read (however it was reached), checked on
every hit, so code built for another shape is never reused (SPEC section 2).
"""

from __future__ import annotations

import threading
import types
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..codegen import chunks
from ..codegen.cpu import render_main_function, render_scan_function
from ..codegen.emit import Module, program_hash
from ..codegen.source import load_module
from ..core.ir import IR
from ..core.layout import Layout
from ..loop.args import ScanArgs
from ..loop.primitive import asks_for_cuda
from ..loop.step import TracedStep, trace_step
from ..random import RandomStreams
from ..shared import Shared
from ..trace.program import STATIC_TYPES, trace_program
from . import blas, log, threads
from .linked import linked

SCALARS = (bool, int, float, complex, str, bytes, type(None), np.generic)
MAX_DEPTH = 4


class Uncacheable(Exception):
    pass


class CacheInfo(NamedTuple):
    """What the trace cache has done in this process (`cache_info`)."""
    traces: int      # steps and functions traced because the cache could not serve a call
    uncached: int    # of those, traces that could not be kept: traced again at the next call
    compiles: int    # generated loops and programs loaded (compiled, or from numba's disk cache)


# the counts behind `cache_info`, changed and read under `_STATS_LOCK`
_STATS = {"traces": 0, "uncached": 0, "compiles": 0}
_STATS_LOCK = threading.Lock()


def cache_info() -> CacheInfo:
    """Counts of traces and compiles since the process started. A call served by the trace
    cache adds nothing; a step traced inside a traced function is part of that one trace."""
    with _STATS_LOCK:
        return CacheInfo(**_STATS)


def _count(name, kept=True):
    with _STATS_LOCK:
        _STATS[name] += 1
        if not kept:
            _STATS["uncached"] += 1


def _is_library(obj):
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in ("numpy", "scipy", "numbascan", "numba", "builtins", "math")


def _is_own(obj):
    """Whether `obj` is numbascan's code; a function by the module that defined it (what
    `functools.wraps` leaves alone: it copies the wrapped function's `__module__`)."""
    module = obj.__globals__.get("__name__") if isinstance(obj, types.FunctionType) else \
        getattr(obj, "__module__", None)
    return (module or "").split(".")[0] == "numbascan"


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
    # numbascan's own closures (what ns.grad, ns.vmap... return) see the user's values through
    # their cells; their globals are the library's (its functions, tables, caches)
    for name in sorted(_names(code)) if not _is_own(fn) else ():
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
        elif kind == "array" or kind == "shared":           # an array, a Shared's value
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


# api/'s callable objects, seen through the function in their `fn`: an ns.jit function's
# (JitFunction.fn, the user's function) and ns.vmap's (VmappedFunction.fn, the batched closure
# over the user's function and the axes)
WRAPPERS = ("JitFunction", "VmappedFunction")


def unwrapped(fn, guards=None):
    """The function `fn` wraps (followed through every wrapper of WRAPPERS: ns.jit of an
    ns.vmap); `guards` (a list) receives a guard on each step."""
    while type(fn).__name__ in WRAPPERS and hasattr(fn, "fn"):
        inner = fn.fn
        if guards is not None:
            guards.append(("attr", fn, "fn", inner))
        fn = inner
    return fn


def _key_of(value, path, arrays, depth, guards):
    if isinstance(value, np.ndarray):
        arrays[id(value)] = path
        guards.append(("array", value, None, (value.dtype, value.shape)))
        return ("a", value.dtype.str, value.shape)
    if isinstance(value, SCALARS):
        return ("v", type(value).__name__, value)
    if isinstance(value, Shared):
        # by identity and by what `set_value` may change: the dtype and shape compiled in
        guards.append(("shared", value, None, (value.dtype, value.shape)))
        return ("o", id(value), value.dtype.str, value.shape)
    if isinstance(value, (types.ModuleType, RandomStreams, type)):
        return ("o", id(value))
    if isinstance(value, (tuple, list)) and len(value) <= 16:
        if isinstance(value, list):                    # a list may change in place
            guards.append(("len", value, None, len(value)))
            guards.extend(("item", value, i, v) for i, v in enumerate(value))
        return (type(value).__name__,) + tuple(
            _key_of(v, path + (("item", i),), arrays, depth, guards)
            for i, v in enumerate(value))
    if type(value).__name__ in WRAPPERS and hasattr(value, "fn"):
        guards.append(("attr", value, "fn", value.fn))
        return ("j",) + _key_of(value.fn, path + (("attr", "fn"),), arrays, depth, guards)
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
    target = unwrapped(fn, guards)
    arrays = {}
    try:
        return (id(target.__code__), visible_key(target, (), arrays, 0, guards)), arrays
    except (Uncacheable, AttributeError, TypeError):
        return None, None


def shared_guards(shared):
    """Guards on the dtype and shape of each shared variable a trace read (see `guards_hold`)."""
    return [("shared", k, None, (k.dtype, k.shape)) for k in shared]


def fetch(fn, path):
    """Follow a recorded path from `fn` to the value it names now."""
    obj = unwrapped(fn)
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


# The caches of this module are read without a lock: an entry is stored whole, by one dict
# assignment, after it is complete. Threads that miss together render the same source (imported
# once, see codegen.source) and store equal entries; the last store wins.
_COMPILED: dict[str, object] = {}


def compile_scan(step: IR, layout: Layout, progress=False):
    """The loop function of a scan; `progress=True`: its variant that publishes its count of
    steps run into a last argument (codegen/scanloop.py `render_time_loop`)."""
    key = "scan:" + program_hash(step.fingerprint(), layout, chunks.settings()) + (
        ":progress" if progress else "")
    fn = _COMPILED.get(key)
    if fn is None:
        module = Module()
        name = render_scan_function(module, step, layout, progress=progress)
        loaded = log.timed_render(name, lambda: load_module(module.source(f"scan {name}")))
        fn = threads.eager_loop(loaded, name, module)
        fn = threads.capped(blas.for_code(fn, module.uses_blas), module.calls_parallel)
        _COMPILED[key] = fn
        _count("compiles")
    return fn


def compile_main(ir: IR):
    key = "main:" + program_hash(ir.fingerprint(), chunks.settings())
    fn = _COMPILED.get(key)
    if fn is None:
        module = Module()
        name = render_main_function(module, ir)
        loaded = log.timed_render(name, lambda: load_module(module.source(f"program {name}")))
        fn = blas.for_code(linked(loaded, name, module.pointers[name]), module.uses_blas)
        fn = threads.capped(fn, module.calls_parallel)
        _COMPILED[key] = fn
        _count("compiles")
    return fn


@dataclass
class CachedScan:
    ts: TracedStep
    fn: object
    readers: list
    capture_avals: list
    shared_guards: list             # the traced dtype and shape of each shared variable read
    progress_fn: object = None      # the loop's progress variant, compiled when first asked for


_SCANS: dict = {}        # (function key, argument signature) -> CachedScan
# (id of the step's code, argument signature, compile) -> (step function, guards of its key,
# CachedScan, capture values): the last call of each step, checked by guards, not keyed
_LAST: dict = {}


def traced_scan(sa: ScanArgs, compile=True, progress=False):
    """(traced step, compiled loop, capture values): from the trace cache when the function
    and what it can see are unchanged (cache.py), else traced and compiled now.
    `compile=False`: no CPU loop (the CUDA driver compiles its own kernel); an entry traced
    that way gets its loop when a later call asks for it. `progress=True`: the loop's progress
    variant (`compile_scan`) instead of the loop."""
    signature = sa.signature()
    last_key = (id(getattr(sa.fn, "__code__", sa.fn)), signature)
    last = _LAST.get(last_key)
    if last is not None and last[0] is sa.fn and guards_hold(last[1]):
        return last[2].ts, _compiled(last[2], compile, progress), last[3]
    guards = []
    key, arrays = function_key(sa.fn, guards)
    if key is not None:
        key = (key, signature)
        hit = _SCANS.get(key)
        if hit is not None and guards_hold(hit.shared_guards):
            captures = read_captures(sa.fn, hit.readers, hit.capture_avals)
            if captures is not None:
                _LAST[last_key] = (sa.fn, guards + hit.shared_guards, hit, captures)
                return hit.ts, _compiled(hit, compile, progress), captures
    ts = log.timed_trace(trace_step, sa)
    fn = compile_scan(ts.ir, ts.layout, progress) if compile else None
    readers = capture_readers(ts.captures, arrays, ts.created) if key is not None else None
    _count("traces", kept=readers is not None)
    if readers is not None:
        avals = [(np.asarray(c).dtype, np.shape(c)) if not isinstance(c, Shared) else None
                 for c in ts.captures]
        read = shared_guards(ts.shared_states + ts.shared_reads)
        entry = (CachedScan(ts, None, readers, avals, read, fn) if progress else
                 CachedScan(ts, fn, readers, avals, read))
        _SCANS[key] = entry
        _LAST[last_key] = (sa.fn, guards + read, entry, ts.captures)
    return ts, fn, ts.captures


def _compiled(entry: CachedScan, compile, progress=False):
    if compile and progress:
        if entry.progress_fn is None:
            entry.progress_fn = compile_scan(entry.ts.ir, entry.ts.layout, progress=True)
        return entry.progress_fn
    if compile and entry.fn is None:
        entry.fn = compile_scan(entry.ts.ir, entry.ts.layout)
    return entry.fn


# (function key, argument signature, interpret) ->
#     (program, compiled, readers, avals, shared guards)
_PROGRAMS: dict = {}


def traced_program(fn, values, interpret=False, guards=None):
    """(program, compiled function, capture values), from the trace cache when possible.
    `guards` (a list) receives the guards of the cache key, and is emptied when the program
    is not cached (it is traced at every call)."""
    guards = [] if guards is None else guards
    key, arrays = function_key(fn, guards)
    if key is not None:
        key = (key, tuple(("s", type(a).__name__, a) if isinstance(a, STATIC_TYPES) else
                          ("a", a.dtype.str, a.shape) for a in values), interpret)
        hit = _PROGRAMS.get(key)
        if hit is not None and guards_hold(hit[4]):
            captures = read_captures(fn, hit[2], hit[3])
            if captures is not None:
                guards.extend(hit[4])
                return hit[0], hit[1], captures
    prog = log.timed_trace(trace_program, fn, values)
    compiled = None if interpret or asks_for_cuda(prog.ir) else compile_main(prog.ir)
    readers = capture_readers(prog.captures, arrays, prog.created) if key is not None else None
    _count("traces", kept=readers is not None)
    if readers is not None:
        avals = [None if isinstance(c, Shared) else (np.asarray(c).dtype, np.shape(c))
                 for c in prog.captures]
        read = shared_guards(prog.shared)
        _PROGRAMS[key] = (prog, compiled, readers, avals, read)
        guards.extend(read)
    else:
        guards.clear()
    return prog, compiled, prog.captures
