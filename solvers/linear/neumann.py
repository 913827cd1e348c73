"""The truncated Neumann series (Richardson's iteration) for M x = rhs, one vector or a stack of
them (docs/mathematics.md §4a)."""
from __future__ import annotations

import math

import numpy as np

from solvers._common import to_host
from solvers._result import SolverBreakdown, Status
from solvers._optimizer import step_parameter
from solvers.linear._iteration import solve
from solvers.linear._spec import LinearSolver
from validation import check_array

__all__ = ["neumann", "default_alpha", "SOLVER"]


def neumann(matvec, rhs, *, alpha, x0=None, max_steps=None, rtol=1e-5, atol=0.0,
            history=False, on_breakdown="raise", check_every=None):
    """x_{k+1} = x_k + α(rhs − M x_k): from x₀ = 0 the k-th iterate is the truncated Neumann
    series α Σ_{j<k} (I − αM)^j rhs of M⁻¹rhs (docs/mathematics.md §4a), one matvec per step.
    Its error is (I − αM)^k(x₀ − x*): it converges exactly when every eigenvalue m of M has
    |1 − αm| < 1, i.e. for a symmetric M when M is positive definite and α‖M‖ < 2.

    ``alpha`` is a number > 0, or one per row of a stacked ``rhs`` (shape (n,)). Arguments,
    stopping rule, rows, scaling and host reads are those of :func:`solvers.cg` (the one loop
    of :mod:`solvers.linear._iteration`); ``residual_norm`` is ‖rhs − M x‖ of the returned x,
    computed (not a recurrence).

    Divergence: for a symmetric M, ‖r_{k+1}‖ ≤ ‖I − αM‖ ‖r_k‖, so a residual that grows above
    its start (and above √eps·‖rhs‖, beyond rounding) proves a factor |1 − αm| > 1: the series
    diverges. By default :class:`SolverBreakdown` is raised at that step; with
    ``on_breakdown='return'`` the series runs its steps as a library's fixed-budget series would
    (its iterate grows) and that row's status is DIVERGED. (For a non-symmetric M the growth
    may be transient; the test is still the one applied.)"""
    check_array(rhs, "rhs", ndim=(1, 2))
    step = step_parameter(alpha, "alpha", rhs, low=0.0)
    made = []

    def make(*args):
        made.append(_Neumann(*args, alpha=step, halt=on_breakdown == "raise"))
        return made[0]

    result = solve(make, matvec, rhs, x0=x0, max_steps=max_steps, rtol=rtol, atol=atol,
                   history=history, on_breakdown=on_breakdown, check_every=check_every)
    return made[0].mark_diverged(result)


class _Neumann:
    """x ← x + α r, r = b − M x recomputed from x (no drift of a recurrence). ``halt``: a row
    whose residual grows past its limit halts (the driver raises); otherwise it goes on and is
    remembered (``diverged``)."""

    name_residual = "the Neumann residual"
    name_value = "the residual of the Neumann series"
    name_iterate = "the Neumann iterate"
    halt_status = Status.DIVERGED
    matvecs_per_step = 1

    def __init__(self, xp, o, matvec, b, x, r, *, alpha, halt):
        self.o, self.matvec, self.b, self.alpha, self.halt = o, matvec, b, alpha, halt
        self.x, self.r = x, r
        self.rn = o.norm(o.plain(r))
        eps = float(xp.finfo(b.dtype).eps)
        # growth above both the start and √eps·‖b‖ is divergence, not rounding
        self.limit = o.maximum(self.rn, math.sqrt(eps) * o.norm(o.plain(b)))
        self.diverged = self.rn != self.rn         # False per row

    def residual_norm(self):
        return self.rn

    def advance(self, live):
        o = self.o
        x = self.x + self.alpha * self.r
        r = self.b - self.matvec(x)
        rn = o.norm(o.plain(r))
        grew = live & (rn > self.limit)
        self.diverged = self.diverged | grew
        finite = rn == rn                      # NaN halts (and raises); growth only when asked
        go = live & finite & ~grew if self.halt else live & finite
        keep = go[..., None]
        self.x = o.where(keep, x, self.x)
        self.r = o.where(keep, r, self.r)
        self.rn = o.where(go, rn, self.rn)
        return go, rn

    def mark_diverged(self, result):
        """The result with DIVERGED for the rows that grew (and did not converge later)."""
        diverged = np.atleast_1d(to_host(self.diverged)).astype(bool)
        if not diverged.any():
            return result
        if result.row_status is None:
            if result.status is not Status.CONVERGED:
                result.status = Status.DIVERGED
            return result
        rows = tuple(Status.DIVERGED if d and st is not Status.CONVERGED else st
                     for d, st in zip(diverged, result.row_status))
        result.row_status = rows
        if Status.DIVERGED in rows:
            result.status = Status.DIVERGED
        return result

    @staticmethod
    def breakdown(step, residual):
        return SolverBreakdown(
            f"the iteration diverges at step {step}: its residual grew to {residual:.3g}, above "
            f"its start (a Neumann series with α‖M‖ ≥ 2, a fixed-point map that does not "
            f"contract, or M not positive definite); pass a smaller step")


def default_alpha(system):
    """α = 1/‖M‖'s bound = λ/β from the task's curvature bounds (‖I − αM‖ = 1 − 1/κ), one per
    row for a stack; without bounds α must be given."""
    if system.bounds is None:
        raise ValueError("linear_options['alpha'] must be given for linear_solver='neumann': "
                         "the task has no curvature_bounds() to derive α = λ/β from")
    return 1.0 / system.bounds[1]


def _run(system, rhs, *, alpha=None, **kw):
    return neumann(system.matvec, rhs, alpha=default_alpha(system) if alpha is None else alpha,
                   **kw)


SOLVER = LinearSolver("neumann", _run,
                      {"alpha": "the step α of x ← x + α(∇L − Mx) (default λ/β)"}, definite=True,
                      summary="truncated Neumann series α Σ (I − αM)^j ∇L (M definite, α‖M‖ < 2)")
