import importlib.util
import json
import math
import os

import pytest
import torch

import pyro
from pyro.infer import SVI, Trace_ELBO

import pyrovae
from pyrovae.errors import TrainingDiverged
from pyrovae.infer.evaluate import elbo_terms
from pyrovae.infer.objectives import objectives
from pyrovae.training.optim import kl_schedules
from pyrovae.runs import RunDir, load_checkpoint
from pyrovae.training.callbacks import callbacks_from_config
from pyrovae.training.trainer import Trainer

from helpers import SHAPE, setup, tiny_config


def test_metrics_file_and_checkpoint(tmp_path):
    cfg, splits, vae = setup()
    run = RunDir.create(tmp_path / "run")
    history = Trainer(vae, splits, cfg, run_dir=run.path).fit()
    lines = [json.loads(l) for l in run.metrics.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert {"epoch", "train_loss", "val_loss", "val_reconstruction", "val_kl", "seconds"} <= set(r)
        assert math.isfinite(r["train_loss"]) and r["seconds"] > 0
        assert r["val_loss"] == pytest.approx(r["val_reconstruction"] + r["val_kl"], rel=1e-5)
    assert lines == history
    state = load_checkpoint(run.checkpoint)
    assert state["epoch"] == 2 and state["step"] == 2 * len(splits.train[0]) // 50
    assert {"model", "optimizer", "scheduler", "rng", "config", "pyrovae_version"} <= set(state)
    assert "param_store" not in state  # a second copy of the weights that nothing read back


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_resume_matches_uninterrupted_run(tmp_path, binarize):
    data = {**tiny_config()["data"], "binarize": binarize}
    cfg3, splits, vae = setup(data=data, train={**tiny_config()["train"], "epochs": 3})
    full = Trainer(vae, splits, cfg3, run_dir=RunDir.create(tmp_path / "full").path).fit()

    cfg1, splits, vae = setup(data=data, train={**tiny_config()["train"], "epochs": 1})
    part = RunDir.create(tmp_path / "part")
    Trainer(vae, splits, cfg1, run_dir=part.path).fit()
    # a fresh process would build a fresh model with another init: emulate that
    _, splits, fresh = setup(seed=123, data=data, train={**tiny_config()["train"], "epochs": 3})
    trainer = Trainer(fresh, splits, cfg3, run_dir=part.path)
    trainer.resume()
    resumed = trainer.fit()

    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]
    assert [r["val_loss"] for r in resumed] == [r["val_loss"] for r in full]
    full_state = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, full_state[name]), name
    assert len(part.read_metrics()) == 3


def test_resume_truncates_metrics_beyond_checkpoint(tmp_path):
    cfg, splits, vae = setup()
    run = RunDir.create(tmp_path / "run")
    Trainer(vae, splits, cfg, run_dir=run.path).fit()
    run.append_metrics({"epoch": 3, "train_loss": 0.0})  # an epoch that never got its checkpoint
    trainer = Trainer(vae, splits, cfg.override(["train.epochs=3"]), run_dir=run.path)
    trainer.resume()
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    trainer.fit()
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]
    assert run.read_metrics()[-1]["train_loss"] > 0


