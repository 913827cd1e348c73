"""Solver speed (`make bench`, never `make test`; pin BLAS threads: `OMP_NUM_THREADS=1 make
bench`): same-run ratios against a bare loop doing the same arithmetic, against NumPy's batched
exact solve, and against LAPACK's eigvalsh. The compared calls are timed in alternation
(medians over interleaved rounds), so a loaded machine slows both sides alike; the ratios go
to ``extra_info`` next to the targets. Correctness is asserted (each batched task within its
certificate, the certificate within ε), time is not.

Targets (d = 50, NumPy, one thread): a CG step and a Nesterov step within 3× of a bare loop;
200 tasks within 8× of NumPy's batched solve; construction at d = 1200 within 4× of two
eigvalsh calls; d = 5000 practical. On CUDA (skipped here without a GPU): batched CG bytes per
second against a sync-free loop and a device copy, and a small task's CG step against a plain
loop."""
from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest
import torch

from _timing import interleaved
from solvers import cg, count_host_reads, nesterov
from theory import QuadraticTask
from verify.accurate import accurate_meta_gradient
from verify.tasks import planted_spectrum_task, to_array

D, STEPS = 50, 200


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _machine():
    return {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def _bare_cg(matvec, rhs, steps):
    """CG's arithmetic and nothing else (no checks, no stopping test, no host reads)."""
    rows = (lambda a: a[..., None]) if rhs.ndim > 1 else (lambda a: a)
    dot = np.vecdot if isinstance(rhs, np.ndarray) else (lambda a, b: (a * b).sum(-1))
    x, r = rhs * 0, rhs
    p, rr = r, dot(r, r)
    for _ in range(steps):
        Mp = matvec(p)
        alpha = rows(rr / dot(p, Mp))
        x = x + alpha * p
        r = r - alpha * Mp
        rr_new = dot(r, r)
        p = r + rows(rr_new / rr) * p
        rr = rr_new
    return x


def _bare_nesterov(grad, x0, step, q, steps):
    x = y = x0
    for _ in range(steps):
        x_new = y - step * grad(y)
        y = x_new + q * (x_new - x)
        x = x_new
    return x


TARGET_PER_STEP = {"numpy": 3.0, "torch": None}


@pytest.mark.parametrize("array", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["cg", "nesterov"])
def test_per_step_overhead(benchmark, array, method):
    """One step of ours against a bare loop with the same callback (plain array arithmetic,
    d = 50, κ = 10): the ratio is the solver's own overhead (validation, stopping tests,
    host reads, bookkeeping)."""
    task, _ = planted_spectrum_task(D, 10.0, 1.0, seed=0, array=array)
    A, lam, rhs = task.A, task.lam, task.b
    beta, mu = task.curvature_bounds()
    q = (np.sqrt(beta / mu) - 1) / (np.sqrt(beta / mu) + 1)

    def matvec(v):
        return v + (v @ A) / lam

    def grad(p):
        return p @ A + task.b + lam * (p - rhs)

    if method == "cg":
        ours = lambda: cg(matvec, rhs, max_steps=STEPS, rtol=0.0, atol=0.0)  # noqa: E731
        bare = lambda: _bare_cg(matvec, rhs, STEPS)  # noqa: E731
    else:
        ours = lambda: nesterov(grad, rhs, step_size=1 / beta, momentum=q,  # noqa: E731
                                max_steps=STEPS)
        bare = lambda: _bare_nesterov(grad, rhs, 1 / beta, q, STEPS)  # noqa: E731
    assert ours().steps == STEPS
    t = interleaved({"ours": ours, "bare": bare}, rounds=31)
    benchmark.pedantic(ours, rounds=5, iterations=1)
    ratio = t["ours"] / t["bare"]
    target = TARGET_PER_STEP[array]
    benchmark.extra_info.update(
        method=method, array=array, dim=D, steps=STEPS, **_machine(),
        ours_us_per_step=1e6 * t["ours"] / STEPS, bare_us_per_step=1e6 * t["bare"] / STEPS,
        ratio=ratio, target=target, meets_target=None if target is None else ratio <= target)


def _stack(n, kappa):
    return QuadraticTask.stack([planted_spectrum_task(D, kappa, 1.0, seed=s,
                                                      query="independent")[0]
                                for s in range(n)])


@pytest.mark.parametrize("kappa", [10.0, 1000.0])
def test_batched_meta_gradients_vs_numpy_batched_solve(benchmark, kappa):
    """200 tasks of d = 50 at once, each to a certified ε = 1e-6·min‖g*‖
    (verify.accurate_meta_gradient on a stacked QuadraticTask, Newton-CG inner solver) against
    NumPy's batched exact solve of the same stack (`np.linalg.solve` on (200, 50, 50); also the
    exact meta-gradient by two such solves). Asserted: every task within its certificate and
    every certificate within ε."""
    n = 200
    stack = _stack(n, kappa)
    theta = np.random.default_rng(0).standard_normal((n, D))
    A, b, Aq, bq, eye = stack.A, stack.b, stack.A_query, stack.b_query, np.eye(D)

    def numpy_solve():
        return np.linalg.solve(A + eye, (theta - b)[..., None])

    def numpy_meta_gradient():
        C = A + eye
        phi = np.linalg.solve(C, (theta - b)[..., None])
        return np.linalg.solve(C, Aq @ phi + bq[..., None])[..., 0]

    exact = numpy_meta_gradient()
    eps = 1e-6 * float(np.linalg.norm(exact, axis=1).min())
    ours = lambda: accurate_meta_gradient(stack, theta, eps)  # noqa: E731
    out = ours()
    errors = np.linalg.norm(out.gradient - exact, axis=1)
    bounds_ = np.array([c.bound for c in out.certificate])
    assert np.all(bounds_ <= eps) and np.all(errors <= bounds_ + 1e-12 * np.abs(exact).max())
    t = interleaved({"ours": ours, "solve": numpy_solve, "meta": numpy_meta_gradient}, rounds=9)
    benchmark.pedantic(ours, rounds=3, iterations=1)
    benchmark.extra_info.update(
        n_tasks=n, dim=D, kappa=kappa, eps=eps, **_machine(), ours_ms=1e3 * t["ours"],
        numpy_solve_ms=1e3 * t["solve"], numpy_meta_gradient_ms=1e3 * t["meta"],
        ratio_to_solve=t["ours"] / t["solve"], ratio_to_meta_gradient=t["ours"] / t["meta"],
        target=8.0, meets_target=t["ours"] / t["solve"] <= 8.0,
        max_relative_error=float((errors / np.linalg.norm(exact, axis=1)).max()),
        max_certificate=float(bounds_.max()), inner_iterations=out.result.inner.steps,
        cg_steps=out.result.linear.steps)


@pytest.mark.parametrize("kappa", [10.0, 1e3, 1e6])
def test_accuracy_driven_inner_solvers(benchmark, kappa):
    """One task (d = 50) to a certified ε = 1e-6·‖g*‖ with each inner solver: the measurement
    behind verify.accurate.DEFAULT_INNER (Newton-CG)."""
    task, _ = planted_spectrum_task(D, kappa, 1.0, seed=0, query="independent")
    theta = np.random.default_rng(0).standard_normal(D)
    exact = task.meta_gradient(theta)
    eps = 1e-6 * float(np.linalg.norm(exact))
    runs = {inner: (lambda inner=inner: accurate_meta_gradient(task, theta, eps, inner=inner))
            for inner in ("newton_cg", "nesterov", "gd") if inner != "gd" or kappa <= 1e3}
    work = {}
    for inner, run in runs.items():
        out = run()
        assert out.bound <= eps and float(np.linalg.norm(out.gradient - exact)) <= out.bound
        work[inner] = dict(out.result.evaluations, inner_steps=out.result.inner.steps)
    t = interleaved(runs, rounds=5 if kappa < 1e6 else 3)
    benchmark.pedantic(runs["newton_cg"], rounds=3, iterations=1)
    benchmark.extra_info.update(dim=D, kappa=kappa, eps=eps, **_machine(),
                                ms={k: 1e3 * v for k, v in t.items()}, work=work,
                                nesterov_over_newton_cg=t["nesterov"] / t["newton_cg"])


def _formed(d, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (Q * np.linspace(0.0, 99.0, d)) @ Q.T, (Q * np.linspace(0.1, 1.0, d)) @ Q.T


def test_construction_vs_eigvalsh(benchmark):
    """QuadraticTask at d = 1200 (two matrices, as built, not symmetrized) against two
    eigvalsh calls on the same matrices."""
    d = 1200
    A, Aq = _formed(d)
    b = np.ones(d)
    construct = lambda: QuadraticTask(A, b, Aq, b, 1.0)  # noqa: E731
    t = interleaved({"construct": construct,
                     "eigvalsh": lambda: (np.linalg.eigvalsh(A), np.linalg.eigvalsh(Aq))},
                    rounds=3)
    benchmark.pedantic(construct, rounds=1, iterations=1)
    ratio = t["construct"] / t["eigvalsh"]
    benchmark.extra_info.update(dim=d, **_machine(), construct_s=t["construct"],
                                two_eigvalsh_s=t["eigvalsh"], ratio=ratio, target=4.0,
                                meets_target=ratio <= 4.0)


def test_construction_at_d5000(benchmark):
    """d = 5000 (200 MB per matrix): seconds, and the memory it allocates beyond the data,
    in units of one d×d float64 array (tracemalloc)."""
    d = 5000
    A, Aq = _formed(d)
    b = np.ones(d)
    tracemalloc.start()
    start = time.perf_counter()
    benchmark.pedantic(lambda: QuadraticTask(A, b, Aq, b, 1.0), rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    benchmark.extra_info.update(dim=d, **_machine(), seconds=seconds,
                                peak_extra_in_d2_arrays=peak / (8 * d * d))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_batched_cg_bandwidth(benchmark, dtype):  # pragma: no cover - needs a GPU
    """Batched CG (2048 × 512 float32, 1024 × 512 float64; 30 fixed steps) on CUDA: bytes per
    second of solvers.cg against a sync-free torch loop and a device copy of the matrices, in the
    same process (the matvec streams the matrix stack once per step)."""
    n = 2048 if dtype == "float32" else 1024
    d, steps = 512, 30
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    M = torch.randn(n, d, d, device=dev, dtype=getattr(torch, dtype), generator=g) / d ** 0.5
    M = M @ M.transpose(1, 2) + torch.eye(d, device=dev, dtype=M.dtype)
    rhs = torch.randn(n, d, device=dev, dtype=M.dtype, generator=g)

    def matvec(v):
        return (M @ v[..., None])[..., 0]

    def timed(fn, repeats=5):
        fn()
        torch.cuda.synchronize()
        out = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - start)
        return float(np.median(out))

    with count_host_reads() as reads:
        cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=steps)
    t_ours = timed(lambda: cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=steps))
    t_loop = timed(lambda: _bare_cg(matvec, rhs, steps))
    t_copy = timed(lambda: M.clone())
    bytes_per_run = steps * M.numel() * M.element_size()
    benchmark.pedantic(lambda: (cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=steps),
                                torch.cuda.synchronize()), rounds=3, iterations=1)
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name(), n_tasks=n, dim=d, dtype=dtype, steps=steps,
        host_reads=reads.count, ours_bytes_per_s=bytes_per_run / t_ours,
        loop_bytes_per_s=bytes_per_run / t_loop,
        copy_bytes_per_s=2 * M.numel() * M.element_size() / t_copy,
        fraction_of_loop=t_loop / t_ours, target_fraction_of_loop=0.85)


