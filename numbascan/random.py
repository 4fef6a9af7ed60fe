"""Counter-based random numbers: Philox4x32-10 and the distributions built on it.

Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC'11; the Random123 library) maps a 128-bit counter and a 64-bit key to 128
random bits.  Nothing is stored between calls, so the same (key, counter) gives
the same bits in every execution mode: compiled CPU code, GPU code and the
plain-Python reference mode.

Counter layout (the invariant every mode relies on)
---------------------------------------------------
A stream is a 64-bit ``key`` plus a running 64-bit counter ``c``.  One Philox
call uses the block counter ``(c_lo, c_hi, 0, 0)`` and the key ``(k_lo, k_hi)``.
A draw of ``N`` elements whose first counter is ``base`` gives element ``i``
the counters ``base + i * width`` .. ``base + i * width + width - 1`` and
advances the stream by ``N * width``, where ``width`` is 1 for uniform and
normal and ``n`` for binomial(n, p).  Element ``i`` therefore depends only on
(key, base, i), never on the order in which elements are computed.

Three bit-identical implementations are provided:

* scalar functions (``*_scalar``) written in the subset of Python that
  ``numba.njit`` compiles, with compiled versions (``*_nb``) for generated code;
* compiled bulk kernels that fill an array (``fill_*_nb``, and the rows of
  several scan steps at once, ``*_ahead_nb``), with the scalar functions'
  operations in the same order but loops that LLVM vectorises; :func:`draw`
  uses them for large draws outside a scan, generated code for arrays;
* :func:`draw_numpy`, vectorised over counters, for the reference mode.  It
  needs no compilation.  ``log`` and ``cos`` are evaluated with the ``math``
  module (the C library, like compiled code) and not with NumPy's SIMD
  versions, which may differ in the last bit.
"""

import contextlib
import functools
import math
import numbers
import operator
import os
import sys
import threading
import types
from contextvars import ContextVar

import numba
import numpy as np
from numba.extending import register_jitable

__all__ = [
    "philox4x32_10", "philox4x32_scalar", "philox4x32_nb", "philox4x32_numpy",
    "uniform_scalar", "normal_scalar", "binomial_scalar",
    "uniform_nb", "normal_nb", "binomial_nb",
    "fill_uniform_nb", "fill_normal_nb", "fill_binomial_nb", "FILL_KERNELS",
    "uniform_ahead_nb", "normal_ahead_nb", "binomial_ahead_nb", "AHEAD_KERNELS",
    "draw", "draw_numpy", "counters_used", "splitmix64",
    "RandomStreams", "KINDS", "borrowed_counters",
]

KINDS = ("uniform", "normal", "binomial")

# Philox4x32 constants (Random123).
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
_TWO_M53 = 2.0 ** -53
_TWO_PI = 2.0 * math.pi


# ---------------------------------------------------------------------------
# Scalar kernels (plain Python; numba.njit compiles them unchanged)
# ---------------------------------------------------------------------------
# register_jitable keeps a helper a plain Python function and also lets
# njit-compiled code call it.

@register_jitable
def philox4x32_10(x0, x1, x2, x3, k0, k1):
    """The Philox4x32-10 bijection on four 32-bit words under a two-word key.

    Arguments are uint64 holding 32-bit values, scalars or arrays alike (only
    operators are used, so NumPy arrays work as well as njit scalars).
    """
    for _ in range(10):
        p0 = _M0 * x0                       # 32 x 32 -> 64 bits: no overflow
        p1 = _M1 * x2
        x0, x1, x2, x3 = ((p1 >> _S32) ^ x1 ^ k0, p1 & _MASK32,
                          (p0 >> _S32) ^ x3 ^ k1, p0 & _MASK32)
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return x0, x1, x2, x3


@register_jitable
def philox4x32_scalar(key, counter):
    """Philox4x32-10 of counter ``(c_lo, c_hi, 0, 0)`` under key ``(k_lo, k_hi)``.

    ``key`` and ``counter`` are uint64; returns four uint64 words, each < 2**32.
    """
    key = np.uint64(key)
    counter = np.uint64(counter)
    zero = np.uint64(0)
    return philox4x32_10(counter & _MASK32, counter >> _S32, zero, zero,
                         key & _MASK32, key >> _S32)


