"""Stage: user API — associative_scan's parallel prefix scan, a composition of scans.

`parallel_prefixes` computes every prefix `[x0, fn(x0, x1), fn(fn(x0, x1), x2), ...]` of an
associative `fn` with the tree of blocks that GPU scans use, written as scans of the same
engine (so it is compiled, traced inside ns.jit, batched by ns.vmap and differentiated like
any scan). The elements, scan axis first, are cut into chunks of `chunk` elements (CHUNK on
the CPU, CUDA_CHUNK on the GPU):

  1. the chunks' totals: a parallel map (ns.vmap's map: its steps spread over the cores by
     prange on the CPU, a thread per chunk in one CUDA kernel) whose step scans its chunk
     from its first element (a scan of chunk - 1 steps); the last prefix is the total;
  2. the prefixes of the totals before the last, by the same algorithm: level k has
     n / chunk**k elements, and the last, of at most a chunk, is one scan;
  3. the same parallel map again, each chunk scanned from the prefix of the chunks before it
     (chunk 0 from its own first element).

Both passes are one map function: one compile (of the three a parallel map costs the most:
1.5 s of numba's parfor pipeline on 2 cores), at the price of writing every prefix in pass 1
where its last one would do.

The last chunk is padded with copies of the last element: elements after the end change no
prefix before it, and the padding's results are dropped. Work: about 2n combines (JAX's
odd/even recursion also makes about 2n); depth: 2 chunk combines a level and log_chunk(n)
levels, O(log n) combines one after another, each level's chunks side by side.

A combine affine in its left operand (`fn(carry, x)` = carry * A(x) + B(x), or
carry @ A(x) + B(x), with A and B free of the carry: sums, products, the composition of affine
maps (a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2), products of small matrices) makes the prefixes
a linear recurrence of the carry, [x0, fn(x0, x1), fn(fn(x0, x1), x2), ...]: `parallel_prefixes`
first offers them to the parallel-in-time path (api/affine.py) as the scan of that fold with
`parallel=True`, which solves them by the `linrec` primitive (codegen/linrec.py on the CPU,
the block scan of codegen/cuda_linrec.py on the GPU), with its one-thread loop at the memory's
bandwidth in place of 2n combines; a combine the affinity analysis refuses (a maximum, a
log-sum-exp, matrices of more than 64 entries) takes the chunks above.

`fn` sees slices of length 1 along `axis` (JAX's fn takes slices of any length) and must give
back each leaf with its shape and dtype: the scans carry it. The combine is traced once, in the
map's step, so a program runs one map function twice a level whatever n is (the odd/even
recursion writes a dozen whole-array operations for each of its log2(n) levels, and its
compile time grew with them: 19 s for an add of 10^6 elements, 75 s for a linear recurrence).

Which algorithm runs (`runs_in_chunks`): traced code (ns.jit, ns.vmap, derivatives, a scan's
step) always takes this one (up to a chunk of elements it is a single scan). An eager call
takes it when it has more than a chunk of elements, is not in mode "python", `fn` can be
traced, and, on the CPU, its combines are at least codegen/parallel.py's work threshold (worth
the cores). The others take JAX's odd/even recursion in api/lax.py, NumPy's whole-array
operations, without compiling anything.
"""

from __future__ import annotations

import numpy as np

from ..codegen.parallel import min_work, step_work
from ..core.context import current_trace
from ..loop.args import ScanError
from ..trace.captures import with_traced_captures
from ..trace.names import function_name, named
from ..trace.tracer import Trace, Tracer, TracingError, constant
from .pytree import first_difference, flatten, leaf_paths, unflatten
from .scan import choose_mode, scan as theano_scan

# elements a chunk (a step of the parallel maps, a serial scan inside it): the run per element
# of a map step's call and allocations is about 1/CHUNK of its cost, and the depth is about
# 2 CHUNK log_CHUNK(n)
CHUNK = 512
# on CUDA a thread runs a chunk: chunks of scalars this small run a thread each (the
# batched kernel's thread per element, codegen/cuda.py), and n / 16 threads share the work
CUDA_CHUNK = 16
# estimated nanoseconds per element beyond the combine itself: the scans' loads and stores
PER_ELEMENT = 5


