"""Small pieces shared by the figures' data: an exact inner 'result', seeded θ."""
from __future__ import annotations

import numpy as np

from solvers import SolverResult, Status

__all__ = ["exact_inner", "seeded_theta"]


def exact_inner(phi) -> SolverResult:
    """An inner 'solver result' holding the exact inner solution (isolates the CG error)."""
    return SolverResult(x=phi, steps=0, residual_norm=0.0, status=Status.CONVERGED)


def seeded_theta(ctx, dim, *salt) -> np.ndarray:
    """A standard normal θ of length ``dim`` from the run's seed and a salt."""
    return np.random.default_rng(ctx.rng_seed(*salt)).standard_normal(dim)
