"""Partly labelled training data: the class-balanced labelled subset of
``data.labelled`` and the batches that join unlabelled and labelled points."""

import pytest
import torch

import pyrovae
from pyrovae.data import Batches
from pyrovae.data.batches import BatchNeeds
from pyrovae.data.labelled import keep_labelled
from pyrovae.errors import DataError

from helpers import tiny_config


def labels(n=1000, classes=4, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def test_the_labelled_subset_is_class_balanced_and_keeps_true_labels():
    y = labels()
    kept = keep_labelled(y, 40, seed=3)
    known = kept >= 0
    assert int(known.sum()) == 40
    assert torch.bincount(kept[known], minlength=4).tolist() == [10, 10, 10, 10]
    assert torch.equal(kept[known], y[known])  # a kept label is the point's own
    assert bool((kept[~known] == -1).all())


def test_the_labelled_subset_depends_on_its_seed_only():
    y = labels()
    assert torch.equal(keep_labelled(y, 40, 3), keep_labelled(y, 40, 3))
    assert not torch.equal(keep_labelled(y, 40, 3), keep_labelled(y, 40, 4))
    a = pyrovae.load_data(pyrovae.load_config(tiny_config(data={"labelled": 8}, train={"seed": 1})).data)
    b = pyrovae.load_data(pyrovae.load_config(tiny_config(data={"labelled": 8}, train={"seed": 2})).data)
    assert torch.equal(a.train[1], b.train[1])  # train.seed does not move it
    assert torch.equal(a.test[1], pyrovae.load_data(pyrovae.load_config(tiny_config()).data).test[1])  # test labels untouched


@pytest.mark.parametrize("count, message", [(1001, "exceeds the 1000 labelled points"),
                                            (42, "not divisible by the 4 classes.*40 or 44"),
                                            (0, None)])
def test_bad_counts_are_clear_errors(count, message):
    y = labels()
    if message is None:
        with pytest.raises(pyrovae.ConfigError, match="data.labelled must be an integer >= 1"):
            pyrovae.load_config(tiny_config(data={"labelled": count}))
        return
    with pytest.raises(DataError, match=message):
        keep_labelled(y, count)


def test_a_class_too_small_is_a_clear_error():
    y = torch.tensor([0] * 50 + [1] * 3)
    with pytest.raises(DataError, match="needs 5 points of class 1, but the training split has only 3"):
        keep_labelled(y, 10)


def mixed(seed=0, batch_size=30, labelled_batch_size=8):
    x = torch.arange(100, dtype=torch.float32)[:, None]
    y = torch.full((100,), -1)
    y[torch.arange(0, 100, 10)] = torch.arange(10) % 4  # 10 labelled rows
    return Batches(x, batch_size, seed=seed, fields={"y": y}, needs=BatchNeeds("y", labelled_batch_size))


def test_mixed_batches_join_every_unlabelled_point_once_with_cycled_labelled_points():
    batches = mixed()
    assert batches.mixes_known and len(batches) == 3  # ceil(90 / 30)
    seen_u, seen_l = [], []
    for batch in batches:
        rows = batch["x"][:, 0].long()
        known = batch["y"] >= 0
        assert int(known.sum()) == 8 and torch.equal(known, rows % 10 == 0)
        seen_u += rows[~known].tolist()
        seen_l += rows[known].tolist()
    assert sorted(seen_u) == [r for r in range(100) if r % 10]  # one pass over the unlabelled points
    counts = torch.bincount(torch.tensor(seen_l) // 10, minlength=10)
    assert counts.sum() == 24 and int(counts.max() - counts.min()) <= 1  # reshuffled passes: even use
    assert batches.points_per_epoch == 90 + 24
    assert batches.points(next(iter(mixed()))) == pytest.approx(30 * 100 / 90)


def test_mixed_batches_resume_from_the_generator_state():
    a = mixed(seed=5)
    list(a)
    state = a.generator.get_state()
    second = [b["x"] for b in a]
    b = mixed(seed=99)
    b.generator.set_state(state)
    assert all(torch.equal(u, v) for u, v in zip(second, (bb["x"] for bb in b)))


def test_all_labelled_or_no_labelled_batches_are_plain():
    x = torch.zeros(20, 1)
    assert not Batches(x, 5, fields={"y": torch.zeros(20, dtype=torch.long)}, needs=BatchNeeds("y", 3)).mixes_known
    assert not Batches(x, 5, fields={"y": torch.full((20,), -1)}, needs=BatchNeeds("y", 3)).mixes_known
