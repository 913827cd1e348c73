"""Figure 8: the meta-gradient error of CG, MINRES, the Neumann series and the fixed-point
hypergradient against Hessian-vector products, on the same definite task and on an indefinite
system (docs/mathematics.md §4, §4a, §4b)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from solvers import LINEAR_SOLVERS, ImplicitSystem
from verify.figures._common import seeded_theta
from verify.figures._draw import COLORS, finish, plot
from verify.figures._spec import FigureSpec, register
from verify.measure import distances
from verify.systems import indefinite_task
from verify.tasks import planted_spectrum_task

#: (name, label) of the solvers compared, in the table's order
SOLVERS = (("cg", "CG"), ("minres", "MINRES"), ("neumann", "Neumann series"),
           ("fixed_point", "fixed point"))
#: the error above which a diverging curve is cut (relative error; the plot's top)
CUT = 1e3
#: the condition number of the definite panel (the Neumann series needs about κ·log(1/ε) steps)
KAPPA = 30.0
#: a curve ends at its first step at or below this relative error (float64 rounding level)
FLOOR = 1e-14


def _curve(name, system, rhs, g_star, options, steps):
    """Relative error ‖g_k − g*‖/‖g*‖ at every step (one HVP each) until the solver stops:
    a breakdown (CG's pᵀMp ≤ 0) ends the curve there; a diverging series is run its steps
    (on_breakdown='return', as a fixed-budget library would) and cut above :data:`CUT`; a
    converging curve ends where it first reaches :data:`FLOOR`."""
    res = LINEAR_SOLVERS[name].solve(system, rhs, options=options, max_steps=steps, rtol=0.0,
                                     atol=0.0, history=True, on_breakdown="return")
    errors = (distances(res.history.iterates, g_star) / float(np.linalg.norm(g_star))).tolist()
    cut = next((k for k, e in enumerate(errors) if not e <= CUT), None)
    shown = errors if cut is None else errors[:cut]
    end = next((k for k, e in enumerate(shown) if e <= FLOOR), None)
    shown = shown if end is None else shown[:end + 1]
    hvps = list(range(len(shown)))
    if res.status.value == "breakdown":     # the product spent on the step that broke down
        hvps.append(res.evaluations["matvec"])
        shown = shown + [errors[-1]]
    return {"solver": name, "hvps": hvps, "relative_error": shown,
            "status": res.status.value, "steps": res.steps, "final_error": errors[-1],
            "cut_at": cut, "options": options}


def compute(ctx, records=()) -> dict:
    """Both panels: a planted quadratic (κ = 30, log-spaced spectrum) at its exact inner
    solution, Neumann with α = λ/β and the fixed point with η = 1/β (the defaults); and an
    indefinite planted system (half its eigenvalues in [−4, −0.5], half in [0.5, 4]) at its
    stationary point, Neumann and the fixed point with α = 1/max|m| (no step converges there)."""
    dim = 40 if ctx.quick else 100
    steps = 1200
    task, spec = planted_spectrum_task(dim, KAPPA, 1.0, seed=ctx.rng_seed(8, 0),
                                       query="independent", spectrum="log")
    theta = seeded_theta(ctx, dim, 8, 1)
    phi = task.inner_solution(theta)
    system, rhs = ImplicitSystem.at(task, phi), task.outer_grad(phi)
    g_star = task.meta_gradient(theta)
    definite = [_curve(n, system, rhs, g_star, {}, steps) for n, _ in SOLVERS]
    itask, ispec = indefinite_task(dim, seed=ctx.rng_seed(8, 2))
    itheta = seeded_theta(ctx, dim, 8, 3)
    iphi = itask.inner_solution(itheta)
    isystem, irhs = ImplicitSystem.at(itask, iphi), itask.outer_grad(iphi)
    ig_star = itask.implicit_gradient(iphi)
    alpha = 1.0 / float(np.max(np.abs(itask.system_eigenvalues)))
    opts = {"cg": {}, "minres": {}, "neumann": {"alpha": alpha},
            "fixed_point": {"step_size": alpha / itask.lam}}
    # (fewer steps: a diverging series would overflow within a few hundred)
    indefinite = [_curve(n, isystem, irhs, ig_star, opts[n], 4 * dim) for n, _ in SOLVERS]
    return {"dim": dim, "steps": steps, "cut": CUT, "floor": FLOOR, "kappa": KAPPA,
            "definite": {"task": spec.as_dict(), "curves": definite},
            "indefinite": {"task": ispec.as_dict(), "alpha": alpha, "curves": indefinite}}


def draw(data):
    fig = Figure(figsize=(10.5, 4.2), dpi=110, layout="constrained")
    labels = dict(SOLVERS)
    for j, (panel, title) in enumerate((("definite", f"Definite system (κ = {data['kappa']:g})"),
                                        ("indefinite", "Indefinite system"))):
        ax = fig.add_subplot(1, 2, j + 1)
        for i, c in enumerate(data[panel]["curves"]):
            ls = "--" if c["solver"] == "fixed_point" else "-"
            plot(ax, data, f"{panel}/curves/{i}/hvps", f"{panel}/curves/{i}/relative_error",
                 color=COLORS[i], lw=1.6, ls=ls, marker="o" if len(c["hvps"]) <= 2 else None,
                 label=f"{labels[c['solver']]} ({c['status']})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom=data["floor"] / 10, top=data["cut"])
        finish(ax, title, "Hessian-vector products", "relative error ‖gₖ − g*‖ / ‖g*‖")
    return fig


def caption(data):
    d = {c["solver"]: c for c in data["definite"]["curves"]}
    ind = {c["solver"]: c for c in data["indefinite"]["curves"]}

    def reach(c, level=1e-8):
        return next((k for k, e in zip(c["hvps"], c["relative_error"]) if e <= level), None)

    def say(c):
        k = reach(c)
        return f"{k}" if k is not None else f"not within {c['steps']}"

    return (f"Relative meta-gradient error against Hessian-vector products (one per step, g₀ = 0) "
            f"for the four linear solvers on the same systems, d = {data['dim']}. Left: a planted "
            f"quadratic, κ = {data['kappa']:g}, at its exact inner solution (Neumann α = λ/β, fixed point "
            f"η = 1/β: the same series, rounded differently); HVPs to 1e-8: CG {say(d['cg'])}, "
            f"MINRES {say(d['minres'])}, Neumann {say(d['neumann'])}, fixed point "
            f"{say(d['fixed_point'])}. Right: an indefinite system I + H/λ (eigenvalues in "
            f"[−4, −0.5] ∪ [0.5, 4]) at its stationary point: CG {ind['cg']['status']} after "
            f"{ind['cg']['steps']} steps, the Neumann series and the fixed point "
            f"{ind['neumann']['status']} (α = 1/max|m| = {data['indefinite']['alpha']:.3g}; no "
            f"step converges), MINRES reaches {ind['minres']['final_error']:.1e} "
            f"(1e-8 after {say(ind['minres'])} HVPs): only MINRES survives. Curves end at "
            f"{data['floor']:g}; diverging ones are cut above {data['cut']:g}. The x axis is "
            f"logarithmic, its first point (0 HVPs) not shown.")


FIGURE = register(FigureSpec("fig8", "linear-solvers",
                             "Meta-gradient error of CG, MINRES, Neumann and fixed point",
                             compute=compute, draw=draw, caption=caption))
