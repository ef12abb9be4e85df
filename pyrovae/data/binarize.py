"""Binarization of grey values in [0, 1], and the one place that says which
split is binarized with which seed and when training data is drawn afresh.

Evaluation data are binarized once, with seeds fixed by
``data.binarize_seed`` (S): the test set with S, the validation set with
S + 1 and the training set with S + 2 (for ``binarize: static``, and for
scoring the training split of a ``dynamic`` run). So every run with the
same data config sees the same binary test images, as the literature does.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..config import DataConfig

__all__ = ["binarize", "SEED_OFFSETS", "binarize_split", "binarizes_dynamically", "fixed_split"]

#: ``data.binarize_seed`` + this seeds the fixed binarization of each split
SEED_OFFSETS = {"test": 0, "val": 1, "train": 2}


def binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli draws with probabilities ``x`` (grey values in [0, 1])."""
    return torch.bernoulli(x, generator=generator)


def binarize_split(x: torch.Tensor, cfg: DataConfig, split: str) -> torch.Tensor:
    """``x`` of split ``split`` (``test``, ``val`` or ``train``) binarized with
    its fixed seed ``cfg.binarize_seed + SEED_OFFSETS[split]``.

    Example::

        x_test = binarize_split(grey_test, cfg.data, "test")   # the same draw in every run
    """
    return binarize(x, torch.Generator().manual_seed(cfg.binarize_seed + SEED_OFFSETS[split]))


def binarizes_dynamically(cfg: DataConfig) -> bool:
    """Whether training batches are binarized afresh every time (``data.binarize: dynamic``)."""
    return cfg.binarize == "dynamic"


def fixed_split(pair: Tuple[torch.Tensor, torch.Tensor], cfg: DataConfig, split: str):
    """A split's ``(x, labels)`` of :func:`~pyrovae.data.load_data` as
    evaluation sees it: the training split of a dynamically binarized run
    is grey until each batch is drawn, so it gets one fixed draw (seed
    ``S + 2``); every other split is returned as it is (already fixed)."""
    if split == "train" and binarizes_dynamically(cfg):
        return binarize_split(pair[0], cfg, "train"), pair[1]
    return pair
