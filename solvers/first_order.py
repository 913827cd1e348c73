"""First-order MAML and Reptile (docs/mathematics.md §7): meta-update directions that use no second-order
information, written through the same inner solver as iMAML.

- First-order MAML: g = ∇L(φ) at the approximate inner solution φ = Alg(θ). It IS iMAML's
  Algorithm 2 with 0 CG steps started at g₀ = ∇L(φ); this module calls exactly that code.
- Reptile: the direction θ − φ. At the exact inner solution it equals ∇L̂(φ)/λ (the first-order
  direction of the *inner* loss, divided by λ), not first-order MAML's ∇L(φ)/λ unless L = L̂.
"""
from __future__ import annotations

from solvers._common import array_namespace
from solvers.implicit import ImplicitSystem
from solvers.imaml import MetaGradientResult, _norms, implicit_gradient_at, inner_solve
from solvers.protocol import checked_task

__all__ = ["fomaml_meta_gradient", "reptile_direction"]


def fomaml_meta_gradient(task, theta, *, inner_steps, inner="nesterov", warm_start="theta",
                         inner_step_size=None, inner_momentum=None, newton_cg_steps=None,
                         history=False) -> MetaGradientResult:
    """First-order MAML: g = ∇L(φ) with φ from :func:`solvers.inner_solve` (same options as
    :func:`solvers.imaml_meta_gradient`). Computed as iMAML with ``cg_steps=0`` and
    ``cg_start='gradient'`` (docs/mathematics.md §4, §7), so ``result.linear`` is CG's 0-step
    result and ``system_residual`` the implicit system's residual at g. Method 'fomaml'."""
    inner_result = inner_solve(task, theta, inner_steps=inner_steps, inner=inner,
                               warm_start=warm_start, inner_step_size=inner_step_size,
                               inner_momentum=inner_momentum, newton_cg_steps=newton_cg_steps,
                               history=history)
    return implicit_gradient_at(task, theta, inner_result, cg_steps=0, cg_start="gradient",
                                history=history, method="fomaml")


def reptile_direction(task, theta, *, inner_steps, inner="nesterov", warm_start="theta",
                      inner_step_size=None, inner_momentum=None, newton_cg_steps=None,
                      history=False) -> MetaGradientResult:
    """Reptile's meta-update direction θ − φ with φ from :func:`solvers.inner_solve` (same
    options as :func:`solvers.imaml_meta_gradient`). Method 'reptile'; ``gradient`` holds
    θ − φ (a descent-like direction in the units of θ, not of a gradient: λ(θ − φ) compares
    with a gradient). ``linear`` is None; ``system_residual`` is the implicit system's residual
    ‖∇L(φ) − (I + H(φ)/λ)λ(θ − φ)‖ and ``outer_grad_norm`` ‖∇L(φ)‖ (diagnostics, not counted
    as work: ``evaluations`` has the inner solver's gradients only)."""
    inner_result = inner_solve(task, theta, inner_steps=inner_steps, inner=inner,
                               warm_start=warm_start, inner_step_size=inner_step_size,
                               inner_momentum=inner_momentum, newton_cg_steps=newton_cg_steps,
                               history=history)
    xp = array_namespace(theta)
    view = checked_task(task, theta)
    lam = view.lam_rows
    phi = inner_result.x
    direction = theta - phi
    v = view.outer_grad(phi)
    residual = ImplicitSystem.at(view, phi, like=theta).residual(lam * direction, v)
    evals = {"inner_grad": inner_result.steps, "hvp": inner_result.evaluations.get("hvp", 0),
             "outer_grad": 0}
    stationarity, system_residual, outer_grad_norm = _norms(
        xp, view.inner_grad(phi) + lam * (phi - theta), residual, v)
    return MetaGradientResult(
        gradient=direction, phi=phi, inner=inner_result, linear=None, stationarity=stationarity,
        system_residual=system_residual, outer_grad_norm=outer_grad_norm, evaluations=evals,
        method="reptile", task=task, theta=theta)
