"""Gradient descent with a fixed step."""
from __future__ import annotations

from solvers._common import guard_finite, norm
from solvers._optimizer import finish, prepare
from validation import check_positive
from solvers._result import History, Status

__all__ = ["gradient_descent"]


def gradient_descent(grad, x0, *, step_size, max_steps=None, rtol=0.0, atol=0.0,
                     history=False):
    """x_{k+1} = x_k − step_size · ∇f(x_k).

    Stops at x_k when ‖∇f(x_k)‖ ≤ max(atol, rtol·‖∇f(x₀)‖) (CONVERGED) or after ``max_steps``
    gradient evaluations (MAX_STEPS, returning x after that many updates). ``steps`` counts
    gradient evaluations of the iteration. ``history.iterates[k]`` is x_k; residual norms are
    the gradient norm at x_k; the last entry is the returned point.
    """
    xp, oracle, rtol, atol, max_steps = prepare(grad, x0, rtol, atol, max_steps)
    s = check_positive(step_size, "step_size")
    rec = History() if history else None
    x, tol = x0, None
    for k in range(max_steps):
        g = oracle(x)
        gnorm = float(xp.max(norm(xp, g)))
        tol = max(atol, rtol * gnorm) if tol is None else tol
        if rec is not None:
            rec.record(x, gnorm)
        if gnorm <= tol:
            return finish(xp, oracle, x, k + 1, Status.CONVERGED, rec, gnorm)
        x = guard_finite(xp, x - s * g, "the iterate", k + 1)
    return finish(xp, oracle, x, max_steps, Status.MAX_STEPS, rec)
