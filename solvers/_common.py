"""Shared pieces of the solvers: namespace, the hot-loop operations, the one host read,
callback checks on first use.

Host reads. Every value a solver reads back from an array to decide something (a stopping
test, a finiteness test, a diagnostic as a Python float) goes through :func:`to_host`, which
counts its calls. On NumPy and on torch CPU a read is cheap; on CUDA each one is a
synchronisation with the device, so the CG loop on a device reads only every few steps (see
:func:`solvers.cg`). :func:`count_host_reads` makes the number of reads a deterministic,
testable quantity.
"""
from __future__ import annotations

import contextlib
import functools
import math
from types import SimpleNamespace

import numpy as np
from array_api_compat import array_namespace, is_numpy_namespace, is_torch_array, is_torch_namespace

from solvers._result import NonFiniteIterate
from validation import check_same_namespace

__all__ = ["array_namespace", "ops", "to_host", "count_host_reads", "checked",
           "check_callback_output", "on_host", "raise_if_not_finite", "quiet", "safe_norm",
           "host_norm", "pow2_scale"]


#: NumPy's row inner product (np.vecdot where NumPy has it)
_np_dot = getattr(np, "vecdot", None) or (lambda a, b: np.sum(a * b, axis=-1))


@functools.lru_cache(maxsize=None)
def _ops_for(xp):
    """The handful of operations the solvers' loops run every step, for one namespace: the
    library's own functions where array-api-compat would add a Python wrapper (the semantics
    are those of the array API), the namespace's otherwise. ``plain(a)`` is ``a`` outside any
    autograd graph: quantities computed only to be read (norms for stopping and finiteness
    tests, diagnostics) are taken from it, so they add nothing to what autograd saves."""
    if is_numpy_namespace(xp):
        return SimpleNamespace(
            # (the methods: np.any/np.all add a Python dispatch layer per call)
            where=_np_where, any=lambda a: a.any(), all=lambda a: a.all(), sqrt=np.sqrt,
            isfinite=np.isfinite, dot=_np_dot, norm=_np_norm, maximum=np.maximum,
            stack=np.stack, plain=lambda a: a)
    if is_torch_namespace(xp):
        import torch

        return SimpleNamespace(
            where=torch.where, any=torch.any, all=torch.all, sqrt=torch.sqrt,
            isfinite=torch.isfinite, dot=lambda a, b: torch.sum(a * b, dim=-1),
            norm=lambda a: torch.linalg.vector_norm(a, dim=-1), maximum=torch.maximum,
            stack=torch.stack, plain=lambda a: a.detach())
    return SimpleNamespace(
        where=xp.where, any=xp.any, all=xp.all, sqrt=xp.sqrt, isfinite=xp.isfinite,
        dot=lambda a, b: xp.sum(a * b, axis=-1),
        norm=lambda a: xp.linalg.vector_norm(a, axis=-1), maximum=xp.maximum, stack=xp.stack,
        plain=lambda a: a)


def ops(xp):
    return _ops_for(xp)


def _np_where(keep, new, old):
    """``np.where`` for the masks of the solvers' loops: with one row (a NumPy bool scalar) and
    two values of one shape and dtype, the chosen value itself (the same numbers; np.where's
    dispatch costs more than a CG step's arithmetic on a short vector)."""
    if type(keep) is np.bool_ and getattr(new, "shape", None) == getattr(old, "shape", 0) \
            and getattr(new, "dtype", None) == getattr(old, "dtype", 0):
        return new if keep else old
    return np.where(keep, new, old)


def _np_norm(a):
    """``ops(numpy).norm``: √(Σaᵢ²) over the last axis."""
    return np.sqrt(_np_dot(a, a))


#: array types :func:`to_host` reads without asking which library they belong to
_HOST_TYPES = (np.ndarray, np.float64, np.float32, np.bool_, np.int64)


#: (mantissa bits, exponent bias, integer type of the same width) of the float types whose powers
#: of two :func:`pow2_scale` builds bit by bit (exact on every device)
_FLOAT_BITS = {"float64": (52, 1023, "int64"), "float32": (23, 127, "int32")}


