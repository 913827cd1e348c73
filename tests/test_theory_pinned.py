"""theory/ pinned where mutation testing (tools/mutate.py; survivors in
tools/surviving_mutants.md) found nothing that fixed it: the CG step count for a relative error
is the smallest count meeting the Chebyshev bound, the residual targets of an accuracy ε solve
the certificate for any μ (not only μ = 1), and a stack of quadratic tasks is built, refused and
evaluated exactly as its tasks alone."""
from __future__ import annotations

import numpy as np
import pytest

from _tolerances import relative_tolerance
from theory import QuadraticTask
from theory.bounds import (aposteriori_bound, cg_error_bound, cg_steps_for_error,
                           meta_gradient_tolerances)
from theory.constants import Constants
from verify.tasks import planted_spectrum_task


@pytest.mark.parametrize("norm", ["2", "M"])
@pytest.mark.parametrize("kappa", [1.0, 2.0, 3.5, 100.0, 1e6])
def test_cg_steps_for_error_is_the_smallest_count(kappa, norm):
    """k = min{k : cg_error_bound(κ, k, 1) ≤ target} (docs/mathematics.md §4), for targets
    from above the bound's start (no step needed) to far below."""
    for target in (5.0, 3.0, 2.0, 1.0, 0.3, 1e-3, 1e-8, 1e-15):
        k = cg_steps_for_error(kappa, target, norm=norm)
        assert cg_error_bound(kappa, k, 1.0, norm=norm) <= target, (target, k)
        assert k == 0 or cg_error_bound(kappa, k - 1, 1.0, norm=norm) > target, (target, k)


def test_cg_steps_for_error_boundaries():
    # κ = 1 (q = 0): one step solves; none when the bound's start 2√κ = 2 is already the target
    assert cg_steps_for_error(1.0, 2.0) == 0 and cg_steps_for_error(1.0, 1.999) == 1
    assert cg_steps_for_error(1.0, 2.0, norm="M") == 0
    # a target equal to the bound at k steps needs exactly k steps (≤, not <)
    for kappa, k in ((4.0, 7), (100.0, 30), (2.0, 3)):
        for norm in ("2", "M"):
            assert cg_steps_for_error(kappa, cg_error_bound(kappa, k, 1.0, norm=norm),
                                      norm=norm) == k
    with pytest.raises(ValueError, match="rel_error"):
        cg_steps_for_error(10.0, 0.0)


@pytest.mark.parametrize("mu", [0.5, 3.0])
def test_meta_gradient_tolerances_solve_the_certificate_for_any_mu(mu):
    """At the worst case the targets allow (residuals at the targets, ‖∇L(φ)‖ = B + Lδ) the
    certificate is ε and its CG part ε/2, to rounding (the existing test has μ = 1, where μ,
    μ² and 1/μ coincide)."""
    c = Constants(10.0 * mu, mu, 10.0, 2.0, 3.0, 0.5, 1.0, 0.7)
    rel = relative_tolerance("float64", kappa=c.kappa, dim=10)   # a handful of operations
    for eps in (1e-9, 1e-3, 10.0):
        inner_tol, cg_tol = meta_gradient_tolerances(c, eps)
        delta = inner_tol / c.mu
        cert = aposteriori_bound(c, stationarity=inner_tol, system_residual=cg_tol,
                                 outer_grad_norm=c.B + c.L * delta)
        assert cert.bound == pytest.approx(eps, rel=rel)
        assert cert.delta_prime == pytest.approx(eps / 2, rel=rel)
        assert cg_tol == pytest.approx(eps * mu / (2 * c.lam), rel=relative_tolerance("float64", dim=3))


# -- stacks of quadratic tasks (theory/quadratic.py) ----------------------------------------------

def _singles(dims=(3, 3, 3), lams=(1.0, 2.0, 0.5)):
    return [planted_spectrum_task(d, 10.0, lam, seed=i, query="independent")[0]
            for i, (d, lam) in enumerate(zip(dims, lams))]


def test_stack_refuses_what_is_not_a_list_of_single_tasks():
    singles = _singles()
    stack = QuadraticTask.stack(singles)
    for bad in ([], [singles[0], object()], [stack], [singles[0], stack]):
        with pytest.raises(TypeError, match="non-empty sequence of single QuadraticTasks"):
            QuadraticTask.stack(bad)
    other = _singles(dims=(3, 4, 3))
    with pytest.raises(ValueError, match=r"tasks\[1\] has dimension 4, tasks\[0\] has 3"):
        QuadraticTask.stack(other)
    other = _singles(dims=(3, 3, 4))
    with pytest.raises(ValueError, match=r"tasks\[2\] has dimension 4, tasks\[0\] has 3"):
        QuadraticTask.stack(other)


def test_one_task_at_several_points_is_evaluated_point_by_point():
    """A single task's losses and gradients at points stacked along leading axes are those at
    each point: ½xᵀAx + xᵀb per point, not one sum over all of them."""
    task = _singles()[0]
    rng = np.random.default_rng(0)
    for shape in ((4, 3), (2, 5, 3)):
        pts = rng.standard_normal(shape)
        flat = pts.reshape(-1, 3)
        for loss, grad, A, b in ((task.inner_loss, task.inner_grad, task.A, task.b),
                                 (task.outer_loss, task.outer_grad, task.A_query, task.b_query)):
            expected = np.array([0.5 * p @ A @ p + p @ b for p in flat]).reshape(shape[:-1])
            got = loss(pts)
            assert got.shape == shape[:-1]
            np.testing.assert_allclose(got, expected, rtol=relative_tolerance("float64", dim=9),
                                       atol=0)
            np.testing.assert_allclose(grad(pts).reshape(-1, 3), flat @ A.T + b,
                                       rtol=relative_tolerance("float64", dim=9), atol=0)


