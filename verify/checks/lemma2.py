"""Lemma 2: Nesterov's method reaches ‖x − x*‖ ≤ δ within 2√κ log(2κ‖x₀ − x*‖/δ) gradient
evaluations; plain gradient descent does not (the negative control) (docs/mathematics.md §3)."""
from __future__ import annotations

import numpy as np

from solvers import inner_solve
from theory.bounds import gd_steps_estimate, lemma2_steps
from theory.quadratic import QuadraticTask
from theory import to_numpy64
from verify.checks._common import far_instances, inner_allowance
from verify.checks._result import compare
from verify.measure import steps_to_reach
from verify.registry import claim
from verify.tasks import float64_twin, planted_spectrum_task, to_array
from validation import dtype_name

SECTION = "§3"
STATEMENT = "Nesterov (x₀ = θ, step 1/β, momentum (√κ−1)/(√κ+1)) after ⌈2√κ log(2κ‖x₀−x*‖/δ)⌉ steps is within δ of x*"
GD_STATEMENT = ("gradient descent (step 1/β) on a planted worst case needs more steps than Lemma 2's "
                "budget once κ is large: the lemma needs acceleration")


def worst_case_task(dim, kappa, lam, *, seed, distance=1.0, array="numpy", dtype="float64",
                    device="cpu"):
    """A planted worst case for first-order methods: θ − Alg*(θ) lies along A's bottom
    eigenvector (the slowest direction, contraction 1 − 1/κ per GD step), at ``distance``.
    Built by choosing φ* and θ = φ* + distance·u, then b = λθ − (A + λI)φ*. Returns (task, θ)."""
    base, _ = planted_spectrum_task(dim, kappa, lam, seed=seed, query="independent")
    rng = np.random.default_rng(seed + 7)
    A = to_numpy64(base.A)
    u = np.linalg.eigh(A)[1][:, 0]
    phi_star = rng.standard_normal(dim)
    theta = phi_star + distance * u
    b = lam * theta - (A + lam * np.eye(dim)) @ phi_star
    conv = lambda x: to_array(x, array=array, dtype=dtype, device=device)  # noqa: E731
    task = QuadraticTask(conv(A), conv(b), conv(to_numpy64(base.A_query)), conv(to_numpy64(base.b_query)), lam)
    return task, conv(theta)


def _setting(task, theta, delta):
    """(float64 twin, θ in float64, x* = Alg*(θ), κ, ‖x₀ − x*‖, Lemma 2's count for δ)."""
    twin = float64_twin(task)
    theta64 = to_numpy64(theta)
    x_star = twin.inner_solution(theta64)
    beta, mu = twin.curvature_bounds()
    dist0 = float(np.linalg.norm(theta64 - x_star))
    return twin, theta64, x_star, beta / mu, dist0, lemma2_steps(beta / mu, dist0, delta)


def recorded_run(task, theta, deltas, *, inner="nesterov"):
    """One run of ``inner`` from θ with its history, as long as the largest of Lemma 2's counts
    for ``deltas``: a fixed-step run of T steps is the first T steps of any longer one, so it
    serves :func:`check_lemma2` for every δ (``recorded=``)."""
    budget = max(_setting(task, theta, d)[-1] for d in deltas)
    return inner_solve(task, theta, inner_steps=budget, inner=inner, history=True)


