"""The checks a :class:`~pyrovae.training.trainer.Trainer` makes once, before
training: the data (size, dtype, the model's own ``check_data`` and
``check_fields``) and the optimizer's settings. A problem is a one-line
:class:`~pyrovae.errors.DataError` or :class:`~pyrovae.errors.ConfigError`
before any step, never a diverged loss later.

Example::

    check_data(trainer)                                   # trainer.splits against trainer.vae
    check_hyperparameters(trainer.optimizer, trainer.params)
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch

from ..data import check_finite, label_fields
from ..errors import ConfigError, DataError
from ..models.base import model_fields

__all__ = ["check_data", "check_hyperparameters"]


def check_data(trainer) -> None:
    """The training and validation data of ``trainer.splits`` for
    ``trainer.vae``: not empty, the model's dtype, a batch size the
    processes can share, and what the model's ``check_data`` (default:
    finiteness) and ``check_fields`` say of the points and their fields."""
    splits, vae, tc = trainer.splits, trainer.vae, trainer.cfg.train
    x = splits.train[0]
    if len(x) == 0:
        raise DataError("the training set is empty")
    dtype = next((p.dtype for p in vae.parameters()), torch.get_default_dtype())
    for what, t in (("training data", x), ("validation data", splits.val[0] if splits.val else None)):
        if t is not None and t.dtype != dtype:
            raise DataError(f"the {what} has dtype {t.dtype} but the model computes in {dtype}; convert it, e.g. x.to({dtype})")
    trainer.strategy.check_sizes(tc.batch_size, len(x))
    if tc.batch_size > len(x):
        warnings.warn(f"train.batch_size={tc.batch_size} exceeds the {len(x)} training points; every step uses the whole set")
    # all of the data when it is in memory (one cheap pass: a NaN or an
    # out-of-support value further down must not surface later as a
    # diverged loss, or not at all); mapped data, checked for NaN by
    # load_data already, only through its first batch
    sample = x[: tc.batch_size] if splits.mapped is not None else x
    # check_data is a convenience a model may lack; then only finiteness is checked
    check = getattr(vae, "check_data", None) or check_finite
    if trainer.dynamic_binarize:
        check(x[:0], "training data")  # shape only
        check_finite(sample, "training data")
        sample = torch.bernoulli(sample.clamp(0, 1))
    check(sample, "training data")
    if splits.val is not None:
        check(splits.val[0], "validation data")
    check_fields = getattr(vae, "check_fields", None)  # labels: range, NaN, shape
    if check_fields is not None:
        for what, pair in (("training data", splits.train), ("validation data", splits.val)):
            if pair is not None:
                check_fields(label_fields(*pair, model_fields(vae)), what)


def check_hyperparameters(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
    """Optimizer settings must fit the parameters' dtype (an lr of 1e300
    would otherwise fail inside the optimizer's step)."""
    if not params:
        return
    largest = torch.finfo(params[0].dtype).max
    for group in optimizer.param_groups:
        for key, value in group.items():
            for v in value if isinstance(value, (tuple, list)) and key != "params" else [value]:
                if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= largest):
                    raise ConfigError(
                        f"train.optimizer.{key}={value} does not fit in {params[0].dtype} "
                        f"(largest {largest:.3g}); choose a smaller value"
                    )
