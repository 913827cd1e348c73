"""Sinusoid regression, the standard MAML toy task (Finn et al. 2017, §5.1): a task is
y = A sin(x − p) with amplitude A ~ U[0.1, 5], phase p ~ U[0, π], inputs x ~ U[−5, 5]; K support
and Q query points; mean squared error. Deterministic from (seed, episode index)."""
from __future__ import annotations

import math

import numpy as np
import torch

from verify.fewshot.episodes import Episode

__all__ = ["SinusoidSampler"]


class SinusoidSampler:
    """Episodes of sinusoid regression, same interface as :class:`EpisodeSampler`."""

    loss = "mse"

    def __init__(self, k_shot: int = 10, k_query: int = 10, *, seed: int = 0,
                 amplitude=(0.1, 5.0), phase=(0.0, math.pi), x_range=(-5.0, 5.0)):
        for name, value in (("k_shot", k_shot), ("k_query", k_query)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.k_shot, self.k_query, self.seed = k_shot, k_query, int(seed)
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range
        self.input_shape, self.n_outputs = (1,), 1

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, int(index)])
        amp, ph = rng.uniform(*self.amplitude), rng.uniform(*self.phase)
        x = rng.uniform(*self.x_range, size=(self.k_shot + self.k_query, 1))
        y = amp * np.sin(x - ph)
        xt = torch.from_numpy(x).float()
        yt = torch.from_numpy(y).float()
        k = self.k_shot
        return Episode(xt[:k], yt[:k], xt[k:], yt[k:], {"amplitude": amp, "phase": ph})
