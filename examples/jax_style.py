"""A JAX-style program on numbascan: a damped pendulum written with numbascan.lax.

The pendulum's state is a tuple carry (angle, angular velocity) integrated with RK4:

  1. `nlax.scan` over time, returning the trajectory (`ys`, a dict) and the final carry;
  2. `ns.value_and_grad` of the final energy with respect to the initial angle and the damping,
     checked against central finite differences;
  3. `nlax.fori_loop` with a traced number of steps inside `ns.jit` (one compile for every
     horizon, and reverse-differentiable, which JAX's fori_loop with traced bounds is not), and
     `nlax.while_loop` to find when the pendulum first swings through the bottom.

    python examples/jax_style.py
"""

import numpy as np

import numbascan as ns
import numbascan.lax as nlax

DT = 0.05          # time step (s)
STEPS = 200        # 10 s
G = 9.81           # gravity over length (1/s^2)


def rhs(state, damping):
    theta, omega = state
    return omega, -G * np.sin(theta) - damping * omega


def rk4(state, damping):
    def moved(k, h):
        return tuple(s + h * d for s, d in zip(state, k))
    k1 = rhs(state, damping)
    k2 = rhs(moved(k1, DT / 2), damping)
    k3 = rhs(moved(k2, DT / 2), damping)
    k4 = rhs(moved(k3, DT), damping)
    return tuple(s + DT / 6 * (a + 2 * b + 2 * c + d)
                 for s, a, b, c, d in zip(state, k1, k2, k3, k4))


def energy(state):
    theta, omega = state
    return 0.5 * omega ** 2 + G * (1.0 - np.cos(theta))


def simulate(theta0, damping):
    """((final state, time), {"theta": ..., "energy": ...}) over STEPS steps."""
    def step(carry, _):
        state, t = carry
        state = rk4(state, damping)
        return (state, t + DT), {"theta": state[0], "energy": energy(state)}
    return nlax.scan(step, ((theta0, np.zeros_like(theta0)), 0.0), length=STEPS)


def final_energy(theta0, damping):
    (state, _), _ = simulate(theta0, damping)
    return energy(state)


@ns.jit
def energy_after(theta0, damping, n):
    """The energy after n steps (n an array: a run-time trip count, no recompile per n)."""
    state = nlax.fori_loop(0, n, lambda i, s: rk4(s, damping), (theta0, np.zeros_like(theta0)))
    return energy(state)


def first_swing(theta0, damping):
    """The time at which the angle first becomes negative (a while_loop)."""
    def still_positive(carry):
        (theta, _), _ = carry
        return theta > 0.0
    def advance(carry):
        state, t = carry
        return rk4(state, damping), t + DT
    (_, _), t = nlax.while_loop(still_positive, advance,
                                ((theta0, np.zeros_like(theta0)), np.array(0.0)))
    return t


def main():
    theta0, damping = np.array(1.0), np.array(0.3)

    (state, t), ys = simulate(theta0, damping)
    print(f"1. after {t:.2f} s: angle {state[0]:+.6f} rad, velocity {state[1]:+.6f} rad/s")
    for k in (0, 49, 99, 199):
        print(f"   t = {(k + 1) * DT:5.2f} s  angle {ys['theta'][k]:+.5f}  "
              f"energy {ys['energy'][k]:.5f}")

    value, (d_theta0, d_damping) = ns.value_and_grad(final_energy, argnums=(0, 1))(
        theta0, damping)
    eps = 1e-6
    fd_theta0 = (final_energy(theta0 + eps, damping) -
                 final_energy(theta0 - eps, damping)) / (2 * eps)
    fd_damping = (final_energy(theta0, damping + eps) -
                  final_energy(theta0, damping - eps)) / (2 * eps)
    print(f"2. final energy {float(value):.8f}")
    print(f"   d/d theta0  {float(d_theta0):+.8f}  (finite differences {fd_theta0:+.8f})")
    print(f"   d/d damping {float(d_damping):+.8f}  (finite differences {fd_damping:+.8f})")
    assert np.isclose(d_theta0, fd_theta0, rtol=1e-5) and np.isclose(d_damping, fd_damping,
                                                                      rtol=1e-5)

    grad_after = ns.grad(energy_after, argnums=1)
    print("3. energy after n steps, and its derivative in the damping (fori_loop, traced n):")
    for n in (20, 100, 200):
        e = energy_after(theta0, damping, np.array(n))
        print(f"   n = {n:3d}: energy {float(e):.6f}, d/d damping "
              f"{float(grad_after(theta0, damping, np.array(n))):+.6f}")
    assert np.isclose(energy_after(theta0, damping, np.array(STEPS)), value)
    t_swing = first_swing(theta0, damping)
    print(f"   first swing through the bottom (while_loop): t = {float(t_swing):.2f} s")


if __name__ == "__main__":
    main()
