"""Parallel in time on CUDA: the block-level prefix scan of codegen/cuda_linrec.py.

The kernels run in numba's CUDA simulator (every CUDA thread a Python thread; tests/cuda_ptx.py
compiles them for a real GPU). Every result is compared with the reference: the primitive's
NumPy loop for the kernels, the python mode's loop (the oracle) for scans, `scipy.signal.lfilter`
for IIR filters, NumPy's cumulative sums and products, and the cpu mode's derivatives (which
tests/test_parallel_time.py checks against JAX). A spy counts the block scan's launches, so
that a test that passes through another path fails. Launches are shrunk (`small_tiles`: 4
threads of 2 steps a block) so that T = 24 to 100 steps spread over several tiles, and over
more tiles than phase 2 has threads.
"""
import os

if os.environ.get("NUMBASCAN_TEST_GPU") != "1":          # conftest.py does this first
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import importlib
import zlib

import numpy as np
import pytest
from numba import cuda

import numbascan as ns
from numbascan.api import affine
from numbascan.codegen import cuda_linrec
from numbascan.core.primitives import TABLE
from numbascan.loop.args import ScanError
from numbascan.runtime import cuda as gpu
from test_parallel_time import HAVE_JAX, _reference_grad, iir_case

T = 40
RTOL, ATOL = 1e-10, 1e-12


