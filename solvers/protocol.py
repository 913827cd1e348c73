"""The task protocol: everything a meta-gradient method may know about a task, and the
checked view of a task the solvers work through."""
from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
from array_api_compat import array_namespace, device

from solvers._common import checked
from validation import check_lam

__all__ = ["TaskProtocol", "check_task", "checked_task", "curvature_bounds"]


@runtime_checkable
class TaskProtocol(Protocol):
    """What solvers see of task i: the inner loss L̂ᵢ (value, gradient, Hessian-vector
    product), the outer loss Lᵢ (value, gradient) and λ. ``inner_hvp(phi, v)`` must accept v of
    φ's shape and return ∇²L̂(φ)v. Optionally ``curvature_bounds() -> (beta, mu)``, problem data
    from which solvers derive default step sizes; without it, step sizes must be given.

    A stack of n tasks follows the same protocol on arrays of shape (n, d) (row i for task i):
    gradients and Hessian-vector products of shape (n, d), losses of shape (n,), ``lam`` a
    number or one per task, ``curvature_bounds()`` numbers or arrays of shape (n,)."""

    lam: float

    def inner_loss(self, phi) -> Any: ...
    def inner_grad(self, phi) -> Any: ...
    def inner_hvp(self, phi, v) -> Any: ...
    def outer_loss(self, phi) -> Any: ...
    def outer_grad(self, phi) -> Any: ...


_REQUIRED = ("inner_loss", "inner_grad", "inner_hvp", "outer_loss", "outer_grad")


def check_task(task):
    missing = [name for name in _REQUIRED if not callable(getattr(task, name, None))]
    if missing or not hasattr(task, "lam"):
        missing += [] if hasattr(task, "lam") else ["lam"]
        raise TypeError(f"task does not follow the task protocol: missing {', '.join(missing)}")
    _lam_values(task.lam)
    return task


def _lam_values(lam):
    """task.lam validated: a float, or a float64 NumPy array (one per task of a stack)."""
    ndim = getattr(lam, "ndim", 0 if not isinstance(lam, (list, tuple)) else 1)
    if ndim == 0:
        return check_lam(lam)
    return check_lam(lam, n_tasks=len(lam))


class _CheckedTask:
    """A task seen through its protocol, each callback's output validated on its first call
    (shape, library, dtype, device against θ) before any arithmetic uses it: a wrong-shaped
    ``inner_hvp`` cannot broadcast silently into a meta-gradient. Later calls pass through."""

    def __init__(self, task, theta):
        self.task = task
        self.inner_grad = checked(task.inner_grad, theta, "task.inner_grad")
        self.inner_hvp = checked(task.inner_hvp, theta, "task.inner_hvp")
        self.outer_grad = checked(task.outer_grad, theta, "task.outer_grad")
        self.inner_loss, self.outer_loss = task.inner_loss, task.outer_loss
        lam = _lam_values(task.lam)
        if isinstance(lam, float):
            self.lam, self.lam_rows = lam, lam
        else:
            if theta.ndim != 2 or lam.shape != (theta.shape[0],):
                raise ValueError(f"task.lam has one value per task ({lam.shape[0]}) but theta has "
                                 f"shape {tuple(theta.shape)}: it must be ({lam.shape[0]}, d)")
            xp = array_namespace(theta)
            #: λ for sums over a row (shape (n,)), and for (n, d) arithmetic (shape (n, 1))
            self.lam = xp.asarray(lam, dtype=theta.dtype, device=device(theta))
            self.lam_rows = self.lam[:, None]


def checked_task(task, theta):
    """The checked view of ``task`` for meta-parameters ``theta`` (validated protocol)."""
    return task if isinstance(task, _CheckedTask) else _CheckedTask(check_task(task), theta)


def curvature_bounds(task):
    """(β, μ) from ``task.curvature_bounds()``, validated: finite with 0 < μ ≤ β (numbers, or
    NumPy arrays of one per task). A custom task returning μ ≤ 0 gets a clear error here
    instead of a math domain error in a square root."""
    beta, mu = task.curvature_bounds()
    b, m = np.asarray(beta, dtype=np.float64), np.asarray(mu, dtype=np.float64)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(m)) and np.all(m > 0)
            and np.all(m <= b)):
        raise ValueError(f"task.curvature_bounds() must return finite (beta, mu) with "
                         f"0 < mu <= beta, got beta={beta!r}, mu={mu!r}")
    if b.ndim == 0:
        return float(b), float(m)
    return b, m


def momentum_for(beta, mu):
    """Nesterov's momentum (√κ−1)/(√κ+1) for κ = β/μ (numbers or arrays)."""
    if isinstance(beta, float):
        s = math.sqrt(beta / mu)
        return (s - 1) / (s + 1)
    s = np.sqrt(beta / mu)
    return (s - 1) / (s + 1)
