"""Meta-training and evaluation of few-shot learners with the solvers under test.

Methods (``TrainConfig.method``):

- ``imaml_gd``: iMAML with ``inner_steps`` steps of gradient descent on
  G(φ, θ) = L̂(φ) + (λ/2)‖φ − θ‖² from φ₀ = θ, then ``cg_steps`` CG steps on
  (I + H(φ)/λ) g = ∇L(φ) (Algorithm 2; the inner solve is :func:`solvers.inner_solve`, the
  linear solve as ``cg_mode`` says: :func:`verify.fewshot.cg_modes.implicit_gradient`).
- ``imaml_hf``: the same with the Hessian-free inner solver (:func:`solvers.newton_cg`:
  ``hf_iterations`` Newton iterations of ``hf_cg_steps`` CG steps and a line search).
- ``maml``: backpropagation through the same ``inner_steps`` GD steps on G(·, θ)
  (:func:`solvers.maml_meta_gradient`). NB: the same proximal inner loop as iMAML-GD (λ > 0),
  so that the two differ only in how the meta-gradient is formed; the paper's MAML uses λ = 0.
- ``fomaml``: first-order MAML, g = ∇L(φ) (:func:`solvers.fomaml_meta_gradient`).
- ``reptile``: the direction θ − φ after the same inner loop (:func:`solvers.reptile_direction`;
  support set only), fed to Adam like a gradient.
- ``pretrain``: no meta-learning: θ follows the query-loss gradient ∇L(θ) at θ itself
  (joint training over episodes); evaluated with the same adaptation as iMAML-GD.

The outer loop is Adam (default parameters, as in Appendix F.2) on the average meta-gradient
of ``meta_batch`` episodes. Episode j of meta-step s is ``sampler.episode(s·meta_batch + j)``
and the network is initialized from ``seed``, so a run is a deterministic function of its
config: a checkpointed run resumed later ends where an uninterrupted one does.

Evaluation adapts θ to each held-out episode's support set with the method's own inner solver
and reports the mean query accuracy over episodes with a 95% confidence interval
1.96·s/√n (s: sample standard deviation over the n episodes).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from solvers import (
    Status,
    fomaml_meta_gradient,
    inner_solve,
    maml_meta_gradient,
    reptile_direction,
)
from verify.fewshot.cg_modes import CG_MODES, PAPER_DAMPING, PAPER_LAM_DAMPING, implicit_gradient
from verify.models import MLP, ConvNet, ModelTask, flat_parameters

__all__ = ["METHODS", "TrainConfig", "TrainResult", "EvalResult", "paper_config", "build_model",
           "episode_task", "meta_gradient", "adapt", "meta_train", "evaluate",
           "confidence_interval", "initial_theta", "with_method"]

METHODS = ("imaml_gd", "imaml_hf", "maml", "fomaml", "reptile", "pretrain")


@dataclass
class TrainConfig:
    """Everything that determines a run. Sizes: ``filters``/``layers`` of the ConvNet (or
    ``hidden`` of the MLP for regression). ``inner_lr``: the GD step size α on G(·, θ).
    ``hf_iterations``/``hf_cg_steps``: Newton-CG's iterations and CG steps per iteration.
    ``outer_lr``: Adam's learning rate (its default 1e-3). ``cg_mode``: how iMAML's CG treats
    non-positive curvature ('fallback', 'fixed' or 'damped' with ``cg_damping`` and
    ``cg_lam_damping``; see :mod:`verify.fewshot.cg_modes`)."""

    method: str = "imaml_gd"
    n_way: int = 5
    k_shot: int = 1
    k_query: int = 5
    inner_steps: int = 16
    inner_lr: float = 0.1
    lam: float = 2.0
    cg_steps: int = 5
    hf_iterations: int = 3
    hf_cg_steps: int = 5
    meta_batch: int = 16
    meta_steps: int = 1000
    outer_lr: float = 1e-3
    filters: int = 64
    layers: int = 4
    hidden: tuple = (40, 40)
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    checkpoint_every: int = 50
    cg_mode: str = "fallback"
    cg_damping: float = PAPER_DAMPING
    cg_lam_damping: float = PAPER_LAM_DAMPING

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.cg_mode not in CG_MODES:
            raise ValueError(f"cg_mode must be one of {CG_MODES}, got {self.cg_mode!r}")
        for name in ("cg_damping", "cg_lam_damping"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)
                                           and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        for name in ("n_way", "k_shot", "k_query", "meta_batch", "filters", "layers",
                     "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("inner_steps", "cg_steps", "hf_iterations", "hf_cg_steps", "meta_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        for name in ("inner_lr", "lam", "outer_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        self.hidden = tuple(self.hidden)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def paper_config(dataset: str = "omniglot", *, n_way: int = 5, k_shot: int = 1,
                 method: str = "imaml_gd", **overrides) -> TrainConfig:
    """Appendix F.2 settings. Omniglot: 16 GD steps (5-way) or 25 (20-way), λ = 2, 5 CG steps,
    Adam; Mini-ImageNet: 10 GD steps, λ = 0.5, 5 CG steps (32 filters as in MAML's code).
    iMAML-HF: 3 Newton-CG iterations of 5 CG steps with line search, 5 CG steps for the
    meta-gradient. Not given in the appendix (our choices): GD step size, meta-batch size,
    query-set size."""
    if dataset == "omniglot":
        base = dict(inner_steps=16 if n_way <= 5 else 25, lam=2.0, filters=64)
    elif dataset == "miniimagenet":
        base = dict(inner_steps=10, lam=0.5, filters=32, k_query=15)
    else:
        raise ValueError(f"dataset must be 'omniglot' or 'miniimagenet', got {dataset!r}")
    return TrainConfig(method=method, n_way=n_way, k_shot=k_shot,
                       **{**base, "cg_steps": 5, "hf_iterations": 3, "hf_cg_steps": 5,
                          **overrides})


def build_model(cfg: TrainConfig, sampler) -> torch.nn.Module:
    """The ConvNet (image episodes) or MLP (regression) for ``sampler``, initialized from
    ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    shape = tuple(sampler.input_shape)
    if len(shape) == 3:
        return ConvNet(sampler.n_outputs, in_channels=shape[0], image_size=shape[-1],
                       filters=cfg.filters, layers=cfg.layers)
    return MLP(shape[0], sampler.n_outputs, hidden=cfg.hidden)


def episode_task(model, episode, cfg: TrainConfig, *, loss="cross_entropy") -> ModelTask:
    dev = torch.device(cfg.device)
    return ModelTask(model, episode.support_x.to(dev), episode.support_y.to(dev),
                     episode.query_x.to(dev), episode.query_y.to(dev), lam=cfg.lam, loss=loss)


def meta_gradient(cfg: TrainConfig, task: ModelTask, theta: torch.Tensor):
    """The method's meta-gradient on one task at θ: a :class:`solvers.MetaGradientResult`
    (for ``pretrain``: a plain dict with ``gradient`` and ``phi`` = θ).

    iMAML (GD or Newton-CG inner solve) solves its linear system as ``cfg.cg_mode`` says
    (:func:`verify.fewshot.cg_modes.implicit_gradient`). Non-positive curvature (I + H(φ)/λ not
    positive definite, which happens on the batch-normalized ConvNet even at the paper's λ) is
    never hidden: with 'fallback' CG stops, the result keeps ``cg.status == BREAKDOWN`` and the
    last CG iterate is used, or the first-order direction ∇L(φ) when CG broke down at its first
    step (method name suffixed ``+first_order_fallback``); with 'fixed'/'damped' the steps along
    non-positive curvature are counted. :func:`meta_train` records both per meta-step."""
    m = cfg.method
    if m in ("imaml_gd", "imaml_hf"):
        if m == "imaml_gd":
            inner = inner_solve(task, theta, inner_steps=cfg.inner_steps, inner="gd",
                                inner_step_size=cfg.inner_lr)
        else:
            inner = inner_solve(task, theta, inner_steps=cfg.hf_iterations, inner="newton_cg",
                                newton_cg_steps=cfg.hf_cg_steps)
        return implicit_gradient(task, theta, inner, cg_steps=cfg.cg_steps, mode=cfg.cg_mode,
                                 damping=cfg.cg_damping, lam_damping=cfg.cg_lam_damping)
    if m == "maml":
        return maml_meta_gradient(task, theta, inner_steps=cfg.inner_steps,
                                  step_size=cfg.inner_lr)
    if m == "fomaml":
        return fomaml_meta_gradient(task, theta, inner_steps=cfg.inner_steps, inner="gd",
                                    inner_step_size=cfg.inner_lr)
    if m == "reptile":
        return reptile_direction(task, theta, inner_steps=cfg.inner_steps, inner="gd",
                                 inner_step_size=cfg.inner_lr)
    return {"gradient": task.outer_grad(theta), "phi": theta}


def adapt(cfg: TrainConfig, task: ModelTask, theta: torch.Tensor, *, method=None):
    """φ adapted to the task's support set from θ with ``method``'s inner solver (Newton-CG
    for imaml_hf, GD on G(·, θ) for every other method)."""
    if (method or cfg.method) == "imaml_hf":
        res = inner_solve(task, theta, inner_steps=cfg.hf_iterations, inner="newton_cg",
                          newton_cg_steps=cfg.hf_cg_steps)
    else:
        res = inner_solve(task, theta, inner_steps=cfg.inner_steps, inner="gd",
                          inner_step_size=cfg.inner_lr)
    return res.x


def confidence_interval(values) -> tuple[float, float]:
    """(mean, 95% half-width 1.96·s/√n), s the sample standard deviation (0 for n = 1)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("values must not be empty")
    s = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return float(a.mean()), 1.96 * s / math.sqrt(a.size)


@dataclass
class EvalResult:
    """Held-out performance: mean over ``n`` episodes and 95% half-width ``ci95`` of
    ``metric`` ('accuracy', a fraction, for classification; 'query_mse' for regression)."""

    method: str
    mean: float
    ci95: float
    n: int
    values: list = field(repr=False, default_factory=list)
    metric: str = "accuracy"

    def as_dict(self) -> dict:
        return {"method": self.method, "metric": self.metric, "mean": self.mean,
                "ci95": self.ci95, "n": self.n}


@dataclass
class TrainResult:
    """theta: the meta-trained parameters (flat); history: one dict per meta-step
    (step, query_loss after adaptation, cg_breakdowns, cg_fallbacks, seconds); resumed_from: the step a
    checkpoint resumed at (None for a fresh run)."""

    config: TrainConfig
    theta: torch.Tensor
    history: list
    resumed_from: int | None = None
    seconds: float = 0.0


def _dtype(cfg):
    return getattr(torch, cfg.dtype)


def initial_theta(cfg: TrainConfig, sampler) -> tuple[torch.nn.Module, torch.Tensor]:
    model = build_model(cfg, sampler).to(cfg.device)
    return model, flat_parameters(model, dtype=_dtype(cfg), device=torch.device(cfg.device))


def meta_train(cfg: TrainConfig, sampler, *, checkpoint=None, progress: bool = False,
               time_limit_s: float | None = None) -> TrainResult:
    """Meta-train θ for ``cfg.meta_steps`` Adam steps (see the module docstring).

    ``checkpoint``: a file path; the state (θ, Adam's state, history, config) is saved there
    every ``cfg.checkpoint_every`` steps and at the end, and a run whose checkpoint exists
    resumes from it (its config must match, else ValueError). ``progress``: a tqdm bar.
    ``time_limit_s``: stop early (recorded in the history's last entry) once exceeded."""
    model, theta0 = initial_theta(cfg, sampler)
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.outer_lr)
    history, start, resumed = [], 0, None
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = torch.load(path, map_location=cfg.device, weights_only=True)
        saved = TrainConfig.from_dict(state["config"]).as_dict()  # older files: defaults
        if saved != cfg.as_dict():
            diff = {k: (saved.get(k), v) for k, v in cfg.as_dict().items() if saved.get(k) != v}
            raise ValueError(f"checkpoint {path} was written by a different config: {diff}")
        with torch.no_grad():
            theta.copy_(state["theta"])
        opt.load_state_dict(state["optimizer"])
        history, start = list(state["history"]), int(state["step"])
        resumed = start

    def save(step):
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"config": cfg.as_dict(), "theta": theta.detach().cpu(), "step": step,
                    "optimizer": opt.state_dict(), "history": history}, tmp)
        tmp.replace(path)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.meta_steps, initial=start, desc=f"meta-train {cfg.method}",
                   unit="step")
    t_start = time.perf_counter()
    step = start
    for step in range(start, cfg.meta_steps):
        t0 = time.perf_counter()
        grads, losses, breakdowns, fallbacks, nonpositive = [], [], 0, 0, 0
        th = theta.detach()
        for j in range(cfg.meta_batch):
            task = episode_task(model, sampler.episode(step * cfg.meta_batch + j), cfg,
                                loss=sampler.loss)
            res = meta_gradient(cfg, task, th)
            if isinstance(res, dict):
                grads.append(res["gradient"])
                losses.append(float(task.outer_loss(th)))
                continue
            grads.append(res.gradient)
            losses.append(float(task.outer_loss(res.phi)))
            breakdowns += bool(res.linear is not None and res.linear.status is Status.BREAKDOWN)
            fallbacks += res.method.endswith("first_order_fallback")
            nonpositive += bool(res.linear is not None
                                and res.linear.evaluations.get("nonpositive_curvature", 0) > 0)
        mean_grad = torch.stack(grads).mean(0).to(theta.dtype)
        entry = {"step": step + 1, "query_loss": float(np.mean(losses)),
                 "cg_breakdowns": breakdowns, "cg_fallbacks": fallbacks,
                 "cg_nonpositive_tasks": nonpositive}
        if not bool(torch.isfinite(mean_grad).all()):
            # an unguarded CG ('fixed') can divide by a vanishing pᵀMp: stop, say so, keep θ
            entry.update(seconds=time.perf_counter() - t0, stopped_early=True,
                         stopped_reason="non-finite meta-gradient")
            history.append(entry)
            step += 1
            break
        opt.zero_grad(set_to_none=True)
        theta.grad = mean_grad
        opt.step()
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(query_loss=f"{history[-1]['query_loss']:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0:
            save(step + 1)
        if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
            history[-1]["stopped_early"] = True
            step += 1
            break
    else:
        step = cfg.meta_steps
    if bar is not None:
        bar.close()
    save(step if history and history[-1].get("stopped_early") else max(step, start))
    return TrainResult(cfg, theta.detach().clone(), history, resumed,
                       time.perf_counter() - t_start)


def evaluate(cfg: TrainConfig, theta: torch.Tensor, sampler, *, episodes: int,
             method: str | None = None, first_episode: int = 0, progress: bool = False
             ) -> EvalResult:
    """Mean query accuracy (query MSE for regression) of θ adapted (see :func:`adapt`) to
    ``episodes`` episodes ``first_episode``, … of ``sampler`` (held-out classes), with its
    95% interval."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    model = build_model(cfg, sampler).to(cfg.device)
    theta = theta.detach().to(dtype=_dtype(cfg), device=torch.device(cfg.device))
    it = range(first_episode, first_episode + episodes)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="evaluate", unit="episode")
    values = []
    for i in it:
        task = episode_task(model, sampler.episode(i), cfg, loss=sampler.loss)
        phi = adapt(cfg, task, theta, method=method)
        values.append(task.accuracy(phi) if sampler.loss == "cross_entropy"
                      else float(task.outer_loss(phi)))
    mean, ci = confidence_interval(values)
    metric = "accuracy" if sampler.loss == "cross_entropy" else "query_mse"
    return EvalResult(method or cfg.method, mean, ci, episodes, values, metric)


def with_method(cfg: TrainConfig, method: str) -> TrainConfig:
    """The same config with another method."""
    return replace(cfg, method=method)
