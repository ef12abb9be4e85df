import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from pyrovae.cli import COMMANDS, main
from pyrovae.config import Config
from pyrovae.components.guides import guides
from pyrovae.components.likelihoods import likelihoods
from pyrovae.components.priors import priors
from pyrovae.training.trainer import Trainer

from helpers import tiny_config


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    return str(path)


def train(config_file, out, *extra):
    return main(["train", "--config", config_file, "--out", str(out), *extra])


def test_train_writes_a_complete_run_directory(tmp_path, config_file):
    out = tmp_path / "run"
    assert train(config_file, out, "--set", "train.epochs=2") == 0
    for name in ("config.yaml", "checkpoint.pt", "best.pt", "metrics.jsonl", "reconstructions.png", "samples.png"):
        assert (out / name).stat().st_size > 0, name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    cfg = Config.from_yaml(out / "config.yaml")
    assert cfg.data.name == "synthetic" and cfg.train.epochs == 2
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_run_directory_is_refused_and_untouched(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    assert train(config_file, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert train(config_file, out) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_replaces_only_pyrovae_files(tmp_path, config_file):
    out = tmp_path / "run"
    assert train(config_file, out) == 0
    (out / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    (out / "plots" / "old.png").write_bytes(b"old")
    assert train(config_file, out, "--overwrite", "--set", "train.epochs=1") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "plots").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_continues_to_more_epochs(tmp_path, config_file):
    out = tmp_path / "run"
    assert train(config_file, out, "--set", "train.epochs=1") == 0
    assert main(["train", "--resume", str(out), "--set", "train.epochs=3"]) == 0
    epochs = [yaml.safe_load(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert Config.from_yaml(out / "config.yaml").train.epochs == 3


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "not a readable pyrovae checkpoint"),
        ("foreign", "not a pyrovae checkpoint"),
        ("code", "not a readable pyrovae checkpoint"),
        ("other_model", "different model config"),
        ("missing", "no checkpoint at"),
        ("flip", "is corrupt"),
    ],
)
def test_broken_checkpoints_are_refused_clearly(tmp_path, config_file, capsys, damage, message):
    out = tmp_path / "run"
    assert train(config_file, out, "--set", "train.epochs=1") == 0
    ckpt = out / "checkpoint.pt"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif damage == "code":
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

        ckpt.write_bytes(pickle.dumps(Evil()))
    elif damage == "other_model":
        cfg = Config.from_yaml(out / "config.yaml").override(["model.latent_dim=5"])
        cfg.to_yaml(out / "config.yaml")
    elif damage == "missing":
        ckpt.unlink()
    elif damage == "flip":  # one bit inside a weight tensor's raw data
        weight = next(t for t in torch.load(ckpt, weights_only=True)["model"].values() if t.numel() >= 64)
        raw = bytearray(ckpt.read_bytes())
        at = raw.find(weight.numpy().tobytes()[:64])
        assert at > 0
        raw[at + 10] ^= 0x10
        ckpt.write_bytes(raw)
    assert main(["train", "--resume", str(out), "--set", "train.epochs=2"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.epoch=3"], "unknown key 'epoch' in train"),
        (["--set", "model.prior.name=nope"], "unknown prior 'nope'"),
        (["--set", "model.encoder={name: mlp, hiden: [3]}"], "encoder 'mlp' has no option 'hiden'"),
        (["--set", "model.encoder=conv", "--set", "data.options={shape: [64]}"], "image data of shape"),
    ],
)
def test_bad_configs_exit_with_a_clear_message(tmp_path, config_file, capsys, args, message):
    assert train(config_file, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error:") and message in err and "Traceback" not in err


def test_resume_of_missing_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_prints_every_registered_component(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in (priors, likelihoods, guides):
        for name in registry.names():
            assert f"  {name}(" in out
    assert "num_components=500" in out  # options with their defaults


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "pyrovae", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout and "list" in result.stdout


# -- the parser: version, help text, --set ------------------------------------------


def test_version_prints_the_package_version(capsys):
    from pyrovae import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"pyrovae {__version__}"


@pytest.mark.parametrize("verb", [None, *COMMANDS])
def test_help_shows_no_rest_markup(verb, capsys):
    with pytest.raises(SystemExit):
        main(([verb] if verb else []) + ["--help"])
    out = capsys.readouterr().out
    assert "usage: pyrovae" in out and "``" not in out and ":class:`" not in out and ":func:`" not in out


def test_help_strips_roles_and_literals_from_docstrings():
    from pyrovae.commands import plain_text

    text = "see ``data.binarize`` and :func:`~pyrovae.data.load_data`, :class:`pyrovae.VAE`, :ref:`the guide <guide>`"
    assert plain_text(text) == "see data.binarize and load_data, pyrovae.VAE, the guide"


@pytest.mark.parametrize("argv", [["train", "--set", "train.epochs", "2"], ["evaluate", "RUN", "--set", "data.path", "x.npy"]])
def test_set_without_equals_sign_says_how_to_write_it(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    key = argv[argv.index("--set") + 1]
    assert e.value.code == 2 and "expected KEY=VALUE" in err and f"--set {key}=VALUE" in err


def test_a_value_split_by_the_shell_gets_a_hint_on_quoting(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--set", "model.encoder.hidden=[200,", "200]"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: 200]" in err and "quote a value with spaces" in err


# -- data paths: a run is read the same from any folder -------------------------------


def test_evaluate_from_another_folder_finds_a_relative_npy_path(tmp_path, monkeypatch, capsys):
    """Trained with ``data.path: digits.npy`` from the data's folder, the run
    stores the absolute path (and what was typed), so ``pyrovae evaluate RUN``
    works from elsewhere; once the file moves, ``--set data.path=...`` finds it."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    grey = np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32)
    np.save(project / "digits.npy", grey)
    monkeypatch.chdir(project)
    data = {"name": "npy", "path": "digits.npy", "binarize": "static"}
    cfg = tiny_config(data=data, train={"epochs": 1})
    (project / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", "tiny.yaml", "--out", "runs/first"]) == 0
    saved = yaml.safe_load((project / "runs" / "first" / "config.yaml").read_text())["data"]
    assert os.path.isabs(saved["path"]) and os.path.samefile(saved["path"], project / "digits.npy")
    assert saved["as_given"] == {"path": "digits.npy"}

    monkeypatch.chdir(elsewhere)
    run = str(project / "runs" / "first")
    for verb in (["evaluate", run, "-k", "2", "--limit", "20", "--no-progress", "--no-compile"],
                 ["encode", run, "--out", "codes.npz"], ["plot", run, "--only", "latent_scatter"]):
        assert main(verb) == 0, capsys.readouterr().err
    (project / "digits.npy").rename(elsewhere / "moved.npy")
    assert main(["evaluate", run, "-k", "2", "--limit", "20", "--no-progress"]) == 2
    assert "--set data.path=" in capsys.readouterr().err
    assert main(["evaluate", run, "-k", "2", "--limit", "20", "--no-progress", "--no-compile",
                 "--set", "data.path=moved.npy"]) == 0


# -- a failed start leaves nothing behind --------------------------------------------


def test_a_start_failing_its_data_check_leaves_no_run_directory(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    # grey values for a Bernoulli likelihood: refused by the trainer's data check
    assert train(config_file, out, "--set", "data.binarize=none") == 2
    assert "outside the support" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("folder_existed", [False, True])
def test_a_start_failing_in_its_first_epoch_can_be_run_again(tmp_path, config_file, monkeypatch, capsys, folder_existed):
    """An error in the model's first steps: nothing of the run stays (a
    folder the user made stays, empty), and the same command then runs."""
    out = tmp_path / "run"
    if folder_existed:
        out.mkdir()

    def broken_step(self, bar):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_train_steps", broken_step)
        with pytest.raises(RuntimeError, match="shapes"):
            train(config_file, out)
    assert "nothing kept" in capsys.readouterr().err
    assert (out.exists() and not any(out.iterdir())) if folder_existed else not out.exists()
    assert train(config_file, out, "--set", "train.epochs=1") == 0  # no --overwrite needed
    assert (out / "checkpoint.pt").exists()


def test_a_failure_after_the_first_checkpoint_keeps_the_run(tmp_path, config_file, monkeypatch):
    out = tmp_path / "run"
    calls = []
    original = Trainer._train_steps

    def fails_in_epoch_two(self, bar):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return original(self, bar)

    monkeypatch.setattr(Trainer, "_train_steps", fails_in_epoch_two)
    with pytest.raises(RuntimeError):
        train(config_file, out, "--set", "train.epochs=2")
    assert (out / "config.yaml").exists() and (out / "checkpoint.pt").exists()


def test_a_folder_left_by_a_start_killed_before_its_first_checkpoint_is_reused(tmp_path, config_file, capsys):
    """Only config.yaml (the process was killed in epoch 1): --resume says
    there is nothing to continue and how to start again, and a new start
    takes the folder without --overwrite."""
    out = tmp_path / "run"
    out.mkdir()
    Config.from_yaml(config_file).to_yaml(out / "config.yaml")
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    assert main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint to resume" in err and f"--config {out / 'config.yaml'} --out {out}" in err
    assert main(["train", "--config", str(out / "config.yaml"), "--out", str(out), "--set", "train.epochs=1"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".png") == ["best.pt", "checkpoint.pt", "config.yaml", "metrics.jsonl"]


def test_a_folder_with_files_of_someone_else_is_still_refused(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("data: {}\n")
    (out / "notes.txt").write_text("mine")
    assert train(config_file, out) == 2
    assert "already exists" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
