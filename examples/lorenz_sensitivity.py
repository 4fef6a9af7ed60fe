"""Sensitivity of the Lorenz system to its initial state, by forward and reverse mode.

The Lorenz system

    dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z

(sigma = 10, rho = 28, beta = 8/3) is integrated with the classical fixed-step Runge-Kutta
method (RK4) as an ``ns.scan`` over time steps. The Jacobian of the final state with respect to
the initial state, d x(T) / d x(0), is computed twice, with ``ns.jacobian(..., mode="fwd")``
(three tangents carried alongside the loop) and ``mode="rev"`` (three backward loops over the
tape of one forward loop), and compared with central finite differences. Its singular values
measure how much a small error in the initial state is stretched: on the chaotic attractor the
largest one grows like exp(lambda t), with the largest Lyapunov exponent lambda ~ 0.9. The
growth is read off the Jacobian of the whole trajectory, ``ns.jacfwd`` of the scan's states.

    python examples/lorenz_sensitivity.py
"""
import time

import numpy as np

import numbascan as ns

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


def lorenz(s):
    """The vector field at state s = (x, y, z)."""
    x, y, z = s[0], s[1], s[2]
    return np.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z])


def rk4_step(s, dt):
    """One step of the classical fourth-order Runge-Kutta method."""
    k1 = lorenz(s)
    k2 = lorenz(s + 0.5 * dt * k1)
    k3 = lorenz(s + 0.5 * dt * k2)
    k4 = lorenz(s + dt * k3)
    return s + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def make_flow(n_steps, dt):
    """(trajectory, final_state): functions of the initial state s0."""

    def trajectory(s0):
        """The states after 1, 2, ..., n_steps steps, shape (n_steps, 3)."""
        states, _ = ns.scan(rk4_step, outputs_info=s0, non_sequences=dt, n_steps=n_steps)
        return states

    def final_state(s0):
        return trajectory(s0)[-1]

    return trajectory, final_state


def finite_differences(f, x, eps=1e-6):
    """Central differences, one column per input coordinate."""
    cols = [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)]
    return np.stack(cols, axis=-1)


def main(t_final=2.0, t_growth=20.0, dt=0.01, burn_in=500, verbose=True):
    """Jacobian of the state at t_final; growth of perturbations up to t_growth.

    Returns (J_fwd, J_rev, J_fd, singular values of J_fwd, times, largest singular value of
    d x(t) / d x(0) at each of those times).
    """
    n_steps = int(round(t_final / dt))
    n_growth = int(round(t_growth / dt))

    # Start on the attractor: run a burn-in from (1, 1, 1) and keep its last state.
    traj_burn, _ = make_flow(burn_in, dt)
    s0 = traj_burn(np.ones(3))[-1]

    trajectory, final_state = make_flow(n_steps, dt)
    timings = {}
    t0 = time.perf_counter()
    J_fwd = ns.jacobian(final_state, mode="fwd")(s0)
    timings["fwd"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    J_rev = ns.jacobian(final_state, mode="rev")(s0)
    timings["rev"] = time.perf_counter() - t0
    J_fd = finite_differences(final_state, s0)

    # The Jacobian at every step at once: forward mode over the whole trajectory.
    long_trajectory, _ = make_flow(n_growth, dt)
    J_t = ns.jacfwd(long_trajectory)(s0)                 # (n_growth, 3, 3)
    times = dt * np.arange(1, n_growth + 1)
    growth = np.linalg.svd(J_t, compute_uv=False)[:, 0]  # largest singular value at each step
    k_half = int(round(0.5 / dt)) - 1                   # the step at t = 0.5
    sv = np.linalg.svd(J_fwd, compute_uv=False)

    if verbose:
        with np.printoptions(precision=6, suppress=True):
            print(f"RK4, dt = {dt}, {n_steps} steps (t = {n_steps * dt:g}), "
                  f"from s0 = {s0} on the attractor\n")
            print(f"d x(T) / d x(0), forward mode ({timings['fwd']:.2f} s, "
                  "incl. compiling or loading the cache):")
            print(J_fwd)
            print(f"reverse mode ({timings['rev']:.2f} s, incl. compiling or loading the cache):")
            print(J_rev)
            print("central finite differences (eps = 1e-6):")
            print(J_fd)
            scale = np.abs(J_fd).max()
            print(f"max |fwd - rev| = {np.abs(J_fwd - J_rev).max():.2e}, "
                  f"max |fwd - fd| / max |J| = {np.abs(J_fwd - J_fd).max() / scale:.2e}\n")
            print("singular values of d x(T) / d x(0): " + ", ".join(f"{v:.6g}" for v in sv))
            print(f"the flow contracts volume: at t = {times[k_half]:g}, |det d x(t) / d x(0)| = "
                  f"{abs(np.linalg.det(J_t[k_half])):.6g}, exp(-(sigma + 1 + beta) t) = "
                  f"{np.exp(-(SIGMA + 1 + BETA) * times[k_half]):.6g}\n")
            print("growth of a small perturbation (largest singular value of d x(t) / d x(0));")
            print("log(sigma_max) / t tends to the largest Lyapunov exponent, about 0.9:")
            print("     t    sigma_max   log(sigma_max) / t")
            for k in range(n_growth // 10 - 1, n_growth, n_growth // 10):
                print(f"  {times[k]:5.1f}  {growth[k]:10.4g}   {np.log(growth[k]) / times[k]:8.3f}")
    return J_fwd, J_rev, J_fd, sv, times, growth


if __name__ == "__main__":
    main()
