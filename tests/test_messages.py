"""Messages that teach (SPEC section 6): a JAX-style call of ns.scan, a tuple of states in
outputs_info and an operation numbascan cannot trace each get a message that says what was
found, what scan expected and what to use instead, the same in every mode, naming only the
user's functions. Every alternative such a message suggests is traced here (and computes what
it claims). Also: reductions with `dtype=` keep it, and ns.vmap over steps of linear algebra.

Sizes are tiny; the few compiled programs are shared by the tests that need them.
"""
import logging
import os
import warnings

if os.environ.get("NUMBASCAN_TEST_GPU") != "1":          # conftest.py does this first
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pytest
import scipy.linalg
import scipy.special

import numbascan as ns
import numbascan.lax as nlax
from conftest import assert_close, assert_same
from numbascan.loop.args import ScanError, default_mode
from numbascan.runtime.fallback import UntracedStepWarning
from numbascan.runtime.program import run_traced
from numbascan.trace import alternatives
from numbascan.trace.numpy_api import HANDLERS
from numbascan.trace.program import trace_program
from numbascan.trace.tracer import TracingError

MODES = ["cpu", "python", "cuda"]
JAX_PHRASES = ["ns.scan follows Theano's order",
               "scan(fn, sequences, outputs_info, non_sequences, ...)",
               "f(carry, x) -> (carry, y) is JAX's convention",
               "numbascan.lax.scan(f, init, xs)",
               "ns.scan(fn, sequences=xs, outputs_info=[init, None]) with fn(x, carry)"]


def same_error(exc, call, phrases=(), absent=()):
    """call(mode) raises `exc` in every mode, with one message (no warning about tracing)
    that contains each of `phrases` and none of `absent`; -> the message."""
    messages = set()
    for mode in MODES:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UntracedStepWarning)
            with pytest.raises(exc) as info:
                call(mode)
        assert isinstance(info.value, (ValueError, TypeError))
        messages.add(str(info.value))
    assert len(messages) == 1, messages
    message = messages.pop()
    for p in phrases:
        assert p in message, (p, message)
    for p in absent:
        assert p not in message, (p, message)
    return message


@pytest.fixture
def data(rng):
    init = rng.standard_normal(2)
    xs = rng.standard_normal((3, 2))
    return init, xs


def jax_reference(init, xs):
    """JAX's scan of f(carry, x) = (carry + x, carry), in a NumPy loop."""
    carry, ys = init, []
    for x in xs:
        carry, y = carry + x, carry
        ys.append(y)
    return carry, np.stack(ys)


# -- 1. JAX's positional call --------------------------------------------------------------------

def test_jax_call_names_theanos_order_and_numbascan_lax(data):
    init, xs = data
    message = same_error(ValueError, lambda mode: ns.scan(
        lambda c, x: (c + x, c), init, xs, mode=mode),
        ["fn returned 2 output(s) but outputs_info has 1 entries", *JAX_PHRASES])
    assert message.startswith("fn returned 2 output(s)")
    with pytest.raises(ScanError):                     # the type it had before
        ns.scan(lambda c, x: (c + x, c), init, xs, mode="python")


def test_jax_call_whose_y_is_none_gets_the_same_message(data):
    """JAX's `return carry, None`: the count of outputs speaks first, not the None."""
    init, xs = data
    same_error(ValueError, lambda mode: ns.scan(lambda c, x: (c + x, None), init, xs,
                                                mode=mode), JAX_PHRASES)


def test_jax_call_with_a_tuple_carry(rng):
    h0, c0, xs = rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal((3, 2))
    same_error(TypeError, lambda mode: ns.scan(
        lambda carry, x: ((carry[0] + x, carry[1]), x), (h0, c0), xs, mode=mode),
        ["scan calls the step with 3 argument(s)", *JAX_PHRASES])


def test_jax_call_with_a_dict_carry(rng):
    h0, xs = rng.standard_normal(2), rng.standard_normal((3, 2))
    same_error(ValueError, lambda mode: ns.scan(
        lambda carry, x: ({"h": carry["h"] + x}, x), {"h": h0}, xs, mode=mode),
        ["sequences[0]: expected dict(input=array, taps=[...]), found keys ['h']",
         *JAX_PHRASES])


def test_jax_call_with_a_scalar_init_points_to_numbascan_lax(rng):
    init, xs = np.array(0.5), rng.standard_normal(3)
    same_error(ValueError, lambda mode: ns.scan(lambda c, x: (c + x, c), init, xs, mode=mode),
               ["sequences[0]", "0-d", "not JAX's (f, init, xs)",
                "ns.scan(fn, sequences=xs, outputs_info=init) with fn(x, carry)",
                "numbascan.lax.scan(f, init, xs)"])


