"""Measuring instruments, in one place for the claims, the figures and the few-shot experiment.

- :class:`SavedBytesMeter` / :func:`peak_saved_bytes`: the peak number of bytes held by tensors
  that autograd saves for a backward pass (``torch.autograd.graph.saved_tensors_hooks``). Each
  saved tensor is counted by its storage, once however many graph nodes save it, from when it is
  saved until the last node holding it is freed. Deterministic, on any device: this is what the
  memory claims assert on.
- :func:`peak_cuda_bytes`: ``torch.cuda.max_memory_allocated`` around a call, above what was
  allocated before it, after ``warmup`` unmeasured calls (recorded on a GPU; allocator effects
  included). The first CUDA call of a kind allocates for the whole process (cuBLAS/cuDNN
  workspaces, kernels' scratch): without a warm-up that is counted against whichever call runs
  first, which is how an iMAML meta-gradient once "used" 68 MB against MAML's 125 KB. Recorded
  as a figure; the memory claims judge the saved-bytes meter.
- :func:`saved_bytes` / :func:`cuda_peak_bytes` / :func:`cuda_peak_figures` and
  :func:`memory_task`: those instruments applied to one meta-gradient (MAML or iMAML) on the
  standard memory tasks (quadratic, logistic, MLP).
- :func:`hvp_memory_ratio` and :func:`model_task`: the saved bytes of one Hessian-vector product
  against one gradient on a network (Assumption 1).
- :func:`steps_to_reach` / :func:`steps_to_stay_below`: how many steps an iteration needed to come
  within a tolerance of a reference, from its recorded iterates or errors (vectorised).
"""
from __future__ import annotations

import math

import numpy as np

from solvers import imaml_meta_gradient, maml_meta_gradient
from theory import to_numpy64
from verify.tasks import logistic_task, planted_spectrum_task, to_array

__all__ = ["SavedBytesMeter", "peak_saved_bytes", "peak_cuda_bytes", "saved_bytes",
           "cuda_peak_bytes", "cuda_peak_figures", "memory_task", "METHODS", "MODELS", "steps_to_reach",
           "steps_to_stay_below", "distances", "model_task", "hvp_memory_ratio", "NETWORKS"]

METHODS = ("maml", "imaml")
MODELS = ("quadratic", "logistic", "mlp")


# -- memory instruments --------------------------------------------------------------------------
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


def peak_saved_bytes(fn) -> tuple[int, object]:
    """(peak bytes saved for backward while ``fn()`` runs, fn's result)."""
    with SavedBytesMeter() as meter:
        out = fn()
    return meter.peak, out


def peak_cuda_bytes(fn, device, *, warmup: int = 0) -> tuple[int, object]:
    """(peak CUDA memory allocated while ``fn()`` runs, above what was allocated before it;
    fn's result). ``warmup``: calls of ``fn`` made (and discarded) before the measured one, so
    that first-use allocations which stay for the whole process (cuBLAS/cuDNN workspaces) are
    in the baseline, not in the peak. Needs a CUDA device."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {device}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base), out


# -- memory of one meta-gradient on the standard tasks -------------------------------------------
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


def cuda_peak_bytes(method, inner_steps, *, model="mlp", seed=0, dtype="float32",
                    backward="auto", warmup=1) -> int:
    """torch.cuda.max_memory_allocated during one meta-gradient (as in :func:`saved_bytes`, on
    CUDA), above what was allocated before it, after ``warmup`` unmeasured runs of the same
    meta-gradient (:func:`peak_cuda_bytes`). Raises RuntimeError without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("cuda_peak_bytes needs a CUDA device")
    task, theta, opts = memory_task(model, seed=seed, dtype=dtype, device="cuda")
    peak, _ = peak_cuda_bytes(lambda: _run(method, task, theta, int(inner_steps), opts, backward),
                              "cuda", warmup=warmup)
    return peak


def cuda_peak_figures(inner_steps, *, model="mlp", seed=0, dtype="float32",
                      methods=METHODS) -> dict:
    """{method: {K: allocator peak bytes}} on CUDA for every K in ``inner_steps``, every method
    warmed up first (one unmeasured run each at the largest K, before any measurement) and each
    measurement after a warm-up of its own: the allocator's view, recorded beside the
    saved-bytes verdict, never the verdict itself."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("cuda_peak_figures needs a CUDA device")
    task, theta, opts = memory_task(model, seed=seed, dtype=dtype, device="cuda")
    K_max = max(int(k) for k in inner_steps)
    for method in methods:
        _run(method, task, theta, K_max, opts, "auto")
    return {m: {int(K): peak_cuda_bytes(lambda: _run(m, task, theta, int(K), opts, "auto"),
                                        "cuda", warmup=1)[0] for K in inner_steps}
            for m in methods}


# -- memory of a Hessian-vector product against a gradient (Assumption 1) -----------------------
NETWORKS = ("mlp", "conv4")


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


# -- steps needed ---------------------------------------------------------------------------------
def distances(iterates, reference) -> np.ndarray:
    """‖x_k − reference‖ for every recorded iterate (float64, one vectorised pass)."""
    if len(iterates) == 0:
        return np.zeros(0)
    X = np.stack([to_numpy64(x) for x in iterates])
    return np.linalg.norm(X - to_numpy64(reference), axis=-1)


def steps_to_reach(iterates, reference, tol) -> int | None:
    """The first k with ‖x_k − reference‖ ≤ tol, or None when no recorded iterate gets there."""
    hits = np.flatnonzero(distances(iterates, reference) <= tol)
    return int(hits[0]) if hits.size else None


def steps_to_stay_below(errors, target) -> int | None:
    """Smallest k with errors[j] <= target for every recorded j >= k (None when the last error
    is above the target): the fixed step budget after which the method stays accurate."""
    above = np.flatnonzero(~(np.asarray(errors, dtype=float) <= target))
    n = len(errors)
    if n == 0 or (above.size and above[-1] == n - 1):
        return None
    return int(above[-1] + 1) if above.size else 0
