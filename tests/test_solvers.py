"""solvers/: CG, gradient descent, Nesterov, Newton-CG and Algorithm 2 on strongly convex
quadratics whose answers theory/ knows exactly. Step budgets come from theory.bounds; every
allowance from theory.tolerances (tests/_tolerances.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _tolerances import (assert_within_rounding, gap, gradient_scale, relative_tolerance,
                         rounding_allowance, solution_scale)
from solvers import (INNER_SOLVERS, SolverBreakdown, Status, cg, gradient_descent,
                     imaml_meta_gradient, inner_solve, nesterov, newton_cg)
from theory import bounds
from verify.strategies import quadratic_tasks, seeds, task_specs
from verify.tasks import planted_spectrum_task

rtols = st.floats(-10, -2).map(lambda e: 10.0 ** e)     # drawn stopping rules, not allowances


def system(task):
    """The meta-gradient system M = I + A/λ of Algorithm 2 as a (batched) matvec, and M dense."""
    M = np.eye(task.dim) + task.A / task.lam
    return (lambda v: v + task.inner_hvp(None, v) / task.lam), M


def inner_problem(task, theta):
    """G(·, θ): objective, gradient, Hessian-vector product, minimizer."""
    lam = task.lam

    def objective(p):
        return task.inner_loss(p) + 0.5 * lam * float(np.sum((p - theta) ** 2))

    def grad(p):
        return task.inner_grad(p) + lam * (p - theta)

    def hvp(p, v):
        return task.inner_hvp(p, v) + lam * v

    return objective, grad, hvp, task.inner_solution(theta)


# -- conjugate gradient ---------------------------------------------------------------------------

@given(quadratic_tasks(), rtols, st.booleans())
def test_cg_solves_spd_systems_to_tolerance(drawn, rtol, use_atol):
    task, spec, rhs = drawn
    matvec, M = system(task)
    kw = dict(rtol=0.0, atol=rtol * np.linalg.norm(rhs)) if use_atol else dict(rtol=rtol)
    result = cg(matvec, rhs, **kw)
    tol = rtol * np.linalg.norm(rhs)
    assert result.status is Status.CONVERGED and result.converged
    assert result.residual_norm <= tol
    # the true residual: the recursive one up to the rounding of d·steps products
    true_residual = np.linalg.norm(rhs - M @ result.x)
    allowance = rounding_allowance("float64", kappa=spec.kappa, scale=np.linalg.norm(rhs),
                                   dim=spec.dim * max(result.steps, 1))
    assert true_residual <= tol + allowance
    # and the error it implies, ‖x − x*‖ ≤ ‖M⁻¹‖·‖r‖ with ‖M⁻¹‖ = λ/μ
    mu_M = task.constants(rhs).mu / task.lam
    assert gap(result.x, np.linalg.solve(M, rhs)) <= (tol + 2 * allowance) / mu_M


def _operators(spec_kwargs, n):
    """n systems M_i = I + A_i/λ_i with their own spectra, and the batched matvec of a stack."""
    tasks = [planted_spectrum_task(**{**spec_kwargs, "seed": spec_kwargs["seed"] + i})[0]
             for i in range(n)]
    mats = np.stack([system(t)[1] for t in tasks])
    return mats, (lambda stack: (lambda v: np.einsum("nij,nj->ni", stack, v)))


@given(task_specs(), st.integers(2, 5), rtols, seeds)
def test_cg_batched_rows_converge_independently(spec_kwargs, n, rtol, seed):
    """Each row of a batch runs its own CG: it stops at its own tolerance, is frozen from then
    on, and ends exactly where the same matvec on that row alone ends (rows never interact)."""
    mats, batched_matvec = _operators(spec_kwargs, n)
    rng = np.random.default_rng(seed)
    rhs = rng.standard_normal((n, spec_kwargs["dim"])) * 10.0 ** rng.uniform(-3, 3, (n, 1))
    rhs[0] = 0.0                                  # a row that is converged before it starts
    tol = rtol * np.linalg.norm(rhs, axis=1)
    batched = cg(batched_matvec(mats), rhs, rtol=rtol, history=True)
    assert batched.status is Status.CONVERGED
    assert np.all(batched.residual_norm <= tol)
    h = batched.history
    assert len(h.iterates) == len(h.residual_norms) == batched.steps + 1
    steps = []
    for i in range(n):
        alone = cg(batched_matvec(mats[i:i + 1]), rhs[i:i + 1], rtol=rtol)
        steps.append(alone.steps)
        assert np.array_equal(batched.x[i], alone.x[0]), f"row {i} differs from its own solve"
        # the row is done at its own step, and frozen (bitwise) from then on
        assert h.residual_norms[alone.steps][i] <= tol[i]
        assert alone.steps == 0 or h.residual_norms[alone.steps - 1][i] > tol[i]
        for later in h.iterates[alone.steps:]:
            assert np.array_equal(later[i], h.iterates[alone.steps][i])
    assert steps[0] == 0 and np.array_equal(batched.x[0], rhs[0])
    assert batched.steps == max(steps)


@given(quadratic_tasks(), st.integers(0, 12), st.booleans())
def test_cg_exact_step_counts_and_history(drawn, max_steps, warm):
    """rtol = atol = 0: exactly max_steps steps (status MAX_STEPS), one history entry per step
    plus the start, one matvec per step plus one for the start's residual when x0 is given."""
    task, spec, rhs = drawn
    matvec, M = system(task)
    x0 = 0.5 * rhs if warm else None
    result = cg(matvec, rhs, x0=x0, max_steps=max_steps, rtol=0.0, atol=0.0, history=True)
    if result.status is Status.CONVERGED:     # only by an exactly zero residual (e.g. κ = 1)
        assert result.residual_norm == 0.0 and result.steps <= max_steps
    else:
        assert result.steps == max_steps and result.status is Status.MAX_STEPS
    assert result.evaluations == {"matvec": result.steps + warm}
    h = result.history
    assert len(h.iterates) == len(h.residual_norms) == result.steps + 1
    assert np.array_equal(h.iterates[0], np.zeros_like(rhs) if x0 is None else x0)
    assert np.array_equal(h.iterates[-1], result.x)
    assert h.residual_norms[-1] == result.residual_norm
    r0 = np.linalg.norm(rhs - (M @ x0 if warm else 0))
    scale = np.linalg.norm(rhs) + (np.linalg.norm(M, 2) * np.linalg.norm(x0) if warm else 0)
    assert abs(h.residual_norms[0] - r0) <= rounding_allowance("float64", scale=scale, dim=spec.dim)
    if max_steps == 0:
        assert np.array_equal(result.x, np.zeros_like(rhs) if x0 is None else x0)


