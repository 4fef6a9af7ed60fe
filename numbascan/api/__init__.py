"""Stage: user API — the top stage: it may import every other, and only the package's public
modules (`__init__.py`, `lax.py`) import it.

`scan.py`: `ns.scan` and its family; `jit.py`: `ns.jit` and `ns.show`; `vmap.py`: `ns.vmap`
(`dask.py`: over dask arrays);
`grad.py`: the derivative transformations (`ns.grad`, `ns.jacobian`, ...); `lax.py`: JAX's
loop API (`numbascan.lax`: scan, map, fori_loop, while_loop, associative_scan) on `ns.scan`,
with the pytrees of `pytree.py`.
"""
