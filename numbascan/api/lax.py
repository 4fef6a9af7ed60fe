"""Stage: user API — JAX's loop API (`import numbascan.lax as nlax`) as a front end of ns.scan.

Every loop here is an `ns.scan` of the same engine (the same IR, code generators, drivers and
derivative rules): its pytrees (api/pytree.py) are flattened into ns.scan's flat arguments and
unflattened inside the step handed to it. Eager on NumPy arrays (compiled, in the default
mode), recorded as a scan equation inside `ns.jit`, `ns.vmap`, the derivatives and other steps.

  * `scan(f, init, xs, length, reverse, unroll)`: the leaves of `xs` are sequences, those of
    the carry fed-back outputs (taps [-1]), those of `y` map outputs (a `None` leaf is no
    output). `reverse` is go_backwards, with `ys` put back in the order of `xs`, as JAX
    returns them. `f` is traced once beforehand (`_probe`) to learn the structure of `y`,
    which fixes the number of outputs ns.scan is told about.
  * `map(f, xs)`: a scan with an empty carry.
  * `fori_loop(lower, upper, body_fun, init_val)`: static bounds: a scan of `upper - lower`
    steps carrying `(i, val)`. Traced bounds: the same scan over a sequence of `max_steps`
    empty rows of which `clip(upper - lower, 0, max_steps)` ran (a RunTracer, the mechanism
    by which a scan walks the rows of an until-scan): a run-time trip count, no step wasted.
  * `while_loop(cond_fun, body_fun, init_val)`: a scan of at most `max_steps` steps that
    carries `(val, cond_fun(val))` and stops with ns.until when the condition turns false;
    a step whose carried condition is false keeps `val` (only the first step can meet one:
    when `cond_fun(init_val)` is false).
  * `associative_scan(fn, elems, reverse, axis)`: in traced code, and eagerly for more than a
    chunk of elements when that is worth the cores, a parallel map of scans over chunks
    (api/prefix.py); other eager calls run JAX's algorithm (combine neighbours, recurse on the
    half, interleave), O(log n) levels of whole-array NumPy slicing and concatenation.

The loops keep only the last carry in memory (`_keep_last`, also in a scan with `ys`, which
stores every `y`).
"""

from __future__ import annotations

import numpy as np

from ..core.context import current_trace
from ..loop.args import ScanError, until
from ..runtime.cache import function_key
from ..trace.captures import with_traced_captures
from ..trace.tracer import RunTracer, Trace, Tracer, TracingError, constant
from .prefix import parallel_prefixes, runs_in_chunks
from .pytree import first_difference, flatten, leaf_paths, unflatten
from .scan import scan as theano_scan

# The bound of while_loop and of fori_loop with traced bounds: the most steps they run. Inside
# traced code it also sizes the tape of reverse mode (max_steps rows of the carry).
DEFAULT_MAX_STEPS = 100_000


class CarryError(ScanError, TypeError):
    """A loop's carry changed its structure, shape or dtype in the body (JAX: a TypeError;
    numbascan's scan errors are ValueErrors: this is both)."""


# ------------------------------------------------------------------------------------------------
# leaves


def _is_array(x):
    return isinstance(x, (np.ndarray, Tracer)) or hasattr(x, "__cuda_array_interface__")


def _leaf_value(x, path, where):
    """A leaf as ns.scan takes it: arrays and tracers as they are, numbers as NumPy arrays
    (a Python float is float64, an int int64: NumPy's dtypes, where JAX's default is 32 bits)."""
    if _is_array(x):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:        # a ragged nesting, an exotic object
        raise TypeError(f"{where}: {path}: expected an array, found {type(x).__name__} "
                        f"({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{where}: {path}: expected a numeric array (bool, int or float), "
                        f"found {type(x).__name__} with dtype {arr.dtype}")
    return arr


