"""Calculating a Polynomial.

A map over two sequences: the coefficients and the powers 0, 1, 2, ....
full_range supports up to 10000 coefficients; scan runs as many steps as the
shortest sequence (here the 3 coefficients) allows.  x is a non_sequence.
"""
import numpy as np

import numbascan as ns

max_coefficients_supported = 10000


def calculate_polynomial(coefficients, x, mode=None):
    # Generate the components of the polynomial
    full_range = np.arange(max_coefficients_supported)
    components, updates = ns.scan(fn=lambda coeff, power, free_var:
                                  coeff * (free_var ** power),
                                  outputs_info=None,
                                  sequences=[coefficients, full_range],
                                  non_sequences=x, mode=mode)
    polynomial = components.sum()
    return polynomial


def main(mode=None):
    """Return (numbascan result, NumPy comparison)."""
    test_coeff = np.asarray([1, 0, 2], dtype=np.float32)
    x = np.asarray(3, dtype=np.float64)  # Theano's x was a float scalar
    polynomial = calculate_polynomial(test_coeff, x, mode=mode)
    # comparison with numpy
    expected = (test_coeff * x ** np.arange(len(test_coeff))).sum()
    return polynomial, expected


if __name__ == "__main__":
    polynomial, expected = main()
    print(polynomial)
    print(expected)
