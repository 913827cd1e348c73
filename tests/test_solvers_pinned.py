"""solvers/ pinned where mutation testing (tools/mutate.py; survivors in
tools/surviving_mutants.md) found nothing that fixed them: defaults, step counts, statuses,
error messages naming the argument, the order of validation, per-row behaviour of batched
runs, host-read counts, the diagnostics against dense formulas, and the exact rule of
Newton-CG's line search (Armijo's constant, the resolution of f, the derivative test).

Every value asserted is either exact by construction (integers, statuses, bitwise equality of
two runs of the same arithmetic) or an allowance from theory.tolerances."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import solvers
import solvers._common as common
from _tolerances import assert_within_rounding, to_numpy64
from solvers import (NEWTON_CG_STEPS, NonFiniteIterate, SolverBreakdown, Status, cg,
                     count_host_reads, fomaml_meta_gradient, gradient_descent, imaml_meta_gradient,
                     implicit_gradient_at, inner_solve, maml_meta_gradient, nesterov, newton_cg,
                     reptile_direction, truncated_meta_gradient)
from theory import QuadraticTask
from verify.tasks import planted_spectrum_task

EPS = float(np.finfo(np.float64).eps)


def _task(dim=6, kappa=20.0, lam=1.0, seed=0, **kw):
    return planted_spectrum_task(dim, kappa, lam, seed=seed, query="independent", **kw)[0]


def _theta(dim=6, seed=0, n=None):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(dim if n is None else (n, dim))


def _meta_system(task):
    """The dense meta-gradient system M = I + A/λ and its matvec."""
    M = np.eye(task.dim) + task.A / task.lam
    return M, (lambda v: v @ M.T)


# -- the helpers every loop runs (solvers/_common.py) ---------------------------------------------

def test_numpy_row_dot_is_vecdot_or_the_same_sum(monkeypatch):
    """NumPy ≥ 2 has vecdot and the loops use it; on NumPy 1.26 (allowed by pyproject) the
    fallback is the same row-wise sum over the last axis, for vectors and for batches."""
    a = np.arange(6.0).reshape(2, 3) - 2.5
    b = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    expected = np.array([sum(a[i, j] * b[i, j] for j in range(3)) for i in range(2)])
    common._ops_for.cache_clear()
    try:
        assert common.ops(np).dot is np.vecdot
        monkeypatch.delattr(np, "vecdot")
        common._ops_for.cache_clear()
        o = common.ops(np)
        assert np.array_equal(o.dot(a, b), expected)
        assert o.dot(a[1], b[1]) == expected[1]
        assert np.array_equal(o.norm(a), np.sqrt(expected * 0 + np.sum(a * a, axis=-1)))
    finally:
        monkeypatch.undo()
        common._ops_for.cache_clear()


class _ThirdLibrary:
    """The namespace of an array library that is neither NumPy nor torch (the array API's
    generic path of solvers' hot-loop operations), built from NumPy's functions."""

    where, any, all, sqrt = np.where, np.any, np.all, np.sqrt
    isfinite, sum, maximum, stack = np.isfinite, np.sum, np.maximum, np.stack
    linalg = SimpleNamespace(vector_norm=np.linalg.vector_norm)
    __name__ = "third_library"


def test_generic_namespace_operations_are_row_wise():
    a = np.array([[3.0, 4.0, 0.0], [1.0, -2.0, 2.0]])
    b = np.array([[1.0, 1.0, 5.0], [2.0, 0.5, -1.0]])
    o = common.ops(_ThirdLibrary)
    assert o.where is np.where and o.stack is np.stack and o.plain(a) is a
    assert np.array_equal(o.dot(a, b), [7.0, -1.0]) and o.dot(a[0], b[0]) == 7.0
    assert np.array_equal(o.norm(a), [5.0, 3.0]) and o.norm(a[1]) == 3.0


def test_check_callback_output_returns_its_input():
    x = np.ones(3)
    assert common.check_callback_output(x, x, "f") is x


def test_on_host_and_to_host_keep_types():
    """A host read returns Python floats for 0-d values and arrays of the source dtype (no cast)
    for host arrays; only a device's values go through the single float64 transfer."""
    assert common.on_host(np.zeros(2)) and common.on_host(torch.zeros(2))
    assert not common.on_host(torch.zeros(2, device="meta"))
    assert type(common.to_host(2.5)) is float and type(common.to_host(np.float32(2.5))) is float
    f32 = common.to_host(torch.tensor([1.5, 2.0], dtype=torch.float32))
    ints = common.to_host(torch.arange(3))
    assert f32.dtype == np.float32 and ints.dtype == np.int64 and ints.tolist() == [0, 1, 2]
    one, two = common.to_host(torch.tensor(1.0), torch.tensor([2, 3]))
    assert one == 1.0 and two.dtype == np.int64


def test_one_transfer_of_one_and_of_two_tensors():
    (single,) = common._one_transfer([torch.tensor([[1.0, 2.0], [3.0, 4.0]])])
    assert single.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    scalar, vector = common._one_transfer([torch.tensor(0.5), torch.tensor([7, 8])])
    assert scalar == 0.5 and vector.tolist() == [7.0, 8.0]


def test_host_read_counter_is_the_difference():
    with count_host_reads() as outer:
        common.to_host(np.float64(1.0))
        with count_host_reads() as inner:
            common.to_host(np.float64(1.0), np.float64(2.0))
    assert (outer.count, inner.count) == (2, 1)


# -- the first-order loop (solvers/_optimizer.py) -------------------------------------------------

def _quadratic_grad(diag):
    return lambda x: diag * x


def test_zero_dimensional_step_parameters_are_numbers():
    """A 0-d array (NumPy or torch) as step size or momentum is the number it holds."""
    diag = np.array([1.0, 4.0])
    x0 = np.array([[1.0, 1.0], [2.0, -1.0]])
    ref = nesterov(_quadratic_grad(diag), x0, step_size=0.2, momentum=0.3, max_steps=7)
    for s, q in ((np.asarray(0.2), np.asarray(0.3)), (torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64))):
        got = nesterov(_quadratic_grad(diag), x0, step_size=s, momentum=q, max_steps=7)
        assert np.array_equal(got.x, ref.x)


