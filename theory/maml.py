"""MAML and truncated backpropagation in closed form on quadratic tasks (docs/mathematics.md §7), and MAML's
exact-solve error bound on any task of Assumption 2 (ρ ≥ 0).

MAML runs K steps of gradient descent on G(·, θ) from φ₀ = θ with step α,
φₖ₊₁ = φₖ − α(∇L̂(φₖ) + λ(φₖ − θ)), and returns J_Kᵀ∇L(φ_K) with J_K = dφ_K/dθ. On a quadratic
task, with C = A + λI and P = I − αC:

    φ_K − φ* = P^K (θ − φ*),        J_K = P^K + λC⁻¹(I − P^K).

Truncated backpropagation through the last T steps treats φ_{K−T} as a constant (for T < K):
J^(T) = λC⁻¹(I − P^T); for T = K it is MAML's J_K.

Every function here works in float64 NumPy (the truth is computed once, exactly) and returns
float64 NumPy arrays whatever the task's array type.
"""
from __future__ import annotations

import math

import numpy as np

from theory._arrays import to_numpy64
from validation import check_positive

__all__ = [
    "maml_iterate",
    "nesterov_iterate",
    "maml_jacobian",
    "maml_meta_gradient",
    "maml_contraction",
    "maml_exact_solve_error_bound",
    "maml_jacobian_error_bound",
    "initial_jacobian_gap",
    "truncated_jacobian",
    "truncated_meta_gradient",
    "gd_steps_bound",
    "truncation_steps_bound",
]


def _count(name, value):
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _quadratic(task, step_size):
    """(A, λ, C, P) in float64 for a quadratic task; α must be finite and > 0."""
    a = check_positive(step_size, "step_size")
    for attr in ("A", "b", "A_query", "b_query"):
        if not hasattr(task, attr):
            raise TypeError(f"task must be a quadratic task (theory.QuadraticTask), it has no {attr}")
    A = to_numpy64(task.A)
    A = (A + A.T) / 2
    lam = float(task.lam)
    C = A + lam * np.eye(A.shape[0])
    return A, lam, C, np.eye(A.shape[0]) - a * C


def maml_contraction(task, step_size) -> float:
    """‖P‖ = ‖I − α(A + λI)‖ = max |1 − α(s + λ)| over the eigenvalues s of A: the factor by
    which each step contracts φₖ − φ* and J_k − J* (< 1 iff 0 < α < 2/β)."""
    _, lam, C, _ = _quadratic(task, step_size)
    eig = np.linalg.eigvalsh(C)
    return float(max(abs(1 - float(step_size) * eig[0]), abs(1 - float(step_size) * eig[-1])))


def maml_iterate(task, theta, step_size, inner_steps) -> np.ndarray:
    """φ_K = φ* + P^K(θ − φ*) (exact K-step gradient descent from φ₀ = θ)."""
    K = _count("inner_steps", inner_steps)
    A, lam, C, P = _quadratic(task, step_size)
    theta = to_numpy64(theta)
    phi_star = np.linalg.solve(C, lam * theta - to_numpy64(task.b))
    return phi_star + np.linalg.matrix_power(P, K) @ (theta - phi_star)


def nesterov_iterate(task, theta, step_size, momentum, inner_steps, *, start=None) -> np.ndarray:
    """x_K of Nesterov's method (docs/mathematics.md §3 variant: x₀ = y₀, x_{k+1} = y_k − α∇G(y_k),
    y_{k+1} = x_{k+1} + q(x_{k+1} − x_k)) on G(·, θ) of a quadratic task, in closed form: with
    eₖ = xₖ − φ*, e_{k+1} = P((1 + q)eₖ − q e_{k−1}), e_{−1} = e₀, P = I − αC, so in the
    eigenbasis of C = A + λI each coordinate follows a 2×2 linear recursion whose K-th power
    is taken directly (a second route to the solver's loop). ``start`` is x₀ (default θ)."""
    K = _count("inner_steps", inner_steps)
    q = float(momentum)
    if not 0.0 <= q < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    A, lam, C, _ = _quadratic(task, step_size)
    theta = to_numpy64(theta)
    x0 = theta if start is None else to_numpy64(start)
    c, V = np.linalg.eigh(C)
    phi_star = V @ ((V.T @ (lam * theta - to_numpy64(task.b))) / c)
    p = 1.0 - float(step_size) * c
    T = np.zeros((c.shape[0], 2, 2))
    T[:, 0, 0], T[:, 0, 1], T[:, 1, 0] = (1 + q) * p, -q * p, 1.0
    TK = np.linalg.matrix_power(T, K)
    e0 = V.T @ (x0 - phi_star)
    return phi_star + V @ ((TK[:, 0, 0] + TK[:, 0, 1]) * e0)


