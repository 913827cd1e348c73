"""Exact references the checker holds implementations to, and the rounding allowance.

- :func:`exact_meta_gradient`: dθL(Alg*(θ)) = λ(A + λI)⁻¹(Aₜφ* + bₜ), φ* = (A + λI)⁻¹(λθ − b)
  (docs/mathematics.md §1–§2) for a quadratic task, computed in extended precision
  (``numpy.longdouble``) by iterative refinement of a float64 factorisation, with a proven error
  bar (the residuals of the computed φ and g evaluated exactly, and a verified lower bound on
  λmin(A + λI): theory.exact.meta_gradient_error_bound); for a logistic task, the task's
  certified float64 reference and its error bar (docs/mathematics.md §9).
- :func:`converged_allowance`: how far a correct implementation computing in ``dtype`` may be
  from the exact meta-gradient through rounding alone (docs/mathematics.md §10), from the
  magnitudes that cancel in the computation, each step's rounding given by the suite's one
  allowance rule, :func:`theory.tolerances.allowance` (eps·dim·κ·Σ terms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from theory.exact import meta_gradient_error_bound
from theory.logistic import LogisticTask
from theory.quadratic import QuadraticTask
from theory.tolerances import allowance

__all__ = ["Reference", "exact_meta_gradient", "converged_allowance", "Allowance", "EXTENDED",
           "krylov_iterate", "extended_solve"]

#: the widest float NumPy has here; float64 where long double is no wider (then every
#: reference carries a float64 error bar instead of an extended one)
EXTENDED = np.dtype(np.longdouble) if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps \
    else np.dtype(np.float64)


def _f64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _norm(x) -> float:
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64)))


def extended_solve(C64: np.ndarray, Cx: np.ndarray, rhs: np.ndarray, lu=None, sweeps: int = 4):
    """Solve Cx·x = rhs in :data:`EXTENDED` precision: a float64 LU of ``C64`` (C rounded to
    float64) and ``sweeps`` refinement steps with residuals computed in extended precision.
    Converges when κ(C)·eps64 < 1, to about eps_ext·κ·‖x‖."""
    lu = scipy.linalg.lu_factor(C64) if lu is None else lu
    x = scipy.linalg.lu_solve(lu, rhs.astype(np.float64)).astype(EXTENDED)
    for _ in range(sweeps):
        r = rhs - Cx @ x
        x = x + scipy.linalg.lu_solve(lu, r.astype(np.float64)).astype(EXTENDED)
    return x


@dataclass
class Reference:
    """The exact meta-gradient ``g`` (in :data:`EXTENDED` precision), the inner solution
    ``phi``, ∇L(φ*) ``outer_grad``, the Hessian ``H`` of L̂ at φ* (float64), and ``error_bar``
    (‖g − dθL(Alg*(θ))‖ ≤ error_bar)."""

    g: np.ndarray
    phi: np.ndarray
    outer_grad: np.ndarray
    H: np.ndarray
    error_bar: float
    extras: dict = field(default_factory=dict)


def exact_meta_gradient(task, theta) -> Reference:
    """The exact meta-gradient of a quadratic or logistic task at θ with its error bar."""
    t64 = _f64(theta)
    if isinstance(task, LogisticTask):
        return _logistic_reference(task, t64)
    if not isinstance(task, QuadraticTask):
        raise TypeError(f"task must be a QuadraticTask or LogisticTask, got {type(task).__name__}")
    X = EXTENDED
    A, b, Aq, bq = (_f64(a) for a in (task.A, task.b, task.A_query, task.b_query))
    lam, d = float(task.lam), task.dim
    Cx = A.astype(X) + X.type(lam) * np.eye(d, dtype=X)
    C64 = Cx.astype(np.float64)
    lu = scipy.linalg.lu_factor(C64)
    phi = extended_solve(C64, Cx, X.type(lam) * t64.astype(X) - b.astype(X), lu)
    v = Aq.astype(X) @ phi + bq.astype(X)
    g = X.type(lam) * extended_solve(C64, Cx, v, lu)
    # a proven error bar: the residuals of the extended φ and g evaluated exactly, with a
    # verified lower bound on λmin(A + λI) (theory.exact.meta_gradient_error_bound)
    err = meta_gradient_error_bound(task, t64, phi, g)
    return Reference(g, phi, v.astype(np.float64), A, err)


def _logistic_reference(task, t64) -> Reference:
    """Alg*(θ) of a logistic task: the task's certified float64 Newton solution, refined by
    Newton steps whose gradient is computed in extended precision; then
    g = λ(λI + H(φ))⁻¹∇L(φ) by a refined extended solve. Error bar: ‖φ − Alg*(θ)‖ ≤
    (‖∇G(φ)‖ + its rounding)/μ (strong convexity), carried to g by Lemma 3's sharp constant
    λρB/μ² + λL/μ, plus the solve's rounding (docs/mathematics.md §5, §9)."""
    from theory.logistic import _sigmoid
    from verify.tasks import float64_twin

    X = EXTENDED
    twin = float64_twin(task)
    lam, d = float(twin.lam), twin.dim
    Xs, ys = twin._X64.astype(X), twin._y64.astype(X)
    Xq, yq = twin._Xq64.astype(X), twin._yq64.astype(X)
    th = t64.astype(X)

    def grad(M, y, p):
        return -(y * _sigmoid(np, -(y * (M @ p)))) @ M / M.shape[0]

    def hess(p):
        s = _sigmoid(np, Xs @ p)
        return (Xs.T * (s * (1 - s))) @ Xs / Xs.shape[0]

    phi = twin.certified_solution(t64).phi.astype(X)
    for _ in range(3):
        gG = grad(Xs, ys, phi) + X.type(lam) * (phi - th)
        H64 = hess(phi).astype(np.float64) + lam * np.eye(d)
        phi = phi - np.linalg.solve(H64, gG.astype(np.float64)).astype(X)
    gG = grad(Xs, ys, phi) + X.type(lam) * (phi - th)
    beta, mu = twin.curvature_bounds()
    x_scale = float(np.mean(np.linalg.norm(twin._X64, axis=1)))
    n_dim = max(d, twin.n, twin.m)
    e_phi = (float(np.sqrt(gG @ gG)) + allowance(
        X, terms=(x_scale, lam * float(np.sqrt(phi @ phi)), lam * _norm(t64)), dim=n_dim)) / mu
    v = grad(Xq, yq, phi)
    Cx = hess(phi) + X.type(lam) * np.eye(d, dtype=X)
    g = X.type(lam) * extended_solve(Cx.astype(np.float64), Cx, v)
    c = twin.constants(t64)
    sens = lam * c.rho * c.B / mu ** 2 + lam * c.L / mu
    err = sens * e_phi + allowance(X, terms=(float(np.sqrt(g @ g)), lam / mu * float(np.sqrt(v @ v))),
                                   kappa=beta / mu, dim=n_dim)
    return Reference(g, phi, v.astype(np.float64), hess(phi).astype(np.float64), err)


