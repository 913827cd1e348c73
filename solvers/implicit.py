"""iMAML's implicit system M = I + H(φ)/λ as one object (docs/mathematics.md §1, §4).

Every place that applies the operator w ↦ w + H(φ)w/λ — the linear solve of Algorithm 2, the
residual of a meta-gradient, the checks of the solvers' bounds, the checker, the few-shot
experiments — builds it here, so the operator is written once."""
from __future__ import annotations

import numpy as np

from solvers.protocol import _lam_values, checked_task, curvature_bounds

__all__ = ["ImplicitSystem"]


class ImplicitSystem:
    """M = c·I + H/λ applied through a Hessian-vector product (c = 1: iMAML's system; other
    c and λ: the damped systems some implementations solve instead, :meth:`damped`).

    ``hvp(w)`` is H w for w of the system's shape ((d,), or (n, d) for a stack of n systems,
    row i with its own H_i), ``lam`` a number or, for a stack, an (n, 1) array of the rows' λ.
    ``bounds``: (low, high) with every eigenvalue of M in [low, high] (numbers, or NumPy arrays
    of one per row), or None when nothing is known (or a function returning either, called on
    first use). From a task's curvature bounds
    μI ⪯ H + λI ⪯ βI (Assumption 2) they are [μ/λ, β/λ]: M is then positive definite with
    condition number at most κ = β/μ (``definite`` is True). ``definite`` is None where the
    bounds are unknown (a network: I + H/λ may well be indefinite) and False for bounds that
    straddle 0."""

    def __init__(self, hvp, lam, *, bounds=None, identity: float = 1.0, hessian=None):
        self.hvp, self.lam, self.identity = hvp, lam, float(identity)
        self._bounds, self._hessian = bounds, hessian

    @property
    def bounds(self):
        """(low, high) containing M's spectrum, or None (evaluated on first use: a solver that
        needs no bounds never asks the task for its curvature)."""
        if callable(self._bounds):
            self._bounds = self._bounds()
        return self._bounds

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def at(cls, task, phi, *, like=None) -> "ImplicitSystem":
        """The system of ``task`` at φ (the task protocol: ``inner_hvp``, ``lam`` and, when the
        task has them, ``curvature_bounds()``; ``inner_hvp``'s output validated against
        ``like`` — default φ — on its first call). A stack of tasks with φ of shape (n, d)
        gives n systems."""
        view = checked_task(task, phi if like is None else like)
        raw = view.task

        def bounds():
            if getattr(raw, "curvature_bounds", None) is None:
                return None
            beta, mu = curvature_bounds(raw)
            lam = np.asarray(_lam_values(raw.lam), dtype=np.float64)
            low, high = np.asarray(mu) / lam, np.asarray(beta) / lam
            return (float(low), float(high)) if low.ndim == 0 else (low, high)

        return cls(lambda w: view.inner_hvp(phi, w), view.lam_rows, bounds=bounds)

    @classmethod
    def of_hessian(cls, H, lam) -> "ImplicitSystem":
        """The system of a dense symmetric Hessian H (NumPy, float64 for references): products
        H @ w, bounds from H's eigenvalues, and :meth:`matrix` the dense I + H/λ."""
        H = np.asarray(H)
        lam = float(lam)

        def bounds():
            w = np.linalg.eigvalsh(H)
            return 1.0 + float(w[0]) / lam, 1.0 + float(w[-1]) / lam

        return cls(lambda v: H @ v, lam, bounds=bounds, hessian=H)

    def damped(self, damping: float, lam_damping: float) -> "ImplicitSystem":
        """(1 + damping)·I + H/(λ + lam_damping): the damped system of iMAML's reference code
        (its Omniglot script: damping 1, lam_damping 10). Bounds are not carried over."""
        lam = self.lam + float(lam_damping)
        return ImplicitSystem(self.hvp, lam, identity=self.identity + float(damping),
                              hessian=self._hessian)

    # -- the operator ---------------------------------------------------------------------------
    def matvec(self, w):
        """M w = w + H w/λ (c·w + H w/λ for a damped system)."""
        if self.identity == 1.0:
            return w + self.hvp(w) / self.lam
        return self.identity * w + self.hvp(w) / self.lam

    def residual(self, g, rhs):
        """rhs − M g: the residual of g for the system M g = rhs."""
        return rhs - self.matvec(g)

    def matrix(self) -> np.ndarray:
        """The dense matrix c·I + H/λ (systems built by :meth:`of_hessian`)."""
        if self._hessian is None:
            raise ValueError("matrix() needs a system built from a dense Hessian (of_hessian)")
        H = self._hessian
        return self.identity * np.eye(H.shape[0]) + H / self.lam

    @property
    def definite(self) -> bool | None:
        """True when the bounds prove M positive definite, False when they straddle 0, None
        when there are none."""
        if self.bounds is None:
            return None
        return bool(np.all(np.asarray(self.bounds[0]) > 0))
