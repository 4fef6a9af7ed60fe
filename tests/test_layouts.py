"""Scan layouts (SPEC sections 1, 2, 4 and 5): the compiled mode against the reference mode.

Every test runs the same scan with mode="cpu" (numba-compiled) and mode="python" (the plain
NumPy reference loop) on fresh random inputs and checks that outputs, updates, dtypes and
shapes agree (`run_both`, see conftest.py), and, where it is easy, against a NumPy loop written
out by hand.
"""
import numpy as np
import pytest
import scipy.special as sps

import numbascan as ns
import numbascan.runtime.cache
from conftest import assert_close, assert_same, assert_same_outputs, run_both


def weighted(*args):
    """A distinct weight per argument position: the result reveals the argument order."""
    return sum((0.5 + 0.25 * i) * a for i, a in enumerate(args))


def windows(seq, taps, n, backwards=False):
    """What a step reads from `seq` with `taps` at steps 0..n-1 (a list per step)."""
    s = seq[::-1] if backwards else seq
    m = max(0, -min(taps))
    return [[s[t + m + tap] for tap in taps] for t in range(n)]


# ------------------------------------------------------------------------------------------------
# sequences and their taps


@pytest.mark.parametrize("taps", [[-3, 2, -1], [3], [-1, 0, 1], [0], [-2], [2, -2, 0]])
def test_sequence_taps(rng, taps):
    x = rng.standard_normal((11, 2))
    m, M = max(0, -min(taps)), max(0, max(taps))
    out, upd = run_both(weighted, sequences=dict(input=x, taps=taps))
    n = len(x) - m - M
    assert out.shape == (n, 2)
    assert len(upd) == 0
    expected = [weighted(*w) for w in windows(x, taps, n)]
    assert_close(out, expected)


def test_sequence_taps_spec_example(rng):
    """Taps [-3, 2, -1] read seq[t], seq[t+5], seq[t+2]; taps [3] read seq[t+3]."""
    x = rng.standard_normal(10)
    out, _ = run_both(lambda a, b, c: a + 10 * b + 100 * c,
                      sequences=dict(input=x, taps=[-3, 2, -1]))
    t = np.arange(5)
    assert_close(out, x[t] + 10 * x[t + 5] + 100 * x[t + 2])
    out, _ = run_both(lambda a: 2 * a, sequences=dict(input=x, taps=[3]))
    assert_close(out, 2 * x[3:])


def test_int_tap_shorthand(rng):
    x = rng.standard_normal(8)
    a, _ = run_both(lambda v: v * 3.0, sequences=dict(input=x, taps=-2))
    b, _ = run_both(lambda v: v * 3.0, sequences=dict(input=x, taps=[-2]))
    assert_same(a, b)
    assert_close(a, 3.0 * x[:6])
    c, _ = run_both(lambda v: v * 3.0, sequences=dict(input=x, taps=2))
    assert_close(c, 3.0 * x[2:])


def test_plain_array_is_tap_zero(rng):
    x = rng.standard_normal((6, 3))
    a, _ = run_both(lambda v: v * 3.0, sequences=x)
    b, _ = run_both(lambda v: v * 3.0, sequences=[dict(input=x)])
    c, _ = run_both(lambda v: v * 3.0, sequences=[dict(input=x, taps=[0])])
    assert_same(a, b)
    assert_same(a, c)
    assert_close(a, 3.0 * x)


def test_several_sequences_step_count(rng):
    x = rng.standard_normal(12)       # taps [-3, 2, -1]: 12 - 3 - 2 = 7 steps
    y = rng.standard_normal(9)        # taps [3]: 9 - 3 = 6 steps
    z = rng.standard_normal(10)       # taps [-1, 0, 1]: 10 - 1 - 1 = 8 steps
    seqs = [dict(input=x, taps=[-3, 2, -1]), dict(input=y, taps=[3]),
            dict(input=z, taps=[-1, 0, 1])]
    out, _ = run_both(weighted, sequences=seqs)
    assert out.shape == (6,)
    expected = [weighted(*a, *b, *c) for a, b, c in zip(
        windows(x, [-3, 2, -1], 6), windows(y, [3], 6), windows(z, [-1, 0, 1], 6))]
    assert_close(out, expected)


# ------------------------------------------------------------------------------------------------
# outputs_info and output taps


def _rec1(h):
    return 0.9 * np.tanh(h) + 0.1


@pytest.mark.parametrize("form", ["array", "dict", "dict_taps"])
def test_output_tap_minus_one_forms(rng, form):
    x0 = rng.standard_normal(3)
    info = {"array": x0, "dict": dict(initial=x0), "dict_taps": dict(initial=x0, taps=[-1])}[form]
    out, _ = run_both(_rec1, outputs_info=info, n_steps=5)
    expected, h = [], x0
    for _ in range(5):
        h = _rec1(h)
        expected.append(h)
    assert out.shape == (5, 3)
    assert_close(out, expected)


def _numpy_taps_loop(step, X, taps, n, seqs=()):
    L = max(-t for t in taps)
    hist = list(X[:L])
    out = []
    for t in range(n):
        args = [s[t] for s in seqs] + [hist[L + t + tap] for tap in taps]
        h = step(*args)
        hist.append(h)
        out.append(h)
    return np.array(out)


def _two_taps(x, a, b):
    return 0.3 * x + 0.7 * a - 0.45 * b


@pytest.mark.parametrize("taps,rows", [([-2, -1], 2), ([-1, -2], 2), ([-3, -5], 5),
                                       ([-5, -3], 5), ([-2, -1], 7)])
def test_output_taps(rng, taps, rows):
    """X[k] plays out[k - L]; taps are passed in the order given; extra rows are ignored."""
    X = rng.standard_normal((rows, 2))
    x = rng.standard_normal((8, 2))
    out, _ = run_both(_two_taps, sequences=x, outputs_info=dict(initial=X, taps=taps))
    assert out.shape == (8, 2)
    assert_close(out, _numpy_taps_loop(_two_taps, X, taps, 8, seqs=[x]))


def test_output_taps_scalar_states(rng):
    X = rng.standard_normal(3)
    out, _ = run_both(lambda a, b: 0.5 * a + 0.4 * b + 0.1,
                      outputs_info=dict(initial=X, taps=[-3, -1]), n_steps=6)
    assert out.shape == (6,)
    assert_close(out, _numpy_taps_loop(lambda a, b: 0.5 * a + 0.4 * b + 0.1, X, [-3, -1], 6))


def _map_and_state(x, h):
    return x * 2.0, h + x, (x > 0)


def test_map_outputs_mixed_with_states(rng):
    x = rng.standard_normal((7, 2))
    h0 = rng.standard_normal(2)
    out, _ = run_both(_map_and_state, sequences=x, outputs_info=[None, h0, dict(initial=None)])
    assert isinstance(out, list) and len(out) == 3
    assert_close(out[0], 2 * x)
    assert_close(out[1], h0 + np.cumsum(x, axis=0))
    assert out[2].dtype == np.bool_
    assert_close(out[2], x > 0)


def test_outputs_info_none_argument(rng):
    x = rng.standard_normal((5, 3))
    out, _ = run_both(lambda v: (v + 1.0, v.sum()), sequences=x, outputs_info=None)
    assert_close(out[0], x + 1)
    assert_close(out[1], x.sum(axis=1))
    out2, _ = run_both(lambda v: (v + 1.0, v.sum()), sequences=x)
    assert_same_outputs(out, out2)


def test_outputs_info_list_of_none(rng):
    x = rng.standard_normal((5, 3))
    out, _ = run_both(lambda v: (v * v, -v), sequences=x, outputs_info=[None, None])
    assert_close(out[0], x * x)
    assert_close(out[1], -x)


# ------------------------------------------------------------------------------------------------
# non_sequences


def _nonseq_step(x, h, W, b, c, s):
    return np.tanh(W @ h + x * b) + c * s


def test_non_sequences(rng):
    x = rng.standard_normal((6, 3))
    h0 = rng.standard_normal(3)
    W = rng.standard_normal((3, 3)) * 0.5
    b = rng.standard_normal(3)
    c = np.array(rng.standard_normal())        # 0-d array
    s = 0.25                                  # Python scalar
    out, _ = run_both(_nonseq_step, sequences=x, outputs_info=h0, non_sequences=[W, b, c, s])
    expected, h = [], h0
    for t in range(6):
        h = _nonseq_step(x[t], h, W, b, c, s)
        expected.append(h)
    assert_close(out, expected)


