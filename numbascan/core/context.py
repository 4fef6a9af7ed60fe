"""Stage: core — the traces being recorded in this context (each thread and call has its own).

`current_trace()` is how a value learns whether it is being traced: reads of `ns.shared`
variables, random draws and `ns.scan` ask it. It sits below tracing so that those can ask
without importing the tracer; `trace/tracer.py` opens and closes the traces.
"""

from __future__ import annotations

from contextvars import ContextVar

# The traces open in this context, outermost first: each call (and each thread) has its own.
_TRACES: ContextVar[tuple] = ContextVar("numbascan_traces", default=())


def current_trace():
    traces = _TRACES.get()
    return traces[-1] if traces else None


def active_traces() -> tuple:
    """The traces open in this context, outermost first."""
    return _TRACES.get()
