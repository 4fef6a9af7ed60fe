"""Stage: tracing — a whole function of arrays traced into a `Program`.

`ns.jit` and the derivative transformations trace the user's function on tracers of its array
arguments (Python scalars are static) into a `Program`: its IR, where its extra inputs come
from (captures, shared variables, random streams) and the structure of its result.
`inline_inputs` replays a program inside another trace.
"""

from __future__ import annotations

import numpy as np

from ..core.context import current_trace
from ..core.ir import IR
from ..core.passes import keep_only_last_steps, simplify
from ..shared import Updates
from .captures import with_traced_captures
from .names import describe
from .tracer import RunTracer, Trace, Tracer, TracingError

STATIC_TYPES = (bool, int, float, str, type(None))


def _flatten(tree):
    if isinstance(tree, (list, tuple)):
        leaves, specs = [], []
        for x in tree:
            l, s = _flatten(x)
            leaves += l
            specs.append(s)
        return leaves, (type(tree), specs)
    if isinstance(tree, dict):
        leaves, specs = [], []
        for k, x in tree.items():
            l, s = _flatten(x)
            leaves += l
            specs.append((k, s))
        return leaves, (Updates if isinstance(tree, Updates) else dict, specs)
    return [tree], None


def _unflatten(spec, leaves):
    it = iter(leaves)

    def build(s):
        if s is None:
            return next(it)
        kind, subs = s
        if kind is dict or kind is Updates:
            return kind((k, build(sub)) for k, sub in subs)
        if hasattr(kind, "_fields"):              # a named tuple (np.linalg.slogdet's)
            return kind(*[build(sub) for sub in subs])
        return kind(build(sub) for sub in subs)
    return build(spec)


class Program:
    """A traced function: its IR, where its extra inputs come from, and its output structure.

    The IR's outputs are the leaves of the function's result (`n_leaves`), then the number of
    rows of each leaf that is the run of an until-scan (`runs`: its leaf index), then the
    counters consumed by each random stream whose use is a run-time value (`rng_used[i]` is
    None for those, else the static count)."""

    def __init__(self, ir, captures, shared, streams, rng_used, out_spec, created=None,
                 n_leaves=None, runs=()):
        self.ir, self.captures, self.shared = ir, captures, shared
        self.streams, self.rng_used, self.out_spec = streams, rng_used, out_spec
        self.created = created or {}
        self.n_leaves = len(ir.outputs) if n_leaves is None else n_leaves
        self.runs = tuple(runs)

    def _moved_outputs(self):
        k = self.n_leaves + len(self.runs)
        found = {}
        for i, used in enumerate(self.rng_used):
            if used is None:
                found[i] = k
                k += 1
        return found

    def host_leaves(self, outs):
        """The result's leaves from the outputs of one run, the rows of until-scans cut to
        the rows that ran; the random streams advanced."""
        leaves = list(outs[:self.n_leaves])
        for k, i in enumerate(self.runs):
            leaves[i] = leaves[i][:int(outs[self.n_leaves + k])]
        moved = self._moved_outputs()
        for i, (s, used) in enumerate(zip(self.streams, self.rng_used)):
            s.counter += used if used is not None else int(outs[moved[i]])
        return leaves

    def traced_leaves(self, outs):
        """The same for outputs replayed inside the current trace (`inline_inputs` advanced
        the static streams): until-scan rows as RunTracers, run-time stream uses recorded."""
        tr = current_trace()
        leaves = list(outs[:self.n_leaves])
        for k, i in enumerate(self.runs):
            leaves[i] = RunTracer(tr, tr.lift(leaves[i]), outs[self.n_leaves + k])
        for i, k in self._moved_outputs().items():
            tr.rng_advance(self.streams[i], outs[k])
        return leaves


def trace_program(fn, args) -> Program:
    with Trace(getattr(fn, "__name__", "jit"), fn) as tr:
        targs = [a if isinstance(a, STATIC_TYPES) else
                 tr.new_arg(a.dtype if isinstance(a, (Tracer, np.ndarray)) else
                            np.asarray(a).dtype, np.shape(a)) for a in args]
        traced_fn, _ = with_traced_captures(fn, tr)
        try:
            out = traced_fn(*targs)
        except TracingError as err:
            err.add_context(describe(fn))
            raise
        leaves, spec = _flatten(out)
        runs = [i for i, x in enumerate(leaves) if isinstance(x, RunTracer)]
        streams = list(tr.rng)
        moved = [tr.rng_moved(s) for s in streams]
        out_vars = tuple(tr.lift(x.buffer if isinstance(x, RunTracer) else x) for x in leaves)
        out_vars += tuple(tr.lift(leaves[i].n) for i in runs)
        out_vars += tuple(tr.lift(m) for m in moved if m is not None)
    inputs = (tuple(tr.args) + tuple(tr.shared.values()) + tuple(c.var for c in tr.captures) +
              tuple(v for s in streams for v in tr.rng[s]))
    ir = keep_only_last_steps(simplify(IR(inputs, tuple(tr.eqns), out_vars)))
    return Program(ir, [c.source for c in tr.captures], list(tr.shared), streams,
                   [tr.rng_used[s] if m is None else None for s, m in zip(streams, moved)],
                   spec, tr.created, len(leaves), runs)


def inline_inputs(prog: Program, args):
    """Values for `prog`'s inputs when it is replayed inside the current trace."""
    tr = current_trace()
    # captures enter as tracers of this trace: what a derivative rule makes of one (a view,
    # a reversed sequence) is then traced, and the trace cache finds the array it came from
    captures = [Tracer(tr, tr.lift(c)) if isinstance(c, (np.ndarray, Tracer)) else c
                for c in prog.captures]
    values = list(args) + list(prog.shared) + captures
    for s, used in zip(prog.streams, prog.rng_used):
        key, base, offset = tr.rng_next(s)
        if used is not None:          # a run-time use: `Program.traced_leaves` advances it
            tr.rng_advance(s, used)
        values += [key, base + np.uint64(offset) if offset else base]
    return values