def test_theano_calls_with_lists_get_no_jax_hint(data):
    """A Theano call (lists, keywords) that returns one output too many is told so, without
    JAX's name."""
    init, xs = data
    same_error(ValueError, lambda mode: ns.scan(
        lambda x, h: (h + x, h), sequences=[xs], outputs_info=[init], mode=mode),
        ["fn returned 2 output(s) but outputs_info has 1 entries"], absent=["JAX", "lax"])
    same_error(TypeError, lambda mode: ns.scan(
        lambda x, h: h + x, sequences=[xs, xs], outputs_info=[init], mode=mode),
        ["scan calls the step with 3 argument(s)"], absent=["JAX", "lax"])


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_the_fixes_the_message_gives_work(data, mode):
    init, xs = data
    carry, ys = jax_reference(init, xs)
    got_carry, got_ys = nlax.scan(lambda c, x: (c + x, c), init, xs, mode=mode)
    assert_close(got_carry, carry)
    assert_close(got_ys, ys)
    (carries, theano_ys), _ = ns.scan(lambda x, c: (c + x, c), sequences=xs,
                                      outputs_info=[init, None], mode=mode)
    assert_close(carries[-1], carry)
    assert_close(theano_ys, ys)


# -- 2. a tuple of states in outputs_info ----------------------------------------------------------

TUPLE_PHRASES = ["outputs_info: expected a list with one entry per output (an array, a dict with "
                 "'initial'/'taps', or None), found a tuple of 2 entries",
                 "numbascan.lax.scan(f, init, xs)", "pytree"]


def test_a_tuple_of_states_for_a_step_of_one_state(rng):
    xs, s0 = rng.standard_normal((3, 2)), rng.standard_normal(2)
    same_error(TypeError, lambda mode: ns.scan(
        lambda x, c: c + x, sequences=xs, outputs_info=(s0, s0), mode=mode),
        ["scan calls the step with 3 argument(s)", *TUPLE_PHRASES])


def test_a_tuple_of_states_with_a_step_returning_fewer_outputs(rng):
    xs, s0 = rng.standard_normal((3, 2)), rng.standard_normal(2)
    same_error(ValueError, lambda mode: ns.scan(
        lambda x, *states: states[0] + x, sequences=xs, outputs_info=(s0, s0), mode=mode),
        ["fn returned 1 output(s) but outputs_info has 2 entries", *TUPLE_PHRASES])


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_a_tuple_of_states_is_still_theanos_list(rng, mode):
    """Theano reads a tuple outputs_info as its list (SPEC section 1): one state per entry."""
    xs, a0, b0 = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal(2)

    def step(x, a, b):
        return a + x, 0.5 * b

    (a_t, b_t), _ = ns.scan(step, sequences=xs, outputs_info=(a0, b0), mode=mode)
    (a_l, b_l), _ = ns.scan(step, sequences=xs, outputs_info=[a0, b0], mode=mode)
    assert_same(a_t, a_l)
    assert_same(b_t, b_l)
    assert_close(a_t, a0 + np.cumsum(xs, axis=0))
    assert_close(b_t, b0 * 0.5 ** np.arange(1, 4)[:, None])


def test_a_tuple_entry_points_to_numbascan_lax(rng):
    h0, c0 = rng.standard_normal(2), rng.standard_normal(2)
    same_error(ValueError, lambda mode: ns.scan(
        lambda a, b: (a, b), outputs_info=[(h0, c0)], n_steps=2, mode=mode),
        ["outputs_info[0]: expected one initial state (an array) per output, found a tuple",
         "numbascan.lax.scan(f, init, xs) carries it whole"])


def test_a_dict_of_states_points_to_numbascan_lax(rng):
    h0, c0 = rng.standard_normal(2), rng.standard_normal(2)
    same_error(ValueError, lambda mode: ns.scan(
        lambda s: s, outputs_info=[{"h": h0, "c": c0}], n_steps=2, mode=mode),
        ["outputs_info[0]: unknown keys ['c', 'h']; expected dict(initial=..., taps=[...])",
         "numbascan.lax.scan(f, init, xs) carries it whole"])


# -- 3. operations numbascan cannot trace ----------------------------------------------------------

def kf_step(y, P, A):
    return P + np.linalg.pinv(A) @ np.outer(y, y)


def loss(A, ys):
    Ps, _ = ns.scan(kf_step, sequences=ys, outputs_info=np.eye(2), non_sequences=A)
    return Ps.sum()


PINV_PHRASES = ["cannot trace np.linalg.pinv in step function 'kf_step' in function 'loss'",
                "instead, use np.linalg.solve(A, b) when A is square and invertible",
                "np.linalg.solve(A.T @ A, A.T @ b)"]
INTERNALS = ["<locals>", "build", "value_and_grad_f", "'column", "'row", "'jac", "'grad_f"]


@pytest.mark.parametrize("transform, label", [
    (ns.grad, "ns.grad(loss)"), (ns.value_and_grad, "ns.value_and_grad(loss)"),
    (ns.jacfwd, "ns.jacfwd(loss)"), (ns.jacrev, "ns.jacrev(loss)"),
    (ns.hessian, "ns.jacrev(loss) in ns.hessian(loss)")])
