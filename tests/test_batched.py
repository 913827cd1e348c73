"""A stack of tasks end to end: theory.QuadraticTask holding n tasks (A of shape (n, d, d), ...)
keeps the task protocol row by row and the exact references per task, and Algorithm 2 (with
first-order MAML and Reptile) on θ of shape (n, d) gives, row by row, what it gives for each
task alone: to rounding, with per-task diagnostics and CG status."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from _tolerances import (assert_like, assert_within_rounding, gap, gradient_scale,
                         relative_tolerance, rounding_allowance, solution_scale, to_numpy64)
from solvers import (Status, fomaml_meta_gradient, imaml_meta_gradient, inner_solve,
                     reptile_direction)
from theory import QuadraticTask, bounds
from verify.strategies import seeds, task_specs
from verify.tasks import planted_spectrum_task, to_array


@st.composite
def stacks(draw, *, max_n=5, array="numpy", dtype="float64", per_task_lam=None, **spec_kwargs):
    """(stack, singles, specs, θ (n, d)): n planted tasks of one dimension, each with its own κ
    and λ (or one λ), stacked; θ row i for task i."""
    n = draw(st.integers(1, max_n))
    first = draw(task_specs(**spec_kwargs))
    per_task = draw(st.booleans()) if per_task_lam is None else per_task_lam
    singles, specs = [], []
    for i in range(n):
        kw = draw(task_specs(**spec_kwargs))
        kw.update(dim=first["dim"], seed=first["seed"] + i)
        if not per_task:
            kw["lam"] = first["lam"]
        if kw["dim"] == 1:
            kw["kappa"] = 1.0
        task, spec = planted_spectrum_task(**kw, array=array, dtype=dtype)
        singles.append(task)
        specs.append(spec)
    rng = np.random.default_rng(draw(seeds))
    theta = to_array(rng.standard_normal((n, first["dim"])), array=array, dtype=dtype)
    return QuadraticTask.stack(singles), singles, specs, theta


def _rows_match(stacked, singles, what, *, specs, thetas, dtype="float64", steps=1, scale):
    for i, (single, spec) in enumerate(zip(singles, specs)):
        assert_within_rounding(stacked[i], single, dtype=dtype, kappa=spec.kappa,
                               scale=scale(i), dim=spec.dim * steps, roundings=2,
                               what=f"{what}, task {i}")


@pytest.mark.parametrize("array", ["numpy", "torch"])
@given(data=st.data())
def test_stack_keeps_protocol_and_references_per_task(array, data):
    stack, singles, specs, theta = data.draw(stacks(array=array))
    n, d = theta.shape
    assert stack.batched and stack.n_tasks == n == len(stack) and stack.dim == d
    beta, mu = stack.curvature_bounds()
    assert beta.shape == mu.shape == (n,)
    v = theta * 0.5 + 1.0
    for i, single in enumerate(singles):
        assert stack.curvature_bounds()[0][i] == single.curvature_bounds()[0]
        assert stack[i].curvature_bounds() == single.curvature_bounds()
        for kw in ({}, dict(radius=2.0), dict(radius=3.0, delta=0.1)):
            together, alone = stack.constants(theta, **kw)[i], single.constants(theta[i], **kw)
            for name in ("beta", "mu", "kappa", "L", "rho", "lam", "scope", "radius"):
                assert getattr(together, name) == getattr(alone, name), name
            # B and D come from a stacked solve and norms: the same to rounding
            for name in ("B", "D"):
                assert getattr(together, name) == pytest.approx(getattr(alone, name), rel=relative_tolerance(
                    "float64", kappa=specs[i].kappa, dim=d), abs=1e-300), name
    scale = lambda i: solution_scale(singles[i], theta[i]) + gradient_scale(singles[i], theta[i])  # noqa: E731
    for name in ("inner_grad", "outer_grad", "inner_solution", "meta_gradient"):
        out = getattr(stack, name)(theta)
        assert_like(out, theta, name) and tuple(out.shape) == (n, d)
        _rows_match(out, [getattr(t, name)(theta[i]) for i, t in enumerate(singles)], name,
                    specs=specs, thetas=theta, scale=scale)
    hv = stack.inner_hvp(theta, v)
    _rows_match(hv, [t.inner_hvp(theta[i], v[i]) for i, t in enumerate(singles)], "inner_hvp",
                specs=specs, thetas=theta, scale=scale)
    for name in ("inner_loss", "outer_loss"):
        out = getattr(stack, name)(theta)
        assert tuple(out.shape) == (n,)
        for i, t in enumerate(singles):
            assert float(out[i]) == pytest.approx(float(getattr(t, name)(theta[i])), rel=1e-12,
                                                  abs=1e-12 * scale(i) ** 2)
    J = stack.jacobian(theta)
    assert tuple(J.shape) == (n, d, d)
    _rows_match(J, [t.jacobian(theta[i]) for i, t in enumerate(singles)], "jacobian",
                specs=specs, thetas=theta, scale=lambda i: np.sqrt(d))


def test_stack_of_given_arrays_and_per_task_lam():
    a, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0)
    b, _ = planted_spectrum_task(4, 100.0, 3.0, seed=1)
    arrays = [np.stack([getattr(a, k), getattr(b, k)]) for k in ("A", "b", "A_query", "b_query")]
    direct = QuadraticTask(*arrays, np.array([1.0, 3.0]))
    stacked = QuadraticTask.stack([a, b])
    np.testing.assert_array_equal(direct.lam, stacked.lam)
    np.testing.assert_array_equal(direct._eig_A, stacked._eig_A)
    assert QuadraticTask.stack([a, a]).lam == 1.0           # one λ stays a number
    assert direct[1].lam == 3.0 and not direct[1].batched
    with pytest.raises(TypeError, match="cannot be indexed"):
        a[0]


@pytest.mark.parametrize("array", ["numpy", "torch"])
@pytest.mark.parametrize("inner", ["nesterov", "gd", "newton_cg"])
@given(data=st.data(), inner_steps=st.integers(0, 30), cg_steps=st.integers(0, 12),
       cg_start=st.sampled_from(["zero", "gradient"]))
def test_batched_meta_gradient_is_each_task_alone(array, inner, data, inner_steps, cg_steps,
                                                  cg_start):
    """θ of shape (n, d) on a stack: row i is the single-task run of task i with the same
    settings (step sizes per task from each task's own β and κ). On NumPy bitwise (a stacked
    matmul's rows are the matrix-vector products of one task, and every other operation is
    row-wise); on torch, whose batched kernels round differently, φ to the rounding of the steps
    taken and g within CG's k-step bound of the exact solution at that φ. The diagnostics are
    per task, CG's status and steps per task."""
    stack, singles, specs, theta = data.draw(stacks(array=array, max_kappa=300.0))
    if inner == "newton_cg":
        inner_steps = inner_steps % 4
    kw = dict(inner_steps=inner_steps, cg_steps=cg_steps, inner=inner, cg_start=cg_start)
    res = imaml_meta_gradient(stack, theta, **kw)
    n = theta.shape[0]
    assert_like(res.gradient, theta, "gradient") and tuple(res.gradient.shape) == tuple(theta.shape)
    for name in ("stationarity", "system_residual", "outer_grad_norm"):
        value = getattr(res, name)
        assert_like(value, theta[:, 0], name) and tuple(value.shape) == (n,)
    assert len(res.linear.row_status) == n and res.linear.row_steps.shape == (n,)
    for i, (single, spec) in enumerate(zip(singles, specs)):
        alone = imaml_meta_gradient(single, theta[i], **kw)
        if array == "numpy":
            assert np.array_equal(res.phi[i], alone.phi) and np.array_equal(res.gradient[i],
                                                                             alone.gradient)
            assert (res.linear.row_steps[i], res.linear.row_status[i]) == (alone.linear.steps,
                                                                    alone.linear.status)
            for name in ("stationarity", "system_residual", "outer_grad_norm"):
                assert float(getattr(res, name)[i]) == getattr(alone, name), name
            continue
        if inner == "newton_cg":   # CG inside: judged against the minimizer, as Newton-CG is
            x_star = single.inner_solution(theta[i])
            rate = min(bounds.cg_error_bound(spec.kappa, 5, 1.0, norm="M"), 1.0)
            assert gap(res.phi[i], x_star) <= np.sqrt(spec.kappa) * rate ** res.inner.steps * gap(
                theta[i], x_star) + rounding_allowance("float64", kappa=spec.kappa, dim=spec.dim,
                                                       scale=solution_scale(single, theta[i]))
        else:
            assert_within_rounding(res.phi[i], alone.phi, dtype="float64", kappa=spec.kappa,
                                   scale=solution_scale(single, theta[i]),
                                   dim=spec.dim * (inner_steps + 1), roundings=2, what=f"phi {i}")
        phi = to_numpy64(res.phi[i])
        target = single.implicit_gradient(phi if array == "numpy" else res.phi[i])
        start = to_numpy64(single.outer_grad(res.phi[i])) if cg_start == "gradient" else 0 * phi
        envelope = bounds.cg_error_bound(spec.kappa, int(res.linear.row_steps[i]),
                                         gap(start, target))
        assert gap(res.gradient[i], target) <= envelope + rounding_allowance(
            "float64", kappa=spec.kappa, scale=gradient_scale(single, theta[i]),
            dim=spec.dim * (cg_steps + 1)), f"gradient of task {i}"


