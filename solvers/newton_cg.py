"""The Hessian-free (Newton-CG) inner solver of iMAML-HF (Appendix F.2)."""
from __future__ import annotations

from solvers._common import checked, ops, raise_if_not_finite, to_host
from solvers._optimizer import GradientOracle, prepare
from solvers._result import History, SolverResult, Status
from solvers.cg import cg
from validation import check_positive, check_steps

__all__ = ["newton_cg"]


def newton_cg(objective, grad, hvp, x0, *, max_steps=3, cg_steps=5, rtol=0.0, atol=0.0,
              cg_rtol=0.0, cg_atol=0.0, armijo=1e-4, backtrack=0.5, max_backtracks=40,
              history=False) -> SolverResult:
    """Hessian-free Newton: at each of ``max_steps`` iterations, ``cg_steps`` steps of CG on
    ∇²f(x) d = −∇f(x) (matrix-free through ``hvp(x, v)``) give a direction, then a backtracking
    (Armijo) line search on ``objective`` picks the step. Defaults follow Appendix F.2: 5 CG
    steps, 3 Newton iterations.

    If CG meets non-positive curvature at its first step the direction falls back to −∇f(x);
    later, the last CG iterate (a descent direction) is used. Stops early when
    ‖∇f(x)‖ ≤ max(atol, rtol‖∇f(x₀)‖) (CONVERGED), or when the line search finds no decrease in
    ``max_backtracks`` halvings (STALLED: rounding level). Where f(trial) is within √eps·|f(x)|
    of f(x), i.e. f's values cannot resolve the decrease, a step is also accepted by the
    derivative test ∇f(trial)·d ≤ (2·armijo − 1)∇f(x)·d (Hager–Zhang's approximate Armijo
    condition; one more gradient evaluation, reused as the next gradient when accepted), so the
    iteration reaches the rounding level of x rather than stalling at ‖∇f‖ ~ √eps.
    ``steps`` counts Newton iterations.

    Inexact Newton: with ``cg_rtol`` or ``cg_atol`` > 0, each inner CG stops once its residual
    ‖∇²f(x)d + ∇f(x)‖ is at most max(cg_atol, cg_rtol·‖∇f(x)‖) (a forcing term, Dembo,
    Eisenstat & Steihaug 1982), with ``cg_steps`` as its cap (None: 10·d). On a quadratic
    that residual is ∇f at the next point, so one iteration with ``cg_atol`` = atol meets the
    stopping rule. With both 0 (the default) CG takes exactly ``cg_steps`` steps.

    The gradient norm read at every iteration is also its finiteness test (a NaN or Inf in
    ∇f or in an iterate shows there); ``hvp``'s output is validated on its first call.
    """
    xp, oracle, rtol, atol, max_steps = prepare(grad, x0, rtol, atol, max_steps)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a vector for newton_cg, got shape {tuple(x0.shape)}")
    cg_rtol = check_positive(cg_rtol, "cg_rtol", allow_zero=True)
    cg_atol = check_positive(cg_atol, "cg_atol", allow_zero=True)
    if cg_steps is None:
        if cg_rtol == cg_atol == 0.0:
            raise ValueError("no stopping rule for the inner CG: give cg_steps, or cg_rtol > 0 "
                             "or cg_atol > 0")
        cg_steps = 10 * x0.shape[-1]
    cg_steps = check_steps(cg_steps, "cg_steps")
    if not (0 < armijo < 1 and 0 < backtrack < 1):
        raise ValueError(f"need 0 < armijo < 1 and 0 < backtrack < 1, got {armijo!r}, {backtrack!r}")
    counts = {"objective": 0, "hvp": 0}

    def f(x):
        counts["objective"] += 1
        return float(objective(x))

    # relative change of f below which f's values are rounding noise (Hager & Zhang's ε_k)
    f_resolution = float(xp.finfo(x0.dtype).eps) ** 0.5
    o = ops(xp)
    hvp = checked(hvp, x0, "hvp")
    rec = History() if history else None
    x, tol, status, steps = x0, None, Status.MAX_STEPS, 0
    g = oracle(x)
    while True:
        gnorm = to_host(o.norm(g))
        raise_if_not_finite(gnorm, f"the output of {oracle.name}", steps)
        tol = max(atol, rtol * gnorm) if tol is None else tol
        if rec is not None:
            rec.record(x, gnorm)
        if gnorm <= tol:
            status = Status.CONVERGED
            break
        if steps >= max_steps:
            break
        here = x
        inner = cg(lambda v: hvp(here, v), -g, max_steps=cg_steps, rtol=cg_rtol, atol=cg_atol,
                   on_breakdown="return")
        counts["hvp"] += inner.evaluations["matvec"]
        direction = inner.x if inner.steps > 0 else -g
        slope = to_host(o.dot(g, direction))
        f0, t, g_trial = f(x), 1.0, None
        for _ in range(max_backtracks):
            trial = x + t * direction
            f_trial = f(trial)
            if f_trial <= f0 + armijo * t * slope:
                break
            if f_trial <= f0 + f_resolution * abs(f0):
                # f cannot resolve a decrease this small (‖∇f‖ near √eps): judge the step by
                # the directional derivative instead, the approximate Armijo condition of
                # Hager & Zhang (SIAM J. Optim. 16, 2005), exact for quadratics
                g_trial = oracle(trial)
                if to_host(o.dot(g_trial, direction)) <= (2 * armijo - 1) * slope:
                    break
                g_trial = None
            t *= backtrack
        else:
            status = Status.STALLED
            break
        x = trial
        steps += 1
        g = oracle(x) if g_trial is None else g_trial
    if not to_host(o.all(o.isfinite(x))):
        raise_if_not_finite(float("nan"), "the Newton-CG iterate", steps)
    return SolverResult(x=x, steps=steps, residual_norm=gnorm, status=status,
                        evaluations={"grad": oracle.count, **counts}, history=rec)