def maml_jacobian(task, step_size, inner_steps) -> np.ndarray:
    """MAML's Jacobian J_K = P^K + λC⁻¹(I − P^K) (docs/mathematics.md §7; exact, independent of θ). It solves
    J_{k+1} = (I − αC)J_k + αλI, J₀ = I."""
    K = _count("inner_steps", inner_steps)
    A, lam, C, P = _quadratic(task, step_size)
    PK = np.linalg.matrix_power(P, K)
    return PK + lam * np.linalg.solve(C, np.eye(A.shape[0]) - PK)


def truncated_jacobian(task, step_size, inner_steps, backprop_steps) -> np.ndarray:
    """Truncated backpropagation's Jacobian: λC⁻¹(I − P^T) for T < K (J_{K−T} = 0), and MAML's
    J_K for T = K."""
    K, T = _count("inner_steps", inner_steps), _count("backprop_steps", backprop_steps)
    if T > K:
        raise ValueError(f"backprop_steps must be <= inner_steps = {K}, got {T}")
    if T == K:
        return maml_jacobian(task, step_size, K)
    A, lam, C, P = _quadratic(task, step_size)
    return lam * np.linalg.solve(C, np.eye(A.shape[0]) - np.linalg.matrix_power(P, T))


def _outer_grad64(task, phi):
    return to_numpy64(task.A_query) @ phi + to_numpy64(task.b_query)


def maml_meta_gradient(task, theta, step_size, inner_steps) -> np.ndarray:
    """MAML's meta-gradient J_Kᵀ∇L(φ_K) in closed form (what autograd must reproduce)."""
    phi = maml_iterate(task, theta, step_size, inner_steps)
    return maml_jacobian(task, step_size, inner_steps).T @ _outer_grad64(task, phi)


def truncated_meta_gradient(task, theta, step_size, inner_steps, backprop_steps) -> np.ndarray:
    """Truncated backpropagation's meta-gradient J^(T)ᵀ∇L(φ_K) in closed form."""
    phi = maml_iterate(task, theta, step_size, inner_steps)
    J = truncated_jacobian(task, step_size, inner_steps, backprop_steps)
    return J.T @ _outer_grad64(task, phi)


def _check_alpha_r(constants, step_size, initial_distance):
    a = float(step_size)
    if not (math.isfinite(a) and 0 < a <= 1.0 / constants.beta * (1 + 1e-12)):
        raise ValueError(f"step_size must be in (0, 1/beta] = (0, {1 / constants.beta:.6g}], "
                         f"got {step_size!r}")
    r = check_positive(initial_distance, "initial_distance", allow_zero=True)
    return a, r


def initial_jacobian_gap(constants) -> float:
    """max((β − λ)/β, (λ − μ)/μ): an upper bound on ‖I − J*‖ = ‖H(H + λI)⁻¹‖ when
    μI ⪯ H + λI ⪯ βI (the eigenvalues h/(h + λ) with h + λ ∈ [μ, β] are largest in modulus at
    the ends). For convex L̂ (μ ≥ λ) it is 1 − λ/β; the appendix's 1 − λ/β alone is false for
    a non-convex L̂ (A = diag(−0.9, 1), λ = 1: ‖I − J*‖ = 9, 1 − λ/β = 0.5)."""
    c = constants
    return max((c.beta - c.lam) / c.beta, (c.lam - c.mu) / c.mu)


def maml_jacobian_error_bound(constants, *, step_size, inner_steps, initial_distance) -> float:
    """Upper bound on ‖J_K − J*‖, J_K = dφ_K/dθ of K gradient steps on G(·, θ) from φ₀ = θ and
    J* = dAlg*/dθ = λ(H(φ*) + λI)⁻¹ (Lemma 1), for any task of Assumption 2 and 0 < α ≤ 1/β.

    With q = 1 − αμ (every step's ‖I − α(Hₖ + λI)‖ ≤ q and ‖φₖ − φ*‖ ≤ qᵏ‖θ − φ*‖) and
    Eₖ = Jₖ − J*: Eₖ₊₁ = (I − α(Hₖ + λI))Eₖ + α(H(φ*) − Hₖ)J*, E₀ = I − J* = H(H + λI)⁻¹, so

        ‖E_K‖ ≤ q^K e₀ + K α ρ (λ/μ) q^(K−1) ‖θ − φ*‖,

    e₀ = :func:`initial_jacobian_gap` = max((β − λ)/β, (λ − μ)/μ) ≥ ‖H(H + λI)⁻¹‖: 1 − λ/β for a
    convex inner loss (μ ≥ λ), larger when L̂ is non-convex (μ < λ, H has eigenvalues down to
    μ − λ < 0), which Assumption 2 allows.

    ``initial_distance`` = ‖θ − Alg*(θ)‖. Raises ValueError if α > 1/β."""
    c = constants
    a, r = _check_alpha_r(c, step_size, initial_distance)
    K = _count("inner_steps", inner_steps)
    q = 1.0 - a * c.mu
    return q ** K * initial_jacobian_gap(c) + (K * a * c.rho * (c.lam / c.mu) * q ** (K - 1) * r
                                            if K else 0.0)


