"""Stage: generated code's linear recurrences on CUDA — a block-level parallel prefix scan.

The `linrec` primitive (core/primitives.py) on the GPU: x_t = x_{t-1} @ a_t + b_t, solved as a
prefix scan of the steps' affine maps (A, B): x -> x @ A + B. Maps compose associatively,

    (A1, B1) then (A2, B2)  =  (A1 @ A2, B1 @ A2 + B2),

so the T steps are cut into tiles of `threads * items` steps, a block of `threads` threads a
tile, `items` consecutive steps a thread (the "reduce, then scan" of GPU prefix sums):

  1. `tile_totals`  each thread composes its steps' maps; the block combines its threads'
                    maps in a tree in shared memory: the tile's map (tile_a, tile_b);
  2. `tile_carries` one block a group: each thread composes a run of consecutive tiles'
                    maps, the block scans them (Hillis-Steele, in shared memory), and each
                    thread writes the state before each of its tiles (carry) from x0;
  3. `tile_states`  each block again composes its threads' maps and scans them, so that
                    each thread knows the state before its first step (its tile's carry
                    through the maps of the threads before it), and runs its steps from it,
                    writing the states.

Work: about 3 reads of a and b and one write of the states; depth: 2 items + the tile counts'
share of one thread in phase 2, plus 2 log2(threads) barriers a phase. One tile: phases 1
and 2 are skipped and the carry is x0.

Both kinds run as one layout of N x N maps (the caller reshapes):

    a (Ta, groups, N, N), b (T, groups, N), x0 (groups, N), out (T, groups, N)
    carry (groups, tiles, N), tile_a (groups, tiles, N, N), tile_b (groups, tiles, N)

the diagonal kind as `groups` independent recurrences of N = 1 (a (Ta, m) read as
(Ta, m, 1, 1)), the matrix kind as one group of N = n. Ta is 1 for an invariant coefficient;
`rev` counts the steps from row T - 1 down (a backward recurrence), so that operands stay
C-contiguous. Blocks are numbered group-major: block k runs tile k % tiles of group
k // tiles.

A module is rendered per (N, dtype): N sizes the threads' local maps, and shared memory holds
MAX_THREADS maps (MAX_THREADS from SHARED_BYTES); a launch may use fewer threads (any count
from 1), which the kernels read from blockDim.
"""

from __future__ import annotations

import numpy as np

# static shared memory a block may hold for its threads' maps (of the 48 KB a block may
# declare statically)
SHARED_BYTES = 32 * 1024
# threads a block at most, and steps a thread
THREADS = 128
ITEMS = 8