@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_an_untraced_operation_under_a_derivative(rng, monkeypatch, transform, label, mode):
    """The user's report: the chain names the step, the user's function and the
    transformation, never numbascan's closures, and says what to use instead."""
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    A, ys = rng.standard_normal((2, 2)) + 3 * np.eye(2), rng.standard_normal((3, 2))
    with pytest.raises(TracingError) as info:
        transform(loss)(A, ys)
    message = str(info.value)
    for p in PINV_PHRASES + [f"in function 'loss' in {label}:"]:
        assert p in message, (p, message)
    for p in INTERNALS:
        assert p not in message, (p, message)


def test_jvp_and_vjp_name_the_users_function(rng):
    A, ys = rng.standard_normal((2, 2)) + 3 * np.eye(2), rng.standard_normal((3, 2))
    for call, where in [(lambda: ns.jvp(loss, (A, ys), (A, ys)), "in function 'loss' in "
                                                                 "ns.jvp(loss):"),
                        (lambda: ns.vjp(loss, A, ys), "in step function 'kf_step' in "
                                                      "ns.vjp(loss):")]:
        with pytest.raises(TracingError) as info:
            call()
        assert where in str(info.value)
        assert not any(p in str(info.value) for p in INTERNALS), str(info.value)


def test_an_untraced_operation_in_every_mode(rng):
    """ns.jit (cpu, python: its traced program) and a cuda scan refuse the step with the same
    advice; an eager cpu scan still runs it forward, warning with its name."""
    A, ys = rng.standard_normal((2, 2)) + 3 * np.eye(2), rng.standard_normal((3, 2))
    with pytest.raises(TracingError, match="in function 'loss':") as info:
        ns.jit(loss)(A, ys)
    assert all(p in str(info.value) for p in PINV_PHRASES)
    with pytest.raises(TracingError) as info:
        run_traced(loss, [A, ys], interpret=True)
    assert all(p in str(info.value) for p in PINV_PHRASES)
    with pytest.raises(TracingError) as info:
        ns.scan(kf_step, sequences=ys, outputs_info=np.eye(2), non_sequences=A, mode="cuda")
    assert "cannot trace np.linalg.pinv in step function 'kf_step'" in str(info.value)
    assert "instead, use np.linalg.solve(A, b)" in str(info.value)
    expected, _ = ns.scan(kf_step, sequences=ys, outputs_info=np.eye(2), non_sequences=A,
                          mode="python")
    with pytest.warns(UntracedStepWarning, match=r"'kf_step' \(np.linalg.pinv\)"):
        got, _ = ns.scan(kf_step, sequences=ys, outputs_info=np.eye(2), non_sequences=A,
                         mode="cpu")
    assert_close(got, expected)


def test_compile_records_name_the_transformation(rng, caplog):
    caplog.set_level(logging.INFO, logger="numbascan")

    def loglik(w):
        return -0.5 * (w * w * 1.3125).sum()     # a constant of its own: a fresh trace

    w = rng.standard_normal(3)
    assert_close(ns.grad(loglik)(w), -1.3125 * w)
    records = [r for r in caplog.records if getattr(r, "numbascan_event", None)]
    traced = [r.numbascan_what for r in records if r.numbascan_event == "trace"]
    compiled = [r.getMessage() for r in records if r.numbascan_event == "compile"]
    assert "ns.grad(loglik)" in traced, traced
    assert any("ns.grad(loglik)" in m for m in compiled), compiled
    assert not any("<locals>" in m or "build" in m for m in traced + compiled)


