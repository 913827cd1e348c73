"""The one container of few-shot image data: images grouped by class, optionally augmented with
rotations by multiples of 90° as new classes (the Omniglot protocol)."""
from __future__ import annotations

import torch

__all__ = ["ClassDataset"]


class ClassDataset:
    """Images grouped by class.

    ``images``: a list with one tensor per base class, of shape (n_i, C, H, W), dtype uint8
    (0..255) or float32 (0..1). ``names``: one name per base class. With ``rotations=True``
    every base class c yields 4 classes 4c + r, r = 0..3, holding the images rotated by r·90°
    (so the number of classes is 4× the base classes). :meth:`images_of` returns float32 in [0, 1].
    """

    def __init__(self, images, names, *, rotations: bool = False):
        if len(images) == 0:
            raise ValueError("images must hold at least one class")
        if len(names) != len(images):
            raise ValueError(f"names has {len(names)} entries but images has {len(images)} classes")
        shape = None
        for i, t in enumerate(images):
            if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[0] == 0:
                raise ValueError(f"images[{i}] must be a non-empty tensor of shape (n, C, H, W)")
            if t.dtype not in (torch.uint8, torch.float32):
                raise TypeError(f"images[{i}] must be uint8 or float32, got {t.dtype}")
            if shape is None:
                shape = tuple(t.shape[1:])
            elif tuple(t.shape[1:]) != shape:
                raise ValueError(f"images[{i}] has image shape {tuple(t.shape[1:])}, "
                                 f"the others {shape}")
        if rotations and shape[1] != shape[2]:
            raise ValueError("rotations need square images")
        self.base, self.names, self.rotations = list(images), list(names), bool(rotations)
        self.image_shape = shape

    @property
    def n_classes(self) -> int:
        return len(self.base) * (4 if self.rotations else 1)

    def count(self, c: int) -> int:
        """Number of images of class c."""
        return self.base[self._base_index(c)].shape[0]

    def min_count(self) -> int:
        return min(t.shape[0] for t in self.base)

    def _base_index(self, c):
        if not 0 <= c < self.n_classes:
            raise IndexError(f"class index {c} out of range [0, {self.n_classes})")
        return c // 4 if self.rotations else c

    def images_of(self, c: int, index) -> torch.Tensor:
        """Images ``index`` (a sequence of ints) of class c as float32 in [0, 1]."""
        t = self.base[self._base_index(c)][torch.as_tensor(index, dtype=torch.long)]
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t
        if self.rotations and c % 4:
            t = torch.rot90(t, k=c % 4, dims=(-2, -1))
        return t

    def __repr__(self) -> str:
        return (f"ClassDataset({self.n_classes} classes{' (with rotations)' if self.rotations else ''}"
                f", image shape {self.image_shape}, {self.min_count()}+ images per class)")

