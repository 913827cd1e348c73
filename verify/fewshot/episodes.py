"""N-way K-shot episode sampling, deterministic from (seed, episode index)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from verify.fewshot._classes import ClassDataset

__all__ = ["Episode", "EpisodeSampler"]


@dataclass
class Episode:
    """One task: support set (inner loss) and query set (outer loss). For classification the
    labels are 0..N−1 assigned to the episode's classes in random order; ``info`` says which
    classes (or, for regression, the task's parameters)."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    info: dict = field(default_factory=dict)


class EpisodeSampler:
    """N-way K-shot episodes from a :class:`ClassDataset`: episode i draws ``n_way`` distinct
    classes and, per class, ``k_shot`` support and ``k_query`` query images (distinct), from
    the generator seeded with (seed, i). So episode i is the same whatever was drawn before,
    which makes runs resumable and evaluation sets reproducible."""

    loss = "cross_entropy"

    def __init__(self, dataset: ClassDataset, n_way: int, k_shot: int, k_query: int, *,
                 seed: int = 0):
        if not isinstance(dataset, ClassDataset):
            raise TypeError(f"dataset must be a ClassDataset, got {type(dataset).__name__}")
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("k_query", k_query)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_way > dataset.n_classes:
            raise ValueError(f"n_way={n_way} exceeds the {dataset.n_classes} classes of the dataset")
        if k_shot + k_query > dataset.min_count():
            raise ValueError(f"k_shot + k_query = {k_shot + k_query} exceeds the "
                             f"{dataset.min_count()} images of the smallest class")
        self.dataset, self.n_way, self.k_shot, self.k_query = dataset, n_way, k_shot, k_query
        self.seed = int(seed)
        self.input_shape, self.n_outputs = dataset.image_shape, n_way

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, int(index)])
        classes = rng.choice(self.dataset.n_classes, size=self.n_way, replace=False)
        k, q = self.k_shot, self.k_query
        sx, qx = [], []
        for c in classes:
            pick = rng.choice(self.dataset.count(int(c)), size=k + q, replace=False)
            imgs = self.dataset.images_of(int(c), pick.tolist())
            sx.append(imgs[:k])
            qx.append(imgs[k:])
        labels = torch.arange(self.n_way)
        return Episode(torch.cat(sx), labels.repeat_interleave(k), torch.cat(qx),
                       labels.repeat_interleave(q), {"classes": classes.tolist()})
