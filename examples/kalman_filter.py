"""Fitting a tracking model's noise by maximum likelihood: a Kalman filter in a scan.

An object moves in the plane with a nearly constant velocity; its state is (x, y, vx, vy), and
only its position is observed, with noise, every DT seconds:

    state(t) = A state(t - 1) + w(t),   w ~ N(0, q Q1)   (random accelerations of intensity q)
    y(t)     = C state(t) + v(t),       v ~ N(0, r I)    (measurement noise of variance r)

The noise levels q and r are unknown. The Kalman filter gives the log-likelihood of the
observations for any (q, r): one predict-update step per observation, an ``ns.scan`` whose step
uses ``np.linalg.solve`` and ``np.linalg.det``. ``scipy.optimize.minimize(..., jac=True,
method="L-BFGS-B")`` maximises it over theta = (log q, log r), which keeps the variances
positive without constraints; ``ns.value_and_grad`` gives the negative log-likelihood and its
gradient in one call (the first call compiles, later calls reuse the program). The gradient is
checked once against central finite differences. Then the filter runs at the fitted noise
levels, step by step in NumPy (the same step function), and, when matplotlib is installed, the
true track, the observations and the filtered track (and each one's distance to the truth)
are drawn to kalman_filter.png.

    python examples/kalman_filter.py [--T 300] [--png kalman_filter.png]
"""
import argparse
import time

import numpy as np
from scipy.optimize import minimize

import numbascan as ns

DT = 1.0
A = np.array([[1.0, 0.0, DT, 0.0],
              [0.0, 1.0, 0.0, DT],
              [0.0, 0.0, 1.0, 0.0],
              [0.0, 0.0, 0.0, 1.0]])
C = np.array([[1.0, 0.0, 0.0, 0.0],
              [0.0, 1.0, 0.0, 0.0]])
# Covariance of the state change over DT under white-noise accelerations of unit intensity.
Q1 = np.kron(np.array([[DT ** 3 / 3, DT ** 2 / 2],
                       [DT ** 2 / 2, DT]]), np.eye(2))
THETA_TRUE = np.log([0.05, 4.0])   # log q, log r
M0 = np.array([0.0, 0.0, 1.0, 0.5])  # prior mean of the first state
P0 = np.diag([10.0, 10.0, 1.0, 1.0])  # and its covariance


def kalman_step(y_t, m, P, ll, A, Q, C, R):
    """One predict-update step; ``ll`` accumulates the log-likelihood (without its constant)."""
    m_p = A @ m
    P_p = A @ P @ A.T + Q
    S = C @ P_p @ C.T + R
    v = y_t - C @ m_p
    K = np.linalg.solve(S, C @ P_p).T
    ll = ll - 0.5 * (v @ np.linalg.solve(S, v) + np.log(np.linalg.det(S)))
    return m_p + K @ v, P_p - K @ S @ K.T, ll


def noise(theta):
    """The covariances (Q, R) of the parameters theta = (log q, log r)."""
    return np.exp(theta[0]) * Q1, np.exp(theta[1]) * np.eye(2)


def neg_loglik(theta, Y):
    """Minus the log-likelihood of the observations Y (T x 2) under theta."""
    Q, R = noise(theta)
    (_, _, lls), _ = ns.scan(kalman_step, sequences=Y, outputs_info=[M0, P0, np.zeros(())],
                             non_sequences=[A, Q, C, R])
    return 0.5 * Y.size * np.log(2 * np.pi) - lls[-1]


def simulate(T=300, theta=THETA_TRUE, seed=0):
    """(true states T x 4, observations T x 2) drawn from the model."""
    rng = np.random.default_rng(seed)
    Q, R = noise(theta)
    LQ, LR = np.linalg.cholesky(Q), np.linalg.cholesky(R)
    x = M0 + np.linalg.cholesky(P0) @ rng.standard_normal(4)
    states, Y = np.empty((T, 4)), np.empty((T, 2))
    for t in range(T):
        x = A @ x + LQ @ rng.standard_normal(4)
        states[t] = x
        Y[t] = C @ x + LR @ rng.standard_normal(2)
    return states, Y


def filtered(theta, Y):
    """The filtered means (T x 4) and the log-likelihood: the same step, run by NumPy."""
    Q, R = noise(theta)
    m, P, ll = M0, P0, 0.0
    means = np.empty((Y.shape[0], 4))
    for t in range(Y.shape[0]):
        m, P, ll = kalman_step(Y[t], m, P, ll, A, Q, C, R)
        means[t] = m
    return means, ll - 0.5 * Y.size * np.log(2 * np.pi)


