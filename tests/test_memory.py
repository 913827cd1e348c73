"""The memory claim (docs/mathematics.md §8): bytes saved for backward, deterministic. MAML linear in K,
iMAML constant and no more than MAML's from K = 16 on (on the CPU and, when present, on CUDA
tensors); negative controls; bad input; the CUDA allocator's peak after a warm-up."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from solvers import imaml_meta_gradient, truncated_meta_gradient
from verify.checks.memory import (
    COMPARE_FROM_K,
    check_constant,
    check_linear_growth,
    check_not_above,
)
from verify.measure import SavedBytesMeter, cuda_peak_bytes, cuda_peak_figures, saved_bytes

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not CUDA, reason="no CUDA device on this machine")])]
LARGE_K = (COMPARE_FROM_K, 2 * COMPARE_FROM_K, 4 * COMPARE_FROM_K)


@pytest.mark.parametrize("dtype, itemsize", [("float64", 8), ("float32", 4)])
def test_generic_maml_saves_one_iterate_per_step(dtype, itemsize):
    """With the protocol backward, each step saves φₖ: exactly d·itemsize bytes per step."""
    by_K = {K: saved_bytes("maml", K, model="quadratic", backward="protocol", dtype=dtype)
            for K in (2, 4, 8)}
    assert by_K[4] - by_K[2] == 2 * 20 * itemsize
    assert by_K[8] - by_K[4] == 4 * 20 * itemsize
    assert all(r.passed for r in check_linear_growth(by_K))


@settings(max_examples=4)
@given(st.integers(0, 2**16), st.sampled_from(["logistic", "mlp"]))
def test_maml_linear_imaml_constant(seed, model):
    maml = {K: saved_bytes("maml", K, model=model, seed=seed) for K in (1, 3, 6)}
    imaml = {K: saved_bytes("imaml", K, model=model, seed=seed) for K in (1, 3, 6)}
    assert all(r.passed for r in check_linear_growth(maml))
    assert check_constant(imaml).passed
    assert imaml[6] < maml[6]


def test_measurement_is_deterministic():
    assert saved_bytes("maml", 5, model="mlp") == saved_bytes("maml", 5, model="mlp")


def test_imaml_holds_one_hvp_graph_on_a_network():
    """iMAML's peak equals the bytes of one Hessian-vector product (the HVP graphs are freed)."""
    from verify.measure import memory_task

    task, theta, _ = memory_task("mlp")
    with SavedBytesMeter() as meter:
        task.inner_hvp(theta, torch.ones_like(theta))
    assert meter.live == 0
    assert saved_bytes("imaml", 7, model="mlp") == meter.peak


def test_autograd_maml_on_a_quadratic_saves_only_A():
    """A finding, not a defect: with a φ-independent Hessian autograd saves A once (d² floats)."""
    by_K = {K: saved_bytes("maml", K, model="quadratic", backward="autograd") for K in (2, 20)}
    assert by_K[2] == by_K[20]
    assert 20 * 20 * 8 <= by_K[2] < 2 * 20 * 20 * 8   # A (d × d float64) is saved once


def test_checks_fail_on_planted_defects():
    """MAML's bytes are not constant; truncated backprop through 1 step does not grow."""
    maml = {K: saved_bytes("maml", K, model="mlp") for K in (2, 4)}
    assert not check_constant(maml).passed

    def truncated_one(task, theta, *, inner_steps, step_size=None):
        return truncated_meta_gradient(task, theta, inner_steps=inner_steps, backprop_steps=1,
                                       step_size=step_size)

    flat = {K: saved_bytes(truncated_one, K, model="mlp") for K in (2, 4, 8)}
    results = check_linear_growth(flat)
    assert results[0].passed and not results[1].passed
    bent = {2: 100, 4: 200, 8: 500}
    assert not check_linear_growth(bent)[0].passed


def _leaky_imaml(task, theta, *, inner_steps, step_size=None):
    """Planted defect: iMAML that keeps its inner loop differentiable (φ not detached) while it
    solves for the meta-gradient, as an implementation that forgot to detach would."""
    th = theta.clone().requires_grad_(True)
    phi = th
    for _ in range(inner_steps):
        phi = phi - step_size * (task.inner_grad(phi) + task.lam * (phi - th))
    res = imaml_meta_gradient(task, theta, inner_steps=inner_steps, cg_steps=5, inner="gd",
                              inner_step_size=step_size, on_breakdown="return")
    return res, phi


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_imaml_bytes_flat_and_not_above_maml_from_16_steps(device, dtype):
    """What the memory claim means, on the device's own tensors: iMAML's bytes held for the
    backward pass do not grow with K and are at most MAML's for K ≥ 16."""
    on = dict(model="mlp", device=device, dtype=dtype)
    imaml = {K: saved_bytes("imaml", K, **on) for K in LARGE_K}
    maml = {K: saved_bytes("maml", K, **on) for K in LARGE_K}
    assert check_constant(imaml).passed, imaml
    for K in LARGE_K:
        assert check_not_above(imaml[K], maml[K], K).passed, (K, imaml[K], maml[K])
    # negative control: an iMAML that holds its inner trajectory grows and exceeds MAML
    leaky = {K: saved_bytes(_leaky_imaml, K, **on) for K in LARGE_K}
    assert not check_constant(leaky).passed
    assert not any(check_not_above(leaky[K], maml[K], K).passed for K in LARGE_K)


def test_comparison_starts_at_16_steps():
    with pytest.raises(ValueError, match="inner_steps"):
        check_not_above(1, 2, COMPARE_FROM_K - 1)


def test_bad_input():
    with pytest.raises(ValueError, match="method"):
        saved_bytes("reptile", 3)
    with pytest.raises(ValueError, match="model"):
        saved_bytes("maml", 3, model="transformer")
    with pytest.raises(ValueError, match="inner_steps"):
        saved_bytes("maml", -1)



@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_cuda_allocator_peak_after_warmup():
    """The allocator's view, every method warmed up first: first-use allocations (cuBLAS
    workspace) are in the baseline, so iMAML's peak does not move with K while MAML's does.
    Without a warm-up the first measured call carries them (the defect this guards)."""
    fig = cuda_peak_figures((16, 64))
    assert fig["imaml"][64] - fig["imaml"][16] < (fig["maml"][64] - fig["maml"][16]) / 4
    assert fig["maml"][64] > 2 * fig["maml"][16]


def test_no_cuda_is_an_error_not_a_silent_zero():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda_peak_bytes("maml", 2)
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda_peak_figures((16,))
    assert np.isfinite(saved_bytes("maml", 2))
