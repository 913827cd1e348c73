"""Figure 2: inner solvers (gradient descent, Nesterov, Newton-CG) against Lemma 2's count
(docs/mathematics.md §3)."""
from __future__ import annotations

import numpy as np

from solvers import inner_solve
from theory import bounds
from verify.figures._common import seeded_theta
from verify.figures._draw import COLORS, finish, new, plot
from verify.figures._spec import FigureSpec, register
from verify.measure import distances, steps_to_stay_below
from verify.tasks import planted_spectrum_task


def compute(ctx, records=()) -> dict:
    """‖φ_k − Alg*(θ)‖ against gradient (and HVP) evaluations for GD, Nesterov and Newton-CG
    from φ₀ = θ, with Lemma 2's count for δ = 1e-10·‖φ₀ − Alg*(θ)‖ (docs/mathematics.md §3)."""
    dim, kappa, lam = (40, 100.0, 1.0) if ctx.quick else (100, 100.0, 1.0)
    task, spec = planted_spectrum_task(dim, kappa, lam, seed=ctx.rng_seed(2), query="independent",
                                       spectrum="uniform")
    theta = seeded_theta(ctx, dim, 2, 1)
    phi_star = task.inner_solution(theta)
    distance = float(np.linalg.norm(theta - phi_star))
    delta = 1e-10 * distance
    lemma2 = bounds.lemma2_steps(kappa, distance, delta)
    budget = int(1.25 * lemma2)
    methods = {}
    for name in ("gd", "nesterov"):
        res = inner_solve(task, theta, inner_steps=budget, inner=name, history=True)
        errors = distances(res.history.iterates, phi_star)[:budget + 1].tolist()
        methods[name] = {"evaluations": list(range(len(errors))), "error": errors,
                         "evaluations_to_delta": steps_to_stay_below(errors, delta)}
    newton_cg_steps = 5
    per_iteration = 1 + newton_cg_steps          # one gradient and (at most) 5 HVPs
    res = inner_solve(task, theta, inner_steps=budget // per_iteration, inner="newton_cg",
                      newton_cg_steps=newton_cg_steps, history=True)
    errors = distances(res.history.iterates, phi_star).tolist()
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


_INNER_LABELS = {"gd": "gradient descent (step 1/β)", "nesterov": "Nesterov (step 1/β, momentum (√κ−1)/(√κ+1))",
                 "newton_cg": "Newton-CG (5 CG steps per iteration)"}


def draw(data):
    fig, ax = new(7.0, 5.0)
    for i, name in enumerate(("gd", "nesterov", "newton_cg")):
        plot(ax, data, f"methods/{name}/evaluations", f"methods/{name}/error",
              color=COLORS[i], lw=1.8, label=_INNER_LABELS[name],
              marker="o" if name == "newton_cg" else None, ms=3)
    plot(ax, data, "bound_steps", "nesterov_bound", color=COLORS[1], ls=":", lw=1.2,
          label="Nesterov bound √(κ+1)(1−1/√κ)^(k/2)‖φ₀−φ*‖")
    ax.axvline(data["lemma2_steps"], color="k", ls="--", lw=1,
               label=f"Lemma 2's count: {data['lemma2_steps']} steps for δ")
    ax.axhline(data["delta"], color="0.4", ls="-.", lw=1, label="δ = 1e-10·‖φ₀ − φ*‖")
    ax.set_yscale("log")
    finish(ax, f"Inner solvers on a planted quadratic (κ = {data['kappa']:g})",
            "gradient + Hessian-vector evaluations", "distance to the inner solution ‖φₖ − φ*‖",
            legend="below")
    return fig


def caption(data):
    def reach(name):
        n = data["methods"][name]["evaluations_to_delta"]
        return ("does not reach δ within the budget" if n is None
                else f"stays below δ after {n} evaluations")

    return (f"Distance to Alg*(θ) against evaluations from φ₀ = θ (d = {data['task']['dim']}, "
            f"κ = {data['kappa']:g}). Lemma 2 asks for {data['lemma2_steps']} Nesterov steps to "
            f"reach δ = 1e-10·‖φ₀ − φ*‖. Nesterov {reach('nesterov')}, gradient descent "
            f"{reach('gd')}, Newton-CG (one gradient and {data['newton_cg_steps']} Hessian-vector "
            f"products per iteration, Armijo line search on G) {reach('newton_cg')}.")


FIGURE = register(FigureSpec("fig2", "inner-solvers", "Inner solvers and Lemma 2's count",
                             compute=compute, draw=draw, caption=caption))
