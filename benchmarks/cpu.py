"""CPU benchmarks W1-W4, G1-G2: numbascan against jax, pytensor, hand-written numba and Python.

    python benchmarks/cpu.py                 # every workload, full sizes
    python benchmarks/cpu.py --only W1,W3    # a subset
    python benchmarks/cpu.py --quick         # small sizes: a smoke test of every peer

Each workload is a ``Workload`` (see ``_harness.py``): an input builder plus one builder per peer.
W1-W4 are single recurrences described by a ``ScanProblem``, from which the jax, pytensor, python
and numbascan peers are generated; the hand-written numba loop is written out for each. Other
kinds of workload (gradients, compile time, call overhead) can be added to ``WORKLOADS`` with
their own peer builders: G1 and G2 (reverse- and forward-mode derivatives of W1) do, and their times
are also shown relative to the same peer's W1 forward pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
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

from _harness import (Skip, Workload, format_table, machine_info, run_workload,  # noqa: E402
                      time_callable, write_json)

# Column order of the table; "python" is the reference every other peer is checked against.
PEERS = ["jax", "pytensor-numba", "pytensor-cvm", "numba-hand", "python", "numbascan",
         "numbascan-jit"]
REFERENCE = "python"
RATIOS = [("numbascan", "jax"), ("numbascan", "numba-hand"), ("numbascan", "pytensor-numba"),
          ("numbascan", "python")]


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


def _numbascan_call(ns, p: ScanProblem, seqs, init, nons, n, mode):
    outputs_info = init if p.taps == (-1,) else [dict(initial=init, taps=list(p.taps))]
    sequences = None if not seqs else seqs[0] if len(seqs) == 1 else list(seqs)
    if p.keep == "last" and sequences is not None:
        last, _ = ns.foldl(p.step_np, sequences=sequences, outputs_info=outputs_info,
                           non_sequences=list(nons), mode=mode)
        return last
    out, _ = ns.scan(p.step_np, sequences=sequences, outputs_info=outputs_info,
                     non_sequences=list(nons), n_steps=n, mode=mode)
    return out[-1] if p.keep == "last" else out


def numbascan_peer(p: ScanProblem):
    """Eager ``ns.scan`` / ``ns.foldl`` on NumPy inputs (every call goes through the Python API)."""

    def build(inp):
        ns = _numbascan()
        seqs = [inp[k] for k in p.sequences]
        init = inp[p.init]
        nons = [inp[k] for k in p.non_sequences]
        n = inp[p.n_steps] if p.n_steps else None
        return lambda: _numbascan_call(ns, p, seqs, init, nons, n, mode="cpu")

    return build


def numbascan_jit_peer(p: ScanProblem):
    """The same scan inside a function compiled with ``ns.jit``."""

    def build(inp):
        ns = _numbascan()
        if not hasattr(ns, "jit"):
            raise Skip("numbascan.jit is not available")
        n_seq, n = len(p.sequences), (inp[p.n_steps] if p.n_steps else None)

        def run(*arrays):
            seqs, init, nons = arrays[:n_seq], arrays[n_seq], arrays[n_seq + 1:]
            return _numbascan_call(ns, p, seqs, init, nons, n, mode=None)

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
FORWARD_OF = {"G1": "W1", "G2": "W1"}


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
    Workload("G1", "reverse mode: d sum(h) / d W for W1's RNN",
             sizes={"T": 10000, "H": 32}, quick_sizes={"T": 500, "H": 8},
             make_inputs=grad_inputs, peers=G1_PEERS),
    Workload("G2", "forward mode: W1's states and their tangents for a change of h0 (jvp)",
             sizes={"T": 10000, "H": 32}, quick_sizes={"T": 500, "H": 8},
             make_inputs=grad_inputs, peers=G2_PEERS),
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated workload ids, e.g. W1,W3")
    ap.add_argument("--peers", help=f"comma-separated peers (default: all of {','.join(PEERS)})")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)

    workloads = WORKLOADS
    if args.only:
        wanted = [s.strip().upper() for s in args.only.split(",") if s.strip()]
        unknown = set(wanted) - {w.id for w in WORKLOADS}
        if unknown:
            ap.error(f"unknown workload(s) {sorted(unknown)}; known: {[w.id for w in WORKLOADS]}")
        workloads = [w for w in WORKLOADS if w.id in wanted]
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

    all_results = {}
    for w in workloads:
        print(f"{w.id}: {w.title}", flush=True)
        all_results[w.id] = run_workload(w, args.quick, REFERENCE, peers,
                                         log=lambda s: print(s, flush=True))
    ratios = [(n, d) for n, d in RATIOS if n in peers and d in peers]
    fwd_table = ""
    if any(w.id in FORWARD_OF for w in workloads):
        fwd_table = forward_ratios(workloads, all_results, args.quick, peers,
                                   log=lambda s: print(s, flush=True))
    print("\n## Median time per call (ms) and ratios (< 1: numbascan is faster)\n")
    print(format_table(workloads, all_results, peers, ratios, args.quick))
    if fwd_table:
        print("\n## Derivative time over the same peer's forward pass (W1, same inputs; "
              "goal for numbascan's reverse mode, G1: <= 3)\n")
        print(fwd_table)
    if args.json:
        write_json(args.json, info, all_results, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