def test_cg_status_converged_at_start():
    task, spec = planted_spectrum_task(4, 10.0, 1.0, seed=0)
    matvec, M = system(task)
    zero = cg(matvec, np.zeros(4), rtol=0.5)
    assert (zero.status, zero.steps, zero.evaluations) == (Status.CONVERGED, 0, {"matvec": 0})
    x_star = np.linalg.solve(M, np.ones(4))
    warm = cg(matvec, np.ones(4), x0=x_star, atol=1.0)
    assert (warm.status, warm.steps, warm.evaluations) == (Status.CONVERGED, 0, {"matvec": 1})
    assert warm.x is x_star


def _indefinite(seed, dim, negative):
    """A symmetric matrix with ``negative`` eigenvalues ≤ 0 (the rest positive), and a unit
    eigenvector of its smallest eigenvalue."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.5, 2.0, dim)
    s[:negative] = -rng.uniform(0.0, 2.0, negative)
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (Q * s) @ Q.T, Q[:, np.argmin(s)]


@given(seeds, st.integers(2, 12), st.data())
def test_cg_breakdown_on_indefinite_operator(seed, dim, data):
    M, v = _indefinite(seed, dim, data.draw(st.integers(1, dim)))
    with pytest.raises(SolverBreakdown, match="not positive definite"):
        cg(lambda x: x @ M, v, max_steps=dim)
    returned = cg(lambda x: x @ M, v, max_steps=dim, on_breakdown="return", history=True)
    assert returned.status is Status.BREAKDOWN and not returned.converged
    assert returned.steps == 0 and np.array_equal(returned.x, np.zeros(dim))
    assert len(returned.history.iterates) == 1
    # in a batch, one indefinite row stops the solve and says so
    both = np.stack([v, v])
    mats = np.stack([np.eye(dim), M])
    with pytest.raises(SolverBreakdown):
        cg(lambda x: np.einsum("nij,nj->ni", mats, x), both, max_steps=dim)


def test_cg_breakdown_later_step():
    """Positive curvature at the first step, non-positive later: raised at that step."""
    M = np.diag([4.0, 1.0, -1.0])
    rhs = np.array([1.0, 1.0, 0.3])
    with pytest.raises(SolverBreakdown, match=r"at step [1-9]"):
        cg(lambda x: M @ x, rhs, max_steps=3)
    r = cg(lambda x: M @ x, rhs, max_steps=3, on_breakdown="return")
    assert r.status is Status.BREAKDOWN and r.steps >= 1 and np.all(np.isfinite(r.x))


# -- gradient descent, Nesterov, Newton-CG ---------------------------------------------------------

@given(quadratic_tasks(), st.floats(-6, -1).map(lambda e: 10.0 ** e))
def test_gradient_descent_converges_within_its_count(drawn, rtol):
    """Step 1/β contracts every eigencomponent of ∇G by at least 1 − 1/κ, so ‖∇G‖ ≤ rtol‖∇G₀‖
    within gd_steps_estimate(κ, 1, rtol) steps."""
    task, spec, theta = drawn
    _, grad, _, x_star = inner_problem(task, theta)
    beta, mu = task.curvature_bounds()
    budget = bounds.gd_steps_estimate(spec.kappa, 1.0, rtol) + 1
    result = gradient_descent(grad, np.zeros(spec.dim), step_size=1 / beta, rtol=rtol,
                              max_steps=budget)
    assert result.status is Status.CONVERGED and result.steps <= budget
    g0 = np.linalg.norm(grad(np.zeros(spec.dim)))
    assert result.residual_norm <= rtol * g0
    # strong convexity: ‖x − x*‖ ≤ ‖∇G(x)‖/μ
    assert gap(result.x, x_star) <= rtol * g0 / mu + rounding_allowance(
        "float64", kappa=spec.kappa, scale=solution_scale(task, theta), dim=spec.dim)


@given(quadratic_tasks(), st.floats(-8, -1).map(lambda e: 10.0 ** e))
def test_nesterov_converges_within_lemma2_count(drawn, rtol):
    """‖∇G(y)‖ ≤ β‖y − x*‖ ≤ 3β·max(‖x_k − x*‖, ‖x_{k−1} − x*‖), so Lemma 2's count for
    δ = rtol‖∇G₀‖/(3β) (plus one step) is a budget Nesterov must meet."""
    task, spec, theta = drawn
    _, grad, _, x_star = inner_problem(task, theta)
    beta, mu = task.curvature_bounds()
    x0 = np.zeros(spec.dim)
    g0 = float(np.linalg.norm(grad(x0)))
    q = bounds.cg_contraction(spec.kappa)
    budget = bounds.lemma2_steps(spec.kappa, gap(x0, x_star), rtol * g0 / (3 * beta)) + 2
    result = nesterov(grad, x0, step_size=1 / beta, momentum=q, rtol=rtol, max_steps=budget)
    assert result.status is Status.CONVERGED
    assert result.residual_norm <= rtol * g0
    assert gap(result.x, x_star) <= rtol * g0 / mu + rounding_allowance(
        "float64", kappa=spec.kappa, scale=solution_scale(task, theta), dim=spec.dim)


@given(quadratic_tasks(), rtols)
def test_newton_cg_converges(drawn, rtol):
    task, spec, theta = drawn
    objective, grad, hvp, x_star = inner_problem(task, theta)
    result = newton_cg(objective, grad, hvp, np.zeros(spec.dim), cg_steps=spec.dim, max_steps=10,
                       rtol=rtol)
    assert result.status is Status.CONVERGED and result.steps <= 10
    assert result.residual_norm <= rtol * np.linalg.norm(grad(np.zeros(spec.dim)))
    mu = task.curvature_bounds()[1]
    assert gap(result.x, x_star) <= result.residual_norm / mu + rounding_allowance(
        "float64", kappa=spec.kappa, scale=solution_scale(task, theta), dim=spec.dim)


def newton_iterations(kappa, cg_steps, distance, delta):
    """Newton iterations with ``cg_steps``-step CG directions that bring the H-norm error from
    ``distance`` to δ (H-norms, or 2-norms with a factor √κ): each exact-line-search-free step
    t = 1 contracts it by CG's rate 2q^k (theory.bounds.cg_error_bound, M-norm)."""
    rate = bounds.cg_error_bound(kappa, cg_steps, 1.0, norm="M")
    assert rate < 1, "draw κ so that the CG rate of one Newton step is a contraction"
    if distance <= delta or rate == 0:
        return 1
    return int(math.ceil(math.log(math.sqrt(kappa) * distance / delta) / -math.log(rate))) + 1