def close(actual, expected, what="value", rtol=RTOL, atol=ATOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(cuda_linrec, "THREADS", 4)
    monkeypatch.setattr(cuda_linrec, "ITEMS", 2)


@pytest.fixture
def block_scans(monkeypatch):
    """The (kind, T, reverse) of every block scan run during a test."""
    seen = []
    solve = gpu.linear_recurrence

    def spy(a, b, x0, kind, reverse, invariant, **kw):
        seen.append((kind, b.shape[0], reverse))
        return solve(a, b, x0, kind, reverse, invariant, **kw)
    monkeypatch.setattr(gpu, "linear_recurrence", spy)
    monkeypatch.setattr(affine, "on_gpu", spy)
    monkeypatch.setattr(importlib.import_module("numbascan.api.linrec"), "on_gpu", spy)
    return seen


# ------------------------------------------------------------------------------------------------
# the kernels against the primitive's NumPy loop


def _operands(r, kind, T, S, invariant, dtype):
    b = r.normal(size=(T,) + S).astype(dtype)
    x0 = r.normal(size=S).astype(dtype)
    if kind == "diagonal":
        a = r.uniform(-1.1, 1.1, size=S if invariant else (T,) + S)
    else:
        n = S[0]
        a = r.normal(size=(n, n) if invariant else (T, n, n)) * (0.9 / np.sqrt(n))
    return a.astype(dtype), b, x0


@pytest.mark.parametrize("kind,S", [("diagonal", ()), ("diagonal", (2,)), ("matrix", (1,)),
                                    ("matrix", (3,))])
@pytest.mark.parametrize("invariant", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_block_scan_matches_the_loop(kind, S, invariant, reverse):
    r = np.random.default_rng(zlib.crc32(repr((kind, S, invariant, reverse)).encode()))
    ref = TABLE["linrec"].impl
    launches = [(37, 4, 2), (53, 2, 3), (9, 8, 1), (1, None, None)]
    if S in ((), (3,)):                    # the default launch: 32 simulated threads a block
        launches.append((130, None, None))
    for T_, threads, items in launches:
        a, b, x0 = _operands(r, kind, T_, S, invariant, np.float64)
        got = gpu.linear_recurrence(a, b, x0, kind, reverse, invariant, threads=threads,
                                    items=items).copy_to_host()
        close(got, ref(a, b, x0, kind, reverse, invariant), f"T={T_} {threads}x{items}")


def test_block_scan_float32_zero_steps_and_device_operands():
    r = np.random.default_rng(5)
    a, b, x0 = _operands(r, "diagonal", 50, (4,), False, np.float32)
    got = gpu.linear_recurrence(cuda.to_device(a), cuda.to_device(b), cuda.to_device(x0),
                                "diagonal", False, False, threads=4, items=3)
    assert got.dtype == np.float32
    close(got.copy_to_host(), TABLE["linrec"].impl(a, b, x0, "diagonal", False, False),
          "float32", rtol=2e-5, atol=1e-6)
    empty = gpu.linear_recurrence(a[:0], b[:0], x0, "diagonal", False, False)
    assert empty.shape == (0, 4)
    # the launch: as many threads as the steps fill, tiles to cover them
    assert cuda_linrec.launch_shape(2_000_000, 1, np.float64) == (128, 8, 1954)
    assert cuda_linrec.launch_shape(5, 1, np.float64) == (1, 8, 1)
    assert cuda_linrec.launch_shape(100, 8, np.float64) == (16, 8, 1)
    assert cuda_linrec.launch_shape(10_000, 8, np.float64) == (56, 8, 23)   # shared memory


def test_a_matrix_too_large_for_shared_memory_is_an_error():
    n = 70
    with pytest.raises(ValueError, match=r"found n = 70: use mode 'cpu'"):
        ns.linear_recurrence(np.eye(n) * 0.5, np.ones((3, n)), np.zeros(n), mode="cuda")


def test_linear_recurrence_in_mode_cuda(block_scans):
    """NumPy operands give a NumPy array, a CUDA operand a device array; in ns.jit and its
    derivatives the recorded mode="cuda" runs the program's recurrences on the device."""
    r = np.random.default_rng(6)
    a, b, x0 = _operands(r, "diagonal", 30, (2,), False, np.float64)
    expected = TABLE["linrec"].impl(a, b, x0, "diagonal", True, False)
    got = ns.linear_recurrence(a, b, x0, reverse=True, mode="cuda")
    assert isinstance(got, np.ndarray)
    close(got, expected)
    on_device = ns.linear_recurrence(a, cuda.to_device(b), x0, reverse=True)
    assert not isinstance(on_device, np.ndarray)
    close(on_device.copy_to_host(), expected)
    assert len(block_scans) == 2

    def loss(a, b, x0, mode):
        xs = ns.linear_recurrence(a, b, x0, mode=mode)
        return (xs * xs).sum() + np.sin(xs[-1]).sum()
    close(ns.jit(lambda a, b, x0: loss(a, b, x0, "cuda"))(a, b, x0), loss(a, b, x0, "python"),
          "jit")
    assert len(block_scans) == 3
    grads = ns.grad(loss, argnums=(0, 1, 2))(a, b, x0, "cuda")
    expected = ns.grad(loss, argnums=(0, 1, 2))(a, b, x0, "cpu")
    for name, g, e in zip("a b x0".split(), grads, expected):
        close(g, e, f"d/d{name}")
    assert len(block_scans) == 5             # the states, then the cotangents backwards


# ------------------------------------------------------------------------------------------------
# ns.scan(..., mode="cuda", parallel=True)


def in_time_on_cuda(fn, what, scan=ns.scan, **kwargs):
    """The scan on CUDA with parallel=True, against the python mode's loop; its outputs."""
    fast, _ = scan(fn, parallel=True, mode="cuda", **kwargs)
    slow, _ = scan(fn, mode="python", **kwargs)
    pairs = zip(fast, slow) if isinstance(fast, list) else [(fast, slow)]
    for i, (a, b) in enumerate(pairs):
        assert isinstance(a, np.ndarray), f"{what}: output {i} is {type(a).__name__}"
        close(a, b, f"{what}: output {i}")
    return fast


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_iir_filters_match_lfilter(order, small_tiles, block_scans):
    iir, kwargs, ref = iir_case(order, T)
    fast = in_time_on_cuda(iir, f"IIR order {order}", **kwargs)
    close(fast, ref, f"IIR order {order} against lfilter")
    assert block_scans == [("diagonal" if order == 1 else "matrix", T, False)]


def test_sums_products_returns_and_matrices(small_tiles, block_scans):
    r = np.random.default_rng(2)
    u, x0 = r.normal(size=(T, 1, 2)), r.normal(size=(1, 2))
    sums = in_time_on_cuda(lambda u_t, x: x + u_t, "cumsum", sequences=u, outputs_info=x0)
    close(sums, x0 + np.cumsum(u, axis=0), "against np.cumsum")
    v = r.uniform(0.5, 1.5, size=(T, 1, 2))
    prods = in_time_on_cuda(lambda v_t, x: x * v_t, "cumprod", sequences=v, outputs_info=x0)
    close(prods, x0 * np.cumprod(v, axis=0), "against np.cumprod")
    rewards, gamma, g_end = r.normal(size=T), 0.95, r.normal()
    G = in_time_on_cuda(lambda r_t, g: r_t + gamma * g, "returns", sequences=rewards,
                        outputs_info=np.float64(g_end), go_backwards=True)
    expected, g = [], g_end
    for r_t in rewards[::-1]:
        g = r_t + gamma * g
        expected.append(g)
    close(G, np.array(expected), "returns against a loop")
    n = 3
    A_t, A = r.normal(size=(T, n, n)) * 0.4, r.normal(size=(n, n)) * 0.4
    b, z0 = r.normal(size=(T, n)), r.normal(size=n)
    in_time_on_cuda(lambda b_t, A_t, x: x @ A_t + b_t, "A_t a sequence", sequences=[b, A_t],
                    outputs_info=z0)
    in_time_on_cuda(lambda b_t, x, A: (x @ A + b_t, np.tanh(x).sum()), "A and a map output",
                    sequences=b, outputs_info=[z0, None], non_sequences=A)
    last = in_time_on_cuda(lambda b_t, x, A: x @ A + b_t, "reduce", scan=ns.reduce,
                           sequences=b, outputs_info=z0, non_sequences=A)
    assert last.shape == (n,)
    assert len(block_scans) == 6 and all(t == T for _, t, _ in block_scans)


def test_cuda_arrays_in_give_cuda_arrays_out(small_tiles, block_scans):
    r = np.random.default_rng(3)
    u, x0 = r.normal(size=(T, 5)), r.normal(size=5)
    u_before = u.copy()
    ys, _ = ns.scan(lambda u_t, x: 0.8 * x + u_t, sequences=cuda.to_device(u),
                    outputs_info=x0, parallel=True)
    assert not isinstance(ys, np.ndarray)
    expected, _ = ns.scan(lambda u_t, x: 0.8 * x + u_t, sequences=u, outputs_info=x0,
                          mode="python")
    close(ys.copy_to_host(), expected)
    np.testing.assert_array_equal(u, u_before)
    assert len(block_scans) == 1


def test_gradients_and_jit_on_cuda(small_tiles, block_scans):
    r = np.random.default_rng(4)
    u, a, x0 = r.normal(size=(T, 2)), r.uniform(0.5, 0.95, size=2), r.normal(size=2)

    def loss(u, a, x0, mode):
        ys, _ = ns.scan(lambda u_t, x, a: a * x + u_t, sequences=u, outputs_info=x0,
                        non_sequences=a, parallel=mode == "cuda", mode=mode)
        return (ys ** 2).sum() + np.sin(ys[-1]).sum()
    def numpy_loss(u, a, x0):
        ys, x = [], x0
        for u_t in u:
            x = a * x + u_t
            ys.append(x)
        ys = np.array(ys)
        return (ys ** 2).sum() + np.sin(ys[-1]).sum()

    def jax_loss(u, a, x0):
        import jax
        import jax.numpy as jnp

        def step(x, u_t):
            x = a * x + u_t
            return x, x
        ys = jax.lax.scan(step, x0, u)[1]
        return (ys ** 2).sum() + jnp.sin(ys[-1]).sum()
    grads = ns.grad(loss, argnums=(0, 1, 2))(u, a, x0, "cuda")
    expected = _reference_grad(jax_loss, numpy_loss, [u, a, x0])   # JAX, else differences
    tol = dict(rtol=1e-9, atol=1e-11) if HAVE_JAX else dict(rtol=2e-5, atol=1e-7)
    for name, g, e in zip(["u", "a", "x0"], grads, expected):
        close(g, e, f"d/d{name}", **tol)
    assert [rev for _, _, rev in block_scans] == [False, True]
    close(ns.jit(lambda u, a, x0: loss(u, a, x0, "cuda"))(u, a, x0), loss(u, a, x0, "cpu"),
          "jit")
    assert len(block_scans) == 3


def test_none_keeps_the_kernel_loop_and_errors_still_name_the_operation(block_scans):
    r = np.random.default_rng(7)
    u = r.normal(size=T)
    ys, _ = ns.scan(lambda u_t, x: 0.9 * x + u_t, sequences=u, outputs_info=np.float64(1),
                    mode="cuda")
    assert block_scans == []
    close(ys, ns.scan(lambda u_t, x: 0.9 * x + u_t, sequences=u, outputs_info=np.float64(1),
                      mode="python")[0])
    with pytest.raises(ScanError, match="parallel=True") as err:
        ns.scan(lambda u_t, x: np.tanh(x) + u_t, sequences=u, outputs_info=np.float64(1),
                mode="cuda", parallel=True)
    assert "tanh" in str(err.value)
    # coupled states of 64 float64 entries: within the analysis' limit, beyond the block
    # scan's shared memory; refused before anything runs, the loop with parallel=None
    A = r.normal(size=(64, 64)) * 0.1
    with pytest.raises(ScanError, match=r"in mode 'cuda'.* found n = 64: use mode 'cpu'"):
        ns.scan(lambda u_t, x, A: x @ A + u_t, sequences=r.normal(size=(3, 64)),
                outputs_info=r.normal(size=64), non_sequences=A, mode="cuda", parallel=True)
    assert block_scans == []
