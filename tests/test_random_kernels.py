"""Tests for the counter-based random stage (numbascan.random)."""

import numpy as np
import pytest

import numbascan as ns
from numbascan import random as nr
from numbascan.codegen import draws, loopnest

U = np.uint64


# Known-answer vectors from Random123 (kat_vectors, philox4x32 10):
# counter words, key words, expected output words.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_known_answer_core(ctr, key, expected):
    out = nr.philox4x32_10(*map(U, ctr), *map(U, key))
    assert tuple(int(w) for w in out) == expected
    # the same core over arrays (the reference-mode path)
    arrs = [np.full(3, c, dtype=np.uint64) for c in ctr]
    out = nr.philox4x32_10(*arrs, *map(U, key))
    for w, e in zip(out, expected):
        assert w.dtype == np.uint64 and (w == e).all()


def test_known_answer_counter_layout():
    # counter (c_lo, c_hi, 0, 0), key (k_lo, k_hi): all zero is the first vector
    expected = KAT[0][2]
    assert tuple(int(w) for w in nr.philox4x32_scalar(0, 0)) == expected
    assert tuple(int(w) for w in nr.philox4x32_nb(U(0), U(0))) == expected
    got = nr.philox4x32_numpy(0, np.zeros(1, dtype=np.uint64))
    assert tuple(int(w[0]) for w in got) == expected


def test_counter_and_key_word_order():
    # c = c_hi << 32 | c_lo and k = k_hi << 32 | k_lo feed the core as (c_lo, c_hi, 0, 0)
    c, k = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    direct = nr.philox4x32_10(U(c & 0xFFFFFFFF), U(c >> 32), U(0), U(0),
                              U(k & 0xFFFFFFFF), U(k >> 32))
    assert nr.philox4x32_scalar(k, c) == direct
    assert tuple(nr.philox4x32_nb(U(k), U(c))) == direct


# ---------------------------------------------------------------------------
# njit scalar == numpy vectorised, bit for bit
# ---------------------------------------------------------------------------

def _fresh_cases(seed, n_keys=3):
    rng = np.random.default_rng(seed)
    keys = [int(k) for k in rng.integers(0, 2**64, size=n_keys, dtype=np.uint64)]
    bases = [0, int(rng.integers(0, 2**32)), 2**32 - 3,
             int(rng.integers(2**32, 2**63)), 2**64 - 5]  # last one wraps around
    return [(k, b) for k in keys for b in bases]


def test_philox_nb_equals_numpy():
    for key, base in _fresh_cases(1):
        counters = nr._counters(base, 64, 1)
        vec = nr.philox4x32_numpy(key, counters)
        for i, c in enumerate(counters):
            assert tuple(nr.philox4x32_nb(U(key), c)) == tuple(w[i] for w in vec)


def _bits(a):
    return np.asarray(a).view(np.int64)


DISTS = [
    ("uniform", (0.0, 1.0), lambda k, c, p: nr.uniform_nb(k, c, *p)),
    ("uniform", (-3.5, 7.25), lambda k, c, p: nr.uniform_nb(k, c, *p)),
    ("normal", (0.0, 1.0), lambda k, c, p: nr.normal_nb(k, c, *p)),
    ("normal", (2.0, 0.3), lambda k, c, p: nr.normal_nb(k, c, *p)),
    ("binomial", (1, 0.5), lambda k, c, p: nr.binomial_nb(k, c, *p)),
    ("binomial", (7, 0.3), lambda k, c, p: nr.binomial_nb(k, c, *p)),
    ("binomial", (0, 0.3), lambda k, c, p: nr.binomial_nb(k, c, *p)),
]


@pytest.mark.parametrize("kind, params, nb", DISTS)
def test_distribution_nb_equals_numpy(kind, params, nb):
    width = nr._width(kind, params)
    for key, base in _fresh_cases(2):
        ref = nr.draw_numpy(key, base, kind, (5, 8), params)
        assert ref.shape == (5, 8)
        assert ref.dtype == (np.int64 if kind == "binomial" else np.float64)
        flat = ref.ravel()
        got = np.array([nb(U(key), U((base + i * width) % 2**64), params)
                        for i in range(flat.size)], dtype=flat.dtype)
        assert (_bits(got) == _bits(flat)).all(), (kind, params, key, base)


