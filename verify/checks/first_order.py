"""First-order MAML and Reptile against iMAML (docs/mathematics.md §7): where "identical up to the learning
rate" (Appendix A) holds, and a documented counterexample where it does not."""
from __future__ import annotations

import numpy as np

from solvers import fomaml_meta_gradient, imaml_meta_gradient, reptile_direction
from theory import to_numpy64
from theory.quadratic import QuadraticTask
from theory.tolerances import rounding_allowance
from verify.tasks import float64_twin, paper_synthetic_task, planted_spectrum_task, to_array
from verify.checks._result import compare
from verify.registry import claim
from validation import dtype_name

__all__ = ["check_fomaml_is_imaml", "check_reptile_gap", "check_reptile_same_loss",
           "check_reptile_counterexample", "opposite_tasks_example", "reptile_numbers"]

SECTION = "§7"


def _n(x) -> float:
    return float(np.linalg.norm(to_numpy64(x)))


def _kappa(task):
    beta, mu = task.curvature_bounds()
    return beta / mu


def check_fomaml_is_imaml(task, theta, *, inner_steps, method=fomaml_meta_gradient,
                          instance=None):
    """First-order MAML = iMAML with 0 CG steps from g₀ = ∇L(φ), exactly (same φ, same bits),
    and = ∇L(φ) at its own φ; and iMAML's 1 CG step from g₀ = 0 is the same direction scaled
    (cosine 1 to rounding). Returns three CheckResults."""
    inst = dict(instance or {}, inner_steps=inner_steps)
    fo = method(task, theta, inner_steps=inner_steps)
    zero_cg = imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=0,
                                  cg_start="gradient")
    g, g0 = to_numpy64(fo.gradient), to_numpy64(zero_cg.gradient)
    out = [compare("fomaml-is-imaml", SECTION,
                   "first-order MAML == iMAML with 0 CG steps started at ∇L(φ) (bitwise)",
                   float(np.max(np.abs(g - g0))), 0.0, instance=inst),
           compare("fomaml-is-imaml", SECTION, "first-order MAML == ∇L(φ) at its own φ (bitwise)",
                   float(np.max(np.abs(g - to_numpy64(task.outer_grad(fo.phi))))), 0.0,
                   instance=inst)]
    one = to_numpy64(imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=1).gradient)
    denom = np.linalg.norm(one) * np.linalg.norm(g)
    cos = float(one @ g / denom) if denom > 0 else 1.0
    out.append(compare("fomaml-is-imaml", SECTION,
                       "iMAML with 1 CG step from g₀ = 0 is first-order MAML's direction scaled "
                       "(1 − cosine)", 1.0 - cos,
                       rounding_allowance(dtype_name(theta), kappa=_kappa(task), dim=theta.shape[0]),
                       instance=inst, details={"cosine": cos,
                                               "scale": float(np.linalg.norm(one) / max(np.linalg.norm(g), 1e-300))}))
    return out


def check_reptile_gap(task, theta, *, inner_steps, method=reptile_direction, instance=None,
                      inner="nesterov"):
    """Reptile's θ − φ differs from ∇L̂(φ)/λ by exactly ‖∇G(φ, θ)‖/λ (so they are equal at the
    exact inner solution). measured = |‖(θ − φ) − ∇L̂(φ)/λ‖ − ‖∇G(φ, θ)‖/λ|."""
    res = method(task, theta, inner_steps=inner_steps, inner=inner)
    lam = float(task.lam)
    d = to_numpy64(res.gradient)
    phi = res.phi
    inner_dir = to_numpy64(task.inner_grad(phi)) / lam
    gap = float(np.linalg.norm(d - inner_dir))
    grad_G = _n(task.inner_grad(phi) + lam * (phi - theta)) / lam
    scale = _n(theta) + _n(phi) + float(np.linalg.norm(inner_dir))
    return compare("reptile-gap", SECTION,
                   "‖(θ − φ) − ∇L̂(φ)/λ‖ = ‖∇G(φ, θ)‖/λ (0 at the exact inner solution)",
                   abs(gap - grad_G),
                   rounding_allowance(dtype_name(theta), kappa=_kappa(task), scale=scale,
                                      dim=theta.shape[0]),
                   instance=dict(instance or {}, inner_steps=inner_steps, inner=inner),
                   details={"gap": gap, "stationarity_over_lam": grad_G})


