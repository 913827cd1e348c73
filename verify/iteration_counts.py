"""The iteration-count table of the report (and of benchmarks/test_iteration_counts.py): steps
Nesterov, gradient descent and CG take to reach a relative accuracy on planted quadratics, next to
the counts of Lemma 2 and of the CG bound (docs/mathematics.md §3, §4). Float64 NumPy."""
from __future__ import annotations

import numpy as np

from solvers import implicit_gradient_at, inner_solve
from theory import bounds
from verify.figures._common import exact_inner
from verify.measure import distances, steps_to_stay_below
from verify.tasks import planted_spectrum_task

__all__ = ["iteration_count_configs", "iteration_count_row", "iteration_counts_data"]



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
        errors = distances(res.history.iterates[:budget + 1], phi_star)
        row[f"{name}_steps"] = steps_to_stay_below(errors, delta)
        row[f"{name}_final_residual"] = float(res.residual_norm)
    g_star = task.meta_gradient(theta)
    cg_bound = bounds.cg_steps_for_error(kappa, target)
    res = implicit_gradient_at(task, theta, exact_inner(phi_star), cg_steps=2 * cg_bound,
                               history=True)
    errors = distances(res.linear.history.iterates, g_star)
    row["cg_bound_steps"] = cg_bound
    row["cg_steps"] = steps_to_stay_below(errors, target * float(np.linalg.norm(g_star)))
    row["cg_final_residual"] = float(res.system_residual)

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
