"""Assumption 1 (docs/mathematics.md §8): a Hessian-vector product by reverse mode costs at most a small
constant (about 5) times one gradient in time and at most 2 times in memory.

Memory is measured here, deterministically, as the peak bytes saved for backward
(:class:`verify.measure.SavedBytesMeter`) while computing one gradient of L̂ and one
Hessian-vector product (double backward, ``verify.models.ModelTask.inner_hvp``), for a small
MLP and for the paper's 4-layer convolutional network (64 filters 3×3, batch norm, ReLU, 2×2
max-pool; 5-way 1-shot Omniglot-sized inputs, 28×28). Time is measured only in
``benchmarks/test_assumption1.py`` (pytest-benchmark), never asserted in tests."""
from __future__ import annotations


from verify.checks._result import compare
from verify.measure import SavedBytesMeter
from verify.registry import claim

__all__ = ["model_task", "hvp_memory_ratio", "check_memory_ratio", "NETWORKS", "MEMORY_FACTOR"]

SECTION = "§8 (Assumption 1)"
NETWORKS = ("mlp", "conv4")
MEMORY_FACTOR = 2.0  #: Assumption 1: an HVP needs at most 2× the memory of a gradient


def model_task(network="mlp", *, seed=0, dtype="float32", device="cpu", filters=64, n_way=5,
               shots=1):
    """(ModelTask, φ, v) for ``network``: 'mlp' (1→40→40→1, sinusoid regression, 10 points)
    or 'conv4' (verify.models.ConvNet with ``filters`` filters, 4 layers, 28×28 inputs,
    ``n_way``-way ``shots``-shot support and query sets of random images)."""
    import torch

    from verify.models import MLP, ConvNet, ModelTask, flat_parameters

    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)
    if network == "mlp":
        net = MLP(1, 1, (40, 40))
        x = torch.linspace(-5, 5, 20, dtype=tdtype, device=device)[:, None]
        y = torch.sin(x)
        task = ModelTask(net, x[::2], y[::2], x[1::2], y[1::2], lam=1.0, loss="mse")
    elif network == "conv4":
        net = ConvNet(n_way, filters=filters, layers=4, image_size=28)
        n = n_way * shots
        xs = torch.rand(n, 1, 28, 28, dtype=tdtype, device=device)
        xq = torch.rand(n, 1, 28, 28, dtype=tdtype, device=device)
        labels = torch.arange(n_way, device=device).repeat(shots)
        task = ModelTask(net.to(device), xs, labels, xq, labels, lam=1.0, loss="cross_entropy")
    else:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    phi = flat_parameters(net, dtype=tdtype, device=device)
    v = torch.randn(phi.shape, dtype=tdtype, device=device)
    return task, phi, v


def hvp_memory_ratio(network="mlp", **kwargs) -> dict:
    """Peak saved bytes of one HVP, of one gradient, and their ratio (deterministic)."""
    task, phi, v = model_task(network, **kwargs)
    with SavedBytesMeter() as grad_meter:
        task.inner_grad(phi)
    with SavedBytesMeter() as hvp_meter:
        task.inner_hvp(phi, v)
    return {"gradient_bytes": grad_meter.peak, "hvp_bytes": hvp_meter.peak,
            "ratio": hvp_meter.peak / grad_meter.peak, "parameters": int(phi.numel()),
            "parameter_bytes": int(phi.numel() * phi.element_size())}


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


