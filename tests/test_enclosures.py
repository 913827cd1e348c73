"""The 50-digit reference as an enclosure (issue 18, item 5; theory/exact.py), tested against
exact rationals (Python's fractions: every float64 is a rational, so Alg*(θ) and the
meta-gradient of a small quadratic task are exact fractions): each centre lies within its
proven radius of the exact value, the radius is as small as the digits asked for, error() is a
proven upper bound and error_bounds() brackets the exact distance; the verified λmin, the exact
residual norms of the certificate, and κ = 1e6 at d = 1000."""
from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from theory import QuadraticTask, bounds
from theory.exact import (MAX_PASSES, QuadraticReference, _cholesky_completes, _down,
                          _dyadic_wide, _norm_range, _shifted_bound, _up,
                          max_eigenvalue_upper_bound, meta_gradient_error_bound,
                          min_eigenvalue_lower_bound, residual_norm_bounds)
from theory.tolerances import abs_matrix_norm, unit_roundoff, underflow_threshold
from verify.accurate import AccuracyNotReached, accurate_meta_gradient
from verify.tasks import nonconvex_task, planted_spectrum_task


# -- exact rationals -------------------------------------------------------------------------
def _fr(x):
    return [Fraction(float(v)) for v in np.asarray(x, dtype=np.float64).reshape(-1)]


def _fr_matrix(M):
    M = np.asarray(M, dtype=np.float64)
    return [[Fraction(float(v)) for v in row] for row in M]


def _solve(M, rhs):
    """M⁻¹ rhs in exact rationals (Gaussian elimination with pivoting on nonzero entries)."""
    n = len(rhs)
    a = [row[:] + [r] for row, r in zip(M, rhs)]
    for j in range(n):
        p = next(i for i in range(j, n) if a[i][j] != 0)
        a[j], a[p] = a[p], a[j]
        for i in range(n):
            if i != j and a[i][j] != 0:
                f = a[i][j] / a[j][j]
                a[i] = [x - f * y for x, y in zip(a[i], a[j])]
    return [a[i][n] / a[i][i] for i in range(n)]


def _matvec(M, x):
    return [sum(m * v for m, v in zip(row, x)) for row in M]


class Exact:
    """The exact rational references of a quadratic task's stored numbers."""

    def __init__(self, task):
        self.A, self.Aq = _fr_matrix(task.A), _fr_matrix(task.A_query)
        self.b, self.bq = _fr(task.b), _fr(task.b_query)
        self.lam = Fraction(float(task.lam))
        n = len(self.b)
        self.C = [[a + (self.lam if i == j else 0) for j, a in enumerate(row)]
                  for i, row in enumerate(self.A)]
        self.n = n

    def inner(self, theta):
        return _solve(self.C, [self.lam * t - b for t, b in zip(_fr(theta), self.b)])

    def outer(self, phi):
        return [v + b for v, b in zip(_matvec(self.Aq, phi), self.bq)]

    def implicit(self, phi):
        return [self.lam * x for x in _solve(self.C, self.outer(phi))]

    def meta_gradient(self, theta):
        return self.implicit(self.inner(theta))


def _mpf_fraction(v) -> Fraction:
    """An mpf exactly, through its raw (sign, mantissa, exponent): no re-rounding."""
    sign, man, exp, _ = v._mpf_
    f = Fraction(int(man)) * (Fraction(2) ** int(exp))
    return -f if sign else f


def _dist2(centre, exact):
    """‖centre − exact‖² exactly (centre: mpf numbers, exact: fractions)."""
    return sum((_mpf_fraction(c) - e) ** 2 for c, e in zip(centre, exact))


TASKS = [
    ("planted κ=100", lambda: planted_spectrum_task(3, 100.0, 0.7, seed=1, query="reversed")[0]),
    ("planted κ=1e6", lambda: planted_spectrum_task(4, 1e6, 0.05, seed=2, query="independent")[0]),
    ("non-convex L̂", lambda: nonconvex_task(3, 50.0, 2.0, seed=3)[0]),
    ("data 1e-30", lambda: _scaled(planted_spectrum_task(3, 10.0, 1.0, seed=4)[0], 1e-30)),
    ("data 1e30", lambda: _scaled(planted_spectrum_task(3, 10.0, 1.0, seed=5)[0], 1e30)),
]


def _scaled(task, s):
    return QuadraticTask(task.A, task.b * s, task.A_query, task.b_query * s, task.lam)


