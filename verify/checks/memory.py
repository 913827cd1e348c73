"""The memory claim (SPEC §8): MAML's meta-gradient needs memory linear in the number of inner
steps K, iMAML's the memory of one gradient of L̂, independent of K.

Measured deterministically as the peak number of bytes held by tensors that autograd saves for
a backward pass (``torch.autograd.graph.saved_tensors_hooks``): each saved tensor is counted by
its storage, once however many graph nodes save it, from when it is saved until the last node
holding it is freed. Parameters and data saved by the graph count too (they are part of what
the backward pass keeps alive). On CUDA, ``peak_cuda_bytes`` also reports
``torch.cuda.max_memory_allocated`` around the same call."""
from __future__ import annotations

import math

import numpy as np

from solvers import imaml_meta_gradient, maml_meta_gradient
from verify.checks._families import logistic_task
from verify.checks._result import compare
from verify.registry import claim
from verify.tasks import planted_spectrum_task, to_array

__all__ = ["SavedBytesMeter", "saved_bytes", "peak_cuda_bytes", "memory_task", "METHODS",
           "MODELS", "check_linear_growth", "check_constant"]

SPEC = "SPEC §8"
METHODS = ("maml", "imaml")
MODELS = ("quadratic", "logistic", "mlp")


class SavedBytesMeter:
    """Context manager: peak bytes of live tensors saved for backward while it is active.
    ``peak`` (bytes), ``packs`` (number of saves), ``live`` (bytes still saved at exit)."""

    def __init__(self):
        self._count, self._size = {}, {}
        self.live = self.peak = self.packs = 0
        self._ctx = None

    def _pack(self, t):
        storage = t.untyped_storage()
        key = (storage.data_ptr(), str(t.device))
        self.packs += 1
        if self._count.get(key, 0) == 0:
            self._size[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._count[key] = self._count.get(key, 0) + 1
        return _Saved(self, key, t)

    @staticmethod
    def _unpack(saved):
        return saved.tensor

    def _release(self, key):
        self._count[key] -= 1
        if self._count[key] == 0:
            self.live -= self._size[key]

    def __enter__(self):
        import torch

        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False


class _Saved:
    __slots__ = ("meter", "key", "tensor")

    def __init__(self, meter, key, tensor):
        self.meter, self.key, self.tensor = meter, key, tensor

    def __del__(self):
        self.meter._release(self.key)


def memory_task(model="quadratic", *, seed=0, dtype="float64", device="cpu", dim=20, lam=None):
    """(task, theta, solver options) for the memory measurements: a torch quadratic task
    (planted, d = ``dim``), a torch logistic task (n = 50, d = ``dim``), or an MLP 1→40→40→1 on
    sinusoid regression (10 support, 10 query points) as a ``verify.models.ModelTask``."""
    import torch

    rng = np.random.default_rng(seed)
    if model == "quadratic":
        task, _ = planted_spectrum_task(dim, 10.0, lam or 1.0, seed=seed, query="independent",
                                        array="torch", dtype=dtype, device=device)
        return task, to_array(rng.standard_normal(dim), array="torch", dtype=dtype,
                              device=device), {}
    if model == "logistic":
        task, _ = logistic_task(50, dim, lam or 0.1, seed=seed, array="torch", dtype=dtype,
                                device=device)
        return task, to_array(rng.standard_normal(dim), array="torch", dtype=dtype,
                              device=device), {}
    if model == "mlp":
        from verify.models import MLP, ModelTask, flat_parameters

        torch.manual_seed(seed)
        net = MLP(1, 1, (40, 40))
        tdtype = getattr(torch, dtype)
        amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0, math.pi)
        xs = rng.uniform(-5, 5, (20, 1))
        x = torch.as_tensor(xs, dtype=tdtype, device=device)
        y = amp * torch.sin(x + phase)
        task = ModelTask(net, x[:10], y[:10], x[10:], y[10:], lam=lam or 10.0, loss="mse")
        theta = flat_parameters(net, dtype=tdtype, device=device)
        return task, theta, {"step_size": 1e-3}
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def _run(method, task, theta, K, opts, backward):
    if method == "maml":
        return maml_meta_gradient(task, theta, inner_steps=K, step_size=opts.get("step_size"),
                                  backward=backward)
    if method == "imaml":
        step = opts.get("step_size")
        return imaml_meta_gradient(task, theta, inner_steps=K, cg_steps=5, inner="gd",
                                   inner_step_size=step, on_breakdown="return")
    if callable(method):  # a planted alternative (negative controls)
        return method(task, theta, inner_steps=K, **opts)
    raise ValueError(f"method must be one of {METHODS} or a callable, got {method!r}")