@register_jitable
def _unit_scalar(hi, lo):
    """53 random bits from two 32-bit words, as a float64 in [0, 1)."""
    return np.float64(((hi << _S32) | lo) >> _S11) * _TWO_M53


def uniform_scalar(key, counter, low, high):
    """Uniform on [low, high) from one counter."""
    w0, w1, w2, w3 = philox4x32_scalar(key, counter)
    u = _unit_scalar(w0, w1)
    return low + (high - low) * u


def normal_scalar(key, counter, avg, std):
    """Normal(avg, std) from one counter (Box-Muller, cosine branch)."""
    w0, w1, w2, w3 = philox4x32_scalar(key, counter)
    u1 = _unit_scalar(w0, w1)
    u2 = _unit_scalar(w2, w3)
    z = math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(_TWO_PI * u2)
    return avg + std * z


def binomial_scalar(key, counter, n, p):
    """Binomial(n, p) from counters ``counter .. counter + n - 1`` (int64)."""
    counter = np.uint64(counter)
    count = 0
    for j in range(n):
        w0, w1, w2, w3 = philox4x32_scalar(key, counter + np.uint64(j))
        if _unit_scalar(w0, w1) < p:
            count += 1
    return np.int64(count)


def _njit_cached(**options):
    """``numba.njit(cache=True, **options)``, or without numba's disk cache where numba finds no
    writable folder for it (NUMBA_CACHE_DIR, this package's __pycache__, the user's cache
    folder): importing numbascan, and its first use, never need a writable folder."""
    def decorate(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as error:     # "cannot cache function ...: no locator available"
            if "no locator available" not in str(error):
                raise
            return numba.njit(**options)(fn)
    return decorate


# Compiled versions, for generated njit code (wrapped there with inline='never').
_njit = _njit_cached()
philox4x32_nb = _njit(philox4x32_scalar)
uniform_nb = _njit(uniform_scalar)
normal_nb = _njit(normal_scalar)
binomial_nb = _njit(binomial_scalar)


# ---------------------------------------------------------------------------
# Bulk kernels (compiled): arrays of draws at once
# ---------------------------------------------------------------------------
# Element i of ``out`` takes the counters of element i of a draw whose first counter is
# ``base`` (the layout above), computed with the operations of the scalar functions in the same
# order, so every bit equals theirs. What differs is the shape of the loops: the Philox rounds
# and the conversion to [0, 1) of a block of counters run in one loop that LLVM vectorises,
# then a second loop makes the libm calls (log, cos), one element at a time.

def _copy_function(fn, name):
    """A second function object with ``fn``'s code: numba registers one overload per object."""
    return types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__,
                              fn.__closure__)


# The same rounds and conversion, inlined into the bulk kernels at numba's IR level. Called as
# functions they stay scalar: 2.52M counters took 43-48 ms, inlined and vectorised 15 ms.
_philox_inline = register_jitable(inline="always")(
    _copy_function(philox4x32_10, "_philox_inline"))
_unit_inline = register_jitable(inline="always")(_copy_function(_unit_scalar, "_unit_inline"))

# fastmath and error_model are set, not inherited from a caller (numba passes a caller's
# flags to callees that leave them unset): a contracting caller must not change these bits
# (called first from a fastmath caller, an unset kernel changed 191 of 3000 normal numbers)
_bulk = _njit_cached(fastmath=False, error_model="numpy", nogil=True)
_bulk_parallel = _njit_cached(fastmath=False, error_model="numpy", nogil=True, parallel=True)

