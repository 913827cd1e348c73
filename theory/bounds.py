"""The bounds of iMAML's appendix as pure functions (docs/mathematics.md §3–§6, §8).

Each function states the claim it encodes, whether it is an upper bound or tight, and where it
comes from. ``constants`` is a :class:`theory.constants.Constants` (or any object with the
attributes ``beta, mu, kappa, L, B, rho, D, lam``).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from theory.tolerances import computation_magnitudes, norm_upper_bound, round_up
from validation import check_kappa, check_positive, check_steps, dtype_name, real_number

__all__ = [
    "lemma2_steps",
    "lemma2_steps_proof_typo",
    "nesterov_distance_bound",
    "gd_steps_estimate",
    "cg_contraction",
    "cg_error_bound",
    "cg_steps_for_error",
    "neumann_contraction",
    "neumann_error_bound",
    "neumann_steps_for_error",
    "minres_contraction",
    "minres_residual_bound",
    "minres_error_bound",
    "meta_gradient_tolerances",
    "lemma3_bound",
    "lemma3_bound_sharp",
    "lemma3_B1",
    "theorem2_steps",
    "theorem2_constants",
    "theorem2_inner_steps_proof_typo",
    "theorem2_delta",
    "theorem2_inner_steps_sharp",
    "theorem2_cg_steps_proof_slip",
    "corollary1_calls",
    "Certificate",
    "aposteriori_bound",
    "certify",
]


def _ceil_log_count(factor: float, argument: float) -> int:
    """⌈factor · log(argument)⌉, and 0 when the argument is at most 1 (nothing to do)."""
    if argument <= 1.0:
        return 0
    return int(math.ceil(factor * math.log(argument)))


def lemma2_steps(kappa, distance, delta) -> int:
    """iMAML Lemma 2 (upper bound): Nesterov's accelerated gradient descent on a β-smooth,
    μ-strongly convex f (κ = β/μ) reaches ‖x − x*‖ ≤ δ within ⌈2√κ · log(2κ‖x₀ − x*‖/δ)⌉
    gradient evaluations. ``distance`` is ‖x₀ − x*‖ (the lemma's ‖x*‖ when x₀ = 0)."""
    k = check_kappa(kappa)
    return _ceil_log_count(2 * math.sqrt(k), 2 * k * check_positive(distance, "distance", allow_zero=True)
                           / check_positive(delta, "delta"))


def lemma2_steps_proof_typo(kappa, distance, delta) -> int:
    """The count the proof of Theorem 2 writes, ⌈2 log(2κ‖x₀ − x*‖/δ)⌉, without the √κ of
    Lemma 2 (docs/mathematics.md §6: a typo; the suite shows it is too small)."""
    k = check_kappa(kappa)
    return _ceil_log_count(2.0, 2 * k * check_positive(distance, "distance", allow_zero=True)
                           / check_positive(delta, "delta"))


def nesterov_distance_bound(kappa, steps, initial_distance) -> float:
    """Upper bound on ‖x_k − x*‖ for the Nesterov variant of docs/mathematics.md §3 (x₀ = y₀, step 1/β,
    momentum (√κ−1)/(√κ+1)): √(κ+1) · (1 − 1/√κ)^(k/2) · ‖x₀ − x*‖. Follows from the standard
    guarantee f(x_k) − f* ≤ (1 − 1/√κ)^k (f(x₀) − f* + (μ/2)‖x₀ − x*‖²) (Nesterov 2004, Thm 2.2.3)."""
    k = check_kappa(kappa)
    steps = check_steps(steps, "steps")
    d0 = check_positive(initial_distance, "initial_distance", allow_zero=True)
    return math.sqrt(k + 1) * (1 - 1 / math.sqrt(k)) ** (steps / 2) * d0


def gd_steps_estimate(kappa, distance, delta) -> int:
    """Gradient descent with step 1/β contracts ‖x − x*‖ by (1 − 1/κ) per step on quadratics,
    tightly on the bottom eigenvector: ⌈log(‖x₀ − x*‖/δ) / −log(1 − 1/κ)⌉ ≈ κ·log(‖x₀−x*‖/δ)
    steps (docs/mathematics.md §3's negative control; exact for a start on the bottom eigenvector)."""
    k = check_kappa(kappa)
    ratio = check_positive(distance, "distance", allow_zero=True) / check_positive(delta, "delta")
    if ratio <= 1 or k == 1:
        return 0 if ratio <= 1 else 1
    return int(math.ceil(math.log(ratio) / -math.log1p(-1 / k)))


def cg_contraction(kappa) -> float:
    """q = (√κ − 1)/(√κ + 1), the Chebyshev rate of CG (and Nesterov's momentum)."""
    s = math.sqrt(check_kappa(kappa))
    return (s - 1) / (s + 1)


def cg_error_bound(kappa, steps, initial_error, *, norm: str = "2") -> float:
    """Conjugate gradient, Chebyshev bound (upper bound; docs/mathematics.md §4): after k steps on a system
    with condition number κ, ‖g_k − g*‖_M ≤ 2 q^k ‖g₀ − g*‖_M, and in the Euclidean norm
    ‖g_k − g*‖ ≤ 2√κ q^k ‖g₀ − g*‖, q = (√κ−1)/(√κ+1). ``initial_error`` is in the same norm."""
    if norm not in ("2", "M"):
        raise ValueError(f"norm must be '2' or 'M', got {norm!r}")
    steps = check_steps(steps, "steps")
    e0 = check_positive(initial_error, "initial_error", allow_zero=True)
    factor = 2.0 * (math.sqrt(check_kappa(kappa)) if norm == "2" else 1.0)
    return min(factor * cg_contraction(kappa) ** steps, factor) * e0


def _interval(low, high, name):
    lo, hi = real_number(low, f"{name}[0]"), real_number(high, f"{name}[1]")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be a finite interval (low, high) with low <= high, got "
                         f"{(low, high)!r}")
    return lo, hi


