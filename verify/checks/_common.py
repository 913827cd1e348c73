"""Helpers shared by the core checks: instance grids, references and allowances."""
from __future__ import annotations

import numpy as np

from theory.tolerances import rounding_allowance
from verify.registry import RunContext
from verify.tasks import float64_twin, planted_spectrum_task, to_array

__all__ = ["grid", "make_instance", "allowance", "unit"]


def grid(ctx: RunContext, *, queries=("shared", "reversed", "independent")):
    """The planted-spectrum grid of d, κ, λ (and query kinds) a sweep runs over."""
    if ctx.quick:
        dims, kappas, lams = (5, 20), (10.0, 1e3), (0.5, 5.0)
    else:
        dims, kappas, lams = (5, 20, 50), (2.0, 10.0, 100.0, 1e3, 1e4), (0.1, 1.0, 10.0)
    return [(d, k, lam, q) for d in dims for k in kappas for lam in lams for q in queries]


def make_instance(ctx: RunContext, dim, kappa, lam, query, *salt, spectrum="uniform"):
    """(task in ctx's array/dtype/device, float64 NumPy twin, theta, theta64, instance dict)."""
    seed = ctx.rng_seed(dim, int(kappa), int(lam * 1000), len(query), *salt)
    task, spec = planted_spectrum_task(dim, kappa, lam, seed=seed, query=query, spectrum=spectrum,
                                       array=ctx.array, dtype=ctx.dtype, device=ctx.device)
    theta64 = np.random.default_rng(seed + 1).standard_normal(dim)
    theta = to_array(theta64, array=ctx.array, dtype=ctx.dtype, device=ctx.device)
    instance = dict(spec.as_dict(), array=ctx.array, dtype=ctx.dtype, device=ctx.device)
    return task, float64_twin(task), theta, theta64, instance


def allowance(ctx_or_dtype, kappa, scale, dim) -> float:
    dtype = getattr(ctx_or_dtype, "dtype", ctx_or_dtype)
    return rounding_allowance(dtype, kappa=kappa, scale=scale, dim=dim)


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v
