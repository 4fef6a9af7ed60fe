"""Derivatives through scans (SPEC section 3) for every layout feature of section 1.

Each test writes the function twice: once with numbascan (`ns.scan` and friends, NumPy steps) and
once as a reference `ref(xp, ...)` written against an array module `xp` whose loops go through
`xscan` — `jax.lax.scan` when `xp` is `jax.numpy`, a plain Python loop when `xp` is NumPy.
`reference_grad` / `reference_jacobian` / `reference_hessian` differentiate the JAX version with
`jax.grad` / `jax.jacfwd` / `jax.hessian` in float64 when JAX is importable and otherwise take
central finite differences of the NumPy version, so the suite runs without JAX (tolerances are
looser then). The numbascan value is also checked against the reference value.

truncate_gradient=k is compared with a reference whose steps before the last k see their inputs
through `jax.lax.stop_gradient` (no derivative flows into or through them: the early outputs,
the state entering step n-k, and the contributions of the early steps to non_sequences and
sequences are constants), which is Theano's "reverse mode propagates through the last k steps
only". The finite-difference fallback computes the early steps from the unperturbed arguments.

Inputs are fresh random float64 values (never zeros), T <= 6, H <= 3. Every test runs in the
compiled ("cpu") and interpreted ("python", NUMBASCAN_MODE=python) modes.
"""
import functools
import warnings

import numpy as np
import pytest

import numbascan as ns

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    HAVE_JAX = True
except ImportError:                                       # pragma: no cover - depends on the env
    jax = jnp = None
    HAVE_JAX = False

T, H = 5, 3
# numbascan against JAX: both exact up to rounding. Against finite differences: truncation error.
RTOL, ATOL = (1e-9, 1e-11) if HAVE_JAX else (2e-5, 1e-7)


