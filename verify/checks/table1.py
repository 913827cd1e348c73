"""Table 1 of the paper as claims (docs/mathematics.md §8, "Table 1"): the compute and memory of
one meta-gradient with a δ-accurate inner solve, for MAML with gradient descent, MAML with
Nesterov's method, truncated backpropagation and iMAML, checked as counts from instrumented runs.

Every run goes through :class:`CountingTask`, which counts the task's gradients, Hessian-vector
products (HVPs) and outer gradients as the solver calls them, and through
:class:`verify.measure.SavedBytesMeter`, which counts the bytes autograd saves for the backward
pass; "iterates stored" is that peak over the bytes of one φ (the protocol backward of MAML
saves exactly the φₖ its HVPs need). The instrument's counts are first checked against the
work the solver reports (they may differ only by the solver's fixed diagnostics), then against
the row's count, with the constant the row's Õ(·) hides made explicit:

| row | compute (gradients + HVPs) | memory | count it is checked against |
|---|---|---|---|
| MAML, GD + full backprop | κ log(D/δ) + κ log(D/δ) | κ log(D/δ) iterates | ⌈κ log(D/δ)⌉ (theory.maml.gd_steps_bound) |
| MAML, Nesterov + full backprop | √κ log(D/δ) + √κ log(D/δ) | √κ log(D/δ) iterates | Lemma 2, ⌈2√κ log(2κD/δ)⌉ |
| truncated backprop (GD) | κ log(D/δ) + κ log(1/ε) | κ log(1/ε) iterates | ⌈κ log(‖∇L‖/ε)⌉ (theory.maml.truncation_steps_bound) |
| iMAML | √κ log(D/δ) + √κ log(·/δ) | Mem(∇L̂), independent of K | Lemma 2 on G and on the CG system; ≤ 2 × one gradient's bytes |

The instance is the planted worst case of gradient descent (θ − φ* on the bottom eigenvector of
A, query loss largest there: verify.checks.maml.adversarial_maml_task), where GD's count is
nearly attained; D = ‖θ − φ*‖ (every method starts at φ₀ = θ) and δ = δ_rel·D.
"""
from __future__ import annotations

import math

import numpy as np

from solvers import imaml_meta_gradient, inner_solve, maml_meta_gradient, truncated_meta_gradient
from theory import to_numpy64
from theory.bounds import lemma2_steps
from theory.maml import gd_steps_bound, maml_jacobian, truncation_steps_bound
from theory.quadratic import QuadraticTask
from theory.tolerances import rounding_allowance
from verify.checks._common import exact_reference
from verify.checks._result import compare
from verify.checks.first_order import reference_step_sizes
from verify.checks.maml import adversarial_maml_task
from verify.measure import SavedBytesMeter, distances, saved_bytes, steps_to_stay_below
from verify.registry import claim

__all__ = ["CountingTask", "instrumented", "unrolled_nesterov_meta_gradient", "table1_instances",
           "check_maml_gd_row", "check_maml_nesterov_row", "check_truncated_row",
           "check_imaml_row", "check_imaml_memory", "needed_steps", "ROWS"]

SECTION = "§8 (Table 1)"

#: the rows of Table 1 as the paper states them: (claim, algorithm, compute, memory, error)
ROWS = (("table1-maml-gd", "MAML (GD + full back-prop)", "κ log(D/δ)", "Mem(∇L̂)·κ log(D/δ)", "0"),
        ("table1-maml-nesterov", "MAML (Nesterov's AGD + full back-prop)", "√κ log(D/δ)",
         "Mem(∇L̂)·√κ log(D/δ)", "0"),
        ("table1-truncated", "Truncated back-prop (GD)", "κ log(D/δ)", "Mem(∇L̂)·κ log(1/ε)", "ε"),
        ("table1-imaml", "Implicit MAML", "√κ log(D/δ)", "Mem(∇L̂)", "δ"))


