"""Stage: runtime — a program's compiled code and the scan functions it calls by address.

A generated program (`codegen/cpu.py` `render_main_function`) takes, before its inputs, the
address of each scan function it runs (codegen/calls.py). `LinkedProgram` compiles each of those
functions on its own, for the argument types its `ScanPointer` names (numba's disk cache keeps
each one), and then the program, for integer addresses and the types of its inputs. Each
function's machine code is made once: a scan linked into the program by name would be
optimised and compiled again inside it.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import from_dtype
from numba.core import types

from . import log


def numba_type(dtype, ndim):
    scalar = from_dtype(np.dtype(dtype))
    return types.Array(scalar, ndim, "C") if ndim else scalar


def native_address(compiled) -> int:
    """The address of a compiled function's native code (numba's calling convention)."""
    if compiled.signature.return_type != types.intp:
        raise AssertionError(f"a scan function returns {compiled.signature.return_type}, "
                             "not the intp that codegen/calls.py expects")
    return compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)


class LinkedProgram:
    """A program's dispatcher `main` and the dispatchers of the scans it calls by address,
    each with its `ScanPointer`, in the order of the program's first parameters."""

    def __init__(self, main, callees):
        self.main, self.callees = main, tuple(callees)
        self.py_func = main.py_func
        self.addresses = None         # of each callee, set once, whole
        self._compiled = None         # the callees' compile results: they keep the code alive
        self._lock = threading.Lock()

    def compile_for(self, args, what):
        """Compile the scan functions (once) and the program for `args` (log.first_call)."""
        if self.addresses is None:
            with self._lock:
                if self.addresses is None:
                    compiled = []
                    for dispatcher, call in self.callees:
                        signature = tuple(numba_type(d, n) for d, n in call.args)
                        if signature not in dispatcher.overloads:
                            log.compile_logged(dispatcher, signature, what)
                        compiled.append(dispatcher.overloads[signature])
                    self._compiled = compiled
                    self.addresses = tuple(native_address(c) for c in compiled)
        if not self.main.overloads:
            signature = (types.intp,) * len(self.addresses)
            signature += tuple(self.main.typeof_pyval(a) for a in args)
            log.compile_logged(self.main, signature, what)

    def __call__(self, *args):
        if self.addresses is None:
            self.compile_for(args, None)
        return self.main(*self.addresses, *args)


def linked(module, name, pointers):
    """The program `name` of imported generated `module`: its dispatcher itself when it calls
    no scan by address, else a `LinkedProgram`."""
    main = getattr(module, name)
    if not pointers:
        return main
    return LinkedProgram(main, [(getattr(module, p.function), p) for p in pointers])
