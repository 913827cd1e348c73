"""Hypothesis profiles (registered once, here) and the array back-ends every test runs on."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


CUDA = _cuda_available()
BACKENDS = [
    pytest.param(("numpy", "cpu"), id="numpy"),
    pytest.param(("torch", "cpu"), id="torch-cpu"),
    pytest.param(("torch", "cuda"), id="torch-cuda",
                 marks=[pytest.mark.gpu,
                        pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")]),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """(array library, device) pairs: NumPy, torch on CPU, torch on CUDA when present."""
    return request.param