def _aval(x):
    """(dtype string, shape) of an array or tracer: hashable, and keyed by value in caches."""
    return np.dtype(x.dtype).str, tuple(int(d) for d in x.shape)


def _weak(value, dtype):
    """A Python number returned for a leaf of `dtype` takes that dtype, as JAX's weakly typed
    numbers do (an int or bool for a float leaf, a bool for an int leaf, not the reverse)."""
    if isinstance(value, bool):
        kinds = "biuf"
    elif isinstance(value, int) and not isinstance(value, bool):
        kinds = "iuf"
    elif isinstance(value, float):
        kinds = "f"
    else:
        return value
    return np.asarray(value, dtype) if np.dtype(dtype).kind in kinds else np.asarray(value)


def _check_carry(new, carry_def, avals, where, root="carry"):
    """The leaves of `new`, checked against the carry's structure and (dtype, shape) avals;
    raises a CarryError naming the leaf's path (`carry[1]['h']`)."""
    leaves, new_def = flatten(new)
    diff = first_difference(carry_def, new_def, root)
    if diff is not None:
        path, expected, found = diff
        raise CarryError(
            f"{where}: the body returned a carry whose structure differs from the initial "
            f"one at {path}: expected {expected}, found {found}; the carry keeps its "
            f"structure (the same nesting of tuples, lists and dicts) from step to step")
    out = []
    for path, leaf, (dtype, shape) in zip(leaf_paths(carry_def, root), leaves, avals):
        if isinstance(leaf, RunTracer):
            raise CarryError(f"{where}: {path}: the body returned the rows of a scan that "
                             f"stops early (ns.until), whose number is a run-time value, for "
                             f"a carry of shape {shape}; return xs[-1] or a reduction")
        leaf = _leaf_value(_weak(leaf, dtype), path, where)
        found_dtype, found_shape = np.dtype(leaf.dtype), tuple(leaf.shape)
        if found_dtype != np.dtype(dtype) or found_shape != shape:
            fix = (f"cast it with .astype(np.{np.dtype(dtype).name})" if found_shape == shape
                   else f"return an array of shape {shape}")
            raise CarryError(
                f"{where}: {path} has dtype {np.dtype(dtype).name} and shape {shape} in the "
                f"initial carry, but the body returned dtype {found_dtype.name} and shape "
                f"{found_shape}; the carry keeps its structure, shapes and dtypes from step to "
                f"step: {fix}")
        out.append(leaf)
    return out


def _output(y, path, where):
    """A leaf of the body's `y`: numbers become arrays; arrays and tracers stay."""
    return y if _is_array(y) else _leaf_value(y, path, where)


def _copy(x):
    """An eager result that is a fresh array (never one the caller passed in); tracers as is."""
    return x if isinstance(x, Tracer) else np.array(x)


def _named(step, user_fn):
    """The step handed to ns.scan, named after the user's body: messages about the step (a
    step that cannot be traced, ns.show) name the function the user wrote."""
    name = getattr(user_fn, "__qualname__", None) or type(user_fn).__name__
    step.__name__ = step.__qualname__ = name
    return step


def _check_unroll(unroll, where, allow_none=False):
    """JAX's unroll: a bool or a positive int. numbascan's code generator chooses how to
    unroll a step, so the value changes nothing: accepted for compatibility."""
    if unroll is None and allow_none:
        return
    if isinstance(unroll, (bool, np.bool_)):
        return
    if not isinstance(unroll, (int, np.integer)):
        raise TypeError(f"{where}: unroll: expected a bool or a positive int, found "
                        f"{type(unroll).__name__} {unroll!r}")
    if unroll < 1:
        raise ValueError(f"{where}: unroll: expected a bool or a positive int, found {unroll}")


def _check_max_steps(max_steps, where):
    if isinstance(max_steps, (bool, np.bool_)) or not isinstance(max_steps, (int, np.integer)):
        raise TypeError(f"{where}: max_steps: expected a positive int, found "
                        f"{type(max_steps).__name__} {max_steps!r}")
    if max_steps < 1:
        raise ValueError(f"{where}: max_steps: expected a positive int, found {max_steps}")
    return int(max_steps)


