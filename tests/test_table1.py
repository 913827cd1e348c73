"""Table 1 as claims (verify/checks/table1.py, docs/mathematics.md §8): the instrument, the
rows' counts on their planted instance, the bounds of theory.maml, and a negative control for
each row's compute and memory statement."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _tolerances import assert_within_rounding
from solvers import maml_meta_gradient, truncated_meta_gradient
from theory import to_numpy64
from theory.maml import gd_steps_bound, truncation_steps_bound
from verify.checks import table1
from verify.measure import saved_bytes
from verify.registry import RunContext
from verify.tasks import planted_spectrum_task, to_array


@pytest.fixture(scope="module")
def instance():
    task, theta, inst = table1.table1_instances(RunContext(quick=True, seed=3))[0]
    return task, theta, inst, 1e-3 * table1._distance(task, theta)


def test_bounds_of_the_rows():
    assert gd_steps_bound(10.0, 5.0, 5e-3) == math.ceil(10 * math.log(1e3))
    assert gd_steps_bound(10.0, 1.0, 2.0) == 0 == gd_steps_bound(10.0, 0.0, 1.0)
    assert truncation_steps_bound(4.0, 3.0, 1e-2) == math.ceil(4 * math.log(300.0))
    assert truncation_steps_bound(1.0, 1.0, 1.0) == 0
    for bad in (dict(kappa=0.5, distance=1.0, delta=0.1), dict(kappa=2.0, distance=-1.0, delta=0.1),
                dict(kappa=2.0, distance=1.0, delta=0.0)):
        with pytest.raises(ValueError, match="kappa|distance|delta"):
            gd_steps_bound(**bad)
    with pytest.raises(ValueError, match="eps"):
        truncation_steps_bound(2.0, 1.0, 0.0)


def test_the_gd_bound_is_nearly_attained_on_the_planted_start(instance):
    """θ − φ* on A's bottom eigenvector: gradient descent contracts by exactly 1 − 1/κ, so the
    steps needed are ⌈log(D/δ)/−log(1 − 1/κ)⌉, within a factor 1 − 1/κ of κ log(D/δ)."""
    task, theta, _, delta = instance
    kappa, D = table1._kappa(task), table1._distance(task, theta)
    needed = table1.needed_steps(task, theta, "gd", delta, gd_steps_bound(kappa, D, delta))
    assert needed == math.ceil(math.log(D / delta) / -math.log1p(-1 / kappa))
    assert needed <= gd_steps_bound(kappa, D, delta) <= needed / (1 - 1 / kappa) + 1


def test_counting_task_counts_every_call_and_hides_the_answers(instance):
    task, theta, _, _ = instance
    c = table1.CountingTask(task)
    c.inner_grad(theta), c.inner_hvp(theta, theta), c.inner_hvp(theta, theta)
    c.outer_grad(theta), c.inner_loss(theta), c.outer_loss(theta)
    assert c.counts == {"inner_loss": 1, "inner_grad": 1, "inner_hvp": 2, "outer_loss": 1,
                        "outer_grad": 1}
    assert c.curvature_bounds() == task.curvature_bounds() and c.lam == task.lam
    assert not hasattr(c, "inner_solution") and not hasattr(c, "A")


def test_unrolled_nesterov_is_backprop_through_nesterov(instance):
    """With momentum 0 the unrolled Nesterov is MAML's gradient descent: the same meta-gradient
    as solvers.maml_meta_gradient (a second route)."""
    task, theta, _, _ = instance
    step, _ = table1.reference_step_sizes(task)
    g, phi = table1.unrolled_nesterov_meta_gradient(task, theta, 25, step_size=step, momentum=0.0)
    ref = maml_meta_gradient(task, theta, inner_steps=25)
    scale = float(np.linalg.norm(to_numpy64(ref.gradient))) + float(np.linalg.norm(theta))
    assert_within_rounding(g, ref.gradient, dtype="float64", scale=scale, dim=20 * 26,
                           kappa=table1._kappa(task))
    g0, phi0 = table1.unrolled_nesterov_meta_gradient(task, theta, 0, step_size=step, momentum=0.5)
    assert np.array_equal(phi0, theta) and np.array_equal(g0, task.outer_grad(theta))


@pytest.mark.parametrize("row", ["gd", "nesterov", "truncated", "imaml"])
def test_rows_hold(instance, row):
    task, theta, inst, delta = instance
    check = {"gd": table1.check_maml_gd_row, "nesterov": table1.check_maml_nesterov_row,
             "truncated": lambda *a, **k: table1.check_truncated_row(*a, eps_rel=1e-2, **k),
             "imaml": table1.check_imaml_row}[row]
    res = check(task, theta, delta, instance=inst)
    assert res and all(r.passed for r in res), [str(r) for r in res if not r.passed]
    d = res[0].details
    # the instrument saw the reported work: gradients, HVPs, one outer gradient
    assert d["instrumented"]["outer_grad"] == d["reported"]["outer_grad"] + d[
        "diagnostics_seen"]["outer_grad"] == 1


def test_maml_gd_row_counts(instance):
    task, theta, inst, delta = instance
    res = table1.check_maml_gd_row(task, theta, delta, instance=inst)
    K = res[0].instance["inner_steps"]
    d = res[0].details
    assert d["reported"] == {"inner_grad": K, "inner_hvp": K, "outer_grad": 1}
    assert d["instrumented"]["inner_grad"] == K + 1 and d["iterates_stored"] == K
    # one step fewer is not δ-accurate: K is what δ asks for
    assert d["needed"] == K and res[1].measured == K


def test_maml_gd_row_memory_control_constant_hessian(instance):
    """Control: torch autograd through MAML on a quadratic saves A once (its Hessian does not
    depend on φ), not the K iterates the row speaks of: the memory result fails."""
    task, theta, inst, delta = instance
    tt = type(task)(*(to_array(to_numpy64(x), array="torch") for x in (task.A, task.b,
                                                                       task.A_query, task.b_query)),
                    task.lam)

    def autograd(t, th, K):
        import torch

        counting = table1.CountingTask(tt)
        out = maml_meta_gradient(counting, torch.from_numpy(th.copy()), inner_steps=K,
                                 backward="autograd")
        t.counts.update({k: t.counts[k] + v for k, v in counting.counts.items()})
        return out

    res = table1.check_maml_gd_row(task, theta, delta, method=autograd, instance=inst)
    memory = res[3]
    assert not memory.passed and memory.details["iterates_stored"] == task.dim


def test_instrument_catches_misreported_work(instance):
    """Control: a MAML that reports one HVP fewer than it makes (as truncated backprop once
    reported T where it made T − 1) fails the instrument's consistency result."""
    task, theta, inst, delta = instance

    def misreported(t, th, K):
        out = maml_meta_gradient(t, th, inner_steps=K, backward="protocol")
        out.evaluations = dict(out.evaluations, hvp=K - 1)
        return out

    res = table1.check_maml_gd_row(task, theta, delta, method=misreported, instance=inst)
    assert not res[0].passed and not res[2].passed