@pytest.mark.parametrize("array", ["numpy", "torch"])
@given(data=st.data())
def test_batched_meta_gradient_converges_to_each_exact_one(array, data):
    """Run long enough, every row is its task's exact meta-gradient (to rounding)."""
    stack, singles, specs, theta = data.draw(stacks(array=array, max_kappa=100.0))
    res = imaml_meta_gradient(stack, theta, inner_steps=400, cg_steps=4 * stack.dim)
    exact = stack.meta_gradient(theta)
    for i, (single, spec) in enumerate(zip(singles, specs)):
        assert_within_rounding(res.gradient[i], exact[i], dtype="float64", kappa=spec.kappa,
                               scale=gradient_scale(single, theta[i]), dim=spec.dim,
                               roundings=2, what=f"task {i}")


@pytest.mark.parametrize("array", ["numpy", "torch"])
def test_first_order_methods_on_a_stack(array):
    singles = [planted_spectrum_task(5, k, lam, seed=s, query="independent", array=array)[0]
               for k, lam, s in ((10.0, 1.0, 0), (300.0, 0.5, 1), (2.0, 4.0, 2))]
    stack = QuadraticTask.stack(singles)
    theta = to_array(np.random.default_rng(0).standard_normal((3, 5)), array=array)
    for run in (fomaml_meta_gradient, reptile_direction):
        res = run(stack, theta, inner_steps=12)
        for i, single in enumerate(singles):
            alone = run(single, theta[i], inner_steps=12)
            np.testing.assert_allclose(to_numpy64(res.gradient[i]), to_numpy64(alone.gradient),
                                       rtol=1e-12, atol=1e-12 * gradient_scale(single, theta[i]))
            assert float(res.system_residual[i]) == pytest.approx(alone.system_residual, rel=1e-9)


