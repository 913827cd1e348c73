"""The declaration of a figure: everything about it in one place (its module)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["FigureSpec", "FIGURES", "register"]


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report.

    id: 'fig1'; name: for the command line ('cg-error'); title; needs: 'claims' when the figure is
    drawn from the claims' results (the run then runs every claim), None when it computes its own
    data; compute(ctx, claim_records) -> data (plain JSON data, stored in results.json);
    draw(data) -> matplotlib Figure, reading only that data; caption(data) -> str;
    unavailable(data) -> the reason it cannot be drawn (an optional extra missing), or None."""

    id: str
    name: str
    title: str
    compute: Callable
    draw: Callable
    caption: Callable
    needs: str | None = None
    unavailable: Callable = staticmethod(lambda data: None)


FIGURES: dict[str, FigureSpec] = {}


def register(spec: FigureSpec) -> FigureSpec:
    """Add a figure to :data:`FIGURES` (each figure module calls this once)."""
    if spec.id in FIGURES:
        raise ValueError(f"figure {spec.id!r} is registered twice")
    if spec.needs not in (None, "claims"):
        raise ValueError(f"needs must be None or 'claims', got {spec.needs!r}")
    FIGURES[spec.id] = spec
    return spec
