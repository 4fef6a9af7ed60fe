"""Property-based fuzzing of ns.scan (hypothesis): random step functions over random layouts.

Three properties, each over many generated cases:

1. ``test_cpu_equals_python``: a random scan (layout and step) gives the same outputs in
   mode="cpu" (numba) and mode="python" (the reference), to conftest's `assert_same` tolerances,
   with equal dtypes and shapes, without the untraced fallback, and without writing to any
   input. The same scan is then called again with new values of the same shapes (a captured
   closure array changed in place, fresh sequences and states, one more step) and must agree
   again; whether that call compiled anything is recorded as an event.
   Rounding is not a bug: each case is also run in python mode in higher precision (float64
   for float32 cases, long double for float64 ones). A case whose reference moves by more
   than a quarter of the tolerance there (a product of many terms, a recurrence that amplifies
   rounding) is compared at a tolerance widened by that factor (times 8), and one where a
   decision (an until, a where) goes the other way only has its dtypes compared; both are
   counted as events, and are rare (well under 1% of the cases).
2. ``test_derivatives_match_finite_differences``: for float64 layouts of smooth operations,
   ``ns.grad`` of a scalar loss (a weighted sum of squares of the outputs, with respect to every
   sequence, initial state and non-sequence) and ``ns.jvp`` of the outputs agree with central
   finite differences along a random direction, in python mode and in cpu mode (relative
   tolerance 1e-5, plus the differences' own truncation error, estimated from a doubled step).
3. ``test_misuse_names_the_argument`` (one test per kind of misuse): bad sequences, sequence
   or output taps, n_steps, outputs_info (non-numeric, unknown keys, missing leading axis, a
   step result of another shape or dtype, a wrong number of entries), fn, mode,
   truncate_gradient, go_backwards, checkpoint, non_sequences or until raise ValueError or
   TypeError whose message names the offending argument (with its index: ``sequences[1]``,
   ``outputs_info[2]``), in both modes, and leave every array passed in unchanged.

Generated steps
---------------
A step is a Python closure that interprets an expression tree (nested tuples, see `evaluate`);
nothing is passed to `exec`. Trees combine ``+ - *`` (also with Python-float constants),
``tanh sin cos exp(clip) exp(tanh) expit log1p(x*x) arctan square abs``, ``@`` with a
non-sequence matrix ``W``, ``sum mean prod max min`` with ``axis``/``keepdims``, ``cumsum``,
basic slicing and integer indexing, ``.T``, ``np.outer``, ``np.where``, ``np.clip``,
``np.maximum``/``np.minimum``, ``np.broadcast_to``, a nested ``ns.scan`` (over a state or a
sequence, optionally stopping with ``ns.until``) and the outer step's own ``ns.until``. Leaves
are the step's arguments (sequence taps in [-3, 3], output taps in [-3, -1]), the
non-sequences ``b`` (a vector) and ``W``, and an array ``C`` captured from the closure.
Fed-back outputs are squashed (tanh, sin or clip) so that recurrences stay bounded. Layouts
mix map outputs (``None`` entries and ``outputs_info=None``), initial-state forms, several
sequences, ``go_backwards``, explicit or implied ``n_steps``, ``return_list``, float32 and
float64; state sizes are 1-4, runs are 1-6 steps, inputs are fresh random values (never
zeros). Every failing case's reproducing script (``Case.source()``, plain NumPy data included)
is printed by hypothesis as a note.

Not generated on purpose (known open bugs handled elsewhere): float16, zero-size dimensions,
np.float64 scalars mixed with float32 arrays, positional JAX-style calls (each has tests of its
own). The bugs this fuzzer found are pinned by tests at the end of this file, all fixed (a
scalar float sequence tap, a non-bool ``go_backwards``, ``ns.jvp`` losing the initial
tangent of a state whose new value depends on no differentiated input).

Running it
----------
::

    python -m pytest tests/test_fuzz.py --hypothesis-show-statistics

runs the "ci" profile: a small, derandomized budget (no example database): 30 cases of the first
property, 8 of the second, 8 per kind of misuse. It takes about 35 s on two cores with an
empty numba cache (numba compiles every new step; later runs load them from numbascan's disk
cache, NUMBASCAN_CACHE_DIR, and take a few seconds). ``--hypothesis-show-statistics``
prints, per property, the number of passing cases, their timings, and the events recorded with
`hypothesis.event` (dtype, layout features, operations used, misuse kinds, how many steps an
until-scan ran); in the long profile `hypothesis.target` steers towards larger trees and
longer runs. A summary
of the cases run per property and of the operations and layout features covered is also
printed at the end of the module's tests.

The longer profile, with many more (random, not derandomized) cases per property::

    NUMBASCAN_FUZZ_PROFILE=long python -m pytest tests/test_fuzz.py --hypothesis-show-statistics

(``--hypothesis-profile`` cannot select these profiles: hypothesis loads that option's profile
before test modules register theirs.) ``NUMBASCAN_FUZZ_EXAMPLES=N`` overrides the number of
cases of the chosen profile (the derivative property runs a quarter of them, being slower).
"""
from __future__ import annotations

import collections
import copy
import os
import re
import warnings

import numpy as np
import pytest
import scipy.special as sps
from hypothesis import HealthCheck, event, given, note, settings, target
from hypothesis import strategies as st

import numbascan as ns
from conftest import TOLERANCES, _run_checked, assert_same_outputs

# ------------------------------------------------------------------------------------------------
# profiles

settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
settings.register_profile(
    "long", max_examples=2000, deadline=None, derandomize=False, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)

PROFILE = os.environ.get("NUMBASCAN_FUZZ_PROFILE", "ci")
_BASE = settings.get_profile(PROFILE)
_EXAMPLES = int(os.environ.get("NUMBASCAN_FUZZ_EXAMPLES", _BASE.max_examples))


def budget(fraction):
    """The chosen profile with `fraction` of its cases (at least 2)."""
    return settings(_BASE, max_examples=max(2, int(round(_EXAMPLES * fraction))))


# ------------------------------------------------------------------------------------------------
# statistics: hypothesis events, and a summary printed at the end of the module

STATS = collections.defaultdict(collections.Counter)


def steer(value, label):
    """`hypothesis.target` in the long profile only: with the ci profile's few derandomized
    cases, targeting would spend most of them on variations of one large case."""
    if PROFILE != "ci":
        target(value, label=label)


def record(prop, *labels):
    """Count a label for the summary and pass it to hypothesis' statistics."""
    for label in labels:
        STATS[prop][label] += 1
        event(label)


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not STATS:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            _write_summary(reporter)
    else:
        _write_summary(reporter)


def _write_summary(reporter):
    reporter.write_line("")
    reporter.write_line(f"numbascan fuzz summary (profile {PROFILE!r})")
    for prop, counts in STATS.items():
        cases = counts.get("case", 0)
        covered = sorted((k, v) for k, v in counts.items() if k != "case")
        reporter.write_line(f"  {prop}: {cases} cases run; {len(covered)} features covered:")
        line = "    "
        for k, v in covered:
            item = f"{k} x{v}; "
            if len(line) + len(item) > 110:
                reporter.write_line(line.rstrip())
                line = "    "
            line += item
        reporter.write_line(line.rstrip())