@pytest.fixture(params=["cpu", "python"])
def mode(request, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", request.param)
    return request.param


# ------------------------------------------------------------------------------------------------
# references


def xscan(xp, step, init, xs=None, length=None, reverse=False):
    """`jax.lax.scan` for xp = jax.numpy; the same loop in Python for xp = numpy.

    step(carry, x) -> (carry, y); xs an array, a tuple of arrays or None; y an array or tuple.
    """
    if xp is not np:
        return jax.lax.scan(step, init, xs, length=length, reverse=reverse)
    if xs is None:
        n = length
    else:
        n = len(xs[0]) if isinstance(xs, tuple) else len(xs)
    order = range(n - 1, -1, -1) if reverse else range(n)
    carry, ys = init, [None] * n
    for t in order:
        x = None if xs is None else tuple(a[t] for a in xs) if isinstance(xs, tuple) else xs[t]
        carry, ys[t] = step(carry, x)
    if n == 0 or ys[0] is None:
        return carry, None
    if isinstance(ys[0], tuple):
        return carry, tuple(np.stack([y[i] for y in ys]) for i in range(len(ys[0])))
    return carry, np.stack(ys)


def _fd_grad(fn, args, argnums, eps=1e-6):
    out = []
    for i in argnums:
        x = np.asarray(args[i], dtype=np.float64)
        g = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[idx] += eps
            minus[idx] -= eps
            ap = list(args)
            am = list(args)
            ap[i], am[i] = plus, minus
            g[idx] = (np.sum(fn(*ap)) - np.sum(fn(*am))) / (2 * eps)
        out.append(g)
    return out


def _fd_jacobian(fn, args, argnums, eps=1e-6):
    out = []
    for i in argnums:
        x = np.asarray(args[i], dtype=np.float64)
        f0 = np.asarray(fn(*args))
        J = np.zeros(f0.shape + x.shape)
        for idx in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[idx] += eps
            minus[idx] -= eps
            ap, am = list(args), list(args)
            ap[i], am[i] = plus, minus
            J[(Ellipsis,) + idx] = (np.asarray(fn(*ap)) - np.asarray(fn(*am))) / (2 * eps)
        out.append(J)
    return out


def _nums(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _pack(results, argnums):
    return results[0] if isinstance(argnums, int) else tuple(results)


def reference_grad(jax_fn, numpy_fn, args, argnums=0):
    """d f / d args[argnums] by `jax.grad` of `jax_fn` if JAX is importable, else central
    finite differences of `numpy_fn`."""
    if HAVE_JAX:
        g = jax.grad(jax_fn, argnums)(*[jnp.asarray(a) for a in args])
        return _pack([np.asarray(x) for x in (g if isinstance(g, tuple) else (g,))], argnums)
    return _pack(_fd_grad(numpy_fn, args, _nums(argnums)), argnums)


def reference_jacobian(jax_fn, numpy_fn, args, argnums=0):
    if HAVE_JAX:
        J = jax.jacfwd(jax_fn, argnums)(*[jnp.asarray(a) for a in args])
        return _pack([np.asarray(x) for x in (J if isinstance(J, tuple) else (J,))], argnums)
    return _pack(_fd_jacobian(numpy_fn, args, _nums(argnums)), argnums)


def reference_hessian(jax_fn, numpy_fn, args, argnum=0):
    if HAVE_JAX:
        return np.asarray(jax.hessian(jax_fn, argnum)(*[jnp.asarray(a) for a in args]))

    def grad_fn(*a):
        return _fd_grad(numpy_fn, a, (argnum,), eps=1e-4)[0]
    return _fd_jacobian(grad_fn, args, (argnum,), eps=1e-4)[0]


def reference_value(numpy_fn, args):
    return numpy_fn(*[np.asarray(a) for a in args])


def refs(ref):
    """(jax version, numpy version) of `ref(xp, *args)`."""
    return functools.partial(ref, jnp), functools.partial(ref, np)


def close(actual, expected, what, rtol=RTOL, atol=ATOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def check_grad(f, ref, args, argnums):
    """ns.value_and_grad(f) against the reference value and gradient."""
    jax_fn, numpy_fn = refs(ref)
    value, grads = ns.value_and_grad(f, argnums)(*args)
    close(value, reference_value(numpy_fn, args), "value", rtol=1e-10, atol=1e-12)
    close(value, f(*args), "value against the eager call", rtol=1e-10, atol=1e-12)
    expected = reference_grad(jax_fn, numpy_fn, args, argnums)
    if isinstance(argnums, int):
        grads, expected = (grads,), (expected,)
    assert len(grads) == len(expected)
    for i, g, e in zip(_nums(argnums), grads, expected):
        close(g, e, f"gradient w.r.t. argument {i}")
        assert np.asarray(g).dtype == np.asarray(args[i]).dtype


def randn(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# ------------------------------------------------------------------------------------------------
# sequences, outputs, non_sequences, captures


def test_sequence_taps_past_and_future(rng, mode):
    taps = [-2, 0, 1]
    x, W, h0 = randn(rng, T + 3, H), randn(rng, H, H, scale=0.5), randn(rng, H)

    def f(x, W, h0):
        h, _ = ns.scan(lambda a, b, c, h, W: np.tanh(W @ h + a - 0.5 * b + c * c),
                       sequences=dict(input=x, taps=taps), outputs_info=h0, non_sequences=W)
        return np.sum(h * h) + np.sum(np.sin(h[-1]))

    def ref(xp, x, W, h0):
        n = len(x) - 3
        xs = (x[0:n], x[2:2 + n], x[3:3 + n])

        def step(h, s):
            h = xp.tanh(W @ h + s[0] - 0.5 * s[1] + s[2] * s[2])
            return h, h
        hl, hs = xscan(xp, step, h0, xs)
        return xp.sum(hs * hs) + xp.sum(xp.sin(hl))

    check_grad(f, ref, (x, W, h0), (0, 1, 2))


def test_output_taps(rng, mode):
    """dict(initial=X, taps=[-2, -1]): X[0] plays out[-2], X[1] plays out[-1]."""
    x, X0, a = randn(rng, T, H), randn(rng, 2, H), randn(rng, H, scale=0.5)

    def f(x, X0, a):
        h, _ = ns.scan(lambda xt, h2, h1, a: np.tanh(a * h1 + 0.3 * h2 + xt), sequences=x,
                       outputs_info=dict(initial=X0, taps=[-2, -1]), non_sequences=a)
        return np.sum(np.cos(h) * np.arange(1, T + 1)[:, None])

    def ref(xp, x, X0, a):
        def step(c, xt):
            h2, h1 = c
            h = xp.tanh(a * h1 + 0.3 * h2 + xt)
            return (h1, h), h
        _, hs = xscan(xp, step, (X0[0], X0[1]), x)
        return xp.sum(xp.cos(hs) * np.arange(1, T + 1)[:, None])

    check_grad(f, ref, (x, X0, a), (0, 1, 2))


def test_map_outputs(rng, mode):
    x, y, w = randn(rng, T, H), randn(rng, T, H), randn(rng, H)

    def f(x, y, w):
        out, _ = ns.scan(lambda a, b, w: [np.sin(a) * b + w, np.sum(a * b * w)],
                         sequences=[x, y], non_sequences=[w])
        return np.sum(out[0] ** 2) + np.sum(np.exp(out[1] * 0.3))

    def ref(xp, x, y, w):
        return xp.sum((xp.sin(x) * y + w) ** 2) + xp.sum(xp.exp(xp.sum(x * y * w, axis=1) * 0.3))

    check_grad(f, ref, (x, y, w), (0, 1, 2))


def test_mixed_map_and_fed_back_outputs(rng, mode):
    x, W, h0, c0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H), randn(rng)

    def f(x, W, h0, c0):
        def step(xt, h, c, W):
            hn = np.tanh(W @ h + xt)
            return [np.sum(hn * xt), hn, c * 0.9 + np.sum(hn)]
        (y, h, c), _ = ns.scan(step, sequences=x, outputs_info=[None, h0, c0], non_sequences=W)
        return np.sum(y ** 2) + np.sum(h[-1]) + np.sum(np.sin(c))

    def ref(xp, x, W, h0, c0):
        def step(carry, xt):
            h, c = carry
            hn = xp.tanh(W @ h + xt)
            cn = c * 0.9 + xp.sum(hn)
            return (hn, cn), (xp.sum(hn * xt), cn)
        (hl, _), (y, c) = xscan(xp, step, (h0, c0), x)
        return xp.sum(y ** 2) + xp.sum(hl) + xp.sum(xp.sin(c))

    check_grad(f, ref, (x, W, h0, c0), (0, 1, 2, 3))


CONST = np.linspace(0.5, 1.5, H)          # a global array read by a step: an input, no gradient


def test_captured_closure_arrays(rng, mode):
    """W and b reach the step through its closure (and CONST through globals), not as
    non_sequences: derivatives w.r.t. the captured arguments."""
    x, W, b, h0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H), randn(rng, H)

    def f(x, W, b, h0):
        h, _ = ns.scan(lambda xt, h: np.tanh(W @ h + xt * b + CONST), sequences=x,
                       outputs_info=h0)
        return np.sum(h ** 3)

    def ref(xp, x, W, b, h0):
        def step(h, xt):
            h = xp.tanh(W @ h + xt * b + CONST)
            return h, h
        return xp.sum(xscan(xp, step, h0, x)[1] ** 3)

    check_grad(f, ref, (x, W, b, h0), (0, 1, 2, 3))


@pytest.mark.parametrize("taps", [[0], [-1, 1]])
def test_go_backwards(rng, mode, taps):
    x, W, h0 = randn(rng, T + 2, H), randn(rng, H, H, scale=0.5), randn(rng, H)

    def f(x, W, h0):
        h, _ = ns.scan(lambda *a: np.tanh(a[-1] @ a[-2] + sum(a[:-2]) * 0.5),
                       sequences=dict(input=x, taps=taps), outputs_info=h0, non_sequences=W,
                       go_backwards=True)
        return np.sum(h * np.arange(1, len(h) + 1)[:, None])

    def ref(xp, x, W, h0):
        r = x[::-1]                                       # the walk from the end
        m, M = max(0, -min(taps)), max(0, max(taps))
        n = len(x) - m - M
        xs = tuple(r[m + tap:m + tap + n] for tap in taps)

        def step(h, s):
            h = xp.tanh(W @ h + sum(s) * 0.5)
            return h, h
        hs = xscan(xp, step, h0, xs)[1]
        return xp.sum(hs * np.arange(1, n + 1)[:, None])

    check_grad(f, ref, (x, W, h0), (0, 1, 2))


def test_nested_scans(rng, mode):
    """The inner scan reads the outer step's state and a captured argument."""
    x, u, W, h0 = randn(rng, 4, H), randn(rng, 3), randn(rng, H, H, scale=0.5), randn(rng, H)

    def f(x, u, W, h0):
        def outer(xt, h, u):
            g, _ = ns.scan(lambda uk, c: np.tanh(c * uk + W @ h), sequences=u, outputs_info=xt)
            return g[-1] + 0.5 * h
        h, _ = ns.scan(outer, sequences=x, outputs_info=h0, non_sequences=u)
        return np.sum(h ** 2)

    def ref(xp, x, u, W, h0):
        def outer(h, xt):
            def inner(c, uk):
                c = xp.tanh(c * uk + W @ h)
                return c, c
            g, _ = xscan(xp, inner, xt, u)
            hn = g + 0.5 * h
            return hn, hn
        return xp.sum(xscan(xp, outer, h0, x)[1] ** 2)

    check_grad(f, ref, (x, u, W, h0), (0, 1, 2, 3))


# ------------------------------------------------------------------------------------------------
# a grad inside a step: the seed's Jacobian pattern


@ns.jit
def jacobian_by_scan(W, v):
    y = np.tanh(W @ v)
    J, _ = ns.scan(lambda i: ns.grad(y[i], v), sequences=[np.arange(H)])
    return J


def test_grad_inside_step_jacobian(rng, mode):
    W, v = randn(rng, H, H), randn(rng, H)
    J = jacobian_by_scan(W, v)
    jax_fn, numpy_fn = refs(lambda xp, W, v: xp.tanh(W @ v))
    close(J, reference_jacobian(jax_fn, numpy_fn, (W, v), 1), "Jacobian by grad inside a step")


def test_derivative_through_grad_inside_step(rng, mode):
    W, v, C = randn(rng, H, H), randn(rng, H), randn(rng, H, H)

    def f(W, v):
        return np.sum(jacobian_by_scan(W, v) * C)

    def ref(xp, W, v):
        y = xp.tanh(W @ v)
        return xp.sum((1 - y * y)[:, None] * W * C)        # d tanh(W v)_i / d v_j = (1-y_i^2) W_ij

    check_grad(f, ref, (W, v), (0, 1))


# ------------------------------------------------------------------------------------------------
# reduce, foldl, foldr, n_steps=0


@pytest.mark.parametrize("which", ["reduce", "foldl", "foldr"])
def test_reduce_foldl_foldr(rng, mode, which):
    x, W, h0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H)
    fold = {"reduce": ns.reduce, "foldl": ns.foldl, "foldr": ns.foldr}[which]

    def f(x, W, h0):
        h, _ = fold(lambda xt, h, W: np.tanh(W @ h + xt), sequences=x, outputs_info=h0,
                    non_sequences=W)
        return np.sum(np.sin(h))

    def ref(xp, x, W, h0):
        def step(h, xt):
            return xp.tanh(W @ h + xt), None
        h, _ = xscan(xp, step, h0, x[::-1] if which == "foldr" else x)
        return xp.sum(xp.sin(h))

    check_grad(f, ref, (x, W, h0), (0, 1, 2))


def test_n_steps_zero(rng, mode):
    """Zero steps: the outputs are empty, the gradient flows only around the scan."""
    W, h0 = randn(rng, H, H), randn(rng, H)

    def f(W, h0):
        h, _ = ns.scan(lambda h, W: np.tanh(W @ h), outputs_info=h0, non_sequences=W,
                       n_steps=0)
        return np.sum(h) + np.sum(W * W) + np.sum(h0)

    value, (gW, gh0) = ns.value_and_grad(f, (0, 1))(W, h0)
    close(value, np.sum(W * W) + np.sum(h0), "value")
    close(gW, 2 * W, "gradient w.r.t. W")
    close(gh0, np.ones(H), "gradient w.r.t. h0")


def test_foldl_over_empty_sequence(rng, mode):
    """foldl over zero steps returns the initial state: its gradient is the identity."""
    x, h0 = randn(rng, 0, H), randn(rng, H)

    def f(h0):
        h, _ = ns.foldl(lambda xt, h: np.tanh(h + xt), sequences=x, outputs_info=h0)
        return np.sum(h ** 2)

    close(ns.grad(f)(h0), 2 * h0, "gradient w.r.t. h0")


# ------------------------------------------------------------------------------------------------
# shared variables, random draws


@pytest.mark.parametrize("loss_uses_update", [False, True])
def test_shared_variable_with_updates(rng, mode, loss_uses_update):
    """The step reads a shared k and returns {k: new}: k is carried like a state."""
    x, W, h0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H)
    k0 = float(rng.uniform(0.5, 1.5))
    k = ns.shared(np.asarray(k0), name="k")

    def f(x, W, h0):
        def step(xt, h):
            hn = np.tanh(W @ h + xt + 0.1 * k)
            return hn, {k: k + np.sum(hn)}
        h, updates = ns.scan(step, sequences=x, outputs_info=h0)
        loss = np.sum(h ** 2)
        return loss + updates[k] * 0.5 if loss_uses_update else loss

    def ref(xp, x, W, h0):
        def step(c, xt):
            h, kk = c
            hn = xp.tanh(W @ h + xt + 0.1 * kk)
            return (hn, kk + xp.sum(hn)), hn
        (_, kl), hs = xscan(xp, step, (h0, k0), x)
        loss = xp.sum(hs ** 2)
        return loss + kl * 0.5 if loss_uses_update else loss

    check_grad(f, ref, (x, W, h0), (0, 1, 2))
    assert float(k.get_value()) == k0, "scan applied the updates by itself"


