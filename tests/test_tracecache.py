"""The trace cache: a second call reuses the traced program, and never returns stale results.

Every case changes something the step can see between two calls and compares with the python
reference mode; the compile-count checks show that unchanged calls do not trace again.
"""

import numpy as np
import pytest

import numbascan as ns
import sys

import numbascan.driver

jit_module = sys.modules["numbascan.jit"]      # ns.jit (the function) shadows the module name

rng = np.random.default_rng(7)
X = rng.standard_normal((5, 3))
G = rng.standard_normal(3)           # a global array the steps read
ALPHA = 0.5                          # a global scalar: compiled in, so part of the cache key


def both(fn, **kw):
    cpu = ns.scan(fn, mode="cpu", **kw)[0]
    ref = ns.scan(fn, mode="python", **kw)[0]
    np.testing.assert_allclose(cpu, ref, rtol=1e-12)
    return cpu


def step_global(x, h):
    return np.tanh(h * ALPHA + x * G)


def test_global_array_rebound_and_scalar_changed():
    global G, ALPHA
    old_g, old_a = G, ALPHA
    try:
        first = both(step_global, sequences=X, outputs_info=np.zeros(3))
        G = rng.standard_normal(3)
        second = both(step_global, sequences=X, outputs_info=np.zeros(3))
        assert not np.allclose(first, second)
        ALPHA = 0.9
        third = both(step_global, sequences=X, outputs_info=np.zeros(3))
        assert not np.allclose(second, third)
    finally:
        G, ALPHA = old_g, old_a


def test_unchanged_calls_reuse_the_trace(monkeypatch):
    calls = []
    real = numbascan.driver.trace_step
    monkeypatch.setattr(numbascan.driver, "trace_step", lambda sa: calls.append(1) or real(sa))
    W = rng.standard_normal((3, 3))
    step = lambda x, h: np.tanh(h @ W + x)                               # noqa: E731
    for n in (5, 3, 4):                      # only the number of steps changes
        ns.scan(step, sequences=X[:n], outputs_info=np.zeros(3))
    assert len(calls) == 1
    W[:] = 0.0                               # values change in place: still no new trace
    out = ns.scan(step, sequences=X, outputs_info=np.zeros(3))[0]
    np.testing.assert_allclose(out[0], np.tanh(X[0]))
    assert len(calls) == 1


def test_closure_array_of_new_shape_retraces():
    W = rng.standard_normal((3, 3))

    def make():
        return lambda x, h: np.tanh(h @ W[:3, :3] + x)
    step = make()
    both(step, sequences=X, outputs_info=np.zeros(3))
    W = rng.standard_normal((4, 4))          # rebinding the closure cell to another shape
    both(step, sequences=X, outputs_info=np.zeros(3))


class Model:
    def __init__(self):
        self.W = rng.standard_normal((3, 3))
        self.scale = 1.0

    def step(self, x, h):
        return np.tanh(self.scale * (h @ self.W) + x)


def test_attributes_are_read_at_every_call():
    m = Model()
    first = both(m.step, sequences=X, outputs_info=np.zeros(3))
    m.W = rng.standard_normal((3, 3))
    second = both(m.step, sequences=X, outputs_info=np.zeros(3))
    assert not np.allclose(first, second)
    m.scale = 0.25
    third = both(m.step, sequences=X, outputs_info=np.zeros(3))
    assert not np.allclose(second, third)


def helper(h):
    return h * G


def test_helper_reading_a_global():
    global G
    old = G
    try:
        step = lambda x, h: np.tanh(helper(h) + x)                       # noqa: E731
        first = both(step, sequences=X, outputs_info=np.ones(3))
        G = rng.standard_normal(3)
        second = both(step, sequences=X, outputs_info=np.ones(3))
        assert not np.allclose(first, second)
    finally:
        G = old


def test_jit_reuses_program_and_sees_new_closure_values(monkeypatch):
    calls = []
    real = jit_module.trace_program
    monkeypatch.setattr(jit_module, "trace_program",
                        lambda fn, vals: calls.append(1) or real(fn, vals))
    b = rng.standard_normal(3)

    @ns.jit
    def run(X, h0):
        return ns.scan(lambda x, h: np.tanh(h + x + b), sequences=X, outputs_info=h0)[0]
    first = run(X, np.zeros(3))
    run(X, np.zeros(3))
    assert len(calls) == 1
    b[:] = 0.0
    second = run(X, np.zeros(3))
    assert len(calls) == 1
    ref = np.zeros(3)
    for i, x in enumerate(X):
        ref = np.tanh(ref + x)
        np.testing.assert_allclose(second[i], ref, rtol=1e-12)
    assert not np.allclose(first, second)


@pytest.mark.parametrize("k", [2, 3])
def test_jit_static_scalar_argument_is_part_of_the_key(k):
    @ns.jit
    def power(A, k):
        return ns.scan(lambda p, a: p * a, outputs_info=np.ones_like(A), non_sequences=A,
                       n_steps=k)[0][-1]
    A = rng.uniform(0.5, 1.5, 4)
    np.testing.assert_allclose(power(A, k), A ** k, rtol=1e-12)
    np.testing.assert_allclose(power(A, k + 1), A ** (k + 1), rtol=1e-12)
