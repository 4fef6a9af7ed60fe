"""Stage: user API — parallel-in-time scans: an affine recurrence run as a prefix scan.

`ns.scan(..., parallel=None | True | False)`. A step whose fed-back outputs are affine in the
fed-back taps, with coefficients that do not depend on them (loop/affine.py reads that off the
traced step), is a linear recurrence

    x_t = a_t * x_{t-1} + b_t        (diagonal: element by element, a state of any shape)
    z_t = z_{t-1} @ A_t + b_t        (matrix: the windows of coupled outputs stacked into z)

and `in_time` runs it as one, in four parts, each an operation of the engine (so that the
same code runs eagerly on NumPy arrays and traced inside ns.jit and the derivatives, whose
rules differentiate each part):

  1. the offsets b_t (the step at a zero state) and the coefficients A_t (its derivative in
     the state): by the step's equations replayed on the whole sequences at once when they
     are elementwise (`replay_affine`: NumPy's whole-array operations, or their equations in
     traced code); else by a compiled map over the steps (`_coefficient_step`, forward mode
     along the taps' basis vectors). A coefficient that depends on no sequence is computed
     once, without a time axis;
  2. the states, by `linear_recurrence` (blocks of steps across threads);
  3. the outputs that are not fed back: a compiled map over the sequences and the states'
     histories, calling the step as the loop would;
  4. Theano's conventions: outputs in iteration order (go_backwards reads the sequences
     reversed), the last step only for reduce/foldl/foldr.

`plan(sa, mode, traced)` decides: `parallel=False` never (the sequential loop, unchanged);
`True` whenever the step is affine (an error saying why not); `None` by expected benefit
(`worth_it`, the rule documented in docs/guide.md "Parallel in time").
"""

from __future__ import annotations

import ast
import functools
import weakref
from dataclasses import dataclass, replace

import numpy as np

from ..ad.engine import jvp_replay
from ..codegen import cuda_linrec, linrec as kernels
from ..codegen.parallel import TRANSCENDENTAL
from ..core.context import current_trace
from ..core.ir import Lit, Var
from ..core.primitives import TABLE, abstract_eval
from ..loop import affine as analysis
from ..loop.affine import POISON, Ops, Val, replay_affine
from ..loop.args import ScanError, _is_device_array, check_buffer_bytes, normalize
from ..loop.primitive import bind_scan
from ..loop.step import split_step_result, trace_step
from ..runtime.cache import traced_scan
from ..runtime.cpu import scan_cpu
from ..runtime.cuda import cuda_module, linear_recurrence as on_gpu, scan_cuda, to_host
from ..runtime.linrec import compiled
from ..runtime.program import run_traced
from ..runtime.threads import thread_count
from ..shared import Shared, Updates
from ..trace import linrec as traced_linrec
from ..trace.names import function_name, named
from ..trace.program import inline_inputs, trace_program
from ..trace.tracer import RunTracer, Tracer, TracingError, bind, constant

# `parallel=None`'s cost model: nanoseconds a step, for a recurrence of one state element,
# measured on 2 shared cores at T = 2*10^6 (docs/guide.md, "Parallel in time"). The loop:
LOOP_STEP_NS = 1.3             # a compiled loop's step of x = 0.9 x + u (2.5-2.7 ms)
LOOP_TRANSCENDENTAL_NS = 6.0   # one more transcendental function in its step (np.tanh: 14.8 ms)
# the parallel path: the solver, in one thread (four steps at a time: 1.25-1.3 ms) or across
# threads (codegen/linrec.py decides from the work: 1.85-3.5 ms on 2 cores shared with other
# work, median 2.3-2.75), more for a per-step coefficient; a whole-array NumPy operation of
# the replay per element (0.5 * u: 1.06 ms; np.tanh(u): 4.25 ms); a compiled map of the
# outputs that are not fed back; and the call's fixed cost (analysis, replay: 0.06 ms)
SOLVER_NS = {False: 0.5, True: 1.3}
SOLVER_VARYING_NS = 0.5
REPLAY_NS = 0.5
REPLAY_TRANSCENDENTAL_NS = 2.1
MAP_STEP_NS = 0.5
FIXED_NS = 60_000
# below this many steps the fixed cost exceeds what the solver can save (the loop's step, at
# most): the loop runs, untraced and unanalysed
CROSSOVER = int(FIXED_NS / LOOP_STEP_NS)
# the elementwise recurrences `parallel=None` considers: the solver's loops over a state of
# several elements measured slower than the compiled loop (0.2-0.6x for 8 elements)
AUTO_ELEMENTS = 1


