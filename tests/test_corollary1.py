"""Corollary 1 on multi-task quadratic meta-objectives (docs/mathematics.md §8): the exact F, the check, a
negative control, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from solvers import fomaml_meta_gradient
from theory.bounds import corollary1_calls
from theory.tolerances import rounding_allowance
from verify.tasks import multitask_quadratic
from verify.checks.corollary1 import check_corollary1, meta_objective, run_corollary1

seeds = st.integers(0, 2**31 - 1)


@given(seeds, st.integers(1, 4), st.integers(2, 6), st.floats(1.0, 50.0), st.floats(0.2, 5.0))
def test_meta_objective_is_exact(seed, M, d, kappa, lam):
    """∇F = mean of the exact per-task meta-gradients; L_F = λmax(H_F); ∇F(θ_min) = 0."""
    tasks = multitask_quadratic(M, d, kappa, lam, seed=seed)
    F = meta_objective(tasks)
    theta = np.random.default_rng(seed).standard_normal(d)
    expected = np.mean([t.meta_gradient(theta) for t in tasks], axis=0)
    scale = float(np.linalg.norm(expected)) + F.L_F * float(np.linalg.norm(theta)) + 1
    allow = rounding_allowance("float64", kappa=kappa, scale=scale, dim=d)
    assert np.linalg.norm(F.gradient(theta) - expected) <= allow
    assert F.L_F == pytest.approx(np.linalg.eigvalsh(F.hessian)[-1])
    # value at θ: the mean of query losses at the exact inner solutions
    val = np.mean([t.outer_loss(t.inner_solution(theta)) for t in tasks])
    assert abs(F.value(theta) - val) <= allow * (1 + np.linalg.norm(theta))
    assert F.minimum <= F.value(theta) + allow


@settings(max_examples=3)
@given(seeds, st.integers(1, 2), st.sampled_from([1e-1, 1e-2]))
def test_corollary1_holds(seed, M, eps):
    tasks = multitask_quadratic(M, 4, 10.0, 1.0, seed=seed)
    results = check_corollary1(tasks, eps)
    for r in results:
        assert r.passed, r
    assert results[0].measured % M == 0  # whole sweeps over the M tasks


def test_negative_control_inaccurate_meta_gradients():
    """First-order MAML (not ε/2-accurate) as the routine: the accuracy check fails, and gradient
    descent on F does not reach ‖∇F‖ ≤ ε (it converges to the wrong point)."""
    tasks = multitask_quadratic(2, 4, 10.0, 0.5, seed=1)

    def fomaml(task, theta, eps_half):
        return fomaml_meta_gradient(task, theta, inner_steps=50)

    results = check_corollary1(tasks, 1e-2, routine=fomaml, max_calls=100)
    assert not results[0].passed and not results[1].passed


def test_negative_control_wrong_sign():
    tasks = multitask_quadratic(2, 4, 10.0, 1.0, seed=2)
    from verify.checks.corollary1 import imaml_routine

    def flipped(task, theta, eps_half):
        res = imaml_routine(task, theta, eps_half)
        res.gradient = -res.gradient
        return res

    out = run_corollary1(tasks, 1e-1, routine=flipped, max_calls=40)
    assert not out["reached"]


def test_bad_input():
    tasks = multitask_quadratic(2, 3, 10.0, 1.0, seed=0)
    with pytest.raises(ValueError, match="eps"):
        run_corollary1(tasks, 0.0)
    with pytest.raises(ValueError, match="n_tasks"):
        corollary1_calls(0, 1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="strongly convex"):
        # a zero query Hessian makes F flat in every direction
        from theory.quadratic import QuadraticTask

        meta_objective([QuadraticTask(np.eye(2), np.zeros(2), np.zeros((2, 2)), np.ones(2), 1.0)])


# -- a non-convex F -------------------------------------------------------------------------------

def test_corollary1_on_a_nonconvex_meta_objective():
    from verify.checks.corollary1 import cauchy_tasks, check_nonconvex

    tasks, F = cauchy_tasks(2, 4, 10.0, 1.0, seed=3)
    assert all(r.passed for r in check_nonconvex(tasks, F))
    theta = np.random.default_rng(0).standard_normal(4)
    # ∇F is the mean of the exact meta-gradients (chain rule through Alg* = Jθ + s)
    h = 1e-6
    fd = np.array([(F.value(theta + h * e) - F.value(theta - h * e)) / (2 * h) for e in np.eye(4)])
    assert np.linalg.norm(fd - F.gradient(theta)) < 1e-7
    results = check_corollary1(tasks, 1e-2, objective=F)
    assert all(r.passed for r in results), results


def test_nonconvex_corollary1_negative_controls():
    from verify.checks.corollary1 import cauchy_tasks, check_nonconvex, imaml_routine

    tasks, F = cauchy_tasks(2, 4, 10.0, 1.0, seed=3)

    def biased(task, theta, eps_half):
        res = imaml_routine(task, theta, eps_half)
        res.gradient = res.gradient + 0.05                # an error of 0.1 > ε/2 = 0.005
        return res

    results = check_corollary1(tasks, 1e-2, routine=biased, objective=F, max_calls=60)
    assert not results[0].passed and not results[1].passed
    # a convex instance is not passed off as non-convex
    convex, Fc = cauchy_tasks(2, 4, 10.0, 1.0, seed=3, target_scale=0.0)
    assert not check_nonconvex(convex, Fc)[0].passed


def test_the_batched_path_takes_the_same_steps_as_task_by_task():
    """Quadratic tasks go through one stacked call a step (the largest of the tasks' Theorem 2
    counts); task by task (any other routine) gives the same calls and both stay ε/2-accurate."""
    from verify.checks.corollary1 import imaml_routine, run_corollary1

    tasks = multitask_quadratic(3, 5, 10.0, 1.0, seed=4)
    stacked = run_corollary1(tasks, 1e-2)
    one_by_one = run_corollary1(tasks, 1e-2,
                                routine=lambda t, th, e: imaml_routine(t, th, e))
    assert stacked["calls"] == one_by_one["calls"] and stacked["reached"]
    assert max(stacked["worst_meta_gradient_error"],
               one_by_one["worst_meta_gradient_error"]) <= 1e-2 / 2