@settings(max_examples=15)
@given(quadratic_tasks(max_kappa=50.0), st.integers(4, 6))
def test_newton_cg_with_few_cg_steps_reaches_rounding_level(drawn, cg_steps):
    """Truncated Newton (fewer CG steps than the dimension, as iMAML-HF runs it) converges
    linearly to the rounding level of x, not only to the level √eps where differences of f
    values stop resolving its decrease (the Armijo test must not stall it there)."""
    task, spec, theta = drawn
    objective, grad, hvp, x_star = inner_problem(task, theta)
    scale = solution_scale(task, theta)
    delta = rounding_allowance("float64", kappa=spec.kappa, scale=scale, dim=spec.dim)
    budget = newton_iterations(spec.kappa, cg_steps, gap(theta, x_star), delta)
    result = newton_cg(objective, grad, hvp, theta, cg_steps=cg_steps, max_steps=budget)
    assert gap(result.x, x_star) <= delta, (result.status, result.steps, budget)


@given(quadratic_tasks(), st.integers(0, 30), st.integers(1, 6))
def test_evaluation_counts_are_deterministic(drawn, max_steps, cg_steps):
    """Counts follow from the step counts and repeat exactly: GD/Nesterov use one gradient per
    step plus one for the final residual; Newton-CG one gradient per iteration plus one, one
    more for each trial step judged by its derivative (at most one per rejected trial), and
    cg_steps Hessian-vector products per iteration (rtol = atol = 0 inside)."""
    task, spec, theta = drawn
    objective, grad, hvp, _ = inner_problem(task, theta)
    beta, _ = task.curvature_bounds()
    runs = {
        "gd": lambda: gradient_descent(grad, theta, step_size=1 / beta, max_steps=max_steps),
        "nesterov": lambda: nesterov(grad, theta, step_size=1 / beta, momentum=0.5,
                                     max_steps=max_steps),
        "newton_cg": lambda: newton_cg(objective, grad, hvp, theta, max_steps=max_steps % 4,
                                       cg_steps=cg_steps),
    }
    for name, run in runs.items():
        first, second = run(), run()
        assert first.evaluations == second.evaluations and first.steps == second.steps, name
        assert np.array_equal(first.x, second.x), name
        if first.status is not Status.MAX_STEPS:
            continue
        if name != "newton_cg":
            assert first.evaluations["grad"] == first.steps + 1, name
            continue
        # cg_steps per iteration, fewer only if CG's residual became exactly zero
        assert first.steps <= first.evaluations["hvp"] <= cg_steps * first.steps
        # objective: f(x) and one per trial, at least one trial per iteration
        rejected_trials = first.evaluations["objective"] - 2 * first.steps
        assert rejected_trials >= 0
        assert 0 <= first.evaluations["grad"] - (first.steps + 1) <= rejected_trials


