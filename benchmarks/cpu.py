"""CPU benchmarks: numbascan against jax, pytensor, hand-written numba and Python.

    python benchmarks/cpu.py                 # every workload, full sizes, and benchmarks/results.png
    python benchmarks/cpu.py --only W1,W3    # a subset (--only M: every id starting with M)
    python benchmarks/cpu.py --quick         # small sizes: a smoke test of every peer
    python benchmarks/cpu.py --only F1C --f1c-h 1,4,16,64   # first calls against the LSTM's H

Each workload is a ``Workload`` (see ``_harness.py``): an input builder plus one builder per peer.
W1-W4 are single recurrences described by a ``ScanProblem``, from which the jax, pytensor, python
and numbascan peers are generated; the hand-written numba loop is written out for each. Other
kinds of workload (gradients, compile time, call overhead) can be added to ``WORKLOADS`` with
their own peer builders: G1 and G2 (reverse- and forward-mode derivatives of W1) do, and their times
are also shown relative to the same peer's W1 forward pass. L1 and KF1 time larger programs
shared with F1 (``programs.py``): an LSTM's states and a Kalman filter's log-likelihood, with
L1G and KF1G their value and gradient (``value_and_grad``), also shown relative to their forward
rows; ``--only L1,KF1`` selects all four. P1 is W4 on every core, with the peer
``numbascan-1core`` (the same call with ``NUMBASCAN_NUM_THREADS=1``); P1S the same step with a
scalar forcing per step, whose states stay in cache. O1 times tiny cached calls in
microseconds, J1 calls of an ``ns.jit`` function whose until-scan runs a different number of
steps at every call. Measurements made outside this process are ``Probe`` records in ``PROBES``: C1
(a new process to its first W1 result, with empty and with warm caches), F1 (a new process with
empty caches to the first result of larger programs: an LSTM (also at L1's sizes), a Lorenz
Jacobian, a Kalman filter's gradient (at KF1's sizes), P1's scan eagerly and in ``ns.jit`` at
T=50, a nested scan's gradient, the tour; F1C:
the LSTM against its hidden size, run only when named, ``--only F1C``) and M1, M2 (peak memory
of one call, each in its own process).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Mapping

import numba
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, REPO_ROOT)  # benchmark the checkout's numbascan, installed or not

# pytensor's C backend warns at first use when pip installed without a BLAS it can link to;
# the pytensor-cvm column then measures that configuration (see README.md).
warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")

from _harness import (Probe, Result, Skip, Workload, format_rows, machine_info,  # noqa: E402
                      probe_rows, run_probe, run_workload, size_label, time_callable,
                      time_per_call, workload_rows, write_chart, write_json)
from programs import (complex_step, kalman_inputs, kalman_loglik_python,  # noqa: E402
                      kalman_step, lstm_grad_python, lstm_inputs, lstm_states_python,
                      lstm_step, lstm_value_and_grad_python, with_numpy)

# Column order of the table; "python" is the reference every other peer is checked against.
PEERS = ["jax", "pytensor-numba", "pytensor-cvm", "numba-hand", "python", "numbascan",
         "numbascan-1core", "numbascan-jit"]
REFERENCE = "python"
RATIOS = [("numbascan", "jax"), ("numbascan", "numba-hand"), ("numbascan", "pytensor-numba"),
          ("numbascan", "python"), ("numbascan-1core", "numbascan")]


# ============================================================================================
# A single recurrence, in the shape every scan-like peer understands.


@dataclasses.dataclass(frozen=True)
class ScanProblem:
    """``fn(*sequence slices, *output taps, *non_sequences)``, Theano's argument order.

    Names refer to keys of the workload's input dict. ``taps`` are the output's (negative) taps;
    with taps other than ``(-1,)`` the initial value has a leading axis of length ``-min(taps)``.
    ``keep`` is ``"all"`` (every state, shape ``(n, *state)``) or ``"last"`` (the final state).
    """

    step_np: Callable  # written with numpy: used by python and numbascan
    step_jax: Callable  # the same with jax.numpy
    step_pt: Callable  # the same with pytensor.tensor
    sequences: tuple[str, ...]
    init: str
    non_sequences: tuple[str, ...]
    taps: tuple[int, ...] = (-1,)
    n_steps: str | None = None  # key of an int in the inputs, when there are no sequences
    keep: str = "all"

    @property
    def window(self) -> int:
        return max(-t for t in self.taps)


def _initial_window(p: ScanProblem, init):
    """The last ``p.window`` states, oldest first."""
    return [init] if p.taps == (-1,) else [init[k] for k in range(p.window)]


# --- python: the reference --------------------------------------------------------------------


def python_peer(p: ScanProblem):
    def build(inp):
        seqs = [inp[k] for k in p.sequences]
        init = inp[p.init]
        nons = [inp[k] for k in p.non_sequences]
        n = inp[p.n_steps] if p.n_steps else min(len(s) for s in seqs)
        L = p.window

        def run():
            window = _initial_window(p, init)
            out = None
            for t in range(n):
                new = p.step_np(*[s[t] for s in seqs], *[window[L + k] for k in p.taps], *nons)
                window = window[1:] + [new]
                if p.keep == "all":
                    if out is None:
                        out = np.empty((n,) + np.shape(new), dtype=np.result_type(new))
                    out[t] = new
            return window[-1] if p.keep == "last" else out

        return run

    return build


# --- jax: jax.jit(lax.scan) on the CPU, float64 -------------------------------------------------


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jax, jnp


def jax_peer(p: ScanProblem):
    def build(inp):
        jax, _ = _jax()
        cpu = jax.devices("cpu")[0]
        seqs = tuple(jax.device_put(inp[k], cpu) for k in p.sequences)
        init = jax.device_put(inp[p.init], cpu)
        nons = tuple(jax.device_put(inp[k], cpu) for k in p.non_sequences)
        n = inp[p.n_steps] if p.n_steps else None
        L = p.window

        @jax.jit
        def run(seqs, init, nons):
            def body(window, xs):
                new = p.step_jax(*(xs or ()), *[window[L + k] for k in p.taps], *nons)
                return window[1:] + (new,), (new if p.keep == "all" else None)

            window0 = tuple(_initial_window(p, init))
            window, ys = jax.lax.scan(body, window0, seqs or None, length=n)
            return window[-1] if p.keep == "last" else ys

        return lambda: run(seqs, init, nons).block_until_ready()

    return build


# --- pytensor: pytensor.scan, compiled in a given mode ------------------------------------------


def pytensor_peer(p: ScanProblem, mode: str):
    def build(inp):
        import inspect

        import pytensor
        import pytensor.tensor as pt

        names = [*p.sequences, p.init, *p.non_sequences]
        sym = {k: pt.tensor(name=k, dtype=np.asarray(inp[k]).dtype,
                            shape=(None,) * np.ndim(inp[k])) for k in names}
        init = sym[p.init] if p.taps == (-1,) else dict(initial=sym[p.init], taps=list(p.taps))
        kwargs = dict(sequences=[sym[k] for k in p.sequences], outputs_info=[init],
                      non_sequences=[sym[k] for k in p.non_sequences])
        if p.n_steps:
            kwargs["n_steps"] = inp[p.n_steps]
        if "return_updates" in inspect.signature(pytensor.scan).parameters:
            out = pytensor.scan(p.step_pt, return_updates=False, **kwargs)
        else:
            out, _ = pytensor.scan(p.step_pt, **kwargs)
        if p.keep == "last":
            out = out[-1]
        f = pytensor.function([sym[k] for k in names], out, mode=mode)
        args = [inp[k] for k in names]
        return lambda: f(*args)

    return build


# --- numbascan ----------------------------------------------------------------------------------


def _numbascan():
    import importlib.util

    try:
        import numbascan as ns
    except ImportError as e:
        if importlib.util.find_spec("numbascan") is None:
            raise  # not installed: the peer is skipped
        raise RuntimeError(f"numbascan is present but fails to import: {e}") from e
    return ns


def _numbascan_call(ns, step, taps, keep, seqs, init, nons, n, mode):
    """One ``ns.scan`` (``ns.foldl`` for the last state of a scan over sequences). Takes the
    problem's fields, not the ``ScanProblem``: a function traced by ``ns.jit`` that sees an
    object of another kind by name is traced again at every call (numbascan's trace cache)."""
    outputs_info = init if taps == (-1,) else [dict(initial=init, taps=list(taps))]
    sequences = None if not seqs else seqs[0] if len(seqs) == 1 else list(seqs)
    if keep == "last" and sequences is not None:
        last, _ = ns.foldl(step, sequences=sequences, outputs_info=outputs_info,
                           non_sequences=list(nons), mode=mode)
        return last
    out, _ = ns.scan(step, sequences=sequences, outputs_info=outputs_info,
                     non_sequences=list(nons), n_steps=n, mode=mode)
    return out[-1] if keep == "last" else out


def numbascan_peer(p: ScanProblem):
    """Eager ``ns.scan`` / ``ns.foldl`` on NumPy inputs (every call goes through the Python API)."""

    def build(inp):
        ns = _numbascan()
        seqs = [inp[k] for k in p.sequences]
        init = inp[p.init]
        nons = [inp[k] for k in p.non_sequences]
        n = inp[p.n_steps] if p.n_steps else None
        return lambda: _numbascan_call(ns, p.step_np, p.taps, p.keep, seqs, init, nons, n,
                                       mode="cpu")

    return build


def numbascan_jit_peer(p: ScanProblem):
    """The same scan inside a function compiled with ``ns.jit``."""

    def build(inp):
        ns = _numbascan()
        if not hasattr(ns, "jit"):
            raise Skip("numbascan.jit is not available")
        n_seq, n = len(p.sequences), (inp[p.n_steps] if p.n_steps else None)
        step, taps, keep = p.step_np, p.taps, p.keep

        def run(*arrays):
            seqs, init, nons = arrays[:n_seq], arrays[n_seq], arrays[n_seq + 1:]
            return _numbascan_call(ns, step, taps, keep, seqs, init, nons, n, mode=None)

        jitted = ns.jit(run)
        args = [*[inp[k] for k in p.sequences], inp[p.init], *[inp[k] for k in p.non_sequences]]
        return lambda: jitted(*args)

    return build


# --- all peers of one problem -------------------------------------------------------------------


def hand_peer(fn, *argnames: str):
    """A hand-written ``@numba.njit`` function called with the named inputs."""

    def build(inp):
        args = [inp[k] for k in argnames]
        return lambda: fn(*args)

    return build


def scan_peers(p: ScanProblem, numba_hand) -> dict[str, Callable[[dict], Callable[[], Any]]]:
    return {
        "jax": jax_peer(p),
        "pytensor-numba": pytensor_peer(p, "NUMBA"),
        "pytensor-cvm": pytensor_peer(p, "CVM"),
        "numba-hand": numba_hand,
        "python": python_peer(p),
        "numbascan": numbascan_peer(p),
        "numbascan-jit": numbascan_jit_peer(p),
    }


def _tanh_pt(x):
    import pytensor.tensor as pt

    return pt.tanh(x)


def _tanh_jax(x):
    import jax.numpy as jnp

    return jnp.tanh(x)


# ============================================================================================
# W1, W2: RNN  h = tanh(h @ W + x_t @ U + b), all states kept


def rnn_step(x_t, h, W, U, b):
    return np.tanh(h @ W + x_t @ U + b)


@numba.njit
def rnn_numba(X, h0, W, U, b):
    out = np.empty((X.shape[0], h0.shape[0]))
    h = h0
    for t in range(X.shape[0]):
        h = np.tanh(h @ W + X[t] @ U + b)
        out[t] = h
    return out


def rnn_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    T, H = sizes["T"], sizes["H"]
    return {
        "X": rng.standard_normal((T, H)),
        "h0": 0.1 * rng.standard_normal(H),
        # spectral radius ~0.5: a contracting recurrence, so rounding differences do not grow
        "W": rng.standard_normal((H, H)) * (0.5 / np.sqrt(H)),
        "U": rng.standard_normal((H, H)) / np.sqrt(H),
        "b": 0.1 * rng.standard_normal(H),
    }


RNN = ScanProblem(
    step_np=rnn_step,
    step_jax=lambda x_t, h, W, U, b: _tanh_jax(h @ W + x_t @ U + b),
    step_pt=lambda x_t, h, W, U, b: _tanh_pt(h @ W + x_t @ U + b),
    sequences=("X",), init="h0", non_sequences=("W", "U", "b"),
)
RNN_PEERS = scan_peers(RNN, hand_peer(rnn_numba, "X", "h0", "W", "U", "b"))


# ============================================================================================
# W3: the seed's taps recurrence  x(t) = x(t-2) @ U + x(t-1) @ V + tanh(x(t-1) @ W + b)


def taps_step(x_tm2, x_tm1, U, V, W, b):
    return x_tm2 @ U + x_tm1 @ V + np.tanh(x_tm1 @ W + b)


@numba.njit
def taps_numba(X0, U, V, W, b, n):
    out = np.empty((n, X0.shape[1]))
    x_tm2 = X0[0]
    x_tm1 = X0[1]
    for t in range(n):
        x = x_tm2 @ U + x_tm1 @ V + np.tanh(x_tm1 @ W + b)
        out[t] = x
        x_tm2 = x_tm1
        x_tm1 = x
    return out


def taps_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    return {
        "X0": rng.standard_normal((2, 2)),  # X0[0] plays x(-2), X0[1] plays x(-1)
        # small non-negative U, V (row sums <= 0.3): the linear part is stable over 1e5 steps
        "U": 0.3 * rng.random((2, 2)) / 2,
        "V": 0.3 * rng.random((2, 2)) / 2,
        "W": rng.standard_normal((2, 2)),
        "b": 0.1 * rng.standard_normal(2),
        "n": sizes["n"],
    }


TAPS = ScanProblem(
    step_np=taps_step,
    step_jax=lambda x_tm2, x_tm1, U, V, W, b: x_tm2 @ U + x_tm1 @ V + _tanh_jax(x_tm1 @ W + b),
    step_pt=lambda x_tm2, x_tm1, U, V, W, b: x_tm2 @ U + x_tm1 @ V + _tanh_pt(x_tm1 @ W + b),
    sequences=(), init="X0", non_sequences=("U", "V", "W", "b"), taps=(-2, -1), n_steps="n",
)


# ============================================================================================
# W4: elementwise  x = a * x * (1 - x) + s_t, last state only


def logistic_step(s_t, x, a):
    return a * x * (1 - x) + s_t


@numba.njit
def logistic_numba(S, x0, a):
    x = x0
    for t in range(S.shape[0]):
        x = a * x * (1 - x) + S[t]
    return x


def logistic_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    T, N = sizes["T"], sizes["N"]
    return {
        "S": 1e-3 * rng.random((T, N)),  # small forcing: x stays in (0, 1)
        "x0": rng.uniform(0.1, 0.9, N),
        "a": np.float64(2.5),  # fixed point 0.6, contracting (slope -0.5)
    }


LOGISTIC = ScanProblem(
    step_np=logistic_step,
    step_jax=logistic_step,  # operators only: the same code works for every array type
    step_pt=logistic_step,
    sequences=("S",), init="x0", non_sequences=("a",), keep="last",
)


# ============================================================================================
# P1, P1S: W4 on every core against one core
#   P1: W4 itself (s_t a row of N values per step: 800 MB read from memory at each call, so
#   the memory bus bounds it); P1S: the same step with s_t a scalar per step (the states stay
#   in cache from one step to the next: the arithmetic bounds it)
# "numbascan" runs the scan by chunks of its state on every core (codegen/chunks.py),
# "numbascan-1core" is the same call with NUMBASCAN_NUM_THREADS=1 (read at each call).


def one_core(build):
    """The peer ``build`` with ``NUMBASCAN_NUM_THREADS=1`` around each call."""

    def wrapped(inp):
        call = build(inp)

        def run():
            previous = os.environ.get("NUMBASCAN_NUM_THREADS")
            os.environ["NUMBASCAN_NUM_THREADS"] = "1"
            try:
                return call()
            finally:
                if previous is None:
                    del os.environ["NUMBASCAN_NUM_THREADS"]
                else:
                    os.environ["NUMBASCAN_NUM_THREADS"] = previous

        return run

    return wrapped


def logistic_scalar_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    """W4's inputs with one forcing value per step (shape (T,)) instead of one per element."""
    inp = logistic_inputs({"T": 1, "N": sizes["N"]}, rng)
    inp["S"] = 1e-3 * rng.random(sizes["T"])
    return inp


P1_PEERS = {**scan_peers(LOGISTIC, hand_peer(logistic_numba, "S", "x0", "a")),
            "numbascan-1core": one_core(numbascan_peer(LOGISTIC))}


# ============================================================================================
# G1, G2: derivatives of the W1 RNN
#   G1 (reverse mode): d sum(h) / d W, where h is every state of W1's scan
#   G2 (forward mode): the states and their tangents along v, for a change of h0 (a jvp)
# Every peer computes the same thing; the python peer is the hand-written NumPy derivative
# (backpropagation through time for G1, tangents carried along the loop for G2).


def grad_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    inp = rnn_inputs(sizes, rng)  # the same arrays as W1 for the same seed
    inp["v"] = rng.standard_normal(sizes["H"])  # G2's tangent for h0
    return inp


def rnn_grad_W_python(X, h0, W, U, b):
    hs = np.empty((X.shape[0], h0.shape[0]))
    h = h0
    for t in range(X.shape[0]):
        h = np.tanh(h @ W + X[t] @ U + b)
        hs[t] = h
    gW = np.zeros_like(W)
    gh = np.zeros_like(h0)  # d loss / d h(t), from the steps after t
    for t in range(X.shape[0] - 1, -1, -1):
        ga = (gh + 1.0) * (1.0 - hs[t] ** 2)  # d loss / d (pre-activation of step t)
        gW += np.outer(hs[t - 1] if t > 0 else h0, ga)
        gh = W @ ga
    return gW


rnn_grad_W_numba = numba.njit(rnn_grad_W_python)


def rnn_jvp_h0_python(X, h0, v, W, U, b):
    out = np.empty((X.shape[0], h0.shape[0]))
    tan = np.empty((X.shape[0], h0.shape[0]))
    h, dh = h0, v
    for t in range(X.shape[0]):
        h = np.tanh(h @ W + X[t] @ U + b)
        dh = (1.0 - h * h) * (dh @ W)
        out[t] = h
        tan[t] = dh
    return out, tan


rnn_jvp_h0_numba = numba.njit(rnn_jvp_h0_python)

_RNN_ARGS = ("h0", "W", "U", "b", "X")


def _ns_rnn_states(ns):
    def states(h0, W, U, b, X):
        hs, _ = ns.scan(rnn_step, sequences=X, outputs_info=h0, non_sequences=[W, U, b])
        return hs
    return states


def _ns_rnn_loss(ns):
    states = _ns_rnn_states(ns)

    def loss(h0, W, U, b, X):
        return np.sum(states(h0, W, U, b, X))
    return loss


def g1_numbascan(jit: bool):
    """Eager ``ns.grad(loss, 1)(h0, W, U, b, X)``, or the same call inside ``ns.jit``."""

    def build(inp):
        ns = _numbascan()
        if not hasattr(ns, "grad"):
            raise Skip("numbascan.grad is not available")
        grad_W = ns.grad(_ns_rnn_loss(ns), 1)
        if jit:
            grad_W = ns.jit(grad_W)
        args = [inp[k] for k in _RNN_ARGS]
        return lambda: grad_W(*args)

    return build


def g2_numbascan(jit: bool):
    """``ns.jvp`` of the states as a function of h0 (W, U, b, X read from the closure)."""

    def build(inp):
        ns = _numbascan()
        if not hasattr(ns, "jvp"):
            raise Skip("numbascan.jvp is not available")
        states = _ns_rnn_states(ns)

        def jvp_h0(h0, v, W, U, b, X):
            return ns.jvp(lambda h: states(h, W, U, b, X), (h0,), (v,))

        if jit:
            jvp_h0 = ns.jit(jvp_h0)
        args = [inp[k] for k in ("h0", "v", "W", "U", "b", "X")]
        return lambda: tuple(jvp_h0(*args))

    return build


def _jax_rnn_states(jax):
    def states(h0, W, U, b, X):
        def body(h, x_t):
            h = RNN.step_jax(x_t, h, W, U, b)
            return h, h

        _, hs = jax.lax.scan(body, h0, X)
        return hs
    return states


def _jax_args(jax, inp, names):
    cpu = jax.devices("cpu")[0]
    return [jax.device_put(inp[k], cpu) for k in names]


def g1_jax(inp):
    jax, jnp = _jax()
    states = _jax_rnn_states(jax)
    grad_W = jax.jit(jax.grad(lambda h0, W, U, b, X: jnp.sum(states(h0, W, U, b, X)), 1))
    args = _jax_args(jax, inp, _RNN_ARGS)
    return lambda: grad_W(*args).block_until_ready()


def g2_jax(inp):
    jax, _ = _jax()
    states = _jax_rnn_states(jax)

    @jax.jit
    def jvp_h0(h0, v, W, U, b, X):
        return jax.jvp(lambda h: states(h, W, U, b, X), (h0,), (v,))

    args = _jax_args(jax, inp, ("h0", "v", "W", "U", "b", "X"))
    return lambda: jax.block_until_ready(jvp_h0(*args))


def _pytensor_rnn(inp):
    """Symbolic inputs (by name) and the symbolic states of W1's scan."""
    import inspect

    import pytensor
    import pytensor.tensor as pt

    sym = {k: pt.tensor(name=k, dtype=inp[k].dtype, shape=(None,) * inp[k].ndim)
           for k in ("h0", "v", "W", "U", "b", "X")}
    kwargs = dict(sequences=[sym["X"]], outputs_info=[sym["h0"]],
                  non_sequences=[sym["W"], sym["U"], sym["b"]])
    if "return_updates" in inspect.signature(pytensor.scan).parameters:
        hs = pytensor.scan(RNN.step_pt, return_updates=False, **kwargs)
    else:
        hs, _ = pytensor.scan(RNN.step_pt, **kwargs)
    return sym, hs


def g1_pytensor(mode: str):
    def build(inp):
        import pytensor

        sym, hs = _pytensor_rnn(inp)
        g = pytensor.grad(hs.sum(), sym["W"])
        f = pytensor.function([sym[k] for k in _RNN_ARGS], g, mode=mode)
        args = [inp[k] for k in _RNN_ARGS]
        return lambda: f(*args)

    return build


def g2_pytensor(mode: str):
    """``pytensor.gradient.pushforward`` (``Rop`` before it existed). Scan's graph contains
    ``Matmul``, which has no forward-mode rule, so this is PyTensor's default: the pushforward
    computed as a pullback of a pullback."""

    def build(inp):
        import pytensor
        import pytensor.gradient as pg

        sym, hs = _pytensor_rnn(inp)
        if hasattr(pg, "pushforward"):
            tan = pg.pushforward(hs, sym["h0"], sym["v"])
        elif hasattr(pg, "Rop"):
            tan = pg.Rop(hs, sym["h0"], sym["v"])
        else:
            raise Skip("pytensor has neither gradient.pushforward nor gradient.Rop")
        names = ("h0", "v", "W", "U", "b", "X")
        f = pytensor.function([sym[k] for k in names], [hs, tan], mode=mode)
        args = [inp[k] for k in names]
        return lambda: tuple(f(*args))

    return build


def _np_call(fn, *names):
    def build(inp):
        args = [inp[k] for k in names]
        return lambda: fn(*args)

    return build


G1_PEERS = {
    "jax": g1_jax,
    "pytensor-numba": g1_pytensor("NUMBA"),
    "pytensor-cvm": g1_pytensor("CVM"),
    "numba-hand": _np_call(rnn_grad_W_numba, "X", "h0", "W", "U", "b"),
    "python": _np_call(rnn_grad_W_python, "X", "h0", "W", "U", "b"),
    "numbascan": g1_numbascan(jit=False),
    "numbascan-jit": g1_numbascan(jit=True),
}
G2_PEERS = {
    "jax": g2_jax,
    "pytensor-numba": g2_pytensor("NUMBA"),
    "pytensor-cvm": g2_pytensor("CVM"),
    "numba-hand": _np_call(rnn_jvp_h0_numba, "X", "h0", "v", "W", "U", "b"),
    "python": _np_call(rnn_jvp_h0_python, "X", "h0", "v", "W", "U", "b"),
    "numbascan": g2_numbascan(jit=False),
    "numbascan-jit": g2_numbascan(jit=True),
}

# Derivative workloads whose time is also reported relative to the same peer's forward pass:
# {derivative workload: forward workload on the same inputs}.
FORWARD_OF = {"G1": "W1", "G2": "W1", "L1G": "L1", "KF1G": "KF1"}


# ============================================================================================
# L1, L1G: the LSTM of F1 (programs.py) at a larger size
#   L1: every h over T steps of D inputs, H units; L1G: sum(hs ** 2) and its gradient w.r.t.
#   (Wx, Wh, b)
# KF1, KF1G: the Kalman filter of F1 (programs.py), 4 states, 2 observations
#   KF1: the log-likelihood of T observations; KF1G: it and its gradient w.r.t. (A, Q, R, C)
# The gradient rows compute the value and the gradient in one call (what an optimiser calls:
# jax.value_and_grad, ns.value_and_grad); every peer returns them as one flat vector. The python
# peer is the reference: NumPy loops; for L1G backpropagation through time written out, for
# KF1G complex-step derivatives (one complex forward pass per entry of A, Q, R and C, 44 in all,
# exact to rounding: a reference for the agreement check more than a rival). Neither has a
# hand-written numba loop or a pytensor graph here.

L1_SIZES, L1_QUICK_SIZES = {"T": 1000, "D": 32, "H": 64}, {"T": 100, "D": 8, "H": 16}
KF1_SIZES, KF1_QUICK_SIZES = {"n": 4, "k": 2, "T": 1000}, {"n": 4, "k": 2, "T": 100}
_LSTM_ARGS = ("Wx", "Wh", "b", "X", "h0", "c0")
_LSTM_WRT = (0, 1, 2)
_KALMAN_ARGS = ("A", "Q", "R", "C", "Y", "m0", "P0")
_KALMAN_WRT = (0, 1, 2, 3)


def _flat(result) -> np.ndarray:
    """A number, an array or (nested) tuples of them, as one float64 vector."""
    if isinstance(result, (tuple, list)):
        return np.concatenate([_flat(part) for part in result])
    return np.ravel(np.asarray(result, dtype=np.float64))


def _ns_lstm(ns):
    """(states, loss) of the LSTM written with ``ns.scan``."""
    def states(Wx, Wh, b, X, h0, c0):
        (hs, _), _ = ns.scan(lstm_step, sequences=X, outputs_info=[h0, c0],
                             non_sequences=[Wx, Wh, b])
        return hs

    def loss(Wx, Wh, b, X, h0, c0):
        return (states(Wx, Wh, b, X, h0, c0) ** 2).sum()
    return states, loss


def _jax_lstm(jax):
    """(states, loss) of the same LSTM with ``jax.lax.scan``."""
    step = with_numpy(lstm_step, jax.numpy)

    def states(Wx, Wh, b, X, h0, c0):
        def body(carry, x_t):
            h, c = step(x_t, carry[0], carry[1], Wx, Wh, b)
            return (h, c), h
        return jax.lax.scan(body, (h0, c0), X)[1]

    def loss(Wx, Wh, b, X, h0, c0):
        return (states(Wx, Wh, b, X, h0, c0) ** 2).sum()
    return states, loss


def _ns_kalman_loglik(ns):
    def loglik(A, Q, R, C, Y, m0, P0):
        (_, _, lls), _ = ns.scan(kalman_step, sequences=Y, outputs_info=[m0, P0, np.zeros(())],
                                 non_sequences=[A, Q, C, R])
        return lls[-1]
    return loglik


def _jax_kalman_loglik(jax):
    step = with_numpy(kalman_step, jax.numpy)

    def loglik(A, Q, R, C, Y, m0, P0):
        def body(carry, y_t):
            return step(y_t, *carry, A, Q, C, R), None
        return jax.lax.scan(body, (m0, P0, jax.numpy.zeros(())), Y)[0][2]
    return loglik


def numbascan_program(make, names, wrt=None, jit=False):
    """``make(ns)`` (a function of the named inputs) called eagerly, or its
    ``ns.value_and_grad`` w.r.t. the positions ``wrt``; inside ``ns.jit`` with ``jit``."""

    def build(inp):
        ns = _numbascan()
        fn = make(ns) if wrt is None else ns.value_and_grad(make(ns), wrt)
        if jit:
            fn = ns.jit(fn)
        args = [inp[k] for k in names]
        return lambda: _flat(fn(*args))

    return build


def jax_program(make, names, wrt=None):
    """``jax.jit`` of ``make(jax)``, or of its ``jax.value_and_grad`` w.r.t. ``wrt``."""

    def build(inp):
        jax, _ = _jax()
        fn = make(jax) if wrt is None else jax.value_and_grad(make(jax), wrt)
        fn = jax.jit(fn)
        args = _jax_args(jax, inp, names)
        return lambda: _flat(jax.block_until_ready(fn(*args)))

    return build


def kalman_value_and_grad_python(A, Q, R, C, Y, m0, P0):
    args = (A, Q, R, C, Y, m0, P0)
    return (kalman_loglik_python(*args),
            tuple(complex_step(kalman_loglik_python, args, _KALMAN_WRT)))


def _flat_call(fn, *names):
    def build(inp):
        args = [inp[k] for k in names]
        return lambda: _flat(fn(*args))

    return build


def _not_written(reason: str):
    def build(inp):
        raise Skip(reason)

    return build


_NO_HAND = {"numba-hand": _not_written("no hand-written numba loop for this workload"),
            "pytensor-numba": _not_written("no pytensor graph for this workload"),
            "pytensor-cvm": _not_written("no pytensor graph for this workload")}
L1_PEERS = {
    "jax": jax_program(lambda jax: _jax_lstm(jax)[0], _LSTM_ARGS),
    "python": _flat_call(lstm_states_python, *_LSTM_ARGS),
    "numbascan": numbascan_program(lambda ns: _ns_lstm(ns)[0], _LSTM_ARGS),
    "numbascan-jit": numbascan_program(lambda ns: _ns_lstm(ns)[0], _LSTM_ARGS, jit=True),
    **_NO_HAND,
}
L1G_PEERS = {
    "jax": jax_program(lambda jax: _jax_lstm(jax)[1], _LSTM_ARGS, _LSTM_WRT),
    "python": _flat_call(lstm_value_and_grad_python, *_LSTM_ARGS),
    "numbascan": numbascan_program(lambda ns: _ns_lstm(ns)[1], _LSTM_ARGS, _LSTM_WRT),
    "numbascan-jit": numbascan_program(lambda ns: _ns_lstm(ns)[1], _LSTM_ARGS, _LSTM_WRT,
                                       jit=True),
    **_NO_HAND,
}
KF1_PEERS = {
    "jax": jax_program(_jax_kalman_loglik, _KALMAN_ARGS),
    "python": _flat_call(kalman_loglik_python, *_KALMAN_ARGS),
    "numbascan": numbascan_program(_ns_kalman_loglik, _KALMAN_ARGS),
    "numbascan-jit": numbascan_program(_ns_kalman_loglik, _KALMAN_ARGS, jit=True),
    **_NO_HAND,
}
KF1G_PEERS = {
    "jax": jax_program(_jax_kalman_loglik, _KALMAN_ARGS, _KALMAN_WRT),
    "python": _flat_call(kalman_value_and_grad_python, *_KALMAN_ARGS),
    "numbascan": numbascan_program(_ns_kalman_loglik, _KALMAN_ARGS, _KALMAN_WRT),
    "numbascan-jit": numbascan_program(_ns_kalman_loglik, _KALMAN_ARGS, _KALMAN_WRT,
                                       jit=True),
    **_NO_HAND,
}


# ============================================================================================
# O1: the cost of a cached call, on W1's RNN at T=10, H=4. The numbascan peers call ns.scan as
# a user would write it, with no helper between the call and the scan.


def o1_numbascan(jit: bool):
    """Eager ``ns.scan(rnn_step, ...)``, or a function calling it compiled with ``ns.jit``."""

    def build(inp):
        ns = _numbascan()
        X, h0, W, U, b = (inp[k] for k in ("X", "h0", "W", "U", "b"))
        if not jit:
            return lambda: ns.scan(rnn_step, sequences=X, outputs_info=h0,
                                   non_sequences=[W, U, b], mode="cpu")[0]

        @ns.jit
        def rnn_states(X, h0, W, U, b):
            return ns.scan(rnn_step, sequences=X, outputs_info=h0, non_sequences=[W, U, b])[0]

        return lambda: rnn_states(X, h0, W, U, b)

    return build


O1_PEERS = {**RNN_PEERS, "numbascan": o1_numbascan(jit=False),
            "numbascan-jit": o1_numbascan(jit=True)}


# ============================================================================================
# J1: an ns.jit function whose until-scan runs a different number of steps at every call.
# A random walk x(t) = x(t-1) + d_t stops with ns.until in the step where |x| leaves a band;
# the inputs are increment sequences whose walks all stop after different numbers of steps.
# Such a call should cost what O1's cached call costs: the trip count is data, not part of the
# program. The figure is the median of calls that each run a number of steps the function has
# not run before (in this process, and, for numbascan, with an empty on-disk cache: the fixed
# seed gives every run of the benchmark the same trip counts, which a user's data would not).


def walk_limit(T: int) -> float:
    """Half-width of the band: a walk of standard normal steps leaves it after ~T/4 steps."""
    return 0.5 * math.sqrt(T)


def walk_python(D, x0, limit):
    """The reference: the last state and the number of steps run (the step that left the band
    is kept, as with ns.until)."""
    x, n = x0, 0
    for t in range(D.shape[0]):
        x = x + D[t]
        n = t + 1
        if abs(x) > limit:
            break
    return x, n


@numba.njit
def walk_numba(D, x0, limit):
    x, n = x0, 0
    for t in range(D.shape[0]):
        x = x + D[t]
        n = t + 1
        if abs(x) > limit:
            break
    return x, n


def walk_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    """``sizes["inputs"]`` increment sequences of length T (the bound on the steps) whose walks
    leave the band before T steps, each after a number of steps no other one has."""
    T, count = sizes["T"], sizes["inputs"]
    x0, limit = np.array(0.0), np.array(walk_limit(T))
    Ds, trips = [], []
    for _ in range(200 * count):
        D = rng.standard_normal(T)
        n = walk_python(D, x0, limit)[1]
        if n < T and n not in trips:
            Ds.append(D)
            trips.append(n)
            if len(Ds) == count:
                break
    else:
        raise RuntimeError(f"J1: found only {len(Ds)} walks with distinct trip counts")
    return {"Ds": Ds, "x0": x0, "limit": limit, "trips": trips}


# {peer: figures of the J1 timer}, printed under the table.
J1_REPORT: dict[str, dict[str, Any]] = {}
# NUMBASCAN_CACHE_DIR as it was before J1's builders changed it ([] when unchanged), and the
# folders they made.
_J1_ENV: list[str | None] = []
_J1_DIRS: list[str] = []


def _j1_empty_cache():
    """Point numbascan's on-disk cache at a new empty folder until ``j1_restore_env``."""
    import tempfile

    if not _J1_ENV:
        _J1_ENV.append(os.environ.get("NUMBASCAN_CACHE_DIR"))
    _J1_DIRS.append(tempfile.mkdtemp(prefix="numbascan-j1-"))
    os.environ["NUMBASCAN_CACHE_DIR"] = _J1_DIRS[-1]


def j1_restore_env():
    """Undo ``_j1_empty_cache`` and delete its folders; a no-op when nothing was changed."""
    import shutil

    if _J1_ENV:
        old = _J1_ENV.pop()
        if old is None:
            os.environ.pop("NUMBASCAN_CACHE_DIR", None)
        else:
            os.environ["NUMBASCAN_CACHE_DIR"] = old
    while _J1_DIRS:
        shutil.rmtree(_J1_DIRS.pop(), ignore_errors=True)


def _trace_counter():
    """A class whose attribute ``n`` counts runs of a Python body that numbascan or jax only runs
    while tracing. A class, because numbascan's trace cache keys a class a function can see by
    identity: a count kept in a list or a closure's int would be part of the key, and changing
    it would itself force a retrace."""
    return type("TraceCount", (), {"n": 0})


class _Cycle:
    """``call()`` runs ``fn`` on the next prepared input (cycling through them) and keeps the
    first result of each for the agreement check."""

    def __init__(self, peer, fn, args, inp, counter=None):
        self.peer, self.fn, self.args, self.inp, self.counter = peer, fn, args, inp, counter
        self.k = 0
        self.first = [None] * len(args)
        self.first_call_s = None  # the first call alone (compilation included), in seconds
        self._built = time.perf_counter()

    def __call__(self):
        k = self.k
        self.k = k + 1 if k + 1 < len(self.args) else 0
        out = self.fn(*self.args[k])
        if self.first[k] is None:
            self.first[k] = out
            if self.first_call_s is None:
                self.first_call_s = time.perf_counter() - self._built
        return out

    def traces(self):
        return None if self.counter is None else self.counter.n

    def check(self, again=False, rtol=1e-8, atol=1e-12):
        """Every input's first result (``again``: a new call on it) against the reference;
        raises on a difference."""
        for k, out in enumerate(self.first):
            if again:
                out = self.fn(*self.args[k])
            ref = np.asarray(walk_python(self.inp["Ds"][k], self.inp["x0"], self.inp["limit"]),
                             dtype=np.float64)
            got = np.asarray(out, dtype=np.float64)
            if got.shape != ref.shape or not np.allclose(got, ref, rtol=rtol, atol=atol):
                raise RuntimeError(f"MISMATCH on input {k} of {len(self.first)}"
                                   f"{' (called again)' if again else ''}: (last state, steps) "
                                   f"{got.tolist()} != reference {ref.tolist()}")


def j1_timer(call: _Cycle) -> tuple[float, int]:
    """The table's figure: the median of one call on each input not run yet (the harness's
    warm-up call ran the first), each timed alone, every one a trip count new to the function.
    Then every input's result is checked, and calls cycling through the inputs again (trip
    counts run before) are timed as O1's are (``time_per_call``), or, when a call takes over a
    millisecond, as the workload rows' (``time_callable``); those go to the J1 report. Last,
    one more call on every input is checked (a cache must not hand back another input's
    result)."""
    try:
        first_traces = call.traces()
        new_s = []
        for _ in range(len(call.args) - 1):
            t0 = time.perf_counter()
            call()
            new_s.append(time.perf_counter() - t0)
        call.check()
        new_traces = None if first_traces is None else call.traces() - first_traces
        before = call.traces()
        new_med = statistics.median(new_s)
        again_med, again_n = (time_callable if new_med > 1e-3 else time_per_call)(call)
        again_traces = None if before is None else call.traces() - before
        call.check(again=True)
        J1_REPORT[call.peer] = {
            "first_call_s": call.first_call_s, "first_traces": first_traces,
            "new_calls": len(new_s), "new_s": new_med, "new_traces": new_traces,
            "again_calls": again_n, "again_s": again_med,
            "again_traces": again_traces}
    finally:
        j1_restore_env()
    return new_med, len(new_s)


def _j1_args(inp):
    return [(D, inp["x0"], inp["limit"]) for D in inp["Ds"]]


def j1_python(inp):
    return _Cycle("python", walk_python, _j1_args(inp), inp)


def j1_numba(inp):
    args = [(D, float(x0), float(limit)) for D, x0, limit in _j1_args(inp)]
    return _Cycle("numba-hand", walk_numba, args, inp)


def j1_numbascan(jit: bool):
    """Eager ``ns.scan`` with ``ns.until`` (its step counts its traces), or an ``ns.jit``
    function doing that scan and returning the last state and the number of steps (the
    function's body counts its traces)."""

    def build(inp):
        ns = _numbascan()
        if jit and not hasattr(ns, "jit"):
            raise Skip("numbascan.jit is not available")
        counter = _trace_counter()

        def walk_step(d_t, x, limit):
            x = x + d_t
            return x, ns.until(np.abs(x) > limit)

        def counted_step(d_t, x, limit):  # the eager peer's step: counts its traces
            counter.n += 1
            return walk_step(d_t, x, limit)

        if jit:
            @ns.jit
            def walk(D, x0, limit):
                counter.n += 1
                xs, _ = ns.scan(walk_step, sequences=D, outputs_info=x0, non_sequences=limit)
                return xs[-1], xs.shape[0]
        else:
            def walk(D, x0, limit):
                xs, _ = ns.scan(counted_step, sequences=D, outputs_info=x0,
                                non_sequences=limit, mode="cpu")
                return xs[-1], xs.shape[0]

        _j1_empty_cache()
        return _Cycle("numbascan-jit" if jit else "numbascan", walk, _j1_args(inp), inp,
                      counter)

    return build


def j1_jax(inp):
    """``jax.jit`` of ``lax.while_loop``: the carry holds the step count and whether the last
    step left the band."""
    jax, jnp = _jax()
    cpu = jax.devices("cpu")[0]
    counter = _trace_counter()

    @jax.jit
    def walk(D, x0, limit):
        counter.n += 1

        def cond(carry):
            t, _, out = carry
            return (t < D.shape[0]) & ~out

        def body(carry):
            t, x, _ = carry
            x = x + D[t]
            return t + 1, x, jnp.abs(x) > limit

        t, x, _ = jax.lax.while_loop(cond, body, (jnp.int64(0), x0, jnp.bool_(False)))
        return x, t

    args = [tuple(jax.device_put(a, cpu) for a in arg) for arg in _j1_args(inp)]
    return _Cycle("jax", lambda *a: jax.block_until_ready(walk(*a)), args, inp, counter)


def _j1_not_written(inp):
    raise Skip("no J1 builder for this peer")


J1_PEERS = {
    "jax": j1_jax,
    "pytensor-numba": _j1_not_written,
    "pytensor-cvm": _j1_not_written,
    "numba-hand": j1_numba,
    "python": j1_python,
    "numbascan": j1_numbascan(jit=False),
    "numbascan-jit": j1_numbascan(jit=True),
}


def j1_report(peers) -> str:
    """Per peer: its first call, the calls on new trip counts, the calls cycling through the
    inputs again, and how often its traced body ran in each."""
    def count(n):
        return "—" if n is None else str(n)

    rows = []
    for p in peers:
        r = J1_REPORT.get(p)
        if r is None:
            continue
        rows.append(f"| {p} | {r['first_call_s']:.3g} | {count(r['first_traces'])} | "
                    f"{r['new_calls']} | {r['new_s'] * 1e6:.3g} | {count(r['new_traces'])} | "
                    f"{r['again_calls']} | {r['again_s'] * 1e6:.3g} | "
                    f"{count(r['again_traces'])} |")
    if not rows:
        return ""
    head = ["| peer | first call s | traces | new trip count: calls | µs per call | traces | "
            "trip count run before: calls | µs per call | traces |", "|" + "---|" * 9]
    return "\n".join(head + rows)


# ============================================================================================
# C1: from a new process to the first W1 result, import and compile included.
# Each peer runs in a child process whose script reads W1's inputs from a file and computes W1
# once. Every cache a peer keeps on disk (numbascan's, numba's, PyTensor's) points into a fresh
# temporary folder: the first child there is the cold start, later children the warm start.


_CHILD_HEAD = """\
import time
_t0 = time.perf_counter()
import numpy as np
_inputs = np.load(INPUTS)
X, h0, W, U, b = (_inputs[k] for k in ("X", "h0", "W", "U", "b"))
"""
_CHILD_TAIL = """\
_t1 = time.perf_counter()
np.save(RESULT, np.asarray(_out))
print("FIRST_RESULT_S", _t1 - _t0)
"""


def _source(fn, decorator: str | None = None) -> str:
    """``fn``'s source (a module-level function), its decorator replaced by ``decorator``."""
    import inspect
    import textwrap

    lines = textwrap.dedent(inspect.getsource(getattr(fn, "py_func", fn))).splitlines()
    body = "\n".join(line for line in lines if not line.startswith("@"))
    return (f"@{decorator}\n" if decorator else "") + body + "\n"


def _start_body(peer: str) -> str:
    """The part of the child script that imports ``peer`` and computes W1 into ``_out``."""
    scan_call = ("ns.scan(rnn_step, sequences=X, outputs_info=h0, non_sequences=[W, U, b], "
                 "mode={mode})[0]")
    pt_scan = """\
import inspect
import pytensor
import pytensor.tensor as pt
sym = [pt.dmatrix("X"), pt.dvector("h0"), pt.dmatrix("W"), pt.dmatrix("U"), pt.dvector("b")]
kw = dict(sequences=[sym[0]], outputs_info=[sym[1]], non_sequences=sym[2:])
step = lambda x_t, h, W, U, b: pt.tanh(h @ W + x_t @ U + b)
if "return_updates" in inspect.signature(pytensor.scan).parameters:
    hs = pytensor.scan(step, return_updates=False, **kw)
else:
    hs, _ = pytensor.scan(step, **kw)
_out = pytensor.function(sym, hs, mode={mode!r})(X, h0, W, U, b)
"""
    bodies = {
        "python": _source(rnn_numba).replace("rnn_numba", "rnn_loop")
                  + "_out = rnn_loop(X, h0, W, U, b)\n",
        "numba-hand": "import sys\nsys.path.insert(0, HAND_DIR)\nfrom rnn_hand import rnn_numba\n"
                      "_out = rnn_numba(X, h0, W, U, b)\n",
        "numbascan": "import numbascan as ns\n" + _source(rnn_step)
                     + "_out = " + scan_call.format(mode='"cpu"') + "\n",
        "numbascan-jit": "import numbascan as ns\n" + _source(rnn_step)
                         + "run = ns.jit(lambda X, h0, W, U, b: "
                         + scan_call.format(mode="None") + ")\n_out = run(X, h0, W, U, b)\n",
        "jax": """\
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp


@jax.jit
def run(X, h0, W, U, b):
    def body(h, x_t):
        h = jnp.tanh(h @ W + x_t @ U + b)
        return h, h
    return jax.lax.scan(body, h0, X)[1]


_out = run(X, h0, W, U, b).block_until_ready()
""",
        "pytensor-numba": pt_scan.format(mode="NUMBA"),
        "pytensor-cvm": pt_scan.format(mode="CVM"),
    }
    return bodies[peer]


# The module each peer needs, to skip a peer that is not installed without starting a child.
_START_MODULE = {"python": "numpy", "numba-hand": "numba", "numbascan": "numbascan",
                 "numbascan-jit": "numbascan", "jax": "jax", "pytensor-numba": "pytensor",
                 "pytensor-cvm": "pytensor"}


def _cache_env(cache_dir: str) -> dict[str, str]:
    """The environment of a child whose on-disk caches all live under ``cache_dir``."""
    env = dict(os.environ)
    env["NUMBASCAN_CACHE_DIR"] = os.path.join(cache_dir, "numbascan")
    env["NUMBA_CACHE_DIR"] = os.path.join(cache_dir, "numba")
    flags = env.get("PYTENSOR_FLAGS", "")
    env["PYTENSOR_FLAGS"] = ",".join(
        f for f in (flags, f"base_compiledir={os.path.join(cache_dir, 'pytensor')}") if f)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _run_start_child(peer: str, cache_dir: str, work: str) -> tuple[float, float, np.ndarray]:
    """One child: (seconds from its first line to W1's result, its wall time seen from here,
    the result)."""
    import subprocess
    import time

    script = os.path.join(work, f"start_{peer}.py")
    result = os.path.join(work, f"result_{peer}.npy")
    with open(script, "w") as f:
        f.write(f"INPUTS = {os.path.join(work, 'inputs.npz')!r}\nRESULT = {result!r}\n"
                f"HAND_DIR = {cache_dir!r}\n" + _CHILD_HEAD + _start_body(peer) + _CHILD_TAIL)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, script], env=_cache_env(cache_dir), cwd=work,
                          capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"child failed: {tail[0]}")
    first = next(float(line.split()[1]) for line in proc.stdout.splitlines()
                 if line.startswith("FIRST_RESULT_S"))
    return first, wall, np.load(result)


