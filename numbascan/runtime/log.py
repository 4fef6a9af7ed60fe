"""Stage: runtime — compile messages: the `numbascan` logger times each trace and each compile.

INFO records: every trace of a step or a function (`traced`), and every compile of generated
code by numba (`compiled`), with its seconds and whether numba loaded the machine code from its
disk cache. DEBUG records: importing a generated module (writing it first when new). numba compiles a
function at its first call, so `first_call` compiles it then, explicitly, for the types of that
call's arguments (what numba's dispatcher would do inside the call) and times that alone, not
the loop that runs after it.

A compile slower than `SLOW_COMPILE_S` is a WARNING, once per step or function name, logged
whether or not the logger was configured (Python's last-resort handler prints it).

`NUMBASCAN_LOG=info` (or `debug`, `warning`, ...) at import adds a stderr handler to the
`numbascan` logger, at that level; without it the logger is left to the application (the root
logger is never touched).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from ..loop.args import ScanArgs
from ..loop.step import step_name
from ..trace.names import describe

logger = logging.getLogger("numbascan")

SLOW_COMPILE_S = 5.0

# names whose slow compile has been reported (once each); `_SLOW_LOCK` guards it
_SLOW_SEEN: set = set()
_SLOW_LOCK = threading.Lock()


def configure_from_env(environ=os.environ):
    """A stderr handler for the `numbascan` logger at the level `NUMBASCAN_LOG` names (once:
    a handler added before is reused). -> the handler, or None when the variable is unset."""
    value = environ.get("NUMBASCAN_LOG", "").strip()
    if not value:
        return None
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):            # `1`, `on`, ...: INFO
        level = logging.INFO
    handler = next((h for h in logger.handlers if getattr(h, "numbascan_env", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        handler.numbascan_env = True
        logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def seconds_text(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def label(what) -> str:
    """How records name a step (`ScanArgs`) or a function."""
    if isinstance(what, ScanArgs):
        return "step " + step_name(what)
    if isinstance(what, str):
        return what
    return describe(what, qualified=True)    # or a transformation's "ns.grad(loss)"


def timed_trace(trace, what, *args):
    """`trace(what, *args)`, with an INFO record of its time."""
    start = time.perf_counter()
    result = trace(what, *args)
    seconds = time.perf_counter() - start
    if logger.isEnabledFor(logging.INFO):
        logger.info("traced %s in %s", label(what), seconds_text(seconds),
                    extra={"numbascan_event": "trace", "numbascan_what": label(what),
                           "numbascan_seconds": seconds})
    return result


def timed_render(name, make):
    """`make()` (import a generated module), with a DEBUG record of its time."""
    start = time.perf_counter()
    result = make()
    if logger.isEnabledFor(logging.DEBUG):
        seconds = time.perf_counter() - start
        logger.debug("imported the generated module of %s in %s", name, seconds_text(seconds),
                     extra={"numbascan_event": "render", "numbascan_what": name,
                            "numbascan_seconds": seconds})
    return result


def first_call(fn, args, what):
    """Compile numba dispatcher `fn` (or the dispatcher a wrapper holds as `.fn`) for `args`
    when it has no compiled version yet, and log it; a compiled one is left as it is. A
    program whose scans are called through pointers (linked.py) compiles them first."""
    dispatcher = getattr(fn, "fn", fn)
    compile_for = getattr(dispatcher, "compile_for", None)
    if compile_for is not None:
        compile_for(args, what)
        return
    overloads = getattr(dispatcher, "overloads", None)
    if overloads is None or overloads:
        return
    compile_logged(dispatcher, tuple(dispatcher.typeof_pyval(a) for a in args), what)


def compile_logged(dispatcher, signature, what):
    """Compile numba dispatcher `dispatcher` for the argument types `signature`, timed and
    logged as the code of `what`."""
    hits = sum(dispatcher.stats.cache_hits.values())
    start = time.perf_counter()
    dispatcher.compile(signature)
    seconds = time.perf_counter() - start
    cached = sum(dispatcher.stats.cache_hits.values()) > hits
    name = label(what) if what is not None else repr(dispatcher.__name__)
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s %s (%s) in %s", "loaded" if cached else "compiled", name,
                    dispatcher.__name__, seconds_text(seconds),
                    extra={"numbascan_event": "compile", "numbascan_what": name,
                           "numbascan_function": dispatcher.__name__,
                           "numbascan_seconds": seconds, "numbascan_cached": cached})
    if seconds > SLOW_COMPILE_S:
        with _SLOW_LOCK:
            first = name not in _SLOW_SEEN
            _SLOW_SEEN.add(name)
        if first:
            logger.warning("compiling %s took %.1f s; later calls of the same shapes and dtypes "
                           "reuse it, and numba's disk cache (NUMBASCAN_CACHE_DIR) spares a new "
                           "process the compile", name, seconds,
                           extra={"numbascan_event": "slow_compile", "numbascan_what": name,
                                  "numbascan_seconds": seconds})


configure_from_env()
