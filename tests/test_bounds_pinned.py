"""The bounds pinned to hand-computed values (docs/mathematics.md §3–§8): each formula of
theory/bounds.py, theory/maml.py and theory/tolerances.py at a point where every constant and
operator matters, written out independently here. Mutation testing (tools/mutate.py) showed that
property tests alone leave these free (a 2 turned into a 3 only makes a bound looser)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import theory.maml as tm
from theory import bounds as b
from theory.constants import Constants
from theory.tolerances import (abs_matrix_norm, allowance, computation_magnitudes, gamma,
                               machine_epsilon, norm_upper_bound, relative_tolerance,
                               rounding_allowance, sum_rounding, unit_roundoff)

C = Constants(beta=10.0, mu=2.0, kappa=5.0, L=3.0, B=7.0, rho=0.5, D=4.0, lam=1.5)


def test_step_counts_pinned():
    assert b.lemma2_steps(100.0, 1.0, 1e-3) == math.ceil(20 * math.log(2e5)) == 245
    assert b.lemma2_steps_proof_typo(100.0, 1.0, 1e-3) == math.ceil(2 * math.log(2e5)) == 25
    assert b.lemma2_steps(4.0, 3.0, 0.5) == math.ceil(4 * math.log(48.0))
    assert b.lemma2_steps_proof_typo(4.0, 3.0, 0.5) == math.ceil(2 * math.log(48.0))
    # nothing to do when 2κ‖x₀ − x*‖ ≤ δ: zero steps, not one
    assert b.lemma2_steps(1.0, 0.1, 1.0) == 0 and b.lemma2_steps_proof_typo(1.0, 0.1, 1.0) == 0
    assert b.lemma2_steps(2.0, 0.0, 1e-9) == 0
    assert b.lemma2_steps(1.0, 0.6, 1.0) == math.ceil(2 * math.log(1.2)) == 1


def test_rates_pinned():
    assert b.nesterov_distance_bound(4.0, 3, 2.0) == pytest.approx(math.sqrt(5) * 0.5 ** 1.5 * 2)
    assert b.nesterov_distance_bound(4.0, 0, 2.0) == pytest.approx(2 * math.sqrt(5))
    assert b.gd_steps_estimate(10.0, 1.0, 1e-3) == math.ceil(math.log(1e3) / -math.log(0.9)) == 66
    assert b.gd_steps_estimate(10.0, 1.0, 1.0) == 0 and b.gd_steps_estimate(10.0, 0.5, 1.0) == 0
    assert b.gd_steps_estimate(1.0, 2.0, 1.0) == 1
    assert b.cg_contraction(9.0) == pytest.approx(0.5)
    assert b.cg_contraction(1.0) == 0.0
    assert b.cg_error_bound(9.0, 2, 1.0) == pytest.approx(1.5)
    assert b.cg_error_bound(9.0, 2, 1.0, norm="M") == pytest.approx(0.5)
    assert b.cg_error_bound(9.0, 0, 2.0) == pytest.approx(12.0)
    assert b.cg_error_bound(9.0, 0, 2.0, norm="M") == pytest.approx(4.0)
    with pytest.raises(ValueError, match="norm"):
        b.cg_error_bound(9.0, 1, 1.0, norm="F")


def test_lemma3_pinned():
    B1 = 2 * 1.5 * 0.5 * 7.0 / 4.0 + 1.5 * 3.0 / 2.0        # 2λρB/μ² + λL/μ
    assert b.lemma3_B1(C) == pytest.approx(B1)
    assert b.lemma3_B1(C, sharp=True) == pytest.approx(B1 - 1.5 * 0.5 * 7.0 / 4.0)
    assert b.lemma3_bound(C, 0.1, 0.2) == pytest.approx(B1 * 0.1 + 0.2)
    assert b.lemma3_bound_sharp(C, 0.1, 0.2) == pytest.approx(b.lemma3_B1(C, sharp=True) * 0.1 + 0.2)
    # δ < μ/(2ρ) = 2 is required by the stated form; δ = 2 exactly is refused
    assert b.lemma3_bound(C, 1.999, 0.0) == pytest.approx(B1 * 1.999)
    with pytest.raises(ValueError, match="mu/\\(2 rho\\)"):
        b.lemma3_bound(C, 2.0, 0.0)
    assert b.lemma3_bound_sharp(C, 5.0, 0.0) > 0


def test_theorem2_pinned():
    eps = 1e-3
    B1 = b.lemma3_B1(C)
    root = 2 * math.sqrt(5.0)
    t_inner = math.ceil(root * math.log(8 * 5.0 * 4.0 * (B1 / eps + 0.5 / 2.0)))
    t_cg = math.ceil(root * math.log(4 * 5.0 * (1.5 / 2.0) * 7.0 / eps))
    assert b.theorem2_steps(C, eps) == (t_inner, t_cg)
    assert b.theorem2_inner_steps_sharp(C, eps) == math.ceil(
        root * math.log(4 * 5.0 * 4.0 * (B1 / eps + 0.5 / 2.0)))
    assert b.theorem2_cg_steps_proof_slip(C, eps) == math.ceil(2 * math.log(4 * 5.0 * 0.75 * 7.0 / eps))
    assert b.theorem2_delta(C, eps) == pytest.approx(eps / (2 * B1))
    assert b.theorem2_delta(C, 1e6) == pytest.approx(2.0 / (2 * 0.5))      # μ/(2ρ) branch
    assert b.theorem2_inner_steps_proof_typo(C, eps) == math.ceil(
        2 * math.log(2 * 5.0 * 4.0 / (eps / (2 * B1))))
    flat = Constants(beta=2.0, mu=1.0, kappa=2.0, L=0.0, B=1.0, rho=0.0, D=1.0, lam=1.0)
    assert b.theorem2_delta(flat, 1e-3) == math.inf
    assert b.theorem2_inner_steps_proof_typo(flat, 1e-3) == 0


def test_theorem2_constants_pinned():
    from verify.tasks import planted_spectrum_task

    task, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0, query="independent")
    theta = np.ones(4)
    c, delta = b.theorem2_constants(task, theta, 1e-2)
    c0 = task.constants(theta)
    assert delta == pytest.approx(1e-2 / (2 * b.lemma3_B1(c0)))
    assert c.B == pytest.approx(c0.B + c0.L * delta)
    zero_query = type(task)(task.A, task.b, np.zeros((4, 4)), task.b_query, task.lam)
    c1, d1 = b.theorem2_constants(zero_query, theta, 1e-2)
    assert d1 == math.inf and c1.B == pytest.approx(zero_query.constants(theta).B)


def test_corollary1_pinned():
    assert b.corollary1_calls(3, 2.0, 5.0, 0.1) == pytest.approx(4 * 3 * 2.0 * 5.0 / 0.01)
    with pytest.raises(ValueError, match="n_tasks"):
        b.corollary1_calls(1.5, 2.0, 5.0, 0.1)


def test_certificate_pinned():
    cert = b.aposteriori_bound(C, stationarity=0.4, system_residual=0.2, outer_grad_norm=1.0)
    delta, dprime = 0.4 / 2.0, 1.5 / 2.0 * 0.2
    B = 1.0 + 3.0 * delta
    bound = (1.5 * 0.5 * B / 4.0 + 1.5 * 3.0 / 2.0) * delta + dprime
    assert (cert.delta, cert.delta_prime, cert.B) == pytest.approx((delta, dprime, B))
    assert cert.bound == pytest.approx(bound) and cert.rounding == 0.0 and not cert.rounding_safe
    r = b.aposteriori_bound(C, stationarity=0.4, system_residual=0.2, outer_grad_norm=1.0,
                            stationarity_rounding=0.1, residual_rounding=0.05,
                            outer_grad_rounding=0.5)
    d2, dp2 = 0.5 / 2.0, 0.75 * 0.25
    B2 = 1.5 + 3.0 * d2
    assert r.bound == pytest.approx((1.5 * 0.5 * B2 / 4.0 + 2.25) * d2 + dp2)
    assert r.rounding == pytest.approx(r.bound - bound) and r.rounding_safe
    one_missing = b.aposteriori_bound(C, stationarity=0.4, system_residual=0.2, outer_grad_norm=1.0,
                                      stationarity_rounding=0.1, residual_rounding=0.05)
    assert not one_missing.rounding_safe


def test_maml_bound_pinned():
    c = Constants(beta=10.0, mu=0.5, kappa=20.0, L=3.0, B=1.0, rho=0.2, D=1.0, lam=2.0)
    gap = max((10 - 2) / 10, (2 - 0.5) / 0.5)
    assert tm.initial_jacobian_gap(c) == pytest.approx(3.0) == gap
    assert tm.initial_jacobian_gap(C) == pytest.approx(max(8.5 / 10, 0.5 / 2.0 * -1)) == pytest.approx(0.85)
    a, K, r = 0.05, 3, 2.0
    q = 1 - a * 0.5
    jac = q ** K * 3.0 + K * a * 0.2 * (2.0 / 0.5) * q ** (K - 1) * r
    assert tm.maml_jacobian_error_bound(c, step_size=a, inner_steps=K, initial_distance=r) == \
        pytest.approx(jac)
    assert tm.maml_jacobian_error_bound(c, step_size=a, inner_steps=0, initial_distance=r) == \
        pytest.approx(3.0)
    err = tm.maml_exact_solve_error_bound(c, step_size=a, inner_steps=K, initial_distance=r,
                                          outer_grad_norm=1.5)
    assert err == pytest.approx(jac * 1.5 + (2.0 / 0.5) * 3.0 * q ** K * r)
    # α up to 1/β (a relative 1e-12 of slack) and no further
    tm.maml_jacobian_error_bound(c, step_size=0.1, inner_steps=1, initial_distance=r)
    with pytest.raises(ValueError, match="step_size"):
        tm.maml_jacobian_error_bound(c, step_size=0.1 * (1 + 1e-9), inner_steps=1, initial_distance=r)
    with pytest.raises(ValueError, match="step_size"):
        tm.maml_jacobian_error_bound(c, step_size=0.0, inner_steps=1, initial_distance=r)
    with pytest.raises(ValueError, match="inner_steps"):
        tm.maml_jacobian_error_bound(c, step_size=a, inner_steps=-1, initial_distance=r)
    with pytest.raises(ValueError, match="inner_steps"):
        tm.maml_jacobian_error_bound(c, step_size=a, inner_steps=True, initial_distance=r)


def test_maml_closed_forms_pinned():
    from theory.quadratic import QuadraticTask

    task = QuadraticTask(np.diag([1.0, 3.0]), np.array([1.0, -1.0]), np.eye(2), np.zeros(2), 1.0)
    a = 0.25                                   # C = diag(2, 4), P = diag(0.5, 0)
    assert tm.maml_contraction(task, a) == pytest.approx(0.5)
    J2 = tm.maml_jacobian(task, a, 2)           # P² + λC⁻¹(I − P²)
    assert np.allclose(J2, np.diag([0.25 + 0.5 * 0.75, 0.25]))
    theta = np.array([2.0, 2.0])               # φ* = C⁻¹(θ − b) = (0.5, 0.75)
    assert np.allclose(tm.maml_iterate(task, theta, a, 1), [0.5 + 0.5 * 1.5, 0.75])
    assert np.allclose(tm.truncated_jacobian(task, a, 3, 1), np.diag([0.5 * 0.5, 0.25]))
    assert np.allclose(tm.truncated_jacobian(task, a, 2, 2), J2)
    with pytest.raises(ValueError, match="backprop_steps"):
        tm.truncated_jacobian(task, a, 2, 3)
    x2 = tm.nesterov_iterate(task, theta, a, 0.5, 2)
    # e₁ = P e₀, e₂ = P(1.5 e₁ − 0.5 e₀): first coordinate 0.5·(1.5·0.75 − 0.5·1.5)
    assert np.allclose(x2, [0.5 + 0.5 * (1.5 * 0.75 - 0.5 * 1.5), 0.75])
    assert np.allclose(tm.nesterov_iterate(task, theta, a, 0.5, 0, start=np.zeros(2)), 0.0)
    with pytest.raises(TypeError, match="quadratic"):
        tm.maml_jacobian(object(), a, 1)


def test_tolerances_pinned():
    eps = machine_epsilon("float64")
    assert eps == 2.0 ** -52 and unit_roundoff("float32") == 2.0 ** -24
    assert relative_tolerance("float64", kappa=3.0, dim=2) == eps * 6
    with pytest.raises(ValueError, match="dim"):
        relative_tolerance("float64", dim=0)
    assert rounding_allowance("float64", kappa=2.0, scale=5.0, dim=3) == pytest.approx(eps * 30)
    assert allowance("float64", terms=(), kappa=2.0) == 0.0
    u = eps / 2
    assert gamma("float64", 3) == pytest.approx(3 * u / (1 - 3 * u), rel=1e-15)
    # γ of length + extra_ops (4) + one for the magnitudes' own rounding; the underflow part
    # √dim·n·(1 + γ)·tiny is invisible next to these terms in float64 (see the float16 pins)
    assert sum_rounding("float64", (2.0, 3.0), length=4) == pytest.approx(
        gamma("float64", 9) * 5, rel=1e-14)
    n = norm_upper_bound("float64", 1.0, terms=(2.0,), length=4, dim=6)
    assert n == pytest.approx(1 / (1 - gamma("float64", 9)) + 2 * gamma("float64", 9), rel=1e-14)
    M = np.array([[1.0, -2.0], [3.0, 0.0]])
    frob = math.sqrt(14.0)
    hoelder = math.sqrt(4.0 * 3.0)      # max column sum 4, max row sum 3
    assert abs_matrix_norm(M) == pytest.approx(min(frob, hoelder), rel=1e-11)
    assert abs_matrix_norm(np.zeros((0, 0))) == 0.0


def test_magnitudes_pinned():
    from theory.quadratic import QuadraticTask

    A = np.array([[2.0, 1.0], [1.0, 2.0]])
    task = QuadraticTask(A, np.array([3.0, 4.0]), np.eye(2), np.array([0.0, 5.0]), 2.0)
    theta, phi, g = np.array([1.0, 0.0]), np.array([0.0, 2.0]), np.array([3.0, 4.0])
    m = computation_magnitudes(task, theta, phi, g)
    a = abs_matrix_norm(A)
    assert m.stationarity == pytest.approx((a * 2.0, 5.0, 4.0, 2.0))
    assert m.outer_grad == pytest.approx((abs_matrix_norm(np.eye(2)) * 2.0, 5.0))
    assert m.residual == pytest.approx(m.outer_grad + (5.0, a * 5.0 / 2.0))
    assert (m.length, m.dim) == (2, 2)


C2 = Constants(beta=12.0, mu=2.5, kappa=4.8, L=3.0, B=7.0, rho=0.3, D=4.0, lam=1.5)


def test_pinned_where_every_term_matters():
    """Constants where μ² ≠ 2μ, μ/(2ρ) ≠ 2μρ, and an ε at which ρ/μ is not negligible."""
    B1 = 2 * 1.5 * 0.3 * 7.0 / 2.5 ** 2 + 1.5 * 3.0 / 2.5
    assert b.lemma3_B1(C2) == pytest.approx(B1)
    assert b.lemma3_B1(C2, sharp=True) == pytest.approx(B1 - 1.5 * 0.3 * 7.0 / 2.5 ** 2)
    eps = 20.0
    root = 2 * math.sqrt(4.8)
    assert b.theorem2_steps(C2, eps)[0] == math.ceil(root * math.log(8 * 4.8 * 4.0 * (B1 / eps + 0.3 / 2.5)))
    assert b.theorem2_inner_steps_sharp(C2, eps) == math.ceil(
        root * math.log(4 * 4.8 * 4.0 * (B1 / eps + 0.3 / 2.5)))
    assert b.theorem2_delta(C2, 1e6) == pytest.approx(2.5 / 0.6)
    cert = b.aposteriori_bound(C2, stationarity=0.5, system_residual=0.0, outer_grad_norm=2.0)
    d = 0.5 / 2.5
    assert cert.bound == pytest.approx((1.5 * 0.3 * (2.0 + 3.0 * d) / 2.5 ** 2 + 1.5 * 3.0 / 2.5) * d)
    assert b.gd_steps_estimate(10.0, 1.5, 1.0) == math.ceil(math.log(1.5) / -math.log(0.9)) == 4


def test_certificate_constructor_defaults():
    """Certificate(bound, δ, δ′, B) (the older four-field form) is an exact-arithmetic one."""
    cert = b.Certificate(1.0, 0.1, 0.2, 3.0)
    assert cert.rounding == 0.0 and cert.rounding_safe is False


def test_gamma_where_its_denominator_shows():
    u = 2.0 ** -11                                   # float16
    nu = 100 * u
    assert gamma("float16", 100) == pytest.approx(nu / (1 - nu), rel=1e-12)
    with pytest.raises(ValueError, match="gamma"):
        gamma("float32", 2 ** 24)                    # n·u = 1 exactly
    with pytest.raises(ValueError, match="gamma"):
        gamma("float64", -1)


def test_certificate_is_rounding_safe_only_with_every_rounding():
    for missing in range(3):
        roundings = [0.1, 0.05, 0.5]
        roundings[missing] = 0.0
        cert = b.aposteriori_bound(C2, stationarity=0.4, system_residual=0.2, outer_grad_norm=1.0,
                                   stationarity_rounding=roundings[0],
                                   residual_rounding=roundings[1],
                                   outer_grad_rounding=roundings[2])
        assert not cert.rounding_safe


def test_certify_refuses_half_the_magnitude_arguments():
    from solvers import imaml_meta_gradient
    from verify.tasks import planted_spectrum_task

    task, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0)
    res = imaml_meta_gradient(task, np.ones(4), inner_steps=3, cg_steps=2)
    with pytest.raises(TypeError, match="both task= and theta="):
        b.certify(res, task.constants(np.ones(4)), task=task)
    with pytest.raises(TypeError, match="both task= and theta="):
        b.certify(res, task.constants(np.ones(4)), theta=np.ones(4))


def test_tolerance_defaults_pinned():
    eps = machine_epsilon("float64")
    assert relative_tolerance("float64") == eps
    assert allowance("float64", terms=(2.0,)) == 2 * eps
    assert rounding_allowance("float64") == eps
    tiny = np.finfo(np.float64).tiny
    assert sum_rounding("float64", (1.0,), length=1) == gamma("float64", 6) + 6 * (
        1 + gamma("float64", 6)) * tiny


def test_rigorous_forms_where_their_terms_show():
    """float16 (u = 2⁻¹¹, tiny = 2⁻¹⁴) so that γ's denominators, the norm's dim + 3, the
    magnitudes' extra γ step and the underflow part √dim·n·(1 + γₙ)·tiny are all visible."""
    g = lambda n: n * 2.0 ** -11 / (1 - n * 2.0 ** -11)  # noqa: E731
    tiny = 2.0 ** -14
    assert sum_rounding("float16", (1.0, 2.0), length=10, extra_ops=1) == pytest.approx(
        3 * g(12) + 12 * (1 + g(12)) * tiny, rel=1e-12)
    assert sum_rounding("float16", (1.0,), length=10, extra_ops=1, dim=9) == pytest.approx(
        g(12) + 3 * 12 * (1 + g(12)) * tiny, rel=1e-12)
    assert norm_upper_bound("float16", 2.0, terms=(3.0,), length=10, dim=20) == pytest.approx(
        (2.0 + tiny) / (1 - g(23)) + 3.0 * g(15) + math.sqrt(20) * 15 * (1 + g(15)) * tiny,
        rel=1e-12)
    M = np.array([[1.0, -2.0], [3.0, 0.0]])
    # the Hölder bound √4·√3 (column and row sums, 2 + 3 roundings) is below the Frobenius √14
    u, t64 = 2.0 ** -53, np.finfo(np.float64).tiny
    up = lambda v, k, n=1: (v + n * t64) / (1 - (k + 1) * u / (1 - (k + 1) * u))  # noqa: E731
    assert abs_matrix_norm(M) == up(math.sqrt(4.0) * math.sqrt(3.0), 2 + 3)
    # all ones: Frobenius 2 (4 entries: γ step 4 + 3) against √2·√2 = 2 + 2⁻⁵¹ (2 + 3 steps)
    ones = np.ones((2, 2))
    assert abs_matrix_norm(ones) == min(up(2.0, 4 + 3), up(math.sqrt(2.0) * math.sqrt(2.0), 2 + 3))
    # a 2 × 4 matrix: Frobenius over 8 entries (8 + 3 steps), sums of at most max(2, 4) terms
    col = np.zeros((2, 4))
    col[:, 0] = 1.0                    # Frobenius √2 and Hölder √2·√1 = √2: equal before rounding
    assert abs_matrix_norm(col) == min(up(math.sqrt(2.0), 8 + 3), up(math.sqrt(2.0), 4 + 3))
    assert abs_matrix_norm(col) == up(math.sqrt(2.0), 4 + 3)
    assert abs_matrix_norm(np.diag([3.0, 4.0])) == up(4.0, 2 + 3)     # Frobenius 5 > Hölder 4


