"""Bad input gets a clear error that names the argument, never a silent NaN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _tolerances import relative_tolerance
from solvers import (NonFiniteIterate, SolverBreakdown, Status, cg, fomaml_meta_gradient,
                     gradient_descent, imaml_meta_gradient, inner_solve, maml_meta_gradient,
                     nesterov, newton_cg, reptile_direction)
from theory import QuadraticTask, bounds
from verify.tasks import planted_spectrum_task

D = 4


@pytest.fixture(scope="module")
def task():
    return planted_spectrum_task(D, 10.0, 1.0, seed=0, query="independent")[0]


def _data(task, **changes):
    data = dict(A=task.A, b=task.b, A_query=task.A_query, b_query=task.b_query, lam=task.lam)
    data.update(changes)
    return data


def _with_nan(x, value=np.nan):
    x = np.array(x, copy=True)
    x.flat[1] = value
    return x


SYMMETRIC_INDEFINITE = np.diag([1.0, 2.0, -0.5, 3.0])
NON_SYMMETRIC = np.eye(D) + np.triu(np.ones((D, D)), 1)

# (name, changes to the task data, exception, pattern naming the argument)
TASK_CASES = [
    ("non-symmetric A", dict(A=NON_SYMMETRIC), ValueError, "A must be symmetric"),
    ("indefinite A", dict(A=SYMMETRIC_INDEFINITE), ValueError, "A must be positive semidefinite"),
    ("non-symmetric A_query", dict(A_query=NON_SYMMETRIC), ValueError, "A_query must be symmetric"),
    ("indefinite A_query", dict(A_query=SYMMETRIC_INDEFINITE), ValueError,
     "A_query must be positive semidefinite"),
    ("non-square A", dict(A=np.ones((D, D + 1))), ValueError, "A must be square"),
    ("lam = 0", dict(lam=0.0), ValueError, "lam must be finite and > 0"),
    ("lam < 0", dict(lam=-1.0), ValueError, "lam must be finite and > 0"),
    ("lam NaN", dict(lam=float("nan")), ValueError, "lam must be finite"),
    ("lam inf", dict(lam=float("inf")), ValueError, "lam must be finite"),
    ("lam not a number", dict(lam="one"), TypeError, "lam must be a real number"),
    ("b wrong length", dict(b=np.ones(D + 1)), ValueError, r"b must have shape \(4,\)"),
    ("b a matrix", dict(b=np.ones((D, 1))), ValueError, "b must have 1 dimension"),
    ("A_query wrong shape", dict(A_query=np.eye(D + 1)), ValueError, "A_query must have shape"),
    ("b_query wrong length", dict(b_query=np.ones(D - 1)), ValueError, "b_query must have shape"),
    ("b float32", dict(b=np.ones(D, dtype=np.float32)), TypeError, "b has dtype float32"),
    ("A_query float32", dict(A_query=np.eye(D, dtype=np.float32)), TypeError,
     "A_query has dtype float32"),
    ("b a torch tensor", dict(b=torch.ones(D, dtype=torch.float64)), TypeError,
     "b is a Tensor .* do not mix array libraries"),
    ("A integer", dict(A=np.eye(D, dtype=np.int64)), TypeError,
     "A must have dtype float32 or float64"),
    ("A a list", dict(A=np.eye(D).tolist()), TypeError, "A must be a NumPy array or torch tensor"),
] + [
    (f"{value} in {name}", {name: None, "_bad": (name, value)}, ValueError,
     f"{name} contains NaN or Inf")
    for name in ("A", "b", "A_query", "b_query") for value in ("nan", "inf")
]


@pytest.mark.parametrize("changes,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in TASK_CASES])
def test_quadratic_task_rejects(task, changes, error, pattern):
    changes = dict(changes)
    if "_bad" in changes:
        name, value = changes.pop("_bad")
        changes[name] = _with_nan(getattr(task, name), float(value))
    with pytest.raises(error, match=pattern):
        QuadraticTask(**_data(task, **changes))


def test_torch_task_rejects_numpy_and_device_mismatch(task):
    A = torch.tensor(task.A)   # a copy: task.A is read-only
    with pytest.raises(TypeError, match="b is a ndarray"):
        QuadraticTask(A, task.b, A, torch.tensor(task.b_query), task.lam)
    if torch.cuda.is_available():   # pragma: no cover - exercised on GPU machines
        with pytest.raises(ValueError, match="b is on device"):
            QuadraticTask(A, torch.tensor(task.b).cuda(), A, torch.tensor(task.b), task.lam)


THETA_CASES = [
    ("wrong length", np.ones(D + 1), ValueError, r"theta must have shape \(4,\)"),
    ("a matrix", np.ones((1, D)), ValueError, "theta must have 1 dimension"),
    ("NaN", _with_nan(np.ones(D)), ValueError, "theta contains NaN or Inf"),
    ("float32", np.ones(D, dtype=np.float32), TypeError, "theta has dtype float32"),
    ("torch", torch.ones(D, dtype=torch.float64), TypeError, "theta is a Tensor"),
    ("a list", [1.0] * D, TypeError, "theta must be a NumPy array or torch tensor"),
]


@pytest.mark.parametrize("method", ["inner_solution", "jacobian", "meta_gradient", "constants"])
@pytest.mark.parametrize("theta,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in THETA_CASES])
def test_task_methods_reject_bad_theta(task, method, theta, error, pattern):
    with pytest.raises(error, match=pattern):
        getattr(task, method)(theta)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(radius=-1.0), "radius must be finite"), (dict(radius=float("nan")), "radius must be finite"),
    (dict(delta=-0.1), "delta must be finite"), (dict(delta=float("inf")), "delta must be finite"),
])
def test_constants_reject_bad_radius_and_delta(task, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        task.constants(np.zeros(D), **kwargs)


# -- CG ------------------------------------------------------------------------------------------

def _matvec(v):
    return 2.0 * v


RHS = np.ones(D)
CG_CASES = [
    ("rhs NaN", dict(rhs=_with_nan(RHS)), ValueError, "rhs contains NaN or Inf"),
    ("rhs 3-d", dict(rhs=np.ones((1, 1, D))), ValueError, "rhs must have 1 or 2 dimension"),
    ("rhs int", dict(rhs=np.ones(D, dtype=int)), TypeError, "rhs must have dtype"),
    ("x0 wrong shape", dict(x0=np.ones(D + 1)), ValueError, "x0 must have shape"),
    ("x0 float32", dict(x0=np.ones(D, dtype=np.float32)), TypeError, "x0 has dtype float32"),
    ("x0 torch", dict(x0=torch.ones(D, dtype=torch.float64)), TypeError, "x0 is a Tensor"),
    ("x0 Inf", dict(x0=_with_nan(RHS, np.inf)), ValueError, "x0 contains NaN or Inf"),
    ("negative rtol", dict(rtol=-1e-3), ValueError, "rtol must be finite and >= 0"),
    ("NaN rtol", dict(rtol=float("nan")), ValueError, "rtol must be finite and >= 0"),
    ("negative atol", dict(atol=-1.0), ValueError, "atol must be finite and >= 0"),
    ("no stopping rule", dict(rtol=0.0, atol=0.0), ValueError, "no stopping rule"),
    ("negative max_steps", dict(max_steps=-1), ValueError, "max_steps must be a non-negative"),
    ("fractional max_steps", dict(max_steps=2.5), ValueError, "max_steps must be a non-negative"),
    ("boolean max_steps", dict(max_steps=True), ValueError, "max_steps must be a non-negative"),
    ("unknown on_breakdown", dict(on_breakdown="ignore"), ValueError, "on_breakdown must be"),
    ("matvec wrong shape", dict(matvec=lambda v: v[..., :-1]), ValueError,
     r"matvec returned shape \(3,\), expected \(4,\)"),
    ("matvec float32", dict(matvec=lambda v: v.astype(np.float32)), TypeError,
     "the output of matvec has dtype float32"),
    ("matvec torch", dict(matvec=lambda v: torch.as_tensor(v)), TypeError,
     "the output of matvec is a Tensor"),
    ("matvec NaN", dict(matvec=lambda v: v * np.nan), NonFiniteIterate,
     "curvature p\\^T M p returned by matvec became NaN"),
]


@pytest.mark.parametrize("changes,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in CG_CASES])
def test_cg_rejects(changes, error, pattern):
    kwargs = dict(matvec=_matvec, rhs=RHS, max_steps=None, rtol=1e-8)
    kwargs.update(changes)
    with pytest.raises(error, match=pattern):
        cg(kwargs.pop("matvec"), kwargs.pop("rhs"), **kwargs)


def test_cg_breakdown_names_the_problem():
    with pytest.raises(SolverBreakdown, match="matvec is not positive definite"):
        cg(lambda v: -v, RHS, rtol=1e-8)
    assert cg(lambda v: -v, RHS, rtol=1e-8, on_breakdown="return").status is Status.BREAKDOWN


# -- first-order methods and Newton-CG -------------------------------------------------------------

def _grad(x):
    return 2.0 * x


FIRST_ORDER_CASES = [
    ("step 0", dict(step_size=0.0), ValueError, "step_size must be finite and > 0"),
    ("negative step", dict(step_size=-0.1), ValueError, "step_size must be finite and > 0"),
    ("NaN step", dict(step_size=float("nan")), ValueError, "step_size must be finite and > 0"),
    ("inf step", dict(step_size=float("inf")), ValueError, "step_size must be finite and > 0"),
    ("x0 NaN", dict(x0=_with_nan(RHS)), ValueError, "x0 contains NaN or Inf"),
    ("x0 3-d", dict(x0=np.ones((1, 1, D))), ValueError, "x0 must have 1 or 2 dimension"),
    ("no stopping rule", dict(max_steps=None), ValueError, "no stopping rule"),
    ("negative max_steps", dict(max_steps=-3), ValueError, "max_steps must be a non-negative"),
    ("negative atol", dict(atol=-1.0), ValueError, "atol must be finite and >= 0"),
    ("grad wrong shape", dict(grad=lambda x: x[:2]), ValueError, "grad returned shape"),
    ("grad float32", dict(grad=lambda x: x.astype(np.float32)), TypeError,
     "the output of grad has dtype float32"),
    ("grad NaN", dict(grad=lambda x: x * np.nan), NonFiniteIterate,
     "the output of grad became NaN or Inf at step 1"),
]


@pytest.mark.parametrize("method", ["gd", "nesterov"])
@pytest.mark.parametrize("changes,error,pattern",
                         [pytest.param(*c[1:], id=c[0]) for c in FIRST_ORDER_CASES])
def test_first_order_methods_reject(method, changes, error, pattern):
    kwargs = dict(grad=_grad, x0=RHS, step_size=0.1, max_steps=10)
    kwargs.update(changes)
    run = gradient_descent if method == "gd" else nesterov
    extra = {} if method == "gd" else dict(momentum=0.5)
    with pytest.raises(error, match=pattern):
        run(kwargs.pop("grad"), kwargs.pop("x0"), **kwargs, **extra)


@pytest.mark.parametrize("momentum", [1.0, -0.1, float("nan"), 2.0])
def test_nesterov_rejects_momentum(momentum):
    with pytest.raises(ValueError, match="momentum must be in"):
        nesterov(_grad, RHS, step_size=0.1, momentum=momentum, max_steps=3)


@pytest.mark.parametrize("array", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["gd", "nesterov"])
def test_divergent_step_size_raises_nonfinite_iterate(method, array):
    """A step 10/β diverges; the solver stops with NonFiniteIterate, never returns NaN. (NumPy's
    own overflow warnings are silenced here: the test is about the solver's error.)"""
    task, _ = planted_spectrum_task(D, 10.0, 1.0, seed=1, array=array)
    theta = task.b * 0 + 1
    beta, _ = task.curvature_bounds()

    def grad(p):
        return task.inner_grad(p) + task.lam * (p - theta)

    run = gradient_descent if method == "gd" else nesterov
    extra = {} if method == "gd" else dict(momentum=0.5)
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(NonFiniteIterate, match="NaN or Inf at step"):
        run(grad, theta, step_size=10 / beta, max_steps=100_000, **extra)


NEWTON_CASES = [
    ("x0 3-d", dict(x0=np.ones((2, 1, D))), ValueError, "x0 must have 1 or 2 dimension"),
    ("armijo 0", dict(armijo=0.0), ValueError, "armijo"),
    ("backtrack 1", dict(backtrack=1.0), ValueError, "backtrack"),
    ("hvp wrong shape", dict(hvp=lambda x, v: v[:2]), ValueError, "hvp returned shape"),
    ("negative cg_steps", dict(cg_steps=-1), ValueError, "cg_steps must be a non-negative"),
    ("fractional cg_steps", dict(cg_steps=1.5), ValueError, "cg_steps must be a non-negative"),
    ("negative max_steps", dict(max_steps=-1), ValueError, "max_steps must be a non-negative"),
]


@pytest.mark.parametrize("changes,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in NEWTON_CASES])
def test_newton_cg_rejects(changes, error, pattern):
    kwargs = dict(objective=lambda x: float(x @ x), grad=_grad, hvp=lambda x, v: 2.0 * v, x0=RHS)
    kwargs.update(changes)
    with pytest.raises(error, match=pattern):
        newton_cg(kwargs.pop("objective"), kwargs.pop("grad"), kwargs.pop("hvp"), kwargs.pop("x0"),
                  **kwargs)


# -- Algorithm 2 and the task protocol -----------------------------------------------------------

@pytest.mark.parametrize("kwargs,pattern", [
    (dict(inner="adam"), "inner must be one of"),
    (dict(warm_start="random"), "warm_start must be 'theta' or 'zero'"),
    (dict(cg_start="ones"), "cg_start must be 'zero' or 'gradient'"),
    (dict(inner_steps=-1), "inner_steps must be a non-negative integer"),
    (dict(inner_steps=2.5), "inner_steps must be a non-negative integer"),
    (dict(inner_steps=None), "inner_steps must be a non-negative integer"),
    (dict(cg_steps=-2), "cg_steps must be a non-negative integer"),
    (dict(cg_steps=None), "cg_steps must be a non-negative integer"),
    (dict(cg_steps="3"), "cg_steps must be a non-negative integer"),
    (dict(inner="newton_cg", newton_cg_steps=-1), "newton_cg_steps must be a non-negative"),
    (dict(inner_step_size=-1.0, inner_momentum=0.5), "step_size must be finite and > 0"),
    (dict(inner_momentum=1.5), "momentum must be in"),
    (dict(on_breakdown="ignore"), "on_breakdown must be"),
])
def test_meta_gradient_rejects_bad_options(task, kwargs, pattern):
    options = dict(inner_steps=5, cg_steps=3)
    options.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        imaml_meta_gradient(task, np.zeros(D), **options)


class _Partial:
    """A hand-made object that follows only part of the task protocol."""

    def __init__(self, task, drop=(), lam="task"):
        self._task = task
        if lam is not None:
            self.lam = task.lam if lam == "task" else lam
        for name in ("inner_loss", "inner_grad", "inner_hvp", "outer_loss", "outer_grad"):
            if name not in drop:
                setattr(self, name, getattr(task, name))


@pytest.mark.parametrize("make,error,pattern", [
    (lambda t: object(), TypeError, "task does not follow the task protocol: missing inner_loss"),
    (lambda t: _Partial(t, lam=None), TypeError, "missing lam"),
    (lambda t: _Partial(t, drop=("outer_grad",)), TypeError, "missing outer_grad"),
    (lambda t: _Partial(t, drop=("inner_hvp", "inner_loss")), TypeError,
     "missing inner_loss, inner_hvp"),
    (lambda t: _Partial(t, lam=-1.0), ValueError, "lam must be finite and > 0"),
    (lambda t: _Partial(t, lam=float("nan")), ValueError, "lam must be finite and > 0"),
    (lambda t: _Partial(t), ValueError, "inner_step_size and inner_momentum must be given"),
])
def test_meta_gradient_rejects_tasks_off_the_protocol(task, make, error, pattern):
    with pytest.raises(error, match=pattern):
        imaml_meta_gradient(make(task), np.zeros(D), inner_steps=3, cg_steps=2)


def test_protocol_object_without_curvature_bounds_runs_with_given_steps(task):
    """The positive side of the last case: given step sizes, a bare protocol object works and
    gives the same result as the task itself."""
    kw = dict(inner_steps=4, cg_steps=2, inner_step_size=0.05, inner_momentum=0.5)
    bare = imaml_meta_gradient(_Partial(task), np.ones(D), **kw)
    full = imaml_meta_gradient(task, np.ones(D), **kw)
    assert np.array_equal(bare.gradient, full.gradient)
    gd = inner_solve(_Partial(task), np.ones(D), inner_steps=4, inner="gd", inner_step_size=0.05)
    assert gd.steps == 4


@pytest.mark.parametrize("theta,error,pattern", [
    (np.ones((2, 3, D)), ValueError, "theta must have 1 or 2 dimension"),
    (np.ones((2, D + 1)), ValueError, "theta does not fit the task"),
    (_with_nan(np.ones(D)), ValueError, "theta contains NaN or Inf"),
    (np.ones(D, dtype=np.int32), TypeError, "theta must have dtype"),
    (np.ones(D, dtype=np.float32), TypeError, "theta does not fit the task.*dtype float32"),
])
def test_meta_gradient_rejects_bad_theta(task, theta, error, pattern):
    with pytest.raises(error, match=pattern):
        imaml_meta_gradient(task, theta, inner_steps=3, cg_steps=2)


@pytest.mark.parametrize("theta", [np.ones(D + 1), "torch task", "torch theta"],
                         ids=["wrong length", "numpy θ, torch task", "torch θ, numpy task"])
def test_meta_gradient_names_theta_that_does_not_fit_the_task(theta):
    import torch

    kind = theta if isinstance(theta, str) else "wrong length"
    task, _ = planted_spectrum_task(D, 10.0, 1.0, seed=0,
                                    array="torch" if kind == "torch task" else "numpy")
    if kind == "torch theta":
        theta = torch.ones(D, dtype=torch.float64)
    elif kind == "torch task":
        theta = np.ones(D)
    with pytest.raises((TypeError, ValueError), match="theta"):
        imaml_meta_gradient(task, theta, inner_steps=3, cg_steps=2)


def test_meta_gradient_reports_breakdown_of_an_indefinite_hessian(task):
    """A protocol object whose Hessian makes I + H/λ indefinite: CG breaks down and says so."""
    bad = _Partial(task)
    bad.inner_hvp = lambda phi, v: -3.0 * task.lam * v
    kw = dict(inner_steps=2, cg_steps=3, inner_step_size=0.01, inner_momentum=0.0)
    with pytest.raises(SolverBreakdown, match="not positive definite"):
        imaml_meta_gradient(bad, np.ones(D), **kw)
    returned = imaml_meta_gradient(bad, np.ones(D), on_breakdown="return", **kw)
    assert returned.linear.status is Status.BREAKDOWN and np.all(np.isfinite(returned.gradient))


# -- the probes of a newcomer: custom tasks, tolerances, empty data, grad-requiring input --------

class _Misshapen(_Partial):
    """A protocol object one of whose callbacks returns a wrong shape (or dtype)."""

    def __init__(self, task, name, make):
        super().__init__(task)
        original = getattr(task, name)
        setattr(self, name, lambda *args: make(original(*args)))

    def curvature_bounds(self):
        return self._task.curvature_bounds()


WRONG_OUTPUTS = [
    ("shape (1,)", lambda out: out[..., :1], ValueError, r"returned shape \(1,\), expected \(4,\)"),
    ("a scalar", lambda out: out.sum(), ValueError, r"returned shape \(\), expected \(4,\)"),
    ("float32", lambda out: out.astype(np.float32), TypeError, "has dtype float32"),
    ("a tensor", lambda out: torch.as_tensor(out), TypeError, "is a Tensor"),
]
ESTIMATORS = {
    "imaml": lambda t: imaml_meta_gradient(t, np.ones(D), inner_steps=3, cg_steps=2),
    "fomaml": lambda t: fomaml_meta_gradient(t, np.ones(D), inner_steps=3),
    "reptile": lambda t: reptile_direction(t, np.ones(D), inner_steps=3),
    "imaml-hf": lambda t: imaml_meta_gradient(t, np.ones(D), inner_steps=2, cg_steps=2,
                                              inner="newton_cg"),
    "maml": lambda t: maml_meta_gradient(t, np.ones(D), inner_steps=3),
}
NEEDS = {"inner_hvp": ("imaml", "reptile", "imaml-hf", "maml"),
         "outer_grad": tuple(ESTIMATORS), "inner_grad": tuple(ESTIMATORS)}


@pytest.mark.parametrize("callback", ["inner_grad", "inner_hvp", "outer_grad"])
@pytest.mark.parametrize("make,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in WRONG_OUTPUTS])
@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_wrong_callback_output_is_refused_before_use(task, callback, make, error, pattern,
                                                     estimator):
    """A custom task whose callback answers with the wrong shape (an hvp of shape (1,) used to
    broadcast into a silently wrong meta-gradient), dtype or library is refused on that
    callback's first answer, with an error naming it."""
    if estimator not in NEEDS[callback]:
        pytest.skip(f"{estimator} does not call {callback}")
    bad = _Misshapen(task, callback, make)
    with pytest.raises(error, match=rf"task\.{callback}.*{pattern}"):
        ESTIMATORS[estimator](bad)


@pytest.mark.parametrize("psd_rtol,error,pattern", [
    (float("nan"), ValueError, "psd_rtol must be finite and >= 0"),
    (float("inf"), ValueError, "psd_rtol must be finite and >= 0"),
    (-1e-8, ValueError, "psd_rtol must be finite and >= 0"),
    ("tight", TypeError, "psd_rtol must be a real number"),
])
def test_psd_rtol_is_validated(task, psd_rtol, error, pattern):
    """NaN used to switch the symmetry and semidefiniteness checks off (every comparison with
    NaN is False); now it is refused, and a tolerance that still refuses bad data is kept."""
    with pytest.raises(error, match=pattern):
        QuadraticTask(**_data(task), psd_rtol=psd_rtol)
    with pytest.raises(ValueError, match="A must be symmetric"):
        QuadraticTask(**_data(task, A=NON_SYMMETRIC), psd_rtol=1e-3)
    assert QuadraticTask(**_data(task), psd_rtol=0.5).psd_rtol == 0.5


@pytest.mark.parametrize("changes,pattern", [
    (dict(A=np.zeros((0, 0)), b=np.zeros(0), A_query=np.zeros((0, 0)), b_query=np.zeros(0)),
     r"A must not be empty, got shape \(0, 0\)"),
    (dict(A=np.zeros((0, D, D))), r"A must not be empty, got shape \(0, 4, 4\)"),
])
def test_empty_task_is_refused(task, changes, pattern):
    """d = 0 used to raise an IndexError deep inside; an empty stack likewise."""
    with pytest.raises(ValueError, match=pattern):
        QuadraticTask(**_data(task, **changes))


@pytest.mark.parametrize("call,pattern", [
    (lambda: cg(_matvec, np.zeros(0), rtol=1e-3), "rhs must not be empty"),
    (lambda: gradient_descent(_grad, np.zeros((2, 0)), step_size=0.1, max_steps=3),
     "x0 must not be empty"),
    (lambda: nesterov(_grad, np.zeros(0), step_size=0.1, momentum=0.5, max_steps=3),
     "x0 must not be empty"),
])
def test_solvers_refuse_empty_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


class _BadBounds(_Partial):
    def __init__(self, task, bounds):
        super().__init__(task)
        self._bounds = bounds

    def curvature_bounds(self):
        return self._bounds


@pytest.mark.parametrize("bounds", [(10.0, 0.0), (10.0, -1.0), (10.0, float("nan")),
                                    (float("inf"), 1.0), (1.0, 2.0)],
                         ids=["mu=0", "mu<0", "mu NaN", "beta inf", "mu>beta"])
@pytest.mark.parametrize("inner", ["nesterov", "gd"])
def test_curvature_bounds_of_a_custom_task_are_validated(task, bounds, inner):
    """μ ≤ 0 from a custom task's curvature_bounds() used to fail with 'math domain error'."""
    with pytest.raises(ValueError, match=r"task.curvature_bounds\(\) must return finite "
                                         r"\(beta, mu\) with 0 < mu <= beta"):
        imaml_meta_gradient(_BadBounds(task, bounds), np.ones(D), inner_steps=2, cg_steps=1,
                            inner=inner)
    with pytest.raises(ValueError, match=r"task.curvature_bounds\(\)"):
        maml_meta_gradient(_BadBounds(task, bounds), np.ones(D), inner_steps=2)


@pytest.mark.parametrize("call,pattern", [
    (lambda: bounds.cg_error_bound(-1.0, 3, 1.0), "kappa must be finite and >= 1"),
    (lambda: bounds.cg_error_bound(float("nan"), 3, 1.0), "kappa must be finite and >= 1"),
    (lambda: bounds.cg_error_bound(10.0, -1, 1.0), "steps must be a non-negative integer"),
    (lambda: bounds.cg_error_bound(10.0, 3, -1.0), "initial_error must be finite and >= 0"),
    (lambda: bounds.cg_error_bound(10.0, 3, float("nan")), "initial_error must be finite"),
    (lambda: bounds.nesterov_distance_bound(0.5, 3, 1.0), "kappa must be finite and >= 1"),
    (lambda: bounds.nesterov_distance_bound(float("nan"), 3, 1.0), "kappa must be finite"),
    (lambda: bounds.nesterov_distance_bound(10.0, 2.5, 1.0), "steps must be a non-negative"),
    (lambda: bounds.nesterov_distance_bound(10.0, 3, -2.0),
     "initial_distance must be finite and >= 0"),
    (lambda: bounds.nesterov_distance_bound(10.0, 3, float("inf")), "initial_distance must be"),
])
def test_bounds_refuse_negative_and_nan_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_lam_per_task_is_validated(task):
    A = np.stack([task.A, task.A])
    stack = dict(A=A, b=np.stack([task.b] * 2), A_query=np.stack([task.A_query] * 2),
                 b_query=np.stack([task.b_query] * 2))
    with pytest.raises(ValueError, match=r"lam must be a number or have shape \(2,\)"):
        QuadraticTask(**stack, lam=np.ones(3))
    with pytest.raises(ValueError, match="lam must be finite and > 0 for every task"):
        QuadraticTask(**stack, lam=np.array([1.0, -1.0]))
    with pytest.raises(TypeError, match="lam must be a real number"):
        QuadraticTask(**_data(task, lam=np.ones(2)))

def test_requires_grad_input_is_accepted_and_differentiable():
    """torch input that requires grad is accepted (not refused): the iteration's arithmetic stays
    on the autograd graph, so a caller can differentiate through a solver (verify does, for
    MAML's Jacobian through gradient descent), while the solvers' exit tests read detached
    values (no warning). Here: K steps of gradient descent on G(·, θ) from θ, differentiated by
    autograd, give MAML's closed-form Jacobian J_K (theory.maml)."""
    from theory.maml import maml_jacobian

    task, spec = planted_spectrum_task(5, 20.0, 2.0, seed=4, array="torch")
    theta = torch.linspace(-1, 1, 5, dtype=torch.float64, requires_grad=True)
    K = 7
    step = 1.0 / task.curvature_bounds()[0]
    phi = inner_solve(task, theta, inner_steps=K, inner="gd", inner_step_size=step).x
    J = torch.stack([torch.autograd.grad(phi[i], theta, retain_graph=True)[0] for i in range(5)])
    np.testing.assert_allclose(J.numpy(), maml_jacobian(task, step, K),
                               atol=relative_tolerance("float64", kappa=spec.kappa, dim=5 * K))
    # and Algorithm 2 as a whole runs on such input without a warning
    res = imaml_meta_gradient(task, theta, inner_steps=20, cg_steps=5)
    assert isinstance(res.stationarity, float)
    assert cg(lambda v: 2.0 * v, theta, rtol=1e-6).converged


