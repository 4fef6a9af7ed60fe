"""Stage: whole-function compilation — `ns.jit` traces a function of arrays into one program.

A call traces the function on tracers of its array arguments (Python scalars are static: part
of the signature, passed through unchanged), runs the IR passes, renders the program with
`codegen.cpu` and calls it (a program with scans asked to run on CUDA instead runs each scan as
a kernel and the NumPy glue between them on the host, see `gpu.program_impls`). Arrays the function reads from its closure or globals are inputs
read at each call. Called inside another trace (a step, a derivative), a jit function is simply
inlined into that trace. `ns.show` prints the traced program and its generated source.
"""

from __future__ import annotations

import functools

import numpy as np

from .api import choose_mode, default_mode, normalize, trace_step
from .ir import IR, dead_code_elimination
from .passes import keep_only_last_steps
from .scanprim import asks_for_cuda
from .shared import Shared, Updates
from .trace import RunTracer, Trace, Tracer, TracingError, current_trace, with_traced_captures
from .tracecache import capture_readers, function_key, guards_hold, read_captures

STATIC_TYPES = (bool, int, float, str, type(None))


def _flatten(tree):
    if isinstance(tree, (list, tuple)):
        leaves, specs = [], []
        for x in tree:
            l, s = _flatten(x)
            leaves += l
            specs.append(s)
        return leaves, (type(tree), specs)
    if isinstance(tree, dict):
        leaves, specs = [], []
        for k, x in tree.items():
            l, s = _flatten(x)
            leaves += l
            specs.append((k, s))
        return leaves, (Updates if isinstance(tree, Updates) else dict, specs)
    return [tree], None


def _unflatten(spec, leaves):
    it = iter(leaves)

    def build(s):
        if s is None:
            return next(it)
        kind, subs = s
        if kind is dict or kind is Updates:
            return kind((k, build(sub)) for k, sub in subs)
        return kind(build(sub) for sub in subs)
    return build(spec)


class Program:
    """A traced function: its IR, where its extra inputs come from, and its output structure.

    The IR's outputs are the leaves of the function's result (`n_leaves`), then the number of
    rows of each leaf that is the run of an until-scan (`runs`: its leaf index), then the
    counters consumed by each random stream whose use is a run-time value (`rng_used[i]` is
    None for those, else the static count)."""

    def __init__(self, ir, captures, shared, streams, rng_used, out_spec, created=None,
                 n_leaves=None, runs=()):
        self.ir, self.captures, self.shared = ir, captures, shared
        self.streams, self.rng_used, self.out_spec = streams, rng_used, out_spec
        self.created = created or {}
        self.n_leaves = len(ir.outputs) if n_leaves is None else n_leaves
        self.runs = tuple(runs)

    def _moved_outputs(self):
        k = self.n_leaves + len(self.runs)
        found = {}
        for i, used in enumerate(self.rng_used):
            if used is None:
                found[i] = k
                k += 1
        return found

    def host_leaves(self, outs):
        """The result's leaves from the outputs of one run, the rows of until-scans cut to
        the rows that ran; the random streams advanced."""
        leaves = list(outs[:self.n_leaves])
        for k, i in enumerate(self.runs):
            leaves[i] = leaves[i][:int(outs[self.n_leaves + k])]
        moved = self._moved_outputs()
        for i, (s, used) in enumerate(zip(self.streams, self.rng_used)):
            s.counter += used if used is not None else int(outs[moved[i]])
        return leaves

    def traced_leaves(self, outs):
        """The same for outputs replayed inside the current trace (`inline_inputs` advanced
        the static streams): until-scan rows as RunTracers, run-time stream uses recorded."""
        tr = current_trace()
        leaves = list(outs[:self.n_leaves])
        for k, i in enumerate(self.runs):
            leaves[i] = RunTracer(tr, tr.lift(leaves[i]), outs[self.n_leaves + k])
        for i, k in self._moved_outputs().items():
            tr.rng_advance(self.streams[i], outs[k])
        return leaves


def trace_program(fn, args) -> Program:
    with Trace(getattr(fn, "__name__", "jit"), fn) as tr:
        targs = [a if isinstance(a, STATIC_TYPES) else
                 tr.new_arg(a.dtype if isinstance(a, (Tracer, np.ndarray)) else
                            np.asarray(a).dtype, np.shape(a)) for a in args]
        traced_fn, _ = with_traced_captures(fn, tr)
        try:
            out = traced_fn(*targs)
        except TracingError as err:
            err.add_context(f"function {getattr(fn, '__qualname__', fn)!r}")
            raise
        leaves, spec = _flatten(out)
        runs = [i for i, x in enumerate(leaves) if isinstance(x, RunTracer)]
        streams = list(tr.rng)
        moved = [tr.rng_moved(s) for s in streams]
        out_vars = tuple(tr.lift(x.buffer if isinstance(x, RunTracer) else x) for x in leaves)
        out_vars += tuple(tr.lift(leaves[i].n) for i in runs)
        out_vars += tuple(tr.lift(m) for m in moved if m is not None)
    inputs = (tuple(tr.args) + tuple(tr.shared.values()) + tuple(c.var for c in tr.captures) +
              tuple(v for s in streams for v in tr.rng[s]))
    ir = keep_only_last_steps(dead_code_elimination(IR(inputs, tuple(tr.eqns), out_vars)))
    return Program(ir, [c.source for c in tr.captures], list(tr.shared), streams,
                   [tr.rng_used[s] if m is None else None for s, m in zip(streams, moved)],
                   spec, tr.created, len(leaves), runs)


