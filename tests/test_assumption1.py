"""Assumption 1, memory half (docs/mathematics.md §8): bytes saved by one HVP against one gradient, for an MLP
and the paper's 4-layer conv net (deterministic; time is in benchmarks/test_assumption1.py)."""
from __future__ import annotations

import pytest

from verify.checks.assumption1 import MEMORY_FACTOR, check_memory_ratio
from verify.measure import hvp_memory_ratio, model_task


@pytest.mark.parametrize("network, kwargs", [("mlp", {}), ("conv4", {"filters": 8}),
                                             ("conv4", {"filters": 16, "shots": 2})])
def test_hvp_memory_at_most_twice_a_gradient(network, kwargs):
    nums = hvp_memory_ratio(network, **kwargs)
    assert nums["gradient_bytes"] > nums["parameter_bytes"] > 0
    assert nums["hvp_bytes"] > nums["gradient_bytes"]      # double backward saves more
    r = check_memory_ratio(nums)
    assert r.passed, r
    assert r.ratio == pytest.approx(nums["ratio"] / MEMORY_FACTOR)


def test_paper_conv4_ratio():
    """The paper's network: 64 filters, 4 blocks, 28×28 inputs, 5-way 1-shot."""
    nums = hvp_memory_ratio("conv4", filters=64)
    assert nums["parameters"] == 112_261
    assert check_memory_ratio(nums).passed


def test_ratio_is_deterministic():
    assert hvp_memory_ratio("conv4", filters=8) == hvp_memory_ratio("conv4", filters=8)


def test_check_fails_on_planted_defect():
    """Claiming an HVP costs no more memory than a gradient (factor 1) is false and is caught."""
    nums = hvp_memory_ratio("mlp")
    assert not check_memory_ratio(nums, factor=1.0).passed


def test_bad_input():
    with pytest.raises(ValueError, match="network"):
        model_task("resnet")
