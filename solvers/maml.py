"""MAML's meta-gradient: backpropagation through K steps of gradient descent on G(·, θ) from
φ₀ = θ (docs/mathematics.md §7), and truncated backpropagation through only the last T of them (Shaban et
al. 2019).

The loop φₖ₊₁ = φₖ − α(∇L̂(φₖ) + λ(φₖ − θ)) is run with torch autograd recording it, and the
meta-gradient is the vector–Jacobian product J_Kᵀ∇L(φ_K) (one backward pass). How the backward
pass gets through ∇L̂:

- ``backward='autograd'``: the task's ``inner_grad`` is itself differentiable by autograd on
  torch tensors (quadratic and logistic tasks on torch arrays: plain tensor operations;
  ``verify.models.ModelTask`` when ``phi.requires_grad``). This is what MAML does on a network.
- ``backward='protocol'``: each ∇L̂(φₖ) is a node whose vector–Jacobian product is the task's
  own Hessian-vector product (∇²L̂ is symmetric, so vᵀ∇²L̂ = (∇²L̂ v)ᵀ). Works for every task of
  the protocol, NumPy-backed ones included; the node saves φₖ for its backward pass.
- ``'auto'`` (default): 'autograd' for torch input, 'protocol' for NumPy input.

NumPy input is computed in torch (float64/float32 kept) and returned as NumPy.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from array_api_compat import is_torch_array

from solvers._common import (array_namespace, check_callback_output, raise_if_not_finite,
                             safe_norm, to_host)
from solvers._result import SolverResult, Status
from solvers.gradient_descent import gradient_descent
from solvers.implicit import ImplicitSystem
from solvers.imaml import MetaGradientResult, default_step_sizes
from solvers.protocol import check_task
from validation import check_array, check_steps

__all__ = ["maml_meta_gradient", "truncated_meta_gradient", "BACKWARD_MODES"]

BACKWARD_MODES = ("auto", "autograd", "protocol")


class _Bridge:
    """Moves arrays between the caller's library and torch, and wraps the task's gradient
    so that its backward pass is the task's Hessian-vector product ('protocol' mode)."""

    def __init__(self, task, theta, backward):
        import torch

        self.torch = torch
        self.numpy_in = not is_torch_array(theta)
        if backward == "auto":
            backward = "protocol" if self.numpy_in else "autograd"
        if backward == "autograd" and self.numpy_in:
            raise ValueError("backward='autograd' needs torch input: a NumPy-backed task's "
                             "inner_grad is not differentiable by torch; use 'protocol'")
        self.mode, self.task, self.seen = backward, task, set()
        self.theta = torch.from_numpy(np.array(theta)) if self.numpy_in else theta.detach()

    def to_task(self, x):
        return x.detach().cpu().numpy() if self.numpy_in else x.detach()

    def from_task(self, x):
        return self.torch.from_numpy(np.asarray(x)) if self.numpy_in else x

    def to_caller(self, x):
        return self.to_task(x)

    def call(self, name, x, *more):
        """task.<name>(x, *more) in the task's own arrays; its first answer is validated
        (shape, library, dtype, device of its last argument) before anything uses it."""
        out = getattr(self.task, name)(x, *more)
        if name not in self.seen:
            check_callback_output(out, (x, *more)[-1], f"task.{name}")
            self.seen.add(name)
        return out

    def inner_grad(self, phi):
        if self.mode == "protocol":
            return _protocol_gradient_class().apply(phi, self)
        g = self.call("inner_grad", phi)
        if phi.requires_grad and not g.requires_grad:
            raise TypeError("task.inner_grad returned a tensor that autograd cannot "
                            "differentiate; use backward='protocol' (the task's inner_hvp)")
        return g


@functools.cache
def _protocol_gradient_class():
    import torch

    class ProtocolGradient(torch.autograd.Function):
        """∇L̂(φ) as an autograd node whose backward is v ↦ ∇²L̂(φ)v (the task's HVP)."""

        @staticmethod
        def forward(ctx, phi, bridge):
            ctx.bridge = bridge
            ctx.save_for_backward(phi)
            return bridge.from_task(bridge.call("inner_grad", bridge.to_task(phi))).clone()

        @staticmethod
        def backward(ctx, upstream):
            (phi,) = ctx.saved_tensors
            b = ctx.bridge
            return b.from_task(b.call("inner_hvp", b.to_task(phi), b.to_task(upstream))).clone(), None

    return ProtocolGradient




