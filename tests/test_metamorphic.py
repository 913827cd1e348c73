"""Metamorphic relations of the solvers, where the answer is another run rather than a number:
Nesterov with momentum 0 is gradient descent; CG terminates within the number of distinct
eigenvalues; Newton-CG with enough CG steps is Newton's method (one step on a quadratic);
scaling a task by a power of two scales Algorithm 2's output exactly."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from _tolerances import (
    assert_within_rounding,
    gap,
    gradient_scale,
    rounding_allowance,
    solution_scale,
)
from solvers import (
    INNER_SOLVERS,
    Status,
    cg,
    gradient_descent,
    imaml_meta_gradient,
    nesterov,
    newton_cg,
)
from theory import QuadraticTask, bounds
from verify.strategies import quadratic_tasks, seeds
from verify.tasks import planted_spectrum, to_array


def _grad_G(task, theta):
    return lambda p: task.inner_grad(p) + task.lam * (p - theta)


def check_nesterov_zero_momentum_is_gd(task, theta, *, max_steps, rtol, momentum=0.0):
    """The same iterates, bitwise: x_{k+1} = y_k − s∇f(y_k) with y = x when momentum is 0."""
    grad = _grad_G(task, theta)
    step = 1 / task.curvature_bounds()[0]
    gd = gradient_descent(grad, theta, step_size=step, max_steps=max_steps, rtol=rtol, history=True)
    nag = nesterov(grad, theta, step_size=step, momentum=momentum, max_steps=max_steps, rtol=rtol,
                   history=True)
    assert (gd.steps, gd.status, gd.evaluations) == (nag.steps, nag.status, nag.evaluations)
    assert gap(gd.x, nag.x) == 0.0, "returned points differ"
    assert len(gd.history.iterates) == len(nag.history.iterates)
    for a, b in zip(gd.history.iterates, nag.history.iterates):
        assert gap(a, b) == 0.0
    assert gd.history.residual_norms == nag.history.residual_norms


@pytest.mark.parametrize("array", ["numpy", "torch"])
@given(drawn=quadratic_tasks(max_dim=8), max_steps=st.integers(0, 60),
       rtol=st.sampled_from([0.0, 1e-3, 1e-8]))
def test_nesterov_with_zero_momentum_is_gradient_descent(array, drawn, max_steps, rtol):
    task, spec, theta = drawn
    if array == "torch":
        from verify.tasks import planted_spectrum_task

        task, _ = planted_spectrum_task(**{k: getattr(spec, k) for k in
                                           ("dim", "kappa", "lam", "seed", "query", "spectrum")},
                                        array="torch")
        theta = to_array(theta, array="torch")
    check_nesterov_zero_momentum_is_gd(task, theta, max_steps=max_steps, rtol=rtol)


@given(drawn=quadratic_tasks(max_dim=8, min_kappa=2.0), momentum=st.floats(0.05, 0.9))
def test_zero_momentum_check_fails_with_momentum(drawn, momentum):
    """Negative control: the same check with any momentum > 0 fails (after two steps y ≠ x)."""
    task, spec, theta = drawn
    with pytest.raises(AssertionError):
        check_nesterov_zero_momentum_is_gd(task, theta, max_steps=5, rtol=0.0, momentum=momentum)


# -- CG: finite termination ------------------------------------------------------------------------

def distinct_spectrum_operator(dim, distinct, kappa, lam, seed):
    """M = I + diag(s)/λ with exactly ``distinct`` distinct eigenvalues (planted: condition
    number κ, both ends present, each value repeated, in a random order), held exactly."""
    rng = np.random.default_rng(seed)
    s = planted_spectrum(distinct, kappa if distinct > 1 else 1.0, lam) if distinct > 1 else np.zeros(1)
    eigenvalues = 1.0 + s[rng.permutation(np.arange(dim) % distinct)] / lam
    return eigenvalues, rng.standard_normal(dim)


def check_cg_terminates(eigenvalues, rhs, kappa, steps):
    """After ``steps`` CG steps the true residual is at rounding level."""
    result = cg(lambda v: eigenvalues * v, rhs, max_steps=steps, rtol=0.0, atol=0.0)
    residual = np.linalg.norm(rhs - eigenvalues * result.x)
    allowance = rounding_allowance("float64", kappa=kappa, scale=np.linalg.norm(rhs),
                                   dim=len(rhs))
    assert residual <= allowance, f"residual {residual:.3g} after {steps} steps > {allowance:.3g}"
    return result


@given(st.data(), st.integers(2, 12), st.floats(0.05, 3).map(lambda e: 10.0 ** e),
       st.floats(-1, 1).map(lambda e: 10.0 ** e), seeds)
def test_cg_terminates_within_the_number_of_distinct_eigenvalues(data, dim, kappa, lam, seed):
    distinct = data.draw(st.integers(1, dim))
    kappa = kappa if distinct > 1 else 1.0
    eigenvalues, rhs = distinct_spectrum_operator(dim, distinct, kappa, lam, seed)
    assert len(np.unique(eigenvalues)) == distinct
    check_cg_terminates(eigenvalues, rhs, kappa, distinct)
    # with a stopping rule at the rounding level it stops by then
    from theory.tolerances import relative_tolerance

    stopped = cg(lambda v: eigenvalues * v, rhs, rtol=relative_tolerance("float64", kappa=kappa,
                                                                         dim=dim))
    assert stopped.status is Status.CONVERGED and stopped.steps <= distinct


@given(st.integers(2, 4), st.integers(0, 8), st.floats(1, 3).map(lambda e: 10.0 ** e), seeds)
def test_cg_termination_check_fails_one_step_early(distinct, extra, kappa, seed):
    """Negative control: with well separated eigenvalues (κ ≥ 10, at most 4 of them) one step
    fewer than their number leaves a residual far above rounding."""
    eigenvalues, rhs = distinct_spectrum_operator(distinct + extra, distinct, kappa, 1.0, seed)
    with pytest.raises(AssertionError):
        check_cg_terminates(eigenvalues, rhs, kappa, distinct - 1)


# -- Newton-CG ---------------------------------------------------------------------------------

@given(quadratic_tasks())
def test_newton_cg_with_enough_cg_steps_solves_a_quadratic_in_one_iteration(drawn):
    """With as many CG steps as the Chebyshev bound needs to reach rounding level (at least
    d, where CG terminates in exact arithmetic), one Newton iteration with the unit step lands
    on the minimizer; the line search accepts t = 1 at once (two f evaluations)."""
    task, spec, theta = drawn
    lam = task.lam
    x_star = task.inner_solution(theta)
    delta = rounding_allowance("float64", kappa=spec.kappa, scale=solution_scale(task, theta),
                               dim=spec.dim)
    distance = gap(theta, x_star)
    enough = max(spec.dim, math.ceil(math.log(2 * math.sqrt(spec.kappa) * distance / delta)
                                     / -math.log(bounds.cg_contraction(spec.kappa)))
                 # κ within rounding of 1 (e.g. 1 + 2e-16): the contraction rounds to 0, and
                 # CG's bound says one step is enough
                 if bounds.cg_contraction(spec.kappa) > 0 and distance > delta else 0)
    result = newton_cg(lambda p: task.inner_loss(p) + 0.5 * lam * np.sum((p - theta) ** 2),
                       _grad_G(task, theta), lambda p, v: task.inner_hvp(p, v) + lam * v, theta,
                       max_steps=1, cg_steps=enough)
    assert result.steps == 1 or result.status is Status.CONVERGED
    assert result.evaluations["objective"] == 2
    assert gap(result.x, x_star) <= 2 * delta


# -- scaling ---------------------------------------------------------------------------------------

@given(quadratic_tasks(max_dim=8), st.integers(-8, 8), st.sampled_from(INNER_SOLVERS),
       st.sampled_from(["zero", "gradient"]), st.integers(0, 30), st.integers(0, 10))
def test_meta_gradient_scales_with_the_task(drawn, power, inner, cg_start, inner_steps,
                                                    cg_steps):
    """c·(A, b, Aₜ, bₜ, λ) with c = 2^k: G and λ scale alike, so the inner iterates (step 1/β,
    momentum from κ) are the same and CG's right-hand side and operator scale by c and 1: φ is
    unchanged and the meta-gradient is c times the original, to rounding (β and μ come from an
    eigensolver, which need not scale exactly)."""
    task, spec, theta = drawn
    c = 2.0 ** power
    scaled = QuadraticTask(c * task.A, c * task.b, c * task.A_query, c * task.b_query, c * task.lam)
    kw = dict(inner=inner, cg_start=cg_start, inner_steps=inner_steps, cg_steps=cg_steps)
    r0, r1 = imaml_meta_gradient(task, theta, **kw), imaml_meta_gradient(scaled, theta, **kw)
    same = dict(inner_steps=inner_steps, cg_steps=cg_steps, kappa=spec.kappa, dim=spec.dim)
    assert_within_rounding(r1.phi, r0.phi, dtype="float64", scale=solution_scale(task, theta),
                           kappa=spec.kappa, dim=spec.dim * (inner_steps + 1), roundings=2,
                           what=f"φ of the scaled task {same}")
    assert_within_rounding(r1.gradient, c * r0.gradient, dtype="float64",
                           scale=c * gradient_scale(task, theta), kappa=spec.kappa,
                           dim=spec.dim * (inner_steps + cg_steps + 1), roundings=2,
                           what=f"meta-gradient of the scaled task {same}")
    assert r1.inner.steps == r0.inner.steps and r1.linear.steps == r0.linear.steps
