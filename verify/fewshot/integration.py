"""The four integration checks of the few-shot issue, as functions returning JSON-able dicts.
The GPU script (:mod:`verify.fewshot.gpu_check`) runs them at paper sizes on CUDA; the tests
run them at tiny sizes on the CPU and assert on what they return.

1. :func:`cg_convergence`: on the ConvNet after T inner steps, iMAML's CG meta-gradient
   (float32, the code under test) against a float64 reference solve at the same φ, as a
   function of the CG steps; and I + H/λ indefinite for a small λ, certified by Lanczos and
   reported by CG (status BREAKDOWN), not hidden.
2. :func:`memory_profile`: peak memory of the iMAML and MAML meta-gradients at several numbers
   of inner steps (CUDA peak allocation on a GPU; bytes saved for backward everywhere).
3. :func:`short_training`: meta-training on the embedded glyphs, held-out accuracy with 95%
   intervals, against the same network without meta-learning.
4. :func:`hvp_time_ratio`: time (and saved-tensor memory) of one HVP over one gradient
   (Assumption 1); recorded, not asserted.
"""
from __future__ import annotations

import math
import time

import torch

from solvers import cg, inner_solve
from solvers import implicit_gradient_at
from theory.bounds import cg_error_bound
from theory.tolerances import machine_epsilon
from verify.fewshot.lanczos import lanczos_ritz_values
from verify.measure import peak_cuda_bytes, peak_saved_bytes
from verify.fewshot.train import (
    episode_task,
    evaluate,
    initial_theta,
    meta_gradient,
    meta_train,
    with_method,
)

__all__ = ["cg_convergence", "memory_profile", "short_training", "hvp_time_ratio"]


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _task_at(cfg, sampler, episode, lam=None):
    from dataclasses import replace

    model, theta = initial_theta(cfg, sampler)
    c = cfg if lam is None else replace(cfg, lam=lam)
    return episode_task(model, sampler.episode(episode), c, loss=sampler.loss), theta


