"""Regularized logistic regression (docs/mathematics.md §9): a task family with ρ > 0 and a certified reference.

L̂(φ) = (1/n) Σⱼ log(1 + exp(−yⱼ xⱼᵀφ)) on the support data (X, y), L(φ) the same on the query
data (X_q, y_q), labels ±1, G(φ, θ) = L̂(φ) + (λ/2)‖φ − θ‖².

With s(z) = σ(z)(1 − σ(z)) ≤ 1/4, |s′| ≤ 1/(6√3), |s″| ≤ 1/8:
    ∇²L̂(φ) = (1/n) Σ s(yⱼxⱼᵀφ) xⱼxⱼᵀ,  μ = λ,  β = λ + λmax(XᵀX)/(4n),
    ρ = (1/(6√3)) (1/n) Σ ‖xⱼ‖³,  L = λmax(X_qᵀX_q)/(4m),  ‖∇L‖ ≤ (1/m) Σ ‖x_q,ⱼ‖ (everywhere),
    ‖Alg*(θ)‖ ≤ ‖θ‖ + (1/(nλ)) Σ ‖xⱼ‖.
The reference inner solution is Newton's method (with backtracking) in float64, certified by
strong convexity: ‖φ − Alg*(θ)‖ ≤ ‖∇G(φ, θ)‖/μ (plus the rounding of that gradient).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace

from theory._arrays import Sealed, changed_in_place, frozen, to_numpy64, versions
from theory.constants import Constants
from theory.tolerances import allowance, computation_magnitudes, norm_upper_bound
from validation import check_array, check_lam, check_positive

__all__ = ["LogisticTask", "CertifiedSolution", "S_MAX", "S_PRIME_MAX", "S_SECOND_MAX"]

S_MAX = 0.25                             #: max of s = σ(1 − σ)
S_PRIME_MAX = 1.0 / (6.0 * math.sqrt(3))  #: max |s′| = max |σ(1−σ)(1−2σ)|
S_SECOND_MAX = 0.125                     #: max |s″| = max |s(1 − 6s)|, at s = 1/4


def _sigmoid(xp, t):
    """σ(t) without overflow: exp only of −|t|."""
    e = xp.exp(-xp.abs(t))
    return xp.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus_neg(xp, t):
    """log(1 + exp(−t)) without overflow."""
    return xp.log1p(xp.exp(-xp.abs(t))) + xp.clip(-t, min=0.0)


@dataclass(frozen=True)
class CertifiedSolution:
    """A float64 reference inner solution with its certified error bar.

    phi: Newton's φ (float64 NumPy). error_bound: ‖φ − Alg*(θ)‖ ≤ error_bound, from
    (‖∇G(φ, θ)‖ + rounding of that gradient)/μ. gradient_norm: the computed ‖∇G(φ, θ)‖.
    newton_steps: iterations used."""

    phi: np.ndarray
    error_bound: float
    gradient_norm: float
    newton_steps: int


class LogisticTask(Sealed):
    """One regularized logistic-regression task with certified references (docs/mathematics.md §9).

    ``X`` (n × d), ``y`` (n, entries ±1), ``X_query`` (m × d), ``y_query`` (m,), ``lam`` > 0;
    NumPy arrays or torch tensors (one library, dtype, device). The task protocol
    (``inner_loss``, ``inner_grad``, ``inner_hvp``, ``outer_loss``, ``outer_grad``, ``lam``,
    ``curvature_bounds``) returns the input's array type and is differentiable by torch
    autograd on torch tensors. The references (``inner_solution``, ``certified_solution``,
    ``jacobian``, ``meta_gradient``, ``constants``) are computed in float64 and returned in
    the input's type (``certified_solution`` returns float64 NumPy).

    As for :class:`theory.QuadraticTask`, the data cannot go stale: every input is copied (NumPy
    copies read-only, torch clones watched: changed in place, they make ``constants()`` and
    ``curvature_bounds()`` refuse with a ValueError), and attributes cannot be rebound.

    Raises ValueError naming the argument for labels other than ±1, λ ≤ 0, NaN/Inf or shape
    mismatch; TypeError for mixed libraries or dtypes and for a λ that is not a real number."""

    _NAMES = ("X", "y", "X_query", "y_query")

    def __init__(self, X, y, X_query, y_query, lam):
        self.lam = check_lam(lam)
        X, y, X_query, y_query = (frozen(a) for a in (X, y, X_query, y_query))
        check_array(X, "X", ndim=2)
        n, d = X.shape
        if n < 1 or d < 1:
            raise ValueError(f"X must have at least one row and one column, got shape {tuple(X.shape)}")
        check_array(y, "y", ndim=1, like=X, shape=(n,))
        check_array(X_query, "X_query", ndim=2, like=X)
        if X_query.shape[1] != d or X_query.shape[0] < 1:
            raise ValueError(f"X_query must have shape (m, {d}) with m >= 1, got {tuple(X_query.shape)}")
        check_array(y_query, "y_query", ndim=1, like=X, shape=(X_query.shape[0],))
        for name, labels in (("y", y), ("y_query", y_query)):
            if not np.all(np.abs(to_numpy64(labels)) == 1.0):
                raise ValueError(f"{name} must contain labels +1 or -1 only")
        self.X, self.y, self.X_query, self.y_query = X, y, X_query, y_query
        self._versions = versions(X, y, X_query, y_query)
        self.dim, self.n, self.m = d, n, X_query.shape[0]
        self._xp = array_namespace(X)
        # NumPy's own matmul (array-api-compat's wrapper is one more Python call per product)
        self._matmul = np.matmul if isinstance(X, np.ndarray) else self._xp.matmul
        self._X64, self._y64 = frozen(to_numpy64(X)), frozen(to_numpy64(y))
        self._Xq64, self._yq64 = frozen(to_numpy64(X_query)), frozen(to_numpy64(y_query))
        self._lmax = float(np.linalg.eigvalsh(self._X64.T @ self._X64)[-1]) / n
        self._lmax_q = float(np.linalg.eigvalsh(self._Xq64.T @ self._Xq64)[-1]) / self.m
        self._solutions: dict = {}
        self._seal()

    # -- task protocol (array API: NumPy or torch, differentiable on torch) -------------------
    def _loss(self, X, y, phi):
        xp = self._xp
        return xp.mean(_softplus_neg(xp, y * self._matmul(X, phi)))

    def _grad(self, X, y, phi):
        xp = self._xp
        mm = self._matmul
        # φ of shape (r, d): the task at r points, row i the gradient at φᵢ
        z = y * (mm(phi, X.T) if phi.ndim > 1 else mm(X, phi))
        return -mm(y * _sigmoid(xp, -z), X) / X.shape[0]

    def inner_loss(self, phi):
        """L̂(φ) = (1/n) Σ log(1 + exp(−yⱼxⱼᵀφ))."""
        return self._loss(self.X, self.y, phi)

    def inner_grad(self, phi):
        """∇L̂(φ) = −(1/n) Σ yⱼ σ(−yⱼxⱼᵀφ) xⱼ (φ of shape (r, d): one row per point)."""
        return self._grad(self.X, self.y, phi)

    def inner_hvp(self, phi, v):
        """∇²L̂(φ)v = (1/n) Xᵀ(s ⊙ Xv), s = σ(z)(1 − σ(z)); batched over leading dims of v."""
        xp = self._xp
        mm = self._matmul
        p = _sigmoid(xp, mm(self.X, phi))
        return mm(p * (1 - p) * mm(v, self.X.T), self.X) / self.n

    def outer_loss(self, phi):
        return self._loss(self.X_query, self.y_query, phi)

    def outer_grad(self, phi):
        return self._grad(self.X_query, self.y_query, phi)

    def curvature_bounds(self) -> tuple[float, float]:
        """(β, μ) = (λ + λmax(XᵀX)/(4n), λ): valid at every φ (s ≤ 1/4, s ≥ 0)."""
        self._check_unchanged()
        return self.lam + S_MAX * self._lmax, self.lam

    def _check_unchanged(self):
        name = changed_in_place(self._NAMES, (self.X, self.y, self.X_query, self.y_query),
                                self._versions)
        if name is not None:
            raise ValueError(f"task.{name} was changed in place after the task was built, so its "
                             f"constants no longer describe it: build a new LogisticTask from "
                             f"the new data")

    # -- float64 references -------------------------------------------------------------------
    def _grad64(self, X, y, phi):
        z = y * (X @ phi)
        return -(y * _sigmoid(np, -z)) @ X / X.shape[0]

    def _hess64(self, phi):
        p = _sigmoid(np, self._X64 @ phi)
        return (self._X64.T * (p * (1 - p))) @ self._X64 / self.n

    def _G64(self, phi, theta):
        return float(np.mean(_softplus_neg(np, self._y64 * (self._X64 @ phi)))
                     + 0.5 * self.lam * np.sum((phi - theta) ** 2))

    def _out(self, x):
        xp = self._xp
        if xp is np or "numpy" in xp.__name__:
            return np.asarray(x, dtype=self.X.dtype)
        import torch

        return torch.as_tensor(x).to(dtype=self.X.dtype, device=self.X.device)

    def certified_solution(self, theta, *, max_steps: int = 100) -> CertifiedSolution:
        """Alg*(θ) by damped Newton in float64 until ‖∇G‖ stops decreasing (rounding level),
        with the certificate ‖φ − Alg*(θ)‖ ≤ (‖∇G(φ, θ)‖ + r)/λ where r is the rounding
        allowance of computing ∇G in float64 (theory.tolerances)."""
        check_array(theta, "theta", ndim=1, shape=(self.dim,))
        self._check_unchanged()   # the float64 copies below must still be the task's data
        t = to_numpy64(theta)
        key = (t.tobytes(), int(max_steps))
        if key not in self._solutions:
            self._solutions[key] = self._newton(t, int(max_steps))
        return self._solutions[key]

    def _newton(self, t, max_steps) -> CertifiedSolution:
        lam = self.lam
        phi = t.copy()
        grad = self._grad64(self._X64, self._y64, phi) + lam * (phi - t)
        best = (float(np.linalg.norm(grad)), phi)
        steps, stale = 0, 0
        while steps < max_steps and stale < 3:
            steps += 1
            step = np.linalg.solve(self._hess64(phi) + lam * np.eye(self.dim), grad)
            value, a = self._G64(phi, t), 1.0
            while a > 1e-8 and self._G64(phi - a * step, t) > value - 0.25 * a * grad @ step:
                a *= 0.5
            phi = phi - a * step
            grad = self._grad64(self._X64, self._y64, phi) + lam * (phi - t)
            gnorm = float(np.linalg.norm(grad))
            if gnorm < best[0]:
                best, stale = (gnorm, phi), 0
            else:  # no progress: the gradient is at its rounding level
                stale += 1
        gnorm, phi = best
        err = (gnorm + self._grad_rounding(t, phi, gnorm)) / lam
        return CertifiedSolution(phi, err, gnorm, steps)

    def _grad_rounding(self, theta, phi, gnorm) -> float:
        """A certified bound on |exact ‖∇G(φ, θ)‖ − computed| in float64, from the magnitudes
        that enter ∇G (theory.tolerances.computation_magnitudes: (1/n)Σ‖xⱼ‖, ‖x‖²‖φ‖, λ‖φ‖,
        λ‖θ‖) — the rule of theory.tolerances, rigorous form."""
        m = computation_magnitudes(self, theta, phi, np.zeros(self.dim))
        return norm_upper_bound("float64", gnorm, terms=m.stationarity, length=m.length,
                                dim=m.dim) - gnorm

    def inner_solution(self, theta):
        """Alg*(θ) (the certified Newton solution), in the input's array type."""
        return self._out(self.certified_solution(theta).phi)

    def jacobian(self, theta):
        """dAlg*/dθ = λ(λI + H(φ*))⁻¹ (Lemma 1) at the reference φ*."""
        phi = self.certified_solution(theta).phi
        return self._out(self.lam * np.linalg.inv(self._hess64(phi) + self.lam * np.eye(self.dim)))

    def meta_gradient(self, theta):
        """dθL(Alg*(θ)) = λ(λI + H(φ*))⁻¹∇L(φ*) by a dense float64 solve at the reference φ*.
        Its own error is at most Lemma 3's sharper bound with δ = the reference's error bar,
        δ′ = 0 (see :meth:`reference_error`)."""
        return self._out(self._meta_gradient64(self.certified_solution(theta).phi))

    def _meta_gradient64(self, phi):
        return self.lam * np.linalg.solve(self._hess64(phi) + self.lam * np.eye(self.dim),
                                          self._grad64(self._Xq64, self._yq64, phi))

    def implicit_gradient_at(self, phi):
        """(I + H(φ)/λ)⁻¹∇L(φ) at a given φ (float64 NumPy): Lemma 3's target for the CG step."""
        return self._meta_gradient64(to_numpy64(phi))

    def hessian(self, phi) -> np.ndarray:
        """∇²L̂(φ) in float64 NumPy."""
        return self._hess64(to_numpy64(phi))

    def reference_error(self, theta) -> tuple[float, float]:
        """(error bar of the reference φ*, error bar of the reference meta-gradient): the
        second is (λρB/μ² + λL/μ)·e + rounding of the dense solve, e the first (Lemma 3, sharp
        form, δ′ = 0; B the certified instance bound)."""
        sol = self.certified_solution(theta)
        c = self.constants(theta)
        g = self._meta_gradient64(sol.phi)
        # the dense solve at φ*: the terms of ∇L(φ*) and of the system's residual, times λ/μ
        m = computation_magnitudes(self, theta, sol.phi, g)
        solve_rounding = allowance("float64", terms=[c.lam / c.mu * t for t in m.residual],
                                   kappa=c.kappa, dim=self.dim)
        return sol.error_bound, ((c.lam * c.rho * c.B / c.mu ** 2 + c.lam * c.L / c.mu)
                                 * sol.error_bound + solve_rounding)

    def rho_second(self) -> float:
        """Lipschitz constant of ∇³L̂ (‖∇²L̂(φ) − ∇²L̂(φ′) − D∇²L̂(φ′)[φ − φ′]‖ ≤ ρ₂‖φ − φ′‖²/2):
        (1/8)(1/n) Σ ‖xⱼ‖⁴. Used to bound finite-difference truncation errors."""
        return S_SECOND_MAX * float(np.mean(np.linalg.norm(self._X64, axis=1) ** 4))

    def constants(self, theta, radius: float | None = None, delta: float = 0.0) -> Constants:
        """Certified constants of Assumption 2 (docs/mathematics.md §9), in float64.

        β, μ, ρ, L are global. Without ``radius``: instance constants at θ,
        B = ‖∇L(φ*)‖ + L(e + δ) and D = ‖φ*‖ + e, φ* the reference and e its error bar (so both
        are certified for Alg*(θ), and B also holds within ``delta`` of it). With ``radius`` R:
        uniform constants on ‖θ‖ ≤ R: B = (1/m)Σ‖x_q,ⱼ‖ (valid everywhere),
        D = R + (1/(nλ))Σ‖xⱼ‖."""
        check_array(theta, "theta", ndim=1, shape=(self.dim,))
        check_positive(delta, "delta", allow_zero=True)
        self._check_unchanged()
        beta, mu = self.curvature_bounds()
        norms = np.linalg.norm(self._X64, axis=1)
        rho = S_PRIME_MAX * float(np.mean(norms ** 3))
        L = S_MAX * self._lmax_q
        if radius is None:
            sol = self.certified_solution(theta)
            B = float(np.linalg.norm(self._grad64(self._Xq64, self._yq64, sol.phi))) \
                + L * (sol.error_bound + delta)
            D = float(np.linalg.norm(sol.phi)) + sol.error_bound
            return Constants(beta, mu, beta / mu, L, B, rho, D, self.lam)
        check_positive(radius, "radius", allow_zero=True)
        B = float(np.mean(np.linalg.norm(self._Xq64, axis=1)))
        D = float(radius) + float(np.sum(norms)) / (self.n * self.lam)
        return Constants(beta, mu, beta / mu, L, B, rho, D, self.lam, scope="uniform",
                         radius=float(radius))

    def __repr__(self) -> str:
        return f"LogisticTask(n={self.n}, m={self.m}, d={self.dim}, lam={self.lam:g})"