def check_reptile_same_loss(task, theta, *, inner_steps, method=reptile_direction,
                            instance=None):
    """With the query loss equal to the inner loss, Reptile's θ − φ is first-order MAML's
    direction over λ up to ‖∇G(φ, θ)‖/λ (same inner solve): ‖(θ − φ) − g_FO/λ‖ ≤ ‖∇G‖/λ."""
    rep = method(task, theta, inner_steps=inner_steps)
    fo = fomaml_meta_gradient(task, theta, inner_steps=inner_steps)
    lam = float(task.lam)
    gap = float(np.linalg.norm(to_numpy64(rep.gradient) - to_numpy64(fo.gradient) / lam))
    scale = _n(theta) + _n(rep.phi) + _n(fo.gradient) / lam
    return compare("reptile-same-loss", SECTION,
                   "L = L̂: ‖(θ − φ) − ∇L(φ)/λ‖ ≤ ‖∇G(φ, θ)‖/λ", gap, rep.stationarity / lam,
                   allowance=rounding_allowance(dtype_name(theta), kappa=_kappa(task), scale=scale,
                                                dim=theta.shape[0]),
                   instance=dict(instance or {}, inner_steps=inner_steps))


def reptile_numbers(task, theta):
    """At the exact inner solution φ* (float64 reference): Reptile's λ(θ − φ*) = ∇L̂(φ*) against
    first-order MAML's ∇L(φ*) and the true meta-gradient: cosines and the length ratio."""
    t64 = float64_twin(task)
    theta64 = to_numpy64(theta)
    phi = to_numpy64(t64.inner_solution(theta64))
    rep = t64.lam * (theta64 - phi)
    fo = to_numpy64(t64.outer_grad(phi))
    true = to_numpy64(t64.meta_gradient(theta64))

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    return {"cosine_reptile_fomaml": cos(rep, fo),
            "ratio_reptile_fomaml": float(np.linalg.norm(rep) / np.linalg.norm(fo)),
            "cosine_reptile_true": cos(rep, true), "cosine_fomaml_true": cos(fo, true),
            "reptile_identity_error": float(np.linalg.norm(rep - to_numpy64(t64.inner_grad(phi))))}


def check_reptile_counterexample(task, theta, *, instance=None):
    """Negative-relation check: with a query loss different from the inner loss, λ(θ − φ*) and
    ∇L(φ*) are NOT the same direction: 1 − cosine > rounding allowance (the appendix's
    "identical up to the learning rate" needs L = L̂ and an exact inner solve)."""
    nums = reptile_numbers(task, theta)
    allowance = rounding_allowance("float64", kappa=_kappa(task), dim=theta.shape[0])
    return compare("reptile-counterexample", SECTION,
                   "separate query loss: 1 − cos(λ(θ − φ*), ∇L(φ*)) > rounding (directions differ)",
                   1.0 - nums["cosine_reptile_fomaml"], allowance, relation=">",
                   instance=instance, details=nums)


def opposite_tasks_example(c: float = 1.0, lam: float = 1.0):
    """A 2-d counterexample: the support loss pulls φ toward +c·e₁, the query loss toward −c·e₁
    (A = Aₜ = I, b = −c e₁, bₜ = +c e₁), θ = 0. Then φ* = c e₁/(1 + λ), Reptile's λ(θ − φ*) = −λc e₁/(1 + λ) and first-order MAML's
    ∇L(φ*) = c e₁(2 + λ)/(1 + λ): cosine −1, ratio λ/(2 + λ). Returns (task, theta)."""
    e1 = np.array([1.0, 0.0])
    task = QuadraticTask(np.eye(2), -c * e1, np.eye(2), c * e1, lam)
    return task, np.zeros(2)


