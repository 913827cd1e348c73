"""Four ways to solve iMAML's linear system (I + H(φ)/λ) g = ∇L(φ) in few-shot training, and a
float64 reference to measure them against.

The theory (docs/mathematics.md §4, §5) assumes I + H/λ positive definite: L̂ convex, or λ large
enough. On this project's batch-normalized ConvNet and glyph data at the paper's λ = 2 it is not:
H(φ) has eigenvalues below −λ on almost every task, and CG meets non-positive curvature pᵀMp ≤ 0,
usually at its first step. What to do then is a choice; the options are three ways of running
CG and one other solver:

- ``"fallback"`` (this project's default, the safeguarded solver): :func:`solvers.cg` stops at
  the first non-positive curvature and returns its last iterate; if that happens at the first
  step nothing of the Krylov solve is usable and the first-order direction ∇L(φ) is used
  (which makes the estimator first-order MAML on such tasks).
- ``"fixed"``: the paper's reference code. Its CG runs its fixed number of steps whatever the
  curvature (no check of pᵀMp; a step along negative curvature moves the iterate the wrong way
  and a near-zero pᵀMp makes it huge); it stops early only when rᵀr < 1e-10.
- ``"damped"``: the paper's reference code as its Omniglot script runs it: the same unguarded CG
  on the damped system ((1 + damping)·I + H/(λ + lam_damping)) g = ∇L(φ), damping = 1 and
  lam_damping = 10 by default (the script's ``cg_damping`` and ``matrix_evaluator``'s
  ``lam_damping``). A different, better conditioned system: its solution is not the implicit
  gradient, so its error against the reference is a bias, not rounding.

:func:`plain_cg` is CG as the reference code writes it (also the sync-free peer of the
bandwidth measurement, :mod:`verify.gpu.bandwidth`): no validation, no breakdown test, no host
synchronisation unless a residual tolerance is asked for. :func:`reference_gradient` solves the
undamped system in float64 with MINRES (symmetric, indefinite allowed) for the error figures.
"""
from __future__ import annotations

import math

import torch

from solvers import ImplicitSystem, MetaGradientResult, SolverResult, Status, implicit_gradient_at

__all__ = ["CG_MODES", "PAPER_DAMPING", "PAPER_LAM_DAMPING", "PAPER_RESIDUAL_TOL", "plain_cg",
           "system_matvec", "implicit_gradient", "reference_gradient"]

CG_MODES = ("fallback", "fixed", "damped", "minres")
PAPER_DAMPING = 1.0        #: the Omniglot script's --cg_damping (matrix_evaluator's regu_coef)
PAPER_LAM_DAMPING = 10.0   #: matrix_evaluator's lam_damping default
PAPER_RESIDUAL_TOL = 1e-10  #: the reference CG's early stop, on rᵀr


