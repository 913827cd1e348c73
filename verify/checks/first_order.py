"""First-order MAML and Reptile against iMAML (docs/mathematics.md §7), each judged against an
independent computation: the closed form of the inner solver's K-th iterate (theory.maml:
P^K for gradient descent, the eigenbasis 2×2 recursion for Nesterov) and the task's exact
inner solution (50 digits), never against the code path the solver itself calls.

- ``fomaml-direction``: first-order MAML returns ∇L(Alg(θ)) with Alg = K inner steps.
- ``reptile-direction``: Reptile's θ − φ_K is the closed-form θ − φ_K and tends to ∇L̂(φ*)/λ
  (the inner loss's first-order direction over λ) within the inner solver's distance bound.
- ``reptile-same-loss``: with L = L̂, λ·Reptile and first-order MAML differ by ‖∇G(φ_K, θ)‖ ≤
  β‖φ_K − φ*‖, bounded by the solver's rate (they agree at the exact inner solution).
- ``reptile-counterexample``: a finding — with L ≠ L̂ they point in different directions.
- ``imaml-interpolates``: CG from g₀ = ∇L(φ) moves from first-order MAML (0 steps) to the exact
  implicit gradient (as many steps as I + H/λ has distinct eigenvalues), with an M-norm error
  that never increases.

Structural facts (first-order MAML *is* iMAML's code with 0 CG steps from ∇L; Reptile's
(θ − φ) − ∇L̂(φ)/λ = −∇G/λ) are unit tests in tests/test_first_order.py, not claims: they
hold by construction and cannot fail except by rounding."""
from __future__ import annotations

import math

import numpy as np

import theory.maml as tm
from solvers import (
    ImplicitSystem,
    fomaml_meta_gradient,
    implicit_gradient_at,
    reptile_direction,
)
from theory import to_numpy64
from theory.bounds import nesterov_distance_bound
from theory.quadratic import QuadraticTask
from theory.tolerances import rounding_allowance
from verify.checks._common import (
    cg_allowance,
    exact_reference,
    far_instances,
    inner_allowance,
    meta_gradient_allowance,
)
from verify.checks._result import compare
from verify.registry import claim
from verify.tasks import float64_twin, paper_synthetic_task, planted_spectrum_task, to_array
from validation import dtype_name

__all__ = ["closed_form_iterate", "reference_step_sizes", "distance_bound", "check_fomaml_direction",
           "check_reptile_direction", "check_reptile_same_loss", "check_reptile_counterexample",
           "check_interpolation", "opposite_tasks_example", "reptile_numbers", "krylov_errors",
           "distinct_eigenvalues"]

SECTION = "§7"


def _kappa(task):
    beta, mu = task.curvature_bounds()
    return beta / mu


def reference_step_sizes(task64) -> tuple[float, float]:
    """(1/β, (√κ − 1)/(√κ + 1)) from the eigenvalues of A + λI, computed here (float64
    ``eigvalsh``): the solvers' documented defaults, derived independently of
    ``solvers.default_step_sizes`` so that a solver whose default step drifts is caught."""
    w = np.linalg.eigvalsh(to_numpy64(task64.A)) + float(task64.lam)
    beta, mu = float(w[-1]), float(w[0])
    root = math.sqrt(beta / mu)
    return 1.0 / beta, (root - 1.0) / (root + 1.0)


def closed_form_iterate(task64, theta64, inner, inner_steps) -> np.ndarray:
    """φ_K of K steps of ``inner`` ('gd' or 'nesterov', step 1/β and momentum (√κ−1)/(√κ+1) as
    documented, :func:`reference_step_sizes`) from φ₀ = θ, in closed form (theory.maml)."""
    step, momentum = reference_step_sizes(task64)
    if inner == "gd":
        return tm.maml_iterate(task64, theta64, step, inner_steps)
    if inner == "nesterov":
        return tm.nesterov_iterate(task64, theta64, step, momentum, inner_steps)
    raise ValueError(f"inner must be 'gd' or 'nesterov', got {inner!r}")


