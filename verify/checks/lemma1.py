"""Lemma 1: the implicit Jacobian dAlg*/dθ = (I + H(φ)/λ)⁻¹ at φ = Alg*(θ) (docs/mathematics.md §1).

Up to d = LARGE_DIM (every instance of the full report) the whole Jacobian is compared with
central finite differences, column by column (2d solves). Above it (the --scale grid's d = 2000)
the check takes the form whose cost fits the size: the Jacobian along DIRECTIONS seeded random
unit directions v, J·v against central finite differences of Alg* along v and against the
closed form λ(A + λI)⁻¹v (2·DIRECTIONS solves and one factorization instead of 2d solves: a
wrong Jacobian moves J·v along almost every direction)."""
from __future__ import annotations

import numpy as np

from solvers import ImplicitSystem
from theory.tolerances import machine_epsilon
from theory import to_numpy64
from verify.checks._common import (LARGE_DIM, allowance, far_instances, grid_units,
                                   inner_allowance, make_instance)
from verify.tasks import float64_twin
from verify.checks._result import compare
from verify.registry import Unit, claim
from validation import dtype_name

SECTION = "§1, §2"
STATEMENT = "dAlg*(θ)/dθ = (I + H(Alg*(θ))/λ)⁻¹ (central finite differences of the exact inner solution)"
DIRECTIONAL_STATEMENT = ("dAlg*(θ)/dθ·v = (I + H(Alg*(θ))/λ)⁻¹v along seeded random unit directions v "
                         "(central finite differences of the exact inner solution along v; d > 200)")
CLOSED_FORM_STATEMENT = ("(I + H(Alg*(θ))/λ)⁻¹v from Hessian-vector products = the closed form "
                         "λ(A + λI)⁻¹v along the same directions (d > 200)")
#: random directions of the large-d check
DIRECTIONS = 8


def lemma1_jacobian(task, phi):
    """(I + H(φ)/λ)⁻¹ built from the task's Hessian-vector products only (float64)."""
    phi64 = to_numpy64(phi)
    d = phi64.shape[0]
    H = np.stack([to_numpy64(task.inner_hvp(phi, _like(phi, e))) for e in np.eye(d)], axis=1)
    return np.linalg.inv(ImplicitSystem.of_hessian((H + H.T) / 2, task.lam).matrix())


def _like(ref, x):
    from verify.tasks import to_array

    return to_array(x, array="torch" if hasattr(ref, "detach") else "numpy",
                    dtype=dtype_name(ref),
                    device=str(getattr(ref, "device", "cpu")))


def finite_difference_jacobian(solution, theta64: np.ndarray, h: float) -> np.ndarray:
    """Central differences (Alg*(θ + h eᵢ) − Alg*(θ − h eᵢ)) / 2h, column by column."""
    cols = [(to_numpy64(solution(theta64 + h * e)) - to_numpy64(solution(theta64 - h * e))) / (2 * h)
            for e in np.eye(theta64.shape[0])]
    return np.stack(cols, axis=1)


def lemma1_jacobian_times(task, phi, V):
    """(I + H(φ)/λ)⁻¹V (V: d × k) from the task's Hessian-vector products only (float64): H from
    d HVPs, asked for as one batch (each row of the identity; the built-in tasks accept a
    batch of vectors) or one by one, then one LU solve for the k columns."""
    import scipy.linalg

    phi64 = to_numpy64(phi)
    d = phi64.shape[0]
    try:
        H = to_numpy64(task.inner_hvp(phi, _like(phi, np.eye(d)))).T   # row i: H eᵢ
        if H.shape != (d, d):
            raise ValueError
    except (ValueError, TypeError, RuntimeError):
        H = np.stack([to_numpy64(task.inner_hvp(phi, _like(phi, e))) for e in np.eye(d)], axis=1)
    M = np.eye(d) + (H + H.T) / (2 * task.lam)
    return scipy.linalg.lu_solve(scipy.linalg.lu_factor(M, check_finite=False), V,
                                 check_finite=False)


def directions(seed: int, d: int, k: int = DIRECTIONS) -> np.ndarray:
    """k seeded random unit directions in R^d (the columns)."""
    V = np.random.default_rng(seed).standard_normal((d, k))
    return V / np.linalg.norm(V, axis=0)