# Each operation of alternatives.ALTERNATIVES, called on traced values x (a vector) and A
# (a square matrix).
OPS = {
    "np.linalg.pinv": lambda x, A: np.linalg.pinv(A) @ x,
    "np.linalg.lstsq": lambda x, A: np.linalg.lstsq(A, x)[0],
    "np.linalg.svd": lambda x, A: np.linalg.svd(A)[1],
    "np.linalg.svdvals": lambda x, A: np.linalg.svdvals(A),
    "np.linalg.eig": lambda x, A: np.linalg.eig(A)[0],
    "np.linalg.eigvals": lambda x, A: np.linalg.eigvals(A),
    "np.linalg.qr": lambda x, A: np.linalg.qr(A)[1],
    "np.linalg.matrix_power": lambda x, A: np.linalg.matrix_power(A, 3),
    "scipy.linalg.inv": lambda x, A: scipy.linalg.inv(A),
    "scipy.linalg.solve": lambda x, A: scipy.linalg.solve(A, x),
    "scipy.linalg.det": lambda x, A: scipy.linalg.det(A),
    "scipy.linalg.cholesky": lambda x, A: scipy.linalg.cholesky(A),
    "scipy.linalg.cho_factor": lambda x, A: scipy.linalg.cho_factor(A)[0],
    "scipy.linalg.lu_factor": lambda x, A: scipy.linalg.lu_factor(A)[0],
    "scipy.linalg.lu": lambda x, A: scipy.linalg.lu(A)[0],
    "scipy.linalg.qr": lambda x, A: scipy.linalg.qr(A)[1],
    "scipy.linalg.lu_solve": lambda x, A: scipy.linalg.lu_solve((A, np.arange(2)), x),
    "scipy.linalg.pinv": lambda x, A: scipy.linalg.pinv(A),
    "scipy.linalg.lstsq": lambda x, A: scipy.linalg.lstsq(A, x)[0],
    "scipy.linalg.svd": lambda x, A: scipy.linalg.svd(A)[1],
    "scipy.linalg.svdvals": lambda x, A: scipy.linalg.svdvals(A),
    "scipy.linalg.eig": lambda x, A: scipy.linalg.eig(A)[0],
    "scipy.linalg.eigvals": lambda x, A: scipy.linalg.eigvals(A),
    "scipy.linalg.eigh": lambda x, A: scipy.linalg.eigh(A)[0],
    "scipy.linalg.eigvalsh": lambda x, A: scipy.linalg.eigvalsh(A),
    "np.unique": lambda x, A: np.unique(x),
    "np.nonzero": lambda x, A: np.nonzero(x)[0],
    "np.argwhere": lambda x, A: np.argwhere(x),
    "np.flatnonzero": lambda x, A: np.flatnonzero(x),
    "np.extract": lambda x, A: np.extract(x > 0, x),
    "np.compress": lambda x, A: np.compress(x > 0, x),
    "np.where with one argument": lambda x, A: np.where(x > 0)[0],
    "np.append": lambda x, A: np.append(x, x),
    "np.insert": lambda x, A: np.insert(x, 1, 0.0),
    "np.delete": lambda x, A: np.delete(x, 1),
    "np.pad": lambda x, A: np.pad(x, 1),
    "np.tile": lambda x, A: np.tile(x, 2),
    "np.repeat": lambda x, A: np.repeat(x, 2),
    "np.diff": lambda x, A: np.diff(x),
    "np.vectorize": lambda x, A: np.vectorize(lambda v: 2 * v)(x),
    "np.round": lambda x, A: np.round(x),
    "np.around": lambda x, A: np.around(x),
    "np.rint": lambda x, A: np.rint(x),
    "np.trunc": lambda x, A: np.trunc(x),
    "np.fix": lambda x, A: np.fix(x),
    "np.log2": lambda x, A: np.log2(x),
    "np.log10": lambda x, A: np.log10(x),
    "np.exp2": lambda x, A: np.exp2(x),
    "np.cbrt": lambda x, A: np.cbrt(x),
    "np.hypot": lambda x, A: np.hypot(x, x),
    "np.logaddexp": lambda x, A: np.logaddexp(x, x),
    "np.isclose": lambda x, A: np.isclose(x, x),
    "np.allclose": lambda x, A: np.allclose(x, x),
    "np.nan_to_num": lambda x, A: np.nan_to_num(x),
    "np.count_nonzero": lambda x, A: np.count_nonzero(x),
    "np.var": lambda x, A: np.var(x),
    "np.std": lambda x, A: np.std(x),
    "np.average": lambda x, A: np.average(x, weights=x),
    "np.median": lambda x, A: np.median(x),
    "np.cumprod": lambda x, A: np.cumprod(x),
    "np.trapezoid": lambda x, A: np.trapezoid(x),
    "scipy.special.softmax": lambda x, A: scipy.special.softmax(x),
    "scipy.special.log_softmax": lambda x, A: scipy.special.log_softmax(x),
    "scipy.special.erfc": lambda x, A: scipy.special.erfc(x),
    "scipy.special.ndtr": lambda x, A: scipy.special.ndtr(x),
    "scipy.special.log_ndtr": lambda x, A: scipy.special.log_ndtr(x),
    "scipy.special.log_expit": lambda x, A: scipy.special.log_expit(x),
    "scipy.special.xlogy": lambda x, A: scipy.special.xlogy(x, x),
    "scipy.special.xlog1py": lambda x, A: scipy.special.xlog1py(x, x),
}
RNG = np.random.default_rng(7)
RANDOM_OPS = {
    "np.random.normal": lambda x, A: x + np.random.normal(size=2),
    "np.random.uniform": lambda x, A: np.random.uniform(x, 2.0),
    "np.random.default_rng": lambda x, A: x + np.random.default_rng(0).normal(size=2),
    "np.random.Generator.normal": lambda x, A: x + RNG.normal(size=2),
}


def traced(f):
    return f in HANDLERS


def _refusal(call, op):
    x, A = np.array([0.5, -1.5]), np.array([[2.0, 0.5], [0.5, 1.0]])
    with pytest.raises(TracingError) as info:
        trace_program(call, [x, A])
    message = str(info.value)
    assert message.startswith(f"cannot trace {op} in function "), message
    return message