def maml_exact_solve_error_bound(constants, *, step_size, inner_steps, initial_distance,
                                 outer_grad_norm) -> float:
    """Upper bound on MAML's exact-solve error ‖J_Kᵀ∇L(φ_K) − dθL(Alg*(θ))‖ (docs/mathematics.md §7, §8), for
    any task of Assumption 2 (ρ ≥ 0) and 0 < α ≤ 1/β:

        error ≤ ‖J_K − J*‖ ‖∇L(φ_K)‖ + (λ/μ) L q^K ‖θ − φ*‖,   q = 1 − αμ,

    (non-convex L̂ included: ‖J_K − J*‖ uses :func:`initial_jacobian_gap`),

    with ‖J_K − J*‖ from :func:`maml_jacobian_error_bound`, ``outer_grad_norm`` = ‖∇L(φ_K)‖,
    ``initial_distance`` = ‖θ − Alg*(θ)‖ (since g_K − g* = (J_K − J*)ᵀ∇L(φ_K) +
    J*(∇L(φ_K) − ∇L(φ*))). On quadratic tasks ρ = 0 and it decays exactly like ‖P‖^K = q^K
    for α ≤ 1/β; it is nearly attained on a planted instance (verify.checks.maml)."""
    c = constants
    a, r = _check_alpha_r(c, step_size, initial_distance)
    jac = maml_jacobian_error_bound(c, step_size=a, inner_steps=inner_steps, initial_distance=r)
    return jac * float(outer_grad_norm) + (c.lam / c.mu) * c.L * (1.0 - a * c.mu) ** int(
        inner_steps) * r


def _log_count(kappa, ratio) -> int:
    """⌈κ · log(ratio)⌉, 0 when ratio ≤ 1."""
    k = check_positive(kappa, "kappa")
    if k < 1:
        raise ValueError(f"kappa must be >= 1, got {kappa!r}")
    return 0 if ratio <= 1 else int(math.ceil(k * math.log(ratio)))


def gd_steps_bound(kappa, distance, delta) -> int:
    """Table 1, MAML with gradient descent (upper bound): gradient descent with step 1/β on a
    β-smooth, μ-strongly convex G(·, θ) reaches ‖φ_K − φ*‖ ≤ δ within ⌈κ · log(D/δ)⌉ steps,
    D = ‖φ₀ − φ*‖. Each step maps φ − φ* to (I − H̄/β)(φ − φ*), H̄ the mean Hessian on the
    segment (μI ⪯ H̄ ⪯ βI), so ‖φ_K − φ*‖ ≤ (1 − 1/κ)^K·D ≤ e^(−K/κ)·D; on a quadratic with
    φ₀ − φ* on the bottom eigenvector the factor 1 − 1/κ is exact (nearly attained)."""
    d = check_positive(distance, "distance", allow_zero=True)
    return _log_count(kappa, d / check_positive(delta, "delta"))


def truncation_steps_bound(kappa, outer_grad_norm, eps) -> int:
    """Table 1, truncated backpropagation (upper bound, quadratic tasks with A ⪰ 0 and step
    1/β): backpropagating through the last T = ⌈κ · log(‖∇L(φ_K)‖/ε)⌉ of K steps gives an
    approx-solve error ‖(J_K − J^(T))ᵀ∇L(φ_K)‖ ≤ ε. J_K − J^(T) = P^T·J_{K−T} with
    ‖P‖ = 1 − 1/κ and ‖J_{K−T}‖ ≤ 1 (its eigenvalues lie between λ/(s + λ) and 1), so the
    error is at most (1 − 1/κ)^T‖∇L(φ_K)‖ ≤ e^(−T/κ)‖∇L(φ_K)‖."""
    g = check_positive(outer_grad_norm, "outer_grad_norm", allow_zero=True)
    return _log_count(kappa, g / check_positive(eps, "eps"))