def test_truncated_counts_t_minus_one_hvps(instance):
    """The first of T < K differentiated steps starts at the constant φ_{K−T}: T − 1 HVPs and
    T − 1 saved iterates, which the solver now reports (it said T)."""
    task, theta, _, _ = instance
    res, counts, peak = table1.instrumented(lambda t: truncated_meta_gradient(
        t, theta, inner_steps=10, backprop_steps=4, backward="protocol"), task)
    assert res.evaluations["hvp"] == 3 and counts["inner_hvp"] == 3 + 1     # + diagnostic
    assert peak == 3 * 8 * task.dim
    full, counts, peak = table1.instrumented(lambda t: truncated_meta_gradient(
        t, theta, inner_steps=10, backprop_steps=10, backward="protocol"), task)
    assert full.evaluations["hvp"] == 10 and peak == 10 * 8 * task.dim


def test_nesterov_row_control_without_momentum(instance):
    """Control: Nesterov with momentum 0 is gradient descent, which needs κ log(D/δ) steps, more
    than Lemma 2's 2√κ log(2κD/δ) at κ = 30: the row's compute result fails."""
    task, theta, inst, delta = instance
    res = table1.check_maml_nesterov_row(task, theta, delta, momentum=0.0, instance=inst)
    assert not res[1].passed and res[1].measured == math.inf     # not within Lemma 2's count
    assert res[1].details["gd_needed"] > res[1].bound


def test_truncated_row_control_one_step_short(instance):
    """Control: backprop through one step fewer than needed misses ε."""
    task, theta, inst, delta = instance
    ok = table1.check_truncated_row(task, theta, delta, 1e-2, instance=inst)
    T = ok[-1].instance["backprop_steps"]
    assert 1 < T < ok[-1].instance["inner_steps"]
    short = table1.check_truncated_row(task, theta, delta, 1e-2, backprop_steps=T - 1,
                                       instance=inst)
    assert not short[-1].passed and short[-1].measured > short[-1].bound


def test_imaml_row_controls(instance):
    """Controls: no inner solve (K = 0) misses Lemma 3's accuracy; MAML's bytes on the same
    network are not within 2 × one gradient's and grow with K."""
    task, theta, inst, delta = instance
    bad = table1.check_imaml_row(task, theta, delta, inner_steps=0, instance=inst)
    assert not bad[-1].passed
    grad_bytes, imaml = table1._imaml_memory(RunContext(quick=True, seed=0))
    assert all(r.passed for r in table1.check_imaml_memory(grad_bytes, imaml))
    maml = {K: saved_bytes("maml", K, model="mlp") for K in imaml}
    assert not any(r.passed for r in table1.check_imaml_memory(grad_bytes, maml))


def test_the_rows_are_table_1():
    names = [r[0] for r in table1.ROWS]
    from verify.registry import all_claims

    assert set(names) <= set(all_claims())
    assert [r[2] for r in table1.ROWS] == ["κ log(D/δ)", "√κ log(D/δ)", "κ log(D/δ)", "√κ log(D/δ)"]
    assert [r[3] for r in table1.ROWS][-1] == "Mem(∇L̂)"
