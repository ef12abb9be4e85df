"""Devices and resume: one name per device, every generator the batches use
saved, a checkpoint from another device type or model mapped or refused in
one line, and deterministic kernels while fitting.

The oracle for resume is an uninterrupted run (as in ``test_resume.py``):
cut after one epoch and resumed into a model with other initial weights,
the final weights and optimizer state must equal the straight run's bit for bit.
"""

import pytest
import torch

from pyrovae.devices import canonical_device
from pyrovae.errors import CheckpointError
from pyrovae.runs import RunDir, load_checkpoint, save_checkpoint
from pyrovae.training.strategy import SingleProcess
from pyrovae.training.trainer import Trainer

from helpers import assert_identical, setup

EPOCHS = 3
DYNAMIC = {"data": {"name": "synthetic", "val_size": 200, "binarize": "dynamic"}, "train": {
    "epochs": EPOCHS, "batch_size": 50, "progress": False, "device": "cpu"}}


@pytest.mark.parametrize("given, expected", [
    ("cpu", "cpu"), ("cpu:0", "cpu"), (torch.device("cpu", 0), "cpu"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1"),
])
def test_each_device_has_one_name(given, expected):
    assert canonical_device(given, current_cuda_index=lambda: 0) == torch.device(expected)


class IndexedCPU(SingleProcess):
    """A strategy that names the CPU ``cpu:0``, as one naming a GPU ``cuda`` names ``cuda:0``."""

    def device(self, spec):
        return torch.device("cpu", 0)


def straight_and_resumed(tmp_path, make_trainer):
    """Final checkpoints of a straight run and of one cut after epoch 1 and
    resumed into other initial weights; ``make_trainer(seed, run_dir)``."""
    straight = RunDir.create(tmp_path / "straight")
    make_trainer(0, straight.path).fit()
    cut = RunDir.create(tmp_path / "cut")
    make_trainer(0, cut.path).fit(max_epochs=1)
    resumed = make_trainer(123, cut.path)
    resumed.resume()
    resumed.fit()
    return load_checkpoint(straight.checkpoint), load_checkpoint(cut.checkpoint)


def test_resume_is_exact_under_an_indexed_device(tmp_path):
    def make(seed, run_dir):
        cfg, splits, vae = setup(seed=seed, **DYNAMIC)
        return Trainer(vae, splits, cfg, run_dir=run_dir, strategy=IndexedCPU())

    a, b = straight_and_resumed(tmp_path, make)
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert_identical(a["model"], b["model"], "model")
    assert_identical(a["optimizer"], b["optimizer"], "optimizer")


def test_a_noise_generator_of_its_own_is_saved_and_restored(tmp_path):
    """Batches copied to another device draw their binarization from a
    generator of their own; the checkpoint holds it, so resume is exact."""
    def make(seed, run_dir):
        cfg, splits, vae = setup(seed=seed, **DYNAMIC)
        trainer = Trainer(vae, splits, cfg, run_dir=run_dir)
        trainer.batches.noise_generator = torch.Generator().manual_seed(1000 + seed)
        return trainer

    a, b = straight_and_resumed(tmp_path, make)
    assert "noise" in a["rng"]
    assert_identical(a["rng"]["noise"], b["rng"]["noise"], "noise generator")
    assert_identical(a["model"], b["model"], "model")


def test_a_checkpoint_from_another_device_type_resumes_with_a_warning(tmp_path):
    """A generator state saved on a GPU cannot be set on the CPU: the
    generator starts afresh, the user is told, and training goes on."""
    cfg, splits, vae = setup(**DYNAMIC)
    run = RunDir.create(tmp_path / "run")
    Trainer(vae, splits, cfg, run_dir=run.path).fit(max_epochs=1)
    state = load_checkpoint(run.checkpoint)
    state["rng"]["batches"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    state["rng"]["batches_device"] = "cuda:0"
    save_checkpoint(state, run.checkpoint)

    cfg, splits, vae = setup(seed=5, **DYNAMIC)
    trainer = Trainer(vae, splits, cfg, run_dir=run.path)
    with pytest.warns(UserWarning, match="saved on cuda:0 and runs on cpu now"):
        trainer.resume()
    history = trainer.fit()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert_identical(vae.state_dict(), load_checkpoint(run.checkpoint)["model"], "model")


def test_resume_with_a_changed_model_names_the_keys_and_shapes(tmp_path):
    cfg, splits, vae = setup(**DYNAMIC)
    run = RunDir.create(tmp_path / "run")
    Trainer(vae, splits, cfg, run_dir=run.path).fit(max_epochs=1)
    cfg, splits, bigger = setup(model={"latent_dim": 4, "encoder": {"name": "mlp", "hidden": [32]},
                                       "decoder": {"name": "mlp", "hidden": [32]}}, **DYNAMIC)
    trainer = Trainer(bigger, splits, cfg, run_dir=run.path)
    with pytest.raises(CheckpointError) as caught:
        trainer.resume()
    message = str(caught.value)
    saved, wanted = load_checkpoint(run.checkpoint)["model"], bigger.state_dict()
    reshaped = [k for k in wanted if k in saved and saved[k].shape != wanted[k].shape]
    assert reshaped
    first = reshaped[0]
    assert f"{first}: {tuple(saved[first].shape)} in the checkpoint, {tuple(wanted[first].shape)} in this model" in message
    assert "Error(s) in loading state_dict" not in message


class RecordDeterminism:
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, trainer, record):
        self.seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic))

    def on_train_end(self, trainer):
        pass


@pytest.mark.parametrize("deterministic", [False, True])
def test_deterministic_kernels_while_fitting_and_the_callers_settings_after(deterministic):
    cfg, splits, vae = setup(train={"epochs": 1, "batch_size": 50, "progress": False, "device": "cpu",
                                    "deterministic": deterministic})
    record = RecordDeterminism()
    Trainer(vae, splits, cfg, callbacks=[record]).fit()
    assert record.seen == [(deterministic, deterministic)]
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
