"""Loaders of the two real few-shot benchmarks from local folders (no download, ever).

Omniglot, standard layout (the archives of github.com/brendenlake/omniglot, unpacked)::

    ROOT/images_background/<alphabet>/<character>/<drawing>.png
    ROOT/images_evaluation/<alphabet>/<character>/<drawing>.png

Usual protocol (Vinyals et al. 2016, used by MAML and iMAML): both folders pooled (1623
characters), characters shuffled with a fixed seed, the first 1200 for meta-training and the
rest (423) held out; images resized to 28×28 and inverted (strokes bright); every character
rotated by 0/90/180/270° gives 4 classes. ``split='lake'`` uses images_background for training
and images_evaluation for testing instead.

Mini-ImageNet (Vinyals et al. 2016; split of Ravi & Larochelle 2017: 64/16/20 classes of 600
images), either of its usual on-disk layouts::

    ROOT/{train,val,test}/<wnid>/<image>.jpg          (class folders)
    ROOT/images/<image>.jpg + ROOT/{train,val,test}.csv  (csv rows: filename,label)

resized to 84×84 RGB.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from verify.fewshot._classes import ClassDataset

__all__ = ["load_omniglot", "load_miniimagenet", "OMNIGLOT_TRAIN_CHARACTERS"]

OMNIGLOT_TRAIN_CHARACTERS = 1200
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".PNG", ".JPG")


def _read_image(path: Path, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.LANCZOS)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _images(folder: Path):
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _IMAGE_SUFFIXES)


def _omniglot_characters(root: Path, part: str):
    base = root / part
    if not base.is_dir():
        raise FileNotFoundError(f"root: {base} does not exist (expected the Omniglot layout "
                                f"ROOT/{part}/<alphabet>/<character>/*.png)")
    chars = [c for a in sorted(base.iterdir()) if a.is_dir()
             for c in sorted(a.iterdir()) if c.is_dir()]
    if not chars:
        raise FileNotFoundError(f"root: no <alphabet>/<character> folders under {base}")
    return chars


def load_omniglot(root, *, split: str = "vinyals", n_train: int = OMNIGLOT_TRAIN_CHARACTERS,
                  image_size: int = 28, rotations: bool = True, seed: int = 0
                  ) -> tuple[ClassDataset, ClassDataset]:
    """(meta-training classes, held-out classes) of Omniglot from the local folder ``root``.

    ``split='vinyals'``: all characters pooled, shuffled with ``seed``, the first ``n_train``
    (1200) for training; ``'lake'``: background for training, evaluation for testing.
    Raises FileNotFoundError naming ``root`` for a wrong layout, ValueError for too few
    characters for ``n_train``."""
    root = Path(root)
    if split not in ("vinyals", "lake"):
        raise ValueError(f"split must be 'vinyals' or 'lake', got {split!r}")
    background = _omniglot_characters(root, "images_background")
    evaluation = _omniglot_characters(root, "images_evaluation")
    if split == "lake":
        train_chars, test_chars = background, evaluation
    else:
        chars = background + evaluation
        if not 0 < n_train < len(chars):
            raise ValueError(f"n_train must be in [1, {len(chars) - 1}] for the {len(chars)} "
                             f"characters under root, got {n_train}")
        order = np.random.default_rng(seed).permutation(len(chars))
        train_chars = [chars[i] for i in order[:n_train]]
        test_chars = [chars[i] for i in order[n_train:]]

    def build(chars):
        images, names = [], []
        for c in chars:
            files = _images(c)
            if not files:
                raise FileNotFoundError(f"root: character folder {c} holds no images")
            arr = np.stack([255 - _read_image(f, image_size, "L") for f in files])
            images.append(torch.from_numpy(arr))
            names.append(f"{c.parent.name}/{c.name}")
        return ClassDataset(images, names, rotations=rotations)

    return build(train_chars), build(test_chars)


def load_miniimagenet(root, *, split: str = "test", image_size: int = 84) -> ClassDataset:
    """One split ('train', 'val' or 'test') of Mini-ImageNet from the local folder ``root``
    in either usual layout (see the module docstring), as 3×84×84 uint8 images."""
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    by_class: dict[str, list[Path]] = {}
    if (root / f"{split}.csv").is_file():
        with open(root / f"{split}.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        if rows and rows[0][:2] == ["filename", "label"]:
            rows = rows[1:]
        for row in rows:
            if len(row) < 2:
                raise ValueError(f"root: malformed row {row!r} in {split}.csv")
            by_class.setdefault(row[1], []).append(root / "images" / row[0])
    elif (root / split).is_dir():
        for d in sorted((root / split).iterdir()):
            if d.is_dir():
                by_class[d.name] = _images(d)
    else:
        raise FileNotFoundError(f"root: neither {root / split} nor {root / (split + '.csv')} "
                                f"exists (expected a Mini-ImageNet layout)")
    if not by_class:
        raise FileNotFoundError(f"root: no classes found for split {split!r}")
    images, names = [], []
    for name in sorted(by_class):
        files = by_class[name]
        missing = [f for f in files if not f.is_file()]
        if missing or not files:
            raise FileNotFoundError(f"root: class {name} has missing or no images "
                                    f"(e.g. {missing[0] if missing else 'none listed'})")
        images.append(torch.from_numpy(np.stack([_read_image(f, image_size, "RGB")
                                                 for f in files])))
        names.append(name)
    return ClassDataset(images, names)