def distance_bound(task64, theta64, inner, inner_steps, phi_star) -> float:
    """Upper bound on ‖φ_K − φ*‖: (1 − 1/κ)^K‖θ − φ*‖ for gradient descent with step 1/β on a
    quadratic, the Nesterov bound of docs/mathematics.md §3 otherwise."""
    kappa = _kappa(task64)
    r0 = float(np.linalg.norm(theta64 - phi_star))
    if inner == "gd":
        return (1 - 1 / kappa) ** inner_steps * r0
    return nesterov_distance_bound(kappa, inner_steps, r0)


def check_fomaml_direction(task, theta, *, inner_steps, inner="nesterov",
                           method=fomaml_meta_gradient, instance=None):
    """First-order MAML's output against ∇L(φ_K) with φ_K the closed-form K-th iterate."""
    twin, theta64 = float64_twin(task), to_numpy64(theta)
    g = to_numpy64(method(task, theta, inner_steps=inner_steps, inner=inner).gradient)
    phi_k = closed_form_iterate(twin, theta64, inner, inner_steps)
    expected = to_numpy64(twin.outer_grad(phi_k))
    dt = dtype_name(theta)
    # the iterate's rounding (K steps) propagated through ∇L (‖A_q‖ ≤ L), plus ∇L's own
    L = float(np.linalg.eigvalsh(to_numpy64(twin.A_query))[-1])
    floor = L * inner_allowance(dt, twin, theta64, phi_k, dim_factor=inner_steps + 1) \
        + cg_allowance(dt, twin, theta64, phi_k, expected)
    return compare("fomaml-direction", SECTION,
                   "first-order MAML = ∇L(φ_K), φ_K the closed-form K-th inner iterate",
                   float(np.linalg.norm(g - expected)), 0.0, allowance=floor,
                   instance=dict(instance or {}, inner=inner, inner_steps=inner_steps),
                   details={"norm": float(np.linalg.norm(expected))})


def check_reptile_direction(task, theta, *, inner_steps, inner="nesterov",
                            method=reptile_direction, instance=None):
    """Two results: Reptile's θ − φ_K equals the closed-form θ − φ_K; and its distance to
    ∇L̂(φ*)/λ (the inner loss's first-order direction over λ at the exact inner solution,
    50 digits) is within the inner solver's distance bound on ‖φ_K − φ*‖."""
    twin, theta64 = float64_twin(task), to_numpy64(theta)
    d = to_numpy64(method(task, theta, inner_steps=inner_steps, inner=inner).gradient)
    phi_k = closed_form_iterate(twin, theta64, inner, inner_steps)
    ref = exact_reference(twin)
    phi_star = ref.inner_solution(theta64)
    limit = ref.inner_gradient_over_lam(theta64)     # ∇L̂(φ*)/λ = θ − φ*, enclosed (50 digits)
    dt = dtype_name(theta)
    floor = inner_allowance(dt, twin, theta64, phi_k, dim_factor=inner_steps + 1)
    inst = dict(instance or {}, inner=inner, inner_steps=inner_steps)
    bound = distance_bound(twin, theta64, inner, inner_steps, ref.as_float(phi_star))
    return [compare("reptile-direction", SECTION,
                    "Reptile's θ − φ_K = θ − (closed-form K-th inner iterate)",
                    float(np.linalg.norm(d - (theta64 - phi_k))), 0.0, allowance=floor,
                    instance=inst),
            compare("reptile-direction", SECTION,
                    "‖(θ − φ_K) − ∇L̂(φ*)/λ‖ ≤ the inner solver's bound on ‖φ_K − φ*‖",
                    ref.error(d, limit), bound, allowance=floor, instance=inst,
                    details={"limit_norm": float(np.linalg.norm(ref.as_float(limit)))})]


