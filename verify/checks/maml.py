"""MAML and truncated backpropagation against their closed forms, and the Appendix D comparison
of exact-solve and approx-solve errors with iMAML (docs/mathematics.md §7, §8)."""
from __future__ import annotations

import warnings

import numpy as np

import theory.maml as tm
from solvers import imaml_meta_gradient, inner_solve, maml_meta_gradient, truncated_meta_gradient
from theory import to_numpy64
from theory.bounds import certify
from theory.quadratic import QuadraticTask
from verify.checks._common import exact_reference, far_instances, meta_gradient_allowance
from verify.tasks import (
    NonConvexQuadraticTask,
    float64_twin,
    nonconvex_task,
    paper_synthetic_task,
    planted_spectrum_task,
    to_array,
    torch64,
)
from verify.checks._result import compare
from verify.registry import claim
from validation import dtype_name

__all__ = ["check_maml_closed_form", "check_maml_exact_solve", "check_truncated",
           "appendix_d_row", "check_appendix_d", "adversarial_maml_task", "paper_comparison"]

SECTION = "§7"
SECTION_D = "§8 (Appendix D)"


def _norm(x) -> float:
    return float(np.linalg.norm(to_numpy64(x)))


def _step(task, step_size):
    return 1.0 / task.curvature_bounds()[0] if step_size is None else float(step_size)


def _allowance(task64, theta, K, dtype, step_size) -> float:
    """Rounding of K gradient steps and K backward steps in ``dtype`` (theory.tolerances rule):
    the magnitudes that enter a meta-gradient at φ_K (‖A‖‖φ‖, ‖b‖, λ‖θ‖, ‖A_q‖‖φ‖, ‖b_q‖, ...),
    accumulated over the K + 1 steps."""
    theta64 = to_numpy64(theta)
    phi_K = tm.maml_iterate(task64, theta64, step_size, K)
    g = tm.maml_meta_gradient(task64, theta64, step_size, K)
    return meta_gradient_allowance(dtype, task64, theta64, phi_K, g, dim_factor=K + 1)


def check_maml_closed_form(task, theta, *, inner_steps, step_size=None,
                           method=maml_meta_gradient, instance=None, backward="auto"):
    """MAML by autograd equals J_Kᵀ∇L(φ_K) with J_K = P^K + λC⁻¹(I − P^K) to rounding; that is,
    MAML's approx-solve error ‖g − dθL(Alg(θ))‖ is 0 (Alg = its own K steps)."""
    task64 = float64_twin(task)
    alpha = _step(task64, step_size)
    kwargs = {} if method is not maml_meta_gradient else {"backward": backward}
    g = method(task, theta, inner_steps=inner_steps, step_size=alpha, **kwargs).gradient
    ref = tm.maml_meta_gradient(task64, to_numpy64(theta), alpha, inner_steps)
    err = float(np.linalg.norm(to_numpy64(g) - ref))
    return compare("maml-closed-form", SECTION,
                   "MAML by autograd = J_Kᵀ∇L(φ_K), J_K = P^K + λC⁻¹(I − P^K) (approx-solve error 0)",
                   err, _allowance(task64, theta, inner_steps, dtype_name(theta), alpha),
                   instance=dict(instance or {}, inner_steps=inner_steps, step_size=alpha),
                   details={"reference_norm": float(np.linalg.norm(ref))})