# elements per block of the normal kernel: its second array (the angles) stays in L1
_BLOCK = 256
# elements per prange iteration of the parallel kernels (a few milliseconds of work)
_CHUNK = 1 << 16
# Counters from which the kernels run across threads. A parallel region pays only when it is
# long: waking threads costs tens of microseconds, and on a machine whose cores are busy a
# region can wait for a thread up to a scheduler time slice (see start_threads; a GBM Monte
# Carlo with a region of 10000 draws per step, spinning OpenMP threads: 25x slower than
# serial). One region of PARALLEL_MIN normal numbers is about 6 ms of work.
PARALLEL_MIN = 1 << 18


@_bulk
def _uniform_range(key, base, low, high, out, start, stop):
    key = np.uint64(key)
    base = np.uint64(base)
    k0, k1, zero = key & _MASK32, key >> _S32, np.uint64(0)
    for i in range(start, stop):
        c = base + np.uint64(i)
        w0, w1, w2, w3 = _philox_inline(c & _MASK32, c >> _S32, zero, zero, k0, k1)
        out[i] = low + (high - low) * _unit_inline(w0, w1)


@_bulk
def _normal_range(key, base, avg, std, out, start, stop):
    key = np.uint64(key)
    base = np.uint64(base)
    k0, k1, zero = key & _MASK32, key >> _S32, np.uint64(0)
    angle = np.empty(min(_BLOCK, max(stop - start, 0)))
    for s in range(start, stop, _BLOCK):
        m = min(_BLOCK, stop - s)
        for i in range(m):
            c = base + np.uint64(s + i)
            w0, w1, w2, w3 = _philox_inline(c & _MASK32, c >> _S32, zero, zero, k0, k1)
            out[s + i] = 1.0 - _unit_inline(w0, w1)
            angle[i] = _TWO_PI * _unit_inline(w2, w3)
        for i in range(m):
            z = math.sqrt(-2.0 * math.log(out[s + i])) * math.cos(angle[i])
            out[s + i] = avg + std * z


@_bulk
def _binomial_range(key, base, n, p, out, start, stop):
    key = np.uint64(key)
    base = np.uint64(base)
    k0, k1, zero = key & _MASK32, key >> _S32, np.uint64(0)
    # unit < p  <=>  k * 2**-53 < p  <=>  k < ceil(p * 2**53) for the integer k < 2**53 of the
    # unit (both products are exact): an integer comparison, without the conversion
    threshold = np.uint64(math.ceil(min(p, 1.0) * 2.0 ** 53)) if p > 0.0 else np.uint64(0)
    width = np.uint64(n)
    for s in range(start, stop, _BLOCK):
        e = min(s + _BLOCK, stop)
        for i in range(s, e):
            out[i] = 0
        for j in range(n):
            for i in range(s, e):
                c = base + np.uint64(i) * width + np.uint64(j)
                w0, w1, w2, w3 = _philox_inline(c & _MASK32, c >> _S32, zero, zero, k0, k1)
                out[i] += np.int64((((w0 << _S32) | w1) >> _S11) < threshold)


@_bulk
def fill_uniform_nb(key, base, low, high, out):
    """``out[i] = uniform_scalar(key, base + i, low, high)`` for a 1-d array ``out``."""
    _uniform_range(key, base, low, high, out, 0, out.size)


@_bulk
def fill_normal_nb(key, base, avg, std, out):
    """``out[i] = normal_scalar(key, base + i, avg, std)`` for a 1-d array ``out``."""
    _normal_range(key, base, avg, std, out, 0, out.size)


@_bulk
def fill_binomial_nb(key, base, n, p, out):
    """``out[i] = binomial_scalar(key, base + i * n, n, p)`` for a 1-d int64 array ``out``."""
    _binomial_range(key, base, n, p, out, 0, out.size)


# Rows: ``out[r]`` (of a 2-d ``out``) takes the draws whose first counter is
# ``first + r * row_stride`` (the draws of one step of a scan, row_stride its counters per step;
# or one row for a draw outside a scan). The parallel kernels split the rows into pieces of at
# most _CHUNK elements; every element's counters are fixed, so the split changes no number.

