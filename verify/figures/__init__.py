"""The report's figures, drawn FROM the data stored in results.json.

Each figure is one module of this package that declares everything about it — id, name, title,
what it needs, how its data is computed, how it is drawn from that data, its caption — and
registers it with :func:`verify.figures._spec.register`. Modules are discovered, not listed, so
adding a figure is adding a file (docs/architecture.md, "How to add a figure").

Every plotted series carries, as its matplotlib ``gid``, the path of the numbers it shows inside the
figure's data ("x:curves/0/steps|y:curves/0/relative_error"), so a test can check that the picture
shows the stored numbers without looking at pixels. Drawing uses matplotlib's object API (no pyplot
state), so it is safe to call repeatedly.
"""
from __future__ import annotations

import importlib
import pkgutil

from verify.figures._draw import render, resolve
from verify.figures._spec import FIGURES, FigureSpec, register

__all__ = ["FIGURES", "FigureSpec", "register", "lookup", "compute", "draw", "caption",
           "unavailable", "render", "resolve"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
# in id order (fig1, fig2, ...) whatever the module names
_ordered = sorted(FIGURES.items(), key=lambda item: int(item[0][3:]))
FIGURES.clear()
FIGURES.update(_ordered)


def lookup(key: str) -> FigureSpec:
    """A figure by id ('fig1'), number ('1') or name ('cg-error'); KeyError naming the known ones."""
    for f in FIGURES.values():
        if key in (f.id, f.name, f.id[3:]):
            return f
    raise KeyError(f"no figure {key!r}; known: "
                   + ", ".join(f"{f.id} ({f.name})" for f in FIGURES.values()))


def compute(fig_id: str, ctx, claim_records=()) -> dict:
    return FIGURES[fig_id].compute(ctx, list(claim_records))


def unavailable(fig_id: str, data: dict) -> str | None:
    """Why a figure cannot be drawn from its data (an optional extra missing), or None."""
    return FIGURES[fig_id].unavailable(data)


def draw(fig_id: str, data: dict):
    return FIGURES[fig_id].draw(data)


def caption(fig_id: str, data: dict) -> str:
    return FIGURES[fig_id].caption(data)