# ------------------------------------------------------------------------------------------------
# scan


def _pair(out, where):
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        found = (f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list))
                 else type(out).__name__)
        raise TypeError(f"{where}: the body must return a pair (carry, y), found {found}")
    return out


def _call_body(f, x_def, carry_def, carry_avals, args):
    """f(carry, x) on the step's flat arguments (the xs leaves, then the carry leaves): the
    new carry's leaves (checked), y's leaves and y's structure."""
    nx = x_def.n_leaves
    x = unflatten(x_def, args[:nx])
    carry = unflatten(carry_def, args[nx:])
    new_carry, y = _pair(f(carry, x), "scan")
    new_leaves = _check_carry(new_carry, carry_def, carry_avals, "scan")
    y_leaves, y_def = flatten(y)
    y_leaves = [_output(v, p, "scan") for v, p in zip(y_leaves, leaf_paths(y_def, "y"))]
    return new_leaves, y_leaves, y_def


def _scan_step(f, x_def, carry_def, carry_avals, y_def):
    """The step ns.scan calls: fn(*xs leaves, *carry leaves) -> (*new carry, *y leaves)."""
    def step(*args):
        new_leaves, y_leaves, found = _call_body(f, x_def, carry_def, carry_avals, args)
        if found != y_def:
            raise TypeError(f"scan: the body returned y of another structure than when it "
                            f"was first traced: {found} after {y_def}")
        return tuple(new_leaves) + tuple(y_leaves)
    return _named(step, f)


def _probe_body(f, x_def, carry_def, carry_avals):
    def body(*args):
        return _call_body(f, x_def, carry_def, carry_avals, args)
    return body


# (key of the body's function, avals of its arguments) -> (y structure, y avals): what the
# probe found, so that an eager call of a body seen before is traced only by ns.scan's cache
_PROBES: dict = {}


def _probe(f, x_def, carry_def, carry_avals, arg_avals, concrete_args):
    """(y structure, (dtype, shape) of each y leaf): the body traced once on stand-ins (the
    carry checks run there too). A body that cannot be traced (it still runs forward,
    untraced, in an eager scan) is called once on `concrete_args` instead."""
    body = _probe_body(f, x_def, carry_def, carry_avals)
    key, _ = function_key(body)
    if key is not None:
        key = (key, tuple(arg_avals))
        found = _PROBES.get(key)
        if found is not None:
            return found
    try:
        with Trace("lax.scan", f, kind="step") as tr:
            args = [tr.new_arg(np.dtype(d), s) for d, s in arg_avals]
            _, y_leaves, y_def = with_traced_captures(body, tr)[0](*args)
    except TracingError:
        if concrete_args is None:
            raise
        _, y_leaves, y_def = body(*concrete_args)
    found = (y_def, tuple(_aval(y) if _is_array(y) else _aval(np.asarray(y))
                          for y in y_leaves))
    if key is not None:
        _PROBES[key] = found
    return found


def _scan_length(x_leaves, x_paths, length, where):
    """The static number of steps; None when a leaf is the rows of an until-scan (a run-time
    count, which ns.scan reads from it)."""
    lengths = []
    for leaf, path in zip(x_leaves, x_paths):
        if len(leaf.shape) == 0:
            raise ValueError(f"{where}: {path}: expected an array with a leading axis to scan "
                             f"over, found a 0-d value")
        lengths.append(None if isinstance(leaf, RunTracer) else int(leaf.shape[0]))
    static = {n for n in lengths if n is not None}
    if len(static) > 1:
        sizes = ", ".join(f"{p}.shape[0]={n}" for p, n in zip(x_paths, lengths) if n is not None)
        raise ValueError(f"{where}: the leaves of xs must have the same leading axis size, "
                         f"found {sizes}")
    if length is not None:
        if isinstance(length, (bool, np.bool_)) or not isinstance(length, (int, np.integer)):
            raise TypeError(f"{where}: length: expected an int, found "
                            f"{type(length).__name__} {length!r}")
        length = int(length)
        if length < 0:
            raise ValueError(f"{where}: length: expected a non-negative int, found {length}")
        if static and static != {length}:
            raise ValueError(f"{where}: length={length} disagrees with the leading axis size "
                             f"of xs ({static.pop()})")
        return length
    if not lengths:
        raise ValueError(f"{where}: xs has no arrays to scan over and length is not given; "
                         f"pass length= (the number of steps)")
    return None if None in lengths else lengths[0]


