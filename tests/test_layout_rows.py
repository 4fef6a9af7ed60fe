"""The row arithmetic of core/layout.py on its own: the rows a buffer's writes and reads use agree
with the meaning of taps, and the source-text forms (code generators) with the int forms."""
import itertools

import pytest

from numbascan.core.layout import Layout, OutLayout, SeqLayout

OUT_TAPS = [(), (-1,), (-2, -1), (-3, -1), (-2,)]


def _eval(expr, **names):
    return expr if isinstance(expr, int) else eval(str(expr), {}, names)


@pytest.mark.parametrize("taps,keep", list(itertools.product(OUT_TAPS, ["all", "last"])))
@pytest.mark.parametrize("n", [0, 1, 5])
def test_buffer_rows_hold_the_states_the_taps_read(taps, keep, n):
    o = OutLayout(taps, keep)
    buf = [None] * o.buffer_rows(n)
    init = [("init", k) for k in range(-o.L, 0)]         # out[-L:], oldest first
    buf[o.init_rows] = init
    assert [init[o.window_row(tap)] for tap in taps] == [("init", tap) for tap in taps]
    for t in range(n):
        for tap in taps:
            want = ("out", t + tap) if t + tap >= 0 else ("init", t + tap)
            assert buf[o.read_row(t, tap)] == want
            assert _eval(o.read_row("t", tap), t=t) == o.read_row(t, tap)
        buf[o.write_row(t)] = ("out", t)
        assert _eval(o.write_row("t"), t=t) == o.write_row(t)
    if n or taps:                 # a map output has no last row before its first step
        assert buf[o.last_row(n)] == (("out", n - 1) if n else ("init", -1))
        assert _eval(o.last_row("n_run"), n_run=n) == o.last_row(n)
    if keep == "all":
        assert buf[o.step_rows(n)] == [("out", t) for t in range(n)]
        assert buf[o.step_rows()] == [("out", t) for t in range(n)]


@pytest.mark.parametrize("taps", [(0,), (-1, 0), (0, 2), (-2, 1), (3,), (-1,)])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_sequence_rows(taps, go_backwards):
    sl = SeqLayout(taps)
    length = 9
    n = sl.steps(length)
    assert sl.length(n) == length
    seq = list(range(length))
    walk = seq[::-1] if go_backwards else seq
    for t in range(n):
        rows = [sl.row(t, tap, go_backwards, length) for tap in taps]
        assert [seq[r] for r in rows] == [walk[t + sl.m + tap] for tap in taps]
        assert all(0 <= r < length for r in rows)
        text = [sl.row("t", tap, go_backwards, "length") for tap in taps]
        assert [_eval(x, t=t, length=length) for x in text] == rows
    if go_backwards:       # from a run-time origin: as the walk back over its first rows
        origin = n - 2
        for t in range(origin):
            assert [sl.row(t, tap, True, origin=origin) for tap in taps] == \
                [sl.row(t, tap, True, sl.length(origin)) for tap in taps]


def test_inputs_by_role():
    layout = Layout(seqs=(SeqLayout((0,)), SeqLayout((-1, 1))),
                    outs=(OutLayout((-1,)), OutLayout(()), OutLayout((-2, -1))), n_outputs=3,
                    n_nonseqs=1, n_captures=2, rng=((0, 3), (5, 1)), trip=True)
    assert layout.fed == [0, 2]
    ins = ["s0", "s1", "i0", "i2", "ns", "c0", "c1", "k0", "b0", "k1", "b1", "trip", "origin"]
    assert layout.split_inputs(ins) == (["s0", "s1"], ["i0", "i2"], ["ns", "c0", "c1"],
                                        ["k0", "b0", "k1", "b1"], ["trip", "origin"])
    step_ins = ["s0", "s1a", "s1b", "o0", "o2a", "o2b", "ns", "c0", "c1", "k0", "b0", "k1", "b1"]
    assert layout.split_step_inputs(step_ins) == (
        [["s0"], ["s1a", "s1b"]], [["o0"], [], ["o2a", "o2b"]], ["ns", "c0", "c1"],
        ["k0", "b0", "k1", "b1"])
    assert layout.rng_base(0, 10, 4) == 10 + 0 + 4 * 3
    assert layout.rng_base(1, 2**64 - 1, 0) == 4
    assert layout.rng_base(1, "base", "t") == \
        "base + np.uint64(5) + np.uint64(t) * np.uint64(1)"
