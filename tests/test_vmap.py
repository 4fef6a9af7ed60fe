"""ns.vmap against a Python loop over the batch.

Every batched result is compared with an independent reference: the unbatched function called
on one batch element at a time (its scans in mode "python"), the results stacked. The CPU runs
the batch with prange; the CUDA tests run the "batched" kernel pattern in numba's CUDA
simulator (every CUDA thread a Python thread), or on a real GPU with NUMBASCAN_TEST_GPU=1.
Sizes are small: each distinct program is a numba compile.
"""
import os

if os.environ.get("NUMBASCAN_TEST_GPU") != "1":          # conftest.py does this first
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import collections
import contextlib
import io

import numpy as np
import pytest

import numbascan as ns
from conftest import assert_close
from numbascan.codegen import parallel
from numbascan.core.ir import IR, Var, make_eqn

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    HAVE_JAX = True
except ImportError:                                       # pragma: no cover - depends on the env
    jax = jnp = None
    HAVE_JAX = False

RTOL, ATOL = 1e-12, 1e-14
B, T, I, H = 3, 4, 2, 3          # batch, steps, input size, state size
RNN_AXES = (0, 0, None, None, None)


# ------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def python_mode():
    """Scans (and derivatives) called inside run in the reference mode "python"."""
    old = os.environ.get("NUMBASCAN_MODE")
    os.environ["NUMBASCAN_MODE"] = "python"
    try:
        yield
    finally:
        if old is None:
            del os.environ["NUMBASCAN_MODE"]
        else:
            os.environ["NUMBASCAN_MODE"] = old


def _stack(results):
    first = results[0]
    if isinstance(first, (tuple, list)):
        leaves = [np.stack([np.asarray(r[k]) for r in results]) for k in range(len(first))]
        return type(first)(*leaves) if hasattr(first, "_fields") else type(first)(leaves)
    return np.stack([np.asarray(r) for r in results])


def loop_reference(f, args, in_axes, python=True):
    """f on one batch element at a time (np.take along each argument's axis), stacked along a
    new leading axis; with `python`, its scans run in mode "python"."""
    axes = list(in_axes) if isinstance(in_axes, (tuple, list)) else [in_axes] * len(args)
    size = {np.shape(a)[ax] for a, ax in zip(args, axes) if ax is not None}
    assert len(size) == 1
    results = []
    for k in range(size.pop()):
        call = [a if ax is None else np.take(a, k, axis=ax) for a, ax in zip(args, axes)]
        with python_mode() if python else contextlib.nullcontext():
            results.append(f(*call))
    return _stack(results)


def check(actual, expected, what="result", rtol=RTOL, atol=ATOL):
    """Same structure (array, tuple or list), shapes and values."""
    assert type(actual) is type(expected) or (
        isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray)), \
        f"{what}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), f"{what}: {len(actual)} != {len(expected)} outputs"
        for k, (a, e) in enumerate(zip(actual, expected)):
            assert isinstance(a, np.ndarray), f"{what}[{k}]: {type(a).__name__}"
            assert a.dtype == np.asarray(e).dtype, f"{what}[{k}]: dtype {a.dtype}"
            assert_close(a, e, f"{what}[{k}]", rtol=rtol, atol=atol)
    else:
        assert actual.dtype == np.asarray(expected).dtype, f"{what}: dtype {actual.dtype}"
        assert_close(actual, expected, what, rtol=rtol, atol=atol)


@contextlib.contextmanager
def unchanged(*arrays):
    """Assert that no array was written to (by a call or by a failed call)."""
    before = [np.array(a, copy=True) for a in arrays]
    yield
    for k, (a, b) in enumerate(zip(arrays, before)):
        np.testing.assert_array_equal(a, b, err_msg=f"input {k} was modified")


