"""Extreme eigenvalues of a symmetric operator given only as a matrix-vector product (Lanczos
with full reorthogonalization): used to certify that I + H/λ is indefinite on a network."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["lanczos_ritz_values"]


def lanczos_ritz_values(matvec, v0: torch.Tensor, steps: int) -> np.ndarray:
    """Ritz values (ascending, float64) of the symmetric operator ``matvec`` after ``steps``
    Lanczos steps from ``v0``. By Cauchy interlacing every Ritz value lies in
    [λ_min, λ_max] of the operator, so the smallest Ritz value is an upper bound on λ_min
    (up to rounding): a Ritz value below −λ proves that I + H/λ is not positive definite."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if v0.ndim != 1 or not bool(torch.isfinite(v0).all()) or float(v0.norm()) == 0.0:
        raise ValueError("v0 must be a finite non-zero vector")
    q = v0 / v0.norm()
    basis, alphas, betas = [q], [], []
    for k in range(min(steps, v0.numel())):
        w = matvec(q)
        alpha = float(w @ q)
        alphas.append(alpha)
        Q = torch.stack(basis)
        w = w - Q.T @ (Q @ w)          # full reorthogonalization (twice is enough)
        w = w - Q.T @ (Q @ w)
        beta = float(w.norm())
        if k == steps - 1 or beta <= np.finfo(np.float64).eps * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        q = w / beta
        basis.append(q)
    n = len(alphas)
    T = np.diag(alphas) + np.diag(betas[: n - 1], 1) + np.diag(betas[: n - 1], -1)
    return np.linalg.eigvalsh(T)
