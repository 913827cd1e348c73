"""Verdicts that hold everywhere (docs/mathematics.md §5a, §6, §7, §10): the rounding-safe
certificate on crafted instances far from the grid (true error in 50-digit arithmetic), the
allowance rule, the findings about Theorem 2's proof, the non-convex MAML bound, and a negative
control for each."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import theory.maml as tm
from solvers import imaml_meta_gradient
from theory.bounds import (aposteriori_bound, certify, theorem2_cg_steps_proof_slip,
                           theorem2_constants, theorem2_delta, theorem2_inner_steps_sharp,
                           theorem2_steps)
from theory.exact import QuadraticReference
from theory.tolerances import (Magnitudes, allowance, computation_magnitudes, gamma,
                               norm_upper_bound, rounding_allowance, sum_rounding)
from verify.checks import cg_bound, certificate, theorem2
from verify.checks._common import crafted_task, far_instances
from verify.checks.maml import check_maml_exact_solve, nonconvex_maml_instances
from verify.registry import RunContext
from verify.tasks import NonConvexQuadraticTask, logistic_task, nonconvex_task, planted_spectrum_task

seeds = st.integers(0, 2**31 - 1)


# -- the 50-digit reference -----------------------------------------------------------------------

def test_exact_reference_against_mpmath_lu():
    task, theta = crafted_task(5, 100.0, 10.0, seed=3, theta_norm=1e4, meta_gradient_norm=1e-3)
    ref = QuadraticReference(task)
    with mpmath.workdps(60):
        A, b = mpmath.matrix(task.A.tolist()), mpmath.matrix(task.b.tolist())
        Aq, bq = mpmath.matrix(task.A_query.tolist()), mpmath.matrix(task.b_query.tolist())
        C = A + task.lam * mpmath.eye(5)
        phi = mpmath.lu_solve(C, task.lam * mpmath.matrix(theta.tolist()) - b)
        g = task.lam * mpmath.lu_solve(C, Aq * phi + bq)
        mine = ref.meta_gradient(theta)
        gap = max(abs(g[i] - mine[i]) for i in range(5))
    assert gap < 1e-40
    assert abs(float(mpmath.norm(g)) - 1e-3) < 1e-12
    # float64 cannot: the float64 meta-gradient of this task is off by far more than its rounding
    assert ref.error(task.meta_gradient(theta), mine) > 1e3 * np.finfo(float).eps * 1e-3


# -- the certificate ------------------------------------------------------------------------------

CRAFTED = [(tn, steps, seed) for tn, steps in ((1e2, 400), (1e4, 200)) for seed in range(6)]


@pytest.mark.parametrize("theta_norm,steps,seed", CRAFTED)
def test_certificate_holds_on_the_crafted_instances(theta_norm, steps, seed):
    """The issue's instances: d = 5, κ = 100, λ = 10, reversed query, ‖θ‖ = 1e2 / 1e4, ‖g*‖ = 1e-3,
    400 / 200 Nesterov steps, 100 CG steps; true error in 50 digits."""
    task, theta = crafted_task(5, 100.0, 10.0, seed=seed, theta_norm=theta_norm,
                               meta_gradient_norm=1e-3)
    r = certificate.check_certificate(task, theta, inner="nesterov", inner_steps=steps,
                                      cg_steps=100)
    assert r.passed and r.allowance == 0.0, r


def _exact_arithmetic_certificate(res, c):
    """The old certificate: the computed residuals taken as exact (a planted defect)."""
    return aposteriori_bound(c, stationarity=res.stationarity, system_residual=res.system_residual,
                             outer_grad_norm=res.outer_grad_norm)


def test_certificate_without_rounding_fails_on_crafted_instances():
    """Negative control: ignoring the rounding of the residuals misses on the issue's instances
    (the 50-digit true error is above it on some of them)."""
    misses = 0
    for seed in range(12):
        task, theta = crafted_task(5, 100.0, 10.0, seed=seed, theta_norm=1e2,
                                   meta_gradient_norm=1e-3)
        r = certificate.check_certificate(task, theta, inner="nesterov", inner_steps=400,
                                          cg_steps=100, certificate=_exact_arithmetic_certificate)
        misses += not r.passed
    assert misses >= 2


@settings(max_examples=15)
@given(seed=seeds, log_theta=st.floats(0, 4), log_g=st.floats(-6, 0),
       setting=st.sampled_from(certificate.FAR_SETTINGS))
def test_certificate_holds_far_from_the_grid(seed, log_theta, log_g, setting):
    inner, inner_steps, cg_steps = setting
    task, theta = crafted_task(5, 100.0, 10.0, seed=seed, theta_norm=10 ** log_theta,
                               meta_gradient_norm=10 ** log_g)
    r = certificate.check_certificate(task, theta, inner=inner, inner_steps=inner_steps,
                                      cg_steps=cg_steps)
    assert r.passed, r


@pytest.mark.slow
@settings(max_examples=200)
@given(seed=seeds, log_theta=st.floats(0, 4), log_g=st.floats(-6, 0), dim=st.integers(2, 12),
       log_kappa=st.floats(0.5, 6), lam=st.floats(0.1, 10),
       setting=st.sampled_from(certificate.SETTINGS + certificate.FAR_SETTINGS))
def test_certificate_holds_far_from_the_grid_thorough(seed, log_theta, log_g, dim, log_kappa,
                                                       lam, setting):
    inner, inner_steps, cg_steps = setting
    task, theta = crafted_task(dim, 10 ** log_kappa, lam, seed=seed, theta_norm=10 ** log_theta,
                               meta_gradient_norm=10 ** log_g)
    r = certificate.check_certificate(task, theta, inner=inner, inner_steps=inner_steps,
                                      cg_steps=cg_steps)
    assert r.passed, r


def test_certificate_on_nonconvex_and_logistic_tasks():
    task, _ = nonconvex_task(6, 100.0, 2.0, seed=1)
    theta = np.random.default_rng(1).standard_normal(6)
    for setting in certificate.FAR_SETTINGS:
        r = certificate.check_certificate(task, theta, inner=setting[0], inner_steps=setting[1],
                                          cg_steps=setting[2])
        assert r.passed, r
    # logistic: the magnitudes come from the data; the reference carries its own error bar
    task, _ = logistic_task(30, 4, 0.1, seed=2, scale=2.0)
    theta = np.random.default_rng(2).standard_normal(4) * 30
    res = imaml_meta_gradient(task, theta, inner_steps=300, cg_steps=20)
    cert = certify(res, task.constants(theta), task=task, theta=theta)
    err = np.linalg.norm(res.gradient - task.meta_gradient(theta))
    assert err <= cert.bound + task.reference_error(theta)[1]
    assert cert.rounding > 0


def test_certify_is_rounding_safe_by_default():
    """The plain call certify(result, constants) is the safe one (the result carries its task
    and θ); only exact_arithmetic=True asks for the computed norms taken as exact."""
    task, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0)
    res = imaml_meta_gradient(task, np.ones(4), inner_steps=3, cg_steps=2)
    assert res.task is task and res.theta is not None
    old = certify(res, task.constants(np.ones(4)), exact_arithmetic=True)
    assert not old.rounding_safe and old.rounding == 0.0 and old.method == "exact arithmetic"
    m = computation_magnitudes(task, np.ones(4), res.phi, res.gradient)
    a = certify(res, task.constants(np.ones(4)), magnitudes=m)
    b = certify(res, task.constants(np.ones(4)), task=task, theta=np.ones(4))
    plain = certify(res, task.constants(np.ones(4)))
    assert a == b == plain and a.rounding > 0 and a.rounding_safe and a.bound > old.bound
    assert a.method == "model"
    with pytest.raises(TypeError, match="magnitudes"):
        computation_magnitudes(object(), np.ones(4), res.phi, res.gradient)


# -- the allowance rule ---------------------------------------------------------------------------

def test_allowance_rule_and_rigorous_forms():
    eps = np.finfo(np.float64).eps
    assert allowance("float64", terms=(1.0, 2.0), kappa=3.0, dim=4) == pytest.approx(eps * 4 * 3 * 3)
    assert rounding_allowance("float64", kappa=3.0, scale=3.0, dim=4) == allowance(
        "float64", terms=(3.0,), kappa=3.0, dim=4)
    with pytest.raises(ValueError, match="terms"):
        allowance("float64", terms=(1.0, -1.0))
    u = eps / 2
    assert gamma("float64", 10) == pytest.approx(10 * u / (1 - 10 * u))
    assert gamma("float64", 0) == 0.0
    with pytest.raises(ValueError, match="gamma"):
        gamma("float16", 10_000)
    assert sum_rounding("float64", (1.0, 2.0), length=6, extra_ops=0) == pytest.approx(
        gamma("float64", 6) * 3)
    assert sum_rounding("float64", (1.0,), length=6) == pytest.approx(gamma("float64", 10))
    assert norm_upper_bound("float64", 2.0, terms=(1.0,), length=3, dim=5) == pytest.approx(
        2.0 / (1 - gamma("float64", 7)) + gamma("float64", 7))


def test_rounding_bound_covers_the_computed_stationarity():
    """The rigorous bound of theory.tolerances covers |exact − computed| of ‖∇_φG‖ on crafted
    instances (exact from 50 digits), where the computed value is far below the exact one."""
    for seed in range(5):
        task, theta = crafted_task(5, 100.0, 10.0, seed=seed, theta_norm=1e4,
                                   meta_gradient_norm=1e-3)
        res = imaml_meta_gradient(task, theta, inner_steps=300, cg_steps=50)
        m = computation_magnitudes(task, theta, res.phi, res.gradient)
        ref = QuadraticReference(task)
        with mpmath.workdps(50):
            from theory.exact import _mp

            exact = (ref.A.dot(_mp(res.phi)) + ref.b + ref.lam * (_mp(res.phi) - _mp(theta)))
            exact_norm = float(mpmath.sqrt(mpmath.fsum(v * v for v in exact)))
        up = norm_upper_bound("float64", res.stationarity, terms=m.stationarity, length=m.length,
                              dim=m.dim)
        assert res.stationarity <= up and exact_norm <= up


def test_magnitudes_scale_with_the_terms_not_the_answer():
    task, theta = crafted_task(5, 100.0, 10.0, seed=0, theta_norm=1e4, meta_gradient_norm=1e-3)
    phi = task.inner_solution(theta)
    m = computation_magnitudes(task, theta, phi, task.meta_gradient(theta))
    assert isinstance(m, Magnitudes) and m.dim == 5 and m.length == 5
    assert sum(m.stationarity) > 1e5 and sum(m.outer_grad) > 1e2    # λ‖θ‖ = 1e5
    assert np.linalg.norm(task.outer_grad(phi)) < 1e-3 * sum(m.outer_grad)   # cancels


def test_far_instances_cover_the_issue_list():
    insts = far_instances(RunContext(quick=False))
    fams = [i["family"] for _, _, i in insts]
    assert fams.count("non-convex L̂") == 2 and "κ = 1e6" in fams
    assert any(i.get("theta_norm") == 1e4 for _, _, i in insts)
    for task, theta, inst in insts:
        beta, mu = task.curvature_bounds()
        assert mu > 0
        if inst["family"] == "non-convex L̂":
            assert np.linalg.eigvalsh(task.A)[0] < 0
    assert len(far_instances(RunContext(quick=True))) == 2


# -- the non-convex task and MAML's bound ----------------------------------------------------------

def test_nonconvex_task_is_within_assumption2_and_refused_outside():
    task, spec = nonconvex_task(6, 100.0, 2.0, seed=4)
    s = np.linalg.eigvalsh(task.A)
    beta, mu = task.curvature_bounds()
    assert s[0] < 0 and mu == pytest.approx(0.2, rel=1e-12) and beta / mu == pytest.approx(100.0)
    c = task.constants(np.zeros(6))
    assert c.mu == pytest.approx(mu) and c.kappa == pytest.approx(100.0)
    with pytest.raises(ValueError, match="positive definite"):
        NonConvexQuadraticTask(np.diag([-1.5, 1.0]), np.zeros(2), np.eye(2), np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="mu_over_lam"):
        nonconvex_task(4, 10.0, 1.0, seed=0, mu_over_lam=1.5)


def test_maml_bound_on_the_issue_nonconvex_instance():
    """A = diag(−0.9, 1), λ = 1, K = 0: error 9 = (λ − μ)/μ·‖∇L‖, attained; the appendix's
    1 − λ/β = 0.5 would be violated."""
    inst = next(nonconvex_maml_instances(RunContext(quick=True)))
    task, theta, _ = inst
    r = check_maml_exact_solve(task, theta, inner_steps=0)
    assert r.passed and r.measured == pytest.approx(9.0) and r.ratio == pytest.approx(1.0)
    c = task.constants(theta)
    assert tm.initial_jacobian_gap(c) == pytest.approx(9.0)
    assert (c.beta - c.lam) / c.beta == pytest.approx(0.5)


def test_maml_bound_with_convex_gap_fails_on_nonconvex_tasks(monkeypatch):
    """Negative control: with the appendix's 1 − λ/β in place of max((β−λ)/β, (λ−μ)/μ) the
    check fails on the non-convex instances."""
    monkeypatch.setattr(tm, "initial_jacobian_gap", lambda c: 1 - c.lam / c.beta)
    fails = [not check_maml_exact_solve(t, th, inner_steps=K).passed
             for t, th, _ in nonconvex_maml_instances(RunContext(quick=True)) for K in (0, 1)]
    assert any(fails)


@given(seed=seeds, K=st.integers(0, 60), mu_over_lam=st.floats(0.05, 0.95))
def test_maml_exact_solve_bound_holds_on_nonconvex_tasks(seed, K, mu_over_lam):
    task, _ = nonconvex_task(5, 30.0, 1.5, seed=seed, mu_over_lam=mu_over_lam, query="reversed")
    theta = np.random.default_rng(seed).standard_normal(5)
    assert check_maml_exact_solve(task, theta, inner_steps=K).passed


# -- Theorem 2: counts, findings, definitions ------------------------------------------------------

def test_theorem2_count_formulas():
    task, _ = planted_spectrum_task(6, 50.0, 2.0, seed=0, query="independent")
    theta = np.ones(6)
    c, delta = theorem2_constants(task, theta, 1e-4)
    t_inner, t_cg = theorem2_steps(c, 1e-4)
    sharp = theorem2_inner_steps_sharp(c, 1e-4)
    assert t_inner - sharp == pytest.approx(2 * math.sqrt(c.kappa) * math.log(2), abs=1.01)
    assert theorem2_cg_steps_proof_slip(c, 1e-4) == math.ceil(
        2 * math.log(4 * c.kappa * (c.lam / c.mu) * c.B / 1e-4))
    assert theorem2_delta(c, 1e-4) == pytest.approx(delta)


def test_theorem2_reports_both_definitions_of_needed():
    task, theta, inst = theorem2.paper_instance(RunContext())
    r = theorem2.check_theorem2(task, theta, 1e-8, instance=inst)
    d = r.details
    assert r.passed
    # the proof's split (‖φ − φ*‖ ≤ ε/2B₁) needs more steps than the accuracy itself asks
    assert d["needed_inner_meta_gradient"] < d["needed_inner_proof_split"] < d["T_inner"]
    assert 2 <= d["T_inner_over_needed_proof_split"] <= 3.5
    assert 3.5 <= d["T_inner_over_needed_meta_gradient"] <= 13


def test_cg_slip_finding_and_its_control():
    task, theta, inst = theorem2.paper_instance(RunContext())
    nums = theorem2.slip_numbers(task, theta, 1e-8)
    nes, cg_ = theorem2.check_cg_slip(task, theta, 1e-8, numbers=nums)
    assert nes.passed and cg_.passed and nes.kind == cg_.kind == "finding"
    assert nums["needed_cg"] <= nums["proof_slip_cg"] < nums["needed_nesterov"] <= nums["T_cg"]
    # control: had the proof kept √κ (its count is T_cg), the '>' finding would not hold
    fixed = dict(nums, proof_slip_cg=nums["T_cg"])
    assert not theorem2.check_cg_slip(task, theta, 1e-8, numbers=fixed)[0].passed


def test_sharp_count_holds_and_its_control():
    task, theta, inst = theorem2.paper_instance(RunContext())
    assert all(r.passed for r in theorem2.check_sharp_count(task, theta, 1e-6))
    c, _ = theorem2_constants(task, theta, 1e-6)
    half = theorem2_inner_steps_sharp(c, 1e-6) // 3
    assert not all(r.passed for r in theorem2.check_sharp_count(task, theta, 1e-6,
                                                                inner_steps=half))


def test_theorem2_on_far_instances_and_its_control():
    for task, theta, inst in far_instances(RunContext(quick=True)):
        assert theorem2.check_theorem2(task, theta, 1e-6, instance=inst).passed
        assert not theorem2.check_theorem2(task, theta, 1e-6, inner_steps=0).passed


# -- CG: the worst ratio is a ratio --------------------------------------------------------------

def test_cg_bound_reports_the_worst_informative_ratio():
    task, _ = planted_spectrum_task(12, 1e3, 1.0, seed=5, query="independent", spectrum="log")
    theta = np.ones(12)
    r = cg_bound.check_cg_bound(task, theta)
    assert r.passed and r.bound > r.allowance and r.ratio > 1e-3
    assert r.details["steps_above_rounding"] > 0 and r.details["steps_failing"] == 0
    k = r.instance["step"]
    assert r.measured <= r.bound


def test_check_kinds_are_validated():
    from verify.checks._result import compare

    assert compare("x", "§0", "s", 2.0, 1.0, relation=">").kind == "control"
    assert compare("x", "§0", "s", 0.5, 1.0).kind == "claim"
    with pytest.raises(ValueError, match="kind"):
        compare("x", "§0", "s", 0.5, 1.0, kind="opinion")
