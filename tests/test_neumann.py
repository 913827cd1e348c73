"""The Neumann series and the fixed-point hypergradient (docs/mathematics.md §4a): the bounds of
theory.bounds pinned, the checks of verify/checks/neumann.py on planted instances, and their
negative controls (a defective contraction, a convergent step in the divergence control, a
fixed point off by one iteration): each must fail."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _tolerances import relative_tolerance
from hypothesis import given, settings

from theory.bounds import neumann_contraction, neumann_error_bound, neumann_steps_for_error
from verify.checks.neumann import (DIVERGENT_ALPHA, check_fixed_point_identity,
                                   check_neumann_bound, check_neumann_divergence, worst_case_rhs)
from verify.strategies import quadratic_tasks
from verify.tasks import float64_twin, planted_spectrum_task


#: a few float64 roundings (the closed forms take a handful of operations)
ROUNDING = relative_tolerance("float64", dim=8)

def test_contraction_is_the_norm_of_i_minus_alpha_m():
    assert neumann_contraction((1.0, 4.0), 0.4) == pytest.approx(0.6, rel=ROUNDING)
    assert neumann_contraction((1.0, 4.0), 0.25) == 0.75          # α = 1/‖M‖: 1 − 1/κ
    assert neumann_contraction((0.5, 2.0), 1.0) == 1.0            # α‖M‖ = 2: no contraction
    assert neumann_contraction((1.0, 4.0), 1.0) == 3.0            # α‖M‖ = 4: |1 − 4|
    assert neumann_contraction((-1.0, 4.0), 0.1) == 1.1           # indefinite: > 1 for any α
    assert neumann_contraction((2.0, 2.0), 0.5) == 0.0


def test_error_bound_and_steps():
    assert neumann_error_bound((1.0, 4.0), 0.25, 3, 2.0) == 0.75 ** 3 * 2.0
    assert neumann_error_bound((1.0, 4.0), 0.25, 0, 2.0) == 2.0
    assert neumann_error_bound((1.0, 4.0), 1.0, 2, 1.0) == 9.0    # divergence: grows
    # the smallest k with 0.6^k ≤ 1e-3: 0.6^13 = 1.3e-3, 0.6^14 = 7.8e-4
    assert neumann_steps_for_error((1.0, 4.0), 0.4, 1e-3) == 14
    assert neumann_steps_for_error((1.0, 4.0), 0.25, 1.0) == 0
    assert neumann_steps_for_error((0.5, 2.0), 1.0, 0.5) is None
    assert neumann_steps_for_error((2.0, 2.0), 0.5, 1e-9) == 1
    for rel in (0.5, 1e-3, 1e-12):
        k = neumann_steps_for_error((1.0, 10.0), 0.1, rel)
        assert 0.9 ** k <= rel < 0.9 ** (k - 1)


def test_bounds_reject_bad_input():
    with pytest.raises(ValueError, match="spectrum"):
        neumann_contraction((2.0, 1.0), 0.1)
    with pytest.raises(ValueError, match="spectrum"):
        neumann_contraction((0.0, math.inf), 0.1)
    with pytest.raises(ValueError, match="alpha"):
        neumann_contraction((1.0, 2.0), 0.0)
    with pytest.raises(ValueError, match="steps"):
        neumann_error_bound((1.0, 2.0), 0.1, -1, 1.0)
    with pytest.raises(ValueError, match="rel_error"):
        neumann_steps_for_error((1.0, 2.0), 0.1, 0.0)


def _instance(kappa=50.0, lam=2.0, dim=12, seed=3):
    task, _ = planted_spectrum_task(dim, kappa, lam, seed=seed, query="independent",
                                    spectrum="log")
    return task, np.random.default_rng(seed + 1).standard_normal(dim)


@pytest.mark.parametrize("solver", ["neumann", "fixed_point"])
def test_the_bound_holds_and_a_defective_contraction_fails(solver):
    task, theta = _instance()
    beta, mu = task.curvature_bounds()
    alpha = task.lam / beta
    ok = check_neumann_bound(task, theta, alpha, solver=solver)
    assert ok.passed and ok.details["steps_above_rounding"] > 10
    # the negative control: q² claimed in place of q (twice the true rate) must be caught
    q = neumann_contraction((mu / task.lam, beta / task.lam), alpha)
    bad = check_neumann_bound(task, theta, alpha, solver=solver, contraction=q ** 2)
    assert not bad.passed and bad.details["steps_failing"] > 0


def test_the_bound_is_attained_on_the_planted_worst_case():
    task, theta = _instance()
    twin = float64_twin(task)
    beta, mu = twin.curvature_bounds()
    for alpha in (task.lam / beta, 2 * task.lam / (mu + beta), 1.9 * task.lam / beta):
        r = check_neumann_bound(task, theta, alpha, rhs=worst_case_rhs(twin, alpha))
        assert r.passed
        assert r.measured >= r.bound - r.allowance      # equality up to rounding: tight
        # and 1% less would be violated (not a bound with room to spare)
        q = r.details["contraction"]
        assert not check_neumann_bound(task, theta, alpha, rhs=worst_case_rhs(twin, alpha),
                                       contraction=0.99 * q).passed


@settings(max_examples=15, deadline=None)
@given(task_theta=quadratic_tasks())
def test_the_bound_holds_on_drawn_tasks(task_theta):
    task, _, theta = task_theta
    beta, mu = task.curvature_bounds()
    for alpha in (task.lam / beta, 1.9 * task.lam / beta):
        assert check_neumann_bound(task, theta, alpha, steps=40).passed


def test_divergence_control_passes_only_when_the_series_diverges():
    task, theta = _instance()
    beta, _ = task.curvature_bounds()
    assert check_neumann_divergence(task, theta, DIVERGENT_ALPHA * task.lam / beta).passed
    # a convergent step: the control must fail (its comparison is not always true)
    r = check_neumann_divergence(task, theta, task.lam / beta)
    assert not r.passed and r.measured < r.bound


def test_fixed_point_equals_the_series_and_an_off_by_one_fails():
    from solvers import LINEAR_SOLVERS

    task, theta = _instance()
    beta, _ = task.curvature_bounds()
    eta = 1.0 / beta
    assert check_fixed_point_identity(task, theta, eta).passed

    def late(system, rhs, eta, steps):     # a fixed point whose k-th iterate is the series' (k−1)-th
        its = LINEAR_SOLVERS["fixed_point"].solve(system, rhs, options={"step_size": eta},
                                                  max_steps=steps, rtol=0.0, atol=0.0,
                                                  history=True).history.iterates
        return [its[0]] + its[:-1]

    r = check_fixed_point_identity(task, theta, eta, fixed_point=late)
    assert not r.passed and r.measured > r.allowance
