"""Teeth for the claims that could pass whatever the code did (issue 18, "Found" 2): each test
below fails on one hand mutant of the issue (named in its docstring) — an instance on which the
check can fail, and a negative control that it does."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _tolerances import assert_within_rounding, machine_epsilon
from solvers import cg, fomaml_meta_gradient, imaml_meta_gradient, implicit_gradient_at, reptile_direction
from theory import to_numpy64
from theory.bounds import lemma3_B1, theorem2_cg_steps_proof_slip, theorem2_constants
from theory.tolerances import allowance as allowance_rule
from theory.tolerances import computation_magnitudes, relative_tolerance
from verify.checks import _common, corollary1, first_order, logistic, theorem2
from verify.measure import distances, steps_to_stay_below
from verify.registry import RunContext, all_claims
from verify.tasks import logistic_task, paper_synthetic_task, planted_spectrum_task


def _claim(name, **kw):
    return all_claims()[name].run(RunContext(quick=True, seed=1, **kw))


# -- theorem2-cg-proof-slip -----------------------------------------------------------------------

def _recount(task, theta, eps):
    """The CG steps needed, recounted here: CG run afresh for k and k − 1 steps at φ = Alg*(θ)."""
    phi = task.inner_solution(theta)
    target = task.implicit_gradient(phi)
    lam = task.lam

    def err(k):
        x = cg(lambda v: v + task.inner_hvp(phi, v) / lam, task.outer_grad(phi), max_steps=k,
               rtol=0.0, atol=0.0).x
        return float(np.linalg.norm(x - target))
    return err


def test_cg_slip_needed_counts_are_what_cg_needs():
    """Mutant: the CG step count replaced by 0 (or any other number). The count is the first k
    after which CG stays within ε/2: CG with k − 1 steps is not, with k it is; and on the
    log-spaced scan CG needs more than the slipped count, which a count of 0 would deny."""
    task, _ = planted_spectrum_task(100, 10 ** 2.0, 1.0, seed=5, query="independent",
                                    spectrum="log")
    theta = np.random.default_rng(6).standard_normal(100)
    eps = 1e-6 * float(np.linalg.norm(task.meta_gradient(theta)))
    slip, need = theorem2.cg_slip_point(task, theta, eps)
    err = _recount(task, theta, eps)
    assert err(need) <= eps / 2 < err(need - 1)
    assert need > slip == theorem2_cg_steps_proof_slip(theorem2_constants(task, theta, eps)[0], eps)
    # the paper's task: the same definition, and there CG needs fewer than the slipped count
    ptask, ptheta, _ = theorem2.paper_instance(RunContext())
    nums = theorem2.slip_numbers(ptask, ptheta, 1e-6)
    perr = _recount(ptask, ptheta, 1e-6)
    assert perr(nums["needed_cg"]) <= 1e-6 / 2 < perr(nums["needed_cg"] - 1)
    assert nums["needed_cg"] <= nums["proof_slip_cg"]


def test_cg_slip_scan_finds_where_cg_needs_more_and_its_control():
    """The claim states where the CG half holds and where not: the first κ of the scan where CG
    needs more than the slipped count, with the κ before it (CG within it). Control: a scan on
    which CG never needs more gives a failing '>' finding (the finding can fail)."""
    results = _claim("theorem2-cg-proof-slip")
    scan = [r for r in results if "log-spaced" in r.statement]
    assert all(r.passed and r.kind == "finding" for r in scan)
    first = [r for r in scan if r.instance["first_of_scan"]]
    assert len(first) == 1 and first[0].relation == ">" and first[0].measured > first[0].bound
    kappa1 = first[0].details["first_kappa_cg_needs_more"]
    assert 10 < kappa1 < 100 and kappa1 == first[0].instance["kappa"]
    below = [r for r in scan if r.relation == "<="]
    assert below and below[0].instance["kappa"] < kappa1 and below[0].measured <= below[0].bound
    rows = first[0].details["scan"]
    assert all(n <= s for k, s, n in rows if k < kappa1)
    fake = [dict(kappa=k, slip=s, needed_cg=min(n, s), seed=0, dim=100, spectrum="log", eps=1.0)
            for k, s, n in rows]
    assert not any(r.passed for r in theorem2.check_slip_scan(fake))


# -- theorem2-logistic-rho-branch ------------------------------------------------------------------

def _rho_instance():
    task, inst = logistic_task(30, 4, 0.01, seed=11, scale=2.0)
    return task, np.random.default_rng(12).standard_normal(4), inst


def test_rho_branch_is_the_branch_taken_and_outside_it_the_check_says_so():
    """Mutant: ε one tenth of ε* (outside the branch). The first result asserts that the proof's
    δ is μ/(2ρ) < ε/(2B₁); at ε = ε*/10 it is not, and the check fails."""
    task, theta, inst = _rho_instance()
    inside = logistic.check_theorem2_rho_branch(task, theta, eps_factor=1.25, instance=inst)
    assert all(r.passed for r in inside)
    assert inside[0].details["delta"] == inside[0].details["mu_over_2rho"] == inside[0].measured
    outside = logistic.check_theorem2_rho_branch(task, theta, eps_factor=0.1, instance=inst)
    assert not outside[0].passed and outside[0].details["delta"] < outside[0].measured


def test_rho_branch_inner_step_fails_when_the_inner_solve_is_short():
    """Mutant: the distance compared with 1e9 (or not at all). Nesterov stopped one step before
    it first comes within μ/(2ρ) of Alg*(θ) fails the proof's inner step."""
    task, theta, inst = _rho_instance()
    r = logistic.check_theorem2_rho_branch(task, theta, instance=inst)[1]
    delta = r.bound
    sol = task.certified_solution(theta)
    from solvers import inner_solve

    iters = inner_solve(task, theta, inner_steps=r.details["T_inner"], warm_start="zero",
                        history=True).history.iterates
    first = next(k for k, x in enumerate(iters) if np.linalg.norm(np.asarray(x) - sol.phi) <= delta)
    assert first >= 1
    short = logistic.check_theorem2_rho_branch(task, theta, inner_steps=first - 1, instance=inst)[1]
    assert not short.passed and short.measured > delta + short.allowance
    assert logistic.check_theorem2_rho_branch(task, theta, inner_steps=first, instance=inst)[1].passed


