"""Linear algebra in traced code (SPEC section 8): `np.linalg.solve inv det slogdet cholesky`,
`scipy.linalg.solve_triangular` and `cho_solve`, forward and differentiated.

Forward: inside a scan step, compiled ("cpu") against the reference mode ("python") and a NumPy
loop written out by hand; inside `ns.jit`; on the CUDA simulator for one small case. Small
matrices (n <= 10) run loop code, n = 12 numba's LAPACK (the two paths of
codegen/linalg.py). Derivatives: `ns.grad` of a scalar loss through a scan and `ns.jvp`, against
JAX in float64 when it is installed, else against central finite differences of the NumPy
loop; second order in python mode (gradcheck.py). A Kalman filter's log-likelihood (state 4,
observations 2, T = 20) and its gradient with respect to the noise parameters.

Inputs are fresh random well-conditioned matrices, A = M M^T + n I. Each numba compilation
costs about a second here, so each test puts several functions into one step.
"""
import io

import numpy as np
import pytest
import scipy.linalg as sla

import numbascan as ns
from conftest import assert_close, run_both
from gradcheck import check_grads

try:
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl
    jax.config.update("jax_enable_x64", True)
except ImportError:              # CI: finite differences instead
    jax = None


@pytest.fixture
def mode(request, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", request.param)
    return request.param


def spd(rng, n, lead=()):
    """Well-conditioned symmetric positive definite matrices M M^T + n I."""
    m = rng.standard_normal(lead + (n, n))
    return m @ np.swapaxes(m, -1, -2) + n * np.eye(n)


def make_step(xp, sl, n):
    """One step using every function, written for NumPy/SciPy (xp=np, sl=scipy.linalg) or
    for JAX: (M, b) -> a tuple of results, A = M M^T + n I."""
    def step(M, b):
        A = M @ M.T + n * xp.eye(n)
        B = xp.stack([b, 2.0 * b - 1.0], axis=1)
        L = xp.linalg.cholesky(A)
        sign, logabsdet = xp.linalg.slogdet(A + M)
        return (xp.linalg.solve(A, b), xp.linalg.solve(A + M, B), xp.linalg.inv(A + M),
                xp.linalg.det(A + M), sign * logabsdet, L,
                sl.solve_triangular(L, b, lower=True),
                sl.solve_triangular(L, B, lower=True, trans=1),
                sl.solve_triangular(L.T, b, lower=False, trans="T"),
                sl.solve_triangular(L.T, B),
                sl.cho_solve((L, True), b), sl.cho_solve((L.T, False), B))
    return step


def numpy_loop(step, *seqs):
    rows = [step(*xs) for xs in zip(*seqs)]
    return [np.stack(col) for col in zip(*rows)]


@pytest.mark.parametrize("n", [3, 12])
def test_scan_forward(rng, n):
    """Every function in one step: n = 3 as loop code, n = 12 through LAPACK."""
    T = 4
    Ms, bs = rng.standard_normal((T, n, n)), rng.standard_normal((T, n))
    step = make_step(np, sla, n)
    out, _ = run_both(step, sequences=[Ms, bs])
    for k, (got, expected) in enumerate(zip(out, numpy_loop(step, Ms, bs))):
        assert_close(got, expected, f"output {k}", rtol=1e-10, atol=1e-12)


def test_jit_and_generated_code(rng):
    """Inside ns.jit; a small matrix is loop code, never a LAPACK call; float32 stays float32."""
    n = 4
    A, b = spd(rng, n), rng.standard_normal(n)

    def f(A, b):
        L = np.linalg.cholesky(A)
        sign, logabsdet = np.linalg.slogdet(A)
        return (np.linalg.solve(A, b), np.linalg.inv(A), np.linalg.det(A), sign, logabsdet,
                sla.cho_solve((L, True), b))

    jf = ns.jit(f)
    for got, expected in zip(jf(A, b), f(A, b)):
        assert_close(got, expected, rtol=1e-11, atol=1e-13)
    source = ns.show(jf, A, b, file=io.StringIO())
    assert "lu_solve_nb(" in source and "np.linalg" not in source
    for got, expected in zip(jf(A.astype(np.float32), b.astype(np.float32)), f(A, b)):
        assert got.dtype == np.float32
        assert_close(got, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# derivatives


def reference_grad(loss_np, loss_jax, args, argnums):
    """d loss / d args[argnums]: JAX's when it is installed, else central differences of
    fourth order (error h^4: the losses have large higher derivatives)."""
    if jax is not None:
        return jax.grad(loss_jax, argnums=argnums)(*args)
    h, weights = 1e-4, {2: -1.0, 1: 8.0, -1: -8.0, -2: 1.0}
    grads = []
    for i in argnums:
        g = np.zeros_like(args[i])
        for index in np.ndindex(*args[i].shape):
            for step, w in weights.items():
                a = [np.array(x, copy=True) for x in args]
                a[i][index] += step * h
                g[index] += w * loss_np(*a) / (12 * h)
        grads.append(g)
    return tuple(grads)


def _sum_of_squares(results, xp):
    return sum(xp.sum(r * r) for r in results)


GROUPS = {   # the step's results each loss sums: the LU functions, the triangular ones
    "lu": slice(0, 5),
    "triangular": slice(5, 12),
}


@pytest.mark.parametrize("mode", ["cpu", "python"], indirect=True)
@pytest.mark.parametrize("group", list(GROUPS))
def test_grad_through_scan(rng, mode, group):
    n, T = 3, 3
    Ms, bs = rng.standard_normal((T, n, n)), rng.standard_normal((T, n))
    pick = GROUPS[group]
    step_np = make_step(np, sla, n)

    def step(M, b, total):
        return total + _sum_of_squares(step_np(M, b)[pick], np)

    def loss(Ms, bs):
        out, _ = ns.scan(step, sequences=[Ms, bs], outputs_info=np.zeros(()))
        return out[-1]

    def loss_loop(xp, sl):
        s = make_step(xp, sl, n)
        return lambda Ms, bs: sum(_sum_of_squares(s(Ms[t], bs[t])[pick], xp) for t in range(T))

    got = ns.grad(loss, argnums=(0, 1))(Ms, bs)
    expected = reference_grad(loss_loop(np, sla), jax and loss_loop(jnp, jsl), [Ms, bs], (0, 1))
    tol = dict(rtol=1e-9, atol=1e-10) if jax is not None else dict(rtol=1e-5, atol=1e-6)
    for g, e in zip(got, expected):
        assert_close(g, np.asarray(e), **tol)


def test_jvp(rng):
    """Forward mode, compiled: every function's tangent at once (the step of make_step)."""
    n = 3
    M, b = rng.standard_normal((n, n)), rng.standard_normal(n)
    dM, db = rng.standard_normal((n, n)), rng.standard_normal(n)
    step = make_step(np, sla, n)
    out, tangents = ns.jvp(lambda M, b: step(M, b), [M, b], [dM, db])
    if jax is not None:
        ref, ref_t = jax.jvp(make_step(jnp, jsl, n), (M, b), (dM, db))
        tol = dict(rtol=1e-9, atol=1e-10)
    else:
        h = 1e-6
        ref = step(M, b)
        plus, minus = step(M + h * dM, b + h * db), step(M - h * dM, b - h * db)
        ref_t = [(p - m) / (2 * h) for p, m in zip(plus, minus)]
        tol = dict(rtol=1e-5, atol=1e-6)
    for k, (o, r, t, rt) in enumerate(zip(out, ref, tangents, ref_t)):
        assert_close(o, np.asarray(r), f"output {k}", rtol=1e-11, atol=1e-12)
        assert_close(t, np.asarray(rt), f"tangent {k}", **tol)


def test_grad_large_matrix(rng, monkeypatch):
    """n = 12: the LAPACK path of solve, slogdet and cholesky, and its derivatives."""
    monkeypatch.setenv("NUMBASCAN_MODE", "cpu")
    n, T = 12, 2
    Ms, bs = rng.standard_normal((T, n, n)), rng.standard_normal((T, n))

    def terms(xp, sl, M, b):
        A = M @ M.T + n * xp.eye(n)
        L = xp.linalg.cholesky(A)
        return (xp.sum(xp.linalg.solve(A + M, b) ** 2) + xp.linalg.slogdet(A + M)[1] +
                xp.sum(sl.cho_solve((L, True), b) * b) + xp.sum(L))

    def step(M, b, total):
        return total + terms(np, sla, M, b)

    def loss(Ms, bs):
        out, _ = ns.scan(step, sequences=[Ms, bs], outputs_info=np.zeros(()))
        return out[-1]

    def loss_loop(xp, sl):
        return lambda Ms, bs: sum(terms(xp, sl, Ms[t], bs[t]) for t in range(T))

    got = ns.grad(loss, argnums=(0, 1))(Ms, bs)
    expected = reference_grad(loss_loop(np, sla), jax and loss_loop(jnp, jsl), [Ms, bs], (0, 1))
    tol = dict(rtol=1e-8, atol=1e-10) if jax is not None else dict(rtol=1e-5, atol=1e-6)
    for g, e in zip(got, expected):
        assert_close(g, np.asarray(e), **tol)


SECOND_ORDER = {   # name -> function of (M, b), A = M M^T + 3 I
    "solve": lambda A, M, b: np.linalg.solve(A + M, b),
    "solve_matrix": lambda A, M, b: np.linalg.solve(A, np.outer(b, b) + M),
    "inv": lambda A, M, b: np.linalg.inv(A + M),
    "det": lambda A, M, b: np.linalg.det(A + M),
    "slogdet": lambda A, M, b: np.linalg.slogdet(A + M)[1],
    "cholesky": lambda A, M, b: np.linalg.cholesky(A),
    "cholesky_upper": lambda A, M, b: np.linalg.cholesky(A + np.outer(b, b), upper=True),
    "solve_triangular": lambda A, M, b: sla.solve_triangular(A + M, b, lower=True),
    "solve_triangular_T": lambda A, M, b: sla.solve_triangular(A + M, np.outer(b, b), trans=1),
    "cho_solve": lambda A, M, b: sla.cho_solve((np.linalg.cholesky(A), True), b),
}


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_second_order_python_mode(rng, monkeypatch, name):
    """Forward and reverse mode to second order, interpreted, against finite differences."""
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    fn = SECOND_ORDER[name]
    M, b = rng.standard_normal((3, 3)), rng.standard_normal(3)
    check_grads(lambda M, b: fn(M @ M.T + 3 * np.eye(3), M, b), [M, b], order=2,
                rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# a Kalman filter


def kalman_step(xp, sl):
    """One step of a Kalman filter: (y, mean, cov, log q, log r) -> (mean, cov, log-lik)."""
    def step(y, m, P, F, H, log_q, log_r):
        m_pred = F @ m
        P_pred = F @ P @ F.T + xp.exp(log_q) * xp.eye(F.shape[0])
        S = H @ P_pred @ H.T + xp.exp(log_r) * xp.eye(H.shape[0])
        v = y - H @ m_pred
        K = xp.linalg.solve(S, H @ P_pred).T
        L = xp.linalg.cholesky(S)
        ll = -0.5 * (v @ sl.cho_solve((L, True), v) + xp.linalg.slogdet(S)[1] +
                     H.shape[0] * np.log(2 * np.pi))
        return m_pred + K @ v, P_pred - K @ S @ K.T, ll
    return step


def test_kalman_filter(rng, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", "cpu")
    T, nx, ny = 20, 4, 2
    F = np.eye(nx) + 0.1 * rng.standard_normal((nx, nx))
    H = rng.standard_normal((ny, nx))
    ys = rng.standard_normal((T, ny))
    m0, P0 = np.zeros(nx), np.eye(nx)
    log_q, log_r = np.asarray(-1.0 + 0.2 * rng.standard_normal()), np.asarray(-0.5)
    step = kalman_step(np, sla)

    def scan_step(y, m, P, log_q, log_r):
        return step(y, m, P, F, H, log_q, log_r)

    kwargs = dict(sequences=ys, outputs_info=[m0, P0, None], non_sequences=[log_q, log_r])
    (means, covs, lls), _ = run_both(scan_step, **kwargs)

    def loglik_loop(xp, sl):
        s = kalman_step(xp, sl)

        def loglik(log_q, log_r):
            m, P, total = m0, P0, 0.0
            for t in range(T):
                m, P, ll = s(ys[t], m, P, F, H, log_q, log_r)
                total = total + ll
            return total
        return loglik

    assert_close(lls.sum(), loglik_loop(np, sla)(log_q, log_r), rtol=1e-11)

    def loglik(log_q, log_r):
        (_, _, lls), _ = ns.scan(scan_step, sequences=ys, outputs_info=[m0, P0, None],
                                 non_sequences=[log_q, log_r])
        return lls.sum()

    got = ns.grad(loglik, argnums=(0, 1))(log_q, log_r)
    expected = reference_grad(loglik_loop(np, sla), jax and loglik_loop(jnp, jsl),
                              [log_q, log_r], (0, 1))
    tol = dict(rtol=1e-9, atol=1e-10) if jax is not None else dict(rtol=1e-5, atol=1e-7)
    for g, e in zip(got, expected):
        assert_close(g, np.asarray(e), **tol)


# ------------------------------------------------------------------------------------------------
# CUDA (the simulator) and errors


def test_cuda_small(rng, kernel_patterns):
    """n = 5: a block of lanes shares the step; lane 0 solves, every lane its own slogdet."""
    n, T = 5, 2
    Ms, bs = rng.standard_normal((T, n, n)), rng.standard_normal((T, n))

    def step(M, b):
        A = M @ M.T + n * np.eye(n)
        L = np.linalg.cholesky(A)
        return (np.linalg.solve(A + M, b), np.linalg.slogdet(A + M)[1] * b,
                sla.cho_solve((L, True), b), sla.solve_triangular(L, b, lower=True, trans=1))

    got, _ = ns.scan(step, sequences=[Ms, bs], mode="cuda")
    expected, _ = ns.scan(step, sequences=[Ms, bs], mode="python")
    assert kernel_patterns and kernel_patterns[0].lanes > 1
    for g, e in zip(got, expected):
        assert_close(g, e, rtol=1e-12, atol=1e-13)


def test_cuda_grad(rng):
    """The derivative's scans run as kernels too (n = 3: one thread per step)."""
    n = 3
    Ms, bs = rng.standard_normal((2, n, n)), rng.standard_normal((2, n))

    def loss(mode):
        def step(M, b, total):
            A = M @ M.T + n * np.eye(n)
            L = np.linalg.cholesky(A)
            return total + (np.sum(np.linalg.solve(A + M, b) ** 2) + np.linalg.slogdet(A + M)[1]
                            + np.sum(sla.cho_solve((L, True), b)))

        def f(Ms, bs):
            out, _ = ns.scan(step, sequences=[Ms, bs], outputs_info=np.zeros(()), mode=mode)
            return out[-1]
        return ns.grad(f, argnums=(0, 1))(Ms, bs)

    for got, expected in zip(loss("cuda"), loss("python")):
        assert_close(got, expected, rtol=1e-11, atol=1e-13)


def test_cuda_large_matrix_is_an_error(rng):
    n = 12
    with pytest.raises(NotImplementedError, match=r"np.linalg.solve.*12 x 12.*at most 10"):
        ns.scan(lambda M: np.linalg.solve(M @ M.T + n * np.eye(n), M[0]),
                sequences=[rng.standard_normal((2, n, n))], mode="cuda")


def test_singular_matrix(monkeypatch):
    """python mode raises NumPy's LinAlgError; compiled loop code gives inf/nan (documented)."""
    A, b = np.array([[1.0, 2.0], [2.0, 4.0]]), np.ones(2)
    f = ns.jit(lambda A, b: (np.linalg.solve(A, b), np.linalg.slogdet(A)))
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    with pytest.raises(np.linalg.LinAlgError):
        f(A, b)
    monkeypatch.setenv("NUMBASCAN_MODE", "cpu")
    x, (sign, logabsdet) = f(A, b)
    assert not np.all(np.isfinite(x))
    assert sign == 0.0 and logabsdet == -np.inf


@pytest.mark.parametrize("call, error, match", [
    (lambda A, b: np.linalg.solve(np.stack([A, A]), np.stack([b, b])), ns.TracingError,
     r"np.linalg.solve of an array of shape \(2, 3, 3\).*ns.vmap"),
    (lambda A, b: np.linalg.inv(np.stack([A, A])), ns.TracingError, r"np.linalg.inv.*ns.vmap"),
    (lambda A, b: np.linalg.solve(A, b[:2]), ValueError, r"right-hand side has 2 rows"),
    (lambda A, b: np.linalg.det(A[:2]), np.linalg.LinAlgError, r"square"),
    (lambda A, b: sla.solve_triangular(A, b, unit_diagonal=True), ns.TracingError,
     r"unit_diagonal=True"),
    (lambda A, b: sla.solve_triangular(A, b, trans=3), ValueError, r"trans"),
    (lambda A, b: sla.cho_solve(A, b), ValueError, r"\(c, lower\)"),
])
def test_unsupported_and_wrong_calls(call, error, match):
    A, b = spd(np.random.default_rng(0), 3), np.ones(3)
    with pytest.raises(error, match=match):
        ns.jit(call)(A, b)