def neumann_contraction(spectrum, alpha) -> float:
    """‖I − αM‖ = max(|1 − α·low|, |1 − α·high|) for a symmetric M whose eigenvalues lie in
    ``spectrum`` = (low, high) (an upper bound; the norm itself when both ends are eigenvalues):
    the factor by which one step of the Neumann series / Richardson iteration
    x ← x + α(b − Mx) contracts the error (docs/mathematics.md §4a). Below 1 exactly when
    0 < low and α·high < 2 (M positive definite, α‖M‖ < 2); at least 1 otherwise (the series
    does not converge for a start with a component along the offending eigenvector)."""
    lo, hi = _interval(*spectrum, "spectrum")
    a = check_positive(alpha, "alpha")
    return max(abs(1.0 - a * lo), abs(1.0 - a * hi))


def neumann_error_bound(spectrum, alpha, steps, initial_error) -> float:
    """The truncated Neumann series (upper bound; docs/mathematics.md §4a): after k steps of
    x ← x + α(b − Mx), x_k − x* = (I − αM)^k(x₀ − x*), so ‖x_k − x*‖ ≤ ‖I − αM‖^k‖x₀ − x*‖
    (from x₀ = 0: ‖I − αM‖^k‖x*‖). Attained when x₀ − x* is an eigenvector of M at the end
    of ``spectrum`` that gives :func:`neumann_contraction`. It is also the fixed-point
    iteration's bound with α = ηλ (§4a). Grows without bound when the contraction exceeds 1
    (inf beyond float64's range)."""
    steps = check_steps(steps, "steps")
    e0 = check_positive(initial_error, "initial_error", allow_zero=True)
    q = neumann_contraction(spectrum, alpha)
    if e0 == 0.0:
        return 0.0
    if q > 1.0 and steps * math.log(q) + math.log(e0) > math.log(sys.float_info.max):
        return math.inf                     # the series diverges past float64's range
    return q ** steps * e0


