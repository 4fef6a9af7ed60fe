"""D1: a Monte Carlo ensemble through Dask, on a 2-worker LocalCluster against one process.

    python benchmarks/dask_ensemble.py                  # 2000, 20000, 200000 paths x 100 steps
    python benchmarks/dask_ensemble.py --quick          # smaller sizes, fewer repetitions
    python benchmarks/dask_ensemble.py --workers 4 --paths 2000,200000 --chunks 8

The workload is examples/ensemble_dask.py's: ``ns.vmap(gbm_path)`` over the paths, each path an
``ns.scan`` of geometric Brownian motion drawing one normal number per step from an
``ns.RandomStreams``. Peers: ``in-process``, the NumPy call in this process (one compiled loop,
the paths across this process's numba threads); ``cluster``, the same function on a dask array
of the starting prices cut into blocks, computed on a ``LocalCluster(n_workers, processes=True,
threads_per_worker=1)``, from making the lazy arrays to the gathered results. The script imports
the example as a module, so the workers find ``gbm_path`` by reference.

Columns: the first call, numbascan's disk cache warm (in-process: the first call in a new
process that has imported numbascan; cluster: the first computation on workers just started,
which import numbascan, trace `f` and load its loop), then medians after a warm-up.
Every cluster result is checked against the in-process call from the same counters: the
numbers must be identical, bit for bit. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)

import dask.array as da                     # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402

import numbascan as ns                      # noqa: E402
import ensemble_dask as ex                  # noqa: E402

STEPS = 100


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


FIRST_CALL = '''
import json, sys, time
sys.path[:0] = {paths!r}
import numpy as np
import numbascan as ns
import ensemble_dask as ex
t0 = time.perf_counter()
ns.vmap(ex.gbm_path, in_axes=(0, None))(np.full({n}, ex.SPOT), {steps})
print(json.dumps(time.perf_counter() - t0))
'''


def first_in_process(n):
    code = FIRST_CALL.format(paths=[ROOT, os.path.join(ROOT, "examples")], n=n, steps=STEPS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


ENSEMBLE = ns.vmap(ex.gbm_path, in_axes=(0, None))


def on_cluster(client, spots, chunk):
    lazy = ENSEMBLE(da.from_array(spots, chunks=chunk), STEPS)
    return [f.result() for f in client.compute(list(lazy))]


def in_process(spots):
    return ENSEMBLE(spots, STEPS)


def identical(counter, client, spots, chunk):
    """Both peers from the same first counter: every number the same."""
    ex.rng.counter = counter
    a = on_cluster(client, spots, chunk)
    ex.rng.counter = counter
    b = in_process(spots)
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def run(sizes, blocks, workers, reps):
    rows, counts = [], {}
    for n in sizes:
        spots = np.full(n, ex.SPOT)
        chunk = -(-n // blocks)
        in_process(spots)              # compiled in this process: numbascan's disk cache warm
        first_local = first_in_process(n)
        with LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            client.wait_for_workers(workers)
            t0 = time.perf_counter()
            on_cluster(client, spots, chunk)
            first_cluster = time.perf_counter() - t0
            same = identical(12345, client, spots, chunk)
            t_cluster = median_time(lambda: on_cluster(client, spots, chunk), reps)
            counts[n] = client.run(ns.cache_info)
        t_local = median_time(lambda: in_process(spots), reps)
        steps = n * STEPS
        rows.append([f"{n} x {STEPS}", f"{blocks} of {chunk}", f"{first_local:.2f}",
                     f"{first_cluster:.2f}", f"{t_local * 1e3:.1f}", f"{t_cluster * 1e3:.1f}",
                     f"{t_cluster / t_local:.2f}", f"{steps / t_local / 1e6:.1f}",
                     f"{steps / t_cluster / 1e6:.1f}", "yes" if same else "NO"])
    return rows, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    ap.add_argument("--paths", default=None, help="comma-separated path counts")
    ap.add_argument("--chunks", type=int, default=8, help="blocks of paths per ensemble")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.paths.split(",")] if args.paths else (
        [2000] if args.quick else [2000, 20000, 200000])
    reps = 3 if args.quick else 9
    import numba
    print(f"# numbascan {ns.__version__}, numba {numba.__version__}, NumPy {np.__version__}, "
          f"dask {sys.modules['dask'].__version__}, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores, numba threads in this process: {numba.get_num_threads()}")
    rows, counts = run(sizes, args.chunks, args.workers, reps)
    print(f"\n### D1: GBM ensemble, ns.vmap over a dask array on a {args.workers}-worker "
          f"LocalCluster (threads_per_worker=1) against the NumPy call in this process\n")
    print(table(["paths x steps", "blocks", "first call in-process s", "first call cluster s",
                 "in-process ms", "cluster ms", "cluster/in-process",
                 "in-process Msteps/s", "cluster Msteps/s", "identical numbers"], rows))
    print("\nworkers' trace cache after each size (traces, compiles):")
    for n, per_worker in counts.items():
        print(f"  {n} paths: " + ", ".join(f"({c.traces}, {c.compiles})"
                                            for c in per_worker.values()))


if __name__ == "__main__":
    main()
