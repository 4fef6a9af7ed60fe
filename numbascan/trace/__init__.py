"""Stage: tracing — NumPy -> IR.

`tracer.py` records equations; `numpy_api.py` maps NumPy's API to primitives (importing it here
fills the tracer's dispatch table, `tracer.NUMPY_API`); `captures.py` hands a traced function
tracers for the arrays it names; `program.py` traces a whole function of arrays; `names.py` names
the traced functions in messages, `alternatives.py` says what to use instead of an operation
that is not traced.
"""

# imported for what they register: numpy_api.py fills the tracer's table of NumPy entry points
from . import numpy_api  # noqa: F401
