"""Derivative rules of every differentiable operation of SPEC section 5, against finite differences.

One test per operation (each compiles its own small programs: numba's compile time grows faster
than linearly with a program's size, so many small programs are cheaper than a few big ones).
`check_grads` (see gradcheck.py) checks forward mode (`ns.jvp`) and reverse mode (`ns.vjp`)
against central differences in float64, and second order (forward and reverse over forward and
reverse). Every operation runs interpreted ("python", NUMBASCAN_MODE=python) to second order and
compiled ("cpu") to first order; the operations marked `order2` also to second order compiled
(one representative per rule shape, to keep the number of numba compilations reasonable).

Inputs are fresh random values away from the operations' non-differentiable points: away from 0
for abs/sign, distinct for max/min/maximum/minimum, positive for log/sqrt/the base of power, in
(0, 1) for logit, |x| < 1 for arcsin/arccos/arctanh, away from the bounds for clip and from the
integers for floor/ceil.
"""
import numpy as np
import pytest
import scipy.special as sps

import numbascan as ns
from gradcheck import check_grads


@pytest.fixture(params=["cpu", "python"])
def mode(request, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_MODE", request.param)
    return request.param


def signed(rng, shape, lo=0.3, hi=1.5):
    """Random values with random signs, |x| in [lo, hi]."""
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def distinct(rng, shape, gap=0.2):
    """Random values, pairwise at least `gap` apart (for max/min and their rules)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * gap + rng.uniform(0, gap / 4, n) - n * gap / 2).reshape(shape)



def pos(shape=(2, 3), lo=0.2, hi=1.2):
    return lambda rng: rng.uniform(lo, hi, shape)


def normal(shape=(2, 3)):
    return lambda rng: rng.standard_normal(shape)


def away(shape=(2, 3), lo=0.3, hi=1.5):
    return lambda rng: signed(rng, shape, lo, hi)


def scalar(lo=0.5, hi=1.5):
    return lambda rng: np.asarray(rng.uniform(lo, hi))


def distinct_(shape=(2, 3), gap=0.4):
    def make(rng):
        x = distinct(rng, shape, gap)
        return np.where(np.abs(x) < 0.2, x + 0.25, x)          # also away from 0 (prod)
    return make


def off_integers(shape=(2, 3)):
    return lambda rng: rng.integers(-2, 3, shape) + rng.uniform(0.1, 0.9, shape)


CASES = {}      # name -> (function, argument makers, second order compiled too)


def case(name, fn, *makers, order2=False):
    assert name not in CASES, name
    CASES[name] = (fn, makers, order2)


# elementwise, one argument
case("negative", np.negative, normal(), order2=True)
case("-x", lambda x: -x, normal())
case("abs", np.abs, away(), order2=True)
case("absolute", np.absolute, away())
case("exp", np.exp, normal(), order2=True)
case("expm1", np.expm1, normal())
case("log", np.log, pos(), order2=True)
case("log1p", np.log1p, pos())
case("sqrt", np.sqrt, pos())
case("square", np.square, normal())
case("sin", np.sin, normal())
case("cos", np.cos, normal())
case("tan", np.tan, pos(lo=-1.2, hi=1.2))
case("arcsin", np.arcsin, pos(lo=-0.9, hi=0.9))
case("arccos", np.arccos, pos(lo=-0.9, hi=0.9))
case("arctan", np.arctan, normal())
case("sinh", np.sinh, normal())
case("cosh", np.cosh, normal())
case("tanh", np.tanh, normal(), order2=True)
case("arctanh", np.arctanh, pos(lo=-0.9, hi=0.9))
case("reciprocal 1/x", lambda x: 1 / x, away())
case("expit", sps.expit, normal(), order2=True)
case("logit", sps.logit, pos((5,), 0.05, 0.95))
case("erf", sps.erf, normal())
# piecewise constant: zero derivative, through a product so the result depends on x
case("sign", lambda x, y: np.sign(x) * y, away(), normal())
case("floor", lambda x, y: np.floor(y) * x, normal(), off_integers())
case("ceil", lambda x, y: np.ceil(y) * x, normal(), off_integers())
case("floor_divide", lambda x, y: np.floor_divide(y, 1.0) * x + y // 1.0, normal(),
     off_integers())
case("comparison", lambda x, y: (x > y) * x + (x <= y) * y, distinct_(), distinct_())
# elementwise, two arguments, with broadcasting ((2, 3) with (3,) or a 0-d array)
case("add", np.add, normal(), normal((3,)))
case("+", lambda x, y: x + y + 1.5, normal(), scalar())
case("subtract", np.subtract, normal(), normal((3,)))
case("-", lambda x, y: y - x - 2.0, normal(), normal((3,)))
case("multiply", np.multiply, normal(), normal((3,)), order2=True)
case("*", lambda x, s: x * s * 3, normal(), scalar())
case("divide", np.divide, normal(), away((3,)), order2=True)
case("true_divide", np.true_divide, normal((3,)), away())
case("/", lambda x, s: x / s / 4 + 1 / x, away(), scalar())
case("power", np.power, pos(), normal((3,)), order2=True)
case("**", lambda x, y: y ** x, normal(), pos((3,)))
case("** int", lambda x: x ** 2 + x ** 3 - x ** -1, away())
case("** float", lambda x: x ** 0.5 + x ** -1.5, pos())
case("** 0-d", lambda x, s: x ** s + s ** x, pos(), scalar())
case("arctan2", np.arctan2, away(), away((3,)), order2=True)
case("maximum", np.maximum, distinct_(), distinct_((3,)), order2=True)
case("minimum", np.minimum, distinct_(), distinct_((3,)))
case("maximum const", lambda x: np.maximum(x, 0.05) + np.minimum(0.1, x), distinct_())
case("where", lambda x, y: np.where(x > 0, x * y, np.sin(y)), away(), normal(), order2=True)
case("where scalar", lambda x, y: np.where(y < 0, 2.0, x) + np.where(x > 0, y, -1.0),
     away(), away())
case("clip", lambda x: np.clip(x, -0.9, 0.8) + np.clip(2 * x, -0.9, None),
     lambda rng: np.array([[-1.3, -0.5, 0.3], [0.95, 1.4, -0.1]]) + rng.uniform(-0.04, 0.04, (2, 3)))
# scipy.special.logsumexp
case("logsumexp", sps.logsumexp, normal())
case("logsumexp axis", lambda x: sps.logsumexp(x, axis=0) + sps.logsumexp(x.T, axis=1), normal())
case("logsumexp keepdims", lambda x: sps.logsumexp(x, axis=-1, keepdims=True), normal())
# linear algebra: dot / matmul / @ in every 1-d/2-d combination
for _name, _f in [("dot", np.dot), ("matmul", np.matmul), ("@", lambda a, b: a @ b)]:
    case(f"{_name} 1-d 1-d", _f, normal((3,)), normal((3,)), order2=_name == "dot")
    case(f"{_name} 2-d 1-d", _f, normal((2, 3)), normal((3,)), order2=_name == "matmul")
    case(f"{_name} 1-d 2-d", _f, normal((3,)), normal((3, 4)), order2=_name == "@")
    case(f"{_name} 2-d 2-d", _f, normal((2, 3)), normal((3, 4)), order2=_name == "@")
case("x.dot", lambda A, b: A.dot(b), normal((2, 3)), normal((3,)))
case("dot 0-d", lambda s, A: np.dot(s, A), scalar(), normal())
case("@ transposed", lambda A, B: B.T @ A.T, normal((2, 3)), normal((3, 4)))
case("outer", np.outer, normal((3,)), normal((2,)), order2=True)
case("outer 2-d", np.outer, normal((2, 2)), normal((3,)))
case("inner 1-d", np.inner, normal((3,)), normal((3,)))
case("inner 2-d 1-d", np.inner, normal((2, 3)), normal((3,)))
case("inner 2-d 2-d", np.inner, normal((2, 3)), normal((4, 3)))
case("tensordot axes=1", lambda A, B: np.tensordot(A, B, axes=1), normal((2, 3)),
     normal((3, 4)), order2=True)
case("tensordot axes=2", lambda A, B: np.tensordot(A, B, axes=2), normal((2, 3)), normal((2, 3)))
case("tensordot pairs", lambda A, B: np.tensordot(A, B, axes=([0], [1])), normal((3, 2)),
     normal((4, 3)))
# reductions, with axis and keepdims
for _red in ("sum", "mean", "prod", "max", "min"):
    _f = getattr(np, _red)
    for _axis in (None, 0, 1, -1, (0, 1)):
        for _keep in (False, True):
            case(f"{_red} axis={_axis} keepdims={_keep}",
                 (lambda f, a, k: lambda x: f(x, axis=a, keepdims=k))(_f, _axis, _keep),
                 distinct_(), order2=_red in ("prod", "max") and _axis == 1 and not _keep)
case("x.sum() x.mean(0) x.prod(1)", lambda x: x.sum() + x.mean(axis=0) * x.prod(axis=1)[:, None],
     distinct_())
case("x.max() x.min(1) amax", lambda x: x.max() + x.min(axis=1)[:, None] + np.amax(x, axis=0),
     distinct_())
case("sum/prod/max of 0-d", lambda s: np.sum(s) + np.prod(s * 2.0) + np.max(s), scalar())
case("reductions of 3-d", lambda x: {"sum": np.sum(x, axis=(0, 2)),
                                     "prod": np.prod(x, axis=1, keepdims=True),
                                     "max": np.max(x, axis=(1, 2))}, distinct_((2, 3, 2), 0.3))
for _axis in (None, 0, 1, -1):
    case(f"cumsum axis={_axis}", (lambda a: lambda x: np.cumsum(x * x, axis=a))(_axis), normal(),
         order2=_axis == 1)
case("x.cumsum", lambda x: x.cumsum(axis=0) + np.cumsum(x, axis=(0, 1)[1]), normal())
case("cumsum 3-d", lambda x: np.cumsum(x, axis=1), normal((2, 3, 2)))
# shapes (after a non-linear operation, so that second derivatives are not trivially zero)
case("reshape", lambda x: np.reshape(x * x, (3, 2)), normal(), order2=True)
case("x.reshape", lambda x: (x * x).reshape(-1) + x.reshape(6)[::-1], normal())
case("reshape 3-d", lambda x: np.sin(x).reshape((1, 2, 3)) + x.reshape(6, 1)[:3, 0],
     normal())
case("ravel", lambda x: np.ravel(x * x), normal())
case("transpose", lambda x: np.transpose(x * x), normal(), order2=True)
case(".T", lambda x, y: x.T * y.T, normal(), normal())
case("transpose axes", lambda x: np.transpose(np.sin(x), (2, 0, 1)), normal((2, 3, 2)))
case("swapaxes", lambda x: np.swapaxes(x * x, 0, 1), normal())
case("expand_dims", lambda x: np.expand_dims(x * x, 0) + np.expand_dims(x, -1), normal((3,)))
case("squeeze", lambda x: np.squeeze(np.reshape(x * x, (1, 2, 1, 3))), normal())
case("squeeze axis", lambda x: np.squeeze(np.sin(x), axis=0), normal((1, 3)))
case("concatenate", lambda x, y: np.concatenate([x, y * y, x * y]), normal(), normal(),
     order2=True)
case("concatenate axis=1", lambda x, y: np.concatenate([x * x, y], axis=1), normal(),
     normal((2, 2)))
case("concatenate 1-d", lambda z: np.concatenate([z, z * z, z[:1]]), normal((3,)))
case("stack", lambda x, y: np.stack([x, x * y]), normal(), normal(), order2=True)
case("stack axis=1", lambda z: np.stack([z, z ** 2], axis=1), normal((3,)))
case("stack axis=-1", lambda x, y: np.stack([x * y, y], axis=-1), normal(), normal())
case("broadcast_to", lambda x, z: np.broadcast_to(z * z, (2, 3)) * x, normal(), normal((3,)),
     order2=True)
case("broadcast_to 3-d", lambda z: np.broadcast_to(np.reshape(np.sin(z), (3, 1)), (2, 3, 4)),
     normal((3,)))
case("copy", lambda x: np.copy(x * x) + (x + 1).copy(), normal())
case("np.array of traced scalars", lambda z, x: np.array([z[0] * x[0, 0], z[1], x[1, 2]]),
     normal((3,)), normal())
# indexing
for _key in ["1", "-1", ":, 0", "1:3", "::-1", "3:0:-2", "::2, ::-1", "1, 2", "-1, -2",
             "..., 1", "None, 1", "-2:, 1:", ":, ::-2", "2:, -1::-1", "1::2"]:
    case(f"x[{_key}]", eval(f"lambda x: (x * x)[{_key}]"), normal((4, 3)),
         order2=_key in ("::-1", "1, 2"))
case("x[...] pieces", lambda x: x[0] + x[1:2, :] * x[-1, 0], normal((4, 3)))


@pytest.mark.parametrize("name", list(CASES))
def test_rule(name, mode, rng):
    fn, makers, order2 = CASES[name]
    args = tuple(make(rng) for make in makers)
    check_grads(fn, args, order=2 if order2 or mode == "python" else 1)


# ------------------------------------------------------------------------------------------------
# casts


def test_astype_float64_to_float32(rng, mode):
    """float64 -> float32 -> float64: derivatives pass through the casts, in float32 precision."""
    def f(x):
        y = np.sin(x).astype(np.float32)
        return {"roundtrip": (y * np.float32(2)).astype(np.float64) * x,
                "f32": (y * y).astype(np.float64)}
    check_grads(f, (rng.uniform(0.5, 1.5, 4),), order=2, eps=1e-3, rtol=1e-3, atol=1e-4)


def test_astype_float32_input(rng, mode):
    """float32 -> float64: the cotangent of a float32 argument is float32."""
    def f(x32):
        x = x32.astype(np.float64)
        return {"f64": np.exp(x) * x, "f32": np.square(x32)}
    check_grads(f, (rng.uniform(0.5, 1.5, 4).astype(np.float32),), order=1, eps=1e-2,
                rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# indexing by a traced integer


def test_indexing_by_traced_integer_in_scan(rng, mode):
    """X[i, j] and X[j] with i, j from integer sequences; X read as a non_sequence and from
    the closure, v from the closure."""
    idx_i = np.array([0, 2, 1, 2, 0])
    idx_j = np.array([1, 0, 1, 2, 2])

    def f(X, v):
        def step(i, j, h, X):
            return h * X[i, j] + np.sum(X[j] * v[i])
        h, _ = ns.scan(step, sequences=[idx_i, idx_j], outputs_info=[np.ones(())],
                       non_sequences=[X])
        g, _ = ns.scan(lambda i, j: np.sin(X[i, j]) * v[j], sequences=[idx_i, idx_j])
        return {"fed": h, "map": g}

    check_grads(f, (rng.uniform(0.5, 1.5, (3, 3)), rng.standard_normal(3)),
                order=2 if mode == "python" else 1)
