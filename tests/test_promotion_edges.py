"""Dtype promotion and edge dtypes and shapes: the compiled mode against the reference mode and
plain NumPy.

NumPy 2's promotion (NEP 50) in every mode: a Python scalar is weak (it takes the dtype of the
array it meets), a NumPy scalar or a 0-d array is strong, and the generated code computes in
the dtype it labels its result with. Values with no elements (rows of shape (0,), states of
shape (0,)) compile and give what NumPy gives. float16 is refused in every mode, naming the
argument.
"""
import warnings

import numpy as np
import pytest

import numbascan as ns
from numbascan.core.ir import Lit


def numpy_quiet():
    """NumPy's overflow and empty-mean warnings are part of what the cases compute."""
    return np.errstate(all="ignore")


def assert_exact(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_array_equal(actual, expected, err_msg=what)


# ------------------------------------------------------------------------------------------------
# promotion


def test_numpy_scalars_are_strong_literals():
    # np.float64 subclasses Python's float, yet NEP 50 treats it as strong
    assert Lit(1e-10).weak and Lit(3).weak and Lit(True).weak
    assert not Lit(np.float64(1e-10)).weak
    assert not Lit(np.float32(1.0)).weak
    assert not Lit(np.int64(3)).weak
    assert not Lit(np.bool_(True)).weak


@pytest.mark.parametrize("mode", ["python", "cpu"])
def test_float64_scalar_on_float32_sequence_computes_in_float64(mode):
    a = np.ones(3, np.float32)
    out, _ = ns.scan(lambda x: x + np.float64(1e-10) - x, sequences=a, mode=mode)
    assert_exact(out, a + np.float64(1e-10) - a, mode)
    assert out.dtype == np.float64 and out[0] != 0.0


# Each group: an input dtype, its values, and steps whose NumPy result dtype depends on which
# operand is weak or strong. One scan returns every step of a group (one compilation).
PROMOTION = {
    "float32": ([-1.5, 0.3, 2.0], [
        lambda a: a + np.float64(1e-10) - a,          # strong float64: float64
        lambda a: a + 1e-10 - a,                      # weak float: float32
        lambda a: a + np.asarray(1e-10) - a,          # 0-d array: strong
        lambda a: a * np.float32(3),
        lambda a: a / 3,
        lambda a: np.where(a > 0, a, 2.5),            # weak branch: float32
        lambda a: np.where(a > 0, a, np.float64(2.5)),    # strong branch: float64
        lambda a: np.maximum(a, np.float64(0.5)),
        lambda a: a + np.int64(1),                    # float32 and int64: float64
        lambda a: a + np.int16(1),                    # float32 and int16: float32
        lambda a: a * np.True_,
    ]),
    "int32": ([-3, 5, 2**30], [
        lambda a: a + 1.5,                            # weak float on ints: float64
        lambda a: a + np.float32(1.5),                # int32 and float32: float64
        lambda a: a / 2,
        lambda a: a // 2,
        lambda a: a * 3,                              # int32, wrapping
        lambda a: np.float32(2) * a,
    ]),
    "int8": ([-128, 5, 127], [
        lambda a: a + 1,                              # int8, wrapping
        lambda a: a + np.int16(100),                  # int16
        lambda a: a + np.float32(0.5),                # float32
        lambda a: a - 1.0,
        lambda a: a < 1000,                           # a Python int out of int8's range
        lambda a: a == 300,
        lambda a: a >= -1000,
    ]),
    "uint64": ([0, 5, 2**64 - 1], [
        lambda a: a + np.int64(1),                    # uint64 and int64: float64 (numba: int64)
        lambda a: a + 1,                              # weak int: uint64
        lambda a: a * 0.5,
        lambda a: a > -1,                             # compared as numbers, not wrapped
        lambda a: a == -1,
    ]),
    "bool": ([True, False, True], [
        lambda a: a + 1,                              # weak int: int64
        lambda a: a + True,                           # bool: logical or
        lambda a: (a + a) * 3,                        # the bool sum is 1 (numba's is 2)
        lambda a: (a * a) - 0.5,
        lambda a: a * 2.5,
        lambda a: a | np.True_,
        lambda a: a + np.float32(1),
    ]),
}

# rows of shape (): scalar code; of 3 elements: unrolled code; of 20: loop nests
ROWS = {"scalar": None, "unrolled": 3, "loop": 20}


@pytest.mark.parametrize("rows", list(ROWS))
@pytest.mark.parametrize("dtype", list(PROMOTION))
def test_promotion_table_in_scan(dtype, rows):
    values, fns = PROMOTION[dtype]
    base = np.array(values, dtype=dtype)
    seq = base if ROWS[rows] is None else np.repeat(base[:, None], ROWS[rows], axis=1)
    with numpy_quiet():
        expected = [f(seq) for f in fns]                      # plain NumPy, whole arrays
        python, _ = ns.scan(lambda a: [f(a) for f in fns], sequences=seq, mode="python",
                            return_list=True)
    cpu, _ = ns.scan(lambda a: [f(a) for f in fns], sequences=seq, mode="cpu",
                     return_list=True)
    for k, want in enumerate(expected):
        assert_exact(python[k], want, f"{dtype} case {k}, python mode")
        assert_exact(cpu[k], want, f"{dtype} case {k}, cpu mode")


@pytest.mark.parametrize("dtype", list(PROMOTION))
def test_promotion_table_in_jit(dtype):
    values, fns = PROMOTION[dtype]
    x = np.array(values, dtype=dtype)
    with numpy_quiet():
        expected = [f(x) for f in fns]
    got = ns.jit(lambda x: [f(x) for f in fns])(x)
    for k, want in enumerate(expected):
        assert_exact(got[k], want, f"{dtype} case {k}, ns.jit")


@pytest.mark.parametrize("c", [np.float64(1e-10), 1e-10, np.asarray(1e-10), np.float32(1e-10)],
                         ids=["np.float64", "float", "0-d float64", "np.float32"])
def test_jit_scalar_arguments_promote_as_in_numpy(c):
    x = np.ones(3, np.float32)
    assert_exact(ns.jit(lambda x, c: x + c - x)(x, c), x + c - x, f"x + {c!r} - x")


def test_strong_scalar_in_a_scan_inside_jit():
    x = np.ones(3, np.float32)
    f = ns.jit(lambda x: ns.scan(lambda a: a + np.float64(1e-10) - a, sequences=x)[0])
    assert_exact(f(x), x + np.float64(1e-10) - x, "scan in ns.jit")


# ------------------------------------------------------------------------------------------------
# values with no elements

EMPTY = {
    "rows": (lambda r: [r.sum(), r.mean(), r.prod(), r.all(), np.tanh(r) * 2 + 1,
                        r.sum() + 1.0],
             dict(sequences=np.zeros((4, 0)))),
    "axes": (lambda r: [r.sum(axis=1), r.mean(axis=0), r * 2],
             dict(sequences=np.zeros((4, 3, 0)))),
    "float32_int": (lambda r, q: [r.mean(), r.sum(), q.sum(), q.mean()],
                    dict(sequences=[np.zeros((3, 0), np.float32), np.zeros((3, 0), np.int32)])),
    "state": (lambda r, h, s: [h + r, s + r.sum()],
              dict(sequences=np.zeros((4, 0)), outputs_info=[np.zeros(0), np.float64(1.0)])),
    "matmul": (lambda r, w: [r @ r, r @ w],
               dict(sequences=np.zeros((3, 0)), non_sequences=np.ones((0, 2)))),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_zero_size_rows(case):
    fn, kwargs = EMPTY[case]
    with numpy_quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # mean of empty
        python, _ = ns.scan(fn, mode="python", return_list=True, **kwargs)
    cpu, _ = ns.scan(fn, mode="cpu", return_list=True, **kwargs)
    assert len(cpu) == len(python)
    for k, (c, p) in enumerate(zip(cpu, python)):
        assert c.dtype == p.dtype and c.shape == p.shape, f"output {k}"
        np.testing.assert_array_equal(c, p, err_msg=f"output {k}")


def test_zero_size_rows_values():
    out, _ = ns.scan(lambda r: [r.sum(), r.mean(), r * 2], sequences=np.zeros((4, 0)),
                     return_list=True)
    np.testing.assert_array_equal(out[0], np.zeros(4))
    assert np.isnan(out[1]).all()
    assert out[2].shape == (4, 0)


def test_zero_size_in_jit():
    f = ns.jit(lambda x: [x.sum(), x.mean(axis=0), x.sum(axis=1)])
    x = np.zeros((0, 3))
    with numpy_quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = [x.sum(), x.mean(axis=0), x.sum(axis=1)]
    for k, (got, want) in enumerate(zip(f(x), expected)):
        assert_exact(got, want, f"output {k}")


@pytest.mark.parametrize("mode", ["python", "cpu"])
def test_max_of_empty_row_is_numpys_error(mode):
    with pytest.raises(ValueError, match="zero-size array"):
        ns.scan(lambda r: r.max(), sequences=np.zeros((4, 0)), mode=mode)


# ------------------------------------------------------------------------------------------------
# float16

FLOAT16 = np.ones(3, np.float16)


@pytest.mark.parametrize("mode", ["python", "cpu"])
@pytest.mark.parametrize("what, kwargs", [
    ("sequences[0]", dict(sequences=FLOAT16)),
    ("sequences[1]", dict(sequences=[np.ones(3), dict(input=FLOAT16, taps=[0])])),
    ("outputs_info[0]", dict(outputs_info=np.float16(1.0), n_steps=2)),
    ("non_sequences[0]", dict(sequences=np.ones(3), non_sequences=FLOAT16)),
])
def test_float16_inputs_are_refused_in_every_mode(mode, what, kwargs):
    with pytest.raises(TypeError) as err:
        ns.scan(lambda *a: a[0] * 2, mode=mode, **kwargs)
    message = str(err.value)
    assert message.startswith(what + ":")
    assert "float16" in message and "float32" in message


def test_float16_shared_is_refused():
    with pytest.raises(TypeError, match=r"ns.shared 'k': .*found dtype float16"):
        ns.shared(FLOAT16, name="k")


@pytest.mark.parametrize("mode", ["python", "cpu"])
def test_float16_jit_argument_is_refused(mode, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", mode)
    with pytest.raises(TypeError, match=r"argument 0: .*found dtype float16"):
        ns.jit(lambda x: x * 2)(FLOAT16)


@pytest.mark.parametrize("fn, op", [
    (lambda a: np.sqrt(a), "sqrt of (int8)"),                     # NumPy's result is float16
    (lambda a: a.astype(np.float16).astype(np.float32), "convert of (int8)"),
])
def test_float16_results_in_traced_code_name_the_operation(fn, op):
    with pytest.raises(TypeError) as err:
        ns.scan(fn, sequences=np.ones(2, np.int8), mode="cpu")
    assert str(err.value).startswith(op) and "float16" in str(err.value)
    with pytest.raises(TypeError, match="float16"):
        ns.jit(fn)(np.ones(2, np.int8))