def start_peer(peer: str, cold_runs: tuple[int, int] = (2, 1), warm_runs: tuple[int, int] = (3, 2)):
    """Measure function of C1 for ``peer``: ``cold_runs`` / ``warm_runs`` are (full, quick)
    counts. Each cold run gets a fresh, empty cache folder; the warm runs reuse the last one."""

    def measure(sizes, quick, log):
        import importlib.util
        import shutil
        import tempfile

        if importlib.util.find_spec(_START_MODULE[peer]) is None:
            raise Skip(f"{_START_MODULE[peer]} is not installed")
        n_cold, n_warm = (cold_runs[1], warm_runs[1]) if quick else (cold_runs[0], warm_runs[0])
        work = tempfile.mkdtemp(prefix="numbascan-c1-")
        try:
            np.savez(os.path.join(work, "inputs.npz"),
                     **rnn_inputs(sizes, np.random.default_rng(0)))
            out: dict[str, tuple[Result, Any]] = {}
            for row, runs in (("cold", n_cold), ("warm", n_warm)):
                firsts, walls = [], []
                for _ in range(runs):
                    if row == "cold":
                        cache_dir = tempfile.mkdtemp(prefix="cache-", dir=work)
                        with open(os.path.join(cache_dir, "rnn_hand.py"), "w") as f:
                            f.write("import numba\nimport numpy as np\n\n\n"
                                    + _source(rnn_numba, "numba.njit(cache=True)"))
                    first, wall, res = _run_start_child(peer, cache_dir, work)
                    firsts.append(first)
                    walls.append(wall)
                note = (f"median of {runs}: {', '.join(f'{x:.2f}' for x in firsts)} s in the "
                        f"child; {', '.join(f'{x:.2f}' for x in walls)} s wall from here")
                out[row] = (Result("ok", statistics.median(firsts), runs, note), res)
            return out
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return measure