def test_per_row_step_parameters_are_checked():
    diag = np.array([1.0, 4.0, 2.0])
    with pytest.raises(ValueError, match=r"step_size must be a number or have shape \(n,\)"):
        gradient_descent(_quadratic_grad(diag), np.ones(3), step_size=np.full(3, 0.1),
                         max_steps=3)
    with pytest.raises(ValueError, match=r"step_size must be a number or have shape \(2,\)"):
        gradient_descent(_quadratic_grad(diag), np.ones((2, 3)), step_size=np.full(3, 0.1),
                         max_steps=3)
    with pytest.raises(ValueError, match="step_size must be finite and > 0 for every row"):
        gradient_descent(_quadratic_grad(diag), np.ones((2, 3)), step_size=np.array([0.1, 0.0]),
                         max_steps=3)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\) for every row"):
        nesterov(_quadratic_grad(diag), np.ones((2, 3)), step_size=0.1,
                 momentum=np.array([0.0, 1.0]), max_steps=3)
    # the edges that are allowed: momentum 0 in a row
    nesterov(_quadratic_grad(diag), np.ones((2, 3)), step_size=0.1,
             momentum=np.array([0.0, 0.5]), max_steps=3)


def _poisoned_at(call, good):
    """A gradient that is ``good`` until its ``call``-th evaluation, NaN from then on."""
    calls = []

    def grad(x):
        calls.append(1)
        return good(x) * (math.nan if len(calls) >= call else 1.0)

    return grad


def test_non_finite_messages_name_the_step():
    diag = np.array([1.0, 2.0])
    # evaluation 4 is the final residual's gradient after 3 steps: "step 4"
    with pytest.raises(NonFiniteIterate, match="the output of grad became NaN or Inf at step 4"):
        gradient_descent(_poisoned_at(4, _quadratic_grad(diag)), np.ones(2), step_size=0.1,
                         max_steps=3)
    with pytest.raises(NonFiniteIterate, match="at step 3"):
        gradient_descent(_poisoned_at(3, _quadratic_grad(diag)), np.ones((2, 2)), step_size=0.1,
                         max_steps=5)
    with pytest.raises(NonFiniteIterate, match="at step 3"):
        gradient_descent(_poisoned_at(3, _quadratic_grad(diag)), np.ones(2), step_size=0.1,
                         max_steps=5)


def test_tolerance_run_without_a_step_limit_stops_at_the_cap():
    """rtol/atol without max_steps: the first-order solvers' own cap, 100 000 evaluations."""
    res = gradient_descent(lambda x: np.ones_like(x), np.zeros(1), step_size=1e-300, atol=1e-3)
    assert (res.steps, res.status) == (100_000, Status.MAX_STEPS)