def test_first_order_zero_steps():
    task, spec = planted_spectrum_task(3, 5.0, 1.0, seed=1)
    theta = np.ones(3)
    _, grad, _, _ = inner_problem(task, theta)
    for run in (lambda: gradient_descent(grad, theta, step_size=0.1, max_steps=0),
                lambda: nesterov(grad, theta, step_size=0.1, momentum=0.3, max_steps=0)):
        r = run()
        assert (r.steps, r.status, r.evaluations) == (0, Status.MAX_STEPS, {"grad": 1})
        assert r.x is theta and math.isclose(r.residual_norm, np.linalg.norm(grad(theta)),
                                             rel_tol=relative_tolerance("float64", dim=3))


@given(quadratic_tasks(max_dim=6), st.integers(1, 20))
def test_history_of_first_order_methods(drawn, max_steps):
    task, spec, theta = drawn
    _, grad, _, _ = inner_problem(task, theta)
    beta, _ = task.curvature_bounds()
    for r in (gradient_descent(grad, theta, step_size=1 / beta, max_steps=max_steps, history=True),
              nesterov(grad, theta, step_size=1 / beta, momentum=0.5, max_steps=max_steps,
                       history=True)):
        h = r.history
        # one entry per point visited: steps + 1 after max_steps updates; at convergence the
        # last gradient evaluation (counted in steps) is the returned point's own
        assert len(h.iterates) == len(h.residual_norms) == r.steps + (r.status is Status.MAX_STEPS)
        assert np.array_equal(h.iterates[0], theta) and np.array_equal(h.iterates[-1], r.x)
        assert h.residual_norms[-1] == r.residual_norm
        assert math.isclose(r.residual_norm, np.linalg.norm(grad(r.x)),
                            rel_tol=relative_tolerance("float64", dim=spec.dim))


