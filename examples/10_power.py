"""Computing pow(A, k).

One fed-back output, initialised with ones, multiplied by A at every step.
Eager ``ns.scan`` returns A ** 1 through A ** k and we keep the last row.
Inside ``ns.jit`` numbascan sees the whole program: it notices that only the
last step is used and does not spend memory on the others.
"""
import numpy as np

import numbascan as ns


def inner_fct(prior_result, B):
    return prior_result * B


def power(A, k, mode=None):
    result, updates = ns.scan(fn=inner_fct,
                              outputs_info=np.ones_like(A),
                              non_sequences=A, n_steps=k, mode=mode)
    # Scan has provided us with A ** 1 through A ** k.  Keep only the last value.
    final_result = result[-1]
    return final_result


@ns.jit
def power_jit(A, k):
    result, updates = ns.scan(fn=inner_fct,
                              outputs_info=np.ones_like(A),
                              non_sequences=A, n_steps=k)
    # Only the last step leaves the function, so only the last step is kept.
    return result[-1]


def main(mode=None):
    """Return (eager result, ns.jit result, NumPy comparison)."""
    A = np.asarray(range(10), dtype=np.float64)  # Theano cast range(10) to a float vector
    final_result = power(A, 2, mode=mode)
    final_result_jit = power_jit(A, 2)
    # comparison with numpy
    expected = A ** 2
    return final_result, final_result_jit, expected


if __name__ == "__main__":
    final_result, final_result_jit, expected = main()
    print(final_result)
    print(final_result_jit)
    print(expected)
