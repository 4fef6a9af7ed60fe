"""nlax.associative_scan's parallel prefix scan (api/prefix.py, SPEC section 9: O(log n) depth,
across cores on the CPU, across threads on the GPU).

Large eager calls and every traced call run parallel maps of scans over chunks, or, for a
combine affine in its left operand (sums, products, affine maps, small matrix products), one
parallel-in-time scan of the fold solved as a linear recurrence; small eager calls (and
mode="python") run JAX's odd/even recursion in NumPy, the serial composition that serves as the
oracle here, with closed forms (cumsum, cumprod, maximum.accumulate, a loop over
the recurrence) and jax.lax.associative_scan. Each distinct combine, element shape or program is
a numba compile: the data is shared by module fixtures and the combines are few.
"""

import io

import numpy as np
import pytest

import numbascan as ns
import numbascan.lax as nlax
from conftest import assert_close
from numbascan.api import prefix
from numbascan.api.pytree import flatten

try:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax as jlax
except ImportError:          # CI: the NumPy references only
    jax = jnp = jlax = None

# elements of the eager calls: above the work threshold for every combine below; N3: three
# levels of chunks
N = 100_000
N3 = 2 * prefix.CHUNK ** 2 + 3


def against_jax(actual, run_jax, **tol):
    if jax is None:
        return
    expected = jax.tree_util.tree_map(np.asarray, run_jax())
    a_leaves, a_def = flatten(actual)
    e_leaves, e_def = flatten(expected)
    assert a_def == e_def
    for a, e in zip(a_leaves, e_leaves):
        assert_close(a, e, **tol)


def three(xp):
    """Add, multiply and max, one per leaf: one combine (one compile) for the three."""
    def combine(a, b):
        return a[0] + b[0], a[1] * b[1], xp.maximum(a[2], b[2])
    return combine


def affine(xp):
    """x_t = a_t x_{t-1} + b_t: (a1, b1) then (a2, b2) is (a1 a2, a2 b1 + b2)."""
    def combine(first, second):
        return {"a": first["a"] * second["a"], "b": second["a"] * first["b"] + second["b"]}
    return combine


def lse(xp):
    """log(exp(a) + exp(b)): associative, not affine in either operand."""
    def combine(a, b):
        return xp.log(xp.exp(a) + xp.exp(b))
    return combine


def matmul2(a, b):
    """Products of stacks of 2x2 matrices, with broadcasting."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(axis=-2)


def recurrence(a, b, reverse=False):
    order = range(len(a) - 1, -1, -1) if reverse else range(len(a))
    out, state = np.empty_like(b), 0.0
    for t in order:
        state = a[t] * state + b[t]
        out[t] = state
    return out


def matrix_prefixes(m, reverse=False):
    order = list(range(len(m) - 1, -1, -1)) if reverse else list(range(len(m)))
    out, acc = np.empty_like(m), None
    for t in order:
        acc = m[t] if acc is None else acc @ m[t]
        out[t] = acc
    return out


def near_identity(rng, n):
    """2x2 matrices whose long products stay of order one."""
    return np.eye(2) + 0.01 * rng.normal(size=(n, 2, 2))


def calls_of_parallel_maps(monkeypatch):
    """The sequences' shapes of each parallel map api/prefix.py runs, in order."""
    seen = []
    run = prefix.theano_scan

    def recording(step, **kwargs):
        if kwargs.get("_parallel"):
            seen.append(tuple(kwargs["sequences"][0].shape))
        return run(step, **kwargs)

    monkeypatch.setattr(prefix, "theano_scan", recording)
    return seen


def calls_of_recurrences(monkeypatch):
    """The number of steps of each fold api/prefix.py runs as a linear recurrence."""
    seen = []
    run = prefix.theano_scan

    def recording(step, **kwargs):
        out = run(step, **kwargs)                # a ScanError: not affine, not recorded
        if kwargs.get("parallel"):
            seen.append(kwargs["sequences"][0].shape[0])
        return out

    monkeypatch.setattr(prefix, "theano_scan", recording)
    return seen


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(20261202)
    return {
        "x": rng.normal(size=N3),
        "m": rng.uniform(0.999, 1.001, size=N3),
        "y": rng.normal(size=N3),
        "a": rng.uniform(0.5, 1.0, size=N),
        "b": rng.normal(size=N),
        "mats": near_identity(rng, 20_000),
    }