def test_newton_cg_line_search_stalls_on_an_inconsistent_objective():
    """A direction of descent for ``grad`` along which ``objective`` never decreases (here the
    objective has the wrong sign): every backtrack fails, status STALLED, x unmoved."""
    task, spec = planted_spectrum_task(4, 10.0, 1.0, seed=2)
    theta = np.ones(4)
    objective, grad, hvp, _ = inner_problem(task, theta)
    r = newton_cg(lambda p: -objective(p), grad, hvp, theta, max_backtracks=7, history=True)
    assert r.status is Status.STALLED and r.steps == 0 and np.array_equal(r.x, theta)
    assert r.evaluations == {"grad": 1, "objective": 1 + 7, "hvp": 5}
    assert math.isclose(r.residual_norm, np.linalg.norm(grad(theta)),
                        rel_tol=relative_tolerance("float64", dim=4))
    assert len(r.history.iterates) == 1


def test_newton_cg_falls_back_to_gradient_on_immediate_breakdown():
    """A Hessian that is not positive definite along −∇f: CG breaks down at once and the
    direction is −∇f, which still decreases f (a concave-up objective along it)."""
    A = np.diag([1.0, 2.0])
    r = newton_cg(lambda p: 0.5 * p @ A @ p, lambda p: A @ p, lambda p, v: -v, np.ones(2),
                  max_steps=1)
    assert r.steps == 1 and r.status is Status.MAX_STEPS
    assert 0.5 * r.x @ A @ r.x < 0.5 * np.ones(2) @ A @ np.ones(2)


# -- Algorithm 2 ------------------------------------------------------------------------------------

def inner_budget(task, spec, theta, inner, warm_start):
    """Enough steps for the inner solver to reach rounding level, from theory.bounds."""
    x0 = theta if warm_start == "theta" else np.zeros(spec.dim)
    distance = gap(x0, task.inner_solution(theta))
    delta = rounding_allowance("float64", kappa=spec.kappa, scale=solution_scale(task, theta),
                               dim=spec.dim)
    if inner == "gd":
        return bounds.gd_steps_estimate(spec.kappa, distance, delta) + 1
    if inner == "nesterov":
        return bounds.lemma2_steps(spec.kappa, distance, delta) + 1
    return 8   # Newton iterations with exact (d-step) CG directions


