"""Stage: IR -> CUDA source — render scans as numba.cuda kernels with the time loop inside.

The IR, the scan layout (`core/layout.py`) and the equation renderers (`codegen/loopnest.py`)
are those of the CPU code generator; what changes is where values live and who computes them.
Kernels cannot allocate: every temporary of a step is a static-shape array declared in the kernel,
`cuda.local.array` when one thread runs the step, `cuda.shared.array` when the threads of a
block share it. The time loop runs inside one launch.

Kernel patterns, chosen from the step program by `choose_pattern`:

    elementwise  every value of the step has the state's shape S (or is a scalar computed from
                 scalars), and element k of a new state depends on element k only: one thread
                 per state element, fed-back `-1` taps held in registers, no synchronisation.
    block        any other step: one block of `lanes` threads runs the step; the loop nest over
                 an equation's output elements is shared out (`for f in range(lane, size,
                 lanes)`) and `cuda.syncthreads()` follows every equation that writes an array.
                 With lanes == 1 (tiny states) one thread runs everything, with no barrier.
    batched      a parallel map (`ns.vmap`): step t runs in thread t (lanes == 1) or in block t
                 (lanes > 1, the block pattern inside).

Generated functions (buffers as in `core/layout.py`; the step is bound to its rows, and the time
loop rendered, by `scanloop.py`, as for the CPU loop):

    kernel_<h>(n_steps, seq..., buf..., non_seq..., capture..., rng_key, rng_base, ..., n_run)
    scan_<h>(n_steps, seq..., buf..., non_seq..., capture..., rng..., lane) -> n_run   (device
             function: a scan nested in another scan's step)

`n_run` is a one-element int64 device array receiving the number of steps run (ns.until).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..core.ir import IR, Lit, Var
from ..core.layout import Layout
from ..core.primitives import REDUCE, TABLE
from . import linalg as la
from .emit import Lines, Module as CpuModule, _idx, dtype_src, literal_src, program_hash
from .loopnest import Renderer
from .scanloop import bind_step, render_step, render_time_loop, signature, time_params

MODULE_TEMPLATE = '''\
"""numbascan generated module (CUDA). Source of: {title}"""
import math
import numpy as np
from numba import cuda
from numbascan.random import uniform_scalar, normal_scalar, binomial_scalar
from numbascan.codegen.linalg import lu_solve_loops, slogdet_loops, cholesky_loops
from numbascan.codegen.linalg import triangular_loops, eigh_loops
from numbascan.codegen.linrec import diagonal_scan, matrix_scan

uniform_dev = cuda.jit(device=True)(uniform_scalar)
normal_dev = cuda.jit(device=True)(normal_scalar)
binomial_dev = cuda.jit(device=True)(binomial_scalar)
lu_solve_dev = cuda.jit(device=True)(lu_solve_loops)
slogdet_dev = cuda.jit(device=True)(slogdet_loops)
cholesky_dev = cuda.jit(device=True)(cholesky_loops)
triangular_dev = cuda.jit(device=True)(triangular_loops)
eigh_dev = cuda.jit(device=True)(eigh_loops)
linrec_diagonal_dev = cuda.jit(device=True)(diagonal_scan)
linrec_matrix_dev = cuda.jit(device=True)(matrix_scan)

{functions}
'''

# cache=True: numba-cuda keeps the compiled kernel next to the generated module (one per compute
# capability), so a new process that renders the same kernel loads it instead of compiling
KERNEL_TEMPLATE = '''\
@cuda.jit(cache=True)
def {name}({params}):
{body}
'''

DEVICE_TEMPLATE = '''\
@cuda.jit(device=True)
def {name}({params}):
{body}
'''

# shared memory one block may declare (the smallest per-block limit of current GPUs)
SHARED_BYTES = 48 * 1024
THREADS_PER_BLOCK = 128
# states of at most this many elements run in one thread (barriers would cost more than
# the threads save)
SERIAL_MAX_ELEMENTS = 16
MAX_LANES = 256


def _nan_max(a, b):
    return f"({a} if ({a} >= {b} or {a} != {a}) else {b})"


def _nan_min(a, b):
    return f"({a} if ({a} <= {b} or {a} != {a}) else {b})"


# NumPy ufuncs numba.cuda cannot call on scalars, as CUDA math (libdevice) expressions
CUDA_SCALAR = {
    "absolute": "abs({0})", "exp": "math.exp({0})", "expm1": "math.expm1({0})",
    "log": "math.log({0})", "log1p": "math.log1p({0})", "sqrt": "math.sqrt({0})",
    "sin": "math.sin({0})", "cos": "math.cos({0})", "tan": "math.tan({0})",
    "arcsin": "math.asin({0})", "arccos": "math.acos({0})", "arctan": "math.atan({0})",
    "sinh": "math.sinh({0})", "cosh": "math.cosh({0})", "tanh": "math.tanh({0})",
    "arcsinh": "math.asinh({0})", "arccosh": "math.acosh({0})", "arctanh": "math.atanh({0})",
    "floor": "math.floor({0})", "ceil": "math.ceil({0})", "isnan": "math.isnan({0})",
    "isfinite": "math.isfinite({0})", "arctan2": "math.atan2({0}, {1})",
    "expit": "(1.0 / (1.0 + math.exp(-{0})))", "logit": "math.log({0} / (1.0 - {0}))",
    "maximum": _nan_max, "minimum": _nan_min,
}
CUDA_SCALAR_FLOAT = {
    # x itself for 0, -0 and NaN (no bool arithmetic: NumPy scalars in the simulator refuse it)
    "sign": "(1.0 if {0} > 0 else (-1.0 if {0} < 0 else {0}))",
    # Python's float // and % (numba lowers them through fmod, as NumPy's divmod does):
    # math.floor(a / b) rounds the quotient first (1.0 // 0.1 is 9.0, not 10.0)
    "floor_divide": "({0} // {1})",
    "remainder": "({0} % {1})",
}
CUDA_SCALAR_INT = {
    "sign": "(1 if {0} > 0 else (-1 if {0} < 0 else 0))",
    "floor_divide": "({0} // {1})",
    "remainder": "({0} % {1})",
}
CUDA_REDUCE = {"reduce_max": _nan_max, "reduce_min": _nan_min}
RANDOM_DEVICE = {"uniform": "uniform_dev", "normal": "normal_dev", "binomial": "binomial_dev"}


@dataclass
class Module(CpuModule):
    # shared memory each device function declares (with that of the nested scans it calls):
    # it counts towards the block of every kernel that calls it
    shared_bytes: dict = field(default_factory=dict)

    def module_fields(self):
        return {}                     # the kernel templates have no module-wide fields

    def source(self, title):
        return MODULE_TEMPLATE.format(title=title, functions=self.function_texts())


@dataclass(frozen=True)
class Pattern:
    kind: str              # "elementwise" | "block" | "batched"
    lanes: int = 1         # threads per step (block, batched)
    shape: tuple = ()      # the state shape S (elementwise)

    @property
    def size(self):
        return int(np.prod(self.shape))


class CudaRenderer(Renderer):
    """Renders a step for `lanes` threads of one block (lanes == 1: one thread)."""

    def __init__(self, module: Module, lanes: int):
        super().__init__(module)
        self.lanes = lanes
        self.declared_bytes = 0
        self.devices: set[str] = set()        # device functions called (nested scans)

    # -- storage ------------------------------------------------------------------------------
    def declare(self, name, shape, dtype):
        memory = "shared" if self.lanes > 1 else "local"
        self.alloc(f"{name} = cuda.{memory}.array({tuple(int(s) for s in shape)!r}, "
                   f"{dtype_src(dtype)})")
        self.declared_bytes += int(np.prod(shape)) * np.dtype(dtype).itemsize

    def buffer(self, v: Var, out: Lines):
        name = self.name(v)
        if v.id in self.alias:
            out(f"{name} = {self.alias[v.id]}")
            self.aliased.add(v.id)
        else:
            self.declare(name, v.shape, v.dtype)
        return name

    # -- sharing loop nests among the lanes ----------------------------------------------------
    def outer_loops(self, out, shape):
        if self.lanes == 1 or not shape:          # scalars: every lane computes them
            return self.loops(out, shape)
        f = self.fresh("f")
        out(f"for {f} in range(lane, {int(np.prod(shape))}, {self.lanes}):")
        out.indent()
        names = []
        for expr in self._unravel(f, shape):
            i = self.fresh()
            out(f"{i} = {expr}")
            names.append(i)
        return names

    def close_outer(self, out, shape):
        if self.lanes == 1 or not shape:
            self.close(out, len(shape))
        else:
            out.dedent()

    def barrier(self, out):
        if self.lanes > 1:
            out("cuda.syncthreads()")

    def eqn(self, out, e):
        super().eqn(out, e)
        if any(v.shape != () for v in e.outputs):
            self.barrier(out)

    def fused(self, out, group, uses):
        super().fused(out, group, uses)
        self.barrier(out)

    # -- scalar code ---------------------------------------------------------------------------
    def scalar_expr(self, e, operands):
        kind = e.inputs[0].dtype.kind if e.inputs else "f"
        table = CUDA_SCALAR_FLOAT if kind == "f" else CUDA_SCALAR_INT
        template = table.get(e.prim) or CUDA_SCALAR.get(e.prim)
        if template is None:
            return super().scalar_expr(e, operands)
        operands = self.loop_operands(e, operands)
        return template(*operands) if callable(template) else template.format(*operands)

    def reduce_rule(self, prim):
        impl, combine, init = REDUCE[prim]
        return (impl, CUDA_REDUCE[prim]("{acc}", "{x}"), init) if prim in CUDA_REDUCE else \
            (impl, combine, init)

    # -- equations the CPU renders with allocation, BLAS or views ------------------------------
    def r_matmul(self, out, e):
        a, b = e.inputs
        res = e.outputs[0]
        A, B = self.name(a), self.name(b)
        R = self.buffer(res, out) if res.shape != () else None
        p, acc = self.fresh("p"), self.fresh("acc")
        idx = self.outer_loops(out, res.shape)
        i = [idx[0]] if a.ndim == 2 else []
        j = [idx[-1]] if b.ndim == 2 else []
        out(f"{acc} = {literal_src(0, res.dtype)}")
        out(f"for {p} in range({a.shape[-1]}):")
        out(f"    {acc} += {A}[{_idx(i + [p])}] * {B}[{_idx([p] + j)}]")
        if R is None:
            out(f"{self.name(res)} = {self.cast(acc, res.dtype)}")
        else:
            out(f"{R}[{_idx(idx)}] = {acc}")
            self.close_outer(out, res.shape)

    def r_reshape(self, out, e):
        x, res = e.inputs[0], e.outputs[0]
        if res.shape == ():
            out(f"{self.name(res)} = {self.read(x, ['0'] * x.ndim)}")
            return
        R = self.buffer(res, out)
        if isinstance(x, Lit) or x.shape == ():
            idx = self.outer_loops(out, res.shape)
            out(f"{R}[{_idx(idx)}] = {self.name(x)}")
            self.close_outer(out, res.shape)
            return
        (f,) = self.outer_loops(out, (res.size,))
        out(f"{R}[{_idx(self._unravel(f, res.shape))}] = "
            f"{self.name(x)}[{_idx(self._unravel(f, x.shape))}]")
        self.close_outer(out, (res.size,))

    # -- linear algebra: codegen/linalg.py's loops as device functions ------------------------
    LINALG_FUNCTIONS = {"solve": "lu_solve_dev", "slogdet": "slogdet_dev",
                        "cholesky": "cholesky_dev", "triangular_solve": "triangular_dev",
                        "eigh": "eigh_dev"}

    def scratch(self, shape, dtype, prefix="lu"):
        """Each thread's own work buffer (a local array, also when lanes share the step's)."""
        name = self.fresh(prefix)
        self.alloc(f"{name} = cuda.local.array({tuple(int(s) for s in shape)!r}, "
                   f"{dtype_src(dtype)})")
        return name

    @contextmanager
    def one_thread(self, out, e):
        """Lane 0 alone writes an array result that the lanes share (the barrier after the
        equation publishes it); a scalar result every lane computes for itself."""
        if self.lanes == 1 or all(v.shape == () for v in e.outputs):
            yield
            return
        out("if lane == 0:")
        out.indent()
        yield
        out.dedent()

    # a linear recurrence: codegen/linrec.py's sequential loop, run by one thread (lane 0)
    LINREC_FUNCTIONS = {"diagonal": "linrec_diagonal_dev", "matrix": "linrec_matrix_dev"}
    LINREC_PARALLEL: dict = {}

    def linrec_view(self, name, v, shape):
        """A kernel's arrays are C-contiguous (local, shared, or rows of its arguments)."""
        return name if tuple(v.shape) == tuple(shape) else f"{name}.reshape({tuple(shape)!r})"

    def large_linalg(self, out, e, names):
        raise NotImplementedError(la.LARGE_ON_CUDA.format(
            op=la.OPERATIONS[e.prim], n=e.inputs[0].shape[0], max=la.LOOP_MAX))

    RANDOM_FUNCTIONS = RANDOM_DEVICE
    RANDOM_FILL: dict = {}                    # a draw per element: spread over the lanes
    NESTED_SCAN_ARGS = ("lane",)
    NAME_ROWS_FIRST = True                    # a kernel names its bound rows first, in order

    def nested_scan(self, step, layout):
        fname = render_scan_device(self.module, step, layout, self.lanes)
        if fname not in self.devices:         # its shared arrays exist once per block
            self.devices.add(fname)
            self.declared_bytes += self.module.shared_bytes.get(fname, 0)
        return fname

    def scan_buffer(self, name, shape, dtype):
        self.declare(name, shape, dtype)


