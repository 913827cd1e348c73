"""The one result type of every iterative solver (anchor: lineax ``Solution``/``RESULTS``)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Status", "SolverResult", "History", "SolverBreakdown", "NonFiniteIterate"]


class Status(str, enum.Enum):
    """Why a solver stopped."""

    CONVERGED = "converged"      #: met its tolerance (or the residual became exactly zero)
    MAX_STEPS = "max_steps"      #: took max_steps steps without meeting a tolerance
    BREAKDOWN = "breakdown"      #: CG met non-positive curvature pᵀMp ≤ 0 (M not positive definite)
    STALLED = "stalled"          #: a line search found no decrease (rounding level reached)
    DIVERGED = "diverged"        #: a Neumann series / fixed-point iteration's residual grew above its start


class SolverBreakdown(ArithmeticError):
    """Raised when CG meets non-positive curvature and ``on_breakdown='raise'``."""


class NonFiniteIterate(FloatingPointError):
    """Raised when an iterate or a callback's output becomes NaN or Inf."""


@dataclass
class History:
    """Per-step record: ``iterates[k]`` is x after k steps (``iterates[0]`` the start) and
    ``residual_norms[k]`` its residual norm (gradient norm for optimizers, ‖b − Mx‖ for CG)."""

    iterates: list = field(default_factory=list)
    residual_norms: list = field(default_factory=list)

    def record(self, x, residual_norm) -> None:
        xp_copy = x.clone() if hasattr(x, "clone") else x.copy()
        self.iterates.append(xp_copy)
        self.residual_norms.append(residual_norm)


@dataclass
class SolverResult:
    """Result of an iterative solver.

    x: the solution; steps: steps taken (gradient evaluations for GD/Nesterov, matrix-vector
    products for CG, Newton iterations for Newton-CG); residual_norm: the final residual norm
    (a float, or an array of one per task when batched); status: a :class:`Status`;
    evaluations: counts of callback evaluations by kind; history: a :class:`History` or None.
    For CG on a batch of independent rows (rhs of shape (n, d)): row_steps, the steps each row
    took (a NumPy int array), and row_status, each row's :class:`Status` (a tuple); ``steps``
    is then their maximum and ``status`` BREAKDOWN if any row broke down, CONVERGED if all
    converged, MAX_STEPS otherwise. None for unbatched runs and for the optimizers."""

    x: Any
    steps: int
    residual_norm: Any
    status: Status
    evaluations: dict = field(default_factory=dict)
    history: History | None = None
    row_steps: Any = None
    row_status: tuple | None = None

    @property
    def converged(self) -> bool:
        return self.status is Status.CONVERGED

    def row(self, i: int) -> "SolverResult":
        """Task i of a batched result (x of shape (n, d)) as a one-task result: its x, steps,
        residual norm (a float), status and history; evaluations are those of the whole batch
        (one call served every task)."""
        if getattr(self.x, "ndim", 1) < 2:
            raise ValueError("row() needs a batched result (x of shape (n, d))")
        history = None
        if self.history is not None:
            history = History([x[i] for x in self.history.iterates],
                              [_item(r, i) for r in self.history.residual_norms])
        return SolverResult(
            x=self.x[i],
            steps=int(self.row_steps[i]) if self.row_steps is not None else self.steps,
            residual_norm=_item(self.residual_norm, i),
            status=self.row_status[i] if self.row_status is not None else self.status,
            evaluations=dict(self.evaluations), history=history)


def _item(value, i):
    """Entry i of a per-task array as a float (a scalar stays as it is)."""
    if getattr(value, "ndim", 0) == 0:
        return value
    entry = value[i]
    return float(entry.item() if hasattr(entry, "item") else entry)
