"""Stage: IR -> source — the text of a generated module, for the CPU and CUDA renderers.

Its templates, `Lines` (a function body being written), `Module` (the functions rendered so far,
by name), Python source for dtypes and literals, and the hash that generated names carry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

MODULE_TEMPLATE = '''\
"""numbascan generated module. Source of: {title}"""
import math
import numpy as np
from numba import njit, prange
from numbascan.random import uniform_nb, normal_nb, binomial_nb
from numbascan.random import fill_uniform_nb, fill_normal_nb, fill_binomial_nb
from numbascan.random import uniform_ahead_nb, normal_ahead_nb, binomial_ahead_nb
from numbascan.codegen.fastmath import exp_fast, expit_fast, tanh_fast
from numbascan.codegen.shortmath import exp_short, expit_short, tanh_short
from numbascan.codegen.linalg import lu_solve_nb, slogdet_nb, cholesky_nb, triangular_nb
from numbascan.codegen.linalg import eigh_nb, eigh_lapack_nb
from numbascan.codegen.linrec import diagonal_scan_nb, matrix_scan_nb, linrec_threads_nb
from numbascan.codegen.linrec import linrec_diagonal_parallel_nb, linrec_matrix_parallel_nb
from numbascan.codegen.calls import call_address
from numbascan.codegen.matmul import matmul_nb, matvec_nb, vecmat_nb
{preamble}
{functions}
'''


# A module with parallel code starts numba's threading layer when it is imported, the way
# numbascan starts it (random.start_threads: OpenMP waiting passively). numba starts it itself
# when it compiles, or loads from its cache, a function with a parallel loop, but not when it
# loads a function that calls one through a callee that was itself loaded from the cache (the
# need is lost on the way: a segfault in the parallel region).
THREADS_PREAMBLE = '''\
from numbascan.random import start_threads
start_threads()
'''
# a scan run by chunks of its state (codegen/chunks.py) shares them out among numba's threads
CHUNKS_PREAMBLE = '''\
from numbascan.codegen.chunks import threads_nb
'''


# fastmath "contract": a * b + c may become one fused multiply-add (one rounding, not two);
# `{fastmath}` is a module-wide field, filled by `Module.source`
CONTRACT = ', fastmath={"contract"}'
FUNCTION_TEMPLATE = '''\
@njit(cache=True, error_model="numpy", nogil=True{fastmath})
def {name}({params}):
{body}
'''


# a batch of less work than codegen/parallel.py's threshold runs in the calling thread
PARALLEL_TEMPLATE = '''\
@njit(cache=True, error_model="numpy", nogil=True, parallel=True)
def {name}({params}):
    if n_steps < {serial_below}:
        for t in range(n_steps):
            {step}(t, {args})
    else:
        for t in prange(n_steps):
            {step}(t, {args})
    return n_steps
'''


def dtype_src(dt):
    dt = np.dtype(dt)
    return "np.bool_" if dt == np.bool_ else f"np.{dt.name}"


def literal_src(value, dtype):
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return "True" if value else "False"
    if dt.kind == "f":
        v = float(value)
        text = "np.inf" if v == np.inf else "-np.inf" if v == -np.inf else \
            "np.nan" if v != v else repr(v)
        return text if dt == np.float64 else f"np.{dt.name}({text})"
    return repr(int(value)) if dt == np.int64 else f"np.{dt.name}({int(value)})"


def _idx(names):
    return ", ".join(names)


class Lines:
    def __init__(self):
        self.lines = []
        self.depth = 1

    def __call__(self, text):
        self.lines.append("    " * self.depth + text)

    def indent(self):
        self.depth += 1

    def dedent(self):
        self.depth -= 1

    def text(self):
        return "\n".join(self.lines) if self.lines else "    pass"


@dataclass(frozen=True)
class Function:
    """A generated function: its template and the fields that fill it. The module adds its
    module-wide fields when it makes its source; the text is never edited afterwards."""
    template: str
    fields: dict

    def text(self, **module_fields):
        return self.template.format(**self.fields, **module_fields)


@dataclass
class Module:
    """Functions rendered so far, by name (nested scans share the module of their parent),
    and what the renderers recorded about them while rendering."""
    functions: dict = field(default_factory=dict)    # name -> Function
    draws: bool = False        # a function draws random numbers (the `random` primitive)
    uses_blas: bool = False    # a function calls BLAS (np.dot into a preallocated result)
    calls_parallel: bool = False   # a function is or calls parallel code (THREADS_PREAMBLE)
    # program function name -> the scan functions it calls by address (cpu.ScanPointer)
    pointers: dict = field(default_factory=dict)
    # scan loop function name -> its codegen/chunks.ChunkPlan, for scans run by chunks
    chunked: dict = field(default_factory=dict)

    def add(self, template, **fields):
        """Add a function: `template` and the fields that fill it, its `name` among them."""
        self.functions[fields["name"]] = Function(template, fields)

    def module_fields(self):
        # numba compiles a callee with its caller's fastmath flags, and keeps that version
        # for every later caller: a contracting caller would change the draws' last bits
        # (they must equal the NumPy ones), so a module that draws does not contract
        return {"fastmath": "" if self.draws else CONTRACT}

    def function_texts(self):
        fields = self.module_fields()
        return "\n\n".join(f.text(**fields) for f in self.functions.values())

    def source(self, title):
        preamble = ((CHUNKS_PREAMBLE if self.chunked else "") +
                    (THREADS_PREAMBLE if self.calls_parallel else ""))
        return MODULE_TEMPLATE.format(title=title, functions=self.function_texts(),
                                      preamble=preamble)


def program_hash(*parts) -> str:
    return hashlib.sha256("\n".join(str(p) for p in parts).encode()).hexdigest()[:20]
