"""Thread count of torch on the CPU for tiny networks."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["single_thread"]


@contextlib.contextmanager
def single_thread():
    """Run torch on one CPU thread inside the block (tiny networks: thread start-up costs
    more than it saves, and on a shared machine two threads per op contend badly)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