def _instances(ctx, query):
    dims = ((5, 10.0, 1.0), (20, 1e3, 0.5)) if ctx.quick else tuple(
        (d, k, lam) for d in (5, 20, 50) for k in (2.0, 100.0, 1e3) for lam in (0.1, 1.0, 10.0))
    for i, (d, kappa, lam) in enumerate(dims):
        seed = ctx.rng_seed(5, i, len(query))
        task, spec = planted_spectrum_task(d, kappa, lam, seed=seed, query=query, array=ctx.array,
                                           dtype=ctx.dtype, device=ctx.device)
        theta = to_array(np.random.default_rng(seed + 1).standard_normal(d), array=ctx.array,
                         dtype=ctx.dtype, device=ctx.device)
        yield task, theta, dict(spec.as_dict(), array=ctx.array, dtype=ctx.dtype)


@claim("fomaml-is-imaml", title="First-order MAML is iMAML with 0 CG steps from ∇L(φ)",
       section=SECTION, statement="g_FO = ∇L(Alg(θ)) equals Algorithm 2 with 0 CG steps started at "
       "g₀ = ∇L(φ) exactly; one CG step from 0 gives the same direction scaled")
def run_fomaml(ctx):
    out = []
    for task, theta, inst in _instances(ctx, "independent"):
        for K in ((1, 10) if ctx.quick else (0, 1, 10, 100)):
            out += check_fomaml_is_imaml(task, theta, inner_steps=K, instance=inst)
    return out


@claim("reptile-gap", title="Reptile: θ − φ = ∇L̂(φ)/λ up to ‖∇G(φ, θ)‖/λ", section=SECTION,
       statement="(θ − φ) − ∇L̂(φ)/λ = −∇G(φ, θ)/λ: equal at the exact inner solution, off by "
       "exactly ‖∇G‖/λ with an inexact one")
def run_reptile_gap(ctx):
    out = []
    for task, theta, inst in _instances(ctx, "independent"):
        for K in ((1, 10) if ctx.quick else (1, 10, 100)):
            out.append(check_reptile_gap(task, theta, inner_steps=K, instance=inst))
        out.append(check_reptile_gap(task, theta, inner_steps=3, inner="newton_cg", instance=inst))
    return out


@claim("reptile-same-loss", title="Reptile = first-order MAML / λ when L = L̂", section=SECTION,
       statement="with the query loss equal to the inner loss, ‖(θ − φ) − ∇L(φ)/λ‖ ≤ ‖∇G(φ, θ)‖/λ")
def run_reptile_same(ctx):
    out = []
    for task, theta, inst in _instances(ctx, "same"):
        for K in ((1, 10) if ctx.quick else (1, 10, 100)):
            out.append(check_reptile_same_loss(task, theta, inner_steps=K, instance=inst))
    return out


@claim("reptile-counterexample", title="Reptile ≠ first-order MAML / λ with a separate query loss",
       section=SECTION, statement="with L ≠ L̂, λ(θ − Alg*(θ)) = ∇L̂(φ*) and ∇L(φ*) point in different "
       "directions (cosine and length ratio reported)",
       loose="Appendix A calls Reptile and first-order MAML 'identical up to the learning rate'; "
       "that needs L = L̂ and an exact inner solve")
def run_counterexample(ctx):
    task, theta = opposite_tasks_example()
    out = [check_reptile_counterexample(task, theta, instance={"family": "opposite 2-d tasks",
                                                               "c": 1.0, "lam": 1.0})]
    paper, spec = paper_synthetic_task(seed=ctx.seed)
    out.append(check_reptile_counterexample(paper, np.zeros(spec.dim),
                                            instance=dict(spec.as_dict(), family="paper synthetic",
                                                          theta="0")))
    for task, theta, inst in _instances(ctx, "independent"):
        out.append(check_reptile_counterexample(task, theta, instance=inst))
    return out
