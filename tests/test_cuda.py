"""mode="cuda" against the reference mode "python".

The kernels run in numba's CUDA simulator (every CUDA thread a Python thread), or on a real GPU
with NUMBASCAN_TEST_GPU=1. The simulator runs kernels as Python, so it accepts code the real
CUDA target rejects: `test_kernels_compile_to_ptx` compiles representative kernels for real
(tests/cuda_ptx.py). Sizes are small: the simulator is slow.
"""
import os

if os.environ.get("NUMBASCAN_TEST_GPU") != "1":          # conftest.py does this first
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import copy
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numba import cuda          # numba-cuda is part of the test extra: no skip without it
from numba.core.errors import NumbaPerformanceWarning

import numbascan as ns
from numbascan.runtime.fallback import UntracedStepWarning
from numbascan.trace.tracer import TracingError

from conftest import _arrays_in, assert_same, assert_same_outputs, assert_same_updates
from cuda_ptx import (batched_rnn, elementwise_ops, logistic, nested, nested_outer, reductions,
                      rnn, rnn_until, rnn_with_sum, seed_taps, structural)

try:
    from numba.cuda.core import config as _cuda_config
    SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)
except ImportError:             # pragma: no cover - older numba-cuda layouts
    import numba
    SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

# On a GPU, libdevice's log/cos and contracted multiply-adds may differ from the host's in the
# last bits of a normal draw; the simulator computes exactly what the cpu mode does.
DRAW_RTOL = 0.0 if SIMULATOR else 4 * np.finfo(np.float64).eps

T = 6           # steps
S = 24          # elementwise state size (> SERIAL_MAX_ELEMENTS)
H = 40          # block state size


# ------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def patterns(kernel_patterns):
    return kernel_patterns


def check_pattern(patterns, expect):
    """expect: "elementwise", "block+" (block, lanes > 1), "block1" (block, lanes == 1)."""
    assert patterns, "no CUDA kernel was compiled"
    p = patterns[-1]
    got = p.kind if p.kind != "block" else ("block+" if p.lanes > 1 else "block1")
    assert got == expect, f"pattern {p}, expected {expect}"
    return p


def _scan(fn, mode, scan, kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntracedStepWarning)
        out = scan(fn, mode=mode, **copy.copy(kwargs))
    assert not [w for w in caught if issubclass(w.category, UntracedStepWarning)], \
        f"mode={mode}: the step was not traced"
    for w in caught:                        # the others are for the caller
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out


def run_cuda(fn, *, scan=ns.scan, **kwargs):
    """Run `scan(fn, **kwargs)` in mode "cuda" and mode "python"; assert they agree, that the
    results of NumPy inputs are NumPy arrays, and that no input was written to.
    Returns (cuda result, python result)."""
    inputs = list(_arrays_in(kwargs))
    before = [x.copy() for x in inputs]
    results = {}
    for mode in ("cuda", "python"):
        results[mode] = _scan(fn, mode, scan, kwargs)
        for i, (x, b) in enumerate(zip(inputs, before)):
            np.testing.assert_array_equal(x, b, err_msg=f"mode={mode}: input {i} was modified")
    (out_c, upd_c), (out_p, upd_p) = results["cuda"], results["python"]
    for o in (out_c if isinstance(out_c, list) else [out_c]):
        assert isinstance(o, np.ndarray), f"NumPy inputs gave a {type(o).__name__} result"
    assert_same_outputs(out_c, out_p)
    assert_same_updates(upd_c, upd_p)
    return results["cuda"], results["python"]


def rnn_inputs(rng, dtype=np.float64):
    W = rng.standard_normal((H, H)) * 0.3
    U = rng.standard_normal((3, H))
    b = rng.standard_normal(H)
    X = rng.standard_normal((T, 3))
    h0 = rng.standard_normal(H)
    return [a.astype(dtype) for a in (X, h0, W, U, b)]


# ------------------------------------------------------------------------------------------------
# elementwise pattern: one thread per state element


@pytest.mark.parametrize("scan", [ns.scan, ns.foldl], ids=["scan", "foldl"])
def test_elementwise_logistic(rng, patterns, scan):
    x0 = rng.random(S)
    seq = rng.random((T, S)) * 0.1
    a = 2.5 + rng.random(S)
    run_cuda(logistic, scan=scan, sequences=seq, outputs_info=x0, non_sequences=a)
    p = check_pattern(patterns, "elementwise")
    assert p.shape == (S,)