def check_reptile_same_loss(task, theta, *, inner_steps, inner="nesterov",
                            method=reptile_direction, fomaml=fomaml_meta_gradient, instance=None):
    """With L = L̂: ‖λ(θ − φ_K) − g_FO‖ = ‖∇G(φ_K, θ)‖ ≤ β‖φ_K − φ*‖ ≤ β·(the inner solver's
    distance bound): Reptile and first-order MAML agree up to the learning rate λ only as the
    inner solve converges (docs/mathematics.md §7)."""
    twin, theta64 = float64_twin(task), to_numpy64(theta)
    lam = float(task.lam)
    rep = to_numpy64(method(task, theta, inner_steps=inner_steps, inner=inner).gradient)
    fo = to_numpy64(fomaml(task, theta, inner_steps=inner_steps, inner=inner).gradient)
    ref = exact_reference(twin)
    phi_star = ref.as_float(ref.inner_solution(theta64))
    beta, _ = twin.curvature_bounds()
    bound = beta * distance_bound(twin, theta64, inner, inner_steps, phi_star)
    phi_k = closed_form_iterate(twin, theta64, inner, inner_steps)
    dt = dtype_name(theta)
    floor = beta * inner_allowance(dt, twin, theta64, phi_k, dim_factor=inner_steps + 1) \
        + meta_gradient_allowance(dt, twin, theta64, phi_k, fo)
    return compare("reptile-same-loss", SECTION,
                   "L = L̂: ‖λ(θ − φ_K) − ∇L(φ_K)‖ ≤ β·(bound on ‖φ_K − φ*‖)",
                   float(np.linalg.norm(lam * rep - fo)), bound, allowance=floor,
                   instance=dict(instance or {}, inner=inner, inner_steps=inner_steps))


def reptile_numbers(task, theta):
    """At the exact inner solution φ* (float64 reference): Reptile's λ(θ − φ*) = ∇L̂(φ*) against
    first-order MAML's ∇L(φ*) and the true meta-gradient: cosines and the length ratio."""
    t64 = float64_twin(task)
    theta64 = to_numpy64(theta)
    phi = to_numpy64(t64.inner_solution(theta64))
    rep = t64.lam * (theta64 - phi)
    fo = to_numpy64(t64.outer_grad(phi))
    true = to_numpy64(t64.meta_gradient(theta64))

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    return {"cosine_reptile_fomaml": cos(rep, fo),
            "ratio_reptile_fomaml": float(np.linalg.norm(rep) / np.linalg.norm(fo)),
            "cosine_reptile_true": cos(rep, true), "cosine_fomaml_true": cos(fo, true),
            "reptile_identity_error": float(np.linalg.norm(rep - to_numpy64(t64.inner_grad(phi))))}


def check_reptile_counterexample(task, theta, *, instance=None):
    """A finding about the appendix: with a query loss different from the inner loss,
    λ(θ − φ*) and ∇L(φ*) are NOT the same direction: 1 − cosine > rounding allowance (the
    appendix's "identical up to the learning rate" needs L = L̂ and an exact inner solve)."""
    nums = reptile_numbers(task, theta)
    allowance = rounding_allowance("float64", kappa=_kappa(task), dim=theta.shape[0])
    return compare("reptile-counterexample", SECTION,
                   "separate query loss: 1 − cos(λ(θ − φ*), ∇L(φ*)) > rounding (directions differ)",
                   1.0 - nums["cosine_reptile_fomaml"], allowance, relation=">", kind="finding",
                   instance=instance, details=nums)


def opposite_tasks_example(c: float = 1.0, lam: float = 1.0):
    """A 2-d counterexample: the support loss pulls φ toward +c·e₁, the query loss toward −c·e₁
    (A = Aₜ = I, b = −c e₁, bₜ = +c e₁), θ = 0. Then φ* = c e₁/(1 + λ), Reptile's λ(θ − φ*) = −λc e₁/(1 + λ) and first-order MAML's
    ∇L(φ*) = c e₁(2 + λ)/(1 + λ): cosine −1, ratio λ/(2 + λ). Returns (task, theta)."""
    e1 = np.array([1.0, 0.0])
    task = QuadraticTask(np.eye(2), -c * e1, np.eye(2), c * e1, lam)
    return task, np.zeros(2)


