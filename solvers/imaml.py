"""iMAML's approximate implicit meta-gradient (Algorithm 2, Eq. 7)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from solvers._common import array_namespace, check_callback_output, norm
from solvers._result import SolverResult
from solvers.cg import cg
from solvers.gradient_descent import gradient_descent
from solvers.nesterov import nesterov
from solvers.newton_cg import newton_cg
from solvers.protocol import check_task
from validation import check_array, check_steps

__all__ = ["imaml_meta_gradient", "implicit_gradient_at", "MetaGradientResult", "inner_solve",
           "default_step_sizes", "INNER_SOLVERS"]

INNER_SOLVERS = ("nesterov", "gd", "newton_cg")


@dataclass
class MetaGradientResult:
    """A meta-gradient with its diagnostics.

    gradient: the meta-gradient g. phi: the approximate inner solution. inner: the inner
    solver's :class:`SolverResult`. cg: CG's result on (I + H(φ)/λ)g = ∇L(φ) (None for methods
    without a linear solve). stationarity: ‖∇_φG(φ, θ)‖ at the returned φ. cg_residual: the true
    residual ‖∇L(φ) − (I + H(φ)/λ)g‖. outer_grad_norm: ‖∇L(φ)‖. evaluations: total counts of
    inner gradients, Hessian-vector products and outer gradients used (diagnostics excluded).
    method: which estimator produced it."""

    gradient: Any
    phi: Any
    inner: SolverResult | None
    cg: SolverResult | None
    stationarity: float
    cg_residual: float
    outer_grad_norm: float
    evaluations: dict = field(default_factory=dict)
    method: str = "imaml"


def default_step_sizes(task, inner, step_size, momentum):
    """(step size, momentum) of an inner solver: the given values, or 1/β and (√κ−1)/(√κ+1)
    from the task's ``curvature_bounds()`` (momentum only for 'nesterov')."""
    if step_size is not None and (momentum is not None or inner != "nesterov"):
        return float(step_size), (None if momentum is None else float(momentum))
    bounds = getattr(task, "curvature_bounds", None)
    if bounds is None:
        raise ValueError(f"inner_step_size{' and inner_momentum' if inner == 'nesterov' else ''} "
                         f"must be given: the task has no curvature_bounds() to derive them from")
    beta, mu = bounds()
    sqrt_kappa = math.sqrt(beta / mu)
    return (1.0 / beta if step_size is None else float(step_size),
            (sqrt_kappa - 1) / (sqrt_kappa + 1) if momentum is None else float(momentum))


def inner_solve(task, theta, *, inner_steps, inner="nesterov", warm_start="theta",
                inner_step_size=None, inner_momentum=None, newton_cg_steps=5, rtol=0.0,
                atol=0.0, history=False) -> SolverResult:
    """Approximately minimize G(φ, θ) = L̂(φ) + (λ/2)‖φ − θ‖² over φ from φ₀ = θ
    (``warm_start='theta'``) or φ₀ = 0 (``'zero'``) with ``inner_steps`` steps of ``inner``:
    'nesterov' (docs/mathematics.md §3 variant; default step 1/β and momentum (√κ−1)/(√κ+1)), 'gd' (default
    step 1/β) or 'newton_cg' (``inner_steps`` Newton iterations of ``newton_cg_steps`` CG steps)."""
    check_task(task)
    check_array(theta, "theta", ndim=1)
    if inner_steps is not None or not (rtol or atol):
        check_steps(inner_steps, "inner_steps")
    if inner not in INNER_SOLVERS:
        raise ValueError(f"inner must be one of {INNER_SOLVERS}, got {inner!r}")
    if warm_start not in ("theta", "zero"):
        raise ValueError(f"warm_start must be 'theta' or 'zero', got {warm_start!r}")
    xp = array_namespace(theta)
    lam = float(task.lam)

    fitted = []

    def grad_G(phi):
        if fitted:
            return task.inner_grad(phi) + lam * (phi - theta)
        # first call: θ must fit the task (length, library, dtype, device); solvers see the task
        # only through the protocol, so its first answer is where a misfit shows
        try:
            out = task.inner_grad(phi)
        except (TypeError, ValueError, RuntimeError) as err:
            raise type(err)(f"theta does not fit the task: task.inner_grad(theta) raised: {err}") from err
        check_callback_output(out, theta, "task.inner_grad(theta)")
        fitted.append(True)
        return out + lam * (phi - theta)

    phi0 = theta if warm_start == "theta" else xp.zeros_like(theta)
    common = dict(max_steps=inner_steps, rtol=rtol, atol=atol, history=history)
    if inner == "newton_cg":
        check_steps(newton_cg_steps, "newton_cg_steps")
        return newton_cg(lambda p: task.inner_loss(p) + 0.5 * lam * xp.sum((p - theta) ** 2),
                         grad_G, lambda p, v: task.inner_hvp(p, v) + lam * v, phi0,
                         cg_steps=newton_cg_steps, **common)
    step, momentum = default_step_sizes(task, inner, inner_step_size, inner_momentum)
    if inner == "gd":
        return gradient_descent(grad_G, phi0, step_size=step, **common)
    return nesterov(grad_G, phi0, step_size=step, momentum=momentum, **common)


