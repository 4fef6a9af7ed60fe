"""np.linalg.eigh and eigvalsh, and the matrix norms np.linalg.norm(A, 2), (A, -2) and
(A, 'nuc') in traced code (SPEC section 8), forward and differentiated.

Forward: inside a scan step, compiled ("cpu") against the reference mode ("python") and
NumPy, n = 2, 3, 4 as the Jacobi loops of codegen/linalg.py and n = 12 through numba's LAPACK;
inside `ns.jit` (float64 and float32); on the CUDA simulator. NumPy leaves an eigenvector's
sign to LAPACK, and the python mode's step is NumPy's: outputs compared across modes are
sign-invariant (eigenvalues, V * V, V diag(w) V^T) and eigenvectors are compared after their
signs are aligned; compiled eigenvectors follow the sign rule of core/primitives.py
(`eigenvector_signs`) on every path. Derivatives: `ns.grad` through a scan (compiled and
python mode) against JAX in float64, or fourth-order finite differences without JAX; `ns.jvp`
compiled against central differences; second order in python mode (gradcheck.py), with a
non-symmetric input (eigh reads its lower triangle, UPLO='U' its upper one).

Inputs are random symmetric matrices with well-separated eigenvalues, Q diag(d) Q^T, and
rectangular ones with well-separated singular values, U diag(s) W^T.
"""
import io
import warnings

import numpy as np
import pytest

import numbascan as ns
from conftest import assert_close
from gradcheck import check_grads
from numbascan.core.primitives import eigenvector_signs
from numbascan.runtime.fallback import UntracedStepWarning

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
except ImportError:              # CI: finite differences instead
    jax = None


def orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def separated(rng, n, lead=()):
    """Symmetric matrices Q diag(d) Q^T, eigenvalues d at least 1.5 apart in [-n, 2n]."""
    out = np.empty(lead + (n, n))
    for index in np.ndindex(*lead):
        d = -n + 1.5 * np.arange(n) + rng.uniform(0, 0.4, n) + rng.uniform(0, 0.5)
        q = orthogonal(rng, n)
        out[index] = (q * d) @ q.T
    return out


def with_singular_values(rng, m, n, lead=()):
    """m x n matrices U diag(s) W^T, singular values s in [1, 1 + 1.5 min(m, n)), 1.5 apart."""
    k = min(m, n)
    out = np.empty(lead + (m, n))
    for index in np.ndindex(*lead):
        s = 1.0 + 1.5 * np.arange(k) + rng.uniform(0, 0.4, k)
        out[index] = (orthogonal(rng, m)[:, :k] * s) @ orthogonal(rng, n)[:, :k].T
    return out


def upper_junk(rng, a):
    """a with its strict upper triangle replaced by noise (eigh reads the lower one)."""
    n = a.shape[-1]
    return np.where(np.triu(np.ones((n, n), bool), 1), rng.standard_normal(a.shape), a)


def lower_symmetric(a):
    """The symmetric matrix that a's lower triangle makes."""
    low = np.tril(a)
    return low + np.swapaxes(np.tril(a, -1), -1, -2)


def aligned(V, ref):
    """V's columns with their signs flipped to agree with ref's."""
    return V * np.where(np.sum(V * ref, axis=-2, keepdims=True) < 0, -1.0, 1.0)


def step(A, B):
    """eigh of A (its lower triangle), eigvalsh of the upper triangle of A.T (the same matrix),
    the three norms of singular values of B and of B.T."""
    w, V = np.linalg.eigh(A)
    return (w, V, V * V, V @ (w[:, None] * V.T), np.linalg.eigvalsh(A.T, UPLO="U"),
            np.stack([np.linalg.norm(B, 2), np.linalg.norm(B, -2), np.linalg.norm(B, "nuc"),
                      np.linalg.norm(B.T, 2), np.linalg.norm(B.T, ord="nuc")]))


def expected_step(A, B):
    w, V = np.linalg.eigh(lower_symmetric(A))
    s = np.linalg.svd(B, compute_uv=False)
    return w, V, lower_symmetric(A), np.array([s.max(), s.min(), s.sum(), s.max(), s.sum()])


def run_scan(fn, mode, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntracedStepWarning)
        out, _ = ns.scan(fn, mode=mode, **kwargs)
    return out


