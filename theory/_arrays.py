"""Array helpers shared by theory/: namespace lookup and exact float64 NumPy copies."""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array

__all__ = ["array_namespace", "device", "to_numpy64"]


def to_numpy64(x) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array or torch tensor (any device), for exact constants."""
    if is_torch_array(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
