"""Helpers shared by the checks: instance grids, instances far from the grid, references and
the allowance rule applied to the computations the checks judge.

The allowance rule (theory.tolerances, docs/mathematics.md §10): an allowance comes from the
magnitudes that enter the computation, never from the size of the answer. Here it is applied to
the three computations the checks judge:

- an inner solution φ (distance units): the terms of ∇_φG(φ, θ) over μ;
- a CG solution g of (I + H(φ)/λ)g = ∇L(φ) at a given φ: the terms of the residual times λ/μ;
- a meta-gradient: Lemma 3 applied to those roundings, (λL/μ)·(∇G terms)/μ + (λ/μ)·(r terms).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from theory import to_numpy64
from theory.tolerances import allowance as _allowance_rule
from theory.tolerances import computation_magnitudes, rounding_allowance
from verify.registry import RunContext
from verify.tasks import float64_twin, nonconvex_task, planted_spectrum_task, to_array

__all__ = ["grid", "make_instance", "allowance", "unit", "inner_allowance", "cg_allowance",
           "meta_gradient_allowance", "crafted_task", "far_instances", "exact_reference",
           "grid_units", "shared_instances", "LARGE_DIM", "worst_step"]


#: with ctx.scale, each grid point is tried with this many seeds (the callers salt the instance
#: seed with the point's index in the list, so repeated points are different instances)
SCALE_REPEATS = 3


def grid(ctx: RunContext, *, queries=("shared", "reversed", "independent")):
    """The planted-spectrum grid of d, κ, λ (and query kinds) a sweep runs over: small in quick
    mode, wide with ``ctx.scale`` (d up to 2000, κ up to 1e6, SCALE_REPEATS seeds a point)."""
    if ctx.quick:
        dims, kappas, lams = (5, 20), (10.0, 1e3), (0.5, 5.0)
    elif getattr(ctx, "scale", False):
        dims, kappas, lams = (5, 20, 50, 200, 2000), (2.0, 10.0, 100.0, 1e3, 1e4, 1e6), \
            (0.1, 1.0, 10.0)
    else:
        dims, kappas, lams = (5, 20, 50), (2.0, 10.0, 100.0, 1e3, 1e4), (0.1, 1.0, 10.0)
    points = [(d, k, lam, q) for d in dims for k in kappas for lam in lams for q in queries]
    return points * SCALE_REPEATS if getattr(ctx, "scale", False) and not ctx.quick else points


#: above this dimension a check takes the form whose cost fits the size (lemma1: the Jacobian
#: along a few random directions instead of all d columns; cg-bound: at least this many steps
#: rather than d); at or below it, the same checks as the full report
LARGE_DIM = 200

_shared = threading.local()


@contextlib.contextmanager
def shared_instances():
    """Within it, :func:`make_instance` builds each instance once: a second call with the same
    arguments (another claim's unit of the same grid point, run together by verify.runner)
    gets the same task and twin (read-only: tasks cannot change) and fresh copies of θ. The
    instances are dropped on leaving, so a worker holds at most one work item's."""
    outer = getattr(_shared, "cache", None)
    _shared.cache = {} if outer is None else outer
    try:
        yield
    finally:
        _shared.cache = outer


def _copy(x):
    return x.clone() if hasattr(x, "clone") else np.array(x, copy=True)


def make_instance(ctx: RunContext, dim, kappa, lam, query, *salt, spectrum="uniform"):
    """(task in ctx's array/dtype/device, float64 NumPy twin, theta, theta64, instance dict).
    theta64 is the exact value of theta (the float32 rounding when the run is float32).
    Inside :func:`shared_instances` the task and twin of equal arguments are built once."""
    seed = ctx.rng_seed(dim, int(kappa), int(lam * 1000), len(query), *salt)
    key = (seed, ctx.array, ctx.dtype, ctx.device, dim, float(kappa), float(lam), query,
           tuple(salt), spectrum)
    cache = getattr(_shared, "cache", None)
    if cache is not None and key in cache:
        task, twin, theta, instance = cache[key]
    else:
        task, spec = planted_spectrum_task(dim, kappa, lam, seed=seed, query=query,
                                           spectrum=spectrum, array=ctx.array, dtype=ctx.dtype,
                                           device=ctx.device)
        theta = to_array(np.random.default_rng(seed + 1).standard_normal(dim), array=ctx.array,
                         dtype=ctx.dtype, device=ctx.device)
        instance = dict(spec.as_dict(), array=ctx.array, dtype=ctx.dtype, device=ctx.device)
        twin = float64_twin(task)
        if cache is not None:
            cache[key] = (task, twin, _copy(theta), dict(instance))
    theta = _copy(theta)
    return task, twin, theta, to_numpy64(theta), dict(instance)


def grid_units(ctx: RunContext, claim_name: str, *, queries=("shared", "reversed", "independent"),
               spectrum="uniform"):
    """One unit of work per instance of :func:`grid` (verify.registry.Unit): key ('grid', i, d,
    κ, λ, query), i the instance's index in the grid (its seed's salt), size d³, and the
    instance it builds (``shares``: the arguments of :func:`make_instance`, equal for claims
    that check the same instance)."""
    from verify.registry import Unit

    return [Unit(("grid", i, d, kappa, lam, query), size=float(d) ** 3,
                 shares=("planted", d, float(kappa), float(lam), query, i, spectrum),
                 label=f"{claim_name} d={d} κ={kappa:g} λ={lam:g} {query}")
            for i, (d, kappa, lam, query) in enumerate(grid(ctx, queries=queries))]


def allowance(ctx_or_dtype, kappa, scale, dim) -> float:
    """theory.tolerances.rounding_allowance for a run context or dtype (scale: summed terms)."""
    dtype = getattr(ctx_or_dtype, "dtype", ctx_or_dtype)
    return rounding_allowance(dtype, kappa=kappa, scale=scale, dim=dim)


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _setting(task64, theta64, phi64, g64):
    phi64 = to_numpy64(task64.inner_solution(theta64)) if phi64 is None else to_numpy64(phi64)
    if g64 is None:
        g64 = to_numpy64(task64.implicit_gradient(phi64))
    m = computation_magnitudes(task64, theta64, phi64, g64)
    beta, mu = task64.curvature_bounds()
    return m, float(beta), float(mu), float(task64.lam)


def inner_allowance(dtype, task64, theta64, phi64=None, *, dim_factor=1) -> float:
    """Allowance of a computed inner solution (‖φ − Alg*(θ)‖): the terms of ∇_φG over μ."""
    m, beta, mu, _ = _setting(task64, theta64, phi64, None)
    return _allowance_rule(dtype, terms=[t / mu for t in m.stationarity], kappa=beta / mu,
                           dim=m.dim * dim_factor)


def cg_allowance(dtype, task64, theta64, phi64, g64=None, *, dim_factor=1) -> float:
    """Allowance of a computed solution of (I + H(φ)/λ)g = ∇L(φ) at a given φ: the terms of its
    residual, times ‖(I + H/λ)⁻¹‖ = λ/μ."""
    m, beta, mu, lam = _setting(task64, theta64, phi64, g64)
    return _allowance_rule(dtype, terms=[lam / mu * t for t in m.residual], kappa=beta / mu,
                           dim=m.dim * dim_factor)


def meta_gradient_allowance(dtype, task64, theta64, phi64=None, g64=None, *, L=None,
                            dim_factor=1) -> float:
    """Allowance of a computed meta-gradient: Lemma 3 with δ, δ′ replaced by the rounding of the
    inner and the CG computations, (λL/μ)(∇G terms)/μ + (λ/μ)(r terms)."""
    m, beta, mu, lam = _setting(task64, theta64, phi64, g64)
    if L is None:
        L = float(np.linalg.eigvalsh(to_numpy64(task64.A_query))[-1]) if hasattr(
            task64, "A_query") else task64.constants(theta64).L
    terms = [lam * max(L, 0.0) / mu ** 2 * t for t in m.stationarity]
    terms += [lam / mu * t for t in m.residual]
    return _allowance_rule(dtype, terms=terms, kappa=beta / mu, dim=m.dim * dim_factor)


def exact_reference(task64):
    """The 50-digit reference of a float64 quadratic task (theory.exact.QuadraticReference)."""
    from theory.exact import QuadraticReference

    return QuadraticReference(task64)


def crafted_task(dim, kappa, lam, *, seed, theta_norm, meta_gradient_norm, query="reversed"):
    """A planted task far from the grid (float64): ‖θ‖ = theta_norm and b_query chosen so that
    the exact meta-gradient has norm meta_gradient_norm (∇L(φ*) cancels: Aₜφ* + bₜ is small
    while Aₜφ* and bₜ are large). Returns (task, theta)."""
    from theory.quadratic import QuadraticTask

    base, _ = planted_spectrum_task(dim, kappa, lam, seed=seed, query=query)
    rng = np.random.default_rng(seed + 100)
    theta = rng.standard_normal(dim)
    theta *= theta_norm / np.linalg.norm(theta)
    A, Aq = to_numpy64(base.A), to_numpy64(base.A_query)
    C = A + lam * np.eye(dim)
    phi = np.linalg.solve(C, lam * theta - to_numpy64(base.b))
    w = unit(rng.standard_normal(dim))
    bq = -Aq @ phi + C @ w * (meta_gradient_norm / lam)
    return QuadraticTask(A, to_numpy64(base.b), Aq, bq, lam), theta


def far_instances(ctx: RunContext, *, quick_count=2):
    """Instances far from the committed grid (docs/mathematics.md §10): large ‖θ‖ with a small
    meta-gradient (cancellation), κ = 1e6, and non-convex inner losses within Assumption 2
    (A indefinite, A + λI ≻ 0). Yields (task, theta, instance) in ctx's array/dtype/device;
    quick mode yields the first ``quick_count``."""
    conv = lambda x: to_array(x, array=ctx.array, dtype=ctx.dtype, device=ctx.device)  # noqa: E731
    out = []
    for i, tn in enumerate((1e2, 1e4)):
        seed = ctx.rng_seed(61, i)
        task, theta = crafted_task(5, 100.0, 10.0, seed=seed, theta_norm=tn, meta_gradient_norm=1e-3)
        out.append((task, theta, dict(family="crafted (large θ, small g*)", dim=5, kappa=100.0,
                                      lam=10.0, query="reversed", seed=seed, theta_norm=tn,
                                      meta_gradient_norm=1e-3)))
    for i, (d, kappa, lam, query) in enumerate(((8, 100.0, 1.0, "independent"),
                                                (6, 1e3, 2.0, "reversed"))):
        seed = ctx.rng_seed(62, i)
        task, spec = nonconvex_task(d, kappa, lam, seed=seed, query=query)
        theta = np.random.default_rng(seed + 1).standard_normal(d)
        out.append((task, theta, dict(spec.as_dict(), family="non-convex L̂", mu_over_lam=0.1)))
    seed = ctx.rng_seed(63)
    task, spec = planted_spectrum_task(5, 1e6, 1.0, seed=seed, query="independent")
    out.append((task, np.random.default_rng(seed + 1).standard_normal(5),
                dict(spec.as_dict(), family="κ = 1e6")))
    # quick mode: one crafted and one non-convex instance
    order = [0, 2, 1, 3, 4]
    chosen = [out[i] for i in order][:quick_count] if ctx.quick else [out[i] for i in order]
    result = []
    for task, theta, inst in chosen:
        t = task
        if ctx.array != "numpy" or ctx.dtype != "float64":
            t = type(task)(*(conv(to_numpy64(x)) for x in (task.A, task.b, task.A_query,
                                                          task.b_query)), task.lam)
        result.append((t, conv(theta), dict(inst, array=ctx.array, dtype=ctx.dtype,
                                            device=ctx.device)))
    return result


def worst_step(rows, floor, *, skip_start=False):
    """The step an iteration's bound check reports, from rows (k, measured, bound): the worst
    failing step (measured > bound + floor, a NaN counting as failing and worst), else the
    largest measured/bound where the bound is above the rounding floor (``skip_start``: not at
    k = 0, where error and bound are both the start's), else the largest measured/(bound +
    floor). Returns (k, measured, bound, steps above the floor, steps failing)."""
    failing = [r for r in rows if not r[1] <= r[2] + floor]
    informative = [r for r in rows if r[2] > floor and not (skip_start and r[0] == 0)]
    if failing:
        row = max(failing, key=lambda r: r[1] / (r[2] + floor) if np.isfinite(r[1]) else np.inf)
    elif informative:
        row = max(informative, key=lambda r: r[1] / r[2])
    else:
        row = max(rows, key=lambda r: r[1] / (r[2] + floor))
    return (*row, len(informative), len(failing))