def runs_in_chunks(fn, tree, leaves, axis, mode):
    """Whether the prefixes of `leaves` along `axis` run as the scan of chunks (else JAX's
    odd/even recursion)."""
    if current_trace() is not None or any(isinstance(x, Tracer) for x in leaves):
        return True
    mode = choose_mode(mode, leaves)
    n = leaves[0].shape[axis]
    if mode == "python" or n <= chunk_size(mode):
        return False
    work = combine_work(fn, tree, leaves, axis)
    if work is None:                      # fn cannot be traced: NumPy's whole-array passes
        return False
    return mode == "cuda" or n * (work + PER_ELEMENT) >= min_work()


def chunk_size(mode):
    return CUDA_CHUNK if mode == "cuda" else CHUNK


def combine_work(fn, tree, leaves, axis):
    """Estimated nanoseconds of one combine (codegen/parallel.py), traced on stand-ins; None
    when `fn` cannot be traced."""
    rows = [(np.dtype(x.dtype), tuple(x.shape[:axis]) + tuple(x.shape[axis + 1:]))
            for x in leaves]
    try:
        with Trace("associative_scan", fn, kind="step") as tr:
            a = [tr.new_arg(d, s) for d, s in rows]
            b = [tr.new_arg(d, s) for d, s in rows]
            out = _combine_rows(with_traced_captures(fn, tr)[0], tree, axis, a, b)
            return step_work(tr.to_ir(out))
    except TracingError:
        return None


def parallel_prefixes(fn, tree, leaves, axis, reverse, mode):
    """The inclusive prefixes of `leaves` (arrays or tracers of one size along `axis`)."""
    rows = [_move(x, axis, 0) for x in leaves]
    if reverse:
        rows = [x[::-1] for x in rows]
    out = _as_recurrence(fn, tree, axis, rows, mode)
    if out is None:
        out = _by_chunks(fn, tree, axis, chunk_size(choose_mode(mode, leaves)), rows, mode)
    if reverse:
        out = [x[::-1] for x in out]
    # eager results are fresh arrays (views of the maps' buffers), C-contiguous as NumPy's
    return [_move(x, 0, axis) if isinstance(x, Tracer) else
            np.ascontiguousarray(_move(x, 0, axis)) for x in out]


def _move(x, source, destination):
    if source == destination:
        return x
    order = [a for a in range(x.ndim) if a != source]
    order.insert(destination, source)
    return np.transpose(x, order)


def _combine_rows(fn, tree, axis, a_rows, b_rows):
    """fn on one element of each side (`rows`: the leaves without the scan axis), called on
    slices of length 1 along `axis`; -> the leaves of the result, without that axis."""
    a = [np.expand_dims(r, axis) for r in a_rows]
    b = [np.expand_dims(r, axis) for r in b_rows]
    out = _combine_slices(fn, tree, a, b)
    return [np.reshape(leaf, r.shape) for leaf, r in zip(out, a_rows)]


def _combine_slices(fn, tree, a, b):
    """fn on slices of length 1 along the scan axis (`a`, `b`: the leaves); -> the leaves of
    the result, checked to keep each leaf's dtype and shape."""
    leaves, found = flatten(fn(unflatten(tree, a), unflatten(tree, b)))
    diff = first_difference(tree, found, "fn(a, b)")
    if diff is not None:
        raise TypeError(f"associative_scan: fn must return the structure of elems; at "
                        f"{diff[0]} expected {diff[1]}, found {diff[2]}")
    out = []
    for k, (leaf, like) in enumerate(zip(leaves, a)):
        if not isinstance(leaf, (np.ndarray, Tracer)):
            leaf = np.asarray(leaf, like.dtype) if np.ndim(leaf) == 0 else np.asarray(leaf)
        if np.dtype(leaf.dtype) != np.dtype(like.dtype) or tuple(leaf.shape) != like.shape:
            path, dtype = leaf_paths(tree, "elems")[k], np.dtype(like.dtype).name
            raise TypeError(
                f"associative_scan: fn(a, b) returned {path} with dtype "
                f"{np.dtype(leaf.dtype).name} and shape {tuple(leaf.shape)} for slices of "
                f"dtype {dtype} and shape {like.shape}; fn must keep each leaf's dtype and "
                f"shape (cast it with .astype(np.{dtype}))")
        out.append(leaf)
    return out


