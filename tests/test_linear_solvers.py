"""The table of linear solvers (solvers/linear/: CG, MINRES, the Neumann series, the fixed-point
hypergradient) as one table of tests: solvers × problems × backends. Each solver through
implicit_gradient_at on NumPy and torch (float64, float32), a stack equal row by row to its
tasks alone, the iterates against independent references (SciPy's MINRES, the closed-form
Neumann partial sums), breakdown and divergence, and bad input. Allowances from
theory.tolerances (tests/_tolerances.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _tolerances import assert_like, gap, machine_epsilon, rounding_allowance, to_numpy64
from solvers import (LINEAR_SOLVERS, ImplicitSystem, SolverBreakdown, Status, cg, fixed_point,
                     imaml_meta_gradient, implicit_gradient_at, inner_solve, minres, neumann)
from theory import QuadraticTask
from verify.systems import indefinite_task
from verify.tasks import float64_twin, planted_spectrum_task, to_array

SOLVERS = tuple(LINEAR_SOLVERS)
CUDA = __import__("torch").cuda.is_available()
BACKENDS = [("numpy", "float64", "cpu"), ("torch", "float64", "cpu"), ("torch", "float32", "cpu"),
            pytest.param("torch", "float32", "cuda", marks=[
                pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="no CUDA device")])]
DIM, KAPPA, LAM = 8, 10.0, 2.0


def test_the_table_holds_the_four_solvers_each_one_module():
    assert SOLVERS == ("cg", "minres", "neumann", "fixed_point")
    for name, entry in LINEAR_SOLVERS.items():
        assert entry.name == name and entry.summary
        assert entry.run.__module__ == f"solvers.linear.{name}"
    assert [n for n, e in LINEAR_SOLVERS.items() if not e.definite] == ["minres"]


def _problem(array="numpy", dtype="float64", seed=0, device="cpu"):
    task, spec = planted_spectrum_task(DIM, KAPPA, LAM, seed=seed, query="independent",
                                       array=array, dtype=dtype, device=device)
    theta = to_array(np.random.default_rng(seed + 1).standard_normal(DIM), array=array,
                     dtype=dtype, device=device)
    return task, theta


def _exact(task, theta):
    """φ* and g* = (I + A/λ)⁻¹∇L(φ*) in float64."""
    twin = float64_twin(task)
    phi = twin.inner_solution(to_numpy64(theta))
    return phi, twin.implicit_gradient(phi)


@pytest.mark.parametrize("array,dtype,device", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_reaches_the_implicit_gradient_on_every_backend(solver, array, dtype, device):
    """Driven by a residual tolerance τ: ‖g − g*‖ ≤ ‖M⁻¹‖τ = (λ/μ)τ, plus the rounding of φ*
    (φ from a converged inner solve)."""
    task, theta = _problem(array, dtype, device=device)
    inner = inner_solve(task, theta, inner_steps=400, atol=0.0)
    beta, mu = task.curvature_bounds()
    v_norm = float(np.linalg.norm(to_numpy64(task.outer_grad(inner.x))))
    eps = machine_epsilon(dtype)
    tau = math.sqrt(eps) * v_norm
    res = implicit_gradient_at(task, theta, inner, cg_steps=4000, cg_tol=tau,
                               linear_solver=solver)
    assert res.linear_solver == solver and res.linear.status is Status.CONVERGED
    assert_like(res.gradient, theta, f"{solver}'s gradient")
    phi_star, g_star = _exact(task, theta)
    lam = float(task.lam)
    rounding = rounding_allowance(dtype, kappa=beta / mu, scale=v_norm * lam / mu * 10, dim=DIM)
    assert gap(res.gradient, g_star) <= lam / mu * tau + rounding
    assert float(res.system_residual) <= tau + rounding
    assert res.evaluations["hvp"] == res.linear.evaluations["matvec"] > 0


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_stack_is_its_tasks_row_by_row(solver):
    """One implementation for one system and a stack: row i of a stacked run is bitwise the
    run of task i alone (NumPy), with its own steps and status."""
    d = 30
    # (each task its own λ: the stack's λ is then an (n, 1) array, the solvers' per-row path)
    tasks = [planted_spectrum_task(d, k, lam, seed=s, query="independent")[0]
             for s, k, lam in ((0, 4.0, LAM), (1, 300.0, 0.5), (2, 30.0, 5.0))]
    stack = QuadraticTask.stack(tasks)
    theta = np.random.default_rng(5).standard_normal((3, d))
    kw = dict(inner_steps=20, cg_steps=60, cg_tol=1e-6, linear_solver=solver)
    batched = imaml_meta_gradient(stack, theta, **kw)
    for i, t in enumerate(tasks):
        alone = imaml_meta_gradient(t, theta[i], **kw)
        assert np.array_equal(batched.gradient[i], alone.gradient), f"{solver}, task {i}"
        assert batched.linear.row_steps[i] == alone.linear.steps
        assert batched.linear.row_status[i] is alone.linear.status
    assert len(set(batched.linear.row_steps.tolist())) > 1     # rows stopped at their own step


@pytest.mark.parametrize("solver", ["minres", "neumann", "fixed_point"])
def test_the_default_stopping_rule_is_rtol_1e_5(solver):
    """Called without rtol/atol each solver stops at ‖r‖ ≤ 1e-5‖rhs‖, exactly as with
    rtol=1e-5, atol=0 given (slow contraction, 1% a step, and ‖rhs‖ = 1e3: a residual passes
    through every factor-2 band on its way down, so another default would stop elsewhere)."""
    w = np.linspace(0.01, 1.0, 40)
    M = np.diag(w)
    b = 1e3 * np.random.default_rng(3).standard_normal(40)
    if solver == "fixed_point":
        run = lambda **kw: fixed_point(lambda v: v - M @ v, b, max_steps=5000, **kw)  # noqa: E731
    elif solver == "neumann":
        run = lambda **kw: neumann(lambda v: M @ v, b, alpha=1.0, max_steps=5000, **kw)  # noqa: E731
    else:
        M = np.diag(np.linspace(1e-4, 1.0, 400))
        b = 1e3 * np.random.default_rng(3).standard_normal(400)
        run = lambda **kw: minres(lambda v: M @ v, b, max_steps=5000, **kw)  # noqa: E731
    default, explicit = run(), run(rtol=1e-5, atol=0.0)
    assert default.status is Status.CONVERGED and default.steps == explicit.steps
    assert np.array_equal(default.x, explicit.x)
    assert float(default.residual_norm) <= 1e-5 * np.linalg.norm(b)


def test_minres_iterates_are_scipys():
    """MINRES's k-th iterate against SciPy's minres stopped after k steps, on an indefinite
    system (to rounding: the same Lanczos recurrences, summed in another order)."""
    from scipy.sparse.linalg import minres as scipy_minres

    task, _ = indefinite_task(12, seed=3)
    M = task.system_matrix()
    b = np.random.default_rng(4).standard_normal(12)
    ours = minres(lambda v: M @ v, b, max_steps=12, rtol=0.0, atol=0.0, history=True)
    cond = float(np.linalg.cond(M))
    for k in range(1, 13):
        ref = scipy_minres(M, b, maxiter=k, rtol=0.0)[0]
        scale = np.linalg.norm(M, 2) * np.linalg.norm(ref) + np.linalg.norm(b)
        assert gap(ours.history.iterates[k], ref) <= rounding_allowance(
            "float64", kappa=cond, scale=scale * cond, dim=12 * k), k


def test_minres_solves_an_indefinite_system_where_cg_breaks_down():
    task, _ = indefinite_task(16, seed=1)
    M = task.system_matrix()
    b = np.random.default_rng(2).standard_normal(16)
    with pytest.raises(SolverBreakdown, match="CG breakdown"):
        cg(lambda v: M @ v, b, max_steps=100, rtol=0.0, atol=0.0)
    res = minres(lambda v: M @ v, b, max_steps=200, rtol=0.0, atol=0.0)
    cond = float(np.linalg.cond(M))
    x = np.linalg.solve(M, b)
    assert gap(res.x, x) <= rounding_allowance("float64", kappa=cond,
                                               scale=cond * np.linalg.norm(x), dim=16 * 4)
    # its residual never increases
    hist = minres(lambda v: M @ v, b, max_steps=30, rtol=0.0, atol=0.0, history=True)
    r = hist.history.residual_norms
    assert all(r[k + 1] <= r[k] for k in range(len(r) - 1))


def test_neumann_iterates_are_the_partial_sums_and_the_fixed_point_is_the_series():
    """x_k = α Σ_{j<k}(I − αM)^j b; and fixed_point with map step η is that series with
    α = ηλ (docs/mathematics.md §4a)."""
    task, theta = _problem()
    sysm = ImplicitSystem.of_hessian(task.A, task.lam)
    M = sysm.matrix()
    b = np.random.default_rng(0).standard_normal(DIM)
    lo, hi = sysm.bounds
    alpha = 1.0 / hi
    res = neumann(sysm.matvec, b, alpha=alpha, max_steps=25, rtol=0.0, atol=0.0, history=True)
    partial, term = np.zeros(DIM), alpha * b
    for k in range(26):
        scale = np.linalg.norm(b) * alpha * (k + 1)
        assert gap(res.history.iterates[k], partial) <= rounding_allowance(
            "float64", kappa=hi / lo, scale=scale, dim=DIM * (k + 1)), k
        partial, term = partial + term, term - alpha * (M @ term)
    eta = 0.7 / (hi * task.lam)
    fp = LINEAR_SOLVERS["fixed_point"].solve(sysm, b, options={"step_size": eta}, max_steps=25,
                                             rtol=0.0, atol=0.0, history=True)
    ns = neumann(sysm.matvec, b, alpha=eta * task.lam, max_steps=25, rtol=0.0, atol=0.0,
                 history=True)
    for k, (a, c) in enumerate(zip(fp.history.iterates, ns.history.iterates)):
        assert gap(a, c) <= 2 * rounding_allowance("float64", kappa=hi / lo,
                                                   scale=np.linalg.norm(b) * (k + 1), dim=DIM), k
    assert fp.steps == ns.steps == 25


def test_fixed_point_with_a_map_vjp_is_hypertorchs_iteration():
    """v_{k+1} = J^T v_k + rhs from 0, stopped on ‖v_{k+1} − v_k‖ (the residual of (I − J^T)v)."""
    J = np.diag([0.5, -0.25, 0.1])
    rhs = np.array([1.0, 2.0, -1.0])
    res = fixed_point(lambda v: J.T @ v, rhs, max_steps=6, rtol=0.0, atol=0.0, history=True)
    v = np.zeros(3)
    for k in range(7):
        assert gap(res.history.iterates[k], v) <= rounding_allowance(
            "float64", scale=float(np.linalg.norm(rhs)) * (k + 1), dim=3), k
        v = J.T @ v + rhs


def test_a_diverging_series_is_caught_raised_or_reported_per_row():
    """α‖M‖ = 2.5 > 2: the series diverges; by default it raises, with 'return' it runs its
    steps and says DIVERGED (per row in a stack: the other rows are unaffected)."""
    task, _ = _problem()
    sysm = ImplicitSystem.of_hessian(task.A, task.lam)
    b = np.ones(DIM)
    hi = sysm.bounds[1]
    M = sysm.matrix()
    with pytest.raises(SolverBreakdown, match="diverges"):
        neumann(sysm.matvec, b, alpha=2.5 / hi, max_steps=50, rtol=0.0, atol=0.0)
    res = neumann(sysm.matvec, b, alpha=2.5 / hi, max_steps=50, rtol=0.0, atol=0.0,
                  on_breakdown="return")
    assert res.status is Status.DIVERGED and res.steps == 50
    assert np.linalg.norm(res.x) > np.linalg.norm(np.linalg.solve(sysm.matrix(), b))
    ok = neumann(lambda v: M @ v, b, alpha=1.0 / hi, max_steps=50, rtol=0.0, atol=0.0)
    assert ok.status is Status.MAX_STEPS
    B = np.stack([b, b])
    rows = neumann(lambda X: np.stack([M @ x for x in X]), B, alpha=np.array([1.0 / hi, 2.5 / hi]), max_steps=50,
                   rtol=0.0, atol=0.0, on_breakdown="return")
    assert rows.row_status == (Status.MAX_STEPS, Status.DIVERGED)
    assert np.array_equal(rows.x[0], ok.x)


def test_neumann_on_an_indefinite_system_diverges_for_every_step():
    task, _ = indefinite_task(10, seed=0)
    M = task.system_matrix()
    b = np.random.default_rng(1).standard_normal(10)
    top = float(np.max(np.abs(task.system_eigenvalues)))
    for alpha in (0.1 / top, 1.0 / top):
        with pytest.raises(SolverBreakdown, match="diverges"):
            neumann(lambda v: M @ v, b, alpha=alpha, max_steps=400, rtol=0.0, atol=0.0)


def test_defaults_come_from_the_curvature_bounds():
    """Neumann's default α = λ/β, the fixed point's η = 1/β: both equal the series with α = λ/β."""
    task, theta = _problem()
    inner = inner_solve(task, theta, inner_steps=50)
    beta, _ = task.curvature_bounds()
    a = implicit_gradient_at(task, theta, inner, cg_steps=7, linear_solver="neumann")
    b = implicit_gradient_at(task, theta, inner, cg_steps=7, linear_solver="neumann",
                             linear_options={"alpha": task.lam / beta})
    c = implicit_gradient_at(task, theta, inner, cg_steps=7, linear_solver="fixed_point")
    assert np.array_equal(a.gradient, b.gradient)
    assert gap(a.gradient, c.gradient) <= 2 * rounding_allowance(
        "float64", kappa=KAPPA, scale=float(np.linalg.norm(a.gradient)) * 8, dim=DIM)


def test_bad_input_names_the_argument():
    task, theta = _problem()
    inner = inner_solve(task, theta, inner_steps=5)
    with pytest.raises(ValueError, match="linear_solver must be one of"):
        implicit_gradient_at(task, theta, inner, cg_steps=3, linear_solver="gmres")
    with pytest.raises(ValueError, match="linear_solver must be one of"):
        imaml_meta_gradient(task, theta, inner_steps=3, cg_steps=3, linear_solver=None)
    with pytest.raises(ValueError, match=r"\['beta'\] are not options of linear_solver='neumann'"):
        implicit_gradient_at(task, theta, inner, cg_steps=3, linear_solver="neumann",
                             linear_options={"beta": 1.0})
    with pytest.raises(ValueError, match="not options of linear_solver='cg'.*none"):
        implicit_gradient_at(task, theta, inner, cg_steps=3, linear_options={"alpha": 1.0})
    with pytest.raises(TypeError, match="linear_options must be a dict"):
        implicit_gradient_at(task, theta, inner, cg_steps=3, linear_options=[("alpha", 1.0)])
    with pytest.raises(ValueError, match="alpha"):
        neumann(lambda v: v, np.ones(3), alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        neumann(lambda v: v, np.ones(3), alpha=float("nan"))
    itask, _ = indefinite_task(6, seed=0)
    phi = itask.inner_solution(np.zeros(6))
    system = ImplicitSystem.at(itask, phi)
    assert system.bounds is None and system.definite is None
    with pytest.raises(ValueError, match=r"linear_options\['alpha'\] must be given"):
        LINEAR_SOLVERS["neumann"].solve(system, itask.outer_grad(phi), max_steps=3)
    with pytest.raises(ValueError, match=r"linear_options\['step_size'\] must be given"):
        LINEAR_SOLVERS["fixed_point"].solve(system, itask.outer_grad(phi), max_steps=3)


def test_the_implicit_system_and_its_bounds():
    """ImplicitSystem: M w = w + H w/λ, bounds [μ/λ, β/λ] from the task, definite tags, the
    damped system of the paper's code, and the dense matrix only for a dense Hessian."""
    task, theta = _problem()
    phi = task.inner_solution(theta)
    s = ImplicitSystem.at(task, phi)
    beta, mu = task.curvature_bounds()
    assert s.bounds == (mu / task.lam, beta / task.lam) and s.definite is True
    w = np.arange(DIM, dtype=float)
    dense = ImplicitSystem.of_hessian(task.A, task.lam)
    assert np.array_equal(s.matvec(w), w + task.inner_hvp(phi, w) / task.lam)
    assert np.array_equal(dense.matrix(), np.eye(DIM) + task.A / task.lam)
    assert np.array_equal(s.residual(w, 2 * w), 2 * w - s.matvec(w))
    d = s.damped(1.0, 10.0)
    assert np.array_equal(d.matvec(w), 2.0 * w + task.inner_hvp(phi, w) / (task.lam + 10.0))
    assert d.bounds is None
    with pytest.raises(ValueError, match="of_hessian"):
        s.matrix()
    w_H = np.linalg.eigvalsh(task.A)
    assert dense.bounds == (1.0 + w_H[0] / task.lam, 1.0 + w_H[-1] / task.lam)
    ind = ImplicitSystem.of_hessian(indefinite_task(6, seed=0)[0].A, 1.0)
    assert ind.definite is False and ind.bounds[0] < 0 < ind.bounds[1]
