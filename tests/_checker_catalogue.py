"""Implementations of iMAML's converged meta-gradient for the checker's tests: correct ones
written several ways (each must pass with no false alarm) and a catalogue of defective ones
(each must be flagged). All take ``fn(task, theta)`` with NumPy float64 data and return NumPy.

The exact meta-gradient (docs/mathematics.md §2): φ* = (A + λI)⁻¹(λθ − b), g = λ(A + λI)⁻¹(Aₜφ* + bₜ).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg

import solvers


def _parts(task):
    return task.A, task.b, task.A_query, task.b_query, float(task.lam), task.dim


def _cg(matvec, rhs, steps, x0=None):
    x = np.zeros_like(rhs) if x0 is None else x0.copy()
    r = rhs - matvec(x)
    p = r.copy()
    rr = r @ r
    for _ in range(steps):
        if rr == 0:
            break
        Mp = matvec(p)
        a = rr / (p @ Mp)
        x = x + a * p
        r = r - a * Mp
        rr_new = r @ r
        p = r + rr_new / rr * p
        rr = rr_new
    return x


# -- correct --------------------------------------------------------------------------------------
def textbook_solve(task, theta):
    A, b, Aq, bq, lam, d = _parts(task)
    C = A + lam * np.eye(d)
    phi = np.linalg.solve(C, lam * theta - b)
    return lam * np.linalg.solve(C, Aq @ phi + bq)


def textbook_inverse(task, theta):
    A, b, Aq, bq, lam, d = _parts(task)
    J = np.linalg.inv(np.eye(d) + A / lam)          # the implicit Jacobian (Lemma 1)
    return J @ (Aq @ (J @ (theta - b / lam)) + bq)


def textbook_cholesky(task, theta):
    A, b, Aq, bq, lam, d = _parts(task)
    c = scipy.linalg.cho_factor(A + lam * np.eye(d))
    phi = scipy.linalg.cho_solve(c, lam * theta - b)
    return lam * scipy.linalg.cho_solve(c, Aq @ phi + bq)


def textbook_eigh(task, theta):
    A, b, Aq, bq, lam, d = _parts(task)
    w, Q = np.linalg.eigh(A)
    phi = Q @ ((Q.T @ (lam * theta - b)) / (w + lam))
    return Q @ (lam * (Q.T @ (Aq @ phi + bq)) / (w + lam))


def converged_cg(task, theta):
    """Protocol only: CG to its rounding floor for the inner solve and the implicit system."""
    lam, d = float(task.lam), task.dim
    rhs = lam * theta - task.inner_grad(np.zeros(d))
    phi = solvers.cg(lambda x: task.inner_hvp(np.zeros(d), x) + lam * x, rhs, rtol=0, atol=0,
                     max_steps=4 * d + 20).x
    v = task.outer_grad(phi)
    return solvers.cg(lambda w: w + task.inner_hvp(phi, w) / lam, v, rtol=0, atol=0,
                      max_steps=4 * d + 20).x


def ours_converged(task, theta):
    """solvers.imaml_meta_gradient (Nesterov + CG) at converged settings."""
    beta, mu = task.curvature_bounds()
    kappa = beta / mu
    K = int(math.ceil(2 * math.sqrt(kappa) * math.log(1e22 * kappa))) + 20
    return solvers.imaml_meta_gradient(task, theta, inner_steps=K, cg_steps=4 * task.dim + 20).gradient


CORRECT = {f.__name__: f for f in (textbook_solve, textbook_inverse, textbook_cholesky,
                                   textbook_eigh, converged_cg, ours_converged)}


# -- defective ------------------------------------------------------------------------------------
def _pieces(task, theta):
    A, b, Aq, bq, lam, d = _parts(task)
    C = A + lam * np.eye(d)
    phi = np.linalg.solve(C, lam * theta - b)
    return A, b, Aq, bq, lam, d, C, phi


def _defect(fn):
    DEFECTS[fn.__name__] = fn
    return fn


DEFECTS: dict = {}


@_defect
def wrong_sign(task, theta):
    return -textbook_solve(task, theta)


@_defect
def missing_lambda(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return np.linalg.solve(C, Aq @ phi + bq)


@_defect
def extra_lambda(task, theta):
    return task.lam * textbook_solve(task, theta)


@_defect
def lambda_squared(task, theta):
    return task.lam ** 2 * textbook_solve(task, theta)


@_defect
def one_over_lambda(task, theta):
    return textbook_solve(task, theta) / task.lam


@_defect
def factor_two(task, theta):
    return 2 * textbook_solve(task, theta)


@_defect
def A_for_A_query(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return lam * np.linalg.solve(C, A @ phi + bq)


@_defect
def b_for_b_query(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return lam * np.linalg.solve(C, Aq @ phi + b)


@_defect
def query_hessian_in_system(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return lam * np.linalg.solve(Aq + lam * np.eye(d), Aq @ phi + bq)


@_defect
def ignores_theta(task, theta):
    return textbook_solve(task, np.zeros_like(theta))


@_defect
def theta_for_phi(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return lam * np.linalg.solve(C, Aq @ theta + bq)


@_defect
def fomaml(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return Aq @ phi + bq


@_defect
def reptile(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return theta - phi


@_defect
def normal_equations_cg5(task, theta):
    """torchopt's solve_normal_cg(maxiter=5) as in its iMAML example."""
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    M = lambda w: w + A @ w / lam  # noqa: E731
    return _cg(lambda w: M(M(w)), M(Aq @ phi + bq), 5)


@_defect
def damped_paper_defaults(task, theta):
    """The paper's reference code's defaults: (2I + H/(λ + 10)) g = ∇L, solved exactly."""
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return np.linalg.solve(2 * np.eye(d) + A / (lam + 10), Aq @ phi + bq)