def m_norm(task64, v) -> float:
    """‖v‖_M with M = I + A/λ (positive definite under Assumption 2)."""
    M = ImplicitSystem.of_hessian(to_numpy64(task64.A), task64.lam).matrix()
    return float(math.sqrt(max(float(v @ M @ v), 0.0)))


def _exact_inner_result(task, theta64, twin):
    """A solver result holding φ = Alg*(θ) (50 digits, rounded to the task's dtype)."""
    from solvers import SolverResult, Status

    ref = exact_reference(twin)
    phi = to_array(ref.as_float(ref.inner_solution(theta64)),
                   array="torch" if hasattr(task.A, "detach") else "numpy",
                   dtype=dtype_name(task.A), device=str(getattr(task.A, "device", "cpu")))
    return SolverResult(x=phi, steps=0, residual_norm=0.0, status=Status.CONVERGED)


def krylov_errors(task64, phi64, g0, steps):
    """The smallest ‖g − g*‖_M over g₀ + span{r₀, Mr₀, …, M^(k−1)r₀} for k = 0 … ``steps``
    (M = I + H(φ)/λ, r₀ = ∇L(φ) − Mg₀, g* = M⁻¹∇L(φ)): what exact CG from g₀ attains at step
    k, computed independently of CG (Lanczos with full re-orthogonalisation in extended
    precision, verify.checker.reference.krylov_iterate)."""
    from verify.checker.reference import krylov_iterate

    M = ImplicitSystem.of_hessian(to_numpy64(task64.A), task64.lam).matrix()
    v = to_numpy64(task64.outer_grad(phi64))
    target = np.linalg.solve(M, v)
    r0 = v - M @ g0
    out = []
    for k in range(steps + 1):
        x = krylov_iterate(M, r0, k)[0] if k else np.zeros_like(g0)
        out.append(m_norm(task64, g0 + x - target))
    return out


def distinct_eigenvalues(task64, *, start="gradient") -> int:
    """The number of distinct eigenvalues of A (relative gap > 1e-8 of the largest) whose
    eigenvectors the starting residual can reach: exact CG on I + A/λ terminates after at
    most that many steps (docs/mathematics.md §4). From g₀ = ∇L(φ) the residual
    r₀ = −(A/λ)∇L(φ) has no component on A's null space, so a zero eigenvalue does not count;
    from g₀ = 0 every eigenvalue does."""
    w = np.linalg.eigvalsh(to_numpy64(task64.A))
    scale = max(float(np.max(np.abs(w))), 1e-300)
    distinct = [w[0]] + [b for a, b in zip(w[:-1], w[1:]) if b - a > 1e-8 * scale]
    if start == "gradient":
        distinct = [x for x in distinct if abs(x) > 1e-8 * scale]
    return len(distinct)


