"""Stage: the scan loop — Theano-style arguments normalised into a `ScanArgs`, and the mode.

`normalize` checks what `ns.scan` was given and builds the `ScanArgs` every later stage reads;
`until` is the marker a step returns to stop early; `default_mode` sets the mode a scan without
`mode=` runs in, for the calls inside a block.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from ..core.ir import check_dtype
from ..core.layout import SeqLayout
from ..shared import Shared
from ..trace.tracer import Tracer, constant

MODES = ("cpu", "python", "cuda")
# The mode of a scan without `mode=` in this context (None: NUMBASCAN_MODE); a python-mode scan
# sets it to "python" while its steps run, so scans inside them run in python mode too.
_MODE: ContextVar = ContextVar("numbascan_mode", default=None)


class until:
    """Returned by a step (alone or in a tuple) to stop the scan after the step where `condition` holds."""

    def __init__(self, condition):
        self.condition = condition

    def __repr__(self):
        return f"until({self.condition!r})"


class ScanError(ValueError):
    pass


@contextlib.contextmanager
def default_mode(mode):
    """Inside this block, in this context only, a scan without `mode=` runs in `mode`."""
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


# ------------------------------------------------------------------------------------------------
# argument normalisation


def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _value(x, what):
    """A NumPy array or a tracer for a user-provided input; never copies a NumPy array."""
    if isinstance(x, Tracer):
        return x
    if isinstance(x, Shared):
        return x.current()
    if _is_device_array(x):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # a ragged nesting of lists, or an exotic object
        raise TypeError(f"{what}: expected an array, found {type(x).__name__}, which NumPy "
                        f"cannot make one array of ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected a numeric array (bool, int or float), found "
                        f"{type(x).__name__} with dtype {arr.dtype}")
    check_dtype(arr.dtype, what)
    if arr is not x:       # a scalar or a list made into an array here: a constant of a trace
        constant(arr)
    return arr


def _is_device_array(x):
    """A CUDA array: numba's device arrays (also the CUDA simulator's), or anything with
    `__cuda_array_interface__` (CuPy, PyTorch...)."""
    return not isinstance(x, np.ndarray) and (hasattr(x, "__cuda_array_interface__") or
                                              hasattr(x, "copy_to_host"))


def _length(seq):
    """A sequence's number of rows; for the rows of an until-scan, their bound."""
    return seq.var.shape[0] if isinstance(seq, Tracer) else len(seq)


def _taps(raw, what, default):
    if raw is None:
        return default
    if isinstance(raw, (int, np.integer)):
        taps = [raw]
    elif isinstance(raw, (list, tuple, np.ndarray)):
        taps = list(raw)
    else:
        raise ScanError(f"{what}: taps must be an int or a non-empty list of ints, found {raw!r}")
    if not taps or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                           for t in taps):
        raise ScanError(f"{what}: taps must be a non-empty list of ints, found {raw!r}")
    if len(set(taps)) != len(taps):
        raise ScanError(f"{what}: taps must be distinct, found {raw!r}")
    return tuple(int(t) for t in taps)


@dataclass(frozen=True)
class ScanArgs:
    """A scan's arguments, checked; built once by `normalize` (a variant: dataclasses.replace)."""
    fn: object
    seqs: list                 # arrays or tracers
    seq_layouts: list
    inits: list                # per output: None (map) or array/tracer of shape (L, ...) or (...)
    out_taps: list             # per output: () or taps
    nonseqs: list
    n_steps: int
    go_backwards: bool
    truncate_gradient: int
    name: str
    strict: bool
    return_list: bool
    checkpoint: object
    keep_last: object = False  # True: every output keeps its last step only; a tuple: those outputs
    parallel: bool = False     # steps independent of each other (ns.vmap's map)
    # the `parallel=` of ns.scan: run in time as a prefix scan when the step is affine in its
    # fed-back state (True), never (False), or when numbascan expects it to pay (None)
    in_time: object = False
    mode: str = None           # as asked for; recorded on scan equations of traced programs
    state_avals: list = field(default_factory=list)   # per fed-back output: (dtype, step shape)
    # how `sequences` and `outputs_info` were given (`_form`), for messages about the call
    arg_forms: tuple = ("list", "list")

    def signature(self):
        """Everything about the arguments that shapes the traced step (not n_steps)."""
        def aval(x):
            return (np.dtype(x.dtype).str, tuple(x.shape))
        return (tuple((np.dtype(s.dtype).str, tuple(s.shape[1:]), sl.taps)
                      for s, sl in zip(self.seqs, self.seq_layouts)),
                tuple(None if i is None else aval(i) for i in self.inits), tuple(self.out_taps),
                tuple(aval(v) for v in self.nonseqs), self.go_backwards, self.keep_last,
                self.parallel,
                self.strict, self.name)

    def keeps_last(self, i) -> bool:
        """Output `i` keeps only its last step (reduce, foldl; numbascan.lax's carries)."""
        return self.keep_last is True or (isinstance(self.keep_last, tuple) and
                                          i in self.keep_last)

    def arg_avals(self):
        avals = []
        for s, sl in zip(self.seqs, self.seq_layouts):
            avals += [(s.dtype, tuple(s.shape[1:]))] * len(sl.taps)
        state_avals = iter(self.state_avals)
        for taps in self.out_taps:
            if taps:
                avals += [next(state_avals)] * len(taps)
        avals += [(v.dtype, tuple(v.shape)) for v in self.nonseqs]
        return avals


