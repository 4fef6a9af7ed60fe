"""Stage: user API — the top stage: it may import every other, and only `__init__.py` imports it.

`scan.py`: `ns.scan` and its family; `jit.py`: `ns.jit` and `ns.show`; `vmap.py`: `ns.vmap`;
`grad.py`: the derivative transformations (`ns.grad`, `ns.jacobian`, ...).
"""