def _theta(task, seed=0):
    scale = max(float(np.max(np.abs(task.b))), 1e-300) if np.any(task.b) else 1.0
    return np.random.default_rng(seed).standard_normal(task.dim) * scale


@pytest.mark.parametrize("name,make", TASKS, ids=[t[0] for t in TASKS])
@pytest.mark.parametrize("dps", [50, 12])
def test_every_reference_encloses_the_exact_rational(name, make, dps):
    """Centre within its radius of the exact value, for each reference; at 50 digits the radius
    is within 10^-dps (where refinement stops) plus the centre's own rounding to mpmath numbers
    (√d·2^-prec) of the exact value's size; at 12 digits the refinement stops early, so the
    residual part of the radius is what encloses."""
    task = make()
    theta = _theta(task)
    phi_float = _theta(task, 1)
    ref, ex = QuadraticReference(task, dps=dps), Exact(task)
    with mpmath.workdps(dps):
        prec = mpmath.mp.prec
    pairs = {"inner": (ref.inner_solution(theta), ex.inner(theta)),
             "outer": (ref.outer_grad(phi_float), ex.outer(_fr(phi_float))),
             "implicit": (ref.implicit_gradient(phi_float), ex.implicit(_fr(phi_float))),
             "meta": (ref.meta_gradient(theta), ex.meta_gradient(theta)),
             "reptile": (ref.inner_gradient_over_lam(theta),
                         [t - p for t, p in zip(_fr(theta), ex.inner(theta))])}
    for what, (centre, exact) in pairs.items():
        radius = Fraction(ref.radius(centre))
        assert _dist2(centre, exact) <= radius ** 2, (name, what)
        size2 = sum(e * e for e in exact)
        if dps == 50:
            rel = Fraction(10) ** -dps * 10 + Fraction(math.sqrt(task.dim)) * Fraction(2) ** -prec
            assert radius ** 2 <= rel ** 2 * size2 * 4, (name, what)


def test_error_is_a_proven_upper_bound_and_error_bounds_bracket_it():
    task = planted_spectrum_task(4, 1e3, 0.5, seed=7, query="reversed")[0]
    theta = _theta(task)
    ref, ex = QuadraticReference(task), Exact(task)
    g = ref.meta_gradient(theta)
    exact = ex.meta_gradient(theta)
    for x in (task.meta_gradient(theta), np.zeros(4), ref.as_float(g), ref.as_float(g) * 1.5):
        d2 = sum((Fraction(float(v)) - e) ** 2 for v, e in zip(x, exact))
        lo, hi = ref.error_bounds(x, g)
        assert Fraction(lo) ** 2 <= d2 <= Fraction(hi) ** 2
        assert ref.error(x, g) == hi
        # the bracket is the radius wide (plus the directed rounding of the ends)
        assert Fraction(hi) - Fraction(lo) <= 2 * Fraction(ref.radius(g)) + 4 * Fraction(
            math.ulp(hi))
    # a reference made outside the class has no radius: its numbers are taken as exact
    outside = np.array([mpmath.mpf(float(v)) for v in ref.as_float(g)], dtype=object)
    assert ref.radius(outside) is None
    assert ref.error_bounds(ref.as_float(g), outside) == (0.0, 0.0)


def test_a_planted_wrong_centre_is_not_enclosed_by_its_old_radius():
    """Negative control: the centre moved by ten times its radius (a wrong reference) lies
    outside the enclosure the check relies on, so a test of containment can fail."""
    task = planted_spectrum_task(3, 100.0, 0.7, seed=1, query="reversed")[0]
    theta = _theta(task)
    ref, ex = QuadraticReference(task), Exact(task)
    g = ref.meta_gradient(theta)
    r = Fraction(ref.radius(g))
    with mpmath.workdps(60):
        shift = mpmath.mpf(10 * r.numerator) / r.denominator
        moved = np.array([c + shift for c in g], dtype=object)
    assert _dist2(moved, ex.meta_gradient(theta)) > r ** 2


# -- the verified λmin -------------------------------------------------------------------------
def _is_psd_exact(M) -> bool:
    """Positive semidefinite, exactly (LDLᵀ in fractions; a zero pivot needs a zero column)."""
    a = [row[:] for row in M]
    n = len(a)
    for j in range(n):
        if a[j][j] < 0:
            return False
        if a[j][j] == 0:
            if any(a[i][j] != 0 for i in range(j + 1, n)):
                return False
            continue
        for i in range(j + 1, n):
            f = a[i][j] / a[j][j]
            a[i] = [x - f * y for x, y in zip(a[i], a[j])]
    return True