def scan(f, init, xs=None, length=None, reverse=False, unroll=1, *, mode=None, parallel=None):
    """JAX's `lax.scan`: `carry, ys = scan(f, init, xs)` with `f(carry, x) -> (carry, y)`.

    `init`, `xs`, the carry and `y` are pytrees (nested tuples, lists, dicts; `None` in `y`
    is not stored). `ys` stacks each leaf of `y` along a new leading axis, in the order of
    `xs` also with `reverse=True` (which walks `xs` from its end). `length` is the number of
    steps when there are no `xs`. `unroll` is accepted and changes nothing (numbascan's code
    generator unrolls as it sees fit). `mode` is ns.scan's ("cpu", "python", "cuda"), and so is
    `parallel` (a carry affine in itself as a parallel prefix scan: docs/guide.md, "Parallel
    in time")."""
    where = "scan"
    if not callable(f):
        raise TypeError(f"{where}: f: expected a callable f(carry, x) -> (carry, y), found "
                        f"{type(f).__name__}")
    _check_unroll(unroll, where)
    carry_leaves, carry_def = flatten(init)
    carry_leaves = [_leaf_value(v, p, where)
                    for v, p in zip(carry_leaves, leaf_paths(carry_def, "init"))]
    x_leaves, x_def = flatten(xs)
    x_paths = leaf_paths(x_def, "xs")
    x_leaves = [_leaf_value(v, p, where) for v, p in zip(x_leaves, x_paths)]
    n = _scan_length(x_leaves, x_paths, length, where)
    carry_avals = tuple(_aval(v) for v in carry_leaves)
    arg_avals = tuple((np.dtype(v.dtype).str, tuple(v.shape[1:])) for v in x_leaves)
    arg_avals += carry_avals
    concrete = None
    if not any(isinstance(v, Tracer) for v in carry_leaves + x_leaves) and n:
        concrete = [v[0] for v in x_leaves] + carry_leaves
    y_def, y_avals = _probe(f, x_def, carry_def, carry_avals, arg_avals, concrete)
    nc, ny = len(carry_leaves), len(y_avals)

    if n == 0 or nc + ny == 0:        # nothing runs (n is None: a run-time count)
        ys = [constant(np.zeros((n or 0,) + shape, dtype)) for dtype, shape in y_avals]
        return unflatten(carry_def, [_copy(c) for c in carry_leaves]), unflatten(y_def, ys)

    step = _scan_step(f, x_def, carry_def, carry_avals, y_def)
    outs, _ = theano_scan(step, sequences=x_leaves or None,
                          outputs_info=carry_leaves + [None] * ny, n_steps=length,
                          go_backwards=reverse, mode=mode, return_list=True,
                          parallel=parallel, _keep_last=tuple(range(nc)))
    carry, ys = list(outs[:nc]), outs[nc:]                   # the last states, every y
    if reverse:
        ys = [y[::-1] if isinstance(y, Tracer) else np.ascontiguousarray(y[::-1]) for y in ys]
    return unflatten(carry_def, carry), unflatten(y_def, ys)


def _map_body(f):
    def body(carry, x):
        return carry, f(x)
    return body


