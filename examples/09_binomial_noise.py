"""Computing tanh(v.dot(W) + b) * d where d is binomial.

In Theano the binomial d was a symbolic random variable, so scan drew a new
one at every step.  In numbascan a draw is made where it is written: a draw
inside the step is fresh at every step, and a draw outside the step is an
ordinary array, the same for all steps.

numbascan's RandomStreams is built on Philox (a counter-based generator that
gives the same numbers in cpu, cuda and python modes), not on Theano's
generator, so the 0/1 mask printed here differs from the seed document's.
Every nonzero entry still equals the seed's values: tanh(2) = 0.96402758 in
the first two rows and tanh(1) = 0.76159416 in the others.
"""
import numpy as np

import numbascan as ns


def compute_with_bnoise(X, W, b, rng, mode=None):
    # A fresh binomial mask at every step, as in the seed.
    results, updates = ns.scan(lambda v: np.tanh(v @ W + b) * rng.binomial(size=W[1].shape),
                               sequences=X, mode=mode)
    # The stream advances by itself, like a NumPy Generator: nothing to apply.
    return results


def compute_with_fixed_noise(X, W, b, d, mode=None):
    # A random variable d that does not change through the loop: draw it
    # outside the step and pass it as a non_sequence.
    results, updates = ns.scan(lambda v, d: np.tanh(v @ W + b) * d,
                               sequences=X, non_sequences=d, mode=mode)
    return results


def main(mode=None):
    """Return (fresh-noise result, fixed-noise result, fixed mask d, NumPy comparison of the latter)."""
    # define shared random stream
    rng = ns.RandomStreams(1234)
    x = np.eye(10, 2, dtype=np.float64)
    w = np.ones((2, 2), dtype=np.float64)
    b = np.ones((2), dtype=np.float64)
    results = compute_with_bnoise(x, w, b, rng, mode=mode)

    # A draw outside the step is an ordinary int64 array.  It comes from a
    # second stream so that it does not depend on how many numbers the loop
    # above consumed.
    d = ns.RandomStreams(42).binomial(size=w[1].shape)
    fixed = compute_with_fixed_noise(x, w, b, d, mode=mode)
    # comparison with numpy (possible because d is known)
    expected = np.tanh(x.dot(w) + b) * d
    return results, fixed, d, expected


if __name__ == "__main__":
    results, fixed, d, expected = main()
    print(results)
    print("d drawn once outside the step and passed as a non_sequence:", d)
    print(fixed)
    print(expected)
