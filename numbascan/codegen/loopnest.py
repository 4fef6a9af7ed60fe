"""Stage: IR -> CPU source — render programs as numba loop nests over preallocated buffers.

Every value of shape () is a local scalar; every other value is an array: a buffer allocated
once at the top of the generated function (never inside the time loop), or a view of an input
row. Each equation becomes a loop nest with static bounds. A scan equation becomes a call of
its own loop function, rendered into the same module; the time loop is `for t in range(n)`,
with a `break` when the step returns `ns.until`.

Tiny values are scalar code: inside a step whose unrolled code stays within a budget of work
(`unrolled_work` <= `UNROLL_BUDGET`; beyond it the whole step is loop nests), a value of at
most `SMALL_SIZE` elements is a set of scalar locals, one per element in C order (`v3_0,
v3_1`), and the equation that makes it is unrolled into straight-line code
(`Renderer.unrolled`); it is also stored to a buffer only for a consumer that is a loop nest
or a call. The last states of a small float output stay in locals from one step to the next
(`carried_window`), and small loop-invariant inputs are loaded into locals before the loop:
such a recurrence runs in registers.

Generated functions (see `render_scan_module` / `render_main_module`):

    scan_<h>(n_steps, seq..., out_buf..., non_seq..., capture..., rng_key, rng_base, ...) -> n_run
    main_<h>(input..., capture..., rng_key, rng_base, ...) -> tuple of outputs

Buffer layouts are those of `core/layout.py`; the binding of a scan's step to its rows and the time
loop are rendered by `scanloop.py` (shared with the CUDA stage).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..core.ir import IR, Eqn, Lit, Var
from ..core.primitives import REDUCE, TABLE
from . import linalg as la
from . import linrec as lr
from .emit import Lines, Module, _idx, dtype_src, literal_src

# vectorisable replacements for the C library's scalar functions (fastmath.py), and their
# short-latency versions for unrolled steps (shortmath.py)
FAST_SCALAR = {"tanh": "tanh_fast({0})", "exp": "exp_fast({0})", "expit": "expit_fast({0})"}
SHORT_SCALAR = {"tanh": "tanh_short({0})", "exp": "exp_short({0})",
                "expit": "expit_short({0})"}

# elementwise primitives that numba computes as an int64 on bools (True + True is 2) where
# NumPy's bool loop gives a bool (logical or, logical and)
INT_OF_BOOLS = ("add", "multiply")

# values made inside a step with at most this many elements live in scalar locals; an unrolled
# matmul has an inner dimension of at most SMALL_K
SMALL_SIZE = 16
SMALL_K = 16

# Unrolled code is sized by a budget on the work it writes out, never by value sizes alone.
# numba types and lowers every scalar statement on its own and LLVM optimises one long basic
# block in more than linear time: 64 unrolled multiply-adds of array elements compiled in
# 0.5 s, 256 in 5.3 s; an H=16 LSTM step with every gate unrolled took 47 s. A loop function
# unrolls its step's small values only when the work of all of them (`unrolled_work`, nested
# steps included) stays within UNROLL_BUDGET; beyond it the whole step is loop nests.
# Measured on 2 cores, a new process's compile time unrolled minus as loop nests, and run time
# unrolled / loop nests: work 60-100 (the seed's taps recurrence, Lorenz RK4, a 2x2 matrix
# state): -0.15 to -0.35 s, 0.7-0.85x; 175-375 (LSTM H=1, 2; RNN H=8): -0.1 to +0.2 s,
# 0.75-0.9x; 440-480 (LSTM H=4, 8): +0.3 s, 0.75x; 800-880 (LSTM H=16; 4 chained tanh over 16
# values, which a loop vectorises): +0.45 to +0.65 s, 0.8x and 1.6x.
UNROLL_BUDGET = 256
# an unrolled matmul has at most this many multiply-adds (M * N * K), each costing
# MATMUL_WORK (a load, a multiply, an add)
UNROLL_MATMUL_WORK = 64
MATMUL_WORK = 3
# work of one element of these primitives beyond its operation: an inlined polynomial
# (shortmath.py) of about 30 instructions, cheaper to compile than as many statements
INLINED_WORK = {"tanh": 8, "exp": 8, "expit": 9}

# elements above which a fused loop nest writes its results straight into their output rows
# (see Renderer.SCRATCH_ROWS)
SCRATCH_MAX = 128

# multiply-adds above which a matmul calls BLAS (np.dot with out=) instead of a loop nest
BLAS_MIN_WORK = 1024

# random draws in an array of at least this many elements call a bulk kernel (one call, a
# vectorised Philox loop) instead of a scalar function per element
RANDOM_FILL_MIN = 8


class Renderer:
    """Renders equations of one function body; `alloc` collects hoisted buffer allocations."""

    def __init__(self, module: Module):
        self.module = module
        self.alloc = Lines()
        self.names: dict[int, str] = {}
        self.counter = 0
        self.in_loop = False                 # rendering a scan's step (runs once per step)
        self.alias: dict[int, str] = {}      # var id -> row of an output buffer to write into
        self.aliased: set[int] = set()
        self.unroll = False                  # small values as element locals (steps only)
        self.elems: dict[int, list] = {}     # var id -> expression of each element, C order
        self.invariant: set[int] = set()     # step inputs that no step changes
        self.memory_reads: set[int] = set()  # var ids read by loop nests and calls
        # var id -> (source var, spec) of a static slice that only elementwise loops read: they
        # read the source in place (`read`), and no copy is made (`in_place_slices`)
        self.slices: dict[int, tuple] = {}

    # -- naming ---------------------------------------------------------------------------------
    def name(self, v):
        if isinstance(v, Lit):
            return literal_src(v.value, v.dtype)
        if v.id not in self.names:
            self.names[v.id] = f"v{len(self.names)}"
        return self.names[v.id]

    def fresh(self, prefix="i"):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def buffer(self, v: Var, out: Lines):
        """Storage for array value `v`: a hoisted allocation, or (for a step result) a view of
        the output buffer's row for this step, so the result is written in place."""
        name = self.name(v)
        if v.id in self.alias:
            out(f"{name} = {self.alias[v.id]}")
            self.aliased.add(v.id)
        else:
            self.alloc(f"{name} = np.empty({tuple(v.shape)!r}, dtype={dtype_src(v.dtype)})")
        return name

    def elem(self, v, index):
        """Expression of element `index` (a tuple of ints) of `v`."""
        if isinstance(v, Lit) or v.shape == ():
            return self.name(v)
        if v.id in self.elems:
            return self.elems[v.id][int(np.ravel_multi_index(index, v.shape))]
        return f"{self.name(v)}[{_idx(str(i) for i in index)}]"

    def read(self, v, index, out_shape=None):
        """Expression reading `v` at `index` (loop variables over `out_shape`, broadcasting)."""
        if isinstance(v, Lit) or v.shape == ():
            return self.name(v)
        out_shape = out_shape if out_shape is not None else v.shape
        offset = len(out_shape) - len(v.shape)
        idx = ["0" if (s == 1 and out_shape[offset + k] != 1) else index[offset + k]
               for k, s in enumerate(v.shape)]
        if v.id in self.slices:
            x, spec = self.slices[v.id]
            static = [str(s[1]) if s[0] == "int" else None for s in spec]
            return f"{self.name(x)}[{_idx(self._indexed(spec, static, idx))}]"
        return f"{self.name(v)}[{_idx(idx)}]"

    def loops(self, out, shape):
        """Open loops over `shape`; return the loop variable names."""
        names = []
        for s in shape:
            i = self.fresh()
            out(f"for {i} in range({s}):")
            out.indent()
            names.append(i)
        return names

    def close(self, out, n):
        for _ in range(n):
            out.dedent()

    # the loop nest over an equation's output elements (the CUDA renderer shares it out among
    # the threads of a block) and the barrier between equations (none in a CPU thread)
    def outer_loops(self, out, shape):
        return self.loops(out, shape)

    def close_outer(self, out, shape):
        self.close(out, len(shape))

    def barrier(self, out):
        pass

    def reduce_rule(self, prim):
        return REDUCE[prim]

    def copy_into(self, out, buf, row, v, shape):
        """buf[row, ...] = v for a value of `shape` (row None: the whole buffer)."""
        lead = [] if row is None else [row]
        if isinstance(v, Var) and v.id in self.elems:
            for k, index in enumerate(np.ndindex(*shape)):
                out(f"{buf}[{_idx(lead + [str(i) for i in index])}] = {self.elems[v.id][k]}")
            return
        if shape == ():
            out(f"{buf}[{_idx(lead)}] = {self.name(v)}" if lead else f"{buf} = {self.name(v)}")
            return
        idx = self.outer_loops(out, shape)
        out(f"{buf}[{_idx(lead + idx)}] = {self.read(v, idx, shape)}")
        self.close_outer(out, shape)

    # -- equations ------------------------------------------------------------------------------
    def body(self, out: Lines, eqns, results):
        """Render `eqns`; runs of elementwise equations of one shape share one loop nest."""
        eqns = sink_elementwise(eqns)
        uses: dict[int, int] = {}
        for e in eqns:
            for v in e.inputs:
                if isinstance(v, Var):
                    uses[v.id] = uses.get(v.id, 0) + 1
        for v in results:
            if isinstance(v, Var):
                uses[v.id] = uses.get(v.id, 0) + 1
        unrolled, stored = self.plan_unrolled(eqns)
        if self.IN_PLACE_SLICES:
            self.in_place_slices(eqns, results, unrolled)
        group: list = []

        def flush():
            if len(group) == 1:
                self.eqn(out, group[0])
            elif group:
                self.fused(out, group, uses)
            group.clear()

        for e in eqns:
            if id(e) in unrolled:
                flush()
                self.unrolled(out, e, stored)
            elif TABLE[e.prim].kind == "elementwise" and e.outputs[0].shape != ():
                if group and e.outputs[0].shape != group[0].outputs[0].shape:
                    flush()
                group.append(e)
            else:
                flush()
                self.eqn(out, e)
        flush()

    # a static slice read only by elementwise loop nests is read where it lies (CPU code):
    # its copy would be a loop nest to compile, and a buffer whose stores and loads, next to
    # the output rows a step writes, take LLVM past its limit of run-time alias checks
    # (8 pairs), so that the loops reading it were not vectorised (an LSTM's gates: 1.7 us a
    # step instead of 0.6)
    IN_PLACE_SLICES = False
    # a fused loop nest that writes several step results (of at most SCRATCH_MAX elements)
    # computes them into scratch buffers, copied to their output rows after the loop:
    # written straight into the rows, an LSTM's gates' loop (h and c, H=64) ran 3x slower
    # (LLVM did not vectorise it next to the reads of the previous rows). One result (an
    # RNN's h) ran as fast in place, and a large one (10^5 elements) 2x slower with the copy;
    # with a limit of 1024 the copies of an H=8 LSTM gradient's (8, 32) accumulators added
    # 0.35 s to its first call.
    SCRATCH_ROWS = False

    def in_place_slices(self, eqns, results, unrolled):
        made = {v.id for e in eqns for v in e.outputs}
        unrolled_made = {v.id for e in eqns if id(e) in unrolled for v in e.outputs}
        readers: dict[int, list] = {}
        for e in eqns:
            for v in e.inputs:
                if isinstance(v, Var):
                    readers.setdefault(v.id, []).append(e)
        result_ids = {v.id for v in results if isinstance(v, Var)}
        for e in eqns:
            if e.prim != "index" or len(e.inputs) != 1 or id(e) in unrolled:
                continue
            x, res = e.inputs[0], e.outputs[0]
            # the source is a value of this body (not a step input, which an in-place
            # output may overwrite before a later reader), an array, not itself in place
            if (not isinstance(x, Var) or x.id not in made or x.id in unrolled_made or
                    x.id in self.elems or x.id in self.slices or res.shape == () or
                    res.id in result_ids or res.id in self.alias or
                    any(s[0] not in ("int", "slice") for s in e.p["spec"])):
                continue
            users = readers.get(res.id, [])
            if users and all(TABLE[u.prim].kind == "elementwise" and id(u) not in unrolled and
                             u.outputs[0].shape != () for u in users):
                self.slices[res.id] = (x, e.p["spec"])

    # -- unrolled equations (small values in a step) ------------------------------------------
    def unrollable(self, e: Eqn):
        return self.unroll and can_unroll(e)

    def plan_unrolled(self, eqns):
        """Equations to unroll (by id), and the values they make that must also be stored to
        a buffer (read by a loop nest or a call). Small loop-invariant inputs that unrolled
        equations read are loaded into locals once, before the time loop."""
        unrolled = {id(e) for e in eqns if self.unrollable(e)}
        made = {v.id for e in eqns if id(e) in unrolled for v in e.outputs if v.shape != ()}
        self.memory_reads |= {v.id for e in eqns if id(e) not in unrolled
                              for v in e.inputs if isinstance(v, Var)}
        stored = made & self.memory_reads
        for e in eqns:
            if id(e) not in unrolled:
                continue
            for v in e.inputs:
                if (isinstance(v, Var) and v.id in self.invariant and v.id not in self.elems
                        and 0 < v.size <= SMALL_SIZE and v.shape != ()):
                    loads = [self.elem(v, index) for index in np.ndindex(*v.shape)]
                    self.elems[v.id] = [f"{self.name(v)}_{k}" for k in range(v.size)]
                    for local, load in zip(self.elems[v.id], loads):
                        self.alloc(f"{local} = {load}")
        return unrolled, stored

    def unrolled(self, out: Lines, e: Eqn, stored):
        """Straight-line code for `e`: computing equations bind one local per element, views
        (index, reshape, ...) only rename the elements of their input."""
        res = e.outputs[0]
        kind = ("reduce" if e.prim in REDUCE else
                "elementwise" if TABLE[e.prim].kind == "elementwise" else e.prim)
        exprs = getattr(self, "u_" + kind)(e)
        if res.shape == ():
            out(f"{self.name(res)} = {exprs[0]}")
            return
        if kind in ("elementwise", "matmul", "reduce", "index_add"):
            names = [f"{self.name(res)}_{k}" for k in range(res.size)]
            for name, expr in zip(names, exprs):
                out(f"{name} = {expr}")
            exprs = names
        self.elems[res.id] = exprs
        if res.id in stored:
            self.copy_into(out, self.buffer(res, out), None, res, res.shape)

    @staticmethod
    def _bcast(v, index, shape):
        """The element of `v` that broadcasting to `shape` puts at `index`."""
        offset = len(shape) - len(v.shape)
        return tuple(0 if s == 1 else index[offset + k] for k, s in enumerate(v.shape))

    def u_elementwise(self, e: Eqn):
        res = e.outputs[0]
        return [self.cast(self.scalar_expr(e, [
            self.lit_operand(e, v) if isinstance(v, Lit) else
            self.elem(v, self._bcast(v, index, res.shape)) for v in e.inputs], short=True),
            res.dtype) for index in np.ndindex(*res.shape)]

    def u_matmul(self, e: Eqn):
        a, b = e.inputs
        exprs = []
        for index in np.ndindex(*e.outputs[0].shape):
            i = index[:1] if a.ndim == 2 else ()
            j = index[-1:] if b.ndim == 2 else ()
            exprs.append(" + ".join(f"{self.elem(a, i + (p,))} * {self.elem(b, (p,) + j)}"
                                    for p in range(a.shape[-1])))
        return exprs

    def u_reduce(self, e: Eqn):
        """Accumulated left to right, as the loop nest does; sums and products start from the
        first element when no conversion is involved."""
        x, res = e.inputs[0], e.outputs[0]
        axes = e.p["axes"]
        _, template, init = REDUCE[e.prim]
        kept = [a for a in range(x.ndim) if a not in axes]
        first = init is None or (e.prim in ("reduce_sum", "reduce_prod") and x.dtype == res.dtype)
        exprs = []
        for outer in np.ndindex(*[x.shape[a] for a in kept]):
            full = dict(zip(kept, outer))
            acc = None if first else literal_src(eval(init), res.dtype)
            for inner in np.ndindex(*[x.shape[a] for a in axes]):
                full.update(zip(axes, inner))
                elem = self.elem(x, tuple(full[a] for a in range(x.ndim)))
                acc = elem if acc is None else template.format(acc=acc, x=elem)
            if acc is None:                       # no elements: the reduction's identity
                acc = literal_src(eval(init), res.dtype)
            exprs.append(self.cast(acc, res.dtype))
        return exprs

    def u_index(self, e: Eqn):
        x, spec = e.inputs[0], e.p["spec"]
        exprs = []
        for index in np.ndindex(*e.outputs[0].shape):
            it = iter(index)
            src = [s[1] if s[0] == "int" else s[1] + s[2] * next(it) for s in spec]
            exprs.append(self.elem(x, tuple(src) + tuple(it)))
        return exprs

    def u_index_add(self, e: Eqn):
        """`base` with `update` added at static indices (each element of `update` lands on its
        own element of the result: the indices are ints and slices)."""
        base, upd, res = e.inputs[0], e.inputs[1], e.outputs[0]
        exprs = [self.elem(base, index) for index in np.ndindex(*res.shape)]
        for index in np.ndindex(*upd.shape):
            it = iter(index)
            dst = [s[1] if s[0] == "int" else s[1] + s[2] * next(it) for s in e.p["spec"]]
            k = int(np.ravel_multi_index(tuple(dst) + tuple(it), res.shape))
            exprs[k] = self.cast(f"({exprs[k]} + {self.elem(upd, index)})", res.dtype)
        return exprs

    def u_reshape(self, e: Eqn):
        x = e.inputs[0]
        return [self.elem(x, np.unravel_index(k, x.shape) if x.shape else ())
                for k in range(e.outputs[0].size)]

    def u_transpose(self, e: Eqn):
        x, axes = e.inputs[0], e.p["axes"]
        exprs = []
        for index in np.ndindex(*e.outputs[0].shape):
            src = [0] * x.ndim
            for k, a in enumerate(axes):
                src[a] = index[k]
            exprs.append(self.elem(x, tuple(src)))
        return exprs

    def u_broadcast_to(self, e: Eqn):
        x, res = e.inputs[0], e.outputs[0]
        return [self.elem(x, self._bcast(x, index, res.shape)) for index in np.ndindex(*res.shape)]

    def u_concatenate(self, e: Eqn):
        axis = e.p["axis"]
        exprs = []
        for index in np.ndindex(*e.outputs[0].shape):
            k = index[axis]
            for x in e.inputs:
                if k < x.shape[axis]:
                    break
                k -= x.shape[axis]
            exprs.append(self.elem(x, index[:axis] + (k,) + index[axis + 1:]))
        return exprs

    def fused(self, out: Lines, group, uses):
        """One loop nest for elementwise equations of one output shape; values used only inside
        the group live in scalar locals, the others are also stored to their buffers."""
        shape = group[0].outputs[0].shape
        inside = {e.outputs[0].id: 0 for e in group}
        for e in group:
            for v in e.inputs:
                if isinstance(v, Var) and v.id in inside:
                    inside[v.id] += 1
        stored = {vid for vid, n in inside.items() if uses.get(vid, 0) > n}
        targets = {e.outputs[0].id: self.buffer(e.outputs[0], out) for e in group
                   if e.outputs[0].id in stored}
        rows = [e.outputs[0] for e in group if e.outputs[0].id in targets and
                e.outputs[0].id in self.aliased]
        copies = []
        if self.SCRATCH_ROWS and len(rows) >= 2 and int(np.prod(shape)) <= SCRATCH_MAX:
            for v in rows:
                scratch = self.scratch(shape, v.dtype, prefix="w")
                copies.append((targets[v.id], scratch))
                targets[v.id] = scratch
        idx = self.outer_loops(out, shape)
        local = {}
        for e in group:
            ops = [self.lit_operand(e, v) if isinstance(v, Lit) else
                   local[v.id] if v.id in local else self.read(v, idx, shape) for v in e.inputs]
            res = e.outputs[0]
            name = self.fresh("e")
            out(f"{name} = {self.cast(self.scalar_expr(e, ops), res.dtype)}")
            local[res.id] = name
            if res.id in targets:
                out(f"{targets[res.id]}[{_idx(idx)}] = {name}")
        self.close_outer(out, shape)
        for row, scratch in copies:
            idx = self.outer_loops(out, shape)
            out(f"{row}[{_idx(idx)}] = {scratch}[{_idx(idx)}]")
            self.close_outer(out, shape)

    def eqn(self, out: Lines, e: Eqn):
        prim = TABLE[e.prim]
        if prim.kind == "elementwise":
            return self.elementwise(out, e)
        if e.prim in REDUCE:
            return self.reduce(out, e)
        method = getattr(self, "r_" + e.prim, None)
        if method is None:
            raise NotImplementedError(f"no CPU renderer for primitive {e.prim!r}")
        return method(out, e)

    def scalar_expr(self, e: Eqn, operands, short=False):
        if e.prim == "convert":
            dt = e.p["dtype"]
            if isinstance(e.inputs[0], Lit):      # folded: numba types np.float64(1.0) slowly
                return literal_src(np.asarray(e.inputs[0].value).astype(dt).item(), dt)
            return f"({operands[0]} != 0)" if dt == np.bool_ else f"np.{dt.name}({operands[0]})"
        static = static_comparison(e)
        if static is not None:
            return static
        operands = self.loop_operands(e, operands)
        if e.prim in FAST_SCALAR and e.outputs[0].dtype.kind == "f":
            return (SHORT_SCALAR if short else FAST_SCALAR)[e.prim].format(*operands)
        expr = TABLE[e.prim].scalar.format(*operands)
        if e.outputs[0].dtype == np.bool_ and e.prim in INT_OF_BOOLS:
            return f"({expr} != 0)"
        return expr

    def loop_operands(self, e: Eqn, operands):
        """`operands` converted to the dtype NumPy's loop computes in where numba would
        compute in another: a float result converts its bool and integer operands to its
        dtype, as NumPy does (numba adds a uint64 and an int64 in int64, NumPy in float64).
        Literals are already rendered in that dtype (`lit_operand`)."""
        out = e.outputs[0].dtype
        if out.kind != "f":
            return operands
        first = 1 if e.prim == "where" else 0     # the condition of `where` stays bool
        return [f"np.{out.name}({op})" if k >= first and isinstance(v, Var) and
                v.dtype.kind in "biu" else op
                for k, (v, op) in enumerate(zip(e.inputs, operands))]

    def lit_operand(self, e: Eqn, lit: Lit):
        """Render a literal in the dtype NumPy would compute with (NEP 50: a Python scalar
        is weak, a NumPy scalar strong; a float result computes in its own dtype)."""
        var_dtypes = [v.dtype for v in e.inputs if isinstance(v, Var)]
        if e.prim == "where":
            var_dtypes = [e.outputs[0].dtype]
        out = e.outputs[0].dtype
        if out.kind == "f" and lit.dtype.kind in "biu" and not (
                e.prim == "where" and lit is e.inputs[0]):
            return literal_src(lit.value, out)
        if not lit.weak or not var_dtypes:
            return literal_src(lit.value, lit.dtype)
        common = np.result_type(*var_dtypes)
        kinds = "biuf"
        if kinds.index(lit.dtype.kind) <= kinds.index(common.kind if common.kind in kinds
                                                       else "f"):
            return literal_src(lit.value, common)
        return literal_src(lit.value, lit.dtype)

    def elementwise(self, out: Lines, e: Eqn):
        res = e.outputs[0]
        shape = res.shape

        def operand(v, idx):
            return self.lit_operand(e, v) if isinstance(v, Lit) else self.read(v, idx, shape)

        if shape == ():
            expr = self.scalar_expr(e, [operand(v, ()) for v in e.inputs])
            out(f"{self.name(res)} = {self.cast(expr, res.dtype)}")
            return
        name = self.buffer(res, out)
        idx = self.outer_loops(out, shape)
        expr = self.scalar_expr(e, [operand(v, idx) for v in e.inputs])
        out(f"{name}[{_idx(idx)}] = {expr}")
        self.close_outer(out, shape)

    @staticmethod
    def cast(expr, dtype):
        dt = np.dtype(dtype)
        if dt in (np.float64, np.int64, np.bool_):
            return expr
        return f"np.{dt.name}({expr})"

    def reduce(self, out: Lines, e: Eqn):
        x, res = e.inputs[0], e.outputs[0]
        axes, keepdims = e.p["axes"], e.p["keepdims"]
        _, template, init = self.reduce_rule(e.prim)
        kept = [a for a in range(x.ndim) if a not in axes]
        target = self.name(res) if res.shape == () else self.buffer(res, out)
        outer = self.outer_loops(out, [x.shape[a] for a in kept])
        acc = self.fresh("acc")
        full = {a: i for a, i in zip(kept, outer)}
        if init is None:                          # max/min start from the first element
            first = [full.get(a, "0") for a in range(x.ndim)]
            out(f"{acc} = {self.name(x)}[{_idx(first)}]")
        else:
            out(f"{acc} = {literal_src(eval(init), res.dtype)}")
        inner = self.loops(out, [x.shape[a] for a in axes])
        full.update(zip(axes, inner))
        elem = f"{self.name(x)}[{_idx([full[a] for a in range(x.ndim)])}]"
        out(f"{acc} = {template.format(acc=acc, x=elem)}")
        self.close(out, len(axes))
        oidx = [full[a] if a in kept else "0" for a in range(x.ndim)] if keepdims else outer
        if res.shape == ():
            out(f"{target} = {self.cast(acc, res.dtype)}")
        else:
            out(f"{target}[{_idx(oidx)}] = {acc}")
        self.close_outer(out, [x.shape[a] for a in kept])

    def _arg_reduce(self, out: Lines, e: Eqn, better):
        x, res = e.inputs[0], e.outputs[0]
        axis, keepdims = e.p["axis"], e.p["keepdims"]
        kept = [a for a in range(x.ndim) if a != axis]
        target = self.name(res) if res.shape == () else self.buffer(res, out)
        outer = self.outer_loops(out, [x.shape[a] for a in kept])
        full = dict(zip(kept, outer))
        best, bi, r = self.fresh("best"), self.fresh("bi"), self.fresh("r")
        full[axis] = "0"
        out(f"{best} = {self.name(x)}[{_idx([full[a] for a in range(x.ndim)])}]")
        out(f"{bi} = 0")
        out(f"for {r} in range(1, {x.shape[axis]}):")
        out.indent()
        full[axis] = r
        val = self.fresh("val")
        out(f"{val} = {self.name(x)}[{_idx([full[a] for a in range(x.ndim)])}]")
        out(f"if {val} {better} {best} or ({val} != {val} and {best} == {best}):")
        out(f"    {best} = {val}")
        out(f"    {bi} = {r}")
        out.dedent()
        if res.shape == ():
            out(f"{target} = {bi}")
        else:
            oidx = [full[a] if a != axis else "0" for a in range(x.ndim)] if keepdims else outer
            out(f"{target}[{_idx(oidx)}] = {bi}")
        self.close_outer(out, [x.shape[a] for a in kept])

    def r_argmax(self, out, e):
        self._arg_reduce(out, e, ">")

    def r_argmin(self, out, e):
        self._arg_reduce(out, e, "<")

    def r_cumsum(self, out: Lines, e: Eqn):
        x, res = e.inputs[0], e.outputs[0]
        axis = e.p["axis"]
        name = self.buffer(res, out)
        kept = [a for a in range(x.ndim) if a != axis]
        outer = self.outer_loops(out, [x.shape[a] for a in kept])
        acc, r = self.fresh("acc"), self.fresh("r")
        out(f"{acc} = {literal_src(0, res.dtype)}")
        out(f"for {r} in range({x.shape[axis]}):")
        out.indent()
        full = dict(zip(kept, outer))
        full[axis] = r
        idx = _idx([full[a] for a in range(x.ndim)])
        out(f"{acc} = {acc} + {self.name(x)}[{idx}]")
        out(f"{name}[{idx}] = {acc}")
        out.dedent()
        self.close_outer(out, [x.shape[a] for a in kept])

    # a float matmul of loop nests calls the loops of codegen/matmul.py
    MATMUL_FUNCTIONS = {"matmul": "matmul_nb", "matvec": "matvec_nb", "vecmat": "vecmat_nb"}

    def r_matmul(self, out: Lines, e: Eqn):
        a, b = e.inputs
        res = e.outputs[0]
        A, B = self.name(a), self.name(b)
        K = a.shape[-1]
        p = self.fresh("p")
        if a.ndim == 1 and b.ndim == 1:
            acc = self.fresh("acc")
            out(f"{acc} = {literal_src(0, res.dtype)}")
            out(f"for {p} in range({K}):")
            out(f"    {acc} += {A}[{p}] * {B}[{p}]")
            out(f"{self.name(res)} = {self.cast(acc, res.dtype)}")
            return
        R = self.buffer(res, out)
        work = (a.shape[0] if a.ndim == 2 else 1) * K * (b.shape[1] if b.ndim == 2 else 1)
        if work >= BLAS_MIN_WORK and a.dtype == b.dtype == res.dtype and a.dtype.kind == "f":
            out(f"np.dot({A}, {B}, {R})")  # BLAS gemv/gemm into the preallocated result
            self.module.uses_blas = True
            return
        if a.dtype == b.dtype == res.dtype and a.dtype.kind == "f" and self.MATMUL_FUNCTIONS:
            kind = "matvec" if b.ndim == 1 else "vecmat" if a.ndim == 1 else "matmul"
            out(f"{self.MATMUL_FUNCTIONS[kind]}({A}, {B}, {R})")
            return
        if b.ndim == 1:                    # (m, k) @ (k,) -> (m,)
            i, acc = self.fresh(), self.fresh("acc")
            out(f"for {i} in range({a.shape[0]}):")
            out(f"    {acc} = {literal_src(0, res.dtype)}")
            out(f"    for {p} in range({K}):")
            out(f"        {acc} += {A}[{i}, {p}] * {B}[{p}]")
            out(f"    {R}[{i}] = {acc}")
            return
        N = b.shape[1]
        j = self.fresh("j")
        rows = [] if a.ndim == 1 else [self.fresh()]
        if rows:
            out(f"for {rows[0]} in range({a.shape[0]}):")
            out.indent()
        ridx = f"{rows[0]}, " if rows else ""
        aval = self.fresh("a")
        out(f"for {j} in range({N}):")
        out(f"    {R}[{ridx}{j}] = 0")
        out(f"for {p} in range({K}):")
        out(f"    {aval} = {A}[{ridx}{p}]")
        out(f"    for {j} in range({N}):")
        out(f"        {R}[{ridx}{j}] += {aval} * {B}[{p}, {j}]")
        if rows:
            out.dedent()

    # -- linear algebra: calls of the loops of codegen/linalg.py -------------------------------
    LINALG_FUNCTIONS = {"solve": "lu_solve_nb", "slogdet": "slogdet_nb",
                        "cholesky": "cholesky_nb", "triangular_solve": "triangular_nb",
                        "eigh": "eigh_nb"}

    def scratch(self, shape, dtype, prefix="lu"):
        """A work buffer of one equation, allocated with the function's other buffers."""
        name = self.fresh(prefix)
        self.alloc(f"{name} = np.empty({tuple(shape)!r}, dtype={dtype_src(dtype)})")
        return name

    @contextmanager
    def one_thread(self, out, e: Eqn):
        """Code that one of the threads running the step runs (a CPU step: one thread)."""
        yield

    def large_linalg(self, out, e: Eqn, names):
        """A matrix too large for loop code (la.LOOP_MAX): numba's np.linalg, LAPACK."""
        out(la.LAPACK[e.prim].format(**names))
        self.module.uses_blas = True

    def linalg(self, out, e: Eqn, args, **names):
        """The call of the loops of `e` on `args` (a LAPACK call for a large matrix, filled
        with `names`); "lu" in args stands for a new scratch buffer of the matrix's shape and
        dtype, "work" for one of its shape in float64."""
        a = e.inputs[0]
        if a.shape[0] > la.LOOP_MAX and e.prim in la.LAPACK:
            return self.large_linalg(out, e, dict(names, a=self.name(a)))
        args = [self.scratch(a.shape, a.dtype) if x == "lu" else
                self.scratch(a.shape, np.float64, "work") if x == "work" else x for x in args]
        call = f"{self.LINALG_FUNCTIONS[e.prim]}({', '.join([self.name(a)] + args)})"
        with self.one_thread(out, e):
            out(f"{names['result']} = {call}" if "result" in names else call)

    @staticmethod
    def _columns(name, v):
        """`name` of a right-hand side or solution `v` as the (n, m) the loops take."""
        return f"{name}[:, None]" if v.ndim == 1 else name

    def r_solve(self, out: Lines, e: Eqn):
        b, res = e.inputs[1], e.outputs[0]
        x = self.buffer(res, out)
        self.linalg(out, e, [self._columns(self.name(b), b), "lu", self._columns(x, res)],
                    x=x, b=self.name(b), all=":, :" if res.ndim == 2 else ":")

    def r_triangular_solve(self, out: Lines, e: Eqn):
        b, res = e.inputs[1], e.outputs[0]
        x = self.buffer(res, out)
        # bool(...): numba would compile the loops once per literal True or False
        self.linalg(out, e, [self._columns(self.name(b), b), self._columns(x, res),
                             f"bool({e.p['lower']})", f"bool({e.p['transpose']})"])

    def r_cholesky(self, out: Lines, e: Eqn):
        x = self.buffer(e.outputs[0], out)
        self.linalg(out, e, [x], x=x)

    def r_slogdet(self, out: Lines, e: Eqn):
        dt = e.outputs[0].dtype
        if dt == np.float64:
            sign, logabsdet = (self.name(v) for v in e.outputs)
        else:                                     # the loops give float64: converted below
            sign, logabsdet = self.fresh("sign"), self.fresh("logabsdet")
        self.linalg(out, e, ["lu"], result=f"{sign}, {logabsdet}", sign=sign,
                    logabsdet=logabsdet)
        if dt != np.float64:
            for v, value in zip(e.outputs, (sign, logabsdet)):
                out(f"{self.name(v)} = {self.cast(value, dt)}")

    def r_eigh(self, out: Lines, e: Eqn):
        w, v = (self.buffer(res, out) for res in e.outputs)
        self.linalg(out, e, ["work", "work", w, v], w=w, v=v)

    # -- linear recurrences: calls of the loops of codegen/linrec.py ---------------------------
    # a step's recurrence runs in its thread (the step may itself run under prange); a program
    # body's may run across threads (codegen/linrec.py) when its work is at least
    # linrec.parallel_below(), read here and again at each call
    LINREC_FUNCTIONS = {"diagonal": "diagonal_scan_nb", "matrix": "matrix_scan_nb"}
    LINREC_PARALLEL = {"diagonal": "linrec_diagonal_parallel_nb",
                       "matrix": "linrec_matrix_parallel_nb"}

    def linrec_view(self, name, v, shape):
        """`name` (of value `v`) as the C-contiguous array of `shape` the loops take."""
        return f"np.ascontiguousarray({name}).reshape({tuple(shape)!r})"

    def r_linrec(self, out: Lines, e: Eqn):
        b, res, p = e.inputs[1], e.outputs[0], e.p
        R = self.buffer(res, out)
        T = b.shape[0]
        if T == 0:
            return
        m = int(np.prod(b.shape[1:], dtype=np.int64))
        if p["kind"] == "diagonal":
            shapes = [(1, m) if p["invariant"] else (T, m), (T, m), (m,)]
        else:
            shapes = [(1, m, m) if p["invariant"] else (T, m, m), (T, m), (m,)]
        args = []
        for v, shape in zip(e.inputs, shapes):
            if v.shape == ():              # a scalar local: into a one-element buffer
                name = self.scratch(shape, v.dtype, prefix="lr")
                out(f"{name}[{_idx(['0'] * len(shape))}] = {self.name(v)}")
                args.append(name)
            else:
                args.append(self.linrec_view(self.name(v), v, shape))
        args.append(R if tuple(res.shape) == shapes[1] else f"{R}.reshape({shapes[1]!r})")
        if p["reverse"]:                   # rows in the recurrence's order (codegen/linrec.py)
            args = [f"{x}[::-1]" if k != 2 and not (k == 0 and p["invariant"]) else x
                    for k, x in enumerate(args)]
        kind = p["kind"]
        if not self.in_loop and self.LINREC_PARALLEL and \
                lr.work(kind, b.shape) >= lr.parallel_below(kind):
            call = f"{self.LINREC_PARALLEL[kind]}({', '.join(args)}, linrec_threads_nb())"
            self.module.calls_parallel = True   # runs capped: NUMBASCAN_NUM_THREADS
        else:
            call = f"{self.LINREC_FUNCTIONS[kind]}({', '.join(args)})"
        with self.one_thread(out, e):
            out(call)

    def _unravel(self, flat, shape):
        strides = np.cumprod((1,) + tuple(shape[::-1]))[:-1][::-1]
        return [f"({flat} // {st}) % {s}" if st > 1 else f"{flat} % {s}"
                for st, s in zip(strides, shape)] if shape else []

    def r_reshape(self, out: Lines, e: Eqn):
        x, res = e.inputs[0], e.outputs[0]
        if res.shape == ():
            out(f"{self.name(res)} = {self.read(x, ['0'] * x.ndim)}")
            return
        units = _unit_axes_index(x.shape, res.shape)
        if isinstance(x, Var) and x.shape != () and res.id not in self.alias:
            if units is not None and _keeps_c_layout(units):
                # a view by basic indexing (numba compiles `reshape` in ~0.15 s per pair of
                # array types, an index in ~0.005 s)
                out(f"{self.name(res)} = {self.name(x)}" + (f"[{_idx(units)}]" if units else ""))
                return
            if units is None:
                # a view when x's data is contiguous at run time (numba checks; copies otherwise)
                out(f"{self.name(res)} = np.ascontiguousarray({self.name(x)}).reshape("
                    f"{tuple(res.shape)!r})")
                return
        R = self.buffer(res, out)
        if x.shape == () or isinstance(x, Lit):
            out(f"{R}[{_idx(['0'] * res.ndim)}] = {self.name(x)}")
            return
        if units is not None:                 # axes of length 1 added or dropped: a copy
            idx = self.outer_loops(out, res.shape)
            src = [i for i, s in zip(idx, res.shape) if s != 1]
            src_it = iter(src)
            out(f"{R}[{_idx(idx)}] = "
                f"{self.name(x)}[{_idx('0' if s == 1 else next(src_it) for s in x.shape)}]")
            self.close_outer(out, res.shape)
            return
        f = self.fresh("f")
        out(f"for {f} in range({res.size}):")
        out(f"    {R}[{_idx(self._unravel(f, res.shape))}] = "
            f"{self.name(x)}[{_idx(self._unravel(f, x.shape))}]")

    def r_transpose(self, out: Lines, e: Eqn):
        x, res = e.inputs[0], e.outputs[0]
        R = self.buffer(res, out)
        idx = self.outer_loops(out, res.shape)
        src = [None] * x.ndim
        for k, a in enumerate(e.p["axes"]):
            src[a] = idx[k]
        out(f"{R}[{_idx(idx)}] = {self.name(x)}[{_idx(src)}]")
        self.close_outer(out, res.shape)

    def r_broadcast_to(self, out: Lines, e: Eqn):
        x, res = e.inputs[0], e.outputs[0]
        R = self.buffer(res, out)
        idx = self.outer_loops(out, res.shape)
        out(f"{R}[{_idx(idx)}] = {self.read(x, idx, res.shape)}")
        self.close_outer(out, res.shape)

    def r_concatenate(self, out: Lines, e: Eqn):
        res, axis = e.outputs[0], e.p["axis"]
        R = self.buffer(res, out)
        offset = 0
        for x in e.inputs:
            idx = self.outer_loops(out, x.shape)
            dst = list(idx)
            dst[axis] = f"{offset} + {idx[axis]}"
            out(f"{R}[{_idx(dst)}] = {self.read(x, idx)}")
            self.close_outer(out, x.shape)
            offset += x.shape[axis]

    def _index_source(self, out: Lines, spec, dyn):
        """Index expressions per indexed axis (None for a slice, filled in by the loops)."""
        src, dyn_it = [], iter(dyn)
        for s in spec:
            if s[0] == "int":
                src.append(str(s[1]))
            elif s[0] == "dyn":
                d = self.fresh("d")
                out(f"{d} = {self.name(next(dyn_it))}")
                out(f"if {d} < 0:")
                out(f"    {d} += {s[1]}")
                src.append(d)
            else:
                src.append(None)
        return src

    def _indexed(self, spec, src, loop_idx):
        it = iter(loop_idx)
        full = [sv if sv is not None else f"{s[1]} + {s[2]} * {next(it)}"
                for s, sv in zip(spec, src)]
        return full + list(it)

    def r_index(self, out: Lines, e: Eqn):
        x, dyn, res = e.inputs[0], e.inputs[1:], e.outputs[0]
        if res.id in self.slices:            # read in place by its readers
            return
        spec = e.p["spec"]
        src = self._index_source(out, spec, dyn)
        if all(s is not None for s in src) and res.id not in self.alias:   # a row view
            out(f"{self.name(res)} = {self.name(x)}[{_idx(src)}]")
            return
        if res.shape == ():
            out(f"{self.name(res)} = {self.name(x)}[{_idx(src)}]")
            return
        R = self.buffer(res, out)
        loop_idx = self.outer_loops(out, res.shape)
        out(f"{R}[{_idx(loop_idx)}] = {self.name(x)}[{_idx(self._indexed(spec, src, loop_idx))}]")
        self.close_outer(out, res.shape)

    def r_index_add(self, out: Lines, e: Eqn):
        base, upd, dyn, res = e.inputs[0], e.inputs[1], e.inputs[2:], e.outputs[0]
        spec = e.p["spec"]
        R = self.buffer(res, out)
        self.copy_into(out, R, None, base, res.shape)
        self.barrier(out)
        src = self._index_source(out, spec, dyn)
        loop_idx = self.outer_loops(out, upd.shape)
        target = _idx(self._indexed(spec, src, loop_idx))
        out(f"{R}[{target}] += {self.read(upd, loop_idx)}")
        self.close_outer(out, upd.shape)

    def r_random(self, out: Lines, e: Eqn):
        key, base = (self.name(v) for v in e.inputs)
        res, p = e.outputs[0], e.p
        fn = self.RANDOM_FUNCTIONS[p["kind"]]
        self.module.draws = True
        width = p["dist"][0] if p["kind"] == "binomial" else 1
        args = ", ".join(repr(a) for a in p["dist"])
        if res.shape == ():
            out(f"{self.name(res)} = {fn}({key}, {base} + np.uint64({p['offset']}), {args})")
            return
        R = self.buffer(res, out)
        fill = self.RANDOM_FILL.get(p["kind"]) if res.size >= RANDOM_FILL_MIN else None
        if fill is not None:
            # the bulk kernel (every bit as the scalar function's): its Philox loop vectorises.
            # It fills a 1-d array: an n-d result is drawn into a flat one and copied
            flat = R if res.ndim == 1 else self.fresh("drawn")
            if flat != R:
                self.alloc(f"{flat} = np.empty({res.size}, dtype={dtype_src(res.dtype)})")
            out(f"{fill}({key}, {base} + np.uint64({p['offset']}), {args}, {flat})")
            if flat != R:
                (f,) = self.outer_loops(out, (res.size,))
                out(f"{R}[{_idx(self._unravel(f, res.shape))}] = {flat}[{f}]")
                self.close_outer(out, (res.size,))
            return
        (f,) = self.outer_loops(out, (res.size,))
        out(f"{R}[{_idx(self._unravel(f, res.shape))}] = {fn}({key}, {base} + "
            f"np.uint64({p['offset']}) + np.uint64({f} * {width}), {args})")
        self.close_outer(out, (res.size,))

    # how a scan inside a program or a step is rendered: its loop function, the storage of its
    # buffers, the arguments added to its call (the CUDA renderer replaces these)
    RANDOM_FUNCTIONS = {"uniform": "uniform_nb", "normal": "normal_nb", "binomial": "binomial_nb"}
    # an array of at least RANDOM_FILL_MIN draws is one call of a bulk kernel (random.py)
    RANDOM_FILL = {"uniform": "fill_uniform_nb", "normal": "fill_normal_nb",
                   "binomial": "fill_binomial_nb"}
    NESTED_SCAN_ARGS: tuple = ()
    # a scan step's bound values are named in the order the step reads them (scanloop.py)
    NAME_ROWS_FIRST = False

    def nested_scan(self, step, layout):
        """Render the function of a scan nested in this body; -> its name. Subclasses do:
        `cpu.LoopRenderer` (a loop function of the same module), `cuda.CudaRenderer`."""
        raise NotImplementedError

    def call_scan(self, step, fname, args, kinds):
        """The call of a nested scan's function `fname`; `kinds`: (dtype, ndim, fresh) of each
        argument (`cpu.ProgramRenderer` calls a program's scans through pointers)."""
        return f"{fname}({', '.join(list(args) + list(self.NESTED_SCAN_ARGS))})"

    def scan_buffer(self, name, shape, dtype):
        self.alloc(f"{name} = np.empty({tuple(shape)!r}, dtype={dtype_src(dtype)})")

    def r_reverse_rows(self, out: Lines, e: Eqn):
        x, n, res = e.inputs[0], e.inputs[1], e.outputs[0]
        R = self.buffer(res, out)
        rows = self.fresh("n")
        out(f"{rows} = {self.name(n)}")
        idx = self.outer_loops(out, res.shape)
        src = _idx([f"{rows} - 1 - {idx[0]}"] + idx[1:])
        out(f"{R}[{_idx(idx)}] = {self.name(x)}[{src}] if {idx[0]} < {rows} else "
            f"{literal_src(0, res.dtype)}")
        self.close_outer(out, res.shape)

    def r_scan(self, out: Lines, e: Eqn):
        step, layout, n = e.p["step"], e.p["layout"], e.p["n_steps"]
        fname = self.nested_scan(step, layout)
        seq_vars, init_vars, rest_vars, rng_vars, dynamic = layout.split_inputs(e.inputs)
        seqs = [self.name(v) for v in seq_vars]
        inits = iter(init_vars)
        bufs, shapes = [], []
        for o, res in zip(layout.outs, e.outputs):
            shape = (o.buffer_rows(n),) + (res.shape if o.keep == "last" else res.shape[1:])
            shapes.append(shape)
            b = self.fresh("sbuf")
            self.scan_buffer(b, shape, res.dtype)
            bufs.append(b)
            if o.taps:
                init = next(inits)
                if o.taps == (-1,):
                    self.copy_into(out, b, "0", init, shape[1:])
                else:
                    self.copy_into(out, b, None, init, (o.L,) + shape[1:])
        self.barrier(out)
        rest = [self.name(v) for v in rest_vars + rng_vars]
        nrun = self.fresh("nrun")
        trip = [f"min({n}, max(0, {self.name(dynamic[0])}))", self.name(dynamic[1])] \
            if dynamic else [str(n)]
        # (dtype, ndim, fresh) of each argument: fresh buffers are C-contiguous by making
        kinds = ([(np.dtype(np.int64), 0, True)] * len(trip) +
                 [(v.dtype, v.ndim, False) for v in seq_vars] +
                 [(res.dtype, len(shape), True) for res, shape in zip(e.outputs, shapes)] +
                 [(v.dtype, v.ndim, False) for v in rest_vars + rng_vars])
        args = trip + seqs + bufs + rest
        out(f"{nrun} = {self.call_scan(step, fname, args, kinds)}")
        if layout.counts_steps:
            out(f"{self.name(e.outputs[len(layout.outs)])} = {nrun}")
        for o, res, b in zip(layout.outs, e.outputs, bufs):
            if o.keep == "last":
                out(f"{self.name(res)} = {b}[{o.last_row(nrun)}]")
            else:
                out(f"{self.name(res)} = {_rows_src(b, o.step_rows())}")