# ------------------------------------------------------------------------------------------------
# the expression language
#
# A tree is nested tuples, the first item naming the operation:
#   ("x", name)                         a leaf: a step argument, a non-sequence or the capture C
#   ("u", f, a)                         f(a), f a key of UNARY
#   ("b", op, a, b)                     a op b, op in + - * max min
#   ("k", op, c, left, a)               c op a (left) or a op c, c a Python float
#   ("mm", side, a)                     a @ W (side 0) or W @ a (side 1)
#   ("r", f, axis, keepdims, a)         np.f(a, axis=axis, keepdims=keepdims)
#   ("cs", axis, a)                     np.cumsum(a, axis=axis)
#   ("ix", index, a)                    a[index], index a tuple of ints and (start, stop, step)
#   ("roll", a)                         np.concatenate([a[1:], a[:1]])
#   ("T", a)                            a.T
#   ("w", a, b, c, d)                   np.where(a > b, c, d)
#   ("clip", lo, hi, a)                 np.clip(a, lo, hi)
#   ("outer", a, b)                     np.outer(a, b)
#   ("sum0", a)                         a.sum(axis=0)
#   ("bc", shape, a)                    np.broadcast_to(a, shape)
#   ("scan", kind, gb, n, how, thr, body, a, b)
#        kind "state": ns.scan(step, outputs_info=a, non_sequences=[b], n_steps=n) with
#                      step(h, c) = body over {"h", "c"}
#        kind "seq":   ns.scan(step, sequences=a, outputs_info=b, go_backwards=gb) with
#                      step(e, h) = body over {"e", "h"}
#        thr not None: the step also returns ns.until(np.sum(h) > thr)
#        how "last": rows[-1]; "sum": rows.sum(axis=0)
#
# The trees hold only tuples, strings, ints, floats and None, and `evaluate` is not recursive
# (the nested scan's body runs through `evaluate_flat`, which has no nested scans): so a step
# stays cacheable by numbascan's trace cache (which looks through closures a few levels deep),
# and the fuzzer exercises that cache too.

UNARY = {
    "tanh": np.tanh,
    "sin": np.sin,
    "cos": np.cos,
    "arctan": np.arctan,
    "neg": np.negative,
    "square": np.square,
    "abs": np.abs,
    "expit": sps.expit,
    "exp_clip": lambda a: np.exp(np.clip(a, -3.0, 3.0)),
    "exp_tanh": lambda a: np.exp(np.tanh(a)),
    "log1p_sq": lambda a: np.log1p(a * a),
}
UNARY_SRC = {
    "tanh": "np.tanh({})", "sin": "np.sin({})", "cos": "np.cos({})", "arctan": "np.arctan({})",
    "neg": "(-{})", "square": "np.square({})", "abs": "np.abs({})",
    "expit": "sps.expit({})", "exp_clip": "np.exp(np.clip({}, -3.0, 3.0))",
    "exp_tanh": "np.exp(np.tanh({}))", "log1p_sq": "np.log1p(({0}) * ({0}))",
}
SMOOTH_UNARY = ["tanh", "sin", "cos", "arctan", "neg", "square", "expit", "exp_tanh", "log1p_sq"]
ALL_UNARY = SMOOTH_UNARY + ["abs", "exp_clip"]
BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "max": np.maximum, "min": np.minimum}
REDUCE = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min}


def _kids(node):
    op = node[0]
    if op == "x":
        return ()
    if op == "b" or op == "outer":
        return (node[2], node[3]) if op == "b" else (node[1], node[2])
    if op == "w":
        return node[1:5]
    if op == "scan":
        return (node[7], node[8])
    return (node[-1],)


def _apply(node, args, env):
    """One operation of a tree on the values of its children (no nested scans)."""
    op = node[0]
    if op == "u":
        return UNARY[node[1]](args[0])
    if op == "b":
        return BINARY[node[1]](args[0], args[1])
    if op == "k":
        c = node[2]
        return BINARY[node[1]](c, args[0]) if node[3] else BINARY[node[1]](args[0], c)
    if op == "mm":
        return args[0] @ env["W"] if node[1] == 0 else env["W"] @ args[0]
    if op == "r":
        return REDUCE[node[1]](args[0], axis=node[2], keepdims=node[3])
    if op == "cs":
        return np.cumsum(args[0], axis=node[1])
    if op == "ix":
        return args[0][tuple(slice(*i) if isinstance(i, tuple) else i for i in node[1])]
    if op == "roll":
        return np.concatenate([args[0][1:], args[0][:1]])
    if op == "T":
        return args[0].T
    if op == "w":
        return np.where(args[0] > args[1], args[2], args[3])
    if op == "clip":
        return np.clip(args[0], node[1], node[2])
    if op == "outer":
        return np.outer(args[0], args[1])
    if op == "sum0":
        return args[0].sum(axis=0)
    if op == "bc":
        return np.broadcast_to(args[0], node[1])
    raise AssertionError(f"unknown operation {op!r}")


def _evaluator(inner):
    """An iterative evaluator of trees; `inner` evaluates the bodies of nested scans."""

    def evaluate(tree, env):
        stack, values = [(tree, False)], []
        while stack:
            node, ready = stack.pop()
            if node[0] == "x":
                values.append(env[node[1]])
                continue
            kids = _kids(node)
            if not ready:
                stack.append((node, True))
                stack.extend((k, False) for k in reversed(kids))
                continue
            args = values[len(values) - len(kids):]
            del values[len(values) - len(kids):]
            if node[0] != "scan":
                values.append(_apply(node, args, env))
                continue
            kind, gb, n, how, thr, body = node[1:7]
            names = ("h", "c") if kind == "state" else ("e", "h")

            def inner_step(*step_args, names=names, body=body, thr=thr):
                new = inner(body, dict(zip(names, step_args)))
                if thr is None:
                    return new
                h = step_args[names.index("h")]
                return new, ns.until(np.sum(h) > thr)

            if kind == "state":
                rows, _ = ns.scan(inner_step, outputs_info=args[0], non_sequences=[args[1]],
                                  n_steps=n)
            else:
                rows, _ = ns.scan(inner_step, sequences=args[0], outputs_info=args[1],
                                  go_backwards=gb)
            values.append(rows[-1] if how == "last" else rows.sum(axis=0))
        (value,) = values
        return value

    return evaluate


evaluate_flat = _evaluator(None)
evaluate = _evaluator(evaluate_flat)


