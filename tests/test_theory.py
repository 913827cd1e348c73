"""theory/: QuadraticTask's references and constants against independent dense computations
(eigendecompositions, not the linear solves QuadraticTask uses), and the bounds' formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from _tolerances import (to_numpy64, assert_within_rounding, gradient_scale, relative_tolerance,
                              solution_scale)
from theory import QuadraticTask, bounds
from verify.strategies import quadratic_tasks, seeds


def _dense(task):
    """An independent float64 description of the task: eigen-decomposition of A."""
    A, b = to_numpy64(task.A), to_numpy64(task.b)
    Aq, bq = to_numpy64(task.A_query), to_numpy64(task.b_query)
    s, Q = np.linalg.eigh(A)
    return s, Q, b, Aq, bq


def dense_inner_solution(task, theta):
    s, Q, b, _, _ = _dense(task)
    return Q @ ((Q.T @ (task.lam * to_numpy64(theta) - b)) / (s + task.lam))


def dense_jacobian(task):
    s, Q, *_ = _dense(task)
    return (Q * (task.lam / (s + task.lam))) @ Q.T


def dense_meta_gradient(task, theta):
    _, _, _, Aq, bq = _dense(task)
    phi = dense_inner_solution(task, theta)
    return dense_jacobian(task).T @ (Aq @ phi + bq)    # chain rule: J(θ)ᵀ ∇L(Alg*(θ))


def check_references(task, spec, theta):
    """inner_solution, jacobian and meta_gradient agree with the dense formulas to rounding.

    Both sides are float64 computations (roundings=2); matrices are compared in the Frobenius
    norm, so their scale is √d times their spectral norm (‖J‖ ≤ 1)."""
    kappa, d = spec.kappa, spec.dim
    close = dict(dtype="float64", kappa=kappa, dim=d, roundings=2)
    phi = task.inner_solution(theta)
    assert_within_rounding(phi, dense_inner_solution(task, theta),
                           scale=solution_scale(task, theta), what="inner_solution", **close)
    # the definition of Alg*(θ): ∇_φ G(φ, θ) = Aφ + b + λ(φ − θ) = 0 (scale: β‖φ‖ + ‖b‖ + λ‖θ‖)
    c = task.constants(theta)
    stationarity = task.inner_grad(phi) + task.lam * (phi - theta)
    assert_within_rounding(stationarity, np.zeros(d), what="∇G at inner_solution", **close,
                           scale=c.beta * solution_scale(task, theta) + gradient_scale(task, theta))
    J = task.jacobian(theta)
    assert_within_rounding(J, dense_jacobian(task), scale=math.sqrt(d), what="jacobian", **close)
    assert_within_rounding(J, J.T, scale=math.sqrt(d), what="jacobian symmetry", **close)
    assert_within_rounding(task.meta_gradient(theta), dense_meta_gradient(task, theta),
                           scale=gradient_scale(task, theta), what="meta_gradient", **close)


@given(quadratic_tasks())
def test_references_match_dense_formulas(drawn):
    check_references(*drawn)


class _WrongSignQuery(QuadraticTask):
    """A planted defect: the query loss's gradient has the wrong sign."""

    def outer_grad(self, phi):
        return -super().outer_grad(phi)


class _NoLambdaJacobian(QuadraticTask):
    """A planted defect: (A + λI)⁻¹ without the factor λ of Lemma 1."""

    def jacobian(self, theta):
        return super().jacobian(theta) / self.lam


@pytest.mark.parametrize("defect", [_WrongSignQuery, _NoLambdaJacobian])
@given(seed=seeds)
def test_reference_check_fails_on_planted_defect(defect, seed):
    good, spec = _planted(seed)
    bad = defect(good.A, good.b, good.A_query, good.b_query, good.lam)
    theta = np.random.default_rng(seed).standard_normal(spec.dim)
    with pytest.raises(AssertionError):
        check_references(bad, spec, theta)


def _planted(seed, **kw):
    from verify.tasks import planted_spectrum_task

    kw.setdefault("dim", 5)
    kw.setdefault("kappa", 20.0)
    kw.setdefault("lam", 2.0)
    kw.setdefault("query", "independent")
    return planted_spectrum_task(seed=seed, **kw)


# -- constants ------------------------------------------------------------------------------------