class ElementwiseRenderer(CudaRenderer):
    """One thread per element of the state shape S: values of shape S are scalar locals
    holding this thread's element; inputs of other shapes are read where they broadcast."""

    def __init__(self, module: Module, shape, index):
        super().__init__(module, lanes=1)
        self.shape, self.index = tuple(shape), list(index)
        self.scalars: set[int] = set()        # ids of values held as this thread's element

    def read(self, v, index=None, out_shape=None):
        if isinstance(v, Lit) or v.shape == () or v.id in self.scalars:
            return self.name(v)
        return super().read(v, self.index, self.shape)

    def body(self, out, eqns, results):
        for e in eqns:
            self.eqn(out, e)

    def eqn(self, out, e):
        res = e.outputs[0]
        if res.shape == ():
            return super().eqn(out, e)
        if e.prim == "random":
            key, base = (self.name(v) for v in e.inputs)
            p = e.p
            width = p["dist"][0] if p["kind"] == "binomial" else 1
            self.module.draws = True
            flat = " + ".join(f"{i} * {st}" for i, st in zip(self.index, _strides(self.shape)))
            args = ", ".join(repr(a) for a in p["dist"])
            out(f"{self.name(res)} = {RANDOM_DEVICE[p['kind']]}({key}, {base} + "
                f"np.uint64({p['offset']}) + np.uint64(({flat}) * {width}), {args})")
        else:
            ops = [self.lit_operand(e, v) if isinstance(v, Lit) else self.read(v)
                   for v in e.inputs]
            out(f"{self.name(res)} = {self.cast(self.scalar_expr(e, ops), res.dtype)}")
        self.scalars.add(res.id)


