"""numbascan.lax (SPEC section 9): JAX's loop API against jax.lax and against NumPy loops.

Every case computes its reference with a plain NumPy loop (or a closed form), and, where jax is
installed, also compares with jax.lax on the same body: the bodies are written once against a
module `xp` (NumPy or jax.numpy). Cases are adapted from JAX's control-flow tests
(tests/lax_control_flow_test.py: testScanImpl, testForiLoopTupleState, testWhileWithTuple,
testAssociativeScanUnstructured/Structured...). Derivatives: ns.grad through nlax.scan against
jax.grad; while_loop and fori_loop with run-time bounds (reverse mode, which JAX refuses)
against central finite differences. Error paths name the leaf. Shapes are small and bodies are
shared between tests: each distinct step or program is a numba compile.
"""

import contextlib
import importlib.util
import io
import pathlib
import tracemalloc
from collections import namedtuple

import numpy as np
import pytest

import numbascan as ns
import numbascan.lax as nlax
from conftest import assert_close
from numbascan.api.pytree import flatten

try:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax as jlax
except ImportError:          # CI: the NumPy references only
    jax = jnp = jlax = None


def assert_tree_close(actual, expected, rtol=1e-12, atol=1e-13):
    """Same pytree structure (None leaves included), leaves close with equal shapes."""
    a_leaves, a_def = flatten(actual)
    e_leaves, e_def = flatten(expected)
    assert a_def == e_def, f"structure {a_def} != {e_def}"
    for a, e in zip(a_leaves, e_leaves):
        assert_close(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def against_jax(actual, run_jax, **tol):
    """Compare with what `run_jax()` (a jax.lax computation) gives; nothing without jax."""
    if jax is None:
        return
    expected = jax.tree_util.tree_map(np.asarray, run_jax())
    assert_tree_close(actual, expected, **tol)


def numerical_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[k] = eps
        g[k] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


# ------------------------------------------------------------------------------------------------
# scan: the body of JAX's testScanImpl, with a pytree carry, pytree xs and a None leaf in ys


D = np.array([0.3, -0.7])


def scan_body(xp):
    def f(carry, x):
        c, state = carry
        a, b = x["a"], x["b"]
        s = xp.cos(xp.sum(xp.sin(a)) + xp.sum(xp.cos(c)) + xp.sum(xp.tan(D)))
        c = xp.sin(c * s)
        h = state["h"] * 0.5 + b * s
        return (c, {"h": h}), ({"s": s, "skip": None}, c * b)
    return f


def scan_numpy(f, carry, xs, n, reverse=False):
    """A Python loop over the rows (reversed: from the end), ys stacked in the order of xs."""
    steps = range(n - 1, -1, -1) if reverse else range(n)
    rows = {}
    for t in steps:
        carry, y = f(carry, {"a": xs["a"][t], "b": xs["b"][t]})
        rows[t] = y
    s = np.array([rows[t][0]["s"] for t in range(n)])
    cb = np.array([rows[t][1] for t in range(n)])
    return carry, ({"s": s, "skip": None}, cb)


@pytest.fixture
def scan_inputs(rng):
    init = (rng.normal(size=4), {"h": rng.normal()})
    xs = {"a": rng.normal(size=(5, 3)), "b": rng.normal(size=5)}
    return init, xs


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_pytrees_against_jax(scan_inputs, reverse):
    init, xs = scan_inputs
    before = [np.copy(v) for v in flatten((init, xs))[0]]
    carry, ys = nlax.scan(scan_body(np), init, xs, reverse=reverse)
    assert isinstance(carry[0], np.ndarray) and isinstance(ys[1], np.ndarray)
    assert ys[0]["skip"] is None and ys[1].shape == (5, 4)
    assert_tree_close((carry, ys), scan_numpy(scan_body(np), init, xs, 5, reverse))
    against_jax((carry, ys), lambda: jlax.scan(scan_body(jnp), init, xs, reverse=reverse))
    for b, a in zip(before, flatten((init, xs))[0]):
        np.testing.assert_array_equal(a, b)            # inputs are never written to


def test_scan_python_mode_and_unroll_change_nothing(scan_inputs):
    init, xs = scan_inputs
    expected = nlax.scan(scan_body(np), init, xs, mode="python")
    assert_tree_close(expected, scan_numpy(scan_body(np), init, xs, 5))
    for unroll in (1, 3, True, False):                 # the compiled code of the first test
        assert_tree_close(nlax.scan(scan_body(np), init, xs, unroll=unroll), expected)
    assert_tree_close(nlax.scan(scan_body(np), init, xs, length=5), expected)


def counter_body(xp):
    def f(carry, _):
        i, total = carry
        return (i + 1, total + i * 0.5), {"i": i, "square": total ** 2}
    return f


def test_scan_length_without_xs():
    carry, ys = nlax.scan(counter_body(np), (0, 1.0), length=6)
    i, total, seen = 0, 1.0, []
    for _ in range(6):
        seen.append((i, total ** 2))
        i, total = i + 1, total + i * 0.5
    assert_tree_close(carry, (i, total))
    assert ys["i"].dtype == np.int64
    assert_tree_close(ys, {"i": np.array([s[0] for s in seen]),
                           "square": np.array([s[1] for s in seen])})
    against_jax((carry, ys), lambda: jlax.scan(counter_body(jnp), (0, 1.0), length=6))
    # reverse without xs: the same steps, ys flipped (JAX's order: ys[t] is step n - 1 - t)
    rc, rys = nlax.scan(counter_body(np), (0, 1.0), length=6, reverse=True)
    assert_tree_close(rc, carry)
    assert_tree_close(rys, {k: v[::-1] for k, v in ys.items()})
    against_jax((rc, rys), lambda: jlax.scan(counter_body(jnp), (0, 1.0), length=6,
                                             reverse=True))


def test_scan_zero_steps_and_empty_parts():
    carry, ys = nlax.scan(counter_body(np), (3, 2.0), length=0)
    assert_tree_close(carry, (3, 2.0))
    assert ys["i"].shape == (0,) and ys["i"].dtype == np.int64 and ys["square"].shape == (0,)
    against_jax((carry, ys), lambda: jlax.scan(counter_body(jnp), (3, 2.0), length=0))
    # no carry: a map; no ys: only the carry
    ys = nlax.scan(lambda c, x: (c, x * 2.0), None, np.arange(3.0))[1]
    assert_close(ys, [0.0, 2.0, 4.0])
    c, ys = nlax.scan(lambda c, x: (c + x, None), 0.0, np.arange(4.0))
    assert ys is None
    assert_close(c, 6.0)


Point = namedtuple("Point", ["x", "v"])


def test_scan_namedtuple_and_list_carry_and_closure_read_at_call_time():
    k = np.array([0.5])

    def f(carry, dt):
        p, hist = carry
        p = Point(p.x + dt * p.v, p.v - dt * k[0] * p.x)
        return (p, [hist[0] + p.x]), p.x

    (p, hist), xs = nlax.scan(f, (Point(1.0, 0.0), [0.0]), np.full(4, 0.1))
    assert isinstance(p, Point) and isinstance(hist, list)
    x, v, h, rows = 1.0, 0.0, 0.0, []
    for _ in range(4):
        x, v = x + 0.1 * v, v - 0.1 * 0.5 * x
        h += x
        rows.append(x)
    assert_tree_close((p, hist, xs), (Point(x, v), [h], np.array(rows)))
    k[0] = 2.0                                          # read at call time, no recompile
    compiles = ns.cache_info().compiles
    p2 = nlax.scan(f, (Point(1.0, 0.0), [0.0]), np.full(4, 0.1))[0][0]
    assert ns.cache_info().compiles == compiles
    assert not np.isclose(p2.v, p.v)


# ------------------------------------------------------------------------------------------------
# scan under ns.jit and derivatives


W = np.array([[0.5, -0.3, 0.1], [0.2, 0.4, -0.6], [-0.1, 0.3, 0.2]])


def rnn_loss(xp, reverse=False):
    def loss(h0, xs):
        def f(carry, x):
            h, total = carry
            h = xp.tanh(h @ W + x)
            return (h, total + xp.sum(h ** 2)), {"h": h, "none": None}
        (h, total), ys = (jlax if xp is jnp else nlax).scan(f, (h0, 0.0), xs, reverse=reverse)
        return total + xp.sum(ys["h"][0] * h)
    return loss


@pytest.mark.parametrize("reverse", [False, True])
def test_grad_through_scan_against_jax(rng, reverse):
    h0, xs = rng.normal(size=3) * 0.5, rng.normal(size=(6, 3))
    loss = rnn_loss(np, reverse)
    value, (g_h0, g_xs) = ns.value_and_grad(loss, argnums=(0, 1))(h0, xs)
    assert_close(value, loss(h0, xs), rtol=1e-12)
    assert_close(g_h0, numerical_grad(lambda v: loss(v, xs), h0), rtol=1e-6, atol=1e-8)
    assert_close(g_xs, numerical_grad(lambda v: loss(h0, v), xs), rtol=1e-6, atol=1e-8)
    against_jax((value, g_h0, g_xs), lambda: (lambda v, g: (v, *g))(
        *jax.value_and_grad(rnn_loss(jnp, reverse), argnums=(0, 1))(h0, xs)))


def test_scan_inside_jit_keeps_the_last_carry_and_reads_run_rows():
    @ns.jit
    def program(h0, xs):
        (h, _), ys = nlax.scan(lambda c, x: ((np.tanh(c[0] @ W + x), c[1]), c[0].sum()),
                               (h0, 0.0), xs)
        return h, ys

    h0, xs = np.full(3, 0.1), np.linspace(-1, 1, 12).reshape(4, 3)
    h, ys = program(h0, xs)
    ref_h, ref_ys = h0, []
    for x in xs:
        ref_ys.append(ref_h.sum())
        ref_h = np.tanh(ref_h @ W + x)
    assert_close(h, ref_h)
    assert_close(ys, np.array(ref_ys))

    # xs that are the rows of a scan that stops early: a run-time number of steps
    @ns.jit
    def over_rows(a):
        def step(x):
            return x * 2.0, ns.until(x * 2.0 > 20.0)
        rows, _ = ns.scan(step, outputs_info=a, n_steps=50)
        total, doubled = nlax.scan(lambda c, r: (c + r, r * 2.0), 0.0, rows)
        return total, doubled.sum(), doubled.shape[0]

    total, dsum, n = over_rows(np.array(1.5))
    rows = 1.5 * 2.0 ** np.arange(1, 5)                 # 3, 6, 12, 24
    assert int(n) == 4
    assert_close(total, rows.sum())
    assert_close(dsum, 2 * rows.sum())


@pytest.mark.parametrize("mode", ["python", "cpu"])
def test_eager_scan_with_ys_keeps_only_the_last_carry(mode):
    """A carry of 8 kB over 2000 steps with a scalar y: the loop keeps the last carry (two
    rows), not the 16 MB of every carry. Python mode's NumPy rows are seen by tracemalloc;
    the compiled loop's buffers are allocated by the same layout (its outputs keep "last")."""
    h0, xs = np.full(1000, 0.5), np.linspace(0.0, 1.0, 2000)
    step = lambda c, x: (0.5 * c + x, c[0])          # noqa: E731
    nlax.scan(step, h0, xs[:3], mode=mode)           # compiled (cpu) before measuring
    tracemalloc.start()
    carry, ys = nlax.scan(step, h0, xs, mode=mode)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ref, ref_ys = h0, []
    for x in xs:
        ref_ys.append(ref[0])
        ref = 0.5 * ref + x
    assert_close(carry, ref)
    assert_close(ys, np.array(ref_ys))
    if mode == "python":
        assert peak < 2_000_000, peak


# ------------------------------------------------------------------------------------------------
# map


def map_body(xp):
    def f(x):
        return {"sum": xp.sum(x["a"]) * x["b"], "neg": -x["a"]}
    return f


def test_map_against_jax(rng):
    xs = {"a": rng.normal(size=(4, 2)), "b": rng.normal(size=4)}
    ys = nlax.map(map_body(np), xs)
    assert_tree_close(ys, {"sum": xs["a"].sum(1) * xs["b"], "neg": -xs["a"]})
    against_jax(ys, lambda: jlax.map(map_body(jnp), xs))
    assert_tree_close(nlax.map(map_body(np), xs, batch_size=2), ys)


# ------------------------------------------------------------------------------------------------
# fori_loop


def fori_body(xp):
    def body(i, carry):                # JAX's testForiLoopTupleState, with a dict
        x, d = carry
        return (x + xp.sin(x) * i, {"y": d["y"] * 0.9 + xp.sum(x)})
    return body


def fori_numpy(lower, upper, carry):
    for i in range(lower, upper):
        carry = fori_body(np)(i, carry)
    return carry


@pytest.mark.parametrize("lower, upper", [(0, 7), (3, 5), (4, 4), (6, 2)])
def test_fori_loop_static_bounds_against_jax(lower, upper):
    init = (np.array([0.5, 1.0]), {"y": np.array(0.25)})
    out = nlax.fori_loop(lower, upper, fori_body(np), init)
    assert_tree_close(out, fori_numpy(lower, upper, init))
    against_jax(out, lambda: jlax.fori_loop(lower, upper, fori_body(jnp), init))


def test_fori_loop_basic_and_numpy_bounds():
    assert nlax.fori_loop(0, 10, lambda i, tot: tot + i, 0) == 45        # testForiLoopBasic
    assert nlax.fori_loop(np.int32(0), np.array(10), lambda i, tot: tot + i, 0) == 45


def scaled_fori(x, lower, upper):
    return nlax.fori_loop(lower, upper, lambda i, v: v * x + np.sin(v) * i, x)


def scaled_fori_numpy(x, lower, upper):
    v = x
    for i in range(lower, upper):
        v = v * x + np.sin(v) * i
    return v


def test_fori_loop_runtime_bounds_values_and_reverse_derivatives():
    program = ns.jit(scaled_fori)
    x = np.array([0.7, 0.4])
    for lower, upper in [(0, 4), (2, 3), (3, 3), (5, 1)]:
        lo, hi = np.array(lower), np.array(upper)
        assert_close(program(x, lo, hi), scaled_fori_numpy(x, lower, upper))
        loss = lambda x, lo, hi: scaled_fori(x, lo, hi).sum()       # noqa: E731
        g = ns.grad(loss)(x, lo, hi)
        assert_close(g, numerical_grad(lambda v: scaled_fori_numpy(v, lower, upper).sum(), x),
                     rtol=1e-6, atol=1e-9)
    # JAX's fori_loop with traced bounds is a while_loop: forward mode only
    if jax is not None:
        out = jax.jit(lambda x, hi: jlax.fori_loop(
            0, hi, lambda i, v: v * x + jnp.sin(v) * i, x))(x, 4)
        assert_close(program(x, np.array(0), np.array(4)), np.asarray(out))


def test_fori_loop_runtime_bounds_under_vmap():
    x = np.array([[0.7, 0.4], [0.2, 0.9], [0.5, 0.5]])
    uppers = np.array([0, 2, 5])
    out = ns.vmap(scaled_fori, in_axes=(0, None, 0))(x, np.array(0), uppers)
    assert_close(out, np.stack([scaled_fori_numpy(v, 0, int(u)) for v, u in zip(x, uppers)]))


# ------------------------------------------------------------------------------------------------
# while_loop


def while_cond(xp):
    def cond(state):                   # JAX's testWhileWithTuple
        pos, _, value = state
        return (pos < 10) & (value["v"] < 50.0)
    return cond


def while_body(xp):
    def body(state):
        pos, count, value = state
        return pos + 1, count + 2, {"v": value["v"] * 1.5 + 1.0}
    return body


def while_numpy(state):
    while while_cond(np)(state):
        state = while_body(np)(state)
    return state


@pytest.mark.parametrize("start", [0, 4, 10])
def test_while_loop_against_jax(start):
    init = (start, 0, {"v": np.array(1.0)})
    out = nlax.while_loop(while_cond(np), while_body(np), init)
    assert_tree_close(out, while_numpy(init))
    against_jax(out, lambda: jlax.while_loop(while_cond(jnp), while_body(jnp), init))
    assert_tree_close(nlax.while_loop(while_cond(np), while_body(np), init, mode="python"), out)


def newton_sqrt(a):
    """Newton's iteration for sqrt(a) until it stops moving: a run-time number of steps."""
    def cond(state):
        x, x_old = state
        return np.abs(x - x_old) > 1e-12 * a
    def body(state):
        x, _ = state
        return 0.5 * (x + a / x), x
    return nlax.while_loop(cond, body, (a, a + 1.0))[0]


def test_while_loop_traced_and_reverse_derivatives():
    a = np.array(3.0)
    assert_close(ns.jit(newton_sqrt)(a), np.sqrt(3.0))
    assert_close(ns.grad(newton_sqrt)(a), 0.5 / np.sqrt(3.0), rtol=1e-9)
    out, tangent = ns.jvp(newton_sqrt, (a,), (np.array(1.0),))
    assert_close(tangent, 0.5 / np.sqrt(3.0), rtol=1e-9)

    def grow(x):
        """A loop whose number of steps depends on x (4 steps at 1.3)."""
        v = nlax.while_loop(lambda v: v[0] < 3.0, lambda v: (v[0] * x, v[1] + v[0]),
                            (x, np.array(0.0)))
        return v[0] + v[1]

    def grow_numpy(x):
        v, s = x, 0.0
        while v < 3.0:
            v, s = v * x, s + v
        return v + s

    x = np.array(1.3)
    assert_close(ns.grad(grow)(x), numerical_grad(grow_numpy, x), rtol=1e-6)


def test_while_loop_under_vmap_and_max_steps():
    a = np.array([2.0, 9.0, 0.25])
    assert_close(ns.vmap(newton_sqrt)(a), np.sqrt(a))
    with pytest.raises(ValueError, match="max_steps=5"):
        nlax.while_loop(lambda v: v < 100.0, lambda v: v + 1.0, 0.0, max_steps=5)
    # in traced code the loop stops at the bound (documented): 5 steps
    capped = ns.jit(lambda x: nlax.while_loop(lambda v: v < 100.0, lambda v: v + 1.0, x,
                                              max_steps=5))
    assert_close(capped(np.array(0.0)), 5.0)


# ------------------------------------------------------------------------------------------------
# associative_scan


def matmul2(a, b):
    """Products of stacks of matrices, written with broadcasting (numbascan traces np.matmul
    of 1-d and 2-d operands)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(axis=-2)


def affine(xp):
    """The combine of x_t = a_t x_{t-1} + b_t: (a1, b1) then (a2, b2) is (a2 a1, a2 b1 + b2)."""
    def combine(first, second):
        return {"a": second["a"] * first["a"], "b": second["a"] * first["b"] + second["b"]}
    return combine


def prefixes_numpy(fn, xs, reverse=False):
    order = list(range(len(xs)))[::-1] if reverse else list(range(len(xs)))
    out, acc = {}, None
    for t in order:
        acc = xs[t] if acc is None else fn(acc, xs[t])
        out[t] = acc
    return np.stack([out[t] for t in range(len(xs))])


@pytest.mark.parametrize("n", [1, 2, 7, 8])
@pytest.mark.parametrize("reverse", [False, True])
def test_associative_scan_unstructured(rng, n, reverse):
    x = rng.uniform(0.5, 1.5, size=(n, 3))
    for np_fn, jnp_fn in [(np.add, "add"), (np.multiply, "multiply"), (np.maximum, "maximum")]:
        out = nlax.associative_scan(np_fn, x, reverse=reverse)
        assert_close(out, prefixes_numpy(np_fn, x, reverse), rtol=1e-12)
        against_jax(out, lambda: jlax.associative_scan(getattr(jnp, jnp_fn), x,
                                                       reverse=reverse))
    mats = rng.normal(size=(n, 2, 2))
    out = nlax.associative_scan(matmul2, mats, reverse=reverse)
    assert_close(out, prefixes_numpy(lambda p, q: p @ q, mats, reverse), rtol=1e-11)
    against_jax(out, lambda: jlax.associative_scan(jnp.matmul, mats, reverse=reverse),
                rtol=1e-11)


def test_associative_scan_axis_and_structured(rng):
    x = rng.normal(size=(2, 5, 3))
    assert_close(nlax.associative_scan(np.add, x, axis=1), np.cumsum(x, axis=1))
    assert_close(nlax.associative_scan(np.add, x, axis=-1, reverse=True),
                 np.cumsum(x[..., ::-1], axis=-1)[..., ::-1])
    elems = {"a": rng.uniform(0.5, 1.0, size=6), "b": rng.normal(size=6)}
    out = nlax.associative_scan(affine(np), elems)
    state, states = 0.0, []
    for a, b in zip(elems["a"], elems["b"]):
        state = a * state + b
        states.append(state)
    assert_close(out["b"], np.array(states))
    assert_close(out["a"], np.cumprod(elems["a"]))
    against_jax(out, lambda: jlax.associative_scan(affine(jnp), elems))


def test_associative_scan_traced_and_derivatives(rng):
    def recurrence(a, b):
        """The linear recurrence's last states, summed: traced (ns.jit, ns.grad)."""
        return (nlax.associative_scan(affine(np), {"a": a, "b": b})["b"] ** 2).sum()

    a, b = rng.uniform(0.5, 1.0, size=7), rng.normal(size=7)
    mats = rng.normal(size=(7, 2, 2))
    jitted = ns.jit(lambda m: nlax.associative_scan(matmul2, m, reverse=True))
    assert_close(jitted(mats), prefixes_numpy(lambda p, q: p @ q, mats, reverse=True),
                 rtol=1e-11)
    value, (g_a, g_b) = ns.value_and_grad(recurrence, argnums=(0, 1))(a, b)
    assert_close(value, recurrence(a, b), rtol=1e-12)
    assert_close(g_a, numerical_grad(lambda v: recurrence(v, b), a), rtol=1e-6, atol=1e-9)
    assert_close(g_b, numerical_grad(lambda v: recurrence(a, v), b), rtol=1e-6, atol=1e-9)
    if jax is not None:
        def jax_recurrence(a, b):
            return (jlax.associative_scan(affine(jnp), {"a": a, "b": b})["b"] ** 2).sum()
        ref = jax.grad(jax_recurrence, argnums=(0, 1))(a, b)
        assert_close(g_a, np.asarray(ref[0]), rtol=1e-10)
        assert_close(g_b, np.asarray(ref[1]), rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# errors name the leaf


CARRY = (np.zeros(2), {"h": np.zeros(3), "c": 0.0})


@pytest.mark.parametrize("change, pattern", [
    (lambda c: (c[0], {"h": c[1]["h"].astype(np.float32), "c": c[1]["c"]}),
     r"carry\[1\]\['h'\] has dtype float64 and shape \(3,\) in the initial carry, but the "
     r"body returned dtype float32 and shape \(3,\).*astype\(np.float64\)"),
    (lambda c: (c[0], {"h": c[1]["h"][:2], "c": c[1]["c"]}),
     r"carry\[1\]\['h'\] .* returned dtype float64 and shape \(2,\).*shape \(3,\)"),
    (lambda c: (c[0], {"h": c[1]["h"]}),
     r"structure differs .* at carry\[1\]: expected \{'c': \*, 'h': \*\}, found \{'h': \*\}"),
    (lambda c: [c[0], c[1]],
     r"at carry: expected \(\*, \{'c': \*, 'h': \*\}\), found \[\*, \{'c': \*, 'h': \*\}\]"),
])
def test_carry_errors_name_the_leaf(change, pattern):
    for run in (lambda body: nlax.scan(lambda c, x: (body(c), None), CARRY, np.zeros(3)),
                lambda body: nlax.fori_loop(0, 3, lambda i, c: body(c), CARRY),
                lambda body: nlax.while_loop(lambda c: c[1]["c"] < 1.0, body, CARRY)):
        with pytest.raises(nlax.CarryError, match=pattern) as info:
            run(change)
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_other_errors():
    with pytest.raises(TypeError, match="must return a pair"):
        nlax.scan(lambda c, x: c, 0.0, np.zeros(3))
    with pytest.raises(ValueError, match=r"xs\[0\].shape\[0\]=4, xs\[1\].shape\[0\]=3"):
        nlax.scan(lambda c, x: (c, None), 0.0, (np.zeros(4), np.zeros(3)))
    with pytest.raises(ValueError, match="length= disagrees|length=3 disagrees"):
        nlax.scan(lambda c, x: (c, None), 0.0, np.zeros(4), length=3)
    with pytest.raises(ValueError, match="no arrays to scan over"):
        nlax.scan(lambda c, x: (c, None), 0.0)
    with pytest.raises(ValueError, match=r"xs\['a'\]: expected an array with a leading axis"):
        nlax.scan(lambda c, x: (c, None), 0.0, {"a": np.float64(1.0)})
    with pytest.raises(ValueError, match="unroll"):
        nlax.scan(lambda c, x: (c, None), 0.0, np.zeros(3), unroll=0)
    with pytest.raises(TypeError, match="lower: expected an integer"):
        nlax.fori_loop(0.0, 3, lambda i, v: v, 0.0)
    with pytest.raises(TypeError, match="cond_fun must return a boolean scalar"):
        nlax.while_loop(lambda v: v, lambda v: v + 1.0, 1.0)
    with pytest.raises(ValueError, match="max_steps"):
        nlax.while_loop(lambda v: v < 1.0, lambda v: v, 0.0, max_steps=0)
    with pytest.raises(TypeError, match=r"fn must return the structure of elems"):
        nlax.associative_scan(lambda a, b: (a[0] + b[0],), (np.ones(3), np.ones(3)))
    with pytest.raises(ValueError, match="same size along axis 0"):
        nlax.associative_scan(np.add, (np.ones(3), np.ones(4)))


def test_public_names():
    assert ns.lax is nlax
    for name in ("scan", "map", "fori_loop", "while_loop", "associative_scan"):
        assert callable(getattr(nlax, name))


def test_jax_style_example_runs():
    """examples/jax_style.py: its own checks (gradients against finite differences, the
    fori_loop's energy against the scan's) pass, and it prints its three parts."""
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "jax_style.py"
    spec = importlib.util.spec_from_file_location("lax_example_jax_style", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module.main()
    text = out.getvalue()
    assert "2. final energy" in text and "first swing" in text
