"""Computing norms of lines of X.

Each step receives one row of X and returns a scalar, so the result is a
vector with one entry per row.
"""
import numpy as np

import numbascan as ns


def compute_norm_lines(X, mode=None):
    results, updates = ns.scan(lambda x_i: np.sqrt((x_i ** 2).sum()),
                               sequences=[X], mode=mode)
    return results


def main(mode=None):
    """Return (numbascan result, NumPy comparison)."""
    # test value
    x = np.diag(np.arange(1, 6, dtype=np.float64), 1)
    results = compute_norm_lines(x, mode=mode)
    # comparison with numpy
    expected = np.sqrt((x ** 2).sum(1))
    return results, expected


if __name__ == "__main__":
    results, expected = main()
    print(results)
    print(expected)