# ------------------------------------------------------------------------------------------------
# deciding


@dataclass(frozen=True)
class Plan:
    sa: object               # the scan's ScanArgs
    ts: object               # its traced step
    affinity: object         # loop/affine.py's Affinity
    captures: list           # the captures' current values (eager) or sources (traced)
    traced: bool
    mode: str = "cpu"        # "cuda": the recurrences by the GPU's block scan, maps as kernels


def describe_call(sa):
    name = function_name(getattr(sa.fn, "fn", sa.fn))
    return f"ns.scan({name})" + (f" (scan {sa.name!r})" if sa.name else "")


def threads() -> int:
    """The threads the recurrence may use (runtime/threads.py: numba's thread count of the
    calling thread, capped by NUMBASCAN_NUM_THREADS)."""
    return thread_count()


# id of a traced step -> (a weak reference to it, loop/affine.py's Affinity of it): the trace
# cache keeps eager steps, and an entry leaves with its step. Entries are stored whole, by one
# assignment; two threads that miss together store equal analyses.
_ANALYSES: dict = {}


def _analysis(ts, sa, where):
    key = id(ts)
    hit = _ANALYSES.get(key)
    if hit is not None and hit[0]() is ts:
        return hit[1]
    found = analysis.analyze(ts, sa, where)
    _ANALYSES[key] = (weakref.ref(ts), found)
    weakref.finalize(ts, _ANALYSES.pop, key, None)
    return found


def plan(sa, mode, traced):
    """The Plan of a parallel-in-time run of the scan `sa`, or None for the sequential loop;
    a ScanError when `parallel=True` cannot be honoured. `mode`: the mode the scan runs in
    (eager), or the mode its program runs in (traced: asked for, or this context's)."""
    asked = sa.in_time
    if asked is False or sa.parallel or sa.n_steps == 0:
        return None
    where = describe_call(sa)
    if asked is None and not _may_be_worth_it(sa, mode, traced):
        return None
    reason = _cannot(sa, mode, traced, where)
    if reason is not None:
        if asked:
            raise ScanError(reason)
        return None
    try:                # before anything is allocated: the states, offsets and coefficients
        check_buffer_bytes(sa.n_steps, [(3 * sa.n_steps, dtype, shape)
                                        for dtype, shape in sa.state_avals])
    except ScanError:
        if asked:
            raise
        return None     # the loop raises its own error, or needs less memory
    try:
        if traced:
            ts = trace_step(sa)
            captures = ts.captures
        else:
            ts, _, captures = traced_scan(sa, compile=False)
    except TracingError as err:
        if asked:
            raise ScanError(f"{where}: parallel=True needs a step numbascan can trace "
                            f"(to read off its coefficients): {err}") from err
        return None
    found = _analysis(ts, sa, where)
    if not found.affine:
        if asked:
            raise ScanError(found.reason)
        return None
    if mode == "cuda":
        reason = _too_large_on_gpu(found, where)
        if reason is not None:
            if asked:
                raise ScanError(reason)
            return None
    if mode == "python":          # the oracle checks what the parallel path would, then loops
        return None
    p = Plan(sa, ts, found, list(captures), traced, mode)
    if asked is None and not worth_it(p):
        return None
    return p


def _cannot(sa, mode, traced, where):
    """What the parallel path cannot do with this call (None: nothing)."""
    needs = f"{where}: parallel=True needs"
    if sa.truncate_gradient > 0:
        return (f"{needs} truncate_gradient=-1: the parallel path differentiates through "
                f"every step, found truncate_gradient={sa.truncate_gradient}")
    for i, s in enumerate(sa.seqs):
        if isinstance(s, RunTracer):
            return (f"{needs} sequences of a static length; sequences[{i}] is the rows of a "
                    f"scan that stops early (ns.until)")
    return None