def test_elementwise_several_blocks(rng, patterns):
    # more elements than one block of THREADS_PER_BLOCK threads
    from numbascan.codegen.cuda import THREADS_PER_BLOCK
    n = THREADS_PER_BLOCK + 22
    run_cuda(logistic, sequences=rng.random((3, n)) * 0.1, outputs_info=rng.random(n),
             non_sequences=2.5 + rng.random(n))
    assert check_pattern(patterns, "elementwise").shape == (n,)


@pytest.mark.parametrize("a", [
    pytest.param(lambda rng: 2.5 + rng.random(), id="python-float"),
    pytest.param(lambda rng: np.asarray(2.5 + rng.random()), id="0d-array"),
    pytest.param(lambda rng: np.float64(2.5 + rng.random()), id="numpy-scalar"),
])
def test_elementwise_scalar_non_sequence(rng, patterns, a):
    run_cuda(logistic, sequences=rng.random((T, S)) * 0.1, outputs_info=rng.random(S),
             non_sequences=a(rng))
    check_pattern(patterns, "elementwise")


def test_elementwise_broadcast_non_sequences(rng, patterns):
    # a 2-d state; a row (C,), a column (R, 1) and a per-step scalar sequence broadcast to it
    R, C = 5, 7
    run_cuda(lambda s, x, row, col: 0.5 * x * row + s - col,
             sequences=rng.random(T), outputs_info=rng.random((R, C)),
             non_sequences=[rng.random(C), rng.random((R, 1))])
    assert check_pattern(patterns, "elementwise").shape == (R, C)


@pytest.mark.parametrize("taps", [[-1, 0], [0, 2]])
def test_elementwise_sequence_taps(rng, patterns, taps):
    run_cuda(lambda s_a, s_b, x: 0.5 * x + s_a - 0.3 * s_b,
             sequences=dict(input=rng.random((T + 2, S)), taps=taps), outputs_info=rng.random(S))
    check_pattern(patterns, "elementwise")


def test_elementwise_output_taps(rng, patterns):
    run_cuda(lambda x2, x1: 0.5 * x2 + 0.4 * np.tanh(x1),
             outputs_info=dict(initial=rng.random((2, S)), taps=[-2, -1]), n_steps=T)
    check_pattern(patterns, "elementwise")


def test_elementwise_output_taps_foldl(rng, patterns):
    # foldl keeps a ring of L + 1 rows; the initial state has more rows than the taps need
    run_cuda(lambda s, x3, x1: 0.5 * x3 + 0.4 * np.tanh(x1) + s, scan=ns.foldl,
             sequences=rng.random((T, S)),
             outputs_info=dict(initial=rng.random((4, S)), taps=[-3, -1]))
    check_pattern(patterns, "elementwise")


@pytest.mark.parametrize("scan", [ns.scan, ns.foldl], ids=["scan", "foldl"])
def test_elementwise_map_output_beside_fed_back(rng, patterns, scan):
    # a map output, an output that is the previous state itself, and a comparison
    run_cuda(lambda s, x: (0.9 * x + s, np.exp(x) * 2, x, x > 0.5), scan=scan,
             sequences=rng.random((T, S)) * 0.1, outputs_info=[rng.random(S), None, None, None])
    check_pattern(patterns, "elementwise")


def test_elementwise_float32(rng, patterns):
    f32 = np.float32
    (out, _), _ = run_cuda(lambda s, x, a: a * x * (1 - x) + s / 3 + np.tanh(x) * f32(0.01),
                           sequences=rng.random((T, S)).astype(f32) * f32(0.1),
                           outputs_info=rng.random(S).astype(f32),
                           non_sequences=(2.5 + rng.random(S)).astype(f32))
    assert out.dtype == np.float32
    check_pattern(patterns, "elementwise")


def test_elementwise_int_state(rng, patterns):
    run_cuda(lambda s, k: k + (s > 0.5) * 3 - k // 2 + k % 3 - np.sign(k - 4),
             sequences=rng.random((T, S)), outputs_info=rng.integers(-9, 9, S))
    check_pattern(patterns, "elementwise")


