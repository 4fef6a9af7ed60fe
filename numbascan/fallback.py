"""Stage: the untraced path — a step numbascan cannot trace still runs forward, compiled.

When tracing fails (an operation outside SPEC section 5, Python control flow on array values),
numba compiles the user's step as it is and a generated loop (template below) drives it over
preallocated output buffers. Such a scan has no derivatives, and numba freezes the arrays the
step reads from globals as constants; a warning names the operation that stopped tracing.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np

from .api import ScanError, check_step_outputs, split_step_result
from .codegen.source import load_module

LOOP_TEMPLATE = '''\
"""numbascan generated driver loop for an untraced step."""
from numba import njit


@njit(cache=True)
def {name}(step, n_steps, {params}):
    for t in range(n_steps):
{binds}
        res = step({args})
{stores}
    return n_steps
'''


class UntracedStepWarning(UserWarning):
    pass


_STEPS: dict[int, tuple] = {}


def _compiled_step(fn):
    entry = _STEPS.get(id(fn))
    if entry is None or entry[0] is not fn:
        entry = (fn, numba.njit(fn))
        _STEPS[id(fn)] = entry
    return entry[1]


def scan_untraced(sa, err):
    warnings.warn(f"numbascan could not trace the step function ({err.op}); it runs forward "
                  f"only, compiled by numba as written (no derivatives; arrays it reads from "
                  f"globals are frozen as constants)", UntracedStepWarning, stacklevel=4)
    from .api import scan_python
    if sa.n_steps == 0:
        raise ScanError(f"fn: the step could not be traced ({err.op}) and n_steps is 0, so the "
                        f"output shapes are unknown")
    fed = [i for i, taps in enumerate(sa.out_taps) if taps]
    # one Python call on the first step's inputs gives the outputs' dtypes and shapes
    probe = scan_python(_first_step_only(sa))[0]
    outputs = [np.asarray(p)[0] for p in probe]
    check_step_outputs(sa, outputs, [(o.dtype, o.shape) for o in outputs])
    n = sa.n_steps
    params, args, binds, stores, call = [], [], [], [], []
    for i, (s, sl) in enumerate(zip(sa.seqs, sa.seq_layouts)):
        params.append(f"seq{i}")
        args.append(np.asarray(s))
        for k, tap in enumerate(sl.taps):
            pos = f"t + {sl.m + tap}"
            row = f"seq{i}.shape[0] - 1 - ({pos})" if sa.go_backwards else pos
            binds.append(f"s{i}_{k} = seq{i}[{row}]")
            call.append(f"s{i}_{k}")
    bufs = []
    for j, o in enumerate(outputs):
        taps = sa.out_taps[j] if j < len(sa.out_taps) else ()
        L = max(-t for t in taps) if taps else 0
        buf = np.empty((L + n,) + o.shape, o.dtype)
        if taps:
            init = np.asarray(sa.inits[j])
            if taps == (-1,):
                buf[0] = init
            else:
                buf[:L] = init
        bufs.append(buf)
        params.append(f"buf{j}")
        for k, tap in enumerate(taps):
            binds.append(f"o{j}_{k} = buf{j}[t + {L + tap}]")
            call.append(f"o{j}_{k}")
        res = "res" if len(outputs) == 1 else f"res[{j}]"
        stores.append(f"buf{j}[t + {L}] = {res}")
    for i, v in enumerate(sa.nonseqs):
        params.append(f"nonseq{i}")
        args.append(np.asarray(v)[()] if np.ndim(v) == 0 else np.asarray(v))
        call.append(f"nonseq{i}")
    name = "untraced_loop"
    src = LOOP_TEMPLATE.format(name=name, params=", ".join(params), args=", ".join(call),
                               binds="\n".join("        " + b for b in binds),
                               stores="\n".join("        " + b for b in stores))
    loop = getattr(load_module(src), name)
    step = _compiled_step(sa.fn)
    loop(step, n, *(args[:len(sa.seqs)] + bufs + args[len(sa.seqs):]))
    outs = []
    for j, buf in enumerate(bufs):
        taps = sa.out_taps[j] if j < len(sa.out_taps) else ()
        L = max(-t for t in taps) if taps else 0
        outs.append(buf[L + n - 1] if sa.keep_last else buf[L:])
    from .shared import Updates
    return outs, Updates()


def _first_step_only(sa):
    from dataclasses import replace
    return replace(sa, n_steps=1, keep_last=False)
