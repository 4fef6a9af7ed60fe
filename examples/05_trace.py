"""Computing trace of X.

The sequences are index ranges; the step indexes X (captured from the
closure) with them and accumulates into a float32 state.  A fed-back output
keeps the dtype of its initial value, so the step casts its result back to
float32 (X itself is float64).
"""
import numpy as np

import numbascan as ns

floatX = np.float32


def compute_trace(X, mode=None):
    results, updates = ns.scan(lambda i, j, t_f: (X[i, j] + t_f).astype(floatX),
                               sequences=[np.arange(X.shape[0]), np.arange(X.shape[1])],
                               outputs_info=np.asarray(0., dtype=floatX), mode=mode)
    result = results[-1]
    return result


def main(mode=None):
    """Return (numbascan result, NumPy comparison)."""
    # test value
    x = np.eye(5, dtype=np.float64)
    x[0] = np.arange(5, dtype=np.float64)
    result = compute_trace(x, mode=mode)
    # comparison with numpy
    expected = np.diagonal(x).sum()
    return result, expected


if __name__ == "__main__":
    result, expected = main()
    print(result)
    print(expected)
