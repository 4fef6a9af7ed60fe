"""P2: a first-order linear recurrence, parallel in time against the loop and its peers.

    python benchmarks/parallel_time.py              # T = 2*10^6, 5 interleaved rounds, first calls
    python benchmarks/parallel_time.py --quick      # T = 2*10^4, a smoke test
    python benchmarks/parallel_time.py --rounds 9 --no-first-calls

x_t = 0.9 x_{t-1} + u_t, every state kept (float64, x_{-1} = 0.5). Peers:

  numbascan-parallel   ns.scan(step, sequences=u, outputs_info=x0, parallel=True)
  numbascan-loop       the same with parallel=False (the compiled sequential loop)
  numbascan-associative  numbascan.lax.associative_scan over the pairs (a, b), eagerly (its
                       combine is affine in its left operand: the fold runs parallel in time)
  scipy-lfilter        scipy.signal.lfilter([1], [1, -0.9], u, zi=[0.9 x0])
  jax-associative      jax.jit of jax.lax.associative_scan over the pairs (a, b), CPU, float64
  jax-scan             jax.jit of jax.lax.scan (the sequential loop in XLA), CPU, float64

Steady state ("P2"): each round times every peer once (the median of a few calls, about
BUDGET_S seconds each), the peers in a rotating order; the table gives each peer's median over
the rounds and the range of the rounds' medians, so that a busy core shows as a wide range
rather than as one lucky number. `uptime` is printed before and after: the machine's other
load is part of the measurement.

First calls ("P2F"): a new process per peer, from its first line to its first result (imports,
trace, compile, call) with empty caches (numbascan's, numba's), and again with the caches the
first process left ("warm").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, REPO_ROOT)  # benchmark the checkout's numbascan, installed or not

A, X0 = 0.9, 0.5
BUDGET_S = 0.4
RTOL = 1e-9


def inputs(T):
    return np.random.default_rng(0).normal(size=T)


def reference(u):
    """x_t by lfilter when scipy is installed, else a NumPy loop."""
    try:
        from scipy import signal
        return signal.lfilter([1.0], [1.0, -A], u, zi=[A * X0])[0]
    except ImportError:
        out, x = np.empty_like(u), X0
        for t, u_t in enumerate(u):
            x = A * x + u_t
            out[t] = x
        return out


# ------------------------------------------------------------------------------------------------
# peers: name -> build(u) -> a call returning x (T,)


def _numbascan(parallel):
    def build(u):
        import numbascan as ns

        def step(u_t, x):
            return A * x + u_t
        x0 = np.float64(X0)
        return lambda: ns.scan(step, sequences=u, outputs_info=x0, parallel=parallel)[0]
    return build


def _numbascan_associative(u):
    import numbascan.lax as nlax

    def combine(p, q):
        (a1, b1), (a2, b2) = p, q
        return a1 * a2, a2 * b1 + b2
    a = np.full(u.shape, A)

    def run():
        prods, b = nlax.associative_scan(combine, (a, u))
        return prods * X0 + b             # the states from x_{-1} = X0, as jax's peer
    return run


def _lfilter(u):
    from scipy import signal
    return lambda: signal.lfilter([1.0], [1.0, -A], u, zi=[A * X0])[0]


def _jax_setup():
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def _jax_associative(u):
    jax = _jax_setup()
    jnp = jax.numpy

    def combine(p, q):
        (a1, b1), (a2, b2) = p, q
        return a1 * a2, a2 * b1 + b2

    @jax.jit
    def run(u):
        a, b = jax.lax.associative_scan(combine, (jnp.full(u.shape, A), u))
        return a * X0 + b
    uj = jnp.asarray(u)
    return lambda: run(uj).block_until_ready()


def _jax_scan(u):
    jax = _jax_setup()

    @jax.jit
    def run(u):
        def step(x, u_t):
            x = A * x + u_t
            return x, x
        return jax.lax.scan(step, X0, u)[1]
    uj = jax.numpy.asarray(u)
    return lambda: run(uj).block_until_ready()


PEERS = {
    "numbascan-parallel": _numbascan(True),
    "numbascan-loop": _numbascan(False),
    "numbascan-associative": _numbascan_associative,
    "scipy-lfilter": _lfilter,
    "jax-associative": _jax_associative,
    "jax-scan": _jax_scan,
}
MODULES = {"numbascan-parallel": "numbascan", "numbascan-loop": "numbascan",
           "numbascan-associative": "numbascan",
           "scipy-lfilter": "scipy", "jax-associative": "jax", "jax-scan": "jax"}


def _median_call(call, budget_s=BUDGET_S, min_reps=3, max_reps=50):
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = [first]
    for _ in range(int(min(max_reps, max(min_reps, budget_s / max(first, 1e-9)))) - 1):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def steady_state(T, rounds, log=print):
    """{peer: [median seconds of each round]} and {peer: note} for peers that did not run."""
    u = inputs(T)
    ref = reference(u)
    calls, notes = {}, {}
    for name, build in PEERS.items():
        try:
            call = build(u)
            got = np.asarray(call())
        except ImportError as e:
            notes[name] = f"skip ({e.name} not installed)"
            continue
        if got.shape != ref.shape or not np.allclose(got, ref, rtol=RTOL, atol=1e-12):
            notes[name] = f"wrong result (max error {np.max(np.abs(got - ref)):.3g})"
            continue
        calls[name] = call
    times = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(_median_call(calls[name]))
        log(f"  round {r + 1}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.2f}" for n in names))
    return times, notes


# ------------------------------------------------------------------------------------------------
# first calls: a child process per peer

_CHILD = """\
import time
_t0 = time.perf_counter()
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
import numpy as np
import parallel_time as bench
u = bench.inputs({T})
x = np.asarray(bench.PEERS[{peer!r}](u)())
elapsed = time.perf_counter() - _t0
ok = bool(np.allclose(x, bench.reference(u), rtol=bench.RTOL, atol=1e-12))
print("RESULT", elapsed, ok)
"""


def first_call(peer, T, cache_dir):
    env = dict(os.environ)
    env["NUMBASCAN_CACHE_DIR"] = os.path.join(cache_dir, "numbascan")
    env["NUMBA_CACHE_DIR"] = os.path.join(cache_dir, "numba")
    script = _CHILD.format(root=REPO_ROOT, here=HERE, T=T, peer=peer)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            _, elapsed, ok = line.split()
            return float(elapsed), ok == "True"
    raise RuntimeError(f"{peer}: child failed: {proc.stderr.strip()[-400:]}")


def first_calls(T, log=print):
    """{peer: (cold seconds, warm seconds)}."""
    found = {}
    for peer, module in MODULES.items():
        try:
            __import__(module)
        except ImportError:
            continue
        with tempfile.TemporaryDirectory(prefix="ns-p2f-") as cache:
            cold, ok_cold = first_call(peer, T, cache)
            warm, ok_warm = first_call(peer, T, cache)
        found[peer] = (cold, warm, ok_cold and ok_warm)
        log(f"  {peer}: cold {cold:.2f} s, warm {warm:.2f} s")
    return found


# ------------------------------------------------------------------------------------------------


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "(uptime not available)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 2*10^4")
    parser.add_argument("--T", type=int, default=None, help="number of steps")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--no-first-calls", action="store_true")
    args = parser.parse_args(argv)
    T = args.T or (20_000 if args.quick else 2_000_000)
    import numba
    print(f"uptime before: {_uptime()}")
    print(f"numba threads: {numba.config.NUMBA_NUM_THREADS}, cores: {os.cpu_count()}")
    print(f"P2: x_t = {A} x_(t-1) + u_t, T = {T}, float64, every state; {args.rounds} "
          f"interleaved rounds")
    times, notes = steady_state(T, args.rounds)
    first = {} if args.no_first_calls else first_calls(T)
    print(f"uptime after: {_uptime()}")
    base = statistics.median(times["scipy-lfilter"]) if "scipy-lfilter" in times else None
    print()
    print(f"| peer (T = {T}) | median ms | rounds' range ms | / lfilter | first call s (cold, "
          f"warm) |")
    print("|---|---|---|---|---|")
    for name in PEERS:
        if name not in times:
            print(f"| {name} | {notes.get(name, 'not run')} | | | |")
            continue
        med = statistics.median(times[name])
        rel = f"{med / base:.2f}" if base else ""
        fc = first.get(name)
        fc_text = (f"{fc[0]:.2f}, {fc[1]:.2f}" + ("" if fc[2] else " (wrong result)")
                   if fc else "")
        print(f"| {name} | {med * 1e3:.2f} | {min(times[name]) * 1e3:.2f}-"
              f"{max(times[name]) * 1e3:.2f} | {rel} | {fc_text} |")


if __name__ == "__main__":
    main()
