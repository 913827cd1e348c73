"""First-order MAML and Reptile against iMAML (docs/mathematics.md §7): the claims judged against
closed forms (never the solver's own code path), the structural identities as unit tests, the
counterexample, negative controls, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import theory.maml as tm
from solvers import (default_step_sizes, fomaml_meta_gradient, imaml_meta_gradient,
                     implicit_gradient_at, inner_solve, reptile_direction)
from verify.checks.first_order import (check_fomaml_direction, check_interpolation,
                                       check_reptile_counterexample, check_reptile_direction,
                                       check_reptile_same_loss, closed_form_iterate,
                                       opposite_tasks_example, reptile_numbers)
from verify.strategies import quadratic_tasks
from verify.tasks import nonconvex_task, paper_synthetic_task, planted_spectrum_task

SMALL = dict(max_dim=6, max_kappa=1e3)
INNER = st.sampled_from(["nesterov", "gd"])


# -- structural identities (by construction: unit tests, not claims) ------------------------------

@pytest.mark.parametrize("array", ["numpy", "torch"])
@given(drawn=st.data(), K=st.integers(0, 20))
def test_fomaml_is_imaml_code_with_zero_cg_steps(array, drawn, K):
    """solvers/first_order.py calls iMAML's code with 0 CG steps from ∇L(φ): bitwise equal."""
    task, spec, theta = drawn.draw(quadratic_tasks(array=array, **SMALL))
    fo = fomaml_meta_gradient(task, theta, inner_steps=K)
    zero = imaml_meta_gradient(task, theta, inner_steps=K, cg_steps=0, cg_start="gradient")
    assert np.array_equal(np.asarray(fo.gradient), np.asarray(zero.gradient))
    assert np.array_equal(np.asarray(fo.gradient), np.asarray(task.outer_grad(fo.phi)))


@given(drawn=quadratic_tasks(**SMALL), K=st.integers(1, 30),
       inner=st.sampled_from(["nesterov", "gd", "newton_cg"]))
def test_reptile_gap_identity(drawn, K, inner):
    """(θ − φ) − ∇L̂(φ)/λ = −∇G(φ, θ)/λ for any φ (algebra, to rounding)."""
    task, spec, theta = drawn
    res = reptile_direction(task, theta, inner_steps=K, inner=inner)
    lhs = np.asarray(res.gradient) - np.asarray(task.inner_grad(res.phi)) / task.lam
    rhs = -(np.asarray(task.inner_grad(res.phi)) + task.lam * (res.phi - theta)) / task.lam
    scale = np.linalg.norm(theta) + np.linalg.norm(res.phi) + np.linalg.norm(task.inner_grad(res.phi)) / task.lam
    assert np.linalg.norm(lhs - rhs) <= 8 * np.finfo(float).eps * spec.dim * scale


# -- the claims hold ------------------------------------------------------------------------------

@given(drawn=quadratic_tasks(**SMALL), K=st.integers(0, 40), inner=INNER)
def test_fomaml_direction_matches_closed_form(drawn, K, inner):
    task, spec, theta = drawn
    assert check_fomaml_direction(task, theta, inner_steps=K, inner=inner).passed


@given(drawn=quadratic_tasks(**SMALL), K=st.integers(0, 40), inner=INNER)
def test_reptile_direction_tends_to_inner_gradient(drawn, K, inner):
    task, spec, theta = drawn
    assert all(r.passed for r in check_reptile_direction(task, theta, inner_steps=K, inner=inner))


@given(drawn=quadratic_tasks(queries=("same",), **SMALL), K=st.integers(0, 40), inner=INNER)
def test_reptile_is_fomaml_over_lambda_when_losses_coincide(drawn, K, inner):
    task, spec, theta = drawn
    assert check_reptile_same_loss(task, theta, inner_steps=K, inner=inner).passed


