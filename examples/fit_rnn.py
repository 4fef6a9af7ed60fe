"""Fitting the parameters of a small recurrence with L-BFGS and reverse-mode gradients.

A two-unit recurrent cell driven by a scalar input x(t),

    h(t) = tanh(h(t - 1) @ W + x(t) * u + b),

generates a synthetic sequence from known parameters (W is 2x2, u and b have 2 entries: 8
numbers in all). Starting from a guess, ``scipy.optimize.minimize`` with L-BFGS-B recovers them
by minimising the mean squared error between the scan's states and the observed sequence. The
loss runs ``ns.scan``; ``ns.value_and_grad`` gives the loss and its gradient with respect to the
parameter vector in one call (a forward loop that records a tape, then a compiled backward
loop). The first call compiles; later calls reuse the compiled program.

    python examples/fit_rnn.py
"""
import time

import numpy as np
from scipy.optimize import minimize

import numbascan as ns

PARAM_NAMES = ["W00", "W01", "W10", "W11", "u0", "u1", "b0", "b1"]
THETA_TRUE = np.array([0.5, -0.6, 0.7, 0.3, 1.0, -0.8, 0.1, -0.2])


def unpack(theta):
    """The cell's parameters from the flat vector the optimiser works on."""
    return theta[:4].reshape(2, 2), theta[4:6], theta[6:8]


def states(theta, X, h0):
    """Every state h(1), ..., h(T) of the cell, shape (T, 2)."""
    W, u, b = unpack(theta)

    def step(x_t, h_tm1):
        return np.tanh(h_tm1 @ W + x_t * u + b)

    hs, _ = ns.scan(step, sequences=X, outputs_info=h0)
    return hs


def loss(theta, X, h0, target):
    """Mean squared error between the cell's states and the observed sequence."""
    return np.mean((states(theta, X, h0) - target) ** 2)


def make_data(T=400, noise=0.0, seed=0):
    """A random input sequence and the states the true parameters give (plus optional noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(T)
    h0 = np.zeros(2)
    target = states(THETA_TRUE, X, h0)
    if noise:
        target = target + noise * rng.standard_normal(target.shape)
    return X, h0, target


def main(T=400, maxiter=200, noise=0.0, verbose=True, every=5):
    """Fit the cell to synthetic data.

    Returns (initial loss, final loss, recovered parameters, true parameters, iterations).
    """
    X, h0, target = make_data(T, noise)
    value_and_grad = ns.value_and_grad(loss)  # d loss / d theta (argument 0)

    def fun(theta):
        value, grad = value_and_grad(theta, X, h0, target)
        return float(value), np.asarray(grad, dtype=np.float64)

    theta0 = np.full(8, 0.1)
    t0 = time.perf_counter()
    loss0 = fun(theta0)[0]  # the first call traces and compiles
    compile_s = time.perf_counter() - t0
    history = [loss0]

    def callback(intermediate_result):
        history.append(intermediate_result.fun)
        if verbose and len(history) % every == 1:
            print(f"  iteration {len(history) - 1:4d}   loss {intermediate_result.fun:.3e}")

    if verbose:
        print(f"T = {T} steps, {len(theta0)} parameters")
        print(f"  iteration    0   loss {loss0:.3e}")
    t0 = time.perf_counter()
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", callback=callback,
                   options=dict(maxiter=maxiter, ftol=1e-15, gtol=1e-12))
    elapsed = time.perf_counter() - t0
    final = float(res.fun)
    if verbose:
        print(f"stopped after {res.nit} iterations: {res.message}")
        print(f"first loss-and-gradient call (compiles) {compile_s:.2f} s; "
              f"{res.nfev} more calls in {elapsed:.2f} s\n")
        print("parameter   true    recovered")
        for name, t, r in zip(PARAM_NAMES, THETA_TRUE, res.x):
            print(f"  {name:6s} {t:8.4f} {r:10.6f}")
        print(f"\nloss went from {loss0:.3e} to {final:.3e} "
              f"(a factor of {loss0 / max(final, 1e-300):.1e})")
    return loss0, final, res.x, THETA_TRUE.copy(), res.nit


if __name__ == "__main__":
    main()