def _graph_size(t):
    """Number of autograd nodes reachable from t (what a backward pass would traverse)."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    return len(seen)


def test_gradient_descent_is_plain_gradient_descent():
    """Gradient descent (momentum 0) does no momentum arithmetic: differentiated by autograd,
    its iterate has the graph of the bare loop x ← x − s∇f(x), node for node."""
    diag = torch.tensor([1.0, 3.0], dtype=torch.float64)
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)

    def grad(x):
        return diag * x + (x - theta)

    res = gradient_descent(grad, theta, step_size=0.1, max_steps=5)
    bare = theta
    for _ in range(5):
        bare = bare - 0.1 * grad(bare)
    assert torch.equal(res.x, bare) and _graph_size(res.x) == _graph_size(bare)


# -- conjugate gradient (solvers/cg.py) ------------------------------------------------------------

def test_cg_defaults_rtol_and_step_cap():
    """Default rtol = 1e-5 (relative to ‖rhs‖), default cap 10·d steps (as in SciPy)."""
    task = _task(dim=40, kappa=1e4, lam=1.0, seed=3)
    M, mv = _meta_system(task)
    rhs = np.random.default_rng(1).standard_normal(40)
    res = cg(mv, rhs, history=True)
    rel = np.asarray(res.history.residual_norms) / np.linalg.norm(rhs)
    first = int(np.argmax(rel <= 1e-5))
    assert res.steps == first and res.status is Status.CONVERGED
    # the instance tells 1e-5 from 2e-5: a step's residual lies between them
    assert np.any((rel > 1e-5) & (rel <= 2e-5))
    small = _task(dim=3, kappa=10.0, lam=1.0, seed=0)
    _, mv3 = _meta_system(small)
    capped = cg(mv3, np.ones(3), rtol=1e-300)
    assert (capped.steps, capped.status) == (30, Status.MAX_STEPS)
    capped = cg(mv3, np.ones((2, 3)), rtol=1e-300)
    assert capped.steps == 30 and capped.row_steps.tolist() == [30, 30]


def test_cg_masked_path_counts_its_matvecs():
    task = _task(dim=8, kappa=50.0, seed=1)
    _, mv = _meta_system(task)
    rhs = np.random.default_rng(0).standard_normal((3, 8))
    res = cg(mv, rhs, rtol=1e-8)
    assert res.evaluations["matvec"] == res.steps
    res = cg(mv, rhs, rtol=1e-8, x0=np.ones((3, 8)))
    assert res.evaluations["matvec"] == res.steps + 1
    res = cg(mv, rhs[0], rtol=0.0, max_steps=5, check_every=2)
    assert res.evaluations["matvec"] == res.steps == 5


def test_cg_batched_history_reads_nothing_more():
    """On the host a batched run reads its exit test every step with or without a history;
    the history keeps each step's residual norms as the run's own arrays."""
    task = _task(dim=8, kappa=50.0, seed=2)
    _, mv = _meta_system(task)
    rhs = torch.as_tensor(np.random.default_rng(0).standard_normal((3, 8)))
    M = torch.as_tensor(_meta_system(task)[0])

    def tmv(v):
        return v @ M.T

    with count_host_reads() as plain:
        a = cg(tmv, rhs, rtol=1e-8)
    with count_host_reads() as recorded:
        b = cg(tmv, rhs, rtol=1e-8, history=True)
    assert plain.count == recorded.count and torch.equal(a.x, b.x)
    assert all(isinstance(r, torch.Tensor) and r.shape == (3,) for r in b.history.residual_norms)
    assert len(b.history.residual_norms) == b.steps + 1


def test_cg_device_policy_reads(monkeypatch):
    """On a device: a fixed-step run (rtol = atol = 0) reads once, at the end; a
    tolerance-driven run every DEVICE_CHECK_EVERY = 8 steps until no row is live, then once
    more; both are the same run as reading every step."""
    import importlib

    cg_module = importlib.import_module("solvers.linear._iteration")

    task = _task(dim=20, kappa=200.0, seed=4)
    _, mv = _meta_system(task)
    rhs = np.random.default_rng(3).standard_normal((3, 20))
    each_fixed = cg(mv, rhs, rtol=0.0, max_steps=20)
    each_tol = cg(mv, rhs, rtol=1e-3)
    monkeypatch.setattr(cg_module, "on_host", lambda x: False)
    assert solvers.DEVICE_CHECK_EVERY == 8
    for steps in (0, 1, 2, 5, 20):
        for b in (rhs, rhs[0]):
            with count_host_reads() as reads:
                fixed = cg(mv, b, rtol=0.0, max_steps=steps)
            assert reads.count == 1 and fixed.steps == steps, (steps, b.ndim)
            if steps == 20 and b.ndim == 2:
                assert np.array_equal(fixed.x, each_fixed.x)
    with count_host_reads() as reads:
        res = cg(mv, rhs, rtol=1e-3)
    assert np.array_equal(res.x, each_tol.x) and res.steps == each_tol.steps
    assert math.ceil(res.steps / 8) != math.ceil(res.steps / 9)   # the instance tells 8 from 9
    assert reads.count == math.ceil(res.steps / 8) + 1


def _one_step_then(curvature_after, b0=1.0):
    """A 'matvec' whose first product moves the residual of rhs = (1, 0) to (0, eps·‖rhs‖)
    exactly, after which pᵀMp = ``curvature_after`` (a crafted operator: it exercises the
    rounding-floor rule at its boundary, residual = eps·‖rhs‖)."""
    calls = []

    def mv(v):
        calls.append(1)
        if len(calls) == 1:
            out = v.copy()
            out[..., 1] = -EPS * b0
            return out
        return v * curvature_after

    return mv


@pytest.mark.parametrize("every", [None, 3])
def test_cg_vanishing_curvature_at_the_rounding_floor_is_convergence(every):
    """A residual of exactly eps·‖rhs‖ is at the rounding floor: a vanishing curvature there
    is convergence (not a breakdown), on the vector path and on the masked one; a residual
    above it is a breakdown."""
    rhs = np.array([1.0, 0.0])
    res = cg(_one_step_then(0.0), rhs, rtol=0.0, max_steps=4, check_every=every)
    assert (res.status, res.steps, res.residual_norm) == (Status.CONVERGED, 1, EPS)
    batch = cg(_one_step_then(0.0), rhs[None, :], rtol=0.0, max_steps=4, check_every=every)
    assert batch.row_status == (Status.CONVERGED,) and batch.row_steps.tolist() == [1]
    with pytest.raises(SolverBreakdown, match="at step 1"):
        cg(_one_step_then(0.0, b0=2.0), rhs, rtol=0.0, max_steps=4, check_every=every)


def test_cg_zero_curvature_row_breaks_down_alone():
    """pᵀMp = 0 exactly (a zero operator on one row) is a breakdown of that row only."""
    mats = np.stack([np.diag([1.0, 2.0, 3.0]), np.zeros((3, 3))])

    def mv(v):
        return np.einsum("nij,nj->ni", mats, v)

    rhs = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 2.0]])
    res = cg(mv, rhs, rtol=1e-12, on_breakdown="return")
    assert res.row_status == (Status.CONVERGED, Status.BREAKDOWN)
    assert res.row_steps.tolist() == [3, 0] and np.array_equal(res.x[1], np.zeros(3))
    assert np.all(np.isfinite(res.x))


def test_cg_non_finite_curvature_of_one_row_is_reported():
    """pᵀMp overflows to −Inf in one row of a batch while p and Mp stay finite: a
    NonFiniteIterate naming the curvature and that row's step (not a breakdown)."""
    calls = []

    def mv(v):
        calls.append(1)
        out = v * np.array([1.0, 3.0])
        # row 1: pᵀMp = −(|p₀| + |p₁|)·max overflows to −Inf (CG works on the row scaled to
        # entries in [1, 2), where p = (0.75, −0.25)·1.16 at step 1, whatever the row's scale)
        if len(calls) == 2:
            out[1] = -np.finfo(np.float64).max * np.sign(v[1])
        return out

    rhs = np.array([[1.0, 2.0], [1e10, 1e10]])
    with pytest.raises(NonFiniteIterate,
                       match=r"the curvature p\^T M p returned by matvec became NaN or Inf at step 1"):
        cg(mv, rhs, rtol=0.0, max_steps=3)


