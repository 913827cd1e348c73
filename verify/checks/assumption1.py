"""Assumption 1 (docs/mathematics.md §8): a Hessian-vector product by reverse mode costs at most a small
constant (about 5) times one gradient in time and at most 2 times in memory.

Memory is measured here, deterministically, as the peak bytes saved for backward
(:func:`verify.measure.hvp_memory_ratio`) while computing one gradient of L̂ and one
Hessian-vector product (double backward, ``verify.models.ModelTask.inner_hvp``), for a small
MLP and for the paper's 4-layer convolutional network (64 filters 3×3, batch norm, ReLU, 2×2
max-pool; 5-way 1-shot Omniglot-sized inputs, 28×28). Time is measured only in
``benchmarks/test_assumption1.py`` (pytest-benchmark), never asserted in tests."""
from __future__ import annotations


from verify.checks._result import compare
from verify.measure import hvp_memory_ratio
from verify.registry import claim

__all__ = ["check_memory_ratio", "MEMORY_FACTOR"]

SECTION = "§8 (Assumption 1)"
MEMORY_FACTOR = 2.0  #: Assumption 1: an HVP needs at most 2× the memory of a gradient


def check_memory_ratio(numbers: dict, *, factor=MEMORY_FACTOR, instance=None):
    """HVP bytes ≤ ``factor`` × gradient bytes (Assumption 1's memory half)."""
    return compare("assumption1-memory", SECTION,
                   f"bytes saved for one HVP ≤ {factor:g} × bytes saved for one gradient",
                   numbers["hvp_bytes"], factor * numbers["gradient_bytes"], instance=instance,
                   details=dict(numbers))


@claim("assumption1-memory", title="Assumption 1: HVP memory ≤ 2 × gradient memory", section=SECTION,
       statement="peak bytes saved for backward by one Hessian-vector product (double backward) "
       "are at most twice those of one gradient (MLP; the paper's 4-layer conv net)",
       loose="the time half (HVP ≤ ~5 gradients) is machine-dependent and is measured only in "
       "benchmarks/test_assumption1.py")
def run(ctx):
    out = []
    configs = [("mlp", {}), ("conv4", {"filters": 16 if ctx.quick else 64})]
    for network, kw in configs:
        nums = hvp_memory_ratio(network, seed=ctx.seed, device=ctx.device, **kw)
        out.append(check_memory_ratio(nums, instance=dict(network=network, device=ctx.device,
                                                          seed=ctx.seed, **kw)))
    return out


