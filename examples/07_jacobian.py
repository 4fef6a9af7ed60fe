"""Computing the Jacobian of y = tanh(v.dot(A)) wrt v.

Inside an ``ns.jit`` function, ``ns.grad(cost, wrt)`` works on traced values
as Theano's ``T.grad`` does, so a scan over the indices of y builds the
Jacobian one row per step (shape (d_out, d_in)).

As in Theano, the scan walks the indices of y and not the elements of y: a
step that received y[i] as a sequence element would get a fresh placeholder
with no dependence on v, and its gradient with respect to v would be zero.
"""
import numpy as np

import numbascan as ns


@ns.jit
def compute_jac_t(A, v):
    y = np.tanh(v @ A)
    results, updates = ns.scan(lambda i: ns.grad(y[i], v),
                               sequences=[np.arange(y.shape[0])])
    return results  # shape (d_out, d_in)


def main():
    """Return (numbascan result, NumPy comparison)."""
    # test values
    x = np.eye(5, dtype=np.float64)[0]
    w = np.eye(5, 3, dtype=np.float64)
    w[2] = np.ones((3), dtype=np.float64)
    results = compute_jac_t(w, x)
    # compare with numpy
    expected = ((1 - np.tanh(x.dot(w)) ** 2) * w).T
    return results, expected


if __name__ == "__main__":
    results, expected = main()
    print(results)
    print(expected)
