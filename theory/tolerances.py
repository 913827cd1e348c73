"""The one place where rounding allowances are derived (docs/mathematics.md §10).

**The rule.** A computed quantity is judged against its reference with an allowance that comes
from the *magnitudes that enter its computation* — the sizes of the terms that are added and
cancel — never from the size of the answer. ``‖Aφ + b + λ(φ − θ)‖`` at a converged φ is tiny,
but it is computed from terms of size ‖A‖‖φ‖, ‖b‖, λ‖φ‖, λ‖θ‖, and its rounding error is a
fraction of those. Every check states its terms and calls :func:`allowance`; references are
computed accurately enough (in higher precision where cancellation matters: theory.exact) that
they are never the source of a failure.

Two forms of the same rule:

- :func:`allowance` (checks of claims): ``eps · dim · κ · Σ terms``. A backward-stable solve or
  a few dozen matrix-vector products in precision ``u = eps/2`` perturb a result by at most about
  ``c(d) · u · κ · Σ terms`` with ``c(d)`` at most linear in the dimension (Higham, *Accuracy and
  Stability of Numerical Algorithms*, Thm 7.2 and §3.5); we take ``c(d) = 2d``. A model of
  rounding, not a value tuned to make a test pass; tests never widen it locally.
  :func:`rounding_allowance` is the same rule with the terms already summed (``scale``).
- :func:`sum_rounding` and :func:`norm_upper_bound` (the a-posteriori certificate, which must
  hold on every instance): rigorous worst-case bounds from Higham's γₙ = nu/(1 − nu).
  :func:`computation_magnitudes` lists, for quadratic and logistic tasks, the magnitudes that
  enter the diagnostics a meta-gradient solver computes (‖∇_φG‖, the CG residual, ‖∇L(φ)‖).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from validation import check_kappa, check_positive, dtype_name

__all__ = ["machine_epsilon", "unit_roundoff", "gamma", "relative_tolerance", "allowance",
           "rounding_allowance", "sum_rounding", "norm_upper_bound", "Magnitudes",
           "computation_magnitudes", "abs_matrix_norm", "sdp_allowance", "SDP_TOLERANCE"]


def machine_epsilon(dtype) -> float:
    """Machine epsilon of a NumPy or torch floating dtype (or of its name)."""
    return float(np.finfo(np.dtype(dtype_name(dtype))).eps)


def unit_roundoff(dtype) -> float:
    """u = eps/2: |fl(x op y) − x op y| ≤ u|x op y| for one rounded operation."""
    return machine_epsilon(dtype) / 2


def gamma(dtype, n: int) -> float:
    """Higham's γₙ = nu/(1 − nu): the relative error of n rounded operations in a row."""
    nu = int(n) * unit_roundoff(dtype)
    if int(n) < 0 or nu >= 1:
        raise ValueError(f"gamma needs 0 <= n*u < 1, got n={n!r} for {dtype_name(dtype)}")
    return nu / (1 - nu)


def relative_tolerance(dtype, *, kappa: float = 1.0, dim: int = 1) -> float:
    """Relative rounding allowance ``eps * dim * kappa`` for results computed in ``dtype``."""
    check_kappa(kappa)
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    return machine_epsilon(dtype) * dim * kappa


def allowance(dtype, *, terms, kappa: float = 1.0, dim: int = 1) -> float:
    """THE allowance rule: ``eps · dim · κ · Σ terms`` where ``terms`` are the magnitudes that
    enter the computation (the norms of the terms that are added and cancel, e.g. ‖A‖‖φ‖, ‖b‖,
    λ‖θ‖), not the size of its result."""
    total = 0.0
    for i, t in enumerate(terms):
        total += check_positive(t, f"terms[{i}]", allow_zero=True)
    return relative_tolerance(dtype, kappa=kappa, dim=dim) * total


def rounding_allowance(dtype, *, kappa: float = 1.0, scale: float = 1.0, dim: int = 1) -> float:
    """:func:`allowance` with the terms already summed into ``scale``."""
    return allowance(dtype, terms=(scale,), kappa=kappa, dim=dim)


def sum_rounding(dtype, terms, *, length: int, extra_ops: int = 4) -> float:
    """Rigorous bound on ‖fl(x) − x‖₂ for a vector x computed as a sum of a few terms, each a
    product (matrix-vector or elementwise) with at most ``length`` summands, followed by at most
    ``extra_ops`` elementwise operations: γ_{length + extra_ops} · Σ terms, where each term is
    the 2-norm of the *absolute* product, e.g. ‖|A||φ|‖ ≤ ‖|A|‖₂‖φ‖ (Higham §3.1, §3.5; any
    summation order)."""
    total = 0.0
    for i, t in enumerate(terms):
        total += check_positive(t, f"terms[{i}]", allow_zero=True)
    return gamma(dtype, int(length) + int(extra_ops)) * total


def norm_upper_bound(dtype, computed_norm, *, terms, length: int, dim: int) -> float:
    """A certified upper bound on the exact ‖x‖ from the computed fl(‖x̂‖) of a computed x̂
    (x̂ as in :func:`sum_rounding`): ‖x‖ ≤ ‖x̂‖ + ‖x̂ − x‖ with ‖x̂‖ ≤ fl(‖x̂‖)/(1 − γ_{dim+2})
    (a sum of dim squares, then a square root)."""
    n = check_positive(computed_norm, "computed_norm", allow_zero=True)
    g = gamma(dtype, int(dim) + 2)
    return n / (1 - g) + sum_rounding(dtype, terms, length=length)