@pytest.mark.parametrize("kind, params", [("uniform", (1.0, 2.0)), ("normal", (0.5, 2.0)),
                                          ("binomial", (5, 0.4))])
def test_uncompiled_scalar_equals_numpy(kind, params):
    fn = {"uniform": nr.uniform_scalar, "normal": nr.normal_scalar,
          "binomial": nr.binomial_scalar}[kind]
    width = nr._width(kind, params)
    key, base = 0x1234_5678_9ABC_DEF0, 2**40 + 17
    ref = nr.draw_numpy(key, base, kind, 20, params)
    got = np.array([fn(U(key), U(base + i * width), *params) for i in range(20)],
                   dtype=ref.dtype)
    assert (_bits(got) == _bits(ref)).all()


def test_binomial_matches_uniform_counters():
    # binomial(n, p) element i counts uniforms at counters base + i*n + j below p
    key, base, n, p = 99, 1000, 6, 0.45
    b = nr.draw_numpy(key, base, "binomial", 10, (n, p))
    u = nr.draw_numpy(key, base, "uniform", 10 * n, (0.0, 1.0)).reshape(10, n)
    assert (b == (u < p).sum(axis=1)).all()


def test_counters_used():
    assert nr.counters_used("uniform", (3, 4), (0.0, 1.0)) == 12
    assert nr.counters_used("normal", 5, (0.0, 1.0)) == 5
    assert nr.counters_used("binomial", (2, 3), (10, 0.5)) == 60
    assert nr.counters_used("uniform", (), (0.0, 1.0)) == 1
    assert nr.counters_used("uniform", (0, 4), (0.0, 1.0)) == 0


# ---------------------------------------------------------------------------
# Statistical sanity (loose)
# ---------------------------------------------------------------------------

N = 100_000


def test_uniform_moments():
    x = nr.draw_numpy(7, 0, "uniform", N, (2.0, 5.0))
    assert x.min() >= 2.0 and x.max() < 5.0
    assert abs(x.mean() - 3.5) < 0.02
    assert abs(x.var() - 9.0 / 12) < 0.02


def test_normal_moments():
    x = nr.draw_numpy(8, 123, "normal", N, (1.5, 2.0))
    assert abs(x.mean() - 1.5) < 0.03
    assert abs(x.std() - 2.0) < 0.03
    z = (x - 1.5) / 2.0
    assert abs((z ** 3).mean()) < 0.05 and abs((z ** 4).mean() - 3.0) < 0.1


def test_binomial_moments():
    x = nr.draw_numpy(9, 2**33, "binomial", N, (10, 0.3))
    assert x.min() >= 0 and x.max() <= 10
    assert abs(x.mean() - 3.0) < 0.03
    assert abs(x.var() - 2.1) < 0.05
    assert (nr.draw_numpy(9, 0, "binomial", 100, (4, 0.0)) == 0).all()
    assert (nr.draw_numpy(9, 0, "binomial", 100, (4, 1.0)) == 4).all()


# ---------------------------------------------------------------------------
# RandomStreams
# ---------------------------------------------------------------------------

def test_streams_deterministic():
    a, b = nr.RandomStreams(42), nr.RandomStreams(42)
    for s in (a, b):
        assert isinstance(s.key, np.uint64) and s.counter == 0
    assert a.key == b.key
    xa = [a.uniform((3,)), a.normal((2, 2)), a.binomial(4, n=3, p=0.2)]
    xb = [b.uniform((3,)), b.normal((2, 2)), b.binomial(4, n=3, p=0.2)]
    for u, v in zip(xa, xb):
        assert u.dtype == v.dtype and (u == v).all()
    assert a.counter == b.counter == 3 + 4 + 12


def test_streams_advance_and_match_draw_numpy():
    s = nr.RandomStreams(5)
    first = s.uniform(4, low=-1.0, high=1.0)
    assert s.counter == 4
    second = s.uniform(4, low=-1.0, high=1.0)
    assert s.counter == 8
    assert not (first == second).any()
    ref = nr.draw_numpy(s.key, 0, "uniform", 8, (-1.0, 1.0))
    assert (np.concatenate([first, second]) == ref).all()
    nb = s.binomial((2,), n=5, p=0.5)
    assert s.counter == 18
    assert (nb == nr.draw_numpy(s.key, 8, "binomial", 2, (5, 0.5))).all()


