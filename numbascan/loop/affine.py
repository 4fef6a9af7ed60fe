"""Stage: the scan loop — whether a traced step is affine in its fed-back state.

`analyze(ts, sa)` reads the step's IR (`loop/step.py`'s TracedStep) and decides whether the new
value of every fed-back output is an affine function of the fed-back taps,

    y_o,t = sum over taps k of  x_k (.) C_o,k  +  b_o,t,

whose coefficients C (and offsets b) do not depend on the state: then the scan is a linear
recurrence and may run as a parallel prefix scan of (A, b) pairs (api/affine.py). Only the
equations the fed-back outputs depend on are read (a map output may do anything with the state).

How affinity propagates, equation by equation, for values that depend on the state
("dependent" values; the others are "free"):

  * add, subtract, negative, concatenate, index_add, where's branches: any mix of dependent
    and free values (a free value is an offset);
  * multiply, matmul: one side dependent, the other free (a coefficient);
  * true_divide, solve, triangular_solve: the dividend (right-hand side) dependent, the divisor
    (matrix) free;
  * where: a free condition; index, index_add, reverse_rows: free indices and counts;
  * reshape, transpose, broadcast_to, reduce_sum, cumsum, reverse_rows, convert to a float
    dtype: linear in their one array;
  * anything else applied to a dependent value breaks affinity: the analysis names the first
    such equation, in program order, and the state it depends on (`Affinity.reason`).

A state tap is a *diagonal* coefficient source when every value between it and the new state
is made by elementwise equations of the state's shape: then element i of the new state depends
on element i of that tap alone (x = a * x + b over a state of any shape). Fed-back outputs that
depend on each other (an output's value reads another's taps) form a group, solved together:
a group of one output with taps [-1] and a diagonal dependence is `diagonal`; any other group is
`matrix`, its taps stacked into one vector of `size` entries (for each output, its last L
states, newest first: the companion form of an output with taps [-1..-L]).

Which parts can be evaluated over the whole time axis at once, with elementwise operations on
the sequences (no compiled map): `Group.elementwise` (each coefficient multiplies a tap
elementwise and is computed from the inputs by elementwise operations) and `Affinity.
offsets_batched` (the offsets b, the step at a zero state). `replay_affine` evaluates them: the
step's equations replayed on whole sequences with an `Ops` object that applies a primitive
(NumPy in eager code, the tracer in traced code); what it cannot compute comes back POISON.

The analysis is pure: it reads the IR and the arguments' layout, computes nothing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from ..core.ir import IR, Lit, Var
from ..core.primitives import TABLE
from .args import ScanArgs
from .step import TracedStep

# elementwise equations that are linear in their dependent operands
LINEAR_ELEMENTWISE = {"add", "subtract", "negative", "multiply", "true_divide", "where", "convert"}
# structural equations linear in their dependent operands (with free indices or coefficients)
LINEAR_STRUCTURAL = {"reshape", "transpose", "broadcast_to", "concatenate", "reduce_sum",
                     "cumsum", "reverse_rows", "index", "index_add", "matmul", "solve",
                     "triangular_solve"}
# a matrix group of more entries is refused: the prefix scan of n x n matrices costs n^3 a
# step against the loop's n^2, and the coefficients take n forward-mode replays of the step
MAX_MATRIX = 64

# how messages name a primitive: NumPy's spelling of what the step called
_NAMES = {
    "absolute": "np.abs", "true_divide": "np.true_divide (/)", "multiply": "np.multiply (*)",
    "power": "np.power (**)", "matmul": "np.matmul (@)", "reduce_sum": "np.sum",
    "reduce_prod": "np.prod", "reduce_max": "np.max", "reduce_min": "np.min",
    "reduce_all": "np.all", "reduce_any": "np.any", "floor_divide": "np.floor_divide (//)",
    "remainder": "np.remainder (%)", "less": "a comparison (<)", "less_equal": "a comparison (<=)",
    "greater": "a comparison (>)", "greater_equal": "a comparison (>=)",
    "equal": "a comparison (==)", "not_equal": "a comparison (!=)",
    "expit": "scipy.special.expit", "logit": "scipy.special.logit", "erf": "scipy.special.erf",
    "index": "indexing", "index_add": "an indexed update", "scan": "a nested ns.scan",
    "solve": "np.linalg.solve", "triangular_solve": "scipy.linalg.solve_triangular",
    "cholesky": "np.linalg.cholesky", "slogdet": "np.linalg.slogdet", "eigh": "np.linalg.eigh",
    "reverse_rows": "a reversal of rows", "random": "a random draw",
}


def op_name(prim, params=None):
    """How a message names the operation of an equation: "np.tanh", "np.multiply (*)"."""
    if prim == "convert" and params is not None:
        return f".astype({np.dtype(params['dtype']).name})"
    return _NAMES.get(prim, f"np.{prim}")


@dataclass(frozen=True)
class StateTap:
    """A fed-back tap the step receives: output `output`'s value at t + `tap`."""
    output: int
    tap: int
    shape: tuple
    dtype: str
    name: str            # as messages name it: "x_tm1 (output 0 at t-1)"


