"""Stage: tracing — run a user function once on `Tracer`s and record an `IR`.

A `Trace` collects equations. Tracers enter NumPy through `__array_ufunc__`,
`__array_function__` and the Python operators; `numpy_api.py` maps each NumPy entry point to
primitives. Anything a trace meets that it does not own becomes an input of the trace, read at
call time: a NumPy array (closure, global or a constant built inside the function), a tracer of
an enclosing trace (a nested scan's closure), an `ns.shared` value, or a random stream's key
and counter. Python scalars become literals (compile-time constants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import primitives
from ..core.context import _TRACES, current_trace
from ..core.ir import IR, Lit, Var, make_eqn
from ..shared import Shared


class TracingError(TypeError):
    """Raised when a traced function uses something numbascan cannot record.

    `op` names the operation (e.g. "np.linalg.solve" or "Python `if` on a traced value").
    """

    def __init__(self, op, detail=""):
        self.op = op
        self.detail = detail
        self.where: list[str] = []
        super().__init__(self._message())

    def _message(self):
        where = "".join(f" in {w}" for w in self.where)
        return f"cannot trace {self.op}{where}" + (f": {self.detail}" if self.detail else "")

    def add_context(self, where):
        """Name the function being traced (innermost first) in the message; a transformation's
        program and its step (ns.jacfwd's) name the same thing once."""
        if not self.where or self.where[-1] != where:
            self.where.append(where)
        self.args = (self._message(),)


# NumPy's entry points on tracers, by name: numpy_api.py fills this table when it is
# imported (trace/__init__.py imports it), so that this module never imports it.
NUMPY_API: dict = {}


@dataclass
class Capture:
    var: Var
    source: object           # ndarray, or a Tracer of an enclosing trace


class Trace:
    def __init__(self, name="trace", fn=None, kind="program"):
        self.name = name
        self.fn = fn
        self.kind = kind              # "program" (ns.jit, derivatives) or "step" (a scan step)
        self.eqns: list = []
        self.args: list[Var] = []
        self.captures: list[Capture] = []
        self._capture_ids: dict[int, Var] = {}
        self.shared: dict = {}        # Shared -> Var (first read order)
        self.rng: dict = {}           # stream -> (key Var, base Var)
        self.rng_used: dict = {}      # stream -> counters consumed since `rng_base`
        self.rng_base: dict = {}      # stream -> Tracer of its base, once an until-scan moved it
        self.created: dict = {}       # id -> array made while tracing (a constant, see runtime/cache.py)

    def __enter__(self):
        self._token = _TRACES.set(_TRACES.get() + (self,))
        return self

    def __exit__(self, *exc):
        _TRACES.reset(self._token)
        parent = current_trace()
        if parent is not None:        # constants of a nested trace are constants of its parent
            parent.created.update(self.created)

    # -- inputs ---------------------------------------------------------------------------------
    def new_arg(self, dtype, shape):
        v = Var(np.dtype(dtype), tuple(int(s) for s in shape))
        self.args.append(v)
        return Tracer(self, v)

    def _capture(self, source, dtype, shape):
        key = id(source)
        base = getattr(source, "base", None)
        while base is not None and id(source) not in self.created:
            if id(base) in self.created:          # a view of a constant is a constant
                self.created[id(source)] = source
            base = getattr(base, "base", None)
        if key not in self._capture_ids:
            v = Var(np.dtype(dtype), tuple(shape))
            self._capture_ids[key] = v
            self.captures.append(Capture(v, source))
        return self._capture_ids[key]

    def shared_var(self, k):
        if k not in self.shared:
            value = k.get_value(borrow=True)
            self.shared[k] = Var(value.dtype, value.shape)
        return self.shared[k]

    def read_shared(self, k):
        """The tracer for a read of shared variable `k` in this trace (`Shared.current`)."""
        return Tracer(self, self.shared_var(k))

    def rng_vars(self, stream):
        if stream not in self.rng:
            self.rng[stream] = (Var(np.dtype(np.uint64), ()), Var(np.dtype(np.uint64), ()))
            self.rng_used[stream] = 0
        return self.rng[stream]

    def rng_next(self, stream):
        """(key, base, offset): the stream's next counter in this trace is base + offset, with
        `key` and `base` tracers and `offset` a static int."""
        key, base = self.rng_vars(stream)
        moved = self.rng_base.get(stream)
        base = moved if moved is not None else Tracer(self, base)
        return Tracer(self, key), base, self.rng_used[stream]

    def rng_advance(self, stream, count):
        """The stream advances by `count` counters: an int, or a traced uint64 (the draws of
        an until-scan's steps that ran), after which later draws count from a traced base."""
        if isinstance(count, (int, np.integer)):
            self.rng_used[stream] += int(count)
            return
        _, base, offset = self.rng_next(stream)
        self.rng_base[stream] = base + np.uint64(offset) + count
        self.rng_used[stream] = 0

    def rng_moved(self, stream):
        """Traced uint64 counters consumed by this trace so far, or None when static."""
        if stream not in self.rng_base:
            return None
        _, base, offset = self.rng_next(stream)
        return base + np.uint64(offset) - Tracer(self, self.rng[stream][1])

    def lift(self, x):
        """The Var or Lit that stands for `x` inside this trace."""
        if isinstance(x, RunTracer):
            raise TracingError("this operation on the rows of a scan that stops early "
                               "(ns.until)", RunTracer.SUPPORTED)
        if isinstance(x, Tracer):
            if x.trace is self:
                return x.var
            if x.trace not in _TRACES.get():
                raise TracingError("a traced value used outside the function that made it",
                                   "return it from the traced function instead of keeping it")
            return self._capture(x, x.var.dtype, x.var.shape)
        if isinstance(x, Shared):
            return self.shared_var(x)
        if isinstance(x, (bool, int, float, np.bool_, np.number)) and not isinstance(x, complex):
            if isinstance(x, int) and not isinstance(x, bool) and not -2**63 <= x < 2**63:
                raise TypeError(f"integer literal {x} does not fit in int64")
            return Lit(x)
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        if arr.dtype.kind not in "biuf":
            # a TracingError: an eager scan then runs the step untraced, whose first step in
            # the reference loop raises what python mode raises (naming the output, if any)
            raise TracingError(f"a {type(x).__name__} value with dtype {arr.dtype}",
                               "numbascan traces bool, int and float arrays only")
        if arr is not x:                      # a list or tuple: a constant built in the function
            self.created[id(arr)] = arr
        return self._capture(arr, arr.dtype, arr.shape)

    # -- equations ------------------------------------------------------------------------------
    def bind(self, prim, inputs, **params):
        ins = [self.lift(x) for x in inputs]
        avals = primitives.abstract_eval(prim, ins, params)
        dtypes = [np.dtype(v.dtype) for v in ins] + [np.dtype(d) for d, _ in avals]
        if np.float16 in dtypes:
            # NumPy's own result for some operands (np.sqrt of an int8, astype(np.float16)), or
            # a float16 constant; not a TracingError: numba cannot run such a step untraced either
            found = ", ".join(d.name for d in dtypes[:len(ins)])
            raise TypeError(f"{prim} of ({found}): expected bool, integer, float32 or float64 "
                            f"values, found float16 (NumPy's result for these operands, or a "
                            f"float16 constant), which numbascan does not support (numba "
                            f"compiles no float16 code); convert to float32 first, e.g. "
                            f"x.astype(np.float32)")
        outs = [Var(np.dtype(d), tuple(s)) for d, s in avals]
        self.eqns.append(make_eqn(prim, ins, outs, params))
        return [Tracer(self, v) for v in outs]

    def bind1(self, prim, inputs, **params):
        return self.bind(prim, inputs, **params)[0]

    def to_ir(self, outputs, extra_inputs=()):
        outs = tuple(self.lift(o) for o in outputs)
        inputs = (tuple(self.args) + tuple(extra_inputs) + tuple(c.var for c in self.captures))
        return IR(inputs, tuple(self.eqns), outs)


def constant(arr):
    """Mark an array made while tracing as a constant of the trace (not a user's input)."""
    t = current_trace()
    if t is not None and isinstance(arr, np.ndarray):
        t.created[id(arr)] = arr
    return arr


def bind(prim, inputs, **params):
    """Record `prim` on the innermost active trace."""
    t = current_trace()
    if t is None:
        raise TracingError(prim, "no active trace")
    return t.bind1(prim, inputs, **params)


def is_traced(x):
    return isinstance(x, Tracer)


class Tracer:
    """A stand-in for an array while a function is traced. Shapes and dtypes are static."""

    __array_priority__ = 1000
    __slots__ = ("trace", "var")

    def __init__(self, trace, var):
        self.trace = trace
        self.var = var

    shape = property(lambda s: s.var.shape)
    dtype = property(lambda s: s.var.dtype)
    ndim = property(lambda s: s.var.ndim)
    size = property(lambda s: s.var.size)
    T = property(lambda s: np.transpose(s))

    def __repr__(self):
        return f"Tracer<{self.var.aval()}>"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d traced value")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __hash__(self):
        return id(self)

    def __bool__(self):
        raise TracingError("Python control flow (`if`, `while`, `and`, `or`, `bool()`) "
                           "on a traced value",
                           "use np.where for choices and ns.until to stop a scan")

    def _no_conversion(self, *a):
        raise TracingError("conversion of a traced value to a Python number",
                           "keep it an array; Python numbers are compile-time constants (for a "
                           "Python loop over an array's values, use whole-array operations)")

    __int__ = __float__ = __index__ = __complex__ = _no_conversion

    def __array__(self, dtype=None, copy=None):
        raise TracingError("np.asarray/np.array on a traced value",
                           "use the value directly, or .astype() to change its dtype; a "
                           "library function that converts its arguments to NumPy arrays "
                           "(np.vectorize, np.random's, most of SciPy's) cannot take traced "
                           "values: write it with operations numbascan traces (the guide's \"What "
                           "a step may use\")")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return NUMPY_API["apply_ufunc"](ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return NUMPY_API["apply_function"](func, args, kwargs)

    def __getitem__(self, key):
        return NUMPY_API["getitem"](self, key)

    def __setitem__(self, key, value):
        raise TracingError("item assignment on a traced value",
                           "traced values are immutable; build the result with np.where, "
                           "np.concatenate or np.stack")

    # operators go through NumPy so that one code path handles promotion and dispatch
    __add__ = lambda s, o: np.add(s, o)
    __radd__ = lambda s, o: np.add(o, s)
    __sub__ = lambda s, o: np.subtract(s, o)
    __rsub__ = lambda s, o: np.subtract(o, s)
    __mul__ = lambda s, o: np.multiply(s, o)
    __rmul__ = lambda s, o: np.multiply(o, s)
    __truediv__ = lambda s, o: np.true_divide(s, o)
    __rtruediv__ = lambda s, o: np.true_divide(o, s)
    __floordiv__ = lambda s, o: np.floor_divide(s, o)
    __rfloordiv__ = lambda s, o: np.floor_divide(o, s)
    __mod__ = lambda s, o: np.remainder(s, o)
    __rmod__ = lambda s, o: np.remainder(o, s)
    __pow__ = lambda s, o: np.power(s, o)
    __rpow__ = lambda s, o: np.power(o, s)
    __matmul__ = lambda s, o: np.matmul(s, o)
    __rmatmul__ = lambda s, o: np.matmul(o, s)
    __neg__ = lambda s: np.negative(s)
    __pos__ = lambda s: s
    __abs__ = lambda s: np.absolute(s)
    __invert__ = lambda s: np.invert(s)
    __and__ = lambda s, o: np.bitwise_and(s, o)
    __rand__ = lambda s, o: np.bitwise_and(o, s)
    __or__ = lambda s, o: np.bitwise_or(s, o)
    __ror__ = lambda s, o: np.bitwise_or(o, s)
    __xor__ = lambda s, o: np.bitwise_xor(s, o)
    __rxor__ = lambda s, o: np.bitwise_xor(o, s)
    __lt__ = lambda s, o: np.less(s, o)
    __le__ = lambda s, o: np.less_equal(s, o)
    __gt__ = lambda s, o: np.greater(s, o)
    __ge__ = lambda s, o: np.greater_equal(s, o)
    __eq__ = lambda s, o: np.equal(s, o)
    __ne__ = lambda s, o: np.not_equal(s, o)

    # array methods
    def sum(self, axis=None, dtype=None, keepdims=False):
        return np.sum(self, axis=axis, dtype=dtype, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, keepdims=False):
        return np.mean(self, axis=axis, dtype=dtype, keepdims=keepdims)

    def prod(self, axis=None, dtype=None, keepdims=False):
        return np.prod(self, axis=axis, dtype=dtype, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return np.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return np.min(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None, keepdims=False):
        return np.argmax(self, axis=axis, keepdims=keepdims)

    def argmin(self, axis=None, keepdims=False):
        return np.argmin(self, axis=axis, keepdims=keepdims)

    def all(self, axis=None, keepdims=False):
        return np.all(self, axis=axis, keepdims=keepdims)

    def any(self, axis=None, keepdims=False):
        return np.any(self, axis=axis, keepdims=keepdims)

    def cumsum(self, axis=None):
        return np.cumsum(self, axis=axis)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return np.reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return np.transpose(self, axes or None)

    def swapaxes(self, a, b):
        return np.swapaxes(self, a, b)

    def squeeze(self, axis=None):
        return np.squeeze(self, axis=axis)

    def ravel(self):
        return np.ravel(self)

    flatten = ravel

    def astype(self, dtype, copy=True):
        return NUMPY_API["astype"](self, dtype)

    def copy(self):
        return self

    def dot(self, other):
        return np.dot(self, other)

    def clip(self, a_min=None, a_max=None):
        return np.clip(self, a_min, a_max)

    def item(self, *a):
        self._no_conversion()

    def tolist(self):
        self._no_conversion()


class RunTracer(Tracer):
    """The rows of a scan that stops early (ns.until) in traced code: a buffer of `bound`
    rows (the static n_steps), of which the first `n` (a traced int64 scalar) ran.

    Operations see the rows that ran: elementwise arithmetic keeps the rows (the rows past `n`
    hold unspecified values), reductions over the rows mask the others, `xs[-1]` reads row
    `n - 1`, `xs.shape[0]` is `n`. numpy_api.py implements them on `buffer`; any other use
    is an error (`Trace.lift` refuses a RunTracer), never a silent read of the padding.
    """

    __slots__ = ("n",)
    SUPPORTED = ("the number of rows is a run-time value; supported: elementwise arithmetic, "
                 "sum/mean/prod/max/min/any/all/argmax/argmin/cumsum, xs @ W, xs[k], "
                 "xs[-k], xs[a:], xs[:b], xs[:-k], xs.shape[0], passing xs as a sequence "
                 "of another scan, and returning xs from an ns.jit function; or take xs[-1] "
                 "or a reduction")

    def __init__(self, trace, var, n):
        super().__init__(trace, var)
        self.n = n

    shape = property(lambda s: (s.n,) + tuple(s.var.shape[1:]))
    buffer = property(lambda s: Tracer(s.trace, s.var))
    bound = property(lambda s: s.var.shape[0])

    def __repr__(self):
        return f"RunTracer<{self.var.aval()}, rows run: {self.n!r}>"

    def __len__(self):
        raise TypeError("len() of the rows of a scan that stops early (ns.until): the number "
                        "of rows is a run-time value; use xs.shape[0]")

    def __iter__(self):
        raise TracingError("iterating over the rows of a scan that stops early (ns.until)",
                           self.SUPPORTED)

    @property
    def size(self):
        raise TracingError(".size of the rows of a scan that stops early (ns.until)",
                           self.SUPPORTED)

    def astype(self, dtype, copy=True):
        return RunTracer(self.trace, NUMPY_API["astype"](self.buffer, dtype).var, self.n)