def source(node):
    """The tree as a NumPy expression (for the reproducing scripts)."""
    op = node[0]
    if op == "x":
        return node[1]
    if op == "scan":
        kind, gb, n, how, thr, body, a, b = node[1:]
        names = "h, c" if kind == "state" else "e, h"
        ret = source(body) if thr is None else f"({source(body)}, ns.until(np.sum(h) > {thr!r}))"
        lam = f"lambda {names}: {ret}"
        if kind == "state":
            call = (f"ns.scan({lam}, outputs_info={source(a)}, non_sequences=[{source(b)}], "
                    f"n_steps={n})[0]")
        else:
            call = (f"ns.scan({lam}, sequences={source(a)}, outputs_info={source(b)}"
                    + (", go_backwards=True" if gb else "") + ")[0]")
        return call + ("[-1]" if how == "last" else ".sum(axis=0)")
    s = [source(k) for k in _kids(node)]
    if op == "u":
        return UNARY_SRC[node[1]].format(s[0])
    if op == "b":
        if node[1] in ("max", "min"):
            return f"np.{node[1]}imum({s[0]}, {s[1]})"
        return f"({s[0]} {node[1]} {s[1]})"
    if op == "k":
        c = repr(node[2])
        if node[1] in ("max", "min"):
            return f"np.{node[1]}imum({s[0]}, {c})"
        return f"({c} {node[1]} {s[0]})" if node[3] else f"({s[0]} {node[1]} {c})"
    if op == "mm":
        return f"({s[0]} @ W)" if node[1] == 0 else f"(W @ {s[0]})"
    if op == "r":
        return f"np.{node[1]}({s[0]}, axis={node[2]!r}, keepdims={node[3]!r})"
    if op == "cs":
        return f"np.cumsum({s[0]}, axis={node[1]})"
    if op == "ix":
        items = []
        for i in node[1]:
            if isinstance(i, tuple):
                items.append(":".join("" if v is None else str(v) for v in i))
            else:
                items.append(str(i))
        return f"{s[0]}[{', '.join(items)}]"
    if op == "roll":
        return f"np.concatenate([{s[0]}[1:], {s[0]}[:1]])"
    if op == "T":
        return f"{s[0]}.T"
    if op == "w":
        return f"np.where({s[0]} > {s[1]}, {s[2]}, {s[3]})"
    if op == "clip":
        return f"np.clip({s[0]}, {node[1]!r}, {node[2]!r})"
    if op == "outer":
        return f"np.outer({s[0]}, {s[1]})"
    if op == "sum0":
        return f"{s[0]}.sum(axis=0)"
    if op == "bc":
        return f"np.broadcast_to({s[0]}, {node[1]!r})"
    raise AssertionError(op)


def ops_in(node, found=None):
    """The names of the operations a tree uses (for the statistics)."""
    found = set() if found is None else found
    op = node[0]
    name = {"u": lambda: node[1], "b": lambda: "binary " + node[1],
            "k": lambda: "const " + node[1], "mm": lambda: "matmul",
            "r": lambda: f"{node[1]}(axis={node[2]}, keepdims={node[3]})",
            "scan": lambda: f"nested scan ({node[1]}{', until' if node[5] is not None else ''})"}
    if op != "x":
        found.add(name.get(op, lambda: op)())
    if op == "scan":
        ops_in(node[6], found)
    for k in _kids(node):
        ops_in(k, found)
    return found


def count_nodes(node):
    n = 1 + sum(count_nodes(k) for k in _kids(node))
    return n + (count_nodes(node[6]) if node[0] == "scan" else 0)


# ------------------------------------------------------------------------------------------------
# generating trees (shapes are tracked statically; every dimension is 1 or H, at most 2-d, so
# any two values broadcast together)


def _shape_after(node, kid_shapes, H):
    """The shape of `node`'s value, found by running it on ones of its children's shapes."""
    env = {"W": np.ones((H, H))}
    return np.shape(_apply(node, [np.ones(s) for s in kid_shapes], env))


class Gen:
    """Draws trees over `leaves` ({name: shape}); `smooth` keeps to differentiable operations."""

    def __init__(self, draw, H, leaves, smooth, has_W, max_depth, allow_scan=True):
        self.draw, self.H, self.leaves = draw, H, dict(leaves)
        self.smooth, self.has_W, self.max_depth, self.allow_scan = \
            smooth, has_W, max_depth, allow_scan

    def leaf(self):
        name = self.draw(st.sampled_from(sorted(self.leaves)))
        return ("x", name), tuple(self.leaves[name])

    def fit(self, node, shape, target):
        """`node` reduced (sum over leading axes) and broadcast to `target`."""
        target = tuple(target)
        while len(shape) > len(target):
            node, shape = ("sum0", node), shape[1:]
        for axis, (have, want) in enumerate(zip(shape, target)):
            if have != want and want == 1:           # H -> 1: sum, keeping the axis
                node = ("r", "sum", axis, True, node)
                shape = shape[:axis] + (1,) + shape[axis + 1:]
        if shape != target:
            node, shape = ("bc", target, node), target
        return node, shape

    def vector(self, node, shape):
        """`node` as a value whose last axis has length H (for @ W)."""
        if len(shape) == 0 or shape[-1] != self.H:
            target = (shape[:-1] if shape else ()) + (self.H,)
            node, shape = ("bc", target, node), target
        return node, shape

    def squash(self, node, shape, target):
        node, shape = self.fit(node, shape, target)
        how = self.draw(st.sampled_from(["tanh", "sin"] if self.smooth else
                                        ["tanh", "sin", "clip"]))
        if how == "clip":
            return ("clip", -2.0, 2.0, node), shape
        return ("u", how, node), shape

    def const(self):
        return self.draw(st.sampled_from([0.5, -0.75, 1.25, 0.3, -1.5, 2.0]))

    def expr(self, depth=0):
        draw, H = self.draw, self.H
        if depth >= self.max_depth or draw(st.integers(0, 3)) == 0:
            return self.leaf()
        ops = ["u", "u", "b", "b", "k", "r", "ix", "cs", "outer", "T", "roll"]
        if self.has_W:
            ops += ["mm", "mm"]
        if not self.smooth:
            ops += ["w", "clip"]
        if self.allow_scan and depth <= 1:
            ops += ["scan"]
        op = draw(st.sampled_from(ops))
        if op == "u":
            f = draw(st.sampled_from(SMOOTH_UNARY if self.smooth else ALL_UNARY))
            a, s = self.expr(depth + 1)
            return ("u", f, a), s
        if op == "b":
            f = draw(st.sampled_from(["+", "-", "*"] if self.smooth else
                                     ["+", "-", "*", "max", "min"]))
            (a, sa), (b, sb) = self.expr(depth + 1), self.expr(depth + 1)
            return ("b", f, a, b), np.broadcast_shapes(sa, sb)
        if op == "k":
            f = draw(st.sampled_from(["+", "-", "*"] if self.smooth else
                                     ["+", "-", "*", "max", "min"]))
            a, s = self.expr(depth + 1)
            return ("k", f, self.const(), draw(st.booleans()), a), s
        if op == "mm":
            a, s = self.vector(*self.expr(depth + 1))
            side = draw(st.integers(0, 1)) if len(s) == 1 else 0
            node = ("mm", side, a)
            return node, _shape_after(node, [s], H)
        if op == "r":
            f = draw(st.sampled_from(["sum", "mean"] if self.smooth else list(REDUCE)))
            a, s = self.expr(depth + 1)
            axis = None if not s else draw(st.sampled_from([None] + list(range(-len(s), len(s)))))
            node = ("r", f, axis, draw(st.booleans()), a)
            return node, _shape_after(node, [s], H)
        if op == "ix":
            a, s = self.expr(depth + 1)
            if not s:
                return ("u", "neg", a), s
            choices = [(None, None, -1), (None, 1, None), (-1, None, None)]
            items = [draw(st.sampled_from(choices + list(range(-s[0], s[0]))))]
            if len(s) == 2 and draw(st.booleans()):
                items.append(draw(st.sampled_from(choices + list(range(-s[1], s[1])))))
            node = ("ix", tuple(items), a)
            return node, _shape_after(node, [s], H)
        if op == "cs":
            a, s = self.expr(depth + 1)
            if not s:
                return ("k", "*", 0.5, True, a), s
            node = ("cs", draw(st.integers(-len(s), len(s) - 1)), a)
            return node, s
        if op == "outer":
            (a, sa), (b, sb) = self.expr(depth + 1), self.expr(depth + 1)
            a, sa = self.fit(a, sa, sa[:1] if sa else ())
            b, sb = self.fit(b, sb, sb[:1] if sb else ())
            node = ("outer", a, b)
            return node, _shape_after(node, [sa, sb], H)
        if op == "T":
            a, s = self.expr(depth + 1)
            return ("T", a), s[::-1]
        if op == "roll":
            a, s = self.expr(depth + 1)
            if not s or s[0] < 2:
                return ("u", "sin", a), s
            return ("roll", a), s
        if op == "w":
            parts = [self.expr(depth + 1) for _ in range(4)]
            return ("w",) + tuple(p[0] for p in parts), np.broadcast_shapes(*(p[1] for p in parts))
        if op == "clip":
            a, s = self.expr(depth + 1)
            lo = draw(st.sampled_from([-1.0, -0.5, 0.0]))
            return ("clip", lo, lo + draw(st.sampled_from([0.25, 1.0, 2.0])), a), s
        if op == "scan":
            return self.nested_scan(depth)
        raise AssertionError(op)

    def nested_scan(self, depth):
        draw = self.draw
        kind = draw(st.sampled_from(["state", "seq"]))
        (a, sa), (b, sb) = self.expr(depth + 1), self.expr(depth + 1)
        if kind == "seq":
            if not sa:
                a, sa = ("bc", (self.H,), a), (self.H,)
            elem = sa[1:]
            b, sb = self.fit(b, sb, elem)
            leaves, state = {"e": elem, "h": sb}, sb
        else:
            leaves, state = {"h": sa, "c": sb}, sa
        inner = Gen(draw, self.H, leaves, self.smooth, False, 2, allow_scan=False)
        body, shape = inner.expr()
        body, _ = inner.squash(body, shape, state)
        thr = None
        if not self.smooth and draw(st.integers(0, 2)) == 0:
            thr = draw(st.sampled_from([-0.5, 0.0, 0.5, 1.0]))
        node = ("scan", kind, draw(st.booleans()), draw(st.integers(1, 3)),
                draw(st.sampled_from(["last", "sum"])), thr, body, a, b)
        return node, state