@pytest.mark.parametrize("name,make", TASKS[:3], ids=[t[0] for t in TASKS[:3]])
def test_min_eigenvalue_bound_is_proven_and_tight(name, make):
    """A + λI − μ₋I is positive semidefinite in exact rationals, and μ₋ is within the
    Cholesky backward error (n²·u·tr) of the floating-point λmin; likewise L₊ ≥ λmax(Aₜ)."""
    task = make()
    A, lam = np.asarray(task.A, dtype=np.float64), float(task.lam)
    mu = min_eigenvalue_lower_bound(A, lam)
    n = task.dim
    C = [[Fraction(float(A[i, j])) + (Fraction(lam) - Fraction(mu) if i == j else 0)
          for j in range(n)] for i in range(n)]
    assert _is_psd_exact(C)
    C64 = A + lam * np.eye(n)
    mu_float = float(np.linalg.eigvalsh(C64)[0])
    # the nearest shift (|μ̃|·2⁻⁴⁰ below μ̃) and the backward error α·tr ≤ 2(n + 1)u·n·max|cᵢⱼ|,
    # twice over for the shift's own rounding and the eigenvalue's
    slack = abs(mu_float) * 2.0 ** -40 + 8 * (n + 1) * n * unit_roundoff("float64") * float(
        np.max(np.abs(C64)))
    assert mu_float - slack <= mu <= mu_float
    L = max_eigenvalue_upper_bound(task.A_query)
    Aq = np.asarray(task.A_query, dtype=np.float64)
    M = [[(Fraction(L) if i == j else 0) - Fraction(float(Aq[i, j])) for j in range(n)]
         for i in range(n)]
    assert _is_psd_exact(M)


def test_negative_control_an_indefinite_matrix_is_not_proven_definite():
    A = np.diag([1.0, -1e-3, 2.0])
    assert min_eigenvalue_lower_bound(A) < 0
    assert not _cholesky_completes(A)
    assert _cholesky_completes(np.diag([1.0, 1e-300, 2.0]))
    ref = QuadraticReference(QuadraticTask(np.zeros((2, 2)), np.ones(2), np.eye(2), np.ones(2),
                                           1.0))
    assert ref.min_eigenvalue > 0


def test_shifted_bound_is_the_stated_formula():
    """The bound of one Cholesky test, in exact rationals: σ − 2^k(α·tr(Hₛ) + 2n(n + 1)·tiny +
    n·tiny) − maxᵢ(u|hᵢᵢ|/(1 − u) + tiny), α = γ_{n+2}/(1 − γ_{n+2}) (Higham's γ_{n+1} and one
    rounding more for a division done as a product with a rounded reciprocal)."""
    A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.25], [0.5, 0.25, 2.0]])
    lam, sigma, n = 0.75, 1.5, 3
    u, tiny = Fraction(unit_roundoff("float64")), Fraction(underflow_threshold("float64"))
    diag = [math.fsum((A[i, i], lam, -sigma)) for i in range(n)]
    k = math.frexp(max(abs(v) for v in [*diag, 1.0, 0.5, 0.25]))[1] - 1
    g = (n + 2) * u / (1 - (n + 2) * u)
    alpha = g / (1 - g)
    trace = sum(Fraction(d) for d in diag) / Fraction(2) ** k
    want = (Fraction(sigma) - Fraction(2) ** k * (alpha * trace + 2 * n * (n + 1) * tiny
                                                  + n * tiny)
            - max(u * abs(Fraction(d)) / (1 - u) + tiny for d in diag))
    assert _shifted_bound(A, lam, sigma) == want
    assert _shifted_bound(A, lam, 100.0) is None          # A + λI − 100I is not definite


def test_directed_rounding_and_integer_roots():
    third = Fraction(1, 3)
    assert _down(third) < third < _up(third) and math.nextafter(_down(third), 1) == _up(third)
    assert _up(Fraction(1, 2)) == _down(Fraction(1, 2)) == 0.5
    assert _up(Fraction(10) ** 400) == math.inf and _down(Fraction(10) ** 400) == np.finfo(float).max
    assert _down(-Fraction(10) ** 400) == -math.inf
    low, high = _norm_range(np.array([3, 4], dtype=object), -2)     # ‖(3, 4)·2⁻²‖ = 5/4
    assert low == high == Fraction(5, 4)
    low, high = _norm_range(np.array([1, 1], dtype=object), 0)      # √2 between 1 and 2
    assert (low, high) == (1, 2)