def _poison_decoder(vae, after_calls):
    calls = {"n": 0}
    forward = vae.decoder.forward

    def poisoned(z):
        calls["n"] += 1
        out = forward(z)
        return out * float("nan") if calls["n"] > after_calls else out

    vae.decoder.forward = poisoned


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg, splits, vae = setup(train={**tiny_config()["train"], "epochs": 3})
    run = RunDir.create(tmp_path / "run")
    steps_per_epoch = len(splits.train[0]) // 50
    # one decoder call per step, the validation passes (200 points, one batch)
    # and, before training, the checks' two traces (the model's plate nesting,
    # found once, and one with a particles dim)
    _poison_decoder(vae, after_calls=steps_per_epoch + 1 + 2 + 2)
    with pytest.raises(TrainingDiverged) as e:
        Trainer(vae, splits, cfg, run_dir=run.path).fit()
    assert e.value.epoch == 2 and e.value.step == 3
    assert "epoch 2, step 3" in str(e.value) and "last good checkpoint is kept" in str(e.value)
    state = load_checkpoint(run.checkpoint)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_batches_can_be_skipped():
    cfg, splits, vae = setup(train={**tiny_config()["train"], "epochs": 1, "skip_nonfinite": True})
    calls = {"n": 0}
    forward = vae.decoder.forward

    def sometimes_nan(z):
        calls["n"] += 1
        return forward(z) * (float("nan") if calls["n"] == 2 + 2 else 1.0)  # the checks before training trace twice

    vae.decoder.forward = sometimes_nan
    with pytest.warns(UserWarning, match="skipped that batch"):
        history = Trainer(vae, splits, cfg).fit()
    assert history[0]["skipped_batches"] == 1 and math.isfinite(history[0]["train_loss"])


@pytest.mark.parametrize("name", objectives.names())
def test_each_objective_trains(name):
    objective = {"name": name, "num_particles": 3}
    cfg, splits, vae = setup(train={**tiny_config()["train"], "epochs": 3, "objective": objective})
    x = splits.val[0]
    before = float(-elbo_terms(vae, x, 4)["elbo"].mean())
    history = pyrovae.train(vae, splits, cfg)
    after = float(-elbo_terms(vae, x, 4)["elbo"].mean())
    assert after < before - 1.0
    assert all(math.isfinite(r["train_loss"]) for r in history)


def test_iwae_loss_is_below_elbo_loss():
    """The IWAE bound with K particles is tighter than the ELBO: its negative is smaller."""
    cfg, splits, vae = setup()
    pyrovae.train(vae, splits, cfg)
    x = splits.val[0][:100]
    with torch.no_grad():
        elbo = objectives.build({"name": "elbo", "num_particles": 200}).loss(vae.model, vae.guide, x)
        iwae = objectives.build({"name": "iwae", "num_particles": 200}).loss(vae.model, vae.guide, x)
    assert iwae < elbo - 0.1 * len(x)  # at least 0.1 nat per point tighter


def test_kl_warmup_ramps_beta():
    schedule = {"name": "linear", "warmup_epochs": 2.0}
    cfg, splits, vae = setup(train={**tiny_config()["train"], "epochs": 3, "kl_schedule": schedule, "beta": 0.5})
    history = pyrovae.train(vae, splits, cfg)
    betas = [r["beta"] for r in history]  # beta at each epoch's last step
    assert betas[0] == pytest.approx(0.25, abs=0.02) and betas[1] == pytest.approx(0.5, abs=0.02) and betas[2] == 0.5


@pytest.mark.parametrize("name", kl_schedules.names())
def test_kl_schedules(name):
    steps = 10
    weight = kl_schedules.build({"name": name}, beta=2.0, steps_per_epoch=steps)
    values = [weight(s) for s in range(0, 400)]
    assert all(0.0 <= v <= 2.0 for v in values)
    assert max(values) == 2.0
    if name == "linear":  # 10 epochs of warm-up, then constant
        assert values[0] == 0.0 and values[50] == pytest.approx(1.0) and values[100:] == [2.0] * 300
    if name == "cyclical":  # cycles of 100 steps: ramp over 50, hold for 50
        assert values[0] == values[100] == 0.0 and values[25] == pytest.approx(1.0) and values[75] == 2.0
    if name == "constant":
        assert values == [2.0] * 400


def test_autoencoder_baseline_loss_is_reconstruction_only():
    cfg, splits, vae = setup(model={**tiny_config()["model"], "guide": "delta"})
    x = splits.val[0][:20]
    loss = Trace_ELBO().loss(vae.model, vae.guide, x, beta=0.0)
    recon = elbo_terms(vae, x)["reconstruction"].sum()
    assert loss == pytest.approx(-float(recon), rel=1e-5)