def abs_matrix_norm(M) -> float:
    """An upper bound on ‖|M|‖₂ (the spectral norm of the entrywise absolute value):
    min(‖M‖_F, √(‖M‖₁‖M‖_∞)), computed in float64 (rounded up by a relative 1e-12)."""
    M = np.abs(np.asarray(M, dtype=np.float64))
    if M.size == 0:
        return 0.0
    frob = float(np.sqrt(np.sum(M * M)))
    hoelder = math.sqrt(float(M.sum(axis=0).max()) * float(M.sum(axis=1).max()))
    return min(frob, hoelder) * (1 + 1e-12)


@dataclass(frozen=True)
class Magnitudes:
    """The magnitudes that enter the three diagnostics of a meta-gradient (docs/mathematics.md
    §5a), for :func:`sum_rounding`: ``stationarity`` (terms of ∇_φG(φ, θ) = ∇L̂(φ) + λ(φ − θ)),
    ``residual`` (terms of r = ∇L(φ) − g − ∇²L̂(φ)g/λ), ``outer_grad`` (terms of ∇L(φ)), each
    a tuple of norms; ``length``: the longest inner product among them; ``dim``: len(φ)."""

    stationarity: tuple
    residual: tuple
    outer_grad: tuple
    length: int
    dim: int


def _n(x) -> float:
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64)))


def computation_magnitudes(task, theta, phi, g) -> Magnitudes:
    """:class:`Magnitudes` of a quadratic task (attributes ``A, b, A_query, b_query``) or a
    logistic task (``X, y, X_query, y_query``) at (θ, φ, g), from the task's stored data
    (float64 NumPy copies of any array type).

    Quadratic, with a = ‖|A|‖₂, a_q = ‖|A_q|‖₂ (:func:`abs_matrix_norm`):
    ∇G: a‖φ‖, ‖b‖, λ‖φ‖, λ‖θ‖; ∇L: a_q‖φ‖, ‖b_q‖; r: those of ∇L and ‖g‖, a‖g‖/λ.
    Logistic (docs/mathematics.md §9), with mₖ = (1/n)Σ‖xⱼ‖ᵏ: a gradient −(1/n)Σ yⱼσ(−zⱼ)xⱼ has
    terms 2m₁ (the sum and σ's own rounding) and m₂‖φ‖/4 (the rounding of z = Xφ through
    σ′ ≤ 1/4); a Hessian-vector product (1/n)Xᵀ(s ⊙ Xv) has 3m₂‖v‖/2 and m₃‖φ‖‖v‖/(6√3)
    (s = σ(1 − σ) ≤ 1/4, |s′| ≤ 1/(6√3))."""
    from theory._arrays import to_numpy64

    quadratic = all(hasattr(task, a) for a in ("A", "b", "A_query", "b_query", "lam"))
    logistic = all(hasattr(task, a) for a in ("X", "y", "X_query", "y_query", "lam"))
    if not (quadratic or logistic):
        raise TypeError(f"no rounding magnitudes are known for a {type(task).__name__}: pass "
                        f"magnitudes=Magnitudes(...) explicitly")
    lam = float(task.lam)
    t, p, gv = _n(to_numpy64(theta)), _n(to_numpy64(phi)), _n(to_numpy64(g))
    if quadratic:
        A, Aq = to_numpy64(task.A), to_numpy64(task.A_query)
        a, aq = abs_matrix_norm(A), abs_matrix_norm(Aq)
        outer = (aq * p, _n(to_numpy64(task.b_query)))
        stat = (a * p, _n(to_numpy64(task.b)), lam * p, lam * t)
        res = outer + (gv, a * gv / lam)
        d = A.shape[-1]
        return Magnitudes(stat, res, outer, d, d)
    X, Xq = to_numpy64(task.X), to_numpy64(task.X_query)
    r, rq = np.linalg.norm(X, axis=1), np.linalg.norm(Xq, axis=1)
    m1, m2, m3 = (float(np.mean(r ** k)) for k in (1, 2, 3))
    q1, q2 = float(np.mean(rq)), float(np.mean(rq ** 2))
    outer = (2 * q1, q2 * p / 4)
    stat = (2 * m1, m2 * p / 4, lam * p, lam * t)
    hvp = (1.5 * m2 * gv, m3 * p * gv / (6 * math.sqrt(3)))
    res = outer + (gv,) + tuple(h / lam for h in hvp)
    n, d = X.shape
    return Magnitudes(stat, res, outer, max(n, Xq.shape[0]) + d + 10, d)


#: Clarabel's default stopping tolerances (tol_gap_abs = tol_gap_rel = tol_feas = 1e-8)
SDP_TOLERANCE = 1e-8


def sdp_allowance(value: float, *, tolerance: float = SDP_TOLERANCE) -> float:
    """How far two solves of one performance-estimation SDP may put v = √τ apart, τ being the
    optimal value: each stops with |τ̂ − τ| ≤ tol·(1 + |τ|) (an interior-point method's duality
    gap and feasibility tolerances), so |v̂ − v| ≤ tol·(1 + v²)/(2v) for each, twice that for
    the difference of two. Only for values the solver reports accurate."""
    v = check_positive(value, "value")
    return 2 * tolerance * (1 + v * v) / (2 * v)
