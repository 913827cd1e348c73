"""Assumption 1, time half (`make bench`, not `make test`): time of one Hessian-vector product
(double backward) against one gradient of L̂, for an MLP and the paper's 4-layer conv net
(64 filters, 28×28, 5-way 1-shot), on CPU and on CUDA when present. The ratio goes to
``extra_info`` (``hvp_over_gradient``) with the deterministic memory ratio beside it; nothing
about time is asserted (it is machine-dependent)."""
from __future__ import annotations

import time

import pytest
import torch

from verify.measure import hvp_memory_ratio, model_task

DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
               not torch.cuda.is_available(), reason="no CUDA device on this machine")])]
NETWORKS = [pytest.param("mlp", {}, id="mlp"), pytest.param("conv4", {"filters": 64}, id="conv4")]


def _median_seconds(fn, device, repeats=15):
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("network, kwargs", NETWORKS)
def test_hvp_vs_gradient_time(benchmark, network, kwargs, device):
    task, phi, v = model_task(network, device=device, **kwargs)
    grad = lambda: task.inner_grad(phi)          # noqa: E731
    hvp = lambda: task.inner_hvp(phi, v)          # noqa: E731
    for _ in range(3):                            # warm-up (allocator, kernels)
        grad(), hvp()
    grad_s = _median_seconds(grad, device)
    benchmark.pedantic(hvp, rounds=15, iterations=1, warmup_rounds=1)
    hvp_s = benchmark.stats.stats.median
    mem = hvp_memory_ratio(network, device=device, **kwargs)
    benchmark.extra_info.update({
        "network": network, "device": device, "threads": torch.get_num_threads(),
        "gradient_median_s": grad_s, "hvp_median_s": hvp_s, "hvp_over_gradient": hvp_s / grad_s,
        "hvp_over_gradient_memory": mem["ratio"], "parameters": mem["parameters"],
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu"})
