"""SPEC section 4: `ns.jit` compiles NumPy glue and scans into one program; `ns.show` prints
what runs; under `ns.jit` an output used only as `result[-1]` keeps only its last step, and
reduce/foldl keep only the last state even when called eagerly.
"""
import io
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit, types

import numbascan as ns
from numbascan.codegen.calls import call_address
from numbascan.runtime.linked import native_address


def rnn_numpy(X, W, b):
    h = np.zeros(W.shape[0])
    H = []
    for x in X:
        h = np.tanh(W @ h + x + b)
        H.append(h)
    H = np.array(H)
    return H.sum(axis=0) * 2.0 + H[-1], H


@ns.jit
def rnn(X, W, b):
    h0 = np.zeros(W.shape[0])
    H, _ = ns.scan(lambda x, h, W, b: np.tanh(W @ h + x + b), sequences=X, outputs_info=h0,
                   non_sequences=[W, b])
    return H.sum(axis=0) * 2.0 + H[-1], H


@ns.jit
def power(A, k):
    r, _ = ns.scan(lambda p, a: p * a, outputs_info=np.ones_like(A), non_sequences=A,
                   n_steps=k)
    return r[-1]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 3)), rng.normal(size=(3, 3)) * 0.5, rng.normal(size=3)


def test_glue_and_scan_match_numpy(data):
    X, W, b = data
    copies = [a.copy() for a in data]
    out, H = rnn(X, W, b)
    ref_out, ref_H = rnn_numpy(X, W, b)
    np.testing.assert_allclose(H, ref_H, rtol=1e-12)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12)
    assert H.shape == (5, 3) and out.shape == (3,)
    for a, c in zip(data, copies):
        np.testing.assert_array_equal(a, c)


def test_jit_matches_python_mode(data, monkeypatch):
    X, W, b = data
    out_cpu, H_cpu = rnn(X, W, b)
    monkeypatch.setenv("NUMBASCAN_MODE", "python")
    out_py, H_py = rnn(X, W, b)
    np.testing.assert_allclose(H_cpu, H_py, rtol=1e-12)
    np.testing.assert_allclose(out_cpu, out_py, rtol=1e-12)


def test_jit_power_last_step():
    A = np.array([1.5, -2.0, 0.5])
    np.testing.assert_allclose(power(A, 4), A ** 4, rtol=1e-12)
    np.testing.assert_allclose(power(A, 7), A ** 7, rtol=1e-12)


def test_python_scalars_are_static():
    A = np.array([2.0, 3.0])
    for k in (1, 3, 5):
        np.testing.assert_allclose(power(A, k), A ** k)

    @ns.jit
    def scale(x, c, flip):
        y = x * c
        return -y if flip else y

    x = np.arange(3.0)
    np.testing.assert_allclose(scale(x, 2.5, False), x * 2.5)
    np.testing.assert_allclose(scale(x, 2.5, True), -x * 2.5)
    np.testing.assert_allclose(scale(x, 4, False), x * 4)


def test_jit_step_standalone_and_in_scan():
    @ns.jit
    def step(s, h, w):
        return np.tanh(h * w + s)

    S = np.linspace(-1.0, 1.0, 6).reshape(3, 2)
    h0, w = np.array([0.1, -0.2]), np.array([0.7, 1.3])

    # standalone: a compiled call equals the NumPy formula
    np.testing.assert_allclose(step(S[0], h0, w), np.tanh(h0 * w + S[0]), rtol=1e-12)

    ref, h = [], h0
    for s in S:
        h = np.tanh(h * w + s)
        ref.append(h)
    for mode in ("cpu", "python"):
        out, _ = ns.scan(step, sequences=S, outputs_info=h0, non_sequences=w, mode=mode)
        np.testing.assert_allclose(out, np.array(ref), rtol=1e-12)

    # and inside another jit function
    @ns.jit
    def run(S, h0, w):
        out, _ = ns.scan(step, sequences=S, outputs_info=h0, non_sequences=w)
        return out

    np.testing.assert_allclose(run(S, h0, w), np.array(ref), rtol=1e-12)


def test_closure_arrays_read_at_call_time():
    C = np.array([1.0, 2.0, 3.0])

    @ns.jit
    def f(x):
        r, _ = ns.scan(lambda h: h + C, outputs_info=x, n_steps=2)
        return r[-1] * C

    x = np.zeros(3)
    np.testing.assert_allclose(f(x), (2 * C) * C)
    C[:] = [10.0, 20.0, 30.0]                     # changed in place
    np.testing.assert_allclose(f(x), (2 * C) * C)
    C = np.array([-1.0, 0.5, 4.0])                # rebound
    np.testing.assert_allclose(f(x), (2 * C) * C)


GLOBAL_OFFSET = np.array([1.0, 1.0])


@ns.jit
def add_global(x):
    return x + GLOBAL_OFFSET


def test_global_arrays_read_at_call_time():
    x = np.array([0.5, 0.25])
    np.testing.assert_allclose(add_global(x), x + 1.0)
    GLOBAL_OFFSET[:] = [5.0, 7.0]
    try:
        np.testing.assert_allclose(add_global(x), x + np.array([5.0, 7.0]))
    finally:
        GLOBAL_OFFSET[:] = 1.0


def test_jit_does_not_modify_inputs(data):
    X, W, b = data
    A = np.array([1.5, 2.0])
    A0 = A.copy()
    power(A, 3)
    np.testing.assert_array_equal(A, A0)


def test_jit_output_is_not_an_input():
    """A jit function returning its argument gives a fresh array (no aliasing of inputs)."""
    f = ns.jit(lambda x: x)
    x = np.arange(3.0)
    y = f(x)
    np.testing.assert_array_equal(y, x)
    y[0] = 99.0
    assert x[0] == 0.0


