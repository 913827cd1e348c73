"""One solver, two array libraries: NumPy and torch (CPU, and CUDA when present — the ``backend``
fixture marks those gpu), float64 and float32. Results come back in the input's array type,
dtype and device, and agree with the float64 NumPy run on the same stored numbers
(verify.tasks.float64_twin): to rounding in float64, within float32's allowance (its epsilon,
κ, the dimension and the number of sequential steps) in float32."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _tolerances import (to_numpy64, assert_like, assert_within_rounding, gap, gradient_scale,
                         relative_tolerance, rounding_allowance, solution_scale)
from solvers import (INNER_SOLVERS, Status, cg, gradient_descent, imaml_meta_gradient, nesterov,
                     newton_cg)
from theory import bounds
from verify.strategies import seeds, task_specs
from verify.tasks import float64_twin, planted_spectrum_task, to_array

DTYPES = ["float64", "float32"]
# the backend fixture is a plain parameter (no state), safe to share across Hypothesis examples
backend_settings = settings(max_examples=8, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def make(backend, dtype, spec_kwargs, seed):
    """The task on this backend, its float64 NumPy twin, θ on both."""
    array, device = backend
    task, spec = planted_spectrum_task(**spec_kwargs, array=array, dtype=dtype, device=device)
    theta = to_array(np.random.default_rng(seed).standard_normal(spec.dim), array=array,
                     dtype=dtype, device=device)
    return task, spec, theta, float64_twin(task), to_numpy64(theta)


def agree(got, want, *, dtype, spec, scale, steps=1, what):
    """Against the float64 twin: two rounded computations, the coarser in ``dtype``, each of at
    most ``steps`` sequential rounds of d-term products."""
    assert_within_rounding(got, want, dtype=dtype, kappa=spec.kappa, scale=scale,
                           dim=spec.dim * steps, roundings=2, what=what)


@pytest.mark.parametrize("dtype", DTYPES)
@backend_settings
@given(spec_kwargs=task_specs(), seed=seeds)
def test_quadratic_task_on_every_backend(backend, dtype, spec_kwargs, seed):
    task, spec, theta, ref, theta64 = make(backend, dtype, spec_kwargs, seed)
    for name in ("inner_solution", "meta_gradient", "inner_grad", "outer_grad"):
        out = getattr(task, name)(theta)
        assert_like(out, theta, name)
        agree(out, getattr(ref, name)(theta64), dtype=dtype, spec=spec, what=name,
              scale=solution_scale(ref, theta64) + gradient_scale(ref, theta64))
    J = task.jacobian(theta)
    assert_like(J, theta, "jacobian") and J.shape == (spec.dim, spec.dim)
    agree(J, ref.jacobian(theta64), dtype=dtype, spec=spec, scale=np.sqrt(spec.dim), what="jacobian")
    V = to_array(np.eye(spec.dim)[:3], array=backend[0], dtype=dtype, device=backend[1])
    assert_like(task.inner_hvp(theta, V), theta, "inner_hvp (batched)")
    # constants are float64 Python numbers from the stored data: identical on every backend
    assert task.constants(theta) == ref.constants(theta64)
    assert task.constants(theta, radius=2.0) == ref.constants(theta64, radius=2.0)


@pytest.mark.parametrize("dtype", DTYPES)
@backend_settings
@given(spec_kwargs=task_specs(), seed=seeds, batch=st.booleans())
def test_cg_on_every_backend(backend, dtype, spec_kwargs, seed, batch):
    """CG to the dtype's rounding level: the same tolerance met, the solution within what the
    residual allows; the history and batched residuals on the input's backend too."""
    task, spec, rhs, ref, rhs64 = make(backend, dtype, spec_kwargs, seed)
    if batch:
        rhs, rhs64 = rhs[None, :] * to_array(np.array([[1.0], [-2.0]]), array=backend[0],
                                             dtype=dtype, device=backend[1]), None
        rhs64 = to_numpy64(rhs)
    lam = task.lam
    rtol = relative_tolerance(dtype, kappa=spec.kappa, dim=spec.dim)
    result = cg(lambda v: v + task.inner_hvp(None, v) / lam, rhs, rtol=rtol, history=True)
    assert result.status is Status.CONVERGED
    assert_like(result.x, rhs, "cg x")
    assert_like(result.history.iterates[-1], rhs, "cg history")
    if batch:
        assert_like(result.residual_norm, rhs[:, 0], "batched residual norms")
    else:
        assert isinstance(result.residual_norm, float)
    M = np.eye(spec.dim) + to_numpy64(task.A) / lam
    x_star = np.linalg.solve(M, rhs64.T).T
    mu_M = ref.curvature_bounds()[1] / lam
    norm_rhs = float(np.max(np.linalg.norm(rhs64, axis=-1)))
    allowance = rounding_allowance(dtype, kappa=spec.kappa, scale=norm_rhs,
                                   dim=spec.dim * max(result.steps, 1))
    assert gap(result.x, x_star) <= (rtol * norm_rhs + 2 * allowance) * np.sqrt(1 + batch) / mu_M