# -- results of batched runs, row by row (solvers/_result.py, solvers/imaml.py) ------------------

def _stack(n=3, dim=6, seed=0, lams=(1.0, 2.0, 0.5)):
    singles = [planted_spectrum_task(dim, 10.0 * (i + 1), lams[i % len(lams)], seed=seed + i,
                                     query="independent")[0] for i in range(n)]
    return QuadraticTask.stack(singles), singles


@pytest.mark.parametrize("inner", ["nesterov", "newton_cg"])
def test_batched_results_by_row_are_the_single_task_results(inner):
    """Accuracy-driven (rows stop at different steps): row(i) of a stack's result is, bitwise,
    the result of the same call on task i alone, with its own steps, status, norms and history."""
    stack, singles = _stack(dim=10)
    theta = _theta(10, seed=1, n=3)
    kw = dict(inner_steps=None, cg_steps=None, inner=inner, inner_tol=1e-6, cg_tol=1e-3,
              history=True)
    res = imaml_meta_gradient(stack, theta, **kw)
    assert res.n_tasks == 3
    if inner == "nesterov":
        assert len(set(res.inner.row_steps.tolist())) > 1   # the rows stop at different steps
    assert len(set(res.linear.row_steps.tolist())) > 1
    for i, single in enumerate(singles):
        alone = imaml_meta_gradient(single, theta[i], **kw)
        row = res.row(i)
        assert np.array_equal(row.gradient, alone.gradient) and np.array_equal(row.phi, alone.phi)
        for name in ("stationarity", "system_residual", "outer_grad_norm"):
            assert type(getattr(row, name)) is float
            assert getattr(row, name) == getattr(alone, name), name
        for part in ("inner", "linear"):
            r, a, batch = getattr(row, part), getattr(alone, part), getattr(res, part)
            if inner == "newton_cg" and part == "inner":   # one Newton run for the stack
                assert r.steps == batch.steps and r.status is batch.status
                assert r.residual_norm == batch.residual_norm
                continue
            assert (r.steps, r.status) == (a.steps, a.status), (part, i)
            assert np.array_equal(r.x, a.x)
            assert type(r.residual_norm) is float
            mine = [float(v) for v in r.history.residual_norms]
            if part == "linear":    # CG keeps each row's residual: the row's own, frozen once done
                assert r.residual_norm == a.residual_norm
                n = len(a.history.residual_norms)
                assert mine[:n] == [float(v) for v in a.history.residual_norms]
                assert mine[n:] == [mine[n - 1]] * (len(mine) - n)
            else:               # first-order loops keep the batch's largest gradient norm
                assert r.residual_norm == batch.residual_norm >= a.residual_norm
                assert mine == [float(v) for v in batch.history.residual_norms]
        assert row.evaluations == res.evaluations and row.method == "imaml"
    single = imaml_meta_gradient(singles[0], theta[0], inner_steps=3, cg_steps=2)
    assert single.n_tasks is None and single.inner.history is None
    with pytest.raises(ValueError, match="row\\(\\) needs a batched result"):
        single.row(0)
    with pytest.raises(ValueError, match="row\\(\\) needs a batched result"):
        single.linear.row(0)