@_bulk_parallel
def _uniform_rows_parallel(key, first, row_stride, low, high, out, rows):
    pieces = (out.shape[1] + _CHUNK - 1) // _CHUNK
    for q in numba.prange(rows * pieces):
        r, c = q // pieces, (q % pieces) * _CHUNK
        _uniform_range(key, np.uint64(first) + np.uint64(r) * np.uint64(row_stride), low, high,
                       out[r], c, min(out.shape[1], c + _CHUNK))


@_bulk_parallel
def _normal_rows_parallel(key, first, row_stride, avg, std, out, rows):
    pieces = (out.shape[1] + _CHUNK - 1) // _CHUNK
    for q in numba.prange(rows * pieces):
        r, c = q // pieces, (q % pieces) * _CHUNK
        _normal_range(key, np.uint64(first) + np.uint64(r) * np.uint64(row_stride), avg, std,
                      out[r], c, min(out.shape[1], c + _CHUNK))


@_bulk_parallel
def _binomial_rows_parallel(key, first, row_stride, n, p, out, rows):
    pieces = (out.shape[1] + _CHUNK - 1) // _CHUNK
    for q in numba.prange(rows * pieces):
        r, c = q // pieces, (q % pieces) * _CHUNK
        _binomial_range(key, np.uint64(first) + np.uint64(r) * np.uint64(row_stride), n, p,
                        out[r], c, min(out.shape[1], c + _CHUNK))


# Drawn ahead, for a scan's loop (codegen/draws.py): ``out`` holds the draws of K = out.shape[0]
# consecutive steps, ``held[0]`` the first of them (-1: none yet). A step outside those rows
# draws the K steps from it on (at most ``n_steps - t``), in one call: across threads when
# that is PARALLEL_MIN counters or more. -> the row of step ``t``.

@_bulk
def uniform_ahead_nb(t, n_steps, key, first, row_stride, low, high, out, held):
    if held[0] < 0 or not held[0] <= t < held[0] + out.shape[0]:
        rows = min(out.shape[0], n_steps - t)
        start = np.uint64(first) + np.uint64(t) * np.uint64(row_stride)
        if rows * out.shape[1] >= PARALLEL_MIN:
            _uniform_rows_parallel(key, start, row_stride, low, high, out, rows)
        else:
            for r in range(rows):
                _uniform_range(key, start + np.uint64(r) * np.uint64(row_stride), low, high,
                               out[r], 0, out.shape[1])
        held[0] = t
    return out[t - held[0]]


@_bulk
def normal_ahead_nb(t, n_steps, key, first, row_stride, avg, std, out, held):
    if held[0] < 0 or not held[0] <= t < held[0] + out.shape[0]:
        rows = min(out.shape[0], n_steps - t)
        start = np.uint64(first) + np.uint64(t) * np.uint64(row_stride)
        if rows * out.shape[1] >= PARALLEL_MIN:
            _normal_rows_parallel(key, start, row_stride, avg, std, out, rows)
        else:
            for r in range(rows):
                _normal_range(key, start + np.uint64(r) * np.uint64(row_stride), avg, std,
                              out[r], 0, out.shape[1])
        held[0] = t
    return out[t - held[0]]


@_bulk
def binomial_ahead_nb(t, n_steps, key, first, row_stride, n, p, out, held):
    if held[0] < 0 or not held[0] <= t < held[0] + out.shape[0]:
        rows = min(out.shape[0], n_steps - t)
        start = np.uint64(first) + np.uint64(t) * np.uint64(row_stride)
        if rows * out.shape[1] * n >= PARALLEL_MIN:
            _binomial_rows_parallel(key, start, row_stride, n, p, out, rows)
        else:
            for r in range(rows):
                _binomial_range(key, start + np.uint64(r) * np.uint64(row_stride), n, p,
                                out[r], 0, out.shape[1])
        held[0] = t
    return out[t - held[0]]