@pytest.mark.parametrize("n", [2, 3, 4, 12])
def test_scan_forward(rng, n):
    """n = 2, 3, 4: Jacobi loops (no LAPACK call); n = 12: numba's LAPACK (syevd)."""
    T = 3
    As = upper_junk(rng, separated(rng, n, (T,)))
    Bs = with_singular_values(rng, n + 1, n, (T,))
    results = {mode: run_scan(step, mode, sequences=[As, Bs]) for mode in ("cpu", "python")}
    rows = [expected_step(A, B) for A, B in zip(As, Bs)]
    w_ref, V_ref, S_ref, norms_ref = (np.stack(col) for col in zip(*rows))
    for mode, (w, V, VV, S, w_upper, norms) in results.items():
        assert_close(w, w_ref, f"{mode}: eigenvalues", rtol=1e-12, atol=1e-12)
        assert_close(w_upper, w_ref, f"{mode}: eigvalsh UPLO='U'", rtol=1e-12, atol=1e-12)
        assert_close(aligned(V, V_ref), V_ref, f"{mode}: eigenvectors", rtol=0, atol=1e-12)
        assert_close(VV, V_ref * V_ref, f"{mode}: V * V", rtol=0, atol=1e-12)
        assert_close(S, S_ref, f"{mode}: V diag(w) V^T", rtol=0, atol=1e-11 * n)
        assert_close(norms, norms_ref, f"{mode}: norms", rtol=1e-11)
    cpu, python = results["cpu"], results["python"]
    for k in (0, 2, 3, 4, 5):             # the sign-invariant outputs, mode against mode
        assert_close(cpu[k], python[k], f"output {k}", rtol=1e-11, atol=1e-12)
    # compiled eigenvectors follow the sign rule on both paths (the same values)
    assert_close(cpu[1], np.stack([eigenvector_signs(v) for v in V_ref]), "sign rule",
                 rtol=0, atol=1e-12)
    source = ns.show(step, sequences=[As, Bs], file=io.StringIO())
    if n <= 10:
        assert "eigh_nb(" in source and "np.linalg" not in source
    else:
        assert "eigh_lapack_nb(" in source and "eigh_nb(" not in source


def test_jit(rng):
    """Inside ns.jit, compiled (n = 4: loop code); float32 stays float32."""
    n = 4
    A, B = separated(rng, n), with_singular_values(rng, 3, n)

    def f(A, B):
        w, V = np.linalg.eigh(A)
        return w, V, np.linalg.norm(B, 2), np.linalg.norm(B, -2), np.linalg.norm(B, "nuc")

    jf = ns.jit(f)
    w_ref, V_ref = np.linalg.eigh(A)
    s = np.linalg.svd(B, compute_uv=False)
    for dtype, tol in ((np.float64, dict(rtol=1e-12, atol=1e-12)),
                       (np.float32, dict(rtol=1e-5, atol=1e-5))):
        w, V, n2, n_2, nuc = jf(A.astype(dtype), B.astype(dtype))
        assert all(r.dtype == dtype for r in (w, V, n2, n_2, nuc))
        assert_close(w, w_ref, "eigenvalues", **tol)
        assert_close(V, eigenvector_signs(V_ref), "eigenvectors", **tol)
        assert_close(np.array([n2, n_2, nuc]), np.array([s.max(), s.min(), s.sum()]),
                     "norms", **tol)
    assert "eigh_nb(" in ns.show(jf, A, B, file=io.StringIO())


# ------------------------------------------------------------------------------------------------
# derivatives


C = np.array([0.7, -1.3, 2.1])       # weights of the eigenvectors' squared entries


def terms(xp, M, A0, B0):
    """A scalar of eigh and the singular-value norms, sign-invariant, of a symmetric
    A = A0 + 0.2 (M + M^T) and of B = B0 + 0.2 M[:, :2]."""
    A = A0 + 0.2 * (M + M.T)
    w, V = xp.linalg.eigh(A)
    B = B0 + 0.2 * M[:, :2]
    return (xp.sum(w * C) + 0.1 * xp.sum(w * w) + xp.sum(V[:, 0] ** 2 * C) +
            xp.sum((V[:, 2] ** 2) * C[::-1]) + 3.0 * xp.sum((V[:, 1] * V[:, 2]) ** 2 * C) +
            xp.linalg.norm(B, 2) + 0.5 * xp.linalg.norm(B, -2) + 0.25 * xp.linalg.norm(B, "nuc"))