def plot(path, states, Y, means):
    """Draw the true track, the observations and the filtered track; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(12, 5))
    ax.plot(Y[:, 0], Y[:, 1], ".", color="0.6", markersize=3, label="observations")
    ax.plot(states[:, 0], states[:, 1], "-", color="black", linewidth=1.5, label="truth")
    ax.plot(means[:, 0], means[:, 1], "-", color="tab:blue", linewidth=1.2,
            label="filtered (fitted noise)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title("constant-velocity track")
    ax.legend()
    t = np.arange(1, len(Y) + 1)
    ax_err.plot(t, np.linalg.norm(Y - states[:, :2], axis=1), ".", color="0.6", markersize=3,
                label="observation")
    ax_err.plot(t, np.linalg.norm(means[:, :2] - states[:, :2], axis=1), "-", color="tab:blue",
                linewidth=1, label="filtered")
    ax_err.set_xlabel("step")
    ax_err.set_ylabel("distance to the true position")
    ax_err.set_title("position error")
    ax_err.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(T=300, maxiter=100, png="kalman_filter.png", verbose=True, seed=0):
    """Simulate, fit (log q, log r) by maximum likelihood, filter and draw.

    Returns a dict: theta_true, theta0, theta_fit, loglik_true, loglik_fit (log-likelihoods of
    the data at the true and fitted parameters), fd_max_rel_err (the gradient against finite
    differences), rmse_observed / rmse_filtered (position errors against the truth), iterations.
    """
    states, Y = simulate(T, seed=seed)
    value_and_grad = ns.value_and_grad(neg_loglik)  # d / d theta (argument 0)

    def fun(theta):
        value, grad = value_and_grad(theta, Y)
        return float(value), np.asarray(grad, dtype=np.float64)

    theta0 = np.log([1.0, 1.0])
    t0 = time.perf_counter()
    f0, g0 = fun(theta0)  # the first call traces and compiles
    compile_s = time.perf_counter() - t0
    eps = 1e-5
    fd = np.array([(fun(theta0 + eps * e)[0] - fun(theta0 - eps * e)[0]) / (2 * eps)
                   for e in np.eye(2)])
    fd_err = np.max(np.abs(g0 - fd) / np.maximum(np.abs(fd), 1e-12))

    t0 = time.perf_counter()
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", options=dict(maxiter=maxiter))
    fit_s = time.perf_counter() - t0
    means, loglik_fit = filtered(res.x, Y)
    loglik_true = filtered(THETA_TRUE, Y)[1]
    rmse_obs = np.sqrt(np.mean(np.sum((Y - states[:, :2]) ** 2, axis=1)))
    rmse_filt = np.sqrt(np.mean(np.sum((means[:, :2] - states[:, :2]) ** 2, axis=1)))
    drawn = plot(png, states, Y, means) if png else False

    if verbose:
        print(f"T = {T} observations of a constant-velocity track; fit theta = (log q, log r)")
        print(f"first loss-and-gradient call (compiles) {compile_s:.2f} s; gradient against "
              f"central differences: max relative error {fd_err:.1e}")
        print(f"L-BFGS-B: {res.nit} iterations, {res.nfev} calls in {fit_s:.2f} s "
              f"({res.message})\n")
        print("parameter            true     start    fitted")
        for name, t, s, r in zip(["q (process)", "r (measurement)"], np.exp(THETA_TRUE),
                                 np.exp(theta0), np.exp(res.x)):
            print(f"  {name:16s} {t:8.4f}  {s:8.4f}  {r:8.4f}")
        print(f"\nlog-likelihood: {loglik_fit:.3f} at the fit, {loglik_true:.3f} at the true "
              f"parameters, {-f0:.3f} at the start")
        print(f"position error (RMS): observations {rmse_obs:.3f}, filtered {rmse_filt:.3f}")
        if png:
            print(f"track drawn to {png}" if drawn else
                  "matplotlib is not installed, so no picture was drawn")
    return dict(theta_true=THETA_TRUE.copy(), theta0=theta0, theta_fit=res.x,
                loglik_true=loglik_true, loglik_fit=loglik_fit, fd_max_rel_err=fd_err,
                rmse_observed=rmse_obs, rmse_filtered=rmse_filt, iterations=res.nit)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=300, help="number of observations")
    ap.add_argument("--png", default="kalman_filter.png",
                    help="where to draw the tracks (default: ./kalman_filter.png)")
    a = ap.parse_args()
    main(T=a.T, png=a.png)