_PROGRAMS: dict = {}     # (function key, argument signature, interpret) -> (program, compiled, readers, avals)


def traced_program(fn, values, interpret=False, guards=None):
    """(program, compiled function, capture values), from the trace cache when possible.
    `guards` (a list) receives the guards of the cache key, and is emptied when the program
    is not cached (it is traced at every call)."""
    from .driver import compile_main
    guards = [] if guards is None else guards
    key, arrays = function_key(fn, guards)
    if key is not None:
        key = (key, tuple(("s", type(a).__name__, a) if isinstance(a, STATIC_TYPES) else
                          ("a", a.dtype.str, a.shape) for a in values), interpret)
        hit = _PROGRAMS.get(key)
        if hit is not None:
            captures = read_captures(fn, hit[2], hit[3])
            if captures is not None:
                return hit[0], hit[1], captures
    prog = trace_program(fn, values)
    compiled = None if interpret or asks_for_cuda(prog.ir) else compile_main(prog.ir)
    readers = capture_readers(prog.captures, arrays, prog.created) if key is not None else None
    if readers is not None:
        avals = [None if isinstance(c, Shared) else (np.asarray(c).dtype, np.shape(c))
                 for c in prog.captures]
        _PROGRAMS[key] = (prog, compiled, readers, avals)
    else:
        guards.clear()
    return prog, compiled, prog.captures


def run_traced(fn, args, interpret=False, remember=None):
    """Trace `fn` on `args`, compile the program (or interpret it), run it, return its outputs.

    Python scalars among `args` are static; arrays are traced. `interpret=True` evaluates the
    program with the IR interpreter instead of compiling it (the python mode of derivatives).
    `remember(call)` receives a `CachedCall` that repeats this call on new arrays of the same
    signature, when the program is cached and compiled.
    """
    from .driver import as_argument, call_compiled
    from .ir import eval_ir
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
        from .gpu import program_impls, to_host
        outs = [to_host(o) for o in eval_ir(prog.ir, call_args, impls=program_impls())]
    else:
        outs = call_compiled(compiled, *call_args)
    input_ids = {id(a) for a in call_args}
    leaves = [np.array(o, dtype=v.dtype) if id(o) in input_ids or np.ndim(o) == 0
              else o for o, v in zip(prog.host_leaves(outs), prog.ir.outputs)]
    return _unflatten(prog.out_spec, leaves)


class CachedCall:
    """A traced and compiled program bound to one signature of a jit function's arguments:
    calling it checks the guards of what the function can see (tracecache.py) and passes
    the arrays straight to the compiled code, without keying, tracing or flattening."""

    def __init__(self, prog, compiled, guards, captures, values):
        from .driver import as_argument
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


def inline_inputs(prog: Program, args):
    """Values for `prog`'s inputs when it is replayed inside the current trace."""
    tr = current_trace()
    values = list(args) + list(prog.shared) + list(prog.captures)
    for s, used in zip(prog.streams, prog.rng_used):
        key, base, offset = tr.rng_next(s)
        if used is not None:          # a run-time use: `Program.traced_leaves` advances it
            tr.rng_advance(s, used)
        values += [key, base + np.uint64(offset) if offset else base]
    return values


class JitFunction:
    def __init__(self, fn):
        self.fn = fn
        self.calls: dict = {}          # call_signature -> CachedCall
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        sig = call_signature(args)
        if sig is not None and current_trace() is None and choose_mode() == "cpu":
            call = self.calls.get(sig)
            if call is not None:
                outs = call(args)
                if outs is not None:
                    return outs
            return run_traced(self.fn, args, remember=lambda call: self._remember(sig, call))
        if current_trace() is not None or any(isinstance(a, Tracer) for a in args):
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

    def _remember(self, sig, call):
        call.guards.append(("attr", self, "fn", self.fn))
        self.calls[sig] = call

    def source(self, *args):
        from .codegen.cpu import Module, render_main_function
        prog = trace_program(self.fn, list(args))
        module = Module()
        name = render_main_function(module, prog.ir)
        return prog.ir, module.source(f"program {name}")


def _checked(a, i):
    if isinstance(a, Shared):
        return a.get_value(borrow=True)
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument {i}: expected a numeric array, found {type(a).__name__} "
                        f"with dtype {arr.dtype}")
    return arr


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
        from .driver import scan_source
        sa = normalize(fn, scan_kwargs.get("sequences"), scan_kwargs.get("outputs_info"),
                       scan_kwargs.get("non_sequences"), scan_kwargs.get("n_steps"), -1,
                       scan_kwargs.get("go_backwards", False), None, False, False, None)
        ts = trace_step(sa)
        if scan_kwargs.get("mode") == "cuda":         # the kernel mode="cuda" would launch
            from .codegen.cuda import choose_pattern
            from .gpu import kernel_source
            pattern = choose_pattern(ts.ir, ts.layout)
            src = f"# layout: {ts.layout}\n# kernel pattern: {pattern}\n" + kernel_source(
                ts.ir, ts.layout, pattern)
        else:
            src = f"# layout: {ts.layout}\n" + scan_source(ts.ir, ts.layout)
        ir = ts.ir
    text = f"# traced program\n{ir}\n\n# generated source\n{src}"
    print(text, file=file)
    return text