def check_maml_exact_solve(task, theta, *, inner_steps, step_size=None,
                           method=maml_meta_gradient, instance=None):
    """MAML's exact-solve error ‖g − dθL(Alg*(θ))‖ ≤ q^K(...) (theory.maml bound, q = ‖P‖ for
    α ≤ 1/β): it decays at the rate ‖I − α(A + λI)‖^K."""
    task64 = float64_twin(task)
    alpha = _step(task64, step_size)
    theta64 = to_numpy64(theta)
    res = method(task, theta, inner_steps=inner_steps, step_size=alpha)
    g_star = to_numpy64(task64.meta_gradient(theta64))
    err = float(np.linalg.norm(to_numpy64(res.gradient) - g_star))
    c = task64.constants(theta64)
    phi_K = tm.maml_iterate(task64, theta64, alpha, inner_steps)
    r0 = float(np.linalg.norm(theta64 - to_numpy64(task64.inner_solution(theta64))))
    bound = tm.maml_exact_solve_error_bound(c, step_size=alpha, inner_steps=inner_steps,
                                            initial_distance=r0,
                                            outer_grad_norm=_norm(task64.outer_grad(phi_K)))
    q = tm.maml_contraction(task64, alpha)
    return compare("maml-exact-solve", SECTION,
                   "‖g_MAML − dθL(Alg*(θ))‖ ≤ q^K·max((β−λ)/β, (λ−μ)/μ)‖∇L(φ_K)‖ + (λ/μ)L q^K‖θ − φ*‖, "
                   "q = 1 − αμ",
                   err, bound, allowance=_allowance(task64, theta, inner_steps, dtype_name(theta), alpha),
                   instance=dict(instance or {}, inner_steps=inner_steps, step_size=alpha),
                   details={"contraction": q, "contraction_power": q ** inner_steps,
                            "exact_meta_gradient_norm": float(np.linalg.norm(g_star))})


def check_truncated(task, theta, *, inner_steps, backprop_steps, step_size=None,
                    method=truncated_meta_gradient, instance=None):
    """Truncated backpropagation's meta-gradient equals its closed form J^(T)ᵀ∇L(φ_K),
    J^(T) = λC⁻¹(I − P^T): measured is the vector difference ‖g_T − J^(T)ᵀ∇L(φ_K)‖ (its
    approx-solve error ‖(J_K − J^(T))ᵀ∇L(φ_K)‖ is reported in the details)."""
    task64 = float64_twin(task)
    alpha = _step(task64, step_size)
    theta64 = to_numpy64(theta)
    g = to_numpy64(method(task, theta, inner_steps=inner_steps, backprop_steps=backprop_steps,
                          step_size=alpha).gradient)
    maml = tm.maml_meta_gradient(task64, theta64, alpha, inner_steps)
    trunc = tm.truncated_meta_gradient(task64, theta64, alpha, inner_steps, backprop_steps)
    measured_err = float(np.linalg.norm(g - maml))
    closed_err = float(np.linalg.norm(trunc - maml))
    return compare("truncated-backprop", SECTION,
                   "truncated backprop's meta-gradient = J^(T)ᵀ∇L(φ_K), J^(T) = λC⁻¹(I − P^T) "
                   "(vector difference)",
                   float(np.linalg.norm(g - trunc)),
                   0.0, allowance=_allowance(task64, theta, inner_steps, dtype_name(theta), alpha),
                   instance=dict(instance or {}, inner_steps=inner_steps,
                                 backprop_steps=backprop_steps, step_size=alpha),
                   details={"approx_solve_error": measured_err, "closed_form": closed_err})


def _approx_solve_reference_nesterov(task64, theta64, inner_steps):
    """dθL(Alg(θ)) for Alg = K steps of iMAML's Nesterov inner solver from φ₀ = θ: autograd
    through the same solver code on a float64 torch copy of the task."""
    import torch

    tt = torch64(task64)
    th = torch.from_numpy(theta64.copy()).requires_grad_(True)
    with warnings.catch_warnings():  # the solver reads gradient norms as floats while recording
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
        phi = inner_solve(tt, th, inner_steps=inner_steps).x
    (g,) = torch.autograd.grad(phi, th, grad_outputs=tt.outer_grad(phi.detach()))
    return g.numpy()


