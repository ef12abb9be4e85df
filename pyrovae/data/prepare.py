"""Preparing a data set for training and evaluation: load the source,
check it, hold out the validation set, binarize or quantize."""

from __future__ import annotations

import math

from ..config import DataConfig
from ..errors import DataError
from .checks import check_finite, value_range
from .labelled import keep_labelled
from .binarize import binarize_split
from .sources import datasets
from .splits import Splits, shuffled

__all__ = ["load_data", "check_finite", "validation_size"]

# -- preparation -------------------------------------------------------------


def _round_down(value: float, digits: int = 6) -> float:
    """``value`` > 0 cut to ``digits`` significant digits, never rounded up."""
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.floor(value / step) * step


def _outside_unit_interval(cfg: DataConfig, split: str, low: float, high: float) -> DataError:
    """The error for binarizing values outside [0, 1], with the fix that fits them."""
    found = f"binarization needs {split} values in [0, 1], they lie in [{low:g}, {high:g}]"
    if low < 0:
        return DataError(f"{found}; values below 0 need more than a scale: set data.binarize: none and a "
                         "likelihood for real values (model.likelihood: normal or laplace)")
    if "scale" in datasets.options(cfg.name):
        scale = _round_down(1.0 / high)
        return DataError(f"{found}; scale them into [0, 1] with data.options.scale={scale:g} (about 1/{high:g}), "
                         "or keep them with data.binarize: none")
    return DataError(f"{found}; rescale the data source's values, or keep them with data.binarize: none")


#: the default validation set of data without a standard one: this share of the training points ...
DEFAULT_VAL_FRACTION = 0.1
#: ... and at most this many
DEFAULT_VAL_MAX = 10000


def validation_size(cfg: DataConfig, splits: Splits, n: int) -> int:
    """The validation points to hold out of ``n`` training points:
    ``data.val_size``, or when it is null the source's standard validation set
    (MNIST: 10,000) for its whole training set, else 10% of ``n``, at most 10,000.

    Example::

        >>> from pyrovae import DataConfig
        >>> from pyrovae.data import Splits
        >>> empty = Splits(train=None, test=None)
        >>> validation_size(DataConfig(), empty, 1617), validation_size(DataConfig(), empty, 500000)
        (162, 10000)
    """
    if cfg.val_size is not None:
        return cfg.val_size
    if splits.standard_val_size is not None and cfg.subset is None:
        return splits.standard_val_size
    return min(DEFAULT_VAL_MAX, int(round(DEFAULT_VAL_FRACTION * n)))


def load_data(cfg: DataConfig) -> Splits:
    """Load the source, hold out validation data, and apply static
    transforms. Dynamic binarization is left to ``pyrovae.data.batches.Batches``.

    Training points in no fixed order (see :class:`~pyrovae.data.splits.Splits`)
    are shuffled with ``data.split_seed`` before ``data.subset`` keeps the
    first of them and the last ``data.val_size`` are held out for validation
    (:func:`~pyrovae.data.prepare.validation_size` when it is null); MNIST keeps its published order.

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
        {"name": cfg.name, **cfg.options}, root=cfg.root, path=cfg.path, download=cfg.download,
        split_seed=cfg.split_seed,
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
    # a mapped file is never shuffled here: that would copy all of it into memory
    if not splits.keep_order and splits.mapped is None and cfg.split_seed is not None:
        x, y = shuffled((x, y), cfg.split_seed)
    if cfg.subset is not None:
        x, y = x[: cfg.subset], y[: cfg.subset]
    val_size = validation_size(cfg, splits, len(x))
    if val_size:
        if val_size >= len(x):
            tenth = min(DEFAULT_VAL_MAX, int(round(DEFAULT_VAL_FRACTION * len(x))))
            raise DataError(
                f"data.val_size={val_size} leaves no training data out of {len(x)} points; lower it, "
                f"e.g. data.val_size={tenth} (10%), or leave data.val_size out for that default"
            )
        splits.val = (x[-val_size:], y[-val_size:])
        x, y = x[:-val_size], y[:-val_size]
    if cfg.labelled is not None:
        y = keep_labelled(y, cfg.labelled, cfg.labelled_seed)
    splits.train = (x, y)
    if cfg.binarize != "none":
        for split, pair in (("train", splits.train), ("validation", splits.val), ("test", splits.test)):
            low, high = value_range(pair[0], release) if pair is not None else (0.0, 0.0)
            if low < 0 or high > 1:
                raise _outside_unit_interval(cfg, split, low, high)
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