def test_rho_branch_accuracy_fails_on_a_missing_lambda():
    """Mutant: the accuracy compared with 1e9. In this branch any g with ‖g‖ ≤ ε/2 passes (the
    finding), so the control is a defect larger than that, on the planted instance where ‖g*‖
    is close to ε/2: the Jacobian (λI + H)⁻¹ without its λ, i.e. g*/λ, 100× too long at
    λ = 0.01. (A wrong sign, error 2‖g*‖ < ε, passes even there: the finding.)"""
    task, theta, inst = logistic.rho_branch_task(30, 4, 0.01, seed=3)

    def missing_lambda(task, theta, *, inner_steps, cg_steps):
        res = imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=cg_steps,
                                  warm_start="zero")
        res.gradient = res.gradient / task.lam
        return res

    r = logistic.check_theorem2_rho_branch(task, theta, eps_factor=1.01, method=missing_lambda,
                                           instance=inst)[2]
    assert not r.passed and r.measured > r.bound

    def wrong_sign(task, theta, *, inner_steps, cg_steps):
        res = imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=cg_steps,
                                  warm_start="zero")
        res.gradient = -res.gradient
        return res

    sign = logistic.check_theorem2_rho_branch(task, theta, eps_factor=1.01, method=wrong_sign,
                                              instance=inst)[2]
    assert sign.passed and sign.ratio > 0.95


def test_rho_branch_measures_the_meta_gradient_and_comes_close_on_the_planted_instance():
    """Mutant: ‖g*‖ never measured (replaced by 0). The fourth result is ‖dθL(Alg*(θ))‖ of the
    certified reference, and on the planted instance it is within a few per cent of ε/2 (the
    bound (λ/μ)B < ε/2 nearly attained: the zero vector is only just ε/2-accurate)."""
    task, theta, inst = logistic.rho_branch_task(30, 4, 0.01, seed=3)
    res = logistic.check_theorem2_rho_branch(task, theta, eps_factor=1.01, instance=inst)
    assert all(r.passed for r in res)
    g_star = to_numpy64(task.meta_gradient(theta))
    assert res[3].measured == float(np.linalg.norm(g_star)) > 0
    c = task.constants(theta, radius=float(np.linalg.norm(theta)))
    # ‖g*‖ = σ(margin)·B exactly here (H(φ*) has e_d in its kernel), and ε/2 = 1.01(B + λL/2ρ)
    sig = 1 / (1 + math.exp(-inst["margin"]))
    assert_within_rounding(res[3].measured, sig * c.B, dtype="float64", scale=c.B, dim=4,
                           kappa=c.kappa)
    assert res[3].ratio > 1 / 1.02
    # the default grid's instances are far from it: this is what the planted instance adds
    task2, theta2, inst2 = _rho_instance()
    assert logistic.check_theorem2_rho_branch(task2, theta2, instance=inst2)[3].ratio < 0.1