def normalize(fn, sequences, outputs_info, non_sequences, n_steps, truncate_gradient,
              go_backwards, name, strict, return_list, checkpoint, *, keep_last=False,
              parallel=False, mode=None, in_time=False) -> ScanArgs:
    if not callable(fn):
        raise TypeError(f"fn: expected a callable step function, found {type(fn).__name__}")
    seqs, seq_layouts = [], []
    for i, s in enumerate(_as_list(sequences)):
        what = f"sequences[{i}]"
        if isinstance(s, dict):
            unknown = set(s) - {"input", "taps"}
            if unknown or "input" not in s:
                jax = (f"; a dict of arrays here reads like the carry of JAX's scan(f, init, "
                       f"xs): {JAX_ORDER}" if _form(outputs_info) == "array" and
                       "input" not in s else "")
                raise ScanError(f"{what}: expected dict(input=array, taps=[...]), found keys "
                                f"{sorted(s)}{jax}")
            arr, taps = s["input"], _taps(s.get("taps", [0]), what, (0,))
        else:
            arr, taps = s, (0,)
        arr = _value(arr, what)
        if arr.ndim == 0:
            raise ScanError(
                f"{what}: expected an array with a leading time axis, found a 0-d value. Note "
                f"that scan's positional order is Theano's, (fn, sequences, outputs_info, "
                f"non_sequences, n_steps), not JAX's (f, init, xs): pass keywords, e.g. "
                f"ns.scan(fn, sequences=xs, outputs_info=init) with fn(x, carry); for JAX's "
                f"convention, f(carry, x) -> (carry, y), use numbascan.lax.scan(f, init, xs)")
        seqs.append(arr)
        seq_layouts.append(SeqLayout(taps))

    raw_outs = outputs_info if isinstance(outputs_info, (list, tuple)) else \
        ([] if outputs_info is None else [outputs_info])
    inits, out_taps, state_avals = [], [], []
    for i, o in enumerate(raw_outs):
        what = f"outputs_info[{i}]"
        if isinstance(o, dict):
            unknown = set(o) - {"initial", "taps"}
            if unknown:
                raise ScanError(f"{what}: unknown keys {sorted(unknown)}; expected "
                                f"dict(initial=..., taps=[...]){_PYTREE_STATE}")
            init = o.get("initial")
            if init is None or ("taps" in o and o["taps"] is None):   # Theano: a map output
                inits.append(None)
                out_taps.append(())
                continue
            taps = _taps(o.get("taps", [-1]), what, (-1,))
        elif o is None:
            inits.append(None)
            out_taps.append(())
            continue
        else:
            init, taps = o, (-1,)
        if taps == (-1,):
            _one_state(init, what)
        if any(t >= 0 for t in taps):
            raise ScanError(f"{what}: output taps must be negative (past steps), found "
                            f"{list(taps)}")
        init = _value(init, what)
        L = max(-t for t in taps)
        if taps == (-1,):
            step_shape = tuple(init.shape)
        else:
            if init.ndim == 0 or init.shape[0] < L:
                raise ScanError(
                    f"{what}: taps {list(taps)} need an initial state with a leading axis of "
                    f"length {L} (initial[k] plays out[k - {L}]), found shape "
                    f"{tuple(init.shape)}")
            if init.shape[0] > L:
                init = init[:L]
            step_shape = tuple(init.shape[1:])
        inits.append(init)
        out_taps.append(taps)
        state_avals.append((init.dtype, step_shape))

    nonseqs = [_value(v, f"non_sequences[{i}]") for i, v in enumerate(_as_list(non_sequences))]

    max_steps = [_length(s) - sl.m - sl.M for s, sl in zip(seqs, seq_layouts)]
    for i, (s, sl, ms) in enumerate(zip(seqs, seq_layouts, max_steps)):
        if ms < 0:
            raise ScanError(f"sequences[{i}]: taps {list(sl.taps)} need at least {sl.m + sl.M} "
                            f"entries, found length {_length(s)}")
    if n_steps is None:
        if not seqs:
            raise ScanError("n_steps: required when there are no sequences (found None)")
        n = min(max_steps)
    else:
        if isinstance(n_steps, Tracer):
            raise ScanError("n_steps: expected a Python int, found a traced value "
                            "(inside ns.jit the number of steps must be static)")
        if isinstance(n_steps, np.ndarray) and n_steps.ndim == 0:
            n_steps = n_steps.item()
        if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool):
            raise ScanError(f"n_steps: expected an int, found {type(n_steps).__name__}")
        n = int(n_steps)
        if n < 0:
            raise ScanError(f"n_steps: expected a non-negative int, found {n}")
        if n >= 2**63:
            raise ScanError(f"n_steps: expected an int below 2**63 (compiled loops count steps "
                            f"in int64), found {n}")
        for i, (s, sl, ms) in enumerate(zip(seqs, seq_layouts, max_steps)):
            if ms < n:
                raise ScanError(
                    f"sequences[{i}]: too short for n_steps={n}: with taps {list(sl.taps)} it "
                    f"needs length {n + sl.m + sl.M}, found {_length(s)}")
    if not isinstance(truncate_gradient, (int, np.integer)):
        raise TypeError(f"truncate_gradient: expected an int, found {truncate_gradient!r}")
    _check_checkpoint(checkpoint)
    if not isinstance(go_backwards, (bool, np.bool_, int, np.integer)):
        raise TypeError(f"go_backwards: expected a bool, found {go_backwards!r} "
                        f"({type(go_backwards).__name__})")
    if in_time is not None and not isinstance(in_time, (bool, np.bool_)):
        raise TypeError(f"parallel: expected None, True or False, found {in_time!r} "
                        f"({type(in_time).__name__})")
    return ScanArgs(fn, seqs, seq_layouts, inits, out_taps, nonseqs, n, bool(go_backwards),
                    int(truncate_gradient), name, strict, return_list, checkpoint,
                    keep_last=keep_last, parallel=parallel, mode=mode,
                    in_time=None if in_time is None else bool(in_time),
                    state_avals=state_avals, arg_forms=(_form(sequences), _form(outputs_info)))