def _too_large_on_gpu(found, where):
    """Why the GPU's block scan cannot run a matrix group of `found` (None: it can)."""
    for g in found.groups:
        dtype = next(t.dtype for t in found.taps if t.output in g.outputs)
        if g.kind == "matrix" and not cuda_linrec.fits(g.size, dtype):
            return (f"{where}: parallel=True needs, in mode 'cuda', coupled states whose "
                    f"map (an n x n matrix and an n-vector of {np.dtype(dtype).name}) fits in "
                    f"{cuda_linrec.SHARED_BYTES} bytes of shared memory; found n = {g.size}: "
                    f"use mode 'cpu'")
    return None


def _may_be_worth_it(sa, mode, traced):
    """The checks of `parallel=None` that need no trace: the CPU, threads, a long scan."""
    if mode != "cpu":
        return False
    if sa.n_steps <= CROSSOVER or threads() < 2:
        return False
    if sa.checkpoint is not None or sa.truncate_gradient > 0:
        return False
    if not sa.state_avals or any(np.dtype(d).kind != "f" for d, _ in sa.state_avals):
        return False                             # nothing fed back, or an integer state
    tr = current_trace()
    return tr is None or tr.kind != "step"       # not a scan inside another scan's step


def worth_it(p: Plan) -> bool:
    """`parallel=None`'s rule once the step is known to be affine (docs/guide.md, "Parallel
    in time"): elementwise recurrences of one state element, whose coefficients and offsets
    are computed once or by whole-array operations (a compiled map over the steps costs
    about what the loop does), and whose estimated time (the cost model above) is below the
    loop's."""
    f = p.affinity
    if not f.offsets_batched:
        return False
    for g in f.groups:
        if g.kind != "diagonal" or g.size > AUTO_ELEMENTS or (g.a_varies and not
                                                             g.elementwise):
            return False
    parallel_ns, loop_ns = estimated_ns(p)
    return FIXED_NS + p.sa.n_steps * parallel_ns < p.sa.n_steps * loop_ns


def estimated_ns(p: Plan):
    """(parallel path, loop): estimated nanoseconds a step, from a replay on shapes alone."""
    sa, ts, f = p.sa, p.ts, p.affinity
    ops = _CostOps(2)
    inputs = [None] * len(ts.ir.inputs)
    k = 0
    for s, sl in zip(sa.seqs, sa.seq_layouts):
        for _ in sl.taps:
            inputs[k] = Val(Var(np.dtype(s.dtype), (2,) + tuple(s.shape[1:])), True)
            k += 1
    n_rows = k
    for j, v in enumerate(ts.ir.inputs[n_rows + len(f.taps):]):
        inputs[n_rows + len(f.taps) + j] = Val(v)
    taps_in = {n_rows + j: j for j in range(len(f.taps))}
    parts = replay_affine(ts.ir, inputs, taps_in, list(f.fed), 2, ops)
    threaded = (sa.n_steps >= kernels.parallel_below()) and threads() > 1
    parallel_ns = ops.ns
    for g, part in zip(f.groups, parts):
        parallel_ns += SOLVER_NS[threaded] + (SOLVER_VARYING_NS if g.a_varies else 0.0)
        if part.off is None or not part.off.varies:
            parallel_ns += REPLAY_NS               # b materialised over the time axis
    fed_slice = analysis.needed_eqns(ts.ir, [ts.ir.outputs[i] for i in f.fed])
    mapped = [i for i in range(ts.n_outputs) if not sa.out_taps[i]]
    map_slice = analysis.needed_eqns(ts.ir, [ts.ir.outputs[i] for i in mapped])
    loop_ns = LOOP_STEP_NS
    for e in ts.ir.eqns:
        heavy = e.prim in TRANSCENDENTAL
        if heavy and (id(e) in fed_slice or id(e) in map_slice):
            loop_ns += LOOP_TRANSCENDENTAL_NS * e.outputs[0].size
        if mapped and heavy and id(e) in map_slice and id(e) not in fed_slice:
            parallel_ns += REPLAY_TRANSCENDENTAL_NS * e.outputs[0].size
    if mapped:
        parallel_ns += MAP_STEP_NS
    return parallel_ns, loop_ns