# -- corollary1 -------------------------------------------------------------------------------------

def test_corollary1_count_is_approached_within_ten_times():
    """Mutants: the count divided by 100, or with ε not squared. On the slow-descent family the
    calls come within 10× of 4M·L_F(F(0) − min F)/ε² (about q²/4 of it), so either mutant
    makes the check fail."""
    tasks, F = corollary1.slow_descent_tasks(1, 4, 10.0, 1.0, seed=5, eps=1e-2, residual0=30.0)
    count, accurate = corollary1.check_corollary1(tasks, 1e-2, objective=F)
    assert count.passed and accurate.passed
    assert 0.1 < count.ratio <= corollary1.SLOW_DESCENT_Q ** 2 / 4
    assert count.bound / 100 < count.measured and count.bound * 1e-2 < count.measured
    # F is what it claims: min F = 0 exactly, ∇F of norm just above ε far from the minimum
    t = corollary1.SLOW_DESCENT_R0
    w_theta = np.zeros(4)
    g0 = F.gradient(w_theta)
    assert 1e-2 < float(np.linalg.norm(g0)) <= 1e-2 / corollary1.SLOW_DESCENT_Q
    assert F.minimum == 0.0 and t > 0


def test_corollary1_accuracy_check_fails_on_an_error_of_eps():
    """Mutant: the accuracy requirement loosened from ε/2 to 10ε. A routine whose meta-gradients
    are off by exactly ε (between ε/2 and 10ε) fails it."""
    tasks, F = corollary1.slow_descent_tasks(1, 4, 10.0, 1.0, seed=5, eps=1e-2, residual0=30.0)
    u = np.ones(4) / 2.0

    def off_by_eps(task, theta, eps_half):
        res = corollary1.imaml_routine(task, theta, eps_half)
        res.gradient = res.gradient + 2 * eps_half * u      # ‖·‖ = ε
        return res

    accurate = corollary1.check_corollary1(tasks, 1e-2, routine=off_by_eps, objective=F,
                                           max_calls=20)[1]
    assert not accurate.passed
    assert_within_rounding(accurate.measured, 1e-2, dtype="float64", scale=1.0, dim=4)


@pytest.mark.parametrize("family", ["cauchy", "huber"])
def test_query_loss_hessians_against_the_complex_step_of_their_gradients(family):
    """Mutant: the Cauchy loss's Hessian with * for ** (the non-convexity check then runs on a
    wrong Hessian). Im ∇L(φ + ihv)/h = ∇²L(φ)v to rounding for h = 1e-20 (no cancellation)."""
    if family == "cauchy":
        tasks, _ = corollary1.cauchy_tasks(1, 4, 10.0, 1.0, seed=2)
    else:
        tasks, _ = corollary1.slow_descent_tasks(1, 4, 10.0, 1.0, seed=2, eps=1e-2)
    task = tasks[0]
    phi = np.random.default_rng(3).standard_normal(4) * 3
    h = 1e-20
    H = task.outer_hessian(phi)
    for v in np.eye(4):
        complex_step = np.imag(task.outer_grad(phi + 1j * h * v)) / h
        assert_within_rounding(H @ v, complex_step, dtype="float64",
                               scale=float(np.abs(task.R).sum() ** 2), dim=4)


# -- imaml-interpolates -------------------------------------------------------------------------

def _interp_instance():
    task, spec = planted_spectrum_task(5, 100.0, 1.0, seed=4, query="independent")
    return task, np.random.default_rng(5).standard_normal(5), spec.as_dict()


