"""The trace cache: a second call reuses the traced program, and never returns stale results.

Every case changes something the step can see between two calls and compares with the python
reference mode; the compile-count checks show that unchanged calls do not trace again.
"""

import numpy as np
import pytest

import numbascan as ns
import numbascan.runtime.cache as jit_module      # the trace cache traces programs here

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
    real = jit_module.trace_step
    monkeypatch.setattr(jit_module, "trace_step", lambda sa: calls.append(1) or real(sa))
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


# ------------------------------------------------------------------------------------------------
# ns.jit's cached calls (jit.CachedCall): checked by guards instead of the full key


SCALE = 0.5
PARAMS = [0.25, rng.standard_normal(3)]


def _scale(h):
    return h * SCALE


def _reference(X, h0, f):
    h, out = h0, []
    for x in X:
        h = f(x, h)
        out.append(h)
    return np.array(out)


def _count_traces(monkeypatch):
    calls = []
    real = jit_module.trace_program
    monkeypatch.setattr(jit_module, "trace_program",
                        lambda fn, vals: calls.append(1) or real(fn, vals))
    return calls


def test_jit_cached_call_sees_changed_globals_lists_and_helpers(monkeypatch):
    global SCALE, G
    old = SCALE, G, list(PARAMS)
    calls = _count_traces(monkeypatch)

    @ns.jit
    def run(X, h0):
        return ns.scan(lambda x, h: np.tanh(_scale(h) + PARAMS[0] * x + PARAMS[1] * G),
                       sequences=X, outputs_info=h0)[0]

    def expected():
        return _reference(X, h0, lambda x, h: np.tanh(h * SCALE + PARAMS[0] * x +
                                                      PARAMS[1] * G))
    h0 = rng.standard_normal(3)
    try:
        for change in [None, "scale", "G rebound", "G in place", "list item", "list array",
                       "list in place"]:
            if change == "scale":
                SCALE = 0.8                            # compiled in: a new trace
            elif change == "G rebound":
                G = rng.standard_normal(3)
            elif change == "G in place":
                G[:] = rng.standard_normal(3)
            elif change == "list item":
                PARAMS[0] = 0.75                       # the list object is the same
            elif change == "list array":
                PARAMS[1] = rng.standard_normal(3)
            elif change == "list in place":
                PARAMS[1][:] = rng.standard_normal(3)
            for _ in range(2):                         # the second call takes the cached path
                np.testing.assert_allclose(run(X, h0), expected(), rtol=1e-12)
        assert len(calls) == 3                         # first call, SCALE, PARAMS[0]
    finally:
        SCALE, G = old[:2]
        PARAMS[:] = old[2]


def test_jit_cached_call_sees_closure_default_and_helper_changes():
    W = rng.standard_normal((3, 3)) * 0.5

    def product(h):
        return h @ W

    def negated(h):
        return -h
    helper = product

    def make(k):
        def run(X, h0, k=k):
            return ns.scan(lambda x, h: np.tanh(helper(h) * k + x), sequences=X,
                           outputs_info=h0)[0]
        return run
    raw = make(1.0)
    run = ns.jit(raw)
    h0 = rng.standard_normal(3)
    for change in [None, "closure", "default", "helper"]:
        if change == "closure":
            W = rng.standard_normal((3, 3)) * 0.5      # noqa: F841 (read through the cell)
        elif change == "default":
            raw.__defaults__ = (0.5,)
        elif change == "helper":
            helper = negated
        k = raw.__defaults__[0]
        for _ in range(2):
            np.testing.assert_allclose(run(X, h0),
                                       _reference(X, h0, lambda x, h: np.tanh(helper(h) * k + x)),
                                       rtol=1e-12)


def test_jit_cached_call_strided_capture_and_shape_change():
    base = rng.standard_normal((3, 3))
    WT = base.T                                        # not contiguous: copied at every call

    @ns.jit
    def run(X, h0):
        return ns.scan(lambda x, h: np.tanh(h @ WT + x), sequences=X, outputs_info=h0)[0]
    h0 = rng.standard_normal(3)
    for _ in range(2):
        np.testing.assert_allclose(run(X, h0), _reference(X, h0, lambda x, h: np.tanh(h @ WT + x)),
                                   rtol=1e-12)
    base[:] = rng.standard_normal((3, 3))
    for _ in range(2):
        np.testing.assert_allclose(run(X, h0), _reference(X, h0, lambda x, h: np.tanh(h @ WT + x)),
                                   rtol=1e-12)
    b = rng.standard_normal(3)

    @ns.jit
    def add(X):
        return X + b
    np.testing.assert_allclose(add(X), X + b)
    np.testing.assert_allclose(add(X), X + b)
    b.shape = (1, 3)                                   # same object, new shape: a new trace
    np.testing.assert_allclose(add(X), X + b)


