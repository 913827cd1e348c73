"""References in 50-digit arithmetic for quadratic tasks (docs/mathematics.md §2, §10).

A float64 reference cannot judge a float64 result at rounding level: with ‖θ‖ = 1e4 the exact
inner solution rounded to float64 is off by ~1e-12, and ∇L(φ*) = Aₜφ* + bₜ computed from it
cancels down to a meta-gradient of 1e-3 with an error of the same 1e-12. Here the task's stored
numbers (float64, exactly representable) are taken as exact and every reference is computed with
mpmath at ``dps`` decimal digits: linear solves by iterative refinement (a float64 LU for the
corrections, residuals in mpmath: each pass gains about 16 − log10 κ digits, down to
10^-dps·κ relative), products rounded to ``dps`` digits. The error of a float vector against such a reference is then exact to
many more digits than a float64 can hold.
"""
from __future__ import annotations

import mpmath
import numpy as np

from theory._arrays import to_numpy64

__all__ = ["QuadraticReference", "DPS"]

DPS = 50


def _mp(x) -> np.ndarray:
    """A float64 array as an object array of mpf (exact: every float64 is an mpf)."""
    a = to_numpy64(x)
    out = np.empty(a.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(a.reshape(-1)):
        flat[i] = mpmath.mpf(float(v))
    return out


def _to_float(x: np.ndarray) -> np.ndarray:
    """The mpf array rounded to the nearest float64s."""
    return np.array([float(v) for v in x.reshape(-1)], dtype=np.float64).reshape(x.shape)


class QuadraticReference:
    """50-digit references of one quadratic task (anything with ``A, b, A_query, b_query, lam``).

    ``inner_solution(θ)``, ``implicit_gradient(φ)``, ``meta_gradient(θ)`` return object arrays of
    mpf; ``error(x, ref)`` is ‖x − ref‖ for a float array x, exact to ``dps`` digits then
    rounded to a float; ``as_float(ref)`` rounds a reference to float64 (each entry correctly
    rounded)."""

    def __init__(self, task, *, dps: int = DPS):
        self.dps = int(dps)
        with mpmath.workdps(self.dps):
            self.lam = mpmath.mpf(float(task.lam))
            self.A, self.b = _mp(task.A), _mp(task.b)
            self.Aq, self.bq = _mp(task.A_query), _mp(task.b_query)
        self.dim = self.A.shape[0]
        A64 = to_numpy64(task.A)
        self._C64 = A64 + float(task.lam) * np.eye(self.dim)
        # the residual is exact to about 10^-dps of the terms |A||x|: corrections stall at
        # 10^-dps·κ relative, so that is where refinement stops (κ = 1e12 still leaves 35 digits)
        self._kappa = float(np.linalg.cond(self._C64)) if self.dim else 1.0
        self._cache: dict = {}

    def _solve(self, rhs: np.ndarray) -> np.ndarray:
        """(A + λI)⁻¹ rhs to dps digits: float64 corrections, residuals in mpmath."""
        x = np.array([mpmath.mpf(0)] * self.dim, dtype=object)
        scale = max(abs(v) for v in rhs) if self.dim else 0
        if scale == 0:
            return x
        target = mpmath.mpf(10) ** (-self.dps + 3) * max(self._kappa, 1.0)
        for _ in range(60):
            r = rhs - (self.A.dot(x) + self.lam * x)
            rf = _to_float(r)
            dx = np.linalg.solve(self._C64, rf)
            x = x + _mp(dx)
            if not np.any(dx) or np.max(np.abs(dx)) <= float(target) * float(max(abs(v) for v in x)):
                break
        else:  # pragma: no cover - needs κ·eps ≥ 1
            raise ArithmeticError("iterative refinement did not converge (κ too large for float64 "
                                  "corrections)")
        return x

    def inner_solution(self, theta) -> np.ndarray:
        """Alg*(θ) = (A + λI)⁻¹(λθ − b), θ taken exactly."""
        key = ("phi", to_numpy64(theta).tobytes())
        if key not in self._cache:
            with mpmath.workdps(self.dps):
                self._cache[key] = self._solve(self.lam * _mp(theta) - self.b)
        return self._cache[key]

    def outer_grad(self, phi) -> np.ndarray:
        """∇L(φ) = Aₜφ + bₜ for a float or mpf φ."""
        with mpmath.workdps(self.dps):
            p = phi if phi.dtype == object else _mp(phi)
            return self.Aq.dot(p) + self.bq

    def implicit_gradient(self, phi) -> np.ndarray:
        """(I + A/λ)⁻¹∇L(φ) = λ(A + λI)⁻¹(Aₜφ + bₜ) at a float or mpf φ."""
        with mpmath.workdps(self.dps):
            return self.lam * self._solve(self.outer_grad(phi))

    def meta_gradient(self, theta) -> np.ndarray:
        """dθL(Alg*(θ)) = λ(A + λI)⁻¹(Aₜφ* + bₜ)."""
        key = ("g", to_numpy64(theta).tobytes())
        if key not in self._cache:
            self._cache[key] = self.implicit_gradient(self.inner_solution(theta))
        return self._cache[key]

    def error(self, x, reference) -> float:
        """‖x − reference‖ with x a float array (taken exactly), to dps digits, as a float."""
        with mpmath.workdps(self.dps):
            diff = _mp(x) - reference
            return float(mpmath.sqrt(mpmath.fsum(v * v for v in diff)))

    @staticmethod
    def as_float(reference) -> np.ndarray:
        return _to_float(reference)