def test_logistic_magnitudes_pinned():
    from theory.logistic import LogisticTask

    X = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]])   # row norms 5, 1, 2 (n = 3)
    Xq = np.array([[0.0, 3.0], [1.0, 0.0]])              # row norms 3, 1
    task = LogisticTask(X, np.array([1.0, -1.0, 1.0]), Xq, np.array([1.0, -1.0]), 0.5)
    theta, phi, g = np.array([0.0, 2.0]), np.array([3.0, 4.0]), np.array([0.0, 2.0])
    m = computation_magnitudes(task, theta, phi, g)
    m1, m2, m3 = 8.0 / 3, 30.0 / 3, 134.0 / 3            # means of 5ᵏ, 1ᵏ, 2ᵏ
    q1, q2 = 2.0, 5.0
    assert m.outer_grad == pytest.approx((2 * q1, q2 * 5.0 / 4))
    assert m.stationarity == pytest.approx((2 * m1, m2 * 5.0 / 4, 0.5 * 5.0, 0.5 * 2.0))
    hvp = (1.5 * m2 * 2.0, m3 * 5.0 * 2.0 / (6 * math.sqrt(3)))
    assert m.residual == pytest.approx(m.outer_grad + (2.0, hvp[0] / 0.5, hvp[1] / 0.5))
    assert (m.length, m.dim) == (3 + 2 + 10, 2)


