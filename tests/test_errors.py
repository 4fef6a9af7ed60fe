"""SPEC section 6: every misuse raises ValueError or TypeError (or a subclass) whose message
names the offending argument, what was expected and what was found; nothing the user passed
in is modified by a failed call.

Each case runs in the compiled ("cpu") and reference ("python") modes where the mode matters.
"""
import numpy as np
import pytest

import numbascan as ns

MODES = ["cpu", "python"]


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


class Inputs:
    """Keeps copies of the arrays given to a call and checks they were left untouched."""

    def __init__(self, *arrays):
        self.arrays = arrays
        self.copies = [np.array(a, copy=True) for a in arrays]

    def check(self):
        for a, c in zip(self.arrays, self.copies):
            a = np.asarray(a)
            assert a.dtype == c.dtype and a.shape == c.shape
            np.testing.assert_array_equal(a, c)


def raises(exc, pattern, call, *arrays, **kwargs):
    """call(**kwargs) raises `exc` matching `pattern`, and leaves `arrays` unchanged."""
    inputs = Inputs(*arrays)
    with pytest.raises(exc, match=pattern) as info:
        call(**kwargs)
    inputs.check()
    assert isinstance(info.value, (ValueError, TypeError))
    return info.value


def add(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


# -- taps ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("taps, found", [([0.5], r"0\.5"), (["a"], "'a'"), ([0, 1.0], r"1\.0")])
def test_sequence_taps_not_int(mode, taps, found):
    S = np.arange(6.0)
    raises(ValueError, rf"sequences\[0\].*taps.*int.*{found}", ns.scan, S,
           fn=add, sequences=[dict(input=S, taps=taps)], mode=mode)


def test_output_taps_not_int(mode):
    X = np.zeros((2, 3))
    raises(ValueError, r"outputs_info\[0\].*taps.*int.*-1\.5", ns.scan, X,
           fn=lambda a: a, outputs_info=[dict(initial=X, taps=[-1.5])], n_steps=2, mode=mode)


def test_sequence_taps_empty(mode):
    S, T = np.arange(6.0), np.arange(6.0)
    raises(ValueError, r"sequences\[1\].*taps.*non-empty.*\[\]", ns.scan, S, T,
           fn=add, sequences=[S, dict(input=T, taps=[])], mode=mode)


def test_output_taps_empty(mode):
    X = np.zeros(3)
    raises(ValueError, r"outputs_info\[0\].*taps.*non-empty.*\[\]", ns.scan, X,
           fn=lambda a: a, outputs_info=[dict(initial=X, taps=[])], n_steps=2, mode=mode)


def test_sequence_taps_duplicate(mode):
    S = np.arange(6.0)
    raises(ValueError, r"sequences\[0\].*taps.*distinct.*\[-1, 0, -1\]", ns.scan, S,
           fn=add, sequences=[dict(input=S, taps=[-1, 0, -1])], mode=mode)


def test_output_taps_duplicate(mode):
    X = np.zeros((2, 3))
    raises(ValueError, r"outputs_info\[1\].*taps.*distinct.*\[-2, -2\]", ns.scan, X,
           fn=lambda a, b: (a, b), outputs_info=[X[0], dict(initial=X, taps=[-2, -2])],
           n_steps=2, mode=mode)


@pytest.mark.parametrize("taps", [[0], [1], [-1, 0], [-2, 2]])
def test_output_taps_not_negative(mode, taps):
    X = np.zeros((2, 3))
    raises(ValueError, r"outputs_info\[0\].*taps.*negative.*found", ns.scan, X,
           fn=lambda *a: a[0], outputs_info=[dict(initial=X, taps=taps)], n_steps=2, mode=mode)


# -- sequence lengths and n_steps -------------------------------------------------------------------

def test_sequence_too_short_for_n_steps(mode):
    S, T = np.arange(10.0), np.arange(3.0)
    e = raises(ValueError, r"sequences\[1\].*too short.*n_steps=5", ns.scan, S, T,
               fn=add, sequences=[S, T], n_steps=5, mode=mode)
    msg = str(e)
    assert "5" in msg and "3" in msg            # needs length 5, found 3
    assert "found 3" in msg or "length 3" in msg


def test_sequence_too_short_for_its_taps(mode):
    S = np.arange(2.0)
    e = raises(ValueError, r"sequences\[0\].*taps.*\[-2, 1\].*3.*found.*2", ns.scan, S,
               fn=add, sequences=[dict(input=S, taps=[-2, 1])], mode=mode)
    assert "3" in str(e)


def test_sequence_too_short_for_taps_and_n_steps(mode):
    S = np.arange(6.0)   # taps [-2, 1] with n_steps=4 need 4 + 2 + 1 = 7 entries
    raises(ValueError, r"sequences\[0\].*n_steps=4.*7.*found 6", ns.scan, S,
           fn=add, sequences=[dict(input=S, taps=[-2, 1])], n_steps=4, mode=mode)


def test_missing_n_steps_without_sequences(mode):
    x0 = np.ones(3)
    raises(ValueError, r"n_steps.*required.*(no sequences|without sequences).*None", ns.scan, x0,
           fn=lambda x: 2 * x, outputs_info=x0, mode=mode)


@pytest.mark.parametrize("n", [-1, -7])
def test_negative_n_steps(mode, n):
    x0 = np.ones(3)
    raises(ValueError, rf"n_steps.*non-negative.*{n}", ns.scan, x0,
           fn=lambda x: 2 * x, outputs_info=x0, n_steps=n, mode=mode)


def test_negative_n_steps_with_sequences(mode):
    S = np.arange(5.0)
    raises(ValueError, r"n_steps.*non-negative.*-2", ns.scan, S,
           fn=lambda s: s, sequences=S, n_steps=-2, mode=mode)


@pytest.mark.parametrize("n, found", [(2.5, "float"), ("3", "str"), (np.ones(2), "ndarray"),
                                      (True, "bool")])
def test_non_int_n_steps(mode, n, found):
    x0 = np.ones(3)
    raises((TypeError, ValueError), rf"n_steps.*int.*{found}", ns.scan, x0,
           fn=lambda x: 2 * x, outputs_info=x0, n_steps=n, mode=mode)


# -- step results vs outputs_info -------------------------------------------------------------------

def test_step_result_shape_mismatch(mode):
    x0 = np.ones(3)
    e = raises(ValueError, r"output 0.*shape \(2,\).*\(3,\)", ns.scan, x0,
               fn=lambda x: x[:2], outputs_info=x0, n_steps=3, mode=mode)
    assert "outputs_info[0]" in str(e)


def test_step_result_shape_mismatch_second_output(mode):
    a0, b0 = np.ones(3), np.ones((2, 2))
    raises(ValueError, r"output 1.*shape \(2, 2, 1\).*\(2, 2\)", ns.scan, a0, b0,
           fn=lambda a, b: (a + 1, b.reshape(2, 2, 1)),
           outputs_info=[a0, b0], n_steps=3, mode=mode)


def test_step_result_dtype_mismatch(mode):
    x0 = np.arange(3)                          # int64 state, step returns float64
    e = raises(ValueError, r"output 0.*dtype float64.*int64", ns.scan, x0,
               fn=lambda x: x / 2, outputs_info=x0, n_steps=3, mode=mode)
    assert "astype" in str(e)                    # the fix


def test_step_result_dtype_mismatch_float32(mode):
    x0 = np.ones(3, np.float32)
    S = np.ones((3, 3))
    raises(ValueError, r"output 0.*dtype float64.*float32", ns.scan, x0, S,
           fn=lambda s, x: x + s, sequences=S, outputs_info=x0, mode=mode)


def test_step_result_shape_mismatch_with_taps(mode):
    X = np.zeros((2, 3))
    raises(ValueError, r"output 0.*shape \(4,\).*\(3,\)", ns.scan, X,
           fn=lambda a, b: np.concatenate([a, b[:1]]),
           outputs_info=dict(initial=X, taps=[-2, -1]), n_steps=2, mode=mode)


def test_wrong_number_of_step_results(mode):
    a0, b0 = np.ones(3), np.ones(3)
    raises(ValueError, r"returned 1 output.*outputs_info.*2", ns.scan, a0, b0,
           fn=lambda a, b: a + b, outputs_info=[a0, b0], n_steps=2, mode=mode)


def test_too_many_step_results(mode):
    a0 = np.ones(3)
    raises(ValueError, r"returned 3 output.*outputs_info.*1", ns.scan, a0,
           fn=lambda a: (a, a, a), outputs_info=[a0], n_steps=2, mode=mode)


def test_initial_state_without_leading_axis(mode):
    x0 = np.ones((1, 3))
    raises(ValueError, r"outputs_info\[0\].*taps \[-3, -1\].*leading axis.*3.*\(1, 3\)", ns.scan,
           x0, fn=lambda a, b: a + b, outputs_info=dict(initial=x0, taps=[-3, -1]), n_steps=2,
           mode=mode)


def test_initial_state_0d_for_multi_taps(mode):
    x0 = np.float64(1.0)
    raises(ValueError, r"outputs_info\[0\].*leading axis.*2.*\(\)", ns.scan,
           fn=lambda a, b: a + b, outputs_info=dict(initial=x0, taps=[-2, -1]), n_steps=2,
           mode=mode)


# -- non-numeric input ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, found", [
    (np.array(["a", "b", "c"]), "<U1"),
    (["ab", "cd"], "<U2"),
    (np.array([1.0, None, 2.0], dtype=object), "object"),
])
def test_non_numeric_sequence(mode, bad, found):
    ok = np.arange(3.0)
    raises(TypeError, rf"sequences\[1\].*numeric.*{found}", ns.scan, ok, bad,
           fn=add, sequences=[ok, bad], mode=mode)


