"""Batch fields for evaluation, imputation and encoding: check them once,
then cut them into chunks of data points together with ``x``.

Every entry point that takes data (``log_likelihood(model, x, y=labels)``,
``evaluate``, ``impute``, ``encode_data``) calls :func:`data_fields`, so a
field the model does not take fails with a :class:`ConfigError` that lists
the model's fields, and a field it needs but did not get fails with the
:class:`DataError` of :func:`~pyrovae.models.base.select_fields`. A model
whose guide is local to its training points (it takes ``index``) is scored
only where the caller gives ``index``, and a model is checked once, on its
first two points, to broadcast over the particles dim that scoring adds.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from ..data import check_finite, label_fields
from ..errors import ConfigError, DataError
from ..models.base import check_broadcasting, check_field_names, model_device, model_fields, model_name, select_fields

__all__ = ["data_fields", "split_data", "chunks", "chunk_sizes", "balanced_sizes", "accepted_fields"]


def split_data(model, data, fields: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """One dict of fields from the ways a caller can hand over data: a
    tensor ``x``, an ``(x, labels)`` pair (the labels become ``y`` when the
    model takes ``y`` and some label is not -1, else they are dropped) or a
    dict of fields; plus keyword ``fields``.

    Example::

        split_data(model, (x, labels), {}, "evaluate")  # {"x": x, "y": labels} for a model with fields ("x", "y")
    """
    if isinstance(data, Mapping):
        batch = dict(data)
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"{where}: data must be a tensor x, an (x, labels) pair or a dict of fields; got {len(data)} items")
        batch = label_fields(data[0], data[1], model_fields(model))
    else:
        batch = {"x": data}
    twice = sorted(set(batch) & set(fields))
    if twice:
        raise ConfigError(f"{where}: field(s) {', '.join(twice)} given both in the data and as keywords; give each once")
    return {**batch, **fields}


def data_fields(model, x: Any, fields: Mapping[str, Any], where: str, what: str = "data",
                check_values: bool = True) -> Dict[str, torch.Tensor]:
    """Check ``x`` and the other batch ``fields`` and return the ones
    ``model`` takes (``x`` first), each with the same number N >= 1 of rows.

    :param x: the data ``(N, *data_shape)``, checked by ``model.check_data``
        where the model has it (shape, support), else for NaN/inf.
    :param fields: other fields, e.g. ``{"y": labels}`` with labels ``(N,)``;
        ``None`` values are dropped.
    :param str where: the caller's name, for messages.
    :param bool check_values: check every value; False checks the first
        point only (its shape), for data whose hidden elements are never read.
    :raises ConfigError: for a field the model does not take (the message lists the model's fields), for a
        model that takes ``index`` without one, and for a model that does not broadcast over a particles
        dim (:func:`~pyrovae.models.base.check_broadcasting`, once per model).
    :raises DataError: for a missing required field, a non-tensor, an empty
        data set or a field whose length is not N.
    """
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what} must be a torch.Tensor of shape (N, *data_shape), got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(f"{what} must hold at least one point, shape (N, *data_shape); got shape {tuple(x.shape)}")
    given = {k: v for k, v in fields.items() if v is not None}
    check_field_names(model, list(given), where)
    if "index" in model_fields(model) and given.get("index") is None:
        raise ConfigError(
            f"{where}: model {model_name(model)!r} takes index, so its guide is local to its training points "
            "(parameters per index) and other points cannot be scored; pass index= (the points' positions in "
            "the training set) for training points, or use an amortized guide"
        )
    for name, value in given.items():
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{where}: field {name!r} must be a torch.Tensor with one row per point, got {type(value).__name__}")
        if value.dim() == 0 or len(value) != len(x):
            raise DataError(f"{where}: field {name!r} has {len(value) if value.dim() else 0} rows but x has {len(x)}; "
                            "give one per data point")
    selected = select_fields(model, {"x": x, **given}, what)
    checked = x if check_values else x[:1]
    check = getattr(model, "check_data", None)
    if check is not None:
        check(checked, what)  # shape, finiteness and the likelihood's support
    else:
        check_finite(checked, what)
    check_fields = getattr(model, "check_fields", None)  # labels: range, NaN, shape
    if check_fields is not None:
        check_fields(selected, what)
    if check_values:  # once per model: it broadcasts over the particles dim that scoring adds
        device = model_device(model)
        check_broadcasting(model, {k: v[:2].to(device) for k, v in selected.items() if torch.is_tensor(v)})
    return {"x": x, **{k: v for k, v in selected.items() if k != "x"}}


def chunk_sizes(n: int, size: int) -> List[int]:
    """Sizes of consecutive chunks of at most ``size`` out of ``n`` rows: ``chunk_sizes(5, 2) == [2, 2, 1]``."""
    return [min(size, n - start) for start in range(0, n, size)]


def balanced_sizes(total: int, size: int) -> List[int]:
    """Split ``total`` into the fewest parts of at most ``size``, as equal as
    possible (fewer distinct shapes: fewer torch.compile specializations):
    ``balanced_sizes(5, 2) == [2, 2, 1]``, ``balanced_sizes(6, 4) == [3, 3]``."""
    parts = -(-total // size)
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def chunks(fields: Mapping[str, torch.Tensor], sizes: List[int], device: Optional[torch.device] = None
           ) -> Iterator[Tuple[int, Dict[str, torch.Tensor]]]:
    """``(start, chunk)`` for consecutive chunks of ``sizes`` rows of every
    field, moved to ``device`` when given."""
    start = 0
    for size in sizes:
        chunk = {k: v[start : start + size] for k, v in fields.items()}
        if device is not None:
            chunk = {k: v.to(device) for k, v in chunk.items()}
        yield start, chunk
        start += size


def accepted_fields(fn, fields: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The fields other than ``x`` that ``fn``'s signature names (all of
    them if it takes ``**kwargs``): a convenience such as ``reconstruct(x)``
    of the VAE takes ``x`` alone, a conditional model's ``reconstruct(x, y)``
    takes ``y`` too."""
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in fields.items() if k != "x" and (takes_all or k in params)}
