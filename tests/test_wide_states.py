"""SPEC section 10, "Wide states use every core": an element-separable step runs by chunks of
its state shared out among threads (codegen/chunks.py, runtime/threads.py).

The same scans run in two fresh processes, with `NUMBASCAN_NUM_THREADS=1` and `=2` (one chunk,
then two: other chunk boundaries), both forced onto the chunked path at small sizes
(`NUMBASCAN_WIDE_MIN_SIZE=0`, `NUMBASCAN_WIDE_MIN_WORK=0`) and sharing one cache folder, so
the second process loads what the first compiled. Each saves its compiled results and the
python mode's to .npy files: they must agree with python mode to rounding, and with each other
bit for bit. The cases: sequences with a row per element and a scalar per step, non-sequences
per element and scalar, several states, taps (-1,) and (-2, -1), every state kept and the last
only, go_backwards, a state of two axes, float32, n_steps without sequences, an ns.jit
function and ns.grad through such a scan. N = 37 is not a multiple of the chunks' alignment,
T = 13 steps leave the in-place state in its second row.

Steps whose elements interact (a reduction, a roll, a matmul, a reversal, a shift, a row
broadcast against a column), draw random numbers or stop early are not separable: they run the
one-core loop, with right results. In this process: a separable step and an updated shared
variable by chunks against python mode, a chunked scan inside ns.jit with too little work for
threads (no parfor loop), the thread cap around parallel code, and the chunk sizes.
"""

import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import numbascan as ns
from numbascan.codegen import chunks
from numbascan.loop.args import default_mode, normalize
from numbascan.loop.step import trace_step
from numbascan.runtime import threads

from conftest import assert_same, run_both

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    HAVE_JAX = True
except ImportError:                                       # pragma: no cover - depends on the env
    jax = jnp = None
    HAVE_JAX = False

CHILD = textwrap.dedent('''
    import io
    import json
    import os
    import sys

    import numpy as np
    import numbascan as ns

    out_dir = sys.argv[1]
    rng = np.random.default_rng(7)
    N, T = 37, 13
    chunked = {}


    def save(name, value):
        for k, v in enumerate(value if isinstance(value, list) else [value]):
            np.save(os.path.join(out_dir, f"{name}_{k}.npy"), np.asarray(v))


    def shown(*args, **kwargs):
        text = io.StringIO()
        ns.show(*args, file=text, **kwargs)
        return "def chunks_" in text.getvalue()


    def both(name, fn, scan=ns.scan, **kw):
        chunked[name] = shown(fn, **{k: v for k, v in kw.items() if k != "go_backwards"})
        for mode in ("cpu", "python"):
            out, _ = scan(fn, mode=mode, **kw)
            save(f"{name}_{mode}", out)


    def logistic(s, x, a):
        return a * x * (1 - x) + s


    S = 1e-2 * rng.random((T, N))
    x0 = rng.uniform(0.1, 0.9, N)
    both("logistic_last", logistic, scan=ns.foldl, sequences=S, outputs_info=x0,
         non_sequences=2.5)
    both("logistic_all_backwards", logistic, sequences=S, outputs_info=x0,
         non_sequences=np.float64(2.5), go_backwards=True)

    k = rng.uniform(0.5, 1.5, N)
    X2 = rng.standard_normal((2, N))
    y0 = rng.standard_normal(N)


    def two_states(s, x_tm2, x_tm1, y, k, c):
        return 0.5 * x_tm2 + 0.3 * np.tanh(x_tm1) + s, 0.9 * y + c * x_tm1 * k


    taps = dict(sequences=S, outputs_info=[dict(initial=X2, taps=[-2, -1]), y0],
                non_sequences=[k, 0.2])
    both("taps_all", two_states, **taps)
    both("taps_last", two_states, scan=ns.reduce, **taps)

    S32 = (1e-2 * rng.random((T, N))).astype(np.float32)
    z0 = rng.standard_normal(N).astype(np.float32)


    def float32_step(s, z, w):
        new = np.where(z > 0, np.exp(-z * z) * w, np.tanh(z) + s)
        return new.astype(np.float32), z * 2


    both("float32", float32_step, sequences=S32, outputs_info=[z0, None],
         non_sequences=np.float32(0.7))

    M = 0.1 * rng.standard_normal((T, 5, 7))
    m0 = rng.standard_normal((5, 7))
    g = rng.uniform(0.1, 1.0, (5, 7))
    both("two_axes", lambda s, m, g: np.sin(m) * g + s, scan=ns.foldl, sequences=M,
         outputs_info=m0, non_sequences=g)

    s1 = rng.standard_normal(T + 3)
    both("scalar_rows", lambda s_prev, s, x, k: (np.cos(x) * k + s - 0.5 * s_prev, x + s),
         sequences=dict(input=s1, taps=[-1, 0]), outputs_info=[x0, None], non_sequences=k)
    both("n_steps", lambda x, k: x * 0.97 + k / (1 + x * x), outputs_info=x0,
         non_sequences=k, n_steps=11)


    @ns.jit
    def jitted(S, x0, a):
        last, _ = ns.foldl(logistic, sequences=S, outputs_info=x0, non_sequences=a)
        xs, _ = ns.scan(logistic, sequences=S, outputs_info=x0, non_sequences=a)
        return last, xs.sum(axis=0)


    chunked["jit"] = shown(jitted, S, x0, 2.5)
    save("jit_cpu", list(jitted(S, x0, 2.5)))
    save("jit_python", [
        ns.foldl(logistic, sequences=S, outputs_info=x0, non_sequences=2.5, mode="python")[0],
        ns.scan(logistic, sequences=S, outputs_info=x0, non_sequences=2.5,
                mode="python")[0].sum(axis=0)])

    a = rng.uniform(2.4, 2.6, N)


    def loss(a, x0, S):
        last, _ = ns.foldl(logistic, sequences=S, outputs_info=x0, non_sequences=a)
        return (last ** 2).sum()


    grad = ns.grad(loss, (0, 1))
    chunked["grad"] = shown(grad, a, x0, S)
    save("grad_cpu", list(grad(a, x0, S)))
    save("grad_inputs", [a, x0, S])
    with open(os.path.join(out_dir, "chunked.json"), "w") as f:
        json.dump(chunked, f)
''')

