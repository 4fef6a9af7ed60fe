"""Derivative checks against central finite differences (float64), in the manner of JAX's
`jax.test_util.check_grads`.

`check_grads(f, args, order=1|2, modes=("fwd", "rev"))`:

- "fwd": `ns.jvp(f, args, v)` against the central difference `(f(x + eps v) - f(x - eps v)) / 2eps`
  along a random direction `v`, element by element; the primal output against `f(*args)`.
- "rev": `ns.vjp(f, *args)`; for each output leaf k separately (cotangent random on leaf k, zero
  elsewhere) the transposition identity `<vjp(ct), v> == <ct, J v>` with `J v` by finite
  differences, so that a failure names the output leaf (group several operations into one function
  returning a dict and the failing operation is named). Cotangents must have the primals' shapes
  and dtypes.
- `order=2`: the same checks applied to the derivative functions themselves,
  `x -> jvp(f, x, v)[1]` (forward over forward, reverse over forward) and
  `x -> vjp(f, x)[1](ct)` for one random cotangent `ct` (forward over reverse = Hessian-vector
  products, reverse over reverse), whose finite differences are differences of numbascan's first derivatives.
  `v` and `ct` are passed as extra (non-differentiated) arguments so each derivative function
  compiles once.

`f` is called eagerly on NumPy arrays for the finite differences, so it must be plain NumPy code
(scans included). Its output may be an array or a list/tuple/dict of arrays. All arguments must be
floating-point arrays (close over integer arrays instead); `wrt` selects the arguments to perturb.
"""
from __future__ import annotations

import numpy as np
from numbascan.trace.program import _unflatten as unflatten  # noqa: F401  (the library's own)

import numbascan as ns

__all__ = ["check_grads", "check_jvp", "check_vjp", "flatten", "unflatten", "numerical_jvp"]


# ------------------------------------------------------------------------------------------------
# output trees (the same leaf order as numbascan's own flattening: lists, tuples, dicts in order)


def flatten(tree, path=""):
    """[(name, leaf)] and a spec to rebuild the tree."""
    if isinstance(tree, (list, tuple)):
        items, specs = [], []
        for i, x in enumerate(tree):
            sub, s = flatten(x, f"{path}[{i}]")
            items += sub
            specs.append(s)
        return items, (type(tree), specs)
    if isinstance(tree, dict):
        items, specs = [], []
        for k, x in tree.items():
            sub, s = flatten(x, f"{path}[{k!r}]")
            items += sub
            specs.append((k, s))
        return items, (dict, specs)
    return [(path or "output", tree)], None


def _leaves(tree):
    return [np.asarray(x) for _, x in flatten(tree)[0]]


# ------------------------------------------------------------------------------------------------
# finite differences


def _random_like(rng, x):
    x = np.asarray(x)
    return rng.standard_normal(x.shape).astype(x.dtype)


def _shifted(args, wrt, vs, h):
    return [np.asarray(a + h * v, dtype=np.asarray(a).dtype) if i in wrt else a
            for i, (a, v) in enumerate(zip(args, vs))]


def numerical_jvp(f, args, wrt, vs, eps):
    """Central difference of every output leaf along direction `vs`, and a roundoff estimate."""
    plus = _leaves(f(*_shifted(args, wrt, vs, eps)))
    minus = _leaves(f(*_shifted(args, wrt, vs, -eps)))
    out = []
    for p, m in zip(plus, minus):
        p, m = p.astype(np.float64), m.astype(np.float64)
        fd = (p - m) / (2 * eps)
        raw = np.asarray(plus[len(out)]).dtype
        unit = np.finfo(raw if raw.kind == "f" else np.float64).eps
        noise = 8 * unit * (np.abs(p) + np.abs(m) + 1.0) / (2 * eps)
        out.append((fd, noise))
    return out


# ------------------------------------------------------------------------------------------------
# the checks


def _close(actual, expected, noise, rtol, atol, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = atol + rtol * np.abs(expected) + noise
    bad = ~(np.abs(actual - expected) <= tol)
    if np.any(bad):
        idx = np.argwhere(bad)[:5]
        details = ", ".join(f"{tuple(i)}: {actual[tuple(i)]!r} vs {expected[tuple(i)]!r}"
                            for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} element(s) differ "
                             f"(numbascan vs reference) {details}")


def _directions(args, wrt, rng):
    return [_random_like(rng, a) if i in wrt else np.zeros_like(np.asarray(a))
            for i, a in enumerate(args)]


def _normalize(args, wrt):
    args = [np.asarray(a) for a in args]
    wrt = tuple(range(len(args))) if wrt is None else \
        ((wrt,) if isinstance(wrt, int) else tuple(wrt))
    for i in wrt:
        assert args[i].dtype.kind == "f", f"argument {i}: check_grads needs float arguments"
    return args, wrt