class CountingTask:
    """A task seen through the protocol, with every call counted: ``counts['inner_grad']``,
    ``['inner_hvp']``, ``['outer_grad']`` (``inner_loss``/``outer_loss`` too). Attributes other
    than the protocol's are not passed on: a solver sees only what the protocol allows."""

    def __init__(self, task):
        self._task = task
        self.lam = task.lam
        self.dim = task.dim
        self.counts = {"inner_loss": 0, "inner_grad": 0, "inner_hvp": 0, "outer_loss": 0,
                       "outer_grad": 0}

    def _count(self, name, *args):
        self.counts[name] += 1
        return getattr(self._task, name)(*args)

    def inner_loss(self, phi):
        return self._count("inner_loss", phi)

    def inner_grad(self, phi):
        return self._count("inner_grad", phi)

    def inner_hvp(self, phi, v):
        return self._count("inner_hvp", phi, v)

    def outer_loss(self, phi):
        return self._count("outer_loss", phi)

    def outer_grad(self, phi):
        return self._count("outer_grad", phi)

    def curvature_bounds(self):
        return self._task.curvature_bounds()


def instrumented(run, task):
    """Run ``run(counting_task)`` under the saved-bytes meter: (its result, the call counts,
    the peak bytes saved for backward)."""
    counting = CountingTask(task)
    with SavedBytesMeter() as meter:
        out = run(counting)
    return out, dict(counting.counts), meter.peak


def unrolled_nesterov_meta_gradient(task, theta, inner_steps, *, step_size, momentum):
    """MAML with Nesterov's method (the docs/mathematics.md §3 variant) as the inner solver:
    K steps from φ₀ = θ, differentiated by backpropagation through all of them. Each ∇L̂(yₖ) is
    an autograd node whose backward is the task's HVP at yₖ (it saves yₖ: one iterate per
    step); NumPy in, NumPy out. Returns (meta-gradient, φ_K)."""
    import torch

    class _Gradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y):
            ctx.save_for_backward(y)
            return torch.from_numpy(np.array(task.inner_grad(y.detach().numpy())))

        @staticmethod
        def backward(ctx, upstream):
            (y,) = ctx.saved_tensors
            return torch.from_numpy(np.array(task.inner_hvp(y.detach().numpy(),
                                                            upstream.detach().numpy())))

    lam = float(task.lam)
    th = torch.from_numpy(np.array(theta, dtype=np.float64)).requires_grad_(True)
    with torch.enable_grad():
        x = y = th
        for _ in range(int(inner_steps)):
            x_new = y - step_size * (_Gradient.apply(y) + lam * (y - th))
            y = x_new + momentum * (x_new - x)
            x = x_new
        v = torch.from_numpy(np.array(task.outer_grad(x.detach().numpy())))
        if not x.requires_grad:          # K = 0: φ = θ, J = I
            return v.numpy(), x.detach().numpy()
        (g,) = torch.autograd.grad(x, th, grad_outputs=v)
    return g.numpy(), x.detach().numpy()


def needed_steps(task, theta, inner, delta, cap, *, momentum=None):
    """The fewest steps of ``inner`` ('gd' or 'nesterov', from φ₀ = θ, step 1/β, Nesterov's
    momentum (√κ−1)/(√κ+1) unless ``momentum`` is given) after which ‖φ_k − Alg*(θ)‖ stays
    ≤ δ (None: not within ``cap``)."""
    step, q = reference_step_sizes(task)
    res = inner_solve(task, theta, inner_steps=cap, inner=inner, history=True,
                      inner_step_size=step, inner_momentum=(q if momentum is None else momentum)
                      if inner == "nesterov" else None)
    ref = exact_reference(task)
    phi_star = ref.as_float(ref.inner_solution(to_numpy64(theta)))
    return steps_to_stay_below(distances(res.history.iterates, phi_star), delta)


def _steps(needed, cap) -> int:
    """The steps to run: those needed, or the cap when they were not reached within it (the
    count's result then fails, and the run still shows the rest)."""
    return cap if needed is None else needed


def _stored_iterates(peak_bytes, task) -> float:
    return peak_bytes / (8.0 * task.dim)


