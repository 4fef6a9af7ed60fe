"""Shared helpers for the scan tests: run a scan in the compiled and the reference mode and compare."""
import os

# mode="cuda" tests run in numba's CUDA simulator unless NUMBASCAN_TEST_GPU=1 asks for a real GPU.
# numba-cuda reads NUMBA_ENABLE_CUDASIM once, as soon as numba compiles anything (importing
# numbascan does): set it before the imports below.
if os.environ.get("NUMBASCAN_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import copy
import warnings
import zlib

import numpy as np
import pytest

import numbascan as ns
from numbascan.runtime.fallback import UntracedStepWarning

# Tolerances of compiled ("cpu") against reference ("python") results.  A tiny absolute
# tolerance covers values that are zero up to rounding (e.g. sin of a multiple of pi).
TOLERANCES = {
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
}


def assert_same(actual, expected, what="value"):
    """Same dtype and shape; values equal to the dtype's tolerance (exact for ints and bools)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = TOLERANCES.get(actual.dtype)
    if tol is None:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual, expected, err_msg=what, **tol)


def assert_close(actual, expected, what="value", rtol=1e-12, atol=1e-14):
    """Values close to an independent NumPy computation; shapes equal (dtypes not checked)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.dtype.kind in "biu" and expected.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def assert_same_outputs(a, b, what="outputs"):
    """Compare what two scans returned (an array or a list of arrays)."""
    assert isinstance(a, list) == isinstance(b, list), f"{what}: list vs array"
    if isinstance(a, list):
        assert len(a) == len(b), f"{what}: {len(a)} outputs vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{what}[{i}]")
    else:
        assert_same(a, b, what)


def assert_same_updates(a, b):
    assert isinstance(a, ns.Updates) and isinstance(b, ns.Updates)
    assert set(map(id, a)) == set(map(id, b)), "updates: different shared variables"
    for k in a:
        assert_same(a[k], b[k], f"updates[{k!r}]")


def _arrays_in(obj):
    """Every NumPy array reachable in scan arguments (lists, tuples, dicts)."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _arrays_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _arrays_in(x)


def _run_checked(fn, mode, scan=None, **kwargs):
    """Run one scan; fail if the compiled mode fell back to the untraced path."""
    scan = scan or ns.scan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntracedStepWarning)
        out = scan(fn, mode=mode, **kwargs)
    untraced = [w for w in caught if issubclass(w.category, UntracedStepWarning)]
    assert not untraced, f"mode={mode}: the step was not traced: {untraced[0].message}"
    return out


def run_both(fn, *, scan=None, reset=None, extra_inputs=(), **kwargs):
    """Run `scan(fn, **kwargs)` in mode "cpu" and mode "python"; assert they agree.

    Checks outputs (dtype, shape, values) and updates, and that no array passed in
    (nor any array in `extra_inputs`, e.g. closures) was written to.  `reset` is called
    before each run (to rewind random streams or shared state).  Returns the cpu result.
    """
    inputs = list(_arrays_in(kwargs)) + list(extra_inputs)
    before = [x.copy() for x in inputs]
    results = {}
    for mode in ("cpu", "python"):
        if reset is not None:
            reset()
        results[mode] = _run_checked(fn, mode, scan=scan, **copy.copy(kwargs))
        for i, (x, b) in enumerate(zip(inputs, before)):
            np.testing.assert_array_equal(x, b, err_msg=f"mode={mode}: input {i} was modified")
    (out_c, upd_c), (out_p, upd_p) = results["cpu"], results["python"]
    assert_same_outputs(out_c, out_p)
    assert_same_updates(upd_c, upd_p)
    return out_c, upd_c


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's name: fresh random inputs, reproducible."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


@pytest.fixture
def kernel_patterns(monkeypatch):
    """The patterns of the CUDA kernels mode="cuda" compiles (or takes from its cache) during a
    test, in order."""
    from numbascan.runtime import cuda as gpu
    seen = []
    compile_kernel = gpu.compile_kernel

    def recording(step, layout, pattern):
        seen.append(pattern)
        return compile_kernel(step, layout, pattern)

    monkeypatch.setattr(gpu, "compile_kernel", recording)
    return seen

