"""Measuring the memory of a meta-gradient on any callable: peak CUDA memory on a GPU, and on
any device the peak bytes held in tensors saved for backward (the deterministic measure of
:class:`verify.checks.memory.SavedBytesMeter`, reused here, that the CPU tests can assert on)."""
from __future__ import annotations

import torch

from verify.checks.memory import SavedBytesMeter

__all__ = ["SavedBytesMeter", "peak_saved_bytes", "peak_cuda_bytes"]


def peak_saved_bytes(fn) -> tuple[int, object]:
    """(peak bytes saved for backward while ``fn()`` runs, fn's result)."""
    with SavedBytesMeter() as meter:
        out = fn()
    return meter.peak, out


def peak_cuda_bytes(fn, device) -> tuple[int, object]:
    """(peak CUDA memory allocated while ``fn()`` runs, above what was allocated before it;
    fn's result). Needs a CUDA device."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {device}")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base), out
