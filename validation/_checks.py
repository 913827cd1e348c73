from __future__ import annotations

import math

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj, is_torch_array


def dtype_name(x) -> str:
    """'float32', 'float64', ... for an array, a tensor, a NumPy or torch dtype, or a name."""
    dtype = getattr(x, "dtype", x)
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
    """Validate that ``x`` is a finite floating array; with ``like``, of the same library,
    dtype and device as ``like``. Returns ``x`` unchanged. Raises TypeError/ValueError naming ``name``."""
    if not is_array_api_obj(x) or isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a NumPy array or torch tensor, got {type(x).__name__}")
    if floating and dtype_name(x) not in ("float32", "float64"):
        raise TypeError(f"{name} must have dtype float32 or float64, got {dtype_name(x)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                             f"got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if like is not None:
        check_same_namespace(x, like, name)
    check_finite(x, name)
    return x


def check_same_namespace(x, like, name: str) -> None:
    """``x`` must share array library, dtype and device with ``like``."""
    if is_torch_array(x) != is_torch_array(like):
        raise TypeError(f"{name} is a {type(x).__name__} but the other inputs are "
                        f"{type(like).__name__}: do not mix array libraries")
    if dtype_name(x) != dtype_name(like):
        raise TypeError(f"{name} has dtype {dtype_name(x)} but the other inputs have "
                        f"{dtype_name(like)}")
    if device(x) != device(like):
        raise ValueError(f"{name} is on device {device(x)} but the other inputs are on {device(like)}")


def check_finite(x, name: str) -> None:
    xp = array_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or Inf")


def check_lam(lam) -> float:
    """λ must be a finite positive real number."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"lam must be finite and > 0, got {lam!r}")
    return value


def check_symmetric_psd(a, name: str, *, rel_tol: float) -> np.ndarray:
    """``a`` (a finite square matrix) must be symmetric and positive semidefinite up to
    ``rel_tol * ||a||``. Returns its eigenvalues (float64, ascending)."""
    check_array(a, name, ndim=2)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(a.shape)}")
    a64 = np.asarray(a.detach().cpu().numpy() if is_torch_array(a) else a, dtype=np.float64)
    scale = max(float(np.linalg.norm(a64, 2)), np.finfo(np.float64).tiny)
    asym = float(np.linalg.norm(a64 - a64.T, 2))
    if asym > rel_tol * scale:
        raise ValueError(f"{name} must be symmetric: ||{name} - {name}^T|| = {asym:.3g} "
                         f"exceeds {rel_tol:.3g} * ||{name}||")
    eig = np.linalg.eigvalsh((a64 + a64.T) / 2)
    if eig[0] < -rel_tol * scale:
        raise ValueError(f"{name} must be positive semidefinite: its smallest eigenvalue is "
                         f"{eig[0]:.3g}")
    return eig


def check_tolerances(rtol, atol, max_steps) -> tuple[float, float, int | None]:
    """Reject negative or non-finite tolerances, a negative step limit, and no stopping rule."""
    out = []
    for label, value in (("rtol", rtol), ("atol", atol)):
        v = float(value)
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
