"""ns.linear_recurrence, the `linrec` primitive (SPEC section 10, parallel in time).

Every result is compared with `loop` below, a plain NumPy loop over the steps written here
(not the primitive's own reference), on fresh random inputs: both kinds (elementwise states
of shape (), (2, 3); row-vector states with n x n matrices), a coefficient per step and a
loop-invariant one, forwards and backwards, float64 and float32, T = 0, 1, 7, 300.

  * eager calls in mode "cpu" (codegen/linrec.py's loops) and "python" (the NumPy reference);
  * the parallel phases, forced by NUMBASCAN_LINREC_PARALLEL_MIN=0: eager calls on 1 and 2
    threads (NUMBASCAN_NUM_THREADS), the runner on 3 and 4, decaying and non-decaying
    recurrences (the fix-up stops early, or runs to the end of its block), a carry-in's term
    that falls below the smallest normal number and grows back, carry-ins of inf and zero;
  * traced: inside ns.jit (the sequential loop, and the threads on 1 and 2 of them), inside
    a scan's step (always the sequential loop), on the CUDA simulator; eager mode "cuda";
  * derivatives: ns.grad in python mode for every kind, direction and invariance, and
    compiled for a few, against JAX in float64 (lax.scan over the steps), or fourth-order
    finite differences without JAX; ns.jvp and ns.vjp compiled; second order (gradcheck.py);
  * errors naming the argument for bad shapes, dtypes and parameters.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import numbascan as ns
from conftest import assert_close
from gradcheck import check_grads
from numbascan.codegen import linrec as kernels
from numbascan.runtime.threads import thread_count

try:
    import jax
    jax.config.update("jax_enable_x64", True)
except ImportError:              # CI: finite differences instead
    jax = None

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


def loop(a, b, x0, kind, reverse):
    """The states of the recurrence, one step after another."""
    T = b.shape[0]
    invariant = a.ndim == (b.ndim - 1 if kind == "diagonal" else 2)
    order = range(T - 1, -1, -1) if reverse else range(T)
    x, rows = x0, {}
    for t in order:
        at = a if invariant else a[t]
        x = (at * x if kind == "diagonal" else x @ at) + b[t]
        rows[t] = x
    if T == 0:
        return np.zeros(b.shape, b.dtype)
    return np.stack([rows[t] for t in range(T)]).astype(b.dtype)


def contractive(rng, lead, n):
    """Matrices of 2-norm 0.9 (a recurrence that neither blows up nor dies at once)."""
    m = rng.standard_normal(lead + (n, n))
    return 0.9 * m / np.linalg.norm(m, 2, axis=(-2, -1), keepdims=True)


def operands(rng, kind, shape, invariant, T, dtype=np.float64):
    """(a, b, x0): `shape` is the state's (diagonal) or (n,) (matrix)."""
    if kind == "diagonal":
        a = rng.uniform(-1.0, 1.0, shape if invariant else (T,) + shape)
    else:
        a = contractive(rng, () if invariant else (T,), shape[0])
    b = rng.standard_normal((T,) + shape)
    x0 = rng.standard_normal(shape)
    return tuple(np.asarray(x, dtype) for x in (a, b, x0))


CASES = [("diagonal", ()), ("diagonal", (2, 3)), ("matrix", (3,))]


# ------------------------------------------------------------------------------------------------
# eager calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("invariant", [True, False])
@pytest.mark.parametrize("kind, shape", CASES)
def test_eager_against_loop(rng, kind, shape, invariant, reverse, dtype):
    for T in (0, 1, 7, 300):
        a, b, x0 = operands(rng, kind, shape, invariant, T, dtype)
        expected = loop(a, b, x0, kind, reverse)
        for mode in ("cpu", "python"):
            got = ns.linear_recurrence(a, b, x0, reverse, mode=mode)
            assert got.dtype == dtype and got.shape == b.shape, (mode, T)
            assert_close(got, expected, f"mode {mode}, T={T}", **TOL[dtype])


def test_python_numbers_and_kind(rng):
    """Python numbers take b's dtype; kind='matrix' reads an (n, n) a as a matrix when
    T == n (the diagonal per-step reading is the default)."""
    b = rng.standard_normal(50).astype(np.float32)
    got = ns.linear_recurrence(0.9, b, 1.5)
    assert got.dtype == np.float32
    assert_close(got, loop(np.float32(0.9), b, np.float32(1.5), "diagonal", False),
                 **TOL[np.float32])
    a, b, x0 = contractive(rng, (), 3), rng.standard_normal((3, 3)), rng.standard_normal(3)
    assert_close(ns.linear_recurrence(a, b, x0), loop(a, b, x0, "diagonal", False))
    assert_close(ns.linear_recurrence(a, b, x0, kind="matrix"), loop(a, b, x0, "matrix", False))
    assert "linear_recurrence" in ns.__all__