def reference_grad(loss_np, loss_jax, args):
    """d loss / d args[0]: JAX's when it is installed, else central differences of fourth
    order."""
    if jax is not None:
        return np.asarray(jax.grad(loss_jax)(*args))
    h, weights = 1e-4, {2: -1.0, 1: 8.0, -1: -8.0, -2: 1.0}
    g = np.zeros_like(args[0])
    for index in np.ndindex(*args[0].shape):
        for k, wt in weights.items():
            x = np.array(args[0], copy=True)
            x[index] += k * h
            g[index] += wt * loss_np(x, *args[1:]) / (12 * h)
    return g


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_grad_through_scan(rng, monkeypatch, mode):
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    n, T = 3, 2
    Ms = 0.5 * rng.standard_normal((T, n, n))
    A0, B0 = separated(rng, n), with_singular_values(rng, n, 2)

    def loss(Ms):
        out, _ = ns.scan(lambda M, total: total + terms(np, M, A0, B0), sequences=Ms,
                         outputs_info=np.zeros(()))
        return out[-1]

    def loss_loop(xp):
        return lambda Ms: sum(terms(xp, Ms[t], A0, B0) for t in range(T))

    got = ns.grad(loss)(Ms)
    expected = reference_grad(loss_loop(np), jax and loss_loop(jnp), [Ms])
    tol = dict(rtol=1e-9, atol=1e-10) if jax is not None else dict(rtol=1e-6, atol=1e-7)
    assert_close(got, expected, "d loss / d Ms", **tol)


def test_jvp_against_finite_differences(rng, monkeypatch):
    """Forward mode, compiled: the tangents of w, V * V, V[:, 0] V[:, 1]^T and the norms."""
    monkeypatch.setenv("NUMBASCAN_MODE", "cpu")
    n = 4
    A0, B0 = separated(rng, n), with_singular_values(rng, n, 3)
    M, dM = rng.standard_normal((n, n)), rng.standard_normal((n, n))

    def f(M):
        w, V = np.linalg.eigh(A0 + 0.2 * (M + M.T))
        B = B0 + 0.2 * M[:, :3]
        return (w, V * V, np.outer(V[:, 0], V[:, 1]) * np.sign(V[0, 0] * V[0, 1]),
                np.stack([np.linalg.norm(B, 2), np.linalg.norm(B, -2),
                          np.linalg.norm(B, "nuc")]))

    out, tangents = ns.jvp(f, [M], [dM])
    h = 1e-6
    plus, minus = f(M + h * dM), f(M - h * dM)
    for k, (o, r, t, p, m) in enumerate(zip(out, f(M), tangents, plus, minus)):
        assert_close(o, r, f"output {k}", rtol=1e-11, atol=1e-12)
        assert_close(t, (p - m) / (2 * h), f"tangent {k}", rtol=1e-6, atol=1e-7)


SECOND_ORDER = {   # name -> function of a non-symmetric A (near a well-separated S)
    "eigenvalues": lambda A: np.linalg.eigh(A)[0],
    "eigenvectors": lambda A: np.linalg.eigh(A)[1] ** 2 @ C[:A.shape[0]],
    "eigvalsh_upper": lambda A: np.linalg.eigvalsh(A, UPLO="U"),
    "eigenvectors_upper": lambda A: np.linalg.eigh(A, "U").eigenvectors[:, 1] ** 2,
    "norm2": lambda A: np.linalg.norm(A[:, :2], 2),
    "norm-2": lambda A: np.linalg.norm(A[:2], -2),
    "nuc": lambda A: np.linalg.norm(A, "nuc"),
}


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_second_order_python_mode(rng, monkeypatch, name):
    """Forward and reverse mode to second order, interpreted, against finite differences;
    the input is not symmetric: the derivative is that of the triangle eigh reads."""
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    A = separated(rng, 3) + 0.3 * rng.standard_normal((3, 3))
    check_grads(SECOND_ORDER[name], [A], order=2, rtol=1e-5, atol=1e-7)


