"""Accuracy-driven meta-gradients (verify.accurate): ask for ε, get a meta-gradient whose
a-posteriori certificate (docs/mathematics.md §5a) is ≤ ε, and whose true error is ≤ that
certificate, over Hypothesis-drawn tasks with κ up to 1e6; stacks of tasks too; negative
controls show both comparisons can fail."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from _tolerances import gap, gradient_scale, rounding_allowance
from solvers import imaml_meta_gradient
from theory import QuadraticTask, bounds
from theory.bounds import aposteriori_bound, meta_gradient_tolerances
from theory.constants import Constants
from verify import accurate
from verify.accurate import AccuracyNotReached, accurate_meta_gradient
from verify.strategies import quadratic_tasks
from verify.tasks import logistic_task, planted_spectrum_task

relative_eps = st.floats(-7, -1).map(lambda e: 10.0 ** e)


def check_certified(task, theta, eps, reference, *, kappa, dim, **kw):
    """The result's certificate is ≤ ε and its true error ≤ the certificate (up to the rounding
    of the float64 reference itself)."""
    out = accurate_meta_gradient(task, theta, eps, **kw)
    assert out.bound <= eps, (out.bound, eps)
    err = gap(out.gradient, reference)
    allowance = rounding_allowance("float64", kappa=kappa, scale=gradient_scale(task, theta),
                                   dim=dim)
    assert err <= out.bound + allowance, (err, out.bound)
    return out, err


@given(drawn=quadratic_tasks(max_kappa=1e6, max_dim=10), rel=relative_eps,
       inner=st.sampled_from(["newton_cg", "nesterov"]))
def test_certificate_meets_eps_and_bounds_the_true_error(drawn, rel, inner):
    task, spec, theta = drawn
    if inner == "nesterov" and spec.kappa > 1e4:
        inner = "newton_cg"   # Nesterov needs ~2√κ·log steps: covered up to κ = 1e4
    exact = task.meta_gradient(theta)
    eps = rel * max(float(np.linalg.norm(exact)), 1e-3)
    try:
        check_certified(task, theta, eps, exact, kappa=spec.kappa, dim=spec.dim, inner=inner)
    except AccuracyNotReached:
        # refusing is right only where float64 cannot certify ε at all
        assert eps < FLOOR_MARGIN * certificate_floor(task, theta), (eps, certificate_floor(
            task, theta))


#: how far above the rounding floor a request must always be met (solvers stagnate within a
#: small multiple of the floor: CG's true residual, Newton's last step)
FLOOR_MARGIN = 100.0


def certificate_floor(task, theta):
    """The smallest certificate float64 residuals can support for this task: ‖∇_φG‖ cannot be
    computed below s₀ = rounding of Aφ + b + λ(φ − θ) (scale β‖φ*‖ + ‖b‖ + λ‖θ‖), nor CG's
    residual below r₀ = rounding of ∇L − (I + A/λ)g (scale (β/λ)‖g*‖ + ‖∇L‖); the certificate
    maps them to (λL/μ)·s₀/μ + (λ/μ)·r₀ (docs/mathematics.md §5a, ρ = 0)."""
    c = task.constants(theta)
    g = float(np.linalg.norm(task.meta_gradient(theta)))
    s0 = rounding_allowance("float64", scale=c.beta * c.D + float(np.linalg.norm(task.b))
                            + c.lam * float(np.linalg.norm(theta)), dim=task.dim)
    r0 = rounding_allowance("float64", scale=c.beta / c.lam * g + c.B, dim=task.dim)
    return c.lam * c.L / c.mu * s0 / c.mu + c.lam / c.mu * r0


def test_default_inner_solver_is_newton_cg_and_one_iteration_on_a_quadratic():
    """The accuracy-driven default: Newton-CG, whose CG runs to half the inner target, so one
    Newton iteration meets it on a quadratic (κ = 1e6 here)."""
    task, spec = planted_spectrum_task(12, 1e6, 0.5, seed=3, query="reversed")
    theta = np.linspace(-2, 2, 12)
    out, _ = check_certified(task, theta, 1e-6, task.meta_gradient(theta), kappa=spec.kappa,
                             dim=spec.dim)
    assert accurate.DEFAULT_INNER == "newton_cg" and out.result.inner.steps == 1
    assert out.rounds == 1


@given(data=st.data(), rel=relative_eps)
def test_a_stack_is_certified_task_by_task(data, rel):
    n = data.draw(st.integers(1, 4))
    specs = [data.draw(st.floats(0, 5)) for _ in range(n)]
    singles = [planted_spectrum_task(6, 10.0 ** k, 1.0, seed=i, query="independent")[0]
               for i, k in enumerate(specs)]
    stack = QuadraticTask.stack(singles)
    theta = np.random.default_rng(n).standard_normal((n, 6))
    exact = stack.meta_gradient(theta)
    eps = rel * float(np.linalg.norm(exact, axis=1).min())
    out = accurate_meta_gradient(stack, theta, eps)
    assert len(out.certificate) == n and out.bound <= eps
    for i, single in enumerate(singles):
        assert gap(out.gradient[i], exact[i]) <= out.certificate[i].bound + rounding_allowance(
            "float64", kappa=10.0 ** specs[i], scale=gradient_scale(single, theta[i]), dim=6)


@given(seed=st.integers(0, 10 ** 6), rel=st.floats(-6, -2).map(lambda e: 10.0 ** e))
def test_logistic_tasks_with_curvature_change(seed, rel):
    """ρ > 0: the certificate's ρ term and B matter; the reference is the float64 Newton
    solution with its own certified error bar."""
    task, _ = logistic_task(40, 5, 0.5, seed=seed)
    theta = np.random.default_rng(seed).standard_normal(5)
    exact = task.meta_gradient(theta)
    _, ref_error = task.reference_error(theta)
    eps = rel * float(np.linalg.norm(exact))
    out = accurate_meta_gradient(task, theta, eps)
    assert out.bound <= eps
    assert gap(out.gradient, exact) <= out.bound + ref_error


def test_tolerances_are_exactly_the_certificate_solved():
    """meta_gradient_tolerances inverts the certificate: at the worst case it allows (residuals
    at the targets, ‖∇L(φ)‖ = B + Lδ) the certificate is ε to rounding; with L = ρ = 0 the
    inner target is unbounded."""
    c = Constants(10.0, 1.0, 10.0, 2.0, 3.0, 0.5, 1.0, 0.7)
    for eps in (1e-9, 1e-3, 10.0):
        inner_tol, cg_tol = meta_gradient_tolerances(c, eps)
        delta = inner_tol / c.mu
        cert = aposteriori_bound(c, stationarity=inner_tol, system_residual=cg_tol,
                                 outer_grad_norm=c.B + c.L * delta)
        assert cert.bound == pytest.approx(eps, rel=1e-12)
        assert cert.delta_prime == pytest.approx(eps / 2, rel=1e-12)
    flat = Constants(10.0, 1.0, 10.0, 0.0, 3.0, 0.0, 1.0, 0.7)
    assert meta_gradient_tolerances(flat, 1e-3)[0] == math.inf
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        meta_gradient_tolerances(c, 0.0)


def test_unreachable_eps_says_so():
    """ε far below float64's resolution for the task: AccuracyNotReached with the best result
    (its certificate above ε), not a silently uncertified answer."""
    task, _ = planted_spectrum_task(8, 1e6, 1.0, seed=0)
    theta = np.ones(8)
    eps = certificate_floor(task, theta) * 1e-6   # far below: float64 cannot resolve it
    with pytest.raises(AccuracyNotReached, match="could not certify eps") as info:
        accurate_meta_gradient(task, theta, eps)
    assert info.value.best.bound > eps


def test_negative_control_tolerances_too_loose_are_caught(monkeypatch):
    """Planted defect: targets 1000x too loose (a wrong derivation). With one round allowed the
    call must refuse (the certificate of what was computed exceeds ε), so the ≤ ε check is
    computed, not assumed."""
    task, spec = planted_spectrum_task(40, 1e3, 1.0, seed=1, query="reversed")
    theta = np.linspace(-1, 1, 40)
    eps = 1e-6 * float(np.linalg.norm(task.meta_gradient(theta)))
    assert accurate_meta_gradient(task, theta, eps, max_rounds=1).bound <= eps
    real = accurate.meta_gradient_tolerances
    monkeypatch.setattr(accurate, "meta_gradient_tolerances",
                        lambda c, e: tuple(1e3 * t for t in real(c, e)))
    for inner in ("newton_cg", "nesterov"):
        with pytest.raises(AccuracyNotReached):
            accurate_meta_gradient(task, theta, eps, max_rounds=1, inner=inner)


def test_negative_control_error_exceeds_a_wrong_certificate():
    """Planted defect: a certificate computed with μ overstated 100x (a wrong constant) is
    smaller than the true error of an inexact meta-gradient, which the comparison reports."""
    task, spec = planted_spectrum_task(10, 1e3, 1.0, seed=2, query="reversed")
    theta = np.linspace(-1, 1, 10)
    res = imaml_meta_gradient(task, theta, inner_steps=None, cg_steps=None, inner_tol=1e-2,
                              cg_tol=1e-2, inner="nesterov", warm_start="zero")
    c = task.constants(theta)
    wrong = Constants(c.beta * 100, c.mu * 100, c.kappa, c.L, c.B, c.rho, c.D, c.lam)
    err = gap(res.gradient, task.meta_gradient(theta))
    assert err <= bounds.certify(res, c).bound
    assert err > bounds.certify(res, wrong).bound


def test_certificates_are_rounding_safe_for_quadratic_stacks():
    """The accuracy-driven call certifies in floating point (the rounding of the computed
    residuals included), one certificate per task of a stack."""
    from theory import QuadraticTask
    from verify.accurate import accurate_meta_gradient
    from verify.tasks import planted_spectrum_task

    tasks = [planted_spectrum_task(6, 100.0, 1.0, seed=s, query="independent")[0] for s in range(3)]
    theta = np.random.default_rng(0).standard_normal((3, 6)) * 1e3
    out = accurate_meta_gradient(QuadraticTask.stack(tasks), theta, 1e-6)
    assert len(out.certificate) == 3
    for task, th, cert, g in zip(tasks, theta, out.certificate, out.gradient):
        assert cert.rounding_safe and cert.bound <= 1e-6
        assert np.linalg.norm(g - task.meta_gradient(th)) <= cert.bound
    single = accurate_meta_gradient(tasks[0], theta[0], 1e-6)
    assert single.certificate.rounding_safe
