"""Stage: tracing — `linear_recurrence`, the solver of a linear (affine) recurrence, on tracers.

    xs = linear_recurrence(a, b, x0, reverse=False, *, kind=None)

solves x_t = a_t * x_{t-1} + b_t (kind "diagonal": elementwise, b (T,) + S, x0 S, a (T,) + S
or S) or x_t = x_{t-1} @ a_t + b_t (kind "matrix": row vectors, b (T, n), x0 (n,), a (T, n, n)
or (n, n)) for t = 0 .. T-1 from x_{-1} = x0; with `reverse`, for t = T-1 down to 0 from
x_T = x0. An `a` without the time axis is the coefficient of every step (`invariant`, never
materialised over time). xs (T,) + S holds x_0 .. x_{T-1} in index order, x0 excluded.

`kind=None` reads the kind from the shapes: `a` of b's shape or of the state's is diagonal,
(T, n, n) or (n, n) with a state (n,) is a matrix. When T == n an (n, n) `a` could be either;
it is read as diagonal (per-step), and `kind="matrix"` says otherwise.

Operands share one dtype, float32 or float64 (b's; Python numbers for `a` and `x0` take it);
anything else is a TypeError, a shape that does not fit a ValueError, both naming the
argument. Inside a trace (ns.jit, a scan's step, derivatives) the call records the `linrec`
primitive (core/primitives.py) with parameters (kind, reverse, invariant); outside one it runs
that primitive's NumPy loop, the reference (the compiled eager call is api/linrec.py's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.context import current_trace
from ..core.primitives import TABLE
from .tracer import Tracer, bind, constant

KINDS = ("diagonal", "matrix")
WHAT = "linear_recurrence"


@dataclass(frozen=True)
class Recurrence:
    """The parameters of a `linrec` equation."""
    kind: str
    reverse: bool
    invariant: bool
    mode: str | None = None      # "cuda": the program runs it on the GPU (runtime/cuda.py)

    def params(self):
        p = {"kind": self.kind, "reverse": self.reverse, "invariant": self.invariant}
        if self.mode is not None:
            p["mode"] = self.mode
        return p


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tracer) else np.shape(x)


def _is_python_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _operand(x, name, dtype, what):
    """`x` as an operand of `dtype`: a Python number converted (a constant), an array or
    tracer of another dtype refused."""
    if _is_python_number(x):
        return constant(np.asarray(x, dtype))
    found = x.dtype if isinstance(x, Tracer) else getattr(x, "dtype", None)
    if found is None:
        x = np.asarray(x)
        found = x.dtype
    if np.dtype(found) != dtype:
        raise TypeError(f"{what}: {name}: expected dtype {dtype} (b's: all operands have one "
                        f"dtype), found {np.dtype(found)}")
    return x


def _b_operand(b, what):
    found = b.dtype if isinstance(b, Tracer) else getattr(b, "dtype", None)
    if found is None:
        b = np.asarray(b)
        found = b.dtype
    dtype = np.dtype(found)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{what}: b: expected a float32 or float64 array, found dtype {dtype}")
    return b, dtype


def _kind(a_shape, b_shape, kind, what):
    """(kind, invariant) from the shapes, or a ValueError naming `a`."""
    T, S = b_shape[0], b_shape[1:]
    diagonal = {b_shape: False, S: True}
    matrix = {(T,) + S + S: False, S + S: True} if len(S) == 1 else {}
    if kind is None:
        found = diagonal if a_shape in diagonal else matrix
    elif kind in KINDS:
        found = diagonal if kind == "diagonal" else matrix
    else:
        raise ValueError(f"{what}: kind: expected None, 'diagonal' or 'matrix', found {kind!r}")
    if a_shape in found:
        return ("diagonal" if found is diagonal else "matrix"), found[a_shape]
    expected = []
    if kind in (None, "diagonal"):
        expected.append(f"{b_shape} or {S} (diagonal)")
    if kind in (None, "matrix"):
        expected.append(f"{(T,) + S + S} or {S + S} (matrix)" if len(S) == 1 else
                        "a matrix kind's (T, n, n) or (n, n), which needs a state of shape "
                        "(n,)")
    raise ValueError(f"{what}: a: expected shape {', or '.join(expected)} for b of shape "
                     f"{b_shape}, found {a_shape}")


def operands(a, b, x0, reverse=False, kind=None, what=WHAT, mode=None):
    """Checked operands (a, b, x0) in one dtype and the equation's `Recurrence`."""
    if isinstance(reverse, Tracer) or not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"{what}: reverse: expected a Python bool, found {reverse!r}")
    b, dtype = _b_operand(b, what)
    b_shape = _shape(b)
    if len(b_shape) == 0:
        raise ValueError(f"{what}: b: expected an array with a leading time axis, of shape "
                         f"(T,) + S, found shape ()")
    a = _operand(a, "a", dtype, what)
    x0 = _operand(x0, "x0", dtype, what)
    if _shape(x0) != b_shape[1:]:
        raise ValueError(f"{what}: x0: expected the state's shape {b_shape[1:]} (b's shape "
                         f"{b_shape} without its time axis), found {_shape(x0)}")
    kind, invariant = _kind(_shape(a), b_shape, kind, what)
    return a, b, x0, Recurrence(kind, bool(reverse), invariant, mode)


def linear_recurrence(a, b, x0, reverse=False, *, kind=None, mode=None):
    """The states of x_t = a_t * x_{t-1} + b_t (or x_{t-1} @ a_t + b_t), see the module's
    docstring: recorded in a trace, the NumPy reference loop outside one. `mode="cuda"` is
    recorded: a program with such an equation runs its recurrences on the GPU."""
    a, b, x0, rec = operands(a, b, x0, reverse, kind, mode="cuda" if mode == "cuda" else None)
    if current_trace() is None and not any(isinstance(x, Tracer) for x in (a, b, x0)):
        return TABLE["linrec"].impl(a, b, x0, **rec.params())
    return bind("linrec", [a, b, x0], **rec.params())
