"""Certificates at every scale of the data (issue 18, items 4): the plain
``certify(result, constants)`` and ``accurate_meta_gradient`` against 60-digit truth (mpmath LU
from the stored numbers, a route independent of theory.exact) with the task's vectors b, b_q and
θ of size 1e-170 and 1e150 in float64, 1e-22 and 1e15 in float32 — where the squares in a plain
norm underflow (a computed residual of 0) or come within a few orders of overflow — and with a
task whose own arithmetic underflows. Negative controls: unscaled norms, and a rounding model
without the underflow threshold, make the same comparisons fail."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

import solvers.imaml
import theory.tolerances
from solvers import imaml_meta_gradient
from theory import QuadraticTask, bounds
from theory.bounds import certify
from verify.accurate import AccuracyNotReached, accurate_meta_gradient
from verify.checks import certificate as claim
from verify.registry import RunContext
from verify.tasks import planted_spectrum_task

#: (dtype, data scale): the ends of each dtype's range (verify.checks.certificate.DATA_SCALES)
SCALES = [(dt, s) for dt, scales in claim.DATA_SCALES.items() for s in scales]
#: (d, κ, λ, query, seed): 12 instances a scale
INSTANCES = [(d, kappa, lam, query, seed)
             for seed, (d, kappa, lam, query) in enumerate(
                 [(3, 10.0, 1.0, "reversed"), (5, 100.0, 1.0, "reversed"),
                  (5, 100.0, 0.5, "independent"), (8, 1e4, 2.0, "shared"),
                  (6, 1e3, 0.1, "reversed"), (4, 1e4, 1.0, "independent")])
             for seed in (seed, seed + 10)]
#: inner solver, inner steps, CG steps: an inexact meta-gradient, and two at rounding level
SETTINGS = (("nesterov", 20, 4), ("newton_cg", 2, 8), ("nesterov", 400, 60))
#: the accuracy asked of accurate_meta_gradient, relative to ‖g*‖: far above what each dtype
#: resolves at κ ≤ 1e4 (about eps·κ) and far below the error of a crude solve
RELATIVE_EPS = {"float64": 1e-8, "float32": 1e-2}


def truth(task, theta, g):
    """(‖g − g*‖, ‖g*‖) in 60-digit mpmath LU, from the stored numbers of the task and θ taken
    exactly (float32 data are exact float64 numbers)."""
    def mat(x):
        return mpmath.matrix(np.asarray(x, dtype=np.float64).tolist())

    with mpmath.workdps(60):
        C = mat(task.A) + mpmath.mpf(float(task.lam)) * mpmath.eye(task.dim)
        phi = mpmath.lu_solve(C, mpmath.mpf(float(task.lam)) * mat(theta) - mat(task.b))
        g_star = mpmath.mpf(float(task.lam)) * mpmath.lu_solve(C, mat(task.A_query) * phi
                                                                + mat(task.b_query))
        return mpmath.norm(mat(g) - g_star), mpmath.norm(g_star)


def _instances(dtype, scale):
    for d, kappa, lam, query, seed in INSTANCES:
        yield claim.scaled_task(d, kappa, lam, scale, seed=seed, query=query, dtype=dtype)


def certify_all(dtype, scale, settings=SETTINGS):
    """[(true error, certificate)] of the plain call on every instance and setting."""
    out = []
    for task, theta in _instances(dtype, scale):
        c = task.constants(theta)
        for inner, inner_steps, cg_steps in settings:
            res = imaml_meta_gradient(task, theta, inner=inner, inner_steps=inner_steps,
                                      cg_steps=cg_steps)
            cert = certify(res, c)
            out.append((truth(task, theta, res.gradient)[0], cert))
    return out


@pytest.mark.parametrize("dtype,scale", SCALES)
def test_plain_certify_holds_at_the_ends_of_the_scale(dtype, scale):
    checks = certify_all(dtype, scale)
    assert len(checks) == len(INSTANCES) * len(SETTINGS)
    for err, cert in checks:
        assert cert.rounding_safe and err <= cert.bound, (err, cert)


@pytest.mark.parametrize("dtype,scale", SCALES)
def test_solvers_are_exactly_scale_invariant(dtype, scale, monkeypatch):
    """At a power-of-two scale an instance is exactly the unit-scale one scaled, and so is every
    solver's meta-gradient, bitwise (CG on each row scaled by a power of two: rᵀr cannot
    underflow). Negative control: CG without its scaling returns something else at the small
    scales (at 2⁻⁵⁶⁵ in float64, rᵀr underflows and CG stops at g = 0)."""
    def gradients(s):
        out = []
        for d, kappa, lam, query, seed in INSTANCES[:4]:
            task, theta = claim.scaled_task(d, kappa, lam, s, seed=seed, query=query, dtype=dtype)
            for inner, inner_steps, cg_steps in SETTINGS:
                out.append(imaml_meta_gradient(task, theta, inner=inner, inner_steps=inner_steps,
                                               cg_steps=cg_steps).gradient)
        return out

    unit = gradients(1.0)
    assert all(np.array_equal(g, u * scale) for g, u in zip(gradients(scale), unit))
    if scale < 1:
        import sys
        monkeypatch.setattr(sys.modules["solvers.linear._iteration"], "pow2_scale", lambda xp, a: None)
        assert not all(np.array_equal(g, u * scale) for g, u in zip(gradients(scale), unit))


@pytest.mark.parametrize("dtype,scale", SCALES)
def test_accurate_meta_gradient_holds_at_the_ends_of_the_scale(dtype, scale):
    """Asked for ε = (relative)·‖g*‖, it returns on every instance, certified ≤ ε, and its
    60-digit true error is within that certificate."""
    for task, theta in _instances(dtype, scale):
        _, g_norm = truth(task, theta, np.zeros(task.dim))
        eps = RELATIVE_EPS[dtype] * float(g_norm)
        out = accurate_meta_gradient(task, theta, eps)
        err, _ = truth(task, theta, out.gradient)
        assert out.certificate.rounding_safe and out.bound <= eps
        assert err <= out.bound, (err, out.bound)


def _plain_norm(xp, a):
    return solvers.imaml.ops(xp).norm(a)


def test_negative_control_unscaled_norms_undercut_the_truth(monkeypatch):
    """Planted defect: the diagnostics' norms computed plainly (their squares underflow at
    1e-170) with the model alone (no exact residuals to fall back on): the certificate is below
    the 60-digit truth on some instances. The same model with scaled norms holds on all."""
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", math.inf)
    scaled = certify_all("float64", 1e-170, SETTINGS[:1])
    assert all(err <= cert.bound for err, cert in scaled)
    monkeypatch.setattr(solvers.imaml, "safe_norm", _plain_norm)
    plain = certify_all("float64", 1e-170, SETTINGS[:1])
    misses = sum(err > cert.bound for err, cert in plain)
    assert misses >= len(plain) // 2, misses


def _underflowing_task(seed):
    """A task whose own arithmetic underflows: A, A_q and λ of size 2^-515 (κ = 100), θ of
    size 2^-515, b and b_q of size 2^-1030, so that Aφ, A_qφ, ∇L and g* are subnormal and a
    Hessian-vector product Ag underflows to 0; g is first-order MAML's ∇L(φ) (no CG), whose
    computed implicit residual ∇L − g − Ag/λ is then exactly 0 while the exact one is not."""
    s = 2.0 ** -515
    base, _ = planted_spectrum_task(5, 100.0, 1.0, seed=seed, query="reversed")
    theta = np.random.default_rng(seed).standard_normal(5) * s
    task = QuadraticTask(base.A * s, base.b * s * s, base.A_query * s, base.b_query * s * s, s)
    with np.errstate(all="ignore"):
        res = imaml_meta_gradient(task, theta, inner_steps=30, cg_steps=0, cg_start="gradient")
    return task, theta, res


def test_the_underflow_threshold_holds_where_the_task_itself_underflows(monkeypatch):
    """The model with the underflow threshold (and the default certify, which evaluates the
    residuals exactly here) holds; negative control: the model without it (tiny = 0) is below
    the truth on every instance."""
    cases = [_underflowing_task(seed) for seed in range(6)]
    for task, theta, res in cases:
        err, _ = truth(task, theta, res.gradient)
        assert err <= certify(res, task.constants(theta)).bound
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", math.inf)
    for task, theta, res in cases:
        err, _ = truth(task, theta, res.gradient)
        assert err <= certify(res, task.constants(theta)).bound
    monkeypatch.setattr(theory.tolerances, "underflow_threshold", lambda dtype: 0.0)
    misses = sum(truth(task, theta, res.gradient)[0] > certify(res, task.constants(theta)).bound
                 for task, theta, res in cases)
    assert misses == len(cases)


def test_accurate_never_certifies_below_the_truth_where_the_task_underflows():
    """Where the task's own Hessian-vector products underflow, the accuracy-driven call either
    refuses or returns a certificate above the 60-digit truth."""
    for seed in range(3):
        task, theta, _ = _underflowing_task(seed)
        _, g_norm = truth(task, theta, np.zeros(5))
        try:
            with np.errstate(all="ignore"):
                out = accurate_meta_gradient(task, theta, 1e-6 * float(g_norm))
        except AccuracyNotReached as refused:
            best = refused.best
            assert truth(task, theta, best.gradient)[0] <= best.bound
        else:
            assert truth(task, theta, out.gradient)[0] <= out.bound <= 1e-6 * float(g_norm)


def test_the_claim_fails_with_unscaled_norms(monkeypatch):
    """The certificate claim's own comparison on its scaled instances: with the planted defect
    (plain norms, model only) some results fail; with the real code all pass. A mutant making
    the claim's comparison always pass is killed by the first half."""
    insts = claim.scaled_instances(RunContext(quick=True))
    assert [i["data_scale"] for _, _, i in insts] == list(claim.DATA_SCALES["float64"])

    def run_all():
        return [claim.check_certificate(task, theta, inner=inner, inner_steps=steps,
                                        cg_steps=cg, instance=inst)
                for task, theta, inst in insts for inner, steps, cg in claim.SCALE_SETTINGS[:1]]

    assert all(r.passed for r in run_all())
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", math.inf)
    monkeypatch.setattr(solvers.imaml, "safe_norm", _plain_norm)
    assert not all(r.passed for r in run_all())


