"""Each part of a checkpoint saves and restores its own state: Batches,
TrainState and torch's global generators (pyrovae.rng.GlobalRNG).

The oracle for Batches is an uninterrupted iterator: a Batches restored
from another's state_dict (built under other seeds) must yield exactly the
batches that the original goes on to yield. Whole training runs cut and
resumed are in test_resume.py and test_devices.py."""

import dataclasses
import math

import pytest
import torch

import pyro

from pyrovae.data import Batches
from pyrovae.data.batches import BatchNeeds
from pyrovae.rng import GlobalRNG
from pyrovae.training.checkpoint import CheckpointParts, TrainState

pyro.enable_validation(True)

N = 53
X = torch.rand(N, 1, 2, 2, generator=torch.Generator().manual_seed(0))  # probabilities: binarizable
Y = torch.where(torch.arange(N) % 4 == 0, torch.arange(N) % 10, -1)  # a partly known field


def make(case, seed, noise_seed):
    """A Batches of ``case`` under ``seed`` (shuffling) and ``noise_seed`` (its own noise generator, if any)."""
    if case == "plain":
        return Batches(X, 7, seed=seed)
    if case == "binarized":  # the binarization drawn from the shuffling generator
        return Batches(X, 7, dynamic_binarize=True, seed=seed)
    if case == "own_noise":  # one rank of two: a noise generator of its own
        return Batches(X, 8, dynamic_binarize=True, seed=seed, rank=1, world_size=2, noise_seed=noise_seed)
    if case == "known_field":  # a few points with the field known in every batch, drawn from reshuffled passes
        return Batches(X, 6, dynamic_binarize=True, seed=seed, fields={"y": Y}, needs=BatchNeeds("y", 3),
                       with_index=True)
    raise KeyError(case)


CASES = ["plain", "binarized", "own_noise", "known_field"]


def epochs(batches, n):
    return [[{k: v.clone() for k, v in batch.items()} for batch in batches] for _ in range(n)]


def same(a, b):
    return len(a) == len(b) and all(
        len(ea) == len(eb) and all(sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x)
                                   for x, y in zip(ea, eb))
        for ea, eb in zip(a, b))


@pytest.mark.parametrize("case", CASES)
def test_restored_batches_yield_what_the_uninterrupted_iterator_yields(case):
    uninterrupted = epochs(make(case, seed=3, noise_seed=11), 3)

    original = make(case, seed=3, noise_seed=11)
    epochs(original, 1)
    saved = original.state_dict()
    epochs(original, 1)  # a state_dict is a snapshot: drawing on does not change it

    restored = make(case, seed=99, noise_seed=77)
    assert not same(epochs(make(case, seed=99, noise_seed=77), 2), uninterrupted[1:])  # other seeds, other batches
    restored.load_state_dict(saved)
    assert same(epochs(restored, 2), uninterrupted[1:])


def test_the_state_holds_a_noise_generator_only_where_there_is_one_of_its_own():
    assert sorted(make("binarized", 3, 11).state_dict()) == ["generator", "generator_device"]
    assert sorted(make("own_noise", 3, 11).state_dict()) == ["generator", "generator_device", "noise", "noise_device"]


def test_a_generator_saved_on_another_device_type_starts_afresh_with_a_warning():
    saved = make("plain", 3, 11).state_dict()
    saved.update(generator=torch.zeros(16, dtype=torch.uint8), generator_device="cuda:0")  # a CUDA generator's state
    restored = make("plain", 99, 77)
    with pytest.warns(UserWarning, match="saved on cuda:0 and runs on cpu now"):
        restored.load_state_dict(saved, seed=5)
    assert same(epochs(restored, 1), epochs(make("plain", 5, 0), 1))  # seeded with the seed given