def test_python_mode_trace_follows_the_sign_rule(rng, monkeypatch):
    """A traced program run by the interpreter (here a jvp in python mode) gives the
    compiled code's eigenvectors, signs included, and the same tangents. A is one whose
    eigenvectors NumPy gives with other signs."""
    A = separated(rng, 3)
    while np.allclose(np.linalg.eigh(A)[1], eigenvector_signs(np.linalg.eigh(A)[1])):
        A = separated(rng, 3)
    dA = rng.standard_normal((3, 3))
    results = {}
    for mode in ("python", "cpu"):
        monkeypatch.setenv("NUMBASCAN_MODE", mode)
        results[mode] = ns.jvp(lambda A: np.linalg.eigh(A)[1], [A], [dA + dA.T])
    (V, dV), (V_cpu, dV_cpu) = results["python"], results["cpu"]
    assert_close(V, eigenvector_signs(np.linalg.eigh(A)[1]), "python mode", rtol=0, atol=1e-15)
    assert_close(V_cpu, V, "cpu", rtol=0, atol=1e-12)
    assert_close(dV_cpu, dV, "tangents", rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# CUDA (the simulator) and errors


@pytest.mark.parametrize("n, lanes", [(3, 1), (5, 32)])
def test_cuda(rng, kernel_patterns, n, lanes):
    """eigh in a mode='cuda' scan: the Jacobi loops as a device function (n = 5: in lane 0 of
    a block); the eigenvectors equal the CPU's (the same loops, the same sign rule)."""
    T = 2
    As = separated(rng, n, (T,))
    Bs = with_singular_values(rng, n, n - 1, (T,))

    def cuda_step(A, B):
        w, V = np.linalg.eigh(A)
        return w, V, V @ (w[:, None] * V.T), np.linalg.norm(B, 2) * w

    got = run_scan(cuda_step, "cuda", sequences=[As, Bs])
    assert [p.lanes for p in kernel_patterns] == [lanes]
    assert "eigh_dev(" in ns.show(cuda_step, sequences=[As, Bs], mode="cuda",
                                  file=io.StringIO())
    cpu = run_scan(cuda_step, "cpu", sequences=[As, Bs])
    python = run_scan(cuda_step, "python", sequences=[As, Bs])
    for k, (g, c) in enumerate(zip(got, cpu)):
        assert_close(g, c, f"cuda against cpu, output {k}", rtol=1e-12, atol=1e-13)
    for k in (0, 2, 3):
        assert_close(got[k], python[k], f"cuda against python, output {k}", rtol=1e-12,
                     atol=1e-12)
    assert_close(aligned(got[1], python[1]), python[1], "eigenvectors", rtol=0, atol=1e-12)


def test_cuda_grad(rng, kernel_patterns):
    """The derivative's scans run as kernels too (eigh's rules, the norms')."""
    n = 3
    Ms = 0.5 * rng.standard_normal((2, n, n))
    A0, B0 = separated(rng, n), with_singular_values(rng, n, 2)

    def grad(mode):
        def loss(Ms):
            out, _ = ns.scan(lambda M, total: total + terms(np, M, A0, B0), sequences=Ms,
                             outputs_info=np.zeros(()), mode=mode)
            return out[-1]
        return ns.grad(loss)(Ms)

    assert_close(grad("cuda"), grad("python"), "d loss / d Ms", rtol=1e-10, atol=1e-12)
    assert len(kernel_patterns) >= 2                # the forward scan and the backward one


def test_cuda_large_matrix_is_an_error(rng):
    n = 12
    with pytest.raises(NotImplementedError, match=r"np.linalg.eigh.*12 x 12.*at most 10"):
        ns.scan(lambda A: np.linalg.eigh(A)[0], sequences=[separated(rng, n, (2,))],
                mode="cuda")


@pytest.mark.parametrize("call, error, match", [
    (lambda A: np.linalg.eigh(A[:2]), np.linalg.LinAlgError,
     r"np.linalg.eigh: a: expected a square matrix, found shape \(2, 3\)"),
    (lambda A: np.linalg.eigvalsh(A[0]), np.linalg.LinAlgError,
     r"np.linalg.eigvalsh: a: 1-dimensional array"),
    (lambda A: np.linalg.eigh(np.stack([A, A])), ns.TracingError,
     r"np.linalg.eigh of an array of shape \(2, 3, 3\).*ns.vmap"),
    (lambda A: np.linalg.eigh(A, UPLO="X"), ValueError,
     r"np.linalg.eigh: UPLO: expected 'L' or 'U', found 'X'"),
    (lambda A: np.linalg.norm(np.stack([A, A]), 2, axis=(1, 2)), ns.TracingError,
     r"ord=2 over two axes of an array of shape \(2, 3, 3\).*ns.vmap"),
    (lambda A: np.linalg.norm(A, 3), ValueError, r"Invalid norm order for matrices"),
])
def test_wrong_calls(call, error, match):
    A = separated(np.random.default_rng(0), 3)
    with pytest.raises(error, match=match):
        ns.jit(call)(A)
