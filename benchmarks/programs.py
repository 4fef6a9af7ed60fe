"""The LSTM and Kalman filter programs shared by the benchmark scripts, written once.

``cpu.py`` times them in its own process (L1, L1G, KF1, KF1G) and copies their source into the
child scripts of its first-call probe (F1); ``compile_probe.py`` builds its LSTM from the same
step. The steps are plain NumPy functions of arrays; ``with_numpy(step, jax.numpy)`` is the same
function reading ``jnp`` for ``np`` (jax's peers). The python references (NumPy loops, the
LSTM's backpropagation through time, complex-step derivatives) are the figures every other peer
is checked against. ``examples/kalman_filter.py`` and ``examples/lstm.py`` define steps of their
own with the same arithmetic (a user reads an example alone); tests/test_examples_kalman_lstm.py
checks that they agree with these.
"""

from __future__ import annotations

import types
from typing import Mapping

import numpy as np


def with_numpy(fn, module):
    """``fn`` with its global name ``np`` bound to ``module`` (e.g. ``jax.numpy``)."""
    scope = {**fn.__globals__, "np": module}
    return types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)


# --- LSTM ------------------------------------------------------------------------------------
# z = x_t @ Wx + h @ Wh + b (Wx: D x 4H, Wh: H x 4H), cut into the gates i, f, o, g (in that
# order, H entries each); loss = sum of every h squared.


def lstm_step(x_t, h, c, Wx, Wh, b):
    n = h.shape[0]
    z = x_t @ Wx + h @ Wh + b
    i = 1 / (1 + np.exp(-z[:n]))
    f = 1 / (1 + np.exp(-z[n:2 * n]))
    o = 1 / (1 + np.exp(-z[2 * n:3 * n]))
    g = np.tanh(z[3 * n:])
    c = f * c + i * g
    h = o * np.tanh(c)
    return h, c


def lstm_states_python(Wx, Wh, b, X, h0, c0):
    """Every h, shape (T, H): the step in a Python loop."""
    hs = np.empty((X.shape[0], h0.shape[0]))
    h, c = h0, c0
    for t in range(X.shape[0]):
        h, c = lstm_step(X[t], h, c, Wx, Wh, b)
        hs[t] = h
    return hs


def lstm_grad_python(Wx, Wh, b, X, h0, c0):
    """d sum(hs ** 2) / d (Wx, Wh, b) by backpropagation through time."""
    return lstm_value_and_grad_python(Wx, Wh, b, X, h0, c0)[1]


def lstm_value_and_grad_python(Wx, Wh, b, X, h0, c0):
    """(sum(hs ** 2), its gradient w.r.t. (Wx, Wh, b)) by backpropagation through time."""
    T, n = X.shape[0], h0.shape[0]
    hs, cs, gates = np.empty((T, n)), np.empty((T, n)), np.empty((T, 4 * n))
    h, c = h0, c0
    for t in range(T):
        z = X[t] @ Wx + h @ Wh + b
        gates[t, :3 * n] = 1 / (1 + np.exp(-z[:3 * n]))
        gates[t, 3 * n:] = np.tanh(z[3 * n:])
        i, f, o, g = (gates[t, k * n:(k + 1) * n] for k in range(4))
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[t], cs[t] = h, c
    gWx, gWh, gb = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    gh, gc = np.zeros(n), np.zeros(n)  # from the steps after t
    for t in range(T - 1, -1, -1):
        i, f, o, g = (gates[t, k * n:(k + 1) * n] for k in range(4))
        h_prev, c_prev = (hs[t - 1], cs[t - 1]) if t else (h0, c0)
        tc = np.tanh(cs[t])
        gh = gh + 2 * hs[t]
        gc = gc + gh * o * (1 - tc * tc)
        gz = np.concatenate([gc * g * i * (1 - i), gc * c_prev * f * (1 - f),
                             gh * tc * o * (1 - o), gc * i * (1 - g * g)])
        gWx += np.outer(X[t], gz)
        gWh += np.outer(h_prev, gz)
        gb += gz
        gh, gc = Wh @ gz, gc * f
    return (hs ** 2).sum(), (gWx, gWh, gb)


def lstm_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    T, D, H = sizes["T"], sizes["D"], sizes["H"]
    return {
        "X": rng.standard_normal((T, D)),
        "Wx": rng.standard_normal((D, 4 * H)) / np.sqrt(D),
        "Wh": rng.standard_normal((H, 4 * H)) * (0.5 / np.sqrt(H)),
        "b": 0.1 * rng.standard_normal(4 * H),
        "h0": 0.1 * rng.standard_normal(H),
        "c0": 0.1 * rng.standard_normal(H),
    }


# --- Kalman filter ---------------------------------------------------------------------------
# x(t) = A x(t-1) + w, w ~ N(0, Q);  y(t) = C x(t) + v, v ~ N(0, R). The filter's state is the
# mean m and covariance P of x(t) given y(1..t), and the log-likelihood so far.


def kalman_step(y_t, m, P, ll, A, Q, C, R):
    """One predict-update step; ``ll`` accumulates the log-likelihood (without its constant)."""
    m_p = A @ m
    P_p = A @ P @ A.T + Q
    S = C @ P_p @ C.T + R
    v = y_t - C @ m_p
    K = np.linalg.solve(S, C @ P_p).T
    ll = ll - 0.5 * (v @ np.linalg.solve(S, v) + np.log(np.linalg.det(S)))
    return m_p + K @ v, P_p - K @ S @ K.T, ll


def kalman_loglik_python(A, Q, R, C, Y, m0, P0):
    """The log-likelihood of Y (without its constant): the step in a Python loop."""
    m, P, ll = m0, P0, 0.0
    for t in range(Y.shape[0]):
        m, P, ll = kalman_step(Y[t], m, P, ll, A, Q, C, R)
    return ll


def kalman_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    """A stable 4-state linear Gaussian model, 2 observed combinations, data simulated from it."""
    n, k, T = sizes["n"], sizes["k"], sizes["T"]
    A = 0.9 * np.eye(n) + 0.05 * rng.standard_normal((n, n))
    Q = 0.1 * np.eye(n)
    C = rng.standard_normal((k, n))
    R = 0.2 * np.eye(k)
    x, Y = np.zeros(n), np.empty((T, k))
    for t in range(T):
        x = A @ x + rng.multivariate_normal(np.zeros(n), Q)
        Y[t] = C @ x + rng.multivariate_normal(np.zeros(k), R)
    return {"A": A, "Q": Q, "R": R, "C": C, "Y": Y, "m0": np.zeros(n), "P0": np.eye(n)}


# --- derivatives of the references -----------------------------------------------------------


def complex_step(f, args, argnums, h=1e-30):
    """``d f / d args[i]`` for each ``i`` in ``argnums``, shaped ``f``'s output + the argument's:
    ``Im f(x + i h e_k) / h`` for every entry ``k``, exact to rounding for analytic ``f``."""
    out = []
    for i in argnums:
        x = np.asarray(args[i], dtype=np.float64)
        cols = []
        for k in range(x.size):
            e = np.zeros(x.size, dtype=np.complex128)
            e[k] = 1j * h
            a = list(args)
            a[i] = x + e.reshape(x.shape)
            cols.append(np.imag(f(*a)) / h)
        J = np.stack(cols, axis=-1)
        out.append(J.reshape(np.shape(cols[0]) + x.shape))
    return out