def neumann_steps_for_error(spectrum, alpha, rel_error) -> int | None:
    """The smallest k with ‖I − αM‖^k ≤ ``rel_error`` (the Neumann series' steps to a relative
    accuracy, docs/mathematics.md §4a), or None when the series does not converge
    (contraction ≥ 1)."""
    target = check_positive(rel_error, "rel_error")
    q = neumann_contraction(spectrum, alpha)
    if target >= 1.0:
        return 0
    if q >= 1.0:
        return None
    if q == 0.0:
        return 1
    k = max(0, math.ceil(math.log(target) / math.log(q)) - 1)
    while q ** k > target:                      # settle the rounding of the logarithms
        k += 1
    return k


def _minres_intervals(positive, negative):
    """(c, d) and, for an indefinite spectrum, (a, b) with the negative interval given as
    magnitudes a ≥ b > 0 (eigenvalues in [−a, −b] ∪ [c, d]), both made of equal length."""
    c, d = _interval(*positive, "positive")
    if c <= 0:
        raise ValueError(f"positive must lie above 0, got {positive!r}")
    if negative is None:
        return c, d, None
    lo, hi = _interval(*negative, "negative")
    if hi >= 0:
        raise ValueError(f"negative must lie below 0, got {negative!r}")
    a, b = -lo, -hi
    # equal lengths: enlarge the shorter interval away from 0 (the spectrum stays inside)
    if a - b < d - c:
        a = b + (d - c)
    else:
        d = c + (a - b)
    return c, d, (a, b)


def minres_contraction(positive, negative=None) -> float:
    """The rate of MINRES's residual bound (docs/mathematics.md §4b): for eigenvalues in
    [c, d] (0 < c ≤ d), q = (√κ − 1)/(√κ + 1) with κ = d/c, per step; for an indefinite
    spectrum in [−a, −b] ∪ [c, d] (``negative`` = (−a, −b), after enlarging the shorter interval
    to equal lengths), q = (√(ad) − √(bc))/(√(ad) + √(bc)), per **two** steps."""
    c, d, neg = _minres_intervals(positive, negative)
    if neg is None:
        return cg_contraction(d / c)
    a, b = neg
    u, v = math.sqrt(a * d), math.sqrt(b * c)
    return (u - v) / (u + v)


def minres_residual_bound(steps, initial_residual, *, positive, negative=None) -> float:
    """MINRES (upper bound; docs/mathematics.md §4b): the residual after k steps from x₀,
    ‖r_k‖ ≤ min(1, 2q^k)·‖r₀‖ for eigenvalues in ``positive`` = [c, d] (q of
    :func:`minres_contraction`: the Chebyshev bound, as CG's but on the residual and without
    √κ), and ‖r_k‖ ≤ min(1, 2q^⌊k/2⌋)·‖r₀‖ for eigenvalues in [−a, −b] ∪ [c, d]
    (``negative`` = (−a, −b)): the two-interval bound of Elman, Silvester & Wathen, *Finite
    Elements and Fast Iterative Solvers* (2005), Theorem 6.13 (for [−d, −c] ∪ [c, d]: Greenbaum,
    *Iterative Methods for Solving Linear Systems*, 1997, §3.1), derived in §4b. The factor
    min(1, ·) is MINRES's monotone residual."""
    steps = check_steps(steps, "steps")
    r0 = check_positive(initial_residual, "initial_residual", allow_zero=True)
    q = minres_contraction(positive, negative)
    power = steps if negative is None else steps // 2
    return min(1.0, 2.0 * q ** power) * r0