def _strides(shape):
    return [int(np.prod(shape[k + 1:])) for k in range(len(shape))]


def _broadcasts(shape, target):
    return len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def elementwise_shape(step: IR, layout: Layout):
    """The state shape S when the step is elementwise over S (see the module docstring)."""
    if layout.until or not step.outputs or not layout.outs:
        return None
    shape = tuple(step.outputs[0].shape)
    if shape == () or any(tuple(v.shape) != shape for v in step.outputs):
        return None
    for v in step.inputs:
        if v.dtype != np.uint64 and not _broadcasts(tuple(v.shape), shape):
            return None
    for e in step.eqns:
        kind = TABLE[e.prim].kind
        out = tuple(e.outputs[0].shape)
        if kind != "elementwise" and e.prim != "random":
            return None
        if out == ():
            if any(isinstance(v, Var) and v.shape != () for v in e.inputs):
                return None
        elif out != shape:
            return None
    return shape


def step_elements(step: IR):
    """The largest number of elements of an array the step makes: the most work one equation
    can share out among lanes (inputs such as a weight matrix are only read)."""
    sizes = [int(np.prod(v.shape)) for e in step.eqns for v in e.outputs]
    for e in step.eqns:
        if e.prim == "scan":
            sizes.append(step_elements(e.p["step"]))
    return max(sizes, default=1)


