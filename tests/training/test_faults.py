"""Faults: non-finite gradients, failed writes, kills during a checkpoint
write, and damaged checkpoints. (The 20-fold random SIGKILL loop is
experiments/kill_resume.py; NaN losses are in test_train.py.)"""

import errno
import json
import math
import os
import pickle
import resource
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import pyro

import pyrovae
from pyrovae.cli import main
from pyrovae.data import load_data
from pyrovae.errors import CheckpointError, RunDirError, TrainingDiverged
from pyrovae.runs import RunDir, load_checkpoint, save_checkpoint
from pyrovae.training.trainer import Trainer

from helpers import tiny_config

STEPS = 20  # steps per epoch of tiny_config: 1000 training points / 50


def setup(tmp_path=None, **train):
    cfg = pyrovae.load_config(tiny_config(train={**tiny_config()["train"], **train}))
    pyro.set_rng_seed(0)
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    run = RunDir.create(tmp_path / "run") if tmp_path is not None else None
    return Trainer(vae, splits, cfg, run_dir=run.path if run else None), run


def poison_gradient(trainer, at_step, value=float("nan")):
    """The gradient of the first decoder weight becomes ``value`` at backward
    pass number ``at_step`` (1-based); the loss stays finite."""
    calls = {"n": 0}
    weight = trainer.vae.decoder.net[0].weight

    def hook(grad):
        calls["n"] += 1
        return grad * value if calls["n"] == at_step else grad

    weight.register_hook(hook)


# -- non-finite gradients -------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_gradient_is_caught_at_the_next_step_and_named(tmp_path, value):
    trainer, run = setup(tmp_path, epochs=3)
    poison_gradient(trainer, at_step=STEPS + 5)  # epoch 2, step 5: the loss stays finite
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    message = str(e.value)
    assert "epoch 2, step 6" in message and "already non-finite" in message and "decoder.net.0.weight" in message
    assert f"global step {STEPS + 5}" in message and "last good checkpoint is kept" in message
    state = load_checkpoint(run.checkpoint)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_nonfinite_gradient_at_the_last_step_never_reaches_a_checkpoint(tmp_path):
    trainer, run = setup(tmp_path, epochs=3)
    poison_gradient(trainer, at_step=2 * STEPS)  # the last step of epoch 2
    with pytest.raises(TrainingDiverged, match="last step of epoch 2") as e:
        trainer.fit()
    assert e.value.epoch == 2
    state = load_checkpoint(run.checkpoint)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["epoch"] for r in run.read_metrics()] == [1]


def test_gradient_check_with_clipping_names_the_step_and_parameter():
    trainer, _ = setup(epochs=2, grad_clip=100.0)
    poison_gradient(trainer, at_step=7)
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    assert "gradient norm became nan at epoch 1, step 7" in str(e.value)
    assert "First non-finite gradient: decoder.net.0.weight" in str(e.value)


def test_skip_nonfinite_also_skips_a_bad_gradient():
    trainer, _ = setup(epochs=1, skip_nonfinite=True)
    poison_gradient(trainer, at_step=3)
    with pytest.warns(UserWarning, match="non-finite gradient norm at epoch 1, step 3"):
        history = trainer.fit()
    assert history[0]["skipped_batches"] == 1 and math.isfinite(history[0]["train_loss"])
    assert all(torch.isfinite(p).all() for p in trainer.vae.parameters())


# -- failed writes ----------------------------------------------------------------


def _fail_second_checkpoint(monkeypatch, fail):
    """Run ``fail`` around the second write of checkpoint.pt."""
    train_module = sys.modules["pyrovae.training.trainer"]
    real = train_module.save_checkpoint
    calls = {"n": 0}

    def save(state, *paths):  # the trainer may write best.pt and checkpoint.pt in one call
        for path in paths:
            if Path(path).name == "checkpoint.pt":
                calls["n"] += 1
                if calls["n"] == 2:
                    return fail(real, state, path)
            real(state, path)

    monkeypatch.setattr(train_module, "save_checkpoint", save)


def _assert_epoch_one_intact(run):
    assert load_checkpoint(run.checkpoint)["epoch"] == 1
    assert not list(run.path.glob(".*.tmp"))


def test_a_real_write_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The operating system refuses the write (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC)."""

    def too_large(real, state, path):
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old[1]))
        try:
            return real(state, path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
            signal.signal(signal.SIGXFSZ, old_handler)

    trainer, run = setup(tmp_path, epochs=3)
    _fail_second_checkpoint(monkeypatch, too_large)
    with pytest.raises(RunDirError) as e:
        trainer.fit()
    assert "could not write checkpoint" in str(e.value) and "File too large" in str(e.value)
    assert "previous checkpoint is intact" in str(e.value)
    _assert_epoch_one_intact(run)


@pytest.mark.parametrize("where, error", [("os.replace", errno.ENOSPC), ("tempfile.mkstemp", errno.EACCES)])
def test_disk_full_or_unwritable_directory_mid_run(tmp_path, monkeypatch, where, error):
    def fail(real, state, path):
        module, name = where.split(".")
        original = getattr(sys.modules[module], name)

        def refuse(*args, **kwargs):
            raise OSError(error, os.strerror(error))

        monkeypatch.setattr(sys.modules[module], name, refuse)
        try:
            return real(state, path)
        finally:
            monkeypatch.setattr(sys.modules[module], name, original)

    trainer, run = setup(tmp_path, epochs=3)
    _fail_second_checkpoint(monkeypatch, fail)
    with pytest.raises(RunDirError, match=os.strerror(error)):
        trainer.fit()
    _assert_epoch_one_intact(run)


def test_unwritable_run_directory_is_refused_before_training(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", "--config", str(config), "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error: cannot write to run directory") and "Traceback" not in err


def test_metrics_write_failure_is_a_clear_error(tmp_path, monkeypatch):
    trainer, run = setup(tmp_path, epochs=1)
    monkeypatch.setattr(RunDir, "metrics", property(lambda self: self.path / "missing-dir" / "metrics.jsonl"))
    with pytest.raises(RunDirError, match="could not append"):
        trainer.fit()


# -- kills ----------------------------------------------------------------------------

KILL_IN_WRITE = """
import os, signal, sys
real = os.fsync
def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if ".checkpoint.pt." in name and os.path.exists(os.path.join(sys.argv[-1], "checkpoint.pt")):
        os.kill(os.getpid(), signal.SIGKILL)   # the second checkpoint is written, not yet on disk nor renamed
    return real(fd)