@dataclass
class Allowance:
    """A rounding allowance ``total`` = the terms in ``parts`` (each a float), and the
    magnitudes it was derived from."""

    total: float
    parts: dict
    magnitudes: dict


def _parts(dtype, kappa, lam, mu, d, phi, theta, b, Aq, bq, v, g) -> dict:
    # φ*: the solve's backward error gives κ‖φ‖, the rounding of λθ − b (or an explicit
    # inverse, or the gradient floor of an iterative solver: ‖∇G‖ is rounded at the size of
    # β‖φ‖ + λ‖θ‖ + ‖b‖, and ‖φ − φ*‖ ≤ ‖∇G‖/μ) gives κ(λ‖θ‖ + ‖b‖)/μ
    e_phi = allowance(dtype, terms=(phi, lam * theta / mu, b / mu), kappa=kappa, dim=d + 4)
    # v = Aₜφ + bₜ: the error of φ times ‖Aₜ‖, plus the rounding of a sum of size ‖Aₜ‖‖φ‖ + ‖bₜ‖;
    # both reach g through ‖λ(A + λI)⁻¹‖ = λ/μ
    e_v = allowance(dtype, terms=(Aq * phi, bq), dim=d + 4)
    # g = λ(A + λI)⁻¹v: the solve's own backward error (κ‖g‖; κ·(λ/μ)‖v‖ for an explicit
    # inverse applied to v, which is ≥ κ‖g‖)
    e_g = allowance(dtype, terms=(g, lam / mu * v), kappa=kappa, dim=d + 4)
    return {"inner solution": lam / mu * Aq * e_phi, "outer gradient": lam / mu * e_v,
            "linear solve": e_g}


