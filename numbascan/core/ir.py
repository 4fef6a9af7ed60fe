"""Stage: IR — the typed SSA program every other stage reads and writes.

A program (`IR`) is a tuple of input variables, a tuple of equations and a tuple of outputs.
Every `Var` carries a NumPy dtype and a static shape; a `Lit` is a Python or NumPy scalar baked
into the program. An `Eqn` applies one primitive (see `primitives.py`) to inputs and binds fresh
outputs. A scan equation keeps its step program as the parameter `step`, so programs nest.

Invariants: each Var is bound exactly once (as an input or as an equation output) before use;
equations are in dependency order; params are hashable and printable; no value is float16
(`check_dtype`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import primitives

_ids = itertools.count()


def check_dtype(dtype, what):
    """Refuse float16, in every mode alike: numba compiles no float16 code on the CPU (NumPy
    itself computes each float16 operation in float32 and rounds back)."""
    if np.dtype(dtype) == np.float16:
        raise TypeError(f"{what}: expected bool, integer, float32 or float64 values, found dtype "
                        f"float16, which numbascan does not support (numba compiles no float16 "
                        f"code); convert it with .astype(np.float32)")


@dataclass(frozen=True, eq=False)
class Var:
    dtype: np.dtype
    shape: tuple
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def aval(self):
        return f"{self.dtype.name}{list(self.shape)}"


@dataclass(frozen=True)
class Lit:
    """A scalar constant. `value` keeps its Python or NumPy type: a Python bool, int or float
    is 'weak' (NEP 50: it takes the dtype of the array it meets), a NumPy scalar is 'strong'."""

    value: Any

    @property
    def dtype(self):
        return np.asarray(self.value).dtype

    @property
    def shape(self):
        return ()

    @property
    def weak(self):
        # np.float64 and np.complex128 subclass Python's float and complex, yet are strong
        return (isinstance(self.value, (bool, int, float, complex))
                and not isinstance(self.value, np.generic))


@dataclass(frozen=True)
class Eqn:
    prim: str
    inputs: tuple
    outputs: tuple
    params: tuple = ()          # sorted (name, value) pairs

    @property
    def p(self) -> dict:
        return dict(self.params)


@dataclass(frozen=True)
class IR:
    inputs: tuple
    eqns: tuple
    outputs: tuple

    def __str__(self):
        return format_ir(self)

    def fingerprint(self) -> str:
        """Text that identifies the program up to variable numbering (the cache key)."""
        return format_ir(self, canonical=True)


def make_eqn(prim, inputs, outputs, params):
    return Eqn(prim, tuple(inputs), tuple(outputs), tuple(sorted(params.items())))


# ---------------------------------------------------------------------------------------------
# printer


def format_ir(ir: IR, canonical=False, indent="") -> str:
    names: dict[int, str] = {}

    def name(v):
        if isinstance(v, Lit):
            return repr(v.value) if v.weak else f"{v.dtype.name}({v.value.item()!r})"
        if v.id not in names:
            names[v.id] = f"v{len(names)}" if canonical else f"v{v.id}"
        return names[v.id]

    def typed(v):
        return f"{name(v)}:{v.aval()}"

    lines = [f"{indent}{{ lambda {', '.join(typed(v) for v in ir.inputs)} ."]
    for e in ir.eqns:
        params = []
        sub = None
        for k, val in e.params:
            if isinstance(val, IR):
                sub = (k, val)
            else:
                params.append(f"{k}={val!r}")
        outs = ", ".join(typed(v) for v in e.outputs)
        ins = ", ".join(name(v) for v in e.inputs)
        ptxt = f"[{', '.join(params)}]" if params else ""
        lines.append(f"{indent}    {outs} = {e.prim}{ptxt} {ins}")
        if sub is not None:
            lines.append(f"{indent}      {sub[0]}=")
            lines.append(format_ir(sub[1], canonical, indent + "        "))
    lines.append(f"{indent}  in ({', '.join(name(v) for v in ir.outputs)}) }}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# interpreter


def eval_ir(ir: IR, args, impls=None):
    """Run `ir` on NumPy values with each primitive's NumPy implementation (or the one in
    `impls`, by primitive name)."""
    env: dict[int, Any] = {}

    def read(v):
        return v.value if isinstance(v, Lit) else env[v.id]

    for v, a in zip(ir.inputs, args):
        env[v.id] = a
    for e in ir.eqns:
        impl = impls.get(e.prim) if impls is not None else None
        impl = impl or primitives.TABLE[e.prim].impl
        outs = impl(*[read(v) for v in e.inputs], **e.p)
        if not isinstance(outs, tuple):          # multi-output primitives return tuples
            outs = (outs,)
        for v, o in zip(e.outputs, outs):
            env[v.id] = o
    return [read(v) for v in ir.outputs]


def dead_code_elimination(ir: IR) -> IR:
    """`ir` without the equations none of its outputs depend on."""
    live = {v.id for v in ir.outputs if isinstance(v, Var)}
    kept = []
    for e in reversed(ir.eqns):
        if any(v.id in live for v in e.outputs):
            kept.append(e)
            live.update(v.id for v in e.inputs if isinstance(v, Var))
    return IR(ir.inputs, tuple(reversed(kept)), ir.outputs)