START_PEERS = {peer: start_peer(peer) for peer in _START_MODULE}


# ============================================================================================
# F1: the first call of a larger program in a new process with empty caches, against jax.jit of
# the same program: an LSTM's states and their gradient w.r.t. its weights, the Jacobian of a
# Lorenz RK4 integration in forward and reverse mode, a Kalman filter's log-likelihood gradient,
# the gradient through a nested scan, and the seed's tour (numbascan only).
# F1C: the LSTM's forward and gradient first calls against H (compile time as the step grows).
# Each (program, peer) runs in a child process like C1's, with every on-disk cache in a fresh
# temporary folder, and is killed after F1_TIMEOUT_S seconds. The python peer is the reference:
# NumPy float64 loops, with hand-written backpropagation for the LSTM and complex-step
# derivatives (exact to rounding for these analytic programs) for the others.

F1_TIMEOUT_S = 300.0  # --child-timeout
F1_LSTM_H = (8, 16, 32)
F1C_H = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # --f1c-h
F1C_QUICK_H = (1, 4, 16)
F1_PEERS = ("python", "jax", "numbascan")


# --- the programs' steps and the reference's derivatives (copied into the child scripts; jax's
# copy has every ``np.`` replaced by ``jnp.``); the LSTM's and the Kalman filter's are in
# programs.py, shared with L1 and KF1 ---------------------------------------------------------


