"""Conjugate gradient on the meta-gradient system (I + H(φ)/λ) g = ∇L(φ) (docs/mathematics.md §4): the
Chebyshev bound at every step, and finite termination within the number of distinct eigenvalues."""
from __future__ import annotations

import numpy as np

from solvers import ImplicitSystem, cg
from theory.bounds import cg_contraction, cg_error_bound
from theory import to_numpy64
from verify.checks._common import (LARGE_DIM, allowance, cg_allowance, far_instances,
                                   grid_units, make_instance, worst_step)
from verify.checks._result import compare
from verify.registry import Unit, claim
from verify.tasks import float64_twin, planted_spectrum_task, to_array
from validation import dtype_name

SECTION = "§4"
STATEMENT = "‖g_k − g*‖ ≤ 2√κ((√κ−1)/(√κ+1))^k ‖g₀ − g*‖ for every k (CG from g₀ = 0)"
FT_STATEMENT = "CG reaches g* (to rounding) within as many steps as I + H/λ has distinct eigenvalues"


def system_matvec(task, phi):
    """v ↦ (I + H(φ)/λ) v through the task protocol (:class:`solvers.ImplicitSystem`)."""
    return ImplicitSystem.at(task, phi).matvec


def check_cg_bound(task, theta, *, steps=None, instance=None, matvec=None, norm="2"):
    """Run CG on the system at φ = Alg*(θ) with history (by default until the bound reaches
    rounding level) and judge the Chebyshev bound at every step: it fails if any step's error
    exceeds bound + allowance. Reported (``step``): the failing step with the largest
    err/(bound + allowance) if any; otherwise the step with the largest err/bound among the
    steps whose bound is above the allowance (where the ratio says something about the bound).
    ``norm`` '2' or 'M'; ``matvec`` may plant a defective operator (the negative control).
    The allowance is the rounding of a CG solve at φ (theory.tolerances rule: the magnitudes
    of the system's residual)."""
    return check_cg_bound_norms(task, theta, (norm,), steps=steps, instance=instance,
                                matvec=matvec)[0]


def check_cg_bound_norms(task, theta, norms, *, steps=None, instance=None, matvec=None):
    """:func:`check_cg_bound` in each of ``norms``, judged on one CG run: the longest any norm
    needs, each norm reading its own number of steps from its start (with ``rtol = atol = 0``
    a run of k steps is the first k steps of a longer one, so the results are those of
    separate runs)."""
    twin = float64_twin(task)
    phi = task.inner_solution(theta)
    phi64 = to_numpy64(phi)
    g_star = to_numpy64(twin.implicit_gradient(phi64))
    beta, mu = twin.curvature_bounds()
    kappa, dim = beta / mu, phi64.shape[0]
    theta64 = to_numpy64(theta)
    floor64 = cg_allowance(dtype_name(phi), twin, theta64, phi64, g_star)
    M = ImplicitSystem.of_hessian(to_numpy64(twin.A), twin.lam).matrix()
    e0_2 = float(np.linalg.norm(g_star))
    plans = []
    for norm in norms:
        if norm not in ("2", "M"):
            raise ValueError(f"norm must be '2' or 'M', got {norm!r}")
        floor = floor64
        if norm == "M":     # ‖e‖_M ≤ √(β/λ)‖e‖: the allowance in the M-norm
            floor *= float(np.sqrt(beta / twin.lam))
        n = steps
        if n is None:  # run until the bound itself falls to rounding level (at least d steps)
            q = cg_contraction(kappa)
            k_bound = int(np.ceil(np.log(max(floor, 1e-300) / (2 * np.sqrt(kappa) * max(e0_2, 1e-300)))
                                  / np.log(q))) if 0 < q < 1 and e0_2 > 0 else 1
            n = min(max(dim, k_bound), 10 * dim + 50)
        plans.append((norm, floor, n))
    res = cg(matvec or system_matvec(task, phi), task.outer_grad(phi),
             max_steps=max(n for _, _, n in plans), rtol=0.0, atol=0.0, history=True)
    out = []
    for norm, floor, n in plans:
        def size(e, norm=norm):
            return float(np.sqrt(max(e @ M @ e, 0.0))) if norm == "M" else float(np.linalg.norm(e))

        e0, taken = size(g_star), min(res.steps, n)
        rows = [(k, size(to_numpy64(g) - g_star), cg_error_bound(kappa, k, e0, norm=norm))
                for k, g in enumerate(res.history.iterates[:taken + 1])]
        k, err, bound, n_informative, n_failing = worst_step(rows, floor)
        out.append(compare("cg-bound", SECTION, STATEMENT, err, bound, allowance=floor,
                           instance=dict(instance or {}, norm=norm, step=k),
                           details={"steps": taken, "kappa": kappa, "initial_error": e0,
                                    "steps_above_rounding": n_informative,
                                    "steps_failing": n_failing}))
    return out