def rnn_data(rng, batch=B, steps=T, hidden=H):
    X = rng.standard_normal((batch, steps, I))
    H0 = rng.standard_normal((batch, hidden))
    W = rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)
    U = rng.standard_normal((I, hidden))
    b = rng.standard_normal(hidden)
    return X, H0, W, U, b


def rnn(x, h0, W, U, b):
    """All the states of `h = tanh(h @ W + x_t @ U + b)`, shape (T, H)."""
    def step(x_t, h):
        return np.tanh(h @ W + x_t @ U + b)
    hs, _ = ns.scan(step, sequences=x, outputs_info=h0)
    return hs


def rnn_states_and_sum(x, h0, W, U, b):
    hs = rnn(x, h0, W, U, b)
    return hs, hs.sum(axis=0)


def rnn_last_and_states(x, h0, W, U, b):
    hs = rnn(x, h0, W, U, b)
    return [hs[-1], hs]


# ------------------------------------------------------------------------------------------------
# a scan inside the mapped function; the structure of the results


def test_tuple_of_states_and_reduction(rng):
    args = rnn_data(rng)
    with unchanged(*args):
        out = ns.vmap(rnn_states_and_sum, in_axes=RNN_AXES)(*args)
    ref = loop_reference(rnn_states_and_sum, args, RNN_AXES)
    assert isinstance(out, tuple)
    assert out[0].shape == (B, T, H) and out[1].shape == (B, H)
    check(out, ref)


def test_single_array_output(rng):
    args = rnn_data(rng)
    with unchanged(*args):
        out = ns.vmap(rnn, in_axes=RNN_AXES)(*args)
    assert isinstance(out, np.ndarray) and out.shape == (B, T, H)
    check(out, loop_reference(rnn, args, RNN_AXES))


def test_list_output(rng):
    args = rnn_data(rng)
    out = ns.vmap(rnn_last_and_states, in_axes=RNN_AXES)(*args)
    assert isinstance(out, list)
    check(out, loop_reference(rnn_last_and_states, args, RNN_AXES))


def test_every_argument_batched_with_an_int_in_axes(rng):
    # per-example weights: in_axes=0 batches all five arguments
    X, H0, _, _, _ = rnn_data(rng)
    Ws = rng.standard_normal((B, H, H)) / np.sqrt(H)
    Us = rng.standard_normal((B, I, H))
    bs = rng.standard_normal((B, H))
    args = (X, H0, Ws, Us, bs)
    with unchanged(*args):
        out = ns.vmap(rnn_states_and_sum)(*args)
    check(out, loop_reference(rnn_states_and_sum, args, 0))


def test_nonzero_and_negative_in_axes(rng):
    X, H0, W, U, b = rnn_data(rng)
    Xt = np.ascontiguousarray(np.moveaxis(X, 0, 1))      # (T, B, I): batch on axis 1
    H0t = np.ascontiguousarray(H0.T)                      # (H, B): batch on axis -1
    args = (Xt, H0t, W, U, b)
    axes = (1, -1, None, None, None)
    with unchanged(*args):
        out = ns.vmap(rnn, in_axes=axes)(*args)
    ref = loop_reference(rnn, args, axes)
    check(out, ref)
    # the same as batching the original arrays on axis 0
    check(out, loop_reference(rnn, (X, H0, W, U, b), RNN_AXES))
    # a strided (non-contiguous) view as the batched argument
    view = np.moveaxis(X, 0, 2)                           # (T, I, B)
    with unchanged(view):
        out = ns.vmap(rnn, in_axes=(2, 0, None, None, None))(view, H0, W, U, b)
    check(out, ref)