def check_meta_gradient_converges(seen, reference, spec, theta, *, inner, warm_start):
    """imaml_meta_gradient run long enough on ``seen`` equals ``reference.meta_gradient``."""
    result = imaml_meta_gradient(seen, theta, inner=inner, warm_start=warm_start,
                                 inner_steps=inner_budget(reference, spec, theta, inner, warm_start),
                                 cg_steps=4 * spec.dim, newton_cg_steps=2 * spec.dim)
    assert_within_rounding(result.gradient, reference.meta_gradient(theta), dtype="float64",
                           kappa=spec.kappa, scale=gradient_scale(reference, theta),
                           dim=spec.dim, roundings=2, what=f"meta-gradient ({inner}, {warm_start})")
    return result


SOLVER_STARTS = [(inner, w) for inner in INNER_SOLVERS for w in ("theta", "zero")]


@pytest.mark.parametrize("inner,warm_start", SOLVER_STARTS)
@settings(max_examples=10)
@given(quadratic_tasks(max_kappa=300.0))
def test_meta_gradient_converges_for_every_inner_solver(inner, warm_start, drawn):
    task, spec, theta = drawn
    result = check_meta_gradient_converges(task, task, spec, theta, inner=inner,
                                           warm_start=warm_start)
    assert result.method == "imaml" and result.linear.steps <= 4 * spec.dim


class _Proxy:
    """A hand-made task-protocol object around a QuadraticTask, optionally with a planted defect."""

    def __init__(self, task, *, outer_sign=1.0, lam=None):
        self._task, self._sign = task, outer_sign
        self.lam = task.lam if lam is None else lam

    def inner_loss(self, phi):
        return self._task.inner_loss(phi)

    def inner_grad(self, phi):
        return self._task.inner_grad(phi)

    def inner_hvp(self, phi, v):
        return self._task.inner_hvp(phi, v)

    def outer_loss(self, phi):
        return self._sign * self._task.outer_loss(phi)

    def outer_grad(self, phi):
        return self._sign * self._task.outer_grad(phi)

    def curvature_bounds(self):
        beta, mu = self._task.curvature_bounds()
        return beta - self._task.lam + self.lam, mu - self._task.lam + self.lam


@pytest.mark.parametrize("defect", [dict(), dict(outer_sign=-1.0), dict(lam="wrong")])
@given(seed=seeds)
def test_meta_gradient_check_fails_on_planted_defect(defect, seed):
    """The same check passes through a faithful protocol object and fails on a wrong-sign query
    gradient or a λ the solver sees that is not the task's (a missing/unit λ)."""
    task, spec = planted_spectrum_task(6, 30.0, 3.0, seed=seed, query="independent")
    theta = np.random.default_rng(seed).standard_normal(6)
    if defect.get("lam") == "wrong":
        defect = dict(lam=1.0)
    seen = _Proxy(task, **defect)
    if not defect:
        check_meta_gradient_converges(seen, task, spec, theta, inner="nesterov", warm_start="theta")
        return
    with pytest.raises(AssertionError):
        check_meta_gradient_converges(seen, task, spec, theta, inner="nesterov", warm_start="theta")


@given(quadratic_tasks(), st.sampled_from(INNER_SOLVERS), st.integers(0, 5))
def test_zero_cg_steps_from_the_gradient_is_first_order_maml(drawn, inner, inner_steps):
    task, spec, theta = drawn
    fo = imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=0, inner=inner,
                             cg_start="gradient")
    assert np.array_equal(fo.gradient, task.outer_grad(fo.phi))
    assert fo.linear.steps == 0 and fo.evaluations["hvp"] == fo.inner.evaluations.get("hvp", 0)
    zero = imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=0, inner=inner)
    assert np.array_equal(zero.gradient, np.zeros(spec.dim))
    assert np.array_equal(zero.phi, fo.phi)
    # the diagnostics are those of the returned g
    assert zero.system_residual == zero.outer_grad_norm
    assert math.isclose(zero.outer_grad_norm, np.linalg.norm(task.outer_grad(zero.phi)),
                        rel_tol=relative_tolerance("float64", dim=spec.dim))


