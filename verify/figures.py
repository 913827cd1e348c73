"""The report's figures, drawn FROM the data stored in results.json.

``FIGURES`` lists them (id -> :class:`FigureSpec`). Each figure has a ``compute`` step (in
:mod:`verify.sweeps`; its output goes into results.json) and a ``draw`` step that reads only that
data. Every plotted series carries, as its matplotlib ``gid``, the path of the numbers it shows
inside the figure's data ("curves/0/relative_error" or "x:curves/0/steps|y:..."), so a test can
check that the picture shows the stored numbers without looking at pixels.

Drawing uses matplotlib's object API (no pyplot state), so it is safe to call repeatedly.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

from matplotlib.figure import Figure

from verify import sweeps

__all__ = ["FigureSpec", "FIGURES", "compute", "draw", "render", "caption", "resolve"]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f",
          "#bcbd22", "#e377c2"]


@dataclass(frozen=True)
class FigureSpec:
    """id ('fig1'), name (for the command line), title, what it needs ('sweep' or 'claims'),
    compute(ctx, claim_records) -> data, draw(data) -> Figure, caption(data) -> str."""

    id: str
    name: str
    title: str
    compute: Callable
    draw: Callable
    caption: Callable


def resolve(data, path: str):
    """The value at a '/'-separated path inside figure data: list indices are integers and '*'
    maps over a list ("rows/*/eps" is the list of every row's eps)."""

    def walk(node, parts):
        if not parts:
            return node
        head, rest = parts[0], parts[1:]
        if head == "*":
            return [walk(item, rest) for item in node]
        return walk(node[int(head)] if isinstance(node, list) else node[head], rest)

    return walk(data, path.split("/"))


def _new(width=6.4, height=4.2):
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def _plot(ax, data, xpath, ypath, **kw):
    """Plot stored series y against x (paths into ``data``) and tag the line with both paths."""
    x, y = resolve(data, xpath), resolve(data, ypath)
    pts = [(a, b) for a, b in zip(x, y) if b is not None and b > 0]
    (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], **kw)
    line.set_gid(f"x:{xpath}|y:{ypath}")
    return line


def _finish(ax, title, xlabel, ylabel, legend="inside"):
    """Title, labels, grid; legend 'inside' (best place), 'below' (under the axes) or None."""
    from matplotlib.ticker import NullFormatter

    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_minor_formatter(NullFormatter())
    if legend == "inside":
        ax.legend(fontsize=8, framealpha=0.9)
    elif legend == "below":
        ax.figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)


