"""Loops whose length is data: ns.until eagerly, under ns.jit, nested in another scan's step,
under ns.vmap and under every derivative, with random draws — against NumPy loops and closed
forms (the python mode could share a bug of the semantics)."""

import threading

import numpy as np
import pytest

import numbascan as ns
from conftest import assert_close


def newton_run(a, mode=None):
    """Newton's iteration for sqrt(a), stopping when it no longer moves (at most 60 steps):
    every iterate."""
    def step(x, a):
        x_new = 0.5 * (x + a / x)
        return x_new, ns.until(np.abs(x_new - x) < 1e-13 * a)
    return ns.scan(step, outputs_info=a, non_sequences=a, n_steps=60, mode=mode)[0]


def newton_sqrt(a):
    return newton_run(a)[-1]


def newton_steps_numpy(a):
    x, xs = a, []
    for _ in range(60):
        x_new = 0.5 * (x + a / x)
        xs.append(x_new)
        stop = abs(x_new - x) < 1e-13 * a
        x = x_new
        if stop:
            break
    return np.array(xs)


@pytest.fixture
def a(rng):
    return rng.uniform(0.5, 40.0)


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_newton_value_eager_and_jit(a, mode, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    assert_close(newton_sqrt(np.array(a)), np.sqrt(a))
    assert_close(ns.jit(newton_sqrt)(np.array(a)), np.sqrt(a))


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_newton_derivatives(a, mode, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    x = np.array(a)
    d1, d2 = 0.5 / np.sqrt(a), -0.25 * a ** -1.5
    assert_close(ns.grad(newton_sqrt)(x), d1, rtol=1e-9)
    out, tangent = ns.jvp(newton_sqrt, (x,), (np.array(1.0),))
    assert_close(out, np.sqrt(a))
    assert_close(tangent, d1, rtol=1e-9)
    out, vjp_fn = ns.vjp(newton_sqrt, x)
    assert_close(vjp_fn(np.array(2.0))[0], 2 * d1, rtol=1e-9)
    for jac in (ns.jacfwd, ns.jacrev):
        assert_close(jac(newton_sqrt)(x), d1, rtol=1e-9)
    for m in ("auto", "fwd", "rev"):
        assert_close(ns.jacobian(newton_sqrt, mode=m)(x), d1, rtol=1e-9)
    assert_close(ns.hessian(newton_sqrt)(x), d2, rtol=1e-7)


def test_newton_vector_jacobian(rng):
    """Elementwise sqrt of a vector: the loop stops when every element has converged."""
    v = rng.uniform(0.5, 20.0, 3)

    def f(v):
        def step(x, v):
            x_new = 0.5 * (x + v / x)
            return x_new, ns.until(np.max(np.abs(x_new - x)) < 1e-13)
        xs, _ = ns.scan(step, outputs_info=v, non_sequences=v, n_steps=60)
        return xs[-1]
    for m in ("fwd", "rev"):
        assert_close(ns.jacobian(f, mode=m)(v), np.diag(0.5 / np.sqrt(v)), rtol=1e-9)


def test_code_after_the_loop_sees_the_rows_that_ran(a):
    expected = newton_steps_numpy(a)

    @ns.jit
    def f(a):
        xs = newton_run(a)
        return (xs[-1], xs[0], xs.shape[0], xs.sum(), xs.mean(), xs.max(), xs.min(),
                xs.prod(), np.argmin(xs), xs[1:].sum(), xs[:-1].sum(), xs[-2],
                xs * 2.0 + 1.0, np.cumsum(xs), xs[1:], xs[:3], (xs > 10.0).any())
    got = f(np.array(a))
    want = (expected[-1], expected[0], len(expected), expected.sum(), expected.mean(),
            expected.max(), expected.min(), expected.prod(), np.argmin(expected),
            expected[1:].sum(), expected[:-1].sum(), expected[-2], expected * 2.0 + 1.0,
            np.cumsum(expected), expected[1:], expected[:3], (expected > 10.0).any())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.shape(g) == np.shape(w)
        assert_close(g, w)


def test_rows_of_a_loop_as_another_scans_sequence(a):
    expected = newton_steps_numpy(a)

    @ns.jit
    def f(a):
        xs = newton_run(a)
        diffs, _ = ns.scan(lambda x_prev, x_next: x_next - x_prev,
                           sequences=dict(input=xs, taps=[0, 1]))
        acc, _ = ns.scan(lambda d, s: s + d * d, sequences=diffs, outputs_info=np.array(0.0))
        return diffs, acc[-1]
    diffs, total = f(np.array(a))
    assert_close(diffs, np.diff(expected))
    assert_close(total, (np.diff(expected) ** 2).sum())


def test_a_new_number_of_steps_never_retraces(rng):
    class Count:
        traces = 0

    @ns.jit
    def f(a):
        Count.traces += 1
        return newton_sqrt(a)
    for a in rng.uniform(0.5, 1e6, 12):
        assert_close(f(np.array(a)), np.sqrt(a))
    assert Count.traces == 1


def inner_loop_model(h0, xs):
    """An outer recurrence whose step solves h_new = sqrt(h + x^2) / 2 by an inner loop."""
    def outer_step(x, h):
        c = h + x * x

        def inner_step(y, c):
            y_new = 0.5 * (y + c / y)
            return y_new, ns.until(np.abs(y_new - y) < 1e-12)
        ys, _ = ns.scan(inner_step, outputs_info=c, non_sequences=c, n_steps=60)
        return 0.5 * ys[-1]
    hs, _ = ns.scan(outer_step, sequences=xs, outputs_info=h0)
    return hs


def inner_loop_numpy(h0, xs):
    h, hs = h0, []
    for x in xs:
        h = 0.5 * np.sqrt(h + x * x)
        hs.append(h)
    return np.array(hs)


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_converging_inner_loop_and_its_gradient(rng, mode, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    h0, xs = np.array(rng.uniform(0.5, 2.0)), rng.uniform(0.5, 2.0, 6)
    expected = inner_loop_numpy(float(h0), xs)
    assert_close(inner_loop_model(h0, xs), expected)
    assert_close(ns.jit(inner_loop_model)(h0, xs), expected)
    loss = lambda h0, xs: (inner_loop_model(h0, xs) ** 2).sum()      # noqa: E731
    g_h0, g_xs = ns.grad(loss, argnums=(0, 1))(h0, xs)
    ref = lambda h0, xs: (inner_loop_numpy(h0, xs) ** 2).sum()      # noqa: E731
    eps = 1e-6
    fd_h0 = (ref(float(h0) + eps, xs) - ref(float(h0) - eps, xs)) / (2 * eps)
    fd_xs = [(ref(float(h0), xs + eps * e) - ref(float(h0), xs - eps * e)) / (2 * eps)
             for e in np.eye(len(xs))]
    assert_close(g_h0, fd_h0, rtol=1e-6)
    assert_close(g_xs, fd_xs, rtol=1e-6)


def test_vmap_each_element_stops_on_its_own(rng):
    v = rng.uniform(0.5, 1e4, 7)
    assert_close(ns.vmap(newton_sqrt)(v), np.sqrt(v))
    assert_close(ns.vmap(ns.grad(newton_sqrt))(v), 0.5 / np.sqrt(v), rtol=1e-9)
    assert_close(ns.jit(ns.vmap(newton_sqrt))(v), np.sqrt(v))
    H0, X = rng.uniform(0.5, 2.0, 3), rng.uniform(0.5, 2.0, (3, 4))
    assert_close(ns.vmap(inner_loop_model)(H0, X),
                 [inner_loop_numpy(h, x) for h, x in zip(H0, X)])
    loss = lambda h0, xs: (inner_loop_model(h0, xs) ** 2).sum()      # noqa: E731
    ref = lambda h0, xs: (inner_loop_numpy(h0, xs) ** 2).sum()      # noqa: E731
    eps = 1e-6
    assert_close(ns.vmap(ns.grad(loss))(H0, X),
                 [(ref(h + eps, x) - ref(h - eps, x)) / (2 * eps) for h, x in zip(H0, X)],
                 rtol=1e-6)


def test_vmap_returning_the_whole_run_is_an_error(rng):
    def run(a):
        xs, _ = ns.scan(lambda x, a: (0.5 * (x + a / x), ns.until(x < 0)),
                        outputs_info=a, non_sequences=a, n_steps=5)
        return xs
    with pytest.raises(ValueError, match=r"(?s)stops early.*xs\[-1\] or a reduction"):
        ns.vmap(run)(rng.uniform(1, 2, 3))


def test_returning_the_run_from_jit_and_its_derivatives(a):
    expected = newton_steps_numpy(a)

    run = newton_run
    assert_close(ns.jit(run)(np.array(a)), expected)
    out, tangent = ns.jvp(run, (np.array(a),), (np.array(1.0),))
    assert_close(out, expected)
    eps = 1e-6
    fd = (newton_steps_numpy(a + eps) - newton_steps_numpy(a - eps)) / (2 * eps)
    if len(newton_steps_numpy(a + eps)) == len(newton_steps_numpy(a - eps)) == len(expected):
        assert_close(tangent, fd, rtol=1e-5, atol=1e-7)
    out, vjp_fn = ns.vjp(run, np.array(a))
    ct = np.linspace(1.0, 2.0, len(expected))
    assert_close(vjp_fn(ct)[0], (tangent * ct).sum(), rtol=1e-9)
    with pytest.raises(ns.DerivativeError, match="run-time"):
        ns.jacobian(run)(np.array(a))


def test_go_backwards_with_until_gradient(rng):
    xs = rng.uniform(0.1, 1.0, 30)
    threshold = float(np.cumsum(xs[::-1] ** 2)[12])

    def loss(w, xs):
        hs, _ = ns.scan(lambda x, h, w: (h + w * x * x, ns.until(h + w * x * x > threshold)),
                        sequences=xs, outputs_info=np.array(0.0), non_sequences=w,
                        go_backwards=True)
        return (hs ** 2).sum()

    def ref(w, xs):
        h, total = 0.0, 0.0
        for x in xs[::-1]:
            h = h + w * x * x
            total += h * h
            if h > threshold:
                break
        return total
    w = np.array(1.0 + rng.uniform(0.0, 0.01))
    g_w, g_xs = ns.grad(loss, argnums=(0, 1))(w, xs)
    eps = 1e-6
    assert_close(g_w, (ref(float(w) + eps, xs) - ref(float(w) - eps, xs)) / (2 * eps),
                 rtol=1e-6)
    fd = [(ref(float(w), xs + eps * e) - ref(float(w), xs - eps * e)) / (2 * eps)
          for e in np.eye(len(xs))]
    assert_close(g_xs, fd, rtol=1e-5, atol=1e-8)


def test_truncated_gradient_with_until(rng):
    """truncate_gradient=k through a loop that stops early equals the same truncation
    through a loop of fixed length that runs the same steps."""
    X = rng.standard_normal((40, 3))
    W = 0.4 * rng.standard_normal((3, 3))
    h0 = rng.standard_normal(3)

    stop = np.zeros(40)
    stop[int(rng.integers(12, 30))] = 1.0

    def loss(W, n_steps, until):
        def step(x, s, h, W):
            h_new = np.tanh(h @ W + x)
            return (h_new, ns.until(s > 0.5)) if until else h_new
        hs, _ = ns.scan(step, sequences=[X, stop], outputs_info=h0, non_sequences=W,
                        n_steps=n_steps, truncate_gradient=5)
        return (hs * hs).sum()
    ran = int(np.argmax(stop)) + 1
    assert_close(ns.grad(loss)(W, 40, True), ns.grad(loss)(W, ran, False), rtol=1e-10)


def test_random_stream_made_outside_jit_gives_the_eager_numbers(rng):
    seed = int(rng.integers(1 << 30))

    def walk(stream):
        def step(x):
            x_new = x + stream.normal()
            return x_new, ns.until(np.abs(x_new) > 3.0)
        xs, _ = ns.scan(step, outputs_info=np.array(0.0), n_steps=200)
        return xs

    eager_stream, jit_stream = ns.RandomStreams(seed), ns.RandomStreams(seed)
    python_stream = ns.RandomStreams(seed)
    jitted = ns.jit(lambda: walk(jit_stream))
    for _ in range(4):
        expected = walk(eager_stream)
        got = jitted()
        assert np.abs(expected[-1]) > 3.0 or len(expected) == 200
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(walk_python(python_stream, walk), expected)
        assert jit_stream.counter == eager_stream.counter == python_stream.counter


def walk_python(stream, walk):
    import os
    old = os.environ.get("NUMBASCAN_MODE")
    os.environ["NUMBASCAN_MODE"] = "python"
    try:
        return walk(stream)
    finally:
        if old is None:
            del os.environ["NUMBASCAN_MODE"]
        else:
            os.environ["NUMBASCAN_MODE"] = old


def test_stream_advances_by_the_steps_that_ran(rng):
    seed = int(rng.integers(1 << 30))
    s = ns.RandomStreams(seed)
    xs, _ = ns.scan(lambda x: (x + s.uniform(), ns.until(x + s.uniform() > 2.0)),
                    outputs_info=np.array(0.0), n_steps=100)
    # two draws a step
    assert s.counter == 2 * len(xs)


def test_errors_name_the_run(rng):
    a = np.array(4.0)

    def run(a):
        return ns.scan(lambda x, a: (0.5 * (x + a / x), ns.until(x < 0)),
                       outputs_info=a, non_sequences=a, n_steps=5)[0]

    with pytest.raises(TypeError, match="np.concatenate of the rows of a scan that stops"):
        ns.jit(lambda a: np.concatenate([run(a), run(a)]))(a)
    with pytest.raises(ValueError, match=r"sequences\[0\]: go_backwards over the rows"):
        ns.jit(lambda a: ns.scan(lambda x: x, sequences=run(a), go_backwards=True)[0])(a)
    with pytest.raises(ValueError, match=r"non_sequences\[0\].*run-time length"):
        ns.jit(lambda a: ns.scan(lambda x, y: x, sequences=np.ones(3),
                                 non_sequences=run(a))[0])(a)
    with pytest.raises(TypeError, match=r"len\(\) of the rows.*xs.shape\[0\]"):
        ns.jit(lambda a: len(run(a)))(a)


def test_threads_stop_on_their_own_numbers(rng):
    f = ns.jit(newton_sqrt)
    values = rng.uniform(0.5, 1e5, 16)
    results = [None] * len(values)

    def work(i):
        results[i] = f(np.array(values[i]))
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(values))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_close(np.array(results, dtype=float), np.sqrt(values))


# ------------------------------------------------------------------------------------------------
# mode="cuda" (numba-cuda's simulator in the test suite)


def newton_sqrt_cuda(a):
    xs = newton_run(a, mode="cuda")
    return xs[-1], xs.sum()


def test_cuda_until_under_jit_and_grad(rng):
    a = rng.uniform(0.5, 40.0)
    steps = newton_steps_numpy(a)
    value, total = ns.jit(newton_sqrt_cuda)(np.array(a))
    assert_close(value, np.sqrt(a))
    assert_close(total, steps.sum())
    g = ns.grad(lambda a: newton_sqrt_cuda(a)[0])(np.array(a))
    assert_close(g, 0.5 / np.sqrt(a), rtol=1e-9)


def test_cuda_inner_until_in_a_step(rng):
    h0, xs = np.array(rng.uniform(0.5, 2.0)), rng.uniform(0.5, 2.0, 3)

    def model(h0, xs):
        def outer_step(x, h):
            c = h + x * x
            ys, _ = ns.scan(lambda y, c: (0.5 * (y + c / y),
                                          ns.until(np.abs(0.5 * (y + c / y) - y) < 1e-12)),
                            outputs_info=c, non_sequences=c, n_steps=60)
            return 0.5 * ys[-1]
        return ns.scan(outer_step, sequences=xs, outputs_info=h0, mode="cuda")[0]
    assert_close(model(h0, xs), inner_loop_numpy(float(h0), xs))


def test_cuda_until_draws_the_cpu_numbers(rng):
    seed = int(rng.integers(1 << 30))

    def walk(stream, mode):
        def step(x):
            x_new = x + stream.normal()
            return x_new, ns.until(np.abs(x_new) > 2.0)
        return ns.scan(step, outputs_info=np.array(0.0), n_steps=40, mode=mode)[0]
    cpu_stream, cuda_stream = ns.RandomStreams(seed), ns.RandomStreams(seed)
    for _ in range(2):
        np.testing.assert_allclose(walk(cuda_stream, "cuda"), walk(cpu_stream, "cpu"),
                                   rtol=1e-15)
        assert cuda_stream.counter == cpu_stream.counter
