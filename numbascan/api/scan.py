"""Stage: user API — `scan` and its family, argument checking and the three ways to run a scan.

`scan` normalises Theano-style arguments into a `ScanArgs`, then either
  * records a scan equation when called inside a trace (a nested scan, `ns.jit`, derivatives),
  * runs the user's step in a plain Python loop (`mode="python"`, the reference), or
  * traces the step, compiles its loop with numba (`codegen/`) and drives it (`mode="cpu"`),
  * or hands it to `runtime/cuda.py` (`mode="cuda"`);
and, before any of these, `parallel=` (api/affine.py) may run a step affine in its fed-back
state as a parallel prefix scan instead of a loop.
"""

from __future__ import annotations

import os

import numpy as np

from ..core.context import current_trace
from ..loop.args import MODES, _MODE, _is_device_array, normalize
from ..loop.primitive import asks_for_cuda, bind_scan
from ..loop.reference import in_python_step, scan_python
from ..runtime import progress as bars
from ..runtime.cache import traced_scan
from ..runtime.cpu import scan_cpu
from ..runtime.cuda import scan_cuda
from ..trace.tracer import Tracer, TracingError
from .affine import in_time, plan as in_time_plan


def choose_mode(asked=None, inputs=(), batched=None):
    """Which of MODES runs an eager scan or program; the one place that decides it.

    `asked` (the `mode=` argument) when given; else "cuda" when one of `inputs` is a device
    array, or when `batched` (the ScanArgs of ns.vmap's map) has a scan in its step that asks
    for cuda; else this context's default (`default_mode`), else NUMBASCAN_MODE, else "cpu".
    """
    mode = asked
    if mode is None and (any(_is_device_array(x) for x in inputs) or
                         (batched is not None and _map_asks_for_cuda(batched))):
        mode = "cuda"
    if mode is None:
        mode = _MODE.get() or os.environ.get("NUMBASCAN_MODE", "cpu")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, found {mode!r}")
    return mode


# ------------------------------------------------------------------------------------------------
# the public family


def scan(fn, sequences=None, outputs_info=None, non_sequences=None, n_steps=None,
         truncate_gradient=-1, go_backwards=False, mode=None, name=None, strict=False,
         return_list=False, checkpoint=None, progress=None, parallel=None, _keep_last=False,
         _parallel=False):
    """Theano's scan: run `fn` over sequences, feeding back outputs. See docs/guide.md.

    `parallel`: run a step affine in its fed-back state as a parallel prefix scan: True (an
    error when it cannot), False (the loop), None (when numbascan expects it to pay);
    docs/guide.md, "Parallel in time". (`_parallel` is ns.vmap's map of independent steps.)

    `progress=True` (default: NUMBASCAN_PROGRESS) shows a bar of the steps run by an eager
    scan in mode "cpu" or "python"; traced scans (ns.jit, derivatives, a scan in a step),
    mode "cuda" and ns.vmap's map ignore it (docs/guide.md, "Progress and compile messages")."""
    sa = normalize(fn, sequences, outputs_info, non_sequences, n_steps, truncate_gradient,
                   go_backwards, name, strict, return_list, checkpoint, keep_last=_keep_last,
                   parallel=_parallel, mode=mode, in_time=parallel)
    inputs = sa.seqs + sa.nonseqs + [i for i in sa.inits if i is not None]
    traced = current_trace() is not None or any(isinstance(x, Tracer) for x in inputs)
    if traced:
        p = in_time_plan(sa, choose_mode(sa.mode), traced=True)
        outs, updates = in_time(p) if p is not None else bind_scan(sa)
    else:
        mode = choose_mode(mode, inputs, batched=sa if sa.parallel else None)
        # only the outermost scan has a bar: one in a python-mode step runs once per step
        show = bars.wanted(progress) and not sa.parallel and not in_python_step()
        # a bar counts the loop's steps: parallel=None keeps the loop when one is shown
        p = None if show and sa.in_time is None else in_time_plan(sa, mode, traced=False)
        if p is not None:
            outs, updates = in_time(p)
        elif mode == "python":
            with bars.PythonBar(show, sa.n_steps, bars.describe(fn, name)) as on_step:
                outs, updates, n_run = scan_python(sa, on_step)
        elif mode == "cpu":
            outs, updates, n_run = scan_cpu(sa, progress=show)
        else:
            outs, updates, n_run = scan_cuda(sa, batched=sa.parallel)
        outs = _arrays(outs, updates)
    if len(outs) == 1 and not return_list:
        return outs[0], updates
    return list(outs), updates


def _arrays(outs, updates):
    """Eager results are NumPy arrays (SPEC section 1) in every mode, as Theano's are: the 0-d
    last state of a reduce/foldl, or a 0-d shared variable's new value, comes back as a 0-d
    array, never as a NumPy scalar (the row of a buffer that a driver read)."""
    for k, v in updates.items():
        if isinstance(v, np.generic):
            updates[k] = np.asarray(v)
    return [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]


def _map_asks_for_cuda(sa):
    """Whether a scan in the step of ns.vmap's map asks for cuda (a step that cannot be
    traced asks for nothing)."""
    try:
        ts = traced_scan(sa, compile=False)[0]
    except TracingError:
        return False
    return asks_for_cuda(ts.ir)


def map(fn, sequences, non_sequences=None, go_backwards=False, mode=None, name=None,
        progress=None):
    return scan(fn, sequences=sequences, outputs_info=None, non_sequences=non_sequences,
                go_backwards=go_backwards, mode=mode, name=name, progress=progress)


def reduce(fn, sequences, outputs_info, non_sequences=None, go_backwards=False, mode=None,
           name=None, progress=None, parallel=None):
    return scan(fn, sequences=sequences, outputs_info=outputs_info,
                non_sequences=non_sequences, go_backwards=go_backwards, mode=mode, name=name,
                progress=progress, parallel=parallel, _keep_last=True)


def foldl(fn, sequences, outputs_info, non_sequences=None, mode=None, name=None,
          progress=None, parallel=None):
    return reduce(fn, sequences, outputs_info, non_sequences, go_backwards=False, mode=mode,
                  name=name, progress=progress, parallel=parallel)


def foldr(fn, sequences, outputs_info, non_sequences=None, mode=None, name=None,
          progress=None, parallel=None):
    return reduce(fn, sequences, outputs_info, non_sequences, go_backwards=True, mode=mode,
                  name=name, progress=progress, parallel=parallel)