def test_reptile_rows_have_no_linear_solve():
    stack, singles = _stack(n=2)
    theta = _theta(6, seed=2, n=2)
    res = reptile_direction(stack, theta, inner_steps=4)
    assert res.n_tasks == 2 and res.row(1).linear is None and res.row(1).inner.history is None
    alone = reptile_direction(singles[1], theta[1], inner_steps=4)
    assert np.array_equal(res.row(1).gradient, alone.gradient)
    assert res.row(1).system_residual == alone.system_residual


# -- defaults -------------------------------------------------------------------------------------

def test_defaults_keep_no_history_and_follow_appendix_f2():
    task = _task(dim=20, kappa=100.0, lam=2.0, seed=5)
    theta = _theta(20, seed=5)
    M, mv = _meta_system(task)
    grad = _quadratic_grad(np.arange(1.0, 5.0))
    assert cg(mv, theta).history is None
    assert gradient_descent(grad, np.ones(4), step_size=0.1, max_steps=2).history is None
    assert nesterov(grad, np.ones(4), step_size=0.1, momentum=0.5, max_steps=2).history is None
    assert inner_solve(task, theta, inner_steps=2).history is None
    for res in (imaml_meta_gradient(task, theta, inner_steps=2, cg_steps=2),
                fomaml_meta_gradient(task, theta, inner_steps=2),
                implicit_gradient_at(task, theta, inner_solve(task, theta, inner_steps=2),
                                     cg_steps=2)):
        assert res.inner.history is None and res.linear.history is None
    assert reptile_direction(task, theta, inner_steps=2).inner.history is None
    # iMAML-HF (Appendix F.2): 5 CG steps per Newton iteration (NEWTON_CG_STEPS), Newton-CG's
    # own default 3 iterations of 5 CG steps
    assert NEWTON_CG_STEPS == 5
    hf = inner_solve(task, theta, inner_steps=2, inner="newton_cg")
    assert hf.steps == 2 and hf.evaluations["hvp"] == 2 * 5
    diag = np.linspace(1.0, 1e4, 20)
    res = newton_cg(lambda x: 0.5 * np.sum(diag * x * x), lambda x: diag * x,
                    lambda x, v: diag * v, np.ones(20))
    assert res.steps == 3 and res.evaluations["hvp"] == 3 * 5 and res.history is None
    assert res.status is Status.MAX_STEPS


# -- tolerance-driven calls and the order of validation (solvers/imaml.py) ------------------------

class _Counting:
    """A task whose protocol calls are counted (to show validation comes before any work)."""

    def __init__(self, task):
        self.task, self.lam, self.calls = task, task.lam, 0

    def curvature_bounds(self):
        return self.task.curvature_bounds()

    def __getattr__(self, name):
        method = getattr(self.task, name)

        def counted(*args):
            self.calls += 1
            return method(*args)

        return counted


def test_tolerance_driven_calls_need_no_step_counts():
    task = _task(dim=8, kappa=30.0, lam=2.0, seed=6)
    theta = _theta(8, seed=6)
    res = imaml_meta_gradient(task, theta, inner_steps=None, cg_steps=None, inner_tol=1e-9,
                              cg_tol=1e-9)
    assert res.inner.status is Status.CONVERGED and res.stationarity <= 1e-9
    assert res.linear.status is Status.CONVERGED and res.linear.residual_norm <= 1e-9
    again = implicit_gradient_at(task, theta, res.inner, cg_steps=None, cg_tol=1e-9)
    assert np.array_equal(again.gradient, res.gradient)
    assert inner_solve(task, theta, inner_steps=None, atol=1e-9).status is Status.CONVERGED


