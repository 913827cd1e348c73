"""An entry of the table of linear solvers (:data:`solvers.linear.LINEAR_SOLVERS`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["LinearSolver"]


@dataclass(frozen=True)
class LinearSolver:
    """How :func:`solvers.implicit_gradient_at` solves the implicit system M g = ∇L(φ) with one
    solver. ``run(system, rhs, *, x0, max_steps, rtol, atol, history, on_breakdown,
    **options)`` returns a :class:`solvers.SolverResult` whose ``x`` is g (``system`` a
    :class:`solvers.ImplicitSystem`); ``options``: the names of the solver's own options
    (``linear_options=``) with what each means; ``definite``: whether the solver needs M
    positive definite (CG; the Neumann series and the fixed-point iteration also a small enough
    step); ``summary``: one line for tables and errors."""

    name: str
    run: Callable
    options: dict
    definite: bool
    summary: str

    def solve(self, system, rhs, *, options=None, **common):
        """``run`` with ``options`` checked against the solver's own (an unknown name is a
        ValueError naming it and listing the solver's options)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ValueError(f"linear_options {unknown} are not options of linear_solver="
                             f"{self.name!r} (its options: {known})")
        return self.run(system, rhs, **common, **options)
