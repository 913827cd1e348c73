"""iMAML's approximate implicit meta-gradient (Algorithm 2, Eq. 7), for one task or a stack."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from solvers._common import array_namespace, check_callback_output, ops, safe_norm, to_host
from solvers._result import SolverResult
from solvers.gradient_descent import gradient_descent
from solvers.implicit import ImplicitSystem
from solvers.linear import linear_solver as _linear_solver
from solvers.nesterov import nesterov
from solvers.newton_cg import newton_cg
from solvers.protocol import check_task, checked_task, curvature_bounds, momentum_for
from validation import check_array, check_positive, check_steps

__all__ = ["imaml_meta_gradient", "implicit_gradient_at", "MetaGradientResult", "inner_solve",
           "default_step_sizes", "INNER_SOLVERS", "NEWTON_CG_STEPS"]

INNER_SOLVERS = ("nesterov", "gd", "newton_cg")
#: CG steps per Newton iteration of iMAML-HF when no tolerance drives them (Appendix F.2)
NEWTON_CG_STEPS = 5


@dataclass
class MetaGradientResult:
    """A meta-gradient with its diagnostics.

    gradient: the meta-gradient g. phi: the approximate inner solution. inner: the inner
    solver's :class:`SolverResult`. linear: the linear solver's result on the implicit system
    (I + H(φ)/λ)g = ∇L(φ) (None for methods without a linear solve), linear_solver its name
    (an entry of :data:`solvers.LINEAR_SOLVERS`: 'cg', 'minres', 'neumann', 'fixed_point').
    stationarity: ‖∇_φG(φ, θ)‖ at the returned φ. system_residual: the true residual
    ‖∇L(φ) − (I + H(φ)/λ)g‖ of the implicit system at the returned g, whatever solved it (for
    MAML and Reptile a diagnostic). outer_grad_norm: ‖∇L(φ)‖. The three are computed in the
    working precision from the returned φ and g, their norms scaled (no underflow or overflow
    at any scale of the data: ``solvers._common.safe_norm``). evaluations: total counts of
    inner gradients, Hessian-vector products and outer gradients used (diagnostics excluded;
    for a stack each call serves every task). method: which estimator produced it.
    task, theta: the problem this result answers (the task object and θ as given), whatever
    method solved it: what an a-posteriori certificate needs to bound the rounding of the
    three diagnostics, or to recompute them (``theory.bounds.certify(result, constants)``).

    For one task the three norms are floats. For a stack of n tasks (θ of shape (n, d)) they
    are arrays of shape (n,) in θ's library and device (row i for task i), and
    ``linear.row_status`` / ``linear.row_steps`` give the linear solver's status and steps per
    task."""

    gradient: Any
    phi: Any
    inner: SolverResult | None
    linear: SolverResult | None
    stationarity: Any
    system_residual: Any
    outer_grad_norm: Any
    evaluations: dict = field(default_factory=dict)
    method: str = "imaml"
    task: Any = None
    theta: Any = None
    linear_solver: str | None = None

    @property
    def n_tasks(self) -> int | None:
        """The number of tasks of a batched result (None for one task)."""
        return self.gradient.shape[0] if getattr(self.gradient, "ndim", 1) > 1 else None

    def row(self, i: int) -> "MetaGradientResult":
        """Task i of a batched result as a one-task result (floats for the three norms; the
        inner and linear solvers' results as one-task results; ``task`` is ``task[i]`` where the stack can be
        indexed, else None, and ``theta`` row i). For a stack of quadratic tasks on NumPy it is
        bitwise the result of the same call on task i alone."""
        if self.n_tasks is None:
            raise ValueError("row() needs a batched result (θ of shape (n, d))")
        return MetaGradientResult(
            gradient=self.gradient[i], phi=self.phi[i],
            inner=None if self.inner is None else self.inner.row(i),
            linear=None if self.linear is None else self.linear.row(i),
            stationarity=_float(self.stationarity[i]),
            system_residual=_float(self.system_residual[i]),
            outer_grad_norm=_float(self.outer_grad_norm[i]), evaluations=dict(self.evaluations),
            method=self.method, task=_task_row(self.task, i),
            theta=None if self.theta is None else self.theta[i], linear_solver=self.linear_solver)


def _task_row(task, i):
    """Task i of a stack (``task[i]``), or None for a task that cannot be indexed."""
    if task is None or not callable(getattr(task, "__getitem__", None)):
        return None
    try:
        return task[i]
    except (TypeError, IndexError, KeyError):
        return None


def _float(x) -> float:
    return float(x.item() if hasattr(x, "item") else x)


def default_step_sizes(task, inner, step_size, momentum):
    """(step size, momentum) of an inner solver: the given values, or 1/β and (√κ−1)/(√κ+1)
    from the task's ``curvature_bounds()`` (momentum only for 'nesterov'; arrays of one per
    task for a stack whose bounds are per task). The bounds are validated: finite, 0 < μ ≤ β."""
    if step_size is not None and (momentum is not None or inner != "nesterov"):
        return step_size, momentum
    if getattr(task, "curvature_bounds", None) is None:
        raise ValueError(f"inner_step_size{' and inner_momentum' if inner == 'nesterov' else ''} "
                         f"must be given: the task has no curvature_bounds() to derive them from")
    beta, mu = curvature_bounds(task)
    return (1.0 / beta if step_size is None else step_size,
            momentum_for(beta, mu) if momentum is None else momentum)


def _tolerance(value, name):
    return None if value is None else check_positive(value, name)


def inner_solve(task, theta, *, inner_steps, inner="nesterov", warm_start="theta",
                inner_step_size=None, inner_momentum=None, newton_cg_steps=None, rtol=0.0,
                atol=0.0, history=False) -> SolverResult:
    """Approximately minimize G(φ, θ) = L̂(φ) + (λ/2)‖φ − θ‖² over φ from φ₀ = θ
    (``warm_start='theta'``) or φ₀ = 0 (``'zero'``) with ``inner_steps`` steps of ``inner``:
    'nesterov' (docs/mathematics.md §3 variant; default step 1/β and momentum (√κ−1)/(√κ+1)),
    'gd' (default step 1/β) or 'newton_cg' (``inner_steps`` Newton iterations of
    ``newton_cg_steps`` CG steps, default 5).

    Stopping: after ``inner_steps`` steps, or earlier once ‖∇_φG‖ ≤ max(atol, rtol·‖∇_φG(φ₀)‖)
    (then ``inner_steps`` may be None: no cap but the solver's own). Tolerance-driven Newton-CG
    runs each inner CG until its residual is at most half of that target (capped at
    ``newton_cg_steps`` when given), so on a quadratic one Newton iteration meets it.

    θ of shape (n, d) with a stack of n tasks solves all of them at once (first-order step
    sizes then per task; Newton-CG with a line search per task). The task's ``inner_grad`` output is validated on its first
    call, before use."""
    check_task(task)
    check_array(theta, "theta", ndim=(1, 2))
    if inner_steps is not None or not (rtol or atol):
        check_steps(inner_steps, "inner_steps")
    if inner not in INNER_SOLVERS:
        raise ValueError(f"inner must be one of {INNER_SOLVERS}, got {inner!r}")
    if warm_start not in ("theta", "zero"):
        raise ValueError(f"warm_start must be 'theta' or 'zero', got {warm_start!r}")
    xp = array_namespace(theta)
    view = checked_task(task, theta)
    lam = view.lam_rows
    fitted = False

    def grad_G(phi):
        nonlocal fitted
        if fitted:
            return task.inner_grad(phi) + lam * (phi - theta)
        # first call: θ must fit the task (length, library, dtype, device); solvers see the task
        # only through the protocol, so its first answer is where a misfit shows
        try:
            out = task.inner_grad(phi)
        except (TypeError, ValueError, RuntimeError) as err:
            raise type(err)(f"theta does not fit the task: task.inner_grad(theta) raised: {err}") from err
        check_callback_output(out, theta, "task.inner_grad")
        fitted = True
        return out + lam * (phi - theta)

    phi0 = theta if warm_start == "theta" else xp.zeros_like(theta)
    common = dict(max_steps=inner_steps, rtol=rtol, atol=atol, history=history)
    if inner == "newton_cg":
        driven = bool(rtol or atol)
        cg_steps = newton_cg_steps if newton_cg_steps is not None else (
            None if driven else NEWTON_CG_STEPS)
        if cg_steps is not None:
            check_steps(cg_steps, "newton_cg_steps")
        lam_sum = view.lam
        return newton_cg(lambda p: task.inner_loss(p) + 0.5 * lam_sum * xp.sum((p - theta) ** 2, axis=-1),
                         grad_G, lambda p, v: view.inner_hvp(p, v) + lam * v, phi0,
                         cg_steps=cg_steps, cg_rtol=rtol / 2, cg_atol=atol / 2, **common)
    step, momentum = default_step_sizes(task, inner, inner_step_size, inner_momentum)
    if inner == "gd":
        return gradient_descent(grad_G, phi0, step_size=step, **common)
    return nesterov(grad_G, phi0, step_size=step, momentum=momentum, **common)


def imaml_meta_gradient(task, theta, *, inner_steps, cg_steps, inner="nesterov",
                        warm_start="theta", cg_start="zero", inner_step_size=None,
                        inner_momentum=None, newton_cg_steps=None, history=False,
                        on_breakdown="raise", inner_tol=None, cg_tol=None, linear_solver="cg",
                        linear_options=None) -> MetaGradientResult:
    """Algorithm 2 of iMAML: an approximate inner solve φ ≈ Alg*(θ) (see :func:`inner_solve`),
    then ``cg_steps`` steps of the linear solver on (I + H(φ)/λ) g = ∇L(φ) from g₀ = 0
    (``cg_start='zero'``) or g₀ = ∇L(φ) (``'gradient'``; with 0 steps this is first-order
    MAML). The linear solver is CG, as in the paper, or another entry of
    :data:`solvers.LINEAR_SOLVERS` (see :func:`implicit_gradient_at`); ``cg_steps`` and
    ``cg_tol`` keep Algorithm 2's names whichever solver runs.

    Fixed work (the paper's form): ``inner_steps`` and ``cg_steps``. Accuracy-driven: with
    ``inner_tol`` the inner solver stops once ‖∇_φG(φ, θ)‖ ≤ inner_tol, with ``cg_tol`` the
    linear solver stops once its residual is ≤ cg_tol; the step counts are then caps (None: the
    solvers' own). By docs/mathematics.md §5a the result is then within
    (λρB/μ² + λL/μ)·inner_tol/μ + (λ/μ)·cg_tol of the exact meta-gradient
    (theory.bounds.meta_gradient_tolerances turns an accuracy ε into the two tolerances;
    verify.accurate.accurate_meta_gradient does it all).

    θ of shape (n, d) with a stack of n tasks (a batched task, e.g. a stacked
    theory.QuadraticTask) gives n meta-gradients (n, d) at once, with per-task diagnostics.

    Sees the task only through the task protocol, each callback's output validated on its first
    call before use. A breakdown of the linear solver (CG on an I + H(φ)/λ that is not positive
    definite, a diverging Neumann series) raises, or with ``on_breakdown='return'`` is reported
    in ``result.linear.status`` (per task: ``row_status``).
    """
    if cg_start not in ("zero", "gradient"):
        raise ValueError(f"cg_start must be 'zero' or 'gradient', got {cg_start!r}")
    _linear_solver(linear_solver)
    inner_tol, cg_tol = _tolerance(inner_tol, "inner_tol"), _tolerance(cg_tol, "cg_tol")
    if cg_tol is None or cg_steps is not None:
        check_steps(cg_steps, "cg_steps")
    inner_result = inner_solve(task, theta, inner_steps=inner_steps, inner=inner,
                               warm_start=warm_start, inner_step_size=inner_step_size,
                               inner_momentum=inner_momentum, newton_cg_steps=newton_cg_steps,
                               atol=inner_tol or 0.0, history=history)
    return implicit_gradient_at(task, theta, inner_result, cg_steps=cg_steps, cg_start=cg_start,
                                history=history, on_breakdown=on_breakdown, cg_tol=cg_tol,
                                linear_solver=linear_solver, linear_options=linear_options)


def implicit_gradient_at(task, theta, inner_result, *, cg_steps, cg_start="zero",
                         history=False, on_breakdown="raise", method="imaml", cg_tol=None,
                         linear_solver="cg", linear_options=None):
    """The linear half of Algorithm 2 at a given inner result (shared by first-order MAML):
    ``cg_steps`` steps of ``linear_solver`` (or, with ``cg_tol``, until the residual
    ‖∇L(φ) − (I + H(φ)/λ)g‖ is ≤ cg_tol, ``cg_steps`` then a cap) on the implicit system
    (I + H(φ)/λ) g = ∇L(φ) (:class:`solvers.ImplicitSystem`).

    ``linear_solver``: an entry of :data:`solvers.LINEAR_SOLVERS` — 'cg' (Algorithm 2),
    'minres' (symmetric, also indefinite systems), 'neumann' (the truncated Neumann series
    α Σ_{j<k}(I − αM)^j ∇L, ``linear_options={'alpha': α}``, default λ/β) or 'fixed_point'
    (the hypergradient of the inner gradient step's fixed-point map, hypertorch's
    ``fixed_point``: ``linear_options={'step_size': η}``, default 1/β; the Neumann series with
    α = ηλ), docs/mathematics.md §4, §4a, §4b. ``outer_grad`` and ``inner_hvp`` are validated
    against θ on their first call, before any arithmetic uses them."""
    solver = _linear_solver(linear_solver)
    cg_tol = _tolerance(cg_tol, "cg_tol")
    if cg_tol is None or cg_steps is not None:
        check_steps(cg_steps, "cg_steps")
    if linear_options is not None and not isinstance(linear_options, dict):
        raise TypeError(f"linear_options must be a dict of the solver's options, got "
                        f"{type(linear_options).__name__}")
    check_array(theta, "theta", ndim=(1, 2))
    xp = array_namespace(theta)
    view = checked_task(task, theta)
    lam = view.lam_rows
    phi = inner_result.x
    v = view.outer_grad(phi)
    system = ImplicitSystem.at(view, phi, like=theta)
    g0 = v if cg_start == "gradient" else None
    linear = solver.solve(system, v, options=linear_options, x0=g0, max_steps=cg_steps,
                          rtol=0.0, atol=cg_tol or 0.0, history=history,
                          on_breakdown=on_breakdown)
    g = linear.x
    stationarity, system_residual, outer_grad_norm = _norms(
        xp, view.inner_grad(phi) + lam * (phi - theta), system.residual(g, v), v)
    # work of the method only: one inner gradient per inner step (newton_cg: per iteration),
    # the final-residual gradient of the inner solver is a diagnostic and is not counted
    evals = {"inner_grad": inner_result.steps,
             # with 0 steps the start's residual is a diagnostic, not work of the method
             "hvp": inner_result.evaluations.get("hvp", 0)
             + (linear.evaluations["matvec"] if linear.steps else 0),
             "outer_grad": 1}
    return MetaGradientResult(gradient=g, phi=phi, inner=inner_result, linear=linear,
                              stationarity=stationarity, system_residual=system_residual,
                              outer_grad_norm=outer_grad_norm, evaluations=evals,
                              method=method, task=task, theta=theta, linear_solver=solver.name)


def _norms(xp, *arrays):
    """Row norms of diagnostics, scaled (:func:`solvers._common.safe_norm`: no underflow or
    overflow): floats (one host read) for one task, (n,) arrays for a stack."""
    o = ops(xp)
    norms = [safe_norm(xp, o.plain(a)) for a in arrays]
    if arrays[0].ndim == 1:
        return tuple(to_host(*norms))
    return tuple(norms)
