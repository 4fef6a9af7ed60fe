"""Stage: user API — `ns.linear_recurrence`, a linear recurrence solved by compiled loops.

    xs = ns.linear_recurrence(a, b, x0, reverse=False, *, kind=None, mode=None)

The recurrence and its operands are trace/linrec.py's. Inside a trace (ns.jit, a scan's step,
derivatives) the call records the `linrec` primitive, with `mode="cuda"` when asked (the
program then runs its recurrences by the block scan on the GPU, runtime/cuda.py). An eager
call runs in the mode `choose_mode` picks (api/scan.py): "python" runs the primitive's NumPy
loop (the reference); "cpu" the compiled loops of codegen/linrec.py (runtime/linrec.py: across
threads when the work, state elements times steps, is at least
`NUMBASCAN_LINREC_PARALLEL_MIN` and more than one thread is allowed, numba's thread count
capped by `NUMBASCAN_NUM_THREADS`; both read at each call); "cuda" the block-level parallel
prefix scan of codegen/cuda_linrec.py on the GPU (NumPy operands are copied there and the
states back; with a CUDA array among the operands the states stay on the device). A
recurrence inside a mode="cuda" scan's step runs in one thread of that step's kernel.
"""

from __future__ import annotations

from ..core.context import current_trace
from ..core.primitives import TABLE
from ..loop.args import _is_device_array
from ..runtime.cuda import cuda_module, linear_recurrence as on_gpu, to_device
from ..runtime.linrec import compiled
from ..trace import linrec as traced
from ..trace.tracer import Tracer
from .scan import choose_mode


def _host(x):
    """A CUDA array's values as a NumPy array; anything else as it is."""
    if not _is_device_array(x):
        return x
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    from numba import cuda
    return cuda.as_cuda_array(x).copy_to_host()


def linear_recurrence(a, b, x0, reverse=False, *, kind=None, mode=None):
    """The states x_0 .. x_{T-1} of x_t = a_t * x_{t-1} + b_t (kind "diagonal", elementwise)
    or x_t = x_{t-1} @ a_t + b_t (kind "matrix", row vectors), from x_{-1} = x0; with
    `reverse`, for t = T-1 down to 0 from x_T = x0. `a` without the time axis is every step's
    coefficient. See docs/guide.md and trace/linrec.py."""
    if current_trace() is not None or any(isinstance(x, Tracer) for x in (a, b, x0)):
        return traced.linear_recurrence(a, b, x0, reverse, kind=kind, mode=mode)
    inputs = (a, b, x0)
    mode = choose_mode(mode, inputs)
    on_device = any(_is_device_array(x) for x in inputs)
    if mode == "cuda":            # device operands stay there (checked by shape and dtype)
        a, b, x0, rec = traced.operands(a, b, x0, reverse, kind)
        states = on_gpu(a, b, x0, rec.kind, rec.reverse, rec.invariant)
        return states if on_device else states.copy_to_host()
    a, b, x0, rec = traced.operands(*(_host(x) for x in inputs), reverse, kind)
    if mode == "python":
        out = TABLE["linrec"].impl(a, b, x0, **rec.params())
    else:
        out = compiled(a, b, x0, rec)
    if on_device:
        return to_device(cuda_module(), out)
    return out
