"""examples/kalman_filter.py and examples/lstm.py at small sizes, their gradients against JAX.

Each example compiles one program (``ns.value_and_grad`` of its loss); the tests call it at the
shapes its ``main`` uses (T_KF, T_LSTM), so the gradient checks reuse that program. The
gradients are compared with ``jax.grad`` (float64) of the same function written with
``jax.lax.scan``, or, without JAX, with central finite differences of a NumPy loop. The
examples' steps are also checked against the benchmarks' (benchmarks/programs.py), whose
timings they are meant to match.
"""
import functools
import importlib.util
import pathlib

import numpy as np

import numbascan as ns

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
except ImportError:                                       # pragma: no cover - depends on the env
    jax = jnp = None

# the example draws its PNG when matplotlib is installed (the bench extra), else says so
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

ROOT = pathlib.Path(__file__).resolve().parent.parent
T_KF, T_LSTM = 150, 100
# numbascan against JAX: both exact up to rounding. Against finite differences: truncation error.
TOL = dict(rtol=1e-9, atol=1e-11) if jax is not None else dict(rtol=1e-5, atol=1e-7)


@functools.cache
def load(relative):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"kalman_lstm_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def jitted_grad(f_jax, argnums):
    return jax.jit(jax.grad(f_jax, argnums=argnums))


def reference_grad(f_np, f_jax, args, argnums):
    """d f / d args[i] for i in argnums: jax.grad of f_jax, or central differences of f_np."""
    if jax is not None:
        return jitted_grad(f_jax, argnums)(*args)
    out = []
    for i in argnums:
        x = np.asarray(args[i], dtype=np.float64)
        g = np.empty(x.shape)
        for k in np.ndindex(x.shape):
            e = np.zeros(x.shape)
            e[k] = 1e-6
            plus, minus = list(args), list(args)
            plus[i], minus[i] = x + e, x - e
            g[k] = (f_np(*plus) - f_np(*minus)) / 2e-6
        out.append(g)
    return tuple(out)


# --- Kalman filter ------------------------------------------------------------------------------


def test_kalman_fit_moves_to_the_truth(tmp_path):
    ex = load("examples/kalman_filter.py")
    png = tmp_path / "kalman_filter.png"
    r = ex.main(T=T_KF, png=str(png), verbose=False)
    start = np.abs(r["theta0"] - r["theta_true"])
    fitted = np.abs(r["theta_fit"] - r["theta_true"])
    assert np.all(fitted < 0.5 * start), (r["theta_fit"], r["theta_true"])
    # A maximum of the likelihood: at least as likely as the parameters the data came from.
    assert r["loglik_fit"] >= r["loglik_true"] - 1e-6, (r["loglik_fit"], r["loglik_true"])
    assert r["fd_max_rel_err"] < 1e-5
    assert r["rmse_filtered"] < r["rmse_observed"]
    assert png.exists() == HAS_MATPLOTLIB
    if HAS_MATPLOTLIB:
        assert png.stat().st_size > 0


def kalman_neg_loglik_jax(ex):
    """The example's negative log-likelihood, written again with jax.numpy and lax.scan."""
    A, C, Q1, M0, P0 = (jnp.asarray(a) for a in (ex.A, ex.C, ex.Q1, ex.M0, ex.P0))

    def neg_loglik(theta, Y):
        Q, R = jnp.exp(theta[0]) * Q1, jnp.exp(theta[1]) * jnp.eye(2)

        def step(carry, y_t):
            m, P, ll = carry
            m_p = A @ m
            P_p = A @ P @ A.T + Q
            S = C @ P_p @ C.T + R
            v = y_t - C @ m_p
            K = jnp.linalg.solve(S, C @ P_p).T
            ll = ll - 0.5 * (v @ jnp.linalg.solve(S, v) + jnp.linalg.slogdet(S)[1])
            return (m_p + K @ v, P_p - K @ S @ K.T, ll), None

        (_, _, ll), _ = jax.lax.scan(step, (M0, P0, jnp.float64(0.0)), Y)
        return 0.5 * Y.size * jnp.log(2 * jnp.pi) - ll

    return neg_loglik