os.fsync = fsync   # what pyrovae.atomic syncs each temporary file with
from pyrovae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_a_checkpoint_write_then_resume_is_exact(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(train={**tiny_config()["train"], "epochs": 3})))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", KILL_IN_WRITE, "train", "--config", str(config), "--out", str(run)]
    killed = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert len(list(run.glob(".checkpoint.pt.*.tmp"))) == 1  # the torn write, beside the intact checkpoint
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert main(["train", "--resume", str(run)]) == 0
    assert not list(run.glob(".*.tmp"))
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    # the same as a run that was never interrupted
    trainer, _ = setup(tmp_path / "ref", epochs=3)
    reference = trainer.fit()
    resumed = load_checkpoint(run / "checkpoint.pt")
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in reference]
    for name, value in trainer.vae.state_dict().items():
        assert torch.equal(resumed["model"][name], value), name


def test_a_metrics_line_lost_after_the_checkpoint_comes_back_on_resume(tmp_path):
    trainer, run = setup(tmp_path, epochs=2)
    trainer.fit()
    lines = run.metrics.read_text().splitlines()
    run.metrics.write_text(lines[0] + "\n" + lines[1][:17])  # killed after checkpoint 2, during its metrics line
    trainer2, _ = setup(None, epochs=2)
    trainer2.run = run
    trainer2.run_path = run.path
    trainer2.resume()
    assert run.metrics.read_text().splitlines() == lines


# -- damaged and foreign checkpoints -------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    trainer, _ = setup(epochs=1)
    trainer.fit()
    save_checkpoint(trainer.state_dict(), path)
    return path.read_bytes()


def test_every_truncation_is_refused(tmp_path, checkpoint_bytes):
    path = tmp_path / "checkpoint.pt"
    n = len(checkpoint_bytes)
    cuts = sorted({0, 1, 10, 100, 1000, n // 2, n - 100, n - 22, n - 1} | {n * k // 37 for k in range(37)})
    for cut in cuts:
        path.write_bytes(checkpoint_bytes[:cut])
        with pytest.raises(CheckpointError, match="not a readable pyrovae checkpoint"):
            load_checkpoint(path)
    assert len(cuts) >= 40


@pytest.mark.parametrize("kind", ["plain_pickle", "torch_list", "zip_of_text", "text", "directory", "empty_dict"])
def test_foreign_files_are_refused(tmp_path, kind):
    path = tmp_path / "checkpoint.pt"
    if kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"format": "pyrovae-checkpoint-v1", "x": object()}))
    elif kind == "torch_list":
        torch.save([torch.zeros(2)], path)
    elif kind == "zip_of_text":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data.pkl", "hello")
    elif kind == "text":
        path.write_text("model: 3\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "empty_dict":
        torch.save({}, path)
    with pytest.raises(CheckpointError, match="not a (readable )?pyrovae checkpoint"):
        load_checkpoint(path)


def test_a_checkpoint_without_its_checksum_is_refused(tmp_path, checkpoint_bytes):
    """Every checkpoint pyrovae has written carries a SHA-256 of its contents
    (the runs of tests/fixtures/run-0.1.0 too); one without was edited."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes)
    state = torch.load(path, weights_only=True)
    del state["sha256"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="has no checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"optimizer": {"name": "sgd", "lr": 0.01}}}, "train.optimizer 'adam'"),
        ({"train": {"lr_schedule": {"name": "cosine"}}}, "train.lr_schedule 'constant'"),
        ({"model": {"latent_dim": 4}}, "different model config"),
        ({"model": {"decoder": {"name": "mlp", "hidden": [16]}}}, "different model config"),
    ],
)
def test_checkpoint_of_another_config_is_refused(tmp_path, checkpoint_bytes, change, message):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes)
    cfg = tiny_config()
    for section, values in change.items():
        cfg[section] = {**cfg[section], **values}
    cfg = pyrovae.load_config(cfg)
    splits = load_data(cfg.data)
    trainer = Trainer(pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape), splits, cfg)
    with pytest.raises(CheckpointError, match=message):
        trainer.load_state_dict(load_checkpoint(path), path)


def test_checkpoint_of_other_data_is_refused(tmp_path, checkpoint_bytes):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes)
    cfg = pyrovae.load_config(tiny_config(data={**tiny_config()["data"], "options": {"shape": [1, 4, 4]}}))
    splits = load_data(cfg.data)
    trainer = Trainer(pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape), splits, cfg)
    with pytest.raises(CheckpointError, match=r"data of shape \(1, 8, 8\)"):
        trainer.load_state_dict(load_checkpoint(path), path)
