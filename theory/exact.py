"""References in 50-digit arithmetic for quadratic tasks, each with a proven error bar
(docs/mathematics.md §2, §10).

A float64 reference cannot judge a float64 result at rounding level: with ‖θ‖ = 1e4 the exact
inner solution rounded to float64 is off by ~1e-12, and ∇L(φ*) = Aₜφ* + bₜ computed from it
cancels down to a meta-gradient of 1e-3 with an error of the same 1e-12. Here the task's stored
numbers (float64, exactly representable) are taken as exact. Every float64 is a dyadic rational
m·2^e, and so is every sum and product of them: the references are computed with those numbers
exactly, as integers with a common power of two (no rounding at all), and linear solves by
iterative refinement — one float64 LU factorization for the corrections of every pass, the
residual rhs − (A + λI)x computed exactly; each pass gains about 16 − log10 κ digits. The exact
matrix-vector products run on float64 BLAS: the matrix and the vector split into limbs of a
few dozen bits whose products and sums are integers below 2^52, hence exact
(:mod:`theory._limbs`); a task's exact data and its eigenvalue proofs are made once and kept on
the task when its data cannot change.

**The error bar is proven, not estimated.** For the refined x of (A + λI)x = rhs the exact
residual r = rhs − (A + λI)x is at hand, and ‖x − (A + λI)⁻¹rhs‖ ≤ ‖r‖/μ₋ with μ₋ a *verified*
lower bound on λmin(A + λI) (:func:`min_eigenvalue_lower_bound`: a floating-point Cholesky
factorization of A + λI − σI that runs to completion proves λmin ≥ σ − (its backward error),
Higham Thm 10.3, Rump 2006). Refinement stops once that radius is below 10^-dps relative to ‖x‖
(``dps`` = 50 by default). Every reference handed out (an object array of mpmath numbers at
``dps`` digits) is an *enclosure*: its centre, and a radius (:meth:`QuadraticReference.radius`)
that also covers the rounding of the centre to mpmath numbers and, for the meta-gradient, the
inner solution's radius carried through λ(A + λI)⁻¹Aₜ. :meth:`QuadraticReference.error` of a
float vector x against such a reference is a proven upper bound on the distance from x to the
exact quantity: ‖x − centre‖ computed exactly, its square root rounded up, plus the radius
(:meth:`QuadraticReference.error_bounds` gives the lower end as well). A verdict at
measured/bound = 1 − 3e-11 is then decided by a bound, not by a hope that 50 digits suffice.

:func:`residual_norm_bounds` evaluates the three residuals of the a-posteriori certificate
(docs/mathematics.md §5a) of a quadratic task exactly, at the stored φ and g.
"""
from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np

from theory._arrays import immutable_cache, to_numpy64
from theory._limbs import ExactMatrix
from theory.tolerances import abs_matrix_norm, unit_roundoff, underflow_threshold

__all__ = ["QuadraticReference", "DPS", "min_eigenvalue_lower_bound", "max_eigenvalue_upper_bound",
           "residual_norm_bounds", "meta_gradient_error_bound"]

DPS = 50
#: refinement passes before a solve gives up improving (its radius is still proven)
MAX_PASSES = 60


# -- dyadic vectors: (object array of Python ints M, int E), value M·2^E, exact ---------------------
def _dyadic(x) -> tuple[np.ndarray, int]:
    """A float64 array exactly, as integers with one common power of two."""
    a = to_numpy64(x)
    if not np.all(np.isfinite(a)):
        raise ValueError("a dyadic (exact) value needs finite entries")
    flat = a.reshape(-1)
    mant, exp = np.frexp(flat)
    M = (mant * 2.0 ** 53).astype(np.int64)          # exact: 53-bit mantissas
    e = exp.astype(np.int64) - 53
    nonzero = M != 0
    E = int(e[nonzero].min()) if nonzero.any() else 0
    shifts = np.where(nonzero, e - E, 0).astype(object)
    out = M.astype(object) << shifts
    return out.reshape(a.shape), E