def _check_checkpoint(checkpoint):
    """None, a positive int (not a bool: True is not "every step") or "sqrt"."""
    if checkpoint is None or (isinstance(checkpoint, str) and checkpoint == "sqrt"):
        return
    expected = "expected None, a positive int or 'sqrt'"
    if isinstance(checkpoint, (bool, np.bool_)) or not isinstance(
            checkpoint, (int, np.integer, str)):
        raise TypeError(f"checkpoint: {expected} (store every N-th state), found "
                        f"{checkpoint!r} ({type(checkpoint).__name__})")
    if isinstance(checkpoint, str) or checkpoint < 1:
        raise ValueError(f"checkpoint: {expected}, found {checkpoint!r}")


def _one_state(init, what):
    """An initial state with taps [-1] is one array: a tuple or list holding arrays is the
    states of several outputs (JAX's carry), which outputs_info lists flat."""
    if isinstance(init, (tuple, list)) and any(
            isinstance(v, (Tracer, Shared, np.ndarray, tuple, list)) or _is_device_array(v)
            for v in init):
        raise ScanError(
            f"{what}: expected one initial state (an array) per output, found a "
            f"{type(init).__name__} of {len(init)} values; a tuple or list of states means "
            f"several outputs: list them flat, outputs_info=[s0, s1, ...] (each entry an "
            f"array, dict(initial=..., taps=[...]) or None), and return one array per output "
            f"from the step (np.stack(...) makes one state of several arrays){_PYTREE_STATE}")


# ------------------------------------------------------------------------------------------------
# calls that read like JAX's scan, or hand scan a tuple of states

JAX_ORDER = ("ns.scan follows Theano's order, scan(fn, sequences, outputs_info, non_sequences, "
             "...), and f(carry, x) -> (carry, y) is JAX's convention: use "
             "numbascan.lax.scan(f, init, xs), or ns.scan(fn, sequences=xs, outputs_info=[init, "
             "None]) with fn(x, carry) -> (carry, y)")
_PYTREE_STATE = ("; for one state made of several arrays (a tuple, dict or other pytree carry), "
                 "numbascan.lax.scan(f, init, xs) carries it whole: f(carry, x) -> (carry, y)")


def _form(x):
    """How an argument was given: "none", "list", "tuple", "dict", or "array" (one value)."""
    if x is None:
        return "none"
    return next((name for kind, name in ((list, "list"), (tuple, "tuple"), (dict, "dict"))
                 if isinstance(x, kind)), "array")