# ------------------------------------------------------------------------------------------------
# layouts and cases


def _name(prefix, tap):
    return f"{prefix}_{'m' if tap < 0 else 'p'}{abs(tap)}"


def _distinct(draw, pool, lo, hi):
    taps = draw(st.lists(st.sampled_from(pool), min_size=lo, max_size=hi, unique=True))
    return taps


class Case:
    """A generated scan: its layout, data and step, runnable in any mode."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    # data --------------------------------------------------------------------------------------
    def make_data(self, seed, T_extra=0):
        """Fresh random arrays for this layout (T_extra: that many more rows per sequence)."""
        rng = np.random.default_rng(seed)
        dt = self.dtype

        def rand(*shape):
            x = rng.standard_normal(shape) * 0.8
            x = np.where(np.abs(x) < 1e-3, 0.5, x)          # never zeros
            return x.astype(dt)

        H = self.H
        data = {"seqs": [], "inits": [], "C": rand(H)}
        for sq in self.seqs:
            data["seqs"].append(rand(sq["length"] + T_extra, *sq["elem"]))
        for o in self.outs:
            if o["kind"] == "map":
                data["inits"].append(None)
            elif o["taps"] == [-1]:
                data["inits"].append(rand(*o["state"]))
            else:
                data["inits"].append(rand(o["rows"], *o["state"]))
        data["b"] = rand(H)
        data["W"] = (rand(H, H) / np.sqrt(H)).astype(dt)
        return data

    # the call ----------------------------------------------------------------------------------
    def kwargs(self, data, T_extra=0):
        """ns.scan's keyword arguments (all but fn and mode) for `data`."""
        seqs = []
        for sq, arr in zip(self.seqs, data["seqs"]):
            form = sq["form"]
            if form == "array":
                seqs.append(arr)
            elif form == "dict":
                seqs.append(dict(input=arr))
            elif form == "dict_int":
                seqs.append(dict(input=arr, taps=sq["taps"][0]))
            else:
                seqs.append(dict(input=arr, taps=list(sq["taps"])))
        infos = []
        for o, init in zip(self.outs, data["inits"]):
            form = o["form"]
            if o["kind"] == "map":
                infos.append(None if form == "none" else dict(initial=None))
            elif form == "array":
                infos.append(init)
            elif form == "dict":
                infos.append(dict(initial=init))
            else:
                infos.append(dict(initial=init, taps=list(o["taps"])))
        kw = {}
        if seqs:
            kw["sequences"] = seqs[0] if (len(seqs) == 1 and self.bare_seq) else seqs
        if self.all_maps_as_none and all(o["kind"] == "map" for o in self.outs):
            kw["outputs_info"] = None
        else:
            kw["outputs_info"] = infos
        nonseqs = [data[k] for k in self.nonseqs]
        if nonseqs:
            kw["non_sequences"] = nonseqs
        if self.n_steps is not None:
            kw["n_steps"] = self.n_steps + (T_extra if self.seqs else 0)
        if self.go_backwards:
            kw["go_backwards"] = True
        if self.truncate_gradient != -1:
            kw["truncate_gradient"] = self.truncate_gradient
        if self.return_list:
            kw["return_list"] = True
        kw["name"] = "fuzz_step"
        return kw

    def make_step(self, C):
        """The step: a closure interpreting the output trees (and the until condition)."""
        names, trees, until, nonseqs = tuple(self.arg_names), self.trees, self.until, \
            tuple(self.nonseqs)
        ret, single = self.ret_form, len(self.trees) == 1

        def step(*args):
            env = dict(zip(names + nonseqs, args))
            env["C"] = C
            outs = [evaluate(t, env) for t in trees]
            res = outs[0] if single and ret == "bare" else outs
            if until is None:
                return res
            cond_kind, thr, tree = until
            v = evaluate(tree, env)
            cond = (np.sum(v) > thr if cond_kind == "sum" else
                    np.any(v > thr) if cond_kind == "any" else np.all(v < thr))
            return (res, ns.until(cond)) if ret != "until_first" else (ns.until(cond), res)

        return step

    def loss_weights(self):
        return [0.5 + 0.25 * k for k in range(len(self.trees))]

    # the reproducing script --------------------------------------------------------------------
    def source(self, data, modes=("cpu", "python")):
        def arr(x):
            if x is None:
                return "None"
            return f"np.array({x.tolist()!r}, dtype=np.{np.dtype(self.dtype).name})"

        lines = ["import numpy as np", "import scipy.special as sps", "import numbascan as ns",
                 "", f"C = {arr(data['C'])}"]
        for k in self.nonseqs:
            lines.append(f"{k} = {arr(data[k])}")
        for i, a in enumerate(data["seqs"]):
            lines.append(f"S{i} = {arr(a)}")
        for k, a in enumerate(data["inits"]):
            lines.append(f"X{k} = {arr(a)}")
        args = ", ".join(list(self.arg_names) + list(self.nonseqs))
        lines += ["", "", f"def step({args}):"]
        outs = [source(t) for t in self.trees]
        res = outs[0] if len(outs) == 1 and self.ret_form == "bare" else \
            "[" + ", ".join(outs) + "]"
        if self.until is not None:
            kind, thr, tree = self.until
            v = source(tree)
            cond = {"sum": f"np.sum({v}) > {thr!r}", "any": f"np.any({v} > {thr!r})",
                    "all": f"np.all({v} < {thr!r})"}[kind]
            res = (f"{res}, ns.until({cond})" if self.ret_form != "until_first"
                   else f"ns.until({cond}), {res}")
        lines.append(f"    return {res}")
        kw = self.kwargs(data)
        seq_src = []
        for i, (sq, s) in enumerate(zip(self.seqs, data["seqs"])):
            form = sq["form"]
            seq_src.append({"array": f"S{i}", "dict": f"dict(input=S{i})",
                            "dict_int": f"dict(input=S{i}, taps={sq['taps'][0]})"}.get(
                form, f"dict(input=S{i}, taps={list(sq['taps'])})"))
        parts = []
        if seq_src:
            parts.append("sequences=" + (seq_src[0] if len(seq_src) == 1 and self.bare_seq
                                         else "[" + ", ".join(seq_src) + "]"))
        if kw.get("outputs_info", 0) is None:
            parts.append("outputs_info=None")
        else:
            infos = []
            for k, o in enumerate(self.outs):
                form = o["form"]
                if o["kind"] == "map":
                    infos.append("None" if form == "none" else "dict(initial=None)")
                else:
                    infos.append({"array": f"X{k}", "dict": f"dict(initial=X{k})"}.get(
                        form, f"dict(initial=X{k}, taps={list(o['taps'])})"))
            parts.append("outputs_info=[" + ", ".join(infos) + "]")
        if self.nonseqs:
            parts.append("non_sequences=[" + ", ".join(self.nonseqs) + "]")
        for key in ("n_steps", "go_backwards", "truncate_gradient", "return_list", "name"):
            if key in kw:
                parts.append(f"{key}={kw[key]!r}")
        lines.append("")
        for mode in modes:
            lines.append(f"out_{mode}, _ = ns.scan(step, {', '.join(parts)}, mode={mode!r})")
        lines.append("print(out_cpu, out_python, sep='\\n')")
        return "\n".join(lines)

    def features(self):
        f = [f"dtype {np.dtype(self.dtype).name}", f"H={self.H}", f"{len(self.seqs)} sequence(s)",
             f"{sum(o['kind'] == 'fed' for o in self.outs)} fed-back output(s)",
             f"{sum(o['kind'] == 'map' for o in self.outs)} map output(s)",
             "non_sequences " + ("+".join(self.nonseqs) or "none")]
        for sq in self.seqs:
            f.append(f"sequence taps {sorted(sq['taps'])}")
            f.append(f"sequence form {sq['form']}")
        for o in self.outs:
            if o["kind"] == "fed":
                f.append(f"output taps {sorted(o['taps'])}")
                f.append(f"output form {o['form']}, state shape ndim {len(o['state'])}")
            else:
                f.append(f"map output form {o['form']}")
        if self.go_backwards:
            f.append("go_backwards")
        f.append("n_steps given" if self.n_steps is not None else "n_steps implied")
        if self.until is not None:
            f.append(f"until ({self.until[0]})")
        if self.return_list:
            f.append("return_list")
        f.append(f"return form {self.ret_form}")
        ops = set()
        for t in self.trees:
            ops_in(t, ops)
        if self.until is not None:
            ops_in(self.until[2], ops)
        f += [f"op {o}" for o in sorted(ops)]
        return f