# numba's threading layer, started by numbascan. OpenMP (numba's default layer where TBB is
# not installed) reads its wait policy once, when numba loads it. Its default is to spin while
# waiting, and then on a machine whose cores are busy a parallel region waits for a thread
# whose core is taken until the scheduler's next time slice: measured on 2 cores with one core
# busy, ns.vmap of B=64..256 RNNs (T=200, H=8, 0.5-2 ms of work) took 8 ms a call spinning and
# 0.9-3.4 ms passive; a GBM Monte Carlo that draws in 10 parallel regions 85 ms and 62 ms.
# With idle cores passive waiting cost 0-15% (futex wake-ups). So numbascan starts the layer
# with OMP_WAIT_POLICY=passive unless the environment chose a policy (OMP_WAIT_POLICY,
# GOMP_SPINCOUNT, KMP_BLOCKTIME); if anything else started it first, it stays as started.
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
_START_LOCK = threading.Lock()


@functools.cache
def start_threads():
    """Start numba's threading layer (once), OpenMP waiting passively; see above. Called
    before numbascan runs parallel code: by a generated module that has some, when it is
    imported, and by :func:`draw` before a parallel kernel."""
    with _START_LOCK:
        chosen = any(name in os.environ for name in _WAIT_VARIABLES)
        if not chosen:
            os.environ["OMP_WAIT_POLICY"] = "passive"
        try:
            numba.get_num_threads()          # loads the layer: OpenMP reads its variables
        finally:
            if not chosen:                   # only the runtime keeps it, not child processes
                os.environ.pop("OMP_WAIT_POLICY", None)


FILL_KERNELS = {"uniform": fill_uniform_nb, "normal": fill_normal_nb,
                "binomial": fill_binomial_nb}
AHEAD_KERNELS = {"uniform": uniform_ahead_nb, "normal": normal_ahead_nb,
                 "binomial": binomial_ahead_nb}
_ROWS_PARALLEL = {"uniform": _uniform_rows_parallel, "normal": _normal_rows_parallel,
                  "binomial": _binomial_rows_parallel}


# ---------------------------------------------------------------------------
# Vectorised NumPy kernels (reference mode; no compilation)
# ---------------------------------------------------------------------------

def philox4x32_numpy(key, counters):
    """Philox4x32-10 over an array of uint64 counters; four uint64 word arrays."""
    key = np.uint64(key)
    counters = np.asarray(counters, dtype=np.uint64)
    zero = np.zeros_like(counters)
    return philox4x32_10(counters & _MASK32, counters >> _S32, zero, zero,
                         key & _MASK32, key >> _S32)


def _unit_numpy(hi, lo):
    return (((hi << _S32) | lo) >> _S11).astype(np.float64) * _TWO_M53


def _libm(fn, x):
    """Apply a ``math`` function element-wise (C library results, as compiled code)."""
    return np.fromiter(map(fn, x.tolist()), dtype=np.float64, count=x.size)


def _counters(base, count, width):
    base = np.uint64(int(base) % 2 ** 64)
    with np.errstate(over="ignore"):
        return base + np.arange(count, dtype=np.uint64) * np.uint64(width)


def _uniform_numpy(key, counters, low, high):
    w0, w1, _, _ = philox4x32_numpy(key, counters)
    return low + (high - low) * _unit_numpy(w0, w1)


def _normal_numpy(key, counters, avg, std):
    w0, w1, w2, w3 = philox4x32_numpy(key, counters)
    u1 = _unit_numpy(w0, w1)
    u2 = _unit_numpy(w2, w3)
    r = np.sqrt(-2.0 * _libm(math.log, 1.0 - u1))
    return avg + std * (r * _libm(math.cos, _TWO_PI * u2))


def _binomial_numpy(key, counters, n, p):
    count = np.zeros(counters.shape, dtype=np.int64)
    with np.errstate(over="ignore"):
        for j in range(n):  # one pass per trial keeps memory at O(size)
            w0, w1, _, _ = philox4x32_numpy(key, counters + np.uint64(j))
            count += _unit_numpy(w0, w1) < p
    return count


def _width(kind, params):
    if kind in ("uniform", "normal"):
        return 1
    if kind == "binomial":
        return int(params[0])
    raise ValueError(f"kind: expected one of {KINDS}, found {kind!r}")


