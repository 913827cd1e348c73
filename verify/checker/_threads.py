"""One BLAS thread while the checker works on small matrices.

The checker's matrices are at most 50 × 50 (200 × 200 once, for the paper's task): BLAS threads
cost more than they save there, and on a loaded machine OpenBLAS's spinning threads make a
40 × 40 QR 100× slower (measured: a converged check in 7.4 s instead of 0.6 s on 2 shared
cores). NumPy and SciPy load OpenBLAS as a shared library that exports
``openblas_set_num_threads`` (under a suffixed name in the scipy-openblas wheels); this sets it
to 1 inside the block and restores it after, as threadpoolctl does, without the dependency.
Elsewhere (no /proc/self/maps, another BLAS) it does nothing."""
from __future__ import annotations

import contextlib
import ctypes

__all__ = ["single_blas_thread"]

_PREFIXES = ("openblas", "scipy_openblas", "scipy_openblas64_")
_SUFFIXES = ("", "64_")


def _libraries():
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    found = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    found.append((get, set_))
                    break
            else:
                continue
            break
    return found


@contextlib.contextmanager
def single_blas_thread():
    """Run the block with one OpenBLAS thread in every loaded OpenBLAS (and one torch CPU
    thread when torch is loaded), then restore."""
    import sys

    libs = _libraries()
    before = []
    for get, set_ in libs:
        before.append(int(get()))
        set_(1)
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        for (get, set_), n in zip(libs, before):
            set_(n)
        if torch is not None:
            torch.set_num_threads(torch_before)