# ------------------------------------------------------------------------------------------------
# eager calls that take the parallel path


def test_add_multiply_max_eager(data, monkeypatch):
    elems = (data["x"], data["m"], data["y"])
    maps = calls_of_parallel_maps(monkeypatch)
    out = nlax.associative_scan(three(np), elems)
    chunks = -(-N3 // prefix.CHUNK)
    # each chunk from its first element, then the chunks of their totals (whose totals are
    # one scan); then the chunks of totals from the prefix before each, the chunks likewise
    level = [(chunks, prefix.CHUNK), (-(-(chunks - 1) // prefix.CHUNK), prefix.CHUNK)]
    assert maps == level + level[::-1]
    scale = np.abs(np.cumsum(data["x"])).max()
    assert_close(out[0], np.cumsum(data["x"]), rtol=1e-10, atol=1e-12 * scale)
    assert_close(out[1], np.cumprod(data["m"]), rtol=1e-10)
    np.testing.assert_array_equal(out[2], np.maximum.accumulate(data["y"]))
    serial = nlax.associative_scan(three(np), elems, mode="python")
    assert_close(out[0], serial[0], rtol=1e-10, atol=1e-12 * scale)
    assert_close(out[1], serial[1], rtol=1e-10)
    np.testing.assert_array_equal(out[2], serial[2])
    against_jax(out, lambda: jlax.associative_scan(three(jnp), elems), rtol=1e-10,
                atol=1e-12 * scale)
    for leaf, given in zip(out, elems):
        assert leaf.flags.c_contiguous and not np.shares_memory(leaf, given)


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_recurrence_eager(data, reverse, monkeypatch):
    elems = {"a": data["a"], "b": data["b"]}
    folds = calls_of_recurrences(monkeypatch)
    out = nlax.associative_scan(affine(np), elems, reverse=reverse)
    assert folds == [N - 1]                      # one linear recurrence, no chunks
    assert_close(out["b"], recurrence(data["a"], data["b"], reverse), rtol=1e-10, atol=1e-12)
    serial = nlax.associative_scan(affine(np), elems, reverse=reverse, mode="python")
    assert_close(out["a"], serial["a"], rtol=1e-10, atol=1e-300)
    assert_close(out["b"], serial["b"], rtol=1e-10, atol=1e-12)
    against_jax(out, lambda: jlax.associative_scan(affine(jnp), elems, reverse=reverse),
                rtol=1e-10, atol=1e-12)


def test_matrix_products_eager(data, monkeypatch):
    mats = data["mats"]
    folds = calls_of_recurrences(monkeypatch)
    out = nlax.associative_scan(matmul2, mats)
    assert folds == [len(mats) - 1]              # a matrix recurrence of 4 entries
    assert_close(out, matrix_prefixes(mats), rtol=1e-10, atol=1e-12)
    assert_close(out, nlax.associative_scan(matmul2, mats, mode="python"), rtol=1e-10,
                 atol=1e-12)
    against_jax(out, lambda: jlax.associative_scan(jnp.matmul, mats), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# eager calls that do not: NumPy's odd/even recursion, nothing compiled


def test_small_eager_calls_run_the_odd_even_recursion(rng, monkeypatch):
    maps = calls_of_parallel_maps(monkeypatch)
    for n in (prefix.CHUNK, 3 * prefix.CHUNK):        # a chunk; below the work threshold
        a, b = rng.uniform(0.5, 1.0, size=n), rng.normal(size=n)
        out = nlax.associative_scan(affine(np), {"a": a, "b": b})
        assert_close(out["b"], recurrence(a, b), rtol=1e-12, atol=1e-13)
        x = rng.normal(size=(n, 2))
        assert_close(nlax.associative_scan(np.add, x, reverse=True),
                     np.cumsum(x[::-1], axis=0)[::-1], rtol=1e-12, atol=1e-12)
    assert maps == []


def test_a_combine_that_is_not_affine_runs_by_chunks(data, monkeypatch):
    maps = calls_of_parallel_maps(monkeypatch)
    x = data["y"][:N] * 0.1
    out = nlax.associative_scan(lse(np), x)
    assert maps and maps[0] == (-(-N // prefix.CHUNK), prefix.CHUNK)
    assert_close(out, np.logaddexp.accumulate(x), rtol=1e-10)


def test_an_untraceable_combine_runs_in_numpy(data, monkeypatch):
    maps = calls_of_parallel_maps(monkeypatch)
    # Python control flow on the values: NumPy runs it, the tracer cannot
    out = nlax.associative_scan(lambda p, q: p + q if (p > -np.inf).all() else q, data["x"])
    assert maps == []
    scale = np.abs(np.cumsum(data["x"])).max()
    assert_close(out, np.cumsum(data["x"]), rtol=1e-10, atol=1e-12 * scale)


def test_a_combine_that_changes_a_dtype_is_named(data):
    ints = np.arange(N)
    with pytest.raises(TypeError, match=r"associative_scan: fn\(a, b\) returned elems\['b'\] "
                                        r"with dtype float64 .* dtype int64"):
        nlax.associative_scan(lambda p, q: {"a": p["a"] + q["a"], "b": (p["b"] + q["b"]) / 2},
                              {"a": ints, "b": ints})


# ------------------------------------------------------------------------------------------------
# traced: ns.jit (one program for the cases), derivatives


@ns.jit
def program(x2, a, b, mats, a5, b5):
    """Every traced case at once (one compile): a sum along axis 1 in reverse (rows of 3
    elements), the recurrence over several chunks, matrix products in reverse, the
    recurrence over 5 elements, all linear recurrences; and a log-sum-exp by chunks."""
    total = nlax.associative_scan(np.add, x2, reverse=True, axis=1)
    states = nlax.associative_scan(affine(np), {"a": a, "b": b})
    products = nlax.associative_scan(matmul2, mats, reverse=True)
    small = nlax.associative_scan(affine(np), {"a": a5, "b": b5})
    soft = nlax.associative_scan(lse(np), 0.1 * b)
    return total, states, products, small, soft


@pytest.fixture(scope="module")
def traced_args():
    rng = np.random.default_rng(7)
    n = 3 * prefix.CHUNK + 11
    return (rng.normal(size=(3, 2 * prefix.CHUNK + 5)), rng.uniform(0.5, 1.0, n),
            rng.normal(size=n), near_identity(rng, prefix.CHUNK + 3),
            rng.uniform(0.5, 1.0, 5), rng.normal(size=5))


def test_jit_against_the_serial_composition_and_jax(traced_args):
    x2, a, b, mats, a5, b5 = traced_args
    total, states, products, small, soft = program(*traced_args)
    assert_close(soft, np.logaddexp.accumulate(0.1 * b), rtol=1e-11)
    assert_close(total, np.cumsum(x2[:, ::-1], axis=1)[:, ::-1], rtol=1e-12, atol=1e-12)
    assert_close(total, nlax.associative_scan(np.add, x2, reverse=True, axis=1, mode="python"),
                 rtol=1e-12, atol=1e-12)
    assert_close(states["b"], recurrence(a, b), rtol=1e-11, atol=1e-12)
    serial = nlax.associative_scan(affine(np), {"a": a, "b": b}, mode="python")
    assert_close(states["a"], serial["a"], rtol=1e-11, atol=1e-300)
    assert_close(states["b"], serial["b"], rtol=1e-11, atol=1e-12)
    assert_close(products, matrix_prefixes(mats, reverse=True), rtol=1e-11, atol=1e-12)
    assert_close(small["b"], recurrence(a5, b5), rtol=1e-12)
    against_jax(states, lambda: jlax.associative_scan(affine(jnp), {"a": a, "b": b}),
                rtol=1e-11, atol=1e-12)
    against_jax(products, lambda: jlax.associative_scan(jnp.matmul, mats, reverse=True),
                rtol=1e-11, atol=1e-12)
    against_jax(total, lambda: jlax.associative_scan(jnp.add, x2, reverse=True, axis=1),
                rtol=1e-12, atol=1e-12)


def test_the_program_runs_parallel_maps(traced_args):
    """Rendering only: the maps of chunks run their steps with prange above the threshold,
    the affine combines are linear recurrences."""
    text = ns.show(program, *traced_args, file=io.StringIO())
    assert text.count("prange(") == 1            # the log-sum-exp's map function
    assert "parallel=True" in text
    assert "diagonal_scan_nb(" in text and "matrix_scan_nb(" in text


def test_grad_through_the_parallel_path_against_jax(rng):
    n = prefix.CHUNK + 88                          # two chunks: both maps, a stand-in offset

    def loss(a, b):
        return (nlax.associative_scan(affine(np), {"a": a, "b": b})["b"] ** 2).sum()

    a, b = rng.uniform(0.5, 1.0, n), rng.normal(size=n)
    g_a, g_b = ns.grad(loss, argnums=(0, 1))(a, b)
    # the recurrence's derivative by hand: x_t = a_t x_{t-1} + b_t, L = sum x_t^2
    x = recurrence(a, b)
    lam, ref_a, ref_b = 0.0, np.empty(n), np.empty(n)
    for t in range(n - 1, -1, -1):
        lam = 2 * x[t] + (a[t + 1] * lam if t + 1 < n else 0.0)
        ref_b[t] = lam
        ref_a[t] = lam * (x[t - 1] if t > 0 else 0.0)
    assert_close(g_a, ref_a, rtol=1e-10, atol=1e-12)
    assert_close(g_b, ref_b, rtol=1e-10, atol=1e-12)
    if jax is not None:
        def jax_loss(a, b):
            return (jlax.associative_scan(affine(jnp), {"a": a, "b": b})["b"] ** 2).sum()
        ref = jax.grad(jax_loss, argnums=(0, 1))(a, b)
        assert_close(g_a, np.asarray(ref[0]), rtol=1e-10, atol=1e-12)
        assert_close(g_b, np.asarray(ref[1]), rtol=1e-10, atol=1e-12)


def test_grad_through_the_chunks_against_jax(rng):
    n = prefix.CHUNK + 88                          # two chunks: both maps, a stand-in offset
    x, w = 0.1 * rng.normal(size=n), rng.normal(size=n)

    def loss(x):
        return (nlax.associative_scan(lse(np), x) * w).sum()
    g = ns.grad(loss)(x)
    # d/dx_s of sum_t w_t lse(x_0..x_t) = sum_{t >= s} w_t softmax(x_0..x_t)_s
    prefixes = np.logaddexp.accumulate(x)
    ref = np.exp(x) * np.cumsum((w * np.exp(-prefixes))[::-1])[::-1]
    assert_close(g, ref, rtol=1e-10, atol=1e-12)
    if jax is not None:
        jax_g = jax.grad(lambda x: (jlax.associative_scan(jnp.logaddexp, x) * w).sum())(x)
        assert_close(g, np.asarray(jax_g), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# CUDA (numba-cuda's simulator unless NUMBASCAN_TEST_GPU=1): a thread per chunk


def test_cuda_runs_a_thread_per_chunk(rng, kernel_patterns, monkeypatch):
    n = 17 * prefix.CUDA_CHUNK + 5                 # two levels of chunks
    x = 0.1 * rng.normal(size=n)
    out = nlax.associative_scan(lse(np), x, reverse=True, mode="cuda")
    assert_close(out, np.logaddexp.accumulate(x[::-1])[::-1], rtol=1e-12)
    assert_close(out, nlax.associative_scan(lse(np), x, reverse=True, mode="python"),
                 rtol=1e-12)
    batched = [p for p in kernel_patterns if p.kind == "batched"]
    assert len(batched) >= 2 and all(p.lanes == 1 for p in batched), kernel_patterns
    # in an ns.jit program: the maps are kernels, the glue between them runs on the host
    del kernel_patterns[:]
    jitted = ns.jit(lambda x: nlax.associative_scan(lse(np), x, mode="cuda"))
    assert_close(jitted(x), np.logaddexp.accumulate(x), rtol=1e-12)
    assert [p.kind for p in kernel_patterns].count("batched") >= 2, kernel_patterns
    # an affine combine: the fold is a linear recurrence, the GPU's block scan
    from numbascan.runtime import cuda as gpu
    solved = []
    solve = gpu.linear_recurrence
    monkeypatch.setattr(gpu, "linear_recurrence",
                        lambda *args, **kw: solved.append(1) or solve(*args, **kw))
    from numbascan.api import affine as in_time
    monkeypatch.setattr(in_time, "on_gpu", gpu.linear_recurrence)
    a, b = rng.uniform(0.5, 1.0, n), rng.normal(size=n)
    out = nlax.associative_scan(affine(np), {"a": a, "b": b}, reverse=True, mode="cuda")
    assert_close(out["b"], recurrence(a, b, reverse=True), rtol=1e-12, atol=1e-13)
    assert len(solved) == 2                      # the two leaves' recurrences
