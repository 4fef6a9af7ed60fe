"""Stage: user-facing state — `ns.shared` containers and the `Updates` a scan returns.

A `Shared` behaves like its value in NumPy expressions. Where it is read decides what it is:
inside a trace it becomes an input of the trace (a carried state if the step returns an update
for it), inside a `python`-mode scan it is the current carried value, elsewhere its value.
"""

from __future__ import annotations

from contextvars import ContextVar

import numpy as np

from .core.context import current_trace
from .core.ir import check_dtype

# Inside a python-mode scan step: one dict id(Shared) -> current value per scan running in
# this context (innermost last).
_PYTHON_STATES: ContextVar[tuple] = ContextVar("numbascan_python_states", default=())


class Shared:
    __array_priority__ = 1001

    def __init__(self, value, name=None):
        self.name = name
        self.set_value(value)

    def get_value(self, borrow=False):
        return self._value if borrow else self._value.copy()

    def set_value(self, value):
        arr = np.array(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"ns.shared: expected a numeric value, found {type(value).__name__} "
                            f"with dtype {arr.dtype}")
        check_dtype(arr.dtype, "ns.shared" if self.name is None else f"ns.shared {self.name!r}")
        self._value = arr

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return self._value.dtype

    @property
    def ndim(self):
        return self._value.ndim

    def __repr__(self):
        return f"shared({self.name or ''}{'=' if self.name else ''}{self._value!r})"

    def current(self):
        """What a read of this variable means here: a tracer, a carried value, or the value."""
        t = current_trace()
        if t is not None:
            return t.read_shared(self)
        for frame in reversed(_PYTHON_STATES.get()):
            if id(self) in frame:
                return frame[id(self)]
        return self._value

    def __array__(self, dtype=None, copy=None):
        v = self.current()
        return np.asarray(v, dtype=dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = [x.current() if isinstance(x, Shared) else x for x in inputs]
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        args = [x.current() if isinstance(x, Shared) else x for x in args]
        return func(*args, **kwargs)

    def __getitem__(self, key):
        return self.current()[key]

    def __len__(self):
        return len(self._value)

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __add__ = lambda s, o: np.add(s.current(), o)
    __radd__ = lambda s, o: np.add(o, s.current())
    __sub__ = lambda s, o: np.subtract(s.current(), o)
    __rsub__ = lambda s, o: np.subtract(o, s.current())
    __mul__ = lambda s, o: np.multiply(s.current(), o)
    __rmul__ = lambda s, o: np.multiply(o, s.current())
    __truediv__ = lambda s, o: np.true_divide(s.current(), o)
    __rtruediv__ = lambda s, o: np.true_divide(o, s.current())
    __floordiv__ = lambda s, o: np.floor_divide(s.current(), o)
    __pow__ = lambda s, o: np.power(s.current(), o)
    __rpow__ = lambda s, o: np.power(o, s.current())
    __matmul__ = lambda s, o: np.matmul(s.current(), o)
    __rmatmul__ = lambda s, o: np.matmul(o, s.current())
    __neg__ = lambda s: np.negative(s.current())
    __lt__ = lambda s, o: np.less(s.current(), o)
    __le__ = lambda s, o: np.less_equal(s.current(), o)
    __gt__ = lambda s, o: np.greater(s.current(), o)
    __ge__ = lambda s, o: np.greater_equal(s.current(), o)


def shared(value, name=None):
    """A mutable container a scan step may read and update (Theano's `theano.shared`)."""
    return Shared(value, name)


class Updates(dict):
    """`{shared: new_value}` returned by scan. Nothing changes until `apply()` is called."""

    def apply(self):
        # values are read before any variable is set: a value may be another Shared
        values = [(k, np.array(v, dtype=k.dtype)) for k, v in self.items()]
        for k, v in values:
            k.set_value(v)
        return self
