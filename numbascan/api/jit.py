"""Stage: user API — `ns.jit` traces a function of arrays into one program.

A call traces the function on tracers of its array arguments (Python scalars are static: part of
the signature, passed through unchanged), runs the IR passes, renders the program with
`codegen/cpu.py` and calls it (a program with scans asked to run on CUDA instead runs each scan
as a kernel and the NumPy glue between them on the host, see `runtime/cuda.program_impls`).
Arrays the function reads from its closure or globals are inputs read at each call. Called
inside another trace (a step, a derivative), a jit function is simply inlined into that trace.
`ns.show` prints the traced program and its generated source.

A jit function pickles by reference to its Python function (`pickled_by_name`): unpickled in
another process (a dask worker), it is that process's own, traced and compiled there (or its
compiled code loaded from numbascan's disk cache) at its first call.
"""

from __future__ import annotations

import functools
import sys

from ..codegen.cpu import render_main_function
from ..codegen.cuda import choose_pattern
from ..codegen.emit import Module
from ..core.context import current_trace
from ..loop.args import default_mode, normalize
from ..loop.step import trace_step
from ..runtime.cpu import scan_source
from ..runtime.cuda import kernel_source
from ..runtime.program import call_signature, run_traced
from ..trace.captures import with_traced_captures
from ..trace.program import trace_program
from ..trace.tracer import Tracer, TracingError
from .scan import choose_mode


def pickled_by_name(obj):
    """The qualified name by which `obj` (an ns.jit or ns.vmap function) is an attribute of its
    module, for pickle to save it by reference (what `__reduce__` returns); None when it is not
    found there (a local function, another object bound to the name) or its module is
    `__main__`, which another process does not have (dask pickles a script's functions with
    cloudpickle, which copies functions of `__main__` by value)."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    name = getattr(obj, "__qualname__", None) or ""
    if module is None or module.__name__ == "__main__" or not name or "<locals>" in name:
        return None
    found = module
    for part in name.split("."):
        found = getattr(found, part, None)
    return name if found is obj else None


class JitFunction:
    def __init__(self, fn):
        # names and docstring only: copying `fn`'s attributes would replace `fn` and `calls`
        # with those of a JitFunction (or anything else) that `fn` wraps
        functools.update_wrapper(self, fn, updated=())
        self.fn = fn.fn if isinstance(fn, JitFunction) else fn
        self.calls: dict = {}          # call_signature -> CachedCall

    def __call__(self, *args):
        sig = call_signature(args)
        if sig is not None and current_trace() is None and choose_mode() == "cpu":
            call = self.calls.get(sig)
            if call is not None:
                outs = call(args)
                if outs is not None:
                    return outs
            return run_traced(self.fn, args, remember=lambda call: self._remember(sig, call))
        trace = current_trace()
        if trace is not None:
            # inlined like any helper function: the arrays it names are tracers of this trace
            return with_traced_captures(self.fn, trace)[0](*args)
        if any(isinstance(a, Tracer) for a in args):
            return self.fn(*args)
        if choose_mode() == "python":
            # the traced program, run by the IR interpreter; a function that cannot be traced
            # runs as plain Python with its scans in python mode
            try:
                return run_traced(self.fn, args, interpret=True)
            except TracingError:
                pass
            with default_mode("python"):
                return self.fn(*args)
        return run_traced(self.fn, args)

    def __reduce__(self):
        # a decorated module function is the module's attribute: by that name; else the
        # function it wraps, by its own reference (compiled code is never pickled)
        return pickled_by_name(self) or (jit, (self.fn,))

    def _remember(self, sig, call):
        call.guards.append(("attr", self, "fn", self.fn))
        self.calls[sig] = call

    def source(self, *args):
        prog = trace_program(self.fn, list(args))
        module = Module()
        name = render_main_function(module, prog.ir)
        return prog.ir, module.source(f"program {name}")


def jit(fn=None):
    """Compile a function of arrays (NumPy glue and scans) into one numba program."""
    if fn is None:
        return jit
    return JitFunction(fn)


def show(fn, *args, file=None, **scan_kwargs):
    """Print (and return) the traced IR and the generated source.

    `ns.show(f, *args)` shows the program of `f` (a `ns.jit` function, a derivative such as
    `ns.grad(loss)`, any function of arrays) for these arguments;
    `ns.show(step, sequences=..., outputs_info=..., ...)` shows the loop `ns.scan` would compile
    (with `mode="cuda"`: the CUDA kernel and its pattern).
    """
    if isinstance(fn, JitFunction) or not scan_kwargs:
        ir, src = (fn if isinstance(fn, JitFunction) else JitFunction(fn)).source(*args)
    else:
        sa = normalize(fn, scan_kwargs.get("sequences"), scan_kwargs.get("outputs_info"),
                       scan_kwargs.get("non_sequences"), scan_kwargs.get("n_steps"), -1,
                       scan_kwargs.get("go_backwards", False), None, False, False, None)
        ts = trace_step(sa)
        if scan_kwargs.get("mode") == "cuda":         # the kernel mode="cuda" would launch
            pattern = choose_pattern(ts.ir, ts.layout)
            src = f"# layout: {ts.layout}\n# kernel pattern: {pattern}\n" + kernel_source(
                ts.ir, ts.layout, pattern)
        else:
            src = f"# layout: {ts.layout}\n" + scan_source(ts.ir, ts.layout)
        ir = ts.ir
    text = f"# traced program\n{ir}\n\n# generated source\n{src}"
    print(text, file=file)
    return text
