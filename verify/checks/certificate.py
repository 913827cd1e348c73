"""The a-posteriori certificate (docs/mathematics.md §5a): from a solver's own diagnostics (‖∇_φG‖, the CG
residual, ‖∇L(φ)‖) and the task's μ, L, ρ, a bound on the exact-solve error of that very
meta-gradient. It must hold on every instance; its factor bound/true error is measured."""
from __future__ import annotations

import numpy as np

from solvers import imaml_meta_gradient
from theory.bounds import certify
from theory import to_numpy64
from verify.checks._common import allowance, grid, make_instance
from verify.checks._result import compare
from verify.registry import claim
from validation import dtype_name

SECTION = "§5a"
STATEMENT = ("‖g − dθL(Alg*(θ))‖ ≤ (λρB̂/μ² + λL/μ)δ̂ + δ̂′ with δ̂ = ‖∇_φG(φ,θ)‖/μ, "
             "δ̂′ = (λ/μ)‖r_CG‖, B̂ = ‖∇L(φ)‖ + Lδ̂ (computed from the solver's diagnostics)")

SETTINGS = (("nesterov", 5, 3), ("nesterov", 30, 10), ("gd", 20, 5), ("newton_cg", 2, 4),
            ("nesterov", 200, 100))


def check_certificate(task, theta, twin, theta64, *, inner, inner_steps, cg_steps, instance=None,
                      constants=None):
    """Certify one computed meta-gradient and compare with its true exact-solve error.
    ``constants`` (default: the float64 twin's instance constants) may be planted wrong."""
    res = imaml_meta_gradient(task, theta, inner=inner, inner_steps=inner_steps, cg_steps=cg_steps)
    g_exact = twin.meta_gradient(theta64)
    err = float(np.linalg.norm(to_numpy64(res.gradient) - g_exact))
    c = constants if constants is not None else twin.constants(theta64)
    cert = certify(res, c)
    # the diagnostics are themselves computed in the run's precision
    floor = allowance(dtype_name(theta), c.kappa,
                      float(np.linalg.norm(g_exact)), theta64.shape[0])
    return compare("certificate", SECTION, STATEMENT, err, cert.bound, allowance=floor,
                   instance=dict(instance or {}, inner=inner, inner_steps=inner_steps,
                                 cg_steps=cg_steps),
                   details={"factor": cert.bound / err if err > 0 else None,
                            "delta_hat": cert.delta, "delta_prime_hat": cert.delta_prime,
                            "B_hat": cert.B})


@claim("certificate", title="A-posteriori certificate of the exact-solve error", section=SECTION,
       statement=STATEMENT)
def run(ctx):
    results = []
    for i, (d, kappa, lam, query) in enumerate(grid(ctx)):
        task, twin, theta, theta64, inst = make_instance(ctx, d, kappa, lam, query, i)
        for inner, inner_steps, cg_steps in SETTINGS:
            results.append(check_certificate(task, theta, twin, theta64, inner=inner,
                                              inner_steps=inner_steps, cg_steps=cg_steps,
                                              instance=inst))
    return results