def _common_results(name, work, instrument_counts, diagnostics, stored, expected_stored, bound,
                    needed, inst, details, hvps_expected):
    """The results every row shares: the instrument sees the reported work plus the fixed
    diagnostics; gradients needed ≤ the row's count; HVPs and iterates stored as the row says."""
    work = {"inner_grad": work.get("inner_grad", 0),
            "inner_hvp": work.get("inner_hvp", work.get("hvp", 0)),
            "outer_grad": work.get("outer_grad", 0)}
    seen = {k: instrument_counts[k] - work[k] for k in work}
    dev = sum(abs(seen[k] - diagnostics.get(k, 0)) for k in seen)
    details = dict(details, instrumented=instrument_counts, reported=work,
                   diagnostics_seen=seen, iterates_stored=stored)
    return [compare(name, SECTION, "the instrument counts the reported work plus the solver's "
                    "fixed diagnostics (deviation, calls)", dev, 0.0, instance=inst,
                    details=details),
            compare(name, SECTION, "inner gradients needed for ‖φ_K − φ*‖ ≤ δ ≤ the row's count",
                    needed if needed is not None else math.inf, bound, instance=inst,
                    details=details),
            compare(name, SECTION, "HVPs in the meta-gradient's backward/solve = the row's "
                    "(deviation from it)", abs(work["inner_hvp"] - hvps_expected), 0.0,
                    instance=inst, details=details),
            compare(name, SECTION, "iterates stored for the backward pass = the row's "
                    "(deviation from it)", abs(stored - expected_stored), 0.0, instance=inst,
                    details=details)]


#: the diagnostics MAML's and truncated backprop's results carry (stationarity: one gradient;
#: the implicit system's residual: one HVP), computed after the work
BACKPROP_DIAGNOSTICS = {"inner_grad": 1, "inner_hvp": 1}


def _maml_protocol(task, theta, inner_steps):
    return maml_meta_gradient(task, theta, inner_steps=inner_steps, backward="protocol")


def check_maml_gd_row(task, theta, delta, *, inner_steps=None, instance=None,
                      method=_maml_protocol):
    """MAML with GD and full backprop at the K that makes φ_K δ-accurate: K inner gradients
    ≤ ⌈κ log(D/δ)⌉, K HVPs in the backward pass, K iterates stored, and approx-solve error 0
    (= the closed form J_Kᵀ∇L(φ_K), to rounding). ``inner_steps`` overrides K, ``method(task,
    θ, K)`` the MAML implementation (controls)."""
    theta = to_numpy64(theta)
    step, _ = reference_step_sizes(task)
    kappa, D = _kappa(task), _distance(task, theta)
    bound = gd_steps_bound(kappa, D, delta)
    needed = needed_steps(task, theta, "gd", delta, max(bound, 1))
    K = _steps(needed, bound) if inner_steps is None else inner_steps
    res, counts, peak = instrumented(lambda t: method(t, theta, K), task)
    g = to_numpy64(res.gradient)
    closed = maml_jacobian(task, step, K).T @ to_numpy64(task.outer_grad(to_numpy64(res.phi)))
    inst = dict(instance or {}, delta=delta, inner_steps=K)
    details = {"kappa": kappa, "D": D, "row_count": bound, "needed": needed}
    out = _common_results("table1-maml-gd", res.evaluations, counts, BACKPROP_DIAGNOSTICS,
                          _stored_iterates(peak, task), K, bound, needed, inst, details, K)
    out.append(compare("table1-maml-gd", SECTION, "approx-solve error 0: g = J_Kᵀ∇L(φ_K) "
                       "(closed form) to rounding", float(np.linalg.norm(g - closed)), 0.0,
                       allowance=_rounding(task, theta, K), instance=inst, details=details))
    return out