def lorenz_field(s):
    x, y, z = s[0], s[1], s[2]
    return np.stack([10.0 * (y - x), x * (28.0 - z) - y, x * y - (8.0 / 3.0) * z])


def rk4_step(s, dt):
    k1 = lorenz_field(s)
    k2 = lorenz_field(s + 0.5 * dt * k1)
    k3 = lorenz_field(s + 0.5 * dt * k2)
    k4 = lorenz_field(s + dt * k3)
    return s + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def nested_inner_step(x_k, u, W):
    return np.tanh(u @ W + x_k)


# Their source, read once: the child scripts are written from it.
_F1_SOURCES = {fn.__name__: _source(fn) for fn in (lstm_step, lstm_states_python,
                                                    lstm_grad_python,
                                                    lstm_value_and_grad_python, lorenz_field,
                                                    rk4_step, kalman_step, nested_inner_step,
                                                    complex_step)}


# --- inputs (made in the parent from the fixed seed, loaded by the child) -----------------------


def lorenz_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    """A start on the attractor: 500 RK4 steps from near (1, 1, 1)."""
    s = np.ones(3) + 0.01 * rng.standard_normal(3)
    for _ in range(500):
        s = rk4_step(s, 0.01)
    return {"s0": s}


def nested_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    H, K, T = sizes["H"], sizes["K"], sizes["T"]
    return {
        "W": rng.standard_normal((H, H)) * (0.5 / np.sqrt(H)),
        "V": rng.standard_normal((H, H)) / np.sqrt(H),
        "X": rng.standard_normal((T, K, H)),
        "h0": 0.1 * rng.standard_normal(H),
    }


