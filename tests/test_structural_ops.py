"""NumPy's structural functions in traced code (SPEC sections 5 and 8): split, array_split,
hsplit, vsplit, einsum, diag, diagonal, trace, triu, tril, cross, kron, flip, roll,
take_along_axis, linalg.norm, sort, argsort, moveaxis, swapaxes and .T.

numbascan writes them as compositions of traced operations (numbascan/trace/structural.py), so
these tests check the compositions end to end. The functions are grouped into a few steps, each
written once against an array module `xp`, to keep numba compilations few. For each group:

- the step inside a scan, in mode "cpu" against mode "python" (`run_both`) and both against
  the same loop in plain NumPy;
- the step's body as an `ns.jit` function against NumPy, and its forward and reverse
  derivatives (`check_grads`, interpreted) against finite differences;
- `ns.grad` of a scalar loss through a short scan (compiled and interpreted) against `jax.grad`
  of the same loop on `jax.numpy` when JAX is importable, else against central differences of
  the NumPy loop.

An LSTM step that splits its gates with `np.split` is checked the same way. Inputs are fresh
random float64 values (never zeros), away from ties where sort, max and abs are differentiated.
"""
import warnings

import numpy as np
import pytest

import numbascan as ns
from conftest import assert_close, run_both
from gradcheck import check_grads
from numbascan.runtime.fallback import UntracedStepWarning
from numbascan.trace.program import trace_program
from numbascan.trace.tracer import TracingError

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    HAVE_JAX = True
except ImportError:                                       # pragma: no cover - depends on the env
    jax = jnp = None
    HAVE_JAX = False

T = 3           # steps of the scans
# numbascan against JAX: both exact up to rounding. Against finite differences: truncation error.
GRAD_TOL = dict(rtol=1e-9, atol=1e-11) if HAVE_JAX else dict(rtol=2e-5, atol=1e-7)


