"""Stage: user API — derivatives: grad, value_and_grad, jvp, vjp, jacobians, hessian.

Each transformation traces the user's function into a program, replays it with the rules of
`ad/engine.py` inside a new trace, and runs the result like an `ns.jit` program (compiled, or
interpreted in python mode). Called on traced values (inside `ns.jit`, a step or another
transformation) it records into the enclosing trace instead, so transformations compose:
`hessian = jacfwd(jacrev(f))`. `grad(cost, wrt)` on traced values is Theano's form.
"""

from __future__ import annotations

import numpy as np

from ..ad import rules
from ..ad.engine import Backward, DerivativeError, jvp_replay, vjp_rule, zeros_like
from ..core.context import active_traces, current_trace
from ..runtime.cache import traced_program
from ..runtime.program import run_traced
from ..trace.names import named, short_name
from ..trace.program import STATIC_TYPES, _flatten, _unflatten, inline_inputs, trace_program
from ..trace.tracer import RunTracer, Tracer, bind, constant
from .scan import choose_mode, scan


def _traced_one(dtype):
    """The seed cotangent 1, as a traced scalar: NumPy must not build the arrays derived from it
    (a broadcast of a constant would become a full-size input of the program)."""
    return bind("convert", [np.dtype(dtype).type(1)], dtype=np.dtype(dtype))


def _run(build, args):
    """Run `build(*args)`: inline inside a trace, else trace, compile and call it."""
    if current_trace() is not None or any(isinstance(a, Tracer) for a in args):
        return build(*args)
    return run_traced(build, list(args), interpret=choose_mode() == "python")


def _fixed_size(prog, what):
    if prog.runs:
        raise DerivativeError(f"{what}: the function returns the rows of a scan that stops "
                              f"early (ns.until), whose number is a run-time value; return "
                              f"xs[-1] or a reduction")


def _argnums(argnums, n):
    nums = (argnums,) if isinstance(argnums, (int, np.integer)) else argnums
    if not isinstance(nums, (tuple, list)) or not nums or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))
            for i in nums):
        raise TypeError(f"argnums: expected an int or a non-empty tuple of ints (the positions "
                        f"of the arguments to differentiate), found "
                        f"{type(argnums).__name__} {argnums!r}")
    for i in nums:
        if not -n <= i < n:
            raise ValueError(f"argnums: {argnums!r} is out of range for {n} argument(s)")
    return tuple(i % n for i in nums)


def _check_differentiable(args, nums, what="argnums"):
    for i in nums:
        a = args[i]
        dtype = a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
        if np.dtype(dtype).kind != "f":
            raise DerivativeError(f"argument {i} (selected by {what}) has dtype {np.dtype(dtype)}: "
                                  f"only floating-point inputs have derivatives; pass it as a "
                                  f"float array (e.g. x.astype(np.float64))")


def _as_arrays(args, nums):
    """Python numbers selected for differentiation become arrays (so they are traced)."""
    return [np.asarray(a, dtype=np.float64) if i in nums and isinstance(a, (int, float))
            and not isinstance(a, bool) else a for i, a in enumerate(args)]


def _selected(argnums, args):
    """(indices of the arguments to differentiate, the arguments) after checking them."""
    nums = _argnums(argnums, len(args))
    args = _as_arrays(args, nums)
    _check_differentiable(args, nums)
    return nums, args


def _traced_positions(args):
    """Index, among the program's traced arguments, of each positional argument."""
    pos, k = {}, 0
    for i, a in enumerate(args):
        if not isinstance(a, STATIC_TYPES):
            pos[i] = k
            k += 1
    return pos


def _backward(f, args, nums):
    prog = trace_program(f, args)
    traced = [a for a in args if not isinstance(a, STATIC_TYPES)]
    pos = _traced_positions(args)
    active = [False] * len(prog.ir.inputs)
    for i in nums:
        active[pos[i]] = True
    bw = Backward(prog.ir, inline_inputs(prog, traced), active)
    return prog, bw, pos, prog.traced_leaves(bw.outputs)


def _label(transform, f):
    """The name messages give the functions `transform` makes of `f`: "ns.grad(loss)"."""
    return f"{transform}({short_name(f)})"