@given(drawn=quadratic_tasks(max_dim=8, max_kappa=1e3))
def test_interpolation_from_first_order_to_exact(drawn):
    task, spec, theta = drawn
    assert all(r.passed for r in check_interpolation(task, theta))


def test_claims_on_a_nonconvex_inner_loss():
    task, _ = nonconvex_task(6, 100.0, 1.0, seed=3)
    theta = np.random.default_rng(3).standard_normal(6)
    for inner in ("nesterov", "gd"):
        assert check_fomaml_direction(task, theta, inner_steps=7, inner=inner).passed
        assert all(r.passed for r in check_reptile_direction(task, theta, inner_steps=7, inner=inner))
    assert all(r.passed for r in check_interpolation(task, theta))


def test_closed_form_iterates_are_the_solver_iterates():
    """The closed forms used as references are a second route to the same iterates."""
    task, _ = planted_spectrum_task(6, 50.0, 1.5, seed=4, query="independent")
    theta = np.random.default_rng(4).standard_normal(6)
    for inner in ("nesterov", "gd"):
        for K in (0, 1, 3, 30):
            solver = inner_solve(task, theta, inner_steps=K, inner=inner).x
            assert np.linalg.norm(solver - closed_form_iterate(task, theta, inner, K)) < 1e-12


@given(lam=st.floats(0.01, 100.0), c=st.floats(0.1, 10.0))
def test_opposite_tasks_counterexample_in_closed_form(lam, c):
    task, theta = opposite_tasks_example(c=c, lam=lam)
    nums = reptile_numbers(task, theta)
    assert nums["cosine_reptile_fomaml"] == pytest.approx(-1.0, abs=1e-12)
    assert nums["ratio_reptile_fomaml"] == pytest.approx(lam / (2 + lam), rel=1e-12)
    r = check_reptile_counterexample(task, theta)
    assert r.passed and r.kind == "finding"


def test_paper_task_counterexample_numbers():
    task, spec = paper_synthetic_task(seed=0)
    r = check_reptile_counterexample(task, np.zeros(spec.dim))
    assert r.passed
    assert -1 < r.details["cosine_reptile_fomaml"] < 1
    assert r.details["reptile_identity_error"] <= 1e3 * r.bound  # λ(θ−φ*) = ∇L̂(φ*) to rounding


def test_reptile_result_fields():
    task, _ = planted_spectrum_task(5, 10.0, 2.0, seed=0, query="independent")
    theta = np.ones(5)
    res = reptile_direction(task, theta, inner_steps=4)
    assert res.method == "reptile" and res.linear is None
    assert res.evaluations == {"inner_grad": 4, "hvp": 0, "outer_grad": 0}
    assert np.array_equal(res.gradient, theta - res.phi)
    fo = fomaml_meta_gradient(task, theta, inner_steps=4)
    assert fo.method == "fomaml" and np.array_equal(fo.phi, res.phi)


# -- negative controls ----------------------------------------------------------------------------

def _task(query="independent", lam=1.0):
    task, _ = planted_spectrum_task(5, 50.0, lam, seed=2, query=query)
    return task, np.ones(5)


def test_fomaml_check_fails_on_planted_defects():
    task, theta = _task()

    def one_cg_step(task, theta, *, inner_steps, inner):
        return imaml_meta_gradient(task, theta, inner_steps=inner_steps, inner=inner, cg_steps=1)

    def inner_loss_gradient(task, theta, *, inner_steps, inner):
        res = fomaml_meta_gradient(task, theta, inner_steps=inner_steps, inner=inner)
        res.gradient = task.inner_grad(res.phi)
        return res

    def one_step_short(task, theta, *, inner_steps, inner):
        return fomaml_meta_gradient(task, theta, inner_steps=inner_steps - 1, inner=inner)

    for method in (one_cg_step, inner_loss_gradient, one_step_short):
        assert not check_fomaml_direction(task, theta, inner_steps=5, method=method).passed