# --- the child scripts ---------------------------------------------------------------------------

_F1_HEAD = """\
import time
_t0 = time.perf_counter()
import numpy as np
_inputs = np.load(INPUTS)
globals().update({k: _inputs[k] for k in _inputs.files})


def _flat(result):
    parts = result if isinstance(result, (tuple, list)) else [result]
    return np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in parts])


"""
_F1_TAIL = """\
_t1 = time.perf_counter()
if _out is not None:
    np.save(RESULT, _out)
print("FIRST_RESULT_S", _t1 - _t0)
print("IMPORT_S", _t_import - _t0)
"""
_F1_IMPORTS = {
    "python": "",
    "numbascan": "import numbascan as ns\n",
    "jax": 'import jax\njax.config.update("jax_enable_x64", True)\nimport jax.numpy as jnp\n',
}


def _f1_source(peer: str, *fns) -> str:
    """The functions' source for ``peer``'s script (jax's with jax.numpy for NumPy)."""
    text = "\n\n".join(_F1_SOURCES[fn.__name__] for fn in fns) + "\n\n"
    return re.sub(r"\bnp\.", "jnp.", text) if peer == "jax" else text


def _lstm_body(peer: str, grad: bool) -> str:
    states = {
        "numbascan": """\
def lstm_states(Wx, Wh, b, X, h0, c0):
    (hs, cs), _ = ns.scan(lstm_step, sequences=X, outputs_info=[h0, c0],
                          non_sequences=[Wx, Wh, b])
    return hs
""",
        "jax": """\
def lstm_states(Wx, Wh, b, X, h0, c0):
    def body(carry, x_t):
        h, c = lstm_step(x_t, carry[0], carry[1], Wx, Wh, b)
        return (h, c), h
    return jax.lax.scan(body, (h0, c0), X)[1]
""",
        "python": _F1_SOURCES["lstm_states_python"] + "\n\nlstm_states = lstm_states_python\n",
    }[peer]
    loss = """\
def lstm_loss(Wx, Wh, b, X, h0, c0):
    return (lstm_states(Wx, Wh, b, X, h0, c0) ** 2).sum()
"""
    args = "(Wx, Wh, b, X, h0, c0)"
    if not grad:
        call = {"numbascan": f"lstm_states{args}", "jax": f"jax.jit(lstm_states){args}",
                "python": f"lstm_states{args}"}[peer]
    else:
        call = {"numbascan": f"ns.grad(lstm_loss, (0, 1, 2)){args}",
                "jax": f"jax.jit(jax.grad(lstm_loss, (0, 1, 2))){args}",
                "python": f"lstm_grad_python{args}"}[peer]
    extra = (lstm_value_and_grad_python, lstm_grad_python) if grad and peer == "python" else ()
    return (_f1_source(peer, lstm_step, *extra) + states + "\n\n" + loss + "\n\n"
            + f"_out = _flat({call})\n")


def _lorenz_body(peer: str, mode: str) -> str:
    final = {
        "numbascan": """\
def final_state(s0):
    states, _ = ns.scan(rk4_step, outputs_info=s0, non_sequences=DT, n_steps=STEPS)
    return states[-1]
""",
        "jax": """\
def final_state(s0):
    return jax.lax.scan(lambda s, _: (rk4_step(s, DT), None), s0, None, length=STEPS)[0]
""",
        "python": """\
def final_state(s0):
    s = s0
    for _ in range(STEPS):
        s = rk4_step(s, DT)
    return s
""",
    }[peer]
    call = {"numbascan": f'ns.jacobian(final_state, mode="{mode}")(s0)',
            "jax": f"jax.jit(jax.jac{mode}(final_state))(s0)",
            "python": "complex_step(final_state, (s0,), (0,))"}[peer]
    extra = (complex_step,) if peer == "python" else ()
    return (_f1_source(peer, lorenz_field, rk4_step, *extra) + final + "\n\n"
            + f"_out = _flat({call})\n")


def _kalman_body(peer: str) -> str:
    loglik = {
        "numbascan": """\
def loglik(A, Q, R, C, Y, m0, P0):
    (ms, Ps, lls), _ = ns.scan(kalman_step, sequences=Y, outputs_info=[m0, P0, np.float64(0.0)],
                               non_sequences=[A, Q, C, R])
    return lls[-1]
""",
        "jax": """\
def loglik(A, Q, R, C, Y, m0, P0):
    def body(carry, y_t):
        return kalman_step(y_t, *carry, A, Q, C, R), None
    return jax.lax.scan(body, (m0, P0, jnp.float64(0.0)), Y)[0][2]
""",
        "python": """\
def loglik(A, Q, R, C, Y, m0, P0):
    m, P, ll = m0, P0, 0.0
    for t in range(Y.shape[0]):
        m, P, ll = kalman_step(Y[t], m, P, ll, A, Q, C, R)
    return ll
""",
    }[peer]
    args = "(A, Q, R, C, Y, m0, P0)"
    call = {"numbascan": f"ns.grad(loglik, (0, 1, 2, 3)){args}",
            "jax": f"jax.jit(jax.grad(loglik, (0, 1, 2, 3))){args}",
            "python": f"complex_step(loglik, {args}, (0, 1, 2, 3))"}[peer]
    extra = (complex_step,) if peer == "python" else ()
    return _f1_source(peer, kalman_step, *extra) + loglik + "\n\n" + f"_out = _flat({call})\n"


def _nested_body(peer: str) -> str:
    loss = {
        "numbascan": """\
def outer_step(x_t, h, W, V):
    us, _ = ns.scan(nested_inner_step, sequences=x_t, outputs_info=h, non_sequences=W)
    return us[-1] @ V


def loss(W, V, X, h0):
    hs, _ = ns.scan(outer_step, sequences=X, outputs_info=h0, non_sequences=[W, V])
    return (hs ** 2).sum()
""",
        "jax": """\
def outer_step(h, x_t, W, V):
    u = jax.lax.scan(lambda u, x_k: (nested_inner_step(x_k, u, W), None), h, x_t)[0]
    h = u @ V
    return h, h


def loss(W, V, X, h0):
    hs = jax.lax.scan(lambda h, x_t: outer_step(h, x_t, W, V), h0, X)[1]
    return (hs ** 2).sum()
""",
        "python": """\
def loss(W, V, X, h0):
    h, total = h0, 0.0
    for t in range(X.shape[0]):
        u = h
        for k in range(X.shape[1]):
            u = nested_inner_step(X[t, k], u, W)
        h = u @ V
        total = total + (h ** 2).sum()
    return total
""",
    }[peer]
    args = "(W, V, X, h0)"
    call = {"numbascan": f"ns.grad(loss, (0, 1)){args}",
            "jax": f"jax.jit(jax.grad(loss, (0, 1))){args}",
            "python": f"complex_step(loss, {args}, (0, 1))"}[peer]
    extra = (complex_step,) if peer == "python" else ()
    return _f1_source(peer, nested_inner_step, *extra) + loss + "\n\n" + f"_out = _flat({call})\n"


def _p1_body(peer: str, jit: bool) -> str:
    """W4's scan (P1) called once: eagerly or inside ``ns.jit`` for numbascan."""
    step = "def step(s_t, x, a):\n    return a * x * (1 - x) + s_t\n\n\n"
    scan = "ns.foldl(step, sequences=S, outputs_info=x0, non_sequences=a)[0]"
    return step + {
        "numbascan": (f"run = ns.jit(lambda S, x0, a: {scan})\n_out = run(S, x0, a)\n" if jit
                      else f"_out = {scan}\n"),
        "jax": """\
@jax.jit
def run(S, x0, a):
    return jax.lax.scan(lambda x, s_t: (step(s_t, x, a), None), x0, S)[0]


_out = run(S, x0, a).block_until_ready()
""",
        "python": "x = x0\nfor s_t in S:\n    x = step(s_t, x, a)\n_out = x\n",
    }[peer]


def _tour_body(peer: str) -> str:
    return f"""\
import runpy
import sys

sys.argv = [{os.path.join(REPO_ROOT, "examples", "tour.py")!r}]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    if e.code:
        raise RuntimeError(f"the tour exited with status {{e.code}} (an example failed)")
_out = None
"""


@dataclasses.dataclass(frozen=True)
class FirstCall:
    """One F1 program. ``sizes`` gives its own sizes from the probe's, ``make_inputs`` its
    input arrays (saved by the parent, loaded by the child), ``body(peer)`` the part of the child
    script that follows the peer's import and computes the result into ``_out``; ``absent`` says
    why a peer has no such part. With ``skip_failure``, a numbascan child that fails (the program
    needs something numbascan does not trace yet) is shown as skipped, its error the reason.
    ``quick_sizes``, when given, replaces ``sizes`` under --quick (the first call of a workload
    of the time table, at that workload's sizes)."""

    row: str
    sizes: Callable[[Mapping[str, int]], dict]
    make_inputs: Callable[[Mapping[str, int], np.random.Generator], dict]
    body: Callable[[str], str]
    absent: Mapping[str, str] = dataclasses.field(default_factory=dict)
    skip_failure: bool = False
    quick_sizes: Callable[[Mapping[str, int]], dict] | None = None

    def own_sizes(self, probe_sizes: Mapping[str, int], quick: bool) -> dict:
        return (self.quick_sizes if quick and self.quick_sizes else self.sizes)(probe_sizes)


def _lstm_programs(hs, prefix="LSTM ") -> list[FirstCall]:
    return [FirstCall(f"{prefix}{kind} H={H}",
                      lambda s, H=H: {"H": H, "D": s["D"], "T": s["T"]}, lstm_inputs,
                      lambda peer, grad=(kind == "grad"): _lstm_body(peer, grad))
            for H in hs for kind in ("fwd", "grad")]


F1_PROGRAMS = [
    *_lstm_programs(F1_LSTM_H),
    *[FirstCall(f"Lorenz jacobian {mode}", lambda s: {"steps": s["steps"]}, lorenz_inputs,
                lambda peer, mode=mode: _lorenz_body(peer, mode)) for mode in ("fwd", "rev")],
    *[FirstCall(f"L1 LSTM {kind}", lambda s: dict(L1_SIZES), lstm_inputs,
                lambda peer, grad=(kind == "grad"): _lstm_body(peer, grad),
                quick_sizes=lambda s: dict(L1_QUICK_SIZES)) for kind in ("fwd", "grad")],
    FirstCall("KF1 Kalman grad", lambda s: dict(KF1_SIZES), kalman_inputs, _kalman_body,
              quick_sizes=lambda s: dict(KF1_QUICK_SIZES)),
    *[FirstCall(f"P1 W4 {kind}", lambda s: {"N": 100000, "T": 50}, logistic_inputs,
                lambda peer, jit=(kind == "jit"): _p1_body(peer, jit),
                quick_sizes=lambda s: {"N": 8192, "T": 20}) for kind in ("eager", "jit")],
    FirstCall("nested-scan grad", lambda s: {"H": 4, "K": 5, "T": s["T"]}, nested_inputs,
              _nested_body),
    FirstCall("tour", lambda s: {}, lambda sizes, rng: {}, _tour_body,
              absent={"jax": "no jax counterpart", "python": "no reference: the tour checks "
                      "its own results and exits with status 1 when one fails"}),
]


