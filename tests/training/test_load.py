"""Data larger than memory: memory-mapped ``.npy`` files (``data.options.mmap``).
The peak-RSS measurements are in experiments/bench_memory.py."""

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae.config import DataConfig
from pyrovae.data import Batches, load_data
from pyrovae.errors import DataError

from helpers import tiny_config


@pytest.fixture
def npy(tmp_path):
    x = np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path, x


def mapped_config(path, **data):
    return DataConfig(name="npy", path=str(path), val_size=50, binarize="dynamic", options={"mmap": True, "test_fraction": 0.1}, **data)


def test_mapped_splits_are_views_of_the_file(npy):
    path, x = npy
    splits = load_data(mapped_config(path))
    assert splits.mapped is not None
    start, size = splits.mapped.ctypes.data, splits.mapped.nbytes
    assert start <= splits.train[0].data_ptr() < start + size  # no copy was made
    assert torch.equal(splits.train[0], torch.from_numpy(x[30:250]))
    # validation and test data are binarized once, in memory (they are small)
    assert len(splits.val[0]) == 50 and len(splits.test[0]) == 30


def test_row_reader_reads_exactly_the_rows(npy):
    path, x = npy
    splits = load_data(mapped_config(path))
    train = splits.train[0]
    reader = splits.row_reader(train)
    rows = torch.tensor([0, 3, 4, 5, 100, len(train) - 1])
    assert torch.equal(reader(rows), train[rows])
    batches = [b["x"] for b in Batches(train, 64, seed=1, reader=reader)]
    plain = [b["x"] for b in Batches(train, 64, seed=1)]
    assert len(batches) == len(plain) == 4
    for a, b in zip(batches, plain):  # the same points, read in ascending row order
        assert torch.equal(a.flatten(1).sum(1).sort().values, b.flatten(1).sum(1).sort().values)


def test_training_on_a_mapped_file(npy, tmp_path):
    path, _ = npy
    cfg = pyrovae.load_config(tiny_config(data={"name": "npy", "path": str(path), "val_size": 50, "binarize": "dynamic", "options": {"mmap": True}}))
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    trainer = pyrovae.Trainer(vae, splits, cfg)
    assert trainer.batches.reader is not None
    history = trainer.fit()
    assert len(history) == 2 and history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"binarize": "static"}, "defeats data.options.mmap"),
        ({"binarize": "none", "quantize": True}, "defeats data.options.mmap"),
        ({"dtype": np.float64}, "needs float32 data"),
        ({"suffix": ".npz"}, "needs a .npy file"),
        ({"nan": True}, "NaN/inf"),
        ({"scale": 0.5}, "set scale: 1.0"),
    ],
)
def test_mapped_data_errors(tmp_path, change, message):
    x = np.random.default_rng(0).random((100, 16)).astype(change.get("dtype", np.float32))
    if change.get("nan"):
        x[60, 3] = np.nan
    path = tmp_path / ("x" + change.get("suffix", ".npy"))
    np.savez(path, x=x) if path.suffix == ".npz" else np.save(path, x)
    options = {"mmap": True, **({"scale": change["scale"]} if "scale" in change else {})}
    data = {k: v for k, v in change.items() if k in ("binarize", "quantize")}
    with pytest.raises(DataError, match=message):
        load_data(DataConfig(name="npy", path=str(path), val_size=10, options=options, **{"binarize": "dynamic", **data}))