def test_random_draws_are_constants(rng, mode):
    """A draw inside the step is fresh at every step and a constant to autodiff."""
    x, W, h0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H)
    seed = int(rng.integers(1, 2**31))

    def f(x, W, h0):
        rs = ns.RandomStreams(seed)
        h, _ = ns.scan(lambda xt, h: np.tanh(W @ h + xt * rs.normal(size=(H,))), sequences=x,
                       outputs_info=h0)
        return np.sum(h ** 2)

    rs = ns.RandomStreams(seed)
    noise, _ = ns.scan(lambda xt: rs.normal(size=(H,)), sequences=x)
    assert np.all(np.std(noise, axis=0) > 0), "draws are not fresh at every step"

    def ref(xp, x, W, h0):
        def step(h, s):
            h = xp.tanh(W @ h + s[0] * s[1])
            return h, h
        return xp.sum(xscan(xp, step, h0, (x, noise))[1] ** 2)

    check_grad(f, ref, (x, W, h0), (0, 1, 2))


# ------------------------------------------------------------------------------------------------
# truncate_gradient, checkpoint, until


@pytest.mark.parametrize("k", [1, 2, 4, 10])
def test_truncate_gradient(rng, mode, k):
    """Reverse mode through the last k steps only (k >= n_steps: the full gradient)."""
    n = 6
    x, W, h0, y0 = randn(rng, n, H), randn(rng, H, H, scale=0.5), randn(rng, H), randn(rng, H)

    def f(x, W, h0):
        def step(xt, h, W):
            hn = np.tanh(W @ h + xt)
            return [hn, hn * xt]
        (h, y), _ = ns.scan(step, sequences=x, outputs_info=[h0, None], non_sequences=W,
                            truncate_gradient=k)
        return np.sum(h * y0) + np.sum(y ** 2)

    t0 = max(0, n - k)

    def loss(xp, early, late):
        """Steps t < t0 computed from `early` (detached), the rest from `late`."""
        (xe, We, h0e), (xl, Wl, h0l) = early, late
        hs, ys, h = [], [], (h0e if t0 > 0 else h0l)
        for t in range(n):
            xx, WW = (xe, We) if t < t0 else (xl, Wl)
            h = xp.tanh(WW @ h + xx[t])
            hs.append(h)
            ys.append(h * xx[t])
        return xp.sum(xp.stack(hs) * y0) + xp.sum(xp.stack(ys) ** 2)

    def jax_ref(x, W, h0):
        sg = jax.lax.stop_gradient
        return loss(jnp, (sg(x), sg(W), sg(h0)), (x, W, h0))

    def numpy_ref(x1, W1, h1):                             # early steps at the base point
        return loss(np, (x, W, h0), (x1, W1, h1))

    value, grads = ns.value_and_grad(f, (0, 1, 2))(x, W, h0)
    close(value, numpy_ref(x, W, h0), "value", rtol=1e-10, atol=1e-12)
    expected = reference_grad(jax_ref, numpy_ref, (x, W, h0), (0, 1, 2))
    for name, g, e in zip(("x", "W", "h0"), grads, expected):
        close(g, e, f"truncate_gradient={k}: gradient w.r.t. {name}")