@pytest.mark.parametrize("kw", [dict(cg_steps=None), dict(cg_steps=-1),
                                dict(cg_steps=-1, cg_tol=1e-6), dict(cg_steps=1.5, cg_tol=1e-6)])
def test_cg_steps_are_checked_before_any_work(kw):
    task = _Counting(_task(dim=5, seed=7))
    theta = _theta(5, seed=7)
    with pytest.raises(ValueError, match="cg_steps must be a non-negative integer"):
        imaml_meta_gradient(task, theta, inner_steps=3, **kw)
    assert task.calls == 0
    inner = inner_solve(task, theta, inner_steps=3)
    task.calls = 0
    with pytest.raises(ValueError, match="cg_steps must be a non-negative integer"):
        implicit_gradient_at(task, theta, inner, **kw)
    assert task.calls == 0


@pytest.mark.parametrize("kw", [dict(inner_steps=None), dict(inner_steps=-1, atol=1e-6),
                                dict(inner_steps=2.5, rtol=1e-3)])
def test_inner_steps_are_checked_before_any_work(kw):
    task = _Counting(_task(dim=5, seed=8))
    with pytest.raises(ValueError, match="inner_steps must be a non-negative integer"):
        inner_solve(task, _theta(5, seed=8), **kw)
    assert task.calls == 0


@pytest.mark.parametrize("which", ["atol", "rtol"])
def test_newton_cg_inner_solve_gives_half_the_tolerance_to_cg(which):
    """Tolerance-driven iMAML-HF: each inner CG runs until its residual is half the target
    (uncapped: 10·d), so on a quadratic one Newton iteration meets the target; the CG steps
    are exactly those of CG alone on the Newton system with half the tolerance."""
    task = _task(dim=20, kappa=100.0, lam=2.0, seed=9)
    theta = _theta(20, seed=9)
    lam = task.lam

    def hvp(v):
        return task.inner_hvp(theta, v) + lam * v

    g0 = task.inner_grad(theta) + lam * (theta - theta)
    r = np.asarray(cg(hvp, -g0, rtol=0.0, max_steps=20, history=True).history.residual_norms)
    k = 7
    # half of 2.4·r_k stops CG exactly at step k (no earlier residual is that small; twice
    # 2.4·r_k, or a third of it, would stop it elsewhere)
    assert r[:k].min() > 1.2 * r[k] and r[k - 1] <= 4.8 * r[k]
    target = 2.4 * r[k]
    kw = {"atol": target} if which == "atol" else {"rtol": target / np.linalg.norm(g0)}
    res = inner_solve(task, theta, inner_steps=None, inner="newton_cg", **kw)
    assert res.steps == 1 and res.status is Status.CONVERGED
    assert res.evaluations["hvp"] == k


# -- diagnostics against dense formulas (solvers/first_order.py, solvers/maml.py) ----------------

@pytest.mark.parametrize("method", ["reptile", "maml", "truncated"])
def test_diagnostics_against_dense_formulas(method):
    """stationarity ‖Aφ + b + λ(φ − θ)‖, the implicit system's residual
    ‖∇L(φ) − (I + A/λ)g‖ (g = λ(θ − φ) for Reptile) and ‖∇L(φ)‖, from the dense matrices."""
    from _tolerances import rounding_allowance

    task = _task(dim=6, kappa=30.0, lam=2.5, seed=10)
    theta = 3.0 * _theta(6, seed=10)
    if method == "reptile":
        res = reptile_direction(task, theta, inner_steps=3)
        g = task.lam * res.gradient
    elif method == "maml":
        res = maml_meta_gradient(task, theta, inner_steps=3)
        g = res.gradient
    else:
        res = truncated_meta_gradient(task, theta, inner_steps=3, backprop_steps=2)
        g = res.gradient
    A, b, Aq, bq, lam, phi = task.A, task.b, task.A_query, task.b_query, task.lam, res.phi
    outer = Aq @ phi + bq
    expected = {"stationarity": np.linalg.norm(A @ phi + b + lam * (phi - theta)),
                "system_residual": np.linalg.norm(outer - g - A @ g / lam),
                "outer_grad_norm": np.linalg.norm(outer)}
    scale = (np.linalg.norm(A, 2) + lam) * (np.linalg.norm(phi) + np.linalg.norm(theta)) \
        + np.linalg.norm(b) + np.linalg.norm(Aq, 2) * np.linalg.norm(phi) + np.linalg.norm(bq) \
        + (1 + np.linalg.norm(A, 2) / lam) * np.linalg.norm(g)
    for name, value in expected.items():
        got = getattr(res, name)
        assert abs(got - value) <= rounding_allowance("float64", kappa=1.0, scale=scale, dim=6), \
            (name, got, value)


# -- single-task and per-task arguments (solvers/maml.py, solvers/protocol.py) -------------------