# results of each case: (name, number of outputs)
CASES = [("logistic_last", 1), ("logistic_all_backwards", 1), ("taps_all", 2),
         ("taps_last", 2), ("float32", 2), ("two_axes", 1), ("scalar_rows", 2),
         ("n_steps", 1), ("jit", 2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{threads: folder of the results} of the child script run with 1 and 2 threads."""
    root = tmp_path_factory.mktemp("wide")
    env = dict(os.environ, NUMBASCAN_CACHE_DIR=str(root / "cache"), NUMBA_NUM_THREADS="2",
               NUMBASCAN_WIDE_MIN_SIZE="0", NUMBASCAN_WIDE_MIN_WORK="0")
    env.pop("NUMBASCAN_MODE", None)
    folders = {}
    for n in (1, 2):
        folder = root / f"threads{n}"
        folder.mkdir()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True,
                              text=True, env=dict(env, NUMBASCAN_NUM_THREADS=str(n)),
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        folders[n] = folder
    return folders


def load(folder, name, k):
    return np.load(folder / f"{name}_{k}.npy")


def test_every_case_took_the_chunked_path(runs):
    for folder in runs.values():
        chunked = json.loads((folder / "chunked.json").read_text())
        assert chunked and all(chunked.values()), chunked


@pytest.mark.parametrize("name,n", CASES)
def test_two_threads_give_the_one_thread_results(runs, name, n):
    for k in range(n):
        one, two = load(runs[1], f"{name}_cpu", k), load(runs[2], f"{name}_cpu", k)
        assert one.dtype == two.dtype and one.shape == two.shape
        assert np.array_equal(one, two), f"{name} output {k}: threads change the bits"


@pytest.mark.parametrize("name,n", CASES)
def test_chunked_against_python_mode(runs, name, n):
    for k in range(n):
        for threads_run in runs.values():
            assert_same(load(threads_run, f"{name}_cpu", k),
                        load(threads_run, f"{name}_python", k), f"{name} output {k}")


def logistic_loss(xp, a, x0, S):
    def body(x, s):
        return a * x * (1 - x) + s, None
    if xp is np:
        x = x0
        for s in S:
            x = body(x, s)[0]
    else:
        x = jax.lax.scan(body, x0, S)[0]
    return (x ** 2).sum()


def test_gradient_through_a_chunked_scan(runs):
    a, x0, S = (load(runs[1], "grad_inputs", k) for k in range(3))
    if HAVE_JAX:
        expected = [np.asarray(g) for g in jax.grad(
            lambda a, x0: logistic_loss(jnp, a, x0, jnp.asarray(S)), (0, 1))(a, x0)]
        rtol, atol = 1e-10, 1e-12
    else:                                                 # pragma: no cover
        expected = []
        for arg in (0, 1):
            g = np.zeros(len(a))
            for i in range(len(a)):
                args_p, args_m = [a.copy(), x0.copy()], [a.copy(), x0.copy()]
                args_p[arg][i] += 1e-6
                args_m[arg][i] -= 1e-6
                g[i] = (logistic_loss(np, *args_p, S) - logistic_loss(np, *args_m, S)) / 2e-6
            expected.append(g)
        rtol, atol = 2e-5, 1e-7
    for folder in runs.values():
        for k, e in enumerate(expected):
            np.testing.assert_allclose(load(folder, "grad_cpu", k), e, rtol=rtol, atol=atol)
    for k in range(2):
        assert np.array_equal(load(runs[1], "grad_cpu", k), load(runs[2], "grad_cpu", k))


# ------------------------------------------------------------------------------------------------
# which steps are element-separable


@pytest.fixture
def wide(monkeypatch):
    """Every separable step, whatever its size, on every thread (in this process)."""
    monkeypatch.setenv("NUMBASCAN_WIDE_MIN_SIZE", "0")
    monkeypatch.setenv("NUMBASCAN_WIDE_MIN_WORK", "0")


def plan_of(step, **kwargs):
    sa = normalize(step, kwargs.get("sequences"), kwargs.get("outputs_info"),
                   kwargs.get("non_sequences"), kwargs.get("n_steps"), -1, False, None, False,
                   False, None)
    ts = trace_step(sa)
    return chunks.chunk_plan(ts.ir, ts.layout, "scan_x")


def interacting(case):
    """Steps whose new element k reads other elements of the state."""
    def step(s, x, W, row):
        if case == "reduction":
            return np.tanh(x - x.mean()) + s
        if case == "roll":
            return 0.5 * np.roll(x, 1) + s
        if case == "matmul":
            return np.tanh(x @ W) + s
        if case == "reversed":
            return np.tanh(x[::-1]) + s
        if case == "shifted":
            return np.concatenate([x[1:], x[:1]]) * 0.5 + s
        return np.tanh(x * row) + s                       # (4, 5) state times a (5,) row
    return step


@pytest.mark.parametrize("case", ["reduction", "roll", "matmul", "reversed", "shifted",
                                  "row_broadcast"])
def test_interacting_elements_run_the_one_core_loop(wide, rng, case):
    shape = (4, 5) if case == "row_broadcast" else (20,)
    n = int(np.prod(shape))
    kwargs = dict(sequences=0.1 * rng.standard_normal((6,) + shape),
                  outputs_info=rng.standard_normal(shape),
                  non_sequences=[rng.standard_normal((n, n)) / n, rng.standard_normal(5)])
    step = interacting(case)
    assert plan_of(step, **kwargs) is None
    run_both(step, **kwargs)


def test_draws_and_until_run_the_one_core_loop(wide, rng):
    srng = ns.RandomStreams(3)
    x0 = rng.standard_normal(20)
    assert plan_of(lambda x: x * 0.5 + srng.normal(x.shape), outputs_info=x0,
                   n_steps=4) is None
    assert plan_of(lambda x: (x * 0.5, ns.until(x[0] > 10)), outputs_info=x0,
                   n_steps=4) is None


def test_separable_step_in_this_process(wide, rng, monkeypatch):
    """The chunked path on this process's threads, against python mode."""
    S, x0 = 0.1 * rng.random((9, 50)), rng.uniform(0.1, 0.9, 50)

    def leaky(s, x, tau, gain):
        return x + (np.tanh(gain * x) - x) / tau + s
    kwargs = dict(sequences=S, outputs_info=x0, non_sequences=[rng.uniform(2, 4, 50), 0.8])
    plan = plan_of(leaky, **kwargs)
    assert plan is not None and plan.size == 50 and plan.streams
    run_both(leaky, scan=ns.foldl, **kwargs)
    # the same step by chunks of an odd layout: the thread count changes no bit
    out = {}
    for n in ("1", "2"):
        monkeypatch.setenv("NUMBASCAN_NUM_THREADS", n)
        out[n] = ns.foldl(leaky, **kwargs)[0]
    assert np.array_equal(out["1"], out["2"])


def test_shared_variable_updated_by_chunks(wide, rng):
    """An updated shared variable is one more state of the chunks, updated in place."""
    S, x0 = 0.1 * rng.standard_normal((8, 40)), rng.standard_normal(40)
    start = rng.standard_normal(40)
    acc = ns.shared(start.copy(), name="acc")

    def step(s, x):
        return np.tanh(x + s), {acc: acc * 0.5 + x}
    assert plan_of(step, sequences=S, outputs_info=x0) is not None
    run_both(step, sequences=S, outputs_info=x0, reset=lambda: acc.set_value(start.copy()))


def test_program_below_the_work_threshold(rng, monkeypatch):
    """Inside ns.jit, a chunked scan of too little work calls its chunks on one thread."""
    monkeypatch.setenv("NUMBASCAN_WIDE_MIN_SIZE", "0")
    S, x0 = 0.1 * rng.random((7, 45)), rng.uniform(0.1, 0.9, 45)

    def decay(s, x, k):
        return x * k + np.sin(s)

    def last(S, x0, k):
        return ns.foldl(decay, sequences=S, outputs_info=x0, non_sequences=k)[0]
    k = rng.uniform(0.5, 0.9, 45)
    with open(os.devnull, "w") as devnull:
        text = ns.show(ns.jit(last), S, x0, k, file=devnull)
    assert "the address of chunks_" in text and "the address of scan_" not in text
    with default_mode("python"):
        expected = last(S, x0, k)
    assert_same(ns.jit(last)(S, x0, k), expected)


def test_bad_thread_count_is_named(monkeypatch):
    monkeypatch.setenv("NUMBASCAN_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="NUMBASCAN_NUM_THREADS.*'two'"):
        threads.thread_count()
    monkeypatch.setenv("NUMBASCAN_NUM_THREADS", "0")
    assert threads.thread_count() >= 1


def test_thread_cap_around_parallel_code(monkeypatch):
    """Compiled code with prange loops sees the cap as numba's thread count of the calling
    thread while it runs; the count is restored after it."""
    def inside():
        return numba.get_num_threads()
    inside.py_func = inside
    capped = threads.capped(inside, True)
    before = numba.get_num_threads()
    monkeypatch.setenv("NUMBASCAN_NUM_THREADS", "1")
    assert capped() == 1 and numba.get_num_threads() == before
    monkeypatch.delenv("NUMBASCAN_NUM_THREADS")
    assert capped() == before
    assert threads.capped(inside, False) is inside


@pytest.mark.parametrize("n,resident,streams", [(37, 8, True), (100_000, 8, True),
                                                 (100_000, 8, False), (10**6, 24, False),
                                                 (5000, 4, False)])
def test_chunks_cover_the_state(n, resident, streams):
    for n_threads in (1, 2, 3, 8):
        size = chunks.chunk_elements(n, n_threads, resident, streams)
        n_chunks = -(-n // size)
        assert size % chunks.ALIGN == 0 and (n_chunks - 1) * size < n <= n_chunks * size
        budget = chunks.STREAM_BYTES if streams else chunks.RESIDENT_BYTES
        # chunks within the cache budget, unless a thread's share is a single aligned chunk
        assert size * resident <= budget + chunks.ALIGN * resident or n_chunks <= n_threads
