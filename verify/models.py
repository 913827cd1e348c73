"""Neural networks as tasks of the task protocol: the paper's 4-layer convolutional network, a
small MLP, and :class:`ModelTask`, which turns a ``torch.nn.Module`` and one episode into a task
that the solvers (iMAML, MAML, Newton-CG) can use.

Parameters are functional: a task never reads or writes the module's own parameters. It sees one
flat 1-D vector φ (the parameters concatenated in ``named_parameters()`` order) and evaluates
the network at φ with :func:`torch.func.functional_call`. So the same module serves every task
of a meta-batch and every φ of an inner loop, and Hessian-vector products are ordinary double
backward passes through the network.

Batch normalization (as in MAML's reference implementation): every forward pass normalizes with
the statistics of the batch it is given (support set or query set, each on its own); there are
no running statistics (``track_running_stats=False``), so train and test mode behave the same
and a network is a deterministic function of (φ, batch). The affine scale and shift of each
batch-norm layer are ordinary meta-learned parameters inside φ. Consequence: the query loss is
transductive over the query batch, exactly as in MAML/iMAML's published protocol.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from validation import check_array, check_lam

__all__ = ["ConvNet", "MLP", "ModelTask", "ParameterLayout", "flat_parameters"]


class ConvNet(nn.Module):
    """The 4-layer convolutional network of MAML/iMAML few-shot classification.

    Each of ``layers`` blocks is conv 3×3 (``filters`` channels, padding 1) → batch norm (batch
    statistics, no running stats; see the module docstring) → ReLU → 2×2 max-pool; then a linear
    head to ``n_classes`` logits. Paper settings: ``filters=64, layers=4`` on 28×28 Omniglot
    (28→14→7→3→1, 64 features) and 84×84 Mini-ImageNet (32 filters in MAML's code). Smaller
    ``filters``/``layers`` give the tiny networks of the CPU smoke tests.

    Raises ValueError (naming the argument) when ``image_size`` is too small for ``layers``
    poolings or a size is not a positive integer.
    """

    def __init__(self, n_classes: int, *, in_channels: int = 1, image_size: int = 28,
                 filters: int = 64, layers: int = 4):
        super().__init__()
        for name, value in (("n_classes", n_classes), ("in_channels", in_channels),
                            ("image_size", image_size), ("filters", filters), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        side = image_size
        for _ in range(layers):
            side //= 2
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for {layers} 2x2 max-poolings "
                             f"(needs at least {2 ** layers})")
        blocks = []
        channels = in_channels
        for _ in range(layers):
            blocks += [nn.Conv2d(channels, filters, 3, padding=1),
                       nn.BatchNorm2d(filters, track_running_stats=False),
                       nn.ReLU(), nn.MaxPool2d(2)]
            channels = filters
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(filters * side * side, n_classes)
        self.image_size, self.in_channels = image_size, in_channels

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] != self.image_size \
                or x.shape[-2] != self.image_size:
            raise ValueError(f"x must have shape (batch, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}")
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    """A fully connected ReLU network (MAML's sinusoid regressor: 1 → 40 → 40 → 1)."""

    def __init__(self, in_features: int = 1, out_features: int = 1, hidden=(40, 40)):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"in_features, hidden and out_features must be positive integers, "
                             f"got {in_features!r}, {hidden!r}, {out_features!r}")
        mods = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)
        self.in_features = in_features

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (batch, {self.in_features}), got {tuple(x.shape)}")
        return self.net(x)


@dataclass(frozen=True)
class ParameterLayout:
    """Where each named parameter of a module lives in the flat vector φ."""

    names: tuple
    shapes: tuple
    sizes: tuple

    @classmethod
    def of(cls, module: nn.Module) -> "ParameterLayout":
        named = list(module.named_parameters())
        if not named:
            raise ValueError("model has no parameters")
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named),
                   tuple(p.numel() for _, p in named))

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def unflatten(self, phi) -> dict:
        """φ (shape (size,)) as {name: view of φ with the parameter's shape} (differentiable)."""
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(phi, self.sizes),
                                                self.shapes)}


def flat_parameters(module: nn.Module, *, dtype=None, device=None) -> torch.Tensor:
    """The module's current parameters as one detached flat vector φ₀ (a copy), optionally
    converted to ``dtype``/``device``: the initial meta-parameters θ₀ of meta-training."""
    layout = ParameterLayout.of(module)
    flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    assert flat.numel() == layout.size
    return flat.to(dtype=dtype or flat.dtype, device=device or flat.device).clone()


_LOSSES = ("cross_entropy", "mse")


