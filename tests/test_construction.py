"""Task construction at eigendecomposition cost: one eigvalsh per matrix, the scale from its
eigenvalues, the asymmetry from a Frobenius norm whose tolerance (validation.symmetry_tolerance)
never refuses data formed as Q·diag(s)·Qᵀ in float32 or float64, while a matrix whose
asymmetry exceeds it is always refused."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from theory import QuadraticTask
from theory.tolerances import relative_tolerance
from validation import check_symmetric_psd, symmetry_tolerance
from verify.strategies import seeds
from verify.tasks import planted_spectrum

DTYPES = ["float32", "float64"]


def formed(dim, kappa, seed, dtype, *, floor=0.0):
    """Q·diag(s)·Qᵀ computed in ``dtype`` and NOT symmetrized afterwards (its asymmetry is
    all rounding), s a planted spectrum with min s = floor ≥ 0."""
    rng = np.random.default_rng(seed)
    s = planted_spectrum(dim, kappa, 1.0, kind="random", rng=rng, floor=floor) if dim > 1 else \
        np.array([floor])
    Q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    Q = (Q * np.sign(np.diag(r))).astype(dtype)
    return (Q * s.astype(dtype)) @ Q.T


@pytest.mark.parametrize("dtype", DTYPES)
@given(dim=st.integers(1, 120), log_kappa=st.floats(0, 6), seed=seeds)
def test_formed_data_is_never_refused(dtype, dim, log_kappa, seed):
    kappa = 10.0 ** log_kappa if dim > 1 else 1.0
    A = formed(dim, kappa, seed, dtype)
    Aq = formed(dim, 10.0, seed + 1, dtype)
    b = np.ones(dim, dtype=dtype)
    task = QuadraticTask(A, b, Aq, b, 1.0)
    assert task.curvature_bounds()[1] > 0


def _antisymmetric(rng, dim):
    K = rng.standard_normal((dim, dim))
    K = K - K.T
    return K / np.linalg.norm(K, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@given(dim=st.integers(2, 60), log_kappa=st.floats(0, 4), seed=seeds,
       over=st.floats(1.01, 1e6))
def test_asymmetry_beyond_the_tolerance_is_always_refused(dtype, dim, log_kappa, seed, over):
    """‖a − aᵀ‖₂ above symmetry_tolerance·‖a‖₂ (so also in the Frobenius norm, which is at
    least the 2-norm) is refused, however large d."""
    rng = np.random.default_rng(seed)
    S = formed(dim, 10.0 ** log_kappa, seed, "float64", floor=1.0)
    S = (S + S.T) / 2
    scale = float(np.max(np.abs(np.linalg.eigvalsh(S))))
    rel = relative_tolerance(dtype, dim=dim * dim)
    tol = symmetry_tolerance(rel, dim)
    if tol >= 1:   # float32 at large d: rounding may legitimately be that large
        return
    t = over * tol * scale / 2          # ‖a − aᵀ‖₂ = 2t = over · tol · scale
    a = S + t * _antisymmetric(rng, dim)
    with pytest.raises(ValueError, match="A must be symmetric"):
        check_symmetric_psd(a, "A", rel_tol=rel)


@given(dim=st.integers(2, 60), seed=seeds, under=st.floats(0.0, 0.99))
def test_everything_the_two_norm_test_accepted_is_accepted(dim, seed, under):
    """The previous test was ‖a − aᵀ‖₂ ≤ rel·‖a‖₂ with SVD-based norms; anything it accepted
    is still accepted (‖K‖_F ≤ √d·‖K‖₂)."""
    rng = np.random.default_rng(seed)
    S = formed(dim, 100.0, seed, "float64", floor=1.0)
    S = (S + S.T) / 2
    rel = 1e-6
    K = _antisymmetric(rng, dim)
    a = S + (under * rel * np.linalg.norm(S, 2) / 2) * K
    assert np.linalg.norm(a - a.T, 2) <= rel * np.linalg.norm(a, 2)
    check_symmetric_psd(a, "A", rel_tol=rel)


def test_one_eigvalsh_per_matrix_and_no_svd(monkeypatch):
    """A deterministic count: construction calls eigvalsh once per matrix (once per stack) and
    never an SVD-based 2-norm."""
    calls = {"eigvalsh": 0, "svd": 0, "norm2": 0}
    eigvalsh, svd, norm = np.linalg.eigvalsh, np.linalg.svd, np.linalg.norm

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    def counting_norm(x, ord=None, *args, **kwargs):
        if ord == 2:
            calls["norm2"] += 1
        return norm(x, ord, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "eigvalsh", count("eigvalsh", eigvalsh))
    monkeypatch.setattr(np.linalg, "svd", count("svd", svd))
    monkeypatch.setattr(np.linalg, "norm", counting_norm)
    A = formed(30, 50.0, 0, "float64")
    QuadraticTask(A, np.ones(30), A, np.ones(30), 1.0)
    assert calls == {"eigvalsh": 2, "svd": 0, "norm2": 0}
    QuadraticTask(np.stack([A] * 4), np.ones((4, 30)), np.stack([A] * 4), np.ones((4, 30)), 1.0)
    assert calls == {"eigvalsh": 4, "svd": 0, "norm2": 0}


def test_indefinite_stack_names_the_task():
    A = np.stack([np.eye(3), np.diag([1.0, -1.0, 2.0])])
    with pytest.raises(ValueError, match=r"A\[1\] must be positive semidefinite"):
        QuadraticTask(A, np.ones((2, 3)), A * 0 + np.eye(3), np.ones((2, 3)), 1.0)
    B = np.stack([np.eye(3), np.triu(np.ones((3, 3)))])
    with pytest.raises(ValueError, match=r"A_query\[1\] must be symmetric"):
        QuadraticTask(np.stack([np.eye(3)] * 2), np.ones((2, 3)), B, np.ones((2, 3)), 1.0)
