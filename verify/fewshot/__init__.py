"""Few-shot integration: the paper's Omniglot / Mini-ImageNet protocols with iMAML-GD
and iMAML-HF, MAML and first-order MAML baselines, on the paper's ConvNet
(:mod:`verify.models`), with embedded data (procedural glyphs — NOT Omniglot — and sinusoids),
integration checks, a GPU script and the report section."""
from verify.fewshot._classes import ClassDataset
from verify.fewshot.data import load_miniimagenet, load_omniglot
from verify.fewshot.episodes import Episode, EpisodeSampler
from verify.fewshot.glyphs import glyph_dataset, glyph_splits
from verify.fewshot.sinusoid import SinusoidSampler
from verify.fewshot.train import (
    METHODS,
    EvalResult,
    TrainConfig,
    TrainResult,
    adapt,
    confidence_interval,
    evaluate,
    meta_gradient,
    meta_train,
    paper_config,
)

__all__ = [
    "METHODS",
    "ClassDataset",
    "Episode",
    "EpisodeSampler",
    "EvalResult",
    "SinusoidSampler",
    "TrainConfig",
    "TrainResult",
    "adapt",
    "confidence_interval",
    "evaluate",
    "glyph_dataset",
    "glyph_splits",
    "load_miniimagenet",
    "load_omniglot",
    "meta_gradient",
    "meta_train",
    "paper_config",
]