def check_interpolation(task, theta, *, start="gradient", instance=None,
                        cg_method=implicit_gradient_at):
    """iMAML from first-order MAML to the exact meta-gradient, at φ = Alg*(θ) (the 50-digit
    inner solution, rounded): four results — k = 0 CG steps from g₀ = ∇L(φ) return ∇L(φ)
    (first-order MAML, closed form); k = m steps (m the number of distinct eigenvalues of H)
    return (I + H(φ)/λ)⁻¹∇L(φ) (closed form: the exact meta-gradient); m − 1 steps do not
    (their error exceeds the rounding allowance: the m-step result is sharp, so a CG stopped
    a step early fails it); and at every k, ‖g_k − g*‖_M is no more than the smallest M-norm
    error over g₀ + the k-th Krylov space (CG's optimality, computed independently; it
    implies that the error never increases, which any descent method would also show)."""
    twin, theta64 = float64_twin(task), to_numpy64(theta)
    d = theta64.shape[0]
    m = distinct_eigenvalues(twin, start=start)
    inner = _exact_inner_result(task, theta64, twin)
    phi64 = to_numpy64(inner.x)
    fo = to_numpy64(twin.outer_grad(phi64))
    target = to_numpy64(twin.implicit_gradient(phi64))
    iterates = [to_numpy64(cg_method(task, theta, inner, cg_steps=k, cg_start=start).gradient)
                for k in range(m + 1)]
    g0 = fo if start == "gradient" else np.zeros(d)
    errs = [m_norm(twin, g - target) for g in iterates]
    optimal = krylov_errors(twin, phi64, g0, m)
    dt = dtype_name(theta)
    floor = cg_allowance(dt, twin, theta64, phi64, target, dim_factor=d)
    inst = dict(instance or {}, cg_start=start, distinct_eigenvalues=m)
    increase = max([b - a for a, b in zip(errs[:-1], errs[1:])] or [0.0])
    excess = [e - o for e, o in zip(errs, optimal)]
    kappa = _kappa(twin)
    short = float(np.linalg.norm(iterates[m - 1] - target)) if m >= 1 else math.inf
    # the control applies where exact CG is still short of the answer after m − 1 steps by more
    # than the allowance (the Krylov optimum's M-norm error over √λmax(M) bounds the Euclidean
    # one from below); on evenly spaced spectra CG can be at rounding level well before m
    lmax = 1 + float(np.linalg.eigvalsh(to_numpy64(twin.A))[-1]) / float(twin.lam)
    sharp = m >= 1 and optimal[m - 1] / math.sqrt(lmax) > floor
    return [compare("imaml-interpolates", SECTION, "0 CG steps from ∇L(φ) = first-order MAML ∇L(φ)",
                    float(np.linalg.norm(iterates[0] - fo)), 0.0,
                    allowance=cg_allowance(dt, twin, theta64, phi64, fo), instance=inst),
            compare("imaml-interpolates", SECTION,
                    "m CG steps from ∇L(φ) = (I + H(φ)/λ)⁻¹∇L(φ), the exact meta-gradient "
                    "(m = distinct eigenvalues of H)",
                    float(np.linalg.norm(iterates[m] - target)), 0.0, allowance=floor,
                    instance=inst, details={"first_order_error": float(np.linalg.norm(fo - target))}),
            *([compare("imaml-interpolates", SECTION,
                       "m − 1 CG steps do not reach it: error > the m-step allowance",
                       short, floor, relation=">", kind="control", instance=inst,
                       details={"krylov_optimal_m_norm_error": optimal[m - 1]})] if sharp else []),
            compare("imaml-interpolates", SECTION,
                    "‖g_k − g*‖_M ≤ min over g₀ + K_k(M, r₀) of ‖g − g*‖_M at every k (CG's "
                    "optimality; largest excess)",
                    max(max(excess), 0.0), 0.0, allowance=math.sqrt(kappa) * floor, instance=inst,
                    details={"m_norm_errors": errs, "krylov_optimal_m_norm_errors": optimal,
                             "largest_increase": max(increase, 0.0)})]


def _instances(ctx, query):
    dims = ((5, 10.0, 1.0), (20, 1e3, 0.5)) if ctx.quick else tuple(
        (d, k, lam) for d in (5, 20, 50) for k in (2.0, 100.0, 1e3) for lam in (0.1, 1.0, 10.0))
    for i, (d, kappa, lam) in enumerate(dims):
        seed = ctx.rng_seed(5, i, len(query))
        task, spec = planted_spectrum_task(d, kappa, lam, seed=seed, query=query, array=ctx.array,
                                           dtype=ctx.dtype, device=ctx.device)
        theta = to_array(np.random.default_rng(seed + 1).standard_normal(d), array=ctx.array,
                         dtype=ctx.dtype, device=ctx.device)
        yield task, theta, dict(spec.as_dict(), array=ctx.array, dtype=ctx.dtype)


def _far(ctx):
    """Far instances (large ‖θ‖, non-convex, κ = 1e6) in full mode only."""
    return [] if ctx.quick else far_instances(ctx)


