"""Parallel in time (SPEC section 10): `ns.scan(..., parallel=True | False | None)`.

A step affine in its fed-back state runs as linear recurrences (api/affine.py, loop/affine.py).
Every result is compared with the sequential loop: the python mode (the oracle) and, where a
compiled loop is cheap to share, `parallel=False`; filters with `scipy.signal.lfilter`,
cumulative sums and products with NumPy's. Derivatives against JAX in float64 (central finite
differences where JAX is not installed). Errors name the operation and the state.

Inputs are fresh random values (never zeros), T = 24 unless a test needs the block-parallel
kernel (NUMBASCAN_LINREC_PARALLEL_MIN=0 and a few thousand steps).
"""
from __future__ import annotations

import numpy as np
import pytest

import numbascan as ns
import numbascan.lax as nlax
from numbascan.api import affine
from numbascan.loop.args import ScanError, normalize

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    HAVE_JAX = True
except ImportError:                                       # pragma: no cover - depends on the env
    jax = jnp = None
    HAVE_JAX = False

try:
    import scipy.signal as signal
except ImportError:                                       # pragma: no cover
    signal = None

T = 24
RTOL, ATOL = 1e-10, 1e-12
GRAD_RTOL, GRAD_ATOL = (1e-9, 1e-11) if HAVE_JAX else (2e-5, 1e-7)


def rng(seed):
    return np.random.default_rng(seed)