@st.composite
def cases(draw, smooth=False, max_depth=3):
    """A random scan: layout, step trees, data seed."""
    dtype = np.float64 if smooth else draw(st.sampled_from([np.float32, np.float64]))
    H = draw(st.integers(1, 4))
    T = draw(st.integers(1, 6))
    n_seqs = draw(st.integers(0, 2))
    seqs, arg_names, leaves = [], [], {}
    for i in range(n_seqs):
        form = draw(st.sampled_from(["array", "dict", "dict_int", "dict_list", "dict_list"]))
        if form in ("array", "dict"):
            taps = [0]
        elif form == "dict_int":
            taps = [draw(st.integers(-3, 3))]
        else:
            taps = _distinct(draw, list(range(-3, 4)), 1, 3)
        elem = draw(st.sampled_from([(H,), (H,), ()]))
        m, M = max(0, -min(taps)), max(0, max(taps))
        extra = draw(st.integers(0, 2))
        seqs.append(dict(taps=taps, form=form, elem=elem, m=m, M=M, length=T + m + M + extra,
                         extra=extra))
        for tap in taps:
            arg_names.append(_name(f"s{i}", tap))
            leaves[arg_names[-1]] = elem
    n_outs = draw(st.integers(1, 3))
    outs = []
    for k in range(n_outs):
        if draw(st.integers(0, 2)) == 0:
            outs.append(dict(kind="map", form=draw(st.sampled_from(["none", "dict_none"]))))
            continue
        taps = _distinct(draw, [-1, -2, -3], 1, 2)
        state = draw(st.sampled_from([(H,), (H,), ()]))
        if taps == [-1]:
            form = draw(st.sampled_from(["array", "dict", "dict_taps"]))
            rows = None
        else:
            form = "dict_taps"
            rows = max(-t for t in taps) + draw(st.sampled_from([0, 0, 1]))
        outs.append(dict(kind="fed", taps=taps, state=state, form=form, rows=rows))
        for tap in taps:
            arg_names.append(_name(f"o{k}", tap))
            leaves[arg_names[-1]] = state
    nonseqs = draw(st.sampled_from([[], ["b"], ["W"], ["b", "W"], ["W", "b"]]))
    for k in nonseqs:
        leaves[k] = (H,) if k == "b" else (H, H)
    leaves["C"] = (H,)
    gen = Gen(draw, H, leaves, smooth, "W" in nonseqs, max_depth)
    trees = []
    for k, o in enumerate(outs):
        tree, shape = gen.expr()
        if o["kind"] == "fed":
            tree, shape = gen.squash(tree, shape, o["state"])
        trees.append(tree)
    until = None
    if draw(st.integers(0, 3)) == 0:
        tree, _ = Gen(draw, H, leaves, smooth, "W" in nonseqs, 2, allow_scan=False).expr()
        until = (draw(st.sampled_from(["sum", "any", "all"])),
                 draw(st.sampled_from([-1.0, 0.0, 0.5, 1.5])), tree)
    if seqs:
        supported = T + min(s["extra"] for s in seqs)
        n_steps = draw(st.sampled_from([None, None, supported, max(1, supported - 1)]))
    else:
        n_steps = T
    case = Case(
        dtype=dtype, H=H, T=T, seqs=seqs, outs=outs, nonseqs=nonseqs, arg_names=arg_names,
        trees=trees, until=until, n_steps=n_steps,
        go_backwards=draw(st.booleans()),
        truncate_gradient=-1 if smooth else draw(st.sampled_from([-1, -1, 1, 3])),
        return_list=draw(st.booleans()),
        ret_form=draw(st.sampled_from(["list", "bare", "until_first"])),
        bare_seq=draw(st.booleans()),
        all_maps_as_none=draw(st.booleans()),
        seed=draw(st.integers(0, 2 ** 32 - 1)),
    )
    return case


def _n_rows(out):
    return (out[0] if isinstance(out, list) else out).shape[0]


# ------------------------------------------------------------------------------------------------
# property 1: the compiled mode equals the reference mode


HIGHER = {np.dtype(np.float32): np.float64, np.dtype(np.float64): np.longdouble}


def _as_list(out):
    return out if isinstance(out, list) else [out]


