"""R1, GBM and V1: random draws outside a scan, a Monte Carlo scan, ns.vmap on a busy machine.

    python benchmarks/random_and_vmap.py               # every table
    python benchmarks/random_and_vmap.py --only R1,GBM
    python benchmarks/random_and_vmap.py --quick       # smaller sizes, fewer repetitions

Prints Markdown tables; every time is a median after a warm-up call, measured side by side
with its peer in the same process. See benchmarks/README.md ("R1, GBM, V1").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numbascan as ns                      # noqa: E402
from numbascan import random as nr          # noqa: E402

# ------------------------------------------------------------------------------------------------
# helpers


def median_time(call, reps, warmup=1):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds, digits=1):
    return f"{seconds * 1e3:.{digits}f}"


def child(code, env=None, timeout=600):
    """Run `code` in a new Python process (this checkout first on its path); -> its last
    stdout line, parsed as JSON."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Busy:
    """One `while True: pass` process per core for the duration of the block."""

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(os.cpu_count() or 1)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


# ------------------------------------------------------------------------------------------------
# R1: draws outside a scan


DRAWS = {
    # name: (numbascan call, NumPy Generator call) on a size
    "uniform": (lambda s, n: s.uniform(size=n), lambda g, n: g.random(n)),
    "normal": (lambda s, n: s.normal(size=n), lambda g, n: g.standard_normal(n)),
    "binomial n=1 p=0.3": (lambda s, n: s.binomial(size=n, n=1, p=0.3),
                           lambda g, n: g.binomial(1, 0.3, n)),
    "binomial n=10 p=0.3": (lambda s, n: s.binomial(size=n, n=10, p=0.3),
                            lambda g, n: g.binomial(10, 0.3, n)),
}

FIRST_CALL = '''
import json, time
t0 = time.perf_counter()
import numpy as np
{imports}
t1 = time.perf_counter()
x = {call}
t2 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "first": t2 - t1}}))
'''


def first_calls(n):
    """First normal draw of n numbers in new processes: numbascan with numba's disk cache as
    it is (warm after the steady-state rows ran) and with an empty one, NumPy."""
    nb = dict(imports="import numbascan as ns", call=f"ns.RandomStreams(0).normal(size={n})")
    npy = dict(imports="", call=f"np.random.default_rng(0).standard_normal({n})")
    rows = {}
    rows["warm cache"] = child(FIRST_CALL.format(**nb))
    with tempfile.TemporaryDirectory() as tmp:
        rows["empty cache"] = child(FIRST_CALL.format(**nb), env={
            "NUMBA_CACHE_DIR": os.path.join(tmp, "numba"),
            "NUMBASCAN_CACHE_DIR": os.path.join(tmp, "numbascan")})
    rows["numpy"] = child(FIRST_CALL.format(**npy))
    return rows


def run_r1(quick):
    n = 252_000 if quick else 2_520_000
    reps = 3 if quick else 7
    rows = []
    for name, (ns_call, np_call) in DRAWS.items():
        stream = ns.RandomStreams(0)
        # bit-identical to the reference (NumPy, no compilation) implementation
        got = ns_call(ns.RandomStreams(0), n)
        key = ns.RandomStreams(0).key
        kind = name.split()[0]
        params = {"uniform": (0.0, 1.0), "normal": (0.0, 1.0)}.get(kind) or (
            int(name.split("n=")[1].split()[0]), 0.3)
        ref = nr.draw_numpy(key, 0, kind, n, params)
        assert (np.asarray(got).view(np.int64) == ref.view(np.int64)).all(), name
        t_ns = median_time(lambda: ns_call(stream, n), reps)
        t_np = median_time(lambda: np_call(np.random.default_rng(0), n), reps)
        rows.append([name, ms(t_ns), ms(t_np), f"{t_ns / t_np:.2f}"])
    print(f"\n### R1: draws outside a scan, {n:,} values, steady state (ms)\n")
    print(table(["draw", "numbascan", "NumPy Generator", "numbascan/NumPy"], rows))
    fc = first_calls(n)
    print(f"\n### R1: first normal draw of {n:,} values in a new process (ms)\n")
    print(table(["process", "import", "first call"],
                [[f"numbascan, {k}", ms(v["import"]), ms(v["first"])]
                 for k, v in fc.items() if k != "numpy"] +
                [["NumPy", ms(fc["numpy"]["import"]), ms(fc["numpy"]["first"])]]))


# ------------------------------------------------------------------------------------------------
# GBM Monte Carlo


MU, SIGMA, S0 = 0.05, 0.2, 100.0


def gbm_numbascan(paths, steps, keep="all"):
    """S(t) = S(t-1) exp((mu - sigma^2 / 2) dt + sigma sqrt(dt) z_t), a scan over the steps
    whose state holds every path; -> every state (scan) or the last one (foldl)."""
    dt = 1.0 / steps
    rng = ns.RandomStreams(0)
    drift, vol = (MU - 0.5 * SIGMA ** 2) * dt, SIGMA * np.sqrt(dt)

    def step(S):
        z = rng.normal(size=paths)
        return S * np.exp(drift + vol * z)
    start = np.full(paths, S0)
    if keep == "all":
        return ns.scan(step, outputs_info=start, n_steps=steps)[0]
    return ns.foldl(lambda t, S: step(S), sequences=np.arange(steps), outputs_info=start)[0]


def gbm_numpy(paths, steps, keep="all", z=None):
    dt = 1.0 / steps
    if z is None:
        z = np.random.default_rng(0).standard_normal((steps, paths))
    growth = np.exp((MU - 0.5 * SIGMA ** 2) * dt + SIGMA * np.sqrt(dt) * z)
    if keep == "all":
        return S0 * np.cumprod(growth, axis=0)
    return S0 * np.prod(growth, axis=0)


