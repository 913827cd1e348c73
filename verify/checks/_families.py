"""Task families of the issue-3 checks beyond the planted quadratics of ``verify.tasks``:
seeded logistic-regression tasks (SPEC §9) and multi-task quadratic meta-objectives (SPEC §8)."""
from __future__ import annotations

import numpy as np

from theory.logistic import LogisticTask
from verify.tasks import planted_spectrum_task, to_array

__all__ = ["logistic_task", "multitask_quadratic", "twin64", "torch64"]


def logistic_task(n: int, dim: int, lam: float, *, seed: int, n_query: int | None = None,
                  scale: float = 1.0, flip: float = 0.1, array: str = "numpy",
                  dtype: str = "float64", device: str = "cpu"):
    """A logistic-regression task: rows xⱼ ~ N(0, (scale²/dim) I) (so ‖xⱼ‖ ≈ scale), labels
    sign(xⱼᵀw) for a task vector w ~ N(0, I) with a fraction ``flip`` flipped (support and query
    drawn independently from the same task). Returns (task, instance dict)."""
    if n < 1 or dim < 1:
        raise ValueError(f"n and dim must be >= 1, got n={n!r}, dim={dim!r}")
    if not 0.0 <= flip < 0.5:
        raise ValueError(f"flip must be in [0, 0.5), got {flip!r}")
    rng = np.random.default_rng(seed)
    m = n if n_query is None else n_query
    w = rng.standard_normal(dim)

    def draw(k):
        X = rng.standard_normal((k, dim)) * (scale / np.sqrt(dim))
        y = np.sign(X @ w)
        y[y == 0] = 1.0
        y[rng.uniform(size=k) < flip] *= -1.0
        return X, y

    X, y = draw(n)
    Xq, yq = draw(m)
    arrays = [to_array(a, array=array, dtype=dtype, device=device) for a in (X, y, Xq, yq)]
    instance = dict(family="logistic", n=n, n_query=m, dim=dim, lam=float(lam), seed=int(seed),
                    scale=float(scale), flip=float(flip), array=array, dtype=dtype, device=device)
    return LogisticTask(*arrays, lam), instance


def multitask_quadratic(n_tasks: int, dim: int, kappa: float, lam: float, *, seed: int,
                        query: str = "independent"):
    """M planted quadratic tasks (float64 NumPy) with seeds derived from ``seed``."""
    seq = np.random.SeedSequence(seed).generate_state(n_tasks)
    return [planted_spectrum_task(dim, kappa, lam, seed=int(s), query=query)[0] for s in seq]


def twin64(task):
    """The float64 NumPy copy of a quadratic or logistic task (references are computed there)."""
    from theory._arrays import to_numpy64
    from theory.quadratic import QuadraticTask
    from verify.tasks import float64_twin

    if isinstance(task, LogisticTask):
        return LogisticTask(*(to_numpy64(a) for a in (task.X, task.y, task.X_query,
                                                      task.y_query)), task.lam)
    if isinstance(task, QuadraticTask):
        return float64_twin(task)
    raise TypeError(f"task must be a QuadraticTask or LogisticTask, got {type(task).__name__}")


def torch64(task):
    """A float64 torch (CPU) copy of a quadratic or logistic task: its protocol is then
    differentiable by autograd (used to differentiate through solvers in references)."""
    import torch

    t = twin64(task)
    data = (t._X64, t._y64, t._Xq64, t._yq64) if isinstance(t, LogisticTask) else (
        t.A, t.b, t.A_query, t.b_query)
    return type(t)(*(torch.from_numpy(np.array(a, dtype=np.float64)) for a in data), t.lam)