# `x op y` as `y op' x`, and whether `x op y` holds (when x is below y, when x is above y)
SWAPPED = {"less": "greater", "less_equal": "greater_equal", "greater": "less",
           "greater_equal": "less_equal", "equal": "equal", "not_equal": "not_equal"}
HOLDS = {"less": (True, False), "less_equal": (True, False), "greater": (False, True),
         "greater_equal": (False, True), "equal": (False, False), "not_equal": (True, True)}


def static_comparison(e: Eqn):
    """"True" or "False" for a comparison of an integer value with a Python int outside its
    dtype's range (NEP 50: NumPy compares the numbers, whatever the value; numba would wrap
    the int into the dtype), else None."""
    if e.prim not in SWAPPED:
        return None
    a, b = e.inputs
    for var, lit, prim in ((a, b, e.prim), (b, a, SWAPPED[e.prim])):     # var prim lit
        if (isinstance(var, Var) and var.dtype.kind in "iu" and isinstance(lit, Lit)
                and lit.weak and type(lit.value) is int):
            info = np.iinfo(var.dtype)
            if info.min <= lit.value <= info.max:
                return None
            below, above = HOLDS[prim]
            return str(below if lit.value > info.max else above)
    return None


def can_unroll(e: Eqn) -> bool:
    """Whether `e` has a straight-line rendering (`Renderer.unrolled`): small outputs made by
    an elementwise equation, a reduction of a small value, a matmul of at most
    UNROLL_MATMUL_WORK multiply-adds, an index_add or a view with static indices."""
    if any(not 0 < v.size <= SMALL_SIZE for v in e.outputs):
        return False
    if TABLE[e.prim].kind == "elementwise":
        return True
    if e.prim in REDUCE:
        return e.inputs[0].size <= SMALL_SIZE
    if e.prim == "matmul":
        a, b = e.inputs
        return (a.ndim <= 2 and b.ndim <= 2 and 0 < a.shape[-1] <= SMALL_K and
                e.outputs[0].size * a.shape[-1] <= UNROLL_MATMUL_WORK and
                a.dtype == b.dtype == e.outputs[0].dtype and a.dtype.kind == "f")
    if e.prim == "index":
        return len(e.inputs) == 1                 # static indices only
    if e.prim == "index_add":
        return len(e.inputs) == 2
    return e.prim in ("reshape", "transpose", "broadcast_to", "concatenate")