def _dyadic_wide(x) -> tuple[np.ndarray, int]:
    """:func:`_dyadic` for float64 or for NumPy's long double (wider on x86: a 64-bit
    mantissa), exactly."""
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if a.dtype != np.longdouble or np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:
        return _dyadic(a)
    if not np.all(np.isfinite(a)):
        raise ValueError("a dyadic (exact) value needs finite entries")
    bits = np.finfo(np.longdouble).nmant + 1
    mant, exp = np.frexp(a.reshape(-1))
    pairs = [(int(m * np.longdouble(2) ** bits), int(e) - bits) for m, e in zip(mant, exp)]
    E = min((e for m, e in pairs if m), default=0)
    out = np.empty(len(pairs), dtype=object)
    for i, (m, e) in enumerate(pairs):
        out[i] = m << (e - E) if m else 0
    return out.reshape(a.shape), E


def _from_mpf(x: np.ndarray) -> tuple[np.ndarray, int]:
    """An object array of mpf exactly, as a dyadic vector."""
    pairs = []
    for v in x.reshape(-1):                    # the raw (sign, man, exp, bc): no re-rounding
        sign, man, exp, _ = (v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v)))._mpf_
        pairs.append((-int(man) if sign else int(man), int(exp)))
    exps = [e for m, e in pairs if m]
    E = min(exps) if exps else 0
    out = np.empty(len(pairs), dtype=object)
    for i, (m, e) in enumerate(pairs):
        out[i] = int(m) << (e - E) if m else 0
    return out.reshape(x.shape), E


def _align(a, Ea, b, Eb):
    E = min(Ea, Eb)
    return (a * (1 << (Ea - E)) if Ea > E else a), (b * (1 << (Eb - E)) if Eb > E else b), E


def _int_to_float(v: int, E: int) -> float:
    """v·2^E as a float (to within a unit in the last place; used for corrections only)."""
    if v == 0:
        return 0.0
    shift = max(0, abs(v).bit_length() - 62)
    return math.ldexp(float(v >> shift if v > 0 else -((-v) >> shift)), E + shift)


def _to_float_vec(M: np.ndarray, E: int) -> np.ndarray:
    return np.array([_int_to_float(int(v), E) for v in M.reshape(-1)]).reshape(M.shape)


def _top_bit(M: np.ndarray) -> int:
    """The largest bit length among the integers of M (0 when all are 0)."""
    return max((abs(int(v)).bit_length() for v in M.reshape(-1)), default=0)