def counters_used(kind, size, params):
    """Number of counters a draw of ``kind`` with this size and params consumes."""
    return math.prod(_normalize_size(size)) * _width(kind, params)


def draw_numpy(key, base, kind, size, params):
    """Draw ``kind`` with shape ``size`` from counters starting at ``base``.

    ``params`` is ``(low, high)``, ``(avg, std)`` or ``(n, p)``.  Returns a
    float64 array (uniform, normal) or an int64 array (binomial).
    """
    size = _normalize_size(size)
    width = _width(kind, params)
    counters = _counters(base, math.prod(size), width)
    if kind == "uniform":
        out = _uniform_numpy(key, counters, float(params[0]), float(params[1]))
    elif kind == "normal":
        out = _normal_numpy(key, counters, float(params[0]), float(params[1]))
    else:
        out = _binomial_numpy(key, counters, width, float(params[1]))
    return out.reshape(size)


# Which draws outside a scan use the compiled kernels (same numbers, so only speed depends on
# it). Measured on 2 cores: draw_numpy takes about 0.37 us per normal number and 0.13 us per
# uniform; a kernel, once loaded, 0.02 and 0.002 us. Loading one from numba's disk cache takes
# 3-7 ms once numba has run anything in this process, but numba's first call in a process
# costs 0.2-0.3 s (it imports its implementations). So the kernels serve draws of BULK_MIN
# counters or more once numba has started, and of COLD_BULK_MIN or more in any case.
BULK_MIN = 1 << 14
COLD_BULK_MIN = 1 << 19


def _numba_started():
    """Whether numba has compiled or loaded a function in this process (the modules it
    imports then are there)."""
    return "numba.np.arrayobj" in sys.modules


def draw(key, base, kind, size, params):
    """:func:`draw_numpy`'s numbers (every bit), from the compiled bulk kernels for large
    draws (``BULK_MIN``, ``COLD_BULK_MIN``), across threads from ``PARALLEL_MIN`` counters."""
    size = _normalize_size(size)
    width = _width(kind, params)
    count = math.prod(size)
    if count * width < (BULK_MIN if _numba_started() else COLD_BULK_MIN):
        return draw_numpy(key, base, kind, size, params)
    key = np.uint64(int(key) % 2 ** 64)
    base = np.uint64(int(base) % 2 ** 64)
    if kind == "binomial":
        out, args = np.empty(count, dtype=np.int64), (width, float(params[1]))
    else:
        out, args = np.empty(count, dtype=np.float64), (float(params[0]), float(params[1]))
    if count * width >= PARALLEL_MIN:
        start_threads()
        _ROWS_PARALLEL[kind](key, base, np.uint64(0), *args, out.reshape(1, count), 1)
    else:
        FILL_KERNELS[kind](key, base, *args, out)
    return out.reshape(size)


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------

_MASK64 = 2 ** 64 - 1


def splitmix64(x):
    """SplitMix64 output for state ``x`` (Python ints): nearby seeds, unrelated keys."""
    z = (int(x) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _normalize_size(size):
    """``size`` as a tuple of non-negative Python ints."""
    if isinstance(size, (tuple, list)):
        dims = size
    else:
        dims = (size,)
    out = []
    for d in dims:
        try:
            d = operator.index(d)
        except TypeError:
            raise TypeError(
                f"size: expected an int or a tuple of ints, found {size!r}") from None
        if d < 0:
            raise ValueError(
                f"size: expected non-negative dimensions, found {tuple(dims)!r}")
        out.append(d)
    return tuple(out)


def _is_number(x):
    return isinstance(x, numbers.Real) or (
        isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "biuf")


def _check_params(kind, params):
    """Validate and convert numeric params; other objects (traced values) pass through."""
    if kind == "binomial":
        n, p = params
        if _is_number(n):
            if np.asarray(n).dtype.kind not in "iu":
                raise TypeError(f"binomial n: expected an integer, found {n!r}")
            n = int(n)
            if n < 0:
                raise ValueError(f"binomial n: expected n >= 0, found {n}")
        if _is_number(p):
            p = float(p)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"binomial p: expected 0 <= p <= 1, found {p}")
        return (n, p)
    a, b = (float(x) if _is_number(x) else x for x in params)
    if kind == "normal" and isinstance(b, float) and not b >= 0.0:
        raise ValueError(f"normal std: expected std >= 0, found {b}")
    return (a, b)