def test_interpolation_m_steps_are_needed():
    """Mutant: CG stopped one step early (d − 1 steps passed within the allowance). Here the
    m-step result is sharp: m − 1 steps leave an error far above the allowance, and a CG that
    stops a step early fails the m-step result."""
    task, theta, inst = _interp_instance()
    res = first_order.check_interpolation(task, theta, instance=inst)
    assert all(r.passed for r in res) and len(res) == 4
    m = res[1].instance["distinct_eigenvalues"]
    assert m == 4           # A's zero eigenvalue is out of reach from g₀ = ∇L(φ)
    assert res[2].measured > 1e6 * res[2].bound

    def one_short(task, theta, inner, *, cg_steps, cg_start):
        return implicit_gradient_at(task, theta, inner, cg_steps=max(cg_steps - 1, 0),
                                    cg_start=cg_start)

    bad = first_order.check_interpolation(task, theta, cg_method=one_short, instance=inst)
    assert not bad[1].passed


def test_interpolation_optimality_fails_for_another_descent_method():
    """Mutant: the monotonicity result, which holds for any descent method. The result now
    compares every step with the Krylov optimum: steepest descent in the M-norm (exact line
    search) lowers the error at every step too, and fails it."""
    task, theta, inst = _interp_instance()
    lam = task.lam

    def steepest(task, theta, inner, *, cg_steps, cg_start):
        phi = inner.x
        M = lambda v: v + task.inner_hvp(phi, v) / lam  # noqa: E731
        v = task.outer_grad(phi)
        g = v.copy()
        for _ in range(cg_steps):
            r = v - M(g)
            if np.linalg.norm(r) == 0:
                break
            g = g + (r @ r) / (r @ M(r)) * r
        res = implicit_gradient_at(task, theta, inner, cg_steps=0, cg_start=cg_start)
        res.gradient = g
        return res

    bad = first_order.check_interpolation(task, theta, cg_method=steepest, instance=inst)
    errs = bad[3].details["m_norm_errors"]
    assert all(b <= a for a, b in zip(errs[:-1], errs[1:]))      # monotone, yet:
    assert not bad[3].passed


# -- reptile-direction, fomaml-direction ------------------------------------------------------------

def _fo_instance():
    task, spec = planted_spectrum_task(6, 50.0, 1.0, seed=8, query="independent")
    return task, np.random.default_rng(9).standard_normal(6), spec.as_dict()


def test_reptile_distance_result_is_there_and_fails_on_the_query_direction():
    """Mutant: the distance result skipped. Both results are returned; a 'Reptile' that follows
    the query loss (∇L(φ_K)/λ, first-order MAML's direction over λ) fails the distance to
    ∇L̂(φ*)/λ by far more than the inner solver's bound."""
    task, theta, inst = _fo_instance()
    res = first_order.check_reptile_direction(task, theta, inner_steps=100, instance=inst)
    assert len(res) == 2 and all(r.passed for r in res)

    def query_direction(task, theta, *, inner_steps, inner):
        out = fomaml_meta_gradient(task, theta, inner_steps=inner_steps, inner=inner)
        out.gradient = out.gradient / task.lam
        return out

    bad = first_order.check_reptile_direction(task, theta, inner_steps=100, method=query_direction)
    assert not bad[1].passed and bad[1].measured > 10 * bad[1].bound


@pytest.mark.parametrize("check", ["fomaml", "reptile"])
@pytest.mark.parametrize("inner", ["nesterov", "gd"])
def test_first_order_closed_forms_use_their_own_step_sizes(check, inner):
    """Mutant: the solvers' default step halved (the closed form reused the solver's own
    default_step_sizes, so it moved with it). The closed form now takes 1/β and
    (√κ−1)/(√κ+1) from the eigenvalues of A + λI; a solver run at half the step fails."""
    task, theta, inst = _fo_instance()
    step, momentum = first_order.reference_step_sizes(task)
    w = np.linalg.eigvalsh(task.A) + task.lam
    assert step == 1 / w[-1] and momentum == pytest.approx((math.sqrt(w[-1] / w[0]) - 1)
                                                           / (math.sqrt(w[-1] / w[0]) + 1))
    base = fomaml_meta_gradient if check == "fomaml" else reptile_direction
    fn = (first_order.check_fomaml_direction if check == "fomaml"
          else lambda *a, **k: first_order.check_reptile_direction(*a, **k)[0])

    def half_step(task, theta, *, inner_steps, inner):
        return base(task, theta, inner_steps=inner_steps, inner=inner, inner_step_size=step / 2,
                    inner_momentum=momentum if inner == "nesterov" else None)

    assert fn(task, theta, inner_steps=10, inner=inner, instance=inst).passed
    assert not fn(task, theta, inner_steps=10, inner=inner, method=half_step, instance=inst).passed


