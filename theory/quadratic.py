"""Quadratic tasks (iMAML Appendix F.1, docs/mathematics.md §2): the exact reference.

L̂(φ) = ½ φᵀAφ + φᵀb (inner / support loss), L(φ) = ½ φᵀAₜφ + φᵀbₜ (outer / query loss),
G(φ, θ) = L̂(φ) + (λ/2)‖φ − θ‖².
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device

from theory._arrays import to_numpy64
from theory.constants import Constants
from theory.tolerances import relative_tolerance
from validation import check_array, check_lam, check_positive, check_same_namespace, check_symmetric_psd

__all__ = ["QuadraticTask"]


class QuadraticTask:
    """One quadratic meta-learning task with exact references.

    Accepts NumPy arrays or torch tensors (CPU or CUDA, float32 or float64); every result is in
    the input's array type, dtype and device. Provides the task protocol used by the solvers
    (``inner_loss``, ``inner_grad``, ``inner_hvp``, ``outer_loss``, ``outer_grad``, ``lam``,
    ``curvature_bounds``) and the exact references solvers never call (``inner_solution``,
    ``jacobian``, ``meta_gradient``, ``constants``).

    ``psd_rtol`` overrides the relative tolerance (default eps·d² of the dtype) within which A
    and Aₜ must be symmetric and positive semidefinite.

    Raises ValueError naming the argument for a non-symmetric or indefinite ``A``/``A_query``,
    λ ≤ 0, NaN/Inf, or mismatched shapes; TypeError for mixed libraries or dtypes.
    """

    def __init__(self, A, b, A_query, b_query, lam, *, psd_rtol=None):
        self.lam = check_lam(lam)
        check_array(A, "A", ndim=2)
        # symmetry / semidefiniteness are judged up to rounding of the data's own precision:
        # forming a d×d matrix from d×d factors (Q diag(s) Qᵀ, XᵀX/n) perturbs its spectrum by
        # about d²·eps·‖A‖. A float64 copy of float32 data passes the float32 value as psd_rtol.
        d = max(A.shape[0], 1)
        rel = relative_tolerance(A.dtype, dim=d * d) if psd_rtol is None else float(psd_rtol)
        self.psd_rtol = rel
        self._eig_A = check_symmetric_psd(A, "A", rel_tol=rel)
        d = A.shape[0]
        check_array(b, "b", ndim=1, like=A, shape=(d,))
        check_array(A_query, "A_query", ndim=2, like=A, shape=(d, d))
        self._eig_Aq = check_symmetric_psd(A_query, "A_query", rel_tol=rel)
        check_array(b_query, "b_query", ndim=1, like=A, shape=(d,))
        self.A, self.b, self.A_query, self.b_query = A, b, A_query, b_query
        self.dim = d
        self._xp = array_namespace(A)

    # -- helpers -------------------------------------------------------------------------------
    def _check_point(self, x, name):
        return check_array(x, name, ndim=1, like=self.A, shape=(self.dim,))

    def _mv(self, M, x):
        # a cheap fit test (library, dtype, device; no finiteness scan) before any arithmetic,
        # so a NumPy task given a torch vector (or vice versa) says so instead of coercing
        check_same_namespace(x, self.A, "phi")
        return self._xp.matmul(M, x)

    def _system(self):
        xp = self._xp
        return self.A + self.lam * xp.eye(self.dim, dtype=self.A.dtype, device=device(self.A))

    # -- task protocol -------------------------------------------------------------------------
    def inner_loss(self, phi):
        """L̂(φ) = ½ φᵀAφ + φᵀb."""
        xp = self._xp
        return 0.5 * xp.sum(phi * self._mv(self.A, phi)) + xp.sum(phi * self.b)

    def inner_grad(self, phi):
        """∇L̂(φ) = Aφ + b."""
        return self._mv(self.A, phi) + self.b

    def inner_hvp(self, phi, v):
        """∇²L̂(φ) v = A v (batched over leading dimensions of v)."""
        check_same_namespace(v, self.A, "v")
        return self._xp.matmul(v, self.A)  # A is symmetric: v Aᵀ = (A v)ᵀ row-wise

    def outer_loss(self, phi):
        """L(φ) = ½ φᵀAₜφ + φᵀbₜ."""
        xp = self._xp
        return 0.5 * xp.sum(phi * self._mv(self.A_query, phi)) + xp.sum(phi * self.b_query)

    def outer_grad(self, phi):
        """∇L(φ) = Aₜφ + bₜ."""
        return self._mv(self.A_query, phi) + self.b_query

    def curvature_bounds(self) -> tuple[float, float]:
        """(β, μ) with μI ⪯ ∇²G ⪯ βI: problem data a solver may use to pick its step size."""
        return float(self._eig_A[-1] + self.lam), float(self._eig_A[0] + self.lam)

    # -- exact references ----------------------------------------------------------------------
    def inner_solution(self, theta):
        """Alg*(θ) = (A + λI)⁻¹(λθ − b)."""
        self._check_point(theta, "theta")
        return self._xp.linalg.solve(self._system(), self.lam * theta - self.b)

    def jacobian(self, theta):
        """dAlg*/dθ = λ(A + λI)⁻¹ = (I + A/λ)⁻¹ (Lemma 1); it does not depend on θ."""
        self._check_point(theta, "theta")
        xp = self._xp
        eye = xp.eye(self.dim, dtype=self.A.dtype, device=device(self.A))
        return self.lam * xp.linalg.solve(self._system(), eye)

    def implicit_gradient(self, phi):
        """(I + H(φ)/λ)⁻¹∇L(φ) = λ(A + λI)⁻¹∇L(φ): the exact solution of the CG system of
        Algorithm 2 at a given (possibly approximate) φ (docs/mathematics.md §4)."""
        self._check_point(phi, "phi")
        return self.lam * self._xp.linalg.solve(self._system(), self.outer_grad(phi))

    def meta_gradient(self, theta):
        """Exact dθ L(Alg*(θ)) = λ(A + λI)⁻¹(Aₜφ* + bₜ), φ* = Alg*(θ)."""
        return self.implicit_gradient(self.inner_solution(theta))

    def constants(self, theta, radius: float | None = None, delta: float = 0.0) -> Constants:
        """Constants of Assumption 2 (docs/mathematics.md §2), in float64.

        Without ``radius``: instance constants at this θ, B = ‖∇L(Alg*(θ))‖ and D = ‖Alg*(θ)‖.
        With ``radius`` R: uniform constants on ‖θ‖ ≤ R, D = (λR + ‖b‖)/μ and
        B = λmax(Aₜ)(D + δ) + ‖bₜ‖, valid for gradients taken within ``delta`` of Alg*(θ).
        """
        self._check_point(theta, "theta")
        check_positive(delta, "delta", allow_zero=True)
        beta, mu = self.curvature_bounds()
        L = float(max(self._eig_Aq[-1], 0.0))
        A, b = to_numpy64(self.A), to_numpy64(self.b)
        Aq, bq = to_numpy64(self.A_query), to_numpy64(self.b_query)
        if radius is None:
            phi = np.linalg.solve(A + self.lam * np.eye(self.dim), self.lam * to_numpy64(theta) - b)
            D = float(np.linalg.norm(phi))
            B = float(np.linalg.norm(Aq @ phi + bq)) + L * delta
            return Constants(beta, mu, beta / mu, L, B, 0.0, D, self.lam)
        check_positive(radius, "radius", allow_zero=True)
        D = (self.lam * radius + float(np.linalg.norm(b))) / mu
        B = L * (D + delta) + float(np.linalg.norm(bq))
        return Constants(beta, mu, beta / mu, L, B, 0.0, D, self.lam, scope="uniform",
                         radius=float(radius))
