"""SPEC section 10: ns.jit functions, ns.vmap functions and RandomStreams pickle by reference to
their Python functions (compiled again, or loaded from the disk cache, where they are loaded);
a RandomStreams pickles with its counter."""
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numbascan as ns

import remote_programs as rp

HERE = os.path.dirname(os.path.abspath(__file__))


def test_a_decorated_jit_function_pickles_by_its_name(rng):
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((3, 2))
    expected = rp.energy(x, w)
    data = pickle.dumps(rp.energy)
    assert b"remote_programs" in data and len(data) < 200        # a reference, no code
    assert pickle.loads(data) is rp.energy
    assert pickle.loads(data)(x, w) == expected


def test_jit_of_a_module_function_pickles_the_function_by_reference(rng):
    jitted = ns.jit(rp.scaled_tanh)
    again = pickle.loads(pickle.dumps(jitted))
    assert type(again) is type(jitted) and again is not jitted and again.fn is rp.scaled_tanh
    x = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(again(x, 2.0), jitted(x, 2.0))
    np.testing.assert_allclose(again(x, 2.0), np.tanh(x) * 2.0, rtol=1e-14)


def test_vmapped_functions_pickle(rng):
    x, w = rng.standard_normal((6, 4, 3)), rng.standard_normal((3, 2))
    assert pickle.loads(pickle.dumps(rp.row_norms)) is rp.row_norms     # @ns.vmap: by name
    again = pickle.loads(pickle.dumps(rp.batched_energy))
    assert again is not rp.batched_energy and again.f is rp.energy
    assert (again.in_axes, again.out_axes) == ((0, None), 0)
    assert again.__name__ == "energy" and again.__wrapped__ is rp.energy
    np.testing.assert_array_equal(again(x, w), rp.batched_energy(x, w))
    np.testing.assert_allclose(again(x, w), [(np.tanh(e @ w) ** 2).sum() for e in x],
                               rtol=1e-12)


def test_a_local_function_does_not_pickle():
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(ns.jit(lambda x: x + 1.0))


def test_random_streams_pickle_with_their_counter():
    stream = ns.RandomStreams(99)
    stream.normal(size=5)
    again = pickle.loads(pickle.dumps(stream))
    assert (again.seed, again.counter, again.key) == (99, 5, stream.key)
    np.testing.assert_array_equal(again.normal(size=4), stream.normal(size=4))
    assert again.counter == stream.counter == 9


def test_a_borrowed_counter_leaves_the_stream_alone():
    stream = ns.RandomStreams(5)
    with ns.random.borrowed_counters({stream: 100}) as lent:
        inside = stream.uniform(size=3)
        assert stream.counter == 103
    assert lent[stream] == 103 and stream.counter == 0
    np.testing.assert_array_equal(inside, ns.random.draw_numpy(stream.key, 100, "uniform", 3,
                                                               (0.0, 1.0)))


CHILD = textwrap.dedent("""
    import pickle, sys
    sys.path.insert(0, sys.argv[1])
    import numbascan as ns
    fn, args = pickle.loads(sys.stdin.buffer.read())
    out = fn(*args)
    sys.stdout.buffer.write(pickle.dumps((out, ns.cache_info().compiles)))
""")


@pytest.mark.parametrize("fn", [rp.energy, rp.batched_energy], ids=["jit", "vmap"])
def test_a_pickled_function_runs_in_a_fresh_process(rng, fn):
    x = rng.standard_normal((5, 3)) if fn is rp.energy else rng.standard_normal((4, 5, 3))
    w = rng.standard_normal((3, 2))
    expected = fn(x, w)
    done = subprocess.run([sys.executable, "-c", CHILD, HERE], input=pickle.dumps((fn, (x, w))),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    out, compiles = pickle.loads(done.stdout)
    np.testing.assert_array_equal(out, expected)
    assert compiles == 1           # its program, compiled there or loaded from the disk cache
