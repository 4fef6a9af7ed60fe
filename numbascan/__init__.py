"""numbascan: Theano's scan on Numba — compiled recurrences with forward and reverse derivatives.

The public names of the contract (SPEC): scan and its family, shared state, random streams,
derivatives, compilation and batching; `numbascan.lax` (`ns.lax`) is JAX's loop API on the
same engine.
"""

from ._version import __version__                                # noqa: F401

from .runtime.memory import keep_freed_memory as _keep_freed_memory  # noqa: E402

_keep_freed_memory()

from .api.scan import foldl, foldr, map, reduce, scan            # noqa: E402
from .loop.args import until                                     # noqa: E402
from .api.jit import jit, show                                   # noqa: E402
from .ad.engine import DerivativeError                           # noqa: E402
from .api.grad import (grad, hessian, jacfwd, jacobian, jacrev, jvp,  # noqa: E402
                       value_and_grad, vjp)
from .random import RandomStreams                                # noqa: E402
from .shared import Shared, Updates, shared                      # noqa: E402
from .trace.tracer import TracingError                           # noqa: E402
from .api.vmap import vmap                                       # noqa: E402
from .api.linrec import linear_recurrence                       # noqa: E402
from .runtime.cuda import CudaUnavailable                        # noqa: E402
from .runtime.cache import cache_info                            # noqa: E402
from . import lax                                                # noqa: E402

__all__ = ["scan", "map", "reduce", "foldl", "foldr", "until", "shared", "Shared", "Updates",
           "RandomStreams", "jit", "show", "TracingError", "grad", "value_and_grad", "jvp", "vjp",
           "jacobian", "jacfwd", "jacrev", "hessian", "DerivativeError", "vmap", "CudaUnavailable",
           "cache_info", "lax", "linear_recurrence"]
