"""Matrix-free conjugate gradient, batched over a leading task dimension (docs/mathematics.md §4)."""
from __future__ import annotations

from solvers._common import array_namespace, as_scalar, check_callback_output, dot, guard_finite, norm
from solvers._result import History, SolverBreakdown, SolverResult, Status
from validation import check_array, check_tolerances

__all__ = ["cg"]


def cg(matvec, rhs, *, x0=None, max_steps=None, rtol=1e-5, atol=0.0, history=False,
       on_breakdown="raise") -> SolverResult:
    """Solve M x = rhs for a symmetric positive definite M given as ``matvec``.

    ``rhs`` has shape (d,) or (n_tasks, d); ``matvec`` maps arrays of that shape to the same
    shape (row i is M_i x_i). Stops when every row's residual ‖rhs − M x‖ is at most
    max(atol, rtol·‖rhs‖) (status CONVERGED) or after ``max_steps`` steps (MAX_STEPS; default
    10·d as in SciPy). With rtol = atol = 0 it takes exactly ``max_steps`` steps unless a residual
    becomes exactly zero. Rows that have converged are frozen.

    Non-positive curvature pᵀMp ≤ 0 (M not positive definite) raises :class:`SolverBreakdown`,
    or with ``on_breakdown='return'`` returns the last iterate with status BREAKDOWN. A row whose
    residual is already below eps·‖rhs‖ (solved to working precision) when its curvature vanishes
    — p underflowing after many steps with rtol = atol = 0 — is converged, not broken down.
    ``steps`` counts matrix-vector products of the iteration (one more is made when x0 is given).
    """
    if on_breakdown not in ("raise", "return"):
        raise ValueError(f"on_breakdown must be 'raise' or 'return', got {on_breakdown!r}")
    check_array(rhs, "rhs", ndim=(1, 2))
    xp = array_namespace(rhs)
    rtol, atol, max_steps = check_tolerances(rtol, atol, max_steps)
    if max_steps is None:
        max_steps = 10 * rhs.shape[-1]
    evals = 0
    if x0 is None:
        x = xp.zeros_like(rhs)
        r = rhs
    else:
        check_array(x0, "x0", like=rhs, shape=rhs.shape)
        x = x0
        r = rhs - check_callback_output(matvec(x), rhs, "matvec")
        evals += 1
    tol = xp.clip(rtol * norm(xp, rhs), min=atol)
    # below this residual a row is solved to working precision: if its curvature pᵀMp then
    # vanishes (underflow of an ever smaller p, possible with rtol = atol = 0), it is converged
    rounding_floor = float(xp.finfo(rhs.dtype).eps) * norm(xp, rhs)
    at_floor = xp.zeros_like(tol, dtype=xp.bool)
    rr = dot(xp, r, r)
    p = r
    rec = History() if history else None
    steps = 0
    status = Status.MAX_STEPS
    while True:
        rnorm = xp.sqrt(rr)
        if rec is not None:
            rec.record(x, as_scalar(rnorm))
        done = (rnorm <= tol) | at_floor
        if bool(xp.all(done)):
            status = Status.CONVERGED
            break
        if steps >= max_steps:
            break
        Mp = check_callback_output(matvec(p), rhs, "matvec")
        evals += 1
        pMp = dot(xp, p, Mp)
        guard_finite(xp, pMp, "the curvature p^T M p returned by matvec", steps)
        flat = ~done & (pMp <= 0)
        at_floor = at_floor | (flat & (rnorm <= rounding_floor))
        active = ~done & ~at_floor
        if bool(xp.any(active & (pMp <= 0))):
            if on_breakdown == "raise":
                raise SolverBreakdown(
                    f"CG breakdown at step {steps}: matvec is not positive definite "
                    f"(p^T M p = {float(xp.min(pMp)):.3g} <= 0)")
            status = Status.BREAKDOWN
            break
        if not bool(xp.any(active)):
            status = Status.CONVERGED
            break
        one = xp.ones_like(pMp)
        alpha = xp.where(active, rr / xp.where(active, pMp, one), xp.zeros_like(pMp))
        x = x + alpha[..., None] * p
        r = r - alpha[..., None] * Mp
        rr_new = dot(xp, r, r)
        beta = xp.where(active, rr_new / xp.where(active, rr, one), xp.zeros_like(rr))
        p = r + beta[..., None] * p
        rr = rr_new
        steps += 1
        guard_finite(xp, x, "the CG iterate", steps)
    return SolverResult(x=x, steps=steps, residual_norm=as_scalar(xp.sqrt(rr)), status=status,
                        evaluations={"matvec": evals}, history=rec)