def choose_pattern(step: IR, layout: Layout, batched=False) -> Pattern:
    elements = step_elements(step)
    lanes = 1 if elements <= SERIAL_MAX_ELEMENTS else \
        min(MAX_LANES, -(-elements // 32) * 32)
    if batched:
        return Pattern("batched", lanes)
    shape = elementwise_shape(step, layout)
    if shape is not None and int(np.prod(shape)) > SERIAL_MAX_ELEMENTS:
        return Pattern("elementwise", 1, shape)
    return Pattern("block", lanes)


class SharedMemoryExceeded(ValueError):
    pass


def _finish(module: Module, r: CudaRenderer, template, name, params, body: Lines):
    if r.declared_bytes > SHARED_BYTES and r.lanes > 1:
        raise SharedMemoryExceeded(
            f"mode='cuda': this step needs {r.declared_bytes // 1024} KB of shared memory for "
            f"its temporaries, more than the {SHARED_BYTES // 1024} KB one block has")
    text = r.alloc.text() + "\n" + body.text() if r.alloc.lines else body.text()
    module.add(template, name=name, params=", ".join(params), body=text)


def render_scan_device(module: Module, step: IR, layout: Layout, lanes: int) -> str:
    """A nested scan as a device function run by `lanes` threads (see the module docstring)."""
    name = "scan_" + program_hash(step.fingerprint(), layout, lanes, "cuda")
    if name in module.functions:
        return name
    r = CudaRenderer(module, lanes)
    seqs, bufs, rest, rng = signature(layout)
    body = Lines()
    render_time_loop(r, body, bind_step(r, step, layout, seqs, bufs, rest), bufs, step.eqns,
                     layout.until)
    body("return n_run")
    _finish(module, r, DEVICE_TEMPLATE, name,
            time_params(layout) + seqs + bufs + rest + rng + ["lane"], body)
    module.shared_bytes[name] = r.declared_bytes
    return name


def render_scan_kernel(module: Module, step: IR, layout: Layout, pattern: Pattern) -> str:
    """The kernel of an eager scan, or of a parallel map (pattern "batched")."""
    name = "kernel_" + program_hash(step.fingerprint(), layout, pattern)
    if name in module.functions:
        return name
    seqs, bufs, rest, rng = signature(layout)
    params = time_params(layout) + seqs + bufs + rest + rng + ["n_run_out"]
    if pattern.kind == "elementwise":
        return _render_elementwise(module, name, step, layout, pattern, params)
    r = CudaRenderer(module, pattern.lanes)
    body = Lines()
    b = bind_step(r, step, layout, seqs, bufs, rest)
    if pattern.kind == "batched":
        if pattern.lanes > 1:
            body("lane = cuda.threadIdx.x")
            body("t = cuda.blockIdx.x")
        else:
            body("lane = 0")
            body("t = cuda.grid(1)")
            body("if t >= n_steps:")
            body("    return")
        render_step(r, body, b, bufs, step.eqns)
    else:
        body("lane = cuda.threadIdx.x")
        render_time_loop(r, body, b, bufs, step.eqns, layout.until)
        body("if lane == 0:")
        body("    n_run_out[0] = n_run")
    _finish(module, r, KERNEL_TEMPLATE, name, params, body)
    return name


def _render_elementwise(module, name, step, layout, pattern, params):
    seqs, bufs, rest, rng = signature(layout)
    shape = pattern.shape
    index = [f"k{d}" for d in range(len(shape))]
    r = ElementwiseRenderer(module, shape, index)
    body = Lines()
    body("f = cuda.grid(1)")
    body(f"if f >= {pattern.size}:")
    body("    return")
    for i, expr in zip(index, r._unravel("f", shape)):
        body(f"{i} = {expr}")
    at = _idx(index)
    b = bind_step(r, step, layout, seqs, bufs, rest)
    r.alias.clear()                              # results are registers, stored below
    # fed-back outputs with the single tap -1 live in a register across steps; a
    # last-step-only map output too
    carried = {}
    state_taps = layout.split_step_inputs(step.inputs)[1]
    for j, (o, tap_vars) in enumerate(zip(layout.outs, state_taps)):
        if o.taps == (-1,):
            carried[j] = f"carry{j}"
            body(f"carry{j} = {bufs[j]}[{o.read_row(0, -1)}, {at}]")
            r.names[tap_vars[0].id] = carried[j]
            r.scalars.add(tap_vars[0].id)
        elif not o.taps and o.keep == "last":
            carried[j] = f"last{j}"
            body(f"last{j} = {literal_src(0, step.outputs[j].dtype)}")
    body("for t in range(n_steps):")
    body.indent()
    for v, expr in b.binds:
        if v.id not in r.scalars:
            body(f"{r.name(v)} = {expr}")
    r.body(body, step.eqns, b.results)
    new = []
    for j, v in enumerate(b.results):
        value = r.read(v)
        nv = f"new{j}"
        body(f"{nv} = {value}")
        new.append(nv)
    for j, (o, row) in enumerate(zip(layout.outs, b.rows)):
        if o.keep == "all":
            body(f"{bufs[j]}[{row}, {at}] = {new[j]}")
        elif not o.taps and j not in carried:
            body(f"{bufs[j]}[0, {at}] = {new[j]}")
        elif o.taps and j not in carried:
            body(f"{bufs[j]}[{row}, {at}] = {new[j]}")
    for j, c in carried.items():
        body(f"{c} = {new[j]}")
    body.dedent()
    for j, c in carried.items():
        o = layout.outs[j]
        if o.keep == "last":
            body("if n_steps > 0:")
            body(f"    {bufs[j]}[{o.last_row('n_steps')}, {at}] = {c}")
    body("if f == 0:")
    body("    n_run_out[0] = n_steps")
    _finish(module, r, KERNEL_TEMPLATE, name, params, body)
    return name