def _to_mpf(M: np.ndarray, E: int) -> np.ndarray:
    """The dyadic vector as mpf numbers at the working precision."""
    out = np.empty(M.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(M.reshape(-1)):
        flat[i] = mpmath.ldexp(mpmath.mpf(int(v)), E)
    return out


def _mp(x) -> np.ndarray:
    """A float64 array as an object array of mpf (exact: every float64 is an mpf)."""
    a = to_numpy64(x)
    out = np.empty(a.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(a.reshape(-1)):
        flat[i] = mpmath.mpf(float(v))
    return out


def _to_float(x: np.ndarray) -> np.ndarray:
    """The mpf array rounded to the nearest float64s."""
    return np.array([float(v) for v in x.reshape(-1)], dtype=np.float64).reshape(x.shape)


# -- directed rounding of exact quantities ---------------------------------------------------------
def _pow2(E: int) -> Fraction:
    return Fraction(1 << E) if E >= 0 else Fraction(1, 1 << -E)


def _up(q: Fraction) -> float:
    """The smallest float64 ≥ q (q ≥ 0; inf beyond the largest float)."""
    try:
        f = float(q)
    except OverflowError:
        return math.inf
    return math.nextafter(f, math.inf) if Fraction(f) < q else f


def _down(q: Fraction) -> float:
    """The largest float64 ≤ q."""
    try:
        f = float(q)
    except OverflowError:
        return float(np.finfo(np.float64).max) if q > 0 else -math.inf
    return math.nextafter(f, -math.inf) if Fraction(f) > q else f


def _norm_range(M: np.ndarray, E: int) -> tuple[Fraction, Fraction]:
    """(lower, upper) bounds, as exact fractions, on ‖M·2^E‖₂ of a dyadic vector: the squared
    norm is an exact integer S, √S is bracketed by integer square roots."""
    S = sum(int(v) * int(v) for v in M.reshape(-1))
    root = math.isqrt(S)
    high = root if root * root == S else root + 1
    scale = _pow2(E)
    return root * scale, high * scale


def _distance(X, Ex, Y, Ey) -> tuple[Fraction, Fraction]:
    """(lower, upper) bounds on ‖X·2^Ex − Y·2^Ey‖ (exact difference, bracketed root)."""
    X, Y, E = _align(X, Ex, Y, Ey)
    return _norm_range(X - Y, E)


# -- a verified bound on the smallest eigenvalue --------------------------------------------------
def _cholesky_completes(H: np.ndarray) -> bool:
    """Whether a floating-point Cholesky factorization of the symmetric float64 matrix H runs to
    completion: every pivot positive and finite (LAPACK's dpotrf, blocked; one call, O(n³/3)
    flops, about 0.1 s at n = 2000 where the former unblocked loop took 16 s)."""
    from scipy.linalg import lapack

    H = np.asarray(H, dtype=np.float64)
    if H.size == 0 or not np.all(np.isfinite(np.diag(H))):
        return False
    with np.errstate(all="ignore"):
        R, info = lapack.dpotrf(H, lower=0, clean=0, overwrite_a=0)
    return info == 0 and bool(np.all(np.isfinite(np.diag(R))) and np.all(np.diag(R) > 0))


def _shifted_bound(A: np.ndarray, lam: float, sigma: float) -> Fraction | None:
    """A proven lower bound on λmin(A + λI) from a floating-point Cholesky factorization of
    H = A + λI − σI, or None when it does not run to completion.

    H is formed in float64 with its diagonal correctly rounded (``math.fsum``: |Eᵢᵢ| ≤
    u|hᵢᵢ|/(1 − u) + tiny) and scaled by the power of two 2^k that puts its largest entry in
    [1, 2) (exact, but for entries that underflow: |E₂ᵢⱼ| ≤ tiny, ‖E₂‖ ≤ n·tiny). If Cholesky
    completes on Hₛ = 2^-k·H, the computed factor satisfies R̂ᵀR̂ = Hₛ + ΔH with
    |ΔH| ≤ γ_{n+2}|R̂ᵀ||R̂| (Higham, Thm 10.3, which needs only completion and holds for any
    order of the inner products, so for LAPACK's blocked dpotrf too; γ_{n+1} there, one
    rounding more here for implementations that divide by a pivot as a product with its
    rounded reciprocal, as OpenBLAS's kernels do), so ‖ΔH‖₂ ≤ γ_{n+2}‖R̂‖_F² ≤ α·tr(Hₛ),
    α = γ_{n+2}/(1 − γ_{n+2}); every operation's underflow
    adds at most tiny to an entry, (n + 1)·tiny·(1 + γ) ≤ 2(n + 1)·tiny, in 2-norm at most
    2n(n + 1)·tiny. R̂ᵀR̂ ⪰ 0 gives λmin(Hₛ) ≥ −(α·tr(Hₛ) + 2n(n + 1)·tiny), hence
    λmin(A + λI) ≥ σ − 2^k(α·tr(Hₛ) + 2n(n + 1)·tiny + n·tiny) − maxᵢ|Eᵢᵢ|. Everything after
    the factorization is exact rational arithmetic."""
    n = A.shape[0]
    H = np.array(A, dtype=np.float64, copy=True)
    diag = [math.fsum((float(A[i, i]), float(lam), -float(sigma))) for i in range(n)]
    H[np.arange(n), np.arange(n)] = diag
    m = float(np.max(np.abs(H)))
    if m == 0.0 or not math.isfinite(m):
        return None
    k = math.frexp(m)[1] - 1
    Hs = np.ldexp(H, -k)
    if not _cholesky_completes(Hs):
        return None
    u, tiny = Fraction(unit_roundoff("float64")), Fraction(underflow_threshold("float64"))
    nu = (n + 2) * u
    g = nu / (1 - nu)
    alpha = g / (1 - g)
    trace = sum(Fraction(float(Hs[i, i])) for i in range(n))
    backward = alpha * trace + 2 * n * (n + 1) * tiny + n * tiny
    rounding = max(u * abs(Fraction(h)) / (1 - u) + tiny for h in diag)
    return Fraction(sigma) - _pow2(k) * backward - rounding


#: shifts tried below the floating-point λmin μ̃, as offsets w·2^-k (w = max(|μ̃|, 2^-30·max|Aᵢⱼ|)):
#: the first whose Cholesky test completes gives the bound, the nearest one the tightest
SHIFT_OFFSETS = (2.0 ** -40, 2.0 ** -20, 0.5, 4.0)
#: after the nearest shift, one more below it by this many times the proof's own backward term
#: (n + 2)u·tr(A + λI): where the nearest shift is closer to λmin than the factorization's
#: rounding (κ ≳ 1e6), whether it completes depends on the processor's kernels; this rung
#: completes on any of them and keeps the bound within a few backward terms of λmin
ROUNDING_RUNG = 4.0


def _shifts(A: np.ndarray, lam: float, mu_tilde: float) -> list[float]:
    """The shifts σ tried by :func:`min_eigenvalue_lower_bound`, nearest first: μ̃ − w·2^-40,
    μ̃ − w·2^-40 − ROUNDING_RUNG·(n + 2)u·tr(A + λI), then μ̃ − w·2^-20, μ̃ − w/2, μ̃ − 4w."""
    top = float(np.max(np.abs(A), initial=0.0))
    width = max(abs(mu_tilde), 2.0 ** -30 * top + abs(lam) * 2.0 ** -30)
    n = A.shape[0]
    trace = abs(math.fsum([*(float(A[i, i]) for i in range(n)), n * lam]))
    rung = ROUNDING_RUNG * (n + 2) * unit_roundoff("float64") * trace
    near = mu_tilde - width * SHIFT_OFFSETS[0]
    return [near, near - rung, *(mu_tilde - width * o for o in SHIFT_OFFSETS[1:])]


def min_eigenvalue_lower_bound(A, lam: float = 0.0, *, estimate: float | None = None) -> float:
    """A proven lower bound μ₋ ≤ λmin(A + λI) of a symmetric float64 matrix A (entries exact),
    rounded down; -inf when no shift can be proven.

    σ from :func:`_shifts` (μ̃ the floating-point λmin from ``eigvalsh``, or ``estimate`` when
    given: the eigenvalue a task already has), each tried by :func:`_shifted_bound` (a Cholesky
    test) from the nearest shift on; the first that completes gives the bound: within about
    w·2^-40 + n²u·‖A + λI‖ of λmin (the rounding rung's few backward terms where the nearest
    shift is inside the factorization's rounding), far below it only when μ̃ is poor. The
    proof is the Cholesky test's, whatever μ̃ is: a poor estimate only loosens the bound, and
    one from which no shift completes is replaced by ``eigvalsh``'s. A = 0 gives λ exactly."""
    A = np.asarray(to_numpy64(A), dtype=np.float64)
    lam = float(lam)
    if not np.any(A):
        return lam                              # A = 0: λmin(A + λI) = λ exactly
    tries = [] if estimate is None or not math.isfinite(estimate) else [float(estimate)]
    tries.append(None)
    for mu_tilde in tries:
        if mu_tilde is None:
            mu_tilde = float(np.linalg.eigvalsh(A + lam * np.eye(A.shape[0]))[0])
        for sigma in _shifts(A, lam, mu_tilde):
            bound = _shifted_bound(A, lam, sigma)
            if bound is not None:
                return _down(bound)
    return -math.inf


def max_eigenvalue_upper_bound(M, *, estimate: float | None = None) -> float:
    """A proven upper bound on λmax(M) of a symmetric float64 matrix (entries exact):
    −(:func:`min_eigenvalue_lower_bound` of −M), rounded up (``estimate``: of λmax(M))."""
    return -min_eigenvalue_lower_bound(-np.asarray(to_numpy64(M), dtype=np.float64),
                                       estimate=None if estimate is None else -float(estimate))


def _estimates(task) -> tuple[float | None, float | None]:
    """(λmin(A + λI), λmax(A_query)) as the task already knows them (a theory QuadraticTask
    keeps the eigenvalues it validated its matrices with), else (None, None): only the
    starting point of the Cholesky tests, never part of a proof."""
    try:
        mu = float(task.curvature_bounds()[1])
    except Exception:
        mu = None
    eig_q = getattr(task, "_eig_Aq", None)
    top = float(np.asarray(eig_q)[-1]) if isinstance(eig_q, np.ndarray) and eig_q.ndim == 1 \
        and eig_q.size else None
    return mu, top


# -- a task's data, exactly ------------------------------------------------------------------------
class _TaskData:
    """The stored numbers of a quadratic task held exactly: A and A_query as
    :class:`theory._limbs.ExactMatrix` (exact products on float64 BLAS), b, b_query and λ as
    dyadic values; with the proven μ₋ ≤ λmin(A + λI), L₊ ≥ λmax(A_query) and ‖|A_query|‖₂
    upper bound, each computed once."""

    def __init__(self, task):
        self.task = task
        self.A64 = np.asarray(to_numpy64(task.A), dtype=np.float64)
        self.Aq64 = np.asarray(to_numpy64(task.A_query), dtype=np.float64)
        self.A = ExactMatrix(self.A64)
        self.Aq = ExactMatrix(self.Aq64)
        self.b, self.bq = _dyadic(task.b), _dyadic(task.b_query)
        (lam_v, self.El) = _dyadic(np.array([float(task.lam)]))
        self.lam = int(lam_v[0])
        self.lam_float = float(task.lam)
        self._mu = self._L = self._aq = None

    def mu(self) -> float:
        """μ₋ (:func:`min_eigenvalue_lower_bound`, started from the task's own λmin estimate)."""
        if self._mu is None:
            self._mu = min_eigenvalue_lower_bound(self.A64, self.lam_float,
                                                  estimate=_estimates(self.task)[0])
        return self._mu

    def L(self) -> float:
        """L₊ ≥ max(λmax(A_query), 0) (:func:`max_eigenvalue_upper_bound`)."""
        if self._L is None:
            self._L = max(max_eigenvalue_upper_bound(self.Aq64, estimate=_estimates(self.task)[1]),
                          0.0)
        return self._L

    def aq(self) -> Fraction:
        """An upper bound on ‖|A_query|‖₂ (theory.tolerances.abs_matrix_norm), exactly."""
        if self._aq is None:
            self._aq = Fraction(abs_matrix_norm(self.Aq64))
        return self._aq


_NAMES = ("A", "b", "A_query", "b_query")


def _immutable(task) -> bool:
    """A theory task whose data cannot change: sealed, its arrays read-only NumPy arrays."""
    return immutable_cache(task, _NAMES) is not None


def _task_data(task) -> _TaskData:
    """:class:`_TaskData` of a quadratic task, kept on the task when its data cannot change (a
    NumPy QuadraticTask: so the references, the certificates' exact residuals and the
    checker's error bars of one task share one exact copy and one eigenvalue proof)."""
    cache = immutable_cache(task, _NAMES)
    if cache is None:
        return _TaskData(task)
    if "exact" not in cache:
        cache["exact"] = _TaskData(task)
    return cache["exact"]


# -- the certificate's residuals, exactly ----------------------------------------------------------
def _combine(*parts):
    """Σ of dyadic vectors (M, E) exactly: (M, E) of the sum."""
    M, E = parts[0]
    for N, F in parts[1:]:
        M, N, E = _align(M, E, N, F)
        M = M + N
    return M, E


def residual_norm_bounds(task, theta, phi, g) -> tuple[float, float, float]:
    """Upper bounds, rounded up, on the exact norms of the three residuals of the a-posteriori
    certificate (docs/mathematics.md §5a) of a quadratic task (``A, b, A_query, b_query, lam``;
    NumPy or torch, float32 or float64) at the stored θ, φ, g, computed in exact arithmetic:
    ‖∇_φG(φ, θ)‖ = ‖Aφ + b + λ(φ − θ)‖, ‖∇L(φ) − (I + A/λ)g‖ = ‖λ(A_qφ + b_q) − λg − Ag‖/λ and
    ‖∇L(φ)‖ = ‖A_qφ + b_q‖. Each is an exact integer vector with a common power of two; its
    norm is bracketed by integer square roots and rounded up (the division by λ once more).
    Needs finite θ, φ, g (ValueError otherwise)."""
    (t, Et), (p, Ep), (gv, Eg) = _dyadic(theta), _dyadic(phi), _dyadic(g)
    data = _task_data(task)
    lam, El = data.lam, data.El
    stationarity = _combine(data.A.times(p, Ep), data.b, (p * lam, El + Ep), (-t * lam, El + Et))
    v = _combine(data.Aq.times(p, Ep), data.bq)
    Ag, EAg = data.A.times(gv, Eg)
    lam_r = _combine((v[0] * lam, v[1] + El), (-gv * lam, Eg + El), (-Ag, EAg))
    lam_value = Fraction(data.lam_float)
    return (_up(_norm_range(*stationarity)[1]), _up(_norm_range(*lam_r)[1] / lam_value),
            _up(_norm_range(*v)[1]))


def _meta_radius(data: _TaskData, theta, phi, g, mu: Fraction, aq: Fraction) -> Fraction:
    """(‖Cg − λ(Aₜφ + bₜ)‖ + λ·aq·‖Cφ − (λθ − b)‖/μ₋)/μ₋ for dyadic θ, φ, g (pairs (M, E)) and
    the task's exact data: the bound of :func:`meta_gradient_error_bound`, exactly."""
    lam, El = data.lam, data.El
    (t, Et), (p, Ep), (gv, Eg) = theta, phi, g
    r_phi = _combine(data.A.times(p, Ep), (p * lam, El + Ep), (-t * lam, El + Et), data.b)
    v = _combine(data.Aq.times(p, Ep), data.bq)
    r_g = _combine(data.A.times(gv, Eg), (gv * lam, El + Eg), (-v[0] * lam, v[1] + El))
    lam_f = Fraction(lam) * _pow2(El)
    return (_norm_range(*r_g)[1] + lam_f * aq * _norm_range(*r_phi)[1] / mu) / mu


def meta_gradient_error_bound(task, theta, phi, g) -> float:
    """A proven upper bound on ‖g − dθL(Alg*(θ))‖ for any approximations φ ≈ Alg*(θ) and
    g (float64 or long double arrays, taken exactly) of a quadratic task: with C = A + λI,
    ‖g − g*‖ ≤ (‖Cg − λ(Aₜφ + bₜ)‖ + λ‖|Aₜ|‖·‖Cφ − (λθ − b)‖/μ₋)/μ₋ (g − g* =
    C⁻¹(Cg − λv(φ)) + λC⁻¹Aₜ(φ − φ*), ‖C⁻¹‖ ≤ 1/μ₋), both residuals exact, μ₋ verified
    (:func:`min_eigenvalue_lower_bound`), ‖|Aₜ|‖ an upper bound (theory.tolerances); the
    certificate of docs/mathematics.md §5a with ρ = 0 and proven constants. inf when
    A + λI cannot be proven positive definite."""
    data = _task_data(task)
    mu = data.mu()
    if not mu > 0:
        return math.inf
    return _up(_meta_radius(data, _dyadic(theta), _dyadic_wide(phi), _dyadic_wide(g),
                            Fraction(mu), data.aq()))


class QuadraticReference:
    """50-digit references of one quadratic task (anything with ``A, b, A_query, b_query, lam``),
    each an enclosure with a proven radius (module docstring).

    ``inner_solution(θ)``, ``outer_grad(φ)``, ``implicit_gradient(φ)``, ``meta_gradient(θ)``,
    ``inner_gradient_over_lam(θ)`` return object arrays of mpf (the centres);
    ``radius(ref)`` is the proven radius of one of them (an upper bound on ‖centre − exact‖);
    ``error(x, ref)`` a proven upper bound on the distance from a float array x to the exact
    quantity, ``error_bounds(x, ref)`` its (lower, upper) bounds; ``as_float(ref)`` rounds a
    reference to float64 (each entry correctly rounded). An object array made outside this
    class (e.g. by arithmetic on references) carries no radius: its numbers are taken as exact.
    The task's data are also available as mpf arrays (``A``, ``b``, ``Aq``, ``bq``, ``lam``);
    ``min_eigenvalue`` is the verified lower bound μ₋ on λmin(A + λI)."""

    def __init__(self, task, *, dps: int = DPS):
        self.dps = int(dps)
        self._task = task
        self._exact = _task_data(task)
        self._b, self._Eb = self._exact.b
        self._bq, self._Ebq = self._exact.bq
        self._lam, self._Elam = self._exact.lam, self._exact.El
        with mpmath.workdps(self.dps):
            self.lam = mpmath.mpf(float(task.lam))
        self.dim = self._exact.A.shape[0]
        self._lu = None
        self._cache: dict = {}
        self._mp_data: dict = {}
        self._radii: dict = {}

    def _data(self, name):
        if name not in self._mp_data:
            with mpmath.workdps(self.dps):
                self._mp_data[name] = _mp(getattr(self._task, name))
        return self._mp_data[name]

    A = property(lambda self: self._data("A"))
    b = property(lambda self: self._data("b"))
    Aq = property(lambda self: self._data("A_query"))
    bq = property(lambda self: self._data("b_query"))

    @property
    def min_eigenvalue(self) -> float:
        """μ₋: the verified lower bound on λmin(A + λI) (:func:`min_eigenvalue_lower_bound`)."""
        return self._exact.mu()

    def constants(self, theta):
        """The task's instance constants at θ (``task.constants(theta)``, float64) with μ and L
        replaced by proven bounds, μ₋ ≤ λmin(A + λI) and L₊ ≥ max(λmax(Aₜ), 0)
        (:func:`max_eigenvalue_upper_bound`): constants with which a certificate can be judged
        without trusting a floating-point eigenvalue. β, κ, B and D are left as they are (the
        certificate does not use them)."""
        from dataclasses import replace

        c = self._task.constants(theta)
        return replace(c, mu=min(c.mu, self.min_eigenvalue), L=max(c.L, self._exact.L()))

    def _mu_fraction(self) -> Fraction:
        mu = self.min_eigenvalue
        if not mu > 0:
            raise ArithmeticError("A + λI could not be proven positive definite: no enclosure "
                                  "of its solves (its smallest eigenvalue is at or below the "
                                  "rounding of a float64 Cholesky factorization)")
        return Fraction(mu)

    # -- exact arithmetic on dyadic vectors ----------------------------------------------------
    def _system_times(self, x, Ex):
        """(A + λI)x exactly."""
        Ax, EAx = self._exact.A.times(x, Ex)
        a, lx, E = _align(Ax, EAx, x * self._lam, self._Elam + Ex)
        return a + lx, E

    def _correction(self, r: np.ndarray) -> np.ndarray:
        """(A + λI)⁻¹r in float64 from one LU factorization of the float64 A + λI, made at the
        first correction and reused by every pass of every solve (only the corrections use it:
        the radius of a solve is proven from its exact residual whatever the corrections were)."""
        import scipy.linalg

        if self._lu is None:
            factors = getattr(self._task, "_factors", None)
            if callable(factors) and _immutable(self._task) and self._task.A.ndim == 2:
                self._lu = factors(float64=True)        # the task's own (a QuadraticTask's)
            else:
                C64 = self._exact.A64 + self._exact.lam_float * np.eye(self.dim)
                self._lu = scipy.linalg.lu_factor(C64, check_finite=False)
        return scipy.linalg.lu_solve(self._lu, r, check_finite=False)

    def _solve(self, rhs, Er):
        """(A + λI)⁻¹ rhs by refinement (float64 corrections of the exact residual, scaled by a
        power of two so that no scale of the data underflows them, all from one LU
        factorization, :meth:`_correction`), with its proven radius
        ‖r‖/μ₋: (x, Ex, radius as a Fraction). Stops once the radius is below 10^-dps·‖x‖, or
        after MAX_PASSES passes (the radius is proven either way)."""
        x, Ex = np.zeros(self.dim, dtype=object), Er
        if not any(rhs):
            return x * 0, Er, Fraction(0)
        mu = self._mu_fraction()
        target = Fraction(10) ** -self.dps
        for passes in range(MAX_PASSES + 1):
            Mx, Emx = self._system_times(x, Ex)
            r, Mx, E = _align(rhs, Er, Mx, Emx)
            r = r - Mx
            radius = _norm_range(r, E)[1] / mu       # of the current x: proven
            if radius <= target * _norm_range(x, Ex)[0] or passes == MAX_PASSES:
                break
            k = _top_bit(r) - 1                      # the residual scaled to entries below 2
            dx = self._correction(_to_float_vec(r, -k)) if k >= 0 else np.zeros(self.dim)
            if not np.any(dx):
                break
            D, Ed = _dyadic(dx)
            x, D, Ex = _align(x, Ex, D, Ed + E + k)
            x = x + D
        return x, Ex, radius

    def _inner(self, theta):
        key = ("phi", to_numpy64(theta).tobytes())
        if key not in self._cache:
            t, Et = _dyadic(theta)
            lt, b, E = _align(t * self._lam, Et + self._Elam, self._b, self._Eb)
            self._cache[key] = self._solve(lt - b, E)
        return self._cache[key]

    def _outer_grad(self, p, Ep):
        Aqp, EAqp = self._exact.Aq.times(p, Ep)
        a, bq, E = _align(Aqp, EAqp, self._bq, self._Ebq)
        return a + bq, E

    def _implicit(self, p, Ep):
        """λ(A + λI)⁻¹(A_q p + b_q) for an exact p, with its radius."""
        v, Ev = self._outer_grad(p, Ep)
        g, Eg, radius = self._solve(v, Ev)
        return g * self._lam, Eg + self._Elam, radius * Fraction(float(self._task.lam))

    def _as_dyadic(self, x):
        return _from_mpf(x) if getattr(x, "dtype", None) == object else _dyadic(x)

    def _hand_out(self, M, E, radius):
        """The centre as mpf numbers, registered with its radius: the given one plus the
        rounding of the centre to ``dps`` digits (computed exactly)."""
        with mpmath.workdps(self.dps):
            centre = _to_mpf(M, E)
        rounding = _distance(*_from_mpf(centre), M, E)[1]
        self._radii[id(centre)] = (centre, radius + rounding)
        return centre

    # -- the references --------------------------------------------------------------------------
    def inner_solution(self, theta) -> np.ndarray:
        """Alg*(θ) = (A + λI)⁻¹(λθ − b), θ taken exactly."""
        x, Ex, radius = self._inner(theta)
        return self._hand_out(x, Ex, radius)

    def inner_gradient_over_lam(self, theta) -> np.ndarray:
        """∇L̂(Alg*(θ))/λ = θ − Alg*(θ) (the inner stationarity condition A φ* + b = λ(θ − φ*)),
        with the inner solution's radius (the difference with θ is exact)."""
        x, Ex, radius = self._inner(theta)
        t, Et = _dyadic(theta)
        t, x, E = _align(t, Et, x, Ex)
        return self._hand_out(t - x, E, radius)

    def outer_grad(self, phi) -> np.ndarray:
        """∇L(φ) = Aₜφ + bₜ for a float or mpf φ (exact, then rounded to dps digits)."""
        return self._hand_out(*self._outer_grad(*self._as_dyadic(phi)), Fraction(0))

    def implicit_gradient(self, phi) -> np.ndarray:
        """(I + A/λ)⁻¹∇L(φ) = λ(A + λI)⁻¹(Aₜφ + bₜ) at a float or mpf φ (taken exactly)."""
        return self._hand_out(*self._implicit(*self._as_dyadic(phi)))

    def meta_gradient(self, theta) -> np.ndarray:
        """dθL(Alg*(θ)) = λ(A + λI)⁻¹(Aₜφ* + bₜ), computed at the refined φ̃ ≈ φ*: its radius
        is :func:`meta_gradient_error_bound`'s, (‖Cg̃ − λv(φ̃)‖ + λ‖|Aₜ|‖·‖Cφ̃ − (λθ − b)‖/μ₋)/μ₋
        with both residuals exact (the inner one carried through λC⁻¹Aₜ)."""
        key = ("g", to_numpy64(theta).tobytes())
        if key not in self._cache:
            p, Ep, _ = self._inner(theta)
            g, Eg, _ = self._implicit(p, Ep)
            radius = _meta_radius(self._exact, _dyadic(theta), (p, Ep), (g, Eg),
                                  self._mu_fraction(), self._exact.aq())
            self._cache[key] = self._hand_out(g, Eg, radius)
        return self._cache[key]

    def radius(self, reference) -> float | None:
        """The proven radius of a reference this object handed out (rounded up), None for any
        other array."""
        entry = self._radii.get(id(reference))
        return None if entry is None or entry[0] is not reference else _up(entry[1])

    def error_bounds(self, x, reference) -> tuple[float, float]:
        """(lower, upper) bounds on the distance from the float array x (taken exactly) to the
        exact quantity ``reference`` encloses: ‖x − centre‖ bracketed exactly, ∓ the radius,
        rounded outwards (a reference without a radius is taken as exact)."""
        entry = self._radii.get(id(reference))
        radius = entry[1] if entry is not None and entry[0] is reference else Fraction(0)
        low, high = _distance(*_dyadic(x), *_from_mpf(reference))
        return max(_down(low - radius), 0.0), _up(high + radius)

    def error(self, x, reference) -> float:
        """A proven upper bound on ‖x − exact‖ (the upper end of :meth:`error_bounds`): what a
        check "error ≤ bound" compares, so that its verdict is decided by a bound."""
        return self.error_bounds(x, reference)[1]

    @staticmethod
    def as_float(reference) -> np.ndarray:
        return _to_float(reference)