def unrolled_work(step: IR) -> int:
    """Work of the unrolled code of `step`, in scalar statements. Each equation with a
    straight-line rendering costs, per output element, its operation (plus INLINED_WORK for an
    inlined exp or tanh) and a load for each array operand not made by unrolled code (a step
    input, the result of a loop nest); a matmul MATMUL_WORK per multiply-add, a reduction one
    per input element, an index_add one per element and its loads, a view nothing (it renames
    elements); a value that a loop nest, a call or the step's results read costs a store per
    element. A nested scan costs the work of its own step. A derivative's step is a step like
    any other: its tangent or cotangent equations count."""
    unrolled = [can_unroll(e) for e in step.eqns]
    local = {v.id for e, u in zip(step.eqns, unrolled) if u for v in e.outputs}
    stored = {v.id for e, u in zip(step.eqns, unrolled) if not u
              for v in e.inputs if isinstance(v, Var)}
    stored |= {v.id for v in step.outputs if isinstance(v, Var)}
    work = 0
    for e, u in zip(step.eqns, unrolled):
        if e.prim == "scan":
            work += unrolled_work(e.p["step"])
        if not u:
            continue
        res = e.outputs[0]
        if TABLE[e.prim].kind == "elementwise":
            loads = sum(1 for v in e.inputs if isinstance(v, Var) and v.shape != () and
                        v.id not in local)
            inlined = INLINED_WORK.get(e.prim, 0) if res.dtype.kind == "f" else 0
            work += res.size * (1 + loads + inlined)
        elif e.prim in REDUCE:
            work += e.inputs[0].size
        elif e.prim == "matmul":
            work += MATMUL_WORK * res.size * e.inputs[0].shape[-1]
        elif e.prim == "index_add":
            loads = sum(1 for v in e.inputs if isinstance(v, Var) and v.id not in local)
            work += res.size + e.inputs[1].size * loads
        if res.id in stored and res.shape != ():
            work += res.size
    return work