def _rnn_loss(x, W, h0, checkpoint):
    h, _ = ns.scan(lambda xt, h, W: np.tanh(W @ h + xt), sequences=x, outputs_info=h0,
                   non_sequences=W, checkpoint=checkpoint)
    return np.sum(np.sin(h) * x)


@pytest.mark.parametrize("checkpoint", [1, 2, 4, "sqrt"])
def test_checkpoint_gives_the_same_gradient(rng, mode, checkpoint):
    n = 6
    x, W, h0 = randn(rng, n, H), randn(rng, H, H, scale=0.5), randn(rng, H)
    args = (x, W, h0)
    plain = ns.grad(functools.partial(_rnn_loss, checkpoint=None), (0, 1, 2))(*args)
    checked = ns.grad(functools.partial(_rnn_loss, checkpoint=checkpoint), (0, 1, 2))(*args)

    def ref(xp, x, W, h0):
        def step(h, xt):
            h = xp.tanh(W @ h + xt)
            return h, h
        return xp.sum(xp.sin(xscan(xp, step, h0, x)[1]) * x)

    expected = reference_grad(*refs(ref), args, (0, 1, 2))
    for name, p, c, e in zip(("x", "W", "h0"), plain, checked, expected):
        close(c, p, f"checkpoint={checkpoint!r} against no checkpoint: w.r.t. {name}",
              rtol=1e-12, atol=1e-14)
        close(c, e, f"checkpoint={checkpoint!r} against the reference: w.r.t. {name}")