# -- figure 1 ---------------------------------------------------------------------------------
def _draw_cg(data):
    fig, ax = _new()
    for i, c in enumerate(data["curves"]):
        color = COLORS[i % len(COLORS)]
        _plot(ax, data, f"curves/{i}/steps", f"curves/{i}/relative_error", color=color, lw=1.8,
              label=f"CG, κ = {c['kappa']:g}")
        _plot(ax, data, f"curves/{i}/steps", f"curves/{i}/bound", color=color, lw=1.2, ls="--",
              label=f"bound 2√κ qᵏ, κ = {c['kappa']:g}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-17, top=1e3)
    _finish(ax, "Meta-gradient error of CG against its bound",
            "CG steps k (Hessian-vector products)", "relative error ‖gₖ − g*‖ / ‖g*‖")
    return fig


def _caption_cg(data):
    kappas = ", ".join(f"{c['kappa']:g}" for c in data["curves"])
    viol = sum(c["violations"] for c in data["curves"])
    return (f"Relative meta-gradient error of k CG steps from g₀ = 0 at the exact inner solution "
            f"(planted quadratic, d = {data['dim']}, λ = {data['lam']:g}, log-spaced spectrum, "
            f"independent query loss) for κ ∈ {{{kappas}}}; dashed: the Chebyshev bound "
            f"2√κ·((√κ−1)/(√κ+1))ᵏ. Steps above the bound beyond rounding: {viol}. The curves "
            f"flatten at float64 rounding (≈1e-16).")


# -- figure 2 ---------------------------------------------------------------------------------
_INNER_LABELS = {"gd": "gradient descent (step 1/β)", "nesterov": "Nesterov (docs/mathematics.md §3 variant)",
                 "newton_cg": "Newton-CG (5 CG steps per iteration)"}


def _draw_inner(data):
    fig, ax = _new(7.0, 5.0)
    for i, name in enumerate(("gd", "nesterov", "newton_cg")):
        _plot(ax, data, f"methods/{name}/evaluations", f"methods/{name}/error",
              color=COLORS[i], lw=1.8, label=_INNER_LABELS[name],
              marker="o" if name == "newton_cg" else None, ms=3)
    _plot(ax, data, "bound_steps", "nesterov_bound", color=COLORS[1], ls=":", lw=1.2,
          label="Nesterov bound √(κ+1)(1−1/√κ)^(k/2)‖φ₀−φ*‖")
    ax.axvline(data["lemma2_steps"], color="k", ls="--", lw=1,
               label=f"Lemma 2's count: {data['lemma2_steps']} steps for δ")
    ax.axhline(data["delta"], color="0.4", ls="-.", lw=1, label="δ = 1e-10·‖φ₀ − φ*‖")
    ax.set_yscale("log")
    _finish(ax, f"Inner solvers on a planted quadratic (κ = {data['kappa']:g})",
            "gradient + Hessian-vector evaluations", "distance to the inner solution ‖φₖ − φ*‖",
            legend="below")
    return fig


def _caption_inner(data):
    def reach(name):
        n = data["methods"][name]["evaluations_to_delta"]
        return ("does not reach δ within the budget" if n is None
                else f"stays below δ after {n} evaluations")

    return (f"Distance to Alg*(θ) against evaluations from φ₀ = θ (d = {data['task']['dim']}, "
            f"κ = {data['kappa']:g}). Lemma 2 asks for {data['lemma2_steps']} Nesterov steps to "
            f"reach δ = 1e-10·‖φ₀ − φ*‖. Nesterov {reach('nesterov')}, gradient descent "
            f"{reach('gd')}, Newton-CG (one gradient and {data['newton_cg_steps']} Hessian-vector "
            f"products per iteration, Armijo line search on G) {reach('newton_cg')}.")


# -- figure 3 ---------------------------------------------------------------------------------
def _draw_theorem2(data):
    fig, ax = _new()
    series = [("T_inner", "Theorem 2: T_inner", COLORS[0], "--", None),
              ("needed_inner", "needed: Nesterov steps (from φ₀ = 0)", COLORS[0], "-", "o"),
              ("T_inner_proof_typo", "proof's count without √κ (typo)", COLORS[4], ":", "x"),
              ("T_cg", "Theorem 2: T_cg", COLORS[1], "--", None),
              ("needed_cg", "needed: CG steps (from g₀ = 0)", COLORS[1], "-", "s")]
    eps = [r["eps"] for r in data["rows"]]
    for key, label, color, ls, marker in series:
        y = [r[key] for r in data["rows"]]
        pts = [(e, v) for e, v in zip(eps, y) if v is not None and v > 0]
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, ls=ls,
                          marker=marker, ms=4, lw=1.6, label=label)
        line.set_gid(f"x:rows/*/eps|y:rows/*/{key}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    _finish(ax, "Steps for an ε-accurate meta-gradient (paper's synthetic task)",
            "target accuracy ε (smaller to the right)", "steps")
    return fig


def _caption_theorem2(data):
    rows = data["rows"]
    worst_inner = max(r["needed_inner"] / r["T_inner"] for r in rows if r["needed_inner"])
    worst_cg = max(r["needed_cg"] / r["T_cg"] for r in rows if r["needed_cg"])
    typo_short = [r["eps"] for r in rows
                  if r["needed_inner"] and r["T_inner_proof_typo"] < r["needed_inner"]]
    return (f"Steps needed for meta-gradient error ≤ ε on the paper's synthetic task (d = 50, λ = 5, "
            f"κ = 50; each half of the error ≤ ε/2), against Theorem 2's T_inner and T_cg. The "
            f"needed counts are at most {worst_inner:.0%} (inner) and {worst_cg:.0%} (CG) of the "
            f"theorem's. The proof's count without √κ is below what Nesterov needs for "
            f"{len(typo_short)} of {len(rows)} targets"
            f"{' (ε ≤ ' + format(max(typo_short), '.0e') + ')' if typo_short else ''}.")


# -- figure 4 ---------------------------------------------------------------------------------
_METHOD_LABELS = {"maml": "MAML (backprop through K GD steps)",
                  "truncated": "truncated backprop (last K/4 steps)",
                  "fomaml": "first-order MAML", "imaml": "iMAML (K Nesterov + K CG steps)"}


def _draw_compute(data):
    fig, ax = _new()
    for i, name in enumerate(("maml", "truncated", "fomaml", "imaml")):
        if name not in data["methods"]:
            continue
        pts = data["methods"][name]
        (line,) = ax.plot([p["evaluations"] for p in pts], [p["error"] for p in pts],
                          color=COLORS[i], marker="o", ms=4, lw=1.6, label=_METHOD_LABELS[name])
        line.set_gid(f"x:methods/{name}/*/evaluations|y:methods/{name}/*/error")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _finish(ax, "Meta-gradient accuracy against compute (paper's synthetic task)",
            "gradient + Hessian-vector evaluations",
            "relative exact-solve error ‖g − dθL(Alg*(θ))‖ / ‖dθL‖")
    return fig


def _caption_compute(data):
    text = ("Exact-solve error of each meta-gradient estimator against its compute on the paper's "
            "synthetic linear-regression task (d = 50, λ = 5, κ = 50), K inner steps.")
    if data.get("missing"):
        text += f" MAML, truncated backprop and first-order MAML are not drawn: {data['missing']}."
    return text


# -- figure 5 ---------------------------------------------------------------------------------
_MODEL_LABELS = {"mlp": "MLP 1-40-40-1", "logistic": "logistic regression"}


def _draw_memory(data):
    fig, ax = _new()
    for i, key in enumerate(data["methods"]):
        method, model = key.split("-")
        pts = data["methods"][key]
        (line,) = ax.plot([p["steps"] for p in pts], [p["bytes"] for p in pts],
                          color=COLORS[0 if method == "maml" else 1],
                          ls="-" if model == "mlp" else "--", marker="o" if model == "mlp" else "s",
                          ms=4, lw=1.6,
                          label=f"{'MAML' if method == 'maml' else 'iMAML'}, {_MODEL_LABELS[model]}")
        line.set_gid(f"x:methods/{key}/*/steps|y:methods/{key}/*/bytes")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _finish(ax, "Memory of one meta-gradient", "inner steps K",
            "peak bytes held for the backward pass")
    return fig


def _caption_memory(data):
    if data.get("missing"):
        return f"Not drawn: {data['missing']}."
    parts = []
    for key, pts in data["methods"].items():
        method, model = key.split("-")
        name = "MAML" if method == "maml" else "iMAML"
        b = [p["bytes"] for p in pts]
        parts.append(f"{name} on the {_MODEL_LABELS[model]}: {b[0]:,} bytes at K = {pts[0]['steps']}"
                     + (", the same at every K" if len(set(b)) == 1 else
                        f", {b[-1]:,} at K = {pts[-1]['steps']}"))
    return ("Peak bytes autograd holds for the backward pass while one meta-gradient is computed "
            "(float64; MAML backpropagates through K gradient steps, iMAML takes K gradient steps "
            "and 5 CG steps whose Hessian-vector products are double backward passes), measured by "
            "the memory claim's meter. " + "; ".join(parts) + ".")


# -- figure 6 ---------------------------------------------------------------------------------
def _draw_tightness(data):
    names = sorted(data["ratios"])
    fig, ax = _new(6.4, max(2.5, 0.45 * len(names) + 1.4))
    for i, name in enumerate(names):
        r = data["ratios"][name]
        n = len(r)
        # deterministic jitter so the points of one claim do not sit on a single line
        y = [i + 0.3 * ((j * 0.618034) % 1 - 0.5) for j in range(n)]
        coll = ax.scatter(r, y, s=9, alpha=0.6, color=COLORS[i % len(COLORS)])
        coll.set_gid(f"x:ratios/{name}")
    ax.axvline(1.0, color="k", lw=1, ls="--", label="ratio 1 (bound attained)")
    ax.set_yticks(range(len(names)), names)
    ax.set_xscale("log")
    ax.set_ylim(-0.7, len(names) - 0.3)
    _finish(ax, "Tightness: measured / bound, every check", "ratio measured / bound", "claim")
    return fig


def _caption_tightness(data):
    parts = [f"{n}: {max(r):.3g}" for n, r in sorted(data["ratios"].items())]
    return ("Ratio measured/bound of every upper-bound check whose bound is above its rounding "
            "allowance (one dot per instance; above 1 would be a violation). Largest ratio per "
            "claim — " + "; ".join(parts) + ".")


# -- figure 7 ---------------------------------------------------------------------------------
def _draw_pep(data):
    fig, ax = _new()
    _plot(ax, data, "steps", "lemma2_implied", color=COLORS[4], ls="--", lw=1.5,
          label="Lemma 2 implied: 2κ·exp(−k/(2√κ))")
    _plot(ax, data, "steps", "standard_bound", color=COLORS[3], ls=":", lw=1.5,
          label="standard bound √(κ+1)(1−1/√κ)^(k/2)")
    _plot(ax, data, "steps", "pep", color=COLORS[0], marker="o", ms=4, lw=1.6,
          label="exact worst case, all smooth strongly convex f (PEPit)")
    _plot(ax, data, "steps", "quadratic", color=COLORS[2], marker="^", ms=4, lw=1.2,
          label="observed worst case over quadratics")
    bad = [(k, v) for k, v, ok in zip(data["steps"], data["pep"], data["pep_accurate"]) if not ok]
    if bad:
        ax.plot([b[0] for b in bad], [b[1] for b in bad], ls="none", marker="o", ms=9, mfc="none",
                color="k", label="solver flagged 'inaccurate'")
    ax.set_yscale("log")
    _finish(ax, f"Worst-case contraction of Nesterov's method (κ = {data['kappa']:g})",
            "steps k", "worst ‖xₖ − x*‖ / ‖x₀ − x*‖")
    return fig


def _caption_pep(data):
    if data.get("missing"):
        return f"Not drawn: {data['missing']}."
    k = data["steps"][-1]
    return (f"Worst case of ‖xₖ − x*‖/‖x₀ − x*‖ for docs/mathematics.md §3's Nesterov variant, κ = {data['kappa']:g}: "
            f"exact over all smooth strongly convex functions (performance estimation, PEPit + "
            f"Clarabel), over quadratics with spectrum in [μ, β], and the bounds. At k = {k} Lemma 2's "
            f"implied bound is {data['lemma2_implied'][-1] / data['pep'][-1]:.0f}× the exact worst case"
            f" and the worst quadratic is {data['quadratic'][-1] / data['pep'][-1]:.2f}× it."
            + (f" Circled: k where Clarabel reported the SDP solution may be inaccurate "
               f"({sum(not a for a in data['pep_accurate'])} of {len(data['steps'])})."
               if not all(data["pep_accurate"]) else ""))


FIGURES: dict[str, FigureSpec] = {
    f.id: f for f in (
        FigureSpec("fig1", "cg-error", "Meta-gradient error against CG steps",
                   lambda ctx, recs: sweeps.cg_error_data(ctx), _draw_cg, _caption_cg),
        FigureSpec("fig2", "inner-solvers", "Inner solvers and Lemma 2's count",
                   lambda ctx, recs: sweeps.inner_solver_data(ctx), _draw_inner, _caption_inner),
        FigureSpec("fig3", "theorem2", "Steps needed against Theorem 2",
                   lambda ctx, recs: sweeps.theorem2_data(ctx), _draw_theorem2, _caption_theorem2),
        FigureSpec("fig4", "compute", "Meta-gradient error against compute (synthetic task)",
                   lambda ctx, recs: sweeps.paper_compute_data(ctx), _draw_compute, _caption_compute),
        FigureSpec("fig5", "memory", "Memory against inner steps",
                   lambda ctx, recs: sweeps.memory_data(ctx), _draw_memory, _caption_memory),
        FigureSpec("fig6", "tightness", "Tightness of every bound",
                   lambda ctx, recs: sweeps.tightness_data(recs), _draw_tightness, _caption_tightness),
        FigureSpec("fig7", "pep", "Worst-case contraction of Nesterov's method (PEPit)",
                   lambda ctx, recs: sweeps.pep_data(ctx), _draw_pep, _caption_pep),
    )
}


def lookup(key: str) -> FigureSpec:
    """A figure by id ('fig1', '1') or name ('cg-error')."""
    for f in FIGURES.values():
        if key in (f.id, f.name, f.id[3:]):
            return f
    raise KeyError(f"no figure {key!r}; known: "
                   + ", ".join(f"{f.id} ({f.name})" for f in FIGURES.values()))


def compute(fig_id: str, ctx, claim_records=()) -> dict:
    return FIGURES[fig_id].compute(ctx, list(claim_records))


def unavailable(fig_id: str, data: dict) -> str | None:
    """Why a figure cannot be drawn from its data (a missing optional part), or None."""
    if fig_id in ("fig5", "fig7") and data.get("missing"):
        return data["missing"]
    if fig_id == "fig6" and not data["ratios"]:
        return "no upper-bound checks were run"
    return None


def draw(fig_id: str, data: dict) -> Figure:
    return FIGURES[fig_id].draw(data)


def caption(fig_id: str, data: dict) -> str:
    return FIGURES[fig_id].caption(data)


def render(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes (reproducible: no date or software stamp)."""
    import matplotlib

    buf = io.BytesIO()
    if fmt == "svg":
        with matplotlib.rc_context({"svg.hashsalt": "imaml-verify"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
    elif fmt == "png":
        fig.savefig(buf, format="png", metadata={"Software": None})
    else:
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    return buf.getvalue()