@dataclass(frozen=True)
class Group:
    """Fed-back outputs solved together by one linear recurrence."""
    outputs: tuple       # output indices, in output order
    kind: str            # "diagonal" | "matrix"
    size: int            # entries of the stacked windows (matrix), of the state (diagonal)
    a_varies: bool       # a coefficient depends on a sequence (else: computed once)
    elementwise: bool    # the coefficients can be evaluated over the whole time axis


@dataclass(frozen=True)
class Affinity:
    taps: tuple                      # StateTap per state input of the step, in input order
    groups: tuple = ()               # () when the step is not affine (or cannot run in time)
    reason: str = None               # why not; None: it can run as a linear recurrence
    offsets_batched: bool = False    # b over the whole time axis by elementwise operations
    fed: tuple = ()                  # indices of the fed-back outputs

    @property
    def affine(self):
        return self.reason is None


@dataclass(frozen=True)
class _Info:
    """What the analysis knows of one value."""
    deps: frozenset = frozenset()    # state taps (indices into Affinity.taps) it depends on
    seq: bool = False                # depends on a sequence
    batch: bool = True               # free values: computable over the time axis elementwise
    coef_seq: bool = False           # a coefficient on its way from the state depends on a sequence
    diag: object = None              # the one tap it depends on elementwise, shape preserved
    lin_ew: bool = True              # its linear part is elementwise with batchable coefficients
    off_zero: bool = False           # its offset (the value at a zero state) is structurally 0
    off_var: bool = False            # its offset depends on a sequence
    off_batch: bool = True           # its offset can be computed over the time axis


_FREE = _Info()          # literals, non-sequences, captures: free and loop-invariant