def saved_bytes(method, inner_steps, *, model="quadratic", backward="auto", seed=0,
                dtype="float64", device="cpu") -> int:
    """Peak bytes saved for backward while computing one meta-gradient with ``method``
    ('maml': backprop through ``inner_steps`` GD steps; 'imaml': ``inner_steps`` GD steps then
    5 CG steps) on ``model`` ('quadratic', 'logistic', 'mlp'; see :func:`memory_task`).
    Deterministic. ``backward`` is MAML's ('auto'/'autograd'/'protocol').

    >>> saved_bytes("imaml", 100, model="mlp") == saved_bytes("imaml", 10, model="mlp")
    True
    """
    task, theta, opts = memory_task(model, seed=seed, dtype=dtype, device=device)
    with SavedBytesMeter() as meter:
        _run(method, task, theta, int(inner_steps), opts, backward)
    return meter.peak


def peak_cuda_bytes(method, inner_steps, *, model="mlp", seed=0, dtype="float32",
                    backward="auto") -> int:
    """torch.cuda.max_memory_allocated during one meta-gradient (as in :func:`saved_bytes`, on
    CUDA), above what was allocated before it (``verify.fewshot.memory.peak_cuda_bytes``).
    Raises RuntimeError without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("peak_cuda_bytes needs a CUDA device")
    from verify.fewshot.memory import peak_cuda_bytes as measure

    task, theta, opts = memory_task(model, seed=seed, dtype=dtype, device="cuda")
    peak, _ = measure(lambda: _run(method, task, theta, int(inner_steps), opts, backward), "cuda")
    return peak


def check_linear_growth(bytes_by_K: dict, *, instance=None):
    """MAML: bytes(K) is exactly affine in K with a positive slope. Two CheckResults: the
    largest deviation from the line through the first two points (must be 0 bytes), and the
    slope (must be > 0)."""
    Ks = sorted(bytes_by_K)
    k0, k1 = Ks[0], Ks[1]
    slope = (bytes_by_K[k1] - bytes_by_K[k0]) / (k1 - k0)
    dev = max(abs(bytes_by_K[k] - (bytes_by_K[k0] + slope * (k - k0))) for k in Ks)
    details = {"bytes": {int(k): int(v) for k, v in bytes_by_K.items()}, "bytes_per_step": slope}
    return [compare("memory", SPEC, "MAML's saved bytes are affine in K (deviation in bytes)",
                    dev, 0.0, instance=instance, details=details),
            compare("memory", SPEC, "MAML's saved bytes grow with K (bytes per inner step > 0)",
                    slope, 0.0, relation=">", instance=instance, details=details)]


def check_constant(bytes_by_K: dict, *, instance=None):
    """iMAML: bytes(K) does not depend on K (largest deviation from bytes(K₀), in bytes)."""
    Ks = sorted(bytes_by_K)
    dev = max(abs(bytes_by_K[k] - bytes_by_K[Ks[0]]) for k in Ks)
    return compare("memory", SPEC, "iMAML's saved bytes do not depend on K (deviation in bytes)",
                   dev, 0.0, instance=instance,
                   details={"bytes": {int(k): int(v) for k, v in bytes_by_K.items()}})


@claim("memory", title="Memory: MAML linear in K, iMAML constant", spec=SPEC,
       statement="bytes saved for backward: MAML's grow linearly with the number of inner steps, "
       "iMAML's do not depend on it (quadratic, logistic, MLP; deterministic byte counts)",
       loose="on a quadratic task torch autograd's MAML saves only A (the Hessian does not "
       "depend on φ), so its bytes are constant; the linear growth is for a generic task "
       "(backward='protocol' saves φₖ each step) and for curved ones (logistic, networks)")
def run(ctx):
    Ks = (5, 10, 20) if ctx.quick else (5, 10, 20, 40, 100)
    out = []
    cases = [("quadratic", "protocol"), ("logistic", "auto"), ("mlp", "auto")]
    for model, backward in cases:
        inst = dict(model=model, backward=backward, seed=ctx.seed)
        maml = {K: saved_bytes("maml", K, model=model, backward=backward, seed=ctx.seed) for K in Ks}
        imaml = {K: saved_bytes("imaml", K, model=model, seed=ctx.seed) for K in Ks}
        out += check_linear_growth(maml, instance=dict(inst, method="maml"))
        out.append(check_constant(imaml, instance=dict(inst, method="imaml")))
    # reported, not a growth check: autograd's MAML on a quadratic (constant, see `loose`)
    quad = {K: saved_bytes("maml", K, model="quadratic", backward="autograd", seed=ctx.seed)
            for K in Ks}
    out.append(check_constant(quad, instance=dict(model="quadratic", backward="autograd",
                                                  method="maml (autograd; Hessian constant)")))
    if ctx.device == "cuda":
        for K in Ks:
            out.append(compare("memory", SPEC, "CUDA peak bytes: iMAML ≤ MAML (MLP)",
                               peak_cuda_bytes("imaml", K), peak_cuda_bytes("maml", K),
                               instance={"model": "mlp", "inner_steps": K, "device": "cuda"}))
    return out