def test_until_gradient(mode):
    """An eager scan that stops early: the gradient is that of the steps that ran."""
    x = np.array([0.9, 1.1, 1.05, 0.95, 1.2, 1.0])
    a, h0 = np.asarray(0.8), np.asarray(0.3)
    threshold = 2.5                       # h: 1.14, 2.01, 2.66 -> stops after step 2 (3 steps)

    def f(x, a, h0):
        def step(xt, h, a):
            hn = h * a + xt
            return hn, ns.until(hn > threshold)
        h, _ = ns.scan(step, sequences=x, outputs_info=h0, non_sequences=a)
        return np.sum(h ** 2)

    h_eager, _ = ns.scan(lambda xt, h, a: (h * a + xt, ns.until(h * a + xt > threshold)),
                         sequences=x, outputs_info=h0, non_sequences=a)
    n_run = len(h_eager)
    assert n_run == 3

    def ref(xp, x, a, h0):
        def step(h, xt):
            h = h * a + xt
            return h, h
        return xp.sum(xscan(xp, step, h0, x[:n_run])[1] ** 2)

    check_grad(f, ref, (x, a, h0), (0, 1, 2))


# ------------------------------------------------------------------------------------------------
# jacobians, hessians, forward over reverse


def _taps_scan(x, W):
    h, _ = ns.scan(lambda a, b, h2, h1, W: np.tanh(W @ h1 + 0.5 * h2 + a * b),
                   sequences=dict(input=x, taps=[-1, 1]),
                   outputs_info=dict(initial=np.stack([x[0], x[1]]), taps=[-2, -1]),
                   non_sequences=W)
    return h


