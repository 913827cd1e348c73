"""The Neumann series and the fixed-point hypergradient on the implicit system (I + H(φ)/λ) g = ∇L(φ)
(docs/mathematics.md §4a): the bound ‖g_k − g*‖ ≤ ‖I − αM‖^k‖g*‖ at every step, its divergence
when α‖M‖ > 2 (the negative control), and the identity of the fixed-point hypergradient with the
Neumann series at α = ηλ."""
from __future__ import annotations

import numpy as np

from solvers import LINEAR_SOLVERS, ImplicitSystem
from theory import to_numpy64
from theory.bounds import neumann_contraction, neumann_error_bound, neumann_steps_for_error
from verify.checks._common import cg_allowance, grid, make_instance, worst_step
from verify.checks._result import compare
from verify.registry import claim
from verify.tasks import float64_twin, to_array
from validation import dtype_name

SECTION = "§4a"
STATEMENT = ("‖g_k − g*‖ ≤ ‖I − αM‖^k ‖g*‖ for every k (Neumann series from g₀ = 0; the fixed "
             "point with α = ηλ)")
DIVERGENCE_STATEMENT = "with α‖M‖ > 2 the Neumann series' error grows above its start ‖g*‖"
IDENTITY_STATEMENT = ("the fixed-point hypergradient after k iterations equals the k-term Neumann "
                      "series with α = ηλ (to rounding)")

#: the steps α of the sweep, as multiples of λ/β (1: the default; 2β/(μ + β): the best constant
#: step; 1.9: close to the limit 2)
ALPHAS = ("1/beta", "2/(mu+beta)", "1.9/beta")
#: the step of the negative control, times λ/β (α‖M‖ = 2.5 > 2)
DIVERGENT_ALPHA = 2.5


def _alpha(kind, beta, mu, lam):
    return {"1/beta": lam / beta, "2/(mu+beta)": 2 * lam / (mu + beta),
            "1.9/beta": 1.9 * lam / beta}[kind]


def _like(x, ref):
    """float64 NumPy ``x`` in ``ref``'s library, dtype and device."""
    return to_array(np.asarray(x, dtype=np.float64), array="torch" if hasattr(ref, "detach")
                    else "numpy", dtype=dtype_name(ref), device=str(getattr(ref, "device", "cpu")))


def _run(system, rhs, solver, options, steps, on_breakdown="raise"):
    return LINEAR_SOLVERS[solver].solve(system, rhs, options=options, max_steps=steps, rtol=0.0,
                                        atol=0.0, history=True, on_breakdown=on_breakdown)


def neumann_allowance(dtype, twin, theta64, phi64, g_star, alpha, spectrum):
    """The rounding of the series at φ: each step adds α·(the rounding of a residual), carried
    by the later factors (I − αM), so the total is at most α/(1 − q) times it (q the
    contraction) = (α/(1 − q))·(μ/λ) times CG's allowance (which carries λ/μ = ‖M⁻¹‖)."""
    q = neumann_contraction(spectrum, alpha)
    base = cg_allowance(dtype, twin, theta64, phi64, g_star)
    if q >= 1.0:
        return base
    return base * max(1.0, alpha / (1.0 - q) * spectrum[0])