def test_wide_dyadic_is_exact_for_long_double():
    x = np.array([np.longdouble(1) + np.longdouble(2) ** -60, -np.longdouble(3) / 7], dtype=np.longdouble)
    M, E = _dyadic_wide(x)
    for m, v in zip(M, x):
        assert Fraction(int(m)) * Fraction(2) ** E == Fraction(*v.as_integer_ratio())
    M64, E64 = _dyadic_wide(np.array([0.5, -1.25]))
    assert [Fraction(int(m)) * Fraction(2) ** E64 for m in M64] == [Fraction(1, 2), Fraction(-5, 4)]


# -- the certificate's residuals, exactly ----------------------------------------------------
def test_residual_norm_bounds_are_the_exact_norms_rounded_up():
    task = planted_spectrum_task(3, 50.0, 0.3, seed=9, query="reversed")[0]
    theta, phi, g = _theta(task), _theta(task, 1), _theta(task, 2)
    ex = Exact(task)
    th, p, gv = _fr(theta), _fr(phi), _fr(g)
    r_G = [a + b + ex.lam * (x - t) for a, b, x, t in zip(_matvec(ex.A, p), ex.b, p, th)]
    v = ex.outer(p)
    r = [vi - gi - hi / ex.lam for vi, gi, hi in zip(v, gv, _matvec(ex.A, gv))]
    for got, vec in zip(residual_norm_bounds(task, theta, phi, g), (r_G, r, v)):
        s2 = sum(x * x for x in vec)
        assert Fraction(got) ** 2 >= s2                         # an upper bound ...
        assert Fraction(math.nextafter(got, 0)) ** 2 < s2       # ... and the smallest float one


def test_meta_gradient_error_bound_needs_both_residuals():
    """Against the exact meta-gradient: for a g that solves the system at a wrong φ exactly
    (its own residual ~0), the bound holds only through the inner residual carried by λC⁻¹Aₜ;
    for a wrong g at the exact φ, through g's own residual."""
    task = planted_spectrum_task(3, 100.0, 0.5, seed=11, query="reversed")[0]
    theta = _theta(task)
    ex = Exact(task)
    exact = ex.meta_gradient(theta)
    phi_star = np.array([float(x) for x in ex.inner(theta)])
    phi_wrong = phi_star + 1e-3
    g_at_wrong = np.array([float(x) for x in ex.implicit(_fr(phi_wrong))])
    g_wrong = np.array([float(x) for x in exact]) + 1e-3
    # the μ₋ the bound uses: the Cholesky tests started from the task's own λmin
    mu = Fraction(min_eigenvalue_lower_bound(task.A, task.lam, estimate=task.curvature_bounds()[1]))
    aq = Fraction(abs_matrix_norm(task.A_query))
    for phi, g in ((phi_wrong, g_at_wrong), (phi_star, g_wrong)):
        err2 = sum((Fraction(float(a)) - e) ** 2 for a, e in zip(g, exact))
        bound = meta_gradient_error_bound(task, theta, phi, g)
        assert err2 <= Fraction(bound) ** 2
        # the stated formula, its two exact residual norms in 60 digits: the bound is it,
        # rounded up (integer roots and one rounding to float64: within 4u of it)
        p, gv = _fr(phi), _fr(g)
        r_g = [a - ex.lam * v for a, v in zip(_matvec(ex.C, gv), ex.outer(p))]
        r_phi = [a - (ex.lam * t - b) for a, t, b in zip(_matvec(ex.C, p), _fr(theta), ex.b)]
        with mpmath.workdps(60):
            def norm(vec):
                return mpmath.sqrt(sum(mpmath.mpf(x.numerator) / x.denominator * (
                    mpmath.mpf(x.numerator) / x.denominator) for x in vec))
            lam, mu_, aq_ = (mpmath.mpf(q.numerator) / q.denominator for q in (ex.lam, mu, aq))
            formula = (norm(r_g) + lam * aq_ * norm(r_phi) / mu_) / mu_
            assert formula <= bound <= formula * (1 + 4 * unit_roundoff("float64"))