def _first_order_runs(task, theta, steps):
    lam = task.lam
    beta, mu = task.curvature_bounds()
    q = (np.sqrt(beta / mu) - 1) / (np.sqrt(beta / mu) + 1)

    def grad(p):
        return task.inner_grad(p) + lam * (p - theta)

    def objective(p):
        return task.inner_loss(p) + 0.5 * lam * ((p - theta) ** 2).sum()

    return {
        "gd": lambda: gradient_descent(grad, theta, step_size=1 / beta, max_steps=steps),
        "nesterov": lambda: nesterov(grad, theta, step_size=1 / beta, momentum=float(q),
                                     max_steps=steps),
        "newton_cg": lambda: newton_cg(objective, grad, lambda p, v: task.inner_hvp(p, v) + lam * v,
                                       theta, max_steps=3, cg_steps=5),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@backend_settings
@given(spec_kwargs=task_specs(), seed=seeds, steps=st.integers(0, 40))
def test_inner_solvers_on_every_backend(backend, dtype, spec_kwargs, seed, steps):
    """The same run, step for step, as on the float64 twin: GD and Nesterov contract rounding
    errors, so the difference stays at the allowance of ``steps`` rounds."""
    task, spec, theta, ref, theta64 = make(backend, dtype, spec_kwargs, seed)
    mine, twin = _first_order_runs(task, theta, steps), _first_order_runs(ref, theta64, steps)
    for name in ("gd", "nesterov"):
        got, want = mine[name](), twin[name]()
        assert_like(got.x, theta, name)
        # rtol = atol = 0: only an exactly zero gradient (κ = 1) stops early, in one precision
        # and not necessarily the other
        assert (got.steps, got.status) == (want.steps, want.status) or 0.0 in (
            got.residual_norm, want.residual_norm)
        agree(got.x, want.x, dtype=dtype, spec=spec, scale=solution_scale(ref, theta64),
              steps=steps + 1, what=name)
    got = mine["newton_cg"]()
    assert_like(got.x, theta, "newton_cg")
    # Newton-CG's line search branches on f values, so judge it against the minimizer: each
    # iteration (t = 1 on a quadratic) contracts the H-norm error by CG's rate with 5 steps
    x_star = ref.inner_solution(theta64)
    rate = min(bounds.cg_error_bound(spec.kappa, 5, 1.0, norm="M"), 1.0)
    assert gap(got.x, x_star) <= np.sqrt(spec.kappa) * rate ** got.steps * gap(theta64, x_star) \
        + rounding_allowance(dtype, kappa=spec.kappa, scale=solution_scale(ref, theta64),
                             dim=spec.dim)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inner", INNER_SOLVERS)
@backend_settings
@given(spec_kwargs=task_specs(max_kappa=300.0), seed=seeds,
       warm_start=st.sampled_from(["theta", "zero"]), cg_start=st.sampled_from(["zero", "gradient"]))
def test_meta_gradient_on_every_backend(backend, dtype, inner, spec_kwargs, seed, warm_start,
                                        cg_start):
    """Algorithm 2 run to convergence on each backend lands on the exact meta-gradient of the
    stored numbers, within the dtype's allowance; φ and g come back on the input's backend."""
    task, spec, theta, ref, theta64 = make(backend, dtype, spec_kwargs, seed)
    x0 = theta64 if warm_start == "theta" else 0 * theta64
    delta = rounding_allowance(dtype, kappa=spec.kappa, scale=solution_scale(ref, theta64),
                               dim=spec.dim)
    dist = gap(x0, ref.inner_solution(theta64))
    inner_steps = {"gd": bounds.gd_steps_estimate(spec.kappa, dist, delta),
                   "nesterov": bounds.lemma2_steps(spec.kappa, dist, delta),
                   "newton_cg": 4}[inner] + 1
    result = imaml_meta_gradient(task, theta, inner=inner, warm_start=warm_start,
                                 cg_start=cg_start, inner_steps=inner_steps, cg_steps=3 * spec.dim,
                                 newton_cg_steps=2 * spec.dim)
    assert_like(result.gradient, theta, "meta-gradient")
    assert_like(result.phi, theta, "phi")
    for name in ("stationarity", "system_residual", "outer_grad_norm"):
        assert isinstance(getattr(result, name), float)
    agree(result.phi, ref.inner_solution(theta64), dtype=dtype, spec=spec, what="phi",
          scale=solution_scale(ref, theta64))
    agree(result.gradient, ref.meta_gradient(theta64), dtype=dtype, spec=spec,
          scale=gradient_scale(ref, theta64), what="meta-gradient")