@pytest.mark.parametrize("bad, found", [
    (np.array(["a", "b"]), "<U1"),
    (np.array([1.0, None], dtype=object), "object"),
    ("hello", "str"),
])
def test_non_numeric_outputs_info(mode, bad, found):
    raises(TypeError, rf"outputs_info\[0\].*numeric.*{found}", ns.scan, bad,
           fn=lambda x: x, outputs_info=[bad], n_steps=2, mode=mode)


def test_non_numeric_outputs_info_dict(mode):
    bad = np.array([[1.0, None]], dtype=object)
    raises(TypeError, r"outputs_info\[0\].*numeric.*object", ns.scan, bad,
           fn=lambda x: x, outputs_info=[dict(initial=bad, taps=[-1])], n_steps=2, mode=mode)


@pytest.mark.parametrize("bad, found", [
    (np.array(["x"]), "<U1"),
    (np.array([{}, 1], dtype=object), "object"),
    ("w", "str"),
])
def test_non_numeric_non_sequences(mode, bad, found):
    x0, W = np.ones(2), np.eye(2)
    raises(TypeError, rf"non_sequences\[1\].*numeric.*{found}", ns.scan, x0, W, bad,
           fn=lambda x, w, b: x, outputs_info=x0, non_sequences=[W, bad], n_steps=2, mode=mode)