def close(actual, expected, what="value", rtol=RTOL, atol=ATOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def in_time_and_oracle(fn, what, scan=ns.scan, **kwargs):
    """The scan with parallel=True, checked against the python mode's loop; its outputs."""
    fast, _ = scan(fn, parallel=True, **kwargs)
    slow, _ = scan(fn, mode="python", **kwargs)
    assert isinstance(fast, list) == isinstance(slow, list), what
    for i, (a, b) in enumerate(zip(*([fast, slow] if isinstance(fast, list) else
                                     [[fast], [slow]]))):
        close(a, b, f"{what}: output {i}")
    return fast


def first_order(u_t, x):
    return 0.9 * x + u_t


# ------------------------------------------------------------------------------------------------
# forward results


def test_first_order_filter_matches_loop_and_lfilter():
    r = rng(1)
    u, x0 = r.normal(size=T), r.normal()
    fast = in_time_and_oracle(first_order, "x = 0.9 x + u", sequences=u,
                              outputs_info=np.float64(x0))
    loop, _ = ns.scan(first_order, sequences=u, outputs_info=np.float64(x0), parallel=False)
    close(fast, loop, "against the compiled loop")
    if signal is not None:
        ref, _ = signal.lfilter([1.0], [1.0, -0.9], u, zi=[0.9 * x0])
        close(fast, ref, "against lfilter")


def iir_case(order, steps=T):
    """y_t = b0 u_t - a1 y_{t-1} - ... - ak y_{t-k} on fresh inputs: (step, scan keywords,
    scipy.signal.lfilter's result, or None without scipy)."""
    r = rng(10 + order)
    u = r.normal(size=steps)
    b0 = 0.7
    a = np.concatenate([[1.0], r.uniform(-0.4, 0.4, size=order) / order])
    past = r.normal(size=order)                  # y_{-1}, ..., y_{-k}
    coefs = [float(c) for c in a[1:]]

    def iir(u_t, *ys):
        return b0 * u_t - sum(c * y for c, y in zip(coefs, ys))
    init = np.float64(past[0]) if order == 1 else dict(initial=past[::-1].copy(),
                                                         taps=list(range(-1, -order - 1, -1)))
    ref = None
    if signal is not None:
        ref, _ = signal.lfilter([b0], a, u, zi=signal.lfiltic([b0], a, past))
    return iir, dict(sequences=u, outputs_info=init), ref


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_iir_filters_match_lfilter(order):
    """Taps [-1..-k]: the companion matrix."""
    iir, kwargs, ref = iir_case(order)
    fast = in_time_and_oracle(iir, f"IIR order {order}", **kwargs)
    if ref is not None:
        close(fast, ref, f"IIR order {order} against lfilter")


def test_iir_coefficients_as_non_sequences_and_unsorted_taps():
    r = rng(20)
    u, c = r.normal(size=(T, 2)), np.array([0.5, 0.3, -0.2])
    X = r.normal(size=(3, 2))

    def step(u_t, y3, y1, c):                    # taps listed [-3, -1]: y_{t-2} has no term
        return c[0] * u_t + c[1] * y1 + c[2] * y3
    in_time_and_oracle(step, "taps [-3, -1]", sequences=u,
                       outputs_info=dict(initial=X, taps=[-3, -1]), non_sequences=c)


def test_cumulative_sums_and_products():
    r = rng(2)
    u = r.normal(size=(T, 3, 2))
    x0 = r.normal(size=(3, 2))
    sums = in_time_and_oracle(lambda u_t, x: x + u_t, "cumsum", sequences=u, outputs_info=x0)
    close(sums, x0 + np.cumsum(u, axis=0), "against np.cumsum")
    v = r.uniform(0.5, 1.5, size=(T, 3, 2))
    prods = in_time_and_oracle(lambda v_t, x: x * v_t, "cumprod", sequences=v, outputs_info=x0)
    close(prods, x0 * np.cumprod(v, axis=0), "against np.cumprod")


def test_discounted_returns_go_backwards():
    """G_t = r_t + gamma G_{t+1}, walked from the end: outputs in iteration order."""
    r = rng(3)
    rewards, gamma, g_end = r.normal(size=T), 0.95, r.normal()
    G = in_time_and_oracle(lambda r_t, g: r_t + gamma * g, "returns", sequences=rewards,
                           outputs_info=np.float64(g_end), go_backwards=True)
    expected, g = [], g_end
    for r_t in rewards[::-1]:
        g = r_t + gamma * g
        expected.append(g)
    close(G, np.array(expected), "against a loop")
    # n_steps below the sequence's length: its last entries; sequence taps with go_backwards
    in_time_and_oracle(lambda r_t, g: r_t + gamma * g, "n_steps", sequences=rewards,
                       outputs_info=np.float64(g_end), go_backwards=True, n_steps=T // 2)
    in_time_and_oracle(lambda a, b, g: a - b + gamma * g, "taps [-1, 2]",
                       sequences=dict(input=rewards, taps=[-1, 2]),
                       outputs_info=np.float64(g_end), go_backwards=True)


def test_matrix_recurrences():
    r = rng(4)
    n = 3
    A_t = r.normal(size=(T, n, n)) * 0.4
    A = r.normal(size=(n, n)) * 0.4
    b = r.normal(size=(T, n))
    x0 = r.normal(size=n)
    in_time_and_oracle(lambda b_t, A_t, x: x @ A_t + b_t, "A_t a sequence", sequences=[b, A_t],
                       outputs_info=x0)
    in_time_and_oracle(lambda b_t, x, A: x @ A + b_t, "A a non-sequence", sequences=b,
                       outputs_info=x0, non_sequences=A)
    in_time_and_oracle(lambda b_t, x: np.dot(x, A) + np.tanh(b_t @ A), "A captured, b_t a map",
                       sequences=b, outputs_info=x0)


def test_linear_structural_operations_stay_affine():
    """Sums, reshapes, concatenations, indexing by a sequence's integers, a solve with a
    state-free matrix, np.where with a state-free condition."""
    r = rng(16)
    u = r.normal(size=(T, 3))
    idx = r.integers(0, 3, size=T)
    M = np.eye(3) * 2 + r.normal(size=(3, 3)) * 0.1
    x0 = r.normal(size=3)

    def step(u_t, i_t, x, M):
        rolled = np.concatenate([x[1:], x[:1]]).reshape(3, 1).reshape(3)
        picked = x[i_t] * 0.1 + x.sum() * 0.05
        solved = np.linalg.solve(M, x)
        chosen = np.where(u_t > 0, 0.5 * rolled, solved)
        return chosen * 0.5 + picked + u_t
    in_time_and_oracle(step, "structural", sequences=[u, idx], outputs_info=x0,
                       non_sequences=M)


def test_several_states_map_outputs_and_the_family():
    r = rng(5)
    u = r.normal(size=(T, 3))
    x0, y0 = r.normal(size=3), r.normal(size=3)
    in_time_and_oracle(lambda u_t, x, y: (0.5 * x + u_t, y + 0.3 * x), "coupled states",
                       sequences=u, outputs_info=[x0, y0])
    in_time_and_oracle(lambda u_t, x, y: (0.5 * x + u_t, 0.9 * y - u_t.sum()), "two groups",
                       sequences=u, outputs_info=[x0, np.float64(y0[0])])
    in_time_and_oracle(lambda u_t, x: (0.8 * x + u_t, np.tanh(x).sum()), "a map output",
                       sequences=u, outputs_info=[x0, None])
    step = lambda u_t, x: (0.8 * x + u_t, np.tanh(x))          # noqa: E731
    for family in (ns.reduce, ns.foldl, ns.foldr):
        out = in_time_and_oracle(step, family.__name__, scan=family, sequences=u,
                                 outputs_info=[x0, None])
        assert [o.shape for o in out] == [(3,), (3,)]
    carry, ys = nlax.scan(lambda c, x: (0.9 * c + x, 2 * c), x0, u, reverse=True,
                          parallel=True)
    carry_ref, ys_ref = nlax.scan(lambda c, x: (0.9 * c + x, 2 * c), x0, u, reverse=True,
                                  mode="python")
    close(carry, carry_ref, "lax.scan carry")
    close(ys, ys_ref, "lax.scan ys")


def test_float32_and_elementwise_coefficients():
    r = rng(6)
    u = r.normal(size=(T, 4)).astype(np.float32)
    a = r.uniform(0.2, 0.9, size=(T, 1)).astype(np.float32)
    x0 = r.normal(size=4).astype(np.float32)
    def step(u_t, a_t, x):        # a float64 detour: casts round, to float32's precision
        wide = x.astype(np.float64) * np.float64(0.5)
        return np.exp(-a_t) * x + wide.astype(np.float32) + np.where(u_t > 0, u_t, 0.5 * u_t)
    fast, _ = ns.scan(step, sequences=[u, a], outputs_info=x0, parallel=True)
    slow, _ = ns.scan(step, sequences=[u, a], outputs_info=x0, mode="python")
    close(fast, slow, "float32", rtol=1e-5, atol=1e-6)


def test_block_parallel_kernel(monkeypatch):
    """Long enough for blocks of steps across threads (the threshold lowered to 0)."""
    monkeypatch.setenv("NUMBASCAN_LINREC_PARALLEL_MIN", "0")
    r = rng(7)
    u = r.normal(size=4000)
    in_time_and_oracle(first_order, "diagonal", sequences=u, outputs_info=np.float64(0.5))
    in_time_and_oracle(lambda u_t, y1, y2: u_t + 0.5 * y1 - 0.3 * y2, "matrix", sequences=u,
                       outputs_info=dict(initial=r.normal(size=2), taps=[-2, -1]))


def test_inputs_are_not_written_to():
    r = rng(8)
    u, x0 = r.normal(size=T), np.asarray(r.normal())
    kept = u.copy(), x0.copy()
    ns.scan(first_order, sequences=u, outputs_info=x0, parallel=True)
    ns.scan(first_order, sequences=u, outputs_info=x0, parallel=True, go_backwards=True)
    np.testing.assert_array_equal(u, kept[0])
    np.testing.assert_array_equal(x0, kept[1])


# ------------------------------------------------------------------------------------------------
# choosing


def test_false_and_a_short_none_are_the_loop():
    r = rng(9)
    u, x0 = r.normal(size=T), np.float64(r.normal())
    sa = _args(first_order, u, x0, None)
    assert affine.plan(sa, "cpu", traced=False) is None           # T below the crossover
    default, _ = ns.scan(first_order, sequences=u, outputs_info=x0)
    loop, _ = ns.scan(first_order, sequences=u, outputs_info=x0, parallel=False)
    np.testing.assert_array_equal(default, loop)


def test_none_chooses_by_the_rule(monkeypatch):
    """The rule's checks (docs/guide.md), with the crossover and the fixed cost at 0 so that
    a short scan shows them."""
    monkeypatch.setattr(affine, "CROSSOVER", 10)
    monkeypatch.setattr(affine, "FIXED_NS", 0)
    monkeypatch.setattr(affine, "threads", lambda: 2)
    r = rng(10)
    u, x0 = r.normal(size=T), np.float64(r.normal())
    chosen = affine.plan(_args(first_order, u, x0, None), "cpu", traced=False)
    assert chosen is not None
    parallel_ns, loop_ns = affine.estimated_ns(chosen)
    assert parallel_ns < loop_ns
    heavy = affine.plan(_args(lambda u_t, x: 0.9 * x + np.tanh(u_t), u, x0, True), "cpu",
                        traced=False)
    heavy_parallel, heavy_loop = affine.estimated_ns(heavy)   # np.tanh: whole-array, cheaper
    assert heavy_loop - loop_ns > heavy_parallel - parallel_ns > 0
    assert affine.plan(_args(first_order, u, x0, None), "python", traced=False) is None
    tanh = _args(lambda u_t, x: np.tanh(x) + u_t, u, x0, None)
    assert affine.plan(tanh, "cpu", traced=False) is None          # not affine: the loop
    mapped = _args(lambda u_t, x: 0.5 * x + np.sin(u_t @ np.ones((1, 1)))[0], u[:, None],
                   np.ones(1), None)
    assert affine.plan(mapped, "cpu", traced=False) is None        # its offsets need a map
    monkeypatch.setattr(affine, "threads", lambda: 1)
    assert affine.plan(_args(first_order, u, x0, None), "cpu", traced=False) is None


def _args(fn, u, x0, parallel):
    return normalize(fn, u, x0, None, None, -1, False, None, False, False, None,
                     in_time=parallel)


# ------------------------------------------------------------------------------------------------
# errors


AFFINE = "parallel=True needs a step affine in its fed-back state"


def _where(u_t, x):
    return np.where(x > 0, 0.5 * x, x) + u_t


@pytest.mark.parametrize("step, states, found", [
    (lambda u_t, x: np.tanh(x) + u_t, [None, "x (output 0 at t-1)"],
     "np.tanh is applied to a value that depends on it"),
    (lambda u_t, x: x * x + u_t, [None, "x (output 0 at t-1)"],
     "np.multiply (*) is applied to two values that depend on it"),
    (lambda u_t, x: x / x + u_t, [None, "x (output 0 at t-1)"],
     "np.true_divide (/) divides by a value that depends on it"),
    (_where, [None, "x (output 0 at t-1)"], "a comparison (>) is applied to a value"),
    (lambda u_t, x, y: (x @ y + u_t, y), ["states", "x (output 0 at t-1) and y (output 1 at "
                                          "t-1)"],
     "np.matmul (@) is applied to two values that depend on it"),
], ids=["tanh", "x*x", "x/x", "where", "matmul of two states"])
@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_non_affine_steps_are_errors(step, states, found, mode):
    r = rng(11)
    two = states[0] == "states"
    u = r.normal(size=(T, 2, 2) if two else (T, 2))
    init = [r.normal(size=(2, 2)), r.normal(size=(2, 2))] if two else r.normal(size=2)
    with pytest.raises(ScanError) as err:
        ns.scan(step, sequences=u, outputs_info=init, parallel=True, mode=mode)
    message = str(err.value)
    assert message.startswith("ns.scan(") and "parallel=True needs a step affine in its " \
        f"fed-back {'states' if two else 'state'} {states[1]}" in message, message
    assert found in message, message
    assert isinstance(err.value, ValueError)


def test_where_with_a_state_condition_names_where():
    r = rng(12)

    def step(u_t, c, x):
        return np.where(c > x, x, 0.5 * x) + u_t     # the comparison breaks it first
    with pytest.raises(ScanError, match="a comparison"):
        ns.scan(step, sequences=[r.normal(size=T), r.normal(size=T)],
                outputs_info=np.float64(0.5), parallel=True)


def test_what_the_parallel_path_cannot_do():
    r = rng(13)
    u = r.normal(size=T)
    k = ns.shared(np.float64(1.5))
    streams = ns.RandomStreams(3)
    cases = [
        (dict(fn=lambda u_t, x: (0.5 * x + u_t, ns.until(u_t > 10)), sequences=u,
              outputs_info=np.float64(1)), "returns ns.until"),
        (dict(fn=lambda u_t, x: (0.5 * x + u_t, {k: k + 1}), sequences=u,
              outputs_info=np.float64(1)), "shared-variable updates"),
        (dict(fn=lambda u_t, x: 0.5 * x + u_t + streams.normal(), sequences=u,
              outputs_info=np.float64(1)), "random draws"),
        (dict(fn=lambda u_t, x: x + 1, sequences=u, outputs_info=np.int64(1)),
         "floating-point states"),
        (dict(fn=lambda u_t: u_t * 2, sequences=u), "a fed-back output"),
        (dict(fn=first_order, sequences=u, outputs_info=np.float64(1), truncate_gradient=3),
         "truncate_gradient=-1"),
    ]
    for kwargs, reason in cases:
        with pytest.raises(ScanError, match="parallel=True needs") as err:
            ns.scan(parallel=True, **kwargs)
        assert reason in str(err.value), str(err.value)
    assert k.get_value() == 1.5
    with pytest.raises(TypeError, match="parallel: expected None, True or False"):
        ns.scan(first_order, sequences=u, outputs_info=np.float64(1), parallel="yes")


# ------------------------------------------------------------------------------------------------
# derivatives


def _loss(u, a, x0):
    ys, _ = ns.scan(lambda u_t, x, a: a * x + u_t, sequences=u, outputs_info=x0,
                    non_sequences=a, parallel=True)
    return (ys ** 2).sum(axis=0) + np.sin(ys[-1])


def _jax_loss(u, a, x0):
    def step(x, u_t):
        x = a * x + u_t
        return x, x
    _, ys = jax.lax.scan(step, x0, u)
    return (ys ** 2).sum(axis=0) + jnp.sin(ys[-1])


def _numpy_loss(u, a, x0):
    x, total = x0, 0.0
    for u_t in u:
        x = a * x + u_t
        total = total + x ** 2
    return total + np.sin(x)


def _reference_grad(jax_fn, numpy_fn, args):
    if HAVE_JAX:
        return [np.asarray(g) for g in jax.grad(jax_fn, argnums=tuple(range(len(args))))(
            *[jnp.asarray(a) for a in args])]
    out = []
    for i, x in enumerate(args):
        g = np.zeros_like(x)
        for idx in np.ndindex(np.shape(x)):
            plus, minus = np.array(x, copy=True), np.array(x, copy=True)
            plus[idx] += 1e-6
            minus[idx] -= 1e-6
            hi = numpy_fn(*[plus if j == i else a for j, a in enumerate(args)])
            lo = numpy_fn(*[minus if j == i else a for j, a in enumerate(args)])
            g[idx] = (hi - lo) / 2e-6
        out.append(g)
    return out


def test_grad_through_a_parallel_scan_eagerly_and_in_jit():
    r = rng(14)
    args = (r.normal(size=(T, 2)), r.uniform(0.3, 0.9, size=2), r.normal(size=2))

    def loss(u, a, x0):
        return _loss(u, a, x0).sum()

    def jax_loss(u, a, x0):
        return _jax_loss(u, a, x0).sum()
    expected = _reference_grad(jax_loss, lambda *a: _numpy_loss(*a).sum(), args)
    grads = ns.grad(loss, argnums=(0, 1, 2))(*args)
    for g, e, name in zip(grads, expected, ["u", "a", "x0"]):
        close(g, e, f"d loss / d {name}", GRAD_RTOL, GRAD_ATOL)
    jitted = ns.jit(ns.grad(loss, argnums=(0, 1, 2)))(*args)
    for g, e, name in zip(jitted, expected, ["u", "a", "x0"]):
        close(g, e, f"ns.jit: d loss / d {name}", GRAD_RTOL, GRAD_ATOL)
    value = ns.jit(loss)(*args)
    close(value, np.float64(_numpy_loss(*args).sum()), "ns.jit value")


def test_jvp_and_jacobian_of_a_matrix_recurrence():
    """An IIR filter of order 2 with its coefficients as a non-sequence (companion form) and
    a recurrence with a per-step matrix."""
    r = rng(15)
    u, c, y0 = r.normal(size=T), np.array([0.6, 0.5, -0.3]), r.normal(size=2)

    def iir(u, c, y0):
        ys, _ = ns.scan(lambda u_t, y2, y1, c: c[0] * u_t + c[1] * y1 + c[2] * y2,
                        sequences=u, outputs_info=dict(initial=y0, taps=[-2, -1]),
                        non_sequences=c, parallel=True)
        return ys

    def iir_loop(u, c, y0):
        ys, w = [], list(y0)
        for u_t in u:
            w.append(c[0] * u_t + c[1] * w[-1] + c[2] * w[-2])
            ys.append(w[-1])
        return np.array(ys)
    tangents = (r.normal(size=T), r.normal(size=3), r.normal(size=2))
    out, tan = ns.jvp(iir, (u, c, y0), tangents)
    close(out, iir_loop(u, c, y0), "iir primal")
    eps = 1e-6
    numeric = (iir_loop(*[p + eps * t for p, t in zip((u, c, y0), tangents)]) -
               iir_loop(*[p - eps * t for p, t in zip((u, c, y0), tangents)])) / (2 * eps)
    close(tan, numeric, "iir tangent", 1e-6, 1e-8)
    J = ns.jacfwd(iir, argnums=1)(u, c, y0)
    numeric_J = np.stack([(iir_loop(u, c + eps * e, y0) - iir_loop(u, c - eps * e, y0)) /
                          (2 * eps) for e in np.eye(3)], axis=-1)
    close(J, numeric_J, "iir jacobian wrt c", 1e-6, 1e-8)

    A_t, b, x0 = r.normal(size=(T, 2, 2)) * 0.5, r.normal(size=(T, 2)), r.normal(size=2)

    def matrix_loss(A_t, b, x0):
        xs, _ = ns.scan(lambda b_t, A, x: x @ A + b_t, sequences=[b, A_t], outputs_info=x0,
                        parallel=True)
        return np.sin(xs).sum()

    def matrix_numpy(A_t, b, x0):
        x, total = x0, 0.0
        for A, b_t in zip(A_t, b):
            x = x @ A + b_t
            total = total + np.sin(x).sum()
        return total

    def matrix_jax(A_t, b, x0):
        def step(x, ab):
            x = x @ ab[0] + ab[1]
            return x, x
        return jnp.sin(jax.lax.scan(step, x0, (A_t, b))[1]).sum()
    args = (A_t, b, x0)
    expected = _reference_grad(matrix_jax, matrix_numpy, args)
    for g, e, name in zip(ns.grad(matrix_loss, argnums=(0, 1, 2))(*args), expected,
                          ["A_t", "b", "x0"]):
        close(g, e, f"d loss / d {name}", GRAD_RTOL, GRAD_ATOL)