def test_constants_validation_pinned():
    good = dict(beta=2.0, mu=1.0, kappa=2.0, L=1.0, B=1.0, rho=0.0, D=1.0, lam=1.0)
    assert Constants(**good).as_dict() == dict(good, scope="instance", radius=None)
    for name, bad in (("mu", 0.0), ("lam", 0.0), ("L", -1.0), ("B", math.inf), ("rho", math.nan),
                      ("D", -0.5), ("beta", math.nan)):
        with pytest.raises(ValueError, match=name if name not in ("mu", "lam") else "mu and lam"):
            Constants(**dict(good, **{name: bad}))
    with pytest.raises(ValueError, match="mu and lam"):
        Constants(**dict(good, lam=0.0))
    with pytest.raises(ValueError, match="scope"):
        Constants(**good, scope="global")


def test_maml_contraction_uses_both_ends_of_the_spectrum():
    from theory.quadratic import QuadraticTask

    task = QuadraticTask(np.diag([1.0, 2.0, 3.0]), np.zeros(3), np.eye(3), np.zeros(3), 1.0)
    assert tm.maml_contraction(task, 0.45) == pytest.approx(0.8)     # |1 − 0.45·4|
    assert tm.maml_contraction(task, 0.1) == pytest.approx(0.8)      # |1 − 0.1·2|
    c = Constants(beta=10.0, mu=1.0, kappa=10.0, L=1.0, B=1.0, rho=0.0, D=1.0, lam=1.0)
    with pytest.raises(ValueError, match="step_size"):
        tm.maml_jacobian_error_bound(c, step_size=0.1 * (1 + 1.5e-12), inner_steps=1,
                                     initial_distance=1.0)