def minres_error_bound(steps, initial_residual, *, positive, negative=None) -> float:
    """‖x_k − x*‖ ≤ ‖M⁻¹‖·‖r_k‖ with ‖M⁻¹‖ ≤ 1/min(|b|, c), the residual bound of
    :func:`minres_residual_bound` (upper bound; docs/mathematics.md §4b)."""
    c = _interval(*positive, "positive")[0]
    gap = c if negative is None else min(c, -_interval(*negative, "negative")[1])
    return minres_residual_bound(steps, initial_residual, positive=positive,
                                 negative=negative) / gap


def lemma3_B1(constants, *, sharp: bool = False) -> float:
    """B₁ = 2λρB/μ² + λL/μ (Lemma 3 / Theorem 2 as stated); without the 2 when ``sharp``."""
    c = constants
    return (1.0 if sharp else 2.0) * c.lam * c.rho * c.B / c.mu ** 2 + c.lam * c.L / c.mu


def lemma3_bound(constants, delta, delta_prime) -> float:
    """iMAML Lemma 3 as stated (upper bound): if ‖φ − Alg*(θ)‖ ≤ δ,
    ‖g − (I + H(φ)/λ)⁻¹∇L(φ)‖ ≤ δ′ and δ < μ/(2ρ), then
    ‖g − dθL(Alg*(θ))‖ ≤ (2λρB/μ² + λL/μ)δ + δ′. Raises ValueError when δ ≥ μ/(2ρ)."""
    d = check_positive(delta, "delta", allow_zero=True)
    dp = check_positive(delta_prime, "delta_prime", allow_zero=True)
    if constants.rho > 0 and d >= constants.mu / (2 * constants.rho):
        raise ValueError(f"Lemma 3 needs delta < mu/(2 rho) = {constants.mu / (2 * constants.rho):.3g},"
                         f" got delta={d:.3g}; use lemma3_bound_sharp, which has no such condition")
    return lemma3_B1(constants) * d + dp


def lemma3_bound_sharp(constants, delta, delta_prime) -> float:
    """Lemma 3 without the proof's factor 2 (docs/mathematics.md §5; upper bound, no condition on δ):
    ‖g − dθL(Alg*(θ))‖ ≤ (λρB/μ² + λL/μ)δ + δ′, since λI + H(Alg*(θ)) ⪰ μI gives
    ‖(M + Δ)⁻¹ − M⁻¹‖ ≤ ρδ/μ². For ρ = 0 it equals the stated bound and is attained."""
    d = check_positive(delta, "delta", allow_zero=True)
    dp = check_positive(delta_prime, "delta_prime", allow_zero=True)
    return lemma3_B1(constants, sharp=True) * d + dp


def theorem2_steps(constants, eps) -> tuple[int, int]:
    """iMAML Theorem 2 (sufficient counts): Nesterov on G(·, θ) from φ₀ = 0 for
    T_inner = ⌈2√κ log(8κD(B₁/ε + ρ/μ))⌉ steps, then CG from g₀ = 0 for
    T_cg = ⌈2√κ log(4κ(λ/μ)B/ε)⌉ steps, give ‖g − dθL(Alg*(θ))‖ ≤ ε. Returns (T_inner, T_cg)."""
    c = constants
    e = check_positive(eps, "eps")
    root = 2 * math.sqrt(check_kappa(c.kappa))
    t_inner = _ceil_log_count(root, 8 * c.kappa * c.D * (lemma3_B1(c) / e + c.rho / c.mu))
    t_cg = _ceil_log_count(root, 4 * c.kappa * (c.lam / c.mu) * c.B / e)
    return t_inner, t_cg


def theorem2_constants(task, theta, eps):
    """(constants, δ) for Theorem 2 on one task: the task's instance constants at θ with B valid
    within δ = ε/(2B₁) of Alg*(θ), as the theorem's proof needs (it bounds ‖∇L‖ at the
    approximate φ too). With B₁ = 0 (L = ρ = 0) the meta-gradient does not depend on φ: δ = inf.
    ``task`` is anything with ``constants(theta, delta=...)`` (a quadratic or logistic task)."""
    c0 = task.constants(theta)
    if lemma3_B1(c0) == 0:
        return c0, math.inf
    delta = check_positive(eps, "eps") / (2 * lemma3_B1(c0))
    return task.constants(theta, delta=delta), delta