def appendix_d_row(task64, theta64, K, *, truncate=None):
    """Exact-solve and approx-solve errors of MAML (K steps), truncated backprop (last K/2
    steps) and iMAML (K Nesterov steps + K CG steps): the same K inner gradients and K
    Hessian-vector products each. Returns {method: {...}}."""
    alpha = 1.0 / task64.curvature_bounds()[0]
    g_star = to_numpy64(task64.meta_gradient(theta64))
    T = K // 2 if truncate is None else truncate
    rows = {}
    maml = maml_meta_gradient(task64, theta64, inner_steps=K, step_size=alpha)
    trunc = truncated_meta_gradient(task64, theta64, inner_steps=K, backprop_steps=T,
                                    step_size=alpha)
    imaml = imaml_meta_gradient(task64, theta64, inner_steps=K, cg_steps=K)
    approx = {"maml": tm.maml_meta_gradient(task64, theta64, alpha, K),
              "truncated": tm.maml_meta_gradient(task64, theta64, alpha, K),
              "imaml": _approx_solve_reference_nesterov(task64, theta64, K)}
    for name, res in (("maml", maml), ("truncated", trunc), ("imaml", imaml)):
        g = to_numpy64(res.gradient)
        rows[name] = {"exact_solve_error": float(np.linalg.norm(g - g_star)),
                      "approx_solve_error": float(np.linalg.norm(g - approx[name])),
                      "evaluations": dict(res.evaluations), "result": res}
    return rows


def check_appendix_d(task64, theta64, K, *, instance=None, imaml_method=None):
    """Appendix D side by side, three checks: MAML's approx-solve error is 0; iMAML's
    exact-solve error is within its a-posteriori certificate (docs/mathematics.md §5a); and at the same
    compute iMAML's exact-solve error is at most MAML's."""
    rows = appendix_d_row(task64, theta64, K)
    if imaml_method is not None:  # a planted alternative for negative controls
        res = imaml_method(task64, theta64, K)
        g = to_numpy64(res.gradient)
        rows["imaml"]["result"] = res
        rows["imaml"]["exact_solve_error"] = float(np.linalg.norm(
            g - to_numpy64(task64.meta_gradient(theta64))))
    beta, mu = task64.curvature_bounds()
    inst = dict(instance or {}, inner_steps=K)
    table = {m: {k: v for k, v in r.items() if k != "result"} for m, r in rows.items()}
    out = [compare("appendix-d", SECTION_D, "MAML's approx-solve error is 0",
                   rows["maml"]["approx_solve_error"],
                   _allowance(task64, theta64, K, "float64", 1 / beta),
                   instance=inst, details={"table": table})]
    res = rows["imaml"]["result"]
    ref = exact_reference(task64)
    cert = certify(res, ref.constants(theta64))        # the plain call; μ, L proven
    true_err = ref.error(to_numpy64(res.gradient), ref.meta_gradient(theta64))   # proven upper end
    out.append(compare("appendix-d", SECTION_D,
                       "iMAML's exact-solve error (50 digits) ≤ its rounding-safe a-posteriori "
                       "certificate (Lemma 3, docs/mathematics.md §5a)",
                       true_err, cert.bound, instance=inst, details={"table": table}))
    out.append(compare("appendix-d", SECTION_D,
                       "at equal compute (K gradients + K HVPs) iMAML's exact-solve error ≤ MAML's",
                       rows["imaml"]["exact_solve_error"], rows["maml"]["exact_solve_error"],
                       instance=inst, details={"table": table}))
    return out


def adversarial_maml_task(dim, kappa, lam, *, seed, radius=1.0):
    """The instance where MAML's exact-solve bound is nearly attained (ratio → 1 as K grows):
    shared eigenvectors with Aₜ's top eigenvalue on A's bottom one ('reversed'), b = λr·v_min,
    bₜ = 0, θ = b/λ, so φ* = 0 and θ − φ* lies on the slowest direction of P.
    Returns (task, theta)."""
    base, _ = planted_spectrum_task(dim, kappa, lam, seed=seed, query="reversed")
    A = to_numpy64(base.A)
    v = np.linalg.eigh(A)[1][:, 0]
    b = lam * radius * v
    task = QuadraticTask(A, b, to_numpy64(base.A_query), np.zeros(dim), lam)
    return task, b / lam


