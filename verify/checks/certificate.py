"""The a-posteriori certificate (docs/mathematics.md §5a): from a solver's own result (its
diagnostics ‖∇_φG‖, the residual of the implicit system, ‖∇L(φ)‖, and the φ, g, task and θ it carries) and the
task's μ, L, ρ, a bound on the exact-solve error of that very meta-gradient, safe in floating
point: ``certify(result, constants)``, the plain call. It must hold on every instance with no
allowance: the true error is the proven upper end of the 50-digit reference's enclosure
(theory.exact) of the same float φ and g, and the constants μ and L are proven bounds
(QuadraticReference.constants), so a verdict at measured/bound = 1 − 3e-11 is decided by bounds.
Its factor bound/true error is measured. Besides the planted grid: instances far from it
(large ‖θ‖ with a small meta-gradient, κ = 1e6, non-convex L̂) and at the extremes of the data's
scale (:data:`DATA_SCALES`: the vectors of the task and θ of size 1e-170 and 1e150 in float64,
1e-22 and 1e15 in float32, where squares underflow or approach overflow)."""
from __future__ import annotations

import numpy as np

from solvers import imaml_meta_gradient
from theory import to_numpy64
from theory.bounds import certify
from verify.checks._common import exact_reference, far_instances, grid_units, make_instance
from verify.checks._result import compare
from verify.registry import Unit, claim
from verify.tasks import float64_twin, planted_spectrum_task, to_array

SECTION = "§5a"
STATEMENT = ("‖g − dθL(Alg*(θ))‖ ≤ (λρB̂/μ² + λL/μ)δ̂ + δ̂′ with δ̂ = ‖∇_φG(φ,θ)‖⁺/μ, "
             "δ̂′ = (λ/μ)‖r_CG‖⁺, B̂ = ‖∇L(φ)‖⁺ + Lδ̂, where ‖·‖⁺ is a certified upper bound on the "
             "exact norm (the computed norm raised by its rounding, or the residual evaluated "
             "exactly); the plain certify(result, constants); true error: the 50-digit "
             "reference's proven upper end")

SETTINGS = (("nesterov", 5, 3), ("nesterov", 30, 10), ("gd", 20, 5), ("newton_cg", 2, 4),
            ("nesterov", 200, 100))
FAR_SETTINGS = (("nesterov", 30, 10), ("nesterov", 200, 100), ("nesterov", 400, 100))
#: the data's scale at the ends of each dtype's range: the vectors b, b_q and θ multiplied by
#: it (A, A_q, λ as planted), so φ*, ∇L and g* scale with it; their squares underflow (about
#: 1e-170 in float64, 1e-22 in float32) or come within a few orders of overflow (1e150, 1e15).
#: Powers of two (2⁻⁵⁶⁵ = 8.3e-171, 2⁴⁹⁸ = 8.2e149, 2⁻⁷³ = 1.1e-22, 2⁵⁰ = 1.1e15): an instance is
#: then exactly the unit-scale one scaled, and so must be every solver's result
DATA_SCALES = {"float64": (2.0 ** -565, 2.0 ** 498), "float32": (2.0 ** -73, 2.0 ** 50)}
#: (d, κ, λ, query) of the scaled instances; quick mode takes the first
SCALED_SPECS = ((5, 100.0, 1.0, "reversed"), (8, 1e4, 0.5, "independent"))
SCALE_SETTINGS = (("nesterov", 30, 10), ("newton_cg", 2, 6), ("nesterov", 400, 100))


def scaled_task(dim, kappa, lam, scale, *, seed, query="reversed", array="numpy",
                dtype="float64", device="cpu"):
    """A planted task (verify.tasks.planted_spectrum_task) whose vectors b, b_q and θ are
    multiplied by ``scale`` (the float64 products, then rounded to ``dtype``): φ*, ∇L(φ*) and
    g* scale with it, κ does not. Returns (task, theta) in the requested array type."""
    from theory.quadratic import QuadraticTask

    base, _ = planted_spectrum_task(dim, kappa, lam, seed=seed, query=query)
    theta = np.random.default_rng(seed + 1).standard_normal(dim) * scale
    conv = lambda x: to_array(x, array=array, dtype=dtype, device=device)  # noqa: E731
    task = QuadraticTask(conv(to_numpy64(base.A)), conv(to_numpy64(base.b) * scale),
                         conv(to_numpy64(base.A_query)), conv(to_numpy64(base.b_query) * scale),
                         lam)
    return task, conv(theta)


