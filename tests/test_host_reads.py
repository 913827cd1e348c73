"""CG at the hardware's pace: the exit test read back every few steps (on a device) gives the
SAME run as reading it every step (same iterate, same steps per row, same status), and the
number of device→host reads is deterministic (every read goes through solvers' one counted
function). On this CPU-only machine the device policy is exercised by forcing ``check_every``;
the gpu-marked tests repeat it on CUDA where present."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from _tolerances import relative_tolerance, to_numpy64
from solvers import NonFiniteIterate, SolverBreakdown, Status, cg, count_host_reads
from verify.strategies import seeds, task_specs
from verify.tasks import planted_spectrum_task, to_array

ARRAYS = ["numpy", "torch"]


def _stack(spec_kwargs, n, seed, array, dtype="float64"):
    """n SPD systems M_i = I + A_i/λ (their own spectra), a batched matvec, right-hand sides of
    very different sizes (rows converge at different steps) with one zero row."""
    mats = []
    for i in range(n):
        task, _ = planted_spectrum_task(**{**spec_kwargs, "seed": spec_kwargs["seed"] + i})
        mats.append(np.eye(task.dim) + task.A / task.lam)
    rng = np.random.default_rng(seed)
    rhs = rng.standard_normal((n, spec_kwargs["dim"])) * 10.0 ** rng.uniform(-3, 3, (n, 1))
    rhs[0] = 0.0
    M = to_array(np.stack(mats), array=array, dtype=dtype)
    rhs = to_array(rhs, array=array, dtype=dtype)
    return (lambda v: (M @ v[..., None])[..., 0]), rhs, M


def same_run(a, b, what):
    """Bitwise the same result: iterate, steps (per row), status (per row), residual norms."""
    assert (a.steps, a.status) == (b.steps, b.status), what
    assert np.array_equal(to_numpy64(a.x), to_numpy64(b.x)), what
    assert np.array_equal(to_numpy64(a.residual_norm), to_numpy64(b.residual_norm)), what
    if a.row_steps is not None or b.row_steps is not None:
        assert np.array_equal(a.row_steps, b.row_steps) and a.row_status == b.row_status, what


@pytest.mark.parametrize("array", ARRAYS)
@given(spec_kwargs=task_specs(max_dim=10), n=st.integers(1, 5), seed=seeds,
       rtol=st.sampled_from([0.0, 1e-3, 1e-9]), every=st.integers(2, 9))
def test_reading_every_few_steps_is_the_same_run(array, spec_kwargs, n, seed, rtol, every):
    matvec, rhs, M = _stack(spec_kwargs, n, seed, array)
    kw = dict(rtol=rtol, atol=0.0, max_steps=3 * spec_kwargs["dim"])
    each = cg(matvec, rhs, **kw)
    assert each.row_status is not None and len(each.row_status) == n
    for k in (every, 10 ** 6):
        same_run(each, cg(matvec, rhs, check_every=k, **kw), f"check_every={k}")
    # one row alone (a vector: the unmasked path) is that row of the batch, bitwise
    i = n - 1

    def row(v):
        return (M[i:i + 1] @ v[None, :, None])[0, :, 0]

    alone = cg(row, rhs[i], **kw)
    assert np.array_equal(to_numpy64(alone.x), to_numpy64(each.x[i]))
    assert alone.steps == each.row_steps[i] and alone.status is each.row_status[i]
    same_run(alone, cg(row, rhs[i], check_every=every, **kw), "vector")


@pytest.mark.parametrize("array", ARRAYS)
def test_host_reads_are_counted_and_deterministic(array):
    """Fixed steps (rtol = atol = 0) read once, at the end; a tolerance-driven run reads at
    every check until no row is live, then once more for the results."""
    matvec, rhs, M = _stack(dict(dim=8, kappa=50.0, lam=1.0, seed=3), 4, 0, array)
    with count_host_reads() as reads:
        fixed = cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=6, check_every=10 ** 6)
    assert reads.count == 1 and fixed.steps == 6
    with count_host_reads() as reads:
        vector = cg(lambda v: M[1] @ v, rhs[1], rtol=0.0, atol=0.0, max_steps=6, check_every=6)
    assert reads.count == 1 and vector.steps == 6 and isinstance(vector.residual_norm, float)
    for every in (1, 2, 5):
        with count_host_reads() as reads:
            res = cg(matvec, rhs, rtol=1e-8, check_every=every)
        assert res.status is Status.CONVERGED and res.steps > 0
        first_idle_check = -(-res.steps // every)   # ⌈steps / every⌉-th check finds no live row
        assert reads.count == first_idle_check + (every == 1) + 1
        with count_host_reads() as again:
            cg(matvec, rhs, rtol=1e-8, check_every=every)
        assert again.count == reads.count


@pytest.mark.parametrize("array", ARRAYS)
@pytest.mark.parametrize("every", [1, 4])
def test_breakdown_freezes_only_its_row(array, every):
    """A batch with one indefinite row: with on_breakdown='return' that row stops (status
    BREAKDOWN) at its last iterate and the others end exactly as they would alone; 'raise'
    raises, at the step of the breakdown, whenever the exit test is read."""
    matvec, rhs, M = _stack(dict(dim=6, kappa=20.0, lam=1.0, seed=1), 3, 2, array)
    M_np = to_numpy64(M)
    M_np[2] = np.diag([1.0, 2.0, -1.0, 3.0, 1.5, 2.5])
    M2 = to_array(M_np, array=array)
    rhs_np = to_numpy64(rhs)
    rhs_np[2] = [1.0, 1.0, 0.3, 0.0, 0.0, 0.0]
    rhs2 = to_array(rhs_np, array=array)

    def mv(v):
        return (M2 @ v[..., None])[..., 0]

    res = cg(mv, rhs2, rtol=1e-10, max_steps=30, on_breakdown="return", check_every=every)
    assert res.status is Status.BREAKDOWN
    assert res.row_status[2] is Status.BREAKDOWN and res.row_steps[2] >= 1
    assert res.row_status[:2] == (Status.CONVERGED, Status.CONVERGED)
    for i in (0, 1):
        alone = cg(lambda v, i=i: (M2[i:i + 1] @ v[None, :, None])[0, :, 0], rhs2[i],
                   rtol=1e-10, max_steps=30)
        assert alone.steps == res.row_steps[i]
        np.testing.assert_allclose(to_numpy64(alone.x), to_numpy64(res.x[i]), rtol=0,
                                   atol=relative_tolerance("float64", kappa=20.0, dim=6))
    with pytest.raises(SolverBreakdown, match=f"at step {res.row_steps[2]}: matvec is not positive"):
        cg(mv, rhs2, rtol=1e-10, max_steps=30, check_every=every)


@pytest.mark.parametrize("array", ARRAYS)
@pytest.mark.parametrize("every", [1, 3, 10 ** 6])
def test_non_finite_output_is_caught_from_norms(array, every):
    """A matvec that returns NaN from its third call on: caught from pMp (no array scan per
    step) whatever the reading interval, never returned."""
    calls = []
    diagonal = to_array(np.arange(1.0, 7.0), array=array)   # 6 distinct eigenvalues

    def poisoned(v):
        calls.append(1)
        return v * float("nan") if len(calls) >= 3 else diagonal * v

    rhs = to_array(np.ones((2, 6)) * np.array([[1.0], [3.0]]), array=array)
    with pytest.raises(NonFiniteIterate, match="NaN or Inf at step 2"):
        cg(poisoned, rhs, rtol=0.0, atol=0.0, max_steps=5, check_every=every)
    calls.clear()
    with pytest.raises(NonFiniteIterate, match="NaN or Inf at step 2"):
        cg(poisoned, rhs[0], rtol=0.0, atol=0.0, max_steps=5, check_every=every)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_fixed_step_cg_reads_once():  # pragma: no cover - exercised on GPU machines
    """On CUDA the default policy: a fixed-step run reads once; a tolerance-driven one every
    DEVICE_CHECK_EVERY steps; both the same run as reading every step."""
    _, rhs, M = _stack(dict(dim=16, kappa=100.0, lam=1.0, seed=0), 64, 1, "torch")
    rhs, M = rhs.cuda(), M.cuda()

    def mv(v):
        return (M @ v[..., None])[..., 0]

    with count_host_reads() as reads:
        fixed = cg(mv, rhs, rtol=0.0, atol=0.0, max_steps=30)
    assert reads.count == 1
    same_run(fixed, cg(mv, rhs, rtol=0.0, atol=0.0, max_steps=30, check_every=1), "cuda")
    same_run(cg(mv, rhs, rtol=1e-6), cg(mv, rhs, rtol=1e-6, check_every=1), "cuda tolerance")


def test_stopping_and_finiteness_tests_save_nothing_for_autograd():
    """The solvers' own reads (gradient norms, finiteness) are taken on detached values: on
    input that requires grad they add nothing to what autograd saves. MAML through K steps
    saves exactly one φ per step (the protocol node's input); gradient descent differentiated
    by autograd saves what a bare loop with the same arithmetic saves."""
    from solvers import gradient_descent, maml_meta_gradient
    from verify.measure import SavedBytesMeter

    task, spec = planted_spectrum_task(20, 10.0, 1.0, seed=0, query="independent",
                                       array="torch")
    numpy_task, _ = planted_spectrum_task(20, 10.0, 1.0, seed=0, query="independent")
    theta = torch.linspace(-1, 1, 20, dtype=torch.float64)
    for K in (5, 10):
        with SavedBytesMeter() as meter:
            maml_meta_gradient(numpy_task, theta.numpy(), inner_steps=K, backward="protocol")
        assert meter.peak == K * 20 * 8

    def packs(run):
        count = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.append(1) or t,
                                                      lambda t: t):
            run()
        return len(count)

    step = 1.0 / task.curvature_bounds()[0]
    th = theta.clone().requires_grad_(True)

    def grad(p):
        return task.inner_grad(p) + task.lam * (p - th)

    def bare():
        x = th
        for _ in range(8):
            x = x - step * grad(x)
        return x

    one_gradient = packs(lambda: grad(th))
    # the same saves as the bare loop, plus those of the final gradient (for residual_norm)
    assert packs(lambda: gradient_descent(grad, th, step_size=step, max_steps=8)) == \
        packs(bare) + one_gradient


def test_one_transfer_of_several_tensors():
    """The device branch of solvers' host read (several tensors in one copy), exercised on CPU
    tensors: values, shapes and kinds come back exactly."""
    from solvers._common import _one_transfer, to_host

    parts = [torch.tensor(2.5, dtype=torch.float32), torch.tensor([True, False]),
             torch.arange(3, dtype=torch.int64), torch.ones((2, 2), dtype=torch.float64) / 3]
    got = _one_transfer(parts)
    assert got[0] == 2.5 and isinstance(got[0], float)
    assert got[1].tolist() == [1.0, 0.0] and got[2].tolist() == [0.0, 1.0, 2.0]
    assert got[3].shape == (2, 2) and np.array_equal(got[3], np.full((2, 2), 1 / 3))
    assert [np.asarray(v).tolist() for v in to_host(*parts)] == [
        np.asarray(v).tolist() for v in got]