class _CostOps(Ops):
    """The replay on shapes alone (Vars), adding up what its whole-array operations cost a
    step (`ns`)."""

    def __init__(self, T):
        self.T, self.ns = T, 0.0

    def apply(self, prim, values, params, varies=False):
        ins = [v if hasattr(v, "shape") else Lit(v) for v in values]
        dtype, shape = abstract_eval(prim, ins, params)[0]
        out = Var(np.dtype(dtype), tuple(shape))
        if varies and prim != "reshape":             # a reshape of a NumPy array is a view
            per_step = out.size / self.T
            self.ns += per_step * (REPLAY_TRANSCENDENTAL_NS if prim in TRANSCENDENTAL else
                                   REPLAY_NS)
        return out


# ------------------------------------------------------------------------------------------------
# running


class _NumPyOps(Ops):
    def apply(self, prim, values, params, varies=False):
        with np.errstate(all="ignore"):      # as compiled code: inf and nan, no warnings
            return TABLE[prim].impl(*values, **params)


class _TracedOps(Ops):
    def apply(self, prim, values, params, varies=False):
        return current_trace().bind1(prim, values, **params)

    def constant(self, array):
        return constant(array)


def in_time(p: Plan):
    """(outputs, updates) of the scan of plan `p`, run as linear recurrences."""
    on_device = False
    if p.mode == "cuda" and not p.traced:     # the glue on the host, as a CUDA program's
        on_device = any(_is_device_array(x) for x in [*p.sa.seqs, *p.sa.nonseqs, *p.sa.inits])
        p = replace(p, sa=replace(p.sa, seqs=[to_host(x) for x in p.sa.seqs],
                                  nonseqs=[to_host(x) for x in p.sa.nonseqs],
                                  inits=[to_host(x) for x in p.sa.inits]))
    sa, ts, f = p.sa, p.ts, p.affinity
    T = sa.n_steps
    ops = _TracedOps() if p.traced else _NumPyOps()
    # sequences in iteration order: go_backwards reads seq[len - 1 - (t + m + tap)], which is
    # the forward read of the reversed sequence
    seqs = [s[::-1] if sa.go_backwards else s for s in sa.seqs]
    rows_full, rows_first = [], []          # per sequence tap: all T rows, and step 0's row
    for s, sl in zip(seqs, sa.seq_layouts):
        for tap in sl.taps:
            rows_full.append(s[sl.m + tap:sl.m + tap + T])
            row = s[sl.m + tap]
            rows_first.append(row if isinstance(row, Tracer) else np.asarray(row))
    n_rows = len(rows_full)
    taps = f.taps
    captures = [c.get_value(borrow=True) if isinstance(c, Shared) and not p.traced else c
                for c in p.captures]
    inputs = ([Val(r, True) for r in rows_full] + [None] * len(taps) +
              [Val(v) for v in sa.nonseqs] + [Val(c) for c in captures])
    taps_in = {n_rows + k: k for k in range(len(taps))}
    parts = replay_affine(ts.ir, inputs, taps_in, list(f.fed), T, ops)
    part = dict(zip(f.fed, parts))

    # what the replay could not give: offsets from a map, coefficients once or from a map
    want_b = tuple(i for i in f.fed if part[i].off is POISON)
    once, mapped = [], []
    for g in f.groups:
        if _replayed_coefficients(g, part, taps) is None:
            (mapped if g.a_varies else once).append(g)
    spec = _spec(sa, f, n_rows)
    computed_b, computed_a = {}, {}
    if once:
        rows = list(rows_first)
        values = _run_once(sa.fn, spec, _coefficient_spec(spec, (), once), rows, p)
        computed_a.update(_unpack_coefficients(values, once, taps, False))
    if want_b or mapped:
        cspec = _coefficient_spec(spec, want_b, mapped)
        values = _run_map(_coefficient_step(sa.fn, cspec, n_rows),
                          [dict(input=s, taps=list(sl.taps))
                           for s, sl in zip(seqs, sa.seq_layouts)], sa, T, p.traced, p.mode)
        computed_b.update(zip(want_b, values[:len(want_b)]))
        computed_a.update(_unpack_coefficients(values[len(want_b):], mapped, taps, True))

    states = {}
    for g in f.groups:
        states.update(_solve(g, sa, taps, part, computed_a, computed_b, T, p.mode))

    outs = [None] * ts.n_outputs
    for i in f.fed:
        outs[i] = states[i][-1] if sa.keeps_last(i) else states[i]
    mapped_outs = [i for i in range(ts.n_outputs) if not sa.out_taps[i]]
    if mapped_outs:
        for i, v in zip(mapped_outs, _map_outputs(p, seqs, states, mapped_outs, T)):
            outs[i] = v
    if not p.traced:
        outs = [np.ascontiguousarray(o) if isinstance(o, np.ndarray) and o.ndim else
                np.asarray(o) for o in outs]
    if on_device:
        cuda = cuda_module()
        outs = [cuda.to_device(o) for o in outs]
    return outs, Updates()