def plain_cg(matvec, b, steps, *, residual_tol=None, count_nonpositive=False):
    """``steps`` iterations of unguarded CG on M x = b from x = 0 (the loop of iMAML's reference
    code), batched over leading dimensions of ``b`` (row i solves M_i x_i = b_i; ``matvec`` maps
    (..., d) to (..., d)). No curvature test, no finiteness test, no host synchronisation in the
    loop, except ``residual_tol``: stop once every rᵀr < residual_tol (one sync per step, as
    the reference code's ``if rdotr < residual_tol: break``).

    Returns (x, info): info['steps'] = iterations done; info['nonpositive_curvature'] = number
    of (row, step) pairs with pᵀMp ≤ 0 (a tensor on b's device, read by the caller when it
    wants; None unless ``count_nonpositive``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(-1)
    bad = torch.zeros((), dtype=torch.int64, device=b.device) if count_nonpositive else None
    done = 0
    for _ in range(steps):
        Mp = matvec(p)
        pMp = (p * Mp).sum(-1)
        if bad is not None:
            bad = bad + (pMp <= 0).sum()
        alpha = (rr / pMp)[..., None]
        x = x + alpha * p
        r = r - alpha * Mp
        rr_new = (r * r).sum(-1)
        p = r + (rr_new / rr)[..., None] * p
        rr = rr_new
        done += 1
        if residual_tol is not None and bool((rr < residual_tol).all()):
            break
    return x, {"steps": done, "nonpositive_curvature": bad}


def system_matvec(task, phi, *, mode="fallback", damping=PAPER_DAMPING,
                  lam_damping=PAPER_LAM_DAMPING):
    """The matrix-vector product of ``mode``'s system at φ (a :class:`solvers.ImplicitSystem`):
    w + H(φ)w/λ ('fallback', 'fixed', 'minres') or (1 + damping)·w + H(φ)w/(λ + lam_damping)
    ('damped')."""
    _check_mode(mode)
    system = ImplicitSystem.at(task, phi)
    if mode == "damped":
        system = system.damped(damping, lam_damping)
    return system.matvec


def _check_mode(mode):
    if mode not in CG_MODES:
        raise ValueError(f"cg_mode must be one of {CG_MODES}, got {mode!r}")


def implicit_gradient(task, theta, inner_result, *, cg_steps, mode="fallback",
                      damping=PAPER_DAMPING, lam_damping=PAPER_LAM_DAMPING) -> MetaGradientResult:
    """iMAML's meta-gradient at an inner result with ``cg_steps`` CG steps in ``mode`` (see the
    module docstring). The result's ``cg.status`` is BREAKDOWN when the safeguarded solver
    stopped ('fallback'); for 'fixed'/'damped' it is MAX_STEPS (or CONVERGED at the reference
    code's rᵀr tolerance) and ``linear.evaluations['nonpositive_curvature']`` counts the steps
    taken along non-positive curvature; for 'minres' it is MAX_STEPS (or BREAKDOWN, reported,
    if the system is singular on the Krylov space). ``method`` names the mode: 'imaml',
    'imaml+first_order_fallback', 'imaml+fixed_cg', 'imaml+damped_cg', 'imaml+minres'."""
    _check_mode(mode)
    if mode == "minres":
        res = implicit_gradient_at(task, theta, inner_result, cg_steps=cg_steps,
                                   on_breakdown="return", linear_solver="minres")
        res.method = "imaml+minres"
        return res
    if mode == "fallback":
        res = implicit_gradient_at(task, theta, inner_result, cg_steps=cg_steps,
                                   on_breakdown="return")
        if res.linear.status is Status.BREAKDOWN and res.linear.steps == 0:
            # negative curvature at CG's first direction: nothing of the Krylov solve is usable;
            # fall back to the first-order direction ∇L(φ) (as Newton-CG falls back to −∇f)
            res.gradient = task.outer_grad(res.phi)
            res.method = res.method + "+first_order_fallback"
        return res
    if isinstance(cg_steps, bool) or not isinstance(cg_steps, int) or cg_steps < 0:
        raise ValueError(f"cg_steps must be a non-negative integer, got {cg_steps!r}")
    phi = inner_result.x
    v = task.outer_grad(phi)
    matvec = system_matvec(task, phi, mode=mode, damping=damping, lam_damping=lam_damping)
    g, info = plain_cg(matvec, v, cg_steps, residual_tol=PAPER_RESIDUAL_TOL,
                       count_nonpositive=True)
    lam = float(task.lam)
    solved = float((v - matvec(g)).norm())       # of the system CG ran on (damped or not)
    residual = float(ImplicitSystem.at(task, phi).residual(g, v).norm())   # of I + H/λ
    status = Status.CONVERGED if info["steps"] < cg_steps else Status.MAX_STEPS
    cg = SolverResult(x=g, steps=info["steps"], residual_norm=solved, status=status,
                      evaluations={"matvec": info["steps"],
                                   "nonpositive_curvature": int(info["nonpositive_curvature"])})
    evals = {"inner_grad": inner_result.steps,
             "hvp": inner_result.evaluations.get("hvp", 0) + info["steps"], "outer_grad": 1}
    stationarity = float((task.inner_grad(phi) + lam * (phi - theta)).norm())
    return MetaGradientResult(gradient=g, phi=phi, inner=inner_result, linear=cg,
                              stationarity=stationarity, system_residual=residual,
                              outer_grad_norm=float(v.norm()), evaluations=evals,
                              method=f"imaml+{mode}_cg", linear_solver="cg")


def reference_gradient(task, phi, *, steps=500) -> dict:
    """The implicit gradient's linear system (I + H(φ)/λ) g = ∇L(φ), undamped, solved in float64
    by MINRES (scipy.sparse.linalg.minres: symmetric, indefinite allowed; HVPs by the task in
    float64 on φ's device) with at most ``steps`` matrix-vector products. Returns {'gradient':
    float64 tensor on φ's device, 'relative_residual': ‖b − Mg‖/‖b‖ recomputed in float64,
    'steps', 'exists': relative residual ≤ float32's machine epsilon, i.e. the reference is
    more accurate than a float32 method under test can be}."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, minres

    from theory.tolerances import machine_epsilon

    phi64 = phi.detach().double()
    b = task.outer_grad(phi64)
    d = b.numel()
    system = ImplicitSystem.at(task, phi64)

    def mv(w):
        t = torch.as_tensor(np.ascontiguousarray(w).reshape(-1), dtype=torch.float64,
                            device=phi64.device)
        return system.matvec(t).cpu().numpy()

    count = {"n": 0}

    def callback(_):
        count["n"] += 1

    x, _ = minres(LinearOperator((d, d), matvec=mv, dtype=np.float64), b.cpu().numpy(),
                  rtol=machine_epsilon(torch.float64), maxiter=steps, callback=callback)
    g = torch.as_tensor(x, dtype=torch.float64, device=phi64.device)
    rel = float(system.residual(g, b).norm() / b.norm())
    return {"gradient": g, "relative_residual": rel, "steps": count["n"],
            "exists": math.isfinite(rel) and rel <= machine_epsilon(torch.float32)}
