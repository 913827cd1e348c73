"""The linear solvers of iMAML's implicit system M g = ∇L(φ), M = I + H(φ)/λ, as a table.

Each solver is one module holding one implementation (for one system and for a stack of them:
rows frozen by masks in the one loop of :mod:`solvers.linear._iteration`) and its entry
``SOLVER`` (:class:`solvers.linear.LinearSolver`: how to run it on a
:class:`solvers.ImplicitSystem`, its own options, whether it needs M positive definite).
:func:`solvers.implicit_gradient_at` looks ``linear_solver=`` up in :data:`LINEAR_SOLVERS`.
Adding a solver is adding a module with its ``SOLVER`` and one line to the table below."""
from solvers.linear import cg as _cg, fixed_point as _fixed_point, minres as _minres
from solvers.linear import neumann as _neumann
from solvers.linear._spec import LinearSolver
from solvers.linear.cg import DEVICE_CHECK_EVERY, cg
from solvers.linear.fixed_point import fixed_point
from solvers.linear.minres import minres
from solvers.linear.neumann import neumann

__all__ = ["LINEAR_SOLVERS", "LinearSolver", "DEVICE_CHECK_EVERY", "cg", "minres", "neumann",
           "fixed_point", "linear_solver"]

#: the table: name → entry
LINEAR_SOLVERS = {s.name: s for s in (_cg.SOLVER, _minres.SOLVER, _neumann.SOLVER,
                                      _fixed_point.SOLVER)}


def linear_solver(name) -> LinearSolver:
    """The table's entry for ``name`` (a ValueError naming ``linear_solver`` otherwise)."""
    if not isinstance(name, str) or name not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {tuple(LINEAR_SOLVERS)}, got {name!r}")
    return LINEAR_SOLVERS[name]
