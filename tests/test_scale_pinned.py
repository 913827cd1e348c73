"""Pinned edge behaviour of the scale-safe pieces (issue 18, item 4), for mutation testing: the
power-of-two scaling and the scaled norms of the solvers, CG on scaled rows, the rounding
model's underflow terms, certify's plain call, its stacked form, its two thresholds, and the
accuracy-driven call's stated targets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from array_api_compat import array_namespace

from solvers import cg, count_host_reads, imaml_meta_gradient
from solvers._common import host_norm, pow2_scale, safe_norm
from theory import QuadraticTask, bounds
from theory.bounds import FORMULA_ROUNDINGS, aposteriori_bound, certify
from theory.tolerances import (Magnitudes, computation_magnitudes, gamma, norm_upper_bound,
                               round_up, scaled_norm, sum_rounding, underflow_threshold,
                               upper_norm)
from verify import accurate
from verify.tasks import planted_spectrum_task

TINY64 = float(np.finfo(np.float64).tiny)


# -- pow2_scale, safe_norm, host_norm (solvers/_common.py) -------------------------------------
@pytest.mark.parametrize("array", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pow2_scale_puts_the_largest_entry_in_one_to_two(array, dtype):
    fin = np.finfo(np.dtype(dtype))
    rows = np.array([[3.0, -4.0], [1.0, 0.5], [0.0, 0.0], [-1.5, 1.999], [6.0, 0.0]],
                    dtype=dtype)
    a = rows if array == "numpy" else torch.from_numpy(rows)
    s = np.asarray(pow2_scale(array_namespace(a), a), dtype=np.float64)
    assert s.tolist() == [4.0, 1.0, 1.0, 1.0, 4.0]
    # clamped to the normal powers of two at both ends
    ends = np.array([[float(fin.max)], [float(fin.tiny) / 4]], dtype=dtype)
    e = ends if array == "numpy" else torch.from_numpy(ends)
    s = np.asarray(pow2_scale(array_namespace(e), e), dtype=np.float64)
    assert s.tolist() == [2.0 ** (fin.maxexp - 1), 2.0 ** fin.minexp]
    # a row with inf or nan is not scaled
    bad = np.array([[np.inf, 1.0], [np.nan, 8.0]], dtype=dtype)
    b = bad if array == "numpy" else torch.from_numpy(bad)
    assert np.asarray(pow2_scale(array_namespace(b), b), dtype=np.float64).tolist() == [1.0, 1.0]


def test_pow2_scale_of_a_vector_is_a_scalar():
    s = pow2_scale(np, np.array([0.3, -5.0]))
    assert np.ndim(s) == 0 and float(s) == 4.0
    # a dtype whose exponent bits are not built: nothing scaled
    half = torch.ones(3, dtype=torch.float16) * 8
    assert pow2_scale(array_namespace(half), half) is None


@pytest.mark.parametrize("array", ["numpy", "torch"])
def test_safe_norm_has_no_underflow_or_overflow(array):
    conv = (lambda x: x) if array == "numpy" else torch.from_numpy  # noqa: E731
    xp = array_namespace(conv(np.ones(1)))
    # the rounding the certificate assumes of a scaled norm of d = 2 entries: γ₅ (and tiny)
    rel = gamma("float64", 2 + 3)
    for scale in (1e-170, 1e-300, 1.0, 1e160, 1e300):
        a = conv(np.array([3.0, 4.0]) * scale)
        assert float(safe_norm(xp, a)) == pytest.approx(5.0 * scale, rel=rel)
    rows = conv(np.array([[3e-200, 4e-200], [0.0, 0.0], [6e200, 8e200]]))
    got = np.asarray(safe_norm(xp, rows), dtype=np.float64)
    assert got[1] == 0.0 and got[0] == pytest.approx(5e-200, rel=rel)
    assert got[2] == pytest.approx(1e201, rel=rel)
    # float32 at 1e-22: the plain squares (1e-44) are subnormal, the scaled norm is exact
    f32 = conv(np.full(4, 2.0 ** -73, dtype=np.float32))
    assert float(safe_norm(array_namespace(f32), f32)) == 2.0 ** -72


def test_host_norm_reads_once_where_the_plain_norm_is_safe():
    xp = array_namespace(np.ones(1))
    low = math.sqrt(3 * TINY64 / 2.0 ** -53)          # √(d·tiny/u), d = 3
    at_floor = np.array([low, 0.0, 0.0])
    with count_host_reads() as reads:
        assert host_norm(xp, at_floor) == low
    assert reads.count == 1
    below = np.array([low / 2, 0.0, 0.0])
    with count_host_reads() as reads:
        assert host_norm(xp, below) == low / 2        # recomputed scaled: a second read
    assert reads.count == 2
    rel = gamma("float64", 3 + 3)
    tiny_vec = np.full(3, 1e-170)
    assert host_norm(xp, tiny_vec) == pytest.approx(math.sqrt(3) * 1e-170, rel=rel)
    with np.errstate(over="ignore"):
        assert host_norm(xp, np.full(3, 1e160)) == pytest.approx(math.sqrt(3) * 1e160, rel=rel)
    rows = np.array([[1.0, 0.0, 0.0], [1e-170, 0.0, 0.0]])
    assert host_norm(xp, rows).tolist() == [1.0, 1e-170]
    assert host_norm(xp, np.array([[1.0, 2.0, 2.0]])).tolist() == [3.0]
    assert math.isnan(host_norm(xp, np.array([np.nan, 1.0, 1.0])))


# -- CG on scaled rows (solvers/cg.py) ----------------------------------------------------------
def _system(d=6, seed=0):
    task, _ = planted_spectrum_task(d, 100.0, 1.0, seed=seed)
    M = np.eye(d) + np.asarray(task.A) / task.lam
    return M, (lambda v: v @ M.T)


@pytest.mark.parametrize("k", [-600, -40, 0, 37, 600])
def test_cg_is_bitwise_scale_invariant_by_powers_of_two(k):
    """CG of rhs·2^k is CG of rhs times 2^k, bitwise: iterate, residual norms, steps, history;
    also with x0 and a tolerance (atol scaled with it), and per row of a batch."""
    M, mv = _system()
    rhs = np.random.default_rng(1).standard_normal(6) * 3.0
    x0 = np.random.default_rng(2).standard_normal(6) * 0.1
    s = 2.0 ** k
    for kw in (dict(max_steps=4, rtol=0.0), dict(x0=x0, rtol=1e-6), dict(atol=1e-7)):
        base = cg(mv, rhs, history=True, **kw)
        kw_s = dict(kw, x0=kw["x0"] * s) if "x0" in kw else dict(kw)
        if "atol" in kw:
            kw_s["atol"] = kw["atol"] * s
        scaled = cg(mv, rhs * s, history=True, **kw_s)
        assert np.array_equal(scaled.x, base.x * s) and scaled.steps == base.steps
        assert scaled.residual_norm == base.residual_norm * s
        assert all(np.array_equal(a, b * s) for a, b in zip(scaled.history.iterates,
                                                            base.history.iterates))
        assert scaled.history.residual_norms == [r * s for r in base.history.residual_norms]
    # rows of one batch, each scaled by its own power of two (the same matvec on every row)
    rows = np.stack([rhs, rhs * s, np.zeros(6)])
    batch = cg(lambda v: v @ M.T, rows, rtol=1e-9)
    assert np.array_equal(batch.x[1], batch.x[0] * s) and not np.any(batch.x[2])
    assert batch.row_steps[0] == batch.row_steps[1] > 0 and batch.row_steps[2] == 0
    assert batch.residual_norm[1] == batch.residual_norm[0] * s and batch.residual_norm[2] == 0
    recorded = cg(lambda v: v @ M.T, rows, rtol=1e-9, history=True)
    assert np.array_equal(recorded.x, batch.x)
    for x, r in zip(recorded.history.iterates, recorded.history.residual_norms):
        assert np.array_equal(x[1], x[0] * s) and r[1] == r[0] * s


def test_cg_at_1e_minus_170_solves_instead_of_stopping_at_zero():
    """At rhs of size 1e-170 (not a power of two: not the same numbers as at unit scale) CG
    takes the steps it takes at unit scale and converges, where the plain rᵀr would be 0."""
    from solvers import Status

    M, mv = _system()
    rhs = np.random.default_rng(3).standard_normal(6)
    unit = cg(mv, rhs, rtol=1e-12)
    res = cg(mv, rhs * 1e-170, rtol=1e-12)
    assert res.status is Status.CONVERGED and res.steps == unit.steps > 0
    assert np.all(res.x != 0) and float(np.dot(rhs * 1e-170, rhs * 1e-170)) == 0.0


def test_cg_returns_the_start_itself_when_it_takes_no_step():
    M, mv = _system()
    x0 = np.linalg.solve(M, np.ones(6))
    res = cg(mv, np.ones(6), x0=x0, atol=1.0)
    assert res.steps == 0 and res.x is x0
    moved = cg(mv, np.ones(6), x0=x0 * 0.5, rtol=1e-9)
    assert moved.steps > 0 and moved.x is not x0


# -- the rounding model with underflow (theory/tolerances.py) ----------------------------------
def test_underflow_threshold_and_round_up():
    assert underflow_threshold("float64") == TINY64 == 2.0 ** -1022
    assert underflow_threshold("float32") == 2.0 ** -126
    assert underflow_threshold("float16") == 2.0 ** -14
    g = gamma("float64", 8)
    assert round_up(3.0, 7) == (3.0 + TINY64) / (1 - g)
    assert round_up(3.0, 7, 5) == (3.0 + 5 * TINY64) / (1 - g)
    assert round_up(0.0, 1) == TINY64 / (1 - gamma("float64", 2))
    with pytest.raises(ValueError, match="value"):
        round_up(-1.0, 1)


def test_scaled_and_upper_norms_at_any_scale():
    rel, tiny = gamma("float64", 2 + 3), underflow_threshold("float64")
    for scale in (2.0 ** -1070, 1e-300, 1e-170, 1.0, 1e150, 1e300):
        x = np.array([3.0, 4.0]) * scale
        assert scaled_norm(x) == pytest.approx(5.0 * scale, rel=rel, abs=tiny)
        assert upper_norm(x) == round_up(scaled_norm(x), x.size + 3)
    assert scaled_norm(np.zeros(3)) == 0.0 and scaled_norm(np.zeros(0)) == 0.0
    assert scaled_norm(np.array([np.inf, 1.0])) == math.inf
    assert math.isnan(scaled_norm(np.array([np.nan, 1.0])))
    assert scaled_norm(np.full((2, 2), 1e-170)) == pytest.approx(2e-170, rel=gamma("float64", 7))
    assert scaled_norm(np.array([1.0])) == 1.0
    assert scaled_norm(np.full(4, 2.0 ** 1023)) == math.inf      # the norm itself is 2¹⁰²⁴


def test_magnitudes_do_not_underflow_at_1e_minus_170():
    base, _ = planted_spectrum_task(4, 10.0, 0.5, seed=0)
    s = 1e-170
    task = QuadraticTask(base.A, base.b * s, base.A_query, base.b_query * s, base.lam)
    theta = np.ones(4) * s
    m = computation_magnitudes(task, theta, theta, theta)
    assert all(t > 0 for t in m.stationarity + m.residual + m.outer_grad)
    assert m.residual_gain == 2.0                     # max(1, 1/λ), λ = 0.5
    big = QuadraticTask(base.A, base.b, base.A_query, base.b_query, 4.0)
    assert computation_magnitudes(big, theta, theta, theta).residual_gain == 1.0
    assert Magnitudes((), (), (), 1, 1).residual_gain == 1.0


# -- certify (theory/bounds.py) -----------------------------------------------------------------
def _inexact(seed=0, d=4):
    task, _ = planted_spectrum_task(d, 10.0, 1.0, seed=seed)
    theta = np.linspace(-1, 1, d)
    return task, theta, imaml_meta_gradient(task, theta, inner_steps=3, cg_steps=2)


def test_certify_raises_its_bound_by_the_formula_rounding():
    task, theta, res = _inexact()
    c = task.constants(theta)
    m = computation_magnitudes(task, theta, res.phi, res.gradient)
    cert = certify(res, c, magnitudes=m)
    exact = certify(res, c, exact_arithmetic=True)
    assert FORMULA_ROUNDINGS == 20
    # the model's certificate before raising: aposteriori_bound with each norm's rounding
    from theory.tolerances import norm_upper_bound

    def up(v, terms, gain=1.0):
        return max(norm_upper_bound("float64", v, terms=terms, length=m.length, dim=m.dim,
                                    underflow_gain=gain) - v, 5e-324)

    raw = aposteriori_bound(c, stationarity=res.stationarity, system_residual=res.system_residual,
                            outer_grad_norm=res.outer_grad_norm,
                            stationarity_rounding=up(res.stationarity, m.stationarity),
                            residual_rounding=up(res.system_residual, m.residual, m.residual_gain),
                            outer_grad_rounding=up(res.outer_grad_norm, m.outer_grad))
    assert cert.bound == round_up(raw.bound, 20, 20)
    assert cert.rounding == cert.bound - exact.bound and cert.rounding > 0
    assert (cert.delta, cert.delta_prime, cert.B) == (raw.delta, raw.delta_prime, raw.B)


def test_certify_exact_residuals_threshold_is_half_the_bound(monkeypatch):
    """Magnitudes chosen so that the model's rounding is just below or just above half of its
    certificate: the exact residuals are evaluated only in the second case."""
    task, theta, res = _inexact(d=3)
    c = task.constants(theta)
    exact_norms = bounds.certify(res, c, exact_arithmetic=True)
    assert bounds.EXACT_RESIDUALS_SHARE == 0.5
    calls = []
    import theory.exact
    real = theory.exact.residual_norm_bounds
    monkeypatch.setattr(theory.exact, "residual_norm_bounds",
                        lambda *a: calls.append(1) or real(*a))

    def with_stationarity_term(t):
        m = Magnitudes((t,), (0.0,), (0.0,), 3, 3)
        return bounds.certify(res, c, magnitudes=m)

    # the rounding of the stationarity term enters the model's certificate as (λL/μ)·γ·t/μ:
    # bisect (on the model alone) for the t at which its rounding is half of it, then step off
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", math.inf)
    lo, hi = 0.0, 1e20
    for _ in range(200):
        mid = (lo + hi) / 2
        cert = with_stationarity_term(mid)
        lo, hi = (mid, hi) if cert.rounding < 0.5 * cert.bound else (lo, mid)
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", 0.5)
    calls.clear()
    below = with_stationarity_term(lo * (1 - 1e-9))
    assert below.rounding < 0.5 * below.bound and calls == [] and below.method == "model"
    above = with_stationarity_term(hi * (1 + 1e-9))
    assert calls == [1] and above.method == "exact residuals"
    assert exact_norms.bound > 0


def test_certify_of_a_stack_is_one_certificate_per_task():
    singles = [planted_spectrum_task(5, 10.0 * (i + 1), 1.0, seed=i)[0] for i in range(3)]
    stack = QuadraticTask.stack(singles)
    theta = np.random.default_rng(0).standard_normal((3, 5))
    res = imaml_meta_gradient(stack, theta, inner_steps=10, cg_steps=3)
    consts = stack.constants(theta)
    certs = certify(res, consts)
    assert isinstance(certs, tuple) and len(certs) == 3
    for i, single in enumerate(singles):
        alone = imaml_meta_gradient(single, theta[i], inner_steps=10, cg_steps=3)
        assert certs[i] == certify(alone, consts[i])
    with pytest.raises(ValueError, match="one Constants per task"):
        certify(res, consts[0])
    with pytest.raises(ValueError, match="one Constants per task"):
        certify(res, consts[:2])
    with pytest.raises(TypeError, match="both task= and theta="):
        certify(res, consts, task=stack)


def test_result_rows_carry_their_task_and_theta():
    singles = [planted_spectrum_task(4, 10.0, 1.0, seed=i)[0] for i in range(2)]
    stack = QuadraticTask.stack(singles)
    theta = np.ones((2, 4))
    res = imaml_meta_gradient(stack, theta, inner_steps=2, cg_steps=2)
    assert res.task is stack and res.theta is theta
    row = res.row(1)
    assert np.array_equal(row.task.A, singles[1].A) and np.array_equal(row.theta, theta[1])

    class NoIndex:                  # a stack that cannot be indexed: rows carry no task
        def __init__(self, t):
            self.t = t
            self.lam = t.lam

        def __getattr__(self, name):
            return getattr(self.t, name)

    from solvers.imaml import _task_row
    assert _task_row(None, 0) is None and _task_row(NoIndex(singles[0]), 0) is None
    assert _task_row(singles[0], 0) is None          # a single task raises TypeError on [i]
    assert _task_row(stack, 5) is None                # out of range


# -- accurate_meta_gradient's stated targets (verify/accurate.py) -------------------------------
def test_targets_are_stated_as_normal_numbers():
    assert accurate._stated(0.0) == TINY64 and accurate._stated(1e-320) == TINY64
    assert accurate._stated(1e-3) == 1e-3 and accurate._stated(math.inf) == math.inf
    assert accurate._row_norms(np.array([3e-200, 4e-200])).tolist() == [upper_norm(
        np.array([3e-200, 4e-200]))]
    assert accurate._row_norms(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist() == [
        upper_norm(np.array([3.0, 4.0])), upper_norm(np.zeros(2))]


def test_safe_norm_without_a_scaling_is_the_plain_norm():
    half = torch.tensor([3.0, 4.0], dtype=torch.float16)
    assert float(safe_norm(array_namespace(half), half)) == 5.0


def test_host_norm_of_rows_recomputes_only_what_the_plain_norm_cannot():
    xp = array_namespace(np.ones(1))
    low = math.sqrt(2 * TINY64 / 2.0 ** -53)          # d = 2
    exact_floor = np.array([[low, 0.0], [1.0, 0.0]])
    with count_host_reads() as reads:
        assert host_norm(xp, exact_floor).tolist() == [low, 1.0]
    assert reads.count == 1                            # at the floor: the plain norm is kept
    with np.errstate(over="ignore"):
        huge = host_norm(xp, np.array([[1e200, 1e200], [1.0, 0.0]]))
    assert huge[0] == pytest.approx(math.sqrt(2) * 1e200, rel=gamma("float64", 5)) and huge[1] == 1.0


def test_the_underflow_gain_multiplies_only_the_underflow_part():
    g = gamma("float16", 12)
    tiny = 2.0 ** -14
    assert sum_rounding("float16", (1.0,), length=10, extra_ops=1, underflow_gain=4.0) == (
        pytest.approx(g + 12 * (1 + g) * 4.0 * tiny, rel=1e-12))
    g15 = gamma("float16", 10 + 4 + 1)          # the default extra_ops = 4
    assert norm_upper_bound("float16", 0.0, terms=(0.0,), length=10, dim=1, underflow_gain=4.0) == (
        pytest.approx(tiny / (1 - gamma("float16", 4)) + 15 * (1 + g15) * 4.0 * tiny, rel=1e-12))
    with pytest.raises(ValueError, match="underflow_gain"):
        sum_rounding("float64", (1.0,), length=1, underflow_gain=0.0)


def test_logistic_magnitudes_are_rounded_up_exactly_as_stated():
    from theory.logistic import LogisticTask

    X = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]])
    Xq = np.array([[0.0, 3.0], [1.0, 0.0], [2.0, 2.0], [0.5, 0.0]])   # m = 4 rows, d = 2
    task = LogisticTask(X, np.array([1.0, -1.0, 1.0]), Xq, np.array([1.0, -1.0, 1.0, 1.0]), 0.5)
    theta, phi, g = np.array([0.0, 2.0]), np.array([3.0, 4.0]), np.array([0.0, 2.0])
    m = computation_magnitudes(task, theta, phi, g)
    r = np.array([upper_norm(row) for row in X])
    rq = np.array([upper_norm(row) for row in Xq])
    m1, m2 = (round_up(float(np.mean(r ** k)), 3 + k + 1) for k in (1, 2))
    q1, q2 = (round_up(float(np.mean(rq ** k)), 4 + k + 1) for k in (1, 2))
    p = upper_norm(phi)
    assert m.outer_grad == (2 * q1, q2 * p / 4)
    assert m.stationarity[:2] == (2 * m1, m2 * p / 4)
    assert m.residual_gain == 2.0 and (m.length, m.dim) == (4 + 2 + 10, 2)
    wide = LogisticTask(X, np.array([1.0, -1.0, 1.0]), Xq, np.array([1.0, -1.0, 1.0, 1.0]), 3.0)
    assert computation_magnitudes(wide, theta, phi, g).residual_gain == 1.0


def test_quadratic_magnitudes_are_products_of_upper_bounds():
    A = np.array([[2.0, 1.0], [1.0, 2.0]])
    task = QuadraticTask(A, np.array([3.0, 4.0]), np.eye(2), np.array([0.0, 5.0]), 2.0)
    theta, phi, g = np.array([0.0, 1.0]), np.array([0.0, 2.0]), np.array([3.0, 4.0])
    m = computation_magnitudes(task, theta, phi, g)
    from theory.tolerances import abs_matrix_norm
    a, aq = abs_matrix_norm(A), abs_matrix_norm(np.eye(2))
    p, t, gv = upper_norm(phi), upper_norm(theta), upper_norm(g)
    assert m.stationarity == (a * p, upper_norm(np.array([3.0, 4.0])), 2.0 * p, 2.0 * t)
    assert m.outer_grad == (aq * p, upper_norm(np.array([0.0, 5.0])))
    assert m.residual == m.outer_grad + (gv, a * gv / 2.0)
    assert (m.length, m.dim, m.residual_gain) == (2, 2, 1.0)


def test_aposteriori_bound_labels_what_it_was_given():
    from theory.constants import Constants

    c = Constants(beta=10.0, mu=1.0, kappa=10.0, L=2.0, B=1.0, rho=0.0, D=1.0, lam=1.0)
    full = aposteriori_bound(c, stationarity=1.0, system_residual=1.0, outer_grad_norm=1.0,
                             stationarity_rounding=1e-3, residual_rounding=1e-3,
                             outer_grad_rounding=1e-3)
    assert full.method == "model" and full.rounding_safe
    for missing in range(3):
        r = [1e-3, 1e-3, 1e-3]
        r[missing] = 0.0
        part = aposteriori_bound(c, stationarity=1.0, system_residual=1.0, outer_grad_norm=1.0,
                                 stationarity_rounding=r[0], residual_rounding=r[1],
                                 outer_grad_rounding=r[2])
        assert part.method == "exact arithmetic" and not part.rounding_safe


def test_certify_refuses_a_result_with_half_its_problem():
    task, theta, res = _inexact()
    res.theta = None
    with pytest.raises(TypeError, match="carries no task"):
        certify(res, task.constants(theta))


def test_the_model_at_an_exactly_zero_result_is_its_underflow_part(monkeypatch):
    """b = b_q = θ = 0: φ = g = 0 and every computed norm is 0; the model's certificate is then
    the underflow part alone, each diagnostic's with its own gain (the residual's 1/λ = 4)."""
    base, _ = planted_spectrum_task(3, 10.0, 0.25, seed=0)
    task = QuadraticTask(base.A, np.zeros(3), base.A_query, np.zeros(3), base.lam)
    res = imaml_meta_gradient(task, np.zeros(3), inner_steps=3, cg_steps=2)
    assert res.stationarity == res.system_residual == res.outer_grad_norm == 0.0
    c = task.constants(np.zeros(3))
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", math.inf)
    m = computation_magnitudes(task, np.zeros(3), res.phi, res.gradient)
    assert m.residual_gain == 4.0

    def up(terms, gain):
        return norm_upper_bound("float64", 0.0, terms=terms, length=m.length, dim=m.dim,
                                underflow_gain=gain)

    raw = aposteriori_bound(c, stationarity=0.0, system_residual=0.0, outer_grad_norm=0.0,
                            stationarity_rounding=up(m.stationarity, 1.0),
                            residual_rounding=up(m.residual, 4.0),
                            outer_grad_rounding=up(m.outer_grad, 1.0))
    assert certify(res, c).bound == round_up(raw.bound, FORMULA_ROUNDINGS, FORMULA_ROUNDINGS)