def test_early_stopping():
    cfg, splits, vae = setup(
        train={**tiny_config()["train"], "epochs": 30, "patience": 1, "optimizer": {"name": "sgd", "lr": 1e-9}}
    )
    history = pyrovae.train(vae, splits, cfg)
    assert len(history) < 30


def test_users_own_svi_loop_trains_the_model():
    _, splits, vae = setup()
    x = splits.train[0][:200]
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(150)]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    # the param store holds the module's own parameters under the instance prefix
    store = pyro.get_param_store()
    names = [n for n in store.keys() if n.startswith(vae.pyro_name)]
    assert len(names) == len(list(vae.parameters()))
    assert store[f"{vae.pyro_name}.encoder$$$net.0.weight"] is vae.encoder.net[0].weight


def test_two_models_never_share_parameters():
    _, splits, a = setup()
    b = pyrovae.VAE.from_config(tiny_config(), data_shape=SHAPE)
    b.load_state_dict(a.state_dict())
    before = {k: v.clone() for k, v in b.state_dict().items()}
    x = splits.train[0][:100]
    svi = SVI(a.model, a.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(5):
        svi.step(x)
    assert a.pyro_name != b.pyro_name
    for k, v in b.state_dict().items():
        assert torch.equal(v, before[k])
    assert not torch.equal(a.encoder.net[0].weight, b.encoder.net[0].weight)


def test_training_is_reproducible_under_a_seed():
    runs = []
    for _ in range(2):
        cfg, splits, vae = setup(seed=7)
        runs.append([r["train_loss"] for r in pyrovae.train(vae, splits, cfg)])
    assert runs[0] == runs[1]


def test_minibatch_elbo_estimates_full_data_elbo():
    """With num_data = N, the loss of a mini-batch is N/B times its per-point loss."""
    _, splits, vae = setup()
    x = splits.train[0][:20]
    pyro.set_rng_seed(1)
    full = Trace_ELBO().loss(vae.model, vae.guide, x, num_data=1000)
    pyro.set_rng_seed(1)
    batch = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert full == pytest.approx(batch * 1000 / 20, rel=1e-5)


def test_config_callbacks_write_figures_and_tensorboard(tmp_path):
    """The caller builds the config's callbacks and hands them in; the
    trainer builds none itself, and pyrovae.train() builds them as before."""
    train = {**tiny_config()["train"], "epochs": 2, "sample_every": 1, "tensorboard": True}
    if importlib.util.find_spec("tensorboard") is None:
        train["tensorboard"] = False
    cfg, splits, vae = setup(train=train)
    bare = RunDir.create(tmp_path / "bare")
    Trainer(vae, splits, cfg, run_dir=bare.path).fit()
    assert not (bare.path / "figures").exists() and not (bare.path / "tensorboard").exists()
    assert callbacks_from_config(cfg, None) == [] and callbacks_from_config(cfg, bare.path, is_main=False) == []
    for name, fit in [
        ("handed_in", lambda run, vae: Trainer(vae, splits, cfg, run_dir=run, callbacks=callbacks_from_config(cfg, run)).fit()),
        ("train_function", lambda run, vae: pyrovae.train(vae, splits, cfg, run_dir=run)),
    ]:
        run = RunDir.create(tmp_path / name)
        fit(run.path, setup(train=train)[2])
        for epoch in (1, 2):
            assert (run.path / "figures" / f"epoch-{epoch:04d}" / "samples.png").stat().st_size > 0
        if train["tensorboard"]:
            assert list((run.path / "tensorboard").glob("events.out.tfevents.*"))


def test_train_makes_a_missing_run_directory(tmp_path):
    cfg, splits, vae = setup(train={"epochs": 1})
    pyrovae.train(vae, splits, cfg, run_dir=tmp_path / "new" / "run")
    assert load_checkpoint(tmp_path / "new" / "run" / "checkpoint.pt")["epoch"] == 1


def test_custom_callback_sees_every_epoch():
    seen = []

    class Recorder:
        def on_epoch_end(self, trainer, record):
            seen.append(record["epoch"])

        def on_train_end(self, trainer):
            seen.append("end")

    cfg, splits, vae = setup()
    Trainer(vae, splits, cfg, callbacks=[Recorder()]).fit()
    assert seen == [1, 2, "end"]


def test_fit_in_pieces_equals_one_fit():
    """fit(max_epochs) pauses a run; the schedules follow train.epochs, so
    fitting 1 + 2 epochs gives the same weights as fitting 3 at once."""
    sections = dict(train={"epochs": 3, "lr_schedule": {"name": "burda", "base": 1.5}})
    cfg, splits, vae = setup(**sections)
    whole = Trainer(vae, splits, cfg)
    whole.fit()
    cfg, splits, vae = setup(**sections)
    paused = Trainer(vae, splits, cfg)
    assert len(paused.fit(max_epochs=1)) == 1 and paused.state.epoch == 1
    paused.fit()
    assert paused.state.epoch == 3
    for a, b in zip(whole.vae.state_dict().values(), paused.vae.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["lr"] for r in whole.state.history] == [r["lr"] for r in paused.state.history]


def test_a_callback_can_stop_training(tmp_path):
    class StopAtTwo:
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                trainer.request_stop("enough")

        def on_train_end(self, trainer):
            pass

    cfg, splits, vae = setup(train={"epochs": 5})
    run = RunDir.create(tmp_path / "run")
    trainer = Trainer(vae, splits, cfg, run_dir=run.path, callbacks=[StopAtTwo()])
    trainer.fit()
    assert trainer.state.epoch == 2 and trainer.stop_reason == "enough"
    assert [json.loads(l)["epoch"] for l in run.metrics.read_text().splitlines()] == [1, 2]
    trainer.fit()  # a new fit() call carries on
    assert trainer.state.epoch == 5 and trainer.stop_reason is None


@pytest.mark.parametrize("threads", [1, 2, None])
def test_train_uses_train_threads_and_restores_the_callers_setting(threads, monkeypatch):
    """pyrovae.train (not only the command) trains on train.threads threads;
    afterwards torch has the caller's setting again (None: left alone)."""
    import pyrovae.training.trainer as trainer_module

    seen = []

    class Threads:
        def on_epoch_end(self, trainer, record):
            seen.append(torch.get_num_threads())

        def on_train_end(self, trainer):
            pass

    monkeypatch.setattr(trainer_module, "callbacks_from_config", lambda *a, **k: [Threads()])
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        cfg, splits, vae = setup(train={"epochs": 1, "threads": threads})
        pyrovae.train(vae, splits, cfg)
        assert seen == [threads or 3] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("progress", [True, False])
def test_epoch_lines_are_shown_without_the_progress_bar(progress, capsys):
    """train.progress switches the bar; the per-epoch summary lines stay (on stderr)."""
    cfg, splits, vae = setup(train={"epochs": 2, "progress": progress})
    Trainer(vae, splits, cfg).fit()
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("epoch ") and " train " in line]
    assert len(lines) == 2 and "val " in lines[0] and captured.out == ""


def test_train_stores_absolute_data_paths_in_the_run(tmp_path, monkeypatch):
    import numpy as np
    import yaml

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((200, 1, 8, 8), dtype=np.float32))
    monkeypatch.chdir(tmp_path)
    cfg, splits, vae = setup(data={"name": "npy", "path": "x.npy", "val_size": 20}, train={"epochs": 1})
    pyrovae.train(vae, splits, cfg, run_dir="run")
    data = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    stored = data["path"]
    assert os.path.isabs(stored) and os.path.samefile(stored, tmp_path / "x.npy") and data["as_given"] == {"path": "x.npy"}
    assert pyrovae.load_run(tmp_path / "run")[1].data.path == stored