MODULE_TEMPLATE = '''\
"""numbascan generated module (CUDA). Source of: the block scan of linear recurrences,
N = {N}, {dtype}."""
import numba
from numba import cuda

N = {N}
MAX_THREADS = {max_threads}
DTYPE = numba.{dtype}


@cuda.jit(device=True)
def then(ea, eb, la, lb, oa, ob):
    """(oa, ob) = (ea, eb) then (la, lb): (ea @ la, eb @ la + lb)."""
    for c in range(N):
        s = lb[c]
        for k in range(N):
            s += eb[k] * la[k, c]
        ob[c] = s
        for r in range(N):
            s = ea[r, 0] * la[0, c]
            for k in range(1, N):
                s += ea[r, k] * la[k, c]
            oa[r, c] = s


@cuda.jit(device=True)
def copy_map(sa, sb, da, db):
    for r in range(N):
        db[r] = sb[r]
        for c in range(N):
            da[r, c] = sa[r, c]


@cuda.jit(device=True)
def set_identity(ma, mb):
    for r in range(N):
        mb[r] = 0
        for c in range(N):
            ma[r, c] = 1 if r == c else 0


@cuda.jit(device=True)
def apply(x, ma, mb, y):
    """x = x @ ma + mb (y: scratch)."""
    for c in range(N):
        s = mb[c]
        for k in range(N):
            s += x[k] * ma[k, c]
        y[c] = s
    for c in range(N):
        x[c] = y[c]


@cuda.jit(device=True)
def steps_map(a, b, rev, group, start, stop, ma, mb, ta, tb):
    """(ma, mb) = the map of steps start .. stop - 1."""
    T = b.shape[0]
    set_identity(ma, mb)
    for t in range(start, stop):
        row = T - 1 - t if rev else t
        arow = 0 if a.shape[0] == 1 else row
        then(ma, mb, a[arow, group], b[row, group], ta, tb)
        copy_map(ta, tb, ma, mb)


@cuda.jit(device=True)
def state_before(x, x_in, sa, sb, tb):
    """x = x_in carried through the maps of the threads before this one (after block_scan:
    their composition is sa[i - 1], sb[i - 1])."""
    i = cuda.threadIdx.x
    for c in range(N):
        x[c] = x_in[c]
    if i > 0:
        apply(x, sa[i - 1], sb[i - 1], tb)


@cuda.jit(device=True)
def block_scan(sa, sb, ma, mb, pa, pb, ta, tb):
    """Every thread's (ma, mb) replaced by the composition of the maps of threads 0 .. its
    own (an inclusive scan); sa[i], sb[i] hold thread i's result after it."""
    i = cuda.threadIdx.x
    n = cuda.blockDim.x
    copy_map(ma, mb, sa[i], sb[i])
    cuda.syncthreads()
    d = 1
    while d < n:
        if i >= d:
            copy_map(sa[i - d], sb[i - d], pa, pb)
        cuda.syncthreads()
        if i >= d:
            then(pa, pb, ma, mb, ta, tb)
            copy_map(ta, tb, ma, mb)
            copy_map(ma, mb, sa[i], sb[i])
        cuda.syncthreads()
        d *= 2


@cuda.jit(cache=True)
def tile_totals(a, b, rev, items, tile_a, tile_b):
    tiles = tile_a.shape[1]
    group = cuda.blockIdx.x // tiles
    tile = cuda.blockIdx.x % tiles
    i = cuda.threadIdx.x
    n = cuda.blockDim.x
    sa = cuda.shared.array((MAX_THREADS, N, N), DTYPE)
    sb = cuda.shared.array((MAX_THREADS, N), DTYPE)
    ma = cuda.local.array((N, N), DTYPE)
    mb = cuda.local.array(N, DTYPE)
    ta = cuda.local.array((N, N), DTYPE)
    tb = cuda.local.array(N, DTYPE)
    start = min((tile * n + i) * items, b.shape[0])
    stop = min(start + items, b.shape[0])
    steps_map(a, b, rev, group, start, stop, ma, mb, ta, tb)
    copy_map(ma, mb, sa[i], sb[i])
    cuda.syncthreads()
    s = 1
    while s < n:                    # a tree: thread i takes in thread i + s's map
        if i % (2 * s) == 0 and i + s < n:
            then(sa[i], sb[i], sa[i + s], sb[i + s], ta, tb)
            copy_map(ta, tb, sa[i], sb[i])
        cuda.syncthreads()
        s *= 2
    if i == 0:
        copy_map(sa[0], sb[0], tile_a[group, tile], tile_b[group, tile])


@cuda.jit(cache=True)
def tile_carries(tile_a, tile_b, x0, carry):
    tiles = tile_a.shape[1]
    group = cuda.blockIdx.x
    i = cuda.threadIdx.x
    n = cuda.blockDim.x
    sa = cuda.shared.array((MAX_THREADS, N, N), DTYPE)
    sb = cuda.shared.array((MAX_THREADS, N), DTYPE)
    ma = cuda.local.array((N, N), DTYPE)
    mb = cuda.local.array(N, DTYPE)
    pa = cuda.local.array((N, N), DTYPE)
    pb = cuda.local.array(N, DTYPE)
    ta = cuda.local.array((N, N), DTYPE)
    tb = cuda.local.array(N, DTYPE)
    x = cuda.local.array(N, DTYPE)
    per = (tiles + n - 1) // n
    first = min(i * per, tiles)
    last = min(first + per, tiles)
    set_identity(ma, mb)
    for g in range(first, last):
        then(ma, mb, tile_a[group, g], tile_b[group, g], ta, tb)
        copy_map(ta, tb, ma, mb)
    block_scan(sa, sb, ma, mb, pa, pb, ta, tb)
    state_before(x, x0[group], sa, sb, tb)
    for g in range(first, last):
        for c in range(N):
            carry[group, g, c] = x[c]
        apply(x, tile_a[group, g], tile_b[group, g], tb)


@cuda.jit(cache=True)
def tile_states(a, b, rev, items, carry, out):
    tiles = carry.shape[1]
    group = cuda.blockIdx.x // tiles
    tile = cuda.blockIdx.x % tiles
    i = cuda.threadIdx.x
    n = cuda.blockDim.x
    T = b.shape[0]
    sa = cuda.shared.array((MAX_THREADS, N, N), DTYPE)
    sb = cuda.shared.array((MAX_THREADS, N), DTYPE)
    ma = cuda.local.array((N, N), DTYPE)
    mb = cuda.local.array(N, DTYPE)
    pa = cuda.local.array((N, N), DTYPE)
    pb = cuda.local.array(N, DTYPE)
    ta = cuda.local.array((N, N), DTYPE)
    tb = cuda.local.array(N, DTYPE)
    x = cuda.local.array(N, DTYPE)
    start = min((tile * n + i) * items, T)
    stop = min(start + items, T)
    steps_map(a, b, rev, group, start, stop, ma, mb, ta, tb)
    block_scan(sa, sb, ma, mb, pa, pb, ta, tb)
    state_before(x, carry[group, tile], sa, sb, tb)
    for t in range(start, stop):
        row = T - 1 - t if rev else t
        arow = 0 if a.shape[0] == 1 else row
        apply(x, a[arow, group], b[row, group], tb)
        for c in range(N):
            out[row, group, c] = x[c]
'''


def fits(N: int, dtype) -> bool:
    """Whether one map of size N fits the shared memory (the block scan can run it)."""
    return max_threads(N, dtype) >= 1


def max_threads(N: int, dtype) -> int:
    """Threads a block may run for maps of size N: the shared memory's maps, at most THREADS
    (0: a single map does not fit)."""
    per_thread = (N * N + N) * np.dtype(dtype).itemsize
    return min(THREADS, SHARED_BYTES // per_thread)


def module_source(N: int, dtype) -> str:
    name = np.dtype(dtype).name
    return MODULE_TEMPLATE.format(N=N, dtype=name, max_threads=max_threads(N, dtype))


def launch_shape(T: int, N: int, dtype, threads=None, items=None):
    """(threads, items, tiles) for T steps: as many threads as the steps fill, up to the
    module's MAX_THREADS (or `threads`), `items` steps each."""
    items = ITEMS if items is None else items
    cap = max_threads(N, dtype) if threads is None else threads
    units = -(-T // items)
    used = 1
    while used < min(cap, units):
        used *= 2
    used = min(used, cap)
    return used, items, -(-T // (used * items))