def _grid(ctx):
    if ctx.quick:
        return [(5, 10.0, 1.0), (20, 1e3, 0.5)], (0, 1, 5, 40)
    return ([(d, k, lam) for d in (5, 20, 50) for k in (2.0, 100.0, 1e3) for lam in (0.1, 1.0, 10.0)],
            (0, 1, 5, 20, 100))


def _instances(ctx):
    grid, Ks = _grid(ctx)
    for i, (d, kappa, lam) in enumerate(grid):
        seed = ctx.rng_seed(3, i)
        task, spec = planted_spectrum_task(d, kappa, lam, seed=seed, query="independent",
                                           array=ctx.array, dtype=ctx.dtype, device=ctx.device)
        theta = to_array(np.random.default_rng(seed + 1).standard_normal(d), array=ctx.array,
                         dtype=ctx.dtype, device=ctx.device)
        yield task, theta, dict(spec.as_dict(), array=ctx.array, dtype=ctx.dtype), Ks
    if not ctx.quick:       # far from the grid: large ‖θ‖ with cancellation, non-convex L̂, κ = 1e6
        for task, theta, inst in far_instances(ctx):
            if inst.get("kappa", 0) < 1e5:    # MAML's K steps of GD make no progress at κ = 1e6
                yield task, theta, inst, Ks


@claim("maml-closed-form", title="MAML by autograd = its closed form (approx-solve error 0)",
       section=SECTION, statement="autograd through K GD steps on G(·,θ) equals J_Kᵀ∇L(φ_K), "
       "J_K = P^K + λC⁻¹(I − P^K), P = I − α(A + λI), to rounding")
def run_closed_form(ctx):
    out = []
    for task, theta, inst, Ks in _instances(ctx):
        for K in Ks:
            out.append(check_maml_closed_form(task, theta, inner_steps=K, instance=inst))
            if ctx.array == "numpy" and not ctx.quick:  # both backward modes on a torch copy
                tt, tt_task = to_array(to_numpy64(theta), array="torch"), torch64(task)
                out.append(check_maml_closed_form(tt_task, tt, inner_steps=K, backward="autograd",
                                                  instance=dict(inst, array="torch",
                                                                backward="autograd")))
    return out


@claim("maml-exact-solve", title="MAML's exact-solve error decays like ‖I − α(A + λI)‖^K",
       section=SECTION, statement="‖g_MAML − dθL(Alg*(θ))‖ ≤ q^K(e₀‖∇L(φ_K)‖ + (λ/μ)L‖θ − φ*‖), "
       "q = ‖I − α(A+λI)‖ = 1 − αμ for α = 1/β, e₀ = max((β−λ)/β, (λ−μ)/μ) ≥ ‖I − J*‖ (1 − λ/β "
       "for convex L̂); nearly attained on a planted instance, attained on a non-convex one",
       loose="the appendix states MAML's dependence on K only qualitatively (memory, not accuracy); "
       "‖I − J*‖ ≤ 1 − λ/β holds only for a convex inner loss (non-convex L̂ within Assumption 2: "
       "A = diag(−0.9, 1), λ = 1 gives ‖I − J*‖ = 9)")
def run_exact_solve(ctx):
    out = []
    for task, theta, inst, Ks in _instances(ctx):
        out += [check_maml_exact_solve(task, theta, inner_steps=K, instance=inst) for K in Ks]
    dims = ((10, 50.0, 5.0),) if ctx.quick else ((10, 50.0, 5.0), (50, 1e3, 1.0), (20, 10.0, 0.1))
    for i, (d, kappa, lam) in enumerate(dims):
        task, theta = adversarial_maml_task(d, kappa, lam, seed=ctx.rng_seed(31, i))
        for K in (5, 50, 200):
            out.append(check_maml_exact_solve(task, theta, inner_steps=K, instance=dict(
                family="adversarial (reversed, b on v_min)", dim=d, kappa=kappa, lam=lam)))
    for task, theta, inst in nonconvex_maml_instances(ctx):
        for K in (0, 1, 5, 50):
            out.append(check_maml_exact_solve(task, theta, inner_steps=K, instance=inst))
    return out