def test_elementwise_ufuncs(rng, patterns):
    s = rng.random((T, S))
    s[1, :6] = [1.0, -1.0, 0.7, -0.7, 0.5, 0.0]       # quotients that floor() of a/b gets wrong
    d = rng.random(S) + 0.05
    d[:2], d[2:4] = 0.1, 0.3
    run_cuda(elementwise_ops, sequences=s, outputs_info=[rng.random(S), None, None, None],
             non_sequences=d)
    check_pattern(patterns, "elementwise")


def test_elementwise_nan_propagates(rng, patterns):
    s = rng.random((T, S))
    s[2, 3] = np.nan
    s[3, 5] = np.nan
    with np.errstate(invalid="ignore"):
        (out, _), _ = run_cuda(lambda s, x: (0.5 * x + s, np.maximum(x, s), np.minimum(s, x),
                                             np.sign(s)),
                               sequences=s, outputs_info=[rng.random(S), None, None, None])
    assert np.isnan(out[1][2, 3]) and np.isnan(out[2][3, 5]) and np.isnan(out[3][2, 3])
    check_pattern(patterns, "elementwise")


def test_elementwise_go_backwards(rng, patterns):
    run_cuda(lambda s, x: 0.5 * x + s, sequences=rng.random((T + 2, S)),
             outputs_info=rng.random(S), n_steps=T, go_backwards=True)
    check_pattern(patterns, "elementwise")


def test_elementwise_captured_array(rng, patterns):
    w = rng.random(S)
    run_cuda(lambda s, x: 0.5 * x + s * w, sequences=rng.random((T, S)),
             outputs_info=rng.random(S))
    check_pattern(patterns, "elementwise")


# ------------------------------------------------------------------------------------------------
# block pattern, lanes > 1: one block of threads shares out every equation


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
def test_block_rnn(rng, patterns, go_backwards):
    X, h0, W, U, b = rnn_inputs(rng)
    run_cuda(rnn_with_sum, sequences=X, outputs_info=[h0, None], non_sequences=[W, U, b],
             go_backwards=go_backwards)
    check_pattern(patterns, "block+")


def test_block_rnn_float32(rng, patterns):
    X, h0, W, U, b = rnn_inputs(rng, np.float32)
    (out, _), _ = run_cuda(rnn, sequences=X, outputs_info=h0, non_sequences=[W, U, b])
    assert out.dtype == np.float32
    check_pattern(patterns, "block+")


def test_block_reductions(rng, patterns):
    run_cuda(reductions, sequences=rng.standard_normal((T, 6)),
             outputs_info=[rng.standard_normal((6, 8))] + [None] * 7)
    check_pattern(patterns, "block+")


def test_block_reductions_nan(rng, patterns):
    # NaN enters the state at step 2: max/min/argmax/maximum propagate it as NumPy does
    x = rng.standard_normal((T, 6))
    x[2, 4] = np.nan
    with np.errstate(invalid="ignore"):
        (out, _), _ = run_cuda(reductions, sequences=x,
                               outputs_info=[rng.standard_normal((6, 8))] + [None] * 7)
    assert np.isnan(out[0][2:]).all() and not np.isnan(out[0][:2]).any()
    assert np.isnan(out[5][2, 4, 0])
    check_pattern(patterns, "block+")


def test_block_structural_ops(rng, patterns):
    run_cuda(structural, sequences=[rng.standard_normal((T, 3)), rng.integers(0, 4, T)],
             outputs_info=[rng.standard_normal((4, 6)), None],
             non_sequences=[rng.standard_normal((6, 4))])
    check_pattern(patterns, "block+")


