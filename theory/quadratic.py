"""Quadratic tasks (iMAML Appendix F.1, docs/mathematics.md §2): the exact reference.

L̂(φ) = ½ φᵀAφ + φᵀb (inner / support loss), L(φ) = ½ φᵀAₜφ + φᵀbₜ (outer / query loss),
G(φ, θ) = L̂(φ) + (λ/2)‖φ − θ‖².

A :class:`QuadraticTask` is one task, or a stack of n independent tasks held as stacked arrays
(A of shape (n, d, d), b (n, d), ...), which the solvers process together (row i of every
(n, d) array belongs to task i).
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device

from theory._arrays import Sealed, changed_in_place, frozen, to_numpy64, versions
from theory.constants import Constants
from theory.tolerances import relative_tolerance
from validation import (check_array, check_lam, check_positive, check_same_namespace,
                        check_symmetric_psd)

__all__ = ["QuadraticTask"]


class QuadraticTask(Sealed):
    """One quadratic meta-learning task, or a stack of n of them, with exact references.

    Accepts NumPy arrays or torch tensors (CPU or CUDA, float32 or float64); every result is in
    the input's array type, dtype and device. Provides the task protocol used by the solvers
    (``inner_loss``, ``inner_grad``, ``inner_hvp``, ``outer_loss``, ``outer_grad``, ``lam``,
    ``curvature_bounds``) and the exact references solvers never call (``inner_solution``,
    ``jacobian``, ``meta_gradient``, ``implicit_gradient``, ``constants``).

    A stack of n tasks: ``A`` and ``A_query`` of shape (n, d, d), ``b`` and ``b_query`` of
    shape (n, d), ``lam`` a number or one per task (shape (n,), kept as a float64 NumPy array).
    The protocol then maps (n, d) arrays to (n, d) arrays (losses to shape (n,)), the references
    are per task ((n, d), (n, d, d), a tuple of n :class:`Constants`), ``curvature_bounds()``
    returns two float64 arrays of shape (n,), and ``task[i]`` is task i alone. A single task
    (2-D ``A``) behaves exactly as before stacks existed.

    ``psd_rtol`` overrides the relative tolerance (default eps·d² of the dtype) within which A
    and Aₜ must be symmetric and positive semidefinite (see
    :func:`validation.check_symmetric_psd`; one ``eigvalsh`` per matrix).

    The task's data cannot go stale: every input is copied (the caller's array and the task's
    never share memory); NumPy copies are read-only (``task.A *= 2`` raises), torch clones are
    watched (a task whose tensors were changed in place refuses ``constants()`` and
    ``curvature_bounds()`` with a ValueError saying so); attributes cannot be rebound
    (``task.A = ...``, ``task.lam = 2`` raise AttributeError). So ``constants()`` and
    ``curvature_bounds()`` always describe the data.

    Raises ValueError naming the argument for a non-symmetric or indefinite ``A``/``A_query``,
    λ ≤ 0, NaN/Inf (in the data or in ``psd_rtol``), empty or mismatched shapes; TypeError for
    mixed libraries or dtypes, and for λ or ``psd_rtol`` that is not a real number (a string, a
    boolean).
    """

    _NAMES = ("A", "b", "A_query", "b_query")

    def __init__(self, A, b, A_query, b_query, lam, *, psd_rtol=None):
        A, b, A_query, b_query = (frozen(x) for x in (A, b, A_query, b_query))
        check_array(A, "A", ndim=(2, 3))
        batched = A.ndim == 3
        lam = check_lam(lam, n_tasks=A.shape[0] if batched else None)
        # symmetry / semidefiniteness are judged up to rounding of the data's own precision:
        # forming a d×d matrix from d×d factors (Q diag(s) Qᵀ, XᵀX/n) perturbs its spectrum by
        # about d²·eps·‖A‖. A float64 copy of float32 data passes the float32 value as psd_rtol.
        d = A.shape[-1]
        rel = relative_tolerance(A.dtype, dim=d * d) if psd_rtol is None else check_positive(
            psd_rtol, "psd_rtol", allow_zero=True)
        eig_A = check_symmetric_psd(A, "A", rel_tol=rel)
        lead = tuple(A.shape[:-2])
        check_array(b, "b", ndim=A.ndim - 1, like=A, shape=lead + (d,))
        check_array(A_query, "A_query", ndim=A.ndim, like=A, shape=lead + (d, d))
        eig_Aq = check_symmetric_psd(A_query, "A_query", rel_tol=rel)
        check_array(b_query, "b_query", ndim=A.ndim - 1, like=A, shape=lead + (d,))
        self._set(A, b, A_query, b_query, lam, eig_A, eig_Aq, rel)

    def _set(self, A, b, A_query, b_query, lam, eig_A, eig_Aq, psd_rtol):
        # (the task's own arrays: frozen copies from __init__, or views and stacks of them)
        self.A, self.b, self.A_query, self.b_query = A, b, A_query, b_query
        self._versions = versions(A, b, A_query, b_query)
        self.lam, self.psd_rtol = lam, psd_rtol
        for e in (eig_A, eig_Aq):   # the task's own eigenvalues (fresh arrays): read-only too
            if isinstance(e, np.ndarray) and e.flags.writeable and e.base is None:
                e.flags.writeable = False
        self._eig_A, self._eig_Aq = eig_A, eig_Aq
        self.dim = A.shape[-1]
        self.batched = A.ndim == 3
        self.n_tasks = A.shape[0] if self.batched else None
        self._xp = array_namespace(A)
        # NumPy's own matmul: array-api-compat's wrapper adds a Python call per product (the
        # inner loops run millions); same function, same result. torch keeps the namespace's.
        self._matmul = np.matmul if isinstance(A, np.ndarray) else self._xp.matmul
        return self._seal()

    @classmethod
    def _assemble(cls, *parts):
        return object.__new__(cls)._set(*parts)

    @classmethod
    def stack(cls, tasks) -> "QuadraticTask":
        """n single tasks of one dimension, library, dtype and device as one stack (their
        eigenvalues are reused: no new eigendecomposition)."""
        tasks = list(tasks)
        if not tasks or any(not isinstance(t, cls) or t.batched for t in tasks):
            raise TypeError("tasks must be a non-empty sequence of single QuadraticTasks")
        first = tasks[0]
        for i, t in enumerate(tasks[1:], 1):
            if t.dim != first.dim:
                raise ValueError(f"tasks[{i}] has dimension {t.dim}, tasks[0] has {first.dim}")
            check_same_namespace(t.A, first.A, f"tasks[{i}].A")
        xp = first._xp
        lams = np.array([t.lam for t in tasks])
        lam = float(lams[0]) if np.all(lams == lams[0]) else lams
        parts = [xp.stack([getattr(t, name) for t in tasks]) for name in cls._NAMES]
        for p in parts:   # fresh arrays: made read-only without another copy
            if isinstance(p, np.ndarray):
                p.flags.writeable = False
        return cls._assemble(*parts,
                             lam, np.stack([t._eig_A for t in tasks]),
                             np.stack([t._eig_Aq for t in tasks]),
                             max(t.psd_rtol for t in tasks))

    def __len__(self) -> int:
        if not self.batched:
            raise TypeError("a single QuadraticTask has no len(); n_tasks is None")
        return self.n_tasks

    def __getitem__(self, i) -> "QuadraticTask":
        """Task i of a stack, as a single task (no copy of the data, no new checks)."""
        if not self.batched:
            raise TypeError("a single QuadraticTask cannot be indexed")
        i = range(self.n_tasks)[i]
        lam = self.lam if isinstance(self.lam, float) else float(self.lam[i])
        return self._assemble(self.A[i], self.b[i], self.A_query[i], self.b_query[i], lam,
                              self._eig_A[i], self._eig_Aq[i], self.psd_rtol)

    # -- helpers -------------------------------------------------------------------------------
    def _check_point(self, x, name):
        return check_array(x, name, ndim=self.A.ndim - 1, like=self.A, shape=self.b.shape)

    def _lam_rows(self):
        """λ broadcastable against (n, d) arrays (a float, or an (n, 1) array of A's type)."""
        if isinstance(self.lam, float):
            return self.lam
        return self._xp.asarray(self.lam, dtype=self.A.dtype, device=device(self.A))[:, None]

    def _mv(self, M, x):
        # a cheap fit test (library, dtype, device; no finiteness scan) before any arithmetic,
        # so a NumPy task given a torch vector (or vice versa) says so instead of coercing
        check_same_namespace(x, self.A, "phi")
        if self.batched:
            return self._matmul(M, x[..., None])[..., 0]
        if x.ndim > 1:   # one task at several points (rows): row i is M xᵢ
            return self._matmul(x, M.T)
        return self._matmul(M, x)

    def _quadratic_form(self, M, c, phi):
        xp = self._xp
        if self.batched or phi.ndim > 1:
            return 0.5 * xp.sum(phi * self._mv(M, phi), axis=-1) + xp.sum(phi * c, axis=-1)
        return 0.5 * xp.sum(phi * self._mv(M, phi)) + xp.sum(phi * c)

    def _system(self):
        xp = self._xp
        eye = xp.eye(self.dim, dtype=self.A.dtype, device=device(self.A))
        lam = self._lam_rows()
        return self.A + (lam if isinstance(lam, float) else lam[..., None]) * eye

    def _numpy_single(self) -> bool:
        return not self.batched and isinstance(self.A, np.ndarray)

    def _factors(self, float64: bool = False):
        """LU factors of A + λI of a single NumPy task (in float64 with ``float64``), made at the
        first solve and kept: the task's arrays are read-only copies and its attributes cannot
        be rebound, so they always describe its data. Every later solve (references at other
        θ, the Jacobian, the constants) costs O(d²) instead of O(d³)."""
        import scipy.linalg

        key = "_lu64" if float64 and self.A.dtype != np.float64 else "_lu"
        f = self.__dict__.get(key)
        if f is None:
            C = self._system() if key == "_lu" else (to_numpy64(self.A)
                                                    + self.lam * np.eye(self.dim))
            f = scipy.linalg.lu_factor(C, check_finite=False)
            setattr(self, key, f)
        return f

    def _solve(self, rhs):
        """(A + λI)⁻¹ rhs for a vector (single task), a matrix of right-hand sides (single NumPy
        task) or one right-hand side per task of a stack."""
        xp = self._xp
        if self._numpy_single():
            import scipy.linalg

            return scipy.linalg.lu_solve(self._factors(), rhs, check_finite=False)
        if self.batched:
            return xp.linalg.solve(self._system(), rhs[..., None])[..., 0]
        return xp.linalg.solve(self._system(), rhs)

    # -- task protocol -------------------------------------------------------------------------
    def inner_loss(self, phi):
        """L̂(φ) = ½ φᵀAφ + φᵀb (one value per task of a stack)."""
        return self._quadratic_form(self.A, self.b, phi)

    def inner_grad(self, phi):
        """∇L̂(φ) = Aφ + b."""
        return self._mv(self.A, phi) + self.b

    def inner_hvp(self, phi, v):
        """∇²L̂(φ) v = A v (single task: batched over leading dimensions of v; a stack: row i
        of v times Aᵢ)."""
        check_same_namespace(v, self.A, "v")
        if self.batched:
            return self._matmul(v[..., None, :], self.A)[..., 0, :]
        return self._matmul(v, self.A)  # A is symmetric: v Aᵀ = (A v)ᵀ row-wise

    def outer_loss(self, phi):
        """L(φ) = ½ φᵀAₜφ + φᵀbₜ."""
        return self._quadratic_form(self.A_query, self.b_query, phi)

    def outer_grad(self, phi):
        """∇L(φ) = Aₜφ + bₜ."""
        return self._mv(self.A_query, phi) + self.b_query

    def _check_unchanged(self):
        """The cached eigenvalues describe the data: refuse when a torch tensor of the task was
        changed in place after the task was built (NumPy arrays are read-only copies)."""
        name = changed_in_place(self._NAMES, (self.A, self.b, self.A_query, self.b_query),
                                self._versions)
        if name is not None:
            raise ValueError(f"task.{name} was changed in place after the task was built, so its "
                             f"constants no longer describe it: build a new QuadraticTask from "
                             f"the new data")

    def curvature_bounds(self):
        """(β, μ) with μI ⪯ ∇²G ⪯ βI: problem data a solver may use to pick its step size
        (floats; for a stack, float64 arrays of shape (n,))."""
        self._check_unchanged()
        beta, mu = self._eig_A[..., -1] + self.lam, self._eig_A[..., 0] + self.lam
        if self.batched:
            return np.asarray(beta, dtype=np.float64), np.asarray(mu, dtype=np.float64)
        return float(beta), float(mu)

    # -- exact references ----------------------------------------------------------------------
    def inner_solution(self, theta):
        """Alg*(θ) = (A + λI)⁻¹(λθ − b)."""
        self._check_point(theta, "theta")
        return self._solve(self._lam_rows() * theta - self.b)

    def jacobian(self, theta):
        """dAlg*/dθ = λ(A + λI)⁻¹ = (I + A/λ)⁻¹ (Lemma 1); it does not depend on θ."""
        self._check_point(theta, "theta")
        xp = self._xp
        eye = xp.eye(self.dim, dtype=self.A.dtype, device=device(self.A))
        lam = self._lam_rows()
        if self._numpy_single():
            return lam * self._solve(eye)
        return (lam if isinstance(lam, float) else lam[..., None]) * xp.linalg.solve(
            self._system(), eye)

    def implicit_gradient(self, phi):
        """(I + H(φ)/λ)⁻¹∇L(φ) = λ(A + λI)⁻¹∇L(φ): the exact solution of the CG system of
        Algorithm 2 at a given (possibly approximate) φ (docs/mathematics.md §4)."""
        self._check_point(phi, "phi")
        return self._lam_rows() * self._solve(self.outer_grad(phi))

    def meta_gradient(self, theta):
        """Exact dθ L(Alg*(θ)) = λ(A + λI)⁻¹(Aₜφ* + bₜ), φ* = Alg*(θ)."""
        return self.implicit_gradient(self.inner_solution(theta))

    def constants(self, theta, radius: float | None = None, delta: float = 0.0):
        """Constants of Assumption 2 (docs/mathematics.md §2), in float64 (a tuple of one per
        task for a stack; row i of θ for task i).

        Without ``radius``: instance constants at this θ, B = ‖∇L(Alg*(θ))‖ and D = ‖Alg*(θ)‖.
        With ``radius`` R: uniform constants on ‖θ‖ ≤ R, D = (λR + ‖b‖)/μ and
        B = λmax(Aₜ)(D + δ) + ‖bₜ‖, valid for gradients taken within ``delta`` of Alg*(θ).
        """
        self._check_point(theta, "theta")
        self._check_unchanged()
        if self.batched:
            return self._stacked_constants(theta, radius, delta)
        check_positive(delta, "delta", allow_zero=True)
        beta, mu = self.curvature_bounds()
        L = float(max(self._eig_Aq[-1], 0.0))
        A, b = to_numpy64(self.A), to_numpy64(self.b)
        Aq, bq = to_numpy64(self.A_query), to_numpy64(self.b_query)
        if radius is None:
            import scipy.linalg

            # one LU of the float64 data, kept for a NumPy task (whose data cannot change),
            # made afresh for a torch one: the same numbers on every backend
            factors = self._factors(float64=True) if self._numpy_single() else \
                scipy.linalg.lu_factor(A + self.lam * np.eye(self.dim), check_finite=False)
            phi = scipy.linalg.lu_solve(factors, self.lam * to_numpy64(theta) - b,
                                        check_finite=False)
            D = float(np.linalg.norm(phi))
            B = float(np.linalg.norm(Aq @ phi + bq)) + L * delta
            return Constants(beta, mu, beta / mu, L, B, 0.0, D, self.lam)
        check_positive(radius, "radius", allow_zero=True)
        D = (self.lam * radius + float(np.linalg.norm(b))) / mu
        B = L * (D + delta) + float(np.linalg.norm(bq))
        return Constants(beta, mu, beta / mu, L, B, 0.0, D, self.lam, scope="uniform",
                         radius=float(radius))

    def _stacked_constants(self, theta, radius, delta):
        """:meth:`constants` for every task of a stack, the linear algebra done once on the
        stack (the same formulas as for one task)."""
        check_positive(delta, "delta", allow_zero=True)
        n, d = self.n_tasks, self.dim
        lam = np.broadcast_to(np.asarray(self.lam, dtype=np.float64), (n,))
        beta, mu = self.curvature_bounds()
        L = np.maximum(self._eig_Aq[:, -1], 0.0)
        A, b = to_numpy64(self.A), to_numpy64(self.b)
        Aq, bq = to_numpy64(self.A_query), to_numpy64(self.b_query)
        if radius is None:
            C = A + lam[:, None, None] * np.eye(d)
            phi = np.linalg.solve(C, (lam[:, None] * to_numpy64(theta) - b)[..., None])[..., 0]
            D = np.linalg.norm(phi, axis=1)
            B = np.linalg.norm((Aq @ phi[..., None])[..., 0] + bq, axis=1) + L * delta
            return tuple(Constants(float(beta[i]), float(mu[i]), float(beta[i] / mu[i]),
                                   float(L[i]), float(B[i]), 0.0, float(D[i]), float(lam[i]))
                         for i in range(n))
        R = check_positive(radius, "radius", allow_zero=True)
        D = (lam * R + np.linalg.norm(b, axis=1)) / mu
        B = L * (D + delta) + np.linalg.norm(bq, axis=1)
        return tuple(Constants(float(beta[i]), float(mu[i]), float(beta[i] / mu[i]), float(L[i]),
                               float(B[i]), 0.0, float(D[i]), float(lam[i]), scope="uniform",
                               radius=R) for i in range(n))
