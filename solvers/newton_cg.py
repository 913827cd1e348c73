"""The Hessian-free (Newton-CG) inner solver of iMAML-HF (Appendix F.2)."""
from __future__ import annotations

import numpy as np
from array_api_compat import device

from solvers._common import checked, host_norm, ops, quiet, raise_if_not_finite, to_host
from solvers._optimizer import as_rows, prepare
from solvers._result import History, SolverResult, Status
from solvers.linear.cg import cg
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

    A batch x0 of shape (n, d) (n independent problems: ``objective`` returns n values,
    ``grad`` and ``hvp`` act row by row) runs one batched CG per iteration and a line search
    per row (each row its own step t); the run stops when every row meets the tolerance or has
    stalled (status STALLED if any row stalled and not all converged). A stalled row is frozen.

    The gradient norm read at every iteration is also its finiteness test (a NaN or Inf in
    ∇f or in an iterate shows there); ``hvp``'s output is validated on its first call.
    """
    xp, oracle, rtol, atol, max_steps = prepare(grad, x0, rtol, atol, max_steps)
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
        return to_host(objective(x))

    rows = as_rows(x0)
    hvp = rows.wrap(checked(hvp, x0, "hvp"))

    def direction_at(x, g):
        inner = cg(lambda v: hvp(x, v), -g, max_steps=cg_steps, rtol=cg_rtol, atol=cg_atol,
                   on_breakdown="return")
        counts["hvp"] += inner.evaluations["matvec"]
        return inner

    # relative change of f below which f's values are rounding noise (Hager & Zhang's ε_k)
    f_resolution = float(xp.finfo(x0.dtype).eps) ** 0.5
    with quiet(xp):      # an overflowing norm is recomputed scaled (host_norm), not warned of
        x, steps, gnorm, status, rec = _newton(
            xp, ops(xp), rows.scalar(f), rows.oracle(oracle), direction_at, rows.x0,
            max_steps=max_steps, rtol=rtol, atol=atol, armijo=armijo, backtrack=backtrack,
            max_backtracks=max_backtracks, f_resolution=f_resolution,
            rec=History() if history else None)
    o = ops(xp)
    if not to_host(o.all(o.isfinite(o.plain(x)))):
        raise_if_not_finite(float("nan"), "the Newton-CG iterate", steps)
    return rows.result(SolverResult(x=x, steps=steps, residual_norm=gnorm, status=status,
                                    evaluations={"grad": oracle.count, **counts}, history=rec))


def _newton(xp, o, f, oracle, direction_at, x0, *, max_steps, rtol, atol, armijo, backtrack,
            max_backtracks, f_resolution, rec):
    """The iteration on n independent rows (one vector: a batch of one row): one batched CG,
    a line search per row (each row its own t), rows that stall frozen. An iteration in which
    no open row accepts a step is not a step: the run stops there (STALLED). The gradient at
    the accepted points is the one the approximate Armijo test evaluated when it was evaluated
    at exactly those points (every row open and accepted), else evaluated anew."""
    n = x0.shape[0]
    x, tol, status, steps = x0, None, Status.MAX_STEPS, 0
    stalled = np.zeros(n, dtype=bool)
    g = oracle(x)
    while True:
        gn = np.atleast_1d(host_norm(xp, g))
        gnorm = float(gn.max())
        raise_if_not_finite(gnorm, f"the output of {oracle.name}", steps)
        # each row's own tolerance, from its own first gradient (as when it runs alone)
        tol = np.maximum(atol, rtol * gn) if tol is None else tol
        if rec is not None:
            rec.record(x, gnorm)
        open_rows = (gn > tol) & ~stalled
        if not open_rows.any():
            # a stalled row is frozen where its gradient was above its tolerance
            status = Status.STALLED if stalled.any() else Status.CONVERGED
            break
        if steps >= max_steps:
            break
        inner = direction_at(x, g)
        fallback = xp.asarray(inner.row_steps == 0, device=device(x))[:, None]
        direction = o.where(fallback, -g, inner.x)
        slope = np.atleast_1d(to_host(o.dot(o.plain(g), o.plain(direction))))
        f0 = np.atleast_1d(f(x))
        t = np.ones(n)
        accepted = ~open_rows          # closed rows keep their point
        new_x = x
        for _ in range(max_backtracks):
            t_rows = xp.asarray(t, dtype=x.dtype, device=device(x))[:, None]
            trial = x + t_rows * direction
            f_trial = np.atleast_1d(f(trial))
            take = ~accepted & (f_trial <= f0 + armijo * t * slope)
            unresolved = ~accepted & ~take & (f_trial <= f0 + f_resolution * np.abs(f0))
            g_trial = None
            if unresolved.any():
                # f cannot resolve a decrease this small (‖∇f‖ near √eps): judge the step by
                # the directional derivative instead, the approximate Armijo condition of
                # Hager & Zhang (SIAM J. Optim. 16, 2005), exact for quadratics
                g_trial = oracle(trial)
                slope_trial = np.atleast_1d(to_host(o.dot(o.plain(g_trial), o.plain(direction))))
                take |= unresolved & (slope_trial <= (2 * armijo - 1) * slope)
            if take.any():
                new_x = o.where(xp.asarray(take, device=device(x))[:, None], trial, new_x)
                accepted |= take
            if accepted.all():
                break
            t = np.where(accepted, t, t * backtrack)
        else:
            g_trial = None
        newly_stalled = open_rows & ~accepted
        if newly_stalled.all() or not (open_rows & accepted).any():
            status = Status.STALLED
            break
        stalled |= newly_stalled
        x = new_x
        steps += 1
        # the gradient at trial is that at the new points when every row took its trial
        g = g_trial if g_trial is not None and open_rows.all() and accepted.all() else oracle(x)
    return x, steps, gnorm, status, rec