@pytest.mark.parametrize("op", sorted(alternatives.ALTERNATIVES))
def test_each_untraced_operation_says_what_to_use_instead(op):
    assert set(OPS) == set(alternatives.ALTERNATIVES)
    message = _refusal(OPS[op], op)
    shown = alternatives.alternatives(op, traced)
    assert shown, op
    assert message.endswith(": instead, use " + ", or ".join(a.text for a in shown)), message


@pytest.mark.parametrize("op", sorted(RANDOM_OPS))
def test_numpy_random_draws_point_to_random_streams(op):
    """NumPy's draws in traced code would be constants (the same at every step): refused."""
    message = _refusal(RANDOM_OPS[op], op)
    assert "instead, use an ns.RandomStreams(seed)" in message
    assert "fresh at every step and the same numbers in every mode" in message


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_a_numpy_draw_in_a_step_is_fresh_at_every_step(mode):
    """It used to become a constant of the trace in mode "cpu" (every row the same); it runs
    untraced now, drawing at every step as in mode "python"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntracedStepWarning)
        out, _ = ns.scan(lambda x: x + np.random.uniform(1.0, 2.0, size=2),
                         sequences=np.zeros((4, 2)), mode=mode)
    assert out.shape == (4, 2) and np.all((out >= 1.0) & (out < 2.0))
    assert len({tuple(row) for row in out}) == 4


def test_a_library_conversion_of_a_tracer_names_the_likely_cause():
    vectorized = np.vectorize(lambda v: 2 * v)        # made outside the traced function

    def f(x, A):
        return vectorized(x)
    message = _refusal(f, "np.vectorize")
    assert "instead, use whole-array operations" in message
    with pytest.raises(TracingError, match="np.vectorize, np.random's, most of SciPy's"):
        trace_program(lambda x: np.asarray(x.__array__()), [np.ones(2)])


# -- every alternative a message shows is traced, and computes what it says ---------------------

R = np.random.default_rng(11)
A = R.standard_normal((3, 3)) + 3.0 * np.eye(3)        # well conditioned, not symmetric
S = A @ A.T + np.eye(3)                                # symmetric positive definite
M = R.standard_normal((5, 3))                          # full column rank
y5, b3, x6 = R.standard_normal(5), R.standard_normal(3), R.standard_normal(6)
POS = R.uniform(0.5, 2.0, 6)
IDX = np.array([0.0, 1.5, 0.0, 2.0])                   # x of xlogy and xlog1py, with zeros
YS = np.array([0.0, 0.5, -1.0, 3.0])


def alt(op, k=0):
    return alternatives.alternatives(op, traced)[k].text


def _signs(R_):
    return R_ * np.sign(np.diag(R_))[:, None]


def _fresh_scan_product(v):
    ps, _ = ns.scan(lambda vi, p: p * vi, sequences=v, outputs_info=np.float64(1.0))
    return ps


# text of an alternative -> (traced function, its arguments, what it must equal)
EXAMPLES = {
    alt("np.linalg.pinv", 0): (lambda A, b: np.linalg.solve(A, b), (A, b3),
                               np.linalg.pinv(A) @ b3),
    alt("np.linalg.pinv", 1): (lambda M, y: np.linalg.solve(M.T @ M, M.T @ y), (M, y5),
                               np.linalg.lstsq(M, y5)[0]),
    alt("np.linalg.lstsq", 1): (
        lambda M, y: scipy.linalg.cho_solve((np.linalg.cholesky(M.T @ M), True), M.T @ y),
        (M, y5), np.linalg.lstsq(M, y5)[0]),
    alt("np.linalg.svd", 0): (lambda A: np.sqrt(np.maximum(np.linalg.eigh(A.T @ A)[0], 0.0)),
                              (A,), np.sort(np.linalg.svd(A, compute_uv=False))),
    alt("np.linalg.svd", 1): (lambda A: np.linalg.norm(A, 2), (A,),
                              np.linalg.svd(A, compute_uv=False).max()),
    alt("np.linalg.svd", 2): (lambda A: np.linalg.slogdet(A)[1], (A,),
                              np.log(np.prod(np.linalg.svd(A, compute_uv=False)))),
    alt("np.linalg.eig", 0): (lambda S: (np.linalg.eigh(S)[0],
                                         S @ np.linalg.eigh(S)[1] -
                                         np.linalg.eigh(S)[1] * np.linalg.eigh(S)[0]), (S,),
                              (np.sort(np.linalg.eig(S)[0].real), np.zeros((3, 3)))),
    alt("np.linalg.eigvals", 0): (lambda S: np.linalg.eigh(S)[0], (S,),
                                  np.sort(np.linalg.eigvals(S).real)),
    alt("np.linalg.qr", 1): (lambda M: np.linalg.cholesky(M.T @ M).T, (M,),
                             _signs(np.linalg.qr(M)[1])),
    alt("np.linalg.matrix_power", 0): (
        lambda A: (A @ A @ A, nlax.fori_loop(0, 3, lambda i, P: P @ A, np.eye(3))), (A,),
        (np.linalg.matrix_power(A, 3),) * 2),
    alt("scipy.linalg.inv"): (lambda A: np.linalg.inv(A), (A,), scipy.linalg.inv(A)),
    alt("scipy.linalg.solve"): (lambda A, b: np.linalg.solve(A, b), (A, b3),
                                scipy.linalg.solve(A, b3)),
    alt("scipy.linalg.det"): (lambda A: np.linalg.det(A), (A,), scipy.linalg.det(A)),
    alt("scipy.linalg.cholesky"): (lambda S: (np.linalg.cholesky(S).T, np.linalg.cholesky(S)),
                                   (S,), (scipy.linalg.cholesky(S),
                                          scipy.linalg.cholesky(S, lower=True))),
    alt("scipy.linalg.cho_factor"): (
        lambda S, b: scipy.linalg.cho_solve((np.linalg.cholesky(S), True), b), (S, b3),
        scipy.linalg.cho_solve(scipy.linalg.cho_factor(S), b3)),
    alt("scipy.linalg.lu_factor"): (lambda A, b: np.linalg.solve(A, b), (A, b3),
                                    scipy.linalg.lu_solve(scipy.linalg.lu_factor(A), b3)),
    alt("scipy.linalg.lu_solve"): (lambda A, b: np.linalg.solve(A, b), (A, b3),
                                   scipy.linalg.lu_solve(scipy.linalg.lu_factor(A), b3)),
    alt("scipy.linalg.eigh"): (lambda S: np.linalg.eigh(S)[0], (S,), scipy.linalg.eigh(S)[0]),
    alt("scipy.linalg.eigvalsh"): (lambda S: np.linalg.eigvalsh(S), (S,),
                                   scipy.linalg.eigvalsh(S)),
    alt("np.unique"): (lambda x: (np.where(x > 0, x, 0.0).sum(), np.sum(x > 0)), (x6,),
                       (x6[x6 > 0].sum(), np.count_nonzero(x6 > 0))),
    alt("np.append"): (lambda x: (np.concatenate([x, x[:2]]),
                                  np.concatenate([x[:1], x[:2], x[1:]]),
                                  np.concatenate([x[:1], x[1 + 1:]])), (x6,),
                       (np.append(x6, x6[:2]), np.insert(x6, 1, x6[:2]), np.delete(x6, 1))),
    alt("np.pad"): (lambda x: np.concatenate([np.zeros(2), x, np.zeros(2)]), (x6,),
                    np.pad(x6, 2)),
    alt("np.tile"): (lambda x: np.broadcast_to(x, (3, 6)).reshape(-1), (x6,), np.tile(x6, 3)),
    alt("np.repeat"): (lambda x: np.broadcast_to(x[:, None], (6, 3)).reshape(-1), (x6,),
                       np.repeat(x6, 3)),
    alt("np.diff"): (lambda x, A: (x[1:] - x[:-1], A[..., 1:] - A[..., :-1]), (x6, A),
                     (np.diff(x6), np.diff(A))),
    alt("np.vectorize"): (lambda x: np.where(x > 0, 2.0 * x, -x), (x6,),
                          np.vectorize(lambda v: 2.0 * v if v > 0 else -v)(x6)),
    alt("np.round"): (lambda x: (np.floor(x + 0.5), np.floor(np.array([0.5, 1.5, 2.5]) + 0.5)),
                      (x6,), (np.round(x6), np.array([1.0, 2.0, 3.0]))),
    alt("np.trunc"): (lambda x: np.where(x < 0, np.ceil(x), np.floor(x)), (x6,),
                      np.trunc(x6)),
    alt("np.log2"): (lambda x: np.log(x) / np.log(2.0), (POS,), np.log2(POS)),
    alt("np.log10"): (lambda x: np.log(x) / np.log(10.0), (POS,), np.log10(POS)),
    alt("np.exp2"): (lambda x: 2.0 ** x, (x6,), np.exp2(x6)),
    alt("np.cbrt"): (lambda x: np.sign(x) * np.abs(x) ** (1.0 / 3.0), (x6,), np.cbrt(x6)),
    alt("np.hypot"): (lambda x, y: np.sqrt(x ** 2 + y ** 2), (x6, POS), np.hypot(x6, POS)),
    alt("np.logaddexp"): (lambda a, b: np.maximum(a, b) + np.log1p(np.exp(-np.abs(a - b))),
                          (x6, 10 * POS), np.logaddexp(x6, 10 * POS)),
    alt("np.isclose"): (lambda a, b: np.abs(a - b) <= 1e-8 + 1e-5 * np.abs(b),
                        (x6, x6 + np.where(POS > 1, 1e-9, 1e-3)),
                        np.isclose(x6, x6 + np.where(POS > 1, 1e-9, 1e-3))),
    alt("np.allclose"): (lambda a, b: np.all(np.abs(a - b) <= 1e-8 + 1e-5 * np.abs(b)),
                         (x6, x6 + 1e-9), np.allclose(x6, x6 + 1e-9)),
    alt("np.nan_to_num"): (lambda x: np.where(np.isnan(x), 0.0, x),
                           (np.where(POS > 1, np.nan, x6),),
                           np.nan_to_num(np.where(POS > 1, np.nan, x6))),
    alt("np.count_nonzero"): (lambda x: np.sum(x != 0), (IDX,), np.count_nonzero(IDX)),
    alt("np.var"): (lambda A: np.mean((A - np.mean(A, 0, keepdims=True)) ** 2, 0), (A,),
                    np.var(A, axis=0)),
    alt("np.std"): (lambda A: np.sqrt(np.mean((A - np.mean(A, 1, keepdims=True)) ** 2, 1)),
                    (A,), np.std(A, axis=1)),
    alt("np.average"): (lambda w, x: np.sum(w * x, 0) / np.sum(w, 0), (POS, x6),
                        np.average(x6, weights=POS)),
    alt("np.median"): (lambda x, y: (np.sort(x)[6 // 2 - 1] / 2 + np.sort(x)[6 // 2] / 2,
                                     np.sort(y)[5 // 2]), (x6, y5),
                       (np.median(x6), np.median(y5))),
    alt("np.cumprod"): (lambda x: (np.exp(np.cumsum(np.log(x))), _fresh_scan_product(x)),
                        (POS,), (np.cumprod(POS),) * 2),
    alt("np.trapezoid"): (lambda x, y: 0.5 * np.sum((y[1:] + y[:-1]) * (x[1:] - x[:-1])),
                          (np.cumsum(POS), x6), np.trapezoid(x6, np.cumsum(POS))),
    alt("scipy.special.softmax"): (
        lambda x: np.exp(x - scipy.special.logsumexp(x, axis=-1, keepdims=True)), (A,),
        scipy.special.softmax(A, axis=-1)),
    alt("scipy.special.log_softmax"): (
        lambda x: x - scipy.special.logsumexp(x, axis=-1, keepdims=True), (A,),
        scipy.special.log_softmax(A, axis=-1)),
    alt("scipy.special.erfc"): (lambda x: 1.0 - scipy.special.erf(x), (x6,),
                                scipy.special.erfc(x6)),
    alt("scipy.special.ndtr"): (lambda x: 0.5 * (1.0 + scipy.special.erf(x / np.sqrt(2.0))),
                                (x6,), scipy.special.ndtr(x6)),
    alt("scipy.special.log_ndtr"): (
        lambda x: np.log(0.5 * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))), (x6,),
        scipy.special.log_ndtr(x6)),
    alt("scipy.special.log_expit"): (
        lambda x: np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x))), (10 * x6,),
        scipy.special.log_expit(10 * x6)),
    alt("scipy.special.xlogy"): (lambda x, y: x * np.log(np.where(x == 0, 1.0, y)),
                                 (IDX, np.abs(YS)), scipy.special.xlogy(IDX, np.abs(YS))),
    alt("scipy.special.xlog1py"): (lambda x, y: x * np.log1p(np.where(x == 0, 0.0, y)),
                                   (IDX, YS), scipy.special.xlog1py(IDX, YS)),
}


def _shown():
    texts = {a.text for op in alternatives.ALTERNATIVES
             for a in alternatives.alternatives(op, traced)}
    return sorted(texts)


def test_every_alternative_shown_has_an_example():
    assert set(EXAMPLES) == set(_shown())
    # eigh is traced: the messages of svd and eig show it
    assert traced(np.linalg.eigh) and any("eigh" in t for t in _shown())


@pytest.mark.parametrize("text", _shown(), ids=lambda text: text[:48])
def test_each_alternative_is_traced_and_computes_what_it_says(text):
    fn, args, expected = EXAMPLES[text]
    trace_program(fn, list(args))                     # a TracingError would fail the test
    got = run_traced(fn, list(args), interpret=True)
    if isinstance(expected, tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_close(g, e, text, rtol=1e-10, atol=1e-12)
    else:
        assert_close(got, expected, text, rtol=1e-10, atol=1e-12)


def test_the_random_streams_alternative_is_traced_and_the_same_in_every_mode():
    def draws(x):
        def step(x_t):
            return (x_t + rng.normal(size=2, avg=1.0, std=2.0) +
                    rng.uniform(size=2, low=-1.0, high=1.0) +
                    rng.binomial(size=2, n=3, p=0.5))
        out, _ = ns.scan(step, sequences=x)
        return out

    xs = np.zeros((3, 2))
    rng = ns.RandomStreams(5)
    trace_program(draws, [xs])
    interpreted = run_traced(draws, [xs], interpret=True)
    rng = ns.RandomStreams(5)
    with default_mode("python"):
        eager = draws(xs)
    assert_close(interpreted, eager)
    assert len({tuple(r) for r in eager}) == 3              # fresh at every step


# -- 4. reductions with dtype= ---------------------------------------------------------------------

def reductions(x):
    return (np.sum(x, dtype=np.int32), np.sum(x, axis=1, dtype=np.int32),
            x.sum(axis=0, dtype=np.int32), np.prod(x, dtype=np.int32),
            x.prod(axis=1, dtype=np.int32), np.cumsum(x, dtype=np.int32),
            np.cumsum(x, axis=0, dtype=np.int32), np.sum(x, dtype=np.int8),
            np.sum(x, dtype=np.float32), np.sum(x), np.mean(x, dtype=np.float32))


def test_reductions_keep_the_dtype_asked_for(rng):
    """cpu (compiled) and python (interpreted) against NumPy, dtypes included, with sums and
    products that wrap around in int32 and int8 as NumPy's do."""
    x = rng.integers(-2**30, 2**30, size=(3, 4)).astype(np.int32)
    expected = reductions(x)
    for got in (ns.jit(reductions)(x), run_traced(reductions, [x], interpret=True)):
        for k, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, f"reduction {k}")


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_a_state_summed_with_dtype_keeps_its_dtype(rng, mode):
    """A step's np.sum(x, dtype=np.int32) is an int32 state (it was int64, an error naming
    the dtypes, in mode "cpu" only)."""
    xs = rng.integers(-100, 100, size=(4, 3)).astype(np.int32)
    out, _ = ns.scan(lambda x, s: s + np.sum(x, dtype=np.int32), sequences=xs,
                     outputs_info=np.int32(0), mode=mode)
    assert_same(out, np.cumsum(xs.sum(axis=1, dtype=np.int32), dtype=np.int32))