def check_maml_nesterov_row(task, theta, delta, *, inner_steps=None, instance=None,
                            momentum=None):
    """MAML with Nesterov's method and full backprop at the K that makes φ_K δ-accurate:
    K ≤ Lemma 2's ⌈2√κ log(2κD/δ)⌉ gradients, K HVPs, K iterates stored; approx-solve error 0
    (J_K by exact differences of the affine closed-form map θ ↦ x_K, theory.maml), and fewer
    steps than gradient descent needs for the same δ (the √κ of the row). ``momentum``
    overrides (√κ−1)/(√κ+1) (0: gradient descent, a control)."""
    import theory.maml as tm

    theta = to_numpy64(theta)
    step, q = reference_step_sizes(task)
    q = q if momentum is None else float(momentum)
    kappa, D = _kappa(task), _distance(task, theta)
    bound = lemma2_steps(kappa, D, delta)
    needed = needed_steps(task, theta, "nesterov", delta, max(bound, 1), momentum=q)
    K = _steps(needed, bound) if inner_steps is None else inner_steps

    def run(t):
        return unrolled_nesterov_meta_gradient(t, theta, K, step_size=step, momentum=q)

    (g, phi), counts, peak = instrumented(run, task)
    # x_K is affine in θ: exact central differences with unit steps give J_K
    cols = [(tm.nesterov_iterate(task, theta + e, step, q, K)
             - tm.nesterov_iterate(task, theta - e, step, q, K)) / 2 for e in np.eye(task.dim)]
    closed = np.stack(cols, axis=1).T @ to_numpy64(task.outer_grad(phi))
    gd_needed = needed_steps(task, theta, "gd", delta, max(gd_steps_bound(kappa, D, delta), 1))
    inst = dict(instance or {}, delta=delta, inner_steps=K)
    details = {"kappa": kappa, "D": D, "row_count": bound, "needed": needed,
               "gd_needed": gd_needed}
    work = {"inner_grad": K, "inner_hvp": K, "outer_grad": 1}
    out = _common_results("table1-maml-nesterov", work, counts, {}, _stored_iterates(peak, task),
                          K, bound, needed, inst, details, K)
    out.append(compare("table1-maml-nesterov", SECTION, "approx-solve error 0: g = J_Kᵀ∇L(x_K) "
                       "(closed form) to rounding", float(np.linalg.norm(g - closed)), 0.0,
                       allowance=_rounding(task, theta, K), instance=inst, details=details))
    out.append(compare("table1-maml-nesterov", SECTION, "gradient descent needs more steps "
                       "than Nesterov for the same δ (κ against √κ)",
                       gd_needed if gd_needed is not None else math.inf,
                       needed if needed is not None else math.inf, relation=">", kind="claim",
                       instance=inst, details=details))
    return out


def check_truncated_row(task, theta, delta, eps_rel, *, backprop_steps=None, instance=None):
    """Truncated backprop: K = the GD steps that make φ_K δ-accurate (≤ ⌈κ log(D/δ)⌉), then
    backprop through the fewest T last steps whose approx-solve error against MAML's full
    backprop is ≤ ε = eps_rel·‖∇L(φ_K)‖ (closed form, theory.maml): T ≤ ⌈κ log(‖∇L(φ_K)‖/ε)⌉,
    T − 1 HVPs and T − 1 iterates stored (the first differentiated step starts at a constant;
    Table 1's κ log(1/ε), whatever δ), and the solver's g_T within ε of its full backprop.
    ``backprop_steps`` overrides T (controls)."""
    theta = to_numpy64(theta)
    kappa, D = _kappa(task), _distance(task, theta)
    bound_k = gd_steps_bound(kappa, D, delta)
    K = _steps(needed_steps(task, theta, "gd", delta, max(bound_k, 1)), bound_k)
    step, _ = reference_step_sizes(task)
    full = to_numpy64(maml_meta_gradient(task, theta, inner_steps=K, backward="protocol").gradient)
    phi_K = to_numpy64(inner_solve(task, theta, inner_steps=K, inner="gd").x)
    v = to_numpy64(task.outer_grad(phi_K))
    gnorm = float(np.linalg.norm(v))
    eps = eps_rel * gnorm
    bound_t = truncation_steps_bound(kappa, gnorm, eps)
    # the approx-solve error of T backprop steps in closed form: ‖(J_K − λC⁻¹(I − P^T))ᵀv‖
    A = to_numpy64(task.A)
    lam = float(task.lam)
    C = A + lam * np.eye(task.dim)
    P = np.eye(task.dim) - step * C
    J_K = maml_jacobian(task, step, K)
    C_inv = np.linalg.inv(C)
    errors, PT = [], np.eye(task.dim)
    for t in range(K + 1):
        errors.append(float(np.linalg.norm((J_K - lam * C_inv @ (np.eye(task.dim) - PT)).T @ v))
                      if t < K else 0.0)
        PT = PT @ P
    t_needed = steps_to_stay_below(errors, eps)
    T = _steps(t_needed, K) if backprop_steps is None else backprop_steps
    res, counts, peak = instrumented(lambda t: truncated_meta_gradient(
        t, theta, inner_steps=K, backprop_steps=T, backward="protocol"), task)
    err = float(np.linalg.norm(to_numpy64(res.gradient) - full))
    inst = dict(instance or {}, delta=delta, eps_relative=eps_rel, inner_steps=K,
                backprop_steps=T)
    details = {"kappa": kappa, "D": D, "row_count_inner": bound_k, "row_count_backprop": bound_t,
               "needed_backprop": t_needed, "eps": eps}
    # T < K: the first differentiated step starts at the constant φ_{K−T} (J_{K−T} = 0), so
    # the backward pass has T − 1 HVPs and saves T − 1 iterates; the GD head adds its own
    # final-gradient diagnostic
    backward = T if T == K else max(T - 1, 0)
    diagnostics = dict(BACKPROP_DIAGNOSTICS, inner_grad=2 if T < K else 1)
    out = _common_results("table1-truncated", res.evaluations, counts, diagnostics,
                          _stored_iterates(peak, task), backward, bound_k, K, inst, details,
                          backward)
    out.append(compare("table1-truncated", SECTION, "backprop steps needed for approx-solve "
                       "error ≤ ε ≤ ⌈κ log(‖∇L(φ_K)‖/ε)⌉", t_needed if t_needed is not None
                       else math.inf, bound_t, instance=inst, details=details))
    out.append(compare("table1-truncated", SECTION, "approx-solve error ‖g_T − g_MAML‖ ≤ ε",
                       err, eps, allowance=_rounding(task, theta, K), instance=inst,
                       details=details))
    return out