def cg_convergence(cfg, sampler, *, max_cg_steps=20, lanczos_steps=30, reference_steps=500,
                   episode=0, lam_small=None, matvec_defect=None) -> dict:
    """Check 1. φ: ``cfg.inner_steps`` GD steps on G(·, θ₀) (λ = cfg.lam) from the initial θ₀
    in cfg.dtype. At φ, Lanczos (float64) gives Ritz values r_min ≤ … ≤ r_max of H(φ) (inside
    its spectrum). Then on the same φ:

    - ``lam_pd`` = max(cfg.lam, 2·max(0, −r_min)): a λ at which I + H/λ is positive definite
      if the Ritz estimate of λ_min(H) is accurate (CG would report a breakdown otherwise).
      Reference g* = float64 CG to rtol eps₆₄·κ or ``reference_steps`` steps; then the code
      under test, :func:`solvers.imaml.implicit_gradient_at` in cfg.dtype with ``max_cg_steps``
      steps, and the relative error ‖g_k − g*‖/‖g*‖ of every iterate k, beside the Chebyshev
      bound ``theory.bounds.cg_error_bound`` with κ̂ = (λ + r_max)/(λ + r_min) (κ̂ ≤ κ: Ritz
      values lie inside the spectrum, so this is an estimate of the bound, not a certified one).
    - ``lam_small`` (default min(cfg.lam/10, −r_min/2)): I + H/λ is certified indefinite when
      r_min < −λ (Lanczos); CG there stops with status BREAKDOWN (the step is reported).
    - at the paper's λ = cfg.lam: whether it is certified indefinite, and CG's status.
    ``matvec_defect``: a planted defect for negative controls ('missing_lambda': I + H instead
    of I + H/λ in the code under test; 'wrong_sign': I − H/λ)."""
    task, theta = _task_at(cfg, sampler, episode)
    inner = inner_solve(task, theta, inner_steps=cfg.inner_steps, inner="gd",
                        inner_step_size=cfg.inner_lr)
    phi = inner.x
    phi64 = phi.double()
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    v0 = torch.randn(task.dim, generator=gen, dtype=torch.float64).to(phi.device)
    ritz = lanczos_ritz_values(lambda w: task.inner_hvp(phi64, w), v0, lanczos_steps)
    r_min, r_max = float(ritz[0]), float(ritz[-1])
    lam_pd = max(cfg.lam, 2.0 * max(0.0, -r_min))
    kappa = (lam_pd + r_max) / (lam_pd + r_min)

    task_pd, _ = _task_at(cfg, sampler, episode, lam=lam_pd)
    if matvec_defect is not None:
        task_pd = _DefectiveTask(task_pd, matvec_defect)
    rhs64 = task.outer_grad(phi64)
    ref = cg(lambda w: w + task.inner_hvp(phi64, w) / lam_pd, rhs64, max_steps=reference_steps,
             rtol=machine_epsilon(torch.float64) * kappa, atol=0.0, on_breakdown="return")
    g_ref = ref.x
    ref_residual = float((rhs64 - g_ref - task.inner_hvp(phi64, g_ref) / lam_pd).norm())
    res = implicit_gradient_at(task_pd, theta, inner, cg_steps=max_cg_steps, history=True,
                               on_breakdown="return")
    errors = [float((x.double() - g_ref).norm() / g_ref.norm()) for x in res.cg.history.iterates]
    bounds = [cg_error_bound(kappa, k, errors[0]) for k in range(len(errors))]

    if lam_small is None:
        lam_small = min(cfg.lam / 10.0, -r_min / 2.0) if r_min < 0 else cfg.lam / 10.0
    task_small, _ = _task_at(cfg, sampler, episode, lam=lam_small)
    small = implicit_gradient_at(task_small, theta, inner, cg_steps=max(max_cg_steps, 50),
                                 on_breakdown="return")
    paper = implicit_gradient_at(task, theta, inner, cg_steps=cfg.cg_steps, on_breakdown="return")
    return {
        "dim": task.dim, "inner_steps": cfg.inner_steps, "dtype": cfg.dtype,
        "ritz_min": r_min, "ritz_max": r_max, "lanczos_steps": lanczos_steps,
        "lam_pd": lam_pd, "kappa_estimate": kappa,
        "reference": {"steps": ref.steps, "status": ref.status.value,
                      "relative_residual": ref_residual / float(rhs64.norm())},
        "cg_status": res.cg.status.value, "relative_errors": errors,
        "chebyshev_bound_estimate": bounds,
        "indefinite": {
            "lam": lam_small, "certified_by_lanczos": r_min < -lam_small,
            "min_eig_estimate_of_system": 1.0 + r_min / lam_small,
            "cg_status": small.cg.status.value, "cg_steps_before_stop": small.cg.steps},
        "paper_lam": {"lam": cfg.lam, "certified_indefinite": r_min < -cfg.lam,
                      "cg_status": paper.cg.status.value, "cg_steps": paper.cg.steps},
    }


class _DefectiveTask:
    """A task whose HVP is planted wrong (negative controls of check 1)."""

    def __init__(self, task, defect):
        if defect not in ("missing_lambda", "wrong_sign"):
            raise ValueError(f"matvec_defect must be 'missing_lambda' or 'wrong_sign', got {defect!r}")
        self._task, self._defect, self.lam = task, defect, task.lam

    def __getattr__(self, name):
        return getattr(self._task, name)

    def inner_hvp(self, phi, v):
        hv = self._task.inner_hvp(phi, v)
        return hv * self.lam if self._defect == "missing_lambda" else -hv