def check_jvp(f, args, wrt=None, eps=1e-6, rtol=1e-6, atol=1e-8, rng=None, label="f"):
    """ns.jvp against finite differences along a random direction."""
    rng = np.random.default_rng(0) if rng is None else rng
    args, wrt = _normalize(args, wrt)
    vs = _directions(args, wrt, rng)
    out, tout = ns.jvp(f, args, vs)
    names = [n for n, _ in flatten(f(*args))[0]]
    ref = _leaves(f(*args))
    outs, touts = _leaves(out), _leaves(tout)
    assert len(outs) == len(ref), f"{label} jvp: {len(outs)} outputs, f gives {len(ref)}"
    assert len(touts) == len(ref), f"{label} jvp: {len(touts)} tangents for {len(ref)} outputs"
    fd = numerical_jvp(f, args, wrt, vs, eps)
    for name, o, r, t, (d, noise) in zip(names, outs, ref, touts, fd):
        _close(o, r, 0.0, max(rtol, 1e-9), max(atol, 1e-12), f"{label} jvp primal {name}")
        assert t.shape == r.shape, f"{label} jvp tangent {name}: shape {t.shape} != {r.shape}"
        if r.dtype.kind == "f":
            assert t.dtype == r.dtype, \
                f"{label} jvp tangent {name}: dtype {t.dtype} != the output's {r.dtype}"
        _close(t, d, noise, rtol, atol, f"{label} jvp tangent {name}")


def check_vjp(f, args, wrt=None, eps=1e-6, rtol=1e-6, atol=1e-8, rng=None, label="f"):
    """ns.vjp against finite differences: <vjp(ct), v> == <ct, J v>, one output leaf at a time."""
    rng = np.random.default_rng(1) if rng is None else rng
    args, wrt = _normalize(args, wrt)
    vs = _directions(args, wrt, rng)
    out, vjp_fn = ns.vjp(f, *args)
    ref_items, spec = flatten(f(*args))
    outs = _leaves(out)
    assert len(outs) == len(ref_items), f"{label} vjp: {len(outs)} outputs, f gives " \
                                        f"{len(ref_items)}"
    for (name, r), o in zip(ref_items, outs):
        _close(o, r, 0.0, max(rtol, 1e-9), max(atol, 1e-12), f"{label} vjp primal {name}")
    fd = numerical_jvp(f, args, wrt, vs, eps)
    for k, (name, r) in enumerate(ref_items):
        r = np.asarray(r)
        if r.dtype.kind != "f":
            continue
        cts = [np.zeros(np.shape(x), np.asarray(x).dtype) for _, x in ref_items]
        cts[k] = _random_like(rng, r)
        in_cts = vjp_fn(unflatten(spec, cts))
        assert isinstance(in_cts, tuple) and len(in_cts) == len(args), \
            f"{label} vjp: vjp_fn gave {type(in_cts).__name__} of {len(in_cts)}, expected a " \
            f"tuple of {len(args)}"
        for i in wrt:
            c = np.asarray(in_cts[i])
            assert c.shape == args[i].shape, \
                f"{label} vjp cotangent of argument {i}: shape {c.shape} != {args[i].shape}"
            assert c.dtype == args[i].dtype, \
                f"{label} vjp cotangent of argument {i}: dtype {c.dtype} != {args[i].dtype}"
        lhs = sum(float(np.vdot(np.asarray(in_cts[i], np.float64), vs[i].astype(np.float64)))
                  for i in wrt)
        d, noise = fd[k]
        ct = cts[k].astype(np.float64)
        rhs = float(np.vdot(ct, d))
        tol = float(np.sum(np.abs(ct) * (atol + rtol * np.abs(d) + noise)))
        tol += rtol * sum(float(np.sum(np.abs(np.asarray(in_cts[i], np.float64) * vs[i])))
                          for i in wrt)
        assert abs(lhs - rhs) <= tol, \
            f"{label} vjp w.r.t. output {name}: <vjp(ct), v> = {lhs!r} but <ct, J v> = " \
            f"{rhs!r} by finite differences (tolerance {tol:.3g})"


def check_grads(f, args, order=1, modes=("fwd", "rev"), eps=1e-6, rtol=1e-6, atol=1e-8,
                wrt=None, seed=0):
    """Check numbascan's derivatives of `f` at `args` up to `order` (1 or 2) in `modes`."""
    if isinstance(modes, str):
        modes = (modes,)
    for m in modes:
        if m not in ("fwd", "rev"):
            raise ValueError(f"modes: expected 'fwd' and/or 'rev', found {m!r}")
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, found {order!r}")
    args, wrt = _normalize(args, wrt)
    rng = np.random.default_rng(seed)
    kw = dict(eps=eps, rtol=rtol, atol=atol)
    for m in modes:
        (check_jvp if m == "fwd" else check_vjp)(f, args, wrt=wrt, rng=rng, label=m, **kw)
    if order == 1:
        return
    n = len(args)
    for outer in modes:
        if outer == "fwd":
            vs = _directions(args, wrt, rng)

            def df(*xv):
                return ns.jvp(f, list(xv[:n]), list(xv[n:]))[1]

            for m in modes:
                (check_jvp if m == "fwd" else check_vjp)(
                    df, args + vs, wrt=wrt, rng=rng, label=f"{m} over fwd", **kw)
        else:
            items, spec = flatten(f(*args))

            def df(*xc):
                _, vjp_fn = ns.vjp(f, *xc[:n])
                in_cts = vjp_fn(unflatten(spec, list(xc[n:])))
                return tuple(in_cts[i] for i in wrt)

            cts = [_random_like(rng, x) if np.asarray(x).dtype.kind == "f"
                   else np.zeros(np.shape(x), np.asarray(x).dtype) for _, x in items]
            for m in modes:
                (check_jvp if m == "fwd" else check_vjp)(
                    df, args + cts, wrt=wrt, rng=rng, label=f"{m} over rev", **kw)