def check_finite_termination(task, theta, distinct, *, instance=None):
    """After ``distinct`` CG steps the error is at rounding level (exact arithmetic: zero)."""
    twin = float64_twin(task)
    phi = task.inner_solution(theta)
    g_star = twin.implicit_gradient(to_numpy64(phi))
    beta, mu = twin.curvature_bounds()
    res = cg(system_matvec(task, phi), task.outer_grad(phi), max_steps=distinct, rtol=0.0, atol=0.0)
    err = float(np.linalg.norm(to_numpy64(res.x) - g_star))
    # the rounding of a CG solve at φ: the magnitudes of the system's residual (the rule)
    floor = cg_allowance(dtype_name(phi), twin, to_numpy64(theta), to_numpy64(phi), g_star,
                         dim_factor=max(distinct, 1))
    return compare("cg-finite-termination", SECTION, FT_STATEMENT, err, floor,
                   instance=dict(instance or {}, distinct_eigenvalues=distinct),
                   details={"steps": res.steps, "status": res.status.value})


def units(ctx):
    """One unit per grid instance (log-spaced spectra; both norms), one for the far ones."""
    return grid_units(ctx, "cg-bound", queries=("shared", "independent"), spectrum="log") + [
        Unit(("far",), size=1.0, label="cg-bound far instances")]


@claim("cg-bound", title="CG: Chebyshev bound", section=SECTION, statement=STATEMENT, units=units)
def run_unit(ctx, key):
    if key[0] == "far":
        cases = far_instances(ctx, quick_count=1)
    else:
        _, i, d, kappa, lam, query = key
        task, _, theta, _, inst = make_instance(ctx, d, kappa, lam, query, i, spectrum="log")
        cases = [(task, theta, inst)]
    return [r for task, theta, inst in cases
            for r in check_cg_bound_norms(task, theta, ("2", "M"), instance=inst)]


@claim("cg-finite-termination", title="CG: finite termination", section=SECTION, statement=FT_STATEMENT)
def run_finite_termination(ctx):
    """Spectra with m distinct eigenvalues (A = Q diag(s) Qᵀ with s taking m values)."""
    results = []
    for dim in ((8, 30) if ctx.quick else (8, 30, 60)):
        for m in (1, 2, 3, 5):
            seed = ctx.rng_seed(dim, m)
            task, spec = planted_spectrum_task(dim, 10.0, 1.0, seed=seed, query="independent")
            rng = np.random.default_rng(seed)
            levels = np.linspace(0.0, 9.0, m) if m > 1 else np.array([4.0])
            s = levels[np.arange(dim) % m]
            Q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
            A = (Q * s) @ Q.T
            conv = lambda x: to_array(x, array=ctx.array, dtype=ctx.dtype, device=ctx.device)  # noqa: E731
            from theory.quadratic import QuadraticTask

            task = QuadraticTask(conv((A + A.T) / 2), conv(rng.standard_normal(dim)),
                                 conv(to_numpy64(task.A_query)), conv(to_numpy64(task.b_query)), 1.0)
            theta = conv(rng.standard_normal(dim))
            results.append(check_finite_termination(task, theta, m,
                                                    instance=dict(dim=dim, seed=seed, array=ctx.array,
                                                                  dtype=ctx.dtype, lam=1.0,
                                                                  levels=[float(x) for x in levels])))
    return results