def test_maml_refuses_a_stack_and_per_task_lam_needs_a_stack_of_theta():
    stack, _ = _stack(n=3, dim=3, lams=(1.0,))
    assert isinstance(stack.lam, float)
    with pytest.raises(ValueError, match="give a single task"):
        maml_meta_gradient(stack, np.ones(3), inner_steps=2)
    per_task, _ = _stack(n=3, dim=3)
    with pytest.raises(ValueError, match=r"task.lam has one value per task \(3\) but theta has "
                                         r"shape \(3,\)"):
        inner_solve(per_task, np.ones(3), inner_steps=2)

    class PerTaskLam:    # not marked batched, but λ per task: not one task either
        lam = np.array([1.0, 2.0])

        def __getattr__(self, name):
            return getattr(per_task, name)

    with pytest.raises(ValueError, match="give a single task"):
        maml_meta_gradient(PerTaskLam(), np.ones(3), inner_steps=2)


# -- Newton-CG (solvers/newton_cg.py) ---------------------------------------------------------------

def test_newton_cg_arguments():
    f, g, h = (lambda x: 0.5 * np.sum(x * x)), (lambda x: x), (lambda x, v: v)
    with pytest.raises(ValueError, match="no stopping rule for the inner CG: give cg_steps"):
        newton_cg(f, g, h, np.ones(3), cg_steps=None)
    for bad in (dict(armijo=0.0), dict(armijo=1.0), dict(armijo=1.5), dict(backtrack=0.0),
                dict(backtrack=1.0), dict(backtrack=1.5)):
        with pytest.raises(ValueError, match="need 0 < armijo < 1 and 0 < backtrack < 1"):
            newton_cg(f, g, h, np.ones(3), **bad)


@pytest.mark.parametrize("batched", [False, True])
def test_newton_cg_uncapped_cg_takes_ten_d_steps(batched):
    """With a CG tolerance and no cg_steps, each inner CG is capped at 10·d steps; an
    unreachable tolerance on an ill-conditioned system shows the cap."""
    diag = np.logspace(0, 8, 50)
    x0 = np.ones((2, 50)) if batched else np.ones(50)
    res = newton_cg(lambda x: 0.5 * np.sum(diag * x * x, axis=-1), lambda x: diag * x,
                    lambda x, v: diag * v, x0, max_steps=1, cg_steps=None, cg_atol=1e-300)
    assert res.evaluations["hvp"] == 500


def _line_functions(u, K, f0, bump, w, x0):
    """One coordinate per row: f(x) = x²/2 (x ≥ 0), K·x²/2 (x < 0) with its exact gradient,
    and a curvature model hvp(v) = v/u (so the Newton direction is −u·∇f). Where ``bump`` is
    set (not NaN), the objective's values are those of a function f cannot resolve: f0 at x0,
    f0 + bump elsewhere. Where ``w`` is set, the gradient at trial points is w."""
    def objective(x):
        true = 0.5 * np.where(x < 0, K, 1.0) * x * x
        noisy = np.where(x == x0, f0, f0 + bump)
        return np.sum(np.where(np.isnan(bump), true, noisy), axis=-1)

    def grad(x):
        exact = np.where(x < 0, K, 1.0) * x
        return np.where(~np.isnan(w) & (x != x0), w, exact)

    def hvp(x, v):
        return v / u

    return objective, grad, hvp


NAN = math.nan
A4 = 1e-4     # Armijo's constant (Nocedal & Wright's c₁), newton_cg's default
#: name: (u, K, f0, bump, w, accepted step t or None for a stall). From x0 = 1, ∇f = 1, the
#: trial points are 1 − t·u for t = 1, 1/2, 1/4, ...
LINE_SEARCHES = {
    # Armijo decides: s = t·u is accepted iff s ≤ 2(1 − c₁) = 1.9998 (f is a quadratic there)
    "armijo constant": (1.9997, 1.0, NAN, NAN, NAN, 1.0),     # c₁ = 2e-4 would reject it
    "armijo sign": (2.0001, 1.0, NAN, NAN, NAN, 0.5),         # f0 − c₁t·slope would take it
    "armijo slope": (1.9999 * 64, 1.0, NAN, NAN, NAN, 1 / 128),   # c₁t/slope would take 1/64
    # past the kink f rises steeply: Armijo takes s = 1.05 (x = −0.05) where the derivative
    # test would not, so a stricter Armijo test (c₁/t) would end elsewhere
    "armijo scale": (1.05 * 64, 100.0, NAN, NAN, NAN, 1 / 64),
    # f cannot resolve the decrease: within √eps·|f0| of f0 the derivative test decides
    "resolution boundary": (1.0, 1.0, 1.0, 2.0 ** -26, NAN, 1.0),
    "resolution scale": (1.0, 1.0, 1e4, 1e-6, NAN, 1.0),
    "derivative 2c1": (1.99975, 1.0, 1.0, 1e-9, NAN, 1.0),    # s ≤ 2 − 2c₁, not ≤ 2 − 3c₁
    "derivative 2c1-1": (2.5, 1.0, 1.0, 1e-9, NAN, 0.5),      # s ≤ 2 − 2c₁, not ≤ 3 − 2c₁
    "derivative equality": (1.0, 1.0, 1.0, 1e-9, 2 * A4 - 1, 1.0),   # ∇f(trial)·d = (2c₁−1)slope
    # a negative curvature model: CG breaks down at once, the direction is −∇f
    "fallback": (-1.0, 1.0, NAN, NAN, NAN, -1.0),
}


