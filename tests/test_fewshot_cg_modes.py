"""The three ways few-shot training solves iMAML's system (verify.fewshot.cg_modes): the plain
CG of the paper's code against solvers.cg, the modes on a network where the system is and is not
positive definite, the float64 MINRES reference, and the training options that select them."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from solvers import SolverBreakdown, Status, cg, inner_solve
from theory.tolerances import relative_tolerance
from verify.fewshot import EpisodeSampler, TrainConfig, glyph_dataset, meta_train
from verify._threads import single_thread
from verify.fewshot.cg_modes import (
    CG_MODES,
    implicit_gradient,
    plain_cg,
    reference_gradient,
    system_matvec,
)
from verify.fewshot.train import episode_task, initial_theta


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def _spd(d, kappa, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.linspace(1.0, kappa, d, dtype=torch.float64)
    return ((q * eig) @ q.T).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_plain_cg_is_cg(dtype):
    """Without breakdown the paper's loop and solvers.cg are the same algorithm: same iterate
    to rounding, single and batched."""
    A = _spd(20, 50.0, dtype=dtype)
    b = torch.randn(3, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    x, info = plain_cg(lambda X: X @ A.T, b, 12)
    ref = cg(lambda X: X @ A.T, b, max_steps=12, rtol=0.0, atol=0.0)
    assert info["steps"] == ref.steps == 12
    tol = relative_tolerance(dtype, kappa=50.0, dim=20)
    assert float((x - ref.x).norm() / ref.x.norm()) <= tol
    x1, _ = plain_cg(lambda v: A @ v, b[0], 12)
    assert float((x1 - x[0]).norm() / x[0].norm()) <= tol
    # the reference code's early stop on rᵀr
    _, early = plain_cg(lambda v: A @ v, b[0], 200, residual_tol=1e-12)
    assert early["steps"] < 200


def test_plain_cg_runs_through_negative_curvature_where_solvers_cg_stops():
    A = torch.diag(torch.tensor([2.0, 1.0, -1.0, 3.0], dtype=torch.float64))
    b = torch.ones(4, dtype=torch.float64)
    x, info = plain_cg(lambda v: A @ v, b, 3, count_nonpositive=True)
    assert info["steps"] == 3 and int(info["nonpositive_curvature"]) >= 1
    with pytest.raises(SolverBreakdown):
        cg(lambda v: A @ v, b, max_steps=3, rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="steps"):
        plain_cg(lambda v: v, b, -1)


@pytest.fixture(scope="module")
def sampler():
    return EpisodeSampler(glyph_dataset(10, samples=6, image_size=8, seed=0), 3, 1, 2, seed=0)


TINY = dict(n_way=3, k_query=2, filters=4, layers=3, inner_steps=3, meta_batch=2,
            hf_iterations=2, hf_cg_steps=3, cg_steps=3)


def _at(cfg, sampler, episode=0):
    model, theta = initial_theta(cfg, sampler)
    task = episode_task(model, sampler.episode(episode), cfg)
    inner = inner_solve(task, theta, inner_steps=cfg.inner_steps, inner="gd",
                        inner_step_size=cfg.inner_lr)
    return task, theta, inner


def test_modes_agree_where_the_system_is_positive_definite(sampler):
    """λ large: I + H/λ is positive definite, no mode meets negative curvature, and stopping,
    running on, or not stopping are the same solve; the damped system is a different one."""
    cfg = TrainConfig(**{**TINY, "lam": 1e4})
    task, theta, inner = _at(cfg, sampler)
    got = {m: implicit_gradient(task, theta, inner, cg_steps=3, mode=m) for m in CG_MODES}
    assert got["fallback"].linear.status is not Status.BREAKDOWN
    assert got["fixed"].linear.evaluations["nonpositive_curvature"] == 0
    g = got["fallback"].gradient
    tol = relative_tolerance("float32", kappa=2.0, dim=task.dim)
    assert float((got["fixed"].gradient - g).norm() / g.norm()) <= tol
    # damped: (2I + H/(λ+10)) g = ∇L, so g ≈ ∇L/2 here, not the undamped solve
    assert float((got["damped"].gradient - g / 2).norm() / g.norm()) < 0.01
    assert got["fixed"].method == "imaml+fixed_cg" and got["damped"].method == "imaml+damped_cg"


def _indefinite_episode(sampler):
    """The first of six episodes at a tiny λ whose system the safeguarded CG finds indefinite:
    (task, θ, inner result, the safeguarded CG's result)."""
    cfg = TrainConfig(**{**TINY, "lam": 1e-3})
    for ep in range(6):
        task, theta, inner = _at(cfg, sampler, ep)
        safe = implicit_gradient(task, theta, inner, cg_steps=3, mode="fallback")
        if safe.linear.status is Status.BREAKDOWN:
            return task, theta, inner, safe
    pytest.fail("no indefinite system among the episodes")


def test_modes_differ_where_the_system_is_indefinite(sampler):
    """Negative control of the comparison: at a tiny λ the system is indefinite; the safeguard
    stops, the paper's loop runs on along negative curvature, and the results differ."""
    task, theta, inner, safe = _indefinite_episode(sampler)
    fixed = implicit_gradient(task, theta, inner, cg_steps=3, mode="fixed")
    assert fixed.linear.steps == 3 and fixed.linear.evaluations["nonpositive_curvature"] >= 1
    assert not torch.allclose(fixed.gradient, safe.gradient)
    if safe.linear.steps == 0:
        assert safe.method.endswith("first_order_fallback")
        assert torch.equal(safe.gradient, task.outer_grad(inner.x))


def test_minres_runs_where_cg_breaks_down(sampler):
    """On an indefinite system (tiny λ) where the safeguarded CG stops, MINRES takes its steps,
    and its residual never exceeds its start ‖∇L(φ)‖ (MINRES's residual is monotone; float32
    rounding allowed)."""
    task, theta, inner, safe = _indefinite_episode(sampler)
    res = implicit_gradient(task, theta, inner, cg_steps=3, mode="minres")
    assert res.method == "imaml+minres" and res.linear_solver == "minres"
    assert res.linear.status is not Status.BREAKDOWN and res.linear.steps == 3
    tol = relative_tolerance("float32", kappa=1.0, dim=task.dim)
    assert float(res.system_residual) <= float(res.outer_grad_norm) * (1 + tol)
    assert not torch.allclose(res.gradient, safe.gradient)


def test_damped_matvec_is_the_papers_matrix(sampler):
    cfg = TrainConfig(**TINY)
    task, _, inner = _at(cfg, sampler)
    w = torch.randn(task.dim, generator=torch.Generator().manual_seed(0))
    hv = task.inner_hvp(inner.x, w)
    got = system_matvec(task, inner.x, mode="damped", damping=1.0, lam_damping=10.0)(w)
    assert torch.allclose(got, 2.0 * w + hv / (cfg.lam + 10.0))
    assert torch.allclose(system_matvec(task, inner.x)(w), w + hv / cfg.lam)
    with pytest.raises(ValueError, match="cg_mode"):
        system_matvec(task, inner.x, mode="newton")


def test_reference_gradient_solves_the_undamped_system(sampler):
    cfg = TrainConfig(**{**TINY, "lam": 50.0})
    task, theta, inner = _at(cfg, sampler)
    ref = reference_gradient(task, inner.x, steps=400)
    assert ref["exists"] and ref["relative_residual"] <= relative_tolerance("float32")
    phi64 = inner.x.double()
    direct = cg(lambda w: w + task.inner_hvp(phi64, w) / cfg.lam, task.outer_grad(phi64),
                max_steps=400, rtol=1e-14, atol=0.0)
    assert float((ref["gradient"] - direct.x).norm() / direct.x.norm()) < 1e-9
    # with too few steps on an indefinite system the reference is said not to exist
    task2, _, inner2 = _at(TrainConfig(**{**TINY, "lam": 1e-2}), sampler)
    assert not reference_gradient(task2, inner2.x, steps=2)["exists"]


def test_training_options_select_the_mode(sampler):
    with pytest.raises(ValueError, match="cg_mode"):
        TrainConfig(cg_mode="paper")
    with pytest.raises(ValueError, match="cg_damping"):
        TrainConfig(cg_damping=-1.0)
    cfg = TrainConfig(method="imaml_gd", meta_steps=2, cg_mode="fixed", **{**TINY, "lam": 1e-3})
    run = meta_train(cfg, sampler)
    assert len(run.history) == 2
    assert sum(h["cg_nonpositive_tasks"] for h in run.history) >= 1
    assert all(h["cg_breakdowns"] == 0 for h in run.history)   # 'fixed' never stops


def test_non_finite_meta_gradient_stops_training_and_says_so(sampler, monkeypatch):
    """An unguarded CG can divide by a vanishing pᵀMp: training stops there, keeps the last
    finite θ and records why, instead of stepping to NaN."""
    import verify.fewshot.train as train_mod

    cfg = TrainConfig(method="imaml_gd", meta_steps=3, cg_mode="fixed", **TINY)
    real = train_mod.meta_gradient
    calls = {"n": 0}

    def poisoned(c, task, theta):
        res = real(c, task, theta)
        calls["n"] += 1
        if calls["n"] > cfg.meta_batch:   # meta-step 2
            res.gradient = res.gradient * float("nan")
        return res

    monkeypatch.setattr(train_mod, "meta_gradient", poisoned)
    run = meta_train(cfg, sampler)
    assert len(run.history) == 2 and run.history[-1]["stopped_reason"] == "non-finite meta-gradient"
    assert bool(torch.isfinite(run.theta).all())
    monkeypatch.setattr(train_mod, "meta_gradient", real)
    one = meta_train(replace(cfg, meta_steps=1), sampler)
    assert torch.equal(one.theta, run.theta)   # θ after the last finite step
