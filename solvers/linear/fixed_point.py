"""The hypergradient of a fixed-point map (hypertorch's ``fixed_point``; Lorraine, Vicol &
Duvenaud 2020), one vector or a stack of them (docs/mathematics.md §4a)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from solvers._optimizer import step_parameter
from solvers._result import History
from solvers.linear._spec import LinearSolver
from solvers.linear.neumann import neumann

__all__ = ["fixed_point", "SOLVER"]


def fixed_point(map_vjp, rhs, *, x0=None, max_steps=None, rtol=1e-5, atol=0.0, history=False,
                on_breakdown="raise", check_every=None):
    """The adjoint v of a fixed-point map φ = Φ(φ, θ) at its fixed point: v = J_φᵀ v + rhs,
    iterated as v_{k+1} = J_φᵀ v_k + rhs from v₀ = 0 (or ``x0``), J_φ = ∂Φ/∂φ given as
    ``map_vjp(v)`` = J_φᵀ v. The hypergradient is then J_θᵀ v (the caller's product: for iMAML's
    map below, a multiple of v).

    This is Richardson's iteration on (I − J_φᵀ) v = rhs with step 1, and it is run as such:
    :func:`solvers.linear.neumann.neumann` with matvec w ↦ w − J_φᵀw and α = 1 (one
    implementation; its stopping rule, rows, divergence test and host reads). The stopping test
    ‖rhs − (I − J_φᵀ)v_k‖ = ‖v_{k+1} − v_k‖ ≤ max(atol, rtol‖rhs‖) is hypertorch's
    ``‖v_k − v_{k−1}‖ < tol``. It converges when the spectral radius of J_φ is below 1.

    For iMAML the map is one gradient step on G(·, θ) with step η, Φ(φ, θ) = φ − η∇_φG(φ, θ):
    J_φ = I − η(H + λI) = I − ηλM, J_θ = ηλI, so v_k = Σ_{j<k}(I − ηλM)^j ∇L(φ) and the
    hypergradient ηλv_k is exactly the k-term Neumann series of M with α = ηλ
    (docs/mathematics.md §4a), computed through the map (one HVP per step) and rounded
    differently: the adjoint is iterated in units of 1/(ηλ), and (I − J_φᵀ)v is formed by a
    subtraction."""
    return neumann(lambda w: w - map_vjp(w), rhs, alpha=1.0, x0=x0, max_steps=max_steps,
                   rtol=rtol, atol=atol, history=history, on_breakdown=on_breakdown,
                   check_every=check_every)


def _run(system, rhs, *, step_size=None, **kw):
    """iMAML's map: one gradient step on G(·, θ) with step η (default 1/β: the inner gradient
    descent's); J_φᵀv = v − η(λv + Hv), the hypergradient ηλv."""
    if step_size is None:
        if system.bounds is None:
            raise ValueError("linear_options['step_size'] must be given for linear_solver="
                             "'fixed_point': the task has no curvature_bounds() to derive the "
                             "map's step η = 1/β from")
        step_size = 1.0 / (system.bounds[1] * _host_lam(system.lam))
    eta = step_parameter(step_size, "step_size", rhs, low=0.0)
    lam = system.lam
    res = fixed_point(lambda v: v - eta * (lam * v + system.hvp(v)), rhs, **kw)
    scale = eta * lam                      # J_θᵀ v = ηλ v
    history = res.history
    if history is not None:
        history = History([x * scale for x in history.iterates], list(history.residual_norms))
    return replace(res, x=res.x * scale, history=history)


def _host_lam(lam):
    """λ as NumPy (a number, or the (n, 1) rows of a stack as an (n,) array)."""
    if getattr(lam, "ndim", 0) == 0:
        return float(lam)
    host = lam.detach().cpu().numpy() if hasattr(lam, "detach") else np.asarray(lam)
    return np.asarray(host, dtype=np.float64).reshape(-1)


SOLVER = LinearSolver("fixed_point", _run,
                      {"step_size": "the step η of the map φ ↦ φ − η∇_φG(φ, θ) (default 1/β)"},
                      definite=True,
                      summary="fixed-point hypergradient of the inner gradient step (hypertorch's "
                              "fixed_point): the Neumann series with α = ηλ")