def value_and_grad(f, argnums=0):
    """`(f(*args), d f / d args[argnums])` for scalar-valued `f`."""
    return _value_and_grad(f, argnums, _label("ns.value_and_grad", f))


def _value_and_grad(f, argnums, label):
    def value_and_grad_f(*args):
        nums, args = _selected(argnums, args)

        def build(*args):
            prog, bw, pos, leaves = _backward(f, args, nums)
            if len(leaves) != 1 or prog.runs or np.shape(leaves[0]) != ():
                raise DerivativeError(f"grad: the function must return one scalar, found "
                                      f"{len(leaves)} output(s) of shapes "
                                      f"{[np.shape(o) for o in leaves]}; use ns.jacobian "
                                      f"or ns.vjp for other outputs")
            out = leaves[0]
            cts = bw.run([_traced_one(out.dtype)])
            grads = tuple(cts[pos[i]] if cts[pos[i]] is not None else zeros_like(args[i])
                          for i in nums)
            return out, grads if not isinstance(argnums, (int, np.integer)) else grads[0]
        return _run(named(build, label), args)
    return named(value_and_grad_f, label)


def grad(f, argnums=0):
    """`d f / d args[argnums]`; or, Theano's form, `grad(cost, wrt)` on traced values."""
    if isinstance(f, Tracer):
        return theano_grad(f, argnums)
    label = _label("ns.grad", f)
    vg = _value_and_grad(f, argnums, label)

    def grad_f(*args):
        return vg(*args)[1]
    return named(grad_f, label)