def test_non_sequences_python_int_and_single(rng):
    x = rng.integers(-5, 5, size=7)
    out, _ = run_both(lambda v, k: v * k, sequences=x, non_sequences=3)
    assert out.dtype == (x * 3).dtype
    assert_close(out, x * 3)
    A = rng.standard_normal((2, 2))
    out, _ = run_both(lambda h, A: A @ h, outputs_info=np.array([1.0, -0.5]), non_sequences=A,
                      n_steps=4)
    expected, h = [], np.array([1.0, -0.5])
    for _ in range(4):
        h = A @ h
        expected.append(h)
    assert_close(out, expected)


# ------------------------------------------------------------------------------------------------
# Theano's argument-order example (SPEC section 1)


def _theano_example_step(s1_m3, s1_p2, s1_m1, s2, s3_p3, o1_m3, o1_m5, o3_m1, a1, a2):
    o1 = 0.05 * o1_m3 - 0.07 * o1_m5 + 1.0 * s1_m3 + 2.0 * s1_p2 + 3.0 * s1_m1 + a1
    o2 = 5.0 * s2 - 7.0 * s3_p3 + a2
    o3 = 0.5 * np.tanh(o3_m1) + 0.11 * s2 * a1 - 0.13 * a2
    return o1, o2, o3


def _theano_example_inputs(rng, n):
    d = 2
    return dict(S1=rng.standard_normal((n + 5, d)), S2=rng.standard_normal((n, d)),
                S3=rng.standard_normal((n + 3, d)), O1=rng.standard_normal((5, d)),
                O2=rng.standard_normal(d), O3=rng.standard_normal(d),
                A1=rng.standard_normal(d), A2=rng.standard_normal(d))


def _theano_example_numpy(v, n):
    hist1 = list(v["O1"])
    o3 = v["O3"]
    outs = [[], [], []]
    for t in range(n):
        args = (v["S1"][t + 3 - 3], v["S1"][t + 3 + 2], v["S1"][t + 3 - 1], v["S2"][t],
                v["S3"][t + 3], hist1[5 + t - 3], hist1[5 + t - 5], o3, v["A1"], v["A2"])
        o1, o2, o3 = _theano_example_step(*args)
        hist1.append(o1)
        for lst, o in zip(outs, (o1, o2, o3)):
            lst.append(o)
    return [np.array(o) for o in outs]


def test_theano_argument_order_example(rng):
    """SPEC's example, verbatim: `dict(initial=O2, taps=None)` is a map output (not passed)."""
    n = 6
    v = _theano_example_inputs(rng, n)
    out, _ = run_both(
        _theano_example_step,
        sequences=[dict(input=v["S1"], taps=[-3, 2, -1]), v["S2"], dict(input=v["S3"], taps=3)],
        outputs_info=[dict(initial=v["O1"], taps=[-3, -5]), dict(initial=v["O2"], taps=None),
                      v["O3"]],
        non_sequences=[v["A1"], v["A2"]])
    expected = _theano_example_numpy(v, n)
    assert len(out) == 3
    for o, e in zip(out, expected):
        assert_close(o, e)


def test_theano_argument_order_example_map_as_none(rng):
    """The same layout with O2 written as None (unambiguous map output)."""
    n = 6
    v = _theano_example_inputs(rng, n)
    out, _ = run_both(
        _theano_example_step,
        sequences=[dict(input=v["S1"], taps=[-3, 2, -1]), v["S2"], dict(input=v["S3"], taps=3)],
        outputs_info=[dict(initial=v["O1"], taps=[-3, -5]), None, v["O3"]],
        non_sequences=[v["A1"], v["A2"]])
    for o, e in zip(out, _theano_example_numpy(v, n)):
        assert_close(o, e)


# ------------------------------------------------------------------------------------------------
# n_steps


def _acc(x, h):
    return h * 0.5 + x


