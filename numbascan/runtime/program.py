"""Stage: runtime — a traced program, run.

`run_traced` takes a function's program and compiled code from the cache (tracing and compiling
them on a miss), passes its arguments, cuts its outputs and advances its random streams. The
program runs compiled, interpreted (python mode), or with its scans as CUDA kernels and the
NumPy glue between them on the host. `CachedCall` repeats a call of one signature without
keying or tracing.
"""

from __future__ import annotations

import numpy as np

from ..core.ir import check_dtype, eval_ir
from ..shared import Shared
from ..trace.program import STATIC_TYPES, _unflatten
from .cache import guards_hold, traced_program
from .cpu import as_argument, call_compiled
from .cuda import program_impls, to_host


def run_traced(fn, args, interpret=False, remember=None):
    """Trace `fn` on `args`, compile the program (or interpret it), run it, return its outputs.

    Python scalars among `args` are static; arrays are traced. `interpret=True` evaluates the
    program with the IR interpreter instead of compiling it (the python mode of derivatives).
    `remember(call)` receives a `CachedCall` that repeats this call on new arrays of the same
    signature, when the program is cached and compiled.
    """
    values = [a if isinstance(a, STATIC_TYPES) else _checked(a, i) for i, a in enumerate(args)]
    guards = []
    prog, compiled, captures = traced_program(fn, values, interpret, guards)
    if remember is not None and guards and compiled is not None and not interpret:
        remember(CachedCall(prog, compiled, guards, captures, values))
    call_args = [as_argument(a) for a in values if not isinstance(a, STATIC_TYPES)]
    call_args += [as_argument(k) for k in prog.shared]
    call_args += [as_argument(c) for c in captures]
    for s in prog.streams:
        call_args += [np.uint64(s.key), np.uint64(s.counter % 2**64)]
    if interpret:
        outs = eval_ir(prog.ir, call_args)
    elif compiled is None:                  # scans on CUDA, glue between them in NumPy
        outs = [to_host(o) for o in eval_ir(prog.ir, call_args, impls=program_impls())]
    else:
        outs = call_compiled(compiled, *call_args, what=fn)
    input_ids = {id(a) for a in call_args}
    leaves = [np.array(o, dtype=v.dtype) if id(o) in input_ids or np.ndim(o) == 0
              else o for o, v in zip(prog.host_leaves(outs), prog.ir.outputs)]
    return _unflatten(prog.out_spec, leaves)


class CachedCall:
    """A traced and compiled program bound to one signature of a jit function's arguments:
    calling it checks the guards of what the function can see (cache.py) and passes
    the arrays straight to the compiled code, without keying, tracing or flattening."""

    def __init__(self, prog, compiled, guards, captures, values):
        self.prog, self.compiled, self.guards = prog, compiled, guards
        # per traced argument: its position, and whether it is 0-d (passed as a scalar)
        self.arrays = [(i, np.ndim(a) == 0) for i, a in enumerate(values)
                       if not isinstance(a, STATIC_TYPES)]
        # while the guards hold, the captures are the very objects read now: a C-contiguous
        # array is passed as it is; others (Shared, 0-d, strided) are converted at each call
        self.captures = captures
        self.direct = [type(c) is np.ndarray and c.ndim > 0 and as_argument(c) is c
                       for c in captures]
        self.scalar_outs = [v.shape == () for v in prog.ir.outputs[:prog.n_leaves]]
        self.static = not prog.runs and None not in prog.rng_used
        self.as_argument = as_argument
        # outputs that may be an input or a view of one: numba returns an unchanged input
        # array itself, and the caller must get a copy
        views = {v.id for v in prog.ir.inputs}
        for e in prog.ir.eqns:
            if e.prim in ("reshape", "index") and getattr(e.inputs[0], "id", None) in views:
                views.add(e.outputs[0].id)
        self.check_inputs = any(getattr(v, "id", None) in views for v in prog.ir.outputs)

    def __call__(self, args):
        """The outputs, or None when something the function can see has changed."""
        if not guards_hold(self.guards):
            return None
        prog = self.prog
        call_args = [args[i][()] if zero_d else np.ascontiguousarray(args[i])
                     for i, zero_d in self.arrays]
        for k in prog.shared:
            call_args.append(self.as_argument(k))
        for c, direct in zip(self.captures, self.direct):
            call_args.append(c if direct else self.as_argument(c))
        for s in prog.streams:
            call_args += [np.uint64(s.key), np.uint64(s.counter % 2**64)]
        outs = self.compiled(*call_args)
        if self.static:
            for s, used in zip(prog.streams, prog.rng_used):
                s.counter += used
        else:
            outs = prog.host_leaves(outs)
        input_ids = set(map(id, call_args)) if self.check_inputs else ()
        leaves = [np.array(o, dtype=v.dtype) if scalar or id(o) in input_ids else o
                  for o, v, scalar in zip(outs, prog.ir.outputs, self.scalar_outs)]
        return leaves[0] if prog.out_spec is None else _unflatten(prog.out_spec, leaves)


def call_signature(args):
    """What selects a `CachedCall`: dtype and shape of each array, type and value of each
    Python scalar; None for other arguments (they take the general path)."""
    sig = []
    for a in args:
        kind = type(a)
        if kind is np.ndarray:
            sig.append((a.dtype, a.shape))
        elif kind in STATIC_TYPES:
            sig.append((kind, a))
        else:
            return None
    return tuple(sig)


def _checked(a, i):
    if isinstance(a, Shared):
        return a.get_value(borrow=True)
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument {i}: expected a numeric array, found {type(a).__name__} "
                        f"with dtype {arr.dtype}")
    check_dtype(arr.dtype, f"argument {i}")
    return arr