def test_scaled_instances_follow_the_dtype():
    for dtype in ("float64", "float32"):
        insts = claim.scaled_instances(RunContext(quick=False, dtype=dtype))
        assert sorted({i["data_scale"] for _, _, i in insts}) == sorted(claim.DATA_SCALES[dtype])
        assert len(insts) == len(claim.DATA_SCALES[dtype]) * len(claim.SCALED_SPECS)
        for task, theta, inst in insts:
            assert str(theta.dtype) == dtype and inst["dtype"] == dtype


def test_certify_refuses_a_task_it_cannot_bound():
    """A result whose task has no known rounding magnitudes: a TypeError that says what to
    pass, not a silently unsafe bound; exact_arithmetic=True asks for that bound explicitly."""
    task, _ = planted_spectrum_task(4, 10.0, 1.0, seed=0)

    class Custom:
        lam = task.lam
        inner_loss, inner_grad, inner_hvp = task.inner_loss, task.inner_grad, task.inner_hvp
        outer_loss, outer_grad, curvature_bounds = (task.outer_loss, task.outer_grad,
                                                    task.curvature_bounds)

    res = imaml_meta_gradient(Custom(), np.ones(4), inner_steps=5, cg_steps=3)
    c = task.constants(np.ones(4))
    with pytest.raises(TypeError, match="exact_arithmetic=True"):
        certify(res, c)
    with pytest.raises(TypeError, match="exact_arithmetic=True"):
        accurate_meta_gradient(Custom(), np.ones(4), 1e-6, constants=c)
    plain = certify(res, c, exact_arithmetic=True)
    assert not plain.rounding_safe and plain.method == "exact arithmetic"
    out = accurate_meta_gradient(Custom(), np.ones(4), 1e-3, constants=c, exact_arithmetic=True)
    assert not out.certificate.rounding_safe
    res.task = res.theta = None
    with pytest.raises(TypeError, match="carries no task"):
        certify(res, c)
