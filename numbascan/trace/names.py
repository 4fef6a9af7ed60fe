"""Stage: tracing — how messages and compile records name the functions numbascan traces.

A user's function is named by its qualified name (`loss`, `Model.step`, `fit.<locals>.step`).
The functions numbascan's transformations make and trace on the user's behalf (the program of
`ns.grad(loss)`, the step of `ns.jacfwd(f)` over the basis, ...) are named after the
transformation and the user's function, e.g. `ns.grad(loss)`, by `named`: messages then show
what the user wrote, never numbascan's own closures (`value_and_grad.<locals>.build`).
"""

from __future__ import annotations

# the attribute `named` sets: the name of a function made by a transformation
LABEL = "_numbascan_label"


def named(fn, label):
    """`fn`, named `label` (e.g. "ns.grad(loss)") in messages, records and its repr."""
    fn.__name__ = fn.__qualname__ = label
    setattr(fn, LABEL, label)
    return fn


def function_name(fn) -> str:
    """The name of `fn` in messages: a transformation's label, else its qualified name (the
    function an ns.jit function wraps)."""
    fn = getattr(fn, "fn", fn) if type(fn).__name__ == "JitFunction" else fn
    label = getattr(fn, LABEL, None)
    if label is not None:
        return label
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def short_name(fn) -> str:
    """`function_name` without the functions a nested one is defined in: `kf_step` for
    `loss.<locals>.kf_step` (a chain of contexts names `loss` next, when it is traced)."""
    return function_name(fn).rsplit("<locals>.", 1)[-1]


def describe(fn, kind="function", qualified=False) -> str:
    """`fn` as a message names it: "function 'kf_step'" (`kind` and the quoted `short_name`,
    or with `qualified` the `function_name`) for a user's function, the label alone
    ("ns.grad(loss)") for a transformation's."""
    inner = getattr(fn, "fn", fn) if type(fn).__name__ == "JitFunction" else fn
    if getattr(inner, LABEL, None) is not None:
        return function_name(fn)
    return f"{kind} {(function_name if qualified else short_name)(fn)!r}"