def test_rows_of_an_until_scan_reduced_along_either_axis(rng):
    """With dtype=, and along a later axis (which keeps the rows that ran: it used to be an
    error about broadcasting)."""
    def f(x):
        rows, _ = ns.scan(lambda v: (v, ns.until(v.sum() > 150)), sequences=x)
        return (rows.sum(axis=0, dtype=np.int32), rows.sum(axis=1, dtype=np.int32),
                rows.mean(axis=1), np.argmax(rows, axis=1), rows.max(axis=1))

    x = rng.integers(0, 50, size=(6, 3)).astype(np.int32)     # rows summing to under 150
    x[3] += 60                                                  # but this one: it stops there
    ran = x[:4]
    expected = (ran.sum(axis=0, dtype=np.int32), ran.sum(axis=1, dtype=np.int32),
                ran.mean(axis=1), np.argmax(ran, axis=1), ran.max(axis=1))
    for got in (ns.jit(f)(x), run_traced(f, [x], interpret=True)):
        for g, e in zip(got, expected):
            assert_same(g, e)


# -- 5. ns.vmap over steps of linear algebra -------------------------------------------------------

def kalman_loglik(ys, Sigma, P0):
    """A Kalman-like recursion: Cholesky, log-determinant and solves in every step."""
    def step(y, P, ll):
        C = P + Sigma
        L = np.linalg.cholesky(C)
        _, logdet = np.linalg.slogdet(C)
        z = np.linalg.solve(C, y)
        P_new = P - P @ np.linalg.solve(C, P) + 0.5 * np.eye(3)
        return P_new, ll - 0.5 * (logdet + y @ z) + np.log(L[0, 0])
    (Ps, lls), _ = ns.scan(step, sequences=ys, outputs_info=[P0, np.float64(0.0)])
    return Ps[-1], lls[-1]