_PARAM_NAMES = {"uniform": ("low", "high"), "normal": ("avg", "std"),
                "binomial": ("n", "p")}

# Installed by the tracing stage: called as hook(stream, kind, size, params)
# before every draw; a result other than NotImplemented is returned instead.
traced_draw_hook = None

# stream -> counter, for the streams whose counters `borrowed_counters` lends in this context
_BORROWED: ContextVar = ContextVar("numbascan_borrowed_counters", default=None)


@contextlib.contextmanager
def borrowed_counters(counters):
    """In this context (this thread, this task), each stream of ``counters`` (a dict: stream ->
    counter) draws from the counter given there and advances it there; the stream's own
    ``counter`` stays as it is, for every other context. ``ns.vmap`` over dask arrays runs a
    block of the batch this way (api/dask.py): the block draws what those batch elements draw
    in one call over the whole batch, and a stream shared by the threads of a worker (or the
    caller's own, under dask's threaded scheduler) is left alone. Replaces an enclosing
    ``borrowed_counters`` of this context. -> ``counters``, advanced by the draws made."""
    token = _BORROWED.set(counters)
    try:
        yield counters
    finally:
        _BORROWED.reset(token)


class RandomStreams:
    """A seeded stream of Philox random numbers that advances after each draw.

    ``key`` is ``splitmix64(seed)`` as a uint64; ``counter`` (a Python int) is
    the first counter of the next draw (in a ``borrowed_counters`` context that
    lends one: the lent counter). A stream pickles as its seed and counter.
    """

    def __init__(self, seed):
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed: expected an integer, found {seed!r}")
        seed = int(seed)
        if not 0 <= seed <= _MASK64:
            raise ValueError(f"seed: expected 0 <= seed < 2**64, found {seed}")
        self.seed = seed
        self.key = np.uint64(splitmix64(seed))
        self._counter = 0

    @property
    def counter(self):
        borrowed = _BORROWED.get()
        if borrowed is not None and self in borrowed:
            return borrowed[self]
        return self._counter

    @counter.setter
    def counter(self, value):
        borrowed = _BORROWED.get()
        if borrowed is not None and self in borrowed:
            borrowed[self] = value
        else:
            self._counter = value

    def __getstate__(self):
        return {"seed": self.seed, "counter": self.counter}

    def __setstate__(self, state):
        self.seed = state["seed"]
        self.key = np.uint64(splitmix64(self.seed))
        self._counter = state["counter"]

    def __repr__(self):
        return f"RandomStreams(seed={self.seed}, counter={self.counter})"

    def _draw(self, kind, size, params):
        size = _normalize_size(size)
        params = _check_params(kind, params)
        hook = traced_draw_hook
        if hook is not None:
            result = hook(self, kind, size, params)
            if result is not NotImplemented:
                return result
        for name, x in zip(_PARAM_NAMES[kind], params):
            if not _is_number(x):
                raise TypeError(
                    f"{kind} {name}: expected a number outside a traced step, found {x!r}")
        out = draw(self.key, self.counter, kind, size, params)
        self.counter += counters_used(kind, size, params)
        return np.asarray(out)

    def uniform(self, size=(), low=0.0, high=1.0):
        """Uniform float64 numbers on [low, high)."""
        return self._draw("uniform", size, (low, high))

    def normal(self, size=(), avg=0.0, std=1.0):
        """Normal float64 numbers with mean ``avg`` and standard deviation ``std``."""
        return self._draw("normal", size, (avg, std))

    def binomial(self, size=(), n=1, p=0.5):
        """Binomial int64 counts of ``n`` trials with success probability ``p``."""
        return self._draw("binomial", size, (n, p))

