"""Lemma 1: the implicit Jacobian dAlg*/dθ = (I + H(φ)/λ)⁻¹ at φ = Alg*(θ) (docs/mathematics.md §1)."""
from __future__ import annotations

import numpy as np

from solvers import ImplicitSystem
from theory.tolerances import machine_epsilon
from theory import to_numpy64
from verify.checks._common import allowance, far_instances, grid, inner_allowance, make_instance
from verify.tasks import float64_twin
from verify.checks._result import compare
from verify.registry import claim
from validation import dtype_name

SECTION = "§1, §2"
STATEMENT = "dAlg*(θ)/dθ = (I + H(Alg*(θ))/λ)⁻¹ (central finite differences of the exact inner solution)"


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


@claim("lemma1", title="Lemma 1: implicit Jacobian", section=SECTION, statement=STATEMENT)
def run(ctx):
    results = []
    for i, (d, kappa, lam, query) in enumerate(grid(ctx, queries=("independent",))):
        task, twin, theta, theta64, inst = make_instance(ctx, d, kappa, lam, query, i)
        # the reference is float64: Lemma 1 is a statement about the truth, not about a solver
        results.append(check_lemma1(twin, theta64, instance=inst))
    for task, theta, inst in far_instances(ctx, quick_count=2):
        results.append(check_lemma1(float64_twin(task), to_numpy64(theta), instance=inst))
    return results