def scaled_instances(ctx):
    """(task, theta, instance) at the ends of the data's scale for ctx's dtype
    (:data:`DATA_SCALES`, :data:`SCALED_SPECS`; quick mode: the first spec)."""
    specs = SCALED_SPECS[:1] if ctx.quick else SCALED_SPECS
    out = []
    for scale in DATA_SCALES.get(ctx.dtype, ()):
        for i, (d, kappa, lam, query) in enumerate(specs):
            seed = ctx.rng_seed(64, i)
            task, theta = scaled_task(d, kappa, lam, scale, seed=seed, query=query,
                                      array=ctx.array, dtype=ctx.dtype, device=ctx.device)
            out.append((task, theta, dict(family="data scale", data_scale=scale, dim=d,
                                          kappa=kappa, lam=lam, query=query, seed=seed,
                                          array=ctx.array, dtype=ctx.dtype, device=ctx.device)))
    return out


def check_certificate(task, theta, twin=None, theta64=None, *, inner, inner_steps, cg_steps,
                      instance=None, constants=None, certificate=certify, reference=None):
    """Certify one computed meta-gradient with the plain call ``certificate(result, constants)``
    and compare with its true exact-solve error, the proven upper end of the 50-digit enclosure
    from the float64 numbers the task and θ hold. ``constants`` (default: the instance constants
    with proven μ and L, QuadraticReference.constants) or ``certificate`` may be planted wrong
    (negative controls)."""
    twin = float64_twin(task) if twin is None else twin
    theta64 = to_numpy64(theta)      # the exact θ the solver saw (float32-rounded in float32 runs)
    res = imaml_meta_gradient(task, theta, inner=inner, inner_steps=inner_steps, cg_steps=cg_steps)
    ref = exact_reference(twin) if reference is None else reference
    err = ref.error(to_numpy64(res.gradient), ref.meta_gradient(theta64))
    c = constants if constants is not None else ref.constants(theta64)
    cert = certificate(res, c)
    return compare("certificate", SECTION, STATEMENT, err, cert.bound,
                   instance=dict(instance or {}, inner=inner, inner_steps=inner_steps,
                                 cg_steps=cg_steps),
                   details={"factor": cert.bound / err if err > 0 else None,
                            "delta_hat": cert.delta, "delta_prime_hat": cert.delta_prime,
                            "B_hat": cert.B, "rounding_share": cert.rounding / cert.bound
                            if cert.bound > 0 else 0.0, "method": cert.method,
                            "rounding_safe": cert.rounding_safe,
                            "stationarity": res.stationarity, "system_residual": res.system_residual})


def units(ctx):
    """One unit per grid instance (all its solver settings), one for the instances far from
    the grid, one for those at the ends of the data's scale."""
    return grid_units(ctx, "certificate") + [
        Unit(("far",), size=1.0, label="certificate far instances"),
        Unit(("scaled",), size=1.0, label="certificate data scales")]


@claim("certificate", title="A-posteriori certificate of the exact-solve error", section=SECTION,
       statement=STATEMENT,
       loose="not in the appendix: Lemma 3 made computable (docs/mathematics.md §5a). Without the "
       "rounding of the computed residuals it fails on large ‖θ‖ with a small meta-gradient "
       "(the computed ‖∇_φG‖ is then far below the exact one), and with unscaled norms or "
       "without the underflow threshold at data of size 1e-170 (float64) or 1e-22 (float32)",
       units=units)
def run_unit(ctx, key):
    if key[0] == "grid":
        _, i, d, kappa, lam, query = key
        task, twin, theta, _, inst = make_instance(ctx, d, kappa, lam, query, i)
        cases, settings = [(task, theta, inst, twin)], SETTINGS
    elif key[0] == "far":
        cases, settings = [(t, th, inst, None) for t, th, inst in far_instances(ctx)], FAR_SETTINGS
    else:
        cases, settings = [(t, th, inst, None) for t, th, inst in scaled_instances(ctx)], \
            SCALE_SETTINGS
    results = []
    for task, theta, inst, twin in cases:
        twin = float64_twin(task) if twin is None else twin
        ref = exact_reference(twin)
        for inner, inner_steps, cg_steps in settings:
            results.append(check_certificate(task, theta, twin, inner=inner,
                                             inner_steps=inner_steps, cg_steps=cg_steps,
                                             instance=inst, reference=ref))
    return results