def test_certify_uses_the_exact_residuals_where_rounding_dominates(monkeypatch):
    """At rounding level (a converged solve) the model's rounding is most of its certificate:
    certify evaluates the residuals exactly and keeps the smaller (proven) bound; with
    EXACT_RESIDUALS_SHARE = inf it returns the model's."""
    from solvers import imaml_meta_gradient
    from verify.checks._common import crafted_task

    task, theta = crafted_task(5, 100.0, 10.0, seed=0, theta_norm=1e4, meta_gradient_norm=1e-3)
    res = imaml_meta_gradient(task, theta, inner_steps=400, cg_steps=100)
    c = task.constants(theta)
    cert = bounds.certify(res, c)
    assert cert.method == "exact residuals" and cert.rounding_safe
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", math.inf)
    model = bounds.certify(res, c)
    assert model.method == "model" and model.rounding >= 0.5 * model.bound
    assert cert.bound < model.bound
    # an inexact solve: the model's rounding is a small share, no exact evaluation
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", 0.5)
    rough = imaml_meta_gradient(task, theta, inner_steps=5, cg_steps=2)
    assert bounds.certify(rough, c).method == "model"


# -- κ = 1e6 ---------------------------------------------------------------------------------
def _kappa_1e6(dim, monkeypatch):
    """accurate_meta_gradient at κ = 1e6 asked for ε = 1e-6: certified, within the proven
    upper end of the reference's enclosure; negative control: the rounding model alone (no
    exact residuals) refuses."""
    task, _ = planted_spectrum_task(dim, 1e6, 1.0, seed=0, query="reversed")
    theta = np.random.default_rng(0).standard_normal(dim)
    out = accurate_meta_gradient(task, theta, 1e-6)
    ref = QuadraticReference(task)
    err = ref.error(out.gradient, ref.meta_gradient(theta))
    assert out.bound <= 1e-6 and err <= out.bound
    assert out.certificate.method == "exact residuals"
    monkeypatch.setattr(bounds, "EXACT_RESIDUALS_SHARE", math.inf)
    with pytest.raises(AccuracyNotReached):
        accurate_meta_gradient(task, theta, 1e-6)
    return out, err


def test_kappa_1e6_is_reached_at_d_600(monkeypatch):
    _kappa_1e6(600, monkeypatch)


@pytest.mark.slow
def test_kappa_1e6_is_reached_at_d_1000(monkeypatch):
    _kappa_1e6(1000, monkeypatch)


def test_refinement_stops_on_the_proven_radius(monkeypatch):
    """With one pass allowed the radius is still proven (and encloses), only larger."""
    import theory.exact

    task = planted_spectrum_task(3, 1e4, 0.5, seed=13, query="reversed")[0]
    theta = _theta(task)
    ex = Exact(task)
    monkeypatch.setattr(theory.exact, "MAX_PASSES", 1)
    ref = QuadraticReference(task)
    g = ref.meta_gradient(theta)
    assert _dist2(g, ex.meta_gradient(theta)) <= Fraction(ref.radius(g)) ** 2
    monkeypatch.setattr(theory.exact, "MAX_PASSES", MAX_PASSES)
    full = QuadraticReference(task)
    assert full.radius(full.meta_gradient(theta)) < ref.radius(g)


# -- pinned edges (mutation testing) ---------------------------------------------------------
def test_cholesky_test_edges():
    assert _cholesky_completes(np.array([[4.0, 2.0], [2.0, 3.0]])) is True
    assert _cholesky_completes(np.array([[1.0, 2.0], [2.0, 1.0]])) is False   # indefinite, positive diagonal
    assert _cholesky_completes(np.array([[0.0]])) is False                    # a zero pivot
    assert _cholesky_completes(np.array([[np.nan]])) is False
    assert _shifted_bound(np.zeros((2, 2)), 0.0, 0.0) is None                 # nothing to scale
    assert _shifted_bound(np.array([[np.inf, 0.0], [0.0, 1.0]]), 0.0, 0.0) is None


