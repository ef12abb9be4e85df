"""Masks for imputation: which elements of each data point are observed.

A *mask* is a bool tensor ``(N, *data_shape)`` with **True = observed**
(Pyro's ``obs_mask`` convention). Masks are registered by name
(:data:`masks`: ``center``, ``left``, ``right``, ``top``, ``bottom``,
``random``), written ``NAME`` or ``NAME:VALUE`` (``random:0.5``), or read
from a ``.npy``/``.npz`` file.

Example::

    mask = make_mask("center", 100, (1, 28, 28))   # (100, 1, 28, 28), False in the central square
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import Registry

__all__ = ["masks", "register_mask", "make_mask", "load_mask_file", "check_mask", "parse_mask_spec", "mask_tag"]

# -- masks ---------------------------------------------------------------------

masks = Registry("mask", context=("num_points", "data_shape", "generator"))
register_mask = masks.register


def _image_view(data_shape) -> Tuple[int, int]:
    """(H, W) of images ``(C, H, W)``, ``(H, W)`` or flat square data."""
    data_shape = tuple(data_shape)
    if len(data_shape) in (2, 3):
        return data_shape[-2], data_shape[-1]
    side = math.isqrt(data_shape[0])
    if len(data_shape) == 1 and side * side == data_shape[0]:
        return side, side
    raise DataError(
        f"a spatial mask needs image data, but the data points have shape {data_shape}; "
        "use random:FRACTION or a mask FILE"
    )


def _spatial(num_points, data_shape, hidden_rows: slice, hidden_cols: slice) -> torch.Tensor:
    h, w = _image_view(data_shape)
    observed = torch.ones(h, w, dtype=torch.bool)
    observed[hidden_rows, hidden_cols] = False
    return observed.expand(math.prod(data_shape) // (h * w), h, w).reshape(data_shape).expand(num_points, *data_shape)


def _check_fraction(fraction) -> float:
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ValueError(f"the hidden fraction must be a number in (0, 1), got {fraction!r}")
    return float(fraction)


@register_mask("center")
def center_mask(num_points, data_shape, size=0.5):
    """Hide the central square whose side is ``size`` times the image side."""
    h, w = _image_view(data_shape)
    size = _check_fraction(size)
    dh, dw = max(1, round(h * size)), max(1, round(w * size))
    top, left = (h - dh) // 2, (w - dw) // 2
    return _spatial(num_points, data_shape, slice(top, top + dh), slice(left, left + dw))


@register_mask("left")
def left_mask(num_points, data_shape, fraction=0.5):
    """Hide the left ``fraction`` of the columns."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(None), slice(0, max(1, round(w * _check_fraction(fraction)))))


@register_mask("right")
def right_mask(num_points, data_shape, fraction=0.5):
    """Hide the right ``fraction`` of the columns."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(None), slice(w - max(1, round(w * _check_fraction(fraction))), None))


@register_mask("top")
def top_mask(num_points, data_shape, fraction=0.5):
    """Hide the top ``fraction`` of the rows."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(0, max(1, round(h * _check_fraction(fraction)))), slice(None))


@register_mask("bottom")
def bottom_mask(num_points, data_shape, fraction=0.5):
    """Hide the bottom ``fraction`` of the rows."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(h - max(1, round(h * _check_fraction(fraction))), None), slice(None))


@register_mask("random")
def random_mask(num_points, data_shape, generator, fraction=0.5):
    """Hide each element independently with probability ``fraction``
    (a different pattern for every data point)."""
    fraction = _check_fraction(fraction)
    return torch.rand(num_points, *data_shape, generator=generator) >= fraction


def parse_mask_spec(text: str) -> Dict[str, Any]:
    """``"center"`` -> ``{"name": "center"}``; ``"random:0.5"`` ->
    ``{"name": "random", "fraction": 0.5}`` (the value after the colon sets
    the mask's first option)."""
    name, sep, value = text.partition(":")
    spec: Dict[str, Any] = {"name": name}
    if sep:
        options = list(masks.options(name))
        if not options:
            raise ConfigError(f"mask {name!r} takes no value; write just {name!r}")
        try:
            spec[options[0]] = float(value)
        except ValueError:
            raise ConfigError(f"mask {text!r}: {value!r} is not a number") from None
    return spec


def load_mask_file(path, num_points: int, data_shape) -> torch.Tensor:
    """A mask from a ``.npy`` file (or a ``.npz`` with key ``mask``):
    bool or 0/1, **1 = observed**, of shape ``data_shape`` (one mask for
    every point) or ``(num_points, *data_shape)``."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"mask {str(path)!r} is neither a mask name ({', '.join(masks.names())}, "
            "optionally NAME:VALUE such as random:0.5) nor an existing .npy/.npz file"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable .npy/.npz mask file: {e}") from None
    if not isinstance(loaded, np.ndarray):
        if "mask" not in loaded:
            raise DataError(f"{path} holds {sorted(loaded)}; a .npz mask file must hold an array named 'mask'")
        loaded = loaded["mask"]
    if loaded.dtype != np.bool_ and not np.isin(loaded, (0, 1)).all():
        raise DataError(f"{path}: a mask must be bool or 0/1 (1 = observed), got values such as {loaded.flat[0]!r}")
    mask = torch.as_tensor(loaded.astype(bool))
    return check_mask(mask, (num_points, *data_shape), what=f"mask {path}")


def make_mask(spec: str, num_points: int, data_shape, seed: int = 0) -> torch.Tensor:
    """The bool mask ``(num_points, *data_shape)`` (True = observed) for a
    registered mask name (``center``, ``left``, ``random:0.5``, ...) or a
    mask file (see :func:`load_mask_file`)."""
    name = spec.partition(":")[0]
    if name not in masks:
        return load_mask_file(spec, num_points, data_shape)
    generator = torch.Generator().manual_seed(seed)
    mask = masks.build(parse_mask_spec(spec), num_points=num_points, data_shape=tuple(data_shape), generator=generator)
    return check_mask(mask.contiguous(), (num_points, *data_shape), what=f"mask {spec!r}")


def check_mask(mask: torch.Tensor, shape, what: str = "mask") -> torch.Tensor:
    """``mask`` as bool ``shape`` = ``(N, *data_shape)``, broadcasting one
    mask of ``data_shape``; raise :class:`DataError` for a wrong shape, a
    data point with no observed element, or no hidden element at all."""
    shape = tuple(shape)
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise DataError(f"{what} must be bool or 0/1 (1 = observed)")
        mask = mask.bool()
    if tuple(mask.shape) == shape[1:]:
        mask = mask.expand(shape)
    if tuple(mask.shape) != shape:
        raise DataError(
            f"{what} has shape {tuple(mask.shape)}, but the data needs {shape[1:]} (one mask for every point) "
            f"or {shape} (one per point); True/1 marks an observed element"
        )
    flat = mask.reshape(len(mask), -1)
    blind = ~flat.any(1)
    if bool(blind.any()):
        raise DataError(
            f"{what} hides every element of {int(blind.sum())} of {len(mask)} data points "
            f"(the first is point {int(blind.nonzero()[0])}); there is nothing left to condition on. "
            "Hide fewer elements (True/1 = observed)"
        )
    if bool(flat.all()):
        raise DataError(f"{what} hides no element of any data point, so there is nothing to impute (True/1 = observed)")
    return mask


def mask_tag(spec: str) -> str:
    """A file-name-safe tag for a mask spec: ``random:0.5`` -> ``random-0.5``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(spec).stem if spec.partition(":")[0] not in masks else spec).strip("-")
