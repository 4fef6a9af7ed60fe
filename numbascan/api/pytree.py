"""Stage: user API — pytrees: JAX's nested containers of arrays, for `numbascan.lax`.

A pytree is a leaf (an array, a tracer, a number) or a node: a tuple (a namedtuple too), a
list or a dict of pytrees; `None` is a node with no children, as in JAX, so a `None` in a
step's `ys` is an output that is not stored. `flatten` gives the leaves in JAX's order (dicts
by sorted key) and a `TreeDef`; `unflatten` rebuilds the tree from it; `leaf_paths` names
each leaf as JAX's `keystr` does (`carry[1]['h']`, `.field` for a namedtuple).

A `TreeDef` is a NamedTuple of types, keys and TreeDefs, so that the trace cache
(runtime/cache.py) keys a step whose closure holds one by value, as it keys any tuple.
"""

from __future__ import annotations

from typing import NamedTuple


class TreeDef(NamedTuple):
    """The structure of a pytree: `kind` is LEAF, NONE or the node's type; `keys` the dict
    keys or namedtuple fields (() for tuples and lists); `children` their TreeDefs."""
    kind: object
    keys: tuple = ()
    children: tuple = ()

    @property
    def n_leaves(self):
        if self.kind is LEAF:
            return 1
        return sum(c.n_leaves for c in self.children)


LEAF = "leaf"          # the kind of a leaf (a string: the cache keys it by value)
NONE = "none"          # the kind of None, a node without children
_LEAF_DEF = TreeDef(LEAF)


def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def flatten(tree):
    """(leaves, TreeDef) of `tree`."""
    leaves = []

    def visit(x):
        if x is None:
            return TreeDef(NONE)
        if isinstance(x, dict):
            keys = tuple(sorted(x))
            return TreeDef(type(x), keys, tuple(visit(x[k]) for k in keys))
        if _is_namedtuple(x):
            return TreeDef(type(x), tuple(type(x)._fields), tuple(visit(v) for v in x))
        if isinstance(x, (tuple, list)):
            return TreeDef(type(x), (), tuple(visit(v) for v in x))
        leaves.append(x)
        return _LEAF_DEF

    treedef = visit(tree)
    return leaves, treedef


def unflatten(treedef: TreeDef, leaves):
    """The pytree of structure `treedef` with `leaves` (in flatten's order)."""
    it = iter(leaves)

    def build(d):
        if d.kind == LEAF:
            return next(it)
        if d.kind == NONE:
            return None
        children = [build(c) for c in d.children]
        if issubclass(d.kind, dict):
            return d.kind(zip(d.keys, children))
        if d.keys:                                   # a namedtuple
            return d.kind(*children)
        return d.kind(children)

    return build(treedef)


def _step(d, i):
    if issubclass(d.kind, dict):
        return f"[{d.keys[i]!r}]"
    if d.keys:
        return f".{d.keys[i]}"
    return f"[{i}]"


def leaf_paths(treedef: TreeDef, root=""):
    """The path of each leaf, in flatten's order: `root[1]['h']`."""
    out = []

    def visit(d, path):
        if d.kind == LEAF:
            out.append(path)
        elif d.kind != NONE:
            for i, c in enumerate(d.children):
                visit(c, path + _step(d, i))

    visit(treedef, root)
    return out


def describe(d: TreeDef):
    """A short text for a structure: `(*, {'h': *})`, `*` standing for a leaf."""
    if d.kind == LEAF:
        return "*"
    if d.kind == NONE:
        return "None"
    inner = [describe(c) for c in d.children]
    if issubclass(d.kind, dict):
        return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(d.keys, inner)) + "}"
    if d.keys:
        return f"{d.kind.__name__}(" + ", ".join(f"{k}={v}" for k, v in zip(d.keys, inner)) + ")"
    if issubclass(d.kind, list):
        return "[" + ", ".join(inner) + "]"
    return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"


def first_difference(expected: TreeDef, found: TreeDef, root=""):
    """(path, expected text, found text) at the first place two structures differ, or None."""
    if expected == found:
        return None
    if (expected.kind != found.kind or expected.keys != found.keys or
            len(expected.children) != len(found.children)):
        return root, describe(expected), describe(found)
    for i, (a, b) in enumerate(zip(expected.children, found.children)):
        diff = first_difference(a, b, root + _step(expected, i))
        if diff is not None:
            return diff
    return None