def jvp(f, primals, tangents):
    """Forward mode: `(f(*primals), J @ tangents)`."""
    primals, tangents = list(primals), list(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primal(s) but {len(tangents)} tangent(s)")
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if np.shape(p) != np.shape(t):
            raise ValueError(f"jvp: tangent {i} has shape {np.shape(t)}, but its primal has "
                             f"shape {np.shape(p)}")
    _check_differentiable(primals, range(len(primals)), "primals")
    for i, t in enumerate(tangents):
        dtype = np.dtype(t.dtype) if hasattr(t, "dtype") else np.asarray(t).dtype
        if dtype.kind != "f":          # as in JAX: a float primal's tangent is a float array
            raise TypeError(f"tangents[{i}]: expected a floating-point tangent (the primal "
                            f"is a float array), found {type(t).__name__} of dtype {dtype}; "
                            f"pass it as a float array, e.g. np.asarray(t, dtype=np.float64)")
    n = len(primals)
    primals = _as_arrays(primals, range(n))

    def build(*args):
        ps, ts = list(args[:n]), list(args[n:])
        prog = trace_program(f, ps)
        outs, touts = jvp_replay(prog.ir, inline_inputs(prog, ps),
                                 ts + [None] * (len(prog.ir.inputs) - n))
        touts = [t if t is not None else zeros_like(o) for t, o in zip(touts, outs)]
        n_rows = outs[prog.n_leaves:]
        outs = prog.traced_leaves(outs)
        for k, i in enumerate(prog.runs):
            touts[i] = RunTracer(current_trace(), current_trace().lift(touts[i]), n_rows[k])
        return (_unflatten(prog.out_spec, outs),
                _unflatten(prog.out_spec, touts[:prog.n_leaves]))
    return _run(named(build, _label("ns.jvp", f)),
                primals + [np.asarray(t, dtype=np.asarray(p).dtype)
                           if not isinstance(t, Tracer) else t
                           for p, t in zip(primals, tangents)])


def vjp(f, *primals):
    """Reverse mode: `(f(*primals), vjp_fn)`; `vjp_fn(cotangent)` returns one array per primal."""
    _check_differentiable(primals, range(len(primals)), "primals")
    n = len(primals)
    primals = _as_arrays(primals, range(n))
    label = _label("ns.vjp", f)
    outputs = _run(named(lambda *a: f(*a), label), list(primals))
    out_leaves, out_spec = _flatten(outputs)

    def vjp_fn(cotangent):
        ct_leaves, ct_spec = _flatten(cotangent)
        if len(ct_leaves) != len(out_leaves):
            raise ValueError(f"vjp_fn: expected a cotangent with {len(out_leaves)} part(s) like "
                             f"the outputs, found {len(ct_leaves)}")
        for i, (c, o) in enumerate(zip(ct_leaves, out_leaves)):
            if np.shape(c) != np.shape(o):
                raise ValueError(f"vjp_fn: cotangent part {i} has shape {np.shape(c)}, the "
                                 f"output has shape {np.shape(o)}")

        def build(*args):
            ps, cts = list(args[:n]), list(args[n:])
            prog, bw, pos, _ = _backward(f, ps, range(n))
            for i in prog.runs:          # rows past those that ran get no cotangent
                bound = bw.outputs[i].shape[0]
                if cts[i].shape[0] < bound:
                    cts[i] = np.concatenate([cts[i], constant(np.zeros(
                        (bound - cts[i].shape[0],) + tuple(cts[i].shape[1:]), cts[i].dtype))])
            in_cts = bw.run(cts)
            return tuple(in_cts[pos[i]] if in_cts[pos[i]] is not None else zeros_like(ps[i])
                         for i in range(n))
        return _run(named(build, label),
                    list(primals) + [c if isinstance(c, Tracer) else
                                     np.asarray(c, dtype=np.asarray(o).dtype)
                                     for c, o in zip(ct_leaves, out_leaves)])
    return outputs, vjp_fn


def _basis(size, dtype):
    return constant(np.eye(size, dtype=dtype))


def jacfwd(f, argnums=0):
    """Jacobian by forward mode: one tangent per input element, run as one scan."""
    return _jacfwd(f, argnums, _label("ns.jacfwd", f))


def _jacfwd(f, argnums, label):
    def jac(*args):
        nums, args = _selected(argnums, args)

        def build(*args):
            results = []
            for i in nums:
                x = args[i]
                shape, dtype = np.shape(x), np.dtype(x.dtype)

                def column(e, i=i, x=x):
                    tangents = [np.reshape(e, np.shape(x)) if j == i else
                                (constant(np.zeros(np.shape(a), a.dtype)) if not isinstance(a, STATIC_TYPES)
                                 else None) for j, a in enumerate(args)]
                    traced = [a for a in args if not isinstance(a, STATIC_TYPES)]
                    tan = [t for t, a in zip(tangents, args) if not isinstance(a, STATIC_TYPES)]
                    prog = trace_program(f, args)
                    replayed, touts = jvp_replay(prog.ir, inline_inputs(prog, traced),
                                                 tan + [None] * (len(prog.ir.inputs) - len(tan)))
                    outs = prog.ir.outputs
                    _fixed_size(prog, "jacobian")
                    prog.traced_leaves(replayed)
                    if prog.n_leaves != 1:
                        raise DerivativeError("jacobian: the function must return one array")
                    t = touts[0]
                    return t if t is not None else constant(np.zeros(outs[0].shape, outs[0].dtype))
                size = int(np.prod(shape))
                cols, _ = scan(named(column, label), sequences=_basis(size, dtype),
                               return_list=True)
                cols = cols[0]                                # (size, *out_shape)
                out_nd = cols.ndim - 1
                J = np.transpose(cols, tuple(range(1, out_nd + 1)) + (0,))
                results.append(np.reshape(J, tuple(J.shape[:out_nd]) + tuple(shape)))
            return results[0] if isinstance(argnums, (int, np.integer)) else tuple(results)
        return _run(named(build, label), args)
    return named(jac, label)


def jacrev(f, argnums=0):
    """Jacobian by reverse mode: one forward pass, one backward pass per output element."""
    label = _label("ns.jacrev", f)

    def jac(*args):
        nums, args = _selected(argnums, args)

        def build(*args):
            prog, bw, pos, leaves = _backward(f, args, nums)
            _fixed_size(prog, "jacobian")
            if len(leaves) != 1:
                raise DerivativeError("jacobian: the function must return one array")
            out = leaves[0]
            oshape, odtype = np.shape(out), np.dtype(out.dtype)

            def row(e):
                cts = bw.run([np.reshape(e, oshape)])
                return [cts[pos[i]] if cts[pos[i]] is not None else zeros_like(args[i])
                        for i in nums]
            size = int(np.prod(oshape))
            rows, _ = scan(named(row, label), sequences=_basis(size, odtype),
                           return_list=True)
            results = [np.reshape(r, tuple(oshape) + tuple(np.shape(args[i])))
                       for r, i in zip(rows, nums)]
            return results[0] if isinstance(argnums, (int, np.integer)) else tuple(results)
        return _run(named(build, label), args)
    return named(jac, label)


def jacobian(f, argnums=0, mode="auto"):
    """Jacobian of `f`; mode "fwd", "rev" or "auto" (forward when inputs are fewer)."""
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"mode: expected 'auto', 'fwd' or 'rev', found {mode!r}")

    def jac(*args):
        m = mode
        if m == "auto":
            nums = _argnums(argnums, len(args))
            n_in = sum(int(np.prod(np.shape(args[i]))) for i in nums)
            out = output_shape(f, args)
            m = "fwd" if n_in <= int(np.prod(out)) else "rev"
        return (jacfwd if m == "fwd" else jacrev)(f, argnums)(*args)
    return named(jac, _label("ns.jacobian", f))