@pytest.fixture(params=["cpu", "python"])
def mode(request, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", request.param)
    return request.param


@pytest.fixture
def python_mode(monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", "python")


# ------------------------------------------------------------------------------------------------
# the groups: step(x, c) -> [new c, other outputs...], written against an array module xp


def split_group(xp):
    """split, array_split, hsplit, vsplit (sections and index lists), flip, roll; x, c: (4, 6)."""
    def step(x, c):
        z = x + 0.5 * c
        a, b = xp.split(z, 2, axis=1)                       # (4, 3) each
        p, q, r = xp.array_split(z, 3)                      # (2, 6), (1, 6), (1, 6)
        h1, h2 = xp.hsplit(z, [2])                          # (4, 2), (4, 4)
        v1, v2 = xp.vsplit(z, 2)                            # (2, 6) each
        s1, s2, s3 = xp.split(z, [1, 4], axis=1)            # (4, 1), (4, 3), (4, 2)
        new_c = xp.tanh(xp.concatenate([xp.flip(b, 0), xp.roll(a, 1, axis=0)], axis=1))
        pieces = xp.concatenate([p.ravel(), (q * r).ravel(), h1.ravel() ** 2, v1.ravel(),
                                 s1.ravel(), 2 * s2.ravel(), xp.flip(s3, 1).ravel()])
        moved = xp.concatenate([xp.roll(h2, -1, axis=1).ravel(), (v1 - xp.flip(v2)).ravel(),
                                xp.roll(z, 3).ravel(), xp.roll(z, (1, -2), axis=(0, 1)).ravel()])
        return [new_c, xp.sin(pieces), moved]
    return step, (4, 6)


def diag_group(xp):
    """diag (both ways, k offsets), diagonal, trace, triu, tril, kron; x, c: (3, 3)."""
    def step(x, c):
        z = x + 0.5 * c
        d = xp.diag(z)
        new_c = xp.tanh(xp.triu(z) - 0.5 * xp.tril(z, -1).T + 0.1 * xp.diag(d[::-1]))
        diagonals = xp.concatenate([xp.diag(z, 1), xp.diag(z, -1), xp.diagonal(z, -2),
                                    xp.reshape(xp.trace(z), (1,)),
                                    xp.reshape(xp.trace(z, 1), (1,)),
                                    xp.diagonal(xp.stack([z, c]), 1, 1, 2).ravel()])
        matrices = xp.diag(d, 1) + xp.diag(2 * d, -1) + xp.triu(xp.kron(z[:2, :2], c[:2, 1:]), 1)
        banded = xp.tril(xp.stack([z, c * z]), 1) + xp.triu(xp.outer(d, d), -1)
        return [new_c, diagonals, matrices, xp.kron(d, c[1]), banded]
    return step, (3, 3)


W3 = np.random.default_rng(7).standard_normal((3, 3))
V3 = np.random.default_rng(8).standard_normal(3)


def product_group(xp):
    """einsum (one, two and three operands), cross, linalg.norm; x, c: (3, 3)."""
    def step(x, c):
        z = x + 0.5 * c
        new_c = xp.tanh(0.5 * xp.einsum("ij,jk->ik", z, W3) + 0.1 * xp.einsum("ij->ji", c))
        sums = xp.concatenate([xp.einsum("ij,jk,k->i", z, W3, V3), xp.einsum("ii->i", z),
                               xp.einsum("bi,bi->b", z, c), xp.einsum("ij->j", z),
                               xp.reshape(xp.einsum("i,ij,j->", V3, z, V3), (1,)),
                               xp.reshape(xp.einsum("ii->", z), (1,))])
        batched = xp.einsum("bij,bjk->bik", xp.stack([z, c]), xp.stack([c, z]))
        crossed = xp.cross(z, W3) + xp.cross(c, V3, axisa=0, axisc=0)
        norms = xp.stack([xp.linalg.norm(z), xp.linalg.norm(z, 1), xp.linalg.norm(z, xp.inf),
                          xp.linalg.norm(z, "fro"), xp.linalg.norm(z[0]),
                          xp.linalg.norm(z[1], 1), xp.linalg.norm(z[2], xp.inf),
                          xp.linalg.norm(z, -1), xp.linalg.norm(z[0], 3)])
        along = xp.concatenate([xp.linalg.norm(z, axis=1), xp.linalg.norm(c, 1, axis=0),
                                xp.linalg.norm(z, xp.inf, axis=-1)])
        return [new_c, sums, batched, crossed, norms, along]
    return step, (3, 3)


# take_along_axis indices, negative ones included
IDX1 = np.random.default_rng(9).integers(-4, 4, (3, 5))
IDX0 = np.random.default_rng(10).integers(0, 3, (2, 4))


def sort_group(xp):
    """sort (along an axis, axis=None), take_along_axis (static and traced indices), argsort,
    moveaxis, swapaxes, .T; x, c: (3, 4)."""
    def step(x, c):
        z = x + 0.5 * c
        new_c = xp.tanh(0.5 * xp.sort(z)[:, ::-1] + 0.1 * z.T.T)
        sorted_ = xp.concatenate([xp.sort(z, axis=0).ravel(), xp.sort(z, axis=None)])
        taken = xp.concatenate([xp.take_along_axis(z, IDX1, axis=1).ravel(),
                                xp.take_along_axis(z, IDX0, axis=0).ravel(),
                                xp.take_along_axis(c, xp.argsort(z, axis=1), axis=1).ravel()])
        moved = xp.swapaxes(xp.moveaxis(xp.stack([z, c * c]), 0, -1), 0, 1)     # (4, 3, 2)
        return [new_c, sorted_, taken, moved]
    return step, (3, 4)


GROUPS = {"split": split_group, "diag": diag_group, "products": product_group,
          "sort": sort_group}


def _inputs(rng, shape):
    c0 = rng.uniform(0.2, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    xs = rng.uniform(0.2, 1.0, (T,) + shape) * rng.choice([-1.0, 1.0], (T,) + shape)
    return c0, xs


def numpy_scan(step, c0, xs):
    """The scan as a NumPy loop: outputs stacked over the steps."""
    outs, c = [], c0
    for x in xs:
        ys = step(x, c)
        c = ys[0]
        outs.append(ys)
    return [np.stack([o[k] for o in outs]) for k in range(len(outs[0]))]


def _quiet(fn):
    """fn with NumPy's deprecation warning about 2-vectors of np.cross silenced."""
    def call(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return fn(*args)
    return call


# the compiled checks: the same functions at smaller sizes, in two steps (numba's compile time
# grows faster than linearly with a step's size; the groups above run interpreted)


def compiled_structure(xp):
    """split, array_split, hsplit, vsplit, flip, roll, diag, diagonal, trace, triu, tril and
    kron at small sizes; x, c: (2, 4)."""
    def step(x, c):
        z = x + 0.5 * c
        a, b = xp.split(z, 2, axis=1)                       # (2, 2) each
        p, q, r = xp.array_split(z, 3, axis=1)              # (2, 2), (2, 1), (2, 1)
        h, _ = xp.hsplit(z, [1])                            # (2, 1)
        v1, v2 = xp.vsplit(z, 2)                            # (1, 4) each
        new_c = xp.tanh(xp.concatenate([xp.flip(b, 0), xp.roll(a, 1, axis=1)], axis=1))
        square = p + q * r
        y = xp.concatenate([(v1 - xp.flip(v2)).ravel(), h.ravel(), xp.diag(square),
                            xp.diagonal(square, 1), xp.reshape(xp.trace(square), (1,)),
                            xp.kron(q.ravel(), r.ravel())])
        triangles = xp.triu(square) + 2 * xp.tril(square, -1) + xp.diag(h.ravel())
        return [new_c, y, triangles, xp.diag(q.ravel(), -1)]
    return step, (2, 4)


IDX3 = np.array([2, -1, 0])


def compiled_products(xp):
    """einsum, cross, linalg.norm, sort and take_along_axis at small sizes; x, c: (3,)."""
    def step(x, c):
        z = x + 0.5 * c
        m = xp.outer(z, c)
        new_c = xp.tanh(0.5 * xp.einsum("ij,j->i", m, V3) + 0.5 * xp.cross(z, c))
        norms = xp.stack([xp.linalg.norm(z), xp.linalg.norm(m, 1), xp.linalg.norm(m, xp.inf),
                          xp.linalg.norm(m), xp.linalg.norm(z, 1)])
        sums = xp.einsum("ij,jk,k->i", m, W3, z) + xp.einsum("ii->i", m)
        return [new_c, xp.sort(z), xp.take_along_axis(z, IDX3, 0), norms, sums]
    return step, (3,)


def compiled_mix(xp):
    """One of each kind of composition, for the compiled derivatives: slices (split), negative
    steps (flip), constant masks (triu, diag), traced masks (sort), abs and max (norm), matmul
    (einsum); x, c: (3,)."""
    def step(x, c):
        z = x + 0.5 * c
        a, b = xp.split(xp.concatenate([z, c]), 2)
        m = xp.triu(xp.outer(a, b)) + xp.diag(xp.flip(b))
        new_c = xp.tanh(xp.einsum("ij,j->i", m, V3))
        return [new_c, xp.sort(z) * xp.linalg.norm(m, 1)]
    return step, (3,)


COMPILED = {"structure": compiled_structure, "products": compiled_products}
STEPS = {**GROUPS, **{"compiled " + k: v for k, v in COMPILED.items()}, "mix": compiled_mix}


# ------------------------------------------------------------------------------------------------
# forward: in a scan step and in ns.jit


@pytest.mark.parametrize("group", GROUPS)
def test_group_in_scan_matches_numpy(group, rng):
    """Interpreted (mode "python"): the step's trace, run by the IR interpreter."""
    step, shape = GROUPS[group](np)
    c0, xs = _inputs(rng, shape)
    n_out = len(step(xs[0], c0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntracedStepWarning)
        outs = ns.scan(step, sequences=xs, outputs_info=[c0] + [None] * (n_out - 1),
                       mode="python")[0]
    for k, (got, ref) in enumerate(zip(outs, numpy_scan(step, c0, xs))):
        assert_close(got, ref, f"{group} output {k}")


@pytest.mark.parametrize("group", COMPILED)
def test_compiled_in_scan_matches_numpy(group, rng):
    step, shape = COMPILED[group](np)
    c0, xs = _inputs(rng, shape)
    n_out = len(step(xs[0], c0))
    outs, _ = run_both(step, sequences=xs, outputs_info=[c0] + [None] * (n_out - 1))
    for k, (got, ref) in enumerate(zip(outs, numpy_scan(step, c0, xs))):
        assert_close(got, ref, f"{group} output {k}")


def test_compiled_in_jit_matches_numpy(rng):
    step, shape = compiled_mix(np)
    c0, xs = _inputs(rng, shape)
    got = ns.jit(step)(xs[0], c0)
    for k, (g, ref) in enumerate(zip(got, step(xs[0], c0))):
        assert_close(g, ref, f"output {k}")


@pytest.mark.parametrize("group", GROUPS)
def test_group_in_jit_traces(group, rng, python_mode):
    """ns.jit, interpreted: the traced program (not the plain-Python fallback) against NumPy."""
    step, shape = GROUPS[group](np)
    c0, xs = _inputs(rng, shape)
    program = trace_program(step, [xs[0], c0])
    assert program is not None
    got = ns.jit(step)(xs[0], c0)
    for k, (g, ref) in enumerate(zip(got, step(xs[0], c0))):
        assert_close(g, ref, f"{group} output {k}")


@pytest.mark.parametrize("group", STEPS)
def test_forward_and_reverse_derivatives(group, rng, python_mode):
    step, shape = STEPS[group](np)
    c0, xs = _inputs(rng, shape)
    check_grads(step, [xs[0], c0], order=1, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# reverse mode through a short scan, against JAX or finite differences


def _weights(step, c0, xs):
    """Fixed random weights of each output of the scan (the loss is sum(w * y))."""
    w_rng = np.random.default_rng(11)
    return [w_rng.standard_normal(y.shape) for y in numpy_scan(step, c0, xs)]


def _fd_grads(loss, args, eps=1e-6):
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus, minus = [x.copy() for x in args], [x.copy() for x in args]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            g[idx] = (loss(*plus) - loss(*minus)) / (2 * eps)
        grads.append(g)
    return grads


def reference_grads(make_loss, args):
    """d loss / d args of `make_loss(xp)`, by jax.grad when JAX is importable, else by central
    differences of the NumPy version."""
    if HAVE_JAX:
        grads = jax.jit(jax.grad(make_loss(jnp), argnums=tuple(range(len(args)))))(
            *[jnp.asarray(a) for a in args])
        return [np.asarray(g) for g in grads]
    return _fd_grads(make_loss(np), args)


def _scan_loss(make_step, c0, xs):
    """(the loss through ns.scan, make_loss(xp): the same loss as a loop over xp)."""
    step = make_step(np)[0]
    weights = _weights(step, c0, xs)
    n_out = len(weights)

    def make_loss(xp):
        xp_step = make_step(xp)[0]

        def loss(c0, xs):
            c, total = c0, 0.0
            for t in range(T):
                ys = xp_step(xs[t], c)
                c = ys[0]
                total = total + sum(xp.sum(w[t] * y) for w, y in zip(weights, ys))
            return total
        return loss

    def ns_loss(c0, xs):
        outs = ns.scan(step, sequences=xs, outputs_info=[c0] + [None] * (n_out - 1))[0]
        return sum(np.sum(w * y) for w, y in zip(weights, outs))
    return ns_loss, make_loss


def _check_scan_grad(group, make_step, rng):
    c0, xs = _inputs(rng, make_step(np)[1])
    ns_loss, make_loss = _scan_loss(make_step, c0, xs)
    value, grads = ns.value_and_grad(ns_loss, argnums=(0, 1))(c0, xs)
    assert_close(value, make_loss(np)(c0, xs), "loss", rtol=1e-10)
    for name, g, ref in zip(("c0", "xs"), grads, reference_grads(make_loss, [c0, xs])):
        assert_close(g, ref, f"{group}: d loss / d {name}", **GRAD_TOL)


@pytest.mark.parametrize("group", GROUPS)
def test_group_grad_through_scan(group, rng, python_mode):
    _check_scan_grad(group, GROUPS[group], rng)


def test_compiled_grad_through_scan(rng, mode):
    _check_scan_grad("mix", compiled_mix, rng)


# ------------------------------------------------------------------------------------------------
# an LSTM whose gates come from np.split


def lstm(xp):
    def sigmoid(v):
        return 1.0 / (1.0 + xp.exp(-v))

    def step(x, h, c, W, U, b):
        i, f, o, g = xp.split(x @ W + h @ U + b, 4)
        c = sigmoid(f) * c + sigmoid(i) * xp.tanh(g)
        h = sigmoid(o) * xp.tanh(c)
        return [h, c]
    return step


def _lstm_inputs(rng, n_in=2, n_hidden=3, steps=4):
    W = rng.standard_normal((n_in, 4 * n_hidden)) * 0.5
    U = rng.standard_normal((n_hidden, 4 * n_hidden)) * 0.5
    b = rng.standard_normal(4 * n_hidden) * 0.1
    xs = rng.standard_normal((steps, n_in))
    h0, c0 = rng.standard_normal(n_hidden) * 0.5, rng.standard_normal(n_hidden) * 0.5
    return xs, h0, c0, W, U, b


def test_lstm_split_forward(rng):
    xs, h0, c0, W, U, b = _lstm_inputs(rng)
    step = lstm(np)
    (hs, cs), _ = run_both(step, sequences=xs, outputs_info=[h0, c0], non_sequences=[W, U, b])
    h, c = h0, c0
    for t, x in enumerate(xs):
        h, c = step(x, h, c, W, U, b)
        assert_close(hs[t], h, f"h[{t}]")
        assert_close(cs[t], c, f"c[{t}]")


def test_lstm_split_grad(rng, mode):
    xs, h0, c0, W, U, b = _lstm_inputs(rng)
    w_out = rng.standard_normal((len(xs), len(h0)))

    def ns_loss(W, U, b, h0):
        hs = ns.scan(lstm(np), sequences=xs, outputs_info=[h0, c0], non_sequences=[W, U, b])[0][0]
        return np.sum(w_out * hs)

    def make_loss(xp):
        step = lstm(xp)

        def loss(W, U, b, h0):
            h, c, total = h0, c0, 0.0
            for t in range(len(xs)):
                h, c = step(xs[t], h, c, W, U, b)
                total = total + xp.sum(w_out[t] * h)
            return total
        return loss

    value, grads = ns.value_and_grad(ns_loss, argnums=(0, 1, 2, 3))(W, U, b, h0)
    assert_close(value, make_loss(np)(W, U, b, h0), "loss", rtol=1e-10)
    for name, g, ref in zip("W U b h0".split(), grads,
                            reference_grads(make_loss, [W, U, b, h0])):
        assert_close(g, ref, f"d loss / d {name}", **GRAD_TOL)


# ------------------------------------------------------------------------------------------------
# details: NumPy's semantics at the edges, and the errors


def test_edges_match_numpy(rng, python_mode):
    """Cases the groups do not cover, interpreted (no compilation): ties and NaNs in sort,
    2-vector cross products, uneven and empty split pieces, offsets past the edge."""
    A = rng.standard_normal((3, 4))
    ties = np.array([[2.0, -1.0, 2.0, np.nan], [0.5, np.nan, 0.5, -3.0], [1.0, 1.0, 1.0, 1.0]])
    cases = {
        "sort ties and NaN": (lambda a: np.sort(a), ties),
        "argsort ties and NaN": (lambda a: np.argsort(a, axis=1), ties),
        "sort axis 0 ints": (lambda a: np.sort((a * 3).astype(np.int32), axis=0), A),
        "sort bools": (lambda a: np.sort(a > 0, axis=1), A),
        "cross 2x2": (_quiet(lambda a: np.cross(a[:, :2], a[:, 2:])), A),
        "cross 2x3": (_quiet(lambda a: np.cross(a[:, :2], a[0, 1:])), A),
        "array_split uneven": (lambda a: np.array_split(a, 3, axis=1), A),
        "split with empty piece": (lambda a: np.split(a, [0, 2, 9], axis=1)[1:3], A),
        "split negative index": (lambda a: np.split(a, [1, -1], axis=1), A),
        "diagonal past the edge": (lambda a: np.diagonal(a, 3), A),
        "trace of ints": (lambda a: np.trace((a * 4).astype(np.int64), -1), A),
        "triu of a vector": (lambda a: np.triu(a[0], 1), A),
        "tril of bools": (lambda a: np.tril(a > 0), A),
        "kron 3-d": (lambda a: np.kron(a[:2, :2], a.reshape(2, 3, 2)), A),
        "kron scalar": (lambda a: np.kron(a[0, 0], a[1]), A),
        "flip 3-d axes": (lambda a: np.flip(a.reshape(2, 3, 2), (0, 2)), A),
        "flipud fliplr": (lambda a: np.flipud(a) + np.fliplr(a), A),
        "roll by the axis' length": (lambda a: np.roll(a, 8, axis=1), A),
        "take_along_axis None": (lambda a: np.take_along_axis(a, np.array([11, 0, -1]), None),
                                 A),
        "norm keepdims": (lambda a: np.linalg.norm(a, axis=(1, 0), keepdims=True), A),
        "norm ord 0 and -inf": (lambda a: np.stack([np.linalg.norm(a[0], 0),
                                                    np.linalg.norm(a[0], -np.inf)]), A),
        "norm of ints": (lambda a: np.linalg.norm((a * 3).astype(np.int64), 1), A),
        "einsum implicit": (lambda a: np.einsum("ij,kj", a, a), A),
        "einsum identity": (lambda a: np.einsum("ij->ij", a), A),
        "moveaxis several": (lambda a: np.moveaxis(a.reshape(2, 3, 2), (0, 1), (2, 0)), A),
        "dsplit": (lambda a: np.dsplit(a.reshape(2, 3, 2), 2), A),
    }
    for name, (fn, a) in cases.items():
        got, ref = ns.jit(fn)(a), fn(a)
        if isinstance(ref, list):
            assert len(got) == len(ref), name
            for g, r in zip(got, ref):
                assert_close(g, r, name)
                assert np.asarray(g).dtype == r.dtype, name
        else:
            assert_close(got, ref, name)
            assert np.asarray(got).dtype == ref.dtype, f"{name}: {np.asarray(got).dtype}"


def test_arrays_named_by_the_function_are_read_at_each_call(rng):
    """Index arrays and operands from the closure are inputs of the trace, not constants."""
    idx, w = np.array([[2, 0, -1]]), rng.standard_normal((3, 2))

    def f(x):
        return np.take_along_axis(x, idx, axis=1), np.einsum("ij,jk->ik", x, w)

    fn, x = ns.jit(f), rng.standard_normal((1, 3))
    for _ in range(2):
        for got, ref in zip(fn(x), f(x)):
            assert_close(got, ref, "output")
        idx[:], w[:] = [[1, 1, 0]], rng.standard_normal((3, 2))


def test_sort_grad_follows_the_permutation(python_mode, rng):
    x = rng.permutation(6) * 0.5 + rng.uniform(0, 0.1, 6)
    w = rng.standard_normal(6)
    g = ns.grad(lambda x: np.sum(w * np.sort(x)))(x)
    np.testing.assert_array_equal(g, w[np.argsort(np.argsort(x))])


@pytest.mark.parametrize("fn, error, match", [
    (lambda a: np.split(a, 3, axis=1), ValueError, "equal division"),
    (lambda a: np.vsplit(a[0], 2), ValueError, "2 or more dimensions"),
    (lambda a: np.einsum("ij,jk->ik", a, a), ValueError, "has size 4 in one place and 3"),
    (lambda a: np.einsum("ij->k", a), ValueError, "appears in no operand"),
    (lambda a: np.einsum("...j->j", a), TracingError, "ellipsis"),
    (lambda a: np.einsum(a, [0, 1]), TracingError, "subscripts as a string"),
    (lambda a: np.diag(a[None]), ValueError, "1- or 2-d"),
    (lambda a: np.cross(a, a), ValueError, "dimension must be 2 or 3"),
    (lambda a: np.linalg.norm(a[None], 2, axis=(1, 2)), TracingError, "ord=2 over two axes"),
    (lambda a: np.linalg.norm(a[None], "nuc", axis=(2, 1)), TracingError, "ord='nuc' over two"),
    (lambda a: np.take_along_axis(a, np.array([[5]]), 1), IndexError, "out of bounds"),
    (lambda a: np.take_along_axis(a, np.array([1]), 1), ValueError, "same number of dim"),
    (lambda a: np.roll(a, a[0, 0].astype(np.int64)), TracingError, "shift"),
    (lambda a: np.moveaxis(a, 0, 2), np.exceptions.AxisError, "out of bounds"),
])
def test_errors(fn, error, match, python_mode, rng):
    with pytest.raises(error, match=match):
        trace_program(fn, [rng.standard_normal((3, 4))])


@pytest.mark.parametrize("group", COMPILED)
def test_compiled_on_cuda(group, rng):
    """mode="cuda" (numba's simulator unless NUMBASCAN_TEST_GPU=1) against mode "python"."""
    step, shape = COMPILED[group](np)
    c0, xs = _inputs(rng, shape)
    n_out = len(step(xs[0], c0))
    kwargs = dict(sequences=xs, outputs_info=[c0] + [None] * (n_out - 1))
    on_gpu = ns.scan(step, mode="cuda", **kwargs)[0]
    for k, (got, ref) in enumerate(zip(on_gpu, ns.scan(step, mode="python", **kwargs)[0])):
        assert_close(got, ref, f"{group} output {k}", rtol=1e-12, atol=1e-13)
