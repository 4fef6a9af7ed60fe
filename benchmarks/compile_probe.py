"""First calls against H: numbascan and jax.jit, each in a new process with empty caches.

    python benchmarks/compile_probe.py                       # every row, both peers
    python benchmarks/compile_probe.py --hs 8,16,32 --cases lstm_fwd,lstm_grad
    python benchmarks/compile_probe.py --peers numbascan --json /tmp/probe.json

Programs (float64):

- `lstm_fwd`: an LSTM over T=200 steps of D=8 inputs, gates `i, f, o, g` from
  `x @ Wx + h @ Wh + b` cut into 4 parts of H, `c = f*c + i*g`, `h = o*tanh(c)`, carry (h, c);
  the result is every h. The step is `programs.lstm_step`, F1's (jax's reads `jnp` for `np`).
- `lstm_grad`: the gradient of `(hs**2).sum()` w.r.t. (Wx, Wh, b).
- `lorenz_rev`, `lorenz_fwd`: the Jacobian of the Lorenz system's state after 200 RK4 steps
  (dt=0.01) w.r.t. its initial state, in reverse and forward mode.

Every (program, H, peer) runs in a child process (`sys.executable` on this file with `--child`)
whose `NUMBASCAN_CACHE_DIR` and `NUMBA_CACHE_DIR` are new empty folders. The child imports the
peer, builds the inputs, and times its first call (tracing, code generation, compilation and
one run: what a script's user waits for) and then the steady state: the median of repeated calls
(as many as fit in about 1 s, 3 to 25). The parent checks that the peers agree (rtol 1e-7) and
prints one row per program and H: each peer's first call, without and with its import (what a
script waits for from `import` to the first result), and its run time, with numbascan / jax.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)

T, D = 200, 8
LORENZ_STEPS, DT = 200, 0.01
SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
CASES = ["lstm_fwd", "lstm_grad", "lorenz_rev", "lorenz_fwd"]
HS = [1, 2, 4, 8, 12, 16, 24, 32, 64, 128, 256]


def lstm_inputs(H):
    import numpy as np
    rng = np.random.default_rng(0)
    return dict(Wx=rng.normal(0, 0.3, (D, 4 * H)), Wh=rng.normal(0, 0.3 / max(1, H) ** 0.5,
                                                                   (H, 4 * H)),
                b=rng.normal(0, 0.1, 4 * H), X=rng.normal(0, 1, (T, D)),
                h0=np.zeros(H), c0=np.zeros(H))


def lorenz_s0():
    import numpy as np
    return np.array([-5.9, -5.5, 24.6])


# -- numbascan --------------------------------------------------------------------------------

def numbascan_program(case, H):
    import numpy as np

    import numbascan as ns
    from programs import lstm_step

    def lstm(Wx, Wh, b, X, h0, c0):
        (hs, _), _ = ns.scan(lstm_step, sequences=X, outputs_info=[h0, c0],
                             non_sequences=[Wx, Wh, b], mode="cpu")
        return hs

    def loss(Wx, Wh, b, X, h0, c0):
        return (lstm(Wx, Wh, b, X, h0, c0) ** 2).sum()

    def lorenz(s):
        x, y, z = s[0], s[1], s[2]
        return np.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z])

    def rk4_step(s, dt):
        k1 = lorenz(s)
        k2 = lorenz(s + 0.5 * dt * k1)
        k3 = lorenz(s + 0.5 * dt * k2)
        k4 = lorenz(s + dt * k3)
        return s + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def final_state(s0):
        states, _ = ns.scan(rk4_step, outputs_info=s0, non_sequences=DT,
                            n_steps=LORENZ_STEPS, mode="cpu")
        return states[-1]

    if case.startswith("lstm"):
        inp = lstm_inputs(H)
        args = [inp[k] for k in ("Wx", "Wh", "b", "X", "h0", "c0")]
        if case == "lstm_fwd":
            return lambda: lstm(*args)
        g = ns.grad(loss, (0, 1, 2))
        return lambda: g(*args)
    s0 = lorenz_s0()
    jac = ns.jacobian(final_state, mode="rev" if case == "lorenz_rev" else "fwd")
    return lambda: jac(s0)


# -- jax --------------------------------------------------------------------------------------

def jax_program(case, H):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from programs import lstm_step, with_numpy

    step = with_numpy(lstm_step, jnp)

    def lstm(Wx, Wh, b, X, h0, c0):
        def body(carry, x_t):
            h, c = step(x_t, *carry, Wx, Wh, b)
            return (h, c), h
        return jax.lax.scan(body, (h0, c0), X)[1]

    def loss(Wx, Wh, b, X, h0, c0):
        return (lstm(Wx, Wh, b, X, h0, c0) ** 2).sum()

    def lorenz(s):
        x, y, z = s[0], s[1], s[2]
        return jnp.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z])

    def rk4_step(s, _):
        k1 = lorenz(s)
        k2 = lorenz(s + 0.5 * DT * k1)
        k3 = lorenz(s + 0.5 * DT * k2)
        k4 = lorenz(s + DT * k3)
        s = s + DT / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return s, None

    def final_state(s0):
        return jax.lax.scan(rk4_step, s0, None, length=LORENZ_STEPS)[0]

    def ready(f):
        return lambda *a: jax.block_until_ready(f(*a))

    if case.startswith("lstm"):
        inp = lstm_inputs(H)
        args = [jnp.asarray(inp[k]) for k in ("Wx", "Wh", "b", "X", "h0", "c0")]
        f = ready(jax.jit(lstm if case == "lstm_fwd" else jax.grad(loss, (0, 1, 2))))
        return lambda: f(*args)
    s0 = jnp.asarray(lorenz_s0())
    f = ready(jax.jit((jax.jacrev if case == "lorenz_rev" else jax.jacfwd)(final_state)))
    return lambda: f(s0)


PROGRAMS = {"numbascan": numbascan_program, "jax": jax_program}


def child(peer, case, H, out_path):
    """Runs in the new process: time the import, the first call and the steady state."""
    t0 = time.perf_counter()
    import numpy as np
    make = PROGRAMS[peer]
    t1 = time.perf_counter()
    run = make(case, H)          # imports the peer, builds the inputs and the function
    t2 = time.perf_counter()
    result = run()
    t3 = time.perf_counter()
    times, spent = [], 0.0
    while len(times) < 3 or (spent < 1.0 and len(times) < 25):
        s = time.perf_counter()
        run()
        times.append(time.perf_counter() - s)
        spent += times[-1]
    leaves = result if isinstance(result, (tuple, list)) else [result]
    np.savez(out_path, *[np.asarray(x) for x in leaves])
    print(json.dumps({"import_s": t2 - t1 + (t1 - t0), "first_s": t3 - t2,
                      "run_s": statistics.median(times)}))


def measure(peer, case, H, timeout):
    """One child on empty caches -> (figures, result arrays) or (None, error text)."""
    import numpy as np
    tmp = tempfile.mkdtemp(prefix="ns-probe-")
    env = dict(os.environ, NUMBASCAN_CACHE_DIR=os.path.join(tmp, "ns"),
               NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
    out = os.path.join(tmp, "result.npz")
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", peer, case,
                            str(H), out], env=env, capture_output=True, text=True,
                           timeout=timeout, cwd=REPO_ROOT)
        if p.returncode != 0:
            return None, (p.stderr.strip().splitlines() or ["?"])[-1]
        figures = json.loads(p.stdout.strip().splitlines()[-1])
        with np.load(out) as z:
            arrays = [z[k] for k in z.files]
        return figures, arrays
    except subprocess.TimeoutExpired:
        return None, f"timeout {timeout} s"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def _fmt_ms(x):
    return "—" if x is None else f"{x * 1e3:.3g}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--hs", default=",".join(map(str, HS)), help="LSTM sizes H")
    ap.add_argument("--peers", default="numbascan,jax")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--child", nargs=4, metavar=("PEER", "CASE", "H", "OUT"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        sys.path.insert(0, REPO_ROOT)
        peer, case, H, out = a.child
        return child(peer, case, int(H), out)
    import numpy as np
    from importlib.metadata import PackageNotFoundError, version

    def _version(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    print("# " + ", ".join(f"{d} {_version(d)}" for d in ("numbascan", "numba", "numpy", "jax",
                                                         "jaxlib")) + "\n")
    peers = a.peers.split(",")
    rows = []
    print("| program | H | numbascan first (s) | jax first (s) | first ratio | "
          "with import: numbascan (s) | jax (s) | ratio | "
          "numbascan run (ms) | jax run (ms) | run ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in a.cases.split(","):
        for H in ([int(h) for h in a.hs.split(",")] if case.startswith("lstm") else [None]):
            got, errors = {}, []
            for peer in peers:
                figures, res = measure(peer, case, H or 0, a.timeout)
                if figures is None:
                    errors.append(f"{peer}: {res}")
                    continue
                got[peer] = (figures, res)
            if "numbascan" in got and "jax" in got:
                for x, y in zip(got["numbascan"][1], got["jax"][1]):
                    if not np.allclose(x, y, rtol=1e-7, atol=1e-10):
                        errors.append(f"MISMATCH max |diff| {np.abs(x - y).max():.3g}")
            f = {p: got[p][0] for p in got}
            nf = f.get("numbascan", {}).get("first_s")
            jf = f.get("jax", {}).get("first_s")
            ni = nf and nf + f["numbascan"]["import_s"]
            ji = jf and jf + f["jax"]["import_s"]
            nr = f.get("numbascan", {}).get("run_s")
            jr = f.get("jax", {}).get("run_s")
            row = dict(case=case, H=H, numbascan=f.get("numbascan"), jax=f.get("jax"),
                       errors=errors)
            rows.append(row)
            print(f"| {case} | {H or '—'} | {_fmt_s(nf)} | {_fmt_s(jf)} | "
                  f"{_fmt_s(nf / jf) if nf and jf else '—'} | {_fmt_s(ni)} | {_fmt_s(ji)} | "
                  f"{_fmt_s(ni / ji) if ni and ji else '—'} | {_fmt_ms(nr)} | {_fmt_ms(jr)} | "
                  f"{_fmt_s(nr / jr) if nr and jr else '—'} |"
                  + (f" {'; '.join(errors)}" if errors else ""), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
