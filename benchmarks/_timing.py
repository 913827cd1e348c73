"""The benchmarks' one way to time calls against each other: alternate them round by round (a
loaded machine then slows every side alike) and take medians."""
from __future__ import annotations

import time

import numpy as np


def interleaved(fns: dict, rounds: int) -> dict:
    """Median seconds of each call, the calls alternating round by round (one warm-up each)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}
