"""What is COMPUTED: the algorithms under test. Each is written once against the array API
(array-api-compat) and runs on NumPy arrays and torch tensors (CPU/CUDA, float32/float64).

solvers never imports theory or verify: an algorithm under test must not see the answer."""
from solvers._common import count_host_reads
from solvers._result import History, NonFiniteIterate, SolverBreakdown, SolverResult, Status
from solvers.cg import DEVICE_CHECK_EVERY, cg
from solvers.first_order import fomaml_meta_gradient, reptile_direction
from solvers.gradient_descent import gradient_descent
from solvers.imaml import (
    INNER_SOLVERS,
    MetaGradientResult,
    default_step_sizes,
    imaml_meta_gradient,
    implicit_gradient_at,
    inner_solve,
)
from solvers.maml import maml_meta_gradient, truncated_meta_gradient
from solvers.nesterov import nesterov
from solvers.newton_cg import newton_cg
from solvers.protocol import TaskProtocol, check_task

__all__ = [
    "DEVICE_CHECK_EVERY",
    "History",
    "INNER_SOLVERS",
    "MetaGradientResult",
    "NonFiniteIterate",
    "SolverBreakdown",
    "SolverResult",
    "Status",
    "TaskProtocol",
    "cg",
    "check_task",
    "count_host_reads",
    "default_step_sizes",
    "fomaml_meta_gradient",
    "gradient_descent",
    "imaml_meta_gradient",
    "implicit_gradient_at",
    "inner_solve",
    "maml_meta_gradient",
    "nesterov",
    "newton_cg",
    "reptile_direction",
    "truncated_meta_gradient",
]
