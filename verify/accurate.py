"""Accuracy-driven meta-gradients: ask for ε, get a meta-gradient with a certificate ≤ ε.

The solvers take residual tolerances (``inner_tol`` on ‖∇_φG‖, ``cg_tol`` on CG's residual);
:func:`theory.bounds.meta_gradient_tolerances` turns (constants, ε) into those tolerances; the
a-posteriori certificate (docs/mathematics.md §5a, :func:`theory.bounds.certify`) says how close
the result is. This module joins the three::

    from verify.accurate import accurate_meta_gradient

    out = accurate_meta_gradient(task, theta, 1e-8)
    out.gradient                 # the meta-gradient
    out.certificate.bound        # ≤ 1e-8: ‖gradient − dθL(Alg*(θ))‖ ≤ this, in floating point
                                 # (the rounding of the computed residuals included)

The certificate is :func:`theory.bounds.certify` of the result (rounding-safe at any scale of
the data; for quadratic tasks the residuals of the returned φ and g are evaluated exactly where
the rounding model would dominate), so a returned certificate is never below the true error; a
task whose rounding cannot be bounded (a custom task type) is refused with a TypeError unless
``exact_arithmetic=True`` asks for a certificate in exact arithmetic only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from solvers import MetaGradientResult, Status, imaml_meta_gradient
from theory import to_numpy64
from theory.bounds import certify, meta_gradient_tolerances
from theory.tolerances import upper_norm
from validation import check_positive, check_steps

__all__ = ["accurate_meta_gradient", "AccurateMetaGradient", "AccuracyNotReached",
           "DEFAULT_INNER", "NEWTON_ITERATIONS_CAP"]

#: the inner solver of accuracy-driven calls: Newton-CG with CG to the target (on a quadratic,
#: one Newton iteration). Measured at d = 50 (see the solver benchmarks): as fast as Nesterov at
#: κ = 10, 3-9x faster at κ = 1000, and the only practical one at κ = 1e6.
DEFAULT_INNER = "newton_cg"
#: Newton iterations allowed before an accuracy-driven call gives up
NEWTON_ITERATIONS_CAP = 50


class AccuracyNotReached(ArithmeticError):
    """The requested ε could not be certified: it is at or below what the working precision
    can resolve for this task (or the caps were too small). ``best`` holds the closest result
    (an :class:`AccurateMetaGradient` whose certificate exceeds ε)."""

    def __init__(self, message, best):
        super().__init__(message)
        self.best = best


@dataclass(frozen=True)
class AccurateMetaGradient:
    """A meta-gradient with its certificate.

    result: the :class:`solvers.MetaGradientResult`. certificate: a
    :class:`theory.bounds.Certificate` (a tuple of one per task for a stack) with
    ``bound`` ≤ eps. inner_tol, cg_tol: the residual targets of the last round. rounds: how
    many rounds were run (a round tightens both targets when rounding left the first one
    short)."""

    result: MetaGradientResult
    certificate: Any
    eps: float
    inner_tol: float
    cg_tol: float
    rounds: int

    @property
    def gradient(self):
        return self.result.gradient

    @property
    def bound(self) -> float:
        """The largest certified error (over the tasks of a stack)."""
        certs = self.certificate if isinstance(self.certificate, tuple) else (self.certificate,)
        return max(c.bound for c in certs)


def _certificates(result, constants, exact_arithmetic):
    """One certificate per task: theory.bounds.certify of each task's result (the result
    carries its task and θ), safe in floating point for quadratic and logistic tasks; a task of
    unknown kind raises TypeError unless ``exact_arithmetic`` (then the certificate holds in
    exact arithmetic only, ``rounding_safe=False``)."""
    stack = result.n_tasks is not None
    rows = [result.row(i) for i in range(result.n_tasks)] if stack else [result]
    return tuple(certify(r, c, exact_arithmetic=exact_arithmetic)
                 for r, c in zip(rows, constants))


def _stated(tol: float) -> float:
    """A residual target as a solver can be given it: at least the smallest normal float64
    (a target that underflowed to 0 or below asks for more than any float can state; the
    certificate then decides, and the call refuses if it exceeds ε)."""
    return max(tol, float(np.finfo(np.float64).tiny))


def _row_norms(x) -> np.ndarray:
    """Certified upper bounds on the norms of the rows of x (theory.tolerances.upper_norm: no
    underflow or overflow)."""
    return np.array([upper_norm(row) for row in np.atleast_2d(to_numpy64(x))])


def _sharper_B(task, theta, constants):
    """B ≥ ‖∇L(Alg*(θ))‖ without solving for Alg*(θ): ‖∇L(θ)‖ + L‖θ − Alg*(θ)‖ and, G(·, θ)
    being μ-strongly convex with ∇_φG(θ, θ) = ∇L̂(θ), ‖θ − Alg*(θ)‖ ≤ ‖∇L̂(θ)‖/μ (two gradients
    at θ). The smaller of this and the given B is kept (both are valid)."""
    outer, inner = _row_norms(task.outer_grad(theta)), _row_norms(task.inner_grad(theta))
    return tuple(replace(c, B=min(c.B, float(o + c.L * i / c.mu)))
                 for c, o, i in zip(constants, outer, inner))


def accurate_meta_gradient(task, theta, eps, *, inner=None, constants=None, max_rounds=4,
                           inner_steps=None, cg_steps=None, exact_arithmetic=False,
                           **options) -> AccurateMetaGradient:
    """iMAML's meta-gradient to accuracy ``eps``: ‖g − dθL(Alg*(θ))‖ ≤ eps, certified.

    The residual targets come from :func:`theory.bounds.meta_gradient_tolerances` with the
    task's constants μ, L, ρ, λ (``task.constants(theta, radius=‖θ‖)``: no exact solve; or
    ``constants`` for a task without that method) and B ≥ ‖∇L(Alg*(θ))‖ from two gradients at
    θ (see :func:`_sharper_B`); nothing here uses the exact solution. The inner solver (``inner``:
    default :data:`DEFAULT_INNER`) stops at
    ‖∇_φG‖ ≤ inner_tol, CG at residual ≤ cg_tol; the certificate of the result is computed from
    the residuals actually reached. If rounding left it above eps (CG's recursive residual
    drifts from the true one), both targets are tightened by the shortfall and the call is
    repeated, up to ``max_rounds`` rounds; if a solver stops short of its target (its rounding
    floor or a cap) or the rounds run out, :class:`AccuracyNotReached` is raised with the best
    result. ``inner_steps`` and ``cg_steps`` are caps (defaults: :data:`NEWTON_ITERATIONS_CAP`
    Newton iterations, the first-order solvers' own cap, 10·d CG steps). Other options go to
    :func:`solvers.imaml_meta_gradient`. A stack (θ of shape (n, d)) uses the smallest target
    over its tasks; its certificate is one per task. The certificates are those of
    :func:`theory.bounds.certify` (never below the true error); for a task of unknown kind
    (no rounding magnitudes known) a TypeError, unless ``exact_arithmetic=True``."""
    eps = check_positive(eps, "eps")
    max_rounds = check_steps(max_rounds, "max_rounds")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds!r}")
    stack = getattr(theta, "ndim", 1) == 2
    inner = DEFAULT_INNER if inner is None else inner
    if constants is None:
        if not callable(getattr(task, "constants", None)):
            raise TypeError("the task has no constants(theta, radius): pass constants= "
                            "(theory.Constants with mu, L, rho, lam; B >= ||grad L(Alg*(theta))||)")
        radius = float(np.max(_row_norms(theta)))
        constants = task.constants(theta, radius=radius)
    per_task = tuple(constants) if isinstance(constants, (tuple, list)) else (constants,)
    per_task = _sharper_B(task, theta, per_task)
    targets = [meta_gradient_tolerances(c, eps) for c in per_task]
    inner_tol = _stated(min(t[0] for t in targets))
    cg_tol = _stated(min(t[1] for t in targets))
    if inner_steps is None and inner == "newton_cg":
        inner_steps = NEWTON_ITERATIONS_CAP
    best = None
    for rounds in range(1, max_rounds + 1):
        driven = math.isfinite(inner_tol)
        result = imaml_meta_gradient(
            task, theta, inner=inner, inner_steps=inner_steps if driven else 0,
            inner_tol=inner_tol if driven else None, cg_steps=cg_steps, cg_tol=cg_tol, **options)
        certs = _certificates(result, per_task, exact_arithmetic)
        out = AccurateMetaGradient(result, certs if stack else certs[0], eps, inner_tol, cg_tol,
                                   rounds)
        if out.bound <= eps:
            return out
        best = out if best is None or out.bound < best.bound else best
        stuck = (driven and result.inner.status is not Status.CONVERGED) or (
            result.linear.status is not Status.CONVERGED)
        if stuck:
            break
        shrink = 0.5 * eps / out.bound
        inner_tol, cg_tol = _stated(inner_tol * shrink), _stated(cg_tol * shrink)
    worst = best.certificate if not stack else max(best.certificate, key=lambda c: c.bound)
    raise AccuracyNotReached(
        f"could not certify eps = {eps:.3g}: the best certificate is {best.bound:.3g} "
        f"(delta = {worst.delta:.3g}, delta' = {worst.delta_prime:.3g}) after {best.rounds} "
        f"round(s) with inner_tol = {best.inner_tol:.3g}, cg_tol = {best.cg_tol:.3g}; inner "
        f"solver {best.result.inner.status.value}, CG {best.result.linear.status.value}. The "
        f"accuracy asked for is at or below what the working precision resolves for this task "
        f"(or a step cap is too small)", best)
