"""The short-latency exp/tanh of unrolled steps agree with NumPy to a few ulp."""

import numpy as np
import pytest
from numba import njit

from numbascan.codegen.shortmath import exp_short, expit_short, tanh_short


def _applied(f, fastmath):
    @njit(fastmath=fastmath)
    def apply(x, out):
        for i in range(x.size):
            out[i] = f(x[i])
    return apply


SPECIAL = np.array([0.0, -0.0, 1e-300, -1e-310, 5e-324, 1e-17, -1e-8, 0.5493061443340549, 1.0,
                    -0.34657359027997264, 0.34657359027997264, 19.0, 22.0, -22.0, -25.0, 50.0,
                    700.0, 709.7, 709.8, -708.0, -740.0, -746.0, -1000.0, 1000.0, np.inf,
                    -np.inf, np.nan])


@pytest.mark.parametrize("fastmath", [False, {"contract"}])
@pytest.mark.parametrize("short, ref, scale", [(tanh_short, np.tanh, 3.0),
                                               (exp_short, np.exp, 200.0),
                                               (expit_short, None, 10.0)])
def test_agrees_with_numpy(short, ref, scale, fastmath):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(200000) * scale, rng.standard_normal(1000) * 1e-9,
                        SPECIAL])
    if ref is None:                                   # expit: 1 / (1 + exp(-x))
        with np.errstate(over="ignore"):
            ref = lambda v: 1.0 / (1.0 + np.exp(-v))   # noqa: E731
    out = np.empty_like(x)
    _applied(short, fastmath)(x, out)
    with np.errstate(over="ignore", under="ignore"):
        expected = ref(x)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    ok = np.isfinite(expected) & (np.abs(expected) > 1e-300)
    rel = np.abs(out[ok] - expected[ok]) / np.abs(expected[ok])
    assert rel.max() < 4e-15, (rel.max(), x[ok][np.argmax(rel)])
    inf = np.isinf(expected)
    np.testing.assert_array_equal(out[inf], expected[inf])
    tiny = np.isfinite(expected) & ~ok
    np.testing.assert_allclose(out[tiny], expected[tiny], atol=1e-300)
    zero = expected == 0
    np.testing.assert_array_equal(np.signbit(out[zero]), np.signbit(expected[zero]))
