"""Splits of a data set and reading rows of a memory-mapped file.

A :class:`Splits` holds ``(x, labels)`` pairs of float tensors (images
``(N, C, H, W)`` or flat ``(N, D)``) and int64 labels (-1 where there are
none). Data larger than memory (``npy`` with ``options: {mmap: true}``)
is a view of a copy-on-write map of the file; training batches read its
rows with ``pread`` (:class:`RowReader`) rather than through the mapping:
on shuffled access the kernel maps up to 64 KiB around every touched row
("fault-around"), so a mapping's resident size soon reaches the file's
size, while ``pread`` keeps the process's memory flat (and was faster;
see the README for the figures).
"""

from __future__ import annotations

import mmap as _mmap
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import DataError

__all__ = ["Splits", "RowReader", "release_pages", "Pair", "shuffled"]

#: torch.Tensor pairs: (x, labels)
Pair = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class Splits:
    """Train / validation / test pairs ``(x, labels)``.

    ``val`` is ``None`` until :func:`~pyrovae.load_data` holds one out (or when the
    source has none and ``val_size`` is 0).

    A source also says how its training points may be split
    (:func:`~pyrovae.load_data` holds out ``data.val_size`` points and keeps
    ``data.subset``):

    - ``keep_order``: the order of the training points is part of the data set
      (MNIST: the literature's validation set is its last 10,000 training
      points) or random already (independent draws, or points the source
      shuffled itself), so they are split in this order. False, the default
      for a file or a source of your own: they are shuffled first, with
      ``data.split_seed``, so that a file saved class by class does not give a
      validation set of one class.
    - ``standard_val_size``: the size of the source's standard validation set
      (MNIST: 10,000), used when ``data.val_size`` is null; None: 10% of the
      training points, at most 10,000.
    """

    train: Pair
    test: Pair
    val: Optional[Pair] = None
    #: the memory map the tensors are views of (``npy`` with ``mmap: true``), else None
    mapped: Optional[np.memmap] = None
    keep_order: bool = False
    standard_val_size: Optional[int] = None

    @property
    def data_shape(self) -> Tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def release_pages(self) -> None:
        """Hand the mapped file's pages back to the OS (they stay in the page
        cache; the next read maps them again). A no-op for in-memory data."""
        release_pages(self.mapped)

    def row_reader(self, x: torch.Tensor) -> Optional["RowReader"]:
        """A :class:`~pyrovae.data.splits.RowReader` for ``x`` when it is a view of rows of the
        mapped file (None for in-memory data, or where ``pread`` is missing)."""
        if self.mapped is None or not hasattr(os, "pread") or not x.is_contiguous():
            return None
        start = self.mapped.ctypes.data
        byte_offset = x.data_ptr() - start
        if not 0 <= byte_offset <= self.mapped.nbytes:
            return None
        return RowReader(self.mapped.filename, self.mapped.offset + byte_offset, tuple(x.shape), x.dtype)


def shuffled(pair: Pair, seed: int) -> Pair:
    """``pair`` = ``(x, labels)`` in an order drawn by a generator seeded with
    ``seed``: the same order for the same seed and length, on every machine.

    Example::

        x, labels = shuffled((x, labels), seed=0)   # a file saved class by class, mixed
    """
    order = torch.randperm(len(pair[0]), generator=torch.Generator().manual_seed(seed))
    return pair[0][order], pair[1][order]


class RowReader:
    """Reads rows of a C-ordered array file with ``pread``: no page of the
    file is mapped into the process, so its memory does not grow with reads.

    :param str path: the file.
    :param int offset: byte offset of row 0 in the file.
    :param tuple shape: ``(N, *row_shape)`` of the rows it may read.
    :param torch.dtype dtype: their dtype.
    """

    def __init__(self, path, offset: int, shape: Tuple[int, ...], dtype: torch.dtype):
        self.path, self.offset, self.shape, self.dtype = str(path), int(offset), tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        self._fd = None

    def __len__(self):
        return self.shape[0]

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows ``rows`` (int64, ascending for sequential reads) as a new
        tensor ``(len(rows), *row_shape)``."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = torch.empty((len(rows),) + self.shape[1:], dtype=self.dtype)
        buf = out.numpy().reshape(len(rows), self.row_bytes // out.element_size()).view(np.uint8)
        fd, size, base = self._fd, self.row_bytes, self.offset
        preadv = getattr(os, "preadv", None)
        for j, i in enumerate(rows.tolist()):
            if preadv is not None:
                got = preadv(fd, [buf[j]], base + i * size)
            else:
                data = os.pread(fd, size, base + i * size)
                got = len(data)
                buf[j] = np.frombuffer(data, dtype=np.uint8)
            if got != size:
                raise DataError(f"{self.path} ended early (row {i}); was it changed while training?")
        return out

    def __del__(self):
        if self._fd is not None:
            os.close(self._fd)


def release_pages(mapped: Optional[np.memmap]) -> None:
    """``madvise(MADV_DONTNEED)`` over a numpy memory map (where the OS has it)."""
    mm = getattr(mapped, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(_mmap, "MADV_DONTNEED"):
        mm.madvise(_mmap.MADV_DONTNEED)

