"""The checkpoint file format (pyrovae.checkpoint_file): what is written
reads back as it was, and every file that is not a whole checkpoint of this
format is refused with a CheckpointError that names the file and says what
to do. The oracles are torch's own serialization and bytes changed on disk.
(Every truncation point and foreign files from the training run are in
test_faults.py.)"""

import io
import struct

import pytest
import torch

import pyro

from pyrovae.checkpoint_file import CHECKPOINT_FORMAT, REQUIRED_KEYS, content_digest, load_checkpoint, save_checkpoint
from pyrovae.errors import CheckpointError, RunDirError
from pyrovae.training.trainer import Trainer

from helpers import setup

pyro.enable_validation(True)

MARKER = 1234.5  # a float whose bytes are easy to find in the file


def contents():
    return {"epoch": 3, "model": {"w": torch.full((64,), MARKER), "b": torch.arange(4)}, "data_shape": [1, 8, 8],
            "history": [{"epoch": 1, "train_loss": 90.25}]}


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(contents(), path)
    return path


def test_a_checkpoint_reads_back_as_written(written):
    raw = torch.load(written, weights_only=True)  # torch's own reading, no checks
    assert raw["format"] == CHECKPOINT_FORMAT and raw["sha256"] == content_digest({k: v for k, v in raw.items() if k != "sha256"})
    state = load_checkpoint(written)
    want = contents()
    assert sorted(state) == sorted([*want, "format"])
    assert torch.equal(state["model"]["w"], want["model"]["w"]) and torch.equal(state["model"]["b"], want["model"]["b"])
    assert (state["epoch"], state["data_shape"], state["history"]) == (want["epoch"], want["data_shape"], want["history"])


def test_one_save_to_two_paths_writes_the_same_bytes(tmp_path):
    save_checkpoint(contents(), tmp_path / "best.pt", tmp_path / "checkpoint.pt")
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "checkpoint.pt").read_bytes()


def _refused(path, *phrases):
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, message
    return message


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9, 0.999])
def test_a_truncated_file_names_the_file_and_the_other_checkpoint(written, keep):
    data = written.read_bytes()
    written.write_bytes(data[: int(len(data) * keep)])
    _refused(written, "not a readable pyrovae checkpoint", "truncated", "Use the run's other checkpoint (best.pt")


def test_a_changed_byte_in_the_weights_is_refused_as_corrupt(written):
    data = written.read_bytes()
    pattern = struct.pack("<f", MARKER)
    at = data.index(pattern * 64)  # the tensor data of model.w, stored uncompressed
    written.write_bytes(data[:at] + struct.pack("<f", MARKER + 1) + data[at + 4:])
    assert torch.load(written, weights_only=True)["model"]["w"][0] == MARKER + 1  # torch itself reads it happily
    _refused(written, "is corrupt", "Use the run's other checkpoint")


def _torch_file(path, obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getvalue())


def test_a_checkpoint_of_a_newer_format_says_to_upgrade(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = {**contents(), "format": "pyrovae-checkpoint-v2"}
    _torch_file(path, {**state, "sha256": content_digest(state)})
    _refused(path, "pyrovae-checkpoint-v2", "upgrade pyrovae")


@pytest.mark.parametrize("obj", [{"w": torch.zeros(2)}, [torch.zeros(2)], {"format": "other-v1"}],
                         ids=["state_dict", "list", "other_marker"])
def test_a_torch_file_of_another_kind_is_refused(tmp_path, obj):
    path = tmp_path / "model.pt"
    _torch_file(path, obj)
    _refused(path, "is not a pyrovae checkpoint", "give the checkpoint.pt or best.pt of a pyrovae run directory")


def test_a_numpy_file_is_refused(tmp_path):
    import numpy as np

    path = tmp_path / "checkpoint.pt"
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.write_bytes(path.with_suffix(".npy").read_bytes())
    _refused(path, "not a readable pyrovae checkpoint")


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_a_checkpoint_without_a_required_entry_is_refused(tmp_path, key):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({k: v for k, v in contents().items() if k != key}, path)
    _refused(path, f"lacks {key}")


def test_a_missing_file_says_to_train_first(tmp_path):
    _refused(tmp_path / "checkpoint.pt", "no checkpoint at", "train first")


def test_a_failed_write_names_the_file_and_keeps_the_others(tmp_path):
    good, bad = tmp_path / "best.pt", tmp_path / "gone" / "checkpoint.pt"
    with pytest.raises(RunDirError) as caught:
        save_checkpoint(contents(), good, bad)
    assert f"could not write checkpoint {bad}" in str(caught.value)
    assert load_checkpoint(good)["epoch"] == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_weights_without_training_state_do_not_resume(tmp_path):
    """A file with weights alone loads (load_run needs no more) but training cannot continue from it."""
    cfg, splits, vae = setup(train={"epochs": 1, "batch_size": 50, "progress": False, "device": "cpu"})
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": vae.state_dict(), "data_shape": list(splits.data_shape), "epoch": 1}, path)
    trainer = Trainer(vae, splits, cfg)
    with pytest.raises(CheckpointError, match="holds no training state .*optimizer.* missing"):
        trainer.load_state_dict(load_checkpoint(path), path)
