"""Figure 6: measured/bound of every upper-bound check of the run, per claim
(docs/mathematics.md §10). Drawn from the claims' results: the run runs every claim for it."""
from __future__ import annotations

import math

from verify.figures._draw import COLORS, finish, new
from verify.figures._spec import FigureSpec, register


def compute(ctx, records=()) -> dict:
    """Ratios measured/bound of every upper-bound check ('<=' relation) whose bound is above its
    rounding allowance, per claim (below it the ratio compares rounding errors)."""
    out = {}
    for rec in records:
        ratios = [c["ratio"] for c in rec.get("checks", [])
                  if c["relation"] == "<=" and isinstance(c["ratio"], float) and c["ratio"] > 0
                  and math.isfinite(c["ratio"]) and c["bound"] > c["allowance"]]
        if ratios:
            out[rec["name"]] = ratios
    return {"ratios": out}


def draw(data):
    names = sorted(data["ratios"])
    fig, ax = new(6.4, max(2.5, 0.45 * len(names) + 1.4))
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
    finish(ax, "Tightness: measured / bound, every check", "ratio measured / bound", "claim")
    return fig


def caption(data):
    parts = [f"{n}: {max(r):.3g}" for n, r in sorted(data["ratios"].items())]
    return ("Ratio measured/bound of every upper-bound check whose bound is above its rounding "
            "allowance (one dot per instance; above 1 would be a violation). Largest ratio per "
            "claim — " + "; ".join(parts) + ".")


FIGURE = register(FigureSpec("fig6", "tightness", "Tightness of every bound",
                             compute=compute, draw=draw, caption=caption, needs="claims",
                             unavailable=lambda data: None if data["ratios"] else "no upper-bound checks were run"))