def theorem2_inner_steps_proof_typo(constants, eps) -> int:
    """The inner count of the proof of Theorem 2 as written, ⌈2 log(2κD/δ)⌉ with
    δ = min{ε/(2B₁), μ/(2ρ)} (no √κ: docs/mathematics.md §6's typo)."""
    delta = theorem2_delta(constants, eps)
    if not math.isfinite(delta):
        return 0
    return lemma2_steps_proof_typo(constants.kappa, constants.D, delta)


def theorem2_delta(constants, eps) -> float:
    """The proof's δ = min{ε/(2B₁), μ/(2ρ)} (docs/mathematics.md §6): the inner accuracy that,
    with δ′ = ε/2, makes Lemma 3 give ε (inf when B₁ = ρ = 0)."""
    c = constants
    e = check_positive(eps, "eps")
    delta = e / (2 * lemma3_B1(c)) if lemma3_B1(c) > 0 else math.inf
    if c.rho > 0:
        delta = min(delta, c.mu / (2 * c.rho))
    return delta


def theorem2_inner_steps_sharp(constants, eps) -> int:
    """⌈2√κ log(4κD(B₁/ε + ρ/μ))⌉: what the proof of Theorem 2 needs (upper bound). Lemma 2
    asks 2√κ log(2κD/δ) with 1/δ = max(2B₁/ε, 2ρ/μ) ≤ 2(B₁/ε + ρ/μ): 4κD, where the theorem
    states 8κD — a slack of 2√κ·log 2 steps."""
    c = constants
    e = check_positive(eps, "eps")
    return _ceil_log_count(2 * math.sqrt(check_kappa(c.kappa)),
                           4 * c.kappa * c.D * (lemma3_B1(c) / e + c.rho / c.mu))


def theorem2_cg_steps_proof_slip(constants, eps) -> int:
    """The CG count of the proof of Theorem 2 as written, ⌈2 log(4κ(λ/μ)B/ε)⌉: the line
    "2 log(2κ‖x*‖/δ′) ≤ 2 log(4κ(λ/μ)B/ε)" drops the √κ of Lemma 2 (docs/mathematics.md §6)."""
    c = constants
    e = check_positive(eps, "eps")
    return _ceil_log_count(2.0, 4 * c.kappa * (c.lam / c.mu) * c.B / e)


def corollary1_calls(n_tasks, L_F, gap, eps) -> float:
    """iMAML Corollary 1 (upper bound): with M tasks, meta-gradients accurate to ε/2 and step
    1/L_F, gradient descent on F from θ = 0 reaches ‖∇F(θ)‖ ≤ ε within
    4·M·L_F·(F(0) − min F)/ε² calls to the meta-gradient routine."""
    if int(n_tasks) != n_tasks or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
    return (4 * n_tasks * check_positive(L_F, "L_F") * check_positive(gap, "gap", allow_zero=True)
            / check_positive(eps, "eps") ** 2)


@dataclass(frozen=True)
class Certificate:
    """An a-posteriori bound on the exact-solve error of one computed meta-gradient (docs/mathematics.md §5a).

    bound: certified ‖g − dθL(Alg*(θ))‖ ≤ bound. delta, delta_prime, B: the certified δ, δ′ and
    B at Alg*(θ) that went into Lemma 3's sharper form. rounding: how much of ``bound`` comes
    from the rounding of the residuals (bound minus the same formula at the solver's computed
    norms; 0 for a bound in exact arithmetic; negative where the exact residuals are below the
    computed ones). rounding_safe: whether that rounding was bounded
    (False: the bound holds in exact arithmetic only, and can fail at rounding level). method:
    how the residual norms were bounded — ``"model"`` (the solver's computed norms raised by
    the rounding model of theory.tolerances), ``"exact residuals"`` (the residuals of the
    stored φ and g evaluated exactly, theory.exact.residual_norm_bounds) or
    ``"exact arithmetic"`` (the computed norms taken as exact: not safe)."""

    bound: float
    delta: float
    delta_prime: float
    B: float
    rounding: float = 0.0
    rounding_safe: bool = False
    method: str = "exact arithmetic"


