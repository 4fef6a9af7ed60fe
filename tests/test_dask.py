"""SPEC section 10, many machines: ns.vmap over dask arrays is a lazy dask array computed block by
block along the batch axis, with the numbers of the NumPy call (random draws included) in any
chunking, with dask's threaded scheduler and on a dask.distributed cluster of two processes."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import numbascan as ns

import remote_programs as rp

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

HERE = os.path.dirname(os.path.abspath(__file__))
B, H = 10, 3
PER_ELEMENT = rp.T * H         # normal draws of one walk
TIMEOUT_S = 120


def _compute(*arrays, scheduler="threads"):
    return dask.compute(*arrays, scheduler=scheduler)


def _in_process(fn, *args, counter, **axes):
    """The NumPy call of ns.vmap(fn) with the stream at `counter`; the stream is left where
    that call leaves it."""
    rp.STREAM.counter = counter
    return ns.vmap(fn, **axes)(*args)


def _same(got, expected):
    assert type(got) is type(expected)
    for g, e in zip(got, expected) if isinstance(expected, (tuple, list)) else [(got, expected)]:
        assert isinstance(g, np.ndarray) and g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)              # bit for bit


@pytest.fixture(scope="module")
def inputs():
    g = np.random.default_rng(1310)
    return g.standard_normal((B, H)), 0.1 * g.standard_normal(H)


def test_the_numpy_call_is_the_walks_of_numpy(inputs):
    x0, drift = inputs
    last, energy = _in_process(rp.walk, x0, drift, counter=0, in_axes=(0, None))
    for i in range(B):
        ref = rp.walk_numpy(x0[i], drift, i * PER_ELEMENT)
        np.testing.assert_allclose(last[i], ref[0], rtol=1e-12)
        np.testing.assert_allclose(energy[i], ref[1], rtol=1e-12)
    assert rp.STREAM.counter == B * PER_ELEMENT


@pytest.mark.parametrize("chunks", [B, 3, ((1, 4, 5), H), 1, (4, 2)],
                         ids=["one block", "3", "uneven", "per element", "split features"])
def test_every_chunking_gives_the_numbers_of_the_numpy_call(inputs, chunks):
    x0, drift = inputs
    rp.STREAM.counter = 7
    lazy = ns.vmap(rp.walk, in_axes=(0, None))(da.from_array(x0, chunks=chunks), drift)
    assert isinstance(lazy, tuple) and all(isinstance(a, da.Array) for a in lazy)
    # the counters are reserved when the lazy arrays are made, as by the NumPy call
    assert rp.STREAM.counter == 7 + B * PER_ELEMENT
    batch_chunks = lazy[1].chunks[0]
    assert lazy[0].chunks == (batch_chunks, (H,))         # other axes: one chunk
    assert batch_chunks == (da.from_array(x0, chunks=chunks).chunks[0])
    expected = _in_process(rp.walk, x0, drift, counter=7, in_axes=(0, None))
    _same(_compute(*lazy), expected)
    _same(_compute(*lazy, scheduler="sync"), expected)    # and again: the same numbers


def test_a_second_call_continues_the_stream(inputs):
    x0, drift = inputs
    rp.STREAM.counter = 0
    f = ns.vmap(rp.walk, in_axes=(0, None))
    first, second = f(da.from_array(x0, chunks=4), drift), f(da.from_array(x0, chunks=3), drift)
    after = rp.STREAM.counter
    expected = [_in_process(rp.walk, x0, drift, counter=0, in_axes=(0, None)),
                ns.vmap(rp.walk, in_axes=(0, None))(x0, drift)]
    assert after == rp.STREAM.counter == 2 * B * PER_ELEMENT
    _same(_compute(*second), expected[1])
    _same(_compute(*first), expected[0])
    assert not np.array_equal(expected[0][0], expected[1][0])


def test_axes_none_arguments_and_the_kinds_of_results(inputs):
    x0, drift = inputs
    xt = da.from_array(np.ascontiguousarray(x0.T), chunks=(2, 4))      # batch along axis 1
    drift_d = da.from_array(drift, chunks=2)                          # not batched, 2 chunks
    rp.STREAM.counter = 3
    lazy = ns.vmap(rp.walk_list, in_axes=(1, None), out_axes=(1, 0))(xt, drift_d)
    assert isinstance(lazy, list) and lazy[0].shape == (H, B) and lazy[0].chunks[1] == (4, 4, 2)
    expected = _in_process(rp.walk_list, x0.T, drift, counter=3, in_axes=(1, None),
                           out_axes=(1, 0))
    _same(list(_compute(*lazy)), expected)

    lazy = ns.vmap(rp.walk_summary, in_axes=(0, None))(da.from_array(x0, chunks=6), drift_d)
    assert type(lazy) is rp.Summary and isinstance(lazy.energy, da.Array)
    expected = _in_process(rp.walk_summary, x0, drift, counter=3 + B * PER_ELEMENT,
                           in_axes=(0, None))
    _same(rp.Summary(*_compute(*lazy)), expected)

    # one result; a batched NumPy argument beside a dask one; a static Python number
    lazy = ns.vmap(rp.walk_last, in_axes=(0, 0, None), out_axes=-1)(
        da.from_array(x0, chunks=3), np.tile(drift, (B, 1)), 2.0)
    assert isinstance(lazy, da.Array) and lazy.shape == (H, B)
    expected = _in_process(rp.walk_last, x0, np.tile(drift, (B, 1)), 2.0,
                           counter=3 + 2 * B * PER_ELEMENT, in_axes=(0, 0, None), out_axes=-1)
    _same(_compute(lazy)[0], expected)
    # only non-batched arguments are dask arrays (a 0-d one too): the batch is one block
    lazy = ns.vmap(rp.walk_last, in_axes=(0, None, None))(x0, drift_d, da.asarray(2.0))
    assert lazy.chunks == ((B,), (H,))
    expected = _in_process(rp.walk_last, x0, drift, np.asarray(2.0), counter=rp.STREAM.counter -
                           B * PER_ELEMENT, in_axes=(0, None, None))
    _same(_compute(lazy)[0], expected)


def test_bad_dask_arguments_are_named(inputs):
    x0, drift = inputs
    unknown = da.from_array(x0, chunks=3)
    unknown = unknown[unknown[:, 0] > -10.0]                  # chunk sizes unknown
    with pytest.raises(ValueError, match="argument 0: expected a dask array of known chunk"):
        ns.vmap(rp.walk, in_axes=(0, None))(unknown, drift)
    with pytest.raises(ValueError, match="different sizes along their in_axes"):
        ns.vmap(rp.walk)(da.from_array(x0, chunks=3), da.from_array(x0[:4], chunks=3))

    def branchy(x):
        return x * 2.0 if x.sum() > 0 else x          # Python `if` on a traced value
    with pytest.raises(ns.TracingError, match="ns.vmap over dask arrays"):
        ns.vmap(branchy)(da.from_array(x0, chunks=3))
    counter = rp.STREAM.counter
    with pytest.raises(ValueError, match="out_axes"):
        ns.vmap(rp.walk, in_axes=(0, None), out_axes=None)(da.from_array(x0, chunks=3), drift)
    assert rp.STREAM.counter == counter        # nothing reserved by a call that failed


# ------------------------------------------------------------------------------------------------
# a dask.distributed cluster of two worker processes


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None, silence_logs=logging.ERROR,
                                       timeout=TIMEOUT_S)
    c = distributed.Client(cluster, timeout=TIMEOUT_S, set_as_default=False)
    try:
        c.wait_for_workers(2, timeout=TIMEOUT_S)
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.mark.cluster
def test_a_random_ensemble_on_a_cluster_is_the_in_process_one(client, inputs):
    x0, drift = inputs
    expected = _in_process(rp.walk, x0, drift, counter=11, in_axes=(0, None))
    f = ns.vmap(rp.walk, in_axes=(0, None))
    before = client.run(ns.cache_info)
    results = []
    for chunks in (3, (6, 4)):
        rp.STREAM.counter = 11
        lazy = f(da.from_array(x0, chunks=chunks), drift)
        results.append([f.result(timeout=TIMEOUT_S) for f in client.compute(list(lazy))])
        if chunks == 3:
            first = client.run(ns.cache_info)
    assert rp.STREAM.counter == 11 + B * PER_ELEMENT
    for got in results:
        _same(tuple(got), expected)
    after = client.run(ns.cache_info)
    assert len(after) == 2
    for worker in after:
        # once per worker process: compiled (or loaded from the disk cache) by its first
        # block, neither traced nor compiled again by the later ones
        assert first[worker].compiles - before[worker].compiles <= 1
        assert after[worker].compiles == first[worker].compiles
        assert after[worker].traces == first[worker].traces
    assert sum(first[w].compiles - before[w].compiles for w in after) >= 1
    # the workers' own copies of the stream were never drawn from: blocks borrow counters
    assert set(client.run(rp.stream_counter).values()) == {0}


@pytest.mark.cluster
def test_the_example_ensemble_runs_and_matches_the_in_process_one():
    pytest.importorskip("dask.distributed")
    example = os.path.join(os.path.dirname(HERE), "examples", "ensemble_dask.py")
    done = subprocess.run([sys.executable, example, "--paths", "200", "--steps", "20",
                           "--chunk", "50"], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "identical to the in-process ensemble: True" in done.stdout
    assert "European call" in done.stdout