def test_logistic_derivative_constants_are_the_maxima():
    """S_MAX, S_PRIME_MAX, S_SECOND_MAX are max s, max |s′|, max |s″| of s = σ(1 − σ) (the
    certified ρ and the finite-difference truncation rest on them)."""
    from theory.logistic import S_MAX, S_PRIME_MAX, S_SECOND_MAX

    t = np.linspace(-8, 8, 400_001)
    sig = 1 / (1 + np.exp(-t))
    s = sig * (1 - sig)
    s1 = s * (1 - 2 * sig)
    s2 = s * (1 - 6 * s)
    assert S_MAX == 0.25 == pytest.approx(s.max(), abs=1e-12)
    assert S_PRIME_MAX == pytest.approx(np.abs(s1).max(), rel=1e-9)
    assert S_SECOND_MAX == pytest.approx(np.abs(s2).max(), rel=1e-9)


def test_exact_reference_edge_cases():
    from theory.exact import QuadraticReference
    from theory.quadratic import QuadraticTask

    task = QuadraticTask(np.eye(2), np.array([1.0, -2.0]), np.eye(2), np.zeros(2), 1.0)
    ref = QuadraticReference(task)
    zero = ref.inner_solution(np.array([1.0, -2.0]))            # λθ − b = 0
    assert zero is not None and list(ref.as_float(zero)) == [0.0, 0.0]
    one = ref.inner_solution(np.array([2.0, -2.0]))             # λθ − b = (1, 0): max exactly 1
    assert list(ref.as_float(one)) == [0.5, 0.0]
    assert ref.error(np.array([0.5, 0.0]), one) == 0.0


