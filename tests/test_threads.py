"""numbascan called from several threads at once (SPEC section 4, "Threads").

Each call's mode, traces and random-stream bookkeeping are its own, and the shared caches give
every thread the code a serial run would get. The cold-cache test runs its threads in a fresh
process with an empty NUMBASCAN_CACHE_DIR, so that they trace, render, write, import and
compile together; this file is that process's script when run as __main__.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback

import numpy as np

import numbascan as ns
from numbascan.api.scan import choose_mode
from numbascan.trace.tracer import Tracer
from numbascan.core.context import current_trace

N_THREADS = 4
ROUNDS = 2                    # the first round meets cold caches, the second warm ones
T, H = 24, 4


# ------------------------------------------------------------------------------------------------
# the calls each thread makes: four compiled programs in all (a scan loop, a scan loop with
# draws, a derivative, a jit function); everything else runs in python mode


def rnn_step(x, h, W):
    return np.tanh(x + h @ W)


def rnn(X, h0, W, mode=None):
    return ns.scan(rnn_step, sequences=X, outputs_info=h0, non_sequences=W, mode=mode)[0]


def loss(W, X, h0):
    hs, _ = ns.scan(rnn_step, sequences=X, outputs_info=h0, non_sequences=W)
    return (hs * hs).sum()


grad_loss = ns.grad(loss)


@ns.jit
def last_and_energy(X, h0, W):
    hs, _ = ns.scan(rnn_step, sequences=X, outputs_info=h0, non_sequences=W)
    return hs[-1], (hs * hs).sum()


def make_noisy(srng):
    def noisy(x, h):
        return 0.5 * h + x + 0.1 * srng.normal(h.shape)
    return noisy


def make_nested_noisy(srng):
    """A python-mode scan whose step runs a scan that draws: the inner scan's counters follow
    the outer one's."""
    def inner(h):
        return 0.9 * h + srng.uniform(h.shape)

    def outer(x, h):
        hs, _ = ns.scan(inner, outputs_info=h, n_steps=3)
        return 0.5 * hs[-1] + x
    return outer


def make_accumulating(acc):
    def step(x, h):
        return np.tanh(x + h), {acc: acc + h}
    return step


def job(k):
    """Thread k's calls (its own inputs, its own streams and shared variable), ROUNDS times:
    {name: array}."""
    rng = np.random.default_rng(1000 + k)
    X = rng.standard_normal((T, H))
    h0 = rng.standard_normal(H)
    W = 0.5 * rng.standard_normal((H, H))
    noisy_python = make_noisy(ns.RandomStreams(7 + k))
    noisy_cpu = make_noisy(ns.RandomStreams(7 + k))
    nested = make_nested_noisy(ns.RandomStreams(70 + k))
    acc = ns.shared(rng.standard_normal(H), "acc")
    accumulate = make_accumulating(acc)

    def shared_python():
        out, updates = ns.scan(accumulate, sequences=X, outputs_info=h0, mode="python")
        updates.apply()
        return out, acc.get_value()

    calls = [
        ("python", lambda: rnn(X, h0, W, "python")),
        ("cpu", lambda: rnn(X, h0, W, "cpu")),
        ("default", lambda: rnn(X, h0, W)),
        ("grad", lambda: grad_loss(W, X, h0)),
        ("jit", lambda: last_and_energy(X, h0, W)),
        ("noisy_python", lambda: ns.scan(noisy_python, X, h0, mode="python")[0]),
        ("noisy_cpu", lambda: ns.scan(noisy_cpu, X, h0, mode="cpu")[0]),
        ("nested_python", lambda: ns.scan(nested, X, h0, mode="python")[0]),
        ("shared_python", shared_python),
    ]
    calls = calls[k % len(calls):] + calls[:k % len(calls)]   # threads start on different calls
    results = {}
    for r in range(ROUNDS):
        for name, call in calls:
            out = call()
            for i, leaf in enumerate(out if isinstance(out, (tuple, list)) else [out]):
                results[f"t{k}-r{r}-{name}-{i}"] = np.asarray(leaf)
    return results


def run_threads():
    """Every thread's results, and the tracebacks of the calls that raised."""
    start = threading.Barrier(N_THREADS)
    results, errors = {}, []

    def work(k):
        try:
            start.wait()
            results.update(job(k))
        except BaseException:
            errors.append(f"thread {k}:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_threads_on_cold_caches(tmp_path):
    expected = {}
    for k in range(N_THREADS):                # the serial reference, first
        expected.update(job(k))
    cache = tempfile.mkdtemp(prefix="numbascan-threads-")
    try:
        out = tmp_path / "threaded.npz"
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(out)],
                              env=dict(os.environ, NUMBASCAN_CACHE_DIR=cache),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        with np.load(out) as got:
            assert sorted(got.files) == sorted(expected)
            wrong = [name for name in sorted(expected)
                     if got[name].dtype != expected[name].dtype
                     or not np.array_equal(got[name], expected[name])]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert not wrong, f"threaded results differ from serial ones: {wrong}"


# ------------------------------------------------------------------------------------------------
# one thread's python mode and traces are invisible to another


class _Stop(Exception):
    pass


def test_python_mode_and_traces_stay_in_their_thread(monkeypatch):
    monkeypatch.delenv("NUMBASCAN_MODE", raising=False)
    rng = np.random.default_rng(5)
    X, h0 = rng.standard_normal((3, 2)), rng.standard_normal(2)
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def blocking_python_step(x, h):
        seen["python step mode"] = choose_mode()
        inside.set()
        release.wait(10)
        return x + h

    def python_scan():
        try:
            seen["python result"] = ns.scan(blocking_python_step, X, h0, mode="python")[0]
        except BaseException as err:
            seen["python error"] = err
            inside.set()

    def default_step(x, h):
        seen["default step argument"] = type(x)
        raise _Stop                   # traced is all we need to know: nothing to compile

    def blocking_traced(x):
        seen["jit trace"] = current_trace()
        inside.set()
        release.wait(10)
        raise _Stop

    other = threading.Thread(target=python_scan)
    other.start()
    try:
        assert inside.wait(10)
        assert current_trace() is None
        assert choose_mode() == "cpu"
        try:
            ns.scan(default_step, X, h0)
        except _Stop:
            pass
    finally:
        release.set()
        other.join()
    assert "python error" not in seen, seen.get("python error")
    assert seen["python step mode"] == "python"
    np.testing.assert_allclose(seen["python result"], h0 + np.cumsum(X, axis=0))
    assert seen["default step argument"] is Tracer, \
        "a python-mode scan in another thread made this thread's scan run in python mode"

    # a trace open in one thread is not the current trace of another
    inside.clear()
    release.clear()

    def traced_call():
        try:
            ns.jit(blocking_traced)(X)
        except _Stop:
            pass

    other = threading.Thread(target=traced_call)
    other.start()
    try:
        assert inside.wait(10)
        assert seen["jit trace"] is not None
        assert current_trace() is None
    finally:
        release.set()
        other.join()


if __name__ == "__main__":
    got, errors = run_threads()
    np.savez(sys.argv[1], **got)
    if errors:
        sys.exit("\n".join(errors))
