"""Stage: user API — `ns.vmap` over dask.array inputs: lazy dask arrays, one call per block.

A `VmappedFunction` (vmap.py) called with a dask array among its arguments comes here
(`map_over_blocks`) and returns dask arrays, computed block by block along the batch axis; each
block is one call of the batched function on NumPy blocks, on whichever worker dask picks.

Blocks. The batched arguments are cut along their batch axes as the first batched dask argument
is; every other axis of a batched argument is joined into one chunk (dask's `rechunk`), since a
batch element needs its whole array. A dask argument that is not batched (`in_axes` None) is
joined into one chunk and given whole to every block; NumPy arrays that are not batched and
Python numbers are given whole to every block, batched NumPy arrays are cut like the rest (into
one block when no batched argument is a dask array). Block k of a result holds the elements
start_k .. start_k + n_k - 1 of the batch, its batch axis at `out_axes`, the other axes whole.

Metadata. `f` is traced once here, on zero-strided NumPy stand-ins of the arguments (nothing is
compiled or computed): the dtypes and element shapes of its results, what it returns (an array,
a tuple, a list, a namedtuple) and the random streams it draws from. A worker traces `f` again
(the trace cache serves its later blocks) and compiles its loop once, or loads it from
numbascan's disk cache (`NUMBASCAN_CACHE_DIR`).

Random numbers (the invariant). Element i of a batch draws from counters base + i * per_element
of each stream (random.py's counter layout: the map's step i), base being the stream's counter
when ns.vmap is called. Block k therefore runs with each stream's counter lent at
base + start_k * per_element (`random.borrowed_counters`: in the block's context only, so a
stream shared by the threads of a worker, or the caller's own under dask's threaded scheduler,
is not touched), and draws exactly what its elements draw in one call over the whole batch,
whatever the chunks and the workers. The caller's stream advances by B * per_element when
ns.vmap returns the lazy arrays, as after the NumPy call: the counters are reserved then, and
computing the arrays (once, twice, never) moves nothing further.

numbascan never imports dask: a dask array among the arguments means `dask.array` is imported,
and its modules are taken from `sys.modules` (importing dask.array costs about 0.5 s that
`import numbascan` does not pay).
"""

from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass

import numpy as np

from ..random import borrowed_counters
from ..trace.tracer import TracingError


def is_dask_array(x) -> bool:
    """Whether `x` is a dask array (by its type's module: dask is not imported here)."""
    t = type(x)
    return t.__name__ == "Array" and (t.__module__ or "").startswith("dask.array") and \
        hasattr(x, "__dask_graph__")


def has_dask_array(args) -> bool:
    return any(is_dask_array(x) for x in args)


@dataclass(frozen=True)
class Reservation:
    """The counters a batch draws from: per stream of the trace (in its order), the counter
    of batch element 0 and the counters of each element."""
    first: tuple
    per_element: tuple

    def for_block(self, streams, start):
        """stream -> first counter of the block whose first element is `start`."""
        return {s: c + start * n for s, c, n in zip(streams, self.first, self.per_element)}


def map_over_blocks(vmapped, args):
    """`vmapped(*args)` as dask arrays (the structure `f` returns), one task per block of the
    batch axis; see the module's docstring."""
    da = sys.modules["dask.array"]
    for i, x in enumerate(args):
        if is_dask_array(x) and any(math.isnan(c) for dims in x.chunks for c in dims):
            raise ValueError(f"vmap: argument {i}: expected a dask array of known chunk "
                             f"sizes, found chunks {x.chunks} (call its compute_chunk_sizes())")
    axes = vmapped.batch_axes([_stand_in(x) for x in args])
    args, batch_chunks = _blocked(da, args, axes)
    try:
        described = vmapped.describe([_stand_in(x) for x in args])
    except TracingError as err:
        err.add_context("ns.vmap over dask arrays (which traces f to know its results "
                        "before they are computed)")
        raise
    ndims = [len(shape) + 1 for _, shape in described.out_avals]
    out_axes = vmapped.result_axes(described.kind, ndims)
    # the last step that may fail: a call that raises reserves no counters
    size = sum(batch_chunks)
    first = tuple(s.counter for s in described.streams)
    for s, n in zip(described.streams, described.per_element):
        s.counter += size * n
    reservation = Reservation(first, described.per_element)

    blocks = _block_graph(vmapped, args, axes, batch_chunks, reservation, described, out_axes)
    kind = described.kind
    if kind is None:
        return blocks[0]
    return kind(*blocks) if hasattr(kind, "_fields") else kind(blocks)     # a namedtuple