def test_out_axes(rng):
    args = rnn_data(rng)
    ref_states, ref_sum = loop_reference(rnn_states_and_sum, args, RNN_AXES)
    out = ns.vmap(rnn, in_axes=RNN_AXES, out_axes=1)(*args)
    assert out.shape == (T, B, H)
    check(out, np.moveaxis(ref_states, 0, 1))
    out = ns.vmap(rnn, in_axes=RNN_AXES, out_axes=-1)(*args)
    assert out.shape == (T, H, B)
    check(out, np.moveaxis(ref_states, 0, -1))
    states, sums = ns.vmap(rnn_states_and_sum, in_axes=RNN_AXES, out_axes=(1, -1))(*args)
    assert states.shape == (T, B, H) and sums.shape == (H, B)
    check(states, np.moveaxis(ref_states, 0, 1), "states")
    check(sums, ref_sum.T, "sums")


def damped_rnn(x, h0, W, U, b, decay, n_sub):
    """A float coefficient and an int used in `range`: Python scalars, static."""
    def step(x_t, h):
        for _ in range(n_sub):
            h = decay * np.tanh(h @ W + x_t @ U + b)
        return h
    hs, _ = ns.scan(step, sequences=x, outputs_info=h0)
    return hs


def test_python_scalars_are_static_arguments(rng):
    args = rnn_data(rng)
    axes = RNN_AXES + (None, None)
    vf = ns.vmap(damped_rnn, in_axes=axes)
    for decay, n_sub in [(0.9, 2), (0.5, 3)]:
        out = vf(*args, decay, n_sub)
        check(out, loop_reference(damped_rnn, args + (decay, n_sub), axes),
              f"decay={decay}, n_sub={n_sub}")
    # the first values again: not the program of the last ones
    check(vf(*args, 0.9, 2), loop_reference(damped_rnn, args + (0.9, 2), axes))


def test_function_without_scan(rng):
    X = rng.standard_normal((B, I))
    M = rng.standard_normal((I, 4))
    c = rng.uniform(0.5, 2.0, size=B)
    Y = rng.standard_normal((B, 4, 2))
    s = np.array(rng.uniform(0.5, 1.5))           # a 0-d array, not batched

    def affine(x, M, c, y, s):
        z = np.tanh(x @ M) * c + np.exp(-x.sum() * s)
        return z @ y, np.maximum(z, 0.1) - y.T.sum(axis=0).mean()
    axes = (0, None, 0, 0, None)
    with unchanged(X, M, c, Y, s):
        out = ns.vmap(affine, in_axes=axes)(X, M, c, Y, s)
    assert out[0].shape == (B, 2) and out[1].shape == (B, 4)
    # pure NumPy: the reference is the plain function on each element
    check(out, loop_reference(affine, (X, M, c, Y, s), axes, python=False))


def test_untraceable_function_still_runs(rng):
    from numbascan.runtime.fallback import UntracedStepWarning
    X = rng.standard_normal((B, 5))

    def centred_and_total(x):
        return x - np.median(x), x.sum()          # np.median is not traced
    with pytest.warns(UntracedStepWarning, match="centred_and_total"):
        out = ns.vmap(centred_and_total)(X)
    check(out, loop_reference(centred_and_total, (X,), 0, python=False))


def test_batch_of_size_one_and_zero(rng):
    X, H0, W, U, b = rnn_data(rng)
    out = ns.vmap(rnn, in_axes=RNN_AXES)(X[:1], H0[:1], W, U, b)
    check(out, loop_reference(rnn, (X[:1], H0[:1], W, U, b), RNN_AXES))
    out = ns.vmap(rnn, in_axes=RNN_AXES)(X[:0], H0[:0], W, U, b)
    assert out.shape == (0, T, H) and out.dtype == np.float64


# ------------------------------------------------------------------------------------------------
# composition with ns.jit and derivatives


def test_jit_of_vmap(rng):
    args = rnn_data(rng)
    jf = ns.jit(ns.vmap(rnn_states_and_sum, in_axes=RNN_AXES))
    with unchanged(*args):
        out = jf(*args)
    check(out, loop_reference(rnn_states_and_sum, args, RNN_AXES))
    args2 = rnn_data(rng)
    check(jf(*args2), loop_reference(rnn_states_and_sum, args2, RNN_AXES), "second call")