def test_logistic_task_shapes_at_their_limits():
    from theory.logistic import LogisticTask

    one = LogisticTask(np.array([[1.0, 2.0]]), np.array([1.0]), np.array([[0.5, 0.0]]),
                       np.array([-1.0]), 1.0)                 # n = m = 1 is a task
    assert (one.n, one.m, one.dim) == (1, 1, 2)
    with pytest.raises(ValueError, match="X"):
        LogisticTask(np.zeros((0, 2)), np.zeros(0), np.ones((1, 2)), np.ones(1), 1.0)
    with pytest.raises(ValueError, match="X"):
        LogisticTask(np.zeros((2, 0)), np.ones(2), np.ones((1, 0)), np.ones(1), 1.0)
    with pytest.raises(ValueError, match="X_query"):
        LogisticTask(np.ones((2, 2)), np.ones(2), np.ones((0, 2)), np.ones(0), 1.0)
    with pytest.raises(ValueError, match="X_query"):
        LogisticTask(np.ones((2, 2)), np.ones(2), np.ones((1, 3)), np.ones(1), 1.0)


def test_logistic_constants_and_error_bars_pinned():
    """The certified constants and error bars, formula by formula (docs/mathematics.md §9)."""
    from theory.logistic import S_MAX, S_PRIME_MAX, S_SECOND_MAX
    from verify.tasks import logistic_task

    task, _ = logistic_task(12, 3, 0.3, seed=4, scale=1.5)
    theta = np.array([0.5, -1.0, 2.0])
    sol = task.certified_solution(theta)
    X, Xq = task._X64, task._Xq64
    norms, qnorms = np.linalg.norm(X, axis=1), np.linalg.norm(Xq, axis=1)
    c = task.constants(theta, delta=0.25)
    e = sol.error_bound
    L = S_MAX * float(np.linalg.eigvalsh(Xq.T @ Xq)[-1]) / task.m
    assert c.L == pytest.approx(L, rel=1e-14)
    assert c.beta == pytest.approx(0.3 + S_MAX * float(np.linalg.eigvalsh(X.T @ X)[-1]) / 12, rel=1e-14)
    assert c.mu == 0.3 and c.rho == pytest.approx(S_PRIME_MAX * float(np.mean(norms ** 3)), rel=1e-14)
    grad_q = float(np.linalg.norm(task._grad64(Xq, task._yq64, sol.phi)))
    assert c.B == pytest.approx(grad_q + L * (e + 0.25), rel=1e-14)
    assert c.D == pytest.approx(float(np.linalg.norm(sol.phi)) + e, rel=1e-14)
    u = task.constants(theta, radius=2.0)
    assert u.B == pytest.approx(float(np.mean(qnorms)), rel=1e-14)
    assert u.D == pytest.approx(2.0 + float(np.sum(norms)) / (12 * 0.3), rel=1e-14)
    assert task.rho_second() == pytest.approx(S_SECOND_MAX * float(np.mean(norms ** 4)), rel=1e-14)
    # the reference's error bars: e ≥ (‖∇G‖ + its rounding)/μ; the meta-gradient's from Lemma 3
    assert e > sol.gradient_norm / 0.3
    e0, eg = task.reference_error(theta)
    c0 = task.constants(theta)
    lemma3 = (c0.lam * c0.rho * c0.B / c0.mu ** 2 + c0.lam * c0.L / c0.mu) * e0
    assert e0 == e and lemma3 < eg < lemma3 + 1e-12
    # the error bar must cover a real perturbation: the reference moved by 1e-9 is not certified
    moved = sol.phi + 1e-9
    gm = task._grad64(X, task._y64, moved) + 0.3 * (moved - theta)
    assert np.linalg.norm(gm) / 0.3 > 1e-11 > e


