"""SPEC section 6, misuse that used to slip through or mislead: every case raises the same
exception, with the same message, in the compiled ("cpu") and reference ("python") modes; the
message names the argument, what was expected and what was found; nothing passed in changes.

Sizes are tiny (the steps compile once each); huge `n_steps` are checked before anything is
allocated or run.
"""
import warnings

import numpy as np
import pytest

import numbascan as ns
from numbascan.runtime import cuda as cuda_driver
from numbascan.runtime.fallback import UntracedStepWarning

MODES = ["cpu", "python"]


class Inputs:
    """Copies of the arrays given to a call, to check that they were left untouched."""

    def __init__(self, *arrays):
        self.arrays = arrays
        self.copies = [np.array(a, copy=True) for a in arrays]

    def check(self):
        for a, c in zip(self.arrays, self.copies):
            a = np.asarray(a)
            assert a.dtype == c.dtype and a.shape == c.shape
            np.testing.assert_array_equal(a, c)


def error_in(mode, exc, pattern, call, *arrays):
    """call(mode) raises `exc` matching `pattern`, warns nothing about tracing, and leaves
    `arrays` unchanged; returns the exception."""
    inputs = Inputs(*arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntracedStepWarning)
        with pytest.raises(exc, match=pattern) as info:
            call(mode)
    inputs.check()
    assert isinstance(info.value, (ValueError, TypeError))
    return info.value


def same_error(exc, pattern, call, *arrays):
    """The error of `error_in` in both modes: the same type and the same message."""
    errors = [error_in(mode, exc, pattern, call, *arrays) for mode in MODES]
    assert type(errors[0]) is type(errors[1])
    assert str(errors[0]) == str(errors[1])
    return errors[0]


# -- 1. huge n_steps ------------------------------------------------------------------------------

def test_huge_n_steps_is_an_error_naming_the_bytes():
    x0 = np.array(0.0)
    e = same_error(ValueError, r"n_steps.*4611686018427387904.*bytes", lambda mode: ns.scan(
        lambda h: h + 1, outputs_info=x0, n_steps=2**62, mode=mode), x0)
    assert str(2**62 * 8 + 8) in str(e)       # the rows of every step and the initial state


def test_huge_n_steps_map_output():
    x0 = np.zeros(2)
    same_error(ValueError, r"n_steps.*bytes", lambda mode: ns.scan(
        lambda h: (h + 1, h.sum()), outputs_info=[x0, None], n_steps=2**40, mode=mode), x0)


def test_n_steps_beyond_int64():
    x0 = np.array(0.0)
    same_error(ValueError, r"n_steps.*2\*\*63.*9223372036854775808", lambda mode: ns.scan(
        lambda h: h + 1, outputs_info=x0, n_steps=2**63, mode=mode), x0)


@pytest.mark.parametrize("mode", MODES)
def test_huge_n_steps_keeping_the_last_state_is_not_rejected(mode):
    """What reduce/foldl run (only the last state kept) allocates no buffer of n_steps rows:
    a bound of 2**40 steps on a 1 MiB state stopped early by until runs."""
    x0 = np.zeros(2**17)

    def step(h):
        return h + 1, ns.until(h[0] >= 2)

    last, _ = ns.scan(step, outputs_info=x0, n_steps=2**40, mode=mode, _keep_last=True)
    np.testing.assert_array_equal(last, np.full(2**17, 3.0))
    with pytest.raises(ValueError, match=r"n_steps.*bytes"):
        ns.scan(step, outputs_info=x0, n_steps=2**40, mode=mode)
    np.testing.assert_array_equal(x0, np.zeros(2**17))


# -- 2. the oracle as strict as the compiled mode -------------------------------------------------

@pytest.mark.parametrize("fed_back", [True, False], ids=["state", "map"])
@pytest.mark.parametrize("step, found", [
    (lambda x: x + 1j, "complex128"),
    (lambda x: 1j, "complex"),
    (lambda x: None, "None"),
    (lambda x: "a", "str"),
], ids=["complex-op", "complex-constant", "none", "str"])
def test_non_numeric_step_result_names_the_output(step, found, fed_back):
    S, x0 = np.arange(3.0), np.array(0.0)
    if fed_back:
        def call(mode):
            return ns.scan(step, outputs_info=x0, n_steps=2, mode=mode)
    else:
        def call(mode):
            return ns.scan(step, sequences=S, mode=mode)
    same_error(TypeError, rf"output 0: the step returned .*{found}.*but scan expects a numeric",
               call, S, x0)


def test_non_numeric_second_output():
    x0 = np.zeros(2)
    same_error(TypeError, r"output 1: the step returned None", lambda mode: ns.scan(
        lambda h: (h + 1, None), outputs_info=[x0, None], n_steps=2, mode=mode), x0)


W = np.ones(2)


def _reads_global(h):
    return h + W


def test_strict_in_python_mode_rejects_a_closure_read():
    x0 = np.zeros(2)
    same_error(ValueError, r"strict=True.*'W'.*non_sequences", lambda mode: ns.scan(
        _reads_global, outputs_info=x0, n_steps=2, mode=mode, strict=True), x0, W)