def _backwards_scan(x, W):
    h, _ = ns.scan(lambda xt, h, W: np.sin(W @ h) + xt, sequences=x, outputs_info=x[0],
                   non_sequences=W, go_backwards=True)
    return h[-1]


def _nested_scan(x, W):
    def outer(xt, h):
        g, _ = ns.scan(lambda c: np.tanh(W @ c + xt), outputs_info=h, n_steps=2)
        return g[-1]
    h, _ = ns.scan(outer, sequences=x, outputs_info=x[-1])
    return np.sum(h, axis=0)


@pytest.mark.parametrize("fn", [_taps_scan, _backwards_scan, _nested_scan])
def test_jacobian_fwd_equals_rev(rng, mode, fn):
    x, W = randn(rng, 4, 2), randn(rng, 2, 2, scale=0.5)
    for argnums in (0, 1):
        Jf = ns.jacobian(fn, argnums, mode="fwd")(x, W)
        Jr = ns.jacobian(fn, argnums, mode="rev")(x, W)
        Ja = ns.jacobian(fn, argnums)(x, W)
        out = fn(x, W)
        assert Jf.shape == np.shape(out) + np.shape((x, W)[argnums])
        close(Jf, Jr, f"{fn.__name__}: jacfwd vs jacrev w.r.t. argument {argnums}",
              rtol=1e-10, atol=1e-12)
        close(Ja, Jf, f"{fn.__name__}: jacobian(auto) w.r.t. argument {argnums}",
              rtol=1e-10, atol=1e-12)
        close(ns.jacfwd(fn, argnums)(x, W), Jf, "ns.jacfwd", rtol=1e-12, atol=1e-14)
        close(ns.jacrev(fn, argnums)(x, W), Jr, "ns.jacrev", rtol=1e-12, atol=1e-14)


