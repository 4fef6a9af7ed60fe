"""A Monte Carlo ensemble on a dask.distributed cluster: option prices under GBM.

Each path of the underlying price follows geometric Brownian motion,

    S(t + dt) = S(t) exp((r - sigma^2 / 2) dt + sigma sqrt(dt) z),   z ~ N(0, 1),

simulated by ``gbm_path`` as an ``ns.scan`` over the time steps, its normal numbers drawn from an
``ns.RandomStreams`` inside the step. ``ns.vmap(gbm_path)`` maps it over the paths; given a dask
array of starting prices it returns lazy dask arrays, one compiled call of the batched scan per
block of paths, on the workers of a ``dask.distributed.LocalCluster`` (Dask's progress bar shows
the blocks as they finish). Each path's draws depend only on the seed and its index among the
paths, so the ensemble computed on the cluster is the one computed in this process by the NumPy
call of the same function: the script checks that every number is identical, prices a European
call (against the Black-Scholes formula) and an arithmetic-average Asian call, and prints the
time each way.

    python examples/ensemble_dask.py                        # 2000 paths x 100 steps, 2 workers
    python examples/ensemble_dask.py --paths 200000 --chunk 25000 --workers 4

Needs dask[distributed] (``pip install numbascan[dask]``).
"""
import argparse
import math
import time

import numpy as np
import dask.array as da
from dask.distributed import Client, LocalCluster, progress

import numbascan as ns

RATE, SIGMA, STRIKE, MATURITY, SPOT = 0.05, 0.2, 105.0, 1.0, 100.0
rng = ns.RandomStreams(2024)


def gbm_path(s0, n_steps):
    """One path of n_steps steps from the price s0: -> (final price, European payoff, Asian
    payoff). n_steps is a Python int (in_axes None): compiled in."""
    dt = MATURITY / n_steps
    drift, vol = (RATE - 0.5 * SIGMA ** 2) * dt, SIGMA * math.sqrt(dt)

    def step(s):
        return s * np.exp(drift + vol * rng.normal())
    prices, _ = ns.scan(step, outputs_info=s0, n_steps=n_steps)
    return prices[-1], np.maximum(prices[-1] - STRIKE, 0.0), \
        np.maximum(prices.mean() - STRIKE, 0.0)


def black_scholes_call(spot, strike, rate, sigma, maturity):
    d1 = (math.log(spot / strike) + (rate + 0.5 * sigma ** 2) * maturity) / (
        sigma * math.sqrt(maturity))
    d2 = d1 - sigma * math.sqrt(maturity)
    cdf = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))        # noqa: E731
    return spot * cdf(d1) - strike * math.exp(-rate * maturity) * cdf(d2)


def price(payoffs):
    """Discounted mean and its standard error."""
    discount = math.exp(-RATE * MATURITY)
    return discount * payoffs.mean(), discount * payoffs.std(ddof=1) / math.sqrt(payoffs.size)


def main(paths=2000, steps=100, chunk=250, workers=2, verbose=True):
    say = print if verbose else (lambda *a, **k: None)
    ensemble = ns.vmap(gbm_path, in_axes=(0, None))
    spots = np.full(paths, SPOT)
    first = rng.counter
    # in this process first: its compile fills numbascan's disk cache, which the workers of
    # the LocalCluster then load from
    t0 = time.perf_counter()
    in_process = ensemble(spots, steps)
    process_s = time.perf_counter() - t0

    rng.counter = first                             # the same counters, on the cluster
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        # lazy: nothing runs yet; the stream's counters for the paths are reserved now
        lazy = ensemble(da.from_array(spots, chunks=chunk), steps)
        say(f"{paths} paths x {steps} steps in blocks of {chunk}: {lazy[0]!r}")
        futures = client.persist(list(lazy))
        if verbose:
            progress(futures)                       # Dask's bar, until every block is done
        on_cluster = [f.compute() for f in futures]
        cluster_s = time.perf_counter() - t0
    assert rng.counter == first + paths * steps     # as after the in-process call
    identical = all(np.array_equal(a, b) for a, b in zip(on_cluster, in_process))

    final, european, asian = on_cluster
    eu, eu_err = price(european)
    asia, asia_err = price(asian)
    exact = black_scholes_call(SPOT, STRIKE, RATE, SIGMA, MATURITY)
    say(f"\nidentical to the in-process ensemble: {identical}")
    say(f"mean final price {final.mean():.4f} (exact {SPOT * math.exp(RATE * MATURITY):.4f})")
    say(f"European call {eu:.4f} +- {eu_err:.4f}  (Black-Scholes {exact:.4f}, "
        f"{abs(eu - exact) / eu_err:.2f} standard errors away)")
    say(f"Asian call    {asia:.4f} +- {asia_err:.4f}")
    say(f"time: {process_s:.2f} s in this process (its first call: compile or disk cache), "
        f"{cluster_s:.2f} s on {workers} workers just started (their first block imports "
        f"numbascan and loads the compiled loop)")
    return dict(identical=identical, european=(eu, eu_err), exact=exact, asian=(asia, asia_err))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=250, help="paths per block")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    result = main(a.paths, a.steps, a.chunk, a.workers)
    assert result["identical"]