def map(f, xs, *, batch_size=None, mode=None):
    """JAX's `lax.map`: `f` applied to each slice of `xs` along its leading axis (pytrees
    allowed), the results stacked. `batch_size` is accepted and changes nothing."""
    if batch_size is not None and (isinstance(batch_size, bool) or
                                   not isinstance(batch_size, (int, np.integer)) or
                                   batch_size < 1):
        raise ValueError(f"map: batch_size: expected None or a positive int, found "
                         f"{batch_size!r}")
    return scan(_map_body(f), (), xs, mode=mode)[1]


# ------------------------------------------------------------------------------------------------
# fori_loop and while_loop


def _static_bound(x, what):
    """An int for a bound known now (a Python or NumPy integer, a 0-d integer array), None
    for a traced one."""
    if isinstance(x, Tracer):
        if x.shape != () or x.dtype.kind not in "iu":
            raise TypeError(f"fori_loop: {what}: expected an integer scalar, found a traced "
                            f"{x.dtype} value of shape {x.shape}")
        return None
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"fori_loop: {what}: expected an integer, found {x!r}")
    arr = np.asarray(x)
    if arr.shape != () or arr.dtype.kind not in "iu":
        raise TypeError(f"fori_loop: {what}: expected an integer scalar, found "
                        f"{type(x).__name__} {x!r}")
    return int(arr)


def _fori_step(body_fun, val_def, val_avals, with_row):
    """fn([row,] i, *val leaves) -> (i + 1, *new val leaves)."""
    def step(*args):
        if with_row:
            args = args[1:]
        i, leaves = args[0], args[1:]
        new = body_fun(i, unflatten(val_def, leaves))
        return (i + 1,) + tuple(_check_carry(new, val_def, val_avals, "fori_loop"))
    return _named(step, body_fun)


def fori_loop(lower, upper, body_fun, init_val, *, unroll=None, max_steps=DEFAULT_MAX_STEPS,
              mode=None):
    """JAX's `lax.fori_loop`: `val = body_fun(i, val)` for `i` in `range(lower, upper)`.

    With bounds known when it is called (Python or NumPy ints: eager calls, static ns.jit
    arguments) a scan of `upper - lower` steps. With traced bounds (arrays passed to an
    ns.jit function, ns.vmap, a derivative) a scan whose trip count is a run-time value, at
    most `max_steps` (the loop stops there if `upper - lower` is larger). Both are
    differentiable in both modes (JAX: reverse mode needs static bounds). `i` is an int64
    scalar. `unroll` is accepted and changes nothing."""
    where = "fori_loop"
    _check_unroll(unroll, where, allow_none=True)
    max_steps = _check_max_steps(max_steps, where)
    lo, hi = _static_bound(lower, "lower"), _static_bound(upper, "upper")
    leaves, val_def = flatten(init_val)
    leaves = [_leaf_value(v, p, where) for v, p in zip(leaves, leaf_paths(val_def, "init_val"))]
    avals = tuple(_aval(v) for v in leaves)
    if lo is not None and hi is not None:
        n = max(hi - lo, 0)
        if n == 0:
            return unflatten(val_def, [_copy(v) for v in leaves])
        step = _fori_step(body_fun, val_def, avals, with_row=False)
        outs, _ = theano_scan(step, outputs_info=[np.asarray(lo, np.int64)] + leaves,
                              n_steps=n, mode=mode, return_list=True, _keep_last=True)
        return unflatten(val_def, outs[1:])
    # a run-time trip count: max_steps empty rows, of which clip(upper - lower) ran
    trace = current_trace()
    i0 = (lower.astype(np.int64) if isinstance(lower, Tracer) else np.asarray(lo, np.int64))
    i_end = (upper.astype(np.int64) if isinstance(upper, Tracer) else np.asarray(hi, np.int64))
    trip = np.clip(i_end - i0, 0, max_steps)
    rows = constant(np.zeros((max_steps, 0), np.bool_))
    run = RunTracer(trace, trace.lift(rows), trip)
    step = _fori_step(body_fun, val_def, avals, with_row=True)
    outs, _ = theano_scan(step, sequences=[run], outputs_info=[i0] + leaves, mode=mode,
                          return_list=True, _keep_last=True)
    return unflatten(val_def, outs[1:])


