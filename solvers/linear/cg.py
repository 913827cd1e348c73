"""Matrix-free conjugate gradient, one vector or a stack of them (docs/mathematics.md §4)."""
from __future__ import annotations

from solvers._result import SolverBreakdown, Status
from solvers.linear._iteration import DEVICE_CHECK_EVERY, solve
from solvers.linear._spec import LinearSolver

__all__ = ["cg", "DEVICE_CHECK_EVERY", "SOLVER"]


def cg(matvec, rhs, *, x0=None, max_steps=None, rtol=1e-5, atol=0.0, history=False,
       on_breakdown="raise", check_every=None):
    """Solve M x = rhs for a symmetric positive definite M given as ``matvec``.

    ``rhs`` has shape (d,) or (n_tasks, d); ``matvec`` maps arrays of that shape to the same
    shape (row i is M_i x_i); its output is validated (shape, library, dtype, device) on its
    first call. Stops when every row's residual ‖rhs − M x‖ is at most max(atol, rtol·‖rhs‖)
    (status CONVERGED) or after ``max_steps`` steps (MAX_STEPS; default 10·d as in SciPy). With
    rtol = atol = 0 it takes exactly ``max_steps`` steps unless a residual becomes exactly zero.

    Rows are independent: a row that has converged, or that meets non-positive curvature
    pᵀMp ≤ 0 (its M_i not positive definite), is frozen while the others go on; each row ends
    where it would end alone. Breakdown raises :class:`SolverBreakdown`, or with
    ``on_breakdown='return'`` freezes that row at its last iterate (row status BREAKDOWN; the
    run's status is BREAKDOWN if any row broke down). A row whose residual is already below
    eps·‖rhs‖ (solved to working precision) when its curvature vanishes — p underflowing after
    many steps with rtol = atol = 0 — is converged, not broken down. A NaN or Inf in pMp or in
    a residual norm (quantities the iteration computes anyway) raises
    :class:`NonFiniteIterate`; the returned iterate is scanned once at the end.

    CG is linear in (rhs, x0): each row is solved for rhs/s with s the power of two of its
    largest entry (exact), and the solution scaled back, so rᵀr and pᵀMp cannot underflow or
    overflow at any scale of the data (at ‖rhs‖ ~ 1e-170 in float64 rᵀr would be 0).

    Host reads (see :func:`solvers.count_host_reads`): on the host (NumPy, torch CPU) the exit
    test is read every step. On a device it is read every ``check_every`` steps (default
    :data:`DEVICE_CHECK_EVERY`; for fixed-step runs with rtol = atol = 0, only once, at the end)
    while converged and broken-down rows are frozen by on-device masks, so the result (iterate,
    steps per row, status) is identical to reading every step; only ``evaluations`` then
    counts the extra, discarded matrix-vector products. ``history=True`` reads every step.

    ``steps`` counts the steps of the iteration (the most any row took); ``evaluations``
    counts matvec calls (one more is made when x0 is given); batched runs also give
    ``row_steps`` and ``row_status`` per row. (One loop for all linear solvers:
    :mod:`solvers.linear._iteration`.)
    """
    return solve(_CG, matvec, rhs, x0=x0, max_steps=max_steps, rtol=rtol, atol=atol,
                 history=history, on_breakdown=on_breakdown, check_every=check_every)


class _CG:
    """Hestenes–Stiefel CG; a row halts at non-positive curvature pᵀMp ≤ 0 (or NaN)."""

    name_residual = "the CG residual"
    name_value = "the curvature p^T M p returned by matvec"
    name_iterate = "the CG iterate"
    halt_status = Status.BREAKDOWN
    matvecs_per_step = 1

    def __init__(self, xp, o, matvec, b, x, r):
        self.o, self.matvec = o, matvec
        self.x, self.r, self.p = x, r, r
        self.rr = o.dot(r, r)
        self.zero = xp.zeros_like(self.rr)

    def residual_norm(self):
        return self.o.sqrt(self.o.plain(self.rr))

    def advance(self, live):
        o, p = self.o, self.p
        Mp = self.matvec(p)
        pMp = o.dot(p, Mp)
        go = live & (pMp > 0)              # False for pMp ≤ 0 and for NaN
        alpha = o.where(go, self.rr / pMp, self.zero)
        self.x = self.x + alpha[..., None] * p
        self.r = self.r - alpha[..., None] * Mp
        rr_new = o.dot(self.r, self.r)
        self.p = self.r + o.where(go, rr_new / self.rr, self.zero)[..., None] * p
        self.rr = rr_new
        return go, pMp

    @staticmethod
    def breakdown(step, curvature):
        return SolverBreakdown(f"CG breakdown at step {step}: matvec is not positive definite "
                               f"(p^T M p = {curvature:.3g} <= 0)")


def _run(system, rhs, **kw):
    return cg(system.matvec, rhs, **kw)


SOLVER = LinearSolver("cg", _run, {}, definite=True,
                      summary="conjugate gradient (M symmetric positive definite)")