def pow2_scale(xp, a):
    """Per row (the last axis) the power of two s with s ≤ max|a| < 2s, or None where the
    library offers no ``frexp`` (then nothing is scaled): a/s and s·(a/s) are then exact (a
    power-of-two scaling only shifts exponents) unless an entry leaves the normal range. s is
    clamped to the normal powers of two of a's dtype; a zero or non-finite row gets s = 1, and
    so does a row whose largest entry is already in [1, 2). Built on the array's own device (no
    host read): NumPy by ``ldexp``, torch float32/float64 from the exponent bits."""
    o = _ops_for(xp)
    m = xp.max(xp.abs(o.plain(a)), axis=-1)
    if is_numpy_namespace(xp):
        fin = np.finfo(m.dtype)
        if m.ndim == 0:    # one vector: the same power of two from the float (exact)
            v = float(m)
            e = min(max(math.frexp(v)[1] - 1, fin.minexp), fin.maxexp - 1) \
                if math.isfinite(v) and v > 0 else 0
            return m.dtype.type(math.ldexp(1.0, e))
        _, e = np.frexp(m)                    # m = f·2^e, f in [1/2, 1): s = 2^(e − 1)
        e = np.where(np.isfinite(m) & (m > 0), np.clip(e - 1, fin.minexp, fin.maxexp - 1), 0)
        return np.ldexp(np.ones_like(m), e)
    if is_torch_namespace(xp):
        import torch

        name = str(m.dtype).replace("torch.", "")
        if name not in _FLOAT_BITS:
            return None
        mant, bias, itype = _FLOAT_BITS[name]
        _, e = torch.frexp(m)
        e = (e.to(getattr(torch, itype)) - 1).clamp(1 - bias, bias)
        e = torch.where(torch.isfinite(m) & (m > 0), e, torch.zeros_like(e))
        return torch.bitwise_left_shift(e + bias, mant).view(m.dtype)
    return None


def safe_norm(xp, a):
    """Row norms over the last axis without underflow or overflow (as LAPACK's nrm2): the rows
    scaled by :func:`pow2_scale` (exact), s·√(Σ(aᵢ/s)²). Squares of entries below √tiny would
    underflow, and above √max overflow, in the plain √(Σaᵢ²); here the largest scaled entry is in
    [1, 2). Its rounding (docs/mathematics.md §10): ‖a‖ ≤ (computed + tiny)/(1 − γ_{d+3})."""
    o = _ops_for(xp)
    s = pow2_scale(xp, a)
    if s is None:
        return o.norm(a)
    y = o.plain(a) / (s[..., None] if getattr(s, "ndim", 0) else s)
    return s * o.sqrt(o.dot(y, y))


@functools.lru_cache(maxsize=None)
def _plain_norm_floor(dtype, dim: int) -> float:
    """√(dim·tiny/u) for a NumPy or torch dtype: below it the underflow of the squares of a
    plain norm may exceed one rounding (:func:`host_norm`)."""
    fin = np.finfo(np.dtype(str(dtype).replace("torch.", "")))
    return math.sqrt(dim * float(fin.tiny) / (float(fin.eps) / 2))


def host_norm(xp, a):
    """The row norms of ``a`` read on the host (one counted read): the plain √(Σaᵢ²) where it is
    safe, i.e. finite and at least √(d·tiny/u), where the underflow of the squares costs less
    than one rounding; otherwise (a second read, only then) :func:`safe_norm`. A float for a
    vector, a NumPy array for rows. (NumPy warns of an overflow in the plain norm unless the
    caller silences it, as the solvers' loops do: ``quiet``.)"""
    if type(a) is np.ndarray:    # NumPy: the same norm, without the generic path's calls
        _Reads.count += 1
        v = _np_norm(a)
        value = float(v) if a.ndim == 1 else v
    else:
        o = _ops_for(xp)
        value = to_host(o.norm(o.plain(a)))
    low = _plain_norm_floor(a.dtype, a.shape[-1])
    if isinstance(value, float):
        if low <= value < math.inf:
            return value
    elif np.all((value >= low) & (value < math.inf)):
        return value
    return to_host(safe_norm(xp, a))


