"""Gradient descent with a fixed step."""
from __future__ import annotations

from solvers._optimizer import first_order_loop

__all__ = ["gradient_descent"]


def gradient_descent(grad, x0, *, step_size, max_steps=None, rtol=0.0, atol=0.0,
                     history=False):
    """x_{k+1} = x_k − step_size · ∇f(x_k).

    Stops at x_k when ‖∇f(x_k)‖ ≤ max(atol, rtol·‖∇f(x₀)‖) (CONVERGED) or after ``max_steps``
    gradient evaluations (MAX_STEPS, returning x after that many updates). ``steps`` counts
    gradient evaluations of the iteration. ``history.iterates[k]`` is x_k; residual norms are
    the gradient norm at x_k; the last entry is the returned point. For a batch x0 of shape
    (n, d), ``step_size`` may be one per row (shape (n,)).
    """
    return first_order_loop(grad, x0, step_size=step_size, momentum=0.0, max_steps=max_steps,
                            rtol=rtol, atol=atol, history=history)
