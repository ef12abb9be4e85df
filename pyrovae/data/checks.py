"""Checks of data values that read large (maybe memory-mapped) tensors a
block of rows at a time, so that memory stays bounded."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from ..errors import DataError

__all__ = ["check_finite", "value_range"]

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
    """Raise :class:`DataError` if ``x`` holds NaN or inf, with their count and
    the flat index of the first (in ``x`` as given: check a file's data before
    shuffling it). Large tensors are checked a block of rows at a time.

    Example::

        check_finite(x, "digits.npy")   # DataError: digits.npy holds 3 NaN/inf values (first at flat index 17); ...
    """
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


def value_range(x: torch.Tensor, release: Optional[Callable[[], None]] = None) -> Tuple[float, float]:
    """The smallest and largest value of ``x``, found a block of rows at a
    time; (0, 0) when ``x`` is empty.

    Example::

        low, high = value_range(x)   # (0.0, 255.0) for 8-bit grey values
    """
    ranges = [(float(b.min()), float(b.max())) for _, b in _blocks(x, release) if b.numel()]
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else (0.0, 0.0)
