"""MINRES (docs/mathematics.md §4b): the residual bounds of theory.bounds pinned, the check of
verify/checks/minres.py on definite and indefinite planted systems, and its negative controls
(the one-interval bound on an indefinite spectrum must be exceeded; the control itself must
fail on a definite spectrum)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _tolerances import relative_tolerance

from theory.bounds import minres_contraction, minres_error_bound, minres_residual_bound
from verify.checks.minres import check_minres_bound
from verify.systems import indefinite_task
from verify.tasks import planted_spectrum_task


#: a few float64 roundings (the closed forms take a handful of operations)
ROUNDING = relative_tolerance("float64", dim=8)

def test_contraction_definite_and_two_intervals():
    assert minres_contraction((1.0, 4.0)) == pytest.approx(1 / 3, rel=ROUNDING)
    # [−4, −0.5] ∪ [0.5, 4]: √(ad) = 4, √(bc) = 0.5
    assert minres_contraction((0.5, 4.0), (-4.0, -0.5)) == pytest.approx(3.5 / 4.5, rel=ROUNDING)
    # unequal lengths: [−1, −0.1] is enlarged to [−9.9, −0.1] (the length of [0.2, 10])
    u, v = math.sqrt(9.9 * 10.0), math.sqrt(0.1 * 0.2)
    assert minres_contraction((0.2, 10.0), (-1.0, -0.1)) == pytest.approx((u - v) / (u + v),
                                                                         rel=ROUNDING)
    # and the other way: [0.5, 2] enlarged to [0.5, 19.5] against [−20, −1]
    u, v = math.sqrt(20.0 * 19.5), math.sqrt(1.0 * 0.5)
    assert minres_contraction((0.5, 2.0), (-20.0, -1.0)) == pytest.approx((u - v) / (u + v),
                                                                         rel=ROUNDING)
    # symmetric [−d, −c] ∪ [c, d]: (κ − 1)/(κ + 1), κ = d/c (the rate of κ² per two steps)
    assert minres_contraction((1.0, 9.0), (-9.0, -1.0)) == pytest.approx(0.8, rel=ROUNDING)


def test_residual_and_error_bounds():
    assert minres_residual_bound(5, 2.0, positive=(1.0, 4.0)) == 2 * (1 / 3) ** 5 * 2.0
    assert minres_residual_bound(0, 2.0, positive=(1.0, 4.0)) == 2.0        # min(1, ·)
    q = minres_contraction((1.0, 9.0), (-9.0, -1.0))
    assert minres_residual_bound(7, 1.0, positive=(1.0, 9.0), negative=(-9.0, -1.0)) == \
        min(1.0, 2 * q ** 3)
    assert minres_residual_bound(6, 1.0, positive=(1.0, 9.0), negative=(-9.0, -1.0)) == \
        min(1.0, 2 * q ** 3)
    assert minres_error_bound(4, 1.0, positive=(0.5, 4.0)) == \
        minres_residual_bound(4, 1.0, positive=(0.5, 4.0)) / 0.5
    assert minres_error_bound(4, 1.0, positive=(0.5, 4.0), negative=(-3.0, -0.25)) == \
        minres_residual_bound(4, 1.0, positive=(0.5, 4.0), negative=(-3.0, -0.25)) / 0.25


def test_bounds_reject_bad_input():
    with pytest.raises(ValueError, match="positive"):
        minres_contraction((0.0, 1.0))
    with pytest.raises(ValueError, match="negative"):
        minres_contraction((1.0, 2.0), (-1.0, 0.0))
    with pytest.raises(ValueError, match="positive"):
        minres_contraction((2.0, 1.0))
    with pytest.raises(ValueError, match="initial_residual"):
        minres_residual_bound(1, -1.0, positive=(1.0, 2.0))


def test_the_definite_bound_holds_and_a_defective_rate_fails():
    task, _ = planted_spectrum_task(20, 100.0, 1.0, seed=4, query="independent", spectrum="log")
    theta = np.random.default_rng(5).standard_normal(20)
    beta, mu = task.curvature_bounds()
    spec = (mu / task.lam, beta / task.lam)
    ok = check_minres_bound(task, theta, positive=spec)
    assert ok.passed and ok.details["steps_above_rounding"] > 5
    # planted defect: the bound for κ/10 (a rate too fast) must be caught
    bad = check_minres_bound(task, theta, positive=spec,
                             bound_kwargs=dict(positive=(spec[0] * 10, spec[1])))
    assert not bad.passed and bad.details["steps_failing"] > 0


@pytest.mark.parametrize("neg,pos", [((-4.0, -0.5), (0.5, 4.0)), ((-1.0, -0.1), (0.2, 10.0))])
def test_the_two_interval_bound_holds_and_the_one_interval_bound_fails(neg, pos):
    task, _ = indefinite_task(24, negative=neg, positive=pos, seed=7)
    theta = np.random.default_rng(8).standard_normal(24)
    phi = task.inner_solution(theta)
    assert check_minres_bound(task, theta, phi=phi, positive=pos, negative=neg).passed
    hull = dict(positive=(min(-neg[1], pos[0]), max(-neg[0], pos[1])))
    # the one-interval bound judged as a claim: violated
    assert not check_minres_bound(task, theta, phi=phi, positive=pos, negative=neg,
                                  bound_kwargs=hull).passed
    # ... and as the registered control (relation '>'): passes
    assert check_minres_bound(task, theta, phi=phi, positive=pos, negative=neg,
                              bound_kwargs=hull, relation=">",
                              name="minres-indefinite-control").passed


def test_the_control_fails_on_a_definite_spectrum():
    """The control's comparison is not always true: on a definite spectrum the one-interval
    bound holds, so '>' must fail."""
    task, _ = planted_spectrum_task(20, 100.0, 1.0, seed=4, query="independent", spectrum="log")
    theta = np.random.default_rng(5).standard_normal(20)
    beta, mu = task.curvature_bounds()
    spec = (mu / task.lam, beta / task.lam)
    r = check_minres_bound(task, theta, positive=spec, relation=">",
                           name="minres-indefinite-control")
    assert not r.passed and r.measured <= r.bound