def sink_elementwise(eqns):
    """Move each elementwise equation down to just before its first consumer, so that chains
    of elementwise equations become adjacent (and fuse) even when other work sat between."""
    eqns = list(eqns)
    for k in reversed(range(len(eqns))):
        e = eqns[k]
        if TABLE[e.prim].kind != "elementwise" or e.outputs[0].shape == ():
            continue
        produced = {v.id for v in e.outputs}
        first = next((j for j in range(k + 1, len(eqns))
                      if any(isinstance(v, Var) and v.id in produced for v in eqns[j].inputs)),
                     None)
        if first is not None and first > k + 1:
            eqns.insert(first - 1, eqns.pop(k))
    return eqns


def _unit_axes_index(src, dst):
    """The basic index that turns an array of shape `src` into shape `dst` when the two differ
    only by axes of length 1 (`None` adds one, `0` drops one, `:` keeps an axis; trailing `:`
    left out), or None for another reshape."""
    if [s for s in src if s != 1] != [s for s in dst if s != 1]:
        return None
    idx, i = [], 0
    for d in dst:
        if d == 1:
            idx.append("None")
            continue
        while src[i] == 1:
            idx.append("0")
            i += 1
        idx.append(":")
        i += 1
    idx += ["0"] * (len(src) - i)
    while idx and idx[-1] == ":":
        idx.pop()
    return idx


def _keeps_c_layout(index):
    """numba types a basic index of a C-contiguous array as C-contiguous when every `:` is
    followed by nothing but `None` (numba/core/typing/arraydecl.py); other views are 'A'."""
    return all(all(j == "None" for j in index[k + 1:]) for k, i in enumerate(index) if i == ":")


def _rows_src(name, rows: slice):
    """Source of `name[rows]` for a slice of rows to the end (`name` itself for all rows)."""
    return name if not rows.start else f"{name}[{rows.start}:]"