#: iMAML's diagnostics: the inner solver's final stationarity gradient, the result's own
#: stationarity gradient, and the implicit system's residual (one HVP)
IMAML_DIAGNOSTICS = {"inner_grad": 2, "inner_hvp": 1}


def check_imaml_row(task, theta, delta, *, inner_steps=None, cg_steps=None, instance=None):
    """iMAML: Nesterov from φ₀ = θ for the fewest K that make φ_K δ-accurate (≤ Lemma 2's
    ⌈2√κ log(2κD/δ)⌉), then CG for the fewest M steps within δ of (I + H/λ)⁻¹∇L(φ_K) (≤ Lemma 2
    on the CG system, ⌈2√κ log(2κ(λ/μ)‖∇L(φ_K)‖/δ)⌉, as Theorem 2's proof): K gradients, M
    HVPs, no iterate stored for a backward pass, exact-solve error ≤ (λL/μ)δ + δ (Lemma 3,
    ρ = 0); its memory on a network is :func:`check_imaml_memory`. ``inner_steps``/``cg_steps``
    override K and M (controls)."""
    theta = to_numpy64(theta)
    kappa, D = _kappa(task), _distance(task, theta)
    beta, mu = task.curvature_bounds()
    lam = float(task.lam)
    bound_k = lemma2_steps(kappa, D, delta)
    K = _steps(needed_steps(task, theta, "nesterov", delta, max(bound_k, 1)), bound_k) \
        if inner_steps is None else inner_steps
    phi = inner_solve(task, theta, inner_steps=K).x
    v = to_numpy64(task.outer_grad(phi))
    target = to_numpy64(task.implicit_gradient(phi))
    bound_m = lemma2_steps(kappa, lam / mu * float(np.linalg.norm(v)), delta)
    from solvers import ImplicitSystem, cg

    hist = cg(ImplicitSystem.at(task, phi).matvec, task.outer_grad(phi),
              max_steps=max(bound_m, 1), rtol=0.0, atol=0.0, history=True).history.iterates
    m_needed = steps_to_stay_below(distances(hist, target), delta)
    M = _steps(m_needed, bound_m) if cg_steps is None else cg_steps
    res, counts, peak = instrumented(lambda t: imaml_meta_gradient(t, theta, inner_steps=K,
                                                                   cg_steps=M), task)
    ref = exact_reference(task)
    err = ref.error(to_numpy64(res.gradient), ref.meta_gradient(theta))
    L = float(np.linalg.eigvalsh(to_numpy64(task.A_query))[-1])
    inst = dict(instance or {}, delta=delta, inner_steps=K, cg_steps=M)
    details = {"kappa": kappa, "D": D, "row_count_inner": bound_k, "row_count_cg": bound_m,
               "needed_cg": m_needed}
    out = _common_results("table1-imaml", res.evaluations, counts, IMAML_DIAGNOSTICS,
                          _stored_iterates(peak, task), 0, bound_k, K, inst, details, M)
    out.append(compare("table1-imaml", SECTION, "CG steps needed within δ of the system's "
                       "solution ≤ Lemma 2's count on the CG system",
                       m_needed if m_needed is not None else math.inf, bound_m, instance=inst,
                       details=details))
    out.append(compare("table1-imaml", SECTION, "exact-solve error ≤ (λL/μ)δ + δ (Lemma 3)",
                       err, lam * L / mu * delta + delta, allowance=_rounding(task, theta, K + M),
                       instance=inst, details=details))
    return out