def test_jit_cached_call_returns_copies_of_inputs():
    @ns.jit
    def same(x, y):
        return x, y.reshape(y.shape), y[0]
    x, y = rng.standard_normal(3), rng.standard_normal((2, 2))
    for _ in range(2):
        a, b, c = same(x, y)
        assert a is not x and not np.shares_memory(a, x)
        assert b is not y and not np.shares_memory(b, y)
        np.testing.assert_array_equal(a, x)
        np.testing.assert_array_equal(b, y)
        np.testing.assert_array_equal(c, y[0])


def test_jit_cached_call_advances_random_streams():
    x = rng.standard_normal(4)
    rs = ns.RandomStreams(3)

    @ns.jit
    def noisy(x):
        return x + rs.normal(x.shape)
    drawn = [noisy(x) for _ in range(3)]               # the later calls take the cached path
    assert not np.allclose(drawn[0], drawn[1]) and not np.allclose(drawn[1], drawn[2])
    eager = ns.RandomStreams(3)                        # the same stream, drawn eagerly
    for got in drawn:
        np.testing.assert_allclose(got, x + eager.normal(x.shape), rtol=1e-12)


def test_jit_cached_call_zero_d_and_static_arguments():
    @ns.jit
    def f(a, x, k):
        return a * x + k
    x = rng.standard_normal(3)
    for a, k in [(np.array(2.0), 1), (np.array(3.0), 1), (np.array(3.0), 2.5)]:
        for _ in range(2):
            np.testing.assert_allclose(f(a, x, k), a * x + k, rtol=1e-12)


