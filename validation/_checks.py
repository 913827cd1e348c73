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


#: the largest seed accepted everywhere: NumPy (legacy seeding takes 0 <= seed < 2**32, and
#: SeedSequence / default_rng any non-negative integer), torch.manual_seed (< 2**64) and
#: random.Random; the suite adds small offsets to a seed, which stay within all of them
MAX_SEED = 2**32 - 1


def _kind(value) -> str | None:
    """The dtype kind of an array-like scalar ('b', 'c', 'f', 'i', 'O', ...), or None."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return None
    name = dtype_name(dtype)
    if name == "bool":
        return "b"
    if name.startswith("complex"):
        return "c"
    return getattr(dtype, "kind", None)


def real_number(value, name: str) -> float:
    """``value`` as a float when it is a real number: int, float, a NumPy or torch real scalar
    (or 0-d array). Strings ('1'), booleans (True is not 1.0 here), complex numbers (float()
    would drop the imaginary part) and other objects are refused with a TypeError naming the
    argument."""
    if isinstance(value, (str, bytes, bool, np.bool_, complex, np.complexfloating)) or \
            _kind(value) in ("b", "c", "O", "U", "S", "V"):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None


def check_seed(seed, name: str = "seed") -> int:
    """A seed: an integer with 0 <= seed <= :data:`MAX_SEED` (2**32 - 1), which every
    random-number library the suite uses accepts. Booleans, floats and strings are refused."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"{name} must be an integer from 0 to 2**32 - 1 = {MAX_SEED} (what NumPy "
                         f"and torch.manual_seed both accept), got {seed!r}")
    return int(seed)


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``); NaN, Inf and non-numbers (strings,
    booleans, complex numbers included) are refused with an error naming the argument. Returns
    it as a float."""
    v = real_number(value, name)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def check_kappa(kappa, name: str = "kappa") -> float:
    """A condition number: finite and >= 1."""
    k = real_number(kappa, name)
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
    value = real_number(lam, "lam")
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
    being up to √d times the 2-norm); semidefiniteness is λmin ≥ −rel_tol·‖a‖₂. Every comparison
    is relative and is made on a/s, s = max |aᵢⱼ|, when s is outside [1e-100, 1e100] (so that
    entries near 1e200 or 1e-200 neither overflow nor underflow); a matrix whose eigenvalues
    overflow float64 is refused. Memory: the float64 copy of ``a`` (none if it already is
    float64 NumPy; a scaled copy when scaled), one work array and LAPACK's."""
    check_array(a, name, ndim=(2, 3))
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(a.shape)}")
    rel_tol = check_positive(rel_tol, "rel_tol", allow_zero=True)
    a64 = np.asarray(a.detach().cpu().numpy() if is_torch_array(a) else a, dtype=np.float64)
    # scale before comparing: with entries near 1e200 the squares of ‖a − aᵀ‖_F overflow, near
    # 1e-200 they underflow. Every comparison below is relative, so it is made on a/s, s the
    # largest |entry| of each matrix (only when s is far from 1: the common case copies nothing)
    top = np.maximum(np.max(a64, axis=(-2, -1)), -np.min(a64, axis=(-2, -1)))
    s = np.where(top > 0, top, 1.0)
    if np.any((s > 1e100) | (s < 1e-100)):
        a64 = a64 / s[..., None, None]
    else:
        s = np.ones_like(s)
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
        f = float(np.ravel(s)[i])
        n2, k = float(np.ravel(scale)[i]) * f, float(np.ravel(asym)[i]) * f
        raise ValueError(f"{where(i)} must be symmetric: ||{name} - {name}^T||_F = {k:.3g} "
                         f"exceeds {sym_tol:.3g} * ||{name}||_2 = {sym_tol * n2:.3g}")
    lowest = np.ravel(eig[..., 0])
    bad = np.flatnonzero(lowest < -rel_tol * np.ravel(scale))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where(i)} must be positive semidefinite: its smallest eigenvalue is "
                         f"{lowest[i] * float(np.ravel(s)[i]):.3g}")
    with np.errstate(over="ignore"):
        eig = eig * s[..., None]
    if not np.all(np.isfinite(eig)):
        i = int(np.flatnonzero(~np.all(np.isfinite(eig.reshape(-1, eig.shape[-1])), axis=1))[0])
        raise ValueError(f"{where(i)} is too large: its eigenvalues overflow float64 "
                         f"(largest |entry| {float(np.ravel(top)[i]):.3g})")
    return eig


def check_tolerances(rtol, atol, max_steps) -> tuple[float, float, int | None]:
    """Reject negative or non-finite tolerances, a negative step limit, and no stopping rule."""
    out = []
    for label, value in (("rtol", rtol), ("atol", atol)):
        v = real_number(value, label)
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
