from __future__ import annotations

import functools
import math

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj, is_torch_array

_FLOATING = ("float32", "float64")


@functools.lru_cache(maxsize=64)
def _name_of(dtype) -> str:
    return str(dtype).replace("torch.", "")


def dtype_name(x) -> str:
    """'float32', 'float64', ... for an array, a tensor, a NumPy or torch dtype, or a name
    (cached per dtype: no string is built on the hot path)."""
    dtype = getattr(x, "dtype", x)
    try:
        return _name_of(dtype)
    except TypeError:   # an unhashable dtype-like object
        return str(dtype).replace("torch.", "")


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``); NaN, Inf and non-numbers are refused
    with an error naming the argument. Returns it as a float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def check_kappa(kappa, name: str = "kappa") -> float:
    """A condition number: finite and >= 1."""
    try:
        k = float(kappa)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(kappa).__name__}") from None
    if not math.isfinite(k) or k < 1:
        raise ValueError(f"{name} must be finite and >= 1, got {kappa!r}")
    return k


def check_array(x, name: str, *, ndim: int | tuple[int, ...] | None = None, like=None,
                shape=None, floating: bool = True):
    """Validate that ``x`` is a finite, non-empty floating array; with ``like``, of the same
    library, dtype and device as ``like``. Returns ``x`` unchanged. Raises TypeError/ValueError
    naming ``name``."""
    if not is_array_api_obj(x) or isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a NumPy array or torch tensor, got {type(x).__name__}")
    if floating and dtype_name(x) not in _FLOATING:
        raise TypeError(f"{name} must have dtype float32 or float64, got {dtype_name(x)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                             f"got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if 0 in tuple(x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if like is not None:
        check_same_namespace(x, like, name)
    check_finite(x, name)
    return x


def check_same_namespace(x, like, name: str) -> None:
    """``x`` must share array library, dtype and device with ``like``. The common case (same
    type, equal dtype objects, same device) costs three comparisons and builds no string."""
    kind = type(x)
    if kind is type(like) and x.dtype == like.dtype and (
            kind is np.ndarray or x.device == like.device):
        return
    if is_torch_array(x) != is_torch_array(like):
        raise TypeError(f"{name} is a {type(x).__name__} but the other inputs are "
                        f"{type(like).__name__}: do not mix array libraries")
    if dtype_name(x) != dtype_name(like):
        raise TypeError(f"{name} has dtype {dtype_name(x)} but the other inputs have "
                        f"{dtype_name(like)}")
    if device(x) != device(like):
        raise ValueError(f"{name} is on device {device(x)} but the other inputs are on {device(like)}")


def check_finite(x, name: str) -> None:
    if is_torch_array(x):   # a check, not part of a computation: off the autograd graph
        x = x.detach()
    xp = array_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or Inf")


def check_lam(lam, *, n_tasks: int | None = None):
    """λ must be a finite positive real number. With ``n_tasks`` (a stack of tasks) it may also
    be one value per task: a sequence or array of shape (n_tasks,), returned as a float64 NumPy
    array; a single number is returned as a float."""
    if n_tasks is not None and (is_array_api_obj(lam) or isinstance(lam, (list, tuple))) \
            and getattr(lam, "ndim", 1) != 0:
        arr = np.asarray(lam.detach().cpu().numpy() if is_torch_array(lam) else lam)
        if arr.shape != (n_tasks,) or arr.dtype.kind not in "fiu":
            raise ValueError(f"lam must be a number or have shape ({n_tasks},) (one per task), "
                             f"got {'shape ' + str(arr.shape) if arr.dtype.kind in 'fiu' else arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr) & (arr > 0)):
            raise ValueError(f"lam must be finite and > 0 for every task, got {arr.min()!r} "
                             f"among its values")
        return arr
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"lam must be finite and > 0, got {lam!r}")
    return value


def symmetry_tolerance(rel_tol: float, dim: int) -> float:
    """The relative bound on ‖a − aᵀ‖_F/‖a‖₂ that :func:`check_symmetric_psd` allows, given the
    2-norm allowance ``rel_tol``: max(√d, 2)·rel_tol.

    Why √d: for the antisymmetric K = a − aᵀ, ‖K‖_F ≤ √rank(K)·‖K‖₂ ≤ √d·‖K‖₂, so every matrix
    that the 2-norm test ‖K‖₂ ≤ rel_tol·‖a‖₂ accepts is accepted. Why this covers data built as
    Q·diag(s)·Qᵀ in floating point (unit roundoff u = eps/2): each entry is a sum of d products
    of three factors, so |fl(a)ᵢⱼ − aᵢⱼ| ≤ γ_{d+2}·Σₖ|QᵢₖsₖQⱼₖ| ≤ γ_{d+2}‖a‖₂ (Higham Thm 3.5 and
    Cauchy–Schwarz over orthonormal rows), hence |Kᵢⱼ| ≤ 2γ_{d+2}‖a‖₂ and
    ‖K‖_F ≤ d(d+2)·eps·‖a‖₂ (to first order), which is at most max(√d, 2)·d²·eps·‖a‖₂ for every d:
    with the default rel_tol = d²·eps such data is never refused. A matrix whose asymmetry
    exceeds this in the 2-norm is always refused (‖K‖_F ≥ ‖K‖₂)."""
    return max(math.sqrt(dim), 2.0) * rel_tol


def check_symmetric_psd(a, name: str, *, rel_tol: float) -> np.ndarray:
    """``a`` (a finite square matrix, or a stack of them of shape (n, d, d)) must be symmetric
    and positive semidefinite up to ``rel_tol``. Returns the eigenvalues of its symmetric part
    (float64, ascending; shape (d,) or (n, d)).

    Cost: one ``eigvalsh`` per matrix and O(d²) more. The scale ‖a‖₂ is taken from those
    eigenvalues (max |λ| of the symmetric part); the asymmetry from the Frobenius norm of
    a − aᵀ, allowed up to :func:`symmetry_tolerance` (which accounts for the Frobenius norm
    being up to √d times the 2-norm); semidefiniteness is λmin ≥ −rel_tol·‖a‖₂. Memory: the
    float64 copy of ``a`` (none if it already is float64 NumPy), one work array and LAPACK's."""
    check_array(a, name, ndim=(2, 3))
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(a.shape)}")
    rel_tol = check_positive(rel_tol, "rel_tol", allow_zero=True)
    a64 = np.asarray(a.detach().cpu().numpy() if is_torch_array(a) else a, dtype=np.float64)
    at = np.swapaxes(a64, -1, -2)
    work = np.subtract(a64, at)
    asym = np.sqrt(np.einsum("...ij,...ij->...", work, work))
    np.add(a64, at, out=work)
    work *= 0.5
    eig = np.linalg.eigvalsh(work)
    del work
    scale = np.maximum(np.maximum(np.abs(eig[..., 0]), np.abs(eig[..., -1])),
                       np.finfo(np.float64).tiny)
    sym_tol = symmetry_tolerance(rel_tol, a.shape[-1])
    bad = np.flatnonzero(np.asarray(asym) > sym_tol * scale)
    where = lambda i: f"{name}[{i}]" if a64.ndim == 3 else name  # noqa: E731
    if bad.size:
        i = int(bad[0])
        s, k = float(np.ravel(scale)[i]), float(np.ravel(asym)[i])
        raise ValueError(f"{where(i)} must be symmetric: ||{name} - {name}^T||_F = {k:.3g} "
                         f"exceeds {sym_tol:.3g} * ||{name}||_2 = {sym_tol * s:.3g}")
    lowest = np.ravel(eig[..., 0])
    bad = np.flatnonzero(lowest < -rel_tol * np.ravel(scale))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where(i)} must be positive semidefinite: its smallest eigenvalue is "
                         f"{lowest[i]:.3g}")
    return eig


def check_tolerances(rtol, atol, max_steps) -> tuple[float, float, int | None]:
    """Reject negative or non-finite tolerances, a negative step limit, and no stopping rule."""
    out = []
    for label, value in (("rtol", rtol), ("atol", atol)):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{label} must be a real number, got {type(value).__name__}") from None
        if not math.isfinite(v) or v < 0.0:
            raise ValueError(f"{label} must be finite and >= 0, got {value!r}")
        out.append(v)
    if max_steps is not None:
        max_steps = check_steps(max_steps, "max_steps")
    elif out[0] == 0.0 and out[1] == 0.0:
        raise ValueError("no stopping rule: give max_steps, or rtol > 0 or atol > 0")
    return out[0], out[1], max_steps


def check_steps(steps, name: str) -> int:
    """A step count (``max_steps``, ``cg_steps``, ``inner_steps``...) must be a non-negative
    integer; the error names the argument the caller passed."""
    try:
        ok = not isinstance(steps, bool) and int(steps) == steps and steps >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a non-negative integer, got {steps!r}")
    return int(steps)