def _backprop(task, theta, *, inner_steps, step_size, backprop_steps, backward, method):
    check_task(task)
    check_array(theta, "theta", ndim=1)
    K = check_steps(inner_steps, "inner_steps")
    T = check_steps(backprop_steps, "backprop_steps")
    if T > K:
        raise ValueError(f"backprop_steps must be <= inner_steps = {K}, got {T}")
    if backward not in BACKWARD_MODES:
        raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
    if getattr(task, "batched", False) or not isinstance(getattr(task, "lam", 0.0), (int, float)):
        raise ValueError("MAML differentiates through one task's inner loop: give a single task "
                         "(not a stack of tasks)")
    alpha = default_step_sizes(task, "gd", step_size, None)[0]
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"step_size must be a real number, got {type(step_size).__name__}") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"step_size must be finite and > 0, got {step_size!r}")
    bridge = _Bridge(task, theta, backward)
    torch, lam = bridge.torch, float(task.lam)
    theta_t = bridge.theta.clone().requires_grad_(True)
    theta_c = theta_t.detach()

    def grad_G(phi):
        return bridge.inner_grad(phi) + lam * (phi - theta_t)

    with torch.enable_grad():
        start, status = theta_t, Status.MAX_STEPS
        if T < K:
            # the first K − T steps are not differentiated: φ_{K−T} is a constant of the backward
            with torch.no_grad():
                head = gradient_descent(lambda p: bridge.from_task(bridge.call(
                    "inner_grad", bridge.to_task(p))) + lam * (p - theta_c), theta_c, step_size=alpha,
                    max_steps=K - T)
            start, status = head.x.detach(), head.status
        phi_K = start
        for k in range(T):  # the differentiated steps (no extra diagnostic gradient in the graph)
            phi_K = phi_K - alpha * grad_G(phi_K)
        # one finiteness test of the last iterate (NaN and Inf propagate through the steps)
        # (on the detached value: a diagnostic must not add to what autograd saves)
        raise_if_not_finite(to_host(torch.linalg.vector_norm(phi_K.detach())), "the iterate", K)
        v = bridge.from_task(bridge.call("outer_grad", bridge.to_task(phi_K)))
        if phi_K.requires_grad:
            (g,) = torch.autograd.grad(phi_K, theta_t, grad_outputs=v, allow_unused=True)
            g = torch.zeros_like(theta_c) if g is None else g
        else:  # T = 0 < K: nothing is differentiated, the meta-gradient is 0
            g = torch.zeros_like(theta_c)
    phi = phi_K.detach()
    gradient, phi_out = bridge.to_caller(g), bridge.to_caller(phi)
    # diagnostics (not counted as work): stationarity ‖∇G(φ_K, θ)‖ and the implicit system's
    # residual ‖∇L(φ) − (I + H(φ)/λ)g‖ at MAML's own φ_K and g
    grad_inner = bridge.from_task(bridge.call("inner_grad", bridge.to_task(phi)))
    system = ImplicitSystem(lambda w: bridge.from_task(bridge.call("inner_hvp", phi_out,
                                                                   bridge.to_task(w))), lam)
    tx = array_namespace(phi)
    stationarity, system_residual, outer_grad_norm = to_host(
        safe_norm(tx, grad_inner + lam * (phi - theta_c)),
        safe_norm(tx, system.residual(g.detach(), v.detach())), safe_norm(tx, v.detach()))
    inner = SolverResult(x=phi_out, steps=K, residual_norm=stationarity, status=status,
                         evaluations={"grad": K})
    # T < K: the first differentiated step starts at the constant φ_{K−T}, so its gradient has
    # no backward (J_{K−T} = 0): T − 1 HVPs; T = K starts at θ itself: K HVPs
    evals = {"inner_grad": K, "hvp": T if T == K else max(T - 1, 0), "outer_grad": 1}
    return MetaGradientResult(gradient=gradient, phi=phi_out, inner=inner, linear=None,
                              stationarity=stationarity, system_residual=system_residual,
                              outer_grad_norm=outer_grad_norm, evaluations=evals,
                              method=method, task=task, theta=theta)


def maml_meta_gradient(task, theta, *, inner_steps, step_size=None, backward="auto"
                       ) -> MetaGradientResult:
    """MAML (docs/mathematics.md §7): K = ``inner_steps`` steps of gradient descent on G(·, θ) from φ₀ = θ,
    φₖ₊₁ = φₖ − α(∇L̂(φₖ) + λ(φₖ − θ)), then g = J_Kᵀ∇L(φ_K) by backpropagation through the
    loop, J_K = dφ_K/dθ. ``step_size`` α defaults to 1/β from the task's ``curvature_bounds``.

    Returns a :class:`MetaGradientResult` (method 'maml'; ``linear`` is None; ``system_residual`` is
    the residual ‖∇L(φ_K) − (I + H(φ_K)/λ)g‖ of the implicit system at MAML's own point, a
    diagnostic). ``evaluations`` counts K inner gradients, K Hessian-vector products (each
    backward step through ∇L̂ costs one) and 1 outer gradient. Always takes exactly K steps.
    See the module docstring for ``backward``."""
    return _backprop(task, theta, inner_steps=inner_steps, step_size=step_size,
                     backprop_steps=check_steps(inner_steps, "inner_steps"), backward=backward,
                     method="maml")


def truncated_meta_gradient(task, theta, *, inner_steps, backprop_steps, step_size=None,
                            backward="auto") -> MetaGradientResult:
    """Truncated backpropagation (Shaban et al. 2019): the same K steps as
    :func:`maml_meta_gradient`, but only the last T = ``backprop_steps`` are differentiated;
    φ_{K−T} is treated as a constant (for T = K this is MAML, for T = 0 the gradient is 0).
    Its Jacobian obeys Jₖ₊₁ = (I − α(Hₖ + λI))Jₖ + αλI from J_{K−T} = 0. Method 'truncated';
    ``evaluations`` counts K inner gradients, 1 outer gradient and the HVPs of the backward
    pass: T − 1 for T < K (the first differentiated step starts at the constant φ_{K−T}, whose
    gradient needs no backward: J_{K−T} = 0), K for T = K."""
    return _backprop(task, theta, inner_steps=inner_steps, step_size=step_size,
                     backprop_steps=backprop_steps, backward=backward, method="truncated")