def check_imaml_memory(gradient_bytes, bytes_by_K, *, instance=None):
    """Table 1's Mem(∇L̂) for iMAML on a network (HVPs by double backward): the peak bytes saved
    while computing the meta-gradient are ≤ 2 × those of one gradient (Assumption 1's factor)
    and the same for every number K of inner steps. Two results."""
    Ks = sorted(bytes_by_K)
    details = {"gradient_bytes": int(gradient_bytes),
               "imaml_bytes": {int(k): int(v) for k, v in bytes_by_K.items()}}
    return [compare("table1-imaml", SECTION, "memory Mem(∇L̂): iMAML's saved bytes ≤ 2 × one "
                    "gradient's (a network, HVPs by double backward)", max(bytes_by_K.values()),
                    2 * gradient_bytes, instance=instance, details=details),
            compare("table1-imaml", SECTION, "iMAML's saved bytes do not depend on K (deviation "
                    "in bytes)", max(abs(bytes_by_K[k] - bytes_by_K[Ks[0]]) for k in Ks), 0.0,
                    instance=instance, details=details)]


def _kappa(task) -> float:
    beta, mu = task.curvature_bounds()
    return float(beta / mu)


def _distance(task, theta) -> float:
    ref = exact_reference(task)
    return float(ref.error(to_numpy64(theta), ref.inner_solution(to_numpy64(theta))))


def _rounding(task, theta, steps) -> float:
    """The rounding of ``steps`` matrix-vector products and a solve on this task (the rule of
    theory.tolerances with the meta-gradient's magnitudes as scale)."""
    g = to_numpy64(task.meta_gradient(theta))
    phi = to_numpy64(task.inner_solution(theta))
    scale = float(np.linalg.norm(g)) + float(np.linalg.norm(to_numpy64(task.outer_grad(phi)))) \
        + float(np.linalg.norm(theta))
    return rounding_allowance("float64", kappa=_kappa(task), scale=scale,
                              dim=task.dim * (steps + 1))


def table1_instances(ctx):
    """(task, θ, instance) for the rows: the planted worst case of gradient descent, d = 20,
    λ = 1, κ = 10 and 100 (quick: 30), and a unit random b_query (so that ∇L(φ*) ≠ 0)."""
    kappas = (30.0,) if ctx.quick else (10.0, 100.0)
    out = []
    for i, kappa in enumerate(kappas):
        seed = ctx.rng_seed(81, i)
        base, theta = adversarial_maml_task(20, kappa, 1.0, seed=seed)
        b_query = np.random.default_rng(seed + 1).standard_normal(20)
        task = QuadraticTask(base.A, base.b, base.A_query, b_query / np.linalg.norm(b_query), 1.0)
        out.append((task, theta, dict(dim=20, kappa=kappa, lam=1.0, seed=seed, query="reversed",
                                      start="θ − φ* on A's bottom eigenvector",
                                      b_query="unit, random")))
    return out


