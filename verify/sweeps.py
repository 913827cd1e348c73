"""The numbers behind the report's figures and iteration-count table.

Each ``*_data(ctx)`` function runs the algorithms under test (``solvers``) on planted tasks,
measures errors against the exact references (``theory``) and returns plain JSON-able data
(lists of floats and ints). ``verify.figures`` draws the figures FROM these dictionaries (after
they have been stored in results.json), never from a second computation.

Everything here runs in float64 NumPy: the figures show the mathematics, the claims' checks
(``verify.checks``) are where dtype and device vary. ``ctx.quick`` selects smaller sweeps.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from solvers import (
    SolverResult,
    Status,
    fomaml_meta_gradient,
    imaml_meta_gradient,
    implicit_gradient_at,
    inner_solve,
    maml_meta_gradient,
    truncated_meta_gradient,
)
from theory import bounds
from theory.bounds import theorem2_constants
from theory.tolerances import rounding_allowance
from verify.measure import saved_bytes, steps_to_stay_below
from verify.tasks import paper_synthetic_task, planted_spectrum_task

__all__ = [
    "cg_steps_for_bound",
    "cg_error_data",
    "inner_solver_data",
    "theorem2_data",
    "paper_compute_data",
    "memory_data",
    "tightness_data",
    "pep_data",
    "iteration_count_configs",
    "iteration_count_row",
    "iteration_counts_data",
]


# -- small helpers ------------------------------------------------------------------------------
def cg_steps_for_bound(kappa, rel_error, *, norm="2") -> int:
    """Smallest k with the CG bound (theory.bounds.cg_error_bound, relative form) <= rel_error."""
    k = 0
    while bounds.cg_error_bound(kappa, k, 1.0, norm=norm) > rel_error:
        k += 1
    return k


def _exact_inner(phi) -> SolverResult:
    """An inner 'solver result' holding the exact inner solution (isolates the CG error)."""
    return SolverResult(x=phi, steps=0, residual_norm=0.0, status=Status.CONVERGED)


def _errors(iterates, reference) -> list[float]:
    return [float(np.linalg.norm(x - reference)) for x in iterates]


def _theta(ctx, dim, *salt):
    return np.random.default_rng(ctx.rng_seed(*salt)).standard_normal(dim)


# -- figure 1: meta-gradient error against CG steps ----------------------------------------------
def cg_error_data(ctx) -> dict:
    """Relative meta-gradient error ‖g_k − g*‖/‖g*‖ of k CG steps at the exact inner solution,
    with the CG bound 2√κ q^k (g₀ = 0), for several κ (docs/mathematics.md §4)."""
    dim, lam = (40, 1.0) if ctx.quick else (200, 1.0)
    kappas = [10.0, 100.0, 1000.0] if not ctx.quick else [10.0, 100.0]
    curves = []
    for i, kappa in enumerate(kappas):
        task, spec = planted_spectrum_task(dim, kappa, lam, seed=ctx.rng_seed(1, i),
                                           query="independent", spectrum="log")
        theta = _theta(ctx, dim, 1, i, 1)
        g_star = task.meta_gradient(theta)
        scale = float(np.linalg.norm(g_star))
        max_steps = min(cg_steps_for_bound(kappa, 1e-15), 2 * dim)
        res = implicit_gradient_at(task, theta, _exact_inner(task.inner_solution(theta)),
                                   cg_steps=max_steps, history=True)
        errors = [e / scale for e in _errors(res.cg.history.iterates, g_star)]
        bound = [bounds.cg_error_bound(kappa, k, 1.0) for k in range(len(errors))]
        allowance = rounding_allowance("float64", kappa=kappa, dim=dim)
        curves.append({
            "kappa": kappa, "task": spec.as_dict(), "steps": list(range(len(errors))),
            "relative_error": errors, "bound": bound, "rounding_allowance": allowance,
            "violations": int(sum(e > b + allowance for e, b in zip(errors, bound))),
        })
    return {"dim": dim, "lam": lam, "curves": curves}


# -- figure 2: inner solvers ----------------------------------------------------------------------
def inner_solver_data(ctx) -> dict:
    """‖φ_k − Alg*(θ)‖ against gradient (and HVP) evaluations for GD, Nesterov and Newton-CG
    from φ₀ = θ, with Lemma 2's count for δ = 1e-10·‖φ₀ − Alg*(θ)‖ (docs/mathematics.md §3)."""
    dim, kappa, lam = (40, 100.0, 1.0) if ctx.quick else (100, 100.0, 1.0)
    task, spec = planted_spectrum_task(dim, kappa, lam, seed=ctx.rng_seed(2), query="independent",
                                       spectrum="uniform")
    theta = _theta(ctx, dim, 2, 1)
    phi_star = task.inner_solution(theta)
    distance = float(np.linalg.norm(theta - phi_star))
    delta = 1e-10 * distance
    lemma2 = bounds.lemma2_steps(kappa, distance, delta)
    budget = int(1.25 * lemma2)
    methods = {}
    for name in ("gd", "nesterov"):
        res = inner_solve(task, theta, inner_steps=budget, inner=name, history=True)
        errors = _errors(res.history.iterates, phi_star)[:budget + 1]
        methods[name] = {"evaluations": list(range(len(errors))), "error": errors,
                         "evaluations_to_delta": steps_to_stay_below(errors, delta)}
    newton_cg_steps = 5
    per_iteration = 1 + newton_cg_steps          # one gradient and (at most) 5 HVPs
    res = inner_solve(task, theta, inner_steps=budget // per_iteration, inner="newton_cg",
                      newton_cg_steps=newton_cg_steps, history=True)
    errors = _errors(res.history.iterates, phi_star)
    iterations = steps_to_stay_below(errors, delta)
    methods["newton_cg"] = {"evaluations": [k * per_iteration for k in range(len(errors))],
                            "error": errors, "status": res.status.value,
                            "evaluations_to_delta": None if iterations is None
                            else iterations * per_iteration}
    return {"task": spec.as_dict(), "kappa": kappa, "distance": distance, "delta": delta,
            "lemma2_steps": lemma2, "newton_cg_steps": newton_cg_steps,
            "bound_steps": list(range(budget + 1)),
            "nesterov_bound": [bounds.nesterov_distance_bound(kappa, k, distance)
                               for k in range(budget + 1)],
            "methods": methods}