def _replayed_coefficients(g, part, taps):
    """Whether the replay gave every coefficient of group `g` (None: it did not)."""
    for i in g.outputs:
        for k, c in part[i].lin.items():
            if c is POISON:
                return None
    return True


# -- the step's static description, for the closures the maps and programs call ------------------
#
# The closures below hold the user's step and a text (`repr` of nested tuples of Python
# scalars): what the trace cache keys on (runtime/cache.py), so that a second call with the
# same layout finds their traces and compiled code.

def _spec(sa, f, n_rows):
    taps = tuple((t.output, t.tap, tuple(t.shape), t.dtype) for t in f.taps)
    return (n_rows, taps, len(sa.nonseqs), tuple(f.fed))


def _coefficient_spec(spec, want_b, groups):
    """What a coefficient computation returns: the offsets of the outputs `want_b`, then the
    coefficients of `groups` (their kind, outputs and tap indices)."""
    taps = spec[1]
    gs = tuple((g.kind, tuple(g.outputs),
                tuple(k for k, t in enumerate(taps) if t[0] in g.outputs)) for g in groups)
    return repr(spec + (tuple(want_b), gs))


@functools.lru_cache(maxsize=None)
def _read_spec(text):
    return ast.literal_eval(text)


def _target(fn):
    return getattr(fn, "fn", fn)


def _outputs_of(ret):
    outputs, _, _ = split_step_result(ret)
    return outputs


def _coefficients(fn, text, rows, nonseqs):
    """The offsets and coefficients of one step (the spec `text`, `_coefficient_spec`): the
    step at zero taps, and its forward-mode derivative along each tap's basis vectors
    (diagonal groups: along ones)."""
    n_rows, taps, n_nonseqs, fed, want_b, groups = _read_spec(text)
    zeros = [constant(np.zeros(shape, dtype)) for _, _, shape, dtype in taps]
    target = _target(fn)
    if not groups:
        # traced zeros: NumPy arrays would meet the step's NumPy arithmetic eagerly
        traced = [_traced_zeros(shape, dtype) for _, _, shape, dtype in taps]
        outs = _outputs_of(target(*rows, *traced, *nonseqs))
        return [outs[i] for i in want_b]

    def new_states(*states):
        outs = _outputs_of(target(*rows, *states, *nonseqs))
        return [outs[i] for i in fed]

    prog = trace_program(new_states, zeros)
    primals = inline_inputs(prog, zeros)
    n_extra = len(primals) - len(zeros)
    results = []
    values = None
    position = {o: j for j, o in enumerate(fed)}
    for kind, outputs, tap_ids in groups:
        if kind == "diagonal":
            (k,), (o,) = tap_ids, outputs
            _, dtype_k = taps[k][2], taps[k][3]
            tangents = [None] * len(zeros)
            tangents[k] = constant(np.ones(taps[k][2], dtype_k))
            values, touts = jvp_replay(prog.ir, primals, tangents + [None] * n_extra)
            t = touts[position[o]]
            results.append(t if t is not None else constant(np.zeros(taps[k][2], dtype_k)))
            continue
        for k in tap_ids:
            shape, dtype = taps[k][2], taps[k][3]
            size = int(np.prod(shape, dtype=np.int64))
            basis = constant(np.eye(size, dtype=dtype))
            rows_by_output = {o: [] for o in outputs}
            for e in range(size):
                tangents = [None] * len(zeros)
                tangents[k] = np.reshape(basis[e], shape)
                values, touts = jvp_replay(prog.ir, primals, tangents + [None] * n_extra)
                for o in outputs:
                    t = touts[position[o]]
                    o_shape = taps[[j for j, tp in enumerate(taps) if tp[0] == o][0]][2]
                    t = t if t is not None else constant(np.zeros(o_shape, dtype))
                    rows_by_output[o].append(np.reshape(t, (-1,)))
            for o in outputs:
                results.append(np.stack(rows_by_output[o]))      # block (size_k, size_o)
    offsets = [values[position[i]] for i in want_b] if want_b else []
    return offsets + results


