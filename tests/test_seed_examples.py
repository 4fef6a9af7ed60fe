"""The examples of Theano's scan tutorial (the seed document), run through numbascan.

Each example in examples/ exposes main(); these tests check its result against
the numbers the tutorial prints and against the example's NumPy comparison, in
the compiled ("cpu") and reference ("python") modes.
"""
import functools
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
MODES = ["cpu", "python"]

# The tutorial prints 8 decimals.
RTOL = 1e-7
ATOL = 5e-9


@functools.cache
def example(name):
    """Import examples/<name>.py as a module (file names start with digits)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"seed_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_seed(actual, seed, dtype=np.float64):
    actual = np.asarray(actual)
    seed = np.asarray(seed)
    assert actual.shape == seed.shape
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual, seed, rtol=RTOL, atol=ATOL)


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


def test_elementwise_tanh(mode):
    results, expected = example("01_elementwise_tanh").main(mode=mode)
    seed = [[0.96402758, 0.99505475],
            [0.96402758, 0.99505475]]
    assert_seed(results, seed)
    assert_seed(expected, seed)
    np.testing.assert_allclose(results, expected, rtol=1e-12)


def test_sequence_recurrence(mode):
    results, x_res = example("02_sequence_recurrence").main(mode=mode)
    seed = [[-0.99505475, -0.99505475],
            [0.96471973, 0.96471973],
            [0.99998585, 0.99998585],
            [0.99998771, 0.99998771],
            [1., 1.]]
    assert_seed(results, seed)
    assert_seed(x_res, seed)
    np.testing.assert_allclose(results, x_res, rtol=1e-12)


def test_norms_of_rows(mode):
    results, expected = example("03_norms_of_rows").main(mode=mode)
    seed = [1., 2., 3., 4., 5., 0.]
    assert_seed(results, seed)
    assert_seed(expected, seed)
    np.testing.assert_allclose(results, expected, rtol=1e-12)


def test_norms_of_columns(mode):
    results, expected = example("04_norms_of_columns").main(mode=mode)
    seed = [0., 1., 2., 3., 4., 5.]
    assert_seed(results, seed)
    assert_seed(expected, seed)
    np.testing.assert_allclose(results, expected, rtol=1e-12)


def test_trace(mode):
    result, expected = example("05_trace").main(mode=mode)
    # The state is float32 (its initial value is), X is float64.
    assert_seed(result, 4.0, dtype=np.float32)
    assert_seed(expected, 4.0)
    assert result == expected


def test_taps_recurrence(mode):
    results, x_res = example("06_taps_recurrence").main(mode=mode)
    seed = [[1.40514825, 1.40514825],
            [2.88898899, 2.38898899],
            [4.34018291, 4.34018291],
            [6.53463142, 6.78463142],
            [9.82972243, 9.82972243],
            [14.22203814, 14.09703814],
            [20.07439936, 20.07439936],
            [28.12291843, 28.18541843],
            [39.1913681, 39.1913681],
            [54.28407732, 54.25282732]]
    assert_seed(results, seed)
    assert_seed(x_res, seed)
    np.testing.assert_allclose(results, x_res, rtol=1e-12)


def test_jacobian():
    results, expected = example("07_jacobian").main()
    seed = [[0.41997434, 0., 0.41997434, 0., 0.],
            [0., 1., 1., 0., 0.],
            [0., 0., 1., 0., 0.]]
    assert_seed(results, seed)
    assert_seed(expected, seed)
    np.testing.assert_allclose(results, expected, rtol=1e-12, atol=1e-15)


def test_shared_accumulator(mode):
    before, after = example("08_shared_accumulator").main(mode=mode)
    assert before == 0  # scan does not apply updates by itself
    assert after == 5


# tanh(v.dot(W) + b) for v = the rows of eye(10, 2), W = ones, b = ones:
# tanh(2) for the first two rows, tanh(1) for the others.
BNOISE_ROWS = np.array([0.96402758] * 2 + [0.76159416] * 8)


def test_binomial_noise_structure(mode):
    results, fixed, d, expected = example("09_binomial_noise").main(mode=mode)
    assert results.shape == (10, 2)
    assert results.dtype == np.float64
    mask = results != 0
    # Every entry is 0 or the seed's value for its row.
    np.testing.assert_allclose(results, np.where(mask, BNOISE_ROWS[:, None], 0.0),
                               rtol=RTOL, atol=ATOL)
    # A draw inside the step is fresh at every step.
    assert len({tuple(row) for row in mask}) > 1
    # A draw outside the step is the same array at every step.
    assert d.shape == (2,)
    assert set(np.unique(d)) <= {0, 1}
    assert np.array_equal(fixed != 0, np.broadcast_to(d != 0, fixed.shape))
    np.testing.assert_allclose(fixed, expected, rtol=1e-12)
    np.testing.assert_allclose(fixed, BNOISE_ROWS[:, None] * d, rtol=RTOL, atol=ATOL)


def test_binomial_noise_reproducible(mode):
    first = example("09_binomial_noise").main(mode=mode)
    second = example("09_binomial_noise").main(mode=mode)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_binomial_noise_same_masks_in_every_mode():
    cpu = example("09_binomial_noise").main(mode="cpu")
    python = example("09_binomial_noise").main(mode="python")
    for a, b in zip(cpu, python):
        np.testing.assert_array_equal(a != 0, b != 0)
        np.testing.assert_allclose(a, b, rtol=1e-12)


POWER_SEED = [0., 1., 4., 9., 16., 25., 36., 49., 64., 81.]


def test_power(mode):
    ex = example("10_power")
    A = np.asarray(range(10), dtype=np.float64)
    result = ex.power(A, 2, mode=mode)
    assert_seed(result, POWER_SEED)
    np.testing.assert_allclose(result, A ** 2, rtol=1e-12)


def test_power_jit():
    ex = example("10_power")
    A = np.asarray(range(10), dtype=np.float64)
    assert_seed(ex.power_jit(A, 2), POWER_SEED)
    final_result, final_result_jit, expected = ex.main()
    assert_seed(final_result, POWER_SEED)
    assert_seed(final_result_jit, POWER_SEED)
    assert_seed(expected, POWER_SEED)


def test_polynomial(mode):
    polynomial, expected = example("11_polynomial").main(mode=mode)
    assert float(polynomial) == 19.0
    assert float(expected) == 19.0