def test_kalman_gradient_matches_jax():
    ex = load("examples/kalman_filter.py")
    rng = np.random.default_rng(7)
    _, Y = ex.simulate(T_KF, seed=11)
    f_jax = kalman_neg_loglik_jax(ex) if jax is not None else None
    for _ in range(3):
        theta = ex.THETA_TRUE + rng.normal(0.0, 0.7, 2)
        value, grad = ns.value_and_grad(ex.neg_loglik)(theta, Y)
        np.testing.assert_allclose(value, -ex.filtered(theta, Y)[1], rtol=1e-12)
        (expected,) = reference_grad(lambda th, Y: -ex.filtered(th, Y)[1], f_jax,
                                     (theta, Y), (0,))
        np.testing.assert_allclose(grad, expected, **TOL)


# --- LSTM ---------------------------------------------------------------------------------------


def test_lstm_training_lowers_the_loss():
    losses, weights = load("examples/lstm.py").main(T=T_LSTM, steps=20, verbose=False)
    assert len(losses) == 21 and np.all(np.isfinite(losses))
    assert losses[-1] < 0.2 * losses[0], losses
    assert losses[-1] < min(losses[:5]), losses
    assert set(weights) == {"Wx", "Wh", "b", "w", "w0"}


def lstm_loss_jax(Wx, Wh, b, w, w0, X, target):
    def step(carry, x_t):
        h, c = carry
        z = x_t @ Wx + h @ Wh + b
        i, f, o, g = jnp.split(z, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    H = Wh.shape[0]
    _, hs = jax.lax.scan(step, (jnp.zeros(H), jnp.zeros(H)), X)
    return jnp.mean((hs @ w + w0 - target) ** 2)


def lstm_loss_numpy(ex):
    def loss(Wx, Wh, b, w, w0, X, target):
        h = c = np.zeros(Wh.shape[0])
        hs = []
        for x_t in X:
            h, c = ex.lstm_step(x_t, h, c, Wx, Wh, b)
            hs.append(h)
        return np.mean((np.array(hs) @ w + w0 - target) ** 2)
    return loss


def test_lstm_gradient_matches_jax():
    ex = load("examples/lstm.py")
    rng = np.random.default_rng(5)
    X, target = ex.make_data(T_LSTM, seed=4)
    H = ex.H
    weights = [rng.normal(0, 1.0, (1, 4 * H)), rng.normal(0, 0.5 / np.sqrt(H), (H, 4 * H)),
               rng.normal(0, 0.3, 4 * H), rng.normal(0, 1 / np.sqrt(H), H),
               np.array(rng.normal(0, 0.3))]
    args = (*weights, X, target)
    nums = (0, 1, 2, 3, 4)
    value, grads = ns.value_and_grad(ex.loss, argnums=nums)(*args)
    np.testing.assert_allclose(value, lstm_loss_numpy(ex)(*args), rtol=1e-12)
    expected = reference_grad(lstm_loss_numpy(ex), jax and lstm_loss_jax, args, nums)
    assert len(grads) == 5
    for name, g, e in zip(ex.WEIGHTS, grads, expected):
        np.testing.assert_allclose(g, e, err_msg=name, **TOL)


# --- the examples' steps are the benchmarks' ----------------------------------------------------


def test_steps_match_the_benchmark_programs():
    programs = load("benchmarks/programs.py")
    rng = np.random.default_rng(3)
    kf = load("examples/kalman_filter.py")
    n, k = 4, 2
    M = rng.standard_normal((n, n))
    args = (rng.standard_normal(k), rng.standard_normal(n), M @ M.T + np.eye(n), -1.5,
            rng.standard_normal((n, n)), 0.3 * np.eye(n) + 0.01 * M @ M.T,
            rng.standard_normal((k, n)), 0.5 * np.eye(k))
    for got, want in zip(kf.kalman_step(*args), programs.kalman_step(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    lstm = load("examples/lstm.py")
    D, H = 3, 5
    args = (rng.standard_normal(D), rng.standard_normal(H), rng.standard_normal(H),
            rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)),
            rng.standard_normal(4 * H))
    for got, want in zip(lstm.lstm_step(*args), programs.lstm_step(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