# -- figure 3: Theorem 2 ---------------------------------------------------------------------------
def theorem2_data(ctx) -> dict:
    """Steps actually needed for an ε-accurate meta-gradient on the paper's synthetic task, next to
    Theorem 2's T_inner, T_cg and the proof's typo count (docs/mathematics.md §6), with the constants the
    theorem2 claim uses (instance constants, B valid within δ = ε/(2B₁) of Alg*(θ)).

    Measured: Nesterov from φ₀ = 0 — the fewest steps k after which the meta-gradient with an exact
    linear solve at φ_k stays within ε/2 of the exact one; CG from g₀ = 0 at Alg*(θ) — the fewest
    steps after which ‖g_k − g*‖ stays ≤ ε/2; and the error of iMAML run with those two counts
    (measured, since the CG error at φ_k differs from the CG error at Alg*(θ))."""
    task, spec = paper_synthetic_task(seed=ctx.rng_seed(3))
    dim = spec.dim
    theta = _theta(ctx, dim, 3, 1) / math.sqrt(dim)
    g_star = task.meta_gradient(theta)
    J = task.jacobian(theta)
    eps_grid = [float(e) for e in (np.logspace(-1, -8, 4) if ctx.quick else np.logspace(-1, -10, 10))]
    consts = [theorem2_constants(task, theta, e)[0] for e in eps_grid]
    t_counts = [bounds.theorem2_steps(c, e) for c, e in zip(consts, eps_grid)]
    max_inner = int(1.2 * max(t for t, _ in t_counts)) + 1
    inner = inner_solve(task, theta, inner_steps=max_inner, inner="nesterov", warm_start="zero",
                        history=True)
    inner_err = [float(np.linalg.norm(J @ task.outer_grad(phi) - g_star))
                 for phi in inner.history.iterates[:max_inner + 1]]
    max_cg = int(1.2 * max(t for _, t in t_counts)) + 1
    cg_res = implicit_gradient_at(task, theta, _exact_inner(task.inner_solution(theta)),
                                  cg_steps=max_cg, history=True)
    cg_err = _errors(cg_res.cg.history.iterates, g_star)
    rows = []
    for eps, c, (t_inner, t_cg) in zip(eps_grid, consts, t_counts):
        need_inner = steps_to_stay_below(inner_err, eps / 2)
        need_cg = steps_to_stay_below(cg_err, eps / 2)
        achieved = None
        if need_inner is not None and need_cg is not None:
            r = imaml_meta_gradient(task, theta, inner_steps=need_inner, cg_steps=need_cg,
                                    warm_start="zero")
            achieved = float(np.linalg.norm(r.gradient - g_star))
        rows.append({"eps": eps, "T_inner": t_inner, "T_cg": t_cg, "B": c.B,
                     "T_inner_proof_typo": bounds.theorem2_inner_steps_proof_typo(c, eps),
                     "needed_inner": need_inner, "needed_cg": need_cg,
                     "achieved_error": achieved})
    return {"task": spec.as_dict(), "constants": consts[0].as_dict(), "rows": rows}