def test_a_noise_generator_missing_from_the_state_starts_afresh_with_a_warning():
    saved = make("binarized", 3, 11).state_dict()  # no noise generator of its own
    restored = make("own_noise", 99, 77)
    with pytest.warns(UserWarning, match="binarization noise from the shuffling generator"):
        restored.load_state_dict(saved, seed=5)
    assert torch.equal(restored.noise_generator.get_state(), torch.Generator().manual_seed(6).get_state())


def test_train_state_round_trip():
    state = TrainState(epoch=4, step=80, best_val=88.5, bad_epochs=1,
                       history=[{"epoch": e, "train_loss": 90.0 - e} for e in range(1, 5)])
    saved = state.state_dict()
    state.history.append({"epoch": 5})  # a state_dict is a snapshot
    state.epoch = 5
    restored = TrainState()
    restored.load_state_dict(saved)
    assert dataclasses.asdict(restored) == {"epoch": 4, "step": 80, "best_val": 88.5, "bad_epochs": 1,
                                            "history": [{"epoch": e, "train_loss": 90.0 - e} for e in range(1, 5)]}
    assert restored.history is not saved["history"]
    assert TrainState().state_dict() == {"epoch": 0, "step": 0, "best_val": math.inf, "bad_epochs": 0, "history": []}


def test_global_rng_round_trip():
    rng = GlobalRNG()
    saved = rng.state_dict()
    first = (torch.rand(5), torch.randn(3))
    torch.manual_seed(12345)
    rng.load_state_dict(saved)
    again = (torch.rand(5), torch.randn(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def _parts(batches, rank=0, world_size=1):
    from helpers import setup

    from pyrovae.training.optim import optimizers, schedules

    cfg, splits, vae = setup(train={"epochs": 2, "batch_size": 50, "progress": False, "device": "cpu"})
    optimizer = optimizers.build(cfg.train.optimizer, params=list(vae.parameters()))
    scheduler = schedules.build(cfg.train.lr_schedule, optimizer=optimizer, epochs=cfg.train.epochs)
    return CheckpointParts(TrainState(epoch=1, step=20), vae, optimizer, scheduler, batches, cfg,
                           splits.data_shape, rank, world_size)


def test_a_checkpoint_parts_round_trip_restores_every_part():
    """Restored into parts with other weights and generators, a checkpoint's
    dict is given back whole by the restored parts' state_dict."""
    from helpers import assert_identical

    original = _parts(make("own_noise", 3, 11))
    saved = original.state_dict()
    torch.manual_seed(999)  # the global generators move on
    restored = _parts(make("own_noise", 99, 77))
    restored.state.epoch = 0
    torch.nn.init.zeros_(next(restored.model.parameters()))
    restored.load_state_dict(saved)
    again = restored.state_dict()
    for key in ("model", "optimizer", "scheduler", "rng", "epoch", "step", "best_val", "bad_epochs", "history",
                "data_shape", "world_size"):
        assert_identical(saved[key], again[key], key)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_checkpoint_of_another_number_of_processes_resumes_with_fresh_noise(rank):
    """Written by 2 processes and resumed by 3, this one of rank ``rank``: the
    shuffling is restored, rank 0 keeps the saved global state, and every
    rank draws its noise afresh (rank 0 says so)."""
    writer = _parts(make("own_noise", 3, 11), world_size=2)
    saved = writer.state_dict(ranks=[writer.rank_rng(), writer.rank_rng()])
    batches = Batches(X, 9, dynamic_binarize=True, seed=99, rank=rank, world_size=3, noise_seed=77)
    reader = _parts(batches, rank=rank, world_size=3)
    torch.manual_seed(999)
    if rank == 0:
        with pytest.warns(UserWarning, match="written by 2 process\\(es\\), this run has 3"):
            reader.load_state_dict(saved)
    else:
        reader.load_state_dict(saved)
    assert torch.equal(batches.generator.get_state(), saved["rng"]["batches"])
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"]) == (rank == 0)
    assert not torch.equal(batches.noise_generator.get_state(), saved["rng"]["noise"])
    assert not torch.equal(batches.noise_generator.get_state(), torch.Generator().manual_seed(77).get_state())
