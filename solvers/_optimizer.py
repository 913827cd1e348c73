"""The loop shared by first-order optimizers: stopping rule, history, final residual."""
from __future__ import annotations

from solvers._common import array_namespace, check_callback_output, guard_finite, norm
from solvers._result import History, SolverResult, Status
from validation import check_array, check_positive, check_tolerances

MAX_STEPS_WITHOUT_LIMIT = 100_000


class GradientOracle:
    """Wraps a gradient callback: validates and counts its outputs."""

    def __init__(self, grad, like, name="grad"):
        self.grad, self.like, self.name, self.count = grad, like, name, 0

    def __call__(self, x):
        self.count += 1
        g = check_callback_output(self.grad(x), self.like, self.name)
        return guard_finite(array_namespace(g), g, f"the output of {self.name}", self.count)


def prepare(grad, x0, rtol, atol, max_steps):
    check_array(x0, "x0", ndim=(1, 2))
    rtol, atol, max_steps = check_tolerances(rtol, atol, max_steps)
    return (array_namespace(x0), GradientOracle(grad, x0), rtol, atol,
            MAX_STEPS_WITHOUT_LIMIT if max_steps is None else max_steps)


def finish(xp, oracle, x, steps, status, rec, last_grad_norm=None):
    """Build the result. Unless the final point's gradient norm is known, one more gradient is
    evaluated for ``residual_norm`` (counted in evaluations, not in steps)."""
    if last_grad_norm is None:
        last_grad_norm = float(xp.max(norm(xp, oracle(x))))
        if rec is not None:
            rec.record(x, last_grad_norm)
    return SolverResult(x=x, steps=steps, residual_norm=last_grad_norm, status=status,
                        evaluations={"grad": oracle.count}, history=rec)


def first_order_loop(grad, x0, *, step_size, momentum, max_steps, rtol, atol, history):
    """x₀ = y₀; x_{k+1} = y_k − s∇f(y_k); y_{k+1} = x_{k+1} + q(x_{k+1} − x_k).
    Stops at y_k when ‖∇f(y_k)‖ ≤ max(atol, rtol‖∇f(y₀)‖), returning y_k. The history holds
    (x_k, ‖∇f(y_k)‖) for each step, then the returned point with its own gradient norm."""
    xp, oracle, rtol, atol, max_steps = prepare(grad, x0, rtol, atol, max_steps)
    s = check_positive(step_size, "step_size")
    rec = History() if history else None
    x = y = x0
    tol = None
    for k in range(max_steps):
        g = oracle(y)
        gnorm = float(xp.max(norm(xp, g)))
        if tol is None:
            tol = max(atol, rtol * gnorm)
        if gnorm <= tol:
            if rec is not None:
                rec.record(y, gnorm)
            return finish(xp, oracle, y, k + 1, Status.CONVERGED, rec, gnorm)
        if rec is not None:
            rec.record(x, gnorm)
        x_new = guard_finite(xp, y - s * g, "the iterate", k + 1)
        y = x_new + momentum * (x_new - x) if momentum else x_new
        x = x_new
    return finish(xp, oracle, x, max_steps, Status.MAX_STEPS, rec)
