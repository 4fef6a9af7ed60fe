"""Code paths of the CPU code generator (codegen/loopnest.py, codegen/cpu.py) beyond plain
loop nests, compiled against the python reference mode on fresh random inputs:

- steps over tiny values run as straight-line scalar code (`Renderer.unrolled`), their states
  carried in locals from step to step (`carried_window`);
- a large elementwise state kept last is updated in place (`in_place_outputs`);
- unrolled code is sized by a budget of work (`UNROLL_BUDGET`): a step beyond it is loop nests;
- reshapes that add or drop axes of length 1 are views by basic indexing, or copies.

Steps mix what each path handles with what it does not, so that values cross between element
locals and buffers; the generated source is checked to take the path where it should.
"""
import numpy as np
import pytest

import numbascan as ns
from conftest import assert_close, run_both
from numbascan.codegen.loopnest import UNROLL_BUDGET, unrolled_work
from numbascan.loop.args import normalize
from numbascan.loop.step import trace_step


def source(step, **kwargs):
    return ns.show(step, file=open("/dev/null", "w"), **kwargs)


@pytest.mark.parametrize("shapes", [((2,), (2, 3)), ((3, 2), (2,)), ((2, 2), (2, 2)),
                                    ((3,), (3,)), ((1, 4), (4, 1)), ((4,), (4, 4))])
def test_small_matmuls(rng, shapes):
    sa, sb = shapes
    a0 = rng.standard_normal(sa) * 0.5
    B = rng.standard_normal(sb) * 0.5
    seq = rng.standard_normal((7,) + np.matmul(a0, B).shape)

    def step(s, B):
        return np.tanh(np.matmul(a0, B) + s)
    run_both(step, sequences=seq, non_sequences=B)


def test_taps_recurrence_in_registers(rng):
    """The seed's recurrence: carried states, unrolled matmuls, short-latency tanh."""
    U, V = 0.15 * rng.random((2, 2)), 0.15 * rng.random((2, 2))
    W, b = rng.standard_normal((2, 2)), 0.1 * rng.standard_normal(2)
    X0 = rng.standard_normal((2, 2))

    def step(x_tm2, x_tm1, U, V, W, b):
        return x_tm2 @ U + x_tm1 @ V + np.tanh(x_tm1 @ W + b)
    kw = dict(outputs_info=[dict(initial=X0, taps=[-2, -1])], non_sequences=[U, V, W, b],
              n_steps=50)
    out, _ = run_both(step, **kw)
    text = source(step, **kw)
    assert "carry0_1_0" in text and "tanh_short" in text and "np.empty" not in text
    expected, window = [], [X0[0], X0[1]]
    for _ in range(50):
        window = [window[1], step(window[0], window[1], U, V, W, b)]
        expected.append(window[1])
    assert_close(out, expected)


@pytest.mark.parametrize("scan", [ns.scan, ns.foldl])
def test_windows_take_older_taps(rng, scan):
    """Steps that return older states themselves (their own and another output's): every
    window must shift from the values of the step that just ran."""
    X0, z0, W0 = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((2, 2))

    def step(s, a, b, c, z, w2, w1):
        return a * 0.5 + c[::-1] + s + 0.1 * z, b, w2
    run_both(step, scan=scan, sequences=rng.standard_normal((9, 2)),
             outputs_info=[dict(initial=X0, taps=[-3, -2, -1]), z0,
                           dict(initial=W0, taps=[-2, -1])])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalar_state_with_taps(rng, dtype):
    x0 = rng.standard_normal(2).astype(dtype)
    s = rng.standard_normal(20).astype(dtype)

    def step(s_t, x_tm2, x_tm1):
        return np.tanh(x_tm1 * dtype(0.7) - x_tm2 * dtype(0.2) + s_t) + np.exp(x_tm1 * dtype(0.1))
    run_both(step, sequences=s, outputs_info=[dict(initial=x0, taps=[-2, -1])])