def test_streams_different_seeds_differ():
    keys = {int(nr.RandomStreams(seed).key) for seed in range(100)}
    assert len(keys) == 100
    x0 = nr.RandomStreams(0).uniform(16)
    x1 = nr.RandomStreams(1).uniform(16)
    assert not (x0 == x1).any()


def test_streams_sizes_and_shapes():
    s = nr.RandomStreams(3)
    x = s.normal()
    assert isinstance(x, np.ndarray) and x.shape == () and x.dtype == np.float64
    assert s.counter == 1
    assert s.uniform(np.int64(3)).shape == (3,)
    assert s.uniform((np.int32(2), 3)).shape == (2, 3)
    assert s.uniform([2, np.uint8(1)]).shape == (2, 1)
    y = s.binomial((0, 5), n=3)
    assert y.shape == (0, 5) and y.dtype == np.int64
    assert s.binomial().shape == ()
    assert s.uniform(np.int64(2), low=np.float32(1.0), high=np.int64(2)).dtype == np.float64


def test_traced_draw_hook(monkeypatch):
    calls = []

    def hook(stream, kind, size, params):
        calls.append((kind, size, params))
        return "traced" if kind == "normal" else NotImplemented

    monkeypatch.setattr(nr, "traced_draw_hook", hook)
    s = nr.RandomStreams(11)
    assert s.normal((np.int64(2), 3), avg=1, std=2) == "traced"
    assert s.counter == 0
    x = s.uniform(2)
    assert x.shape == (2,) and s.counter == 2
    assert calls == [("normal", (2, 3), (1.0, 2.0)), ("uniform", (2,), (0.0, 1.0))]

    # non-numeric params reach the hook untouched, and fail outside a trace
    sym = object()
    calls.clear()
    with pytest.raises(TypeError, match="uniform low"):
        s.uniform(2, low=sym)
    assert calls == [("uniform", (2,), (sym, 1.0))]


@pytest.mark.parametrize("call, match", [
    (lambda s: s.uniform(-1), r"size: expected non-negative dimensions, found \(-1,\)"),
    (lambda s: s.normal((2, -3)), r"size: .*found \(2, -3\)"),
    (lambda s: s.binomial(3, p=1.5), r"binomial p: expected 0 <= p <= 1, found 1.5"),
    (lambda s: s.binomial(3, p=-0.1), r"binomial p: .*found -0.1"),
    (lambda s: s.binomial(3, p=float("nan")), r"binomial p: .*found nan"),
    (lambda s: s.binomial(3, n=-2), r"binomial n: expected n >= 0, found -2"),
    (lambda s: s.normal(3, std=-1.0), r"normal std: expected std >= 0, found -1.0"),
])
def test_validation_value_errors(call, match):
    s = nr.RandomStreams(0)
    with pytest.raises(ValueError, match=match):
        call(s)
    assert s.counter == 0


def test_validation_type_errors():
    s = nr.RandomStreams(0)
    with pytest.raises(TypeError, match="size"):
        s.uniform(2.5)
    with pytest.raises(TypeError, match="binomial n: expected an integer"):
        s.binomial(2, n=2.0)
    with pytest.raises(TypeError, match="seed"):
        nr.RandomStreams(1.5)
    with pytest.raises(ValueError, match="seed"):
        nr.RandomStreams(-1)
    with pytest.raises(ValueError, match="kind"):
        nr.draw_numpy(0, 0, "poisson", 3, (1.0,))


def test_splitmix64_reference_value():
    # first output of SplitMix64 seeded with 0 (as in the reference C code)
    assert nr.splitmix64(0) == 0xE220A8397B1DCDAF
    assert int(nr.RandomStreams(0).key) == 0xE220A8397B1DCDAF