def imaml_meta_gradient(task, theta, *, inner_steps, cg_steps, inner="nesterov",
                        warm_start="theta", cg_start="zero", inner_step_size=None,
                        inner_momentum=None, newton_cg_steps=5, history=False,
                        on_breakdown="raise") -> MetaGradientResult:
    """Algorithm 2 of iMAML: an approximate inner solve φ ≈ Alg*(θ) (see :func:`inner_solve`),
    then ``cg_steps`` steps of CG on (I + H(φ)/λ) g = ∇L(φ) from g₀ = 0 (``cg_start='zero'``) or
    g₀ = ∇L(φ) (``'gradient'``; with 0 CG steps this is first-order MAML).

    Sees the task only through the task protocol. CG breakdown (I + H(φ)/λ not positive
    definite) raises, or with ``on_breakdown='return'`` is reported in ``result.cg.status``.
    """
    if cg_start not in ("zero", "gradient"):
        raise ValueError(f"cg_start must be 'zero' or 'gradient', got {cg_start!r}")
    check_steps(cg_steps, "cg_steps")
    inner_result = inner_solve(task, theta, inner_steps=inner_steps, inner=inner,
                               warm_start=warm_start, inner_step_size=inner_step_size,
                               inner_momentum=inner_momentum, newton_cg_steps=newton_cg_steps,
                               history=history)
    return implicit_gradient_at(task, theta, inner_result, cg_steps=cg_steps, cg_start=cg_start,
                                history=history, on_breakdown=on_breakdown)


def implicit_gradient_at(task, theta, inner_result, *, cg_steps, cg_start="zero",
                         history=False, on_breakdown="raise", method="imaml"):
    """The CG half of Algorithm 2 at a given inner result (shared by first-order MAML)."""
    check_steps(cg_steps, "cg_steps")
    xp = array_namespace(theta)
    lam = float(task.lam)
    phi = inner_result.x
    v = task.outer_grad(phi)

    def matvec(w):
        return w + task.inner_hvp(phi, w) / lam

    g0 = v if cg_start == "gradient" else None
    cg_result = cg(matvec, v, x0=g0, max_steps=cg_steps, rtol=0.0, atol=0.0, history=history,
                   on_breakdown=on_breakdown)
    g = cg_result.x
    stationarity = float(norm(xp, task.inner_grad(phi) + lam * (phi - theta)))
    cg_residual = float(norm(xp, v - matvec(g)))
    # work of the method only: one inner gradient per inner step (newton_cg: per iteration),
    # the final-residual gradient of the inner solver is a diagnostic and is not counted
    evals = {"inner_grad": inner_result.steps,
             # with 0 CG steps the start's residual is a diagnostic, not work of the method
             "hvp": inner_result.evaluations.get("hvp", 0)
             + (cg_result.evaluations["matvec"] if cg_result.steps else 0),
             "outer_grad": 1}
    return MetaGradientResult(gradient=g, phi=phi, inner=inner_result, cg=cg_result,
                              stationarity=stationarity, cg_residual=cg_residual,
                              outer_grad_norm=float(norm(xp, v)), evaluations=evals,
                              method=method)
