"""Resume is bitwise exact across a checkpoint taken in the middle of
everything that carries state from one epoch to the next.

The oracle is an uninterrupted run: train ``EPOCHS`` epochs into one run
directory; train ``CUT`` epochs into another (the same config, stopped as a
crash right after the checkpoint would stop it), then continue that one
through the real resume path (a fresh model with other initial weights and
``pyrovae.train(..., resume=True)``). Both runs' final checkpoints must then
hold exactly the same weights, optimizer, schedule, random state and
metrics. Each case also proves that the cut really fell inside what it
tests (mid-warm-up, mid-schedule, a learned prior still moving), so a case
cannot pass because there was nothing to resume.

The two-process case is ``test_torchrun_resume_is_bitwise_exact`` in
``test_distributed.py`` (it reuses that module's spawned run).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

import pyro

import pyrovae
from pyrovae.cli import main
from pyrovae.data import load_data
from pyrovae.runs import RunDir, load_checkpoint
from pyrovae.training.trainer import Trainer

from helpers import assert_identical, component_options, setup, tiny_config, without_seconds

EPOCHS, CUT = 3, 1
LR = 1e-3


def _prior(name):
    return {"model": {**tiny_config()["model"], "prior": {"name": name, **component_options("prior", name)}}}


def _train(**options):
    return {"train": {**tiny_config()["train"], "epochs": EPOCHS, "optimizer": {"name": "adam", "lr": LR}, **options}}


def _beta_ramps_across_the_cut(history, cut_state, final_state):
    betas = [r["beta"] for r in history]  # beta of each epoch's last step
    assert 0 < betas[CUT - 1] < betas[CUT] < 1, betas  # the checkpoint fell inside the warm-up...
    assert betas[-1] == 1.0, betas  # ...which ends before the run does


def _lr_changes_across_the_cut(history, cut_state, final_state):
    lrs = [LR] + [r["lr"] for r in history]  # lrs[e]: the learning rate of epoch e + 1
    assert lrs[CUT - 1] != lrs[CUT] != lrs[-1], lrs  # the lr changed at the cut, and again after it
    assert cut_state["optimizer"]["param_groups"][0]["lr"] == lrs[CUT] != LR


def _iwae_with_several_particles(history, cut_state, final_state):
    objective = cut_state["config"]["train"]["objective"]
    assert objective["name"] == "iwae" and objective["num_particles"] > 1


def _prior_still_learning(history, cut_state, final_state):
    prior = {k: v for k, v in cut_state["model"].items() if k.startswith("prior_module.") and v.is_floating_point()}
    assert prior, "the prior has no learned parameters"
    assert any(not torch.equal(v, final_state["model"][k]) for k, v in prior.items()), "the prior did not move after the cut"


CASES = {
    "kl_warmup": (_train(kl_schedule={"name": "linear", "warmup_epochs": 2.5}), _beta_ramps_across_the_cut),
    "burda_lr": (_train(lr_schedule={"name": "burda", "base": 1.01}), _lr_changes_across_the_cut),
    "cosine_lr": (_train(lr_schedule={"name": "cosine"}), _lr_changes_across_the_cut),
    "iwae": (_train(objective={"name": "iwae", "num_particles": 3}), _iwae_with_several_particles),
    "mog_prior": ({**_train(), **_prior("mog")}, _prior_still_learning),
    "vamp_prior": ({**_train(), **_prior("vamp")}, _prior_still_learning),
}


def _sections(case):
    sections, _ = CASES[case]
    # dynamic binarization: the noise generator's state must survive the cut too
    return {**sections, "data": {**tiny_config()["data"], "binarize": "dynamic"}}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bitwise_exact(tmp_path, case):
    """A run cut after epoch CUT and resumed equals, bit for bit, the run that was never cut."""
    sections = _sections(case)
    cfg, splits, vae = setup(**sections)
    full = RunDir.create(tmp_path / "full")
    Trainer(vae, splits, cfg, run_dir=full.path).fit()

    cfg, splits, vae = setup(**sections)
    part = RunDir.create(tmp_path / "part")
    Trainer(vae, splits, cfg, run_dir=part.path).fit(max_epochs=CUT)  # a crash right after epoch CUT's checkpoint
    cut_state = load_checkpoint(part.checkpoint)
    assert cut_state["epoch"] == CUT < EPOCHS

    _, splits, fresh = setup(seed=123, **sections)  # a new process: other initial weights
    resumed = pyrovae.train(fresh, splits, cfg, run_dir=part.path, resume=True)

    a, b = load_checkpoint(full.checkpoint), load_checkpoint(part.checkpoint)
    assert a["epoch"] == b["epoch"] == EPOCHS
    for key in ("model", "optimizer", "scheduler", "rng", "step", "best_val", "bad_epochs", "config"):
        assert_identical(a[key], b[key], key)
    assert_identical(without_seconds(a["history"]), without_seconds(b["history"]), "history")
    assert_identical(without_seconds(full.read_metrics()), without_seconds(part.read_metrics()), "metrics.jsonl")
    assert without_seconds(resumed) == without_seconds(a["history"])
    assert_identical(fresh.state_dict(), a["model"], "live model")
    assert b["optimizer"]["param_groups"][0]["lr"] == a["optimizer"]["param_groups"][0]["lr"]

    _, witness = CASES[case]
    witness(a["history"], cut_state, a)


# -- a run written by pyrovae 0.1.0 ------------------------------------------------------------

#: a 1-epoch run and its checkpoint, written by pyrovae 0.1.0: its config has no
#: model.name, its checkpoint a param_store and no pyrovae_version; written with
#: data.binarize dynamic, latent 2, MLPs of 16
RUN_0_1_0 = Path(__file__).parent.parent / "fixtures" / "run-0.1.0"


def test_a_run_written_by_pyrovae_0_1_0_loads_evaluates_and_resumes(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN_0_1_0, run)
    old = load_checkpoint(run / "checkpoint.pt")
    assert "param_store" in old and "pyrovae_version" not in old and old["epoch"] == 1

    vae, cfg, state = pyrovae.load_run(run)
    assert cfg.model.name == "vae" and not vae.training
    assert_identical(vae.state_dict(), old["model"], "loaded weights")

    assert main(["evaluate", str(run), "-k", "4", "--limit", "50", "--no-progress"]) == 0
    assert json.loads((run / "eval.json").read_text())  # scored

    assert main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    new = load_checkpoint(run / "checkpoint.pt")
    assert new["epoch"] == 2 and "param_store" not in new and new["pyrovae_version"]
    assert new["history"][0] == old["history"][0]  # the old epoch is kept as it was
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    # the resume restored the old run's state: weights, optimizer and the
    # random streams, so it is the continuation a trainer of today computes
    # from that state
    reference = tmp_path / "reference"
    shutil.copytree(RUN_0_1_0, reference)
    cfg = pyrovae.Config.from_yaml(reference / "config.yaml").override(["train.epochs=2"])
    pyro.set_rng_seed(5)  # a new process: other initial weights, other global random state
    splits = load_data(cfg.data)
    trainer = Trainer(pyrovae.build_model(cfg.model, data_shape=splits.data_shape), splits, cfg, run_dir=reference)
    trainer.resume()
    trainer.fit()
    assert_identical(trainer.vae.state_dict(), new["model"], "resumed weights")


def test_a_run_without_split_seed_is_split_as_it_was_trained(tmp_path):
    """data.split_seed is newer than 0.1.0, whose npy split kept the stored
    order: a run directory without the key is read with null (that order),
    so its test set stays the one it was trained beside."""
    from pyrovae.runs import RunDir

    assert "split_seed" not in (RUN_0_1_0 / "config.yaml").read_text()
    assert RunDir(RUN_0_1_0).read_config().data.split_seed is None
    assert pyrovae.load_config(RUN_0_1_0 / "config.yaml").data.split_seed == 0  # a config file to train from: today's default
    run = tmp_path / "run"
    run.mkdir()
    pyrovae.load_config({"data": {"split_seed": 3}}).to_yaml(run / "config.yaml")
    assert RunDir(run).read_config().data.split_seed == 3  # written now: read as written
