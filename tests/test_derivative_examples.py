"""The derivative examples (examples/fit_rnn.py, examples/lorenz_sensitivity.py) at small sizes."""
import functools
import importlib.util
import pathlib

import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@functools.cache
def example(name):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"derivative_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_rnn_recovers_parameters():
    loss0, final, theta, theta_true, nit = example("fit_rnn").main(T=200, verbose=False)
    assert np.isfinite(final)
    assert loss0 > 0.1
    assert final < 1e-8 * loss0, (loss0, final, nit)
    np.testing.assert_allclose(theta, theta_true, atol=1e-4)


def test_fit_rnn_gradient_matches_finite_differences():
    ex = example("fit_rnn")
    import numbascan as ns

    X, h0, target = ex.make_data(T=50, seed=1)
    theta = np.linspace(-0.5, 0.5, 8)
    value, grad = ns.value_and_grad(ex.loss)(theta, X, h0, target)
    np.testing.assert_allclose(value, ex.loss(theta, X, h0, target), rtol=1e-12)
    eps = 1e-6
    fd = np.array([(ex.loss(theta + eps * e, X, h0, target) -
                    ex.loss(theta - eps * e, X, h0, target)) / (2 * eps) for e in np.eye(8)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9)


def test_lorenz_jacobian():
    dt, t_final = 0.01, 1.0
    J_fwd, J_rev, J_fd, sv, times, growth = example("lorenz_sensitivity").main(
        t_final=t_final, t_growth=2.0, dt=dt, burn_in=100, verbose=False)
    assert J_fwd.shape == J_rev.shape == (3, 3)
    np.testing.assert_allclose(J_fwd, J_rev, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(J_fwd, J_fd, rtol=1e-5, atol=1e-7 * np.abs(J_fd).max())
    # The Jacobian of the whole trajectory, at the step of t_final, is the same matrix.
    n_steps = int(round(t_final / dt))
    assert times.shape == growth.shape == (200,)
    np.testing.assert_allclose(growth[n_steps - 1], sv[0], rtol=1e-10)
    # The flow contracts volume: |det J| = exp(-(sigma + 1 + beta) t) up to the RK4 error.
    np.testing.assert_allclose(abs(np.linalg.det(J_fwd)), np.exp(-(10 + 1 + 8 / 3) * t_final),
                               rtol=1e-3)