def test_min_eigenvalue_bound_takes_the_nearest_shift_that_completes(monkeypatch):
    """The nearest shift μ̃ − w·2⁻⁴⁰, w = max(|μ̃|, 2⁻³⁰(max|Aᵢⱼ| + |λ|)); where it cannot be
    factored the next, μ̃ − w·2⁻²⁰, ...; where none can, −inf."""
    import theory.exact

    A, lam = np.diag([1e-12, 1.0]), 0.0        # μ̃ = 1e-12 < 2⁻³⁰: w is the second form
    mu_t = float(np.linalg.eigvalsh(A)[0])
    w = max(abs(mu_t), 2.0 ** -30 * 1.0 + abs(lam) * 2.0 ** -30)
    assert w == 2.0 ** -30
    assert min_eigenvalue_lower_bound(A, lam) == _down(_shifted_bound(A, lam, mu_t - w * 2.0 ** -40))
    A2, lam2 = np.diag([2.0, 3.0]), 0.5        # w = |μ̃| = 2.5
    mu2 = float(np.linalg.eigvalsh(A2 + lam2 * np.eye(2))[0])
    assert min_eigenvalue_lower_bound(A2, lam2) == _down(_shifted_bound(A2, lam2, mu2 - mu2 * 2.0 ** -40))
    # the ladder after the nearest shift: the rounding rung 4(n + 2)u·tr(A + λI) below it, then
    # w·2⁻²⁰, w/2, 4w below μ̃
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))[0]
    A3 = (Q * np.array([1.0, 1e3, 1e6, 1e9, 1e12])) @ Q.T
    A3 = (A3 + A3.T) / 2
    mu3 = float(np.linalg.eigvalsh(A3)[0])
    w3 = max(abs(mu3), 2.0 ** -30 * float(np.max(np.abs(A3))))
    rung = 4.0 * 7 * unit_roundoff("float64") * math.fsum(np.diag(A3))
    near = mu3 - w3 * 2.0 ** -40
    ladder = [near, near - rung, mu3 - w3 * 2.0 ** -20, mu3 - w3 / 2, mu3 - 4 * w3]
    assert theory.exact._shifts(A3, 0.0, mu3) == ladder
    assert theory.exact.SHIFT_OFFSETS == (2.0 ** -40, 2.0 ** -20, 0.5, 4.0)
    # the first shift that completes is the one taken, whichever it is: the Cholesky test made to
    # fail k times (as it does on some processors' kernels where the nearest shift is inside the
    # factorization's rounding, κ = 1e12 here) moves the bound to rung k
    real = theory.exact._cholesky_completes
    for k in range(len(ladder)):
        calls = []

        def completes(H, calls=calls, k=k):
            calls.append(1)
            return len(calls) > k and real(H)

        monkeypatch.setattr(theory.exact, "_cholesky_completes", completes)
        got = min_eigenvalue_lower_bound(A3, estimate=mu3)
        monkeypatch.setattr(theory.exact, "_cholesky_completes", real)
        want = _shifted_bound(A3, 0.0, ladder[k])
        if want is not None:
            assert len(calls) == k + 1 and got == _down(want), k
    # on this processor's kernels: the bound is the first rung that completes, and the rung
    # after the nearest always does (its shift is below λmin by more than the rounding)
    tries = [_shifted_bound(A3, 0.0, sigma) for sigma in ladder]
    first = next(i for i, t in enumerate(tries) if t is not None)
    assert first <= 1 and min_eigenvalue_lower_bound(A3, estimate=mu3) == _down(tries[first])
    monkeypatch.setattr(theory.exact, "_cholesky_completes", lambda H: False)
    assert min_eigenvalue_lower_bound(A2, lam2) == -math.inf
    assert max_eigenvalue_upper_bound(A2) == math.inf


def test_an_indefinite_system_has_no_enclosure():
    task = QuadraticTask(np.diag([1.0, 2.0]), np.ones(2), np.eye(2), np.ones(2), 1.0)
    from types import SimpleNamespace
    # A + λI indefinite: a duck-typed task (a QuadraticTask would refuse it when built)
    bad = SimpleNamespace(A=np.diag([-3.0, 2.0]), b=np.ones(2), A_query=np.eye(2),
                          b_query=np.ones(2), lam=1.0)
    assert meta_gradient_error_bound(bad, np.ones(2), np.ones(2), np.ones(2)) == math.inf
    with pytest.raises(ArithmeticError, match="positive definite"):
        QuadraticReference(bad).inner_solution(2 * np.ones(2))     # λθ − b ≠ 0
    assert meta_gradient_error_bound(task, np.ones(2), np.ones(2), np.ones(2)) < math.inf