@given(quadratic_tasks())
def test_instance_constants_match_dense(drawn):
    task, spec, theta = drawn
    s, _, _, Aq, bq = _dense(task)
    c = task.constants(theta)
    beta, mu = s[-1] + task.lam, s[0] + task.lam
    phi = dense_inner_solution(task, theta)
    expected = dict(beta=beta, mu=mu, kappa=beta / mu, L=np.linalg.eigvalsh(Aq)[-1],
                    B=np.linalg.norm(Aq @ phi + bq), D=np.linalg.norm(phi), lam=task.lam, rho=0.0)
    for name, value in expected.items():
        assert_within_rounding(np.array([getattr(c, name)]), np.array([value]), dtype="float64",
                               kappa=spec.kappa, dim=spec.dim,
                               scale=max(abs(value), beta, gradient_scale(task, theta)),
                               what=f"constant {name}")
    # the planted κ is exact
    assert_within_rounding(np.array([c.kappa]), np.array([spec.kappa]), dtype="float64",
                           kappa=spec.kappa, dim=spec.dim, scale=spec.kappa, what="planted κ")
    assert c.scope == "instance" and c.radius is None


def check_uniform_bounds_instance(task, theta, radius, delta=0.0):
    """Uniform constants on ‖θ‖ ≤ R bound the instance constants at θ (docs/mathematics.md §2)."""
    inst = task.constants(theta, delta=delta)
    unif = task.constants(theta, radius=radius, delta=delta)
    assert unif.scope == "uniform" and unif.radius == radius
    for name in ("beta", "mu", "kappa", "L", "rho", "lam"):
        assert getattr(unif, name) == getattr(inst, name), name
    # both sides are float64 norms of d-vectors after a solve of condition κ
    rel = relative_tolerance("float64", kappa=inst.kappa, dim=task.dim)
    assert inst.D <= unif.D * (1 + rel), f"instance D {inst.D:.6g} > uniform D {unif.D:.6g}"
    assert inst.B <= unif.B * (1 + rel), f"instance B {inst.B:.6g} > uniform B {unif.B:.6g}"


@given(quadratic_tasks(), st.floats(0.01, 1.0), st.floats(0.0, 3.0))
def test_uniform_constants_bound_instance_ones(drawn, fraction, delta):
    task, spec, theta = drawn
    norm = float(np.linalg.norm(theta))
    # θ in the ball of radius R = ‖θ‖ / fraction (fraction 1: θ on its edge)
    check_uniform_bounds_instance(task, theta, norm / fraction, delta)
    # and θ shrunk into the ball of radius ‖θ‖
    check_uniform_bounds_instance(task, fraction * theta, norm, delta)


@given(seed=seeds)
def test_uniform_bound_check_fails_outside_the_ball(seed):
    """Negative control, and tightness: with b = 0 and θ along A's bottom eigenvector, the
    instance D equals the uniform D at R = ‖θ‖, so θ at twice the radius breaks the check."""
    task, spec = _planted(seed)
    zero = np.zeros(spec.dim)
    task = QuadraticTask(task.A, zero, task.A_query, zero, task.lam)
    v = np.linalg.eigh(task.A)[1][:, 0]
    inst, unif = task.constants(v).D, task.constants(v, radius=1.0).D
    assert math.isclose(inst, unif, rel_tol=relative_tolerance("float64", kappa=spec.kappa,
                                                                dim=spec.dim))
    with pytest.raises(AssertionError):
        check_uniform_bounds_instance(task, 2 * v, 1.0)


# -- scaling metamorphic relations ---------------------------------------------------------------

def _scaled(task, c, *, data=True, linear=False):
    """c·(A, b, Aₜ, bₜ, λ) when ``data``; (b, bₜ)·c only (θ scaled by the caller) when ``linear``."""
    if linear:
        return QuadraticTask(task.A, c * task.b, task.A_query, c * task.b_query, task.lam)
    return QuadraticTask(c * task.A, c * task.b, c * task.A_query, c * task.b_query, c * task.lam)


