"""Task generators with planted answers: quadratic tasks whose spectra make μ, β, κ exact
(docs/mathematics.md §2), the paper's synthetic regression task, seeded logistic-regression tasks with
certified constants (docs/mathematics.md §9) and multi-task quadratic meta-objectives (docs/mathematics.md §8)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from theory.logistic import LogisticTask
from array_api_compat import array_namespace, device

from theory.quadratic import QuadraticTask

__all__ = ["TaskSpec", "planted_spectrum_task", "NonConvexQuadraticTask", "nonconvex_task", "paper_synthetic_task", "to_array", "planted_spectrum",
           "float64_twin", "torch64", "bottom_eigenvector", "logistic_task", "multitask_quadratic"]

QUERY_KINDS = ("shared", "reversed", "independent", "same")


@dataclass(frozen=True)
class TaskSpec:
    """Everything that reproduces a generated task."""

    dim: int
    kappa: float
    lam: float
    seed: int
    query: str = "shared"
    spectrum: str = "uniform"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def to_array(x: np.ndarray, *, array: str = "numpy", dtype: str = "float64", device: str = "cpu"):
    """A float64 NumPy array as a NumPy array or torch tensor of the requested dtype/device."""
    if array == "numpy":
        if device != "cpu":
            raise ValueError(f"device must be 'cpu' for NumPy arrays, got {device!r}")
        return np.asarray(x, dtype=dtype)
    if array == "torch":
        import torch

        # torch.tensor copies: the tensor never shares memory with x (which may be a task's
        # read-only array)
        return torch.tensor(np.asarray(x, dtype=np.float64)).to(
            dtype=getattr(torch, dtype), device=device)
    raise ValueError(f"array must be 'numpy' or 'torch', got {array!r}")


def planted_spectrum(dim: int, kappa: float, lam: float, *, kind: str = "uniform",
                     rng: np.random.Generator | None = None, floor: float = 0.0) -> np.ndarray:
    """Eigenvalues s ≥ 0 (ascending) of A with (max s + λ)/(min s + λ) = κ exactly and both
    ends present: min s = floor, max s = κ(floor + λ) − λ. ``kind``: 'uniform' (evenly spaced),
    'log' (geometric in s + λ), 'endpoints' (only the two ends: 2 distinct eigenvalues),
    'random' (interior drawn uniformly from ``rng``)."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    if not (kappa >= 1 and math.isfinite(kappa)):
        raise ValueError(f"kappa must be finite and >= 1, got {kappa!r}")
    lo, hi = floor, kappa * (floor + lam) - lam
    if dim == 1:
        if kappa != 1:
            raise ValueError("a 1-dimensional task has kappa = 1")
        return np.array([lo])
    if kind == "uniform":
        s = np.linspace(lo, hi, dim)
    elif kind == "log":
        s = np.geomspace(lo + lam, hi + lam, dim) - lam
    elif kind == "endpoints":
        s = np.where(np.arange(dim) < dim // 2, lo, hi).astype(float)
    elif kind == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        s = np.sort(np.concatenate([[lo, hi], rng.uniform(lo, hi, dim - 2)]))
    else:
        raise ValueError(f"kind must be uniform, log, endpoints or random, got {kind!r}")
    s = np.clip(s, lo, hi)  # geomspace(λ, λ) − λ is not exactly 0: keep s inside [lo, hi]
    s[0], s[-1] = lo, hi
    return np.sort(s)


def _orthogonal(rng, dim):
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def planted_spectrum_task(dim: int, kappa: float, lam: float, *, seed: int, query: str = "shared",
                          spectrum: str = "uniform", query_scale: float = 1.0,
                          array: str = "numpy", dtype: str = "float64", device: str = "cpu"):
    """A quadratic task A = Q diag(s) Qᵀ whose G has condition number exactly κ.

    ``query``: 'shared' (Aₜ has A's eigenvectors, eigenvalues in the same order), 'reversed'
    (shared eigenvectors, Aₜ's top eigenvalue on A's bottom eigenvector: Lemma 3's worst case),
    'independent' (Aₜ has its own random eigenvectors) or 'same' (the query loss is the inner
    loss). Returns (task, spec)."""
    if query not in QUERY_KINDS:
        raise ValueError(f"query must be one of {QUERY_KINDS}, got {query!r}")
    rng = np.random.default_rng(seed)
    s = planted_spectrum(dim, kappa, lam, kind=spectrum, rng=rng)
    Q = _orthogonal(rng, dim)
    A = (Q * s) @ Q.T
    b = rng.standard_normal(dim)
    t = query_scale * np.sort(rng.uniform(0.1, 1.0, dim))
    t[-1] = query_scale
    if query == "same":
        Aq, bq = A, b
    elif query == "independent":
        Q2 = _orthogonal(rng, dim)
        Aq, bq = (Q2 * t) @ Q2.T, rng.standard_normal(dim)
    else:
        Aq, bq = (Q * (t if query == "shared" else t[::-1])) @ Q.T, rng.standard_normal(dim)
    sym = lambda M: (M + M.T) / 2  # noqa: E731
    arrays = [to_array(x, array=array, dtype=dtype, device=device) for x in (sym(A), b, sym(Aq), bq)]
    return QuadraticTask(*arrays, lam), TaskSpec(dim, float(kappa), float(lam), int(seed), query, spectrum)


def paper_synthetic_task(*, seed: int, fourier: bool = False, n_train: int = 200, n_query: int = 200,
                         noise: float = 0.1, array: str = "numpy", dtype: str = "float64",
                         device: str = "cpu"):
    """The paper's synthetic setting (Appendix F.1): linear regression with x ∈ R⁵⁰, λ = 5,
    κ = 50 (condition number of A + λI, so λmin(A) = 0 and λmax(A) = 245, docs/mathematics.md §2).

    Training inputs are planted so that A = XᵀX/n has exactly that spectrum (evenly spaced);
    with ``fourier`` the eigenvectors are those of 50 random Fourier features cos(Wz + c) of
    z ∈ R⁵ instead of random ones. Query inputs are fresh draws with covariance A. Targets are
    y = xᵀw + noise with a task vector w ~ N(0, I/50). Returns (task, spec)."""
    dim, lam, kappa = 50, 5.0, 50.0
    rng = np.random.default_rng(seed)
    s = planted_spectrum(dim, kappa, lam, kind="uniform")
    if fourier:
        Z = rng.standard_normal((n_train, 5))
        feats = math.sqrt(2.0) * np.cos(Z @ rng.standard_normal((5, dim)) + rng.uniform(0, 2 * math.pi, dim))
        U, _, Vt = np.linalg.svd(feats, full_matrices=False)
    else:
        U = _orthogonal(rng, n_train)[:, :dim]
        Vt = _orthogonal(rng, dim).T
    X = math.sqrt(n_train) * (U * np.sqrt(s)) @ Vt          # XᵀX/n = V diag(s) Vᵀ
    w = rng.standard_normal(dim) / math.sqrt(dim)
    y = X @ w + noise * rng.standard_normal(n_train)
    Xq = rng.standard_normal((n_query, dim)) @ ((Vt.T * np.sqrt(s)) @ Vt)
    yq = Xq @ w + noise * rng.standard_normal(n_query)
    A, b = X.T @ X / n_train, -X.T @ y / n_train
    Aq, bq = Xq.T @ Xq / n_query, -Xq.T @ yq / n_query
    sym = lambda M: (M + M.T) / 2  # noqa: E731
    arrays = [to_array(x, array=array, dtype=dtype, device=device) for x in (sym(A), b, sym(Aq), bq)]
    spec = TaskSpec(dim, kappa, lam, int(seed), "independent", "fourier" if fourier else "uniform")
    return QuadraticTask(*arrays, lam), spec


class NonConvexQuadraticTask(QuadraticTask):
    """A quadratic task whose inner loss may be non-convex within Assumption 2: A symmetric with
    A + λI ≻ 0, A itself possibly indefinite (docs/mathematics.md §0, §7). Everything else is
    QuadraticTask's: the closed forms (A + λI)⁻¹(λθ − b), λ(A + λI)⁻¹∇L hold unchanged.

    Built by validating A + cI (c ≥ 0 the smallest shift that makes it semidefinite) as a
    QuadraticTask would validate A, then keeping A; (β, μ) are λmax(A) + λ, λmin(A) + λ.
    Raises ValueError when A + λI is not positive definite."""

    def __init__(self, A, b, A_query, b_query, lam, *, psd_rtol=None):
        from theory import to_numpy64

        A64 = to_numpy64(A)
        eig = np.linalg.eigvalsh((A64 + A64.T) / 2)
        if not eig[0] + float(lam) > 0:
            raise ValueError(f"A + lam*I must be positive definite (Assumption 2), its smallest "
                             f"eigenvalue is {eig[0] + float(lam):.3g}")
        shift = max(-float(eig[0]), 0.0)
        xp = array_namespace(A)
        eye = xp.eye(A.shape[0], dtype=A.dtype, device=device(A))
        super().__init__(A + shift * eye, b, A_query, b_query, lam, psd_rtol=psd_rtol)
        from theory._arrays import frozen, versions

        # the task's own copy of the unshifted A (a sealed task's data is set only here)
        object.__setattr__(self, "A", frozen(A))
        self._versions = versions(self.A, self.b, self.A_query, self.b_query)
        self._nonconvex_bounds = (float(eig[-1] + self.lam), float(eig[0] + self.lam))

    def curvature_bounds(self) -> tuple[float, float]:
        return self._nonconvex_bounds


def nonconvex_task(dim: int, kappa: float, lam: float, *, seed: int, mu_over_lam: float = 0.1,
                   query: str = "independent", array: str = "numpy", dtype: str = "float64",
                   device: str = "cpu"):
    """A planted non-convex quadratic task: A = Q diag(s) Qᵀ with λmin(A) = (mu_over_lam − 1)λ < 0
    (so μ = mu_over_lam·λ) and (λmax(A) + λ)/μ = κ exactly. ``query`` as for
    :func:`planted_spectrum_task` ('same' excluded: the query loss stays convex).
    Returns (task, spec)."""
    if query not in ("shared", "reversed", "independent"):
        raise ValueError(f"query must be shared, reversed or independent, got {query!r}")
    if not 0 < mu_over_lam < 1:
        raise ValueError(f"mu_over_lam must be in (0, 1), got {mu_over_lam!r}")
    rng = np.random.default_rng(seed)
    s = planted_spectrum(dim, kappa, lam, floor=(mu_over_lam - 1) * lam)
    Q = _orthogonal(rng, dim)
    A = (Q * s) @ Q.T
    b = rng.standard_normal(dim)
    t = np.sort(rng.uniform(0.1, 1.0, dim))
    t[-1] = 1.0
    if query == "independent":
        Q2 = _orthogonal(rng, dim)
        Aq = (Q2 * t) @ Q2.T
    else:
        Aq = (Q * (t if query == "shared" else t[::-1])) @ Q.T
    bq = rng.standard_normal(dim)
    sym = lambda M: (M + M.T) / 2  # noqa: E731
    arrays = [to_array(x, array=array, dtype=dtype, device=device) for x in (sym(A), b, sym(Aq), bq)]
    return (NonConvexQuadraticTask(*arrays, lam),
            TaskSpec(dim, float(kappa), float(lam), int(seed), query, "nonconvex"))


def float64_twin(task):
    """The same task (the same stored numbers) as float64 NumPy arrays: the exact reference for
    float32 or torch runs, for a quadratic or a logistic task. Quadratic data rounded to float32
    may be indefinite by float32 rounding; the twin accepts that (judged with the source dtype's
    tolerance) rather than altering the data. A quadratic task that is already float64 NumPy is
    its own twin (its arrays are read-only copies: nothing to copy, no second eigendecomposition)."""
    from theory import to_numpy64

    if isinstance(task, LogisticTask):
        return LogisticTask(*(to_numpy64(a) for a in (task.X, task.y, task.X_query,
                                                      task.y_query)), task.lam)
    if isinstance(task, QuadraticTask):
        if all(isinstance(x, np.ndarray) and x.dtype == np.float64
               for x in (task.A, task.b, task.A_query, task.b_query)):
            return task          # already float64 NumPy, and read-only: the twin is the task
        return type(task)(*(to_numpy64(x) for x in (task.A, task.b, task.A_query,
                                                     task.b_query)),
                          task.lam, psd_rtol=task.psd_rtol)
    raise TypeError(f"task must be a QuadraticTask or LogisticTask, got {type(task).__name__}")


def bottom_eigenvector(task: QuadraticTask) -> np.ndarray:
    """A unit eigenvector of A for its smallest eigenvalue (float64)."""
    from theory import to_numpy64

    return np.linalg.eigh(to_numpy64(task.A))[1][:, 0]


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


def torch64(task):
    """A float64 torch (CPU) copy of a quadratic or logistic task: its protocol is then
    differentiable by autograd (used to differentiate through solvers in references)."""
    import torch

    t = float64_twin(task)
    data = (t._X64, t._y64, t._Xq64, t._yq64) if isinstance(t, LogisticTask) else (
        t.A, t.b, t.A_query, t.b_query)
    return type(t)(*(torch.from_numpy(np.array(a, dtype=np.float64)) for a in data), t.lam)
