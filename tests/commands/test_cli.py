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


# -- errors: one line for a pyrovae error, a traceback for a bug, --debug for both ----------------


def _users_prior_with_a_bug(latent_dim, width=1.0):
    return width / 0  # the user's bug


@pytest.fixture
def buggy_prior():
    priors.register("test_cli_buggy_prior")(_users_prior_with_a_bug)
    yield "test_cli_buggy_prior"
    priors.unregister("test_cli_buggy_prior")


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
def test_a_bug_in_a_users_prior_keeps_its_traceback(tmp_path, config_file, buggy_prior, debug):
    import traceback

    with pytest.raises(ZeroDivisionError) as e:
        main([*debug, "train", "--config", config_file, "--out", str(tmp_path / "run"), "--set", f"model.prior={buggy_prior}"])
    assert traceback.extract_tb(e.value.__traceback__)[-1].name == "_users_prior_with_a_bug"


def test_the_command_line_prints_the_traceback_of_a_users_bug(tmp_path, config_file):
    """Through the real entry point, with the prior in a plugin module: Python's traceback, not one line."""
    (tmp_path / "buggy_plugin.py").write_text(
        "import pyrovae\n\n\n"
        "@pyrovae.register_prior('plugin_buggy_prior')\n"
        "def plugin_buggy_prior(latent_dim, width=1.0):\n"
        "    return width / 0\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYROVAE_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "pyrovae", "train", "--config", config_file, "--out", str(tmp_path / "run"),
         "--set", "model.plugins=[buggy_plugin]", "--set", "model.prior=plugin_buggy_prior"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "in plugin_buggy_prior" in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: float division by zero")
    assert "pyrovae: error" not in result.stderr


def _typo_message(config_file, capsys):
    """The one-line message of a misspelled key, printed without --debug."""
    assert main(["train", "--config", config_file, "--set", "train.epoch=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyrovae: error: ") and "Traceback" not in err
    assert "'epoch'" in err and "Did you mean 'epochs'?" in err
    return err.strip()


@pytest.mark.parametrize("how", ["--debug first", "--debug last", "PYROVAE_DEBUG=1", "PYROVAE_DEBUG=0"])
def test_debug_prints_the_traceback_of_a_config_error(config_file, capsys, monkeypatch, how):
    monkeypatch.delenv("PYROVAE_DEBUG", raising=False)
    line = _typo_message(config_file, capsys)
    argv = ["train", "--config", config_file, "--set", "train.epoch=2"]
    if how.startswith("PYROVAE_DEBUG"):
        monkeypatch.setenv("PYROVAE_DEBUG", how.split("=")[1])
    else:
        argv = ["--debug", *argv] if how == "--debug first" else [*argv, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == line  # the same message, last
    if how == "PYROVAE_DEBUG=0":
        assert err.strip() == line
    else:
        assert err.startswith("Traceback (most recent call last):")
        assert "pyrovae.errors.ConfigError: " + line[len("pyrovae: error: "):] in err
        assert 'config.py", line' in err  # where load_config raised it


def test_the_debug_flag_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--debug" in out and "PYROVAE_DEBUG=1" in out and "full traceback" in out


@pytest.mark.parametrize("debug", [False, True])
def test_running_out_of_memory_is_one_line_saying_what_to_reduce(tmp_path, config_file, capsys, debug):
    def prior_beyond_memory(latent_dim, width=1.0):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    priors.register("test_cli_huge_prior")(prior_beyond_memory)
    try:
        argv = ["train", "--config", config_file, "--out", str(tmp_path / "run"), "--set", "model.prior=test_cli_huge_prior"]
        assert main(["--debug"] * debug + argv) == 2
    finally:
        priors.unregister("test_cli_huge_prior")
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pyrovae: error: prior 'test_cli_huge_prior'")
    assert "is too large to build here (CUDA out of memory" in last
    assert "train.batch_size" in last and "evaluation batch size" in last
    if debug:  # torch's error is shown as the cause
        assert "torch.OutOfMemoryError: CUDA out of memory" in err and "direct cause" in err
    else:
        assert "Traceback" not in err