def _steps(ctx):
    return (1, 10) if ctx.quick else (0, 1, 10, 100)


@claim("fomaml-direction", title="First-order MAML returns ∇L(Alg(θ))", section=SECTION,
       statement="first-order MAML's direction equals ∇L(φ_K), φ_K the K-th inner iterate in closed "
       "form (gradient descent: P^K; Nesterov: the eigenbasis recursion), to rounding")
def run_fomaml(ctx):
    out = []
    for task, theta, inst in list(_instances(ctx, "independent")) + _far(ctx):
        for K in _steps(ctx):
            for inner in ("nesterov", "gd"):
                out.append(check_fomaml_direction(task, theta, inner_steps=K, inner=inner,
                                                  instance=inst))
    return out


@claim("reptile-direction", title="Reptile's θ − φ tends to ∇L̂(φ*)/λ", section=SECTION,
       statement="Reptile's θ − φ_K equals the closed-form θ − φ_K, and ‖(θ − φ_K) − ∇L̂(φ*)/λ‖ "
       "= ‖φ_K − φ*‖ is within the inner solver's distance bound (the inner loss's direction, "
       "not the query loss's)")
def run_reptile_direction(ctx):
    out = []
    for task, theta, inst in list(_instances(ctx, "independent")) + _far(ctx):
        for K in _steps(ctx):
            for inner in ("nesterov", "gd"):
                out += check_reptile_direction(task, theta, inner_steps=K, inner=inner,
                                               instance=inst)
    return out


@claim("reptile-same-loss", title="Reptile = first-order MAML / λ when L = L̂, up to the inner solve",
       section=SECTION,
       statement="with the query loss equal to the inner loss, ‖λ(θ − φ_K) − ∇L(φ_K)‖ = "
       "‖∇G(φ_K, θ)‖ ≤ β·(the solver's bound on ‖φ_K − φ*‖)")
def run_reptile_same(ctx):
    out = []
    for task, theta, inst in _instances(ctx, "same"):
        for K in _steps(ctx):
            for inner in ("nesterov", "gd"):
                out.append(check_reptile_same_loss(task, theta, inner_steps=K, inner=inner,
                                                   instance=inst))
    return out


@claim("reptile-counterexample", title="Reptile ≠ first-order MAML / λ with a separate query loss",
       section=SECTION, statement="with L ≠ L̂, λ(θ − Alg*(θ)) = ∇L̂(φ*) and ∇L(φ*) point in different "
       "directions (cosine and length ratio reported)",
       loose="Appendix A calls Reptile and first-order MAML 'identical up to the learning rate'; "
       "that needs L = L̂ and an exact inner solve")
def run_counterexample(ctx):
    task, theta = opposite_tasks_example()
    out = [check_reptile_counterexample(task, theta, instance={"family": "opposite 2-d tasks",
                                                               "c": 1.0, "lam": 1.0})]
    paper, spec = paper_synthetic_task(seed=ctx.seed)
    out.append(check_reptile_counterexample(paper, np.zeros(spec.dim),
                                            instance=dict(spec.as_dict(), family="paper synthetic",
                                                          theta="0")))
    for task, theta, inst in _instances(ctx, "independent"):
        out.append(check_reptile_counterexample(task, theta, instance=inst))
    return out


@claim("imaml-interpolates", title="iMAML interpolates from first-order MAML to the exact meta-gradient",
       section="§4, §7",
       statement="CG on (I + H/λ)g = ∇L(φ) from g₀ = ∇L(φ): 0 steps give first-order MAML's ∇L(φ), "
       "m steps (m distinct eigenvalues of H) the exact (I + H(φ)/λ)⁻¹∇L(φ) and m − 1 do not, and "
       "in between each step's M-norm error is the smallest over its Krylov space")
def run_interpolation(ctx):
    out = []
    for task, theta, inst in list(_instances(ctx, "independent")) + far_instances(
            ctx, quick_count=1):
        out += check_interpolation(task, theta, instance=inst)
    return out
