"""Computing the sequence x(t) = x(t - 2).dot(U) + x(t - 1).dot(V) + tanh(x(t - 1).dot(W) + b).

An output with taps [-2, -1]: the initial value X has a leading axis of
length 2, X[0] plays x(-2) and X[1] plays x(-1).  The step receives the taps
in the order they are listed: fn(x[t - 2], x[t - 1]).  The result holds only
the n new steps, not the initial values.
"""
import numpy as np

import numbascan as ns


def compute_seq2(X, U, V, W, b_sym, n_sym, mode=None):
    results, updates = ns.scan(
        lambda x_tm2, x_tm1: np.dot(x_tm2, U) + np.dot(x_tm1, V) + np.tanh(np.dot(x_tm1, W) + b_sym),
        n_steps=n_sym, outputs_info=[dict(initial=X, taps=[-2, -1])], mode=mode)
    return results


def main(mode=None):
    """Return (numbascan result, NumPy comparison)."""
    # test values
    x = np.zeros((2, 2), dtype=np.float64)  # the initial value must be able to return x[-2]
    x[1, 1] = 1
    w = 0.5 * np.ones((2, 2), dtype=np.float64)
    u = 0.5 * (np.ones((2, 2), dtype=np.float64) - np.eye(2, dtype=np.float64))
    v = 0.5 * np.ones((2, 2), dtype=np.float64)
    n = 10
    b = np.ones((2), dtype=np.float64)
    results = compute_seq2(x, u, v, w, b, n, mode=mode)
    # comparison with numpy
    x_res = np.zeros((10, 2))
    x_res[0] = x[0].dot(u) + x[1].dot(v) + np.tanh(x[1].dot(w) + b)
    x_res[1] = x[1].dot(u) + x_res[0].dot(v) + np.tanh(x_res[0].dot(w) + b)
    x_res[2] = x_res[0].dot(u) + x_res[1].dot(v) + np.tanh(x_res[1].dot(w) + b)
    for i in range(2, 10):
        x_res[i] = (x_res[i - 2].dot(u) + x_res[i - 1].dot(v) +
                    np.tanh(x_res[i - 1].dot(w) + b))
    return results, x_res


if __name__ == "__main__":
    results, x_res = main()
    print(results)
    print(x_res)
