"""Computing the sequence x(t) = tanh(x(t - 1).dot(W) + y(t).dot(U) + p(T - t).dot(V)).

Two sequences (Y forwards, P backwards) and one fed-back output whose initial
state is X.  The step receives the sequences' entries first, then the previous
output: fn(y[t], p[T - t], x[t - 1]).
"""
import numpy as np

import numbascan as ns


def compute_seq(X, W, Y, U, P, V, mode=None):
    results, updates = ns.scan(
        lambda y, p, x_tm1: np.tanh(np.dot(x_tm1, W) + np.dot(y, U) + np.dot(p, V)),
        sequences=[Y, P[::-1]], outputs_info=[X], mode=mode)
    return results


def main(mode=None):
    """Return (numbascan result, NumPy comparison)."""
    # test values
    x = np.zeros((2), dtype=np.float64)
    x[1] = 1
    w = np.ones((2, 2), dtype=np.float64)
    y = np.ones((5, 2), dtype=np.float64)
    y[0, :] = -3
    u = np.ones((2, 2), dtype=np.float64)
    p = np.ones((5, 2), dtype=np.float64)
    p[0, :] = 3
    v = np.ones((2, 2), dtype=np.float64)
    results = compute_seq(x, w, y, u, p, v, mode=mode)
    # comparison with numpy
    x_res = np.zeros((5, 2), dtype=np.float64)
    x_res[0] = np.tanh(x.dot(w) + y[0].dot(u) + p[4].dot(v))
    for i in range(1, 5):
        x_res[i] = np.tanh(x_res[i - 1].dot(w) + y[i].dot(u) + p[4 - i].dot(v))
    return results, x_res


if __name__ == "__main__":
    results, x_res = main()
    print(results)
    print(x_res)