def test_block_until(rng, patterns):
    X, h0, W, U, b = rnn_inputs(rng)
    hs, _ = ns.scan(rnn, sequences=X, outputs_info=h0, non_sequences=[W, U, b], mode="python")
    sums = hs.sum(axis=1)
    threshold = sums[T // 2] - 1e-9           # crossed at step T // 2 or earlier
    first = int(np.argmax(sums > threshold))
    (out, _), _ = run_cuda(rnn_until, sequences=X, outputs_info=h0,
                           non_sequences=[W, U, b, threshold])
    assert len(out) == first + 1 <= T // 2 + 1
    check_pattern(patterns, "block+")


def test_block_nested_scan(rng, patterns):
    X, h0, W, _, _ = rnn_inputs(rng)
    run_cuda(nested, sequences=X, outputs_info=h0, non_sequences=[W, rng.standard_normal(H)])
    check_pattern(patterns, "block+")


@pytest.mark.parametrize("scan", [ns.scan, ns.foldl], ids=["scan", "foldl"])
def test_block_shared_memory_overflow_runs_in_one_thread(rng, patterns, scan):
    # two (H, H) temporaries here and two in the nested scan's step (a device function whose
    # shared arrays count towards the same block): 12.5 KB each, 50 KB, more than the 48 KB
    # one block has. The kernel falls back to one thread, its temporaries in local memory
    # (launched with a block's worth of threads: the others must keep off foldl's ring rows).
    with pytest.warns(NumbaPerformanceWarning, match="shared memory"):
        run_cuda(nested_outer, scan=scan, sequences=rng.random((3, 2)),
                 outputs_info=rng.random(H))
    check_pattern(patterns, "block+")


# ------------------------------------------------------------------------------------------------
# block pattern, lanes == 1: one thread runs a tiny step


def test_block1_seed_taps_recurrence(rng, patterns):
    # x(t) = x(t-2) U + x(t-1) V + tanh(x(t-1) W + b), a state of 2 values, taps [-2, -1]
    U, V, W = (rng.standard_normal((2, 2)) * 0.5 for _ in range(3))
    run_cuda(seed_taps, outputs_info=dict(initial=rng.standard_normal((2, 2)), taps=[-2, -1]),
             non_sequences=[U, V, W, rng.standard_normal(2)], n_steps=20)
    check_pattern(patterns, "block1")


def test_block1_scalar_until(patterns):
    def step(x_tm1):
        x = x_tm1 * 2
        return x, ns.until(x > 100)

    (out, _), _ = run_cuda(step, outputs_info=np.float64(1.0), n_steps=50)
    np.testing.assert_array_equal(out, [2, 4, 8, 16, 32, 64, 128])
    check_pattern(patterns, "block1")


def test_block1_reductions(rng, patterns):
    run_cuda(lambda x, h: (np.tanh(0.5 * h + x).max() + 0.1 * h, np.argmin(h), h @ h),
             sequences=rng.standard_normal((T, 3)),
             outputs_info=[rng.standard_normal(3), None, None])
    check_pattern(patterns, "block1")


# ------------------------------------------------------------------------------------------------
# random streams: the same numbers as the cpu mode


def assert_draws_equal(actual, expected, what):
    assert actual.dtype == expected.dtype, what
    if DRAW_RTOL and actual.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=DRAW_RTOL, atol=0, err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def ew_draws(rs):
    def step(s, x):
        n = rs.normal(size=(S,), avg=0.5, std=2.0)
        u = rs.uniform(size=(S,), low=-1.0, high=3.0)
        k = rs.binomial(size=(S,), n=3, p=0.3)
        return 0.5 * x + s * n + u * 0.1, n, u, k
    return step


def block_draws(rs):
    def step(x, h, W, U, b):
        n = rs.normal(size=(H,))
        k = rs.binomial(size=(H,), p=0.7)
        u = rs.uniform()
        return np.tanh(h @ W + x @ U + b + 0.1 * n) * k + u, n, k, u
    return step


@pytest.mark.parametrize("kind", ["elementwise", "block+"])
def test_random_streams_same_numbers_as_cpu(rng, patterns, kind):
    seed = int(rng.integers(2**63))
    if kind == "elementwise":
        make = ew_draws
        kwargs = dict(sequences=rng.random((T, S)), outputs_info=[rng.random(S), None, None, None])
    else:
        X, h0, W, U, b = rnn_inputs(rng)
        make = block_draws
        kwargs = dict(sequences=X, outputs_info=[h0, None, None, None], non_sequences=[W, U, b])
    results = {}
    for mode in ("cuda", "cpu", "python"):
        rs = ns.RandomStreams(seed)
        out, _ = _scan(make(rs), mode, ns.scan, kwargs)
        after = rs.uniform(size=3)          # the stream advanced as far in every mode
        results[mode] = out, after
    check_pattern(patterns, kind)
    (out_c, after_c) = results["cuda"]
    for mode in ("cpu", "python"):
        out_m, after_m = results[mode]
        np.testing.assert_array_equal(after_c, after_m, err_msg=f"stream after the scan, {mode}")
        for i in (1, 2, 3):
            assert_draws_equal(out_c[i], out_m[i], f"draw {i}, cuda vs {mode}")
        assert_same(out_c[0], out_m[0], f"state, cuda vs {mode}")
    # draws are fresh at every step
    assert not np.array_equal(out_c[1][0], out_c[1][1])


def test_random_streams_block1(rng, patterns):
    seed = int(rng.integers(2**63))
    h0 = rng.random(2)
    results = {}
    for mode in ("cuda", "cpu"):
        rs = ns.RandomStreams(seed)
        results[mode], _ = _scan(lambda h: (0.5 * h + rs.uniform(size=(2,)), rs.normal(size=(2,))),
                                 mode, ns.scan, dict(outputs_info=[h0, None], n_steps=T))
    check_pattern(patterns, "block1")
    assert_draws_equal(results["cuda"][1], results["cpu"][1], "normal draws")
    assert_same(results["cuda"][0], results["cpu"][0], "state")


def test_random_streams_in_nested_scan(rng, patterns):
    seed = int(rng.integers(2**63))
    X, h0, W, _, _ = rnn_inputs(rng)
    results = {}
    for mode in ("cuda", "cpu"):
        rs = ns.RandomStreams(seed)

        def step(x, h, W):
            inner, _ = ns.scan(lambda acc: 0.5 * acc + rs.normal(size=(H,)), outputs_info=h,
                               n_steps=2)
            return np.tanh(h @ W + inner[-1] + x.sum()), rs.uniform(size=(2,))

        results[mode], _ = _scan(step, mode, ns.scan,
                                 dict(sequences=X, outputs_info=[h0, None], non_sequences=[W]))
    check_pattern(patterns, "block+")
    assert_draws_equal(results["cuda"][1], results["cpu"][1], "uniform draws")
    assert_same(results["cuda"][0], results["cpu"][0], "state")


# ------------------------------------------------------------------------------------------------
# shared variables


def test_shared_updates_elementwise(rng, patterns):
    k = ns.shared(rng.random(S), name="k")
    start = k.get_value().copy()

    def step(s, x):
        return 0.5 * x + s + 0.1 * k, {k: k + x}

    (_, updates), _ = run_cuda(step, sequences=rng.random((T, S)), outputs_info=rng.random(S))
    check_pattern(patterns, "elementwise")
    np.testing.assert_array_equal(k.get_value(), start)      # not applied by scan
    updates.apply()
    assert not np.array_equal(k.get_value(), start)


def test_shared_updates_block(rng, patterns):
    X, h0, W, U, b = rnn_inputs(rng)
    total = ns.shared(np.float64(rng.random()))
    count = ns.shared(0)

    def step(x, h, W, U, b):
        h2 = np.tanh(h @ W + x @ U + b + 0.01 * total)
        return h2, {total: total + h2.sum(), count: count + 1}

    (_, updates), _ = run_cuda(step, sequences=X, outputs_info=h0, non_sequences=[W, U, b])
    check_pattern(patterns, "block+")
    assert updates[count] == T


def test_shared_read_only(rng, patterns):
    k = ns.shared(rng.random(S))
    run_cuda(lambda s, x: 0.5 * x + s * k, sequences=rng.random((T, S)),
             outputs_info=rng.random(S))
    check_pattern(patterns, "elementwise")


# ------------------------------------------------------------------------------------------------
# device arrays in, device arrays out


@pytest.mark.parametrize("kind", ["elementwise", "block+"])
def test_device_arrays(rng, patterns, kind):
    if kind == "elementwise":
        fn = logistic
        host = dict(sequences=rng.random((T, S)) * 0.1, outputs_info=rng.random(S),
                    non_sequences=[2.5 + rng.random(S)])
    else:
        X, h0, W, U, b = rnn_inputs(rng)
        fn = rnn
        host = dict(sequences=X, outputs_info=h0, non_sequences=[W, U, b])
    # device sequences and initial state; the first non-sequence on the device, the others not
    dev = dict(sequences=cuda.to_device(host["sequences"]),
               outputs_info=cuda.to_device(host["outputs_info"]),
               non_sequences=[cuda.to_device(host["non_sequences"][0]),
                              *host["non_sequences"][1:]])
    out, _ = ns.scan(fn, mode="cuda", **dev)
    expected, _ = ns.scan(fn, mode="python", **host)
    check_pattern(patterns, kind)
    assert hasattr(out, "copy_to_host"), f"device inputs gave a {type(out).__name__} result"
    assert_same(out.copy_to_host(), expected)
    for name in ("sequences", "outputs_info"):
        np.testing.assert_array_equal(dev[name].copy_to_host(), host[name], err_msg=name)
    np.testing.assert_array_equal(dev["non_sequences"][0].copy_to_host(),
                                  host["non_sequences"][0])


def test_device_arrays_foldl_and_no_steps(rng):
    seq, x0 = rng.random((T, S)), rng.random(S)
    last, _ = ns.foldl(lambda s, x: 0.5 * x + s, sequences=cuda.to_device(seq),
                       outputs_info=cuda.to_device(x0), mode="cuda")
    assert hasattr(last, "copy_to_host")
    assert_same(last.copy_to_host(),
                ns.foldl(lambda s, x: 0.5 * x + s, sequences=seq, outputs_info=x0,
                         mode="python")[0])
    none, _ = ns.scan(lambda s, x: 0.5 * x + s, sequences=cuda.to_device(seq), outputs_info=x0,
                      n_steps=0, mode="cuda")
    assert hasattr(none, "copy_to_host") and none.shape == (0, S)


# ------------------------------------------------------------------------------------------------
# map, reduce, foldl, foldr; n_steps=0


def ew_acc(s, acc):
    return 0.5 * acc + np.sin(s)


def block_acc(x, acc, W):
    return np.tanh(acc @ W * 0.5 + x.sum())


@pytest.mark.parametrize("family", ["map", "reduce", "foldl", "foldr", "reduce_backwards"])
@pytest.mark.parametrize("kind", ["elementwise", "block+"])
def test_family(rng, patterns, family, kind):
    if kind == "elementwise":
        seq, init, nonseq = rng.random((T, S)), rng.random(S), None
        step = ew_acc
    else:
        X, init, W, _, _ = rnn_inputs(rng)
        seq, nonseq, step = X, [W], block_acc
    if family == "map":
        if kind == "elementwise":
            run_cuda(lambda s, a: np.exp(s) * a, scan=ns.map, sequences=seq,
                     non_sequences=rng.random(S))
        else:
            run_cuda(lambda x, W: np.tanh(x @ W[:3]), scan=ns.map, sequences=seq,
                     non_sequences=[W])
    elif family == "reduce_backwards":
        run_cuda(step, scan=lambda *a, **k: ns.reduce(*a, go_backwards=True, **k),
                 sequences=seq, outputs_info=init, non_sequences=nonseq)
    else:
        run_cuda(step, scan=getattr(ns, family), sequences=seq, outputs_info=init,
                 non_sequences=nonseq)
    check_pattern(patterns, kind)


@pytest.mark.parametrize("kind", ["elementwise", "block+", "block1"])
@pytest.mark.parametrize("scan", [ns.scan, ns.foldl], ids=["scan", "foldl"])
def test_no_steps(rng, patterns, kind, scan):
    if kind == "elementwise":
        kwargs = dict(sequences=rng.random((T, S)), outputs_info=rng.random(S))
        step = ew_acc
    elif kind == "block+":
        X, h0, W, _, _ = rnn_inputs(rng)
        kwargs = dict(sequences=X, outputs_info=h0, non_sequences=[W])
        step = block_acc
    else:
        kwargs = dict(sequences=rng.random((T, 3)), outputs_info=rng.random(3))
        step = ew_acc
    if scan is ns.scan:
        kwargs["n_steps"] = 0
    else:                            # foldl has no n_steps: an empty sequence
        kwargs["sequences"] = kwargs["sequences"][:0]
    (out, _), _ = run_cuda(step, scan=scan, **kwargs)
    if scan is ns.scan:
        assert out.shape[0] == 0
    else:
        assert_same(out, kwargs["outputs_info"])
    check_pattern(patterns, kind)


def test_no_steps_map_output_of_foldl_is_an_error(rng):
    kwargs = dict(sequences=rng.random((0, S)), outputs_info=[rng.random(S), None])
    fn = lambda s, x: (0.5 * x + s, s * 2)      # noqa: E731
    with pytest.raises(ValueError, match="n_steps=0"):
        ns.foldl(fn, mode="python", **kwargs)
    with pytest.raises(ValueError, match="n_steps=0"):
        ns.foldl(fn, mode="cuda", **kwargs)


# ------------------------------------------------------------------------------------------------
# batched pattern: ns.vmap's parallel map, one thread or one block per batch element


B = 3           # batch size


def test_vmap_thread_per_element(rng, patterns):
    def f(x0, s):           # a scan inside asks for CUDA: the whole map runs there
        return ns.foldl(lambda si, acc: 0.5 * acc + np.sin(si), sequences=s, outputs_info=x0,
                        mode="cuda")[0]

    x0, s = rng.random((B, 3)), rng.random((B, T, 3))
    out = ns.vmap(f)(x0, s)
    assert isinstance(out, np.ndarray)
    expected = [ns.foldl(lambda si, acc: 0.5 * acc + np.sin(si), sequences=s[i],
                         outputs_info=x0[i], mode="python")[0] for i in range(B)]
    assert_same(out, np.stack(expected))
    p = patterns[-1]
    assert p.kind == "batched" and p.lanes == 1, p
    # device arrays in: the map runs on CUDA by itself, and its result stays on the device
    dev = ns.vmap(f)(cuda.to_device(x0), cuda.to_device(s))
    assert hasattr(dev, "copy_to_host")
    assert_same(dev.copy_to_host(), out)


def test_vmap_block_per_element(rng, patterns, monkeypatch):
    # an RNN per batch element (states of 20 values: a block of threads each); the default
    # mode decides where the map and the scans inside it run
    args = (rng.standard_normal((2, 20)), rng.standard_normal((2, T, 20)),
            rng.standard_normal((20, 20)) * 0.3)
    results = {}
    for mode in ("cuda", "python"):
        monkeypatch.setenv("NUMBASCAN_MODE", mode)
        results[mode] = ns.vmap(batched_rnn, in_axes=(0, 0, None))(*args)
    p = patterns[-1]
    assert p.kind == "batched" and p.lanes > 1, p
    got, expected = results["cuda"], results["python"]
    assert isinstance(got, tuple) and len(got) == 2
    for g, e in zip(got, expected):
        assert_same(g, e)


def test_vmap_default_mode_cuda(rng, patterns, monkeypatch):
    # no scan inside: NUMBASCAN_MODE decides where the map runs
    W = rng.standard_normal((H, H))
    x = rng.standard_normal((B, H))
    results = {}
    for mode in ("cuda", "python"):
        monkeypatch.setenv("NUMBASCAN_MODE", mode)
        results[mode] = ns.vmap(lambda x, W: np.tanh(W @ x), in_axes=(0, None))(x, W)
    assert patterns and patterns[-1].kind == "batched"
    assert isinstance(results["cuda"], np.ndarray)
    assert_same(results["cuda"], results["python"])


# ------------------------------------------------------------------------------------------------
# errors


def test_untraceable_step_is_a_clear_error(rng):
    def median_step(s, x):
        return np.median(x) + s

    with pytest.raises(TracingError, match="np.median") as info:
        ns.scan(median_step, sequences=rng.random((T, S)), outputs_info=rng.random(S),
                mode="cuda")
    message = str(info.value)
    assert "mode='cuda'" in message and "median_step" in message


def test_python_control_flow_is_a_clear_error(rng):
    def branching_step(s, x):
        return x * 2 if x.sum() > 0 else x

    with pytest.raises(TracingError, match="np.where") as info:
        ns.scan(branching_step, sequences=rng.random((T, S)), outputs_info=rng.random(S),
                mode="cuda")
    assert "branching_step" in str(info.value)


# ------------------------------------------------------------------------------------------------
# real CUDA compilation (PTX), no GPU needed


def test_kernels_compile_to_ptx():
    """The kernels of tests/cuda_ptx.py's scans compile (and assemble) for a real GPU."""
    script = pathlib.Path(__file__).with_name("cuda_ptx.py")
    root = str(script.parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
    report = proc.stdout + proc.stderr
    if "NVVM-UNAVAILABLE" in proc.stdout:
        pytest.skip("compiling kernels to PTX without a GPU needs libNVVM, from the "
                    "nvidia-cuda-nvcc wheel (pip install nvidia-cuda-nvcc-cu12): "
                    + proc.stdout.strip())
    assert proc.returncode == 0, f"kernels that do not compile for a real GPU:\n{report}"
    assert "summary:" in proc.stdout and " 0 failed" in proc.stdout, report


def test_show_prints_the_kernel(rng):
    import io
    S, x0 = rng.random((3, 100)), rng.random(100)
    text = ns.show(lambda s, x: 2.5 * x * (1 - x) + s, sequences=S, outputs_info=x0,
                   mode="cuda", file=io.StringIO())
    assert "kernel pattern: Pattern(kind='elementwise'" in text
    assert "@cuda.jit" in text and "for t in range(n_steps):" in text