def test_strict_in_python_mode_rejects_a_shared_read():
    k = ns.shared(np.ones(2))
    x0 = np.zeros(2)
    same_error(ValueError, r"strict=True.*shared variable.*non_sequences", lambda mode: ns.scan(
        lambda h: h + k, outputs_info=x0, n_steps=2, mode=mode, strict=True), x0)
    np.testing.assert_array_equal(k.get_value(), np.ones(2))


@pytest.mark.parametrize("mode", MODES)
def test_strict_step_without_captures_runs(mode):
    x0 = np.zeros(2)
    out, _ = ns.scan(lambda h, w: h + w, outputs_info=x0, non_sequences=W, n_steps=2,
                     mode=mode, strict=True)
    np.testing.assert_array_equal(out, [[1.0, 1.0], [2.0, 2.0]])


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), 2.0, [2]])
def test_checkpoint_of_the_wrong_type(bad):
    x0 = np.zeros(2)
    same_error(TypeError, r"checkpoint: expected None, a positive int or 'sqrt'.*found",
               lambda mode: ns.scan(lambda h: h + 1, outputs_info=x0, n_steps=2, mode=mode,
                                    checkpoint=bad), x0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("good", [1, np.int64(2), "sqrt", None])
def test_checkpoint_allowed_values(mode, good):
    out, _ = ns.scan(lambda h: h + 1, outputs_info=np.zeros(1), n_steps=2, mode=mode,
                     checkpoint=good)
    np.testing.assert_array_equal(out, [[1.0], [2.0]])


@pytest.mark.parametrize("bad", [0.0, (0, 1.0), True, "0", ()])
def test_argnums_of_the_wrong_type(bad):
    x = np.ones(2)
    with pytest.raises(TypeError, match=r"argnums: expected an int or a non-empty tuple of "
                                        r"ints.*found"):
        ns.grad(lambda a, b: (a * b).sum(), argnums=bad)(x, x)
    with pytest.raises(TypeError, match=r"argnums"):
        ns.jacobian(lambda a: a * 2, argnums=bad)(x)
    np.testing.assert_array_equal(x, np.ones(2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tangent", [np.ones(2, np.int64), np.array([1, 0]),
                                     np.ones(2, bool)], ids=["int64", "int", "bool"])
def test_jvp_integer_tangent(monkeypatch, mode, tangent):
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    x = np.ones(2)
    inputs = Inputs(x, tangent)
    with pytest.raises(TypeError, match=r"tangents\[0\]: expected a floating-point tangent.*"
                                        r"found ndarray of dtype (int64|bool)"):
        ns.jvp(lambda a: a * 2, (x,), (tangent,))
    inputs.check()


@pytest.mark.parametrize("mode", MODES)
def test_jvp_float_tangent_still_works(monkeypatch, mode):
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    out, tout = ns.jvp(lambda a: a * 2, (np.ones(2),), (np.ones(2),))
    np.testing.assert_array_equal(tout, [2.0, 2.0])


def test_foldl_of_a_0d_state_is_a_0d_array_in_every_mode():
    """Theano's foldl of a scalar state gives a 0-d array (SPEC 1: results are arrays)."""
    got = {}
    for mode in MODES:
        for n in (3, 0):
            last, _ = ns.foldl(lambda s, h: h + s, sequences=np.arange(float(n)),
                               outputs_info=np.array(0.0), mode=mode)
            assert type(last) is np.ndarray and last.shape == (), (mode, n, type(last))
            got[mode, n] = float(last)
    assert got["cpu", 3] == got["python", 3] == 3.0
    assert got["cpu", 0] == got["python", 0] == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_update_of_a_0d_shared_is_a_0d_array(mode):
    k = ns.shared(np.array(1.0))
    _, updates = ns.scan(lambda h: (h + 1, {k: k * 2}), outputs_info=np.array(0.0), n_steps=2,
                         mode=mode)
    assert type(updates[k]) is np.ndarray and updates[k].shape == () and updates[k] == 4.0


# -- 3. messages that mislead ---------------------------------------------------------------------

def test_jax_style_positional_call_explains_the_argument_order():
    init, xs = np.array(0.0), np.arange(3.0)
    e = same_error(ValueError, r"sequences\[0\].*0-d.*positional order.*\(fn, sequences, "
                   r"outputs_info, non_sequences, n_steps\)", lambda mode: ns.scan(
                       lambda c, x: c + x, init, xs, mode=mode), init, xs)
    assert "outputs_info=init" in str(e)            # the fix, with keywords


def test_jax_style_call_with_a_list_of_states():
    h0, c0, xs = np.zeros(2), np.array(0.0), np.ones((3, 2))
    same_error(ValueError, r"sequences\[1\].*0-d.*positional order", lambda mode: ns.scan(
        lambda a, b, x: (a, b), [h0, c0], xs, mode=mode), h0, c0, xs)


@pytest.mark.parametrize("state", [lambda: (np.zeros(2), np.zeros(2)),
                                   lambda: (np.zeros(2), np.zeros(3)),
                                   lambda: [np.zeros(2), np.zeros(2)]],
                         ids=["tuple", "ragged", "list"])
@pytest.mark.parametrize("as_dict", [False, True])
def test_tuple_state_in_outputs_info(state, as_dict):
    s = state()
    entry = dict(initial=s) if as_dict else s
    e = same_error(ValueError, r"outputs_info\[0\]: expected one initial state \(an array\) per "
                   r"output, found a (tuple|list) of 2 values.*several outputs", lambda mode:
                   ns.scan(lambda a, b: (a, b), outputs_info=[entry], n_steps=2, mode=mode), *s)
    assert "outputs_info=[s0, s1" in str(e)          # the fix


@pytest.mark.parametrize("mode", MODES)
def test_list_of_numbers_is_still_one_state(mode):
    out, _ = ns.scan(lambda h: h + 1, outputs_info=[[0.0, 1.0]], n_steps=1, mode=mode)
    np.testing.assert_array_equal(out, [[1.0, 2.0]])


def test_nested_tuple_returned_by_the_step():
    a, b = np.zeros(2), np.ones(3)
    same_error(ValueError, r"output 0: the step returned a tuple of 2 \(an array of shape \(2,\), "
               r"an array of shape \(3,\)\), where scan expects one array", lambda mode: ns.scan(
                   lambda a, b: ((a, b), a), outputs_info=[None, None], non_sequences=[a, b],
                   n_steps=2, mode=mode), a, b)


def test_nested_tuple_of_equal_shapes_is_not_silently_stacked():
    x0 = np.zeros(2)
    same_error(ValueError, r"output 0: the step returned a tuple of 2", lambda mode: ns.scan(
        lambda h: ((h + 1, h + 2),), outputs_info=[x0], n_steps=2, mode=mode), x0)


def test_step_taking_too_many_arguments():
    x0 = np.zeros(2)
    e = same_error(TypeError, r"fn: scan calls the step with 1 argument\(s\) \(output 0 at "
                   r"t-1\).*\(a, b\).*missing.*'b'", lambda mode: ns.scan(
                       lambda a, b: a + b, outputs_info=x0, n_steps=2, mode=mode), x0)
    assert "sequence slices" in str(e) and "non_sequences" in str(e)


def test_step_taking_too_few_arguments():
    S, x0, W2 = np.ones((3, 2)), np.zeros(2), np.eye(2)
    same_error(TypeError, r"fn: scan calls the step with 4 argument\(s\) \(sequences\[0\]\[t\], "
               r"sequences\[0\]\[t-1\], output 0 at t-1, non_sequences\[0\]\).*too many",
               lambda mode: ns.scan(lambda s, h, w: h + s, mode=mode,
                                    sequences=dict(input=S, taps=[0, -1]), outputs_info=x0,
                                    non_sequences=W2), S, x0, W2)


def test_jit_step_of_the_wrong_arity():
    step = ns.jit(lambda a, b: a + b)
    x0 = np.zeros(2)
    same_error(TypeError, r"fn: scan calls the step with 1 argument", lambda mode: ns.scan(
        step, outputs_info=x0, n_steps=2, mode=mode), x0)


def test_type_error_inside_the_step_is_not_rewritten():
    def helper(a, b):
        return a + b

    x0 = np.zeros(2)
    e = same_error(TypeError, r"helper\(\) missing 1 required positional argument", lambda mode:
                   ns.scan(lambda h: helper(h), outputs_info=x0, n_steps=2, mode=mode), x0)
    assert "scan calls the step" not in str(e)


# -- cuda: what is missing ------------------------------------------------------------------------

class _FakeCuda:
    def __init__(self, error):
        self.error = error

    def is_available(self):
        return False

    def cuda_error(self):
        return self.error


def cuda_error(monkeypatch, importer):
    monkeypatch.setattr(cuda_driver, "_import_numba_cuda", importer)
    x0 = np.zeros(2)
    with pytest.raises(ns.CudaUnavailable) as info:
        ns.scan(lambda h: h + 1, outputs_info=x0, n_steps=2, mode="cuda")
    np.testing.assert_array_equal(x0, np.zeros(2))
    return str(info.value)


def test_cuda_without_numba_cuda(monkeypatch):
    def missing():
        raise ImportError("No module named 'numba.cuda'")
    msg = cuda_error(monkeypatch, missing)
    assert "numba-cuda, which is not installed" in msg and "pip install" in msg


def test_cuda_without_a_driver(monkeypatch):
    msg = cuda_error(monkeypatch, lambda: _FakeCuda(
        "\nCUDA driver library cannot be found.\nEnsure that a compatible NVIDIA driver is "
        "installed and available on your system path.\n"))
    assert "no NVIDIA driver" in msg and "libcuda" in msg and "pip install" not in msg


def test_cuda_without_a_gpu(monkeypatch):
    msg = cuda_error(monkeypatch, lambda: _FakeCuda(
        "Call to cuInit results in CUDA_ERROR_NO_DEVICE (100)"))
    assert "no GPU" in msg and "CUDA_ERROR_NO_DEVICE" in msg and "pip install" not in msg