def test_non_numeric_dict_sequence(mode):
    bad = np.array(["a", "b", "c"])
    raises(TypeError, r"sequences\[0\].*numeric.*<U1", ns.scan, bad,
           fn=add, sequences=[dict(input=bad, taps=[-1, 0])], mode=mode)


def test_non_numeric_jit_argument():
    f = ns.jit(lambda x: x + 1)
    bad = np.array(["a"])
    raises(TypeError, r"argument 0.*numeric.*<U1", lambda: f(bad), bad)


# -- unsupported operations -------------------------------------------------------------------------

def test_unsupported_op_in_jit_body():
    A, b = np.eye(2) * 2, np.ones(2)

    @ns.jit
    def solve(A, b):
        return np.median(A, axis=0) + b

    raises((TypeError, ValueError), r"np\.median", lambda: solve(A, b), A, b)


def test_unsupported_op_in_scan_step_under_jit():
    A, x0 = np.eye(2) * 2, np.ones(2)

    @ns.jit
    def f(A, x0):
        r, _ = ns.scan(lambda x, A: np.median(A, axis=0) * x, outputs_info=x0,
                       non_sequences=A, n_steps=3)
        return r

    raises((TypeError, ValueError), r"np\.median", lambda: f(A, x0), A, x0)


def test_unsupported_op_error_names_the_step():
    """SPEC 5: the error names the function and the step."""
    A, x0 = np.eye(2) * 2, np.ones(2)

    def my_solver_step(x, A):
        return np.median(A, axis=0) * x

    @ns.jit
    def f(A, x0):
        r, _ = ns.scan(my_solver_step, outputs_info=x0, non_sequences=A, n_steps=3)
        return r

    raises((TypeError, ValueError), r"(np\.median.*my_solver_step|"
                                    r"my_solver_step.*np\.median)",
           lambda: f(A, x0), A, x0)


# -- other arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [np.float64(3.0), np.array(2.0), 5])
def test_zero_d_sequence(mode, s):
    raises(ValueError, r"sequences\[0\].*0-d", ns.scan, s,
           fn=lambda x: x, sequences=[s], mode=mode)