# -- ns.show ----------------------------------------------------------------------------------------

def test_show_jit_function(data, capsys):
    X, W, b = data
    text = ns.show(rnn, X, W, b)
    printed = capsys.readouterr().out
    for t in (text, printed):
        assert "lambda" in t                           # the IR
        assert "scan" in t
        assert "def main_" in t and "def scan_" in t   # the generated source
        assert "for t in range(n_steps)" in t
        assert "tanh" in t


def test_program_calls_its_scans_by_address(data):
    """A program's scans are separate compiled functions it calls by address (their code is
    not linked into the program's and compiled again there); the results are unchanged."""
    X, W, b = data
    text = ns.show(rnn, X, W, b, file=io.StringIO())
    main = text[text.index("def main_"):]
    assert "call_address(fn0, (" in main and re.search(r"scan_\w+\(", main) is None
    got = rnn(X, W, b)
    want = rnn_numpy(X, W, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_call_address_passes_exceptions_on():
    """codegen/calls.py: the callee's exception reaches the caller, and Python, unchanged."""
    @njit
    def callee(n, a):
        if n > 3:
            raise ValueError("n is too large")
        a[0] += n
        return n

    @njit
    def caller(address, n, a):
        return call_address(address, (n, a))

    sig = (types.intp, types.Array(types.float64, 1, "C"))
    callee.compile(sig)
    address = native_address(callee.overloads[sig])
    a = np.ones(2)
    assert caller(address, 2, a) == 2 and a[0] == 3.0
    with pytest.raises(ValueError, match="n is too large"):
        caller(address, 5, a)


def test_show_step_with_scan_arguments():
    buf = io.StringIO()
    S = np.ones((4, 2))
    text = ns.show(lambda s, h: h * 0.5 + s, sequences=S, outputs_info=np.zeros(2), file=buf)
    printed = buf.getvalue()
    for t in (text, printed):
        assert "lambda" in t
        assert "def scan_" in t
        assert "for t in range(n_steps)" in t
        assert "multiply" in t or "*" in t


def test_show_then_call_agree(data):
    """Showing a function does not change what it computes."""
    X, W, b = data
    ns.show(rnn, X, W, b, file=io.StringIO())
    out, H = rnn(X, W, b)
    np.testing.assert_allclose(H, rnn_numpy(X, W, b)[1], rtol=1e-12)


# -- memory: only the needed steps are kept -------------------------------------------------------

def run_measured(code, timeout=120):
    """Run `code` in a fresh interpreter; return its stdout lines. The code prints peak RSS."""
    prelude = textwrap.dedent("""
        import resource, sys
        import numpy as np
        import numbascan as ns
        def peak_mb():
            # VmHWM belongs to this address space; ru_maxrss on Linux keeps the peak of the
            # forked parent (the test runner) across exec
            try:
                for line in open("/proc/self/status"):
                    if line.startswith("VmHWM:"):
                        return float(line.split()[1]) / 1024.0
            except OSError:
                pass
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    """)
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


N_BIG, K_BIG = 20000, 20000          # keeping every step would take N * K * 8 B = 3.2 GB
PEAK_LIMIT_MB = 600


def test_jit_last_step_only_memory():
    out = run_measured(f"""
        @ns.jit
        def power(A, k):
            r, _ = ns.scan(lambda p, a: p * a, outputs_info=np.ones_like(A), non_sequences=A,
                           n_steps=k)
            return r[-1]
        A = np.full({N_BIG}, 1.00001)
        r = power(A, {K_BIG})
        assert r.shape == ({N_BIG},), r.shape
        assert np.allclose(r, 1.00001 ** {K_BIG}, rtol=1e-9)
        print(peak_mb())
    """)
    assert float(out[-1]) < PEAK_LIMIT_MB, f"peak RSS {float(out[-1]):.0f} MB"


def test_eager_scan_keeps_every_step():
    """The contrast: an eager scan returns (and so allocates) all k rows."""
    A = np.full(50, 1.01)
    r, _ = ns.scan(lambda p, a: p * a, outputs_info=np.ones_like(A), non_sequences=A,
                   n_steps=300)
    assert r.shape == (300, 50)
    np.testing.assert_allclose(r[-1], A ** 300, rtol=1e-10)
    np.testing.assert_allclose(r[9], A ** 10, rtol=1e-12)


@pytest.mark.parametrize("family", ["foldl", "reduce", "foldr"])
def test_eager_fold_keeps_last_state_only(family):
    out = run_measured(f"""
        S = np.full({K_BIG}, 1.00001)
        x0 = np.ones({N_BIG})
        r, _ = ns.{family}(lambda s, x: x * s, sequences=S, outputs_info=x0)
        assert r.shape == ({N_BIG},), r.shape
        assert np.allclose(r, 1.00001 ** {K_BIG}, rtol=1e-9)
        print(peak_mb())
    """)
    assert float(out[-1]) < PEAK_LIMIT_MB, f"peak RSS {float(out[-1]):.0f} MB"


def test_fold_results_match_scan_last_row():
    S = np.arange(1.0, 6.0)
    x0 = np.array([1.0, 2.0])
    full, _ = ns.scan(lambda s, x: x * s + 1, sequences=S, outputs_info=x0)
    for mode in ("cpu", "python"):
        left, _ = ns.foldl(lambda s, x: x * s + 1, sequences=S, outputs_info=x0, mode=mode)
        np.testing.assert_allclose(left, full[-1])
        right, _ = ns.foldr(lambda s, x: x * s + 1, sequences=S, outputs_info=x0, mode=mode)
        back, _ = ns.scan(lambda s, x: x * s + 1, sequences=S, outputs_info=x0,
                          go_backwards=True)
        np.testing.assert_allclose(right, back[-1])