def conditioning(case, data, kwargs_of, out_python):
    """How far the python-mode result moves when the same scan runs (in python mode) in higher
    precision (float64 for float32 cases, long double for float64 ones), in units of the
    cpu-vs-python tolerance; inf when the shapes change (an until or a where decided otherwise)."""
    hi = HIGHER[np.dtype(case.dtype)]

    def up(x):
        return None if x is None else x.astype(hi)

    hdata = {"seqs": [up(a) for a in data["seqs"]], "inits": [up(a) for a in data["inits"]],
             "C": up(data["C"]), "b": up(data["b"]), "W": up(data["W"])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out_hi, _ = ns.scan(case.make_step(hdata["C"]), mode="python", **kwargs_of(hdata))
    tol = TOLERANCES[np.dtype(case.dtype)]
    worst = 0.0
    for p, h in zip(_as_list(out_python), _as_list(out_hi)):
        if p.shape != h.shape:
            return np.inf
        err = np.abs(p.astype(hi) - h) / (tol["atol"] + tol["rtol"] * np.abs(h))
        if not np.all(np.isfinite(err)):
            return np.inf
        worst = max(worst, float(np.max(err, initial=0.0)))
    return worst


def compare_modes(case, step, data, kwargs_of):
    """Run the scan in both modes (inputs untouched, no untraced fallback) and compare them:
    with `assert_same` (conftest's tolerances, dtypes and shapes equal) when the case is
    well-conditioned, i.e. the reference moves by at most a quarter of that tolerance in
    higher precision; else at a tolerance widened by the measured conditioning."""
    kw = kwargs_of(data)
    inputs = list(_arrays(kw)) + [data["C"]]
    before = [x.copy() for x in inputs]
    results = {}
    for mode in ("cpu", "python"):
        results[mode] = _run_checked(step, mode, **copy.copy(kw))
        for i, (x, b) in enumerate(zip(inputs, before)):
            np.testing.assert_array_equal(x, b, err_msg=f"mode={mode}: input {i} was modified")
    (out_c, upd_c), (out_p, upd_p) = results["cpu"], results["python"]
    assert len(upd_c) == len(upd_p) == 0
    ratio = conditioning(case, data, kwargs_of, out_p)
    if ratio <= 0.25:
        record("cpu == python", "compared with assert_same (well-conditioned)")
        assert_same_outputs(out_c, out_p)
        return out_c
    assert isinstance(out_c, list) == isinstance(out_p, list)
    assert len(_as_list(out_c)) == len(_as_list(out_p))
    for k, (c, p) in enumerate(zip(_as_list(out_c), _as_list(out_p))):
        assert c.dtype == p.dtype, f"outputs[{k}]: dtype {c.dtype} != {p.dtype}"
    if ratio == np.inf:
        # a decision (until, where, clip, max) taken otherwise in higher precision: the modes
        # may legitimately take it differently too; only dtypes are compared
        record("cpu == python", "rounding-sensitive decision: dtypes compared")
        return out_c
    factor = 8 * ratio
    record("cpu == python", "ill-conditioned: tolerance widened x" + (
        "10" if factor <= 10 else "100" if factor <= 100 else "1000" if factor <= 1000
        else ">1000"))
    tol = TOLERANCES[np.dtype(case.dtype)]
    for k, (c, p) in enumerate(zip(_as_list(out_c), _as_list(out_p))):
        assert c.shape == p.shape, f"outputs[{k}]: shape {c.shape} != {p.shape}"
        np.testing.assert_allclose(c, p, rtol=tol["rtol"] * factor, atol=tol["atol"] * factor,
                                   err_msg=f"outputs[{k}] (ill-conditioned x{ratio:.3g})")
    return out_c


@budget(1.0)
@given(case=cases())
def test_cpu_equals_python(case):
    data = case.make_data(case.seed)
    note(case.source(data))
    record("cpu == python", "case", *case.features())
    size = sum(count_nodes(t) for t in case.trees)
    steer(float(size), label="tree nodes")
    step = case.make_step(data["C"])
    out = compare_modes(case, step, data, case.kwargs)
    rows = _n_rows(out)
    steer(float(rows), label="steps run")
    if case.until is not None:
        record("cpu == python", f"until-scan ran {rows} step(s)")

    # again with new values of the same shapes: C changed in place, new sequences and states,
    # and (where there are sequences) one more step
    extra = 1 if case.seqs else 0
    new = case.make_data(case.seed + 1, T_extra=extra)
    data["C"][...] = new["C"]
    new["C"] = data["C"]
    before = ns.cache_info()
    note("second call with:\n" + case.source(new))
    compare_modes(case, step, new, lambda d: case.kwargs(d, T_extra=extra))
    after = ns.cache_info()
    record("cpu == python", "second call: " + (
        "no new compile" if after.compiles == before.compiles else "compiled again"))


# ------------------------------------------------------------------------------------------------
# property 2: derivatives against finite differences


class _Mode:
    """NUMBASCAN_MODE set for a block (ns.grad and ns.jvp take their mode from it)."""

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        self.old = os.environ.get("NUMBASCAN_MODE")
        os.environ["NUMBASCAN_MODE"] = self.mode

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("NUMBASCAN_MODE", None)
        else:
            os.environ["NUMBASCAN_MODE"] = self.old


def _primals(case, data):
    """The differentiated arguments: sequences, initial states, non-sequences."""
    prim, where = [], []
    for i, a in enumerate(data["seqs"]):
        prim.append(a)
        where.append(("seqs", i))
    for k, a in enumerate(data["inits"]):
        if a is not None:
            prim.append(a)
            where.append(("inits", k))
    for k in case.nonseqs:
        prim.append(data[k])
        where.append((k, None))
    return prim, where


def _functions(case, data, mode):
    step = case.make_step(data["C"])
    _, where = _primals(case, data)
    weights = case.loss_weights()

    def outputs(*xs):
        d = {"seqs": list(data["seqs"]), "inits": list(data["inits"]), "C": data["C"],
             "b": data["b"], "W": data["W"]}
        for (key, i), x in zip(where, xs):
            if i is None:
                d[key] = x
            else:
                d[key][i] = x
        kw = case.kwargs(d)
        kw["return_list"] = True
        out, _ = ns.scan(step, mode=mode, **kw)
        return out

    def loss(*xs):
        return sum(w * (o * o).sum() for w, o in zip(weights, outputs(*xs)))

    return outputs, loss


def _fd(f, xs, vs, eps):
    plus = f(*[x + eps * v for x, v in zip(xs, vs)])
    minus = f(*[x - eps * v for x, v in zip(xs, vs)])
    if isinstance(plus, list):
        return [(np.asarray(p) - np.asarray(m)) / (2 * eps) for p, m in zip(plus, minus)]
    return (plus - minus) / (2 * eps)


RTOL, ATOL, EPS = 1e-5, 1e-7, 1e-6


@budget(0.25)
@given(case=cases(smooth=True, max_depth=3))
def test_derivatives_match_finite_differences(case):
    data = case.make_data(case.seed)
    note(case.source(data))
    record("derivatives", "case", *case.features())
    prim, _ = _primals(case, data)
    if not prim:
        record("derivatives", "nothing to differentiate")
        return
    rng = np.random.default_rng(case.seed ^ 0x5EED)
    vs = [rng.standard_normal(p.shape) for p in prim]
    before = [p.copy() for p in prim]
    ref_outputs, ref_loss = _functions(case, data, "python")
    fd_loss = _fd(ref_loss, prim, vs, EPS)
    fd_out = _fd(ref_outputs, prim, vs, EPS)
    # the truncation error of the central differences, estimated from a doubled step (it grows
    # as the step squared) and added to the tolerances, so that a strongly curved case is not
    # taken for a wrong derivative
    fd_loss_err = abs(fd_loss - _fd(ref_loss, prim, vs, 2 * EPS)) / 3
    fd_out_err = [np.abs(d - d2) / 3 for d, d2 in zip(fd_out, _fd(ref_outputs, prim, vs, 2 * EPS))]
    value = ref_loss(*prim)
    argnums = tuple(range(len(prim)))
    for mode in ("python", "cpu"):
        outputs, loss = _functions(case, data, mode)
        with _Mode(mode):
            grads = ns.grad(loss, argnums=argnums)(*prim)
            primal_out, tangents = ns.jvp(outputs, list(prim), vs)
        assert isinstance(grads, tuple) and len(grads) == len(prim), \
            f"mode={mode}: grad gave {type(grads).__name__} for {len(prim)} argnums"
        for i, (g, p) in enumerate(zip(grads, prim)):
            assert np.shape(g) == p.shape and np.asarray(g).dtype == p.dtype, \
                f"mode={mode}: gradient {i} has shape {np.shape(g)} dtype {np.asarray(g).dtype}"
        dot = sum(float(np.vdot(g, v)) for g, v in zip(grads, vs))
        scale = sum(float(np.sum(np.abs(np.asarray(g) * v))) for g, v in zip(grads, vs))
        tol = ATOL + RTOL * (abs(fd_loss) + scale) + 1e-9 * abs(value) + 10 * fd_loss_err
        assert abs(dot - fd_loss) <= tol, \
            f"mode={mode}: <grad, v> = {dot!r}, finite differences give {fd_loss!r} (tol {tol:.3g})"
        assert len(tangents) == len(fd_out) == len(primal_out)
        ref = ref_outputs(*prim)
        for k, (po, t, d, e, r) in enumerate(zip(primal_out, tangents, fd_out, fd_out_err, ref)):
            np.testing.assert_allclose(po, r, rtol=1e-9, atol=1e-12,
                                       err_msg=f"mode={mode}: jvp primal output {k}")
            t = np.asarray(t)
            assert t.shape == d.shape, f"mode={mode}: tangent {k} shape {t.shape} != {d.shape}"
            assert t.dtype == d.dtype, f"mode={mode}: tangent {k} dtype {t.dtype} != {d.dtype}"
            bad = ~(np.abs(t - d) <= ATOL + RTOL * (np.abs(d) + np.max(np.abs(d))) + 10 * e)
            assert not bad.any(), (
                f"mode={mode}: jvp tangent of output {k} differs from finite differences at "
                f"{np.argwhere(bad)[:4].tolist()}: {t[bad][:4]} vs {d[bad][:4]}")
        record("derivatives", f"checked mode {mode}")
    for i, (p, b) in enumerate(zip(prim, before)):
        np.testing.assert_array_equal(p, b, err_msg=f"primal {i} was modified")


# ------------------------------------------------------------------------------------------------
# property 3: misuses raise ValueError/TypeError naming the argument


def _ident(*a):
    return a[0] * 1.0


MISUSES = [
    "sequence non-numeric", "sequence 0-d", "sequence dict keys", "sequence taps",
    "sequence too short for taps", "sequence too short for n_steps",
    "output taps", "initial state without leading axis", "step result shape",
    "step result dtype", "number of outputs", "outputs_info non-numeric",
    "outputs_info dict keys", "n_steps negative", "n_steps type", "n_steps missing",
    "fn not callable", "mode", "truncate_gradient", "go_backwards", "non_sequences non-numeric",
    "checkpoint", "until not scalar"]


@st.composite
def misuses(draw, kind):
    """(kind, ns.scan's kwargs but mode, a regex the message must match) for a misuse `kind`."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    H = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))

    def rand(*shape):
        return (rng.standard_normal(shape) + 2.0).astype(dtype)

    T = draw(st.integers(2, 6))
    n_ok = draw(st.integers(0, 2))        # valid entries around the bad one
    pos = draw(st.integers(0, n_ok))      # where the bad one goes
    good_seqs = [rand(T + 3, H) for _ in range(n_ok)]
    x0 = rand(H)

    def around(bad):
        return good_seqs[:pos] + [bad] + good_seqs[pos:]

    kw, pattern = {"fn": _ident}, None
    if kind == "sequence non-numeric":
        bad = draw(st.sampled_from(["strings", "str", "object", "set", "none list"]))
        bad = {"strings": np.array(["a", "b", "c"]), "str": "hello",
               "object": np.array([1.0, None, 2.0], dtype=object), "set": {1, 2},
               "none list": [None]}[bad]
        kw["sequences"] = around(bad)
        pattern = rf"sequences\[{pos}\]"
    elif kind == "sequence 0-d":
        bad = draw(st.sampled_from([np.array(1.5, dtype), 2.5, 5]))
        kw["sequences"] = around(bad)
        pattern = rf"sequences\[{pos}\]"
    elif kind == "sequence dict keys":
        S = rand(T, H)
        bad = draw(st.sampled_from(["tap", "inputs", "no input"]))
        bad = {"tap": dict(input=S, tap=[0]), "inputs": dict(inputs=S),
               "no input": dict(taps=[0])}[bad]
        kw["sequences"] = around(bad)
        pattern = rf"sequences\[{pos}\]"
    elif kind == "sequence taps":
        taps = draw(st.sampled_from([[0.5], ["a"], [], [-1, 0, -1], [True], [1.0], [None],
                                     [0, 2.0], "a", [2, 2], 0.5, 1.0, {0}]))
        kw["sequences"] = around(dict(input=rand(T + 4, H), taps=taps))
        pattern = rf"sequences\[{pos}\].*taps"
    elif kind == "sequence too short for taps":
        taps = draw(st.sampled_from([[-2, 1], [3], [-3], [-1, 1]]))
        need = max(0, -min(taps)) + max(0, max(taps))
        length = draw(st.integers(1, need - 1))      # need entries give 0 steps: valid
        kw["sequences"] = around(dict(input=rand(length, H), taps=taps))
        pattern = rf"sequences\[{pos}\]"
    elif kind == "sequence too short for n_steps":
        length = draw(st.integers(1, T))
        kw["sequences"] = around(rand(length, H))
        kw["n_steps"] = T + 3 if n_ok else length + 1
        pattern = rf"sequences\[{pos}\].*n_steps"
    elif kind in ("output taps", "initial state without leading axis", "step result shape",
                  "step result dtype", "outputs_info non-numeric", "outputs_info dict keys"):
        # several outputs, the bad one at `pos`; the step returns one result per output, each
        # computed from the first sequence only (so a wrong state shape is not broadcast away)
        S = rand(T, H)
        infos = [rand(H) for _ in range(n_ok)]
        if kind == "output taps":
            taps = draw(st.sampled_from([[0], [1], [-1, 0], [-2, 2], [-1.5], [], [-2, -2],
                                         "x", [None], [True], -1.5, 0, 2]))
            bad = dict(initial=rand(3, H), taps=taps)
            pattern = rf"outputs_info\[{pos}\].*taps"
        elif kind == "initial state without leading axis":
            taps = draw(st.sampled_from([[-3, -1], [-2], [-1, -3], [-2, -1]]))
            L = max(-t for t in taps)
            bad = dict(initial=rand(draw(st.integers(1, L - 1)), H), taps=taps)
            pattern = rf"outputs_info\[{pos}\]"
        elif kind == "step result shape":
            shape = draw(st.sampled_from([(H + 1,), (1, H), (H, H + 1), (2, H)]))
            bad = rand(*shape)
            pattern = rf"outputs_info\[{pos}\]"
        elif kind == "step result dtype":
            S = S.astype(np.float64)
            infos = [x.astype(np.float64) for x in infos]
            bad = draw(st.sampled_from([rand(H).astype(np.float32), np.arange(H)]))
            pattern = rf"(output {pos}|outputs_info\[{pos}\])"
        elif kind == "outputs_info non-numeric":
            bad = draw(st.sampled_from([np.array(["a", "b"]), "hello",
                                        np.array([1.0, None], dtype=object)]))
            pattern = rf"outputs_info\[{pos}\]"
        else:
            bad = draw(st.sampled_from([dict(init=rand(H)), dict(initial=rand(H), tap=[-1]),
                                        dict(value=rand(H))]))
            pattern = rf"outputs_info\[{pos}\]"
        infos = infos[:pos] + [bad] + infos[pos:]
        n_fed = len(infos)

        def many(s, *rest, n=n_fed):
            return [s * 2.0 for _ in range(n)]

        kw.update(fn=many, sequences=[S], outputs_info=infos)
    elif kind == "number of outputs":
        n_info = draw(st.integers(1, 3))
        n_res = draw(st.sampled_from([n for n in range(1, 5) if n != n_info]))

        def wrong(s, *rest, n=n_res):
            return [s * 2.0 for _ in range(n)] if n > 1 else s * 2.0

        kw.update(fn=wrong, sequences=[rand(T, H)], outputs_info=[None] * n_info)
        pattern = r"outputs_info"
    elif kind == "n_steps negative":
        kw.update(outputs_info=[x0], n_steps=draw(st.integers(-7, -1)))
        if draw(st.booleans()):
            kw["sequences"] = [rand(T, H)]
        pattern = r"n_steps"
    elif kind == "n_steps type":
        kw.update(outputs_info=[x0], n_steps=draw(st.sampled_from(
            [2.5, "3", np.ones(2), True, [2], 3.0])))
        pattern = r"n_steps"
    elif kind == "n_steps missing":
        kw.update(outputs_info=[x0])
        pattern = r"n_steps"
    elif kind == "fn not callable":
        kw.update(fn=draw(st.sampled_from([3, "step", None, [_ident], np.ones(2)])),
                  sequences=[rand(T, H)])
        pattern = r"\bfn\b"
    elif kind == "mode":
        kw.update(sequences=[rand(T, H)],
                  mode=draw(st.sampled_from(["gpu", "CPU", "numba", "", "Python", "cpu ", 3])))
        pattern = r"\bmode\b"
    elif kind == "truncate_gradient":
        kw.update(sequences=[rand(T, H)],
                  truncate_gradient=draw(st.sampled_from(["a", 1.5, None, [1], "-1"])))
        pattern = r"truncate_gradient"
    elif kind == "go_backwards":
        kw.update(sequences=[rand(T, H)],
                  go_backwards=draw(st.sampled_from(["no", "yes", "True", np.ones(2), 1.5, [True],
                                                     None])))
        pattern = r"go_backwards"
    elif kind == "non_sequences non-numeric":
        good = [rand(H, H) for _ in range(n_ok)]
        bad = draw(st.sampled_from([np.array(["x"]), "w", np.array([{}, 1], dtype=object)]))
        kw.update(sequences=[rand(T, H)], non_sequences=good[:pos] + [bad] + good[pos:])
        pattern = rf"non_sequences\[{pos}\]"
    elif kind == "checkpoint":
        kw.update(sequences=[rand(T, H)],
                  checkpoint=draw(st.sampled_from([0, -3, "cbrt", 1.5, "SQRT"])))
        pattern = r"checkpoint"
    elif kind == "until not scalar":
        H = max(H, 2)
        kw.update(fn=lambda x: (2 * x, ns.until(x > 3)), outputs_info=rand(H), n_steps=T)
        pattern = r"until"
    else:                                            # pragma: no cover
        raise AssertionError(kind)
    return kind, kw, pattern


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _arrays(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _arrays(x)


@pytest.mark.parametrize("kind", MISUSES)
@budget(0.27)
@given(data=st.data())
def test_misuse_names_the_argument(kind, data):
    """Each kind of misuse (parametrized, so that all are covered) with random details."""
    kind, kw, pattern = data.draw(misuses(kind), label="misuse")
    record("misuse", "case", f"misuse: {kind}")
    note(f"{kind}: ns.scan(**{kw!r}), expecting a message matching {pattern!r}")
    arrays = [a for a in _arrays(kw) if a.dtype != object]
    before = [a.copy() for a in arrays]
    for mode in ("cpu", "python"):
        call = dict(kw)
        call.setdefault("mode", mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises((ValueError, TypeError)) as info:
                ns.scan(**call)
        msg = str(info.value)
        assert re.search(pattern, msg, re.S), \
            f"mode={mode}: {type(info.value).__name__}({msg!r}) does not name {pattern!r}"
        for a, b in zip(arrays, before):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b, err_msg=f"mode={mode}: an input was modified")


# ------------------------------------------------------------------------------------------------
# Bugs this fuzzer found, fixed: each pinned by a test of its own


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_scalar_float_tap_names_the_taps(mode):
    """A sequence tap that is neither an int nor a list of ints (taps=0.5) once failed with
    TypeError("'float' object is not iterable"), naming no argument."""
    S = np.arange(6.0)
    with pytest.raises((ValueError, TypeError)) as info:
        ns.scan(_ident, sequences=[dict(input=S, taps=0.5)], mode=mode)
    assert re.search(r"sequences\[0\].*taps", str(info.value)), str(info.value)
    np.testing.assert_array_equal(S, np.arange(6.0))


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_sequence_taps_none_means_the_current_row(mode):
    """Theano: a sequence dict with taps=None reads row t, as taps=[0]."""
    S = np.arange(6.0)
    out, _ = ns.scan(_ident, sequences=[dict(input=S, taps=None)], mode=mode)
    np.testing.assert_array_equal(out, S)


@pytest.mark.parametrize("mode", ["cpu", "python"])
@pytest.mark.parametrize("bad", ["no", np.ones(2)], ids=["str", "array"])
def test_go_backwards_must_be_a_bool(mode, bad):
    """go_backwards was only passed through bool(): "no" walked backwards silently, and an
    array failed with NumPy's truth-value error, which does not name go_backwards."""
    S = np.arange(6.0)
    with pytest.raises((ValueError, TypeError)) as info:
        ns.scan(_ident, sequences=S, go_backwards=bad, mode=mode)
    assert "go_backwards" in str(info.value), str(info.value)


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_jvp_keeps_the_initial_tangent_of_a_constant_state(mode):
    """Found by test_derivatives_match_finite_differences: ns.jvp dropped the tangent of the
    initial value of a fed-back state whose new value depends on no differentiated input (a
    captured array, a constant), so a map output reading it at step 0 got a zero tangent."""
    C = np.array([0.1])

    def f(x0):
        out, _ = ns.scan(lambda h: [C * 1.0, np.sin(h)], outputs_info=[x0, None], n_steps=1,
                         mode=mode)
        return out[1]

    x0, v = np.array([0.3]), np.ones(1)
    with _Mode(mode):
        np.testing.assert_allclose(ns.grad(lambda x: f(x).sum())(x0), np.cos(x0))
        _, tangent = ns.jvp(f, [x0], [v])
    np.testing.assert_allclose(tangent, [np.cos(x0)], err_msg="jvp tangent")