@given(quadratic_tasks(), st.sampled_from(INNER_SOLVERS), st.integers(0, 6), st.integers(0, 6))
def test_meta_gradient_diagnostics(drawn, inner, inner_steps, cg_steps):
    """stationarity, system_residual and outer_grad_norm are the quantities their names say, at the
    returned φ and g; evaluations count the method's work."""
    task, spec, theta = drawn
    r = imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=cg_steps, inner=inner)
    phi, g = r.phi, r.gradient
    allow = lambda scale: rounding_allowance("float64", kappa=spec.kappa, scale=scale,  # noqa: E731
                                             dim=spec.dim)
    s = gradient_scale(task, theta) + r.stationarity
    assert abs(r.stationarity - np.linalg.norm(task.inner_grad(phi) + task.lam * (phi - theta))) \
        <= allow(s)
    M = np.eye(spec.dim) + task.A / task.lam
    assert abs(r.system_residual - np.linalg.norm(task.outer_grad(phi) - M @ g)) <= allow(s)
    assert math.isclose(r.outer_grad_norm, np.linalg.norm(task.outer_grad(phi)),
                        rel_tol=relative_tolerance("float64", dim=spec.dim))
    # fewer steps only by an exactly zero gradient (rtol = atol = 0), or Newton-CG's stalled search
    assert r.inner.steps == inner_steps or (r.inner.steps < inner_steps and r.inner.status in
                                            (Status.CONVERGED, Status.STALLED))
    assert r.evaluations["inner_grad"] == r.inner.steps and r.evaluations["outer_grad"] == 1
    assert r.evaluations["hvp"] == r.inner.evaluations.get("hvp", 0) + r.linear.steps
    assert r.linear.steps == cg_steps or r.linear.status is Status.CONVERGED


def test_inner_solve_defaults_follow_the_task():
    """Default step 1/β and momentum (√κ−1)/(√κ+1) from curvature_bounds(): the same run as
    calling the solver with them."""
    task, spec = planted_spectrum_task(5, 50.0, 2.0, seed=4)
    theta = np.linspace(-1, 1, 5)
    _, grad, _, _ = inner_problem(task, theta)
    beta, _ = task.curvature_bounds()
    by_default = inner_solve(task, theta, inner_steps=20)
    explicit = nesterov(grad, theta, step_size=1 / beta, momentum=bounds.cg_contraction(beta / task.curvature_bounds()[1]),
                        max_steps=20)
    assert np.array_equal(by_default.x, explicit.x)
    zero = inner_solve(task, theta, inner_steps=20, inner="gd", warm_start="zero")
    assert np.array_equal(zero.x, gradient_descent(grad, np.zeros(5), step_size=1 / beta,
                                                   max_steps=20).x)


def test_cg_vanishing_curvature_at_working_precision_is_convergence_not_breakdown():
    """With rtol = atol = 0 and more steps than needed, p shrinks until pᵀMp underflows to 0
    (seen on Corollary 1's tasks at step 53). A row already solved to working precision is then
    converged; the same vanishing curvature with a large residual is still a breakdown."""
    M = np.diag(np.linspace(1.0, 10.0, 6))
    rhs = np.random.default_rng(0).standard_normal(6)
    floor = np.finfo(np.float64).eps * np.linalg.norm(rhs)

    def underflowing(v):  # models p·Mp underflow once the iteration is at rounding level
        return np.zeros_like(v) if np.linalg.norm(v) < 1e-3 * floor else v @ M

    res = cg(underflowing, rhs, max_steps=500, rtol=0.0, atol=0.0)
    assert res.status is Status.CONVERGED and res.residual_norm <= floor
    np.testing.assert_allclose(res.x, np.linalg.solve(M, rhs), rtol=1e-12)
    with pytest.raises(SolverBreakdown, match="not positive definite"):
        cg(lambda v: np.zeros_like(v), rhs, max_steps=5, rtol=0.0, atol=0.0)