def test_a_zero_right_hand_side_is_solved_exactly():
    task = QuadraticTask(np.eye(2), np.array([1.0, -2.0]), np.eye(2), np.zeros(2), 1.0)
    ref = QuadraticReference(task)
    zero = ref.inner_solution(np.array([1.0, -2.0]))          # λθ − b = 0
    assert list(ref.as_float(zero)) == [0.0, 0.0] and ref.radius(zero) == 0.0


def test_error_bounds_at_the_centre_are_the_radius():
    """x = the float centre itself: ‖x − centre‖ is its own rounding, and the bracket is
    (0, that + radius); a 12-digit reference makes the radius the larger part, so an error
    bound that dropped it, or moved the lower end up by it, would miss the exact distance."""
    task = planted_spectrum_task(3, 1e3, 0.5, seed=17, query="reversed")[0]
    theta = _theta(task)
    ref, ex = QuadraticReference(task, dps=12), Exact(task)
    g = ref.meta_gradient(theta)
    exact = ex.meta_gradient(theta)
    x = ref.as_float(g)
    d2 = sum((Fraction(float(v)) - e) ** 2 for v, e in zip(x, exact))
    lo, hi = ref.error_bounds(x, g)
    assert lo == 0.0 and hi >= ref.radius(g) > 0 and Fraction(hi) ** 2 >= d2 > 0
    assert ref.error(x, g) == hi
    assert Fraction(ref.radius(g)) ** 2 >= _dist2(g, exact)


def test_refinement_takes_the_passes_its_digits_need(monkeypatch):
    """Each pass gains at least −log10(κ·d·u) digits: a 50-digit reference of a κ = 100 task
    takes at most ⌈(dps + log10 κ)/(−log10(κ·d·u))⌉ + 1 passes per solve (it stops on its
    proven radius, not after a fixed count). Every pass of every solve uses one LU
    factorization of A + λI."""
    import scipy.linalg

    calls, factorizations = [], []
    real_solve, real_factor = scipy.linalg.lu_solve, scipy.linalg.lu_factor
    monkeypatch.setattr(scipy.linalg, "lu_solve", lambda *a, **k: calls.append(1) or real_solve(*a, **k))
    monkeypatch.setattr(scipy.linalg, "lu_factor",
                        lambda *a, **k: factorizations.append(1) or real_factor(*a, **k))
    task = planted_spectrum_task(3, 100.0, 1.0, seed=19)[0]
    ref = QuadraticReference(task)
    ref.inner_solution(_theta(task))
    assert ref._lu is task._factors(float64=True)          # the task's own factors
    kappa, d, u = 100.0, 3, unit_roundoff("float64")
    per_pass = -math.log10(kappa * d * u)
    assert 1 <= len(calls) <= math.ceil((ref.dps + math.log10(kappa)) / per_pass) + 1
    ref.meta_gradient(_theta(task) + 1.0)                  # two more solves, the same factors
    assert len(factorizations) == 1 and len(calls) > 2


def test_verified_constants_bound_the_float_ones():
    task = planted_spectrum_task(4, 1e3, 0.5, seed=21, query="reversed")[0]
    theta = _theta(task)
    ref = QuadraticReference(task)
    c, v = task.constants(theta), ref.constants(theta)
    assert v.mu == min(c.mu, ref.min_eigenvalue) <= c.mu and v.L >= c.L
    assert v.L == max(c.L, max_eigenvalue_upper_bound(task.A_query))
    assert (v.beta, v.B, v.D, v.lam) == (c.beta, c.B, c.D, c.lam)
    zero_query = QuadraticTask(task.A, task.b, np.zeros((4, 4)), task.b_query, task.lam)
    assert QuadraticReference(zero_query).constants(theta).L == 0.0
    assert min_eigenvalue_lower_bound(np.zeros((3, 3)), 0.25) == 0.25


# -- exact products on float64 BLAS (theory/_limbs.py) ------------------------------------------
def _exact_product(M, X, F):
    """M·(X·2^F) in exact rationals, entry by entry (the definition the limbs must meet)."""
    xs = [Fraction(int(v)) * Fraction(2) ** F for v in X]
    return [sum((Fraction(float(a)) * x for a, x in zip(row, xs)), Fraction(0))
            for row in np.asarray(M, dtype=np.float64)]


