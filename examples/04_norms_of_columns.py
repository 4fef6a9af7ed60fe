"""Computing norms of columns of X.

Scanning over X.T walks the columns of X: each step receives one column.
"""
import numpy as np

import numbascan as ns


def compute_norm_cols(X, mode=None):
    results, updates = ns.scan(lambda x_i: np.sqrt((x_i ** 2).sum()),
                               sequences=[X.T], mode=mode)
    return results


def main(mode=None):
    """Return (numbascan result, NumPy comparison)."""
    # test value
    x = np.diag(np.arange(1, 6, dtype=np.float64), 1)
    results = compute_norm_cols(x, mode=mode)
    # comparison with numpy
    expected = np.sqrt((x ** 2).sum(0))
    return results, expected


if __name__ == "__main__":
    results, expected = main()
    print(results)
    print(expected)