def on_host(x) -> bool:
    """True when reading ``x``'s values needs no device synchronisation (NumPy, torch CPU)."""
    return not is_torch_array(x) or x.device.type == "cpu"


class _Reads:
    count = 0


def to_host(*arrays):
    """Read arrays back on the host: THE one device→host read of the solvers (counted).

    One argument: a 0-d array comes back as a Python float, any other as a NumPy array.
    Several: a list of those, moved in one transfer (a single synchronisation on CUDA).
    Torch tensors are detached first (reading a value is not part of a computation graph)."""
    _Reads.count += 1
    if len(arrays) == 1 and type(arrays[0]) in _HOST_TYPES:    # the common case, directly
        a = arrays[0]
        return float(a) if a.ndim == 0 else np.asarray(a)
    if all(type(a) in _HOST_TYPES for a in arrays) or not any(is_torch_array(a) for a in arrays):
        out = [float(a) if getattr(a, "ndim", 0) == 0 else np.asarray(a) for a in arrays]
    elif all(a.device.type == "cpu" for a in arrays):   # no synchronisation to save
        out = [a.detach().item() if a.ndim == 0 else a.detach().numpy() for a in arrays]
    else:
        out = _one_transfer(arrays)
    return out[0] if len(arrays) == 1 else out


def _one_transfer(tensors):
    """Several tensors of one device as host values in a single copy (one synchronisation):
    flattened, cast to float64 (exact for floats, booleans and counts below 2⁵³), joined."""
    import torch

    flat = [a.detach().reshape(-1).to(torch.float64) for a in tensors]
    values = (torch.cat(flat) if len(flat) > 1 else flat[0]).cpu().numpy()
    out, start = [], 0
    for a, f in zip(tensors, flat):
        part = values[start:start + f.numel()]
        start += f.numel()
        out.append(float(part[0]) if a.ndim == 0 else part.reshape(tuple(a.shape)))
    return out


@contextlib.contextmanager
def count_host_reads():
    """``with count_host_reads() as reads: ...`` then ``reads.count`` is the number of
    :func:`to_host` calls made inside the block."""
    counter = SimpleNamespace(count=0)
    start = _Reads.count
    try:
        yield counter
    finally:
        counter.count = _Reads.count - start


def raise_if_not_finite(value: float, what: str, step: int) -> None:
    """``value`` is a norm (or curvature) the iteration computed anyway: a NaN or Inf there
    means an iterate or a callback's output went non-finite (no separate scan of arrays)."""
    if not math.isfinite(value):
        raise NonFiniteIterate(f"{what} became NaN or Inf at step {step}; the problem is not "
                               f"smooth/convex as assumed or the step size is too large")


def check_callback_output(out, like, name: str):
    """A callback (matvec, grad, hvp) must return an array of the input's shape, dtype, library
    and device."""
    if getattr(out, "shape", None) != like.shape:
        raise ValueError(f"{name} returned shape {tuple(getattr(out, 'shape', ()))}, "
                         f"expected {tuple(like.shape)}")
    check_same_namespace(out, like, f"the output of {name}")
    return out


def checked(fn, like, name: str):
    """``fn`` whose output is validated against ``like`` (shape, library, dtype, device) on its
    first call only, before anything uses it; later calls pass straight through."""
    validated = False

    def call(*args):
        nonlocal validated
        out = fn(*args)
        if not validated:
            check_callback_output(out, like, name)
            validated = True
        return out

    return call


def quiet(xp):
    """Masked arithmetic computes values it then discards (0/0 in a frozen row): silence
    NumPy's warnings about those; non-finite values that matter are caught from norms."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore") if \
        is_numpy_namespace(xp) else contextlib.nullcontext()