def _takes_two(fn):
    """Whether `fn` takes exactly two positional arguments, as JAX's f(carry, x) does."""
    try:
        sig = inspect.signature(getattr(fn, "fn", fn))
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(0, 0)
    except TypeError:
        return False
    try:
        sig.bind(0, 0, 0)
    except TypeError:
        return True
    return False


def reads_like_jax(sa: ScanArgs, n_outputs=None) -> bool:
    """Whether the call reads like JAX's scan(f, init, xs) met by Theano's positional order:
    init (an array, or a tuple of them) in `sequences`, xs (one array) in `outputs_info`, no
    non_sequences, a step of two parameters, f(carry, x); with `n_outputs` (what the step
    returned), also one sequence and one fed-back state, and a step returning (carry, y)."""
    seq_form, out_form = sa.arg_forms
    if seq_form not in ("array", "tuple") or out_form != "array" or sa.nonseqs or \
            not _takes_two(sa.fn):
        return False
    if n_outputs is None:
        return True
    return (n_outputs == 2 and len(sa.seqs) == 1 and sa.seq_layouts[0].taps == (0,) and
            sa.out_taps == [(-1,)])


def tuple_of_states(sa: ScanArgs) -> str:
    """What to say of an outputs_info given as a top-level tuple (Theano reads it as its list)."""
    n = len(sa.out_taps)
    return (f"outputs_info: expected a list with one entry per output (an array, a dict with "
            f"'initial'/'taps', or None), found a tuple of {n} entries, which scan reads as "
            f"that list, as Theano does: {n} outputs, each entry that is not None fed back to "
            f"the step as an argument of its own{_PYTREE_STATE}")


def output_count_error(sa: ScanArgs, n_outputs) -> ScanError:
    """The error of a step that returned `n_outputs` outputs for the outputs_info entries."""
    message = (f"fn returned {n_outputs} output(s) but outputs_info has {len(sa.out_taps)} "
               f"entries; give one outputs_info entry (None for a map output) per output")
    if reads_like_jax(sa, n_outputs):
        message += f". This reads like JAX's scan(f, init, xs): {JAX_ORDER}"
    elif sa.arg_forms[1] == "tuple":
        message += f". {tuple_of_states(sa)}"
    return ScanError(message)


def check_arity(sa: ScanArgs):
    """Raise when the step cannot take the arguments scan passes: every tap of every
    sequence, then every tap of every fed-back output, then the non_sequences (SPEC section
    1). Called when calling the step raised a TypeError (no cost to a step that runs)."""
    passed = [f"sequences[{i}][t{_offset(tap)}]" for i, sl in enumerate(sa.seq_layouts)
              for tap in sl.taps]
    passed += [f"output {i} at t{_offset(tap)}" for i, taps in enumerate(sa.out_taps)
               for tap in taps]
    passed += [f"non_sequences[{i}]" for i in range(len(sa.nonseqs))]
    target = getattr(sa.fn, "fn", sa.fn)   # an ns.jit step: the function it wraps
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):        # a builtin or a compiled function: not checked
        return
    try:
        sig.bind(*passed)
    except TypeError as exc:
        name = getattr(target, "__qualname__", None) or type(target).__name__
        raise TypeError(
            f"fn: scan calls the step with {len(passed)} argument(s) "
            f"({', '.join(passed) or 'none'}), but {name}{sig} does not accept them ({exc}); "
            f"scan passes the sequence slices (every tap of every sequence), then the previous "
            f"outputs (every tap of every outputs_info entry that is not None), then the "
            f"non_sequences{_arity_hint(sa)}") from None


def _arity_hint(sa: ScanArgs):
    if sa.arg_forms[1] == "tuple":
        return f". {tuple_of_states(sa)}"
    if reads_like_jax(sa):
        return f". This reads like JAX's scan(f, init, xs): {JAX_ORDER}"
    return ""


def _offset(tap):
    return f"{tap:+d}" if tap else ""


@functools.lru_cache(maxsize=None)
def machine_memory():
    """Bytes of this machine's physical memory (None when the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_buffer_bytes(n_steps, buffers):
    """Raise, before anything is allocated, when the buffers of a scan of `n_steps` steps
    would not fit in this machine's memory (nor NumPy's index range). `buffers`: (rows,
    dtype, step shape) of each buffer the mode allocates; reduce/foldl keep a few rows."""
    need = sum(int(rows) * math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
               for rows, dtype, shape in buffers)
    memory = machine_memory()
    limit = min(memory, 2**63 - 1) if memory else 2**63 - 1
    if need > limit:
        where = f"this machine's memory ({_bytes(limit)})" if memory else "NumPy's limit"
        raise ScanError(
            f"n_steps: {n_steps} steps need output buffers of {need} bytes ({_bytes(need)}), "
            f"more than {where}; pass a smaller n_steps, or keep only the last state with "
            f"ns.reduce / ns.foldl")


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} EiB"