def test_logistic_losses_and_repr_pinned():
    from theory.logistic import LogisticTask

    X, Xq = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0]])
    task = LogisticTask(X, np.array([1.0, -1.0]), Xq, np.array([-1.0]), 0.5)
    phi = np.array([0.3, -0.2])
    z = np.array([0.3, 0.4])                        # yⱼxⱼᵀφ
    assert task.inner_loss(phi) == pytest.approx(np.mean(np.log1p(np.exp(-z))), rel=1e-14)
    assert task.outer_loss(phi) == pytest.approx(np.log1p(np.exp(0.1)), rel=1e-14)
    assert repr(task) == "LogisticTask(n=2, m=1, d=2, lam=0.5)"


def test_logistic_error_bar_formulas_exact():
    """The same formulas to the last bit (the error bars are ~1e-16: a relative pin cannot see
    a changed term)."""
    from verify.tasks import logistic_task

    task, _ = logistic_task(12, 3, 0.3, seed=4, scale=1.5)
    theta = np.array([0.5, -1.0, 2.0])
    sol = task.certified_solution(theta)
    c = task.constants(theta)
    L = c.L
    grad_q = float(np.linalg.norm(task._grad64(task._Xq64, task._yq64, sol.phi)))
    assert c.B == grad_q + L * (sol.error_bound + 0.0)
    assert c.D == float(np.linalg.norm(sol.phi)) + sol.error_bound
    g = task._meta_gradient64(sol.phi)
    m = computation_magnitudes(task, theta, sol.phi, g)
    solve = allowance("float64", terms=[c.lam / c.mu * t for t in m.residual], kappa=c.kappa,
                      dim=task.dim)
    assert task.reference_error(theta)[1] == (c.lam * c.rho * c.B / c.mu ** 2 + c.lam * c.L / c.mu) \
        * sol.error_bound + solve


def test_logistic_magnitudes_length_uses_the_longer_data_set():
    from theory.logistic import LogisticTask

    task = LogisticTask(np.ones((1, 2)), np.ones(1), np.ones((3, 2)), np.ones(3), 1.0)
    m = computation_magnitudes(task, np.zeros(2), np.zeros(2), np.zeros(2))
    assert m.length == max(1, 3) + 2 + 10


def test_logistic_error_bar_is_the_rigorous_bound():
    from verify.tasks import logistic_task

    task, _ = logistic_task(12, 3, 0.3, seed=4, scale=1.5)
    theta = np.array([0.5, -1.0, 2.0])
    sol = task.certified_solution(theta)
    m = computation_magnitudes(task, theta, sol.phi, np.zeros(3))
    up = norm_upper_bound("float64", sol.gradient_norm, terms=m.stationarity, length=m.length,
                          dim=m.dim)
    assert sol.error_bound == (sol.gradient_norm + (up - sol.gradient_norm)) / 0.3