def test_n_steps_none_from_shortest_sequence(rng):
    x = rng.standard_normal(9)
    y = rng.standard_normal(6)
    out, _ = run_both(lambda a, b, h: h * 0.5 + a * b, sequences=[x, y],
                      outputs_info=np.float64(rng.standard_normal()))
    assert out.shape == (6,)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_n_steps_explicit(rng, n):
    x = rng.standard_normal(8)
    h0 = np.float64(rng.standard_normal())
    out, _ = run_both(_acc, sequences=x, outputs_info=h0, n_steps=n)
    assert_close(out, _numpy_taps_loop(_acc, np.array([h0]), [-1], n, seqs=[x]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_n_steps_zero(rng, dtype):
    x = rng.standard_normal((5, 3)).astype(dtype) + 1
    h0 = rng.standard_normal((2,)).astype(dtype) + 1
    out, upd = run_both(lambda v, h: (h + v[:2], v * 2), sequences=x, outputs_info=[h0, None],
                        n_steps=0)
    assert out[1].shape == (0, 3) and out[1].dtype == dtype
    assert out[0].shape == (0, 2) and out[0].dtype == dtype
    assert len(upd) == 0


def test_n_steps_zero_with_taps(rng):
    X = rng.standard_normal((3, 2, 2))
    out, _ = run_both(lambda a, b: a @ b, outputs_info=dict(initial=X, taps=[-3, -1]), n_steps=0)
    assert out.shape == (0, 2, 2) and out.dtype == np.float64


def test_n_steps_without_sequences(rng):
    h0 = rng.standard_normal(4)
    A = rng.standard_normal((4, 4)) * 0.4
    out, _ = run_both(lambda h, A: np.tanh(A @ h), outputs_info=h0, non_sequences=A, n_steps=7)
    expected, h = [], h0
    for _ in range(7):
        h = np.tanh(A @ h)
        expected.append(h)
    assert_close(out, expected)


def test_n_steps_numpy_int(rng):
    h0 = rng.standard_normal(2)
    a, _ = run_both(_rec1, outputs_info=h0, n_steps=np.int64(3))
    b, _ = run_both(_rec1, outputs_info=h0, n_steps=3)
    assert_same(a, b)


# ------------------------------------------------------------------------------------------------
# go_backwards


@pytest.mark.parametrize("n", [None, 4])
def test_go_backwards(rng, n):
    x = rng.standard_normal((7, 2))
    h0 = rng.standard_normal(2)
    out, _ = run_both(_acc, sequences=x, outputs_info=h0, go_backwards=True, n_steps=n)
    steps = 7 if n is None else n
    # the last `steps` entries, walked from the end; outputs in iteration order
    assert_close(out, _numpy_taps_loop(_acc, h0[None], [-1], steps, seqs=[x[::-1]]))


@pytest.mark.parametrize("n", [None, 3])
def test_go_backwards_with_taps(rng, n):
    x = rng.standard_normal((10, 2))
    y = rng.standard_normal((9, 2))
    X = rng.standard_normal((2, 2))
    seqs = [dict(input=x, taps=[-2, 1]), dict(input=y, taps=[0, 1])]
    out, _ = run_both(lambda a, b, c, d, h1, h2: 0.3 * h1 - 0.2 * h2 + a + 2 * b + 3 * c + 4 * d,
                      sequences=seqs, outputs_info=dict(initial=X, taps=[-1, -2]),
                      go_backwards=True, n_steps=n)
    steps = 7 if n is None else n
    assert out.shape == (steps, 2)
    wx, wy = windows(x, [-2, 1], steps, backwards=True), windows(y, [0, 1], steps, True)
    hist, expected = list(X), []
    for t in range(steps):
        h = 0.3 * hist[-1] - 0.2 * hist[-2] + wx[t][0] + 2 * wx[t][1] + 3 * wy[t][0] + 4 * wy[t][1]
        hist.append(h)
        expected.append(h)
    assert_close(out, expected)


# ------------------------------------------------------------------------------------------------
# until


def _until_step(x, h):
    h = h + x
    return h, ns.until(h > 2.0)


def test_until_stops_after_condition(rng):
    x = rng.uniform(0.3, 0.6, size=20)
    out, _ = run_both(_until_step, sequences=x, outputs_info=np.float64(0.0))
    c = np.cumsum(x)
    k = int(np.argmax(c > 2.0))
    assert out.shape == (k + 1,)
    assert out[-1] > 2.0 and (k == 0 or out[-2] <= 2.0)
    assert_close(out, c[:k + 1])


def test_until_bounded_by_n_steps(rng):
    x = rng.uniform(0.01, 0.02, size=20)
    out, _ = run_both(_until_step, sequences=x, outputs_info=np.float64(0.0), n_steps=6)
    assert out.shape == (6,)
    assert_close(out, np.cumsum(x)[:6])
    out, _ = run_both(_until_step, sequences=x, outputs_info=np.float64(0.0))
    assert out.shape == (20,)


def test_until_first_step(rng):
    x = rng.uniform(3.0, 4.0, size=5)
    out, _ = run_both(_until_step, sequences=x, outputs_info=np.float64(0.0))
    assert out.shape == (1,)


def test_until_in_any_order_with_map_outputs_and_updates(rng):
    x = rng.uniform(0.3, 0.6, size=15)
    k = ns.shared(np.float64(rng.standard_normal()), name="k")
    k0 = k.get_value()

    def step(v, h):
        h2 = h + v
        return ns.until(h2 > 2.5), {k: k + v}, (h2, v * 3.0)

    out, upd = run_both(step, sequences=x, outputs_info=[np.float64(0.0), None])
    c = np.cumsum(x)
    stop = int(np.argmax(c > 2.5))
    assert out[0].shape == out[1].shape == (stop + 1,)
    assert_close(out[1], 3.0 * x[:stop + 1])
    assert_close(upd[k], k0 + c[stop])
    assert_same(k.get_value(), k0)


def test_until_with_go_backwards(rng):
    x = rng.uniform(0.3, 0.6, size=12)
    out, _ = run_both(_until_step, sequences=x, outputs_info=np.float64(0.0), go_backwards=True)
    c = np.cumsum(x[::-1])
    assert_close(out, c[:int(np.argmax(c > 2.0)) + 1])


# ------------------------------------------------------------------------------------------------
# return_list, single and multiple outputs


def test_return_list(rng):
    x = rng.standard_normal((4, 2))
    out, _ = run_both(lambda v: v * 2.0, sequences=x)
    assert isinstance(out, np.ndarray)
    out, _ = run_both(lambda v: v * 2.0, sequences=x, return_list=True)
    assert isinstance(out, list) and len(out) == 1
    assert_close(out[0], 2 * x)
    out, _ = run_both(lambda v: (v * 2.0, v + 1.0), sequences=x)
    assert isinstance(out, list) and len(out) == 2
    out, _ = run_both(lambda v: [v * 2.0], sequences=x)
    assert isinstance(out, np.ndarray)


# ------------------------------------------------------------------------------------------------
# nested scans


def _inner_over_row(row, h):
    sq, _ = ns.scan(lambda v, acc: acc + v * v, sequences=row, outputs_info=np.float64(0.0))
    return h + sq[-1]


def test_nested_scan_over_row(rng):
    X = rng.standard_normal((5, 4))
    out, _ = run_both(_inner_over_row, sequences=X, outputs_info=np.float64(1.0))
    assert_close(out, 1.0 + np.cumsum((X * X).sum(axis=1)))


def _inner_state(x, h):
    inner, _ = ns.scan(lambda g: 0.5 * g + x, outputs_info=h, n_steps=3)
    return inner[-1], inner.sum(axis=0)


def test_nested_scan_with_state(rng):
    X = rng.standard_normal((4, 2))
    h0 = rng.standard_normal(2)
    out, _ = run_both(_inner_state, sequences=X, outputs_info=[h0, None])
    h, e0, e1 = h0, [], []
    for x in X:
        gs = []
        g = h
        for _ in range(3):
            g = 0.5 * g + x
            gs.append(g)
        h = gs[-1]
        e0.append(h)
        e1.append(np.sum(gs, axis=0))
    assert_close(out[0], e0)
    assert_close(out[1], e1)


def test_nested_scan_reads_outer_values_from_closure(rng):
    X = rng.standard_normal((4, 3))
    V = rng.standard_normal(5)

    def step(x, h):
        inner, _ = ns.scan(lambda v: v * x.sum() + h, sequences=V)   # x, h from the outer step
        return h * 0.5 + inner.mean()

    out, _ = run_both(step, sequences=X, outputs_info=np.float64(0.3), extra_inputs=[V])
    h, expected = 0.3, []
    for x in X:
        h = h * 0.5 + (V * x.sum() + h).mean()
        expected.append(h)
    assert_close(out, expected)


def test_nested_scan_with_taps(rng):
    X = rng.standard_normal((3, 8, 2))
    W = rng.standard_normal(2) * 0.7

    def step(row, h):
        inner, _ = ns.scan(lambda a, b, g1, g2: g1 * W[0] + g2 * W[1] + a - b,
                           sequences=dict(input=row, taps=[-1, 1]),
                           outputs_info=dict(initial=h, taps=[-1, -2]))
        return inner[-2:]

    h0 = rng.standard_normal((2, 2))
    out, _ = run_both(step, sequences=X, outputs_info=h0, extra_inputs=[W])
    h, e = h0, []
    for row in X:
        hist = list(h)
        for t in range(6):
            hist.append(hist[-1] * W[0] + hist[-2] * W[1] + row[t] - row[t + 2])
        h = np.array(hist[-2:])
        e.append(h)
    assert_close(out, e)


def test_nested_scan_with_until(rng):
    X = rng.standard_normal((3, 8))

    def step(row):
        inner, _ = ns.scan(lambda a, b: (a + b, ns.until(a + b > 1.0)),
                           sequences=dict(input=row, taps=[-1, 1]))
        return inner[-1] + 0 * inner.shape[0], inner.shape[0] * 1.0

    out, _ = run_both(step, sequences=X)
    e0, e1 = [], []
    for row in X:
        s = row[:-2] + row[2:]
        k = int(np.argmax(s > 1.0)) if (s > 1.0).any() else len(s) - 1
        e0.append(s[k])
        e1.append(k + 1.0)
    assert_close(out[0], e0)
    assert_close(out[1], e1)


def test_doubly_nested_scan(rng):
    X = rng.standard_normal((3, 2, 4))

    def step(mat):
        def mid(row):
            r, _ = ns.scan(lambda v, a: a * 0.9 + v, sequences=row, outputs_info=np.float64(0))
            return r[-1]
        o, _ = ns.scan(mid, sequences=mat)
        return o

    out, _ = run_both(step, sequences=X)
    w = 0.9 ** np.arange(3, -1, -1)
    assert_close(out, (X * w).sum(axis=-1))


# ------------------------------------------------------------------------------------------------
# dtypes and shapes of states


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_sequences(rng, dtype):
    x = rng.integers(0, 9, size=7).astype(dtype)
    out, _ = run_both(lambda v, h: h + v.astype(np.int64), sequences=x,
                      outputs_info=np.int64(rng.integers(1, 5)))
    assert out.dtype == np.int64
    out, _ = run_both(lambda v: v * 2, sequences=x)
    assert out.dtype == (x[0] * 2).dtype
    assert_close(out, x * 2)


def test_integer_state(rng):
    x = rng.integers(-4, 9, size=7)
    h0 = np.int64(3)
    out, _ = run_both(lambda v, h: h * 2 - v, sequences=x, outputs_info=h0)
    assert out.dtype == np.int64
    assert_close(out, _numpy_taps_loop(lambda v, h: h * 2 - v, np.array([h0]), [-1], 7, [x]))


def test_bool_outputs_and_state(rng):
    x = rng.standard_normal(9)
    out, _ = run_both(lambda v, b: (np.logical_xor(b, v > 0.5), v > 0), sequences=x,
                      outputs_info=[np.bool_(True), None])
    assert out[0].dtype == np.bool_ and out[1].dtype == np.bool_
    assert_close(out[1], x > 0)
    b, e = True, []
    for v in x:
        b = b ^ (v > 0.5)
        e.append(b)
    assert_close(out[0], e)


def test_map_output_before_state(rng):
    """A map output listed before a fed-back one: the step still receives the state."""
    x = rng.standard_normal(5)
    out, _ = run_both(lambda v, h: (v * 2.0, h + v), sequences=x,
                      outputs_info=[None, np.float64(1.0)])
    assert_close(out[0], 2 * x)
    assert_close(out[1], 1.0 + np.cumsum(x))


def test_float32_states(rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    h0 = rng.standard_normal(3).astype(np.float32)
    W = (rng.standard_normal((3, 3)) * 0.5).astype(np.float32)
    out, _ = run_both(lambda v, h: np.tanh(W @ h + v), sequences=x, outputs_info=h0,
                      extra_inputs=[W])
    assert out.dtype == np.float32
    h, e = h0, []
    for v in x:
        h = np.tanh(W @ h + v)
        e.append(h)
    assert_close(out, e, rtol=1e-5, atol=1e-6)


def _f32_step(v, h, c):
    z = np.exp(-np.abs(v)) * 0.5 + h * 0.25 + sps.expit(c) - 1
    return np.tanh(z @ np.ones((3, 3), dtype=np.float32) / 3), (z.sum() + c.mean()) / 2


def test_float32_mixed_operations(rng):
    """Python scalars keep float32 states float32 (NumPy 2 rules), through many operations."""
    x = rng.standard_normal((5, 3)).astype(np.float32)
    h0 = rng.standard_normal(3).astype(np.float32)
    c0 = np.float32(rng.standard_normal())
    out, _ = run_both(_f32_step, sequences=x, outputs_info=[h0, c0])
    assert out[0].dtype == np.float32 and out[1].dtype == np.float32
    h, c, e0, e1 = h0, c0, [], []
    for v in x:
        h, c = _f32_step(v, h, c)
        e0.append(h)
        e1.append(c)
    assert_close(out[0], e0, rtol=1e-5, atol=1e-6)
    assert_close(out[1], e1, rtol=1e-5, atol=1e-6)


def test_scalar_states(rng):
    out, _ = run_both(lambda a, b: (b, a + b), outputs_info=[np.float64(0.7), np.float64(1.3)],
                      n_steps=8)
    a, b, e0, e1 = 0.7, 1.3, [], []
    for _ in range(8):
        a, b = b, a + b
        e0.append(a)
        e1.append(b)
    assert out[0].shape == (8,)
    assert_close(out[0], e0)
    assert_close(out[1], e1)


def test_matrix_recurrence(rng):
    M0 = rng.standard_normal((3, 3)) * 0.5
    A = rng.standard_normal((5, 3, 3)) * 0.5
    out, _ = run_both(lambda a, m: a @ m - 0.1 * m.T, sequences=A, outputs_info=M0)
    assert out.shape == (5, 3, 3)
    m, e = M0, []
    for a in A:
        m = a @ m - 0.1 * m.T
        e.append(m)
    assert_close(out, e)


# ------------------------------------------------------------------------------------------------
# SPEC section 5: every operation inside a step, compiled against the reference

_XC = np.random.default_rng(7).standard_normal((3, 3)) + 0.1    # read from the globals
_KS = ns.shared(np.random.default_rng(8).standard_normal(3) + 0.5, name="ks")

OPS = {
    # ufuncs
    "add": lambda x, p, u, m, i: np.add(x, p),
    "subtract": lambda x, p, u, m, i: np.subtract(x, p),
    "multiply": lambda x, p, u, m, i: np.multiply(x, p),
    "divide": lambda x, p, u, m, i: np.divide(x, p),
    "true_divide": lambda x, p, u, m, i: np.true_divide(x, p),
    "floor_divide": lambda x, p, u, m, i: np.floor_divide(x, p),
    "floor_divide_int": lambda x, p, u, m, i: np.floor_divide(i, 2),
    "power": lambda x, p, u, m, i: np.power(p, x),
    "power_int": lambda x, p, u, m, i: np.power(p, 3),
    "negative": lambda x, p, u, m, i: np.negative(x),
    "abs": lambda x, p, u, m, i: np.abs(x),
    "absolute": lambda x, p, u, m, i: np.absolute(x),
    "exp": lambda x, p, u, m, i: np.exp(x),
    "expm1": lambda x, p, u, m, i: np.expm1(u),
    "log": lambda x, p, u, m, i: np.log(p),
    "log1p": lambda x, p, u, m, i: np.log1p(u),
    "sqrt": lambda x, p, u, m, i: np.sqrt(p),
    "square": lambda x, p, u, m, i: np.square(x),
    "sin": lambda x, p, u, m, i: np.sin(x),
    "cos": lambda x, p, u, m, i: np.cos(x),
    "tan": lambda x, p, u, m, i: np.tan(u),
    "arcsin": lambda x, p, u, m, i: np.arcsin(u),
    "arccos": lambda x, p, u, m, i: np.arccos(u),
    "arctan": lambda x, p, u, m, i: np.arctan(x),
    "arctan2": lambda x, p, u, m, i: np.arctan2(x, u),
    "sinh": lambda x, p, u, m, i: np.sinh(x),
    "cosh": lambda x, p, u, m, i: np.cosh(x),
    "tanh": lambda x, p, u, m, i: np.tanh(x),
    "arctanh": lambda x, p, u, m, i: np.arctanh(u),
    "maximum": lambda x, p, u, m, i: np.maximum(x, u),
    "minimum": lambda x, p, u, m, i: np.minimum(x, u),
    "sign": lambda x, p, u, m, i: np.sign(x),
    "floor": lambda x, p, u, m, i: np.floor(x * 3),
    "ceil": lambda x, p, u, m, i: np.ceil(x * 3),
    "clip": lambda x, p, u, m, i: np.clip(x, -0.5, 0.5),
    "clip_traced": lambda x, p, u, m, i: np.clip(x, u, p),
    "where": lambda x, p, u, m, i: np.where(x > u, x, p),
    "where_scalar": lambda x, p, u, m, i: np.where(x > 0, x, 0.0),
    "all": lambda x, p, u, m, i: np.all(x > u),
    "any": lambda x, p, u, m, i: np.any(x > u),
    "all_axis": lambda x, p, u, m, i: np.all(m > 0, axis=1),
    "any_axis": lambda x, p, u, m, i: np.any(m > 0, axis=0),
    "int_mix": lambda x, p, u, m, i: i * x + i,
    # Python operators
    "op_add": lambda x, p, u, m, i: x + p + 1,
    "op_sub": lambda x, p, u, m, i: 1.5 - x - p,
    "op_mul": lambda x, p, u, m, i: 2 * x * p,
    "op_div": lambda x, p, u, m, i: x / p / 2,
    "op_rdiv": lambda x, p, u, m, i: 1.0 / p,
    "op_floordiv": lambda x, p, u, m, i: x // p,
    "op_mod": lambda x, p, u, m, i: x % p,
    "op_mod_int": lambda x, p, u, m, i: i % 3,
    "op_pow": lambda x, p, u, m, i: p ** x,
    "op_pow_const": lambda x, p, u, m, i: x ** 2 + p ** 0.5,
    "op_rpow": lambda x, p, u, m, i: 2.0 ** x,
    "op_neg_pos": lambda x, p, u, m, i: -x + (+p),
    "op_abs": lambda x, p, u, m, i: abs(x),
    # comparisons and logical ops
    "lt": lambda x, p, u, m, i: x < u,
    "le": lambda x, p, u, m, i: x <= u,
    "gt": lambda x, p, u, m, i: x > u,
    "ge": lambda x, p, u, m, i: x >= 0.1,
    "eq": lambda x, p, u, m, i: i == 2,
    "ne": lambda x, p, u, m, i: i != 2,
    "np_less": lambda x, p, u, m, i: np.less(x, u),
    "np_greater_equal": lambda x, p, u, m, i: np.greater_equal(x, u),
    "np_equal": lambda x, p, u, m, i: np.equal(i, 1),
    "logical_and": lambda x, p, u, m, i: np.logical_and(x > 0, u > 0),
    "logical_or": lambda x, p, u, m, i: np.logical_or(x > 0, u > 0),
    "logical_not": lambda x, p, u, m, i: np.logical_not(x > 0),
    "logical_xor": lambda x, p, u, m, i: np.logical_xor(x > 0, u > 0),
    "op_and_or_invert": lambda x, p, u, m, i: ((x > 0) & (u > 0)) | ~(x > u),
    "op_xor": lambda x, p, u, m, i: (x > 0) ^ (u > 0),
    # linear algebra
    "dot_11": lambda x, p, u, m, i: np.dot(x, u),
    "dot_21": lambda x, p, u, m, i: np.dot(m, x),
    "dot_12": lambda x, p, u, m, i: np.dot(x, m),
    "dot_22": lambda x, p, u, m, i: np.dot(m, m.T),
    "dot_0d": lambda x, p, u, m, i: np.dot(x, 2.0),
    "matmul_11": lambda x, p, u, m, i: np.matmul(x, u),
    "matmul_21": lambda x, p, u, m, i: np.matmul(m, x),
    "matmul_12": lambda x, p, u, m, i: np.matmul(x, m),
    "matmul_22": lambda x, p, u, m, i: np.matmul(m, _XC),
    "at_11": lambda x, p, u, m, i: x @ p,
    "at_21": lambda x, p, u, m, i: m @ x,
    "at_12": lambda x, p, u, m, i: x @ m,
    "at_22": lambda x, p, u, m, i: _XC @ m,
    "method_dot": lambda x, p, u, m, i: m.dot(x),
    "outer": lambda x, p, u, m, i: np.outer(x, u),
    "inner_11": lambda x, p, u, m, i: np.inner(x, u),
    "inner_21": lambda x, p, u, m, i: np.inner(m, x),
    "inner_22": lambda x, p, u, m, i: np.inner(m, _XC),
    "tensordot_1": lambda x, p, u, m, i: np.tensordot(m, _XC, axes=1),
    "tensordot_2": lambda x, p, u, m, i: np.tensordot(m, _XC, axes=2),
    "tensordot_0": lambda x, p, u, m, i: np.tensordot(x, u, axes=0),
    "tensordot_pairs": lambda x, p, u, m, i: np.tensordot(m, _XC, axes=([0], [1])),
    "tensordot_vec": lambda x, p, u, m, i: np.tensordot(m, x, axes=([1], [0])),
    # reductions
    "sum": lambda x, p, u, m, i: np.sum(m),
    "sum_axis0": lambda x, p, u, m, i: np.sum(m, axis=0),
    "sum_axis1_keepdims": lambda x, p, u, m, i: np.sum(m, axis=1, keepdims=True),
    "sum_neg_axis": lambda x, p, u, m, i: np.sum(m, axis=-1),
    "sum_tuple_axis": lambda x, p, u, m, i: np.sum(m, axis=(0, 1)),
    "sum_keepdims": lambda x, p, u, m, i: np.sum(m, keepdims=True),
    "sum_bool": lambda x, p, u, m, i: np.sum(m > 0),
    "sum_int": lambda x, p, u, m, i: np.sum(np.stack([i, i + 1])),
    "mean": lambda x, p, u, m, i: np.mean(m),
    "mean_axis": lambda x, p, u, m, i: np.mean(m, axis=1),
    "mean_keepdims": lambda x, p, u, m, i: np.mean(m, axis=0, keepdims=True),
    "prod": lambda x, p, u, m, i: np.prod(x),
    "prod_axis": lambda x, p, u, m, i: np.prod(m, axis=0),
    "max": lambda x, p, u, m, i: np.max(m),
    "max_axis": lambda x, p, u, m, i: np.max(m, axis=1),
    "max_keepdims": lambda x, p, u, m, i: np.max(m, axis=0, keepdims=True),
    "min": lambda x, p, u, m, i: np.min(x),
    "min_axis": lambda x, p, u, m, i: np.min(m, axis=0),
    "amax": lambda x, p, u, m, i: np.amax(m, axis=0),
    "argmax": lambda x, p, u, m, i: np.argmax(x),
    "argmax_2d": lambda x, p, u, m, i: np.argmax(m),
    "argmax_axis": lambda x, p, u, m, i: np.argmax(m, axis=1),
    "argmin": lambda x, p, u, m, i: np.argmin(x),
    "argmin_axis": lambda x, p, u, m, i: np.argmin(m, axis=0),
    "argmin_keepdims": lambda x, p, u, m, i: np.argmin(m, axis=0, keepdims=True),
    "cumsum": lambda x, p, u, m, i: np.cumsum(x),
    "cumsum_2d": lambda x, p, u, m, i: np.cumsum(m),
    "cumsum_axis0": lambda x, p, u, m, i: np.cumsum(m, axis=0),
    "cumsum_axis1": lambda x, p, u, m, i: np.cumsum(m, axis=1),
    # shapes
    "reshape": lambda x, p, u, m, i: np.reshape(m, (9,)),
    "reshape_minus1": lambda x, p, u, m, i: np.reshape(m, (-1, 1)),
    "reshape_method": lambda x, p, u, m, i: m.reshape(1, 9),
    "reshape_method_tuple": lambda x, p, u, m, i: x.reshape((3, 1)) * m,
    "transpose": lambda x, p, u, m, i: np.transpose(m) - m,
    "transpose_axes": lambda x, p, u, m, i: np.transpose(m, (1, 0)) * 2,
    "transpose_method": lambda x, p, u, m, i: m.transpose() + 1,
    "T": lambda x, p, u, m, i: m.T @ x,
    "T_1d": lambda x, p, u, m, i: x.T,
    "expand_dims": lambda x, p, u, m, i: np.expand_dims(x, 0) + np.expand_dims(u, 1),
    "newaxis": lambda x, p, u, m, i: x[:, None] * u[None, :],
    "squeeze": lambda x, p, u, m, i: np.squeeze(m[:, :1]),
    "squeeze_axis": lambda x, p, u, m, i: np.squeeze(np.expand_dims(x, 1), axis=1),
    "concatenate": lambda x, p, u, m, i: np.concatenate([x, u, p]),
    "concatenate_axis1": lambda x, p, u, m, i: np.concatenate([m, _XC], axis=1),
    "stack": lambda x, p, u, m, i: np.stack([x, u]),
    "stack_axis1": lambda x, p, u, m, i: np.stack([x, u, p], axis=1),
    "stack_scalars": lambda x, p, u, m, i: np.stack([x[0], u[1]]),
    "broadcast_to": lambda x, p, u, m, i: np.broadcast_to(x, (2, 3)),
    "broadcast_to_scalar": lambda x, p, u, m, i: np.broadcast_to(x[0], (3,)),
    "broadcasting": lambda x, p, u, m, i: m + x + x[0],
    # creation
    "zeros": lambda x, p, u, m, i: np.zeros(3) + x,
    "zeros_tuple": lambda x, p, u, m, i: np.zeros((2, 3)) - x,
    "ones": lambda x, p, u, m, i: np.ones((2, 3)) * x,
    "ones_int": lambda x, p, u, m, i: np.ones(3, dtype=np.int64) * i,
    "full": lambda x, p, u, m, i: np.full(3, 2.5) + x,
    "full_traced": lambda x, p, u, m, i: np.full((2,), x[0]),
    "zeros_like": lambda x, p, u, m, i: np.zeros_like(x) + u,
    "ones_like": lambda x, p, u, m, i: np.ones_like(m) * x,
    "ones_like_dtype": lambda x, p, u, m, i: np.ones_like(x, dtype=np.int64),
    "eye": lambda x, p, u, m, i: np.eye(3) @ m + np.eye(3),
    "arange": lambda x, p, u, m, i: np.arange(3) * x,
    "arange_float": lambda x, p, u, m, i: np.arange(0.5, 3.0, 1.0) + x,
    "astype_f32": lambda x, p, u, m, i: x.astype(np.float32),
    "astype_int": lambda x, p, u, m, i: (x * 3).astype(np.int64),
    "astype_bool": lambda x, p, u, m, i: np.floor(x).astype(bool),
    "astype_from_int": lambda x, p, u, m, i: i.astype(np.float64) / 3,
    "copy_method": lambda x, p, u, m, i: x.copy() * 2,
    "np_copy": lambda x, p, u, m, i: np.copy(m) + 1,
    # indexing
    "slice": lambda x, p, u, m, i: x[1:],
    "slice_neg_step": lambda x, p, u, m, i: x[::-1],
    "slice_neg_step2": lambda x, p, u, m, i: m[::-2, 1:],
    "slice_2d": lambda x, p, u, m, i: m[1:, :2],
    "slice_neg_bounds": lambda x, p, u, m, i: m[-2:, :-1],
    "slice_reverse_part": lambda x, p, u, m, i: m[2:0:-1, ::-1],
    "int_index": lambda x, p, u, m, i: x[1] + m[2, 0],
    "int_index_neg": lambda x, p, u, m, i: x[-1] * m[-1],
    "row": lambda x, p, u, m, i: m[1],
    "column": lambda x, p, u, m, i: m[:, 2],
    "ellipsis": lambda x, p, u, m, i: m[..., 0],
    "mixed_index": lambda x, p, u, m, i: m[-1, ::-2],
    "traced_index_seq": lambda x, p, u, m, i: x[i] + m[i, 2 - i],
    "traced_index_row": lambda x, p, u, m, i: m[i],
    "traced_index_closure": lambda x, p, u, m, i: _XC[i, (i + 1) % 3] * x,
    # .shape, .ndim, .dtype, len
    "shape": lambda x, p, u, m, i: x * m.shape[0] + m.shape[1],
    "ndim": lambda x, p, u, m, i: x * m.ndim,
    "dtype": lambda x, p, u, m, i: np.zeros(2, dtype=m.dtype) + x[0],
    "dtype_astype": lambda x, p, u, m, i: i.astype(x.dtype),
    "len": lambda x, p, u, m, i: x * len(m),
    "np_shape": lambda x, p, u, m, i: np.zeros(np.shape(m)) + x,
    "size": lambda x, p, u, m, i: x * m.size,
    # array methods
    "m_sum": lambda x, p, u, m, i: x.sum() + m.sum(axis=0),
    "m_sum_keepdims": lambda x, p, u, m, i: m.sum(axis=1, keepdims=True),
    "m_mean": lambda x, p, u, m, i: m.mean(1),
    "m_prod": lambda x, p, u, m, i: x.prod(),
    "m_max": lambda x, p, u, m, i: m.max(axis=0) + x.max(),
    "m_min": lambda x, p, u, m, i: m.min(1),
    "m_argmax": lambda x, p, u, m, i: m.argmax(axis=1),
    "m_argmin": lambda x, p, u, m, i: x.argmin(),
    "m_cumsum": lambda x, p, u, m, i: m.cumsum(axis=1),
    "m_clip": lambda x, p, u, m, i: x.clip(-0.5, 0.5),
    "m_all_any": lambda x, p, u, m, i: np.stack([(m > 0).all(), (x > 0).any()]),
    "m_squeeze": lambda x, p, u, m, i: m[None].squeeze(),
    "m_ravel": lambda x, p, u, m, i: m.ravel(),
    # shared values through operators
    "shared_add": lambda x, p, u, m, i: x + _KS,
    "shared_radd": lambda x, p, u, m, i: _KS + 1,
    "shared_mul": lambda x, p, u, m, i: _KS * x - x * _KS ** 2,
    "shared_matmul": lambda x, p, u, m, i: m @ _KS,
    "shared_ufunc": lambda x, p, u, m, i: np.exp(_KS) + np.dot(_KS, x),
    "shared_index": lambda x, p, u, m, i: _KS[1] + _KS[i],
    # scipy.special
    "expit": lambda x, p, u, m, i: sps.expit(x),
    "logit": lambda x, p, u, m, i: sps.logit(sps.expit(x)),
    "logit_direct": lambda x, p, u, m, i: sps.logit(u * 0.4 + 0.5),
    "erf": lambda x, p, u, m, i: sps.erf(x),
    "logsumexp": lambda x, p, u, m, i: sps.logsumexp(x),
    "logsumexp_axis": lambda x, p, u, m, i: sps.logsumexp(m, axis=1),
    "logsumexp_keepdims": lambda x, p, u, m, i: sps.logsumexp(m, axis=0, keepdims=True),
}


def _op_inputs(rng, n=4):
    return dict(x=rng.standard_normal((n, 3)), p=rng.uniform(0.5, 2.0, (n, 3)),
                u=rng.uniform(-0.9, 0.9, (n, 3)), m=rng.standard_normal((n, 3, 3)),
                i=rng.integers(0, 3, size=n))


@pytest.mark.parametrize("name", list(OPS))
def test_step_operation(rng, name):
    op = OPS[name]
    v = _op_inputs(rng)
    seqs = [v["x"], v["p"], v["u"], v["m"], v["i"]]
    out, _ = run_both(op, sequences=seqs, extra_inputs=[_XC])
    expected = np.array([op(*(s[t] for s in seqs)) for t in range(len(v["x"]))])
    assert_close(out, expected, f"{name} vs NumPy")
    assert out.dtype == np.asarray(expected).dtype, f"{name}: dtype {out.dtype} vs NumPy " \
                                                    f"{expected.dtype}"


def test_step_operations_in_a_recurrence(rng):
    """A state that passes through many operations at once."""
    x = rng.standard_normal((6, 3))
    W = rng.standard_normal((3, 3)) * 0.3

    def step(v, h, c):
        z = np.concatenate([h, v])[::-1][:3]
        a = np.tanh(W @ z + np.outer(v, h).sum(axis=0) * 0.1)
        c2 = c * sps.expit(v) + np.where(a > 0, a, 0.5 * a)
        return np.clip(a + c2.mean(), -2, 2), c2

    h, c = rng.standard_normal(3), rng.standard_normal(3)
    out, _ = run_both(step, sequences=x, outputs_info=[h, c], extra_inputs=[W])
    e0, e1 = [], []
    for v in x:
        h, c = step(v, h, c)
        e0.append(h)
        e1.append(c)
    assert_close(out[0], e0)
    assert_close(out[1], e1)


# ------------------------------------------------------------------------------------------------
# closures: read at call time, no recompilation

_G = np.random.default_rng(3).standard_normal(3)


def _reads_global(v):
    return v * _G


def test_closure_array_read_at_call_time(rng):
    C = rng.standard_normal(3)
    x = rng.standard_normal((4, 3))

    def step(v, h):
        return h * 0.5 + v * C

    h0 = np.zeros(3) + 0.1
    a, _ = run_both(step, sequences=x, outputs_info=h0, extra_inputs=[C])
    n_compiled = len(numbascan.runtime.cache._COMPILED)
    C *= -2.0                                                 # mutated in place
    b, _ = run_both(step, sequences=x, outputs_info=h0, extra_inputs=[C])
    expected, h = [], h0
    for v in x:
        h = h * 0.5 + v * C
        expected.append(h)
    assert_close(b, expected)
    assert not np.allclose(a, b)
    assert len(numbascan.runtime.cache._COMPILED) == n_compiled, "a new closure value recompiled"


def test_global_array_rebound(rng):
    global _G
    x = rng.standard_normal((4, 3))
    a, _ = run_both(_reads_global, sequences=x)
    assert_close(a, x * _G)
    n_compiled = len(numbascan.runtime.cache._COMPILED)
    old = _G
    try:
        _G = rng.standard_normal(3)                              # rebound
        b, _ = run_both(_reads_global, sequences=x)
        assert_close(b, x * _G)
        _G[...] = rng.standard_normal(3)                         # mutated
        c, _ = run_both(_reads_global, sequences=x)
        assert_close(c, x * _G)
    finally:
        _G = old
    assert len(numbascan.runtime.cache._COMPILED) == n_compiled, "a new global value recompiled"


def test_no_recompile_for_values_or_n_steps(rng):
    def step(v, h, w):
        return np.tanh(h * w + v)

    x = rng.standard_normal((9, 2))
    run_both(step, sequences=x, outputs_info=rng.standard_normal(2), non_sequences=0.5 * np.ones(2),
             n_steps=3)
    n_compiled = len(numbascan.runtime.cache._COMPILED)
    for n in (0, 1, 5, 9):
        run_both(step, sequences=rng.standard_normal((9, 2)), outputs_info=rng.standard_normal(2),
                 non_sequences=rng.standard_normal(2), n_steps=n)
    run_both(step, sequences=rng.standard_normal((20, 2)), outputs_info=rng.standard_normal(2),
             non_sequences=rng.standard_normal(2))
    assert len(numbascan.runtime.cache._COMPILED) == n_compiled


# ------------------------------------------------------------------------------------------------
# inputs are never written to (run_both checks this for every test; here the in-place prone cases)


def test_inputs_not_modified_inplace_ops(rng):
    x = rng.standard_normal((5, 3))
    X = rng.standard_normal((2, 3))
    A = rng.standard_normal(3)

    def step(v, h2, h1, a):
        v += 1.0          # a sequence row, incremented in place (a new value when traced)
        return h1 + v * a - 0.1 * h2

    args = dict(sequences=x, outputs_info=dict(initial=X, taps=[-2, -1]), non_sequences=A)
    before = [x.copy(), X.copy(), A.copy()]
    try:
        ns.scan(step, mode="cpu", **args)
    except Exception:
        pass
    try:
        ns.scan(step, mode="python", **args)
    except Exception:
        pass
    for a, b in zip((x, X, A), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["seq_taps", "out_taps", "backwards", "map", "until",
                                    "reduce", "foldr"])
def test_inputs_not_modified(rng, layout):
    x = rng.standard_normal((8, 2))
    X = rng.standard_normal((3, 2))
    A = rng.standard_normal(2)
    if layout == "seq_taps":
        run_both(lambda a, b, h, w: h * w + a - b, sequences=dict(input=x, taps=[-2, 1]),
                 outputs_info=X[0], non_sequences=A)
    elif layout == "out_taps":
        run_both(lambda v, a, b: 0.5 * a + 0.3 * b + v, sequences=x,
                 outputs_info=dict(initial=X, taps=[-3, -1]))
    elif layout == "backwards":
        run_both(lambda v, h: h + v, sequences=x, outputs_info=X[1], go_backwards=True)
    elif layout == "map":
        run_both(lambda v: v[::-1], scan=lambda fn, **kw: ns.map(fn, **kw), sequences=x)
    elif layout == "until":
        run_both(lambda v, h: (h + v, ns.until(v[0] > 10)), sequences=x, outputs_info=X[2])
    elif layout == "reduce":
        run_both(lambda v, h: h + v, scan=lambda fn, **kw: ns.reduce(fn, **kw), sequences=x,
                 outputs_info=X[0])
    else:
        run_both(lambda v, h: h * 0.5 + v, scan=lambda fn, **kw: ns.foldr(fn, **kw), sequences=x,
                 outputs_info=X[0])


# ------------------------------------------------------------------------------------------------
# shared variables and updates


def test_shared_update_not_applied_until_apply(rng):
    k0 = np.float64(rng.standard_normal())
    k = ns.shared(k0, name="k")
    x = rng.standard_normal(6)

    def step(v):
        return {k: k + v}

    out, upd = run_both(step, sequences=x, reset=lambda: k.set_value(k0))
    assert out == [] or (isinstance(out, list) and len(out) == 0)
    assert list(upd) == [k]
    assert_close(upd[k], k0 + x.sum())
    assert_same(k.get_value(), np.asarray(k0))
    upd.apply()
    assert_close(k.get_value(), k0 + x.sum())


def test_shared_update_with_outputs(rng):
    k0 = rng.standard_normal(3)
    k = ns.shared(k0, name="acc")
    x = rng.standard_normal((5, 3))

    def step(v, h):
        h2 = h * 0.5 + k * v
        return h2, {k: k + h2}

    out, upd = run_both(step, sequences=x, outputs_info=np.zeros(3) + 0.2,
                        reset=lambda: k.set_value(k0))
    kk, h, e = k0.copy(), np.zeros(3) + 0.2, []
    for v in x:
        h = h * 0.5 + kk * v
        kk = kk + h
        e.append(h)
    assert_close(out, e)
    assert_close(upd[k], kk)
    assert_same(k.get_value(), k0)
    upd.apply()
    assert_close(k.get_value(), kk)
    # a second scan reads the applied value
    out2, upd2 = run_both(step, sequences=x, outputs_info=np.zeros(3) + 0.2,
                          reset=lambda: k.set_value(kk))
    assert not np.allclose(out2, out)


def test_shared_read_without_update(rng):
    w = ns.shared(rng.standard_normal(3), name="w")
    x = rng.standard_normal((5, 3))
    out, upd = run_both(lambda v: v * w + w, sequences=x)
    assert len(upd) == 0
    assert_close(out, x * w.get_value() + w.get_value())
    w.set_value(rng.standard_normal(3))
    n_compiled = len(numbascan.runtime.cache._COMPILED)
    out2, _ = run_both(lambda v: v * w + w, sequences=x)
    assert_close(out2, x * w.get_value() + w.get_value())


def test_shared_matrix_update_and_int_counter(rng):
    M0 = rng.standard_normal((2, 2))
    M = ns.shared(M0, name="M")
    c = ns.shared(np.int64(0), name="count")
    x = rng.standard_normal((4, 2))

    def step(v):
        return v @ M, {M: M * 0.9 + np.outer(v, v), c: c + 1}

    def reset():
        M.set_value(M0)
        c.set_value(np.int64(0))

    out, upd = run_both(step, sequences=x, reset=reset)
    mm, e = M0.copy(), []
    for v in x:
        e.append(v @ mm)
        mm = mm * 0.9 + np.outer(v, v)
    assert_close(out, e)
    assert_close(upd[M], mm)
    assert upd[c] == 4 and np.asarray(upd[c]).dtype == np.int64
    upd.apply()
    assert_close(M.get_value(), mm)


def test_shared_update_n_steps_zero(rng):
    k0 = rng.standard_normal(2)
    k = ns.shared(k0)
    x = rng.standard_normal((3, 2))
    out, upd = run_both(lambda v: (v * 2.0, {k: k + v}), sequences=x, n_steps=0,
                        reset=lambda: k.set_value(k0))
    assert out.shape == (0, 2)
    assert_close(upd[k], k0)


# ------------------------------------------------------------------------------------------------
# random streams


def _random_scan(srng, mode, x, **kw):
    def step(v):
        a = srng.uniform(size=(2,), low=-1.0, high=2.0)
        b = srng.normal(size=(), avg=1.0, std=0.5)
        c = srng.binomial(size=(3,), n=5, p=0.3)
        return a + v, b * v, c
    return ns.scan(step, sequences=x, mode=mode, **kw)


def test_random_streams_cpu_equals_python(rng):
    x = rng.standard_normal((5, 2))
    streams = {m: ns.RandomStreams(1234) for m in ("cpu", "python")}
    res = {m: _random_scan(streams[m], m, x) for m in streams}
    assert_same_outputs(res["cpu"][0], res["python"][0])
    a, b, c = res["cpu"][0]
    assert c.dtype == np.int64 and c.shape == (5, 3)
    assert ((c >= 0) & (c <= 5)).all()
    a = a - x                   # fresh per step
    assert len({tuple(r) for r in a}) == 5
    assert ((a >= -1) & (a < 2)).all()
    assert streams["cpu"].counter == streams["python"].counter > 0
    # the stream advanced: a second scan agrees across modes and differs from the first
    res2 = {m: _random_scan(streams[m], m, x) for m in streams}
    assert_same_outputs(res2["cpu"][0], res2["python"][0])
    assert not np.allclose(res2["cpu"][0][0], res["cpu"][0][0])
    assert streams["cpu"].counter == streams["python"].counter


def test_random_streams_with_n_steps_and_state(rng):
    h0 = rng.standard_normal(3)
    outs, counters = {}, {}
    for mode in ("cpu", "python"):
        srng = ns.RandomStreams(99)
        o, _ = ns.scan(lambda h: 0.9 * h + srng.normal(size=(3,)), outputs_info=h0, n_steps=6,
                       mode=mode)
        outs[mode], counters[mode] = o, srng.counter
    assert_same(outs["cpu"], outs["python"])
    assert counters["cpu"] == counters["python"] == 18


def test_random_draws_in_nested_scan(rng):
    X = rng.standard_normal((3, 4))
    outs, counters = {}, {}
    for mode in ("cpu", "python"):
        srng = ns.RandomStreams(7)

        def step(row, srng=srng):
            inner, _ = ns.scan(lambda v: v + srng.uniform(), sequences=row)
            return inner, srng.normal(size=(2,))

        (o, _) = ns.scan(step, sequences=X, mode=mode)
        outs[mode], counters[mode] = o, srng.counter
    assert_same_outputs(outs["cpu"], outs["python"])
    noise = outs["cpu"][0] - X
    assert len(np.unique(noise)) == noise.size          # fresh in every inner and outer step
    assert counters["cpu"] == counters["python"]


def test_random_draws_in_nested_scan_single_output(rng):
    X = rng.standard_normal((3, 4))
    outs, counters = {}, {}
    for mode in ("cpu", "python"):
        srng = ns.RandomStreams(8)

        def step(row, srng=srng):
            inner, _ = ns.scan(lambda v: v + srng.uniform(), sequences=row)
            return inner * srng.normal()

        outs[mode], _ = ns.scan(step, sequences=X, mode=mode)
        counters[mode] = srng.counter
    assert_same(outs["cpu"], outs["python"])
    assert len(np.unique(outs["cpu"] - X)) == X.size
    assert counters["cpu"] == counters["python"] == 15


def test_random_draws_outside_a_step_are_arrays():
    s1, s2 = ns.RandomStreams(5), ns.RandomStreams(5)
    a = s1.uniform(size=(3,))
    b = s1.normal(size=(2, 2))
    c = s1.binomial(size=(4,), n=3, p=0.5)
    assert type(a) is np.ndarray and a.shape == (3,) and a.dtype == np.float64
    assert type(b) is np.ndarray and b.shape == (2, 2)
    assert type(c) is np.ndarray and c.dtype == np.int64
    assert_same(s2.uniform(size=(3,)), a)
    assert not np.allclose(s1.uniform(size=(3,)), a)
    # a draw outside the step used inside it is an ordinary constant input
    x = np.arange(1.0, 4.0)
    out, _ = run_both(lambda v: v * a, sequences=x[:, None] * np.ones(3), extra_inputs=[a])
    assert_close(out, x[:, None] * a)


def test_random_in_step_with_until_and_shared(rng):
    x = rng.standard_normal(20)
    outs = {}
    for mode in ("cpu", "python"):
        srng = ns.RandomStreams(31)
        k = ns.shared(np.float64(0.0))
        o, u = ns.scan(lambda v: (v + srng.uniform(), {k: k + 1.0}, ns.until(k > 3.5)),
                       sequences=x, mode=mode)
        outs[mode] = (o, u[k], srng.counter)
    assert_same(outs["cpu"][0], outs["python"][0])
    assert_same(outs["cpu"][1], outs["python"][1])
    assert outs["cpu"][2] == outs["python"][2]


# ------------------------------------------------------------------------------------------------
# map, reduce, foldl, foldr


def _family(name):
    return lambda fn, **kw: getattr(ns, name)(fn, **kw)


def test_map(rng):
    x = rng.standard_normal((5, 3))
    y = rng.standard_normal((5, 3))
    W = rng.standard_normal(3)
    out, upd = run_both(lambda a, b, w: a * w + b, scan=_family("map"), sequences=[x, y],
                        non_sequences=W)
    assert_close(out, x * W + y)
    assert len(upd) == 0
    out, _ = run_both(lambda a: a.sum(), scan=_family("map"), sequences=x, go_backwards=True)
    assert_close(out, x[::-1].sum(axis=1))


@pytest.mark.parametrize("name", ["reduce", "foldl", "foldr"])
def test_reduce_family(rng, name):
    x = rng.standard_normal((6, 2))
    h0 = rng.standard_normal(2)
    step = lambda v, h: h * 0.7 + v            # noqa: E731
    out, upd = run_both(step, scan=_family(name), sequences=x, outputs_info=h0)
    assert out.shape == (2,)
    seq = x[::-1] if name == "foldr" else x
    h = h0
    for v in seq:
        h = step(v, h)
    assert_close(out, h)
    assert len(upd) == 0


def test_reduce_multiple_outputs_and_taps(rng):
    x = rng.standard_normal((7, 2))
    X = rng.standard_normal((2, 2))
    out, _ = run_both(lambda v, a, b, s: (a * 0.5 + b * 0.25 + v, s + v * v), scan=_family("reduce"),
                      sequences=x, outputs_info=[dict(initial=X, taps=[-2, -1]), np.zeros(2)])
    seqh = _numpy_taps_loop(lambda v, a, b: a * 0.5 + b * 0.25 + v, X, [-2, -1], 7, [x])
    assert_close(out[0], seqh[-1])
    assert_close(out[1], (x * x).sum(axis=0))


def test_reduce_scalar_taps(rng):
    x = rng.standard_normal(7)
    X = rng.standard_normal(2)
    out, _ = run_both(lambda v, a, b: a * 0.5 + b * 0.25 + v, scan=_family("reduce"),
                      sequences=x, outputs_info=dict(initial=X, taps=[-2, -1]))
    seqh = _numpy_taps_loop(lambda v, a, b: a * 0.5 + b * 0.25 + v, X, [-2, -1], 7, [x])
    assert_close(out, seqh[-1])


def test_reduce_go_backwards(rng):
    x = rng.standard_normal(6)
    out, _ = run_both(lambda v, h: h * 0.5 + v, scan=_family("reduce"), sequences=x,
                      outputs_info=np.float64(0), go_backwards=True)
    h = 0.0
    for v in x[::-1]:
        h = h * 0.5 + v
    assert_close(out, h)


def test_reduce_zero_steps_returns_initial(rng):
    h0 = rng.standard_normal(2)
    out, _ = run_both(lambda v, h: h + v, scan=_family("foldl"), sequences=np.zeros((0, 2)) + 1,
                      outputs_info=h0)
    assert_close(out, h0)


# ------------------------------------------------------------------------------------------------
# ns.jit


def _glue(X, h0):
    Y = np.tanh(X) * 2.0
    out, _ = ns.scan(lambda y, h: h * 0.5 + y, sequences=Y, outputs_info=h0)
    return out.sum(axis=0) + 1.0, out[-1], out


def test_jit_glue_around_scan(rng, monkeypatch):
    X = rng.standard_normal((5, 3))
    h0 = rng.standard_normal(3)
    before = (X.copy(), h0.copy())
    got = ns.jit(_glue)(X, h0)
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    ref = _glue(X, h0)
    for g, r in zip(got, ref):
        assert_same(g, r)
    np.testing.assert_array_equal(X, before[0])
    np.testing.assert_array_equal(h0, before[1])


def test_jit_result_last(rng, monkeypatch):
    @ns.jit
    def last(X, W):
        out, _ = ns.scan(lambda x, h: np.tanh(W @ h + x), sequences=X, outputs_info=np.zeros(2))
        return out[-1]

    X = rng.standard_normal((6, 2))
    W = rng.standard_normal((2, 2))
    got = last(X, W)
    h = np.zeros(2)
    for x in X:
        h = np.tanh(W @ h + x)
    assert_close(got, h)
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    assert_same(got, last(X, W))


@ns.jit
def _jit_step(x, h):
    return np.tanh(h * 0.8 + x), (x * h).sum()


def test_jit_step_standalone_and_in_scan(rng):
    x = rng.standard_normal((5, 3))
    h0 = rng.standard_normal(3)
    a, b = _jit_step(x[0], h0)
    assert_close(a, np.tanh(h0 * 0.8 + x[0]))
    assert_close(b, (x[0] * h0).sum())
    out, _ = run_both(_jit_step, sequences=x, outputs_info=[h0, None])
    h, e0, e1 = h0, [], []
    for v in x:
        e1.append((v * h).sum())
        h = np.tanh(h * 0.8 + v)
        e0.append(h)
    assert_close(out[0], e0)
    assert_close(out[1], e1)


def test_jit_with_nested_scan_and_random(rng):
    @ns.jit
    def f(X):
        def step(row):
            r, _ = ns.scan(lambda v, a: a + v * srng.uniform(), sequences=row,
                           outputs_info=np.float64(0))
            return r[-1]
        o, _ = ns.scan(step, sequences=X)
        return o

    X = rng.standard_normal((3, 4))
    srng = ns.RandomStreams(11)
    got = f(X)
    c1 = srng.counter
    srng = ns.RandomStreams(11)
    _ = c1
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUMBASCAN_MODE", "python")
        ref = f(X)
    assert_same(got, ref)
    assert srng.counter == c1
