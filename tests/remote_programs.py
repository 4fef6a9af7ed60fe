"""Functions that pickle by reference: another process (a dask worker, a fresh interpreter)
imports this module to find them, so they live here rather than in a test module. Used by
tests/test_dask.py and tests/test_pickling.py."""
from collections import namedtuple

import numpy as np

import numbascan as ns
from numbascan import random as nsrandom

# the stream the walks draw from; a worker's copy is never drawn from directly (a block borrows
# the counters of the caller's stream, api/dask.py)
STREAM = ns.RandomStreams(2718)
T = 12

Summary = namedtuple("Summary", "last energy")


def walk(x0, drift):
    """A noisy walk of T steps from x0, drifting by `drift`: -> (last state, sum of squares)."""
    def step(x):
        return x + drift + 0.1 * STREAM.normal(size=x.shape)
    xs, _ = ns.scan(step, outputs_info=x0, n_steps=T)
    return xs[-1], (xs ** 2).sum()


def walk_list(x0, drift):
    return list(walk(x0, drift))


def walk_summary(x0, drift):
    return Summary(*walk(x0, drift))


def walk_last(x0, drift, scale):
    """One result, a static Python number."""
    return walk(x0, drift)[0] * scale


def walk_numpy(x0, drift, counter):
    """`walk` for one element in NumPy, from its first counter of STREAM."""
    z = nsrandom.draw_numpy(STREAM.key, counter, "normal", (T,) + x0.shape, (0.0, 1.0))
    xs, x = [], x0
    for t in range(T):
        x = x + drift + 0.1 * z[t]
        xs.append(x)
    xs = np.array(xs)
    return xs[-1], (xs ** 2).sum()


def stream_counter():
    return STREAM.counter


@ns.jit
def energy(x, w):
    return (np.tanh(x @ w) ** 2).sum()


def scaled_tanh(x, s):
    return np.tanh(x) * s


@ns.vmap
def row_norms(x):
    return np.sqrt((x ** 2).sum())


batched_energy = ns.vmap(energy, in_axes=(0, None))