def test_vmap_inside_jit(rng):
    X, H0, W, U, b = rnn_data(rng)
    Xt = np.ascontiguousarray(np.moveaxis(X, 0, 1))      # (T, B, I)

    @ns.jit
    def program(Xt, H0, W, U, b):
        # batch axis 1 in, batch axis 1 out: the transposes happen on traced values
        hs = ns.vmap(rnn, in_axes=(1, 0, None, None, None), out_axes=1)(Xt, H0, W, U, b)
        return np.sin(hs).sum(axis=0) * 2.0 + 1.0          # (B, H)

    with unchanged(Xt, H0, W, U, b):
        out = program(Xt, H0, W, U, b)
    ref = loop_reference(rnn, (X, H0, W, U, b), RNN_AXES)   # (B, T, H)
    check(out, np.sin(ref).sum(axis=1) * 2.0 + 1.0)


def test_the_map_runs_with_prange(rng):
    args = rnn_data(rng)
    buf = io.StringIO()
    text = ns.show(ns.vmap(rnn, in_axes=RNN_AXES), *args, file=buf)
    assert "prange(" in text


def test_small_batches_run_in_the_calling_thread_with_the_same_numbers(rng, monkeypatch):
    """The map decides at each call, from its batch size and the static work of one step,
    whether to use threads (codegen/parallel.py); both ways give the same bits, from one
    compiled function."""
    monkeypatch.delenv(parallel.ENV, raising=False)
    X, H0, W, U, b = rnn_data(rng, batch=48, steps=100)
    f = ns.vmap(rnn, in_axes=RNN_AXES)
    text = ns.show(f, X, H0, W, U, b, file=io.StringIO())
    below = int(text.split("if n_steps < ")[1].split(":")[0])
    assert 1 < below < 48 and "prange(" in text
    many = f(X, H0, W, U, b)                                 # across threads
    compiles = ns.cache_info().compiles
    few = f(X[:below - 1], H0[:below - 1], W, U, b)          # in the calling thread
    assert ns.cache_info().compiles == compiles
    np.testing.assert_array_equal(few, many[:below - 1])
    check(many, loop_reference(rnn, (X, H0, W, U, b), RNN_AXES))


