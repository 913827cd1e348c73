"""Nesterov's accelerated gradient method, the variant fixed by docs/mathematics.md §3."""
from __future__ import annotations

from solvers._optimizer import first_order_loop

__all__ = ["nesterov"]


def nesterov(grad, x0, *, step_size, momentum, max_steps=None, rtol=0.0, atol=0.0,
             history=False):
    """Nesterov's method for strongly convex f (constant momentum):
    x₀ = y₀; x_{k+1} = y_k − step_size·∇f(y_k); y_{k+1} = x_{k+1} + momentum·(x_{k+1} − x_k).

    Lemma 2's guarantee holds with step_size = 1/β and momentum = (√κ−1)/(√κ+1). Stops at y_k
    when ‖∇f(y_k)‖ ≤ max(atol, rtol·‖∇f(y₀)‖), or returns x after ``max_steps`` gradient
    evaluations. ``steps`` counts gradient evaluations; ``history.iterates[k]`` is x_k. For a
    batch x0 of shape (n, d), ``step_size`` and ``momentum`` may be one per row (shape (n,)).
    """
    return first_order_loop(grad, x0, step_size=step_size, momentum=momentum, max_steps=max_steps,
                            rtol=rtol, atol=atol, history=history)