def state_names(sa: ScanArgs, n_seq_args):
    """The step's parameter name of each fed-back tap, with its position: "x (output 0 at
    t-1)"; without a name (a *args step, a builtin) the position alone."""
    target = getattr(sa.fn, "fn", sa.fn)
    try:
        params = [p.name for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names, k = [], n_seq_args
    for i, taps in enumerate(sa.out_taps):
        for tap in taps:
            where = f"output {i} at t{tap:+d}"
            names.append(f"{params[k]} ({where})" if k < len(params) else where)
            k += 1
    return names


def _needed(ir: IR, outputs):
    """Ids of the equations' outputs that `outputs` depend on (a backward slice)."""
    live = {v.id for v in outputs if isinstance(v, Var)}
    for e in reversed(ir.eqns):
        if any(v.id in live for v in e.outputs):
            live.update(v.id for v in e.inputs if isinstance(v, Var))
    return live


def needed_eqns(ir: IR, outputs):
    """Ids of the equations (`id(eqn)`) that `outputs` depend on."""
    live = _needed(ir, outputs)
    return {id(e) for e in ir.eqns if any(v.id in live for v in e.outputs)}


def _refuse(taps, fed, reason):
    return Affinity(tuple(taps), reason=reason, fed=tuple(fed))


def analyze(ts: TracedStep, sa: ScanArgs, where="ns.scan") -> Affinity:
    """The affine structure of the step of `sa` (traced into `ts`); see the module docstring.
    `where` names the call in messages ("ns.scan(step)")."""
    n_seq_args = sum(len(sl.taps) for sl in sa.seq_layouts)
    names = state_names(sa, n_seq_args)
    avals = iter(sa.state_avals)
    taps = []
    for i, out_taps in enumerate(sa.out_taps):
        if out_taps:
            dtype, shape = next(avals)
            taps += [StateTap(i, tap, tuple(shape), np.dtype(dtype).str, "")
                     for tap in out_taps]
    taps = [StateTap(t.output, t.tap, t.shape, t.dtype, n) for t, n in zip(taps, names)]
    fed = [i for i, t in enumerate(sa.out_taps) if t]
    needs = f"{where}: parallel=True needs"
    if not fed:
        return _refuse(taps, fed, f"{needs} a fed-back output (outputs_info with an initial "
                                  f"state); this scan has none, its steps are independent")
    if ts.layout.until:
        return _refuse(taps, fed, f"{needs} a scan that runs all its steps; this step "
                                  f"returns ns.until, which stops it at a run-time step")
    if ts.shared_states:
        return _refuse(taps, fed, f"{needs} a step without shared-variable updates; this "
                                  f"step updates {ts.shared_states[0]!r}")
    if ts.streams:
        return _refuse(taps, fed, f"{needs} a step without random draws; this step draws "
                                  f"from {ts.streams[0]!r} at every step")
    for t in taps:
        if np.dtype(t.dtype).kind != "f":
            return _refuse(taps, fed, f"{needs} floating-point states; the fed-back state "
                                      f"{t.name} has dtype {np.dtype(t.dtype).name}")

    ir = ts.ir
    info: dict = {}
    for k, v in enumerate(ir.inputs[:n_seq_args]):
        info[v.id] = _Info(seq=True, off_var=True)
    for k, v in enumerate(ir.inputs[n_seq_args:n_seq_args + len(taps)]):
        info[v.id] = _Info(deps=frozenset([k]), diag=k, off_zero=True)
    outputs = [ir.outputs[i] for i in fed]
    live = _needed(ir, outputs)

    def get(x):
        if isinstance(x, Lit):
            return _FREE
        return info.get(x.id, _FREE)

    for e in ir.eqns:
        if not any(v.id in live for v in e.outputs):
            continue
        ins = [get(x) for x in e.inputs]
        deps = frozenset().union(*(i.deps for i in ins))
        if not deps:
            seq = any(i.seq for i in ins)
            ew = TABLE[e.prim].kind == "elementwise" if e.prim in TABLE else False
            batch = not seq or (ew and all(i.batch for i in ins))
            for v in e.outputs:
                info[v.id] = _Info(seq=seq, batch=batch, off_var=seq, off_batch=batch)
            continue
        found = _propagate(e, ins, deps, taps)
        if isinstance(found, str):
            dependent = sorted(deps)
            states = " and ".join(taps[k].name for k in dependent)
            word = "states" if len(dependent) > 1 else "state"
            return _refuse(taps, fed, f"{where}: parallel=True needs a step affine in its "
                                      f"fed-back {word} {states}, but {found}")
        for v in e.outputs:
            info[v.id] = found

    out_infos = [get(v) for v in outputs]
    groups = _groups(fed, out_infos, taps, outputs)
    for g in groups:
        if isinstance(g, str):
            return _refuse(taps, fed, f"{needs} {g}")
    return Affinity(tuple(taps), tuple(groups), None,
                    offsets_batched=all(i.off_batch for i in out_infos), fed=tuple(fed))


def _propagate(e, ins, deps, taps):
    """The _Info of the output of equation `e`, some of whose inputs depend on the state; or
    the text of why it breaks affinity."""
    prim, name = e.prim, op_name(e.prim, e.p)
    dependent = [k for k, i in enumerate(ins) if i.deps]
    free = [k for k, i in enumerate(ins) if not i.deps]
    applied = f"{name} is applied to a value that depends on it"
    if prim not in LINEAR_ELEMENTWISE and prim not in LINEAR_STRUCTURAL:
        return applied
    # which inputs must be free, and which of the free ones are coefficients (the others, in
    # add/subtract/where's branches/concatenate/index_add, are offsets)
    coefs = []
    if prim == "multiply" or prim == "matmul":
        if len(dependent) > 1:
            return f"{name} is applied to two values that depend on it"
        coefs = free
    elif prim == "true_divide":
        if ins[1].deps:
            return f"{name} divides by a value that depends on it"
        coefs = [1]
    elif prim in ("solve", "triangular_solve"):
        if ins[0].deps:
            return f"{name} is applied to a matrix that depends on it"
        coefs = [0]
    elif prim == "where":
        if ins[0].deps:
            return "np.where chooses by a condition that depends on it"
        coefs = [0]
    elif prim == "convert":
        if np.dtype(e.p["dtype"]).kind != "f":
            return f"{name} is applied to a value that depends on it (a conversion to a " \
                   f"non-float dtype)"
    elif prim in ("index", "index_add", "reverse_rows"):
        first_index = {"index": 1, "index_add": 2, "reverse_rows": 1}[prim]
        if any(ins[k].deps for k in range(first_index, len(ins))):
            return f"{name} by an index that depends on it"
        coefs = list(range(first_index, len(ins)))
    offsets = [k for k in free if k not in coefs]

    out = e.outputs[0]
    elementwise = prim in LINEAR_ELEMENTWISE
    coef_seq = any(ins[k].coef_seq for k in dependent) or any(ins[k].seq for k in coefs)
    lin_ew = (elementwise and all(ins[k].lin_ew for k in dependent) and
              all(ins[k].batch for k in coefs))
    diag = None
    kinds = {ins[k].diag for k in dependent}
    if elementwise and len(kinds) == 1 and None not in kinds:
        k = kinds.pop()
        if all(tuple(e.inputs[j].shape) == tuple(taps[k].shape) for j in dependent) and \
                tuple(out.shape) == tuple(taps[k].shape):
            diag = k
    off_zero = all(ins[k].off_zero for k in dependent) and not offsets
    if off_zero:
        off_var, off_batch = False, True
    else:
        off_var = (any(ins[k].off_var for k in dependent) or
                   any(ins[k].seq for k in offsets + coefs))
        off_batch = (all(ins[k].off_batch for k in dependent) and
                     all(ins[k].batch for k in offsets + coefs) and
                     (elementwise or not off_var))
    return _Info(deps=deps, seq=any(i.seq for i in ins), batch=False, coef_seq=coef_seq,
                 diag=diag, lin_ew=lin_ew, off_zero=off_zero, off_var=off_var,
                 off_batch=off_batch)


def _groups(fed, out_infos, taps, outputs):
    """The groups of fed-back outputs (union-find over the taps each one's value reads)."""
    parent = {i: i for i in fed}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for i, inf in zip(fed, out_infos):
        for k in inf.deps:
            parent[root(taps[k].output)] = root(i)
    members: dict = {}
    for i in fed:
        members.setdefault(root(i), []).append(i)
    by_output = dict(zip(fed, out_infos))
    out_taps = {}
    for t in taps:
        out_taps.setdefault(t.output, []).append(t)
    groups = []
    for outs in sorted(members.values()):
        infos = [by_output[i] for i in outs]
        first = out_taps[outs[0]][0]
        own = [k for k, t in enumerate(taps) if t.output == outs[0]]
        diagonal = (len(outs) == 1 and len(own) == 1 and first.tap == -1 and
                    (not infos[0].deps or infos[0].diag == own[0]))
        a_varies = any(i.coef_seq for i in infos)
        elementwise = all(i.lin_ew for i in infos)
        if diagonal:
            size = int(np.prod(first.shape, dtype=np.int64))
            groups.append(Group(tuple(outs), "diagonal", size, a_varies, elementwise))
            continue
        dtypes = {out_taps[i][0].dtype for i in outs}
        if len(dtypes) > 1:
            names = " and ".join(f"output {i} ({np.dtype(out_taps[i][0].dtype).name})"
                                 for i in outs)
            return [f"fed-back outputs that depend on each other to have one dtype; {names} "
                    f"differ"]
        size = sum(window(out_taps[i]) * int(np.prod(out_taps[i][0].shape, dtype=np.int64))
                   for i in outs)
        if size > MAX_MATRIX:
            return [f"a linear recurrence of at most {MAX_MATRIX} coupled entries; outputs "
                    f"{list(outs)} stack {size} (their taps' windows times their sizes), and "
                    f"the prefix scan of {size} x {size} matrices costs {size} times the "
                    f"sequential loop's work a step"]
        groups.append(Group(tuple(outs), "matrix", size, a_varies, elementwise))
    return groups


def window(taps_of_output):
    """L = max(-tap): the states a fed-back output's window holds."""
    return max(-t.tap for t in taps_of_output)


# ------------------------------------------------------------------------------------------------
# evaluation over the whole time axis


@dataclass(frozen=True)
class Val:
    """A value of the replay: `value` (an array, a tracer or a Python scalar) with a leading
    time axis when `varies`."""
    value: object
    varies: bool = False


# a value the elementwise replay over the time axis cannot compute (made by a structural
# equation on a time-major value): whatever uses it is POISON too, and the caller computes
# what needs it another way (a compiled map over the steps)
POISON = Val(None, True)
ONE = "one"          # the coefficient of a tap in its own value: 1


@dataclass
class Affine:
    """A replayed value: its offset (None: 0) and, when it depends on the state (`dep`), its
    coefficient per state tap (ONE: 1)."""
    off: object = None
    lin: dict = field(default_factory=dict)
    dep: bool = False


class Ops:
    """How the replay computes: `apply(prim, values, params, varies)` binds or runs one
    primitive on step-shaped values, or on time-major ones (`varies`: a whole-array operation
    over the time axis; broadcasting as NumPy does); `constant(array)` makes an array a
    constant of the computation."""

    def apply(self, prim, values, params, varies=False):
        raise NotImplementedError

    def constant(self, array):
        return array


def _shape_of(x):
    return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


def replay_affine(ir: IR, inputs, taps_in, outputs, T, ops: Ops):
    """The offset and coefficients (an `Affine`) of each of `outputs` (IR output positions),
    replaying the equations they depend on over the whole time axis. `inputs`: a Val per IR
    input, except the state taps, at positions `taps_in` (a dict: input position -> tap
    index). A coefficient comes out in the dtype of its value, of a shape that broadcasts to
    the value's (time-major when it varies); a part the replay cannot compute is POISON."""
    env = {}
    for pos, v in enumerate(ir.inputs):
        if pos in taps_in:
            env[v.id] = Affine(None, {taps_in[pos]: ONE}, dep=True)
        else:
            env[v.id] = Affine(inputs[pos])
    live = _needed(ir, [ir.outputs[i] for i in outputs])

    def read(x):
        if isinstance(x, Lit):
            return Affine(Val(x.value))
        return env[x.id]

    for e in ir.eqns:
        if not any(v.id in live for v in e.outputs):
            continue
        ins = [read(x) for x in e.inputs]
        out = e.outputs[0]
        if not any(a.dep for a in ins):
            env[out.id] = Affine(_compute(e.prim, [a.off for a in ins], e.p, out, T, ops))
        else:
            env[out.id] = _affine_eqn(e, ins, out, T, ops)
    return [read(ir.outputs[i]) for i in outputs]


def _compute(prim, vals, params, out, T, ops):
    """A value: the primitive on step-shaped values, or on time-major ones when one varies
    (elementwise primitives only: anything else is POISON)."""
    if any(v is POISON for v in vals):
        return POISON
    if not any(v.varies for v in vals):
        return Val(ops.apply(prim, [v.value for v in vals], params))
    if TABLE[prim].kind != "elementwise":
        return POISON
    nd = len(out.shape)
    aligned = []
    for v in vals:
        x = v.value
        if v.varies:
            shape = _shape_of(x)
            if len(shape) - 1 < nd:       # (T, *s) -> (T, 1, ..., *s): broadcasts as the step
                x = ops.apply("reshape", [x], {"shape": (T,) + (1,) * (nd + 1 - len(shape)) +
                                                 shape[1:]}, True)
        aligned.append(x)
    return Val(ops.apply(prim, aligned, params, True), True)


def _cast(v: Val, dtype, ops):
    """`v` in `dtype` (a Python scalar becomes a 0-d array of it)."""
    if v is POISON:
        return v
    if not hasattr(v.value, "dtype"):
        return Val(ops.constant(np.asarray(v.value, dtype)), v.varies)
    if np.dtype(v.value.dtype) != np.dtype(dtype):
        return Val(ops.apply("convert", [v.value], {"dtype": np.dtype(dtype)}, v.varies),
                   v.varies)
    return v


def _one(dtype, ops):
    return Val(ops.constant(np.ones((), dtype)))


def _zero(dtype, ops):
    return Val(ops.constant(np.zeros((), dtype)))


def _affine_eqn(e, ins, out, T, ops):
    """The replay of equation `e`, some of whose inputs depend on the state (the analysis
    admitted it: its coefficients are free)."""
    prim, dtype = e.prim, out.dtype

    def combine(p, vals, params=None):
        return _cast(_compute(p, vals, params or {}, out, T, ops), dtype, ops)

    def coef(c):
        return _one(dtype, ops) if c is ONE else c

    def kept(c):
        return c if c is ONE else _cast(c, dtype, ops)

    if prim in ("add", "subtract"):
        a, b = ins
        if a.off is None and b.off is None:
            off = None
        elif b.off is None:
            off = _cast(a.off, dtype, ops)
        elif a.off is None:
            off = combine("negative", [b.off]) if prim == "subtract" else _cast(b.off, dtype, ops)
        else:
            off = combine(prim, [a.off, b.off])
        lin = {}
        for k in set(a.lin) | set(b.lin):
            ca, cb = a.lin.get(k), b.lin.get(k)
            if cb is None:
                lin[k] = kept(ca)
            elif ca is None:
                lin[k] = kept(cb) if prim == "add" else combine("negative", [coef(cb)])
            else:
                lin[k] = combine(prim, [coef(ca), coef(cb)])
        return Affine(off, lin, dep=True)
    if prim in ("negative", "convert"):
        (a,) = ins
        off = None if a.off is None else combine(prim, [a.off], e.p)
        lin = {k: (c if c is ONE and prim == "convert" else combine(prim, [coef(c)], e.p))
               for k, c in a.lin.items()}
        return Affine(off, lin, dep=True)
    if prim in ("multiply", "true_divide"):
        first = bool(ins[0].dep)
        a, c = (ins[0], ins[1].off) if first else (ins[1], ins[0].off)

        def order(x):
            return [x, c] if first else [c, x]
        off = None if a.off is None else combine(prim, order(a.off))
        lin = {}
        for k, ck in a.lin.items():
            if ck is not ONE:
                lin[k] = combine(prim, order(ck))
            elif prim == "multiply":
                lin[k] = _cast(c, dtype, ops)
            else:
                lin[k] = combine("true_divide", [_one(dtype, ops), c])
        return Affine(off, lin, dep=True)
    if prim == "where":
        cond, a, b = ins

        def pick(x, y):
            return combine("where", [cond.off, x if x is not None else _zero(dtype, ops),
                                     y if y is not None else _zero(dtype, ops)])
        off = None if a.off is None and b.off is None else pick(a.off, b.off)
        lin = {}
        for k in set(a.lin) | set(b.lin):
            ca, cb = a.lin.get(k), b.lin.get(k)
            lin[k] = pick(None if ca is None else coef(ca), None if cb is None else coef(cb))
        return Affine(off, lin, dep=True)
    # a structural equation on a dependent value: its coefficients are not elementwise
    # (POISON), and its offset is the equation on the operands' offsets (zeros for a
    # dependent operand whose offset is 0), or 0 when every array operand's offset is
    lin = {k: POISON for a in ins for k in a.lin}
    data = {"concatenate": range(len(ins)), "index_add": (0, 1)}.get(
        prim, [k for k, a in enumerate(ins) if a.dep])
    if all(ins[k].dep and ins[k].off is None for k in data):
        return Affine(None, lin, dep=True)
    vals = [a.off if a.off is not None else
            Val(ops.constant(np.zeros(x.shape, x.dtype))) for a, x in zip(ins, e.inputs)]
    if any(v is POISON or v.varies for v in vals):
        return Affine(POISON, lin, dep=True)
    return Affine(combine(prim, vals, e.p), lin, dep=True)
