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
  hold on every instance): rigorous worst-case bounds from Higham's γₙ = nu/(1 − nu), in the
  model of floating point *with underflow* (Higham §2.1, (2.8); Demmel 1984):

      fl(x op y) = (x op y)(1 + δ) + η,   |δ| ≤ u,   |η| ≤ tiny,

  where tiny is the smallest normal number of the dtype (:func:`underflow_threshold`). With
  gradual underflow |η| ≤ u·tiny and η = 0 for + and −; tiny also covers hardware that flushes
  subnormal results to zero. Without the η term the model fails once the data are small: at
  entries ~1e-170 in float64 every square in a norm underflows and a computed residual is 0.
  :func:`computation_magnitudes` lists, for quadratic and logistic tasks, the magnitudes that
  enter the diagnostics a meta-gradient solver computes (‖∇_φG‖, the CG residual, ‖∇L(φ)‖),
  each an upper bound computed without underflow or overflow (:func:`upper_norm`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from validation import check_kappa, check_positive, dtype_name

__all__ = ["machine_epsilon", "unit_roundoff", "underflow_threshold", "gamma",
           "relative_tolerance", "allowance", "rounding_allowance", "sum_rounding",
           "norm_upper_bound", "Magnitudes", "computation_magnitudes", "abs_matrix_norm",
           "scaled_norm", "upper_norm", "round_up", "sdp_allowance", "SDP_TOLERANCE"]


@functools.lru_cache(maxsize=None)
def _finfo(name: str) -> tuple[float, float]:
    """(eps, tiny) of a floating dtype given by name."""
    fin = np.finfo(np.dtype(name))
    return float(fin.eps), float(fin.tiny)


def machine_epsilon(dtype) -> float:
    """Machine epsilon of a NumPy or torch floating dtype (or of its name)."""
    return _finfo(dtype if isinstance(dtype, str) else dtype_name(dtype))[0]


def unit_roundoff(dtype) -> float:
    """u = eps/2: |fl(x op y) − x op y| ≤ u|x op y| for one rounded operation."""
    return machine_epsilon(dtype) / 2


def underflow_threshold(dtype) -> float:
    """tiny, the smallest positive normal number of the dtype: the bound on the absolute error
    η of one rounded operation in the underflow range (see the module docstring)."""
    return _finfo(dtype if isinstance(dtype, str) else dtype_name(dtype))[1]


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


#: roundings committed in computing the magnitudes themselves (float64 norms, products of at
#: most three of them, a sum of at most six terms): one more γ step covers them (see
#: :func:`sum_rounding`)
MAGNITUDE_ROUNDINGS = 1


def sum_rounding(dtype, terms, *, length: int, extra_ops: int = 4, dim: int = 1,
                 underflow_gain: float = 1.0) -> float:
    """Rigorous bound on ‖fl(x) − x‖₂ for a vector x of ``dim`` entries computed as a sum of a
    few terms, each a product (matrix-vector or elementwise) with at most ``length`` summands,
    followed by at most ``extra_ops`` elementwise operations:

        γₙ · Σ terms + √dim · n · (1 + γₙ) · gain · tiny,      n = length + extra_ops + 1,

    where each term is an upper bound on the 2-norm of the *absolute* product, e.g.
    ‖|A||φ|‖ ≤ ‖|A|‖₂‖φ‖ (Higham §3.1, §3.5; any summation order). Derivation: an entry passes
    through at most length + extra_ops rounded operations, each with a relative error δ and an
    absolute η ≤ tiny (module docstring); the δ's give γ_{length+extra_ops}·(|terms|), each η is
    carried by at most that many later factors (1 + δ) ≤ 1 + γₙ and by the factors of the later
    elementwise operations, at most ``underflow_gain`` (1/λ for a product divided by λ < 1, as
    the Hessian term H(φ)g/λ of the CG residual), and √dim turns the entrywise bound into a
    2-norm. The terms are float64 upper bounds, but their products and their sum
    are rounded to nearest, within c ≤ 20 relative roundings u₆₄ of the exact value; one more
    step of γ covers that, since γ_{k+1} ≥ (1 + 1/k)γ_k ≥ (1 + u₆₄)^c γ_k for every k < 10¹⁴
    (the + 1 in n, :data:`MAGNITUDE_ROUNDINGS`); a term that underflowed to 0 was below tiny,
    which the η part covers."""
    total = 0.0
    for i, t in enumerate(terms):
        total += check_positive(t, f"terms[{i}]", allow_zero=True)
    n = int(length) + int(extra_ops) + MAGNITUDE_ROUNDINGS
    g = gamma(dtype, n)
    gain = check_positive(underflow_gain, "underflow_gain")
    return g * total + math.sqrt(int(dim)) * n * (1 + g) * gain * underflow_threshold(dtype)


def norm_upper_bound(dtype, computed_norm, *, terms, length: int, dim: int,
                     underflow_gain: float = 1.0) -> float:
    """A certified upper bound on the exact ‖x‖ from the computed fl(‖x̂‖) of a computed x̂
    (x̂ as in :func:`sum_rounding`): ‖x‖ ≤ ‖x̂‖ + ‖x̂ − x‖ with

        ‖x̂‖ ≤ (fl(‖x̂‖) + tiny) / (1 − γ_{dim+3}),

    for a norm computed as the solvers do (``solvers._common.safe_norm``: scaled by a power of
    two s with the largest |x̂ᵢ|/s in [1, 2), then √(Σ(x̂ᵢ/s)²)·s; or the plain √(Σx̂ᵢ²) where it
    is at least √(dim·tiny/u)). Derivation: the scaling is exact; each square and each of the
    dim − 1 additions, and the square root, round once (γ_{dim+2}, as without underflow); the
    squares that underflow lose at most dim·tiny in all, below u times the scaled sum (≥ 1), one
    more γ step; the final product by s is exact unless the norm itself is below tiny (an
    absolute error below tiny). ``underflow_gain`` as in :func:`sum_rounding`."""
    n = check_positive(computed_norm, "computed_norm", allow_zero=True)
    g = gamma(dtype, int(dim) + 3)
    return (n + underflow_threshold(dtype)) / (1 - g) + sum_rounding(
        dtype, terms, length=length, dim=dim, underflow_gain=underflow_gain)


def scaled_norm(x) -> float:
    """‖x‖₂ of a float64 array (flattened) without underflow or overflow, as LAPACK's nrm2: the
    entries scaled by the power of two s with s ≤ max|xᵢ| < 2s (exact), √(Σ(xᵢ/s)²)·s. Its
    rounding is that of :func:`norm_upper_bound`: ‖x‖ ≤ (scaled_norm(x) + tiny)/(1 − γ_{n+3})
    (:func:`upper_norm` applies it)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return 0.0
    with np.errstate(over="ignore", under="ignore"):
        plain = math.sqrt(float(np.dot(a, a)))
    # the plain norm where its squares lose less than one rounding to underflow (as the
    # solvers' host_norm): the same rounding bound holds for it
    if math.sqrt(a.size * _finfo("float64")[1] / (_finfo("float64")[0] / 2)) <= plain < math.inf:
        return plain
    a = np.abs(a)
    m = float(a.max())
    if m == 0.0 or not math.isfinite(m):
        return m if not math.isnan(m) else math.nan
    fin = np.finfo(np.float64)
    s = math.ldexp(1.0, min(max(math.frexp(m)[1] - 1, fin.minexp), fin.maxexp - 1))
    y = a / s
    with np.errstate(over="ignore"):
        return float(math.sqrt(float(np.dot(y, y))) * s)


def round_up(value: float, roundings: int, length: int = 1) -> float:
    """An upper bound on a nonnegative exact quantity whose float64 value ``value`` was
    computed with at most ``roundings`` relative roundings (γ-many, any of them also with an
    absolute error below tiny, ``length`` such absolute errors in all):
    (value + length·tiny)/(1 − γ_roundings), one more rounding up of that quotient included."""
    v = check_positive(value, "value", allow_zero=True)
    g = gamma("float64", int(roundings) + 1)
    return (v + int(length) * underflow_threshold("float64")) / (1 - g)


def upper_norm(x) -> float:
    """A certified upper bound on the exact ‖x‖₂ of a float64 array (the entries taken as
    exact): :func:`scaled_norm` raised by its rounding (n entries: γ_{n+3}, plus tiny)."""
    a = np.asarray(x, dtype=np.float64)
    return round_up(scaled_norm(a), a.size + 3)


def abs_matrix_norm(M) -> float:
    """A certified upper bound on ‖|M|‖₂ (the spectral norm of the entrywise absolute value):
    min(‖M‖_F, √‖M‖₁·√‖M‖_∞), computed in float64 without underflow or overflow (the Frobenius
    norm scaled, :func:`upper_norm`; the largest column and row sums of |M|, sums of
    nonnegative numbers with n − 1 roundings each and no error from underflow, then two square
    roots and a product: n + 3 roundings), each rounded up (:func:`round_up`)."""
    M = np.abs(np.asarray(M, dtype=np.float64))
    if M.size == 0:
        return 0.0
    frob = upper_norm(M)
    n = max(M.shape)
    with np.errstate(over="ignore"):
        hoelder = math.sqrt(float(M.sum(axis=0).max())) * math.sqrt(float(M.sum(axis=1).max()))
    return min(frob, round_up(hoelder, n + 3))


@dataclass(frozen=True)
class Magnitudes:
    """The magnitudes that enter the three diagnostics of a meta-gradient (docs/mathematics.md
    §5a), for :func:`sum_rounding`: ``stationarity`` (terms of ∇_φG(φ, θ) = ∇L̂(φ) + λ(φ − θ)),
    ``residual`` (terms of r = ∇L(φ) − g − ∇²L̂(φ)g/λ), ``outer_grad`` (terms of ∇L(φ)), each
    a tuple of norms; ``length``: the longest inner product among them; ``dim``: len(φ);
    ``residual_gain``: the factor by which the residual's evaluation can amplify an absolute
    (underflow) error of its products, max(1, 1/λ) for the Hessian term divided by λ
    (:func:`sum_rounding`'s ``underflow_gain``; the other two diagnostics have none)."""

    stationarity: tuple
    residual: tuple
    outer_grad: tuple
    length: int
    dim: int
    residual_gain: float = 1.0


def _n(x) -> float:
    """A certified upper bound on ‖x‖ (float64 entries taken as exact): :func:`upper_norm`."""
    return upper_norm(x)


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
    from theory._arrays import immutable_cache

    names = ("A", "b", "A_query", "b_query") if quadratic else ("X", "y", "X_query", "y_query")
    cache = immutable_cache(task, names)
    data = None if cache is None else cache.get("magnitudes")
    if data is None:        # what depends on the task's data alone (kept when it cannot change)
        data = _data_magnitudes(task, quadratic)
        if cache is not None:
            cache["magnitudes"] = data
    if quadratic:
        a, aq, nb, nbq, d = data
        outer = (aq * p, nbq)
        stat = (a * p, nb, lam * p, lam * t)
        res = outer + (gv, a * gv / lam)
        return Magnitudes(stat, res, outer, d, d, max(1.0, 1.0 / lam))
    m1, m2, m3, q1, q2, n, nq, d = data
    outer = (2 * q1, q2 * p / 4)
    stat = (2 * m1, m2 * p / 4, lam * p, lam * t)
    hvp = (1.5 * m2 * gv, m3 * p * gv / (6 * math.sqrt(3)))
    res = outer + (gv,) + tuple(h / lam for h in hvp)
    return Magnitudes(stat, res, outer, max(n, nq) + d + 10, d, max(1.0, 1.0 / lam))


def _data_magnitudes(task, quadratic: bool) -> tuple:
    """The parts of :func:`computation_magnitudes` that depend on the task's data alone:
    (‖|A|‖, ‖|A_q|‖, ‖b‖, ‖b_q‖, d) or (m₁, m₂, m₃, q₁, q₂, n, m, d)."""
    from theory._arrays import to_numpy64

    if quadratic:
        A, Aq = to_numpy64(task.A), to_numpy64(task.A_query)
        return (abs_matrix_norm(A), abs_matrix_norm(Aq), _n(to_numpy64(task.b)),
                _n(to_numpy64(task.b_query)), A.shape[-1])
    X, Xq = to_numpy64(task.X), to_numpy64(task.X_query)
    r = np.array([upper_norm(row) for row in X])
    rq = np.array([upper_norm(row) for row in Xq])
    with np.errstate(over="ignore", under="ignore"):
        m1, m2, m3 = (round_up(float(np.mean(r ** k)), X.shape[0] + k + 1) for k in (1, 2, 3))
        q1, q2 = (round_up(float(np.mean(rq ** k)), Xq.shape[0] + k + 1) for k in (1, 2))
    return m1, m2, m3, q1, q2, X.shape[0], Xq.shape[0], X.shape[1]


#: Clarabel's default stopping tolerances (tol_gap_abs = tol_gap_rel = tol_feas = 1e-8)
SDP_TOLERANCE = 1e-8


def sdp_allowance(value: float, *, tolerance: float = SDP_TOLERANCE) -> float:
    """How far two solves of one performance-estimation SDP may put v = √τ apart, τ being the
    optimal value: each stops with |τ̂ − τ| ≤ tol·(1 + |τ|) (an interior-point method's duality
    gap and feasibility tolerances), so |v̂ − v| ≤ tol·(1 + v²)/(2v) for each, twice that for
    the difference of two. Only for values the solver reports accurate."""
    v = check_positive(value, "value")
    return 2 * tolerance * (1 + v * v) / (2 * v)