def f1c_programs(hs) -> list[FirstCall]:
    return _lstm_programs(hs, prefix="")


def _run_first_call(prog: FirstCall, peer: str, sizes: Mapping[str, int], quick: bool,
                    work: str, timeout_s: float
                    ) -> tuple[float, float, float | None, np.ndarray | None]:
    """One child on fresh, empty caches: (seconds from its first line to the result, of which
    the peer's import, its wall time seen from here, the result). Raises ``TimeoutError``."""
    import subprocess
    import tempfile

    key = "".join(ch if ch.isalnum() else "_" for ch in f"{prog.row}_{peer}")
    inputs = os.path.join(work, f"inputs_{key}.npz")
    result = os.path.join(work, f"result_{key}.npy")
    script = os.path.join(work, f"f1_{key}.py")
    own = prog.own_sizes(sizes, quick)
    np.savez(inputs, **prog.make_inputs(own, np.random.default_rng(0)))
    consts = "".join(f"{k.upper()} = {v!r}\n" for k, v in own.items() if k in ("steps",))
    with open(script, "w") as f:
        f.write(f"INPUTS = {inputs!r}\nRESULT = {result!r}\nDT = 0.01\n{consts}" + _F1_HEAD
                + _F1_IMPORTS[peer] + "_t_import = time.perf_counter()\n" + prog.body(peer)
                + _F1_TAIL)
    cache_dir = tempfile.mkdtemp(prefix="cache-", dir=work)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, script], env=_cache_env(cache_dir), cwd=work,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"timeout: no result within {timeout_s:g} s (child killed)") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        import re

        lines = proc.stderr.strip().splitlines()
        errors = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", ln)]
        tail = (errors or lines)[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"child failed: {tail[0]}".replace("numbascan.trace.tracer.", ""))
    said = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                if line.startswith(("FIRST_RESULT_S ", "IMPORT_S ")))
    out = np.load(result) if os.path.exists(result) else None
    return float(said["FIRST_RESULT_S"]), float(said["IMPORT_S"]), wall, out


def first_call_peer(peer: str, programs: list[FirstCall], timeout_s: list[float]):
    """Measure function of F1 / F1C for ``peer``: one child per program (``timeout_s[0]``
    seconds at most each, a list so that the command line can change it)."""

    def measure(sizes, quick, log):
        import importlib.util
        import shutil
        import tempfile

        module = {"python": "numpy", "jax": "jax", "numbascan": "numbascan"}[peer]
        if importlib.util.find_spec(module) is None:
            raise Skip(f"{module} is not installed")
        out: dict[str, tuple[Result, Any]] = {}
        work = tempfile.mkdtemp(prefix="numbascan-f1-")
        try:
            for prog in programs:
                if peer in prog.absent:
                    out[prog.row] = (Result("skip", note=prog.absent[peer]), None)
                    continue
                try:
                    first, imported, wall, res = _run_first_call(prog, peer, sizes, quick,
                                                                 work, timeout_s[0])
                except TimeoutError as e:
                    r = Result("error", note=str(e))
                    log(f"    {prog.row} {peer}: TIMEOUT after {timeout_s[0]:g} s")
                    out[prog.row] = (r, None)
                    continue
                except RuntimeError as e:
                    r = Result("error", note=str(e))
                    if prog.skip_failure and peer == "numbascan":
                        r = Result("skip", note=f"numbascan cannot run it yet ({e})")
                    log(f"    {prog.row} {peer}: {r.status.upper()} {r.note}")
                    out[prog.row] = (r, None)
                    continue
                note = f"import {imported:.2f} s; child wall {wall:.2f} s seen from here"
                log(f"    {prog.row} {peer}: {first:.2f} s ({note})")
                out[prog.row] = (Result("ok", first, 1, note), res)
            return out
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return measure


_F1_TIMEOUT = [F1_TIMEOUT_S]  # changed by --child-timeout


def _f1_probe(pid: str, title: str, programs: list[FirstCall], sizes, quick_sizes) -> Probe:
    return Probe(pid, title, sizes=sizes, quick_sizes=quick_sizes,
                 rows=tuple(p.row for p in programs),
                 peers={p: first_call_peer(p, programs, _F1_TIMEOUT) for p in F1_PEERS},
                 unit="s", rtol=1e-7, atol=1e-9)


def f1c_probe(hs) -> Probe:
    """F1C for the hidden sizes ``hs`` (the command line's ``--f1c-h``)."""
    F1C_RUN_H[:] = hs
    FIRST_CALL_PROGRAMS["F1C"] = f1c_programs(hs)
    return _f1_probe("F1C", "LSTM forward and grad first call against H, new process, empty "
                     "caches", FIRST_CALL_PROGRAMS["F1C"], {"D": 8, "T": 200}, {"D": 8, "T": 50})


# {probe id: its programs}; F1C's is set when its probe is made (its H come from the command line).
FIRST_CALL_PROGRAMS: dict[str, list[FirstCall]] = {"F1": F1_PROGRAMS}
F1C_RUN_H: list[int] = []  # the hidden sizes of F1C's programs
F1_PROBE = _f1_probe("F1", "first call of larger programs, new process, empty caches, against "
                     "jax.jit", F1_PROGRAMS, {"D": 8, "T": 200, "steps": 200},
                     {"D": 8, "T": 50, "steps": 50})
# Probes run only when named exactly in --only (neither by a letter nor by default): slow.
OPT_IN = {"F1C"}


def f1_rows(p: Probe, all_results, quick: bool):
    """``format_rows``-style rows of F1 or F1C, each labelled with its program's own sizes
    (those its name does not give already)."""
    sizes = p.quick_sizes if quick else p.sizes
    rows = []
    for prog in FIRST_CALL_PROGRAMS[p.id]:
        res = all_results.get(p.key(prog.row))
        if res is None:
            continue
        own = {k: v for k, v in prog.own_sizes(sizes, quick).items()
               if f"{k}={v}" not in prog.row}
        rows.append((f"{p.key(prog.row)} ({size_label(own)})" if own else p.key(prog.row),
                     res, ()))
    return rows