def _fold_step(fn, tree, axis, k):
    """A scan's step over elements: (*rows, *carry) -> carry combined with the rows."""
    def fold(*args):
        return _combine_rows(fn, tree, axis, list(args[k:]), list(args[:k]))
    return fold


def _as_recurrence(fn, tree, axis, xs, mode):
    """The prefixes of `xs` (scan axis first) as one parallel-in-time scan of the fold, when
    `fn` is affine in its left operand; None when the analysis refuses it. The scan's state
    is each leaf's slice of length 1 along `axis`, fn's own operand shape: no reshape comes
    between the state and fn, so an elementwise fn stays an elementwise recurrence."""
    n, k = xs[0].shape[0], len(xs)
    if n <= 1:
        return list(xs)
    slices = [np.expand_dims(x, axis + 1) for x in xs]      # (n, ..., 1 at axis, ...)

    def fold(*args):
        return _combine_slices(fn, tree, list(args[k:]), list(args[:k]))
    try:
        rest, _ = theano_scan(named(fold, f"fold of {function_name(fn)}"),
                              sequences=[s[1:] for s in slices],
                              outputs_info=[s[0] for s in slices], mode=mode, return_list=True,
                              parallel=True)
    except ScanError:
        return None
    return [np.concatenate([x[:1], np.reshape(r, (n - 1,) + tuple(x.shape[1:]))])
            for x, r in zip(xs, rest)]


def _chunk_prefixes(fn, tree, axis, xs, mode):
    """The prefixes of a few elements: one scan, from the first."""
    if xs[0].shape[0] <= 1:
        return list(xs)
    rest, _ = theano_scan(_fold_step(fn, tree, axis, len(xs)), sequences=[x[1:] for x in xs],
                          outputs_info=[x[0] for x in xs], mode=mode, return_list=True)
    return [np.concatenate([x[:1], r]) for x, r in zip(xs, rest)]


def _chunk_step(fn, tree, axis, k, mode):
    """The step of both parallel maps: (*chunk, *offset, first) -> the chunk's prefixes, from
    `offset` (the prefix of the chunks before it), or from its own first element where `first`
    holds (`offset` is then a stand-in, combined and dropped)."""
    def chunk_prefixes(*args):
        chunk, offset, first = args[:k], args[k:2 * k], args[2 * k]
        heads = [c[0] for c in chunk]
        joined = _combine_rows(fn, tree, axis, list(offset), heads)
        heads = [np.where(first, h, j) for h, j in zip(heads, joined)]
        rest, _ = theano_scan(_fold_step(fn, tree, axis, k), sequences=[c[1:] for c in chunk],
                              outputs_info=heads, mode=mode, return_list=True)
        return [np.concatenate([h[None], r]) for h, r in zip(heads, rest)]
    return chunk_prefixes


def _by_chunks(fn, tree, axis, chunk, xs, mode):
    """The prefixes of `xs` (scan axis first), by chunks of `chunk` (see the module
    docstring)."""
    n, k = xs[0].shape[0], len(xs)
    if n <= chunk:
        return _chunk_prefixes(fn, tree, axis, xs, mode)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    chunks = []
    for x in xs:
        if pad:
            x = np.concatenate([x, np.broadcast_to(x[-1:], (pad,) + tuple(x.shape[1:]))])
        chunks.append(np.reshape(x, (n_chunks, chunk) + tuple(x.shape[1:])))
    # one map function for both passes (one compile, twice the outputs written): each chunk
    # from its first element, its last prefix its total; then from the totals before it
    step = _chunk_step(fn, tree, axis, k, mode)
    local, _ = theano_scan(step, sequences=chunks + [c[:, 0] for c in chunks] + [
        constant(np.ones(n_chunks, np.bool_))], mode=mode, return_list=True, _parallel=True)
    before = _by_chunks(fn, tree, axis, chunk, [p[:-1, -1] for p in local], mode)
    offsets = [np.concatenate([x[:1], b]) for x, b in zip(xs, before)]
    first = constant(np.arange(n_chunks) == 0)
    out, _ = theano_scan(step, sequences=chunks + offsets + [first], mode=mode,
                         return_list=True, _parallel=True)
    out = [np.reshape(o, (n_chunks * chunk,) + tuple(o.shape[2:])) for o in out]
    return [o[:n] for o in out] if pad else out