def _condition(value, where):
    """cond_fun's result: a boolean scalar (an array, a tracer or a Python bool)."""
    arr = value if _is_array(value) else np.asarray(value)
    if tuple(arr.shape) != () or np.dtype(arr.dtype) != np.bool_:
        raise TypeError(f"{where}: cond_fun must return a boolean scalar, found dtype "
                        f"{np.dtype(arr.dtype)} and shape {tuple(arr.shape)}")
    return arr


def _while_step(cond_fun, body_fun, val_def, val_avals):
    """fn(*val leaves, go) -> (*new val leaves, go', until(not go')): `go` is cond_fun of
    the carried value; a step that starts with it false keeps the value."""
    def step(*args):
        leaves, go = args[:-1], args[-1]
        new = body_fun(unflatten(val_def, leaves))
        new = _check_carry(new, val_def, val_avals, "while_loop")
        new = [np.where(go, a, b) for a, b in zip(new, leaves)]
        go_next = _condition(cond_fun(unflatten(val_def, new)), "while_loop")
        return tuple(new) + (go_next, until(np.logical_not(go_next)))
    return _named(step, body_fun)


def while_loop(cond_fun, body_fun, init_val, *, max_steps=DEFAULT_MAX_STEPS, mode=None):
    """JAX's `lax.while_loop`: `while cond_fun(val): val = body_fun(val)`.

    A scan with ns.until, bounded by `max_steps` steps. An eager call whose condition still
    holds after `max_steps` steps raises a ValueError; in traced code (ns.jit, ns.vmap,
    derivatives) the loop stops there and returns the value after `max_steps` steps.
    Differentiable in both modes (JAX: forward mode only): the tape holds the steps that
    ran, at most `max_steps` rows of the carry."""
    where = "while_loop"
    max_steps = _check_max_steps(max_steps, where)
    leaves, val_def = flatten(init_val)
    leaves = [_leaf_value(v, p, where) for v, p in zip(leaves, leaf_paths(val_def, "init_val"))]
    avals = tuple(_aval(v) for v in leaves)
    go = _condition(cond_fun(unflatten(val_def, leaves)), where)
    traced = isinstance(go, Tracer) or any(isinstance(v, Tracer) for v in leaves)
    if not traced and not bool(go):
        return unflatten(val_def, [_copy(v) for v in leaves])
    step = _while_step(cond_fun, body_fun, val_def, avals)
    outs, _ = theano_scan(step, outputs_info=leaves + [go], n_steps=max_steps, mode=mode,
                          return_list=True, _keep_last=True)
    if not traced and bool(outs[-1]):
        raise ValueError(f"{where}: max_steps: the loop ran max_steps={max_steps} steps and "
                         f"cond_fun still holds; pass a larger max_steps= (the bound of the "
                         f"scan that runs the loop)")
    return unflatten(val_def, outs[:-1])


# ------------------------------------------------------------------------------------------------
# associative_scan


def _slice(x, axis, start=None, stop=None, step=None):
    return x[(slice(None),) * axis + (slice(start, stop, step),)]


def _interleave(even, odd, axis):
    """even[0], odd[0], even[1], odd[1], ... along `axis` (even has as many elements as odd,
    or one more)."""
    k = odd.shape[axis]
    pairs = np.stack([_slice(even, axis, 0, k), odd], axis=axis + 1)
    shape = tuple(pairs.shape[:axis]) + (2 * k,) + tuple(pairs.shape[axis + 2:])
    merged = np.reshape(pairs, shape)
    if even.shape[axis] > k:
        merged = np.concatenate([merged, _slice(even, axis, k, None)], axis=axis)
    return merged


