"""The cost of `progress=True` on W1 (benchmarks/cpu.py): the same eager scan with and without
its progress bar, median of 25 calls each, the two kinds of call interleaved (each first in
turn) so that a change in the machine's load falls on both. Each of `--rounds` rounds prints its medians; the last
line is the median of the rounds' costs (one round's cost moves by a few percent on a busy
machine).

    python benchmarks/progress_cost.py              # tqdm's bar where tqdm is installed
    python benchmarks/progress_cost.py --plain      # the plain line (tqdm hidden)

The bars go to stderr; send it to /dev/null to keep the report readable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))        # the checkout's numbascan, installed or not

import numpy as np  # noqa: E402

import numbascan as ns  # noqa: E402


def rnn_step(x_t, h, W, U, b):
    return np.tanh(h @ W + x_t @ U + b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--T", type=int, default=10000)
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--plain", action="store_true", help="hide tqdm: time the plain line")
    args = ap.parse_args(argv)
    if args.plain:
        sys.modules["tqdm"] = None                  # `import tqdm` raises ImportError
    import numba
    print(f"# numbascan {ns.__version__}, numba {numba.__version__}, NumPy {np.__version__}")
    rng = np.random.default_rng(0)
    T, H = args.T, args.H
    X = rng.standard_normal((T, H))
    h0 = 0.1 * rng.standard_normal(H)
    W = rng.standard_normal((H, H)) * (0.5 / np.sqrt(H))
    U = rng.standard_normal((H, H)) / np.sqrt(H)
    b = 0.1 * rng.standard_normal(H)

    def call(progress):
        return ns.scan(rnn_step, sequences=X, outputs_info=h0, non_sequences=[W, U, b],
                       progress=progress)[0]

    same = np.array_equal(call(False), call(True))      # also compiles both variants
    bar = "plain line" if args.plain else "tqdm"
    costs = []
    for _ in range(args.rounds):
        times = {False: [], True: []}
        for i in range(args.repeat):
            for progress in ((False, True) if i % 2 else (True, False)):   # neither always first
                start = time.perf_counter()
                call(progress)
                times[progress].append(time.perf_counter() - start)
        off, on = (statistics.median(times[p]) * 1e3 for p in (False, True))
        costs.append(100 * (on - off) / off)
        print(f"W1 (T={T}, H={H}), median of {args.repeat}: progress=False {off:.3f} ms, "
              f"progress=True ({bar}) {on:.3f} ms, cost {costs[-1]:+.2f}%")
    print(f"cost of progress=True ({bar}), median of {args.rounds} rounds: "
          f"{statistics.median(costs):+.2f}%; same results: {same}")


if __name__ == "__main__":
    main()
