"""Derivatives: rules (rules.py), program transformations (core.py, scan.py), user API (api.py)."""

from .api import grad, hessian, jacfwd, jacobian, jacrev, jvp, value_and_grad, vjp  # noqa: F401
from .core import DerivativeError  # noqa: F401

__all__ = ["grad", "hessian", "jacfwd", "jacobian", "jacrev", "jvp", "value_and_grad", "vjp",
           "DerivativeError"]
