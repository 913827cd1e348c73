"""The checks whose cost fits the size (issue 21): lemma1 above LARGE_DIM along a few random
directions, lemma3's worst direction by Lanczos above LARGE_DIM, units of work and the
instances they share. Each with a negative control."""
from __future__ import annotations

import numpy as np
import pytest

from theory import to_numpy64
from verify.checks import lemma1, lemma3
from verify.checks._common import LARGE_DIM, make_instance, shared_instances
from verify.registry import RunContext, all_claims
from verify.tasks import planted_spectrum_task

from _tolerances import rounding_allowance

D = LARGE_DIM + 40      # above the threshold: the large-d forms


@pytest.fixture(scope="module")
def big():
    task, spec = planted_spectrum_task(D, 1e3, 0.5, seed=11, query="independent")
    theta = np.random.default_rng(12).standard_normal(D)
    return task, theta, spec


# -- lemma1 along directions -------------------------------------------------------------------
@pytest.mark.parametrize("kappa, lam", [(2.0, 0.1), (1e4, 1.0), (1e6, 10.0)])
def test_lemma1_along_directions_holds(kappa, lam):
    task, spec = planted_spectrum_task(D, kappa, lam, seed=5, query="independent")
    theta = np.random.default_rng(6).standard_normal(D)
    results = lemma1.check_lemma1_directions(task, theta, lemma1.directions(7, D),
                                             instance=spec.as_dict())
    assert [r.statement for r in results] == [lemma1.DIRECTIONAL_STATEMENT,
                                              lemma1.CLOSED_FORM_STATEMENT]
    assert all(r.passed for r in results), results
    assert all(r.instance["directions"] == lemma1.DIRECTIONS for r in results)


def test_the_directions_are_seeded_unit_vectors():
    V = lemma1.directions(3, D)
    assert V.shape == (D, lemma1.DIRECTIONS)
    np.testing.assert_array_equal(V, lemma1.directions(3, D))
    assert not np.array_equal(V, lemma1.directions(4, D))
    assert np.max(np.abs(np.linalg.norm(V, axis=0) - 1)) <= rounding_allowance(
        "float64", kappa=1.0, scale=1.0, dim=D)


def test_lemma1_directions_from_hvps_equal_the_whole_jacobian(big):
    task, theta, _ = big
    V = lemma1.directions(1, D)
    phi = task.inner_solution(theta)
    got = lemma1.lemma1_jacobian_times(task, phi, V)
    want = lemma1.lemma1_jacobian(task, phi) @ V
    kappa = task.curvature_bounds()[0] / task.curvature_bounds()[1]
    assert np.linalg.norm(got - want) <= rounding_allowance("float64", kappa=kappa, scale=1.0,
                                                            dim=D)


@pytest.mark.parametrize("defect", ["lambda forgotten", "one wrong direction", "halved"])
def test_lemma1_along_directions_fails_on_a_planted_wrong_jacobian(big, defect):
    task, theta, _ = big
    A, lam = to_numpy64(task.A), task.lam
    true = lambda t, phi: np.linalg.inv(np.eye(D) + A / lam)  # noqa: E731
    u = np.random.default_rng(2).standard_normal(D)
    u /= np.linalg.norm(u)
    wrong = {"lambda forgotten": lambda t, phi: np.linalg.inv(np.eye(D) + A),
             # wrong along one random direction only: every random v sees part of it
             "one wrong direction": lambda t, phi: true(t, phi) + 0.1 * np.outer(u, u),
             "halved": lambda t, phi: 0.5 * true(t, phi)}[defect]
    V = lemma1.directions(9, D)
    assert all(r.passed for r in lemma1.check_lemma1_directions(task, theta, V, jacobian=true))
    fd, closed = lemma1.check_lemma1_directions(task, theta, V, jacobian=wrong)
    assert not fd.passed and not closed.passed, (fd, closed)


def test_lemma1_unit_takes_the_form_that_fits_the_size():
    ctx = RunContext(seed=0)
    claim = all_claims()["lemma1"]
    small = claim.execute(ctx, ("grid", 0, 20, 10.0, 1.0, "independent"))
    large = claim.execute(ctx, ("grid", 0, D, 10.0, 1.0, "independent"))
    assert [r.statement for r in small] == [lemma1.STATEMENT]
    assert [r.statement for r in large] == [lemma1.DIRECTIONAL_STATEMENT,
                                            lemma1.CLOSED_FORM_STATEMENT]
    assert all(r.passed for r in small + large)


