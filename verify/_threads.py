"""One BLAS thread and one torch thread for the suite's small matrices.

The suite's matrices are small (d ≤ 200 in a report, tiny networks in the few-shot tests): BLAS
threads cost more than they save there, and on a loaded machine OpenBLAS's spinning threads make a
40 × 40 QR 100× slower (measured: a converged check of the checker in 7.4 s instead of 0.6 s, a
200 × 200 QR in a report 0.4 s instead of 1.3 ms, on 2 shared cores). A run, the checker and the
few-shot code work inside :func:`single_thread`. NumPy and SciPy load OpenBLAS as a shared library that exports
``openblas_set_num_threads`` (under a suffixed name in the scipy-openblas wheels); this sets it
to 1 inside the block and restores it after, as threadpoolctl does, without the dependency.
Elsewhere (no /proc/self/maps, another BLAS) it does nothing."""
from __future__ import annotations

import contextlib
import ctypes

__all__ = ["single_thread"]

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
def single_thread():
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