def _traced_zeros(shape, dtype):
    zero = bind("convert", [np.dtype(dtype).type(0)], dtype=np.dtype(dtype))
    return bind("broadcast_to", [zero], shape=tuple(shape)) if shape else zero


def _coefficient_step(fn, text, n_rows):
    def coefficients(*args):
        return _coefficients(fn, text, list(args[:n_rows]), list(args[n_rows:]))
    return named(coefficients, f"coefficients of {function_name(_target(fn))}")


def _run_once(fn, spec, text, rows, p):
    """The coefficients that depend on no sequence, from step 0's rows: inline in traced
    code, else a traced program run by the IR interpreter (nothing to compile)."""
    n_rows = spec[0]
    step = _coefficient_step(fn, text, n_rows)
    args = list(rows) + list(p.sa.nonseqs)
    if p.traced:
        return step(*args)
    return list(run_traced(step, args, interpret=True))


def _run_map(step, sequences, sa, T, traced, mode="cpu"):
    """A compiled map of `step` over `sequences` (a scan without fed-back outputs) with the
    non-sequences of `sa`: on the CPU a loop over the steps; on CUDA ns.vmap's map (a thread
    or a block a step)."""
    msa = normalize(step, sequences, None, sa.nonseqs, T, -1, False, sa.name, False, True,
                    None, mode=mode, parallel=mode == "cuda")
    if traced:
        outs, _ = bind_scan(msa)
        return list(outs)
    if mode == "cuda":
        outs, _, _ = scan_cuda(msa, batched=True)
        return [to_host(o) for o in outs]
    outs, _, _ = scan_cpu(msa)
    return list(outs)


def _unpack_coefficients(values, groups, taps, varies):
    """{(output, tap index): coefficient block} from what `_coefficients` returned: a
    diagonal group's coefficient (the state's shape), a matrix group's blocks (size_k,
    size_o); time-major when `varies`."""
    found, it = {}, iter(values)
    for g in groups:
        if g.kind == "diagonal":
            found[("diag", g.outputs[0])] = Val(next(it), varies)
            continue
        for k, t in enumerate(taps):
            if t.output in g.outputs:
                for o in g.outputs:
                    found[(o, k)] = Val(next(it), varies)
    return found


# -- the recurrences -------------------------------------------------------------------------------

def _state_of(taps, o):
    t = next(t for t in taps if t.output == o)
    return tuple(t.shape), np.dtype(t.dtype)


def _time_major(v: Val, T, shape, dtype):
    """`v` (None: zeros) as a (T, *shape) array of `dtype` (broadcast when it does not vary)."""
    if v is None:
        return constant(np.zeros((T,) + shape, dtype))
    x = v.value
    if not hasattr(x, "dtype") or np.dtype(x.dtype) != dtype:
        x = x.astype(dtype) if hasattr(x, "astype") else constant(np.asarray(x, dtype))
    if v.varies:
        own = tuple(x.shape[1:])
        if own != shape:
            x = np.reshape(x, (T,) + (1,) * (len(shape) - len(own)) + own)
            x = np.broadcast_to(x, (T,) + shape)
        return x
    return np.broadcast_to(x, (T,) + shape)


def _step_shaped(v: Val, shape, dtype):
    x = v.value
    if not hasattr(x, "dtype") or np.dtype(x.dtype) != dtype:
        x = x.astype(dtype) if hasattr(x, "astype") else constant(np.asarray(x, dtype))
    return np.broadcast_to(x, shape) if tuple(x.shape) != shape else x


