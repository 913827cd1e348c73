"""Embedded Omniglot-like data: procedurally generated stroke-drawn glyphs.

NOT Omniglot. Each class is a random character made of 2–4 strokes (quadratic Bézier curves
with control points in the unit square); each sample of a class redraws that character with
per-sample jitter: a random small rotation, scale, shear and translation of the whole glyph,
noise on every control point, and a random stroke width, rendered anti-aliased (a Gaussian
pen) on an ``image_size``² canvas, strokes bright on a dark background (like Omniglot after
the usual inversion). Everything is deterministic from ``seed``: class c is drawn from the
generator seeded with (seed, c), so a class does not depend on how many classes are asked for.
"""
from __future__ import annotations

import numpy as np
import torch

from verify.fewshot._classes import ClassDataset

__all__ = ["glyph_dataset", "glyph_splits", "render_glyph_class"]

_POINTS_PER_STROKE = 24


def _class_strokes(rng) -> np.ndarray:
    n = int(rng.integers(2, 5))
    return rng.uniform(0.15, 0.85, size=(n, 3, 2))  # (strokes, control points, xy)


def _bezier(ctrl: np.ndarray) -> np.ndarray:
    t = np.linspace(0.0, 1.0, _POINTS_PER_STROKE)[:, None]
    p0, p1, p2 = ctrl[:, 0, None], ctrl[:, 1, None], ctrl[:, 2, None]
    return ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2).reshape(-1, 2)


def render_glyph_class(seed: int, c: int, samples: int, image_size: int) -> np.ndarray:
    """The ``samples`` jittered renderings of glyph class ``c``: float32 (samples, S, S) in [0, 1]."""
    rng = np.random.default_rng([int(seed), int(c)])
    strokes = _class_strokes(rng)
    axis = (np.arange(image_size) + 0.5) / image_size
    grid = np.stack(np.meshgrid(axis, axis, indexing="xy"), axis=-1).reshape(-1, 2)
    out = np.empty((samples, image_size, image_size), dtype=np.float32)
    for j in range(samples):
        ctrl = strokes + rng.normal(0.0, 0.025, size=strokes.shape)
        angle, scale = rng.normal(0.0, 0.15), 1.0 + rng.normal(0.0, 0.07)
        shear, shift = rng.normal(0.0, 0.08), rng.normal(0.0, 0.04, size=2)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        affine = scale * rot @ np.array([[1.0, shear], [0.0, 1.0]])
        pts = (_bezier(ctrl) - 0.5) @ affine.T + 0.5 + shift
        width = max(0.6 / image_size, 0.035 * (1.0 + rng.normal(0.0, 0.1)))
        d2 = ((grid[:, None, :] - pts[None, :, :]) ** 2).sum(-1).min(axis=1)
        out[j] = np.exp(-d2 / (2 * width ** 2)).reshape(image_size, image_size)
    return out


def glyph_dataset(n_classes: int, *, samples: int = 20, image_size: int = 28, seed: int = 0,
                  first_class: int = 0) -> ClassDataset:
    """Classes ``first_class`` … ``first_class + n_classes − 1`` of the glyph family ``seed``,
    ``samples`` images each (Omniglot has 20), as a :class:`ClassDataset` of 1×S×S images."""
    for name, value in (("n_classes", n_classes), ("samples", samples),
                        ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if image_size < 4:
        raise ValueError(f"image_size must be at least 4 to draw a glyph, got {image_size}")
    classes = range(first_class, first_class + n_classes)
    images = [torch.from_numpy(render_glyph_class(seed, c, samples, image_size))[:, None]
              for c in classes]
    return ClassDataset(images, [f"glyph-{seed}-{c}" for c in classes])


def glyph_splits(n_train: int, n_test: int, *, samples: int = 20, image_size: int = 28,
                 seed: int = 0) -> tuple[ClassDataset, ClassDataset]:
    """Disjoint meta-training and held-out classes: classes [0, n_train) and
    [n_train, n_train + n_test) of the same glyph family."""
    train = glyph_dataset(n_train, samples=samples, image_size=image_size, seed=seed)
    test = glyph_dataset(n_test, samples=samples, image_size=image_size, seed=seed,
                         first_class=n_train)
    return train, test
