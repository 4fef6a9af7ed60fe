"""numbascan.lax: JAX's loop API on numbascan's engine (`import numbascan.lax as nlax`).

    carry, ys = nlax.scan(f, init, xs=None, length=None, reverse=False, unroll=1)
    ys = nlax.map(f, xs)
    val = nlax.fori_loop(lower, upper, body_fun, init_val)
    val = nlax.while_loop(cond_fun, body_fun, init_val)
    ys = nlax.associative_scan(fn, elems, reverse=False, axis=0)

The public name of `api/lax.py`, where they are written as a front end of `ns.scan` (see
docs/guide.md, "JAX's loop API: numbascan.lax").
"""

from .api.lax import (DEFAULT_MAX_STEPS, CarryError, associative_scan, fori_loop, map,  # noqa: F401
                      scan, while_loop)

__all__ = ["scan", "map", "fori_loop", "while_loop", "associative_scan", "CarryError",
           "DEFAULT_MAX_STEPS"]
