"""Stage: generated CPU code's transcendental functions for straight-line (unrolled) steps.

A step over a tiny state is one long chain of dependent operations, repeated n times: its speed
is the latency of that chain, and a tanh is most of it. These are `fastmath.py`'s exp and tanh
with a shorter chain: the expm1 polynomial is evaluated by Estrin's scheme (independent pairs
of terms combined with r^2, r^4, r^8) instead of Horner's, and tanh skips the |x| and its sign
(expm1(2x) / (expm1(2x) + 2) holds for either sign; copysign keeps tanh(-0) = -0). Same
accuracy (a few units in the last place; tests/test_shortmath.py), same special values.
Plain `@njit` functions, as in `fastmath.py` (LLVM inlines them; numba's inlining is slow).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fastmath import INV_LN2, LN2_HI, LN2_LO, _pow2


@njit
def _expm1_reduced(r):
    """expm1(r) for |r| <= ln2 / 2: Taylor series to r^13, by Estrin's scheme."""
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    a0 = 1.0 / 2.0 + r * (1.0 / 6.0)
    a1 = 1.0 / 24.0 + r * (1.0 / 120.0)
    a2 = 1.0 / 720.0 + r * (1.0 / 5040.0)
    a3 = 1.0 / 40320.0 + r * (1.0 / 362880.0)
    a4 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0)
    a5 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0)
    p = (a0 + r2 * a1) + r4 * (a2 + r2 * a3) + r8 * (a4 + r2 * a5)
    return r + r2 * p


@njit
def exp_short(x):
    y = x if x < 710.0 else 710.0                     # beyond: inf; NaN falls through below
    y = y if y > -746.0 else -746.0                   # below: 0 (through two scalings)
    k = np.floor(y * INV_LN2 + 0.5)
    r = (y - k * LN2_HI) - k * LN2_LO
    k1 = np.floor(k * 0.5)
    e = (1.0 + _expm1_reduced(r)) * _pow2(k1) * _pow2(k - k1)
    return e if x == x else x


@njit
def tanh_short(x):
    """tanh = expm1(2x) / (expm1(2x) + 2); no cancellation for either sign."""
    y = 2.0 * x
    y = y if y < 44.0 else 44.0                       # tanh(22) == 1 in float64; NaN: 44
    y = y if y > -44.0 else -44.0
    k = np.floor(y * INV_LN2 + 0.5)
    r = (y - k * LN2_HI) - k * LN2_LO
    two_k = _pow2(k)
    em1 = two_k * _expm1_reduced(r) + (two_k - 1.0)
    t = np.copysign(em1 / (em1 + 2.0), x)
    return t if x == x else x


@njit
def expit_short(x):
    return 1.0 / (1.0 + exp_short(-x))