def test_a_derivative_closure_sees_the_scalars_of_the_users_function(rng):
    """ns.grad returns a numbascan closure around the user's function: the trace cache looks
    inside it, so a changed scalar the loss reads is seen, and nothing else is traced again."""
    w, X = rng.standard_normal(3), rng.standard_normal((4, 3))

    class Traced:                        # a type is keyed by identity: counting is invisible
        n = 0

    def loss(w, x):
        Traced.n += 1
        return scale() * np.sum(np.tanh(w * x))

    c = 2.0

    def scale():
        return c

    gl = ns.grad(loss)

    def step(x):
        return gl(w, x)

    a, _ = ns.map(step, X)
    n = Traced.n
    again, _ = ns.map(step, X)
    assert Traced.n == n                             # cached: not traced again
    np.testing.assert_array_equal(again, a)
    c = 3.0
    b, _ = ns.map(step, X)
    np.testing.assert_allclose(b, 1.5 * a, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# the key is the traced program's inputs, however they arrive (counted with ns.cache_info)


def _traces_during(call, *args):
    """(result, traces made by `call(*args)`, of them uncached) by `ns.cache_info`."""
    before = ns.cache_info()
    out = call(*args)
    after = ns.cache_info()
    return out, after.traces - before.traces, after.uncached - before.uncached


def _rnn_states(W, h0, X):
    h, hs = h0, []
    for x in X:
        h = np.tanh(h @ W + x)
        hs.append(h)
    return np.array(hs)


def readme_loss(W, h0, X):                       # README.md, "Derivatives"
    hs, _ = ns.scan(lambda x, h, W: np.tanh(h @ W + x), sequences=X, outputs_info=h0,
                    non_sequences=W)
    return (hs ** 2).sum()


def _readme_dW(W, h0, X):
    """d/dW of sum(hs ** 2) by backpropagation in NumPy."""
    hs = _rnn_states(W, h0, X)
    prev = np.vstack([h0[None], hs[:-1]])
    dW, carry = np.zeros_like(W), np.zeros_like(h0)
    for t in reversed(range(len(X))):
        da = (2 * hs[t] + carry) * (1 - hs[t] ** 2)
        dW += np.outer(prev[t], da)
        carry = da @ W.T
    return dW


def test_cache_info_counts_traces_and_uncached_traces():
    m = Model()
    step = lambda x, h: np.tanh(h @ m.W + x)            # noqa: E731  (an attribute: uncached)
    _, traces, uncached = _traces_during(ns.scan, step, X, np.zeros(3))
    assert (traces, uncached) == (1, 1)
    _, traces, uncached = _traces_during(ns.scan, step, X, np.zeros(3))
    assert (traces, uncached) == (1, 1)
    fresh = lambda x, h: np.tanh(h * 0.375 + x)          # noqa: E731
    _, traces, uncached = _traces_during(ns.scan, fresh, X, np.zeros(3))
    assert (traces, uncached) == (1, 0)
    _, traces, _ = _traces_during(ns.scan, fresh, X, np.zeros(3))
    assert traces == 0
    info = ns.cache_info()
    assert info.traces >= info.uncached >= 0 and info.compiles >= 1


def test_grad_of_the_readme_example_is_cached(rng):
    W = 0.5 * rng.standard_normal((4, 4))
    h0, X_ = rng.standard_normal(4), rng.standard_normal((10, 4))
    dloss = ns.grad(readme_loss)
    dloss(W, h0, X_)
    for _ in range(3):                             # new values, same shapes: the kept trace
        W, h0, X_ = 0.5 * rng.standard_normal((4, 4)), rng.standard_normal(4), \
            rng.standard_normal((10, 4))
        dW, traces, uncached = _traces_during(dloss, W, h0, X_)
        assert (traces, uncached) == (0, 0)
        np.testing.assert_allclose(dW, _readme_dW(W, h0, X_), rtol=1e-10, atol=1e-12)
    # the README's Jacobian line too (mode="auto" looks at the output's shape first)
    jac = ns.jacobian(lambda h0: readme_loss(W, h0, X_))
    jac(h0)
    _, traces, _ = _traces_during(jac, h0)
    assert traces == 0


def test_every_derivative_of_a_power_is_cached(rng):
    """Python exponents (ints, floats, of the base or of the exponent) are literals of the
    program: their derivative rules must not make arrays the cache cannot find again."""
    W = rng.uniform(0.5, 1.5, (3, 3))

    def f(W):
        return (W ** 2 + W ** 0.5 + W ** -1 + 2.0 ** W + np.maximum(W, 1) ** 3 + W ** 0).sum()
    for transform in (ns.grad, ns.jacfwd, ns.jacrev, ns.hessian):
        fn = transform(f)
        first = fn(W)
        again, traces, uncached = _traces_during(fn, W)
        assert (traces, uncached) == (0, 0), transform.__name__
        np.testing.assert_array_equal(again, first)
    expected = 2 * W + 0.5 * W ** -0.5 - W ** -2 + np.log(2.0) * 2.0 ** W + \
        np.where(W > 1, 3 * np.maximum(W, 1) ** 2, 0.0)
    np.testing.assert_allclose(ns.grad(f)(W), expected, rtol=1e-12)


SEQ = rng.standard_normal((6, 3))        # global arrays passed as sequences and outputs_info
INIT = rng.standard_normal(3)
GAIN = 0.75                              # a global Python scalar: compiled in


def global_loss(W):
    hs, _ = ns.scan(lambda x, h, W: np.tanh(GAIN * (h @ W) + x), sequences=SEQ,
                    outputs_info=INIT, non_sequences=W)
    return (hs ** 2).sum()


def global_states(W):
    return ns.scan(lambda x, h, W: np.tanh(GAIN * (h @ W) + x), sequences=SEQ,
                   outputs_info=INIT, non_sequences=W)[0]


def test_globals_as_sequences_and_outputs_info_are_cached_and_read_at_every_call(rng):
    global SEQ, INIT, GAIN
    old = SEQ.copy(), INIT, GAIN
    W = 0.5 * rng.standard_normal((3, 3))

    def states_ref():
        h, hs = INIT, []
        for x in SEQ:
            h = np.tanh(GAIN * (h @ W) + x)
            hs.append(h)
        return np.array(hs)

    def dW_ref(eps=1e-6):
        def loss(W):
            h, total = INIT, 0.0
            for x in SEQ:
                h = np.tanh(GAIN * (h @ W) + x)
                total += (h ** 2).sum()
            return total
        g = np.zeros_like(W)
        for i in np.ndindex(W.shape):
            e = np.zeros_like(W)
            e[i] = eps
            g[i] = (loss(W + e) - loss(W - e)) / (2 * eps)
        return g

    calls = [(ns.jit(global_states), states_ref, 1e-12), (ns.grad(global_loss), dW_ref, 1e-6),
             (ns.jit(ns.grad(global_loss)), dW_ref, 1e-6)]
    try:
        for fn, _, _ in calls:
            fn(W)
        for change in ["none", "sequences in place", "outputs_info rebound", "scalar"]:
            if change == "sequences in place":
                SEQ[:] = rng.standard_normal(SEQ.shape)
            elif change == "outputs_info rebound":
                INIT = rng.standard_normal(3)
            elif change == "scalar":
                GAIN = 0.25
            for fn, ref, tol in calls:
                before = ns.cache_info()
                for _ in range(2):
                    np.testing.assert_allclose(fn(W), ref(), rtol=tol, atol=tol)
                after = ns.cache_info()
                # arrays are inputs read at each call: neither traced nor compiled again;
                # the scalar is compiled in: one new trace
                assert after.traces - before.traces == (change == "scalar"), change
                assert after.uncached == before.uncached
                if change != "scalar":
                    assert after.compiles == before.compiles, change
    finally:
        SEQ[:] = old[0]
        INIT, GAIN = old[1:]


def test_jit_of_vmap_is_cached_and_sees_closure_changes(rng):
    A = 0.5 * rng.standard_normal((3, 3))

    def energy(x):
        return (np.tanh(x @ A) ** 2).sum()
    batched = ns.jit(ns.vmap(energy))
    xs = rng.standard_normal((5, 3))
    batched(xs)
    for _ in range(2):
        A[:] = 0.5 * rng.standard_normal((3, 3))           # in place: read at the next call
        xs = rng.standard_normal((5, 3))
        out, traces, uncached = _traces_during(batched, xs)
        assert (traces, uncached) == (0, 0)
        np.testing.assert_allclose(out, [(np.tanh(x @ A) ** 2).sum() for x in xs], rtol=1e-12)
    per_example = ns.jit(ns.vmap(ns.grad(readme_loss), in_axes=(None, 0, 0)))
    H0, Xs = rng.standard_normal((4, 3)), rng.standard_normal((4, 6, 3))
    per_example(A, H0, Xs)
    out, traces, _ = _traces_during(per_example, A, H0, Xs)
    assert traces == 0
    np.testing.assert_allclose(out, [_readme_dW(A, h, x) for h, x in zip(H0, Xs)],
                               rtol=1e-10, atol=1e-12)


TABLE = rng.standard_normal((7, 3))


@ns.jit
def jitted_states(X, h0):
    hs, _ = ns.scan(lambda x, h: np.tanh(h @ TABLE[:3] * 0.5 + x), sequences=X,
                    outputs_info=h0)
    return hs


@ns.jit
def jitted_lookup(i):
    return TABLE[i] * 2.0                                # indexed by a traced value


def test_jit_of_vmap_of_a_jit_function(rng):
    Xs, H0 = rng.standard_normal((4, 50, 3)), rng.standard_normal((4, 3))
    batched = ns.jit(ns.vmap(jitted_states))
    step = lambda x, h: np.tanh(h @ TABLE[:3] * 0.5 + x)                # noqa: E731
    expected = np.array([_reference(X_, h0, step) for X_, h0 in zip(Xs, H0)])
    np.testing.assert_allclose(batched(Xs, H0), expected, rtol=1e-12)
    np.testing.assert_allclose(ns.vmap(jitted_states)(Xs, H0), expected, rtol=1e-12)
    out, traces, _ = _traces_during(batched, Xs, H0)
    assert traces == 0
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    idx = np.array([0, 6, 2, 2, 5])
    lookup = ns.jit(ns.vmap(jitted_lookup))
    np.testing.assert_allclose(lookup(idx), TABLE[idx] * 2.0)
    old = TABLE.copy()
    try:
        TABLE[:] = rng.standard_normal(TABLE.shape)      # in place: no new trace
        out, traces, _ = _traces_during(lookup, idx)
        assert traces == 0
        np.testing.assert_allclose(out, TABLE[idx] * 2.0)
    finally:
        TABLE[:] = old


@pytest.mark.parametrize("init", [np.float64(0.0), 0.0, [0.0]], ids=["numpy", "float", "list"])
def test_a_scalar_initial_state_inside_a_traced_function_is_cached(rng, init):
    """A NumPy scalar, a Python float or a list as `outputs_info` inside ns.jit or a derivative
    is made into an array while tracing: a constant of the program, not an input that the
    cache cannot find again (each call traced the whole function again)."""
    def last(x):
        out, _ = ns.scan(lambda a, s: s + 0.5 * a, sequences=x, outputs_info=init)
        return out[-1].sum()

    for call in (ns.jit(last), ns.value_and_grad(last)):
        call(rng.standard_normal(5))
        x = rng.standard_normal(5)
        out, traces, uncached = _traces_during(call, x)
        assert (traces, uncached) == (0, 0)
        value = out[0] if isinstance(out, tuple) else out
        np.testing.assert_allclose(value, 0.5 * x.sum(), rtol=1e-12)
