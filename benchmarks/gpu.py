"""GPU benchmarks K1-K6: numbascan mode="cuda" against jax.jit(lax.scan) on the same card.

K5 and K6 are P2 on the GPU, x_t = 0.9 x_{t-1} + u_t: the block scan (parallel in time) of
`ns.scan(..., parallel=True)` (its coefficients and offsets computed on the host, so the
sequence crosses the bus) and of `ns.linear_recurrence` on device arrays, against
jax.jit(lax.associative_scan) over the pairs (a, b).

    python benchmarks/gpu.py                 # full sizes (needs an NVIDIA GPU, numba-cuda, jax)
    python benchmarks/gpu.py --only K3,K4,K5
    python benchmarks/gpu.py --quick         # small sizes
    python benchmarks/gpu.py --sim           # tiny sizes in numba's CUDA simulator (no GPU):
                                             # checks that the script runs, times mean nothing

Inputs are float32 and live on the device before timing; every call is followed by a device
synchronisation (numba: cuda.synchronize(), jax: block_until_ready()). Results are checked
first: numbascan against jax, and both against a NumPy float64 loop on a slice of the problem.
The memory floor of a workload is (bytes its inputs and outputs must move) / (the card's
device-to-device copy bandwidth, measured here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SIZES = {
    "full": dict(K1=dict(N=2**24, T=1000), K2=dict(B=8192, T=512, H=32),
                 K3=dict(n=100_000), K4=dict(B=64, T=2000, H=32), K5=dict(T=2**22),
                 K6=dict(T=2**22)),
    "quick": dict(K1=dict(N=2**20, T=200), K2=dict(B=1024, T=128, H=32),
                  K3=dict(n=10_000), K4=dict(B=64, T=200, H=32), K5=dict(T=2**18),
                  K6=dict(T=2**18)),
    "sim": dict(K1=dict(N=256, T=5), K2=dict(B=4, T=3, H=8),
                K3=dict(n=20), K4=dict(B=2, T=4, H=8), K5=dict(T=100), K6=dict(T=100)),
}


@dataclass
class Row:
    id: str
    what: str
    numbascan_ms: float
    jax_ms: float
    floor_ms: float
    compile_s: float
    agree: str

    @property
    def ratio(self):
        return self.numbascan_ms / self.jax_ms if self.jax_ms == self.jax_ms else float("nan")


def median_ms(fn, sync, budget_s=2.0, min_reps=3, max_reps=30):
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or
                                     time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        out = fn()
        sync(out)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def copy_bandwidth(cuda):
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    n = 2**26 if not cuda_simulated() else 2**10
    a = cuda.device_array(n, np.float32)
    b = cuda.device_array(n, np.float32)
    b.copy_to_device(a)
    cuda.synchronize()
    ms = median_ms(lambda: b.copy_to_device(a), lambda _: cuda.synchronize(), budget_s=0.5)
    return 2 * 4 * n / (ms / 1e3)


def cuda_simulated():
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


# ---------------------------------------------------------------- workloads
def k1(ns, jax, jnp, cuda, N, T):
    """elementwise x = a*x*(1-x) + s_t, a=2.5, last state only; s_t a scalar per step."""
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0.1, 0.5, N).astype(np.float32)
    s = (0.01 * rng.standard_normal(T)).astype(np.float32)
    a = np.float32(2.5)

    k = min(1024, N)

    def ref():
        x = x0[:k].astype(np.float64)
        for t in range(T):
            x = 2.5 * x * (1 - x) + s[t]
        return x

    d_x0, d_s = cuda.to_device(x0), cuda.to_device(s)

    def run_ns():
        return ns.foldl(lambda s_t, x, a: a * x * (1 - x) + s_t, d_s, d_x0, [a],
                        mode="cuda")[0]

    @jax.jit
    def run_jax(x0, s):
        return jax.lax.scan(lambda x, s_t: (2.5 * x * (1 - x) + s_t, None), x0, s)[0]

    j_x0, j_s = jnp.asarray(x0), jnp.asarray(s)
    moved = 2 * 4 * N + 4 * T
    return run_ns, lambda: run_jax(j_x0, j_s), ref, lambda o: o[:k], moved


def _rnn_inputs(B, T, H, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, T, H)).astype(np.float32)
    h0 = (0.1 * rng.standard_normal((B, H))).astype(np.float32)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    U = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    b = (0.1 * rng.standard_normal(H)).astype(np.float32)
    return X, h0, W, U, b


def _rnn(ns, jax, jnp, cuda, B, T, H, seed):
    """batched RNN h = tanh(h @ W + x_t @ U + b), all states kept, batch axis first."""
    X, h0, W, U, b = _rnn_inputs(B, T, H, seed)

    k = min(2, B)

    def ref():
        out = np.empty((k, T, H))
        for i in range(k):
            h = h0[i].astype(np.float64)
            for t in range(T):
                h = np.tanh(h @ W + X[i, t] @ U + b)
                out[i, t] = h
        return out

    d = [cuda.to_device(v) for v in (X, h0, W, U, b)]

    def states(X, h0, W, U, b):
        return ns.scan(lambda x, h, W, U, b: np.tanh(h @ W + x @ U + b), X, h0, [W, U, b],
                       mode="cuda")[0]
    batched = ns.vmap(states, in_axes=(0, 0, None, None, None))

    def run_ns():
        return batched(*d)

    def one(X, h0, W, U, b):
        def body(h, x):
            h = jnp.tanh(h @ W + x @ U + b)
            return h, h
        return jax.lax.scan(body, h0, X)[1]
    run_jax = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None)))
    j = [jnp.asarray(v) for v in (X, h0, W, U, b)]
    moved = 4 * (X.size + h0.size + B * T * H + W.size + U.size + b.size)
    return run_ns, lambda: run_jax(*j), ref, lambda o: o[:k], moved


def k2(ns, jax, jnp, cuda, B, T, H):
    return _rnn(ns, jax, jnp, cuda, B, T, H, seed=2)


def k4(ns, jax, jnp, cuda, B, T, H):
    return _rnn(ns, jax, jnp, cuda, B, T, H, seed=4)


def k3(ns, jax, jnp, cuda, n):
    """the seed's taps recurrence x(t) = x(t-2) @ U + x(t-1) @ V + tanh(x(t-1) @ W + b),
    state 2, all states kept."""
    rng = np.random.default_rng(3)
    U, V, W = ((0.5 * rng.standard_normal((2, 2))).astype(np.float32) for _ in range(3))
    U *= 0.5
    V *= 0.5
    b = rng.standard_normal(2).astype(np.float32)
    X0 = rng.standard_normal((2, 2)).astype(np.float32)

    k = min(1000, n)

    def ref():
        x2, x1 = X0[0].astype(np.float64), X0[1].astype(np.float64)
        out = np.empty((k, 2))
        for t in range(k):
            x2, x1 = x1, x2 @ U + x1 @ V + np.tanh(x1 @ W + b)
            out[t] = x1
        return out

    d = [cuda.to_device(v) for v in (X0, U, V, W, b)]

    def run_ns():
        return ns.scan(lambda x2, x1, U, V, W, b: x2 @ U + x1 @ V + np.tanh(x1 @ W + b),
                       outputs_info=dict(initial=d[0], taps=[-2, -1]),
                       non_sequences=d[1:], n_steps=n, mode="cuda")[0]

    @jax.jit
    def run_jax(X0, U, V, W, b):
        def body(c, _):
            x2, x1 = c
            new = x2 @ U + x1 @ V + jnp.tanh(x1 @ W + b)
            return (x1, new), new
        return jax.lax.scan(body, (X0[0], X0[1]), None, length=n)[1]

    j = [jnp.asarray(v) for v in (X0, U, V, W, b)]
    moved = 4 * 2 * n
    return run_ns, lambda: run_jax(*j), ref, lambda o: o[:k], moved


def _first_order(ns, jax, jnp, cuda, T, run):
    rng = np.random.default_rng(5)
    u = rng.standard_normal(T).astype(np.float32)
    x0 = np.float32(0.5)
    k = min(4096, T)

    def ref():
        out, x = np.empty(k), 0.5
        for t in range(k):
            x = 0.9 * x + float(u[t])
            out[t] = x
        return out

    d_u = cuda.to_device(u)

    @jax.jit
    def run_jax(u):
        def combine(p, q):
            return p[0] * q[0], q[0] * p[1] + q[1]
        a, b = jax.lax.associative_scan(combine, (jnp.full(u.shape, 0.9, u.dtype), u))
        return a * 0.5 + b

    j_u = jnp.asarray(u)
    moved = 2 * 4 * T
    return (lambda: run(ns, d_u, x0)), lambda: run_jax(j_u), ref, lambda o: o[:k], moved


def k5(ns, jax, jnp, cuda, T):
    """P2 on the GPU: ns.scan(0.9 x + u_t, parallel=True), a device-array sequence."""
    return _first_order(ns, jax, jnp, cuda, T, lambda ns, d_u, x0: ns.scan(
        lambda u_t, x: np.float32(0.9) * x + u_t, sequences=d_u, outputs_info=x0,
        parallel=True)[0])


def k6(ns, jax, jnp, cuda, T):
    """P2 on the GPU: ns.linear_recurrence(0.9, u, 0.5) on device arrays (the block scan)."""
    return _first_order(ns, jax, jnp, cuda, T, lambda ns, d_u, x0: ns.linear_recurrence(
        np.float32(0.9), d_u, x0))


WORKLOADS = {"K1": k1, "K2": k2, "K3": k3, "K4": k4, "K5": k5, "K6": k6}


def to_numpy(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)


def run_one(key, sizes, ns, jax, jnp, cuda, bandwidth, log):
    run_ns, run_jax, ref, head, moved = WORKLOADS[key](ns, jax, jnp, cuda, **sizes)
    t0 = time.perf_counter()
    out_ns = run_ns()
    cuda.synchronize()
    compile_s = time.perf_counter() - t0
    out_jax = run_jax()
    out_jax.block_until_ready()
    got, want, expect = to_numpy(out_ns), to_numpy(out_jax), ref()
    agree = (np.allclose(got, want, rtol=2e-3, atol=2e-4) and
             np.allclose(to_numpy(head(got)), expect, rtol=2e-3, atol=2e-4))
    log(f"{key}: first numbascan call (compile + run) {compile_s:.2f} s; agreement "
        f"{'ok' if agree else 'MISMATCH'} (max |ns - jax| = "
        f"{np.max(np.abs(got - want)):.2e})")
    ns_ms = median_ms(run_ns, lambda _: cuda.synchronize())
    jax_ms = median_ms(run_jax, lambda o: o.block_until_ready())
    doc = WORKLOADS[key].__doc__ or _rnn.__doc__
    return Row(key, f"{doc.splitlines()[0]} {sizes}", ns_ms, jax_ms,
               1e3 * moved / bandwidth, compile_s, "ok" if agree else "MISMATCH")


def table(rows, device, jax_device):
    lines = [f"GPU: {device}; jax on {jax_device}", "",
             "| id | numbascan ms | jax ms | numbascan/jax | jax/numbascan | memory floor ms | "
             "numbascan/floor | first call s | agree |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.id} | {r.numbascan_ms:.3f} | {r.jax_ms:.3f} | {r.ratio:.3f} | "
                     f"{1 / r.ratio:.1f}x | {r.floor_ms:.4f} | {r.numbascan_ms / r.floor_ms:.1f} |"
                     f" {r.compile_s:.2f} | {r.agree} |")
    lines.append("")
    lines += [f"- {r.id}: {r.what}" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="K1,K2,K3,K4,K5,K6")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sim", action="store_true", help="tiny sizes in the CUDA simulator")
    args = p.parse_args(argv)
    if args.sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    sys.path.insert(0, str(ROOT))
    import jax
    jax.config.update("jax_enable_x64", False)
    import jax.numpy as jnp
    from numba import cuda
    import numbascan as ns
    if not cuda.is_available():
        print("no CUDA GPU available (numba.cuda.is_available() is False); use --sim to run "
              "the script in the CUDA simulator")
        return 1
    device = "CUDA simulator" if args.sim else cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else device
    jax_device = str(jax.devices()[0])
    sizes = SIZES["sim" if args.sim else "quick" if args.quick else "full"]
    import numba
    from importlib.metadata import PackageNotFoundError, version
    try:
        numba_cuda = version("numba-cuda")
    except PackageNotFoundError:
        numba_cuda = "not installed (numba's own numba.cuda)"
    print(f"numbascan {ns.__version__}, numba {numba.__version__}, numba-cuda {numba_cuda}, "
          f"jax {jax.__version__}, NumPy {np.__version__}")
    bandwidth = copy_bandwidth(cuda)
    print(f"device-to-device copy bandwidth: {bandwidth / 1e9:.1f} GB/s")
    rows = []
    for key in [k.strip() for k in args.only.split(",") if k.strip()]:
        rows.append(run_one(key, sizes[key], ns, jax, jnp, cuda, bandwidth, print))
    print()
    print(table(rows, device, jax_device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