def run_gbm(quick):
    paths, steps = (2000, 252) if quick else (10000, 252)
    reps = 3 if quick else 9
    # numbascan against NumPy on numbascan's own normal numbers: the same paths
    z = nr.draw_numpy(ns.RandomStreams(0).key, 0, "normal", (steps, paths), (0.0, 1.0))
    rows = []
    for keep, what in (("all", "every state (ns.scan / cumprod)"),
                       ("last", "last state (ns.foldl / prod)")):
        got = gbm_numbascan(paths, steps, keep)
        ref = gbm_numpy(paths, steps, keep, z)
        assert np.allclose(got, ref, rtol=1e-10, atol=0), keep
        last = got[-1] if keep == "all" else got
        assert abs(last.mean() / (S0 * np.exp(MU)) - 1) < 0.02, last.mean()
        t_ns = median_time(lambda: gbm_numbascan(paths, steps, keep), reps)
        t_np = median_time(lambda: gbm_numpy(paths, steps, keep), reps)
        rows.append([what, ms(t_ns), ms(t_np), f"{t_ns / t_np:.2f}"])
    print(f"\n### GBM Monte Carlo, {paths} paths x {steps} steps (ms)\n")
    print(table(["result", "numbascan", "NumPy (vectorised)", "numbascan/NumPy"], rows))


# ------------------------------------------------------------------------------------------------
# V1: ns.vmap on an idle and on a busy machine


V1_CHILD = '''
import json, os, statistics, subprocess, sys, time
import numpy as np
import numbascan as ns
B, T, H, calls = {B}, {T}, {H}, {calls}
rng = np.random.default_rng(0)
X = rng.standard_normal((B, T, H))
H0 = np.zeros((B, H))
W = 0.5 * rng.standard_normal((H, H)) / np.sqrt(H)

def rnn(x, h0, W):
    hs, _ = ns.scan(lambda x_t, h, W: np.tanh(h @ W + x_t), sequences=x, outputs_info=h0,
                    non_sequences=W)
    return hs

f = ns.vmap(rnn, in_axes=(0, 0, None))
out = f(X, H0, W)
ref = np.stack([rnn(X[k], H0[k], W) for k in range(B)])     # a loop of the same scan
assert np.allclose(out, ref, rtol=1e-12, atol=1e-14)

def timings():
    f(X, H0, W)
    ts = []
    deadline = time.perf_counter() + 20.0
    for _ in range(calls):
        t0 = time.perf_counter()
        f(X, H0, W)
        ts.append(time.perf_counter() - t0)
        if t0 > deadline:
            break
    return statistics.median(ts), sum(ts) / len(ts)

idle = timings()
procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
         for _ in range(os.cpu_count() or 1)]
try:
    time.sleep(0.5)
    busy = timings()
finally:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
import numba
print(json.dumps({{"idle": idle, "busy": busy, "layer": numba.threading_layer()}}))
'''

# default: a small batch in the calling thread, threads waiting passively (docs/guide.md,
# "Batching: ns.vmap"); the other rows undo one choice or both (the last but one is the
# behaviour before these choices), or use numba's other threading layer
V1_SETTINGS = [
    ("default", {}),
    ("threads always (NUMBASCAN_PARALLEL_MIN_WORK=0)", {"NUMBASCAN_PARALLEL_MIN_WORK": "0"}),
    ("threads always, OMP_WAIT_POLICY=active",
     {"NUMBASCAN_PARALLEL_MIN_WORK": "0", "OMP_WAIT_POLICY": "active"}),
    ("threads always, NUMBA_THREADING_LAYER=workqueue",
     {"NUMBASCAN_PARALLEL_MIN_WORK": "0", "NUMBA_THREADING_LAYER": "workqueue"}),
]


def run_v1(quick):
    sizes = [(16, 50, 4, 400 if not quick else 100), (64, 1000, 32, 20 if not quick else 5)]
    rows = []
    for B, T, H, calls in sizes:
        settings = V1_SETTINGS if (B, T, H) == (16, 50, 4) else [V1_SETTINGS[0], V1_SETTINGS[2]]
        for label, env in settings:
            r = child(V1_CHILD.format(B=B, T=T, H=H, calls=calls), env=env)
            (mi, ai), (mb, ab) = r["idle"], r["busy"]
            rows.append([f"B={B} T={T} H={H}", label, r["layer"], ms(mi, 3), ms(mb, 3),
                         f"{mb / mi:.2f}", ms(ai, 3), ms(ab, 3), f"{ab / ai:.2f}"])
    print("\n### V1: ns.vmap of an RNN scan, idle vs busy (a spinning process per core), ms\n")
    print(table(["batch", "settings", "layer", "idle median", "busy median", "busy/idle",
                 "idle mean", "busy mean", "busy/idle (mean)"], rows))


# ------------------------------------------------------------------------------------------------


SECTIONS = {"R1": run_r1, "GBM": run_gbm, "V1": run_v1}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: R1,GBM,V1")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    args = ap.parse_args(argv)
    import numba
    print(f"# numbascan {ns.__version__}, numba {numba.__version__}, NumPy {np.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    env = {k: os.environ[k] for k in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY",
                                      "NUMBA_NUM_THREADS", "NUMBASCAN_PARALLEL_MIN_WORK")
           if k in os.environ}
    print(f"# environment: {env or 'none of the thread settings'}")
    for name in args.only.split(","):
        SECTIONS[name.strip()](args.quick)


if __name__ == "__main__":
    main()