def converged_allowance(task, theta, ref: Reference, dtype="float64") -> Allowance:
    """How far from the exact meta-gradient a correct implementation that computes in ``dtype``
    may land through rounding alone (docs/mathematics.md §10): the first-order propagation of
    a backward-stable solve (or an iterative solve run to its rounding floor) through
    φ* = (A + λI)⁻¹(λθ − b), ∇L(φ*) = Aₜφ* + bₜ and g = λ(A + λI)⁻¹∇L(φ*), each step's
    rounding being :func:`theory.tolerances.allowance` (the one rule: eps·d·κ·Σ terms) of the
    magnitudes that cancel in it (‖A‖‖φ‖ against λ‖θ‖ and ‖b‖; ‖Aₜ‖‖φ‖ against ‖bₜ‖; the
    solve against ‖g‖), plus the reference's own error bar. For a logistic task the inner
    gradient's magnitudes are (1/n)Σ‖xⱼ‖ + λ(‖φ‖ + ‖θ‖), the sensitivity of g to φ is Lemma 3's
    λρB/μ² + λL/μ, and the Hessian's rounding enters the solve's backward error."""
    t64 = _f64(theta)
    beta, mu = task.curvature_bounds()
    kappa, lam = beta / mu, float(task.lam)
    phi, v, g = _norm(ref.phi), _norm(ref.outer_grad), _norm(ref.g)
    if isinstance(task, LogisticTask):
        from verify.tasks import float64_twin

        twin = float64_twin(task) if getattr(task, "_xp", np) is not np else task
        c = twin.constants(t64)
        n_dim = max(task.dim, task.n, task.m)
        x_scale = float(np.mean(np.linalg.norm(twin._X64, axis=1)))
        xq_scale = float(np.mean(np.linalg.norm(twin._Xq64, axis=1)))
        e_phi = allowance(dtype, terms=(x_scale / mu, lam * phi / mu, lam * _norm(t64) / mu),
                          kappa=kappa, dim=n_dim)
        sens = lam * c.rho * c.B / mu ** 2 + lam * c.L / mu
        parts = {"inner solution": sens * e_phi,
                 "outer gradient": lam / mu * allowance(dtype, terms=(xq_scale,), dim=n_dim),
                 "linear solve": allowance(dtype, terms=(g, lam / mu * v), kappa=kappa,
                                           dim=n_dim)}
        mags = {"x_scale": x_scale, "x_query_scale": xq_scale}
    else:
        b, bq = _norm(_f64(task.b)), _norm(_f64(task.b_query))
        Aq = float(np.linalg.norm(_f64(task.A_query), 2))
        parts = _parts(dtype, kappa, lam, mu, task.dim, phi, _norm(t64), b, Aq, bq, v, g)
        mags = {"norm_b": b, "norm_b_query": bq, "norm_A_query": Aq,
                "norm_A": beta - lam}
    parts["reference"] = ref.error_bar
    mags.update(kappa=kappa, lam=lam, mu=mu, beta=beta, norm_phi=phi, norm_theta=_norm(t64),
                norm_outer_grad=v, norm_meta_gradient=g, dim=task.dim)
    return Allowance(float(sum(parts.values())), {k: float(x) for k, x in parts.items()}, mags)


def krylov_iterate(M: np.ndarray, rhs: np.ndarray, steps: int, *, ritz: bool = False):
    """The m-step CG iterate from 0 for M x = rhs (M symmetric positive definite, float64
    data), in exact arithmetic: the minimiser of ‖x − M⁻¹rhs‖_M over the Krylov space
    span{rhs, M rhs, …, M^{m−1} rhs} (docs/mathematics.md §4). Computed independently of CG by
    Lanczos with full re-orthogonalisation in :data:`EXTENDED` precision and a small dense
    solve with the projected matrix T = VᵀMV. Returns (x as float64, ‖rhs − Mx‖/‖rhs‖), and with
    ``ritz`` also min over Ritz pairs of their residual β_m|e_mᵀy|/‖M‖ (0 when the Krylov space
    became invariant: exact CG has converged)."""
    X = EXTENDED
    Mx = np.asarray(M, dtype=np.float64).astype(X)
    r = np.asarray(rhs, dtype=np.float64).astype(X)
    d = r.shape[0]
    nr = np.sqrt(r @ r)
    if steps == 0 or nr == 0:
        x = np.zeros(d)
        return (x, 1.0 if nr else 0.0, 0.0) if ritz else (x, 1.0 if nr else 0.0)
    normM = float(np.linalg.norm(np.asarray(M, dtype=np.float64), 2))
    m = min(steps, d)
    V = np.zeros((d, m), dtype=X)
    V[:, 0] = r / nr
    k, beta_m = 1, X.type(0)
    while True:
        w = Mx @ V[:, k - 1]
        for _ in range(2):  # full re-orthogonalisation, twice is enough
            w = w - V[:, :k] @ (V[:, :k].T @ w)
        beta_m = np.sqrt(w @ w)
        if beta_m <= np.finfo(X).eps * 1e3 * normM:
            beta_m = X.type(0)   # invariant subspace: exact CG has converged at step k
            break
        if k == m:
            break
        V[:, k] = w / beta_m
        k += 1
    V = V[:, :k]
    T = V.T @ Mx @ V
    y = _dense_solve_ext(T, V.T @ r)
    x = V @ y
    res = r - Mx @ x
    out = (x.astype(np.float64), float(np.sqrt(res @ res) / nr))
    if not ritz:
        return out
    _, Y = np.linalg.eigh(T.astype(np.float64))
    ritz_res = float(beta_m) * float(np.min(np.abs(Y[-1, :]))) / normM if normM else 0.0
    return out + (ritz_res,)


def _dense_solve_ext(T, rhs):
    """A small SPD solve in extended precision (Cholesky, no pivoting needed)."""
    n = T.shape[0]
    L = np.zeros_like(T)
    for j in range(n):
        s = T[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = np.sqrt(s)
        for i in range(j + 1, n):
            L[i, j] = (T[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    y = np.zeros(n, dtype=T.dtype)
    for i in range(n):
        y[i] = (rhs[i] - L[i, :i] @ y[:i]) / L[i, i]
    x = np.zeros(n, dtype=T.dtype)
    for i in reversed(range(n)):
        x[i] = (y[i] - L[i + 1:, i] @ x[i + 1:]) / L[i, i]
    return x


def rel(x, ref) -> float:
    """‖x − ref‖ in extended precision (a float)."""
    diff = np.asarray(x, dtype=np.float64).astype(EXTENDED) - np.asarray(ref).astype(EXTENDED)
    return float(math.sqrt(float(diff @ diff)))