def check_neumann_bound(task, theta, alpha, *, solver="neumann", steps=None, instance=None,
                        contraction=None, rhs=None):
    """Run the Neumann series (``solver='neumann'``, step ``alpha``) or the fixed-point
    hypergradient (``'fixed_point'``, map step η = α/λ) on the system at φ = Alg*(θ) with
    history and judge ‖g_k − g*‖ ≤ q^k‖g*‖ + allowance at every step (q = ‖I − αM‖ from the
    task's curvature bounds, or ``contraction``: a defective bound, the negative control).
    ``rhs``: another right-hand side (NumPy, float64) for the planted worst case. Reported:
    the failing step with the largest err/(bound + allowance), else the step with the largest
    err/bound among the steps k ≥ 1 whose bound is above the allowance."""
    twin = float64_twin(task)
    phi = task.inner_solution(theta)
    phi64, theta64 = to_numpy64(phi), to_numpy64(theta)
    beta, mu = twin.curvature_bounds()
    lam = float(twin.lam)
    spectrum = (mu / lam, beta / lam)
    M = ImplicitSystem.of_hessian(to_numpy64(twin.A), lam).matrix()
    v = task.outer_grad(phi) if rhs is None else _like(rhs, phi)
    g_star = np.linalg.solve(M, to_numpy64(v))
    q = neumann_contraction(spectrum, alpha) if contraction is None else float(contraction)
    floor = neumann_allowance(dtype_name(phi), twin, theta64, phi64, g_star, alpha, spectrum)
    e0 = float(np.linalg.norm(g_star))
    if steps is None:    # until the bound falls to rounding (capped: κ log(1/ε) steps can be many)
        k = neumann_steps_for_error(spectrum, alpha, max(floor, 1e-300) / max(e0, 1e-300))
        steps = min(k if k is not None else 10**9, 60 + 4 * phi64.shape[0])
    options = {"alpha": alpha} if solver == "neumann" else {"step_size": alpha / lam}
    res = _run(ImplicitSystem.at(task, phi), v, solver, options, steps)
    rows = [(k, float(np.linalg.norm(to_numpy64(g) - g_star)), q ** k * e0)
            for k, g in enumerate(res.history.iterates)]
    # (step 0 is the start, where error and bound are both ‖g*‖: not informative)
    k, err, bound, n_informative, n_failing = worst_step(rows, floor, skip_start=True)
    return compare("neumann-bound", SECTION, STATEMENT, err, bound, allowance=floor,
                   instance=dict(instance or {}, solver=solver, alpha=alpha, step=k),
                   details={"steps": res.steps, "contraction": q, "initial_error": e0,
                            "steps_above_rounding": n_informative,
                            "steps_failing": n_failing})


def worst_case_rhs(twin, alpha):
    """∇L with g* the unit eigenvector of M at the end of its spectrum that gives ‖I − αM‖:
    there the bound is attained, ‖g_k − g*‖ = ‖I − αM‖^k exactly."""
    lam = float(twin.lam)
    M = ImplicitSystem.of_hessian(to_numpy64(twin.A), lam).matrix()
    w, U = np.linalg.eigh(M)
    u = U[:, 0] if abs(1 - alpha * w[0]) >= abs(1 - alpha * w[-1]) else U[:, -1]
    return M @ u


def check_neumann_divergence(task, theta, alpha, *, steps=40, instance=None, system=None,
                             rhs=None, g_star=None):
    """The negative control: with α‖M‖ > 2 (or M indefinite) the series is run for ``steps``
    steps (``on_breakdown='return'``: as a library's fixed-budget series would) and its error
    must end above its start ‖g*‖. ``system``/``rhs``/``g_star``: another system (an indefinite
    one) in place of the task's at Alg*(θ)."""
    if system is None:
        twin = float64_twin(task)
        phi = task.inner_solution(theta)
        system, rhs = ImplicitSystem.at(task, phi), task.outer_grad(phi)
        g_star = to_numpy64(twin.implicit_gradient(to_numpy64(phi)))
    res = _run(system, rhs, "neumann", {"alpha": alpha}, steps, on_breakdown="return")
    err = float(np.linalg.norm(to_numpy64(res.x) - g_star))
    e0 = float(np.linalg.norm(g_star))
    return compare("neumann-divergence", SECTION, DIVERGENCE_STATEMENT, err, e0, relation=">",
                   instance=dict(instance or {}, alpha=alpha, steps=steps),
                   details={"status": res.status.value})


def check_fixed_point_identity(task, theta, eta, *, steps=30, instance=None, fixed_point=None):
    """The fixed-point hypergradient (map step η) against the Neumann series with α = ηλ at
    every iteration: the largest ‖g_k^fp − g_k^N‖ must be within the rounding of the two runs.
    ``fixed_point(system, rhs, eta, steps)`` may plant a defective implementation (its
    iterates); the negative control."""
    twin = float64_twin(task)
    phi = task.inner_solution(theta)
    phi64, theta64 = to_numpy64(phi), to_numpy64(theta)
    beta, mu = twin.curvature_bounds()
    lam = float(twin.lam)
    alpha = eta * lam
    spectrum = (mu / lam, beta / lam)
    system, v = ImplicitSystem.at(task, phi), task.outer_grad(phi)
    g_star = to_numpy64(twin.implicit_gradient(phi64))
    neu = _run(system, v, "neumann", {"alpha": alpha}, steps).history.iterates
    if fixed_point is None:
        fp = _run(system, v, "fixed_point", {"step_size": eta}, steps).history.iterates
    else:
        fp = fixed_point(system, v, eta, steps)
    gaps = [float(np.linalg.norm(to_numpy64(a) - to_numpy64(b))) for a, b in zip(fp, neu)]
    k = int(np.argmax(gaps))
    # both are rounded series: twice the series' allowance, times 2 for the map's own rounding
    # (the adjoint in units of 1/(ηλ), (I − J)v by a subtraction)
    floor = 4 * neumann_allowance(dtype_name(phi), twin, theta64, phi64, g_star, alpha, spectrum)
    return compare("fixed-point-neumann", SECTION, IDENTITY_STATEMENT, gaps[k], 0.0,
                   allowance=floor, instance=dict(instance or {}, eta=eta, step=k),
                   details={"steps": len(gaps) - 1, "iterates_compared": len(gaps),
                            "g_star_norm": float(np.linalg.norm(g_star))})


