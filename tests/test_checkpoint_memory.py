"""checkpoint="sqrt" keeps reverse mode's tape at O(sqrt(T)) rows: measured peak memory.

Each case runs in a fresh interpreter and reports VmHWM (its peak resident memory) after one
gradient evaluation of a long elementwise recurrence; without checkpoints the tape holds every
state and residual (T rows of 8 * H bytes each), with them a few hundred rows.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

T, H = 3000, 5000                      # one row of the tape: 40 kB; T rows: 120 MB

CODE = """
import numpy as np
import numbascan as ns

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0

def loss(x0, a):
    xs, _ = ns.scan(lambda x, a: np.sin(a * x) + 0.5 * x, outputs_info=x0, non_sequences=a,
                    n_steps={T}, checkpoint={checkpoint!r})
    return xs[-1].sum()

x0 = np.linspace(0.1, 1.0, {H})
g = ns.grad(loss, 1)(x0, np.float64(0.9))
before = peak_mb()
g = ns.grad(loss, 1)(x0, np.float64(0.9))
print(repr(float(g)), before, peak_mb())
"""


def run(checkpoint):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc (Linux)")
    code = textwrap.dedent(CODE.format(T=T, H=H, checkpoint=checkpoint))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    grad, _, peak = (float(x) for x in proc.stdout.split())
    return grad, peak


def test_sqrt_checkpoints_keep_the_tape_small():
    g_full, peak_full = run(None)
    g_sqrt, peak_sqrt = run("sqrt")
    np.testing.assert_allclose(g_sqrt, g_full, rtol=1e-12)
    tape_mb = T * H * 8 / 2**20                       # one T-row array of the tape
    # the unchecked run holds at least the states and one residual per step (2 tape arrays)
    assert peak_full - peak_sqrt > 1.5 * tape_mb, (peak_full, peak_sqrt, tape_mb)
