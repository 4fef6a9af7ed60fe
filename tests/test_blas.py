"""Generated code that calls BLAS runs it on the calling thread (numbascan/runtime/blas.py)."""
import numpy as np

import numbascan as ns
from numbascan.runtime import blas
from numbascan.runtime.cache import compile_scan, traced_scan
from numbascan.loop.args import normalize


def _rnn(x, h, W, U, b):
    return np.tanh(h @ W + x @ U + b)


def _args(rng, T=40, H=32):
    return (rng.standard_normal((T, H)), rng.standard_normal(H),
            [rng.standard_normal((H, H)) / np.sqrt(H), rng.standard_normal((H, H)) / np.sqrt(H),
             rng.standard_normal(H)])


def test_blas_loops_are_wrapped_and_agree_with_python_mode(rng, monkeypatch):
    X, h0, rest = _args(rng)
    sa = normalize(_rnn, X, h0, rest, None, -1, False, None, False, False, None)
    ts, fn, _ = traced_scan(sa)
    assert isinstance(fn, blas.BlasOnOneThread)          # the step's matmul calls np.dot
    ref = ns.scan(_rnn, X, h0, rest, mode="python")[0]
    for threads in ("1", "2", "0"):
        monkeypatch.setenv("NUMBASCAN_BLAS_THREADS", threads)
        np.testing.assert_allclose(ns.scan(_rnn, X, h0, rest, mode="cpu")[0], ref,
                                   rtol=1e-12, atol=1e-14)


def test_the_thread_count_is_restored_after_a_call(rng):
    X, h0, rest = _args(rng)
    ns.scan(_rnn, X, h0, rest, mode="cpu")
    set_local = blas._set_threads_local()
    if set_local is None:                 # SciPy's BLAS is not an OpenBLAS with the function
        return
    before = set_local(3)
    try:
        ns.scan(_rnn, X, h0, rest, mode="cpu")
        assert set_local(3) == 3          # the call put back the value it found
    finally:
        set_local(before)


def test_loops_without_blas_are_not_wrapped(rng):
    x0 = rng.standard_normal(4)
    S = rng.standard_normal((5, 4))
    sa = normalize(lambda s, x: x * 0.5 + s, S, x0, None, None, -1, False, None, False, False,
                   None)
    ts, fn, _ = traced_scan(sa)
    assert not isinstance(fn, blas.BlasOnOneThread)
    assert fn is compile_scan(ts.ir, ts.layout)