@_defect
def inverse_without_lambda(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return np.linalg.solve(np.eye(d) + A, Aq @ phi + bq)


@_defect
def truncated_cg3(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return _cg(lambda w: w + A @ w / lam, Aq @ phi + bq, 3)


@_defect
def cg_off_by_one(task, theta):
    """CG for d − 1 steps: exact in exact arithmetic only when A has < d distinct eigenvalues."""
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return _cg(lambda w: w + A @ w / lam, Aq @ phi + bq, d - 1)


@_defect
def cg_fixed_30_steps(task, theta):
    """Visible only where κ is large (30 CG steps are plenty for small κ)."""
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return _cg(lambda w: w + A @ w / lam, Aq @ phi + bq, 30)


@_defect
def few_inner_steps(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    beta, mu = task.curvature_bounds()
    x = theta.copy()
    for _ in range(10):
        x = x - (A @ x + b + lam * (x - theta)) / beta
    return lam * np.linalg.solve(C, Aq @ x + bq)


@_defect
def float32_cast(task, theta):
    A, b, Aq, bq, lam, d = (x.astype(np.float32) if hasattr(x, "astype") else x for x in _parts(task))
    C = A + np.float32(lam) * np.eye(d, dtype=np.float32)
    phi = np.linalg.solve(C, np.float32(lam) * theta.astype(np.float32) - b)
    return (np.float32(lam) * np.linalg.solve(C, Aq @ phi + bq)).astype(np.float64)


@_defect
def float32_accumulation_last_step(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    v = (Aq.astype(np.float32) @ phi.astype(np.float32)).astype(np.float64) + bq
    return lam * np.linalg.solve(C, v)


@_defect
def transposed_product(task, theta):
    """(C⁻¹Aₜ)ᵀ in place of C⁻¹Aₜ: wrong only when A and Aₜ do not share eigenvectors."""
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return lam * (np.linalg.solve(C, Aq).T @ phi + np.linalg.solve(C, bq))


@_defect
def only_large_dim(task, theta):
    g = textbook_solve(task, theta)
    return g * (1 + 1e-3) if task.dim > 30 else g


@_defect
def b_sign_flipped(task, theta):
    """Visible only when b ≠ 0."""
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    phi = np.linalg.solve(C, lam * theta + b)
    return lam * np.linalg.solve(C, Aq @ phi + bq)


@_defect
def clipped_theta(task, theta):
    """θ clipped to norm 1e3 ("for stability"): visible only when ‖θ‖ is large."""
    n = np.linalg.norm(theta)
    return textbook_solve(task, theta if n <= 1e3 else theta * (1e3 / n))


@_defect
def perturbed_1e6(task, theta):
    return textbook_solve(task, theta) * (1 + 1e-6)


@_defect
def perturbed_1e9(task, theta):
    return textbook_solve(task, theta) * (1 + 1e-9)


@_defect
def one_coordinate_1e9(task, theta):
    g = textbook_solve(task, theta)
    g[0] = g[0] * (1 + 1e-9)
    return g


@_defect
def unregularized_inner(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    phi_u = np.linalg.lstsq(A, -b, rcond=None)[0]
    return lam * np.linalg.solve(C, Aq @ phi_u + bq)


@_defect
def inner_loss_as_outer(task, theta):
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    return lam * np.linalg.solve(C, A @ phi + b)


@_defect
def lambda_ignored_in_inner(task, theta):
    """φ* computed with λ = 1 (visible only when λ ≠ 1)."""
    A, b, Aq, bq, lam, d, C, phi = _pieces(task, theta)
    phi1 = np.linalg.solve(A + np.eye(d), theta - b)
    return lam * np.linalg.solve(C, Aq @ phi1 + bq)


class _Cached:
    """Returns the first answer it computed for each dimension (a cache keyed on the shape)."""

    __name__ = "cached_answer"
    __qualname__ = "cached_answer"

    def __init__(self):
        self.cache = {}

    def __call__(self, task, theta):
        if task.dim not in self.cache:
            self.cache[task.dim] = textbook_solve(task, theta)
        return self.cache[task.dim].copy()


DEFECTS["cached_answer"] = lambda: _Cached()   # a factory: a fresh cache per check


# -- the catalogue's own premise --------------------------------------------------------------------
def assert_premises(instances):
    """What the checker's tests take for granted, shown without the checker: on ``instances``
    ((task, θ) pairs) the correct implementations agree with each other, and every defect departs
    from them by far more than they differ among themselves (100× their spread, at least 100·eps
    of ‖g‖) on at least one instance. Without it, "every defect is flagged" could hold for a
    defect that computes the right answer, and "no false alarm" for a wrong 'correct' one."""
    eps = float(np.finfo(np.float64).eps)
    spreads, answers = [], []
    for task, theta in instances:
        outs = [np.asarray(f(task, theta), dtype=np.float64) for f in CORRECT.values()]
        ref = outs[0]
        scale = float(np.linalg.norm(ref))
        spread = max(float(np.linalg.norm(o - ref)) for o in outs)
        assert spread <= 1e-6 * scale, f"the correct implementations disagree: {spread:.3g} of {scale:.3g}"
        spreads.append(max(spread, eps * scale))
        answers.append(ref)
    for name, fn in DEFECTS.items():
        fn = fn() if name == "cached_answer" else fn     # one cache across the instances
        departures = [float(np.linalg.norm(np.asarray(fn(t, th), dtype=np.float64) - ref)) / s
                      for (t, th), ref, s in zip(instances, answers, spreads)]
        assert max(departures) > 100, f"{name} is not wrong on these instances ({max(departures):.3g}× the spread)"
