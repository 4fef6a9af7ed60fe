"""Accumulate number of loop during a scan.

The step takes no arguments and returns only an updates dict: it adds one to
the shared variable k at every step.  As in Theano, scan does not write the
new value into k by itself; ``updates.apply()`` does (Theano did it through
``theano.function(..., updates=updates)``).
"""
import numbascan as ns


def main(mode=None):
    """Return k's value before and after applying the updates of a 5-step scan."""
    # define shared variables
    k = ns.shared(0)
    results, updates = ns.scan(lambda: {k: k + 1}, n_steps=5, mode=mode)
    before = k.get_value()  # still 0: scan has not touched k
    updates.apply()
    after = k.get_value()
    return before, after


if __name__ == "__main__":
    before, after = main()
    print(before)
    print(after)