def associative_scan(fn, elems, reverse=False, axis=0, *, mode=None):
    """JAX's `lax.associative_scan`: every prefix `[a, fn(a, b), fn(fn(a, b), c), ...]` of an
    associative `fn` along `axis`, in O(log n) depth.

    `elems` is a pytree of arrays with the same size along `axis`; `fn(a, b)` takes and
    returns pytrees of that structure, applied elementwise along `axis` (it receives slices of
    any length). `reverse=True` gives `[..., fn(fn(z, y), x), fn(z, y), z]`. Traced code
    (ns.jit, ns.vmap, derivatives) and large eager calls of a traceable fn run as scans of
    chunks spread over the cores or the GPU's threads (api/prefix.py), where fn receives slices
    of length 1 and must keep each leaf's dtype and shape; other eager calls run JAX's odd/even
    recursion of NumPy's whole-array operations. `mode` is ns.scan's ("cpu", "python", "cuda";
    an eager call in "python" runs the odd/even recursion)."""
    where = "associative_scan"
    if not callable(fn):
        raise TypeError(f"{where}: fn: expected a callable, found {type(fn).__name__}")
    leaves, tree = flatten(elems)
    paths = leaf_paths(tree, "elems")
    leaves = [_leaf_value(v, p, where) for v, p in zip(leaves, paths)]
    if not leaves:
        raise ValueError(f"{where}: elems has no arrays")
    ndim = len(leaves[0].shape)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) or \
            not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"{where}: axis: {axis!r} is out of range for {paths[0]} of shape "
                         f"{tuple(leaves[0].shape)}")
    axis = int(axis) % ndim
    sizes = [v.shape[axis] if len(v.shape) > axis else None for v in leaves]
    if any(s != sizes[0] for s in sizes):
        raise ValueError(f"{where}: the leaves of elems must have the same size along axis "
                         f"{axis}, found " +
                         ", ".join(f"{p} of shape {tuple(v.shape)}" for p, v in zip(paths, leaves)))

    def combine(a, b):
        c = fn(unflatten(tree, a), unflatten(tree, b))
        c_leaves, c_def = flatten(c)
        diff = first_difference(tree, c_def, "fn(a, b)")
        if diff is not None:
            raise TypeError(f"{where}: fn must return the structure of elems; at {diff[0]} "
                            f"expected {diff[1]}, found {diff[2]}")
        return [_leaf_value(v, p, where) for v, p in zip(c_leaves, paths)]

    def prefixes(xs):
        n = xs[0].shape[axis]
        if n < 2:
            return xs
        # combine neighbours: the prefixes at odd positions are the prefixes of the pairs
        pairs = combine([_slice(x, axis, 0, -1, 2) for x in xs],
                        [_slice(x, axis, 1, None, 2) for x in xs])
        odd = prefixes(pairs)
        # the even positions (after the first) add the next element to an odd prefix
        if n % 2 == 0:
            even = combine([_slice(o, axis, 0, -1) for o in odd],
                           [_slice(x, axis, 2, None, 2) for x in xs])
        else:
            even = combine(odd, [_slice(x, axis, 2, None, 2) for x in xs])
        even = [np.concatenate([_slice(x, axis, 0, 1), e], axis=axis) for x, e in zip(xs, even)]
        return [_interleave(e, o, axis) for e, o in zip(even, odd)]

    if runs_in_chunks(fn, tree, leaves, axis, mode):
        return unflatten(tree, parallel_prefixes(fn, tree, leaves, axis, reverse, mode))
    if reverse:
        leaves = [_slice(x, axis, None, None, -1) for x in leaves]
    out = prefixes(leaves)
    if reverse:
        out = [_slice(x, axis, None, None, -1) for x in out]
    return unflatten(tree, [_copy(x) for x in out])
