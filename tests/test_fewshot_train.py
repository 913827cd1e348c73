"""verify.fewshot.train: configurations, meta-gradient dispatch, resumable meta-training,
evaluation, and the `imaml-verify fewshot` command."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from solvers import Status
from theory.tolerances import rounding_allowance
from verify._threads import single_thread
from verify.fewshot import (
    EpisodeSampler,
    SinusoidSampler,
    TrainConfig,
    evaluate,
    glyph_dataset,
    meta_gradient,
    meta_train,
    paper_config,
)
from verify.fewshot.train import METHODS, episode_task, initial_theta


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def sampler():
    return EpisodeSampler(glyph_dataset(10, samples=6, image_size=8, seed=0), 3, 1, 2, seed=0)


TINY = dict(n_way=3, k_query=2, filters=4, layers=3, inner_steps=3, meta_batch=2,
            hf_iterations=2, hf_cg_steps=3, cg_steps=3)


def test_paper_config_follows_appendix_f2():
    for n_way, steps in ((5, 16), (20, 25)):
        c = paper_config("omniglot", n_way=n_way)
        assert (c.inner_steps, c.lam, c.cg_steps, c.filters) == (steps, 2.0, 5, 64)
        assert (c.hf_iterations, c.hf_cg_steps) == (3, 5)
    m = paper_config("miniimagenet", method="imaml_hf")
    assert (m.inner_steps, m.lam, m.cg_steps, m.method) == (10, 0.5, 5, "imaml_hf")
    with pytest.raises(ValueError, match="dataset"):
        paper_config("cifar")
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="reptile2")
    with pytest.raises(ValueError, match="lam"):
        TrainConfig(lam=0.0)
    with pytest.raises(ValueError, match="meta_batch"):
        TrainConfig(meta_batch=0)


@pytest.mark.parametrize("method", METHODS)
def test_meta_gradient_of_every_method(sampler, method):
    cfg = TrainConfig(method=method, **TINY)
    model, theta = initial_theta(cfg, sampler)
    task = episode_task(model, sampler.episode(0), cfg)
    res = meta_gradient(cfg, task, theta)
    g = res["gradient"] if isinstance(res, dict) else res.gradient
    assert g.shape == theta.shape and bool(torch.isfinite(g).all()) and float(g.norm()) > 0
    if method == "fomaml":  # first-order MAML is ∇L at the adapted φ
        assert torch.equal(g, task.outer_grad(res.phi))
    if method == "pretrain":
        assert torch.equal(g, task.outer_grad(theta))


def test_cg_breakdown_at_first_step_falls_back_to_first_order_and_is_reported(sampler):
    """λ tiny: I + H/λ is dominated by H, indefinite on this network; CG stops and the
    breakdown is visible in the result, never silently used as a solve."""
    cfg = TrainConfig(method="imaml_gd", **{**TINY, "lam": 1e-3})
    model, theta = initial_theta(cfg, sampler)
    found = False
    for i in range(6):
        task = episode_task(model, sampler.episode(i), cfg)
        res = meta_gradient(cfg, task, theta)
        if res.linear.status is Status.BREAKDOWN:
            found = True
            if res.linear.steps == 0:
                assert res.method.endswith("first_order_fallback")
                assert torch.equal(res.gradient, task.outer_grad(res.phi))
            else:
                assert torch.equal(res.gradient, res.linear.x)
    assert found


def test_checkpoint_of_another_config_is_refused(sampler, tmp_path):
    cfg = TrainConfig(method="imaml_gd", meta_steps=1, outer_lr=0.01, **TINY)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    first = meta_train(cfg, sampler, checkpoint=ckpt)
    assert first.resumed_from is None and ckpt.exists()
    with pytest.raises(ValueError, match="different config.*outer_lr"):
        meta_train(replace(cfg, outer_lr=0.02), sampler, checkpoint=ckpt)


def test_interrupted_run_resumes_exactly(sampler, tmp_path, monkeypatch):
    """A run killed after its checkpoint at step 2 and restarted ends where an uninterrupted
    one does."""
    import verify.fewshot.train as train_mod

    cfg = TrainConfig(method="fomaml", meta_steps=4, checkpoint_every=2, outer_lr=0.01, **TINY)
    straight = meta_train(cfg, sampler)
    ckpt = tmp_path / "checkpoint.pt"
    real = train_mod.meta_gradient
    calls = {"n": 0}

    def dying(c, task, theta):
        calls["n"] += 1
        if calls["n"] > 2 * cfg.meta_batch:  # dies during meta-step 3
            raise KeyboardInterrupt
        return real(c, task, theta)

    monkeypatch.setattr(train_mod, "meta_gradient", dying)
    with pytest.raises(KeyboardInterrupt):
        meta_train(cfg, sampler, checkpoint=ckpt)
    monkeypatch.setattr(train_mod, "meta_gradient", real)
    resumed = meta_train(cfg, sampler, checkpoint=ckpt)
    assert resumed.resumed_from == 2 and len(resumed.history) == 4
    assert torch.equal(resumed.theta, straight.theta)
    assert [h["query_loss"] for h in resumed.history] == [h["query_loss"] for h in straight.history]
    _, theta0 = initial_theta(cfg, sampler)
    assert not torch.equal(straight.theta, theta0)  # meta-training moved θ


def test_evaluate_regression_and_classification(sampler):
    sin = SinusoidSampler(5, 5, seed=0)
    cfg = TrainConfig(method="imaml_gd", n_way=1, k_shot=5, k_query=5, inner_steps=3,
                      inner_lr=0.01, hidden=(8,), meta_batch=2, meta_steps=2)
    run = meta_train(cfg, sin)
    ev = evaluate(cfg, run.theta, SinusoidSampler(5, 5, seed=1), episodes=4)
    assert ev.metric == "query_mse" and ev.n == 4 and ev.mean > 0
    cfg2 = TrainConfig(method="imaml_hf", **TINY)
    _, theta = initial_theta(cfg2, sampler)
    ev2 = evaluate(cfg2, theta, sampler, episodes=3)
    assert ev2.metric == "accuracy" and 0.0 <= ev2.mean <= 1.0
    with pytest.raises(ValueError, match="episodes"):
        evaluate(cfg2, theta, sampler, episodes=0)


def test_float64_training_matches_float32_at_the_start(sampler):
    """The same run in float64 and float32 starts from the same θ₀ (up to float32 rounding)."""
    c32 = TrainConfig(method="imaml_gd", **TINY)
    c64 = replace(c32, dtype="float64")
    _, t32 = initial_theta(c32, sampler)
    _, t64 = initial_theta(c64, sampler)
    assert t64.dtype == torch.float64
    assert float((t64 - t32.double()).norm()) <= rounding_allowance(
        "float32", scale=float(t64.norm()))


def test_fewshot_command_trains_resumes_and_evaluates(tmp_path, capsys):
    from verify.cli import main

    out = tmp_path / "run"
    args = ["fewshot", "train", "--image-size", "8", "--filters", "4", "--layers", "3",
            "--glyph-classes", "8", "4", "--n-way", "3", "--k-query", "2", "--meta-steps", "2",
            "--meta-batch", "2", "--inner-steps", "2", "--eval-episodes", "3",
            "--checkpoint-every", "1", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    doc = json.loads((out / "train.json").read_text())
    assert doc["resumed_from"] is None and len(doc["history"]) == 2
    assert main(args) == 0  # finds the finished checkpoint: nothing left to do
    assert json.loads((out / "train.json").read_text())["resumed_from"] == 2
    assert main(["fewshot", "evaluate", "--out", str(out), "--image-size", "8",
                 "--glyph-classes", "8", "4", "--episodes", "3", "--no-progress"]) == 0
    assert '"metric": "accuracy"' in capsys.readouterr().out