def _deltas(ctx):
    """δ_rel: quick 1e-4, full 1e-2 and 1e-4."""
    return (1e-4,) if ctx.quick else (1e-2, 1e-4)


def _rows(ctx, check, **kw):
    out = []
    for task, theta, inst in table1_instances(ctx):
        D = _distance(task, theta)
        for rel in _deltas(ctx):
            out += check(task, theta, rel * D, instance=dict(inst, delta_relative=rel), **kw)
    return out


@claim("table1-maml-gd", title="Table 1: MAML (GD + full back-prop), compute and memory",
       section=SECTION, statement="with a δ-accurate gradient-descent inner solve, MAML's "
       "meta-gradient takes K ≤ ⌈κ log(D/δ)⌉ gradients and K HVPs and stores K iterates "
       "(Table 1: κ log(D/δ), Mem(∇L̂)·κ log(D/δ), error 0), counted by an instrumented task",
       loose="Table 1 states Õ(·) counts; the constant here is 1 (GD contracts by 1 − 1/κ), "
       "and the count is nearly attained on the planted start")
def run_maml_gd(ctx):
    return _rows(ctx, check_maml_gd_row)


@claim("table1-maml-nesterov", title="Table 1: MAML (Nesterov's AGD + full back-prop), compute "
       "and memory", section=SECTION, statement="with Nesterov's method as the δ-accurate inner "
       "solver, backpropagation through it takes K ≤ ⌈2√κ log(2κD/δ)⌉ gradients and K HVPs and "
       "stores K iterates (Table 1: √κ log(D/δ), Mem(∇L̂)·√κ log(D/δ), error 0), fewer than GD")
def run_maml_nesterov(ctx):
    return _rows(ctx, check_maml_nesterov_row)


@claim("table1-truncated", title="Table 1: truncated back-prop (GD), compute and memory",
       section=SECTION, statement="K ≤ ⌈κ log(D/δ)⌉ GD steps forward, then backpropagation "
       "through T ≤ ⌈κ log(‖∇L(φ_K)‖/ε)⌉ of them: T − 1 HVPs, T − 1 iterates stored (the first "
       "differentiated step starts at a constant), approx-solve error ≤ ε (Table 1: κ log(D/δ), "
       "Mem(∇L̂)·κ log(1/ε), error ε)",
       loose="Table 1's κ log(1/ε) needs ε relative to ‖∇L(φ_K)‖ (the bound here is for "
       "quadratic tasks with A ⪰ 0, where ‖J_k‖ ≤ 1)")
def run_truncated(ctx):
    out = []
    for eps_rel in ((1e-2,) if ctx.quick else (1e-1, 1e-2)):
        out += _rows(ctx, check_truncated_row, eps_rel=eps_rel)
    return out


def _imaml_memory(ctx):
    """(bytes saved by one gradient, {K: bytes saved by iMAML's meta-gradient}) on the MLP of
    verify.measure.memory_task (HVPs by double backward)."""
    from verify.measure import memory_task

    task, theta, _ = memory_task("mlp", seed=ctx.seed)
    with SavedBytesMeter() as meter:
        task.inner_grad(theta)
    Ks = (5, 20) if ctx.quick else (5, 20, 100)
    return meter.peak, {K: saved_bytes("imaml", K, model="mlp", seed=ctx.seed) for K in Ks}


@claim("table1-imaml", title="Table 1: implicit MAML, compute and memory", section=SECTION,
       statement="with Nesterov to δ (K ≤ ⌈2√κ log(2κD/δ)⌉ gradients) and CG to δ (M ≤ Lemma 2's "
       "count on the CG system, HVPs), iMAML stores no iterate for a backward pass, holds at "
       "most 2 × one gradient's memory on a network whatever K, and is within (λL/μ)δ + δ of "
       "the exact meta-gradient (Table 1: √κ log(D/δ), Mem(∇L̂), error δ)")
def run_imaml(ctx):
    grad_bytes, by_K = _imaml_memory(ctx)
    return _rows(ctx, check_imaml_row) + check_imaml_memory(
        grad_bytes, by_K, instance=dict(model="mlp (1→40→40→1)", seed=ctx.seed))