def check_lemma1_directions(task, theta, V, *, jacobian=None, instance=None):
    """Lemma 1 along the columns v of V (unit vectors): Lemma 1's J·v (from HVPs,
    :func:`lemma1_jacobian_times`; or a planted ``jacobian(task, phi)`` matrix times v) against
    central finite differences (Alg*(θ + hv) − Alg*(θ − hv))/2h, with the same rounding floor as
    the whole-Jacobian check (each solve's rounding over 2h plus the Jacobian's own), and
    against the closed form ``task.jacobian(θ)``·v (the Jacobian's rounding only). Two results;
    each reports the direction with the largest error."""
    twin_theta = to_numpy64(theta)
    phi = task.inner_solution(theta)
    beta, mu = task.curvature_bounds()
    kappa, d = beta / mu, twin_theta.shape[0]
    h = machine_epsilon("float64") ** (1 / 3) * max(1.0, float(np.linalg.norm(twin_theta)))
    solve = lambda t: to_numpy64(task.inner_solution(_like(theta, t)))  # noqa: E731
    fd = np.stack([(solve(twin_theta + h * v) - solve(twin_theta - h * v)) / (2 * h) for v in V.T],
                  axis=1)
    claimed = lemma1_jacobian_times(task, phi, V) if jacobian is None else \
        np.asarray(jacobian(task, phi)) @ V
    closed = to_numpy64(task.jacobian(theta)) @ V
    scale = float(np.max(np.linalg.norm(claimed, axis=0)))
    own = allowance(dtype_name(theta), kappa, scale, d)
    floor = inner_allowance(dtype_name(theta), task, twin_theta, to_numpy64(phi)) / h + own
    out = []
    for statement, name, ref, bound in ((DIRECTIONAL_STATEMENT, "lemma1", fd, floor),
                                        (CLOSED_FORM_STATEMENT, "lemma1", closed, own)):
        errs = np.linalg.norm(ref - claimed, axis=0)
        j = int(np.argmax(errs))
        out.append(compare(name, SECTION, statement, float(errs[j]), bound,
                           instance=dict(instance or {}, directions=int(V.shape[1])),
                           details={"fd_step": h, "direction": j, "jv_norm": scale}))
    return out


def check_lemma1(task, theta, *, jacobian=lemma1_jacobian, instance=None):
    """Compare Lemma 1's Jacobian (or a planted ``jacobian(task, phi)``) with central finite
    differences of ``task.inner_solution`` (float64). Alg* is affine for quadratics, so the
    difference is rounding only: ‖Alg*‖·eps/h per entry, amplified by κ."""
    twin_theta = to_numpy64(theta)
    phi = task.inner_solution(theta)
    beta, mu = task.curvature_bounds()
    kappa, d = beta / mu, twin_theta.shape[0]
    h = machine_epsilon("float64") ** (1 / 3) * max(1.0, float(np.linalg.norm(twin_theta)))
    fd = finite_difference_jacobian(lambda t: task.inner_solution(_like(theta, t)), twin_theta, h)
    claimed = jacobian(task, phi)
    err = float(np.linalg.norm(fd - claimed, 2))
    # each solve's rounding (the magnitudes of ∇G over μ: ‖A‖‖φ‖, ‖b‖, λ‖θ‖, …) over 2h, plus the
    # Jacobian's own (norm ≤ λ/μ)
    floor = inner_allowance(dtype_name(theta), task, twin_theta, to_numpy64(phi)) / h \
        + allowance(dtype_name(theta), kappa, float(np.linalg.norm(claimed, 2)), d)
    return compare("lemma1", SECTION, STATEMENT, err, floor, instance=instance,
                   details={"fd_step": h, "jacobian_norm": float(np.linalg.norm(claimed, 2))})


def units(ctx):
    """One unit per grid instance (query 'independent'), and one for the far instances."""
    return grid_units(ctx, "lemma1", queries=("independent",)) + [
        Unit(("far",), size=1.0, label="lemma1 far instances")]


@claim("lemma1", title="Lemma 1: implicit Jacobian", section=SECTION, statement=STATEMENT,
       units=units)
def run_unit(ctx, key):
    if key[0] == "far":
        return [check_lemma1(float64_twin(task), to_numpy64(theta), instance=inst)
                for task, theta, inst in far_instances(ctx, quick_count=2)]
    _, i, d, kappa, lam, query = key
    task, twin, theta, theta64, inst = make_instance(ctx, d, kappa, lam, query, i)
    # the reference is float64: Lemma 1 is a statement about the truth, not about a solver
    if d > LARGE_DIM:
        V = directions(ctx.rng_seed(d, int(kappa), int(lam * 1000), i, 11), d)
        return check_lemma1_directions(twin, theta64, V, instance=inst)
    return [check_lemma1(twin, theta64, instance=inst)]
