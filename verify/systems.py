"""Planted implicit systems I + H/λ with a known spectrum, definite or indefinite, for the
linear solvers' claims and Figure 8 (docs/mathematics.md §4a, §4b).

A definite system is the system of a planted quadratic task (:func:`verify.tasks.
planted_spectrum_task`). An *indefinite* one is outside Assumption 2 — A + λI has negative
eigenvalues, so G(·, θ) has a saddle, not a minimum — and :class:`theory.QuadraticTask` refuses
it; :class:`StationaryQuadratic` is the same quadratic seen through the task protocol, with the
stationary point φ* = (A + λI)⁻¹(λθ − b) in place of Alg*(θ) (Lemma 1's formula is the derivative
of that point: docs/mathematics.md §1, §4b)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from solvers import ImplicitSystem
from theory import to_numpy64
from verify.tasks import to_array

__all__ = ["StationaryQuadratic", "IndefiniteSpec", "indefinite_task", "interval_points"]


def interval_points(low, high, n, *, spacing="chebyshev"):
    """n points in [low, high], both ends included: evenly spaced ('linear') or at the Chebyshev
    extrema (cos jπ/(n − 1), denser towards the ends: the spectra on which the Chebyshev bounds
    are nearly attained)."""
    if n == 1:
        return np.array([float(high)])
    if spacing == "linear":
        return np.linspace(low, high, n)
    t = (1 - np.cos(np.pi * np.arange(n) / (n - 1))) / 2
    return low + (high - low) * t


@dataclass(frozen=True)
class IndefiniteSpec:
    """The planted system: ``dim`` eigenvalues of M = I + A/λ, ``n_negative`` of them in
    ``negative`` = (−a, −b), the rest in ``positive`` = (c, d), ends included."""

    dim: int
    lam: float
    negative: tuple
    positive: tuple
    n_negative: int
    seed: int
    spacing: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["family"] = "indefinite system"
        return d


class StationaryQuadratic:
    """L̂(φ) = ½φᵀAφ + φᵀb, L(φ) = ½φᵀA_qφ + φᵀb_q with any symmetric A (A + λI nonsingular, not
    necessarily definite), through the task protocol, in the arrays given (NumPy or torch);
    the references in float64 NumPy: ``inner_solution`` the stationary point of G(·, θ),
    ``implicit_gradient(φ)`` = (I + A/λ)⁻¹∇L(φ), ``meta_gradient(θ)`` at the stationary point,
    ``system_eigenvalues`` of I + A/λ. There is no ``curvature_bounds()`` (no μ > 0 exists):
    solvers that derive a step from it must be given one."""

    def __init__(self, A, b, A_query, b_query, lam):
        self.A, self.b, self.A_query, self.b_query, self.lam = A, b, A_query, b_query, float(lam)
        self.dim = int(A.shape[0])
        self._A64, self._Aq64 = to_numpy64(A), to_numpy64(A_query)
        self._b64, self._bq64 = to_numpy64(b), to_numpy64(b_query)
        self.system_eigenvalues = np.linalg.eigvalsh(self.system_matrix())

    # -- the task protocol (the solvers see only this) -----------------------------------------
    def inner_loss(self, phi):
        return 0.5 * ((phi @ self.A) * phi).sum(-1) + phi @ self.b

    def inner_grad(self, phi):
        return phi @ self.A + self.b

    def inner_hvp(self, phi, v):
        return v @ self.A

    def outer_loss(self, phi):
        return 0.5 * ((phi @ self.A_query) * phi).sum(-1) + phi @ self.b_query

    def outer_grad(self, phi):
        return phi @ self.A_query + self.b_query

    # -- references (float64) -------------------------------------------------------------------
    def inner_solution(self, theta):
        C = self._A64 + self.lam * np.eye(self.dim)
        return np.linalg.solve(C, self.lam * to_numpy64(theta) - self._b64)

    def implicit_gradient(self, phi):
        return np.linalg.solve(self.system_matrix(), self._Aq64 @ to_numpy64(phi) + self._bq64)

    def meta_gradient(self, theta):
        return self.implicit_gradient(self.inner_solution(theta))

    def system_matrix(self) -> np.ndarray:
        """M = I + A/λ (float64, :class:`solvers.ImplicitSystem`)."""
        return ImplicitSystem.of_hessian(self._A64, self.lam).matrix()


def indefinite_task(dim, *, lam=1.0, negative=(-4.0, -0.5), positive=(0.5, 4.0),
                    n_negative=None, seed=0, spacing="chebyshev", array="numpy",
                    dtype="float64", device="cpu"):
    """(task, spec): a :class:`StationaryQuadratic` whose system M = I + A/λ has ``n_negative``
    eigenvalues (default half) planted in ``negative`` and the rest in ``positive`` (both ends
    of both intervals are eigenvalues), random eigenvectors, query data A_q = QᵀDQ with its own
    random positive spectrum, b and b_q standard normal; all from ``seed``."""
    lo, hi = float(negative[0]), float(negative[1])
    c, d = float(positive[0]), float(positive[1])
    if not (lo <= hi < 0 < c <= d):
        raise ValueError(f"need negative = (lo, hi) < 0 < positive = (c, d), got {negative!r}, "
                         f"{positive!r}")
    n_neg = dim // 2 if n_negative is None else int(n_negative)
    if not 1 <= n_neg < dim:
        raise ValueError(f"n_negative must be in [1, dim), got {n_negative!r}")
    rng = np.random.default_rng(seed)
    m = np.concatenate([interval_points(lo, hi, n_neg, spacing=spacing),
                        interval_points(c, d, dim - n_neg, spacing=spacing)])
    Q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    A = (Q * (lam * (m - 1.0))) @ Q.T
    A = (A + A.T) / 2
    Qq = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    Aq = (Qq * rng.uniform(0.5, 2.0, dim)) @ Qq.T
    Aq = (Aq + Aq.T) / 2
    b, bq = rng.standard_normal(dim), rng.standard_normal(dim)
    conv = lambda x: to_array(x, array=array, dtype=dtype, device=device)  # noqa: E731
    task = StationaryQuadratic(conv(A), conv(b), conv(Aq), conv(bq), lam)
    return task, IndefiniteSpec(dim, float(lam), (lo, hi), (c, d), n_neg, int(seed), spacing)
