"""Stage: IR -> CPU source — a scan's loop function, and a whole program as one njit function.

`render_scan_function` writes a scan's loop function: the time loop (`scanloop.py`) around the
step's loop nests (`loopnest.py`), with the sequence matmuls that no step depends on computed
before the loop in one BLAS call, the last states of small float outputs kept in locals from one
step to the next, and large elementwise states updated in place. `render_main_function` renders
an `ns.jit` program: inputs are parameters, outputs a returned tuple, its scans loop functions
of the same module. `LoopRenderer` is the renderer whose nested scans become such functions.

A program calls its scans by address (`ScanPointer`, codegen/calls.py), the addresses its first
parameters, not by name: numba would link each callee's code into the program and compile it
there once more. The runtime compiles each scan function on its own (runtime/linked.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from ..core.ir import IR, Var
from ..core.layout import Layout
from ..core.primitives import TABLE
from .chunks import chunk_plan, render_chunked
from .draws import draws_ahead
from .emit import FUNCTION_TEMPLATE, Lines, Module, PARALLEL_TEMPLATE, _idx, dtype_src, program_hash
from .loopnest import Renderer, SMALL_SIZE, UNROLL_BUDGET, sink_elementwise, unrolled_work
from .parallel import serial_below
from .scanloop import bind_step, render_step, render_time_loop, signature, time_params


def hoistable_matmuls(step: IR, seq_rows: dict, invariant: set):
    """Matmuls of one sequence row by a loop-invariant matrix: computed for every row at once
    (one BLAS call before the loop) instead of once per step. -> {eqn index: (seq, row)}."""
    found = {}
    for k, e in enumerate(step.eqns):
        if e.prim != "matmul":
            continue
        a, b = e.inputs
        if (isinstance(a, Var) and a.id in seq_rows and a.ndim == 1 and isinstance(b, Var)
                and b.id in invariant and a.dtype == b.dtype == e.outputs[0].dtype
                and a.dtype.kind == "f"):
            found[k] = seq_rows[a.id]
    return found


def in_place_outputs(step: IR, layout: Layout) -> set:
    """Outputs kept last with taps (-1,) whose new state may overwrite the old one element by
    element: every equation that reads the old state is elementwise over the state's shape and
    comes no later than the one that makes the new state (in rendering order). Such an output
    is read and written in row 0 of its ring, one array instead of two: half the memory
    traffic of a large elementwise recurrence. -> their indices in `layout.outs`."""
    if layout.parallel:
        return set()
    eqns = sink_elementwise(step.eqns)
    made_by = {v.id: k for k, e in enumerate(eqns) for v in e.outputs}
    found = set()
    state_taps = layout.split_step_inputs(step.inputs)[1]
    for j, (o, res, old) in enumerate(zip(layout.outs, step.outputs, state_taps)):
        if (o.keep != "last" or o.taps != (-1,) or not isinstance(res, Var) or
                res.id not in made_by or res.shape != old[0].shape or
                old[0].size <= SMALL_SIZE or sum(w is res for w in step.outputs) != 1 or
                any(w is old[0] for w in step.outputs)):
            continue
        last = made_by[res.id]
        readers = [k for k, e in enumerate(eqns) if any(w is old[0] for w in e.inputs)]
        if all(k <= last and TABLE[eqns[k].prim].kind == "elementwise" and
               eqns[k].outputs[0].shape == res.shape for k in readers + [last]):
            found.add(j)
    return found


def carried_window(r: Renderer, j, bname, o, tap_vars):
    """Keep the last L states of a small float output in locals across steps (registers,
    not a store and a load per step): `carry<j>_<row>_<element>`, row 0 the oldest (tap -L).
    The locals are loaded from the buffer's first L rows before the loop; the tap inputs read
    them. -> the locals of each row, or None when the output stays in memory."""
    if not o.taps or not tap_vars:
        return None
    v = tap_vars[0]
    if v.dtype.kind != "f" or not 0 < v.size <= SMALL_SIZE or v.size * o.L > 4 * SMALL_SIZE:
        return None
    window = [[f"carry{j}_{row}_{k}" for k in range(v.size)] for row in range(o.L)]
    for row, names in enumerate(window):
        for name, index in zip(names, np.ndindex(*v.shape)):
            r.alloc(f"{name} = {bname}[{_idx([str(row)] + [str(i) for i in index])}]")
    for tap, w in zip(o.taps, tap_vars):
        if w.shape == ():
            r.names[w.id] = window[o.window_row(tap)][0]
        else:
            r.elems[w.id] = window[o.window_row(tap)]
    return window


class LoopRenderer(Renderer):
    """The CPU renderer: a nested scan becomes a loop function of the same module."""
    IN_PLACE_SLICES = True
    SCRATCH_ROWS = True

    def nested_scan(self, step, layout):
        return render_scan_function(self.module, step, layout, hoist=not self.in_loop)

    def r_transpose(self, out, e):
        """A matrix transpose is a view (`x.T`, no loop nest to compile) unless it is written
        into an output row; its readers index the view."""
        x, res = e.inputs[0], e.outputs[0]
        if x.ndim == 2 and tuple(e.p["axes"]) == (1, 0) and res.id not in self.alias:
            out(f"{self.name(res)} = {self.name(x)}.T")
            return
        super().r_transpose(out, e)


def render_scan_function(module: Module, step: IR, layout: Layout, hoist=True,
                         progress=False) -> str:
    """Render the loop function of a scan (and of scans nested in its step) into `module`.

    `hoist`: compute sequence-only matmuls before the loop (needs a buffer as long as the
    sequence, so not for scans nested in another scan's step, which run once per outer step).
    `progress`: a variant of its own (another name) whose last parameter `progress` receives
    the count of steps run (`render_time_loop`); not for a parallel layout.
    """
    progress = progress and not layout.parallel
    name = "scan_" + program_hash(step.fingerprint(), layout, hoist,
                                  *(("progress",) if progress else ()))
    if name in module.functions:
        return name
    if layout.parallel and not hoist:
        # a parallel map inside another scan's step (that may itself run under prange) runs
        # serially: numba's threading layers do not all allow nested parallel regions
        layout = replace(layout, parallel=False)
    hoist = hoist and not layout.parallel
    # a wide element-separable step runs by chunks of its state, on every core (chunks.py);
    # not inside another scan's step, nor in a loop that publishes its progress
    plan = chunk_plan(step, layout, name) if hoist and not progress else None
    if plan is not None:
        return render_chunked(module, step, layout, plan, name)
    r = LoopRenderer(module)
    r.in_loop = True
    # small values as scalar locals (and small states carried in them) only within the budget
    r.unroll = unrolled_work(step) <= UNROLL_BUDGET
    body = Lines()
    seqs, bufs, rest, rng = signature(layout)
    params = time_params(layout) + seqs + bufs + rest + rng + (["progress"] if progress else [])
    in_place = in_place_outputs(step, layout)
    window = None if layout.parallel or not r.unroll else partial(carried_window, r)
    b = bind_step(r, step, layout, seqs, bufs, rest, window=window, in_place=in_place)
    r.invariant = {v.id for v in layout.split_step_inputs(step.inputs)[2]}
    hoisted = hoistable_matmuls(step, b.seq_rows, r.invariant) if hoist else {}
    for k, (sname, row) in hoisted.items():
        e = step.eqns[k]
        res, w = e.outputs[0], e.inputs[1]
        h = r.fresh("hoisted")
        body(f"{h} = np.empty(({sname}.shape[0],) + {tuple(res.shape)!r}, "
             f"dtype={dtype_src(res.dtype)})")
        body(f"np.dot({sname}, {r.name(w)}, {h})")
        module.uses_blas = True
        b.binds.append((res, f"{h}[{row}]"))
    ahead = draws_ahead(r, step, layout, b.binds, rng) if hoist and not layout.until else set()
    eqns = [e for k, e in enumerate(step.eqns) if k not in hoisted and k not in ahead]
    if layout.parallel:
        # independent steps: one step per call of its own function (which allocates its
        # temporaries), the steps spread over cores by prange
        render_step(r, body, b, bufs, eqns)
        text = r.alloc.text() + "\n" + body.text() if r.alloc.lines else body.text()
        step_name = "step" + name[4:]
        module.add(FUNCTION_TEMPLATE, name=step_name,
                   params=", ".join(["t"] + params[1:]), body=text)
        module.add(PARALLEL_TEMPLATE, name=name, params=", ".join(params),
                   step=step_name, args=", ".join(params[1:]), serial_below=serial_below(step))
        module.calls_parallel = True       # an ns.jit program may call it (emit.py)
        return name
    render_time_loop(r, body, b, bufs, eqns, layout.until, "progress" if progress else None)
    # an in-place output's state is in row 0; its readers take OutLayout.last_row(n_run),
    # (n_run - 1 + 1) % 2. The copy is a loop nest: numba compiles `buf[1] = buf[0]` (a
    # broadcasting setitem) in 1.5-3.5 s per array type, a loop in under 0.1 s
    for j in sorted(in_place):
        body("if n_run % 2 == 1:")
        body.indent()
        shape = step.outputs[j].shape
        idx = r.loops(body, shape)
        body(f"{bufs[j]}[{_idx(['1'] + idx)}] = {bufs[j]}[{_idx(['0'] + idx)}]")
        r.close(body, len(shape))
        body.dedent()
    body("return n_run")
    text = r.alloc.text() + "\n" + body.text() if r.alloc.lines else body.text()
    module.add(FUNCTION_TEMPLATE, name=name, params=", ".join(params), body=text)
    return name


@dataclass(frozen=True)
class ScanPointer:
    """A scan loop function `function` that a program calls at the address in its parameter
    `param` (codegen/calls.py); `args`: the (dtype, ndim) of each of its arguments, every
    array C-contiguous (0 dimensions: a scalar)."""
    param: str
    function: str
    args: tuple


class ProgramRenderer(LoopRenderer):
    """The renderer of a program's body: its scans are called by address."""

    def __init__(self, module):
        super().__init__(module)
        self.pointers: dict[str, ScanPointer] = {}
        self.scan_steps = 0                   # n_steps of the scan being rendered

    def call_scan(self, step, fname, args, kinds):
        # each argument of exactly the type the callee was compiled for: scalars cast to
        # their dtype, arrays C-contiguous (np.ascontiguousarray returns a C-contiguous
        # array as it is and copies other views)
        passed = [a if fresh else f"{dtype_src(d)}({a})" if ndim == 0 else
                  f"np.ascontiguousarray({a})" for a, (d, ndim, fresh) in zip(args, kinds)]
        plan = self.module.chunked.get(fname)
        if plan is not None:
            # a scan by chunks (chunks.py) whose static number of steps makes enough work
            # runs its loop function, which shares the chunks out with prange and calls the
            # chunk function at the address passed first (linked into it by name, numba would
            # compile it there again); a smaller one calls the chunk function itself, on one
            # thread, and no parfor loop is compiled
            index = (np.dtype(np.int64), 0, True)
            chunks_pointer = self.pointer(plan.function, [index] * 3 + list(kinds))
            if not plan.on_threads(self.scan_steps):
                size = plan.serial_size()
                return (f"call_address({chunks_pointer}, (0, {-(-plan.size // size)}, "
                        f"{size}, {', '.join(passed)}))")
            self.module.calls_parallel = True
            passed.insert(0, chunks_pointer)
            kinds = [index] + list(kinds)
        return f"call_address({self.pointer(fname, kinds)}, ({', '.join(passed)},))"

    def r_scan(self, out, e):
        self.scan_steps = e.p["n_steps"]      # static: whether a chunked scan uses threads
        super().r_scan(out, e)

    def pointer(self, fname, kinds):
        """The parameter holding the address of scan function `fname`."""
        if fname not in self.pointers:
            self.pointers[fname] = ScanPointer(f"fn{len(self.pointers)}", fname,
                                               tuple((np.dtype(d), n) for d, n, _ in kinds))
        return self.pointers[fname].param


def render_main_function(module: Module, ir: IR) -> str:
    """Render a whole program (ns.jit): inputs are parameters, outputs a returned tuple; the
    addresses of the scans it calls come first (`module.pointers[name]`)."""
    name = "main_" + program_hash(ir.fingerprint())
    if name in module.functions:
        return name
    r = ProgramRenderer(module)
    body = Lines()
    params = [r.name(v) for v in ir.inputs]
    r.body(body, ir.eqns, ir.outputs)
    outs = [r.name(v) for v in ir.outputs]
    body(f"return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
    pointers = tuple(r.pointers.values())
    head = Lines()
    for p in pointers:
        head(f"# {p.param}: the address of {p.function}")
    text = "".join(part.text() + "\n" for part in (head, r.alloc) if part.lines) + body.text()
    module.add(FUNCTION_TEMPLATE, name=name, params=", ".join([p.param for p in pointers] +
                                                                   params), body=text)
    module.pointers[name] = pointers
    return name
