"""Stage: runtime — the untraced path: a step numbascan cannot trace still runs forward, compiled.

When tracing fails (an operation outside SPEC section 5, Python control flow on array values),
numba compiles the user's step as it is and a generated loop (template below) drives it over
preallocated output buffers. Such a scan has no derivatives, and numba freezes the arrays the
step reads from globals as constants; a warning names the operation that stopped tracing.

Invariants: the step's compilation is redone when anything numba froze in has changed (the
arrays and numbers that the step and the helpers it calls read by name, compared by content);
and the step sees its inputs (sequence rows, non_sequences, past states) as read-only arrays, as
in python mode, so a step that writes into one fails to compile and runs in the Python reference
loop, which raises the same "read-only" error as python mode instead of changing the user's arrays.
"""

from __future__ import annotations

import hashlib
import types
import warnings
from dataclasses import replace

import numba
import numpy as np

from ..codegen.source import load_module
from ..core.layout import OutLayout
from ..loop.args import ScanError, check_buffer_bytes
from ..loop.reference import scan_python
from ..loop.step import check_step_outputs, step_name
from ..shared import Updates

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


def _helpers(fn):
    """The plain Python functions `fn` calls by global name (numba compiles them too)."""
    glob = fn.__globals__
    return {n: glob[n] for n in fn.__code__.co_names
            if isinstance(glob.get(n), types.FunctionType) and glob[n] is not fn}


def _frozen_stamp(fn, depth=0, seen=None):
    """What numba compiles into the step as constants, to compare with a later call: each array
    (by dtype, shape and a hash of its contents) and Python number read by name from a closure
    cell or the globals, by the step and the helpers it calls (themselves by identity)."""
    seen = set() if seen is None else seen
    if not isinstance(fn, types.FunctionType) or depth > 8 or id(fn) in seen:
        return ()
    seen.add(id(fn))
    found = []
    for cell in fn.__closure__ or ():
        try:
            found.append(cell.cell_contents)
        except ValueError:
            pass
    found += [fn.__globals__[n] for n in fn.__code__.co_names if n in fn.__globals__]
    stamp = []
    for value in found:
        if isinstance(value, np.ndarray):
            data = np.ascontiguousarray(value).view(np.uint8)
            stamp.append((id(value), value.dtype.str, value.shape,
                          hashlib.sha1(data).hexdigest()))
        elif isinstance(value, (bool, int, float, complex, np.generic)):
            stamp.append((type(value).__name__, value))
    for helper in _helpers(fn).values():
        stamp.append(helper)
        stamp.extend(_frozen_stamp(helper, depth + 1, seen))
    return tuple(stamp)


def _numba_ready(fn, depth=0):
    """`fn` with the plain Python functions it calls by global name compiled by numba too."""
    if not isinstance(fn, types.FunctionType) or depth > 8:
        return fn
    glob = fn.__globals__
    helpers = _helpers(fn)
    if helpers:
        glob = dict(glob)
        glob.update({n: numba.njit(_numba_ready(h, depth + 1)) for n, h in helpers.items()})
    new = types.FunctionType(fn.__code__, glob, fn.__name__, fn.__defaults__, fn.__closure__)
    return new


def _compiled_step(fn):
    """numba's compilation of the step, redone when something it compiled in has changed."""
    stamp = _frozen_stamp(fn)
    entry = _STEPS.get(id(fn))
    if entry is None or entry[0] is not fn or entry[1] != stamp:
        entry = (fn, stamp, numba.njit(_numba_ready(fn)))
        _STEPS[id(fn)] = entry
    return entry[2]


def _readonly(a):
    """A read-only view of `a`: numba types it as a readonly array, and a write fails to compile."""
    view = a.view()
    view.flags.writeable = False
    return view


def scan_untraced(sa, err):
    if sa.n_steps == 0:
        raise ScanError(f"fn: the step could not be traced ({err.op}) and n_steps is 0, so the "
                        f"output shapes are unknown")
    # one Python call on the first step's inputs gives the outputs' dtypes and shapes
    probe = scan_python(_first_step_only(sa))[0]
    outputs = [np.asarray(p)[0] for p in probe]
    check_step_outputs(sa, outputs, [(o.dtype, o.shape) for o in outputs])
    # warned once the probe passed: a step whose first step fails gets python mode's error only
    warnings.warn(f"numbascan could not trace step function {step_name(sa)} ({err.op}); it "
                  f"runs forward only, compiled by numba as written (no derivatives; arrays it "
                  f"reads from its closure or globals are compiled in as constants, and a change "
                  f"to them recompiles)", UntracedStepWarning, stacklevel=4)
    n = sa.n_steps
    params, args, binds, stores, call = [], [], [], [], []
    for i, (s, sl) in enumerate(zip(sa.seqs, sa.seq_layouts)):
        params.append(f"seq{i}")
        args.append(_readonly(np.asarray(s)))
        for k, tap in enumerate(sl.taps):
            row = sl.row("t", tap, sa.go_backwards, f"seq{i}.shape[0]")
            binds.append(f"s{i}_{k} = seq{i}[{row}]")
            call.append(f"s{i}_{k}")
    # every step is kept; outputs past outputs_info are map outputs
    layouts = [OutLayout(sa.out_taps[j] if j < len(sa.out_taps) else ())
               for j in range(len(outputs))]
    check_buffer_bytes(n, [(ol.buffer_rows(n), o.dtype, o.shape)
                           for o, ol in zip(outputs, layouts)])
    bufs, buf_args = [], []      # the loop writes each buffer; past states are read-only views
    for j, (o, ol) in enumerate(zip(outputs, layouts)):
        buf = np.empty((ol.buffer_rows(n),) + o.shape, o.dtype)
        bufs.append(buf)
        buf_args.append(buf)
        params.append(f"buf{j}")
        if ol.taps:
            buf[ol.init_rows] = np.reshape(sa.inits[j], (ol.L,) + o.shape)
            buf_args.append(_readonly(buf))
            params.append(f"state{j}")
        for k, tap in enumerate(ol.taps):
            binds.append(f"o{j}_{k} = state{j}[{ol.read_row('t', tap)}]")
            call.append(f"o{j}_{k}")
        res = "res" if len(outputs) == 1 else f"res[{j}]"
        stores.append(f"buf{j}[{ol.write_row('t')}] = {res}")
    for i, v in enumerate(sa.nonseqs):
        params.append(f"nonseq{i}")
        args.append(np.asarray(v)[()] if np.ndim(v) == 0 else _readonly(np.asarray(v)))
        call.append(f"nonseq{i}")
    name = "untraced_loop"
    src = LOOP_TEMPLATE.format(name=name, params=", ".join(params), args=", ".join(call),
                               binds="\n".join("        " + b for b in binds),
                               stores="\n".join("        " + b for b in stores))
    loop = getattr(load_module(src), name)
    try:
        loop(_compiled_step(sa.fn), n, *(args[:len(sa.seqs)] + buf_args + args[len(sa.seqs):]))
    except numba.core.errors.NumbaError as exc:
        warnings.warn(f"numba cannot compile step function {step_name(sa)} either "
                      f"({str(exc).splitlines()[0]}); it runs in the Python reference loop",
                      UntracedStepWarning, stacklevel=4)
        outs, updates, _ = scan_python(sa)
        return outs, updates
    outs = [buf[ol.last_row(n)] if sa.keeps_last(i) else buf[ol.step_rows()]
            for i, (buf, ol) in enumerate(zip(bufs, layouts))]
    return outs, Updates()


def _first_step_only(sa):
    return replace(sa, n_steps=1, keep_last=False)
