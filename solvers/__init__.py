"""What is COMPUTED: the algorithms under test. Each is written once against the array API
(array-api-compat) and runs on NumPy arrays and torch tensors (CPU/CUDA, float32/float64).

- Batches: arrays of shape (n, d) are n independent problems (rows); every solver freezes a row
  once it has stopped, so row i ends exactly where its run alone ends. With a stack of tasks
  (e.g. a theory.QuadraticTask built from stacked arrays) the meta-gradient routines take θ of
  shape (n, d) and return n meta-gradients with per-task diagnostics.
- Validate once: each callback's output is checked (shape, library, dtype, device) on its first
  call, before anything uses it; non-finite values are caught from norms the loops compute
  anyway. Every device→host read goes through one counted function (count_host_reads); CG on a
  device reads its exit test every DEVICE_CHECK_EVERY steps, freezing rows on the device.
- Fixed work or accuracy: step counts, or residual tolerances (inner_tol, cg_tol) with the step
  counts as caps (verify.accurate turns an accuracy ε into the tolerances).
- The implicit system I + H(φ)/λ is one object (ImplicitSystem); its linear solvers (CG, MINRES,
  the Neumann series, the fixed-point iteration) are a table (LINEAR_SOLVERS, solvers/linear/).

solvers never imports theory or verify: an algorithm under test must not see the answer."""
from solvers._common import count_host_reads
from solvers._result import History, NonFiniteIterate, SolverBreakdown, SolverResult, Status
from solvers.first_order import fomaml_meta_gradient, reptile_direction
from solvers.gradient_descent import gradient_descent
from solvers.imaml import (
    INNER_SOLVERS,
    NEWTON_CG_STEPS,
    MetaGradientResult,
    default_step_sizes,
    imaml_meta_gradient,
    implicit_gradient_at,
    inner_solve,
)
from solvers.implicit import ImplicitSystem
from solvers.linear import (DEVICE_CHECK_EVERY, LINEAR_SOLVERS, LinearSolver, cg, fixed_point,
                            minres, neumann)
from solvers.maml import maml_meta_gradient, truncated_meta_gradient
from solvers.nesterov import nesterov
from solvers.newton_cg import newton_cg
from solvers.protocol import TaskProtocol, check_task

__all__ = [
    "DEVICE_CHECK_EVERY",
    "History",
    "INNER_SOLVERS",
    "ImplicitSystem",
    "LINEAR_SOLVERS",
    "LinearSolver",
    "MetaGradientResult",
    "NEWTON_CG_STEPS",
    "NonFiniteIterate",
    "SolverBreakdown",
    "SolverResult",
    "Status",
    "TaskProtocol",
    "cg",
    "check_task",
    "count_host_reads",
    "default_step_sizes",
    "fixed_point",
    "fomaml_meta_gradient",
    "gradient_descent",
    "imaml_meta_gradient",
    "implicit_gradient_at",
    "inner_solve",
    "maml_meta_gradient",
    "minres",
    "nesterov",
    "neumann",
    "newton_cg",
    "reptile_direction",
    "truncated_meta_gradient",
]