def check_lemma2(task, theta, delta, *, inner="nesterov", instance=None, relation="<=",
                 recorded=None):
    """Run ``inner`` from x₀ = θ for Lemma 2's count (relation '<=': must be within δ) or,
    for the negative control (relation '>'), count the steps it really needs and compare them
    with the count. Returns a CheckResult whose measured value is ‖x_T − x*‖ (respectively the
    steps needed). ``recorded``: a :func:`recorded_run` of the same ``inner`` from this θ whose
    first T steps are then used instead of a new run (the same iterates)."""
    twin, theta64, x_star, kappa, dist0, budget = _setting(task, theta, delta)
    floor = inner_allowance(dtype_name(theta), twin, theta64, x_star)
    inst = dict(instance or {}, delta=delta, distance=dist0, kappa=kappa)
    if relation == "<=":
        if recorded is not None and len(recorded.history.iterates) > budget:
            iterates = recorded.history.iterates[:budget + 1]
            x = iterates[budget]
        else:       # (no run given, or it stopped early at an exactly zero gradient)
            res = inner_solve(task, theta, inner_steps=budget, inner=inner, history=True)
            iterates, x = res.history.iterates, res.x
        err = float(np.linalg.norm(to_numpy64(x) - x_star))
        needed = steps_to_reach(iterates, x_star, delta)
        return compare("lemma2", SECTION, STATEMENT, err, delta, allowance=floor, instance=inst,
                       details={"steps_budget": budget, "steps_needed": needed,
                                "steps_needed_over_budget": None if needed is None else needed / max(budget, 1)})
    cap = max(2 * budget, gd_steps_estimate(kappa, dist0, delta) + 10)
    res = inner_solve(task, theta, inner_steps=cap, inner=inner, history=True)
    needed = steps_to_reach(res.history.iterates, x_star, delta)
    return compare("lemma2-gd-control", SECTION, GD_STATEMENT, cap + 1 if needed is None else needed,
                   budget, relation=">", instance=inst,
                   details={"steps_needed": needed, "cap": cap, "solver": inner})


def _kappas(ctx):
    return (10.0, 1e3) if ctx.quick else (3.0, 10.0, 100.0, 1e3, 1e4)


def _deltas(ctx):
    return (1e-3, 1e-8) if ctx.quick else (1e-2, 1e-5, 1e-8)


@claim("lemma2", title="Lemma 2: accelerated inner solve", section=SECTION, statement=STATEMENT)
def run(ctx):
    results = []
    dims = (5, 20) if ctx.quick else (5, 20, 50)
    deltas = [d for d in _deltas(ctx) if ctx.dtype == "float64" or d >= 1e-5]
    for d in dims:
        for kappa in _kappas(ctx):
            for lam in (0.5, 5.0):
                seed = ctx.rng_seed(d, int(kappa), int(lam * 10))
                worst = worst_case_task(d, kappa, lam, seed=seed, array=ctx.array,
                                        dtype=ctx.dtype, device=ctx.device)
                task, _ = planted_spectrum_task(d, kappa, lam, seed=seed, array=ctx.array,
                                                dtype=ctx.dtype, device=ctx.device)
                random = (task, to_array(np.random.default_rng(seed).standard_normal(d),
                                         array=ctx.array, dtype=ctx.dtype, device=ctx.device))
                inst = dict(dim=d, kappa=kappa, lam=lam, seed=seed, start="worst-case")
                runs = [recorded_run(t, th, deltas) for t, th in (worst, random)]
                for delta in deltas:
                    for (t, th), run_, start in zip((worst, random), runs, ("worst-case", "random")):
                        results.append(check_lemma2(t, th, delta, recorded=run_,
                                                    instance=dict(inst, start=start)))
    for task, theta, inst in far_instances(ctx, quick_count=1):
        for delta in deltas[:1]:
            results.append(check_lemma2(task, theta, delta, instance=inst))
    return results


@claim("lemma2-gd-control", title="Lemma 2 negative control: plain GD exceeds the budget",
       section=SECTION, statement=GD_STATEMENT,
       loose="Lemma 2 names no variant of Nesterov's method; the suite fixes the constant-momentum one (docs/mathematics.md §3).")
def run_gd_control(ctx):
    results = []
    for kappa in ((100.0, 1e3) if ctx.quick else (100.0, 1e3, 1e4)):
        seed = ctx.rng_seed(int(kappa))
        task, theta = worst_case_task(10, kappa, 1.0, seed=seed, array=ctx.array, dtype=ctx.dtype,
                                      device=ctx.device)
        results.append(check_lemma2(task, theta, 1e-4 if ctx.dtype == "float32" else 1e-6,
                                    inner="gd", relation=">",
                                    instance=dict(dim=10, kappa=kappa, lam=1.0, seed=seed)))
    return results
