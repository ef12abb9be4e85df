"""The run-directory layout (pyrovae.rundir) and the pyrovae.runs names.

Every path a RunDir names is one of the files or folders pyrovae writes
(``ARTIFACTS``, ``ARTIFACT_DIRS``), so ``--overwrite`` and the clean-up of
a start that never finished remove exactly those; and pyrovae.runs still
gives every name that code and users import from it."""

import pytest

import pyro

import pyrovae.runs
from pyrovae.errors import RunDirError
from pyrovae.rundir import ARTIFACT_DIRS, ARTIFACTS, RunDir

pyro.enable_validation(True)

FILES = {"config": "config.yaml", "checkpoint": "checkpoint.pt", "best": "best.pt", "metrics": "metrics.jsonl",
         "reconstructions": "reconstructions.png", "samples": "samples.png", "eval_json": "eval.json",
         "bdmc_json": "bdmc.json"}
FOLDERS = {"figures": "figures", "tensorboard": "tensorboard", "plots": "plots", "imputation": "imputation"}


def test_every_named_path_is_an_artifact(tmp_path):
    run = RunDir(tmp_path / "run")
    assert {name: getattr(run, name) for name in FILES} == {k: run.path / v for k, v in FILES.items()}
    assert {name: getattr(run, name) for name in FOLDERS} == {k: run.path / v for k, v in FOLDERS.items()}
    assert sorted(FILES.values()) == sorted(ARTIFACTS) and sorted(FOLDERS.values()) == sorted(ARTIFACT_DIRS)


def test_overwrite_removes_pyrovaes_files_and_keeps_the_users(tmp_path):
    run = RunDir.create(tmp_path / "run")
    for name in FILES:
        getattr(run, name).write_text("old")
    for name in FOLDERS:
        getattr(run, name).mkdir()
        (getattr(run, name) / "inside.png").write_text("old")
    (run.path / ".checkpoint.pt.ab12cd.tmp").write_text("torn")
    (run.path / "notes.txt").write_text("the user's")
    with pytest.raises(RunDirError, match="already exists"):
        RunDir.create(run.path)
    RunDir.create(run.path, overwrite=True)
    assert [p.name for p in run.path.iterdir()] == ["notes.txt"]


def test_checkpoint_path(tmp_path):
    run = RunDir(tmp_path)
    assert (run.checkpoint_path("checkpoint"), run.checkpoint_path("best")) == (run.checkpoint, run.best)
    with pytest.raises(RunDirError, match="choose 'checkpoint'"):
        run.checkpoint_path("last")


@pytest.mark.parametrize("name", ["RunDir", "save_checkpoint", "load_checkpoint", "load_run", "CHECKPOINT_FORMAT",
                                  "load_model_state", "state_differences", "content_digest", "ARTIFACTS",
                                  "ARTIFACT_DIRS", "KEYS_ADDED_SINCE_0_1_0"])
def test_pyrovae_runs_still_gives_its_names(name):
    assert name in pyrovae.runs.__all__ and getattr(pyrovae.runs, name) is not None