@given(quadratic_tasks(), st.integers(-6, 6), st.floats(0.1, 10.0))
def test_scaling_the_task(drawn, power, factor):
    """G, L and λ all scaled by c: Alg* and dAlg*/dθ are unchanged, the meta-gradient and
    β, μ, L, B, λ scale by c, κ and D do not; Lemma 3's bound scales by c, Theorem 2's counts
    at ε·c are unchanged. A power of two scales exactly, any other c to rounding."""
    task, spec, theta = drawn
    for c in (2.0 ** power, factor):
        scaled = _scaled(task, c)
        d, k = spec.dim, spec.kappa
        assert_within_rounding(scaled.inner_solution(theta), task.inner_solution(theta),
                               dtype="float64", kappa=k, scale=solution_scale(task, theta), dim=d,
                               what="Alg* of the scaled task", roundings=2)
        assert_within_rounding(scaled.jacobian(theta), task.jacobian(theta), dtype="float64",
                               kappa=k, scale=1.0, dim=d, what="Jacobian", roundings=2)
        assert_within_rounding(scaled.meta_gradient(theta), c * task.meta_gradient(theta),
                               dtype="float64", kappa=k, scale=c * gradient_scale(task, theta),
                               dim=d, what="meta-gradient", roundings=2)
        c0, c1 = task.constants(theta), scaled.constants(theta)
        # name: (power of c, the scale of its rounding in the unscaled task)
        laws = dict(beta=(1, c0.beta), mu=(1, c0.beta), L=(1, c0.beta + c0.L), lam=(1, c0.lam),
                    B=(1, gradient_scale(task, theta)), kappa=(0, k),
                    D=(0, solution_scale(task, theta)))
        for name, (power_of_c, scale) in laws.items():
            assert_within_rounding(np.array([getattr(c1, name)]),
                                   np.array([getattr(c0, name) * c ** power_of_c]),
                                   dtype="float64", kappa=k, scale=scale * c ** power_of_c, dim=d,
                                   what=f"constant {name} of the scaled task", roundings=2)
        _assert_bounds_scale(c0, c1, c, task.dim)


def _assert_bounds_scale(c0, c1, c, dim):
    # the constants themselves agree to this relative rounding (checked above)
    rel = 2 * relative_tolerance("float64", kappa=c0.kappa, dim=dim)
    for delta, dprime in ((0.0, 1.0), (1e-3, 0.0), (0.5, 0.25)):
        assert math.isclose(bounds.lemma3_bound(c1, delta, c * dprime),
                            c * bounds.lemma3_bound(c0, delta, dprime), rel_tol=rel)
        assert math.isclose(bounds.lemma3_bound_sharp(c1, delta, c * dprime),
                            c * bounds.lemma3_bound_sharp(c0, delta, dprime), rel_tol=rel)
    for e in (1e-2, 1e-6):
        # counts are ceilings of logarithms: equal unless the argument sits on an integer
        t0, t1 = bounds.theorem2_steps(c0, e), bounds.theorem2_steps(c1, c * e)
        assert all(abs(a - b) <= 1 for a, b in zip(t0, t1)), (t0, t1)


@given(quadratic_tasks(), st.integers(-6, 6))
def test_scaling_theta_and_linear_terms(drawn, power):
    """θ, b and bₜ scaled by c scale Alg*, the meta-gradient, D and B by c; Theorem 2's counts
    at ε·c are unchanged (c a power of two: exact in floating point)."""
    task, spec, theta = drawn
    c = 2.0 ** power
    scaled = _scaled(task, c, linear=True)
    assert np.array_equal(scaled.inner_solution(c * theta), c * task.inner_solution(theta))
    assert np.array_equal(scaled.meta_gradient(c * theta), c * task.meta_gradient(theta))
    c0, c1 = task.constants(theta), scaled.constants(c * theta)
    assert c1.D == c * c0.D and c1.B == c * c0.B
    assert bounds.theorem2_steps(c1, c * 1e-4) == bounds.theorem2_steps(c0, 1e-4)


# -- the bounds' formulas ----------------------------------------------------------------------

@given(st.floats(1.0, 1e3), st.floats(1e-3, 1e3), st.floats(1e-12, 1.0))
def test_step_counts_are_monotone(kappa, distance, delta):
    """More κ, more distance or less δ never asks for fewer steps; GD's estimate ≥ Lemma 2's
    count once κ is large (the reason acceleration matters); the typo count ≤ Lemma 2's."""
    n = bounds.lemma2_steps(kappa, distance, delta)
    assert bounds.lemma2_steps(2 * kappa, distance, delta) >= n
    assert bounds.lemma2_steps(kappa, 2 * distance, delta) >= n
    assert bounds.lemma2_steps(kappa, distance, delta / 2) >= n
    assert bounds.lemma2_steps_proof_typo(kappa, distance, delta) <= n
    # Lemma 2 follows from the variant's distance bound: after n steps it is within δ
    rel = relative_tolerance("float64", kappa=kappa)
    assert bounds.nesterov_distance_bound(kappa, n, distance) <= delta * (1 + rel)


@given(st.floats(1.0, 1e3), st.integers(0, 200))
def test_cg_error_bound_formula(kappa, steps):
    q = bounds.cg_contraction(kappa)
    assert 0 <= q < 1
    assert bounds.cg_error_bound(kappa, steps, 1.0, norm="M") == min(2 * q ** steps, 2.0)
    two = bounds.cg_error_bound(kappa, steps, 1.0)
    assert math.isclose(two, math.sqrt(kappa) * bounds.cg_error_bound(kappa, steps, 1.0, norm="M"))
    assert bounds.cg_error_bound(kappa, steps + 1, 1.0) <= two