def test_parallel_min_work_from_the_environment(monkeypatch):
    x, y = Var(np.dtype(np.float64), (10,)), Var(np.dtype(np.float64), (10,))
    step = IR((x,), (make_eqn("exp", [x], [y], {}),), (y,))
    assert parallel.step_work(step) == 100
    monkeypatch.delenv(parallel.ENV, raising=False)
    assert parallel.serial_below(step) == -(-parallel.PARALLEL_MIN_WORK // 150)
    monkeypatch.setenv(parallel.ENV, "0")                    # always across threads
    assert parallel.serial_below(step) == 0
    monkeypatch.setenv(parallel.ENV, "1.5e4")
    assert parallel.serial_below(step) == 100
    monkeypatch.setenv(parallel.ENV, "many")
    with pytest.raises(ValueError, match=parallel.ENV):
        parallel.serial_below(step)


def _jax_rnn(x, h0, W, U, b):
    h, hs = h0, []
    for t in range(x.shape[0]):
        h = jnp.tanh(h @ W + x[t] @ U + b)
        hs.append(h)
    return jnp.stack(hs)


def _fd_directional(loss, args, grads, wrt, rng, eps=1e-6):
    """<grad, v> against a central difference of `loss` along random directions v."""
    for _ in range(3):
        vs = {i: rng.standard_normal(np.shape(args[i])) for i in wrt}
        plus = [a + eps * vs[i] if i in vs else a for i, a in enumerate(args)]
        minus = [a - eps * vs[i] if i in vs else a for i, a in enumerate(args)]
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        lhs = sum(float(np.vdot(g, vs[i])) for g, i in zip(grads, wrt))
        assert abs(lhs - fd) <= 1e-6 * (abs(fd) + 1.0), (lhs, fd)


def test_grad_of_a_loss_through_vmap(rng):
    X, H0, W, U, b = rnn_data(rng)

    def loss(W, X, H0, U, b):
        hs, sums = ns.vmap(rnn_states_and_sum, in_axes=RNN_AXES)(X, H0, W, U, b)
        return np.sum(np.sin(hs)) + np.sum(sums ** 2) * 0.1

    with unchanged(X, H0, W, U, b):
        value, (gW, gX) = ns.value_and_grad(loss, argnums=(0, 1))(W, X, H0, U, b)
    assert gW.shape == W.shape and gX.shape == X.shape
    if HAVE_JAX:
        def jloss(W, X):
            total = 0.0
            for k in range(X.shape[0]):
                hs = _jax_rnn(X[k], H0[k], W, U, b)
                total = total + jnp.sum(jnp.sin(hs)) + jnp.sum(hs.sum(axis=0) ** 2) * 0.1
            return total
        rW, rX = jax.jit(jax.grad(jloss, argnums=(0, 1)))(W, X)
        check(gW, np.asarray(rW), "d loss / d W", rtol=1e-11, atol=1e-13)
        check(gX, np.asarray(rX), "d loss / d X", rtol=1e-11, atol=1e-13)
    else:                                               # pragma: no cover - depends on the env
        def ref_loss(W, X, H0, U, b):
            hs, sums = loop_reference(rnn_states_and_sum, (X, H0, W, U, b), RNN_AXES)
            return np.sum(np.sin(hs)) + np.sum(sums ** 2) * 0.1
        _fd_directional(ref_loss, (W, X, H0, U, b), (gW, gX), (0, 1), rng)
    # the value through the batched program equals the loop's
    with python_mode():
        ref_value = sum(np.sum(np.sin(rnn(X[k], H0[k], W, U, b))) +
                        np.sum(rnn(X[k], H0[k], W, U, b).sum(axis=0) ** 2) * 0.1
                        for k in range(B))
    assert_close(value, ref_value, "loss value", rtol=RTOL)


def example_loss(W, x, h0, U, b):
    return np.sum(np.tanh(rnn(x, h0, W, U, b)[-1]) ** 2) + 0.5 * np.sum(W * W)


def test_per_example_gradients(rng):
    X, H0, W, U, b = rnn_data(rng)
    axes = (None, 0, 0, None, None)
    with unchanged(X, H0, W, U, b):
        per_example = ns.vmap(ns.grad(example_loss), in_axes=axes)(W, X, H0, U, b)
    assert per_example.shape == (B, H, H)
    # a loop of ns.grad, run by the reference (python) mode
    ref = loop_reference(ns.grad(example_loss), (W, X, H0, U, b), axes)
    check(per_example, ref, "per-example gradients")
    if HAVE_JAX:
        def jloss(W, x, h0):
            return jnp.sum(jnp.tanh(_jax_rnn(x, h0, W, U, b)[-1]) ** 2) + 0.5 * jnp.sum(W * W)
        jgrad = jax.jit(jax.grad(jloss))
        jref = np.stack([np.asarray(jgrad(W, X[k], H0[k])) for k in range(B)])
        check(per_example, jref, "per-example gradients vs JAX", rtol=1e-11, atol=1e-13)


def test_vmap_of_vmap(rng):
    X = rng.standard_normal((2, B, T, I))
    H0 = rng.standard_normal((2, B, H))
    _, _, W, U, b = rnn_data(rng)
    inner = ns.vmap(rnn, in_axes=RNN_AXES)
    first = inner(X[0], H0[0], W, U, b)       # starts the threading layer
    import numba
    if numba.threading_layer() == "workqueue":   # pragma: no cover - depends on the env
        pytest.skip("numba's workqueue threading layer aborts on nested parallel loops")
    check(first, loop_reference(rnn, (X[0], H0[0], W, U, b), RNN_AXES))
    out = ns.vmap(inner, in_axes=RNN_AXES)(X, H0, W, U, b)
    assert out.shape == (2, B, T, H)
    ref = np.stack([loop_reference(rnn, (X[j], H0[j], W, U, b), RNN_AXES) for j in range(2)])
    check(out, ref)


# ------------------------------------------------------------------------------------------------
# random streams


def make_noisy(srng, mode=None):
    def noisy(x):
        d = srng.uniform(size=x.shape[1:], low=0.5, high=1.5)      # one draw per element
        def step(x_t, h):
            return np.tanh(h + x_t * d) + srng.normal(size=x_t.shape, std=0.1)
        hs, _ = ns.scan(step, sequences=x, outputs_info=np.zeros(x.shape[1:]), mode=mode)
        return hs, d, srng.binomial(size=(3,), n=4, p=0.4)
    return noisy


def test_random_streams(rng):
    X = rng.standard_normal((4, T, I))
    first = ns.vmap(make_noisy(ns.RandomStreams(7)))(X)
    again = ns.vmap(make_noisy(ns.RandomStreams(7)))(X)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert first[2].dtype == np.int64
    # each batch element gets its own draws
    for k in range(4):
        for j in range(k):
            assert not np.any(first[1][k] == first[1][j]), (k, j)
    # the stream advances: a second call draws new numbers
    srng = ns.RandomStreams(7)
    vf = ns.vmap(make_noisy(srng))
    one, two = vf(X), vf(X)
    np.testing.assert_array_equal(one[1], first[1])
    assert not np.array_equal(one[1], two[1])
    # a loop over the batch with a fresh stream of the same seed: the same numbers
    ref = loop_reference(make_noisy(ns.RandomStreams(7)), (X,), 0)
    check(first, ref)
    # the whole vmap in mode "python" too
    with python_mode():
        py = ns.vmap(make_noisy(ns.RandomStreams(7)))(X)
    check(first, py)


# ------------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_argument(rng):
    X, H0, W, U, b = args = rnn_data(rng)
    calls = []

    def f(x, h0, W, U, b):
        calls.append(1)
        return rnn(x, h0, W, U, b)

    with unchanged(*args):
        with pytest.raises(ValueError, match=r"in_axes.*one entry per argument \(5\).*found 3"):
            ns.vmap(f, in_axes=(0, 0, None))(*args)
        with pytest.raises(ValueError, match=r"in_axes of argument 0: axis 3 is out of range"):
            ns.vmap(f, in_axes=(3, 0, None, None, None))(*args)
        with pytest.raises(ValueError, match=r"in_axes of argument 1: axis -3 is out of range"):
            ns.vmap(f, in_axes=(0, -3, None, None, None))(*args)
        with pytest.raises(ValueError, match=r"argument 0: 3, argument 1: 2"):
            ns.vmap(f, in_axes=RNN_AXES)(X, H0[:2], W, U, b)
        with pytest.raises(ValueError, match=r"at least one batched argument"):
            ns.vmap(f, in_axes=(None,) * 5)(*args)
        with pytest.raises(ValueError, match=r"at least one batched argument"):
            ns.vmap(f, in_axes=None)(*args)
        with pytest.raises(TypeError, match=r"in_axes of argument 2: expected an int or None"):
            ns.vmap(f, in_axes=(0, 0, 0.5, None, None))(*args)
        with pytest.raises(ValueError, match=r"argument 4: in_axes asks for axis 0.*float"):
            ns.vmap(f, in_axes=(0, 0, None, None, 0))(X, H0, W, U, 1.5)
        with pytest.raises(TypeError, match=r"vmap: f: expected a callable"):
            ns.vmap(np.zeros(3))
    assert not calls, "f ran although the arguments were rejected"


def test_out_axes_errors(rng):
    args = rnn_data(rng)
    with unchanged(*args):
        with pytest.raises(ValueError, match=r"out_axes"):
            ns.vmap(rnn, in_axes=RNN_AXES, out_axes=3)(*args)
        with pytest.raises(ValueError, match=r"out_axes.*one entry per argument \(2\)"):
            ns.vmap(rnn_states_and_sum, in_axes=RNN_AXES, out_axes=(0, 1, 2))(*args)
        with pytest.raises(ValueError, match=r"out_axes"):
            ns.vmap(rnn, in_axes=RNN_AXES, out_axes=None)(*args)


# ------------------------------------------------------------------------------------------------
# the trace cache


class Traces:
    """A counter the trace cache keys by identity (a class), incremented while f is traced."""
    n = 0


SCALE = np.array([1.0, -2.0, 0.5])


def counted_rnn(x, h0, W, U, b):
    Traces.n += 1
    return rnn(x, h0, W, U, b) * SCALE


def test_no_retrace_for_the_same_shapes(rng):
    global SCALE
    args = rnn_data(rng)
    vf = ns.vmap(counted_rnn, in_axes=RNN_AXES)
    Traces.n = 0
    check(vf(*args), loop_reference(counted_rnn, args, RNN_AXES))
    Traces.n = 0
    args2 = rnn_data(rng)
    out = vf(*args2)
    assert Traces.n == 0, f"f traced {Traces.n} time(s) on a second call with the same shapes"
    check(out, loop_reference(counted_rnn, args2, RNN_AXES))
    # another batch size: the same program
    Traces.n = 0
    args5 = rnn_data(rng, batch=5)
    out = vf(*args5)
    assert Traces.n == 0, "a new batch size retraced f"
    check(out, loop_reference(counted_rnn, args5, RNN_AXES))
    # a captured array is read at call time
    old = SCALE
    try:
        SCALE = rng.standard_normal(3)
        Traces.n = 0
        out = vf(*args2)
        assert Traces.n == 0, "a new value of a captured array retraced f"
        check(out, loop_reference(counted_rnn, args2, RNN_AXES))
    finally:
        SCALE = old
    # another element shape (a longer sequence) does retrace
    Traces.n = 0
    args7 = rnn_data(rng, steps=T + 3)
    out = vf(*args7)
    assert Traces.n == 1, f"a first call traced f {Traces.n} times"
    check(out, loop_reference(counted_rnn, args7, RNN_AXES))


def make_packaged(kind):
    def f(x):
        a, b = x * 2.0, x.sum() + 1.0
        if kind == "array":
            return a
        if kind == "tuple":
            return (a, b)
        if kind == "list":
            return [a, b]
        return Pair(a, b)
    return f


Pair = collections.namedtuple("Pair", "a b")


def test_result_structure_of_each_function(rng):
    # functions of the same code returning different structures, called in turn (the second
    # round takes their steps from the trace cache)
    X = rng.standard_normal((B, 2))
    fns = {kind: ns.vmap(make_packaged(kind)) for kind in ("array", "tuple", "list", "pair")}
    for _ in range(2):
        for kind, vf in fns.items():
            out = vf(X)
            ref = loop_reference(make_packaged(kind), (X,), 0, python=False)
            if kind == "pair":
                assert isinstance(out, Pair) and isinstance(ref, Pair), (type(out), type(ref))
                check(tuple(out), tuple(ref), kind)
            else:
                check(out, ref, kind)

    def g(x, as_list):
        return [x, x + 1.0] if as_list else (x, x + 1.0)
    vg = ns.vmap(g, in_axes=(0, None))
    for as_list in (True, False, True, False):
        out = vg(X, as_list)
        assert type(out) is (list if as_list else tuple), (as_list, type(out))
        check(out, loop_reference(g, (X, as_list), (0, None), python=False))


# ------------------------------------------------------------------------------------------------
# CUDA: the "batched" kernel pattern (simulator unless NUMBASCAN_TEST_GPU=1)


def _simulator():
    try:
        from numba.cuda.core import config
        return bool(config.ENABLE_CUDASIM)
    except ImportError:                                   # pragma: no cover - older layouts
        import numba
        return bool(numba.config.ENABLE_CUDASIM)


def _cuda_tol():
    # on a GPU, libdevice's tanh/exp and contracted multiply-adds may differ in the last bits
    return (RTOL, ATOL) if _simulator() else (1e-10, 1e-12)


def make_cuda_rnn(mode):
    def f(x, h0, W, U, b):
        hs, _ = ns.scan(lambda x_t, h: np.tanh(h @ W + x_t @ U + b), sequences=x,
                        outputs_info=h0, mode=mode)
        return hs, hs.sum(axis=0)
    return f


@pytest.mark.parametrize("hidden, per", [(3, "thread"), (20, "block")])
def test_cuda_batched_kernel(rng, kernel_patterns, hidden, per):
    args = rnn_data(rng, batch=2, steps=3, hidden=hidden)
    with unchanged(*args):
        out = ns.vmap(make_cuda_rnn("cuda"), in_axes=RNN_AXES)(*args)
    assert [p.kind for p in kernel_patterns] == ["batched"]
    lanes = kernel_patterns[0].lanes
    assert lanes == 1 if per == "thread" else lanes > 1, kernel_patterns
    assert isinstance(out, tuple) and all(isinstance(o, np.ndarray) for o in out)
    rtol, atol = _cuda_tol()
    check(out, loop_reference(make_cuda_rnn("python"), args, RNN_AXES), rtol=rtol, atol=atol)


def test_cuda_device_arrays_stay_on_the_device(rng):
    from numba import cuda
    X, H0, W, U, b = rnn_data(rng, batch=2, steps=3)
    dX, dH0 = cuda.to_device(X), cuda.to_device(H0)
    out = ns.vmap(make_cuda_rnn(None), in_axes=RNN_AXES)(dX, dH0, W, U, b)
    assert isinstance(out, tuple)
    assert all(hasattr(o, "copy_to_host") for o in out), [type(o) for o in out]
    host = tuple(o.copy_to_host() for o in out)
    rtol, atol = _cuda_tol()
    check(host, loop_reference(make_cuda_rnn("python"), (X, H0, W, U, b), RNN_AXES),
          rtol=rtol, atol=atol)
    np.testing.assert_array_equal(dX.copy_to_host(), X)
    # no scan inside: device arrays alone send the map to the GPU
    M = rng.standard_normal((I, 4))
    out = ns.vmap(lambda x, M: np.tanh(x[-1] @ M), in_axes=(0, None))(dX, M)
    assert hasattr(out, "copy_to_host")
    check(out.copy_to_host(), np.stack([np.tanh(X[k, -1] @ M) for k in range(2)]),
          rtol=rtol, atol=atol)


def test_cuda_random_streams(rng):
    X = rng.standard_normal((2, 3, I))
    out = ns.vmap(make_noisy(ns.RandomStreams(11), mode="cuda"))(X)
    assert all(isinstance(o, np.ndarray) for o in out)
    ref = loop_reference(make_noisy(ns.RandomStreams(11), mode="python"), (X,), 0)
    rtol, atol = _cuda_tol()
    check(out, ref, rtol=rtol, atol=atol)


def test_a_device_array_batched_along_another_axis_is_an_error_naming_it(rng):
    from numba import cuda
    X = rng.standard_normal((3, 4))
    dX = cuda.to_device(X)
    with pytest.raises(ValueError, match=r"in_axes of argument 0: .*batch axis at 0, found axis 1"):
        ns.vmap(lambda x: x * 2.0, in_axes=1)(dX)
    np.testing.assert_array_equal(dX.copy_to_host(), X)