# -- lemma3's worst direction above LARGE_DIM ---------------------------------------------------
@pytest.mark.parametrize("query", ["reversed", "independent"])
def test_lanczos_worst_direction_is_the_top_singular_vector(query):
    task, _ = planted_spectrum_task(D, 1e3, 1.0, seed=4, query=query)
    A, Aq, lam = to_numpy64(task.A), to_numpy64(task.A_query), task.lam
    K = lam * np.linalg.solve(A + lam * np.eye(D), Aq)
    _, s, vt = np.linalg.svd(K)
    u = lemma3._top_right_singular_vector(A, Aq, lam)
    assert u is not None
    assert u[np.argmax(np.abs(u))] > 0                         # the sign is fixed
    # ‖Ku‖ = σ₁ to Lanczos' tolerance (it found the top singular value, not another)
    assert abs(np.linalg.norm(K @ u) - s[0]) <= lemma3.ARPACK_TOL * s[0] + rounding_allowance(
        "float64", kappa=1e3, scale=s[0], dim=D)
    assert abs(u @ vt[0]) >= 1 - np.sqrt(lemma3.ARPACK_TOL)  # the same vector, up to sign


def _assert_top_right_singular_vector(u, K, tol):
    _, s, vt = np.linalg.svd(K)
    assert u[np.argmax(np.abs(u))] > 0                         # the sign is fixed
    assert abs(np.linalg.norm(K @ u) - s[0]) <= tol * s[0]
    assert abs(u @ vt[0]) >= 1 - np.sqrt(tol)                  # the same vector, up to sign


@pytest.mark.parametrize("stop", ["no convergence", "out of products"])
def test_worst_direction_falls_back_to_the_dense_eigenvector(monkeypatch, stop):
    import scipy.sparse.linalg as sparse

    task, _ = planted_spectrum_task(D, 1e3, 1.0, seed=4, query="independent")
    twin = planted_spectrum_task(D, 1e3, 1.0, seed=4, query="independent")[0]
    A, Aq, lam = to_numpy64(task.A), to_numpy64(task.A_query), task.lam
    if stop == "no convergence":
        def no_convergence(*args, **kwargs):
            raise sparse.ArpackNoConvergence("planted", [], [])

        monkeypatch.setattr(sparse, "svds", no_convergence)
    else:   # the converging run takes more than 3 products: stopped at the budget
        assert lemma3._top_right_singular_vector(A, Aq, lam) is not None
        monkeypatch.setattr(lemma3, "ARPACK_MAX_PRODUCTS", 3)
    assert lemma3._top_right_singular_vector(A, Aq, lam) is None
    u = lemma3._worst_direction(twin)
    K = lam * np.linalg.solve(A + lam * np.eye(D), Aq)
    # the dense route, held to what Lanczos is held to
    _assert_top_right_singular_vector(u, K, lemma3.ARPACK_TOL)


def test_worst_direction_of_clustered_singular_values_is_found():
    """κ = 2: singular values packed in [1/3, 2/3]·λ, where Lanczos needs many products."""
    task, _ = planted_spectrum_task(D, 2.0, 1.0, seed=4, query="shared")
    A, Aq, lam = to_numpy64(task.A), to_numpy64(task.A_query), task.lam
    K = lam * np.linalg.solve(A + lam * np.eye(D), Aq)
    _assert_top_right_singular_vector(lemma3._worst_direction(task), K, lemma3.ARPACK_TOL)


def test_lemma3_at_large_d_holds():
    ctx = RunContext(seed=0)
    results = all_claims()["lemma3"].execute(ctx, ("grid", 0, D, 1e3, 1.0, "reversed"))
    assert results and all(r.passed for r in results)


# -- instances shared by units of the same grid point ------------------------------------------
def test_shared_instances_build_each_instance_once():
    ctx = RunContext(seed=0, quick=True)
    with shared_instances():
        a = make_instance(ctx, 5, 10.0, 0.5, "shared", 0)
        b = make_instance(ctx, 5, 10.0, 0.5, "shared", 0)
        c = make_instance(ctx, 5, 10.0, 0.5, "shared", 1)
    assert a[0] is b[0] and a[1] is b[1]                # task and twin built once
    assert c[0] is not a[0]                             # another salt: another instance
    assert a[2] is not b[2]                             # θ: a fresh copy each time
    a[2][:] = 0.0                                       # changing one copy changes no other
    assert np.array_equal(b[2], make_instance(ctx, 5, 10.0, 0.5, "shared", 0)[2])
    assert not np.array_equal(a[2], b[2])
    fresh = make_instance(ctx, 5, 10.0, 0.5, "shared", 0)
    assert fresh[0] is not a[0]                         # outside: nothing kept
    np.testing.assert_array_equal(to_numpy64(fresh[0].A), to_numpy64(a[0].A))


def test_every_unit_of_a_plan_is_distinct_and_small():
    import pickle

    ctx = RunContext(seed=0, scale=True)
    for name in ("lemma1", "certificate", "lemma3", "cg-bound"):
        plan = all_claims()[name].plan(ctx)
        keys = [u.key for u in plan]
        assert len(set(keys)) == len(keys)
        assert all(len(pickle.dumps(k)) < 200 for k in keys)   # keys, never tasks
        assert max(u.size for u in plan) == 2000.0 ** 3