def _lemma3_sharp_terms(c, delta, delta_prime, outer_grad_norm):
    B = outer_grad_norm + c.L * delta
    return (c.lam * c.rho * B / c.mu ** 2 + c.lam * c.L / c.mu) * delta + delta_prime, B


def aposteriori_bound(constants, *, stationarity, system_residual, outer_grad_norm,
                      stationarity_rounding=0.0, residual_rounding=0.0,
                      outer_grad_rounding=0.0) -> Certificate:
    """Lemma 3 made computable (docs/mathematics.md §5a; upper bound):
    δ ≤ ‖∇_φG(φ, θ)‖/μ, δ′ ≤ (λ/μ)‖r‖ with r = ∇L(φ) − (I + H(φ)/λ)g, B ≤ ‖∇L(φ)‖ + Lδ, then
    the sharper Lemma 3 bound (λρB/μ² + λL/μ)δ + δ′. Needs μ, L, ρ, λ of ``constants`` only.

    The three norms are the computed ones; each ``*_rounding`` bounds |exact − computed| for
    the matching norm (:func:`certify` derives them from the magnitudes that enter each
    residual, theory.tolerances). With the defaults 0 the bound holds in exact arithmetic only:
    at rounding level a computed residual can be far below the exact one."""
    c = constants
    s = check_positive(stationarity, "stationarity", allow_zero=True)
    r = check_positive(system_residual, "system_residual", allow_zero=True)
    v = check_positive(outer_grad_norm, "outer_grad_norm", allow_zero=True)
    es = check_positive(stationarity_rounding, "stationarity_rounding", allow_zero=True)
    er = check_positive(residual_rounding, "residual_rounding", allow_zero=True)
    ev = check_positive(outer_grad_rounding, "outer_grad_rounding", allow_zero=True)
    delta, delta_prime = (s + es) / c.mu, c.lam / c.mu * (r + er)
    bound, B = _lemma3_sharp_terms(c, delta, delta_prime, v + ev)
    exact_arithmetic, _ = _lemma3_sharp_terms(c, s / c.mu, c.lam / c.mu * r, v)
    return Certificate(bound, delta, delta_prime, B, bound - exact_arithmetic,
                       rounding_safe=es > 0 and er > 0 and ev > 0,
                       method="model" if es > 0 and er > 0 and ev > 0 else "exact arithmetic")


#: relative roundings in evaluating the certificate's formula from its three norms (δ, δ′, B and
#: (λρB/μ² + λL/μ)δ + δ′: fewer than this many along any path); the rigorous certificate is
#: raised by them (theory.tolerances.round_up)
FORMULA_ROUNDINGS = 20
#: the model's certificate is recomputed from the exact residuals (quadratic tasks) when its
#: rounding is at least this share of it: the residuals computed in floating point are then
#: rounding noise, and only their exact values say how good φ and g are
EXACT_RESIDUALS_SHARE = 0.5


def _raised(cert: Certificate, method: str, computed: float) -> Certificate:
    """``cert`` with its bound raised by the rounding of its own formula, marked safe."""
    bound = round_up(cert.bound, FORMULA_ROUNDINGS, FORMULA_ROUNDINGS)
    return Certificate(bound, cert.delta, cert.delta_prime, cert.B, bound - computed,
                       rounding_safe=True, method=method)


def _is_quadratic(task) -> bool:
    return all(hasattr(task, a) for a in ("A", "b", "A_query", "b_query", "lam"))