def _line_search(case, batched):
    u, K, f0, bump, w, _ = LINE_SEARCHES[case]
    params = [np.array([v]) for v in (u, K, f0, bump, w)]
    x0 = np.ones(1)
    if batched:     # row 1: an exact Newton step on x²/2 (accepted at t = 1, x = 0)
        params = [np.array([[p[0]], [b]]) for p, b in zip(params, (1.0, 1.0, NAN, NAN, NAN))]
        x0 = np.ones((2, 1))
    return _line_functions(*params, x0), x0


@pytest.mark.parametrize("case", sorted(LINE_SEARCHES))
def test_newton_cg_line_search_rule(case):
    """The step is the first t in 1, 1/2, 1/4, ... with f(x + td) ≤ f(x) + c₁t∇f·d (c₁ = 1e-4),
    or, where f(x + td) ≤ f(x) + √eps·|f(x)|, with ∇f(x + td)·d ≤ (2c₁ − 1)∇f·d; each row of
    a batch takes its own step and ends bitwise where it ends alone."""
    assert EPS ** 0.5 == 2.0 ** -26
    u, t = LINE_SEARCHES[case][0], LINE_SEARCHES[case][-1]
    (f, g, h), x0 = _line_search(case, batched=False)
    alone = newton_cg(f, g, h, x0, max_steps=1, cg_steps=1)
    expected = 1.0 - abs(t) * abs(u)
    assert alone.steps == 1
    assert abs(alone.x[0] - expected) <= 4 * EPS * abs(u), (alone.x[0], expected)
    (f, g, h), x0 = _line_search(case, batched=True)
    rows = newton_cg(f, g, h, x0, max_steps=1, cg_steps=1)
    assert rows.x[0, 0] == alone.x[0] and rows.x[1, 0] == 0.0


@pytest.mark.parametrize("batched", [False, True])
def test_newton_cg_stalls_after_max_backtracks(batched):
    """No step decreases f (it grows away from x0): 40 halvings, then STALLED at x0 (one value
    at x0 and one per trial); in a batch only that row stalls."""
    x0 = np.ones((2, 1)) if batched else np.ones(1)
    grows = np.array([[1.0], [0.0]]) if batched else np.ones(1)

    def objective(x):
        return np.sum(grows * np.abs(x - x0) + (1 - grows) * 0.5 * x * x, axis=-1)

    res = newton_cg(objective, lambda x: x, lambda x, v: v, x0, max_steps=5, cg_steps=1)
    assert res.status is Status.STALLED and res.x.reshape(-1)[0] == 1.0
    assert res.evaluations["objective"] == 1 + 40
    if batched:
        assert res.steps == 1 and res.x[1, 0] == 0.0
    else:
        assert res.steps == 0


@pytest.mark.parametrize("batched", [False, True])
def test_newton_cg_stops_at_its_tolerance(batched):
    """‖∇f‖ ≤ max(atol, rtol·‖∇f(x₀)‖) ends the run (≤: rtol = 1 stops at once); with rtol,
    each row's target is its own first gradient norm's (a row ends where it ends alone)."""
    D = np.array([1.0, 10.0, 100.0])
    x0 = np.array([[1.0, 1.0, 1.0], [1e-3, 2e-3, -1e-3]])

    def run(x, **kw):
        return newton_cg(lambda y: 0.5 * np.sum(D * y * y, axis=-1), lambda y: D * y,
                         lambda y, v: D * v, x, max_steps=60, cg_steps=1, history=True, **kw)

    start = x0 if batched else x0[0]
    first = run(start, rtol=1.0)
    assert (first.steps, first.status) == (0, Status.CONVERGED)
    if not batched:
        res = run(x0[0], rtol=1e-3)
        norms = np.asarray(res.history.residual_norms)
        target = 1e-3 * norms[0]
        assert res.status is Status.CONVERGED and norms[-1] <= target < norms[-2]
        return
    res = run(x0, rtol=1e-3)
    for i in range(2):
        alone = run(x0[i], rtol=1e-3)
        assert np.array_equal(res.x[i], alone.x)
    assert res.status is Status.CONVERGED