def test_reptile_checks_fail_on_planted_defects():
    task, theta = _task("same")

    def wrong_sign(task, theta, *, inner_steps, inner="nesterov"):
        res = reptile_direction(task, theta, inner_steps=inner_steps, inner=inner)
        res.gradient = -res.gradient
        return res

    def times_lambda(task, theta, *, inner_steps, inner="nesterov"):
        res = reptile_direction(task, theta, inner_steps=inner_steps, inner=inner)
        res.gradient = res.gradient * 3.0
        return res

    for method in (wrong_sign, times_lambda):
        assert not all(r.passed for r in check_reptile_direction(task, theta, inner_steps=5,
                                                                 method=method))
        # the bound β‖φ_K − φ*‖ must be small for a wrong scale to show: many steps
        assert not check_reptile_same_loss(task, theta, inner_steps=80, method=method).passed


def test_reptile_direction_fails_with_the_query_loss_gradient():
    """Reptile's limit is the inner loss's direction: returning ∇L(φ)/λ (first-order MAML over
    λ, which the appendix calls identical) fails when L ≠ L̂."""
    task, theta = _task()

    def fomaml_over_lambda(task, theta, *, inner_steps, inner="nesterov"):
        res = fomaml_meta_gradient(task, theta, inner_steps=inner_steps, inner=inner)
        res.gradient = res.gradient / task.lam
        return res

    assert not all(r.passed for r in check_reptile_direction(task, theta, inner_steps=60,
                                                             method=fomaml_over_lambda))


def test_interpolation_fails_on_planted_defects():
    task, theta = _task(lam=2.5)

    def from_zero(task, theta, inner, *, cg_steps, cg_start):      # g₀ = 0, not ∇L(φ)
        return implicit_gradient_at(task, theta, inner, cg_steps=cg_steps, cg_start="zero")

    from verify.checks.first_order import distinct_eigenvalues

    m = distinct_eigenvalues(task)

    def no_lambda(task, theta, inner, *, cg_steps, cg_start):      # solves (I + H) g = ∇L
        res = implicit_gradient_at(task, theta, inner, cg_steps=cg_steps, cg_start=cg_start)
        if cg_steps == m:
            res.gradient = np.linalg.solve(np.eye(5) + task.A, task.outer_grad(inner.x))
        return res

    def wobbling(task, theta, inner, *, cg_steps, cg_start):       # error grows at step 2
        res = implicit_gradient_at(task, theta, inner, cg_steps=cg_steps, cg_start=cg_start)
        if cg_steps == 2:
            res.gradient = 3.0 * res.gradient
        return res

    for method, failing in ((from_zero, 0), (no_lambda, 1), (wobbling, -1)):
        results = check_interpolation(task, theta, cg_method=method)
        assert not results[failing].passed, (method.__name__, results[failing])


def test_counterexample_check_fails_when_losses_coincide():
    task, _ = planted_spectrum_task(5, 50.0, 1.0, seed=2, query="same")
    assert not check_reptile_counterexample(task, np.ones(5)).passed


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [fomaml_meta_gradient, reptile_direction])
def test_bad_input(fn):
    task, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0)
    with pytest.raises(ValueError, match="inner"):
        fn(task, np.zeros(4), inner_steps=2, inner="adam")
    with pytest.raises(ValueError, match="theta"):
        fn(task, np.zeros((4, 1)), inner_steps=2)
    with pytest.raises(ValueError, match="warm_start"):
        fn(task, np.zeros(4), inner_steps=2, warm_start="random")
    with pytest.raises(ValueError, match="inner_steps"):
        fn(task, np.zeros(4), inner_steps=-1)


def test_closed_form_iterate_bad_input():
    task, theta = _task()
    with pytest.raises(ValueError, match="inner"):
        closed_form_iterate(task, theta, "newton_cg", 3)
    step, _ = default_step_sizes(task, "nesterov", None, None)
    with pytest.raises(ValueError, match="momentum"):
        tm.nesterov_iterate(task, theta, step, 1.0, 3)
