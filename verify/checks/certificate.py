"""The a-posteriori certificate (docs/mathematics.md §5a): from a solver's own diagnostics (‖∇_φG‖, the CG
residual, ‖∇L(φ)‖), the magnitudes that enter them and the task's μ, L, ρ, a bound on the
exact-solve error of that very meta-gradient, safe in floating point. It must hold on every
instance with no allowance: the true error is computed in 50-digit arithmetic from the same
float φ and g (theory.exact), so neither the reference nor the comparison is rounded at the
level the certificate is judged. Its factor bound/true error is measured."""
from __future__ import annotations

import numpy as np

from solvers import imaml_meta_gradient
from theory import to_numpy64
from theory.bounds import certify
from verify.checks._common import exact_reference, far_instances, grid, make_instance
from verify.checks._result import compare
from verify.registry import claim
from verify.tasks import float64_twin

SECTION = "§5a"
STATEMENT = ("‖g − dθL(Alg*(θ))‖ ≤ (λρB̂/μ² + λL/μ)δ̂ + δ̂′ with δ̂ = ‖∇_φG(φ,θ)‖⁺/μ, "
             "δ̂′ = (λ/μ)‖r_CG‖⁺, B̂ = ‖∇L(φ)‖⁺ + Lδ̂, where ‖·‖⁺ is the computed norm raised by a "
             "bound on its rounding (from the magnitudes that enter it); true error in 50 digits")

SETTINGS = (("nesterov", 5, 3), ("nesterov", 30, 10), ("gd", 20, 5), ("newton_cg", 2, 4),
            ("nesterov", 200, 100))
FAR_SETTINGS = (("nesterov", 30, 10), ("nesterov", 200, 100), ("nesterov", 400, 100))


def check_certificate(task, theta, twin=None, theta64=None, *, inner, inner_steps, cg_steps,
                      instance=None, constants=None, certificate=certify, reference=None):
    """Certify one computed meta-gradient and compare with its true exact-solve error, computed
    in 50 digits from the float64 numbers the task and θ hold. ``constants`` (default: the float64
    twin's instance constants) or ``certificate(result, constants, task=, theta=)`` may be
    planted wrong (negative controls)."""
    twin = float64_twin(task) if twin is None else twin
    theta64 = to_numpy64(theta)      # the exact θ the solver saw (float32-rounded in float32 runs)
    res = imaml_meta_gradient(task, theta, inner=inner, inner_steps=inner_steps, cg_steps=cg_steps)
    ref = exact_reference(twin) if reference is None else reference
    err = ref.error(to_numpy64(res.gradient), ref.meta_gradient(theta64))
    c = constants if constants is not None else twin.constants(theta64)
    cert = certificate(res, c, task=task, theta=theta)
    return compare("certificate", SECTION, STATEMENT, err, cert.bound,
                   instance=dict(instance or {}, inner=inner, inner_steps=inner_steps,
                                 cg_steps=cg_steps),
                   details={"factor": cert.bound / err if err > 0 else None,
                            "delta_hat": cert.delta, "delta_prime_hat": cert.delta_prime,
                            "B_hat": cert.B, "rounding_share": cert.rounding / cert.bound
                            if cert.bound > 0 else 0.0,
                            "stationarity": res.stationarity, "cg_residual": res.cg_residual})


@claim("certificate", title="A-posteriori certificate of the exact-solve error", section=SECTION,
       statement=STATEMENT,
       loose="not in the appendix: Lemma 3 made computable (docs/mathematics.md §5a). Without the "
       "rounding of the computed residuals it fails on large ‖θ‖ with a small meta-gradient "
       "(the computed ‖∇_φG‖ is then far below the exact one)")
def run(ctx):
    results = []
    for i, (d, kappa, lam, query) in enumerate(grid(ctx)):
        task, twin, theta, _, inst = make_instance(ctx, d, kappa, lam, query, i)
        ref = exact_reference(twin)
        for inner, inner_steps, cg_steps in SETTINGS:
            results.append(check_certificate(task, theta, twin, inner=inner,
                                             inner_steps=inner_steps, cg_steps=cg_steps,
                                             instance=inst, reference=ref))
    for task, theta, inst in far_instances(ctx):
        twin = float64_twin(task)
        ref = exact_reference(twin)
        for inner, inner_steps, cg_steps in FAR_SETTINGS:
            results.append(check_certificate(task, theta, twin, inner=inner,
                                             inner_steps=inner_steps, cg_steps=cg_steps,
                                             instance=inst, reference=ref))
    return results
