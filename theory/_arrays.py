"""Array helpers shared by theory/: namespace lookup and exact float64 NumPy copies."""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array

__all__ = ["array_namespace", "device", "to_numpy64", "frozen", "versions", "changed_in_place"]


def to_numpy64(x) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array or torch tensor (any device), for exact constants."""
    if is_torch_array(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def frozen(x):
    """A task's own copy of an input array that cannot go stale: a NumPy array is copied and the
    copy made read-only (an array that is already read-only is kept as it is, so views and
    stacks of a task's arrays cost nothing); a torch tensor is kept as it is (torch has no
    read-only tensors) and its in-place changes are caught by :func:`changed_in_place`."""
    if isinstance(x, np.ndarray) and x.flags.writeable:
        x = np.array(x, copy=True)
        x.flags.writeable = False
    return x


def _version(a):
    if not is_torch_array(a):
        return None
    try:
        return a._version
    except RuntimeError:   # inference-mode tensors keep no version counter (nor change in place)
        return None


def versions(*arrays) -> tuple:
    """The in-place version counters of torch tensors (None for NumPy arrays): torch bumps a
    tensor's counter on every in-place operation, through any view of it."""
    return tuple(_version(a) for a in arrays)


def changed_in_place(names, arrays, recorded) -> str | None:
    """The name of the first torch tensor whose version counter moved since ``recorded``."""
    for name, a, v in zip(names, arrays, recorded):
        if v is not None and _version(a) != v:
            return name
    return None