def test_reductions_views_and_concatenate(rng):
    A = rng.standard_normal((2, 3))
    h0 = rng.standard_normal((2, 3))

    def step(a, h):
        s = h.sum(axis=0, keepdims=True)            # (1, 3)
        m = h.max(axis=1)                           # (2,)
        t = h.T.reshape(2, 3)
        c = np.concatenate([m, h[1, :1]])           # (3,)
        any_pos = (h > 0).any()
        return np.where(any_pos, 0.5, -0.5) * np.tanh(t * 0.3 + s * 0.1 + c + a) + h.min()
    run_both(step, sequences=np.stack([A] * 6) + rng.standard_normal((6, 2, 3)),
             outputs_info=h0)


def test_ints_and_bools(rng):
    k = rng.integers(-5, 5, size=(8, 3))

    def step(k_t, acc, flags):
        acc = acc * 3 + k_t - (k_t // 2)
        flags = np.logical_xor(flags, k_t > 0)
        return acc % 1000, flags, (acc.sum() + flags.sum()).astype(np.int64)
    run_both(step, sequences=k, outputs_info=[np.ones(3, np.int64), np.zeros(3, bool), None])


def test_small_values_meet_loop_nests_and_calls(rng):
    """A small value read by a large elementwise equation and by a nested scan."""
    big = rng.standard_normal((40, 3))
    h0 = rng.standard_normal(3)
    X = rng.standard_normal((5, 3))

    def inner(x, acc, h):
        return acc * 0.5 + x * h

    def step(x, h):
        g = np.tanh(h * 0.9 + x)                    # small: unrolled
        wide = (big * g).sum(axis=0)                # big: a loop nest reads g from a buffer
        acc, _ = ns.scan(inner, sequences=big[:4], outputs_info=g, non_sequences=g)
        return np.tanh(g + 0.01 * wide + acc[-1])
    run_both(step, sequences=X, outputs_info=h0)


def test_until_with_carried_state(rng):
    x0 = np.abs(rng.standard_normal(2)) * 0.1

    def step(x):
        y = x * 1.3 + 0.05
        return y, ns.until(y.sum() > 3.0)
    out, _ = run_both(step, outputs_info=x0, n_steps=100)
    assert 1 < len(out) < 100


def test_jit_program_with_small_scan(rng):
    W = rng.standard_normal((3, 3)) * 0.4
    X = rng.standard_normal((12, 3))

    @ns.jit
    def run(X, h0):
        hs, _ = ns.scan(lambda x, h: np.tanh(h @ W + x), sequences=X, outputs_info=h0)
        return hs.sum(axis=0), hs[-1]
    h0 = rng.standard_normal(3)
    got = run(X, h0)
    h, hs = h0, []
    for x in X:
        h = np.tanh(h @ W + x)
        hs.append(h)
    assert_close(got[0], np.sum(hs, axis=0))
    assert_close(got[1], hs[-1])


# ------------------------------------------------------------------------------------------------
# large elementwise states kept last: updated in place


def loop_source(step, **kwargs):
    """The generated loop of `ns.foldl(step, **kwargs)`."""
    from numbascan.loop.args import normalize
    from numbascan.loop.step import trace_step
    from numbascan.runtime.cpu import scan_source
    sa = normalize(step, kwargs.get("sequences"), kwargs.get("outputs_info"),
                   kwargs.get("non_sequences"), None, -1, False, None, False, False, None,
                   keep_last=True)
    ts = trace_step(sa)
    return scan_source(ts.ir, ts.layout)


@pytest.mark.parametrize("n", [0, 1, 6, 7])
def test_elementwise_state_in_place(rng, n):
    S = rng.random((n, 50)) * 1e-2
    x0 = rng.uniform(0.1, 0.9, 50)

    def step(s, x, a):
        return a * x * (1 - x) + s
    kw = dict(sequences=S, outputs_info=x0, non_sequences=[2.5])
    out, _ = run_both(step, scan=ns.foldl, **kw)     # n = 0: the initial state
    assert "buf0[0]" in loop_source(step, **kw)
    x = x0
    for s in S:
        x = 2.5 * x * (1 - x) + s
    assert_close(out, x)


def test_in_place_with_several_outputs(rng):
    """Two large states updated in place, each reading the other's old value."""
    S = rng.standard_normal((9, 40)) * 0.1
    x0, y0 = rng.standard_normal(40), rng.standard_normal(40)

    def step(s, x, y):
        return np.tanh(0.5 * x + 0.3 * y + s), np.tanh(0.2 * y - 0.4 * x)
    run_both(step, scan=ns.foldl, sequences=S, outputs_info=[x0, y0])
    loop = loop_source(step, sequences=S, outputs_info=[x0, y0]).split("for t in")[1]
    # y's old value is read before y's new value is made, x's old value after x's new one
    assert "buf1[0]" in loop and "buf0[0]" not in loop
    assert "carry" not in loop                         # not small: no locals carried


@pytest.mark.parametrize("case", ["read_after", "returned", "reduction", "reversed"])
def test_not_in_place_when_unsafe(rng, case):
    """The old state is read after the new one is made, returned as another output, reduced,
    or read at other positions: these steps must keep two rows (and stay correct)."""
    S = rng.standard_normal((8, 30)) * 0.1
    x0 = rng.standard_normal(30)

    def step(s, x):
        new = np.tanh(x + s)
        if case == "read_after":
            return new, new * x[0]
        if case == "returned":
            return new, x
        if case == "reduction":
            return np.tanh(x + s + x.sum() * 0.01), s
        return np.tanh(x[::-1] + s), s
    kw = dict(sequences=S, outputs_info=[x0, None])
    run_both(step, scan=ns.foldl, **kw)
    assert "buf0[0]" not in loop_source(step, **kw).split("for t in")[1]


# ------------------------------------------------------------------------------------------------
# the budget on unrolled code


def lstm_step(H):
    def step(x_t, h, c, Wx, Wh, b):
        z = x_t @ Wx + h @ Wh + b
        i, f = 1 / (1 + np.exp(-z[:H])), 1 / (1 + np.exp(-z[H:2 * H]))
        o, g = 1 / (1 + np.exp(-z[2 * H:3 * H])), np.tanh(z[3 * H:])
        c = f * c + i * g
        return o * np.tanh(c), c
    return step


def lstm_kwargs(rng, H, D=8, T=5):
    return dict(sequences=rng.standard_normal((T, D)), outputs_info=[np.zeros(H), np.zeros(H)],
                non_sequences=[rng.standard_normal((D, 4 * H)) * 0.3,
                               rng.standard_normal((H, 4 * H)) * 0.3, np.zeros(4 * H)])


def taps_kwargs(rng):
    return dict(outputs_info=[dict(initial=rng.standard_normal((2, 2)), taps=[-2, -1])],
                non_sequences=[0.15 * rng.random((2, 2)), 0.15 * rng.random((2, 2)),
                               rng.standard_normal((2, 2)), np.zeros(2)], n_steps=50)


def taps_step(x_tm2, x_tm1, U, V, W, b):
    return x_tm2 @ U + x_tm1 @ V + np.tanh(x_tm1 @ W + b)


def step_work(step, kw):
    sa = normalize(step, kw.get("sequences"), kw.get("outputs_info"), kw.get("non_sequences"),
                   kw.get("n_steps"), -1, False, None, False, False, None)
    return unrolled_work(trace_step(sa).ir)


def generated(text):
    return text.split("# generated source")[1]


@pytest.mark.parametrize("H", [1, 2, 4, 8, 16, 32])
def test_budget_bounds_generated_code(rng, H):
    """Every LSTM size renders in about 60 lines; with every value of <= 16 elements unrolled,
    H=16 rendered 300 lines (and took 47 s to compile)."""
    step, kw = lstm_step(H), lstm_kwargs(rng, H)
    code = generated(source(step, **kw))
    assert len(code.splitlines()) < 90
    if step_work(step, kw) > UNROLL_BUDGET:
        loop = code.split("for t in")[1]
        assert "_short(" not in loop and "carry" not in code and " for " in loop


def test_budget_medium_steps_are_loops(rng):
    """The LSTM step at H=16 and a step over a 4x4 matrix state are beyond the budget: loop
    nests, no element locals; the results agree with the reference."""
    step, kw = lstm_step(16), lstm_kwargs(rng, 16)
    assert step_work(step, kw) > UNROLL_BUDGET
    run_both(step, **kw)
    A = rng.standard_normal((4, 4)) * 0.3

    def matrix_step(X, A):
        Y = np.tanh(X @ A) * 0.5 + X * 0.25
        return np.exp(-Y * Y) - Y.mean()
    mkw = dict(outputs_info=rng.standard_normal((4, 4)), non_sequences=A, n_steps=6)
    assert step_work(matrix_step, mkw) > UNROLL_BUDGET
    loop = generated(source(matrix_step, **mkw)).split("for t in")[1]
    assert "_short(" not in loop and "v3_0" not in loop
    run_both(matrix_step, **mkw)


def test_tiny_steps_stay_unrolled(rng):
    """The seed's 2-element taps recurrence is within the budget: its step is straight-line
    code on locals carried across steps, with no loop but the time loop."""
    kw = taps_kwargs(rng)
    assert step_work(taps_step, kw) <= UNROLL_BUDGET
    code = generated(source(taps_step, **kw))
    loop = code.split("for t in")[1]
    assert " for " not in loop and "carry0_1_0" in loop and "tanh_short" in loop


def test_budget_counts_nested_steps(rng):
    """A step's work includes the steps of the scans nested in it."""
    kw = lstm_kwargs(rng, 2)

    def outer(x, h, c, Wx, Wh, b):
        (hs, cs), _ = ns.scan(lstm_step(2), sequences=x[None], outputs_info=[h, c],
                              non_sequences=[Wx, Wh, b])
        return hs[-1], cs[-1]
    assert step_work(outer, kw) >= step_work(lstm_step(2), kw) > 0


# ------------------------------------------------------------------------------------------------
# reshapes that add or drop axes of length 1


@pytest.mark.parametrize("shapes", [((8,), (1, 8)), ((8,), (8, 1)), ((1, 8), (8,)),
                                    ((8, 1), (8,)), ((8, 1), (1, 8)), ((5, 8), (5, 1, 8)),
                                    ((5, 8), (5, 8, 1)), ((1, 1), (1,)), ((2, 3), (3, 2)),
                                    ((5, 8), (40,))])
def test_reshapes(rng, shapes):
    """In a program (views or copies) and in a step of loop nests (copies): the values NumPy
    gives, also when the result is written on (a copy must not alias its source)."""
    src, dst = shapes
    x = rng.standard_normal(src)

    @ns.jit
    def program(x):
        y = x.reshape(dst)
        return y * 2.0, x + 1.0, y
    got = program(x)
    for g, e in zip(got, (x.reshape(dst) * 2.0, x + 1.0, x.reshape(dst))):
        assert_close(g, e)
    big = rng.standard_normal((6,) + src) * 0.1

    def step(s, h, g):
        for _ in range(4):
            g = np.tanh(g * 0.9)           # small, but beyond the budget: loop nests
        return np.tanh(s.reshape(dst) + h), h * 0.5, g
    h0 = np.zeros(dst) + np.zeros((20,) + (1,) * len(dst))
    kw = dict(sequences=big, outputs_info=[h0, None, rng.standard_normal(16)])
    assert step_work(step, kw) > UNROLL_BUDGET
    run_both(step, **kw)