def _solve(g, sa, taps, part, computed_a, computed_b, T, mode):
    """{output: its states (T, *shape)} for group `g`."""
    if g.kind == "diagonal":
        (o,) = g.outputs
        shape, dtype = _state_of(taps, o)
        k = next(j for j, t in enumerate(taps) if t.output == o)
        lin = part[o].lin
        if ("diag", o) in computed_a:
            a = computed_a[("diag", o)]
        else:
            c = lin.get(k)
            a = (None if c is None else
                 Val(constant(np.ones((), dtype))) if c is analysis.ONE else c)
        a = (constant(np.zeros(shape, dtype)) if a is None else
             _time_major(a, T, shape, dtype) if a.varies else _step_shaped(a, shape, dtype))
        b = _offset(part, computed_b, o, T, shape, dtype)
        x0 = sa.inits[o]
        return {o: _recurrence(a, b, x0, "diagonal", mode)}
    # matrix: z = (for each output: its last L states, newest first), size n
    offsets = {}
    n = 0
    for o in g.outputs:
        shape, dtype = _state_of(taps, o)
        size = int(np.prod(shape, dtype=np.int64))
        L = max(-t.tap for t in taps if t.output == o)
        offsets[o] = (n, size, L)
        n += L * size
    dtype = _state_of(taps, g.outputs[0])[1]
    varies = False
    placed = {}                         # (row entry, column entry) -> block (rows, cols)
    for o in g.outputs:
        shape_o, _ = _state_of(taps, o)
        col = offsets[o][0]
        for k, t in enumerate(taps):
            if t.output not in g.outputs:
                continue
            shape_k = tuple(t.shape)
            row = offsets[t.output][0] + (-t.tap - 1) * offsets[t.output][1]
            if (o, k) in computed_a:
                block = computed_a[(o, k)]
            else:
                c = part[o].lin.get(k)
                if c is None:
                    continue
                block = _block(c, shape_k, shape_o, dtype, T)
            varies = varies or block.varies
            placed[(row, col)] = block
        size_o, L_o = offsets[o][1], offsets[o][2]
        for j in range(1, L_o):          # the window shifts: block (o, j) <- block (o, j - 1)
            placed[(col + (j - 1) * size_o, col + j * size_o)] = Val(
                constant(np.eye(size_o, dtype=dtype)))
    A = _assemble(placed, n, dtype, T if varies else None)
    b_parts, x0_parts = [], []
    for o in g.outputs:
        shape, _ = _state_of(taps, o)
        start, size, L = offsets[o]
        b_o = _offset(part, computed_b, o, T, shape, dtype)
        b_parts.append(np.reshape(b_o, (T, size)))
        if L > 1:
            b_parts.append(constant(np.zeros((T, (L - 1) * size), dtype)))
        init = sa.inits[o]
        window = init if sa.out_taps[o] == (-1,) else init[::-1]
        x0_parts.append(np.reshape(window, (-1,)))
    b = b_parts[0] if len(b_parts) == 1 else np.concatenate(b_parts, axis=1)
    x0 = x0_parts[0] if len(x0_parts) == 1 else np.concatenate(x0_parts)
    z = _recurrence(A, b, x0, "matrix", mode)
    out = {}
    for o in g.outputs:
        shape, _ = _state_of(taps, o)
        start, size, _ = offsets[o]
        out[o] = np.reshape(z[:, start:start + size], (T,) + shape)
    return out


def _offset(part, computed_b, o, T, shape, dtype):
    if o in computed_b:
        return _time_major(Val(computed_b[o], True), T, shape, dtype)
    return _time_major(part[o].off, T, shape, dtype)


def _block(c, shape_k, shape_o, dtype, T):
    """The block (size_k, size_o) of the matrix that maps tap values of shape `shape_k` to
    the output's `shape_o` through the elementwise coefficient `c` (broadcasting, as the step
    did); time-major when `c` varies."""
    if c is analysis.ONE:
        c = Val(constant(np.ones((), dtype)))
    size_k = int(np.prod(shape_k, dtype=np.int64))
    size_o = int(np.prod(shape_o, dtype=np.int64))
    eye = constant(np.eye(size_k, dtype=dtype).reshape(
        (size_k,) + (1,) * (len(shape_o) - len(shape_k)) + shape_k))
    if c.varies:
        full = _time_major(c, T, shape_o, dtype)                   # (T, *shape_o)
        grid = np.expand_dims(eye, 0) * np.expand_dims(full, 1)    # (T, size_k, *shape_o)
        return Val(np.reshape(grid, (T, size_k, size_o)), True)
    full = _step_shaped(c, shape_o, dtype)
    return Val(np.reshape(eye * full, (size_k, size_o)))