def test_draws_stay_exact_after_generated_code_called_them(tmp_path):
    """numba compiles a callee with its caller's fastmath flags and keeps that version: if a
    generated loop that contracts multiply-adds compiled the draws first, uniform/normal lost
    their last bits. In a new process with empty caches, draw in a compiled scan first."""
    import os
    import subprocess
    import sys
    script = '''
import numpy as np, numbascan as ns, numbascan.random as nr
rs = ns.RandomStreams(3)
ns.scan(lambda x: 1.5 * x + 0.25 * rs.uniform(size=(4,), low=-3.5, high=7.25)
        + 0.5 * rs.normal(size=(4,), avg=2.0, std=0.3), outputs_info=np.ones(4), n_steps=3,
        mode="cpu")
key = np.uint64(4825892087074085057)
for kind, params, nb in (("uniform", (-3.5, 7.25), nr.uniform_nb),
                         ("normal", (2.0, 0.3), nr.normal_nb)):
    ref = nr.draw_numpy(key, 0, kind, (16,), params)
    got = np.array([nb(key, np.uint64(i), *params) for i in range(16)])
    assert (got.view(np.int64) == ref.view(np.int64)).all(), kind
# the bulk kernels set their flags: a fastmath caller that compiles them first changes nothing
import numba
@numba.njit(fastmath=True)
def caller(key, out):
    nr.fill_normal_nb(key, np.uint64(0), 2.0, 0.3, out[0])
    nr.fill_uniform_nb(key, np.uint64(0), -3.5, 7.25, out[1])
out = np.empty((2, 300))
caller(key, out)
for row, (kind, params) in enumerate((("normal", (2.0, 0.3)), ("uniform", (-3.5, 7.25)))):
    ref = nr.draw_numpy(key, 0, kind, (300,), params)
    assert (out[row].view(np.int64) == ref.view(np.int64)).all(), kind
print("exact")
'''
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               NUMBASCAN_CACHE_DIR=str(tmp_path / "numbascan"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "exact" in out.stdout, out.stderr[-2000:]


# ---------------------------------------------------------------------------
# Bulk kernels (large draws outside a scan, arrays drawn in compiled steps)
# ---------------------------------------------------------------------------

def _bulk_args(kind, params):
    return (params[0], float(params[1]))


BULK = [("uniform", (-3.5, 7.25)), ("normal", (2.0, 0.3)), ("binomial", (7, 0.3)),
        ("binomial", (1, 0.5)), ("binomial", (3, 1.0)), ("binomial", (3, 0.0))]


@pytest.mark.parametrize("kind, params", BULK)
def test_fill_kernels_equal_numpy(kind, params):
    # sizes not a multiple of the kernels' blocks, bases about to wrap around 2**64
    n = 3001 if kind == "binomial" else 10_007
    width = nr._width(kind, params)
    for key, base in [(0x1234_5678_9ABC_DEF0, 0), (7, 2**64 - 5 * n * width), (2**63 + 1, 12345)]:
        ref = nr.draw_numpy(key, base, kind, n, params)
        out = np.empty(n, dtype=ref.dtype)
        nr.FILL_KERNELS[kind](U(key), U(base), *_bulk_args(kind, params), out)
        assert (_bits(out) == _bits(ref)).all(), (kind, params, key, base)


@pytest.mark.parametrize("kind, params", BULK[:3])
def test_parallel_rows_and_drawn_ahead_equal_numpy(kind, params):
    width = nr._width(kind, params)
    rows, cols, key = 7, 2500, 99
    first, stride = 2**64 - 3 * cols * width, cols * width + 17   # rows of a step, gaps between
    ref = np.stack([nr.draw_numpy(key, (first + r * stride) % 2**64, kind, cols, params)
                    for r in range(rows)])
    out = np.empty((rows, cols), dtype=ref.dtype)
    nr._ROWS_PARALLEL[kind](U(key), U(first), U(stride), *_bulk_args(kind, params), out, rows)
    assert (_bits(out) == _bits(ref)).all()
    # drawn ahead K steps at a time, steps visited in any order
    for K in (1, 3, 7, 10):
        buf, held = np.empty((min(K, rows), cols), dtype=ref.dtype), np.array([-1])
        for t in list(range(rows)) + [2, 0, 6, 5]:
            row = nr.AHEAD_KERNELS[kind](t, rows, U(key), U(first), U(stride),
                                         *_bulk_args(kind, params), buf, held)
            assert (_bits(row) == _bits(ref[t])).all(), (kind, K, t)


@pytest.mark.parametrize("kind, params", BULK[:3])
def test_large_draws_outside_a_scan_equal_numpy(kind, params, monkeypatch):
    n = 40_000 if kind == "binomial" else 300_000      # the parallel kernel (PARALLEL_MIN)
    width = nr._width(kind, params)
    assert n * width >= nr.PARALLEL_MIN
    for size in [(n,), (n // 4, 4), (nr.BULK_MIN // width + 3,)]:
        s = nr.RandomStreams(21)
        s.uniform(5)                                   # a base that is not 0
        call = {"uniform": s.uniform, "normal": s.normal, "binomial": s.binomial}[kind]
        names = {"uniform": ("low", "high"), "normal": ("avg", "std"), "binomial": ("n", "p")}
        got = call(size, **dict(zip(names[kind], params)))
        ref = nr.draw_numpy(s.key, 5, kind, size, params)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        assert (_bits(got) == _bits(ref)).all(), size
        assert s.counter == 5 + nr.counters_used(kind, size, params)
    # without numba started in the process, draws below COLD_BULK_MIN stay in NumPy
    calls = []
    monkeypatch.setattr(nr, "_numba_started", lambda: False)
    monkeypatch.setattr(nr, "draw_numpy", lambda *a: calls.append(a) or np.zeros(a[3]))
    nr.draw(1, 0, kind, nr.BULK_MIN // width + 1, params)
    assert len(calls) == 1
    monkeypatch.setattr(nr, "_numba_started", lambda: True)
    nr.draw(1, 0, kind, nr.BULK_MIN // width + 1, params)
    assert len(calls) == 1


def test_draw_small_and_empty_sizes():
    for kind, params in BULK:
        for size in [(), (0,), (3, 0), (5,)]:
            got = nr.draw(3, 10, kind, size, params)
            ref = nr.draw_numpy(3, 10, kind, size, params)
            assert got.shape == ref.shape and (_bits(got) == _bits(ref)).all()
    big_zero_trials = nr.draw(3, 0, "binomial", nr.COLD_BULK_MIN + 1, (0, 0.5))
    assert (big_zero_trials == 0).all()


def _scan_draws(mode, srng, T=5, **kw):
    """Draws in a compiled step by the bulk kernels: arrays of FILL_MIN and more (1-d and
    n-d, several per step so they sit at offsets of the step's counters) and large ones drawn
    ahead; scalars and tiny arrays by the scalar functions."""
    def step(h):
        a = srng.uniform(size=(1500,), low=-1.0, high=2.0)          # drawn ahead
        b = srng.normal(size=(3,), avg=1.0, std=0.5)                  # scalar function
        c = srng.binomial(size=(40, 30), n=3, p=0.3)                  # ahead, 2-d
        d = srng.normal(size=(4, 5))                                  # bulk kernel, 2-d
        e = srng.normal(size=(64,), avg=-2.0, std=3.0)                # bulk kernel, 1-d
        f = srng.uniform()
        return (h + a[:8] + b[0] + b[2] + c[:8, 0] + d[0, 3] + e[:8] + f,
                a, c, d, e)
    outs, _ = ns.scan(step, outputs_info=[np.zeros(8), None, None, None, None], n_steps=T,
                      mode=mode, **kw)
    return outs


def _same_bits(a, b):
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert (np.asarray(x).view(np.int64) == np.asarray(y).view(np.int64)).all()


def test_compiled_bulk_draws_equal_python_mode():
    out = {}
    for mode in ("cpu", "python"):
        s = ns.RandomStreams(77)
        out[mode] = _scan_draws(mode, s, T=23) + [s.counter]
    assert out["cpu"][-1] == out["python"][-1]
    _same_bits(out["cpu"][:-1], out["python"][:-1])
    # the paths those sizes take
    assert 1500 >= draws.AHEAD_MIN > 64 >= loopnest.RANDOM_FILL_MIN > 3


def test_compiled_bulk_draws_last_state_backwards_and_until():
    x = np.arange(12.0)
    for fold in (ns.foldl, ns.foldr):
        res = {}
        for mode in ("cpu", "python"):
            s = ns.RandomStreams(5)
            h, _ = fold(lambda x_t, h: h * 0.5 + x_t + s.normal(size=(2000,)), sequences=x,
                        outputs_info=np.zeros(2000), mode=mode)
            res[mode] = (h, s.counter)
        _same_bits([res["cpu"][0]], [res["python"][0]])
        assert res["cpu"][1] == res["python"][1] == 12 * 2000
    res = {}
    for mode in ("cpu", "python"):
        s = ns.RandomStreams(6)
        hs, _ = ns.scan(lambda h: (h + s.uniform(size=(3000,)), ns.until(h[0] > 2.0)),
                        outputs_info=np.zeros(3000), n_steps=50, mode=mode)
        res[mode] = (hs, s.counter)
    _same_bits([res["cpu"][0]], [res["python"][0]])
    assert res["cpu"][1] == res["python"][1]


def test_compiled_bulk_draws_nested_and_in_jit(monkeypatch):
    def run():
        s = ns.RandomStreams(9)

        @ns.jit
        def prog(x):
            noise = s.normal(size=(1200,))                             # in the program's body
            def outer(row, h):
                inner, _ = ns.scan(lambda v, g: g + v * s.uniform(size=(50,)),
                                   sequences=row, outputs_info=h[:50])
                return h + s.normal(size=(1200,)) + inner[-1][0]         # drawn ahead
            hs, _ = ns.scan(outer, sequences=x, outputs_info=noise)
            return hs
        return prog(np.linspace(0.0, 1.0, 12).reshape(4, 3)), s.counter

    a, ca = run()
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    b, cb = run()
    _same_bits([a], [b])
    assert ca == cb == 1200 + 4 * (3 * 50 + 1200)


def test_generated_source_uses_the_bulk_kernels(capsys):
    s = ns.RandomStreams(1)
    ns.show(lambda h: h + s.normal(size=(2000,)) + s.uniform(size=(2000,)).sum()
            + s.binomial(size=(16,), n=2).sum(), outputs_info=np.zeros(2000), n_steps=3)
    text = capsys.readouterr().out
    assert "normal_ahead_nb(" in text and "uniform_ahead_nb(" in text
    assert "fill_binomial_nb(" in text
    assert "start_threads()" in text                    # a module calling parallel kernels


def test_cached_loop_with_drawn_ahead_draws_in_a_new_process(tmp_path):
    """A loop that draws ahead calls parallel kernels through a callee. When numba compiles the
    loop while that callee comes from its disk cache, the cached loop does not record that it
    needs the threading layer, and a process that loads it has none (a segfault) unless the
    generated module starts it. Three new processes on one cache: the first caches the callee,
    the second compiles the loop, the third loads the loop."""
    import os
    import subprocess
    import sys
    script = '''
import sys
import numpy as np, numbascan as ns, numbascan.random as nr
if sys.argv[1] == "callee":
    nr.normal_ahead_nb(0, 1, np.uint64(1), np.uint64(0), np.uint64(8), 0.0, 1.0,
                       np.empty((1, 8)), np.full(1, -1))
    print("ok")
    sys.exit()
s = ns.RandomStreams(4)
h, _ = ns.foldl(lambda t, h: h * np.exp(0.01 * s.normal(size=(20000,))),
                sequences=np.arange(30), outputs_info=np.ones(20000))
z = nr.draw_numpy(s.key, 0, "normal", (30, 20000), (0.0, 1.0))
ref = np.ones(20000)
for t in range(30):
    ref = ref * np.exp(0.01 * z[t])
assert np.allclose(h, ref, rtol=1e-12, atol=0)
print("ok")
'''
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               NUMBASCAN_CACHE_DIR=str(tmp_path / "numbascan"))
    for run in ("callee", "loop", "loop"):
        out = subprocess.run([sys.executable, "-c", script, run], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0 and "ok" in out.stdout, (run, out.returncode,
                                                             out.stderr[-2000:])


def test_threads_start_with_openmp_waiting_passively(monkeypatch):
    """numbascan starts numba's threading layer with OMP_WAIT_POLICY=passive unless the
    environment chose a wait policy, and leaves the environment as it found it."""
    import os
    seen = []
    monkeypatch.setattr(nr.numba, "get_num_threads",
                        lambda: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    for name in nr._WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    nr.start_threads.__wrapped__()
    assert seen == ["passive"] and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    nr.start_threads.__wrapped__()
    assert seen[-1] == "active" and os.environ["OMP_WAIT_POLICY"] == "active"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    nr.start_threads.__wrapped__()
    assert seen[-1] is None and "OMP_WAIT_POLICY" not in os.environ