@pytest.mark.parametrize("bad", ["gpu", "CPU", "numba", ""])
def test_bad_mode(bad):
    x0 = np.ones(2)
    raises(ValueError, rf"mode.*(cpu|python).*found '{bad}'", ns.scan, x0,
           fn=lambda x: x, outputs_info=x0, n_steps=2, mode=bad)


@pytest.mark.parametrize("bad", [0, -3, "cbrt", 1.5, "SQRT"])
def test_bad_checkpoint(mode, bad):
    x0 = np.ones(2)
    raises((ValueError, TypeError), rf"checkpoint.*(positive int|'sqrt').*found {bad!r}",
           ns.scan, x0, fn=lambda x: x, outputs_info=x0, n_steps=2, mode=mode, checkpoint=bad)


def test_until_with_non_scalar_condition(mode):
    x0 = np.ones(3)
    raises(ValueError, r"until.*scalar.*\(3,\)", ns.scan, x0,
           fn=lambda x: (2 * x, ns.until(x > 3)), outputs_info=x0, n_steps=5, mode=mode)


def test_updates_dict_with_non_shared_key(mode):
    x0 = np.ones(3)
    raises(TypeError, r"updates.*ns\.shared.*found key str", ns.scan, x0,
           fn=lambda x: (x + 1, {"counter": x}), outputs_info=x0, n_steps=2, mode=mode)


def test_updates_dict_with_array_key(mode):
    x0 = np.ones(3)
    raises(TypeError, r"updates.*ns\.shared.*found key", ns.scan, x0,
           fn=lambda x: (x + 1, {"k": 1}), outputs_info=x0, n_steps=2, mode=mode)


def test_failed_call_does_not_touch_shared_values(mode):
    """A step whose result does not match its state fails before any update is applied."""
    k = ns.shared(np.zeros(2))
    x0 = np.ones(3)
    before = k.get_value().copy()
    with pytest.raises(ValueError, match=r"output 0"):
        ns.scan(lambda x: (x[:2], {k: k + 1}), outputs_info=x0, n_steps=3, mode=mode)
    np.testing.assert_array_equal(k.get_value(), before)
    np.testing.assert_array_equal(x0, np.ones(3))


def test_family_errors_name_arguments(mode):
    S = np.arange(4.0)
    x0 = np.arange(3)
    raises(ValueError, r"output 0.*dtype float64.*int64", ns.foldl, S, x0,
           fn=lambda s, x: x * s, sequences=S, outputs_info=x0, mode=mode)
    raises(TypeError, r"sequences\[0\].*numeric", ns.map, fn=lambda s: s,
           sequences=np.array(["a"]), mode=mode)


def test_sequence_dict_with_unknown_keys(mode):
    S = np.arange(4.0)
    raises(ValueError, r"sequences\[0\].*dict\(input=.*found keys.*'tap'", ns.scan, S,
           fn=lambda s: s, sequences=[dict(input=S, tap=[0])], mode=mode)


def test_outputs_info_dict_with_unknown_keys(mode):
    x0 = np.ones(2)
    raises(ValueError, r"outputs_info\[0\].*unknown keys.*'init'", ns.scan, x0,
           fn=lambda x: x, outputs_info=[dict(init=x0)], n_steps=2, mode=mode)


def test_step_failing_midway_leaves_inputs_untouched(mode):
    """An exception raised by the step itself propagates; inputs are not modified."""
    S = np.arange(6.0)
    x0 = np.ones(2)

    def step(s, x):
        if mode == "python" and s > 2:
            raise RuntimeError("boom")
        return x + s

    if mode == "python":
        with pytest.raises(RuntimeError, match="boom"):
            ns.scan(step, sequences=S, outputs_info=x0, mode=mode)
    else:
        ns.scan(step, sequences=S, outputs_info=x0, mode=mode)
    np.testing.assert_array_equal(S, np.arange(6.0))
    np.testing.assert_array_equal(x0, np.ones(2))


def test_cuda_mode_needs_a_traceable_step():
    x = np.arange(3.0)

    def step(v):
        return np.linalg.norm(np.atleast_1d(v)) * np.ones(())

    with pytest.raises(ns.TracingError, match="mode='cuda'"):
        ns.scan(step, sequences=x, mode="cuda")
    np.testing.assert_array_equal(x, np.arange(3.0))