def f1_table(rows, peers, goal: float = 1.5) -> str:
    """F1's table: seconds per peer, numbascan/jax, whether it meets the goal; a timeout, an
    error, a mismatch or a skip with a reason points to a note under the table."""
    notes: list[str] = []

    def mark(note: str) -> str:
        if note not in notes:
            notes.append(note)
        return f"[{notes.index(note) + 1}]"

    def cell(r: Result | None) -> str:
        if r is None:
            return ""
        if r.status == "ok":
            return f"{r.median_s:.3g}"
        if r.status == "skip":
            return "n/a " + mark(r.note) if r.note else "n/a"
        if r.note.startswith("timeout"):
            return f"> {_F1_TIMEOUT[0]:g} (timeout)"
        return ("MISMATCH " if r.status == "mismatch" else "ERROR ") + mark(r.note)

    cols = [q for q in peers if q in F1_PEERS]
    head = ["program", *[f"{q} s" for q in cols]]
    ratio = "numbascan" in cols and "jax" in cols
    if ratio:
        head += ["numbascan/jax", f"goal <= {goal:g}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, res, _ in rows:
        row = [label, *[cell(res.get(q)) for q in cols]]
        if ratio:
            n, j = res.get("numbascan"), res.get("jax")
            if n is not None and j is not None and j.status == "ok":
                if n.status == "ok":
                    x = n.median_s / j.median_s
                    row += [f"{x:.2f}", "yes" if x <= goal else "no"]
                elif n.status == "error" and n.note.startswith("timeout"):
                    row += [f"> {_F1_TIMEOUT[0] / j.median_s:.0f}", "no"]
                else:
                    row += ["n/a" if n.status == "skip" else "", ""]
            else:
                row += ["n/a", ""]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines.extend(f"[{i}] {n}" for i, n in enumerate(notes, 1))
    return "\n".join(lines)


def f1c_series(p: Probe, hs, all_results) -> dict[tuple[str, str], list[tuple[int, Result]]]:
    """{(peer, "fwd" or "grad"): [(H, Result)]} of the sweep."""
    series: dict[tuple[str, str], list[tuple[int, Result]]] = {}
    for H in hs:
        for kind in ("fwd", "grad"):
            for peer, r in all_results.get(p.key(f"{kind} H={H}"), {}).items():
                series.setdefault((peer, kind), []).append((H, r))
    return series


def f1c_table(p: Probe, hs, all_results, peers) -> str:
    """One row per H: each peer's forward and gradient first call, and numbascan/jax."""
    cols = [q for q in ("numbascan", "jax") if q in peers]

    def cell(r):
        if r is None:
            return ""
        if r.status == "ok":
            return f"{r.median_s:.3g}"
        if r.note.startswith("timeout"):
            return f"> {_F1_TIMEOUT[0]:g} (timeout)"
        return {"skip": "n/a", "mismatch": "MISMATCH"}.get(r.status, "ERROR")

    head = ["H"]
    for kind in ("fwd", "grad"):
        head += [f"{q} {kind} s" for q in cols]
        if len(cols) == 2:
            head.append(f"{kind} numbascan/jax")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for H in hs:
        row = [str(H)]
        for kind in ("fwd", "grad"):
            res = all_results.get(p.key(f"{kind} H={H}"), {})
            row += [cell(res.get(q)) for q in cols]
            for q in cols:
                r = res.get(q)
                if r is not None and r.status in ("error", "mismatch") \
                        and not r.note.startswith("timeout"):
                    notes.append(f"H={H} {kind} {q}: {r.note}")
            if len(cols) == 2:
                n, j = res.get("numbascan"), res.get("jax")
                if n is None or j is None or j.status != "ok":
                    row.append("")
                elif n.status == "ok":
                    row.append(f"{n.median_s / j.median_s:.2f}")
                elif n.status == "error" and n.note.startswith("timeout"):
                    row.append(f"> {_F1_TIMEOUT[0] / j.median_s:.0f}")
                else:
                    row.append("")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


def f1c_panel(path: str, series, peers, timeout_s: float, sizes: str = "D=8, T=200") -> str:
    """Add F1C's log-log panel (first call seconds against H) under the chart at ``path`` (or
    draw it alone when there is none). Returns a line for the log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed, so no F1C panel was drawn (pip install matplotlib)"
    dpi = 110
    above = mpimg.imread(path) if os.path.exists(path) else None
    panel_w, panel_h = 12.0, 4.6  # inches, the legend's 3 on the right included
    width = max(panel_w, above.shape[1] / dpi if above is not None else 0.0)
    height = panel_h + (above.shape[0] / dpi if above is not None else 0.0)
    fig = plt.figure(figsize=(width, height), dpi=dpi)
    if above is not None:
        fig.figimage(above, xo=0, yo=int(round(panel_h * dpi)), origin="upper")
    bottom = 0.5 / height
    ax = fig.add_axes((0.8 / width, bottom, (panel_w - 4.0) / width, (panel_h - 1.2) / height))
    colors = {"numbascan": "#1f5fa8", "jax": "#d62728", "python": "#737373"}
    for (peer, kind), points in sorted(series.items()):
        if peer not in peers or peer not in colors:
            continue
        ok = [(H, r.median_s) for H, r in points if r.status == "ok"]
        late = [H for H, r in points if r.status == "error" and r.note.startswith("timeout")]
        style, marker = ("-", "o") if kind == "fwd" else ("--", "s")
        if ok:
            ax.plot(*zip(*ok), style, marker=marker, color=colors[peer], label=f"{peer} {kind}")
        if late:
            ax.plot(late, [timeout_s] * len(late), linestyle="none", marker="^",
                    markersize=9, color=colors[peer],
                    markerfacecolor=colors[peer] if kind == "fwd" else "none",
                    label=f"{peer} {kind}: timeout (> {timeout_s:g} s)")
    hs = sorted({H for points in series.values() for H, _ in points})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if hs:
        ax.set_xticks(hs)
        ax.set_xticklabels([str(H) for H in hs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel(f"H (LSTM hidden size; {sizes})")
    ax.set_ylabel("s, new process to first result (log)")
    ax.set_title("F1C: first call (import, trace, compile, call) against H, empty caches; "
                 "solid: forward, dashed: grad", fontsize=9)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return f"F1C panel added to {path}"


# ============================================================================================
# M1, M2: peak memory of one call, for a large elementwise state
#   x(t) = a * x(t-1) * (1 - x(t-1)) + s_t   (W4's step; s_t a scalar per step, a a vector)
#   M1: every state kept (ns.scan) against the last state only (ns.foldl)
#   M2: reverse mode, d sum(x(T)) / d a, with checkpoint=None against checkpoint="sqrt"
# Each (row, peer) runs in a child process: build the inputs, call once (compiles at the
# measured shapes), release freed memory to the system (malloc_trim), reset the peak resident
# size (/proc/self/clear_refs), call again; the figure is the peak (VmHWM) minus the resident
# size just before the second call. It counts NumPy's, numba's and XLA's allocations alike.


def memory_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict:
    T, N = sizes["T"], sizes["N"]
    return {
        "S": 1e-3 * rng.random(T),
        "x0": rng.uniform(0.1, 0.9, N),
        "a": rng.uniform(2.4, 2.6, N),  # fixed points near 0.6, slopes near -0.5: contracting
    }


def memory_expected(sizes: Mapping[str, int]) -> dict[str, float]:
    """States that must be alive at once, times 8 bytes, in MB: every state; the previous and the
    new state; one state per step on the tape; sqrt(T) checkpoints plus one segment's states."""
    T, N = sizes["T"], sizes["N"]
    K = math.isqrt(T)
    state = 8 * N * 1e-6
    return {"all states": T * state, "last state": 2 * state,
            "checkpoint=None": T * state, "checkpoint=sqrt": (-(-T // K) + K) * state}


@numba.njit
def logistic_all_numba(S, x0, a):
    out = np.empty((S.shape[0], x0.shape[0]))
    x = x0
    for t in range(S.shape[0]):
        x = a * x * (1 - x) + S[t]
        out[t] = x
    return out


MEM_ALL = dataclasses.replace(LOGISTIC, keep="all")
MEMORY_FORWARD = {
    "all states": scan_peers(MEM_ALL, hand_peer(logistic_all_numba, "S", "x0", "a")),
    "last state": scan_peers(LOGISTIC, hand_peer(logistic_numba, "S", "x0", "a")),
}


def logistic_grad_a_python(S, x0, a):
    """Backpropagation through time, the tape holding x(t-1) for every step."""
    T = S.shape[0]
    tape = np.empty((T, x0.shape[0]))
    x = x0
    for t in range(T):
        tape[t] = x
        x = a * x * (1 - x) + S[t]
    ga = np.zeros_like(a)
    gx = np.ones_like(x0)  # d sum(x(T)) / d x(t)
    for t in range(T - 1, -1, -1):
        x = tape[t]
        ga += gx * x * (1 - x)
        gx = gx * a * (1 - 2 * x)
    return ga


def logistic_grad_a_sqrt_python(S, x0, a):
    """The same with checkpoints: x at the start of every segment of isqrt(T) steps is stored
    in a forward pass, and each segment's states are recomputed during the backward pass."""
    T = S.shape[0]
    K = max(1, int(np.sqrt(T)))
    n_seg = (T + K - 1) // K
    starts = np.empty((n_seg, x0.shape[0]))
    x = x0
    for t in range(T):
        if t % K == 0:
            starts[t // K] = x
        x = a * x * (1 - x) + S[t]
    tape = np.empty((K, x0.shape[0]))
    ga = np.zeros_like(a)
    gx = np.ones_like(x0)
    for j in range(n_seg - 1, -1, -1):
        t0, t1 = j * K, min(T, (j + 1) * K)
        x = starts[j]
        for t in range(t0, t1):
            tape[t - t0] = x
            x = a * x * (1 - x) + S[t]
        for t in range(t1 - 1, t0 - 1, -1):
            x = tape[t - t0]
            ga += gx * x * (1 - x)
            gx = gx * a * (1 - 2 * x)
    return ga


logistic_grad_a_numba = numba.njit(logistic_grad_a_python)
logistic_grad_a_sqrt_numba = numba.njit(logistic_grad_a_sqrt_python)


def m2_numbascan(checkpoint, jit: bool):
    """``ns.grad`` of ``sum(scan(...)[0][-1])`` w.r.t. a, eager or inside ``ns.jit``."""

    def build(inp):
        ns = _numbascan()

        def loss(a, x0, S):
            xs, _ = ns.scan(logistic_step, sequences=S, outputs_info=x0, non_sequences=a,
                            checkpoint=checkpoint)
            return np.sum(xs[-1])

        grad_a = ns.grad(loss, 0)
        if jit:
            grad_a = ns.jit(grad_a)
        args = [inp[k] for k in ("a", "x0", "S")]
        return lambda: grad_a(*args)

    return build


def m2_jax(checkpoint):
    """``jax.grad`` of ``lax.scan``; for "sqrt", an outer scan over segments of isqrt(T) steps
    whose body (an inner scan) is wrapped in ``jax.checkpoint``."""

    def build(inp):
        jax, jnp = _jax()
        T = inp["S"].shape[0]
        K = math.isqrt(T)
        if checkpoint == "sqrt" and T % K:
            raise Skip(f"T={T} is not a multiple of isqrt(T)={K}")

        def run(x0, S, a):
            return jax.lax.scan(lambda x, s: (logistic_step(s, x, a), None), x0, S)[0]

        def loss(a, x0, S):
            if checkpoint == "sqrt":
                seg = jax.checkpoint(lambda x, s: (run(x, s, a), None))
                x = jax.lax.scan(seg, x0, S.reshape(T // K, K))[0]
            else:
                x = run(x0, S, a)
            return jnp.sum(x)

        grad_a = jax.jit(jax.grad(loss))
        args = _jax_args(jax, inp, ("a", "x0", "S"))
        return lambda: grad_a(*args).block_until_ready()

    return build


def m2_pytensor(mode: str):
    def build(inp):
        import inspect

        import pytensor
        import pytensor.tensor as pt

        sym = {k: pt.tensor(name=k, dtype=inp[k].dtype, shape=(None,) * inp[k].ndim)
               for k in ("S", "x0", "a")}
        kwargs = dict(sequences=[sym["S"]], outputs_info=[sym["x0"]], non_sequences=[sym["a"]])
        if "return_updates" in inspect.signature(pytensor.scan).parameters:
            xs = pytensor.scan(logistic_step, return_updates=False, **kwargs)
        else:
            xs, _ = pytensor.scan(logistic_step, **kwargs)
        g = pytensor.grad(xs[-1].sum(), sym["a"])
        f = pytensor.function([sym[k] for k in ("S", "x0", "a")], g, mode=mode)
        args = [inp[k] for k in ("S", "x0", "a")]
        return lambda: f(*args)

    return build


def _no_checkpointing(inp):
    raise Skip("pytensor.scan has no checkpointing")


MEMORY_REVERSE = {
    "checkpoint=None": {
        "jax": m2_jax(None),
        "pytensor-numba": m2_pytensor("NUMBA"),
        "pytensor-cvm": m2_pytensor("CVM"),
        "numba-hand": _np_call(logistic_grad_a_numba, "S", "x0", "a"),
        "python": _np_call(logistic_grad_a_python, "S", "x0", "a"),
        "numbascan": m2_numbascan(None, jit=False),
        "numbascan-jit": m2_numbascan(None, jit=True),
    },
    "checkpoint=sqrt": {
        "jax": m2_jax("sqrt"),
        "pytensor-numba": _no_checkpointing,
        "pytensor-cvm": _no_checkpointing,
        "numba-hand": _np_call(logistic_grad_a_sqrt_numba, "S", "x0", "a"),
        "python": _np_call(logistic_grad_a_sqrt_python, "S", "x0", "a"),
        "numbascan": m2_numbascan("sqrt", jit=False),
        "numbascan-jit": m2_numbascan("sqrt", jit=True),
    },
}
MEMORY_BUILDERS = {**MEMORY_FORWARD, **MEMORY_REVERSE}


def _memory_status() -> dict[str, int]:
    """VmHWM and VmRSS of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def memory_child(row: str, peer: str, sizes_json: str, result_path: str) -> int:
    """Child process of the memory probes: prints ``PEAK_BYTES <n>`` (or ``SKIP <why>``) and
    saves a summary of the result (its last row when it keeps every state)."""
    import ctypes
    import gc
    import json

    inp = memory_inputs(json.loads(sizes_json), np.random.default_rng(0))
    try:
        call = MEMORY_BUILDERS[row][peer](inp)
        out = call()
    except (Skip, ImportError) as e:
        print("SKIP", f"{type(e).__name__}: {e}", flush=True)
        return 0
    del out
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _memory_status()["VmRSS"]
    out = _as_np(call())
    peak = _memory_status()["VmHWM"]
    np.save(result_path, out[-1] if out.ndim == 2 else out)
    print("PEAK_BYTES", peak - before, flush=True)
    return 0


def _as_np(x) -> np.ndarray:
    return np.asarray(x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x)


def memory_peer(peer: str, rows: tuple[str, ...]):
    """Measure function of a memory probe: one child process per row."""

    def measure(sizes, quick, log):
        import json
        import subprocess
        import tempfile

        if not os.path.exists("/proc/self/clear_refs"):
            raise Skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
        code = ("import sys; sys.path[:0] = sys.argv[1:3]; import cpu; "
                "sys.exit(cpu.memory_child(*sys.argv[3:]))")
        out = {}
        with tempfile.TemporaryDirectory(prefix="numbascan-mem-") as work:
            for row in rows:
                path = os.path.join(work, "result.npy")
                proc = subprocess.run(
                    [sys.executable, "-c", code, HERE, REPO_ROOT, row, peer, json.dumps(sizes),
                     path], capture_output=True, text=True, timeout=900)
                said = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines()
                            if ln.startswith(("PEAK_BYTES ", "SKIP ")))
                if "SKIP" in said:
                    out[row] = (Result("skip", note=said["SKIP"]), None)
                    continue
                if proc.returncode != 0 or "PEAK_BYTES" not in said:
                    err = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                    out[row] = (Result("error", note=f"child failed: {err[0]}"), None)
                    continue
                peak = float(said["PEAK_BYTES"])
                out[row] = (Result("ok", reps=1, peak_bytes=peak,
                                   note="peak above the resident size before the call"),
                            np.load(path))
        return out

    return measure


# ============================================================================================

WORKLOADS = [
    Workload("W1", "RNN h = tanh(h @ W + x_t @ U + b), all states",
             sizes={"T": 10000, "H": 32}, quick_sizes={"T": 500, "H": 8},
             make_inputs=rnn_inputs, peers=RNN_PEERS),
    Workload("W2", "RNN, wide",
             sizes={"T": 2000, "H": 256}, quick_sizes={"T": 200, "H": 32},
             make_inputs=rnn_inputs, peers=RNN_PEERS),
    Workload("W3", "taps recurrence x(t-2) @ U + x(t-1) @ V + tanh(x(t-1) @ W + b)",
             sizes={"n": 100000}, quick_sizes={"n": 2000},
             make_inputs=taps_inputs,
             peers=scan_peers(TAPS, hand_peer(taps_numba, "X0", "U", "V", "W", "b", "n")),
             rtol=1e-6),
    Workload("W4", "elementwise x = a * x * (1 - x) + s_t, last state",
             sizes={"N": 100000, "T": 1000}, quick_sizes={"N": 1000, "T": 50},
             make_inputs=logistic_inputs,
             peers=scan_peers(LOGISTIC, hand_peer(logistic_numba, "S", "x0", "a"))),
    Workload("P1", "W4 on every core; numbascan-1core: NUMBASCAN_NUM_THREADS=1",
             sizes={"N": 100000, "T": 1000}, quick_sizes={"N": 8192, "T": 50},
             make_inputs=logistic_inputs, peers=P1_PEERS),
    Workload("P1S", "P1 with s_t a scalar per step (states in cache, not streamed)",
             sizes={"N": 100000, "T": 1000}, quick_sizes={"N": 8192, "T": 50},
             make_inputs=logistic_scalar_inputs, peers=P1_PEERS),
    Workload("G1", "reverse mode: d sum(h) / d W for W1's RNN",
             sizes={"T": 10000, "H": 32}, quick_sizes={"T": 500, "H": 8},
             make_inputs=grad_inputs, peers=G1_PEERS),
    Workload("G2", "forward mode: W1's states and their tangents for a change of h0 (jvp)",
             sizes={"T": 10000, "H": 32}, quick_sizes={"T": 500, "H": 8},
             make_inputs=grad_inputs, peers=G2_PEERS),
    Workload("L1", "LSTM, every h (i, f, o, g gates from x_t @ Wx + h @ Wh + b)",
             sizes=L1_SIZES, quick_sizes=L1_QUICK_SIZES, make_inputs=lstm_inputs,
             peers=L1_PEERS),
    Workload("L1G", "L1's sum(hs ** 2) and its gradient w.r.t. (Wx, Wh, b), value_and_grad",
             sizes=L1_SIZES, quick_sizes=L1_QUICK_SIZES, make_inputs=lstm_inputs,
             peers=L1G_PEERS),
    Workload("KF1", "Kalman filter log-likelihood, 4 states, 2 observations",
             sizes=KF1_SIZES, quick_sizes=KF1_QUICK_SIZES, make_inputs=kalman_inputs,
             peers=KF1_PEERS),
    Workload("KF1G", "KF1's log-likelihood and its gradient w.r.t. (A, Q, R, C), "
             "value_and_grad",
             sizes=KF1_SIZES, quick_sizes=KF1_QUICK_SIZES, make_inputs=kalman_inputs,
             peers=KF1G_PEERS),
    Workload("O1", "per-call overhead: W1's RNN, tiny, cached",
             sizes={"T": 10, "H": 4}, quick_sizes={"T": 10, "H": 4},
             make_inputs=rnn_inputs, peers=O1_PEERS, unit="µs", timer=time_per_call),
    Workload("J1", "ns.jit function with an until-scan, a different trip count at every call",
             sizes={"T": 1000, "inputs": 50}, quick_sizes={"T": 200, "inputs": 10},
             make_inputs=walk_inputs, peers=J1_PEERS, unit="µs", timer=j1_timer),
]

PROBES = [
    Probe("C1", "new process to first W1 result, import and compile included",
          sizes={"T": 10000, "H": 32}, quick_sizes={"T": 500, "H": 8},
          rows=("cold", "warm"), peers=START_PEERS, unit="s"),
    F1_PROBE,
    Probe("M1", "peak memory, forward: every state against the last state only",
          sizes={"T": 2500, "N": 16000}, quick_sizes={"T": 400, "N": 10000},
          rows=tuple(MEMORY_FORWARD),
          peers={p: memory_peer(p, tuple(MEMORY_FORWARD)) for p in PEERS},
          unit="MB", expected=memory_expected),
    Probe("M2", "peak memory, reverse mode: tape with checkpoint=None against checkpoint='sqrt'",
          sizes={"T": 2500, "N": 16000}, quick_sizes={"T": 400, "N": 10000},
          rows=tuple(MEMORY_REVERSE),
          peers={p: memory_peer(p, tuple(MEMORY_REVERSE)) for p in PEERS},
          unit="MB", expected=memory_expected, rtol=1e-6),
]

# Tables of the report, in order: (title, unit, workload/probe ids).
SECTIONS = [
    ("Median time per call (ms) and ratios (< 1: numbascan is faster)", "ms",
     ("W1", "W2", "W3", "W4", "P1", "P1S", "G1", "G2", "L1", "L1G", "KF1", "KF1G")),
    ("C1: seconds from a new process's first line to its first W1 result (import, compile and "
     "the call; cold: empty caches, warm: caches from the cold run)", "s", ("C1",)),
    ("F1: seconds from a new process's first line to the first result of a larger program "
     "(import, trace, compile, call; empty caches); goal: numbascan/jax <= 1.5", "s", ("F1",)),
    ("F1C: seconds from a new process's first line to the LSTM's first forward and gradient "
     "result against H (D=8; empty caches)", "s", ("F1C",)),
    ("O1: cached call overhead (µs per call), T=10, H=4", "µs", ("O1",)),
    ("J1: an ns.jit function whose until-scan (a random walk stopping when it leaves a band, at "
     "most T steps) runs a different number of steps at every call (µs per call)", "µs",
     ("J1",)),
    ("M1, M2: peak allocation of one call (MB above the resident size before it; expected: the "
     "states that must be alive at once x 8 bytes)", "MB", ("M1", "M2")),
]


def forward_ratios(workloads, all_results, quick: bool, peers, log=print) -> str:
    """Each derivative workload's time over the same peer's forward pass (``FORWARD_OF``).

    The forward time comes from this run's table when the forward workload ran too (same sizes,
    same seed, hence the same inputs); otherwise the forward pass is timed here.
    """
    rows, forward_s = [], {}
    for w in workloads:
        fwd_id = FORWARD_OF.get(w.id)
        if fwd_id is None:
            continue
        fwd = next(x for x in WORKLOADS if x.id == fwd_id)
        sizes, fwd_sizes = (w.quick_sizes, fwd.quick_sizes) if quick else (w.sizes, fwd.sizes)
        if dict(sizes) != dict(fwd_sizes):
            continue
        for p in ("numbascan", "numbascan-jit", "jax"):
            r = all_results.get(w.id, {}).get(p)
            if p not in peers or r is None or r.status != "ok" or p not in fwd.peers:
                continue
            if (fwd_id, p) not in forward_s:
                fr = all_results.get(fwd_id, {}).get(p)
                if fr is not None and fr.status == "ok":
                    forward_s[fwd_id, p] = fr.median_s
                else:
                    try:
                        call = fwd.peers[p](fwd.make_inputs(sizes, np.random.default_rng(0)))
                        call()
                        forward_s[fwd_id, p] = time_callable(call)[0]
                    except Exception as e:  # noqa: BLE001
                        log(f"  {fwd_id} {p}: forward pass failed ({type(e).__name__}: {e})")
                        forward_s[fwd_id, p] = None
                    else:
                        log(f"  {fwd_id} {p:16s} {forward_s[fwd_id, p] * 1e3:10.3f} ms  "
                            f"(forward pass, for the ratio)")
            f_s = forward_s[fwd_id, p]
            if f_s:
                rows.append(f"| {w.id} | {p} | {r.median_s * 1e3:.3g} | {f_s * 1e3:.3g} | "
                            f"{r.median_s / f_s:.2f} |")
    if not rows:
        return ""
    head = ["| derivative | peer | derivative ms | forward ms | derivative / forward |",
            "|---|---|---|---|---|"]
    return "\n".join(head + rows)


def select(only: str | None, f1c_h=F1C_H) -> list[Workload | Probe]:
    """Workloads and probes named in ``only`` (ids, or a letter for every id starting with it;
    a forward workload's id also selects the derivative named after it, L1G with L1). An id of
    ``OPT_IN`` (F1C, made for the hidden sizes ``f1c_h``) runs only when named."""
    items = [*WORKLOADS, *PROBES]
    if not only:
        return items
    wanted = [t.strip().upper() for t in only.split(",") if t.strip()]
    if "F1C" in wanted:
        items.append(f1c_probe(f1c_h))

    def named(item, token):
        if item.id in OPT_IN:
            return item.id == token
        forward = FORWARD_OF.get(item.id, "")  # item is a derivative of that workload
        return (item.id == token or (len(token) == 1 and item.id.startswith(token))
                or (forward == token and item.id.startswith(token)))

    unknown = [t for t in wanted if not any(named(x, t) for x in items)]
    if unknown:
        known = [x.id for x in items] + sorted(OPT_IN - {x.id for x in items})
        raise ValueError(f"unknown workload(s) {unknown}; known: {known}")
    return [x for x in items if any(named(x, t) for t in wanted)]


def report_sections(items, all_results, quick: bool, peers):
    """``(title, unit, rows)`` of every table that has rows in this run (``SECTIONS`` order)."""
    ratios = [(n, d) for n, d in RATIOS if n in peers and d in peers]
    sections = []
    for title, unit, ids in SECTIONS:
        rows = []
        for item in (x for x in items if x.id in ids):
            if item.id in FIRST_CALL_PROGRAMS:
                rows += f1_rows(item, all_results, quick)
            elif isinstance(item, Probe):
                rows += probe_rows(item, all_results, quick)
            else:
                rows += workload_rows([item], all_results, quick)
        if not rows:
            continue
        if ids == ("F1",):
            table = f1_table(rows, peers)
        elif ids == ("F1C",):
            probe = next(x for x in items if x.id == "F1C")
            table = f1c_table(probe, F1C_RUN_H, all_results, peers)
        else:
            extra = ("expected MB",) if unit == "MB" else ()
            table = format_rows(rows, peers, ratios, unit, extra)
        sections.append((title, unit, rows, table))
    return sections


def _section_ids(sections):
    """The ids of each of ``report_sections``' sections (by title)."""
    ids = {title: section_ids for title, _, section_ids in SECTIONS}
    return [ids[title] for title, *_ in sections]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated ids, e.g. W1,W3 (a letter selects every id "
                    "starting with it: W, G, L, K, C, O, J, M, F; L1 and KF1 also select L1G "
                    "and KF1G); F1C, the slow sweep of F1's LSTM over H, runs only when named")
    ap.add_argument("--peers", help=f"comma-separated peers (default: all of {','.join(PEERS)})")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--png", metavar="PATH", default=os.path.join(HERE, "results.png"),
                    help="bar chart of the results (default: benchmarks/results.png; "
                    "an empty PATH writes none)")
    ap.add_argument("--f1c-h", metavar="H,...", help="F1C's hidden sizes (default: "
                    f"{','.join(map(str, F1C_H))}; with --quick {','.join(map(str, F1C_QUICK_H))})")
    ap.add_argument("--child-timeout", metavar="S", type=float, default=F1_TIMEOUT_S,
                    help=f"seconds an F1 / F1C child may run before it is killed and reported "
                    f"as a timeout (default {F1_TIMEOUT_S:g})")
    args = ap.parse_args(argv)

    try:
        f1c_h = (tuple(int(h) for h in args.f1c_h.split(",") if h.strip()) if args.f1c_h
                 else F1C_QUICK_H if args.quick else F1C_H)
        items = select(args.only, f1c_h)
    except ValueError as e:
        ap.error(str(e))
    _F1_TIMEOUT[0] = args.child_timeout
    peers = PEERS
    if args.peers:
        wanted = {s.strip() for s in args.peers.split(",") if s.strip()}
        if wanted - set(PEERS):
            ap.error(f"unknown peer(s) {sorted(wanted - set(PEERS))}; known: {PEERS}")
        peers = [p for p in PEERS if p in wanted]

    info = machine_info(REPO_ROOT)
    print("## Machine\n")
    for k, v in info.items():
        print(f"- {k}: {v}")
    try:
        from pytensor.compile.mode import get_default_mode

        print(f"- pytensor default mode's linker: {type(get_default_mode().linker).__name__}")
    except Exception:  # noqa: BLE001
        pass
    print(f"\n## Runs ({'quick sizes' if args.quick else 'full sizes'}; reference: {REFERENCE})\n",
          flush=True)

    def log(line):
        print(line, flush=True)

    all_results: dict[str, dict[str, Result]] = {}
    for item in items:
        print(f"{item.id}: {item.title}", flush=True)
        if isinstance(item, Probe):
            all_results.update(run_probe(item, args.quick, REFERENCE, peers, log=log))
        else:
            try:
                all_results[item.id] = run_workload(item, args.quick, REFERENCE, peers, log=log)
            finally:
                j1_restore_env()  # J1's builders point numbascan's cache at an empty folder
    workloads = [x for x in items if isinstance(x, Workload)]
    fwd_table = ""
    if any(w.id in FORWARD_OF for w in workloads):
        fwd_table = forward_ratios(workloads, all_results, args.quick, peers, log=log)
    sections = report_sections(items, all_results, args.quick, peers)
    for title, _, rows, table in sections:
        print(f"\n## {title}\n")
        print(table)
        j1_table = j1_report(peers) if any(r[0].startswith("J1 ") for r in rows) else ""
        if j1_table:
            print("\nJ1 by peer: the first call; one call on each other input, timed alone (a "
                  "trip count new to the function: the table's figure); then calls cycling "
                  "through the inputs again. `traces`: how often the traced Python body ran "
                  "(the function's for numbascan-jit and jax, the step's for numbascan; — : "
                  "nothing is traced).\n")
            print(j1_table)
    if fwd_table:
        print("\n## Derivative time over the same peer's forward pass (same inputs; goal for "
              "numbascan's reverse mode, G1: <= 3)\n")
        print(fwd_table)
    if args.json:
        write_json(args.json, info, all_results, args.quick)
    if args.png:
        f1c = next((x for x in items if x.id == "F1C"), None)
        bars = [(t, u, rows) for (t, u, rows, _), ids in zip(sections, _section_ids(sections))
                if ids != ("F1C",)]
        if os.path.exists(args.png) and f1c is not None:
            os.remove(args.png)  # a chart of an earlier run must not end up above the panel
        note = write_chart(args.png, bars, peers, highlight="jax",
                           ratio_of=("numbascan", "jax"))
        if bars:
            print(f"\n{note}")
        if f1c is not None:
            print(f1c_panel(args.png, f1c_series(f1c, F1C_RUN_H, all_results), peers,
                            _F1_TIMEOUT[0],
                            size_label(f1c.quick_sizes if args.quick else f1c.sizes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