@pytest.mark.gpu
@CUDA
def test_cuda_small_task_cg_step(benchmark):  # pragma: no cover - needs a GPU
    """One small task (d = 50, float64) on CUDA: a CG step of ours against a plain loop."""
    task, _ = planted_spectrum_task(D, 10.0, 1.0, seed=0, array="torch", device="cuda")
    A, rhs = task.A, task.b

    def matvec(v):
        return v + v @ A

    t = {}
    for name, fn in (("ours", lambda: cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=STEPS)),
                     ("bare", lambda: _bare_cg(matvec, rhs, STEPS))):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        t[name] = (time.perf_counter() - start) / 5
    benchmark.pedantic(lambda: (cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=STEPS),
                                torch.cuda.synchronize()), rounds=3, iterations=1)
    benchmark.extra_info.update(device=torch.cuda.get_device_name(),
                                ours_us_per_step=1e6 * t["ours"] / STEPS,
                                bare_us_per_step=1e6 * t["bare"] / STEPS,
                                ratio=t["ours"] / t["bare"], target=2.0)


def test_torch_batched_cg_overhead(benchmark):
    """torch CPU per-step overhead of the batched masked path (200 × 50), reported."""
    stack = _stack(200, 10.0)
    A = torch.tensor(stack.A)   # a copy: the task's arrays are read-only
    rhs = torch.as_tensor(to_array(np.random.default_rng(1).standard_normal((200, D))))

    def matvec(v):
        return v + (v[:, None, :] @ A)[:, 0, :]

    ours = lambda: cg(matvec, rhs, rtol=0.0, atol=0.0, max_steps=40)  # noqa: E731
    bare = lambda: _bare_cg(matvec, rhs, 40)  # noqa: E731
    t = interleaved({"ours": ours, "bare": bare}, rounds=9)
    benchmark.pedantic(ours, rounds=3, iterations=1)
    benchmark.extra_info.update(n_tasks=200, dim=D, **_machine(),
                                ours_us_per_step=1e6 * t["ours"] / 40,
                                bare_us_per_step=1e6 * t["bare"] / 40,
                                ratio=t["ours"] / t["bare"])
