"""MINRES (Paige & Saunders 1975) for symmetric, possibly indefinite systems, one vector or a
stack of them (docs/mathematics.md §4b)."""
from __future__ import annotations

from solvers._result import SolverBreakdown, Status
from solvers.linear._iteration import solve
from solvers.linear._spec import LinearSolver

__all__ = ["minres", "SOLVER"]


def minres(matvec, rhs, *, x0=None, max_steps=None, rtol=1e-5, atol=0.0, history=False,
           on_breakdown="raise", check_every=None):
    """Solve M x = rhs for a symmetric M (definite or not) given as ``matvec``.

    After k steps from x₀ the iterate minimises the residual ‖rhs − M x‖ over
    x₀ + span{r₀, M r₀, …, M^(k−1) r₀} (r₀ = rhs − M x₀): the Lanczos process on M with a QR
    factorisation of its tridiagonal matrix by Givens rotations, the residual norm read off
    the rotations (no extra product), one matvec per step (SciPy's ``minres`` without
    preconditioner or shift; the same iterates to rounding). Its residual decreases
    monotonically at every step, whatever the signs of M's eigenvalues; the bounds are
    docs/mathematics.md §4b.

    Arguments, stopping rule, rows, scaling and host reads are those of :func:`solvers.cg`
    (the one loop of :mod:`solvers.linear._iteration`). ``residual_norm`` is the residual norm
    of the recurrence. A row halts (status BREAKDOWN; raised by default) only when the rotation
    meets γ = 0, i.e. M is singular on the Krylov space; when the Lanczos process ends
    (β = 0: the Krylov space is invariant) the residual is zero and the row has converged.
    ``M`` must be symmetric: MINRES does not test it (a non-symmetric matvec gives iterates that
    minimise nothing)."""
    return solve(_MINRES, matvec, rhs, x0=x0, max_steps=max_steps, rtol=rtol, atol=atol,
                 history=history, on_breakdown=on_breakdown, check_every=check_every)


class _MINRES:
    """The state of MINRES per row; every update is masked (frozen rows keep their values, and
    their denominators are replaced by 1 so that no frozen row computes 0/0)."""

    name_residual = "the MINRES residual"
    name_value = "the Lanczos coefficients of matvec"
    name_iterate = "the MINRES iterate"
    halt_status = Status.BREAKDOWN
    matvecs_per_step = 1

    def __init__(self, xp, o, matvec, b, x, r):
        self.o, self.matvec = o, matvec
        self.x = x
        zero_rows = xp.zeros_like(x)
        self.r1 = self.r2 = self.y = r
        beta = o.norm(r)
        self.beta = beta                       # β_k (the norm of the next Lanczos vector)
        self.oldb = xp.zeros_like(beta)        # β_{k−1}
        self.phibar = beta                     # ‖r_k‖
        self.dbar = self.epsln = self.sn = xp.zeros_like(beta)
        self.cs = -xp.ones_like(beta)
        self.w = self.w2 = zero_rows
        self.first = True
        self.one = xp.ones_like(beta)

    def residual_norm(self):
        return self.o.plain(self.phibar)

    def advance(self, live):
        o = self.o
        w = lambda keep, new, old: o.where(keep, new, old)         # noqa: E731
        rows = lambda a: a[..., None]                             # noqa: E731
        beta = w(live, self.beta, self.one)    # frozen rows: a harmless denominator
        v = self.y / rows(beta)
        y = self.matvec(v)
        if not self.first:
            y = y - rows(beta / w(live, self.oldb, self.one)) * self.r1
        alfa = o.dot(v, y)
        y = y - rows(alfa / beta) * self.r2
        new_beta = o.norm(y)
        # the previous rotation applied to the new column, then the next rotation
        delta = self.cs * self.dbar + self.sn * alfa
        gbar = self.sn * self.dbar - self.cs * alfa
        epsln = self.sn * new_beta
        dbar = -self.cs * new_beta
        gamma = o.sqrt(gbar * gbar + new_beta * new_beta)
        go = live & (gamma > 0)                # False for γ = 0 and for NaN
        gamma_safe = w(go, gamma, self.one)
        cs, sn = gbar / gamma_safe, new_beta / gamma_safe
        phi = cs * self.phibar
        w_new = (v - rows(self.epsln) * self.w2 - rows(delta) * self.w) / rows(gamma_safe)
        keep = rows(go)
        self.x = w(keep, self.x + rows(phi) * w_new, self.x)
        self.w2 = w(keep, self.w, self.w2)
        self.w = w(keep, w_new, self.w)
        self.r1 = w(keep, self.r2, self.r1)
        self.r2 = w(keep, y, self.r2)
        self.y = self.r2
        self.oldb = w(go, self.beta, self.oldb)
        self.beta = w(go, new_beta, self.beta)
        self.epsln = w(go, epsln, self.epsln)
        self.dbar = w(go, dbar, self.dbar)
        self.cs, self.sn = w(go, cs, self.cs), w(go, sn, self.sn)
        self.phibar = w(go, sn * self.phibar, self.phibar)
        self.first = False
        return go, gamma

    @staticmethod
    def breakdown(step, gamma):
        return SolverBreakdown(f"MINRES breakdown at step {step}: matvec is singular on the "
                               f"Krylov space (rotation gamma = {gamma:.3g})")


def _run(system, rhs, **kw):
    return minres(system.matvec, rhs, **kw)


SOLVER = LinearSolver("minres", _run, {}, definite=False,
                      summary="MINRES (M symmetric, definite or not)")
