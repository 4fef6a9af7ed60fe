"""Stage: generated CPU code's transcendental functions — exp and tanh that LLVM can vectorise.

numba calls the C library's scalar `exp` and `tanh`, one call per element: a loop that calls
them cannot be vectorised, and on an RNN step tanh dominated the time. These versions are
branch-free arithmetic (Cody-Waite range reduction, a degree-13 polynomial for expm1 on
|r| <= ln2/2, the power of two built from its bits), accurate to a few units in the last place
of float64 (tests/test_fastmath.py measures it against NumPy), with NaN and +-inf handled.

They are plain `@njit` functions, called: numba's own inlining (`inline="always"`) types the
callee again at every call site, about 0.1 s of compilation each (a step of 32 unrolled tanh
took 3.5 s, as calls 0.34 s), while LLVM inlines the calls into the caller anyway (run times
of unrolled steps and vectorised loops measured equal). A callee inherits its caller's
`fastmath` and `error_model`.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

LN2_HI = 6.93147180369123816490e-01     # ln 2 split so that k * LN2_HI is exact for |k| < 2^11
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e+00


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the int64 `bits` (an LLVM bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())
    return types.float64(types.int64), codegen


@njit
def _pow2(k):
    """2.0 ** k for an integral float k in [-1022, 1023]."""
    return _float_from_bits((np.int64(k) + 1023) << 52)


@njit
def _expm1_reduced(r):
    """expm1(r) for |r| <= ln2 / 2: Taylor series to r^13 (truncation < 1e-17 relative)."""
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    return r + r * r * p


@njit
def exp_fast(x):
    y = x if x < 710.0 else 710.0                     # beyond: inf; NaN falls through below
    y = y if y > -746.0 else -746.0                   # below: 0 (through two scalings)
    k = np.floor(y * INV_LN2 + 0.5)
    r = (y - k * LN2_HI) - k * LN2_LO
    k1 = np.floor(k * 0.5)
    e = (1.0 + _expm1_reduced(r)) * _pow2(k1) * _pow2(k - k1)
    return e if x == x else x


@njit
def tanh_fast(x):
    """tanh = expm1(2|x|) / (expm1(2|x|) + 2), with the sign of x; no cancellation near 0."""
    y = 2.0 * abs(x)
    y = y if y < 44.0 else 44.0                       # tanh(22) == 1 in float64
    k = np.floor(y * INV_LN2 + 0.5)
    r = (y - k * LN2_HI) - k * LN2_LO
    two_k = _pow2(k)
    em1 = two_k * _expm1_reduced(r) + (two_k - 1.0)
    t = em1 / (em1 + 2.0)
    t = -t if x < 0 else t
    return t if x == x else x


@njit
def expit_fast(x):
    return 1.0 / (1.0 + exp_fast(-x))
