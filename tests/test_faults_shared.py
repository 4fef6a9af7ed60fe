"""Cached and untraced code never outlives what it was built for, and never writes into inputs.

SPEC section 2: a shared variable given a value of another shape or dtype by `set_value` is
followed by the next call (eager scan, ns.jit, derivatives, updates), never read through code
compiled for the old shape. SPEC section 1: inputs are never written to, also by a step that
cannot be traced (runtime/fallback.py): it raises python mode's "read-only" error instead.
SPEC section 5 with the fallback's warning: a change to an array that the untraced step, or a
helper it calls, reads from the globals is seen by the next call.
"""
import re
import warnings

import numpy as np
import pytest

import numbascan as ns
from numbascan.loop.args import default_mode
from numbascan.runtime.fallback import UntracedStepWarning


def scan_both(fn, **kwargs):
    """(cpu result, python result) of one scan: outputs and updates."""
    return ns.scan(fn, mode="cpu", **kwargs), ns.scan(fn, mode="python", **kwargs)


def assert_same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got, want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------------
# shared variables whose shape or dtype changes between calls


def test_eager_scan_follows_a_shared_variable_of_a_new_shape_and_dtype():
    k = ns.shared(np.ones(3))

    def step(a):
        return a * k

    S = np.arange(6.0).reshape(2, 3)
    for value in (np.ones(3), np.array([2.0]), np.array([3.0, 4.0, 5.0]),
                  np.array([1, 2, 3]), np.array([0.5], dtype=np.float32)):
        k.set_value(value)
        (got, _), (ref, _) = scan_both(step, sequences=S)
        assert_same(got, S * value)
        assert_same(ref, S * value)


def test_update_follows_a_shared_variable_of_a_new_shape_and_dtype():
    s = ns.shared(np.zeros(2))

    def step():
        return {s: s + 1}

    for value in (np.zeros(2), np.zeros(4), np.zeros((2, 3)), np.zeros(4, dtype=np.float32)):
        s.set_value(value)
        (_, got), (_, ref) = scan_both(step, n_steps=3)
        assert_same(got[s], value + 3)
        assert_same(ref[s], value + 3)


def test_jit_follows_a_shared_variable_of_a_new_shape_and_dtype():
    k = ns.shared(np.ones(3))
    s = ns.shared(np.zeros(2))

    @ns.jit
    def times_k(x):
        return x * k

    @ns.jit
    def scan_times_k(x):
        return ns.scan(lambda a: a * k, sequences=x)[0].sum(axis=0)

    @ns.jit
    def count(x):
        return ns.scan(lambda: {s: s + x}, n_steps=2)[1][s]

    def python_mode(fn, *args):
        with default_mode("python"):
            return fn(*args)

    x = np.array([1.0, 2.0, 3.0])
    X = np.arange(6.0).reshape(2, 3)
    for value in (np.ones(3), np.array([2.0]), np.array([3.0, 4.0, 5.0]), np.array([1, 2, 3])):
        k.set_value(value)
        assert_same(times_k(x), x * value)
        assert_same(scan_times_k(X), (X * value).sum(axis=0))
        assert_same(python_mode(scan_times_k, X), (X * value).sum(axis=0))
    for value in (np.zeros(2), np.zeros(4), np.zeros((2, 2))):
        s.set_value(value)
        assert_same(count(np.float64(1.5)), value + 3.0)
        assert_same(python_mode(count, np.float64(1.5)), value + 3.0)


def test_derivative_follows_a_shared_variable_of_a_new_shape_and_dtype():
    k = ns.shared(np.ones(3))

    def loss(x):
        return ns.scan(lambda a: a * k, sequences=x)[0].sum()

    X = np.ones((2, 3))
    for value in (np.array([2.0, 3.0, 4.0]), np.array([5.0]), np.array([1, 2, 3]),
                  np.array([0.5], dtype=np.float32)):
        k.set_value(value)
        assert_same(ns.grad(loss)(X), np.broadcast_to(value, X.shape).astype(np.float64))


# ------------------------------------------------------------------------------------------------
# an untraced step never writes into the arrays passed in


def _bits(*arrays):
    return [a.tobytes() for a in arrays]


def write_into_sequence(a):
    if a[1] > 0.5:               # untraceable; the write comes at the second step, not the first
        a[0] = 7.0
    return a * 2.0


def write_into_non_sequence(a, w):
    if a > 0.5:
        w[0] = 7.0
    return w * a


def write_into_state(a, x):
    if a > 0.5:
        x[0] = 7.0
    return x + a


@pytest.mark.parametrize("step, make", [
    (write_into_sequence, lambda: dict(sequences=np.array([[1.0, 0.0], [1.0, 1.0]]))),
    (write_into_non_sequence, lambda: dict(sequences=np.array([0.0, 1.0]),
                                           non_sequences=np.ones(2))),
    (write_into_state, lambda: dict(sequences=np.array([0.0, 1.0]), outputs_info=np.ones(2))),
])
def test_untraced_step_writing_into_an_input_raises_in_both_modes(step, make):
    for mode in ("python", "cpu"):
        kwargs = make()
        arrays = [v for v in kwargs.values() if isinstance(v, np.ndarray)]
        before = _bits(*arrays)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntracedStepWarning)
            with pytest.raises(ValueError, match="read-only"):
                ns.scan(step, mode=mode, **kwargs)
        assert _bits(*arrays) == before, f"mode={mode!r} changed the arrays passed in"


def test_untraced_step_that_only_reads_its_inputs_stays_compiled():
    """Read-only inputs must not push an ordinary untraced step to the Python loop."""
    def step(s, x, w):
        if s > 100.0:
            return x
        return x * w + s

    kwargs = dict(sequences=np.arange(3.0), outputs_info=np.ones(2), non_sequences=np.full(2, 0.5))
    arrays = list(kwargs.values())
    before = _bits(*arrays)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, _ = ns.scan(step, mode="cpu", **kwargs)
    assert not [w for w in caught if "cannot compile" in str(w.message)]
    assert_same(got, ns.scan(step, mode="python", **kwargs)[0])
    assert _bits(*arrays) == before


# ------------------------------------------------------------------------------------------------
# an untraced step sees the arrays its helpers read from the globals as they are now

TABLE = np.array([1.0, 2.0])         # read only by a helper of the untraced step


def table_total(x):
    return x * 0.0 + TABLE.sum()


def step_calling_a_helper(x):
    if x[0] > 100.0:
        return x
    return table_total(x)


def test_untraced_step_sees_a_helper_global_changed_in_place():
    old = TABLE.copy()
    try:
        for values in ([1.0, 2.0], [2.0, 4.0], [5.0, 5.0]):
            TABLE[:] = values
            with pytest.warns(UntracedStepWarning, match=re.escape("recompiles")):
                got, _ = ns.scan(step_calling_a_helper, outputs_info=np.zeros(2), n_steps=2,
                                 mode="cpu")
            ref, _ = ns.scan(step_calling_a_helper, outputs_info=np.zeros(2), n_steps=2,
                             mode="python")
            assert_same(got, ref)
            assert_same(got, np.full((2, 2), sum(values)))
    finally:
        TABLE[:] = old
