"""The model registry and the batch contract, through models registered from
outside the package (tests/user_models.py, loaded as a plugin): a model that
needs the labels y trains, evaluates and resumes through the API and the
CLI, and a model with a discrete latent is trained with TraceEnum_ELBO,
whose loss equals a hand-written sum over the classes. The built-in
families are siblings on one base, which builds them all alike."""

import inspect
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical, Normal

import pyro

import pyrovae
from pyrovae.errors import ConfigError, DataError, OutOfMemoryError
from pyrovae.infer.objectives import EnumeratedObjective, build_objective
from pyrovae.models import build_model, models
from pyrovae.models.cvae import ConditionalVAE
from pyrovae.models.family import LatentVariableModel
from pyrovae.models.hvae import HVAE
from pyrovae.models.m2 import M2
from pyrovae.models.vae import VAE
from pyrovae.runs import load_checkpoint

import user_models  # noqa: F401  (registers the test models)
from helpers import assert_identical, assert_resumes_exactly, tiny_config

HERE = Path(__file__).parent.parent  # tests/, where user_models.py lives


def user_config(name="test_conditional_vae", epochs=2, **train):
    cfg = tiny_config(train={"epochs": epochs, "batch_size": 50, "progress": False, **train})
    cfg["model"] = {"name": name, "latent_dim": 3, "plugins": ["user_models"], "options": {"hidden": 16}}
    return cfg


def test_registry_lists_the_models_and_suggests_names():
    assert {"vae", "test_conditional_vae", "test_mixture_vae"} <= set(models.names())
    with pytest.raises(ConfigError, match="Did you mean 'test_conditional_vae'"):
        build_model(pyrovae.load_config({"model": {"name": "test_conditional_vea"}}).model, (1, 8, 8))
    with pytest.raises(ConfigError, match="has no option 'hiden'"):
        build_model(pyrovae.load_config({"model": {"name": "test_conditional_vae", "options": {"hiden": 3}}}).model, (1, 8, 8))


def test_a_model_without_model_or_guide_is_refused():
    models.register("test_not_a_model", lambda config, data_shape: torch.nn.Linear(2, 2))
    try:
        with pytest.raises(ConfigError, match="has no model"):
            build_model(pyrovae.load_config({"model": {"name": "test_not_a_model"}}).model, (2,))
    finally:
        models.unregister("test_not_a_model")


def test_a_plugin_that_cannot_be_imported_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot import 'no_such_plugin'"):
        build_model(pyrovae.load_config({"model": {"plugins": ["no_such_plugin"]}}).model, (2,))


def test_a_model_that_needs_y_trains_through_the_api_and_lowers_its_loss(tmp_path):
    cfg = pyrovae.load_config(user_config(epochs=4))
    splits = pyrovae.load_data(cfg.data)
    model = build_model(cfg.model, splits.data_shape)
    history = pyrovae.train(model, splits, cfg, run_dir=tmp_path / "run")
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1.0
    assert all(math.isfinite(r["val_loss"]) for r in history)
    loaded, loaded_cfg, _ = pyrovae.load_run(tmp_path / "run")  # the run's config.yaml names the model
    assert type(loaded) is type(model) and loaded_cfg.model.name == "test_conditional_vae"
    assert_identical(loaded.state_dict(), model.state_dict())


def test_a_model_that_needs_y_refuses_data_without_labels():
    cfg = pyrovae.load_config(user_config())
    splits = pyrovae.load_data(cfg.data)
    unlabelled = type(splits)(train=(splits.train[0], None), test=splits.test, val=splits.val)
    model = build_model(cfg.model, splits.data_shape)
    with pytest.raises(DataError, match="needs the field\\(s\\) y"):
        pyrovae.train(model, unlabelled, cfg)


def test_a_model_that_needs_y_resumes_exactly(tmp_path):
    assert_resumes_exactly(lambda epochs: user_config(epochs=epochs), tmp_path)


