"""SPEC section 5: a step numbascan cannot trace still runs forward in mode="cpu" (compiled by
numba as written, driven by a compiled loop), gives the reference result and warns, naming the
operation that stopped tracing.
"""
import warnings

import numpy as np
import pytest

import numbascan as ns


def python_mode(fn, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # the reference loop does not warn
        return ns.scan(fn, mode="python", **kwargs)


def cpu_mode_warns(pattern, fn, **kwargs):
    with pytest.warns(UserWarning, match=pattern):
        return ns.scan(fn, mode="cpu", **kwargs)


def normalize_step(x):
    return x / np.median(x)


def test_untraceable_numpy_function():
    x0 = np.array([3.0, 4.0])
    x0_copy = x0.copy()
    S = np.array([0.5, 1.0, 2.0])
    kwargs = dict(sequences=S, outputs_info=x0)

    def step(s, x):
        y = x * s + 1.0
        return y / np.median(y)

    got, _ = cpu_mode_warns(r"np\.median", step, **kwargs)
    ref, _ = python_mode(step, **kwargs)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert got.shape == (3, 2) and got.dtype == np.float64
    np.testing.assert_array_equal(x0, x0_copy)


def test_untraced_step_calling_a_python_helper():
    """Steps commonly call helper functions; the untraced path must still run them."""
    x0 = np.array([3.0, 4.0])
    x0_copy = x0.copy()
    S = np.array([0.5, 1.0, 2.0])
    kwargs = dict(sequences=S, outputs_info=x0)

    def step(s, x):
        return normalize_step(x * s + 1.0)

    got, _ = cpu_mode_warns(r"np\.median", step, **kwargs)
    ref, _ = python_mode(step, **kwargs)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert got.shape == (3, 2) and got.dtype == np.float64
    np.testing.assert_array_equal(x0, x0_copy)


def test_python_if_on_a_value():
    def step(s, x):
        if x.sum() > 2.0:
            return x * 0.5 + s
        return x * 2.0 + s

    S = np.linspace(0.0, 0.3, 6)
    x0 = np.array([0.25, 0.5])
    got, _ = cpu_mode_warns(r"(`if`|\bif\b|control flow)", step, sequences=S, outputs_info=x0)
    ref, _ = python_mode(step, sequences=S, outputs_info=x0)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_untraced_step_with_taps_and_non_sequences():
    def step(s_prev, s_next, x2, x1, w):
        return np.median(s_next - s_prev) * w + 0.5 * x2 - 0.25 * x1

    S = np.arange(12.0).reshape(6, 2) ** 1.5
    X0 = np.array([[1.0, 0.0], [0.0, 1.0]])
    w = np.array([0.1, -0.2])
    kwargs = dict(sequences=dict(input=S, taps=[-1, 1]),
                  outputs_info=dict(initial=X0, taps=[-2, -1]), non_sequences=w)
    got, _ = cpu_mode_warns(r"np\.median", step, **kwargs)
    ref, _ = python_mode(step, **kwargs)
    assert got.shape == ref.shape == (4, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_untraced_step_go_backwards_and_map_output():
    def step(s, x):
        y = np.median(s) + x
        return y, y * 2.0

    S = np.arange(8.0).reshape(4, 2)
    x0 = np.float64(0.0)
    kwargs = dict(sequences=S, outputs_info=[x0, None], go_backwards=True)
    got, _ = cpu_mode_warns(r"np\.median", step, **kwargs)
    ref, _ = python_mode(step, **kwargs)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-12)


def test_untraced_foldl_keeps_last():
    def step(s, x):
        return x + np.median(s)

    S = np.arange(6.0).reshape(3, 2)
    x0 = np.float64(1.0)
    with pytest.warns(UserWarning, match=r"np\.median"):
        got, _ = ns.foldl(step, sequences=S, outputs_info=x0, mode="cpu")
    ref, _ = ns.foldl(step, sequences=S, outputs_info=x0, mode="python")
    assert np.shape(got) == ()
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_untraced_step_shape_mismatch_is_an_error():
    def step(x):
        return np.median(x) * np.ones(3)

    x0 = np.ones(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"output 0.*shape \(3,\).*\(2,\)"):
            ns.scan(step, outputs_info=x0, n_steps=2, mode="cpu")
    np.testing.assert_array_equal(x0, np.ones(2))


def test_untraced_step_reads_closure_at_call_time():
    """SPEC 1: arrays a step reads from its closure are read at call time, on every path."""
    C = np.array([1.0, 2.0])

    def step(x):
        return x + C * np.median(C)

    x0 = np.zeros(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, _ = ns.scan(step, outputs_info=x0, n_steps=2, mode="cpu")
        np.testing.assert_allclose(first, python_mode(step, outputs_info=x0, n_steps=2)[0])
        C[:] = [3.0, 4.0]
        second, _ = ns.scan(step, outputs_info=x0, n_steps=2, mode="cpu")
    np.testing.assert_allclose(second, python_mode(step, outputs_info=x0, n_steps=2)[0])


def test_untraced_derivative_is_an_error_naming_the_operation():
    """SPEC 3: asking for the derivative of an untraceable step names the operation."""
    if not hasattr(ns, "grad"):
        pytest.skip("ns.grad not available yet")

    def cost(x0):
        r, _ = ns.scan(lambda x: x / np.median(x), outputs_info=x0, n_steps=2)
        return r[-1].sum()

    with pytest.raises((TypeError, ValueError), match=r"np\.median"):
        ns.grad(cost)(np.array([3.0, 4.0]))
