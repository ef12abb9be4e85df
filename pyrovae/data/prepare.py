"""Preparing a data set for training and evaluation: load the source,
check it, hold out the validation set, binarize or quantize."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..config import DataConfig
from ..errors import DataError
from .labelled import keep_labelled
from .binarize import binarize_split
from .sources import datasets
from .splits import Splits

__all__ = ["load_data", "check_finite"]

# -- preparation -------------------------------------------------------------


#: elements per block when large data (maybe memory-mapped) is checked
CHECK_BLOCK = 1 << 22


def _row_blocks(x: torch.Tensor):
    """``(start, block)`` pairs of consecutive rows, about CHECK_BLOCK elements each."""
    rows = max(1, CHECK_BLOCK // max(1, x[0].numel())) if len(x) else 1
    for start in range(0, len(x), rows):
        yield start, x[start : start + rows]


def _blocks(x: torch.Tensor, release: Optional[Callable[[], None]] = None):
    """``(first_row, block)`` pairs covering ``x``: the whole tensor when it
    is small, else consecutive rows of about CHECK_BLOCK elements each.
    ``release`` is called after each block (for a memory-mapped ``x``: so
    that a pass over the file does not map all of it)."""
    if x.numel() <= CHECK_BLOCK or x.dim() == 0:
        yield 0, x
    else:
        for start, block in _row_blocks(x):
            yield start, block
            if release is not None:
                release()


def check_finite(x: torch.Tensor, what: str, release: Optional[Callable[[], None]] = None) -> None:
    """Raise :class:`DataError` if ``x`` holds NaN or inf. Large tensors are
    checked a block of rows at a time, so memory stays bounded."""
    count, first = 0, None
    for start, block in _blocks(x, release):
        bad = ~torch.isfinite(block)
        n = int(bad.sum())
        if n and first is None:
            row_len = max(1, block[0].numel()) if block.dim() else 1
            first = start * row_len + int(bad.flatten().nonzero()[0])
        count += n
    if count:
        raise DataError(
            f"{what} holds {count} NaN/inf values (first at flat index {first}); clean or drop those points"
        )


def _in_unit_interval(x: torch.Tensor, release: Optional[Callable[[], None]] = None) -> bool:
    """Whether every value of ``x`` lies in [0, 1] (checked in blocks of rows)."""
    return all(not bool(((b < 0) | (b > 1)).any()) for _, b in _blocks(x, release))


def load_data(cfg: DataConfig) -> Splits:
    """Load the source, hold out validation data, and apply static
    transforms. Dynamic binarization is left to ``pyrovae.data.batches.Batches``.

    Validation and test sets are always binarized once, with the fixed
    seeds of :mod:`pyrovae.data.binarize`, so that evaluations are
    comparable across runs.

    :param cfg: the ``data`` section, a :class:`~pyrovae.DataConfig`.
    :returns: a :class:`~pyrovae.data.splits.Splits` of ``(x, labels)``
        pairs: ``x`` ``(N, *data_shape)`` float, ``labels`` ``(N,)`` int64
        (-1 where a point has no label).

    Example::

        >>> import pyrovae
        >>> cfg = pyrovae.load_config({"data": {"name": "synthetic", "val_size": 100,
        ...                                     "options": {"num_points": 300}}})
        >>> splits = pyrovae.load_data(cfg.data)
        >>> splits.data_shape
        (1, 8, 8)
        >>> x, labels = splits.train
        >>> x.shape, labels.shape, splits.val[0].shape
        (torch.Size([200, 1, 8, 8]), torch.Size([200]), torch.Size([100, 1, 8, 8]))
        >>> splits.test[0].unique()           # binarized once, with a fixed seed
        tensor([0., 1.])
    """
    splits = datasets.build(
        {"name": cfg.name, **cfg.options}, root=cfg.root, path=cfg.path, download=cfg.download
    )
    if not isinstance(splits, Splits):
        raise DataError(f"data source {cfg.name!r} returned {type(splits).__name__}, not a pyrovae.data.Splits")
    if splits.mapped is not None and (cfg.binarize == "static" or cfg.quantize):
        raise DataError(
            "data.binarize: static and data.quantize make an in-memory copy of the whole training set, "
            "which defeats data.options.mmap; use data.binarize: dynamic or none without quantize"
        )
    release = splits.release_pages if splits.mapped is not None else None
    for split, pair in (("train", splits.train), ("test", splits.test)):
        check_finite(pair[0], f"the {split} data", release)
        if len(pair[0]) and pair[0].shape[1:] != splits.train[0].shape[1:]:
            raise DataError(f"{split} points have shape {tuple(pair[0].shape[1:])}, train points {splits.data_shape}")
    x, y = splits.train
    if cfg.subset is not None:
        x, y = x[: cfg.subset], y[: cfg.subset]
    if cfg.val_size:
        if cfg.val_size >= len(x):
            raise DataError(
                f"data.val_size={cfg.val_size} leaves no training data out of {len(x)} points; lower it"
            )
        splits.val = (x[-cfg.val_size:], y[-cfg.val_size:])
        x, y = x[: -cfg.val_size], y[: -cfg.val_size]
    if cfg.labelled is not None:
        y = keep_labelled(y, cfg.labelled, cfg.labelled_seed)
    splits.train = (x, y)
    if cfg.binarize != "none":
        for split, pair in (("train", splits.train), ("validation", splits.val), ("test", splits.test)):
            if pair is not None and not _in_unit_interval(pair[0], release):
                raise DataError(f"binarization needs {split} values in [0, 1]; rescale the data or set data.binarize: none")
        splits.test = (binarize_split(splits.test[0], cfg, "test"), splits.test[1])
        if splits.val is not None:
            splits.val = (binarize_split(splits.val[0], cfg, "val"), splits.val[1])
        if cfg.binarize == "static":
            splits.train = (binarize_split(splits.train[0], cfg, "train"), splits.train[1])
    if cfg.quantize:
        q = lambda pair: ((pair[0] * 255).round_().clamp_(0, 255), pair[1])  # noqa: E731
        splits.train, splits.test = q(splits.train), q(splits.test)
        splits.val = q(splits.val) if splits.val is not None else None
    return splits