def test_log_likelihood_takes_y_as_a_field():
    """pyrovae.log_likelihood(model, x, y=...) against the K=1 weight written
    out from the model's own distributions."""
    cfg = pyrovae.load_config(user_config())
    splits = pyrovae.load_data(cfg.data)
    model = build_model(cfg.model, splits.data_shape)
    x, y = splits.test[0][:6], splits.test[1][:6]
    ll = pyrovae.log_likelihood(model, x, 1, y=y, seed=4)
    torch.manual_seed(4)
    with torch.no_grad():
        q = model.q_z(x, y)
        z = q.sample((1,))
        log_w = model.p_x(z, y).log_prob(x) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z)
    torch.testing.assert_close(ll, log_w[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(DataError, match="needs the field"):
        pyrovae.log_likelihood(model, x, 1)
    with pytest.raises(ConfigError, match="unknown field"):
        pyrovae.log_likelihood(model, x, 1, y=y, label=y)


def test_the_cli_trains_evaluates_and_resumes_a_plugin_model(tmp_path):
    import yaml

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(user_config(epochs=1)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    run = tmp_path / "run"

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "pyrovae", *args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    cli("train", "--config", str(cfg_path), "--out", str(run))
    cli("evaluate", str(run), "--iw-samples", "3")
    assert (run / "eval.json").exists()
    cli("train", "--resume", str(run), "--set", "train.epochs=2")
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2


# -- enumerated discrete latents -------------------------------------------------------


def test_enumerated_elbo_equals_the_hand_written_sum_over_classes():
    """TraceEnum_ELBO for y ~ q(y|x) summed out exactly: the loss equals
    -sum_i sum_y q(y|x_i) [log p(y) - log q(y|x_i) + log p(x_i|z_iy, y) + log p(z_iy) - log q(z_iy|x_i, y)]
    with z_iy = mu + sigma * eps under the same noise (float64)."""
    cfg = pyrovae.load_config(user_config("test_mixture_vae"))
    model = build_model(cfg.model, (1, 8, 8)).double()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).round()
    objective = build_objective(cfg.train.objective, model)
    assert isinstance(objective, EnumeratedObjective)
    torch.manual_seed(3)
    loss = objective.loss(model.model, model.guide, x)
    C, B, D = model.num_classes, x.shape[0], model.latent_dim
    torch.manual_seed(3)
    eps = Normal(torch.zeros(C, B, D, dtype=torch.float64), 1.0).rsample()
    with torch.no_grad():
        y = torch.arange(C)[:, None].expand(C, B)
        log_qy = Categorical(logits=model.classifier(x.flatten(1))).log_prob(y)  # (C, B)
        xf = x.flatten(1).expand(C, B, -1)
        h = model.encoder(torch.cat([xf, F.one_hot(y, C).double()], -1))
        loc, scale = h[..., :D], F.softplus(h[..., D:]) + 1e-4
        z = loc + scale * eps
        logits = model.decoder(torch.cat([z, F.one_hot(y, C).double()], -1)).reshape(C, B, 1, 8, 8)
        log_px = Bernoulli(logits=logits).log_prob(x.expand(C, B, 1, 8, 8)).flatten(2).sum(-1)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = Normal(loc, scale).log_prob(z).sum(-1)
        per_class = -math.log(C) - log_qy + log_px + log_pz - log_qz
        expected = -(log_qy.exp() * per_class).sum()
    assert loss == pytest.approx(float(expected), abs=1e-6, rel=0)


def test_an_enumerated_model_trains_and_refuses_objectives_that_cannot_enumerate(tmp_path):
    cfg = pyrovae.load_config(user_config("test_mixture_vae", epochs=3))
    splits = pyrovae.load_data(cfg.data)
    model = build_model(cfg.model, splits.data_shape)
    history = pyrovae.train(model, splits, cfg)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for name in ("iwae", "meanfield"):
        with pytest.raises(ConfigError, match="cannot do"):
            build_objective({"name": name}, model)


def test_a_users_own_svi_loop_steps_with_x_and_y():
    """Plain Pyro: SVI(model.model, model.guide, ...).step(x, y) trains a
    model that takes y, with the networks registered through pyro.module."""
    from pyro.infer import SVI, Trace_ELBO

    cfg = pyrovae.load_config(user_config())
    splits = pyrovae.load_data(cfg.data)
    model = build_model(cfg.model, splits.data_shape)
    x, y = splits.train[0][:200], splits.train[1][:200]
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10]) - 10 * 5.0
    assert any(name.startswith("test_conditional_vae") for name in pyro.get_param_store().keys())


def test_model_device_needs_no_device_attribute():
    from pyrovae.models.base import model_device

    cfg = pyrovae.load_config(user_config())
    model = build_model(cfg.model, (1, 8, 8))
    assert not hasattr(model, "device") and model_device(model) == torch.device("cpu")
    model.device = torch.device("meta")  # a declared device wins
    assert model_device(model) == torch.device("meta")
    assert model_device(object()) == torch.device("cpu")


# -- the four families as siblings on one base -------------------------------------------

FAMILIES = {"vae": VAE, "cvae": ConditionalVAE, "m2": M2, "hvae": HVAE}


def test_the_families_are_siblings_on_one_base():
    for name, cls in FAMILIES.items():
        assert issubclass(cls, LatentVariableModel), name
        others = [o for o in FAMILIES.values() if o is not cls]
        assert not any(issubclass(cls, other) for other in others), f"{name} subclasses another family"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_no_method_is_copied_and_no_signature_changes(name):
    """Every function in a family's class body was written there (not assigned
    from another class), and a method it overrides keeps the parent's signature."""
    cls = FAMILIES[name]
    for klass in cls.__mro__:
        if not issubclass(klass, LatentVariableModel):
            continue
        for attr, value in vars(klass).items():
            fn = getattr(value, "__func__", value)
            if inspect.isfunction(fn):
                assert fn.__qualname__.split(".")[0] == klass.__name__, f"{klass.__name__}.{attr} is {fn.__qualname__}"
            if attr.startswith("_") or not inspect.isfunction(value):
                continue
            for parent in klass.__mro__[1:]:
                if attr in vars(parent) and inspect.isfunction(vars(parent)[attr]):
                    assert inspect.signature(value) == inspect.signature(vars(parent)[attr]), f"{klass.__name__}.{attr}"


#: small configs per family: (model section, options)
SMALL = {"vae": ({}, {}), "cvae": ({}, {"num_classes": 3}), "m2": ({}, {"num_classes": 3}), "hvae": ({}, {"hidden": 8})}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_checks_the_data_shape_and_names_sizes_too_large(name):
    section, options = SMALL[name]
    with pytest.raises(ConfigError, match="data_shape must be a tuple of positive sizes, got \\(0, 8\\)"):
        FAMILIES[name].from_config({"latent_dim": 2, **section}, (0, 8), **options)
    with pytest.raises(OutOfMemoryError, match="model.latent_dim=1000000000.*data of shape \\(1, 4, 4\\)"):
        FAMILIES[name].from_config({"latent_dim": 10**9, **section}, (1, 4, 4), **options)