@pytest.mark.parametrize("radius", [None, 2.0])
def test_stacked_constants_are_each_tasks_constants(radius):
    """Constants of a stack (linear algebra done once on the stack) are those of each task
    alone, with the gradient allowance δ included (B grows by L·δ)."""
    singles = _singles()
    stack = QuadraticTask.stack(singles)
    theta = np.random.default_rng(1).standard_normal((3, 3))
    delta = 0.25
    rel = relative_tolerance("float64", kappa=10.0, dim=9)
    for i, (got, single) in enumerate(zip(stack.constants(theta, radius, delta), singles)):
        want = single.constants(theta[i], radius, delta)
        assert got.scope == want.scope and got.radius == want.radius
        for name in ("beta", "mu", "kappa", "L", "B", "rho", "D", "lam"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=rel, abs=0), name
        assert want.B > single.constants(theta[i], radius, 0.0).B   # δ enters B


# -- the 50-digit reference (theory/exact.py) ----------------------------------------------------

def _mp_solve(task, rhs):
    """(A + λI)⁻¹ rhs in 60-digit mpmath LU, from the task's float64 data taken exactly: a route
    independent of theory.exact's dyadic refinement."""
    import mpmath
    C = mpmath.matrix(task.A.tolist()) + mpmath.mpf(task.lam) * mpmath.eye(task.dim)
    return mpmath.lu_solve(C, rhs)


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30])
def test_exact_references_against_mpmath_lu_at_any_scale(scale):
    """inner_solution, outer_grad and implicit_gradient (at a float φ and at the 50-digit φ*)
    agree with 60-digit LU to 1e-40 relative, also with data of magnitude 1e-30 or 1e30 (where a
    stopping test judged against the wrong magnitude would stop after one float64 pass)."""
    import mpmath

    from theory.exact import QuadraticReference
    base, _ = planted_spectrum_task(4, 100.0, 0.7, seed=5)
    rng = np.random.default_rng(2)
    task = QuadraticTask(base.A, scale * base.b, base.A_query, -scale * base.b_query, base.lam)
    theta = scale * rng.standard_normal(4)
    phi_float = scale * rng.standard_normal(4)
    ref = QuadraticReference(task)
    with mpmath.workdps(60):
        Aq, bq = mpmath.matrix(task.A_query.tolist()), mpmath.matrix(task.b_query.tolist())
        lam = mpmath.mpf(task.lam)
        phi = _mp_solve(task, lam * mpmath.matrix(theta.tolist()) - mpmath.matrix(task.b.tolist()))
        expected = {
            "inner": (phi, ref.inner_solution(theta)),
            "outer": (Aq * mpmath.matrix(phi_float.tolist()) + bq, ref.outer_grad(phi_float)),
            "implicit_float": (lam * _mp_solve(task, Aq * mpmath.matrix(phi_float.tolist()) + bq),
                               ref.implicit_gradient(phi_float)),
            "implicit_mp": (lam * _mp_solve(task, Aq * phi + bq),
                            ref.implicit_gradient(ref.inner_solution(theta))),
        }
        for name, (want, got) in expected.items():
            size = max(abs(want[i]) for i in range(4))
            gap = max(abs(want[i] - got[i]) for i in range(4))
            assert gap <= 1e-40 * size, (name, float(gap / size))


def test_exact_error_is_exact_at_one_unit_and_across_wide_spans():
    """‖x − ref‖ is exact, then rounded once: a difference of one unit in the last place of 1
    is 2⁻⁵², and a single differing entry 2⁹⁰…2¹⁰⁰ times the smallest entry comes back as itself
    (the squared norm is cut to 200 bits by an even shift, whatever its length's parity)."""
    import mpmath

    from theory.exact import QuadraticReference
    ref = QuadraticReference(planted_spectrum_task(2, 10.0, 1.0, seed=0)[0])
    with mpmath.workdps(60):
        one_ulp_up = np.array([mpmath.mpf(1) + mpmath.mpf(2) ** -52, mpmath.mpf(3)], dtype=object)
        assert ref.error(np.array([1.0, 3.0]), one_ulp_up) == 2.0 ** -52
        assert ref.error(np.array([1.0, 3.0]), np.array([mpmath.mpf(1), mpmath.mpf(3)],
                                                        dtype=object)) == 0.0
        for k in range(90, 100):
            for mantissa in (1.0, 1.5):
                x = np.array([mantissa * 2.0 ** k, 2.0 ** -60])
                r = np.array([mpmath.mpf(0), mpmath.mpf(2.0 ** -60)], dtype=object)
                assert ref.error(x, r) == mantissa * 2.0 ** k, (k, mantissa)


def test_exact_int_to_float():
    """v·2^E as a float: exact up to 53 bits (including v = 1 and small odd v), negative values
    mirrored, and within a unit in the last place beyond 62 bits."""
    from theory.exact import _int_to_float
    assert _int_to_float(0, 7) == 0.0
    assert _int_to_float(1, 0) == 1.0 and _int_to_float(1, -3) == 0.125
    assert _int_to_float(3, 0) == 3.0 and _int_to_float(-3, 2) == -12.0
    big = (1 << 70) + (1 << 20)
    assert abs(_int_to_float(big, -70) - (1.0 + 2.0 ** -50)) <= 2.0 ** -52
    assert _int_to_float(-big, -70) == -_int_to_float(big, -70)