def memory_profile(cfg, sampler, *, inner_steps=(16, 64), methods=("imaml_gd", "maml"),
                   episode=0) -> dict:
    """Check 2. Peak bytes saved for backward (any device) and, on CUDA, peak allocated memory,
    of one meta-gradient per method and number of inner steps."""
    from dataclasses import replace

    task, theta = _task_at(cfg, sampler, episode)
    cuda = torch.device(cfg.device).type == "cuda"
    out = {"inner_steps": list(inner_steps), "device": cfg.device, "methods": {}}
    for method in methods:
        rows = {}
        for K in inner_steps:
            c = replace(cfg, method=method, inner_steps=K)
            saved, _ = peak_saved_bytes(lambda: meta_gradient(c, task, theta))
            row = {"saved_bytes": saved}
            if cuda:
                row["cuda_peak_bytes"], _ = peak_cuda_bytes(lambda: meta_gradient(c, task, theta),
                                                            cfg.device)
            rows[str(K)] = row
        out["methods"][method] = rows
    lo, hi = (str(k) for k in (min(inner_steps), max(inner_steps)))
    key = "cuda_peak_bytes" if cuda else "saved_bytes"
    out["growth"] = {m: out["methods"][m][hi][key] / out["methods"][m][lo][key]
                     for m in methods}
    out["growth_measure"] = key
    return out


def short_training(cfg, train_sampler, test_sampler, *, methods=("imaml_gd", "imaml_hf"),
                   eval_episodes=100, time_limit_s=None, progress=False) -> dict:
    """Check 3. Meta-train each method, evaluate on held-out classes; baselines: the same
    network without meta-learning (initial θ₀ adapted with iMAML-GD's inner solver) and the
    'pretrain' method (joint training on the query losses, no inner loop)."""
    out = {"n_way": cfg.n_way, "k_shot": cfg.k_shot, "chance": 1.0 / cfg.n_way,
           "meta_steps": cfg.meta_steps, "meta_batch": cfg.meta_batch,
           "eval_episodes": eval_episodes, "methods": {}}
    _, theta0 = initial_theta(cfg, train_sampler)
    base = evaluate(with_method(cfg, "imaml_gd"), theta0, test_sampler, episodes=eval_episodes)
    out["methods"]["no_meta_learning"] = {**base.as_dict(), "steps": 0, "seconds": 0.0}
    for method in methods:
        c = with_method(cfg, method)
        t0 = time.perf_counter()
        run = meta_train(c, train_sampler, progress=progress, time_limit_s=time_limit_s)
        seconds = time.perf_counter() - t0
        ev = evaluate(c, run.theta, test_sampler, episodes=eval_episodes)
        out["methods"][method] = {
            **ev.as_dict(), "steps": len(run.history), "seconds": seconds,
            "cg_breakdowns": sum(h["cg_breakdowns"] for h in run.history),
            "cg_fallbacks": sum(h.get("cg_fallbacks", 0) for h in run.history),
            "tasks": len(run.history) * cfg.meta_batch,
            "query_loss_first": run.history[0]["query_loss"] if run.history else None,
            "query_loss_last": run.history[-1]["query_loss"] if run.history else None}
    return out


def hvp_time_ratio(cfg, sampler, *, repeats=20, episode=0) -> dict:
    """Check 4 (Assumption 1). Mean wall time of ``inner_hvp`` over ``inner_grad`` at the
    initial θ (after a warm-up), and their peak saved-for-backward bytes. Recorded only."""
    task, theta = _task_at(cfg, sampler, episode)
    v = torch.ones_like(theta) / math.sqrt(theta.numel())
    for _ in range(3):
        task.inner_grad(theta)
        task.inner_hvp(theta, v)

    def timed(fn):
        _sync(cfg.device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(cfg.device)
        return (time.perf_counter() - t0) / repeats

    t_grad = timed(lambda: task.inner_grad(theta))
    t_hvp = timed(lambda: task.inner_hvp(theta, v))
    m_grad, _ = peak_saved_bytes(lambda: task.inner_grad(theta))
    m_hvp, _ = peak_saved_bytes(lambda: task.inner_hvp(theta, v))
    return {"dim": task.dim, "repeats": repeats, "grad_seconds": t_grad, "hvp_seconds": t_hvp,
            "time_ratio": t_hvp / t_grad, "grad_saved_bytes": m_grad, "hvp_saved_bytes": m_hvp,
            "memory_ratio": m_hvp / m_grad, "device": cfg.device}

