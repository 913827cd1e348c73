"""Property tests of the core claims, each with a negative control: the same check
fails on a planted defect."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st, target

from theory.bounds import lemma3_B1
from theory.constants import Constants
from theory import to_numpy64
from verify.checks import cg_bound, certificate, lemma1, lemma2, lemma3, theorem2
from verify.registry import RunContext, all_claims
from verify.strategies import quadratic_tasks, seeds, task_specs
from verify.tasks import float64_twin, planted_spectrum_task, to_array

# ---------------------------------------------------------------- Lemma 1


@given(quadratic_tasks(max_dim=8, queries=("independent",)))
def test_lemma1_holds(drawn):
    task, spec, theta = drawn
    result = lemma1.check_lemma1(task, theta, instance=spec.as_dict())
    assert result.passed, result


def test_lemma1_negative_control_missing_lambda():
    task, _ = planted_spectrum_task(6, 100.0, 5.0, seed=3, query="independent")
    wrong = lambda t, phi: np.linalg.inv(np.eye(6) + to_numpy64(t.A))  # (I + H)⁻¹: λ forgotten
    assert not lemma1.check_lemma1(task, np.ones(6), jacobian=wrong).passed


# ---------------------------------------------------------------- Lemma 2


@given(spec=task_specs(max_dim=10, max_kappa=1e3), delta_exp=st.integers(2, 9))
def test_lemma2_nesterov_within_count(spec, delta_exp):
    spec.pop("query"), spec.pop("spectrum")
    task, theta = lemma2.worst_case_task(**spec)
    result = lemma2.check_lemma2(task, theta, 10.0 ** -delta_exp, instance=spec)
    assert result.passed, result
    assert result.details["steps_needed"] <= result.details["steps_budget"]


@pytest.mark.parametrize("kappa", [100.0, 1e3])
def test_lemma2_negative_control_gd_exceeds_budget(kappa):
    """Plain GD judged by Lemma 2 fails it on the planted worst case (the check can fail)..."""
    task, theta = lemma2.worst_case_task(10, kappa, 1.0, seed=1)
    assert not lemma2.check_lemma2(task, theta, 1e-6, inner="gd").passed
    # ...and the negative-control claim records that GD needs more than the budget
    assert lemma2.check_lemma2(task, theta, 1e-6, inner="gd", relation=">").passed


def test_lemma2_gd_control_cannot_pass_for_nesterov():
    task, theta = lemma2.worst_case_task(10, 1e3, 1.0, seed=1)
    assert not lemma2.check_lemma2(task, theta, 1e-6, inner="nesterov", relation=">").passed


# ---------------------------------------------------------------- CG


@given(quadratic_tasks(max_dim=12, spectra=("log", "uniform")), st.sampled_from(["2", "M"]))
def test_cg_bound_every_step(drawn, norm):
    task, spec, theta = drawn
    result = cg_bound.check_cg_bound(task, theta, norm=norm, instance=spec.as_dict())
    assert result.passed, result


def test_cg_bound_negative_control_wrong_operator():
    """A matvec that forgot the 1/λ (solves I + H instead of I + H/λ) converges elsewhere."""
    task, _ = planted_spectrum_task(8, 100.0, 5.0, seed=2, query="independent")
    theta = np.ones(8)
    phi = task.inner_solution(theta)
    wrong = lambda v: v + task.inner_hvp(phi, v)  # noqa: E731
    assert not cg_bound.check_cg_bound(task, theta, matvec=wrong).passed


@given(seed=seeds, m=st.integers(1, 4))
def test_cg_finite_termination(seed, m):
    results = cg_bound.run_finite_termination(RunContext(seed=seed, quick=True))
    assert all(r.passed for r in results), [str(r) for r in results if not r.passed]


def test_cg_finite_termination_negative_control_one_step_short():
    from theory.quadratic import QuadraticTask

    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((10, 10)))[0]
    A = (Q * np.repeat([0.0, 3.0, 9.0], [4, 3, 3])) @ Q.T
    task = QuadraticTask((A + A.T) / 2, rng.standard_normal(10), np.eye(10), rng.standard_normal(10), 1.0)
    theta = rng.standard_normal(10)
    assert cg_bound.check_finite_termination(task, theta, 3).passed
    assert not cg_bound.check_finite_termination(task, theta, 2).passed


# ---------------------------------------------------------------- Lemma 3


@given(quadratic_tasks(max_dim=8), st.floats(0.0, 1.0), st.integers(1, 6), st.integers(1, 6),
       seeds)
def test_lemma3_holds_under_adversarial_search(drawn, mix, de, dpe, seed):
    """Hypothesis steers (target) towards the largest ratio; none may exceed 1 beyond rounding."""
    task, spec, theta = drawn
    twin, theta64 = float64_twin(task), to_numpy64(theta)
    delta, delta_prime = 10.0 ** -de, 10.0 ** -dpe
    phi_a, g_a = lemma3.adversarial_point(twin, theta64, delta, delta_prime)
    phi_r, g_r = lemma3.random_point(twin, theta64, delta, delta_prime, np.random.default_rng(seed))
    phi, g = (1 - mix) * phi_a + mix * phi_r, (1 - mix) * g_a + mix * g_r
    result = lemma3.judge(twin, theta64, phi, g, instance=spec.as_dict())
    target(result.ratio, label="lemma3 ratio")
    assert result.passed, result


@given(spec=task_specs(max_dim=8, queries=("reversed",)))
def test_lemma3_planted_worst_case_attains_the_bound(spec):
    task, _ = planted_spectrum_task(**spec)
    theta = np.random.default_rng(spec["seed"]).standard_normal(spec["dim"])
    phi, g = lemma3.adversarial_point(task, theta, 1e-3, 1e-4)
    result = lemma3.judge(task, theta, phi, g)
    assert result.passed and result.ratio >= 1 - 1e-6, result


def test_lemma3_negative_control_bound_missing_lambda():
    task, _ = planted_spectrum_task(8, 100.0, 5.0, seed=0, query="reversed")
    theta = np.ones(8)
    phi, g = lemma3.adversarial_point(task, theta, 1e-2, 0.0)
    no_lambda = lambda c, d, dp: c.L / c.mu * d + dp  # noqa: E731
    assert lemma3.judge(task, theta, phi, g).passed
    assert not lemma3.judge(task, theta, phi, g, bound=no_lambda).passed


# ---------------------------------------------------------------- Theorem 2


@given(spec=task_specs(max_dim=8, max_kappa=300.0), eps_exp=st.integers(1, 8))
def test_theorem2_counts_give_eps(spec, eps_exp):
    task, _ = planted_spectrum_task(**spec)
    theta = np.random.default_rng(spec["seed"]).standard_normal(spec["dim"])
    result = theorem2.check_theorem2(task, theta, 10.0 ** -eps_exp, instance=spec)
    assert result.passed, result
    d = result.details
    assert d["needed_inner_meta_gradient"] <= d["needed_inner_proof_split"] <= d["T_inner"]
    assert d["needed_cg"] <= d["T_cg"]
    assert d["T_inner_sharp_4kD"] <= d["T_inner"]


def test_theorem2_negative_control_skipped_inner_solve():
    task, _ = planted_spectrum_task(10, 100.0, 1.0, seed=4, query="independent")
    theta = np.random.default_rng(4).standard_normal(10)
    assert not theorem2.check_theorem2(task, theta, 1e-4, inner_steps=0).passed


def test_theorem2_proof_typo_is_too_small_on_paper_task():
    [result] = theorem2.run_typo(RunContext())
    assert result.passed and result.measured > result.bound, result


# ---------------------------------------------------------------- certificate


@given(quadratic_tasks(max_dim=10), st.sampled_from(certificate.SETTINGS))
def test_certificate_holds(drawn, setting):
    task, spec, theta = drawn
    inner, inner_steps, cg_steps = setting
    result = certificate.check_certificate(task, theta, float64_twin(task), to_numpy64(theta),
                                           inner=inner, inner_steps=inner_steps,
                                           cg_steps=cg_steps, instance=spec.as_dict())
    assert result.passed, result


def test_certificate_negative_control_overstated_mu():
    """Claiming a better-conditioned task (μ ten times too large) breaks the certificate."""
    task, _ = planted_spectrum_task(8, 100.0, 1.0, seed=5, query="reversed")
    theta = np.ones(8)
    c = task.constants(theta)
    wrong = Constants(c.beta, 10 * c.mu, c.kappa / 10 if c.kappa >= 10 else 1.0, c.L, c.B, c.rho,
                      c.D, c.lam)
    kwargs = dict(inner="nesterov", inner_steps=5, cg_steps=3)
    assert certificate.check_certificate(task, theta, task, theta, **kwargs).passed
    assert not certificate.check_certificate(task, theta, task, theta, constants=wrong, **kwargs).passed


# ---------------------------------------------------------------- the claims as a whole

# every registered claim in quick and full mode: tests/test_claims.py


def test_lemma3_sweep_finds_ratio_near_one():
    results = all_claims()["lemma3"].run(RunContext(quick=True))
    assert max(r.ratio for r in results) >= 1 - 1e-9


@pytest.mark.parametrize("name", ["lemma2", "cg-bound", "lemma3", "certificate"])
def test_core_claims_in_float32_torch(name):
    results = all_claims()[name].run(RunContext(quick=True, array="torch", dtype="float32"))
    assert results and all(r.passed for r in results), [str(r) for r in results if not r.passed][:3]