@pytest.fixture
def parallel(monkeypatch):
    """Every recurrence long enough for two blocks runs across threads; the calls of the
    eager parallel runner, recorded as (kind, threads)."""
    monkeypatch.setenv(kernels.ENV, "0")
    calls = []
    run = kernels.run_in_threads

    def recording(kind, *args):
        calls.append((kind, args[-1]))
        return run(kind, *args)

    monkeypatch.setattr(kernels, "run_in_threads", recording)
    return calls


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("invariant", [True, False])
@pytest.mark.parametrize("kind, shape", [("diagonal", ()), ("diagonal", (2, 3)),
                                         ("matrix", (2,))])
def test_eager_parallel_threads(rng, monkeypatch, parallel, kind, shape, invariant, reverse):
    """One and two threads (NUMBASCAN_NUM_THREADS) against the loop; T = 2000."""
    if thread_count() < 2:
        pytest.skip("one thread")
    a, b, x0 = operands(rng, kind, shape, invariant, 2000)
    expected = loop(a, b, x0, kind, reverse)
    results = {}
    for threads in ("1", ""):
        monkeypatch.setenv("NUMBASCAN_NUM_THREADS", threads)
        results[threads] = ns.linear_recurrence(a, b, x0, reverse)
        assert_close(results[threads], expected, f"NUMBASCAN_NUM_THREADS={threads!r}")
    assert parallel[-1] == (kind, 2)
    assert_close(results["1"], results[""], "1 thread against 2", rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("a_value", [0.9, 1.0, -0.999])
def test_parallel_fixup(rng, parallel, a_value):
    """x = a x + u over 20000 steps on 2, 3 and 4 threads: a decaying recurrence (the fix-up
    stops where 0.9^k underflows), a cumulative sum and a slowly decaying alternating one (the
    fix-up runs to the end of its block)."""
    b = rng.standard_normal((20000, 1))
    a, x0 = np.full((1, 1), a_value), rng.standard_normal(1)
    expected = loop(np.float64(a_value), b[:, 0], x0[0], "diagonal", False)[:, None]
    for threads in (2, 3, 4):
        out = np.full_like(b, np.nan)
        kernels.run_in_threads("diagonal", a, b, x0, out, threads)
        assert_close(out, expected, f"{threads} threads", rtol=1e-9, atol=1e-9)


def test_parallel_fixup_regrowth(parallel):
    """The fix-up stops where its term is subnormal only when no later coefficient exceeds 1:
    here the carry-in's term (the whole state: b = 0) falls below the smallest normal number
    and grows back (to inf)."""
    T = 4000
    a = np.concatenate([np.ones(2000), np.full(309, 0.1), np.full(T - 2309, 10.0)])[:, None]
    b = np.zeros((T, 1))
    with np.errstate(over="ignore"):
        expected = loop(a[:, 0], b[:, 0], np.float64(1.0), "diagonal", False)[:, None]
    out = np.full_like(b, np.nan)
    with np.errstate(over="ignore"):
        kernels.run_in_threads("diagonal", a, b, np.ones(1), out, 2)
    assert np.isinf(expected[-1, 0]) and expected[2700, 0] > 1
    assert_close(out, expected, "regrowth", rtol=1e-10, atol=0)


def test_parallel_special_carries(rng, parallel):
    """Two blocks of 500 steps: a carry-in of inf (block 1 runs again from it: the fix-up
    would make inf * 0 = nan of it), and one of exactly zero (nothing to fix)."""
    a = np.full((1, 1), 0.5)
    b, x0 = rng.standard_normal((1000, 1)), rng.standard_normal(1)
    b_inf = b.copy()
    b_inf[100] = np.inf
    b_zero = np.concatenate([np.zeros((500, 1)), b[500:]])
    for what, b, x0 in (("inf", b_inf, x0), ("zero", b_zero, np.zeros(1))):
        expected = loop(np.float64(0.5), b[:, 0], x0[0], "diagonal", False)[:, None]
        out = np.full_like(b, np.nan)
        kernels.run_in_threads("diagonal", a, b, x0, out, 2)
        assert_close(out, expected, f"a carry-in of {what}", rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("invariant", [True, False])
@pytest.mark.parametrize("kind, shape", CASES)
def test_kernels_more_threads(rng, parallel, kind, shape, invariant):
    """The parallel runner on 3 and 4 threads (its thread count is an argument), called
    directly and through the function generated code calls; the matrix kind with n = 2 runs
    in parallel with a per-step coefficient too (the cost model promises more than
    MIN_SPEEDUP)."""
    if kind == "matrix":
        shape = (2,)
    a, b, x0 = operands(rng, kind, shape, invariant, 3000)
    expected = loop(a, b, x0, kind, False)
    m = int(np.prod(shape))
    a2 = a.reshape((1 if invariant else 3000,) + ((m,) if kind == "diagonal" else (m, m)))
    b2 = b.reshape(3000, m)
    generated = {"diagonal": kernels.linrec_diagonal_parallel_nb,
                 "matrix": kernels.linrec_matrix_parallel_nb}[kind]
    for threads in (3, 4):
        for name, run in (("threads", lambda out: kernels.run_in_threads(
                               kind, a2, b2, x0.reshape(m), out, threads)),
                          ("generated", lambda out: generated(a2, b2, x0.reshape(m), out,
                                                              threads))):
            out = np.full_like(b2, np.nan)
            run(out)
            assert parallel[-1] == (kind, threads)
            assert_close(out.reshape(b.shape), expected, f"{name}, {threads} threads")


# ------------------------------------------------------------------------------------------------
# traced


def test_jit(rng):
    """In a program with other operations: backwards with per-step coefficients, a matrix
    recurrence with an invariant one, T = 0; the generated code calls the sequential loop."""
    T = 40
    a, b, x0 = operands(rng, "diagonal", (3,), False, T)
    A, B, y0 = operands(rng, "matrix", (3,), True, T)

    @ns.jit
    def f(a, b, x0, A, B, y0):
        xs = ns.linear_recurrence(np.tanh(a), 2.0 * b, x0, reverse=True)
        ys = ns.linear_recurrence(A, B + xs, y0)
        return xs, ys, ns.linear_recurrence(a[:0], b[:0], x0)

    xs, ys, empty = f(a, b, x0, A, B, y0)
    xs_ref = loop(np.tanh(a), 2.0 * b, x0, "diagonal", True)
    assert_close(xs, xs_ref, "xs")
    assert_close(ys, loop(A, B + xs_ref, y0, "matrix", False), "ys")
    assert empty.shape == (0, 3)
    source = ns.show(f, a, b, x0, A, B, y0, file=io.StringIO())
    assert "diagonal_scan_nb(" in source and "matrix_scan_nb(" in source
    assert "parallel_nb(" not in source


def test_jit_parallel(rng, monkeypatch, parallel):
    """A program whose recurrence is at least NUMBASCAN_LINREC_PARALLEL_MIN (read when the
    program is generated and at each call) runs it in threads; 1 and 2 of them."""
    if thread_count() < 2:
        pytest.skip("one thread")
    b = rng.standard_normal(5000)
    x0 = rng.standard_normal(())

    @ns.jit
    def f(b, x0):
        return ns.linear_recurrence(0.95, b, x0)

    expected = loop(np.float64(0.95), b, x0, "diagonal", False)
    for threads in ("1", ""):
        monkeypatch.setenv("NUMBASCAN_NUM_THREADS", threads)
        assert_close(f(b, x0), expected, f"NUMBASCAN_NUM_THREADS={threads!r}")
    assert parallel == [("diagonal", 2)]          # NUMBASCAN_NUM_THREADS=1: sequential
    assert "linrec_diagonal_parallel_nb(" in ns.show(f, b, x0, file=io.StringIO())


def test_in_scan_step(rng, monkeypatch):
    """A recurrence over each row of a sequence, inside a scan's step: compiled (always the
    sequential loop: the step may itself run across threads) against python mode."""
    monkeypatch.setenv(kernels.ENV, "0")
    N, T = 4, 30
    Bs = rng.standard_normal((N, T, 2))
    a = rng.uniform(-1, 1, 2)

    def step(B, total):
        xs = ns.linear_recurrence(a, B, total, reverse=True)
        return xs[0] + 0.1 * xs[-1]

    outs = {mode: ns.scan(step, sequences=Bs, outputs_info=np.zeros(2), mode=mode)[0]
            for mode in ("cpu", "python")}
    expected, total = [], np.zeros(2)
    for B in Bs:
        xs = loop(a, B, total, "diagonal", True)
        total = xs[0] + 0.1 * xs[-1]
        expected.append(total)
    for mode, got in outs.items():
        assert_close(got, np.stack(expected), mode)
    source = ns.show(step, sequences=Bs, outputs_info=np.zeros(2), file=io.StringIO())
    assert "diagonal_scan_nb(" in source and "parallel_nb(" not in source


def test_cuda(rng):
    """In a mode='cuda' scan's step: codegen/linrec.py's sequential loop as a device function
    (one thread runs it), against the CPU."""
    N, T, n = 3, 6, 2
    Bs = rng.standard_normal((N, T, n))
    A = contractive(rng, (T,), n)

    def step(B, x):
        ys = ns.linear_recurrence(A, B, x, reverse=True)
        zs = ns.linear_recurrence(0.5, B[:, 0], x[0])
        return ys[0] + zs[-1]

    kwargs = dict(sequences=Bs, outputs_info=np.zeros(n))
    got = ns.scan(step, mode="cuda", **kwargs)[0]
    assert_close(got, ns.scan(step, mode="cpu", **kwargs)[0], "cuda against cpu")
    source = ns.show(step, mode="cuda", file=io.StringIO(), **kwargs)
    assert "linrec_matrix_dev(" in source and "linrec_diagonal_dev(" in source


def test_eager_cuda_mode(rng):
    """An eager call in mode 'cuda' runs the GPU's block scan (tests/test_cuda_parallel_time.py):
    NumPy operands give a NumPy array, a CUDA array gives one back."""
    from numba import cuda
    b = rng.standard_normal(40)
    expected = loop(np.float64(0.8), b, np.float64(0.0), "diagonal", False)
    got = ns.linear_recurrence(0.8, b, 0.0, mode="cuda")
    assert isinstance(got, np.ndarray)
    assert_close(got, expected)
    on_device = ns.linear_recurrence(0.8, cuda.to_device(b), 0.0)
    assert not isinstance(on_device, np.ndarray)
    assert_close(on_device.copy_to_host(), expected)


# ------------------------------------------------------------------------------------------------
# derivatives


def _loss(lib, kind, reverse, w):
    """A scalar of the states, with `lib.recurrence` the recurrence under test."""
    def loss(a, b, x0):
        xs = lib(a, b, x0, kind, reverse)
        return (xs * w).sum() + 0.5 * (xs * xs).sum()
    return loss


def numbascan_recurrence(a, b, x0, kind, reverse):
    return ns.linear_recurrence(a, b, x0, reverse, kind=kind)


def jax_recurrence(a, b, x0, kind, reverse):
    invariant = a.ndim == (b.ndim - 1 if kind == "diagonal" else 2)

    def step(x, inputs):
        at, bt = (a, inputs) if invariant else inputs
        x = (at * x if kind == "diagonal" else x @ at) + bt
        return x, x
    return jax.lax.scan(step, x0, b if invariant else (a, b), reverse=reverse)[1]


def reference_grads(kind, reverse, w, args):
    """d loss / d (a, b, x0): JAX's, else fourth-order central differences of the loop."""
    if jax is not None:
        return [np.asarray(g) for g in
                jax.grad(_loss(jax_recurrence, kind, reverse, w), argnums=(0, 1, 2))(*args)]
    loss = _loss(lambda a, b, x0, k, r: loop(a, b, x0, k, r), kind, reverse, w)
    h, weights, grads = 1e-4, {2: -1.0, 1: 8.0, -1: -8.0, -2: 1.0}, []
    for i, x in enumerate(args):
        g = np.zeros_like(x)
        for index in np.ndindex(*x.shape):
            for k, wt in weights.items():
                moved = list(args)
                moved[i] = np.array(x, copy=True)
                moved[i][index] += k * h
                g[index] += wt * loss(*moved) / (12 * h)
        grads.append(g)
    return grads


GRAD_TOL = dict(rtol=1e-9, atol=1e-10) if jax is not None else dict(rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("invariant", [True, False])
@pytest.mark.parametrize("kind, shape", [("diagonal", ()), ("diagonal", (2,)),
                                         ("matrix", (3,))])
def test_grad_python_mode(rng, monkeypatch, kind, shape, invariant, reverse):
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    args = operands(rng, kind, shape, invariant, 9)
    w = rng.standard_normal(args[1].shape)
    got = ns.grad(_loss(numbascan_recurrence, kind, reverse, w), argnums=(0, 1, 2))(*args)
    for name, g, e in zip("a b x0".split(), got, reference_grads(kind, reverse, w, args)):
        assert_close(g, e, f"d loss / d {name}", **GRAD_TOL)


@pytest.mark.parametrize("kind, shape, invariant, reverse", [
    ("diagonal", (), False, False), ("diagonal", (2,), True, True),
    ("matrix", (3,), False, True), ("matrix", (2,), True, False)])
def test_grad_compiled(rng, monkeypatch, kind, shape, invariant, reverse):
    monkeypatch.setenv("NUMBASCAN_MODE", "cpu")
    args = operands(rng, kind, shape, invariant, 12)
    w = rng.standard_normal(args[1].shape)
    got = ns.grad(_loss(numbascan_recurrence, kind, reverse, w), argnums=(0, 1, 2))(*args)
    for name, g, e in zip("a b x0".split(), got, reference_grads(kind, reverse, w, args)):
        assert_close(g, e, f"d loss / d {name}", **GRAD_TOL)


def test_jvp_and_vjp_compiled(rng, monkeypatch):
    """Forward mode and a vector-Jacobian product of the states themselves, compiled."""
    monkeypatch.setenv("NUMBASCAN_MODE", "cpu")
    kind, reverse = "matrix", False
    args = operands(rng, kind, (2,), False, 10)
    tangents = [rng.standard_normal(x.shape) for x in args]
    ct = rng.standard_normal(args[1].shape)

    def f(a, b, x0):
        return ns.linear_recurrence(a, b, x0, reverse)

    xs, dxs = ns.jvp(f, args, tangents)
    assert_close(xs, loop(*args, kind, reverse), "primal")
    xs2, vjp_fn = ns.vjp(f, *args)
    cts = vjp_fn(ct)
    if jax is not None:
        g = lambda *p: jax_recurrence(*p, kind, reverse)          # noqa: E731
        assert_close(dxs, np.asarray(jax.jvp(g, tuple(args), tuple(tangents))[1]), "jvp",
                     **GRAD_TOL)
        for got, e in zip(cts, jax.vjp(g, *args)[1](ct)):
            assert_close(got, np.asarray(e), "vjp", **GRAD_TOL)
    else:   # <vjp(ct), t> == <ct, jvp(t)>
        assert_close(sum(np.sum(c * t) for c, t in zip(cts, tangents)), np.sum(ct * dxs),
                     "transposition", rtol=1e-10)


def test_second_order(rng, monkeypatch):
    """jvp over vjp and the rest (gradcheck.py) of a diagonal recurrence, python mode."""
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    a, b, x0 = operands(rng, "diagonal", (2,), False, 5)

    def f(a, b, x0):
        return ns.linear_recurrence(np.tanh(a), b * b, x0, reverse=True)

    check_grads(f, [a, b, x0], order=2)


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((np.ones(3), np.ones((5, 3)), np.ones(4)), {}, ValueError,
     r"linear_recurrence: x0: expected the state's shape \(3,\).*found \(4,\)"),
    ((np.ones(4), np.ones((5, 3)), np.ones(3)), {}, ValueError,
     r"linear_recurrence: a: expected shape \(5, 3\) or \(3,\) \(diagonal\), or "
     r"\(5, 3, 3\) or \(3, 3\) \(matrix\) for b of shape \(5, 3\), found \(4,\)"),
    ((np.ones((5, 2, 2)), np.ones((5, 2)), np.ones(2)), {"kind": "diagonal"}, ValueError,
     r"a: expected shape \(5, 2\) or \(2,\) \(diagonal\) for b of shape \(5, 2\), "
     r"found \(5, 2, 2\)"),
    ((np.ones(()), np.ones(()), np.ones(())), {}, ValueError,
     r"b: expected an array with a leading time axis"),
    ((0.5, np.ones(5, np.int64), 0.0), {}, TypeError,
     r"b: expected a float32 or float64 array, found dtype int64"),
    ((np.ones((), np.float32), np.ones(5), 0.0), {}, TypeError,
     r"a: expected dtype float64 \(b's.*found float32"),
    ((0.5, np.ones(5), np.zeros((), np.float32)), {}, TypeError,
     r"x0: expected dtype float64 \(b's.*found float32"),
    ((0.5, np.ones(5), 0.0, 1), {}, TypeError, r"reverse: expected a Python bool, found 1"),
    ((0.5, np.ones(5), 0.0), {"kind": "scalar"}, ValueError,
     r"kind: expected None, 'diagonal' or 'matrix', found 'scalar'"),
])
def test_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ns.linear_recurrence(*args, **kwargs)
    # the same checks inside a trace
    arrays = [np.asarray(x) if isinstance(x, np.ndarray) else x for x in args[:3]]

    def traced(*xs):
        return ns.linear_recurrence(*xs, *args[3:], **kwargs)

    with pytest.raises(error, match=match):
        ns.jit(traced)(*arrays)
