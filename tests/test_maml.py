"""MAML and truncated backpropagation (docs/mathematics.md §7, §8): autograd against the closed forms, the
exact-solve rate, Appendix D side by side, negative controls and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import theory.maml as tm
from solvers import fomaml_meta_gradient, maml_meta_gradient, truncated_meta_gradient
from theory.quadratic import QuadraticTask
from theory.tolerances import rounding_allowance
from verify.checks.maml import (adversarial_maml_task, check_appendix_d, check_maml_closed_form,
                                check_maml_exact_solve, check_truncated, paper_comparison)
from verify.strategies import quadratic_tasks
from verify.tasks import paper_synthetic_task, planted_spectrum_task, to_array

SMALL = dict(max_dim=6, max_kappa=1e3, queries=("independent", "reversed", "shared"))


@pytest.mark.parametrize("array", ["numpy", "torch"])
@given(drawn=quadratic_tasks(**SMALL), K=st.integers(0, 30))
def test_maml_autograd_equals_closed_form(array, drawn, K):
    task, spec, theta = drawn
    if array == "torch":
        task = QuadraticTask(*(to_array(np.asarray(a), array="torch") for a in
                               (task.A, task.b, task.A_query, task.b_query)), task.lam)
        theta = to_array(np.asarray(theta), array="torch")
    result = check_maml_closed_form(task, theta, inner_steps=K)
    assert result.passed, result


@given(drawn=quadratic_tasks(**SMALL), K=st.integers(1, 30), frac=st.floats(0, 1))
def test_truncated_matches_its_closed_form(drawn, K, frac):
    task, spec, theta = drawn
    T = int(round(frac * K))
    assert check_truncated(task, theta, inner_steps=K, backprop_steps=T).passed


@given(drawn=quadratic_tasks(**SMALL), K=st.integers(0, 60))
def test_maml_exact_solve_error_within_rate_bound(drawn, K):
    task, spec, theta = drawn
    assert check_maml_exact_solve(task, theta, inner_steps=K).passed


def test_exact_solve_bound_nearly_attained_on_planted_instance():
    task, theta = adversarial_maml_task(10, 50.0, 5.0, seed=3)
    ratios = [check_maml_exact_solve(task, theta, inner_steps=K).ratio for K in (5, 50, 200)]
    assert all(r <= 1 for r in ratios)
    assert ratios[-1] > 0.9 * 1 / (1 + 0.9)  # ratio = 1/(1 + (1 − λ/β)q^K) → 1 as K grows
    assert ratios == sorted(ratios)


def test_float32_torch_within_float32_allowance():
    task, spec = planted_spectrum_task(8, 100.0, 1.0, seed=5, query="independent", array="torch",
                                       dtype="float32")
    theta = torch.randn(8, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    res = maml_meta_gradient(task, theta, inner_steps=20)
    assert res.gradient.dtype == torch.float32
    assert check_maml_closed_form(task, theta, inner_steps=20).passed


def test_autograd_and_protocol_backward_agree():
    task, _ = planted_spectrum_task(6, 20.0, 1.0, seed=1, query="independent", array="torch")
    theta = torch.linspace(-1, 1, 6, dtype=torch.float64)
    a = maml_meta_gradient(task, theta, inner_steps=15, backward="autograd").gradient
    b = maml_meta_gradient(task, theta, inner_steps=15, backward="protocol").gradient
    scale = float(torch.linalg.vector_norm(a)) + 1
    assert float(torch.linalg.vector_norm(a - b)) <= rounding_allowance(
        "float64", kappa=20.0, scale=scale, dim=6 * 16)


def test_jacobian_recursion_and_limits():
    task, _ = planted_spectrum_task(5, 10.0, 2.0, seed=2)
    beta = task.curvature_bounds()[0]
    alpha = 1 / beta
    C = np.asarray(task.A) + 2.0 * np.eye(5)
    P = np.eye(5) - alpha * C
    J = np.eye(5)
    for K in range(6):
        assert np.allclose(tm.maml_jacobian(task, alpha, K), J, rtol=0,
                           atol=rounding_allowance("float64", kappa=10.0, dim=5 * (K + 1)))
        J = P @ J + alpha * 2.0 * np.eye(5)
    limit = tm.maml_jacobian(task, alpha, 5000)
    assert np.allclose(limit, np.asarray(task.jacobian(np.zeros(5))), rtol=0,
                       atol=rounding_allowance("float64", kappa=10.0, dim=5))
    assert tm.maml_contraction(task, alpha) == pytest.approx(1 - 1 / 10.0, rel=1e-12)
    assert np.array_equal(tm.truncated_jacobian(task, alpha, 7, 7), tm.maml_jacobian(task, alpha, 7))
    assert np.array_equal(tm.truncated_jacobian(task, alpha, 7, 0), np.zeros((5, 5)))


def test_evaluation_counts_and_diagnostics():
    task, _ = planted_spectrum_task(5, 10.0, 1.0, seed=0)
    theta = np.ones(5)
    res = maml_meta_gradient(task, theta, inner_steps=7)
    assert res.method == "maml" and res.linear is None and res.inner.steps == 7
    assert res.evaluations == {"inner_grad": 7, "hvp": 7, "outer_grad": 1}
    assert isinstance(res.gradient, np.ndarray) and res.gradient.dtype == np.float64
    tr = truncated_meta_gradient(task, theta, inner_steps=7, backprop_steps=3)
    # the first of the T = 3 differentiated steps starts at the constant φ_4: 2 HVPs
    assert tr.method == "truncated" and tr.evaluations["hvp"] == 2
    assert np.array_equal(tr.phi, res.phi)  # same forward path


# -- Appendix D -----------------------------------------------------------------------------------

def test_appendix_d_on_paper_task():
    task, spec = paper_synthetic_task(seed=0)
    for r in check_appendix_d(task, np.zeros(spec.dim), 20):
        assert r.passed, r


def test_paper_comparison_numbers_are_ordered():
    table, _ = paper_comparison(Ks=(5, 100))
    for K, rows in table.items():
        assert rows["imaml"]["exact_solve_error"] < rows["maml"]["exact_solve_error"]
        assert rows["maml"]["evaluations"]["inner_grad"] + rows["maml"]["evaluations"]["hvp"] \
            == rows["imaml"]["evaluations"]["inner_grad"] + rows["imaml"]["evaluations"]["hvp"]
    assert table[100]["maml"]["exact_solve_error"] < table[5]["maml"]["exact_solve_error"]


# -- negative controls ----------------------------------------------------------------------------

def _first_order_as_maml(task, theta, *, inner_steps, step_size, **_):
    """A planted defect: MAML that forgets the Jacobian (uses ∇L(φ_K) alone)."""
    res = maml_meta_gradient(task, theta, inner_steps=inner_steps, step_size=step_size)
    res.gradient = task.outer_grad(res.phi)
    return res


def _sign_flip(task, theta, *, inner_steps, step_size, **_):
    res = maml_meta_gradient(task, theta, inner_steps=inner_steps, step_size=step_size)
    res.gradient = -res.gradient
    return res


def test_closed_form_check_fails_on_planted_defects():
    task, _ = planted_spectrum_task(6, 50.0, 1.0, seed=4, query="independent")
    theta = np.ones(6)
    assert not check_maml_closed_form(task, theta, inner_steps=10, method=_first_order_as_maml).passed
    assert not check_maml_closed_form(task, theta, inner_steps=10, method=_sign_flip).passed


def test_exact_solve_check_fails_without_the_jacobian():
    task, _ = planted_spectrum_task(6, 10.0, 1.0, seed=4, query="independent")
    theta = np.ones(6)
    assert check_maml_exact_solve(task, theta, inner_steps=200).passed
    assert not check_maml_exact_solve(task, theta, inner_steps=200, method=_first_order_as_maml).passed


def test_truncated_check_fails_when_full_backprop_is_passed_off_as_truncated():
    task, _ = planted_spectrum_task(6, 50.0, 1.0, seed=4, query="independent")

    def full(task, theta, *, inner_steps, backprop_steps, step_size):
        return maml_meta_gradient(task, theta, inner_steps=inner_steps, step_size=step_size)

    assert not check_truncated(task, np.ones(6), inner_steps=10, backprop_steps=3, method=full).passed


def test_appendix_d_fails_when_imaml_is_replaced_by_first_order_maml():
    task, spec = paper_synthetic_task(seed=0)
    results = check_appendix_d(task, np.zeros(spec.dim), 100, imaml_method=lambda t, th, K:
                               fomaml_meta_gradient(t, th, inner_steps=2 * K))
    assert not all(r.passed for r in results)


# -- bad input ------------------------------------------------------------------------------------

@pytest.fixture
def quad():
    task, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0)
    return task, np.zeros(4)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(inner_steps=-1), ValueError, "inner_steps"),
    (dict(inner_steps=True), ValueError, "inner_steps"),
    (dict(inner_steps=2.5), ValueError, "inner_steps"),
    (dict(inner_steps=3, step_size=0.0), ValueError, "step_size"),
    (dict(inner_steps=3, step_size=float("nan")), ValueError, "step_size"),
    (dict(inner_steps=3, backward="forward"), ValueError, "backward"),
    (dict(inner_steps=3, backward="autograd"), ValueError, "torch input"),
])
def test_maml_bad_input(quad, kwargs, error, match):
    task, theta = quad
    with pytest.raises(error, match=match):
        maml_meta_gradient(task, theta, **kwargs)


def test_truncated_bad_input(quad):
    task, theta = quad
    with pytest.raises(ValueError, match="backprop_steps"):
        truncated_meta_gradient(task, theta, inner_steps=3, backprop_steps=4)
    with pytest.raises(ValueError, match="backprop_steps"):
        truncated_meta_gradient(task, theta, inner_steps=3, backprop_steps=-1)
    with pytest.raises(ValueError, match="theta"):
        maml_meta_gradient(task, np.array([0.0, np.nan, 0.0, 0.0]), inner_steps=2)
    with pytest.raises(TypeError, match="task"):
        maml_meta_gradient(object(), theta, inner_steps=2)


def test_non_differentiable_torch_gradient_is_reported():
    task, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0, array="torch")

    class Detached:
        lam = task.lam
        inner_loss, outer_loss, outer_grad = task.inner_loss, task.outer_loss, task.outer_grad
        inner_hvp, curvature_bounds = task.inner_hvp, task.curvature_bounds

        def inner_grad(self, phi):
            return task.inner_grad(phi.detach())

    theta = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(TypeError, match="protocol"):
        maml_meta_gradient(Detached(), theta, inner_steps=2)
    # the protocol backward works for it, and agrees with the closed form
    g = maml_meta_gradient(Detached(), theta, inner_steps=2, backward="protocol").gradient
    ref = tm.maml_meta_gradient(task, theta, 1 / task.curvature_bounds()[0], 2)
    assert float(np.linalg.norm(g.numpy() - ref)) <= rounding_allowance(
        "float64", kappa=10.0, scale=float(np.linalg.norm(ref)) + 1, dim=12)


def test_theory_bad_input(quad):
    task, theta = quad
    with pytest.raises(ValueError, match="step_size"):
        tm.maml_jacobian(task, -1.0, 3)
    with pytest.raises(ValueError, match="inner_steps"):
        tm.maml_jacobian(task, 0.1, -2)
    with pytest.raises(ValueError, match="backprop_steps"):
        tm.truncated_jacobian(task, 0.1, 2, 3)
    with pytest.raises(TypeError, match="quadratic"):
        tm.maml_jacobian(object(), 0.1, 2)
    c = task.constants(theta)
    with pytest.raises(ValueError, match="step_size"):
        tm.maml_exact_solve_error_bound(c, step_size=2 / c.beta, inner_steps=3,
                                        initial_distance=1.0, outer_grad_norm=1.0)




@pytest.mark.slow
@pytest.mark.parametrize("array", ["numpy", "torch"])
@given(drawn=st.data(), K=st.integers(0, 200))
def test_maml_closed_form_long_loops(array, drawn, K):
    task, spec, theta = drawn.draw(quadratic_tasks(array=array, max_dim=12, max_kappa=1e4))
    assert check_maml_closed_form(task, theta, inner_steps=K).passed
    assert check_maml_exact_solve(task, theta, inner_steps=K).passed


def test_maml_on_a_network_autograd_equals_protocol_backward():
    """On verify.models.ModelTask (an MLP), backprop through the network's own differentiable
    gradient equals the chain of the task's Hessian-vector products (two routes, one answer)."""
    from verify.measure import memory_task

    task, theta, opts = memory_task("mlp", seed=3)
    a = maml_meta_gradient(task, theta, inner_steps=5, step_size=opts["step_size"],
                           backward="autograd")
    b = maml_meta_gradient(task, theta, inner_steps=5, step_size=opts["step_size"],
                           backward="protocol")
    assert torch.equal(a.phi, b.phi)
    scale = float(torch.linalg.vector_norm(a.gradient)) + 1
    assert float(torch.linalg.vector_norm(a.gradient - b.gradient)) <= rounding_allowance(
        "float64", scale=scale, dim=theta.numel() * 6)
