"""The task protocol: everything a meta-gradient method may know about a task."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["TaskProtocol", "check_task"]


@runtime_checkable
class TaskProtocol(Protocol):
    """What solvers see of task i: the inner loss L̂ᵢ (value, gradient, Hessian-vector
    product), the outer loss Lᵢ (value, gradient) and λ. ``inner_hvp(phi, v)`` must accept v of
    shape (d,) and return ∇²L̂(φ)v. Optionally ``curvature_bounds() -> (beta, mu)``, problem data
    from which solvers derive default step sizes; without it, step sizes must be given."""

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
    from validation import check_lam

    check_lam(task.lam)
    return task
