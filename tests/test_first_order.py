"""First-order MAML and Reptile against iMAML (docs/mathematics.md §7): exact relations, where Appendix A's
"identical up to the learning rate" holds, the counterexample, negative controls, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from solvers import fomaml_meta_gradient, imaml_meta_gradient, reptile_direction
from verify.checks.first_order import (check_fomaml_is_imaml, check_reptile_counterexample,
                                       check_reptile_gap, check_reptile_same_loss,
                                       opposite_tasks_example, reptile_numbers)
from verify.strategies import quadratic_tasks
from verify.tasks import paper_synthetic_task, planted_spectrum_task

SMALL = dict(max_dim=6, max_kappa=1e3)


@pytest.mark.parametrize("array", ["numpy", "torch"])
@given(drawn=st.data(), K=st.integers(0, 20))
def test_fomaml_is_imaml_with_zero_cg_steps(array, drawn, K):
    task, spec, theta = drawn.draw(quadratic_tasks(array=array, **SMALL))
    for r in check_fomaml_is_imaml(task, theta, inner_steps=K):
        assert r.passed, r


@given(drawn=quadratic_tasks(**SMALL), K=st.integers(1, 30),
       inner=st.sampled_from(["nesterov", "gd", "newton_cg"]))
def test_reptile_gap_is_stationarity_over_lambda(drawn, K, inner):
    task, spec, theta = drawn
    assert check_reptile_gap(task, theta, inner_steps=K, inner=inner).passed


@given(drawn=quadratic_tasks(queries=("same",), **SMALL), K=st.integers(1, 30))
def test_reptile_is_fomaml_over_lambda_when_losses_coincide(drawn, K):
    task, spec, theta = drawn
    assert check_reptile_same_loss(task, theta, inner_steps=K).passed


@given(lam=st.floats(0.01, 100.0), c=st.floats(0.1, 10.0))
def test_opposite_tasks_counterexample_in_closed_form(lam, c):
    task, theta = opposite_tasks_example(c=c, lam=lam)
    nums = reptile_numbers(task, theta)
    assert nums["cosine_reptile_fomaml"] == pytest.approx(-1.0, abs=1e-12)
    assert nums["ratio_reptile_fomaml"] == pytest.approx(lam / (2 + lam), rel=1e-12)
    assert check_reptile_counterexample(task, theta).passed


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
    assert res.method == "reptile" and res.cg is None
    assert res.evaluations == {"inner_grad": 4, "hvp": 0, "outer_grad": 0}
    assert np.array_equal(res.gradient, theta - res.phi)
    fo = fomaml_meta_gradient(task, theta, inner_steps=4)
    assert fo.method == "fomaml" and np.array_equal(fo.phi, res.phi)


# -- negative controls ----------------------------------------------------------------------------

def test_fomaml_check_fails_on_planted_defects():
    task, _ = planted_spectrum_task(5, 50.0, 1.0, seed=2, query="independent")
    theta = np.ones(5)

    def one_cg_step(task, theta, *, inner_steps):
        return imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=1)

    def inner_loss_gradient(task, theta, *, inner_steps):
        res = fomaml_meta_gradient(task, theta, inner_steps=inner_steps)
        res.gradient = task.inner_grad(res.phi)
        return res

    for method in (one_cg_step, inner_loss_gradient):
        assert not all(r.passed for r in check_fomaml_is_imaml(task, theta, inner_steps=5,
                                                               method=method))


def test_reptile_checks_fail_on_planted_defects():
    task, _ = planted_spectrum_task(5, 50.0, 1.0, seed=2, query="same")
    theta = np.ones(5)

    def wrong_sign(task, theta, *, inner_steps, inner="nesterov"):
        res = reptile_direction(task, theta, inner_steps=inner_steps, inner=inner)
        res.gradient = -res.gradient
        return res

    assert not check_reptile_gap(task, theta, inner_steps=5, method=wrong_sign).passed
    assert not check_reptile_same_loss(task, theta, inner_steps=5, method=wrong_sign).passed


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