def test_vmap_of_a_scan_with_linear_algebra_in_its_step(rng, monkeypatch):
    batch, steps, n = 3, 4, 3
    ys = rng.standard_normal((batch, steps, n))
    F = rng.standard_normal((batch, n, n))
    Sigma = F @ np.transpose(F, (0, 2, 1)) + n * np.eye(n)
    P0 = np.eye(n) + 0.1 * np.ones((n, n))
    batched = ns.vmap(kalman_loglik, in_axes=(0, 0, None))
    got = batched(ys, Sigma, P0)
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    loop = [kalman_loglik(ys[k], Sigma[k], P0) for k in range(batch)]
    python = batched(ys, Sigma, P0)
    monkeypatch.delenv("NUMBASCAN_MODE")
    for i, what in enumerate(("last P", "log-likelihood")):
        expected = np.stack([np.asarray(r[i]) for r in loop])
        assert_close(got[i], expected, f"cpu: {what}")
        assert_close(python[i], expected, f"python: {what}")
    # the NumPy recursion itself, for one batch element
    P, ll = P0, 0.0
    for y in ys[1]:
        C = P + Sigma[1]
        ll = ll - 0.5 * (np.linalg.slogdet(C)[1] + y @ np.linalg.solve(C, y)) + \
            np.log(np.linalg.cholesky(C)[0, 0])
        P = P - P @ np.linalg.solve(C, P) + 0.5 * np.eye(n)
    assert_close(got[0][1], P, "NumPy: last P", rtol=1e-11)
    assert_close(got[1][1], ll, "NumPy: log-likelihood", rtol=1e-11)
