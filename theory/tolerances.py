"""The one place where rounding allowances are derived.

Every comparison ``measured <= bound`` in the suite is made as
``measured <= bound + rounding_allowance(dtype, kappa=..., scale=..., dim=...)``.

Derivation. A backward-stable linear solve or a few dozen matrix-vector products in precision
``u`` (unit roundoff, ``eps/2``) perturb a result of size ``scale`` by at most about
``c(d) * u * kappa * scale`` where ``c(d)`` grows at most linearly with the dimension ``d``
(Higham, *Accuracy and Stability of Numerical Algorithms*, Thm 7.2 and Sec. 3.5). We take
``c(d) = 2 d`` with ``u = eps/2`` i.e. ``allowance = eps * d * kappa * scale``. This is a model
of rounding, not a value tuned to make a test pass; tests never widen it locally.
"""
from __future__ import annotations

import numpy as np

from validation import check_kappa, check_positive, dtype_name

__all__ = ["machine_epsilon", "rounding_allowance", "relative_tolerance"]


def machine_epsilon(dtype) -> float:
    """Machine epsilon of a NumPy or torch floating dtype (or of its name)."""
    return float(np.finfo(np.dtype(dtype_name(dtype))).eps)


def relative_tolerance(dtype, *, kappa: float = 1.0, dim: int = 1) -> float:
    """Relative rounding allowance ``eps * dim * kappa`` for results computed in ``dtype``."""
    check_kappa(kappa)
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    return machine_epsilon(dtype) * dim * kappa


def rounding_allowance(dtype, *, kappa: float = 1.0, scale: float = 1.0, dim: int = 1) -> float:
    """Absolute rounding allowance ``eps * dim * kappa * scale`` (see the module docstring)."""
    check_positive(scale, "scale", allow_zero=True)
    return relative_tolerance(dtype, kappa=kappa, dim=dim) * scale