class ModelTask:
    """One episode of a network as a task of the task protocol (``solvers/protocol.py``).

    Inner loss L̂(φ) = loss of ``model`` at parameters φ on the support set
    ``(support_x, support_y)``; outer loss L(φ) = the same loss on the query set. ``loss`` is
    'cross_entropy' (integer labels; mean over the batch) or 'mse' (mean squared error).
    ``lam`` is iMAML's regularization strength λ.

    Methods take a flat 1-D φ of length :attr:`dim` (see :func:`flat_parameters`; any floating
    dtype and device: the data are cast to φ's dtype/device, so a float64 reference at the same
    φ is ``task.inner_grad(phi.double())``):

    - ``inner_loss(phi)``, ``outer_loss(phi)``: 0-d tensors, differentiable w.r.t. φ when
      ``phi.requires_grad`` (MAML backpropagates through them), detached otherwise.
    - ``inner_grad(phi)``, ``outer_grad(phi)``: ∇L̂(φ), ∇L(φ) of shape (dim,). When
      ``phi.requires_grad`` the gradient is built with ``create_graph=True`` and is itself
      differentiable, so a loop φ ← φ − α∇L̂(φ) can be backpropagated (MAML); otherwise detached.
    - ``inner_hvp(phi, v)``: ∇²L̂(φ)v by double backward (Pearlmutter's trick), detached; v of
      shape (dim,), same dtype/device as φ.
    - ``accuracy(phi, query=True)``: fraction of correct arg-max predictions (classification).

    There is no ``curvature_bounds``: a network has no known β, so solvers need explicit step
    sizes. Bad input (wrong shape, dtype, NaN, λ ≤ 0, label/batch mismatch) raises an error that
    names the argument.
    """

    def __init__(self, model: nn.Module, support_x, support_y, query_x, query_y, *, lam,
                 loss: str = "cross_entropy"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
        self.lam = check_lam(lam)
        self.model, self.loss_name = model, loss
        self.layout = ParameterLayout.of(model)
        self._data = {"support": self._check_pair(support_x, support_y, "support"),
                      "query": self._check_pair(query_x, query_y, "query")}
        self._cast_cache: dict = {}

    def _check_pair(self, x, y, which):
        for name, t in ((f"{which}_x", x), (f"{which}_y", y)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"{which}_x and {which}_y must hold the same positive number of "
                             f"examples, got {x.shape[0]} and {y.shape[0]}")
        if not torch.is_floating_point(x) or not bool(torch.isfinite(x).all()):
            raise ValueError(f"{which}_x must be a finite floating tensor")
        if self.loss_name == "cross_entropy" and (y.dtype != torch.long or y.ndim != 1):
            raise TypeError(f"{which}_y must be a 1-D tensor of int64 class labels for "
                            f"cross_entropy, got dtype {y.dtype} and shape {tuple(y.shape)}")
        if self.loss_name == "mse" and not torch.is_floating_point(y):
            raise TypeError(f"{which}_y must be a floating tensor for mse, got {y.dtype}")
        return x.detach(), y.detach()

    @property
    def dim(self) -> int:
        """Number of parameters d (length of φ)."""
        return self.layout.size

    def _batch(self, which, like):
        key = (which, like.dtype, like.device)
        if key not in self._cast_cache:
            x, y = self._data[which]
            x = x.to(dtype=like.dtype, device=like.device)
            y = y.to(device=like.device, dtype=like.dtype if self.loss_name == "mse" else y.dtype)
            self._cast_cache[key] = (x, y)
        return self._cast_cache[key]

    def _check_phi(self, phi, name="phi"):
        if not isinstance(phi, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(phi).__name__}")
        check_array(phi.detach(), name, ndim=1, shape=(self.dim,))
        return phi

    def logits(self, phi, x):
        """The network's output at parameters φ on inputs x (cast to φ's dtype/device)."""
        self._check_phi(phi)
        return functional_call(self.model, self.layout.unflatten(phi),
                               (x.to(dtype=phi.dtype, device=phi.device),))

    def _loss(self, phi, which):
        x, y = self._batch(which, phi)
        out = functional_call(self.model, self.layout.unflatten(phi), (x,))
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(out, y)
        return F.mse_loss(out, y)

    def _value(self, phi, which):
        self._check_phi(phi)
        if phi.requires_grad:
            return self._loss(phi, which)
        with torch.no_grad():
            return self._loss(phi, which)

    def _grad(self, phi, which):
        self._check_phi(phi)
        differentiable = phi.requires_grad and torch.is_grad_enabled()
        with torch.enable_grad():
            p = phi if differentiable else phi.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self._loss(p, which), p, create_graph=differentiable)
        return g if differentiable else g.detach()

    def inner_loss(self, phi):
        return self._value(phi, "support")

    def outer_loss(self, phi):
        return self._value(phi, "query")

    def inner_grad(self, phi):
        return self._grad(phi, "support")

    def outer_grad(self, phi):
        return self._grad(phi, "query")

    def inner_hvp(self, phi, v):
        self._check_phi(phi)
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"v must be a torch tensor, got {type(v).__name__}")
        check_array(v.detach(), "v", ndim=1, shape=(self.dim,), like=phi.detach())
        with torch.enable_grad():
            p = phi.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self._loss(p, "support"), p, create_graph=True)
            (hv,) = torch.autograd.grad(g, p, grad_outputs=v.detach())
        return hv.detach()

    def accuracy(self, phi, *, query: bool = True) -> float:
        """Fraction of examples of the query (or support) set whose arg-max logit is the label."""
        if self.loss_name != "cross_entropy":
            raise ValueError("accuracy needs a classification task (loss='cross_entropy')")
        self._check_phi(phi)
        x, y = self._batch("query" if query else "support", phi)
        with torch.no_grad():
            out = functional_call(self.model, self.layout.unflatten(phi.detach()), (x,))
        return float((out.argmax(dim=1) == y).double().mean())

    def __repr__(self) -> str:
        s, q = self._data["support"][0].shape[0], self._data["query"][0].shape[0]
        return (f"ModelTask({type(self.model).__name__}, dim={self.dim}, support={s}, "
                f"query={q}, lam={self.lam:g}, loss={self.loss_name!r})")

