"""Figure 5: bytes held for the backward pass against inner steps, MAML and iMAML
(docs/mathematics.md §8)."""
from __future__ import annotations

from verify.figures._draw import COLORS, finish, new
from verify.figures._spec import FigureSpec, register
from verify.measure import saved_bytes


def compute(ctx, records=()) -> dict:
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


_MODEL_LABELS = {"mlp": "MLP 1-40-40-1", "logistic": "logistic regression"}


def draw(data):
    fig, ax = new()
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
    finish(ax, "Memory of one meta-gradient", "inner steps K",
            "peak bytes held for the backward pass")
    return fig


def caption(data):
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


FIGURE = register(FigureSpec("fig5", "memory", "Memory against inner steps",
                             compute=compute, draw=draw, caption=caption,
                             unavailable=lambda data: data.get("missing")))