def _wide_matrices():
    """Matrices whose entries span many binades, with zeros, signs, subnormals and the largest
    floats; and vectors of Python integers far wider than a float."""
    rng = np.random.default_rng(2021)
    for trial in range(24):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        spread = int(rng.integers(0, 120))
        M = rng.standard_normal((n, m)) * 2.0 ** rng.integers(-spread, spread + 1, (n, m))
        M[rng.random((n, m)) < 0.2] = 0.0
        if trial % 6 == 1:
            M[0, 0] = 5e-324                                    # the smallest subnormal
        if trial % 6 == 2:
            M *= 2.0 ** 900                                     # near the top of the range
        X = np.array([int(v) for v in rng.integers(-2 ** 62, 2 ** 62, m)], dtype=object)
        X = X * (1 << int(rng.integers(0, 300))) + np.array(
            [int(v) for v in rng.integers(-9, 10, m)], dtype=object)
        yield M, X, int(rng.integers(-400, 400))


def test_limb_products_are_exact():
    """ExactMatrix.times is the exact product M·x, on every limb count and on the Python-integer
    path of matrices that need too many limbs; the exponent is the matrix's smallest ulp's."""
    from theory._limbs import MAX_LIMBS, ExactMatrix

    seen = set()
    for M, X, F in _wide_matrices():
        em = ExactMatrix(M)
        Y, G = em.times(X, F)
        got = [Fraction(int(v)) * Fraction(2) ** G for v in Y]
        assert got == _exact_product(M, X, F)
        N, E = em.integers()
        assert all(Fraction(int(a)) * Fraction(2) ** E == Fraction(float(b))
                   for a, b in zip(N.reshape(-1), M.reshape(-1)))
        seen.add(em.limbs if em.limbs == 0 else "limbs")
    assert seen == {0, "limbs"}, seen        # both paths were exercised
    zero = ExactMatrix(np.zeros((3, 2)))
    assert [int(v) for v in zero.times(np.array([5, -7], dtype=object), 3)[0]] == [0, 0, 0]
    assert 0 < MAX_LIMBS


def test_limb_widths_keep_every_partial_sum_below_2_to_52():
    from theory._limbs import limb_width

    for n in (1, 2, 3, 7, 8, 9, 100, 2000, 2048, 2049, 10 ** 6):
        w, wx = limb_width(n)
        assert w > 0 and wx > 0 and w + wx + math.ceil(math.log2(max(n, 2))) <= 52


def test_limb_products_fail_with_limbs_too_wide(monkeypatch):
    """Negative control: limbs whose products overflow float64's 53 bits (w + w_x = 60) round,
    and the exact comparison sees it; and a product with the wrong exponent is not exact."""
    import theory._limbs as limbs

    rng = np.random.default_rng(7)
    M = rng.standard_normal((20, 40))
    X = np.array([int(v) for v in rng.integers(-2 ** 62, 2 ** 62, 40)], dtype=object) << 100
    good = limbs.ExactMatrix(M).times(X, 0)
    monkeypatch.setattr(limbs, "limb_width", lambda n: (34, 26))
    bad = limbs.ExactMatrix(M).times(X, 0)
    assert bad[1] == good[1] and any(int(a) != int(b) for a, b in zip(bad[0], good[0]))
    value = lambda Y, G: [Fraction(int(v)) * Fraction(2) ** G for v in Y]  # noqa: E731
    assert value(*good) == _exact_product(M, X, 0)
    assert value(*bad) != _exact_product(M, X, 0)


def test_limb_products_refuse_bad_input():
    from theory._limbs import ExactMatrix

    with pytest.raises(ValueError, match="finite"):
        ExactMatrix(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        ExactMatrix(np.ones(3))
    with pytest.raises(ValueError, match="length 2"):
        ExactMatrix(np.ones((2, 2))).times(np.array([1, 2, 3], dtype=object), 0)


def test_task_exact_data_is_made_once_and_only_for_tasks_that_cannot_change():
    """The exact copy of a NumPy task's data and its eigenvalue proofs are kept on the task
    (references, certificates and error bars share them); a duck-typed task (mutable) gets a
    fresh one each time."""
    from types import SimpleNamespace

    from theory.exact import _task_data

    task = planted_spectrum_task(4, 100.0, 1.0, seed=3)[0]
    assert _task_data(task) is _task_data(task) is QuadraticReference(task)._exact
    duck = SimpleNamespace(A=np.asarray(task.A).copy(), b=np.asarray(task.b).copy(),
                           A_query=np.asarray(task.A_query).copy(),
                           b_query=np.asarray(task.b_query).copy(), lam=task.lam)
    assert _task_data(duck) is not _task_data(duck)
