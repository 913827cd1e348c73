"""Array helpers shared by theory/: namespace lookup and exact float64 NumPy copies."""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array

__all__ = ["array_namespace", "device", "to_numpy64", "frozen", "Sealed", "versions",
           "changed_in_place", "immutable_cache"]


def to_numpy64(x) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array or torch tensor (any device), for exact constants."""
    if is_torch_array(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def frozen(x):
    """A task's own copy of an input array, so that the caller's array and the task's cannot
    diverge: a NumPy array is copied and handed out as a read-only view of a read-only copy (so
    ``task.A *= 2`` raises, and so does ``task.A.flags.writeable = True``); a torch tensor is
    cloned (torch has no read-only tensors: in-place changes of the task's own clone are caught
    by :func:`changed_in_place`). Anything else is returned as it is, for the checks to refuse."""
    if isinstance(x, np.ndarray):
        base = np.array(x, copy=True)
        base.flags.writeable = False
        view = base.view()
        view.flags.writeable = False
        return view
    if is_torch_array(x):
        return x.detach().clone()
    return x


class Sealed:
    """A task whose attributes cannot be rebound once it is built (``task.A = ...`` and
    ``task.lam = '1'`` raise AttributeError): its constants describe the data it was built with.
    Private attributes (caches) stay settable."""

    def _seal(self):
        object.__setattr__(self, "_sealed", True)
        return self

    def __setattr__(self, name, value):
        if not name.startswith("_") and self.__dict__.get("_sealed"):
            raise AttributeError(f"{type(self).__name__}.{name} cannot be changed: a task's "
                                 f"data and λ are fixed when it is built (build a new task)")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if not name.startswith("_") and self.__dict__.get("_sealed"):
            raise AttributeError(f"{type(self).__name__}.{name} cannot be deleted")
        object.__delattr__(self, name)


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


def immutable_cache(task, names) -> dict | None:
    """A private dict kept on ``task`` for quantities computed from its data, when that data
    cannot change: a sealed task (attributes cannot be rebound) whose arrays ``names`` are all
    read-only NumPy arrays (a task's own frozen copies). None otherwise (torch tensors can be
    changed in place, duck-typed tasks rebound): then nothing may be cached."""
    attrs = getattr(task, "__dict__", None)
    if not isinstance(attrs, dict) or not attrs.get("_sealed"):
        return None
    for n in names:
        a = attrs.get(n)
        if not isinstance(a, np.ndarray) or a.flags.writeable:
            return None
    cache = attrs.get("_cache")
    if cache is None:
        cache = {}
        object.__setattr__(task, "_cache", cache)
    return cache