def nonconvex_maml_instances(ctx):
    """Non-convex inner losses within Assumption 2 (A indefinite, A + λI ≻ 0), where ‖I − J*‖
    reaches (λ − μ)/μ > 1 − λ/β: the 2-d instance A = diag(−0.9, 1), λ = 1, θ = φ* = 0 with
    ∇L(φ*) on the negative direction (the bound is attained at K = 0: error 9 = (λ − μ)/μ), and
    planted non-convex tasks. Yields (task, theta, instance) in ctx's array type."""
    conv = lambda x: to_array(x, array=ctx.array, dtype=ctx.dtype, device=ctx.device)  # noqa: E731
    yield (NonConvexQuadraticTask(conv(np.diag([-0.9, 1.0])), conv(np.zeros(2)), conv(np.eye(2)),
                                  conv(np.array([1.0, 0.0])), 1.0), conv(np.zeros(2)),
           {"family": "non-convex 2-d", "A": "diag(-0.9, 1)", "lam": 1.0})
    for i, (d, kappa, lam) in enumerate(((6, 50.0, 1.0),) if ctx.quick else
                                        ((6, 50.0, 1.0), (20, 1e3, 0.5), (10, 10.0, 5.0))):
        task, spec = nonconvex_task(d, kappa, lam, seed=ctx.rng_seed(32, i), query="reversed",
                                    array=ctx.array, dtype=ctx.dtype, device=ctx.device)
        theta = conv(np.random.default_rng(spec.seed).standard_normal(d))
        yield task, theta, dict(spec.as_dict(), family="non-convex planted")


@claim("truncated-backprop", title="Truncated backpropagation matches its closed form",
       section=SECTION, statement="backprop through the last T of K steps gives J^(T)ᵀ∇L(φ_K), "
       "J^(T) = λC⁻¹(I − P^T); its approx-solve error is ‖(J_K − J^(T))ᵀ∇L(φ_K)‖")
def run_truncated(ctx):
    out = []
    for task, theta, inst, Ks in _instances(ctx):
        for K in Ks:
            for T in sorted({0, K // 2, K}):
                out.append(check_truncated(task, theta, inner_steps=K, backprop_steps=T,
                                           instance=inst))
    return out


def paper_comparison(seed=0, Ks=(5, 20, 100)):
    """MAML, truncated backprop and iMAML on the paper's synthetic task (x ∈ R⁵⁰, λ = 5, κ = 50)
    at θ = 0, K = 5, 20, 100: {K: rows of :func:`appendix_d_row`} (the report's table)."""
    task, spec = paper_synthetic_task(seed=seed)
    theta = np.zeros(spec.dim)
    return {K: appendix_d_row(task, theta, K) for K in Ks}, spec


@claim("appendix-d", title="Appendix D: exact-solve vs approx-solve error, MAML / truncated / iMAML",
       section=SECTION_D, statement="MAML has approx-solve error 0; iMAML's exact-solve error is "
       "certified and, at equal compute, at most MAML's (paper's synthetic task and planted tasks)")
def run_appendix_d(ctx):
    out = []
    Ks = (5, 20, 100)
    task, spec = paper_synthetic_task(seed=ctx.seed)
    theta = np.zeros(spec.dim)
    for K in Ks:
        out += check_appendix_d(task, theta, K, instance=dict(spec.as_dict(), family="paper synthetic",
                                                              theta="0"))
    if not ctx.quick:
        for i, (d, kappa, lam) in enumerate(((20, 100.0, 1.0), (50, 1e3, 0.5))):
            seed = ctx.rng_seed(4, i)
            t, s = planted_spectrum_task(d, kappa, lam, seed=seed, query="independent")
            th = np.random.default_rng(seed + 1).standard_normal(d)
            for K in Ks:
                out += check_appendix_d(t, th, K, instance=s.as_dict())
    return out
