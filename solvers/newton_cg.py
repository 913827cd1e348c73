"""The Hessian-free (Newton-CG) inner solver of iMAML-HF (Appendix F.2)."""
from __future__ import annotations

from solvers._common import check_callback_output, dot, guard_finite, norm
from solvers._optimizer import GradientOracle, prepare
from solvers._result import History, SolverResult, Status
from solvers.cg import cg

__all__ = ["newton_cg"]


def newton_cg(objective, grad, hvp, x0, *, max_steps=3, cg_steps=5, rtol=0.0, atol=0.0,
              armijo=1e-4, backtrack=0.5, max_backtracks=40, history=False) -> SolverResult:
    """Hessian-free Newton: at each of ``max_steps`` iterations, ``cg_steps`` steps of CG on
    ∇²f(x) d = −∇f(x) (matrix-free through ``hvp(x, v)``) give a direction, then a backtracking
    (Armijo) line search on ``objective`` picks the step. Defaults follow Appendix F.2: 5 CG
    steps, 3 Newton iterations.

    If CG meets non-positive curvature at its first step the direction falls back to −∇f(x);
    later, the last CG iterate (a descent direction) is used. Stops early when
    ‖∇f(x)‖ ≤ max(atol, rtol‖∇f(x₀)‖) (CONVERGED), or when the line search finds no decrease in
    ``max_backtracks`` halvings (STALLED: rounding level). ``steps`` counts Newton iterations.
    """
    xp, oracle, rtol, atol, max_steps = prepare(grad, x0, rtol, atol, max_steps)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a vector for newton_cg, got shape {tuple(x0.shape)}")
    if not (0 < armijo < 1 and 0 < backtrack < 1):
        raise ValueError(f"need 0 < armijo < 1 and 0 < backtrack < 1, got {armijo!r}, {backtrack!r}")
    counts = {"objective": 0, "hvp": 0}

    def f(x):
        counts["objective"] += 1
        return float(objective(x))

    rec = History() if history else None
    x, tol, status, steps = x0, None, Status.MAX_STEPS, 0
    g = oracle(x)
    while True:
        gnorm = float(norm(xp, g))
        tol = max(atol, rtol * gnorm) if tol is None else tol
        if rec is not None:
            rec.record(x, gnorm)
        if gnorm <= tol:
            status = Status.CONVERGED
            break
        if steps >= max_steps:
            break
        here = x

        def matvec(v):
            return check_callback_output(hvp(here, v), v, "hvp")

        inner = cg(matvec, -g, max_steps=cg_steps, rtol=0.0, atol=0.0, on_breakdown="return")
        counts["hvp"] += inner.evaluations["matvec"]
        direction = inner.x if inner.steps > 0 else -g
        slope = float(dot(xp, g, direction))
        f0, t = f(x), 1.0
        for _ in range(max_backtracks):
            trial = x + t * direction
            if f(trial) <= f0 + armijo * t * slope:
                break
            t *= backtrack
        else:
            status = Status.STALLED
            break
        x = guard_finite(xp, trial, "the Newton-CG iterate", steps + 1)
        steps += 1
        g = oracle(x)
    return SolverResult(x=x, steps=steps, residual_norm=gnorm, status=status,
                        evaluations={"grad": oracle.count, **counts}, history=rec)