def output_shape(f, args):
    args = [a if isinstance(a, STATIC_TYPES) or isinstance(a, Tracer) else np.asarray(a)
            for a in args]
    if current_trace() is None and not any(isinstance(a, Tracer) for a in args):
        prog = traced_program(f, args, interpret=True)[0]      # kept by the trace cache
    else:
        prog = trace_program(f, args)
    return prog.ir.outputs[0].shape


def hessian(f, argnums=0):
    """Matrix of second derivatives: forward over reverse."""
    return _jacfwd(jacrev(f, argnums), argnums, _label("ns.hessian", f))


# ------------------------------------------------------------------------------------------------
# Theano's grad(cost, wrt) on traced values


def theano_grad(cost, wrt):
    """Gradient of traced scalar `cost` w.r.t. traced `wrt` (a value or a list), recorded in the
    current trace. The walk follows `cost` back through enclosing traces (a step's closure)."""
    wrt_list = list(wrt) if isinstance(wrt, (list, tuple)) else [wrt]
    for i, w in enumerate(wrt_list):
        if not isinstance(w, Tracer):
            raise TypeError(f"grad: wrt[{i}] must be a traced value (an argument or a result "
                            f"inside ns.jit or a step), found {type(w).__name__}")
    if np.shape(cost) != ():
        raise DerivativeError(f"grad: cost must be a scalar, found shape {np.shape(cost)}")
    traces = active_traces()
    if cost.trace not in traces:
        raise DerivativeError("grad: cost belongs to a function that is no longer being traced")
    ct = {(id(cost.trace), cost.var.id): _traced_one(cost.dtype)}
    keep = {(id(w.trace), w.var.id) for w in wrt_list}
    for tr in reversed(traces[:traces.index(cost.trace) + 1]):
        for e in reversed(tr.eqns):
            gs = []
            for v in e.outputs:
                key = (id(tr), v.id)
                gs.append(ct.get(key) if key in keep else ct.pop(key, None))
            if all(g is None for g in gs):
                continue
            ins = [Tracer(tr, v) if hasattr(v, "id") else v.value for v in e.inputs]
            outs = [Tracer(tr, v) for v in e.outputs]
            if e.prim in rules.VJP_BACKWARD_RULES:
                live = [hasattr(v, "id") and np.dtype(v.dtype).kind == "f" for v in e.inputs]
                _, saved = rules.VJP_FORWARD_RULES[e.prim](e, ins, live)
                in_cts = rules.VJP_BACKWARD_RULES[e.prim](e, ins, outs, gs, saved)
            else:
                in_cts = vjp_rule(e, ins, outs, gs)
            for v, g in zip(e.inputs, in_cts):
                if g is not None and hasattr(v, "id") and np.dtype(v.dtype).kind == "f":
                    key = (id(tr), v.id)
                    ct[key] = rules._add(ct.get(key), g)
        for c in tr.captures:
            key = (id(tr), c.var.id)
            if key in ct and isinstance(c.source, Tracer):
                src = (id(c.source.trace), c.source.var.id)
                ct[src] = rules._add(ct.get(src), ct[key] if key in keep else ct.pop(key))
    grads = [ct.get((id(w.trace), w.var.id)) for w in wrt_list]
    grads = [g if g is not None else zeros_like(w) for g, w in zip(grads, wrt_list)]
    grads = [g.astype(w.dtype) if g.dtype != w.dtype else g for g, w in zip(grads, wrt_list)]
    return grads if isinstance(wrt, (list, tuple)) else grads[0]