def certify(result, constants, *, task=None, theta=None, magnitudes=None,
            exact_arithmetic=False):
    """The a-posteriori certificate (:func:`aposteriori_bound`, docs/mathematics.md §5a) of a
    meta-gradient result (``solvers.MetaGradientResult``), safe in floating point at any scale
    of the data; ``certify(result, constants)`` is enough: the result carries its task and θ.

    How the three residual norms (‖∇_φG(φ, θ)‖, ‖∇L(φ) − (I + H(φ)/λ)g‖, ‖∇L(φ)‖) are bounded:

    - ``"model"``: each norm the solver computed is raised to a certified upper bound on the
      exact one (theory.tolerances.norm_upper_bound, the rounding model with underflow) from
      the magnitudes that enter it — from the task's data, θ, φ and g (quadratic and logistic
      tasks: theory.tolerances.computation_magnitudes) or given as ``magnitudes=`` — and the
      unit roundoff of the dtype of ``result.gradient``;
    - ``"exact residuals"`` (quadratic tasks, when the model's rounding is at least
      :data:`EXACT_RESIDUALS_SHARE` of its certificate): the residuals of the stored φ and g
      evaluated exactly (theory.exact.residual_norm_bounds), the smaller certificate kept (both
      are proven). This is what reaches κ = 1e6 at d = 1000, where the worst-case rounding model
      (γ_d times the magnitudes) exceeds the true residuals by orders of magnitude.

    Either way the bound is raised by the rounding of its own formula (:data:`FORMULA_ROUNDINGS`)
    and ``rounding_safe=True``. A task of unknown kind (no magnitudes known) is refused with a
    TypeError, unless ``magnitudes=`` is given or ``exact_arithmetic=True`` asks explicitly for
    the bound of the computed norms taken as exact (``rounding_safe=False``: it can fail at
    rounding level, e.g. on large ‖θ‖ with a small meta-gradient). ``task=`` and ``theta=``
    (both or neither) override what the result carries. A result for a stack of n tasks gets a
    tuple of n certificates (``constants`` one per task)."""
    if (task is None) != (theta is None):
        raise TypeError("certify needs both task= and theta= (or neither: the result's own)")
    if getattr(result, "n_tasks", None) is not None:
        per_task = tuple(constants) if isinstance(constants, (tuple, list)) else None
        if per_task is None or len(per_task) != result.n_tasks:
            raise ValueError(f"constants must be a tuple of one Constants per task "
                             f"({result.n_tasks}) for a stacked result")
        return tuple(certify(result.row(i), c, task=None if task is None else task[i],
                             theta=None if theta is None else theta[i], magnitudes=magnitudes,
                             exact_arithmetic=exact_arithmetic)
                     for i, c in enumerate(per_task))
    norms = dict(stationarity=float(result.stationarity), system_residual=float(result.system_residual),
                 outer_grad_norm=float(result.outer_grad_norm))
    computed = aposteriori_bound(constants, **norms)
    if exact_arithmetic:
        return computed
    if task is None:
        task, theta = getattr(result, "task", None), getattr(result, "theta", None)
    if magnitudes is None:
        if task is None or theta is None:
            raise TypeError("certify cannot bound the rounding of this result's residuals: it "
                            "carries no task and theta; pass task= and theta=, or "
                            "magnitudes=, or exact_arithmetic=True for a bound in exact "
                            "arithmetic only")
        try:
            magnitudes = computation_magnitudes(task, theta, result.phi, result.gradient)
        except TypeError as err:
            raise TypeError(f"certify cannot bound the rounding of this result's residuals: "
                            f"{err}, or exact_arithmetic=True for a bound in exact arithmetic "
                            f"only") from None
    m, dt = magnitudes, dtype_name(result.gradient)

    def up(value, terms, gain=1.0):
        # strictly above the computed value even when the terms vanish (the norm's own rounding)
        return max(norm_upper_bound(dt, value, terms=terms, length=m.length, dim=m.dim,
                                    underflow_gain=gain) - float(value), 5e-324)

    model = _raised(aposteriori_bound(
        constants, **norms, stationarity_rounding=up(norms["stationarity"], m.stationarity),
        residual_rounding=up(norms["system_residual"], m.residual, getattr(m, "residual_gain", 1.0)),
        outer_grad_rounding=up(norms["outer_grad_norm"], m.outer_grad)), "model", computed.bound)
    if not (task is not None and _is_quadratic(task)
            and model.rounding >= EXACT_RESIDUALS_SHARE * model.bound):
        return model
    from theory._arrays import to_numpy64
    from theory.exact import residual_norm_bounds

    # (finite: the three computed norms, checked finite above, are of vectors built from them)
    s, r, v = residual_norm_bounds(task, *(to_numpy64(x) for x in (theta, result.phi,
                                                                     result.gradient)))
    exact = _raised(aposteriori_bound(constants, stationarity=s, system_residual=r,
                                      outer_grad_norm=v), "exact residuals", computed.bound)
    return exact if exact.bound < model.bound else model