def _block_graph(vmapped, args, axes, batch_chunks, reservation, described, out_axes):
    """One dask array per result of `f`: task k runs block k of the batch (`_run_block`); its
    result is block k of the array, or its results (a tuple) are taken apart by one task per
    result and block."""
    da, hlg = sys.modules["dask.array"], sys.modules["dask.highlevelgraph"]
    name = f"ns-vmap-{getattr(vmapped, '__name__', 'f')}-" + sys.modules["dask.base"].tokenize(
        vmapped, reservation, *args)
    graph, dependencies, per_block = {}, [], []
    for i, (x, axis) in enumerate(zip(args, axes)):
        if is_dask_array(x):
            dependencies.append(x)
            per_block.append((x, axis))
        else:                   # a NumPy array, a Python number: stored once, read by every block
            graph[(f"{name}-arg", i)] = x
            per_block.append(((f"{name}-arg", i), None))
    starts = np.cumsum((0,) + batch_chunks[:-1]).tolist()
    tasks = {}
    for k, start in enumerate(starts):
        block_args = tuple(_block_key(x, axis, k) if is_dask_array(x) else x
                           for x, axis in per_block)
        tasks[k] = (_run_block, start, vmapped, reservation) + block_args
    direct = described.kind is None          # f returns one array: no tuple to take apart
    results = []
    for r, ((dtype, shape), axis) in enumerate(zip(described.out_avals, out_axes)):
        leaf = name if direct else f"{name}-{r}"
        chunks = [(n,) for n in shape]
        chunks.insert(axis, batch_chunks)
        for k in tasks:
            where = [0] * len(chunks)
            where[axis] = k
            graph[(leaf, *where)] = tasks[k] if direct else (operator.getitem, (name, k), r)
        results.append((leaf, tuple(chunks), np.empty((0,) * len(chunks), dtype)))
    if not direct:
        graph.update(((name, k), task) for k, task in tasks.items())
    layers = hlg.HighLevelGraph.from_collections(name, graph, dependencies=dependencies)
    return [da.Array(layers, leaf, chunks=chunks, meta=meta) for leaf, chunks, meta in results]


def _block_key(x, axis, k):
    """The key of block k of `x` along its batch axis `axis` (every other axis is one chunk;
    None: `x` is one chunk)."""
    keys = x.__dask_keys__()
    for d in range(x.ndim):
        keys = keys[k if d == axis else 0]
    return keys[0] if isinstance(keys, list) else keys        # a 0-d array's: [key]


def _run_block(start, vmapped, reservation, *blocks):
    """One block, whose first element is element `start` of the batch: the batched call on
    NumPy blocks, drawing what these batch elements draw in the whole batch. -> its result
    (one array), or the tuple of its results."""
    if reservation.per_element:
        described = vmapped.describe(blocks)
        if described.per_element != reservation.per_element:
            raise RuntimeError(
                f"ns.vmap over dask arrays: {vmapped!r} draws {described.per_element} counters "
                f"per batch element from its random streams here, but "
                f"{reservation.per_element} where the dask array was made (a different "
                f"version of its code on this worker?)")
        with borrowed_counters(reservation.for_block(described.streams, start)):
            outs = vmapped.fn(*blocks)
    else:
        outs = vmapped.fn(*blocks)
    return tuple(outs) if isinstance(outs, (tuple, list)) else outs


def _stand_in(x):
    """A zero-strided NumPy array of `x`'s dtype and shape for a dask array (no memory, no
    computation), `x` itself otherwise."""
    if not is_dask_array(x):
        return x
    return np.broadcast_to(np.zeros((), x.dtype), x.shape)


def _blocked(da, args, axes):
    """The arguments chunked for the map (see the module's docstring), and the batch axis's
    chunks."""
    batch_chunks = None
    for x, axis in zip(args, axes):
        if batch_chunks is None and axis is not None and is_dask_array(x):
            batch_chunks = tuple(int(c) for c in x.chunks[axis])
    if batch_chunks is None:             # only non-batched dask arrays: the batch is one block
        i = next(i for i, a in enumerate(axes) if a is not None)
        batch_chunks = (int(np.shape(args[i])[axes[i]]),)
    out = []
    for x, axis in zip(args, axes):
        if isinstance(x, (list, tuple)):        # as vmap reads it; never a task of the graph
            x = np.asarray(x)
        if axis is None:
            out.append(x.rechunk(-1) if is_dask_array(x) else x)
            continue
        if not is_dask_array(x):
            x = da.from_array(np.asarray(x), chunks=-1)
        chunks = {d: (batch_chunks if d == axis else -1) for d in range(x.ndim)}
        out.append(x.rechunk(chunks))
    return out, batch_chunks


def _leaf(da, blocks, k, shape, axis, meta):
    """Result `k` of every block (a tuple) as one dask array: the batch chunks at `axis`,
    every other axis one chunk."""
    hlg = sys.modules["dask.highlevelgraph"]
    name = f"{blocks.name}-{k}"
    batch_chunks = blocks.chunks[0]
    chunks = list((n,) for n in shape)
    chunks.insert(axis, batch_chunks)
    graph = {}
    for key in blocks.__dask_keys__():
        where = [0] * len(chunks)
        where[axis] = key[1]
        graph[(name, *where)] = (operator.getitem, key, k)
    layers = hlg.HighLevelGraph.from_collections(name, graph, dependencies=[blocks])
    return da.Array(layers, name, chunks=tuple(chunks), meta=meta)
