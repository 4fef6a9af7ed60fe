"""Computing tanh(x(t).dot(W) + b) elementwise.

The first example of Theano's scan tutorial: map a function over the rows of
X.  The step reads W and b from its closure; numbascan treats captured arrays
as inputs read at call time.
"""
import numpy as np

import numbascan as ns


def compute_elementwise(X, W, b_sym, mode=None):
    results, updates = ns.scan(lambda v: np.tanh(np.dot(v, W) + b_sym),
                               sequences=X, mode=mode)
    return results


def main(mode=None):
    """Return (numbascan result, NumPy comparison)."""
    # test values
    x = np.eye(2, dtype=np.float64)
    w = np.ones((2, 2), dtype=np.float64)
    b = np.ones((2), dtype=np.float64)
    b[1] = 2
    results = compute_elementwise(x, w, b, mode=mode)
    # comparison with numpy
    expected = np.tanh(x.dot(w) + b)
    return results, expected


if __name__ == "__main__":
    results, expected = main()
    print(results)
    print(expected)
