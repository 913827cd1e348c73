"""Shared pieces of the solvers: namespace, norms, finiteness guard, scalar conversion."""
from __future__ import annotations

from array_api_compat import array_namespace

from solvers._result import NonFiniteIterate

__all__ = ["array_namespace", "norm", "dot", "as_scalar", "guard_finite", "check_callback_output"]


def dot(xp, a, b):
    """Row-wise inner product over the last axis (batched over leading task dimensions)."""
    return xp.sum(a * b, axis=-1)


def norm(xp, a):
    return xp.linalg.vector_norm(a, axis=-1)


def as_scalar(value):
    """A Python float for a 0-d array; an array stays an array (batched results)."""
    return float(value) if getattr(value, "ndim", 0) == 0 else value


def guard_finite(xp, x, what: str, step: int):
    if not bool(xp.all(xp.isfinite(x))):
        raise NonFiniteIterate(f"{what} became NaN or Inf at step {step}; the problem is not "
                               f"smooth/convex as assumed or the step size is too large")
    return x


def check_callback_output(out, like, name: str):
    """A callback (matvec, grad, hvp) must return an array of the input's shape, dtype, library."""
    from validation import check_same_namespace

    if getattr(out, "shape", None) != like.shape:
        raise ValueError(f"{name} returned shape {tuple(getattr(out, 'shape', ()))}, "
                         f"expected {tuple(like.shape)}")
    check_same_namespace(out, like, f"the output of {name}")
    return out