def test_jacobian_of_scan_against_reference(rng, mode):
    x, W, h0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H)

    def f(W):
        h, _ = ns.scan(lambda xt, h: np.tanh(W @ h + xt), sequences=x, outputs_info=h0)
        return h

    def ref(xp, W):
        def step(h, xt):
            h = xp.tanh(W @ h + xt)
            return h, h
        return xscan(xp, step, h0, x)[1]

    expected = reference_jacobian(*refs(ref), (W,), 0)
    for m in ("fwd", "rev"):
        close(ns.jacobian(f, mode=m)(W), expected, f"jacobian mode={m}")


def test_hessian_of_scan(rng, mode):
    x, W, h0 = randn(rng, 4, 2), randn(rng, 2, 2, scale=0.5), randn(rng, 2)

    def f(W):
        h, _ = ns.scan(lambda xt, h: np.tanh(W @ h + xt), sequences=x, outputs_info=h0)
        return np.sum(np.sin(h) * x)

    def ref(xp, W):
        def step(h, xt):
            h = xp.tanh(W @ h + xt)
            return h, h
        return xp.sum(xp.sin(xscan(xp, step, h0, x)[1]) * x)

    Hs = ns.hessian(f)(W)
    assert Hs.shape == (2, 2, 2, 2)
    M = Hs.reshape(4, 4)
    close(M, M.T, "the Hessian is symmetric", rtol=1e-10, atol=1e-12)
    rtol, atol = (RTOL, ATOL) if HAVE_JAX else (1e-4, 1e-6)
    close(Hs, reference_hessian(*refs(ref), (W,)), "Hessian against the reference", rtol, atol)


def test_forward_over_reverse(rng, mode):
    """ns.jvp of a function that calls ns.vjp (Hessian-vector products through a scan)."""
    x, W, h0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H)
    ct = randn(rng, T, H)
    dW, dx, dct = randn(rng, H, H), randn(rng, T, H), randn(rng, T, H)

    def f(x, W):
        h, _ = ns.scan(lambda xt, h, W: np.tanh(W @ h + xt), sequences=x, outputs_info=h0,
                       non_sequences=W)
        return h

    def g(x, W, ct):
        _, vjp_fn = ns.vjp(f, x, W)
        return vjp_fn(ct)

    out, tout = ns.jvp(g, (x, W, ct), (dx, dW, dct))

    def jf(x, W):
        def step(h, xt):
            h = jnp.tanh(W @ h + xt)
            return h, h
        return jax.lax.scan(step, h0, x)[1]

    def jg(x, W, ct):
        return jax.vjp(jf, x, W)[1](ct)

    if HAVE_JAX:
        e_out, e_tout = jax.jvp(jg, (x, W, ct), (dx, dW, dct))
    else:                                                  # finite differences of ns.vjp
        e_out = g(x, W, ct)
        eps = 1e-6
        gp = g(x + eps * dx, W + eps * dW, ct + eps * dct)
        gm = g(x - eps * dx, W - eps * dW, ct - eps * dct)
        e_tout = tuple((p - m) / (2 * eps) for p, m in zip(gp, gm))
    for i in range(2):
        close(out[i], e_out[i], f"vjp output {i}")
        close(tout[i], e_tout[i], f"tangent of vjp output {i}")


