"""Updates of shared variables are simultaneous: every new value of a step is computed from the
values at the start of that step (`{a: b, b: a}` swaps; `{x: x + 1, y: x}` gives `y` the old
`x`). Checked against NumPy loops written here, in modes python, cpu and cuda (the simulator
unless NUMBASCAN_TEST_GPU=1), under ns.jit, and for `Updates.apply()`.

Sizes: 3 (small values: unrolled code, values carried in locals or one CUDA thread) and 24
(> 16: loops over memory, the in-place last-state update, the elementwise CUDA kernel).
"""
import warnings

import numpy as np
import pytest

import numbascan as ns
from numbascan.runtime.fallback import UntracedStepWarning

from conftest import assert_close

try:
    from numba import cuda  # noqa: F401  (numba-cuda)
    HAVE_CUDA = True
except ImportError:             # pragma: no cover - installs without the test extra
    HAVE_CUDA = False

MODES = ["python", "cpu",
         pytest.param("cuda", marks=pytest.mark.skipif(not HAVE_CUDA,
                                                       reason="numba-cuda is not installed"))]
SIZES = [3, 24]


def run(step, mode, patterns, **kwargs):
    """ns.scan in `mode`; fails if the step was not traced (or, in mode cuda, no kernel ran)."""
    n_patterns = len(patterns)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntracedStepWarning)
        outs, updates = ns.scan(step, mode=mode, **kwargs)
    assert isinstance(updates, ns.Updates)
    if mode == "cuda":
        assert len(patterns) > n_patterns, "no CUDA kernel was launched"
    return outs, updates


@pytest.mark.parametrize("mode", MODES)
def test_increment_and_copy_of_the_old_value(kernel_patterns, mode):
    x, y = ns.shared(1.0), ns.shared(0.0)
    _, updates = run(lambda: {x: x + 1, y: x}, mode, kernel_patterns, n_steps=10)
    xv, yv = 1.0, 0.0
    for _ in range(10):
        xv, yv = xv + 1, xv
    assert (xv, yv) == (11.0, 10.0)
    assert float(updates[x]) == xv and float(updates[y]) == yv
    assert (x.get_value(), y.get_value()) == (1.0, 0.0)      # not applied by scan
    updates.apply()
    assert (x.get_value(), y.get_value()) == (11.0, 10.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_swap(rng, kernel_patterns, mode, size):
    a0, b0 = rng.standard_normal(size), rng.standard_normal(size)
    a, b = ns.shared(a0), ns.shared(b0)
    for n in (5, 6):                        # odd: swapped, even: back in place
        _, updates = run(lambda: {a: b, b: a}, mode, kernel_patterns, n_steps=n)
        av, bv = a0, b0
        for _ in range(n):
            av, bv = bv, av
        assert_close(updates[a], av, "a")
        assert_close(updates[b], bv, "b")
        np.testing.assert_array_equal(updates[a], b0 if n % 2 else a0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_rotation_of_three(rng, kernel_patterns, mode, size):
    a0, b0, c0 = (rng.standard_normal(size) for _ in range(3))
    a, b, c = ns.shared(a0), ns.shared(b0), ns.shared(c0)

    def step(s):
        # each value is read after an earlier key of the dict took a new value
        return s * a, {a: c, b: a, c: b + s}

    seq = rng.standard_normal((7, size))
    outs, updates = run(step, mode, kernel_patterns, sequences=seq)
    av, bv, cv = a0, b0, c0
    expect = []
    for s in seq:
        expect.append(s * av)
        av, bv, cv = cv, av, bv + s
    assert_close(outs, np.array(expect), "outputs")
    for k, v, name in ((a, av, "a"), (b, bv, "b"), (c, cv, "c")):
        assert_close(updates[k], v, name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_update_mixing_a_sequence_and_two_shared_arrays(rng, kernel_patterns, mode, size):
    u0, v0 = rng.standard_normal(size), rng.standard_normal(size)
    u, v = ns.shared(u0), ns.shared(v0)

    def step(s):
        # v's new value is made last and reads only start-of-step values: at size 24 the cpu
        # loop writes it over the old v, which u's new value reads first
        return s * u, {u: u * 0.5 + s * v, v: v - s * u}

    seq = rng.standard_normal((9, size))
    outs, updates = run(step, mode, kernel_patterns, sequences=seq)
    uv, vv = u0, v0
    expect = []
    for s in seq:
        expect.append(s * uv)
        uv, vv = uv * 0.5 + s * vv, vv - s * uv
    assert_close(outs, np.array(expect), "outputs")
    assert_close(updates[u], uv, "u")
    assert_close(updates[v], vv, "v")
    if mode == "cuda":
        assert kernel_patterns[-1].kind == ("elementwise" if size > 16 else "block")


@pytest.mark.parametrize("size", SIZES)
def test_under_jit(rng, size):
    x0, y0 = rng.standard_normal(size), rng.standard_normal(size)
    x, y = ns.shared(x0), ns.shared(y0)

    @ns.jit
    def f(seq):
        outs, updates = ns.scan(lambda s: (s * x, {x: y + s, y: x}), sequences=seq)
        return outs, updates

    seq = rng.standard_normal((5, size))
    xv, yv = x0, y0
    for step in range(2):               # the second call starts from the applied values
        outs, updates = f(seq)
        expect = []
        for s in seq:
            expect.append(s * xv)
            xv, yv = yv + s, xv
        assert_close(outs, np.array(expect), f"call {step}: outputs")
        assert_close(updates[x], xv, f"call {step}: x")
        assert_close(updates[y], yv, f"call {step}: y")
        assert isinstance(updates, ns.Updates)
        updates.apply()
        assert_close(x.get_value(), xv, f"call {step}: applied x")
        assert_close(y.get_value(), yv, f"call {step}: applied y")


def test_apply_is_simultaneous():
    a, b, c = ns.shared(np.arange(3.0)), ns.shared(-np.arange(3.0)), ns.shared(7.0)
    ns.Updates({a: b, b: a}).apply()
    np.testing.assert_array_equal(a.get_value(), -np.arange(3.0))
    np.testing.assert_array_equal(b.get_value(), np.arange(3.0))
    d = ns.shared(0.0)
    ns.Updates({c: np.float64(1.0), d: c}).apply()
    assert (c.get_value(), d.get_value()) == (1.0, 7.0)