@claim("neumann-bound", title="Neumann series / fixed point: contraction bound", section=SECTION,
       statement=STATEMENT)
def run_bound(ctx):
    results = []
    for i, (d, kappa, lam, query) in enumerate(grid(ctx, queries=("shared", "independent"))):
        task, twin, theta, _, inst = make_instance(ctx, d, kappa, lam, query, i, spectrum="log")
        beta, mu = twin.curvature_bounds()
        for kind in ALPHAS:
            a = _alpha(kind, beta, mu, lam)
            results.append(check_neumann_bound(task, theta, a, instance=dict(inst, step_kind=kind)))
            # the planted worst case: g* along the eigenvector that gives ‖I − αM‖
            results.append(check_neumann_bound(task, theta, a, rhs=worst_case_rhs(twin, a),
                                               instance=dict(inst, step_kind=kind,
                                                             rhs="worst case")))
        results.append(check_neumann_bound(task, theta, lam / beta, solver="fixed_point",
                                           instance=dict(inst, step_kind="eta = 1/beta")))
    return results


@claim("neumann-divergence", title="Neumann series: divergence when α‖M‖ > 2 (control)",
       section=SECTION, statement=DIVERGENCE_STATEMENT)
def run_divergence(ctx):
    from verify.systems import indefinite_task

    results = []
    for i, (d, kappa, lam, query) in enumerate(grid(ctx, queries=("independent",))):
        task, twin, theta, _, inst = make_instance(ctx, d, kappa, lam, query, i, spectrum="log")
        beta, _ = twin.curvature_bounds()
        results.append(check_neumann_divergence(task, theta, DIVERGENT_ALPHA * lam / beta,
                                                instance=dict(inst, alpha_norm_M=DIVERGENT_ALPHA)))
    # an indefinite system: no step α > 0 converges (|1 − αm| > 1 for m < 0)
    for j, dim in enumerate((6, 12) if ctx.quick else (6, 12, 30)):
        seed = ctx.rng_seed(91, j)
        itask, spec = indefinite_task(dim, seed=seed, array=ctx.array, dtype=ctx.dtype,
                                      device=ctx.device)
        theta = _like(np.random.default_rng(seed + 1).standard_normal(dim), itask.A)
        phi = _like(itask.inner_solution(theta), itask.A)
        g_star = itask.implicit_gradient(phi)
        alpha = 1.0 / float(np.max(np.abs(itask.system_eigenvalues)))
        results.append(check_neumann_divergence(
            itask, theta, alpha, steps=60, system=ImplicitSystem.at(itask, phi),
            rhs=itask.outer_grad(phi), g_star=g_star,
            instance=dict(spec.as_dict(), array=ctx.array, dtype=ctx.dtype)))
    return results


@claim("fixed-point-neumann", title="Fixed-point hypergradient = Neumann series with α = ηλ",
       section=SECTION, statement=IDENTITY_STATEMENT)
def run_identity(ctx):
    results = []
    for i, (d, kappa, lam, query) in enumerate(grid(ctx, queries=("independent",))):
        task, twin, theta, _, inst = make_instance(ctx, d, kappa, lam, query, i, spectrum="log")
        beta, mu = twin.curvature_bounds()
        for eta_kind, eta in (("1/beta", 1.0 / beta), ("1/(mu+beta)", 1.0 / (mu + beta))):
            results.append(check_fixed_point_identity(task, theta, eta,
                                                      instance=dict(inst, eta_kind=eta_kind)))
    return results