def test_jvp_of_scan_against_reference(rng, mode):
    x, W, h0 = randn(rng, T, H), randn(rng, H, H, scale=0.5), randn(rng, H)
    dx, dW, dh0 = randn(rng, T, H), randn(rng, H, H), randn(rng, H)

    def f(x, W, h0):
        h, _ = ns.scan(lambda xt, h, W: np.tanh(W @ h + xt), sequences=x, outputs_info=h0,
                       non_sequences=W)
        return h

    def ref(xp, x, W, h0):
        def step(h, xt):
            h = xp.tanh(W @ h + xt)
            return h, h
        return xscan(xp, step, h0, x)[1]

    out, tout = ns.jvp(f, (x, W, h0), (dx, dW, dh0))
    jax_fn, numpy_fn = refs(ref)
    if HAVE_JAX:
        e_out, e_tout = jax.jvp(jax_fn, (x, W, h0), (dx, dW, dh0))
    else:
        eps = 1e-6
        e_out = numpy_fn(x, W, h0)
        e_tout = (numpy_fn(x + eps * dx, W + eps * dW, h0 + eps * dh0) -
                  numpy_fn(x - eps * dx, W - eps * dW, h0 - eps * dh0)) / (2 * eps)
    close(out, e_out, "jvp primal")
    close(tout, e_tout, "jvp tangent")


# ------------------------------------------------------------------------------------------------
# errors


def test_integer_input_has_no_gradient(rng, mode):
    idx = np.array([0, 2, 1])
    X = randn(rng, 3, H)

    def f(idx, X):
        h, _ = ns.scan(lambda i, X: np.sum(X[i] ** 2), sequences=idx, non_sequences=X)
        return np.sum(h)

    with pytest.raises((ns.DerivativeError, TypeError), match="argument 0"):
        ns.grad(f, 0)(idx, X)
    with pytest.raises((ns.DerivativeError, TypeError), match="argument 0"):
        ns.grad(f, (0, 1))(idx, X)
    with pytest.raises((ns.DerivativeError, TypeError), match="argument 0"):
        ns.jacobian(f, 0)(idx, X)
    with pytest.raises((ns.DerivativeError, TypeError), match="argument 0|primal 0"):
        ns.jvp(f, (idx, X), (np.ones(3), np.ones_like(X)))
    # w.r.t. the float argument it works: sum_i |X[idx_i]|^2
    expected = np.zeros_like(X)
    for i in idx:
        expected[i] += 2 * X[i]
    close(ns.grad(f, 1)(idx, X), expected, "gradient w.r.t. X")


def test_untraceable_step_derivative_names_the_operation(rng, mode):
    x = randn(rng, T, 2)

    def f(x):
        h, _ = ns.scan(lambda xt, h: h * 0.5 + np.median(xt) * xt, sequences=x,
                       outputs_info=np.ones(2))
        return np.sum(h)

    with warnings.catch_warnings():                       # forward still runs (untraced)
        warnings.simplefilter("ignore")
        value = f(x)
    h, expected = np.ones(2), 0.0
    for xt in x:
        h = h * 0.5 + np.median(xt) * xt
        expected += np.sum(h)
    close(value, expected, "forward value of the untraced step")
    with pytest.raises(Exception, match=r"np\.median"):
        ns.grad(f)(x)
    with pytest.raises(Exception, match=r"np\.median"):
        ns.jvp(f, (x,), (np.ones_like(x),))