# -- the allowances themselves ---------------------------------------------------------------------

def _setting():
    task, theta, _ = theorem2.paper_instance(RunContext())
    theta = to_numpy64(theta)
    res = imaml_meta_gradient(task, theta, inner_steps=200, cg_steps=40)
    return task, theta, to_numpy64(res.phi), to_numpy64(res.gradient)


def _rule(terms, kappa, dim):
    """eps · dim · κ · Σ terms (docs/mathematics.md §10), recomputed here."""
    return machine_epsilon("float64") * dim * kappa * sum(terms)


@pytest.mark.parametrize("which", ["inner", "cg", "meta_gradient"])
def test_check_allowances_are_the_documented_rule(which):
    """Mutant: meta_gradient_allowance ×1e6 (or any factor, a dim_factor default of 2, a λ or μ
    dropped). Each of the three allowances of verify/checks/_common.py is recomputed from the
    magnitudes that enter its computation and the one rule."""
    task, theta, phi, g = _setting()
    m = computation_magnitudes(task, theta, phi, g)
    beta, mu = task.curvature_bounds()
    lam = task.lam
    L = float(np.linalg.eigvalsh(task.A_query)[-1])
    if which == "inner":
        got = _common.inner_allowance("float64", task, theta, phi)
        terms = [t / mu for t in m.stationarity]
    elif which == "cg":
        got = _common.cg_allowance("float64", task, theta, phi, g)
        terms = [lam / mu * t for t in m.residual]
    else:
        got = _common.meta_gradient_allowance("float64", task, theta, phi, g)
        assert got == _common.meta_gradient_allowance("float64", task, theta, phi, g, L=L)
        terms = [lam * L / mu ** 2 * t for t in m.stationarity] + [lam / mu * t for t in m.residual]
    expected = _rule(terms, beta / mu, m.dim)
    assert got > 0 and abs(got - expected) <= relative_tolerance("float64", dim=len(terms)) * expected
    # dim_factor scales the dimension of the rule, nothing else
    factor = {"inner": _common.inner_allowance, "cg": _common.cg_allowance,
              "meta_gradient": _common.meta_gradient_allowance}[which]
    args = (task, theta, phi) if which == "inner" else (task, theta, phi, g)
    assert factor("float64", *args, dim_factor=3) == pytest.approx(3 * got)
    assert factor("float32", *args) == pytest.approx(got * machine_epsilon("float32")
                                                     / machine_epsilon("float64"))


def test_check_allowances_default_their_phi_and_g_to_the_exact_ones():
    task, theta, phi, g = _setting()
    phi_star = to_numpy64(task.inner_solution(theta))
    g_star = to_numpy64(task.implicit_gradient(phi_star))
    assert _common.inner_allowance("float64", task, theta) == _common.inner_allowance(
        "float64", task, theta, phi_star)
    assert _common.cg_allowance("float64", task, theta, phi_star) == _common.cg_allowance(
        "float64", task, theta, phi_star, g_star)
    assert _common.allowance("float32", 10.0, 2.0, 3) == pytest.approx(
        machine_epsilon("float32") * 3 * 10.0 * 2.0)
    assert _common.allowance(RunContext(dtype="float32"), 10.0, 2.0, 3) == _common.allowance(
        "float32", 10.0, 2.0, 3)


def test_proof_typo_finding_fails_with_the_count_that_suffices():
    """Always-pass mutant of theorem2-proof-typo: the finding's control. With Lemma 2's count
    (the √κ kept, δ = ε/(2B₁)) in place of the proof's, Nesterov needs no more than it."""
    from theory.bounds import lemma2_steps, lemma3_B1

    task, theta, inst = theorem2.paper_instance(RunContext())
    typo = theorem2.check_proof_typo(task, theta, 1e-8, instance=inst)
    assert typo.passed and typo.kind == "finding" and typo.measured > typo.bound

    def lemma2_count(c, eps):
        return lemma2_steps(c.kappa, c.D, eps / (2 * lemma3_B1(c)))

    kept = theorem2.check_proof_typo(task, theta, 1e-8, count=lemma2_count, instance=inst)
    assert not kept.passed and kept.measured == typo.measured <= kept.bound