def _assemble(placed, n, dtype, T):
    """The (n, n) matrix (time-major (T, n, n) when T is given) with the blocks `placed` at
    their (first row, first column) and zeros elsewhere. Blocks that start on one row have
    as many rows, blocks that start on one column as many columns (the windows' layout)."""
    if T is None and all(isinstance(v.value, np.ndarray) for v in placed.values()):
        A = np.zeros((n, n), dtype)
        for (r, c), v in placed.items():
            A[r:r + v.value.shape[0], c:c + v.value.shape[1]] = v.value
        return A
    lead = () if T is None else (T,)
    heights = {r: v.value.shape[-2] for (r, _), v in placed.items()}
    widths = {c: v.value.shape[-1] for (_, c), v in placed.items()}

    def bands(sizes):
        """(start, size, placed) bands covering 0..n: the blocks' edges and the gaps."""
        out, pos = [], 0
        for start in sorted(sizes):
            if start > pos:
                out.append((pos, start - pos, False))
            out.append((start, sizes[start], True))
            pos = start + sizes[start]
        if pos < n:
            out.append((pos, n - pos, False))
        return out
    lines = []
    for r, rn, r_placed in bands(heights):
        pieces = []
        for c, cn, c_placed in bands(widths):
            v = placed.get((r, c)) if r_placed and c_placed else None
            if v is None:
                pieces.append(constant(np.zeros(lead + (rn, cn), dtype)))
            elif lead and not v.varies:
                pieces.append(np.broadcast_to(v.value, lead + (rn, cn)))
            else:
                pieces.append(v.value)
        lines.append(pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=-1))
    return lines[0] if len(lines) == 1 else np.concatenate(lines, axis=-2)


def _recurrence(a, b, x0, kind, mode):
    """The states of the recurrence: the `linrec` primitive in traced code (recording mode
    "cuda"); on NumPy arrays, codegen/linrec.py's compiled loops (across threads for long
    recurrences), or in mode "cuda" the GPU's block scan (runtime/cuda.py), states copied
    back to the host."""
    if current_trace() is not None or any(isinstance(x, Tracer) for x in (a, b, x0)):
        return traced_linrec.linear_recurrence(a, b, x0, kind=kind, mode=mode)
    a, b, x0, rec = traced_linrec.operands(a, b, x0, False, kind)
    if mode == "cuda":
        return on_gpu(a, b, x0, rec.kind, rec.reverse, rec.invariant).copy_to_host()
    return compiled(a, b, x0, rec)


# -- outputs that are not fed back ----------------------------------------------------------------

def _map_outputs(p, seqs, states, which, T):
    """The outputs `which` (not fed back): the step mapped over the sequences and the fed-back
    outputs' histories (initial window, then states), in the loop's argument order."""
    sa = p.sa
    sequences = [dict(input=s, taps=list(sl.taps)) for s, sl in zip(seqs, sa.seq_layouts)]
    last_only = all(sa.keeps_last(i) for i in which)
    for i, taps in enumerate(sa.out_taps):
        if not taps:
            continue
        init = sa.inits[i]
        window = init[None] if taps == (-1,) else init
        history = np.concatenate([window, states[i]])   # L + T rows, the last never read
        sequences.append(dict(input=history, taps=list(taps)))
    steps = T
    if last_only:                     # the rows of step T - 1 alone, as a map of one step
        cut = []
        for d in sequences:
            m = max(0, -min(d["taps"]))
            M = max(0, max(d["taps"]))
            cut.append(dict(input=d["input"][T - 1:T + m + M], taps=d["taps"]))
        sequences, steps = cut, 1
    step = _output_step(sa.fn, repr(tuple(which)))
    values = _run_map(step, sequences, sa, steps, p.traced, p.mode)
    return [v[-1] if sa.keeps_last(i) else v for i, v in zip(which, values)]


def _output_step(fn, text):
    def outputs(*args):
        outs = _outputs_of(_target(fn)(*args))
        return [outs[i] for i in _read_spec(text)]
    return named(outputs, f"outputs of {function_name(_target(fn))}")

