"""numbascan: Theano's scan on Numba — compiled recurrences with forward and reverse derivatives.

The public names of the contract (SPEC): scan and its family, shared state, random streams,
derivatives, compilation and batching.
"""

__version__ = "0.1.0"

from .memory import keep_freed_memory as _keep_freed_memory      # noqa: E402

_keep_freed_memory()

from .api import foldl, foldr, map, reduce, scan, until          # noqa: E402
from . import scanprim                                             # noqa: E402,F401
from .jit import jit, show                                         # noqa: E402
from .ad import (DerivativeError, grad, hessian, jacfwd, jacobian, jacrev, jvp,  # noqa: E402
                 value_and_grad, vjp)
from .random import RandomStreams                                  # noqa: E402
from .shared import Shared, Updates, shared                        # noqa: E402
from .trace import TracingError                                    # noqa: E402
from .vmap import vmap                                             # noqa: E402
from .gpu import CudaUnavailable                                   # noqa: E402

__all__ = ["scan", "map", "reduce", "foldl", "foldr", "until", "shared", "Shared", "Updates",
           "RandomStreams", "jit", "show", "TracingError", "grad", "value_and_grad", "jvp", "vjp",
           "jacobian", "jacfwd", "jacrev", "hessian", "DerivativeError", "vmap", "CudaUnavailable"]
