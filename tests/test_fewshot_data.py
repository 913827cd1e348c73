"""verify.fewshot data: embedded glyphs and sinusoids, the Omniglot / Mini-ImageNet loaders on
tiny fabricated folders of the real layouts, episode sampling, confidence intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from theory.tolerances import relative_tolerance

from verify.fewshot import (
    ClassDataset,
    EpisodeSampler,
    SinusoidSampler,
    confidence_interval,
    glyph_dataset,
    glyph_splits,
    load_miniimagenet,
    load_omniglot,
)


def test_glyphs_are_deterministic_and_classes_independent_of_count():
    a = glyph_dataset(3, samples=4, image_size=8, seed=7)
    b = glyph_dataset(5, samples=4, image_size=8, seed=7)
    c = glyph_dataset(3, samples=4, image_size=8, seed=8)
    for k in range(3):
        assert torch.equal(a.images_of(k, range(4)), b.images_of(k, range(4)))
    assert not torch.equal(a.images_of(0, range(4)), c.images_of(0, range(4)))
    x = a.images_of(1, [0, 1, 2, 3])
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # per-sample jitter: the samples of a class differ from each other
    assert not torch.equal(x[0], x[1])
    train, test = glyph_splits(3, 2, samples=4, image_size=8, seed=7)
    assert torch.equal(test.images_of(0, [0]), b.images_of(3, [0]))  # held-out = later classes
    with pytest.raises(ValueError, match="image_size"):
        glyph_dataset(2, image_size=2)
    with pytest.raises(ValueError, match="n_classes"):
        glyph_dataset(0)


def _write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _fake_omniglot(root, alphabets=(("Alpha", 3), ("Beta", 2)), evaluation=(("Gamma", 2),),
                   drawings=4, size=30):
    """Omniglot-like folders: white background, one dark square stroke per drawing."""
    rng = np.random.default_rng(0)
    for part, alphas in (("images_background", alphabets), ("images_evaluation", evaluation)):
        for name, n_chars in alphas:
            for c in range(n_chars):
                for d in range(drawings):
                    img = np.full((size, size), 255, dtype=np.uint8)
                    i, j = rng.integers(0, size // 2, size=2)
                    img[i:i + size // 3, j:j + 3] = 0
                    _write_png(root / part / name / f"character{c + 1:02d}" / f"{d}.png", img)


def test_omniglot_loader_on_fabricated_layout(tmp_path):
    _fake_omniglot(tmp_path)
    train, test = load_omniglot(tmp_path, n_train=4, image_size=28)
    assert train.n_classes == 4 * 4 and test.n_classes == 3 * 4  # rotations as new classes
    x = train.images_of(1, [0, 1])
    assert x.shape == (2, 1, 28, 28)
    # inverted: the stroke is bright, the background dark
    assert float(x.mean()) < 0.5 and float(x.max()) > 0.5
    assert torch.allclose(train.images_of(1, [0]), torch.rot90(train.images_of(0, [0]), 1, (-2, -1)))
    names = set(train.names) | set(test.names)
    assert len(names) == 7 and not set(train.names) & set(test.names)
    lake_train, lake_test = load_omniglot(tmp_path, split="lake", rotations=False)
    assert lake_train.n_classes == 5 and lake_test.n_classes == 2
    assert all(n.startswith("Gamma/") for n in lake_test.names)
    with pytest.raises(ValueError, match="n_train"):
        load_omniglot(tmp_path, n_train=1200)
    with pytest.raises(FileNotFoundError, match="root"):
        load_omniglot(tmp_path / "missing")


@pytest.mark.parametrize("layout", ["folders", "csv"])
def test_miniimagenet_loader_on_fabricated_layouts(tmp_path, layout):
    rng = np.random.default_rng(1)
    rows = []
    for split, classes in (("train", ["n01", "n02", "n03"]), ("test", ["n09", "n10"])):
        for cls in classes:
            for k in range(3):
                img = rng.integers(0, 255, size=(50, 60, 3), dtype=np.uint8)
                name = f"{cls}{k:08d}.jpg"
                if layout == "folders":
                    _write_png(tmp_path / split / cls / name, img)
                else:
                    _write_png(tmp_path / "images" / name, img)
                    rows.append((split, name, cls))
    if layout == "csv":
        for split in ("train", "test"):
            lines = ["filename,label"] + [f"{n},{c}" for s, n, c in rows if s == split]
            (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    train = load_miniimagenet(tmp_path, split="train")
    test = load_miniimagenet(tmp_path, split="test")
    assert train.n_classes == 3 and test.n_classes == 2 and test.names == ["n09", "n10"]
    assert train.images_of(0, [0, 2]).shape == (2, 3, 84, 84)
    with pytest.raises(FileNotFoundError, match="root"):
        load_miniimagenet(tmp_path, split="val")
    with pytest.raises(ValueError, match="split"):
        load_miniimagenet(tmp_path, split="holdout")


def test_episode_sampler_is_deterministic_and_well_formed():
    data = glyph_dataset(8, samples=6, image_size=8, seed=0)
    s = EpisodeSampler(data, 5, 2, 3, seed=3)
    e1, e2, e3 = s.episode(4), s.episode(4), s.episode(5)
    assert torch.equal(e1.support_x, e2.support_x) and e1.info == e2.info
    assert e1.info != e3.info or not torch.equal(e1.support_x, e3.support_x)
    assert e1.support_x.shape == (10, 1, 8, 8) and e1.query_x.shape == (15, 1, 8, 8)
    assert e1.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len(set(e1.info["classes"])) == 5
    # support and query images of a class are different drawings
    for c in range(5):
        sup = e1.support_x[e1.support_y == c]
        qry = e1.query_x[e1.query_y == c]
        assert not any(torch.equal(a, b) for a in sup for b in qry)
    with pytest.raises(ValueError, match="n_way"):
        EpisodeSampler(data, 9, 1, 1)
    with pytest.raises(ValueError, match="k_shot"):
        EpisodeSampler(data, 5, 4, 3)
    with pytest.raises(TypeError, match="dataset"):
        EpisodeSampler([1, 2], 2, 1, 1)


def test_class_dataset_rejects_bad_input():
    with pytest.raises(ValueError, match="names"):
        ClassDataset([torch.zeros(2, 1, 4, 4)], ["a", "b"])
    with pytest.raises(ValueError, match="images\\[1\\]"):
        ClassDataset([torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 5, 5)], ["a", "b"])
    with pytest.raises(TypeError, match="images\\[0\\]"):
        ClassDataset([torch.zeros(2, 1, 4, 4, dtype=torch.float64)], ["a"])
    with pytest.raises(IndexError):
        ClassDataset([torch.zeros(2, 1, 4, 4)], ["a"]).images_of(1, [0])


def test_sinusoid_episodes():
    s = SinusoidSampler(5, 7, seed=2)
    e = s.episode(3)
    assert e.support_x.shape == (5, 1) and e.query_y.shape == (7, 1)
    amp, ph = e.info["amplitude"], e.info["phase"]
    assert 0.1 <= amp <= 5.0 and 0.0 <= ph <= math.pi
    # labels computed in float64, then x and y stored in float32: |Δy| ≤ eps·amp·(1 + |x|)
    x = e.support_x.double()
    assert bool(((e.support_y - amp * torch.sin(x - ph)).abs()
                 <= relative_tolerance("float32") * amp * (1 + x.abs())).all())
    assert torch.equal(s.episode(3).query_x, e.query_x)
    with pytest.raises(ValueError, match="k_shot"):
        SinusoidSampler(0)


def test_confidence_interval_is_1_96_s_over_sqrt_n():
    values = [0.2, 0.4, 0.6, 0.8]
    mean, ci = confidence_interval(values)
    rtol = relative_tolerance("float64", dim=len(values))
    assert abs(mean - 0.5) <= rtol * 0.5
    expected = 1.96 * np.std(values, ddof=1) / 2.0
    assert abs(ci - expected) <= rtol * expected
    assert confidence_interval([0.3]) == (0.3, 0.0)
    with pytest.raises(ValueError, match="values"):
        confidence_interval([])