def test_a_broken_row_does_not_spoil_the_others():
    """A stack protocol whose task 1 has an indefinite I + H/λ: with on_breakdown='return' that
    row is BREAKDOWN and the others are their own converged results."""
    singles = [planted_spectrum_task(4, 10.0, 1.0, seed=s, query="independent")[0] for s in range(3)]
    stack = QuadraticTask.stack(singles)
    sign = np.array([1.0, -5.0, 1.0])[:, None]

    class Flipped:
        lam = stack.lam
        inner_loss, inner_grad, outer_loss, outer_grad = (stack.inner_loss, stack.inner_grad,
                                                          stack.outer_loss, stack.outer_grad)

        def inner_hvp(self, phi, v):
            return sign * stack.inner_hvp(phi, v)

        curvature_bounds = stack.curvature_bounds

    theta = np.ones((3, 4))
    inner = inner_solve(stack, theta, inner_steps=200)
    from solvers import implicit_gradient_at

    res = implicit_gradient_at(Flipped(), theta, inner, cg_steps=20, on_breakdown="return")
    assert res.linear.row_status[1] is Status.BREAKDOWN and res.linear.status is Status.BREAKDOWN
    for i in (0, 2):
        assert res.linear.row_status[i] is Status.MAX_STEPS or res.linear.row_status[i] is Status.CONVERGED
        alone = implicit_gradient_at(singles[i], theta[i], inner_solve(singles[i], theta[i],
                                                                       inner_steps=200), cg_steps=20)
        np.testing.assert_allclose(res.gradient[i], alone.gradient, rtol=1e-10)


def test_one_task_at_several_thetas():
    """A single task with θ of shape (n, d): n meta-gradients of the same task (row i at θᵢ)."""
    task, spec = planted_spectrum_task(4, 10.0, 1.0, seed=0, query="independent")
    thetas = np.random.default_rng(1).standard_normal((3, 4))
    res = imaml_meta_gradient(task, thetas, inner_steps=100, cg_steps=12)
    for i in range(3):
        np.testing.assert_allclose(res.gradient[i], task.meta_gradient(thetas[i]), rtol=1e-9)


@pytest.mark.parametrize("method", ["gd", "nesterov"])
@given(data=st.data(), rtol=st.sampled_from([0.0, 1e-2, 1e-6, 1e-12]))
def test_first_order_rows_stop_on_their_own(method, data, rtol):
    """A batch of independent problems: each row stops by its own tolerance and is frozen, so
    it ends exactly (bitwise, NumPy) where its run alone ends: same point, same steps, same
    status; a row with an exactly zero gradient (κ = 1, one step) included."""
    from solvers import gradient_descent, nesterov

    stack, singles, specs, theta = data.draw(stacks())
    beta, mu = stack.curvature_bounds()
    q = (np.sqrt(beta / mu) - 1) / (np.sqrt(beta / mu) + 1)

    def grad(p, task=stack, t=theta):
        lam = task.lam if isinstance(task.lam, float) else np.asarray(task.lam)[:, None]
        return task.inner_grad(p) + lam * (p - t)

    def run(g, x0, step, mom):
        if method == "gd":
            return gradient_descent(g, x0, step_size=step, rtol=rtol, max_steps=60)
        return nesterov(g, x0, step_size=step, momentum=mom, rtol=rtol, max_steps=60)

    together = run(grad, theta, 1 / beta, q)
    for i, single in enumerate(singles):
        alone = run(lambda p, t=single, th=theta[i]: t.inner_grad(p) + t.lam * (p - th),
                    theta[i], 1 / float(beta[i]), float(q[i]))
        assert np.array_equal(together.x[i], alone.x)
        assert (together.row_steps[i], together.row_status[i]) == (alone.steps, alone.status)
    assert together.steps == max(together.row_steps)
