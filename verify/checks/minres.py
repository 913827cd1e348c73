"""MINRES on the implicit system (I + H(φ)/λ) g = ∇L(φ), definite and indefinite
(docs/mathematics.md §4b): the Chebyshev residual bound on a definite spectrum, the
two-interval bound on an indefinite one, at every step, and the negative control that the
one-interval bound does not carry over to an indefinite spectrum."""
from __future__ import annotations


import numpy as np

from solvers import ImplicitSystem, minres
from theory import to_numpy64
from theory.bounds import minres_residual_bound
from theory.tolerances import allowance as allowance_rule
from theory.tolerances import computation_magnitudes
from verify.checks._common import grid, make_instance, worst_step
from verify.checks._result import compare
from verify.registry import claim
from verify.tasks import float64_twin, to_array
from validation import dtype_name

SECTION = "§4b"
STATEMENT = ("‖r_k‖ ≤ 2q^k‖r₀‖ on a spectrum in [c, d] and ‖r_k‖ ≤ 2q̃^⌊k/2⌋‖r₀‖ on "
             "[−a, −b] ∪ [c, d] for every k (MINRES from g₀ = 0)")
CONTROL_STATEMENT = ("on an indefinite spectrum MINRES's residual exceeds the one-interval bound "
                     "2q^k‖r₀‖ with κ = max|t|/min|t|")

#: the indefinite spectra of the sweep (eigenvalues of M in negative ∪ positive)
INDEFINITE = (((-4.0, -0.5), (0.5, 4.0)), ((-1.0, -0.1), (0.2, 10.0)), ((-20.0, -1.0), (0.5, 2.0)))


def residual_allowance(dtype, task64, theta64, phi64, g64, cond):
    """The rounding of a computed residual ‖∇L − M g‖ at φ: the allowance rule on the terms of
    the residual (theory.tolerances.computation_magnitudes), with M's condition number."""
    m = computation_magnitudes(task64, theta64, phi64, g64)
    return allowance_rule(dtype, terms=m.residual, kappa=max(cond, 1.0), dim=m.dim)


def check_minres_bound(task, theta, *, positive, negative=None, phi=None, steps=None,
                       instance=None, name="minres-bound", relation="<=", bound_kwargs=None):
    """Run MINRES with history on the system at φ (default Alg*(θ); an indefinite task's
    stationary point) and compare the true residual ‖∇L − M g_k‖ of every iterate (float64,
    from the iterate) with the residual bound for eigenvalues in ``positive`` ∪ ``negative``
    plus the rounding allowance. ``bound_kwargs`` overrides the intervals given to the bound
    (the negative control passes the one-interval hull). Reported: the failing step with the
    largest ‖r_k‖/(bound + allowance), else the step with the largest ratio to the bound among
    those whose bound is above the allowance; for relation '>' the step with the largest
    ratio."""
    twin = float64_twin(task) if hasattr(task, "curvature_bounds") else task
    phi = task.inner_solution(theta) if phi is None else phi
    phi64, theta64 = to_numpy64(phi), to_numpy64(theta)
    lam = float(twin.lam)
    M = ImplicitSystem.of_hessian(to_numpy64(twin.A), lam).matrix()
    v = task.outer_grad(phi)
    v64 = to_numpy64(v)
    g_star = np.linalg.solve(M, v64)
    w = np.linalg.eigvalsh(M)
    cond = float(np.max(np.abs(w)) / np.min(np.abs(w)))
    floor = residual_allowance(dtype_name(phi), twin, theta64, phi64, g_star, cond)
    r0 = float(np.linalg.norm(v64))
    kw = dict(positive=positive, negative=negative) if bound_kwargs is None else bound_kwargs
    if steps is None:
        steps = 10 * phi64.shape[0] + 50
        for k in range(steps + 1):
            if minres_residual_bound(k, r0, **kw) <= floor:
                steps = max(k, phi64.shape[0])
                break
    res = minres(ImplicitSystem.at(task, phi).matvec, v, max_steps=steps, rtol=0.0, atol=0.0,
                 history=True, on_breakdown="return")
    rows = [(k, float(np.linalg.norm(v64 - M @ to_numpy64(g))), minres_residual_bound(k, r0, **kw))
            for k, g in enumerate(res.history.iterates)]
    informative = [r for r in rows if r[0] > 0 and r[2] > floor]
    if relation == ">":
        k, rk, bound = max(informative or rows, key=lambda r: r[1] / max(r[2], 1e-300))
        return compare(name, SECTION, CONTROL_STATEMENT, rk, bound, relation=">",
                       instance=dict(instance or {}, step=k),
                       details={"steps": res.steps, "condition": cond})
    k, rk, bound, n_informative, n_failing = worst_step(rows, floor, skip_start=True)
    return compare(name, SECTION, STATEMENT, rk, bound, allowance=floor,
                   instance=dict(instance or {}, step=k),
                   details={"steps": res.steps, "status": res.status.value, "condition": cond,
                            "initial_residual": r0, "steps_above_rounding": n_informative,
                            "steps_failing": n_failing})


def _indefinite_instances(ctx):
    from verify.systems import indefinite_task

    out = []
    # (d ≥ 24: on fewer eigenvalues MINRES ends by finite termination before the rates show)
    dims = (24, 40) if ctx.quick else (24, 40, 80)
    for i, (neg, pos) in enumerate(INDEFINITE):
        for j, dim in enumerate(dims):
            seed = ctx.rng_seed(92, i, j)
            task, spec = indefinite_task(dim, negative=neg, positive=pos, seed=seed,
                                         array=ctx.array, dtype=ctx.dtype, device=ctx.device)
            conv = lambda x: to_array(x, array=ctx.array, dtype=ctx.dtype, device=ctx.device)  # noqa: E731
            theta = conv(np.random.default_rng(seed + 1).standard_normal(dim))
            phi = conv(task.inner_solution(theta))
            out.append((task, theta, phi, neg, pos,
                        dict(spec.as_dict(), array=ctx.array, dtype=ctx.dtype)))
    return out


@claim("minres-bound", title="MINRES: residual bounds, definite and indefinite", section=SECTION,
       statement=STATEMENT)
def run(ctx):
    results = []
    for i, (d, kappa, lam, query) in enumerate(grid(ctx, queries=("shared", "independent"))):
        task, twin, theta, _, inst = make_instance(ctx, d, kappa, lam, query, i, spectrum="log")
        beta, mu = twin.curvature_bounds()
        results.append(check_minres_bound(task, theta, positive=(mu / lam, beta / lam),
                                          instance=dict(inst, spectrum_kind="definite")))
    for task, theta, phi, neg, pos, inst in _indefinite_instances(ctx):
        results.append(check_minres_bound(task, theta, phi=phi, positive=pos, negative=neg,
                                          instance=inst))
    return results


@claim("minres-indefinite-control", title="MINRES: the definite bound fails on indefinite spectra "
       "(control)", section=SECTION, statement=CONTROL_STATEMENT)
def run_control(ctx):
    results = []
    for task, theta, phi, neg, pos, inst in _indefinite_instances(ctx):
        lo = min(-neg[1], pos[0])
        hi = max(-neg[0], pos[1])
        results.append(check_minres_bound(task, theta, phi=phi, positive=pos, negative=neg,
                                          instance=dict(inst, hull=(lo, hi)),
                                          name="minres-indefinite-control", relation=">",
                                          bound_kwargs=dict(positive=(lo, hi))))
    return results