# -- figure 4: the paper's synthetic experiment ----------------------------------------------------
def _total_evaluations(evaluations: dict) -> int:
    """Gradient and Hessian-vector product evaluations (inner and outer gradients, HVPs)."""
    return int(sum(v for k, v in evaluations.items() if k in ("inner_grad", "outer_grad", "grad", "hvp")))


def paper_compute_data(ctx) -> dict:
    """Exact-solve error ‖g − dθL(Alg*(θ))‖ against compute (gradient + HVP evaluations) on the
    paper's synthetic task for MAML, truncated backprop, first-order MAML and iMAML (docs/mathematics.md §7–§8)."""
    task, spec = paper_synthetic_task(seed=ctx.rng_seed(4))
    theta = _theta(ctx, spec.dim, 4, 1) / math.sqrt(spec.dim)
    g_star = task.meta_gradient(theta)
    scale = float(np.linalg.norm(g_star))
    steps = [1, 2, 4, 8, 16, 32] if ctx.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    methods = {}

    def point(result, k):
        g = getattr(result, "gradient", result)
        return {"steps": k, "evaluations": _total_evaluations(result.evaluations),
                "error": float(np.linalg.norm(np.asarray(g) - g_star)) / scale}

    methods["imaml"] = [point(imaml_meta_gradient(task, theta, inner_steps=k, cg_steps=k), k)
                        for k in steps]
    beta, _ = task.curvature_bounds()
    alpha = 1.0 / beta
    methods["maml"] = [point(maml_meta_gradient(task, theta, inner_steps=k, step_size=alpha), k)
                       for k in steps]
    methods["truncated"] = [point(truncated_meta_gradient(task, theta, inner_steps=k,
                                                          backprop_steps=max(1, k // 4),
                                                          step_size=alpha), k) for k in steps]
    methods["fomaml"] = [point(fomaml_meta_gradient(task, theta, inner_steps=k), k) for k in steps]
    return {"task": spec.as_dict(), "step_size": alpha, "methods": methods, "missing": None}


# -- figure 5: memory ------------------------------------------------------------------------------
def memory_data(ctx) -> dict:
    """Peak bytes autograd holds for the backward pass while one meta-gradient is computed,
    against the number of inner steps K, for MAML (backprop through K gradient steps) and iMAML
    (K gradient steps, then 5 CG steps) on an MLP 1-40-40-1 (sinusoid regression), measured by
    ``verify.measure.saved_bytes`` (the memory claim's meter, docs/mathematics.md §8). (On quadratic and
    logistic tasks iMAML's Hessian-vector products are closed forms: 0 bytes, nothing to plot.)"""
    steps = [1, 2, 4, 8, 16] if ctx.quick else [1, 2, 4, 8, 16, 32, 64]
    methods = {f"{method}-{model}": [{"steps": k, "bytes": int(saved_bytes(method, k, model=model,
                                                                          seed=ctx.seed))}
                                     for k in steps]
               for model in ("mlp",) for method in ("maml", "imaml")}
    return {"models": ["mlp"], "methods": methods, "missing": None}


# -- figure 6: tightness ---------------------------------------------------------------------------
def tightness_data(claim_records) -> dict:
    """Ratios measured/bound of every upper-bound check ('<=' relation) whose bound is above its
    rounding allowance, per claim (below it the ratio compares rounding errors)."""
    out = {}
    for rec in claim_records:
        ratios = [c["ratio"] for c in rec.get("checks", [])
                  if c["relation"] == "<=" and isinstance(c["ratio"], float) and c["ratio"] > 0
                  and math.isfinite(c["ratio"]) and c["bound"] > c["allowance"]]
        if ratios:
            out[rec["name"]] = ratios
    return {"ratios": out}


# -- figure 7: performance estimation --------------------------------------------------------------
def _pep_worst_case(steps: int, kappa: float) -> tuple[float, bool]:
    """Exact worst case of ‖x_k − x*‖/‖x₀ − x*‖ for docs/mathematics.md §3's Nesterov variant over all
    1-smooth, 1/κ-strongly convex functions (PEPit, Clarabel). Returns (value, accurate)."""
    from PEPit import PEP
    from PEPit.functions import SmoothStronglyConvexFunction

    L, mu = 1.0, 1.0 / kappa
    q = bounds.cg_contraction(kappa)
    problem = PEP()
    f = problem.declare_function(SmoothStronglyConvexFunction, mu=mu, L=L)
    xs = f.stationary_point()
    x0 = problem.set_initial_point()
    problem.set_initial_condition((x0 - xs) ** 2 <= 1)
    x = y = x0
    for _ in range(steps):
        x_new = y - (1 / L) * f.gradient(y)
        y = x_new + q * (x_new - x)
        x = x_new
    problem.set_performance_metric((x - xs) ** 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tau = problem.solve(wrapper="cvxpy", solver="CLARABEL", verbose=0)
    accurate = not any("inaccurate" in str(w.message) for w in caught)
    return math.sqrt(max(float(tau), 0.0)), accurate


def pep_data(ctx) -> dict:
    """Worst-case contraction of Nesterov's method: exact (PEPit) over all smooth strongly convex
    functions, Lemma 2's implied bound 2κ·exp(−k/(2√κ)), the standard bound
    √(κ+1)(1 − 1/√κ)^(k/2), and the observed worst case over quadratics with spectrum in [μ, β]."""
    kappa = 10.0
    steps = [1, 2, 4, 6, 8, 10, 12] if ctx.quick else list(range(1, 25))
    try:
        import PEPit  # noqa: F401
        import cvxpy  # noqa: F401
    except ImportError as exc:
        return {"missing": f"the optional 'pep' extra is not installed ({exc.name}); "
                           f"pip install 'imaml-verify[pep]'", "kappa": kappa}
    pep, accurate = [], []
    for k in steps:
        value, ok = _pep_worst_case(k, kappa)
        pep.append(value)
        accurate.append(ok)
    # quadratics: every eigen-direction evolves on its own, so one run on a diagonal quadratic
    # with a dense spectrum in [mu, beta] and x0 = (1, ..., 1) gives each eigenvalue's contraction
    mu, beta = 1.0 / kappa, 1.0
    spectrum = np.linspace(mu, beta, 2001)
    from solvers import nesterov

    res = nesterov(lambda x: spectrum * x, np.ones_like(spectrum), step_size=1 / beta,
                   momentum=bounds.cg_contraction(kappa), max_steps=max(steps), history=True)
    quadratic = [float(np.max(np.abs(res.history.iterates[k]))) for k in steps]
    return {"missing": None, "kappa": kappa, "steps": steps, "pep": pep, "pep_accurate": accurate,
            "quadratic": quadratic,
            "lemma2_implied": [2 * kappa * math.exp(-k / (2 * math.sqrt(kappa))) for k in steps],
            "standard_bound": [bounds.nesterov_distance_bound(kappa, k, 1.0) for k in steps]}


# -- iteration-count table (and benchmarks/test_iteration_counts.py) ------------------------------
def iteration_count_configs(quick: bool) -> list[dict]:
    """The configurations of the iteration-count table (d, κ, target relative accuracy)."""
    kappas = [10.0, 100.0] if quick else [10.0, 100.0, 1000.0]
    targets = [1e-4] if quick else [1e-2, 1e-6, 1e-10]
    dim = 40 if quick else 100
    return [{"dim": dim, "kappa": k, "target": t} for k in kappas for t in targets]


def iteration_count_row(config: dict, *, seed: int) -> dict:
    """Steps taken by Nesterov, GD (the negative control) and CG to reach a relative accuracy,
    next to the bound counts: Lemma 2 for the inner solvers, the CG bound for CG."""
    dim, kappa, target = config["dim"], config["kappa"], config["target"]
    task, spec = planted_spectrum_task(dim, kappa, 1.0, seed=seed, query="independent",
                                       spectrum="uniform")
    theta = np.random.default_rng(seed).standard_normal(dim)
    phi_star = task.inner_solution(theta)
    distance = float(np.linalg.norm(theta - phi_star))
    delta = target * distance
    lemma2 = bounds.lemma2_steps(kappa, distance, delta)
    row = {**config, "seed": seed, "lemma2_steps": lemma2,
           "gd_estimate": bounds.gd_steps_estimate(kappa, distance, delta)}
    for name, budget in (("nesterov", 2 * lemma2), ("gd", 2 * max(lemma2, row["gd_estimate"]))):
        res = inner_solve(task, theta, inner_steps=budget, inner=name, history=True)
        errors = _errors(res.history.iterates[:budget + 1], phi_star)
        row[f"{name}_steps"] = steps_to_stay_below(errors, delta)
        row[f"{name}_final_residual"] = float(res.residual_norm)
    g_star = task.meta_gradient(theta)
    cg_bound = cg_steps_for_bound(kappa, target)
    res = implicit_gradient_at(task, theta, _exact_inner(phi_star), cg_steps=2 * cg_bound,
                               history=True)
    errors = _errors(res.cg.history.iterates, g_star)
    row["cg_bound_steps"] = cg_bound
    row["cg_steps"] = steps_to_stay_below(errors, target * float(np.linalg.norm(g_star)))
    row["cg_final_residual"] = float(res.cg_residual)

    def ratio(a, b):
        return None if a is None or not b else a / b

    row["nesterov_over_lemma2"] = ratio(row["nesterov_steps"], lemma2)
    row["gd_over_lemma2"] = ratio(row["gd_steps"], lemma2)
    row["cg_over_bound"] = ratio(row["cg_steps"], cg_bound)
    return row


def iteration_counts_data(ctx) -> dict:
    rows = [iteration_count_row(cfg, seed=ctx.rng_seed(9, i))
            for i, cfg in enumerate(iteration_count_configs(ctx.quick))]
    return {"rows": rows}