def cg_steps_for_error(kappa, rel_error, *, norm: str = "2") -> int:
    """The smallest k with :func:`cg_error_bound` (relative form, initial error 1) ≤ ``rel_error``:
    the CG steps the Chebyshev bound asks for to reach a relative accuracy (docs/mathematics.md §4)."""
    target = check_positive(rel_error, "rel_error")
    q = cg_contraction(kappa)
    factor = 2.0 * (math.sqrt(check_kappa(kappa)) if norm == "2" else 1.0)
    if factor <= target:
        return 0
    if q == 0.0:
        return 1
    k = max(0, math.ceil(math.log(target / factor) / math.log(q)) - 1)
    while cg_error_bound(kappa, k, 1.0, norm=norm) > target:   # settle rounding of the logs
        k += 1
    return k


def meta_gradient_tolerances(constants, eps) -> tuple[float, float]:
    """Residual targets for a meta-gradient accurate to ``eps``: the a-posteriori certificate
    (docs/mathematics.md §5a, :func:`aposteriori_bound`) solved for its two residuals.

    Returns (inner_tol, cg_tol) such that any φ, g with ‖∇_φG(φ, θ)‖ ≤ inner_tol and
    ‖∇L(φ) − (I + H(φ)/λ)g‖ ≤ cg_tol have certificate ≤ ``eps`` (upper bound, exact
    arithmetic), given ``constants`` (μ, L, ρ, λ, and B ≥ ‖∇L(Alg*(θ))‖, e.g. a task's instance
    constants at θ). Derivation: the certificate is (c₁B′ + c₂)δ + δ′ with c₁ = λρ/μ²,
    c₂ = λL/μ, δ = ‖∇G‖/μ, δ′ = (λ/μ)‖r‖ and B′ = ‖∇L(φ)‖ + Lδ ≤ B + 2Lδ (∇L is L-Lipschitz
    and ‖φ − Alg*(θ)‖ ≤ δ). Half of ``eps`` to each term: δ′ ≤ ε/2 gives cg_tol = εμ/(2λ);
    2c₁Lδ² + (c₁B + c₂)δ ≤ ε/2 holds up to its positive root δ* = ε/(b + √(b² + 4c₁Lε)),
    b = c₁B + c₂, so inner_tol = μδ*. With L = ρ = 0 the meta-gradient does not depend on φ:
    inner_tol = inf."""
    c = constants
    e = check_positive(eps, "eps")
    c1, c2 = c.lam * c.rho / c.mu ** 2, c.lam * c.L / c.mu
    b = c1 * c.B + c2
    cg_tol = e * c.mu / (2 * c.lam)
    if b == 0.0 and c1 * c.L == 0.0:
        return math.inf, cg_tol
    return c.mu * e / (b + math.sqrt(b * b + 4 * c1 * c.L * e)), cg_tol

