"""A user's own Pyro model, written the Pyro way, is trained, scored and run
through the CLI like a built-in family (tests/user_models.py holds the models).

Each test registers its model with ``pyrovae.register_model`` and
unregisters it afterwards. Oracles: the exact marginal of a linear-Gaussian
model, the labels and KL weights a model records receiving, the latent
sites' scales in a trace, and the loss going down.
"""

import math
import warnings

import pytest
import torch
import yaml

import pyro
import pyro.poutine as poutine

import pyrovae
from pyrovae.cli import main
from pyrovae.data.splits import Splits
from pyrovae.models import models
from pyrovae.models.base import model_fields, pyro_callables, required_fields

from helpers import tiny_config
from user_models import (BetaVAE, FlatReshapeVAE, LinearGaussianVAE, LocalLatentModel, PluralCVAE,
                         TutorialVAE)


@pytest.fixture(autouse=True)
def validation():
    with pyro.validation_enabled(True):
        yield


@pytest.fixture
def register():
    """``register(name, factory)``: a model registered for one test."""
    names = []

    def add(name, factory):
        pyrovae.register_model(name)(factory)
        names.append(name)

    yield add
    for name in names:
        models.unregister(name)


def config(name, **train):
    cfg = tiny_config(train={"epochs": 1, "batch_size": 10, **train})
    cfg["model"] = {"name": name, "latent_dim": 3}
    return cfg


def binary_data(n=60, shape=(1, 8, 8), seed=0):
    """``(x, labels)``: n binary images in 4 classes (each class its own pattern)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    patterns = (torch.rand(4, *shape, generator=g) > 0.5).float()
    flips = (torch.rand(n, *shape, generator=g) < 0.05).float()
    return (patterns[labels] - flips).abs(), labels


def splits(x, labels=None):
    labels = torch.full((len(x),), -1) if labels is None else labels
    return Splits(train=(x, labels), test=(x[:0], labels[:0]))


def build(name, data_shape, **train):
    cfg = pyrovae.load_config(config(name, **train))
    return cfg, pyrovae.build_model(cfg.model, data_shape)


# -- the Pyro tutorial VAE, as Pyro writes it ------------------------------------------


def test_tutorial_vae_takes_x_alone_and_no_control_keyword(register):
    register("tutorial_vae", lambda config, data_shape: TutorialVAE(data_shape, config.latent_dim))
    cfg, vae = build("tutorial_vae", (1, 8, 8))
    assert model_fields(vae) == ("x",) and required_fields(vae) == ("x",)
    model_fn, guide_fn = pyro_callables(vae)
    assert model_fn != vae.model  # a wrapper: the tutorial's guide(self, x) takes no beta
    x, _ = binary_data(50)
    trace = poutine.trace(guide_fn).get_trace(x=x, beta=1.0, num_data=None, obs_mask=None)
    assert trace.nodes["latent"]["value"].shape == (50, 3)
    with pytest.raises(pyrovae.ConfigError, match="takes no 'obs_mask' keyword"):
        model_fn(x[:4], obs_mask=torch.ones_like(x[:4], dtype=torch.bool))
    history = pyrovae.train(vae, splits(x), cfg)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    # scored as Pyro scores it: IS with K = 500 lies above Pyro's own ELBO (Jensen), and within a few nats
    log_px = pyrovae.log_likelihood(vae, x[:20], num_samples=500)
    elbo = -pyro.infer.Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(vae.model, vae.guide, x[:20]) / 20
    assert elbo - 0.05 < float(log_px.mean()) < elbo + 5.0, (elbo, float(log_px.mean()))


def test_linear_gaussian_vae_log_likelihood_matches_the_exact_marginal(register):
    """IS with the guide set to the exact posterior gives log p(x) exactly
    (every weight equals p(x)); with the trained guide and many particles it
    comes close. Oracle: the Gaussian marginal N(b, W W^T + s^2 I)."""
    torch.set_default_dtype(torch.float64)
    try:
        register("linear_gaussian", lambda config, data_shape: LinearGaussianVAE(data_shape[0], 2))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(80, 5, generator=g) @ torch.randn(5, 5, generator=g) * 0.5 + 1.0
        cfg, vae = build("linear_gaussian", (5,))
        history = pyrovae.train(vae, splits(x), config("linear_gaussian", epochs=2, batch_size=20))
        assert all(math.isfinite(r["train_loss"]) for r in history)
        w = torch.linalg.qr(torch.randn(5, 2, generator=g))[0] * torch.tensor([1.5, 0.7])
        vae.set_exact_posterior(w)
        exact = vae.marginal().log_prob(x[:10])
        scored = pyrovae.log_likelihood(vae, x[:10], num_samples=3)
        torch.testing.assert_close(scored, exact, atol=1e-8, rtol=1e-10)
        with torch.no_grad():
            vae.log_scale += math.log(1.5)  # a broader proposal: each weight differs, their mean converges
        one = pyrovae.log_likelihood(vae, x[:10], num_samples=1)
        many = pyrovae.log_likelihood(vae, x[:10], num_samples=4000, batch_size=10)
        assert (one - exact).abs().max() > 0.1
        assert (many - exact).abs().max() < 0.05
    finally:
        torch.set_default_dtype(torch.float32)


# -- Pyro's plural style on labelled data ------------------------------------------------


def test_plural_style_model_gets_the_labels_as_ys(register):
    register("plural_cvae", lambda config, data_shape: PluralCVAE(data_shape, config.latent_dim))
    cfg, vae = build("plural_cvae", (1, 8, 8), batch_size=16)
    assert model_fields(vae) == ("x", "y") and required_fields(vae) == ("x",)
    x, labels = binary_data(48)
    pyrovae.train(vae, splits(x, labels), cfg)
    assert vae.received and all(ys is not None for ys in vae.received)
    got = torch.cat(vae.received)
    assert torch.equal(got.sort().values, labels.sort().values)  # each point's label once in the epoch
    scored = pyrovae.log_likelihood(vae, x[:6], y=labels[:6], num_samples=4)
    assert scored.shape == (6,)


# -- beta ------------------------------------------------------------------------------------


def latent_scales(vae, x, beta):
    """(scale, mask) of the latent site in a guide trace at ``beta``."""
    _, guide_fn = pyro_callables(vae)
    site = poutine.trace(guide_fn).get_trace(x, beta=beta).nodes["latent"]
    return site["scale"], site["mask"]


def test_a_model_taking_beta_gets_the_configured_weight(register):
    register("beta_vae", lambda config, data_shape: BetaVAE(data_shape, config.latent_dim))
    x, _ = binary_data(40)
    seen = {}
    for beta in (0.0, 1.0):
        cfg, vae = build("beta_vae", (1, 8, 8), beta=beta)
        pyrovae.train(vae, splits(x), cfg)
        assert vae.betas and set(vae.betas) == {beta}
        seen[beta] = latent_scales(vae, x[:2], vae.betas[-1])
    assert seen[0.0][1] is False and seen[1.0] == (1.0, None)  # masked out at 0, weight 1 at 1


def test_a_model_without_beta_is_refused_beta_other_than_one(register):
    register("tutorial_vae", lambda config, data_shape: TutorialVAE(data_shape, config.latent_dim))
    x, _ = binary_data(20)
    for train in ({"beta": 0.5}, {"kl_schedule": {"name": "linear", "warmup_epochs": 1}}):
        cfg, vae = build("tutorial_vae", (1, 8, 8), **train)
        with pytest.raises(pyrovae.ConfigError) as error:
            pyrovae.Trainer(vae, splits(x), cfg)
        message = str(error.value)
        assert "takes no beta keyword" in message and "kl_scale" in message and "train.beta=1" in message
        assert "\n" not in message


def test_a_model_that_ignores_beta_is_warned_about(register):
    register("deaf_vae", lambda config, data_shape: BetaVAE(data_shape, config.latent_dim, use_beta=False))
    register("beta_vae", lambda config, data_shape: BetaVAE(data_shape, config.latent_dim))
    x, _ = binary_data(20)
    cfg, vae = build("deaf_vae", (1, 8, 8), beta=0.5)
    with pytest.warns(UserWarning, match="beta appears unused"):
        pyrovae.Trainer(vae, splits(x), cfg)
    cfg, vae = build("beta_vae", (1, 8, 8), beta=0.5)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*beta appears unused")
        pyrovae.Trainer(vae, splits(x), cfg)


# -- broadcasting over particles --------------------------------------------------------


def test_reshape_minus_one_fails_before_training_with_one_line(register):
    register("flat_vae", lambda config, data_shape: FlatReshapeVAE(data_shape, config.latent_dim))
    x, _ = binary_data(20)
    cfg, vae = build("flat_vae", (1, 8, 8))
    with pytest.raises(pyrovae.ConfigError, match="must broadcast over leading batch dimensions") as error:
        pyrovae.Trainer(vae, splits(x), cfg)
    assert "\n" not in str(error.value) and error.value.__cause__ is not None
    # scoring an untrained model of this kind fails the same way, before any estimate
    with pytest.raises(pyrovae.ConfigError, match="x.shape\\[:-1\\]"):
        pyrovae.log_likelihood(pyrovae.build_model(cfg.model, (1, 8, 8)), x[:4], num_samples=5)


@pytest.mark.parametrize("name", ["vae", "cvae", "m2", "hvae"])
def test_built_in_families_pass_the_broadcasting_check(name):
    from pyrovae.models.base import check_broadcasting

    x, labels = binary_data(4)
    model = pyrovae.build_model(pyrovae.load_config({"model": {"name": name, "latent_dim": 3}}).model, (1, 8, 8))
    check_broadcasting(model, {"x": x, **({"y": labels} if "y" in model_fields(model) else {})})


# -- a local guide over training points (index) ---------------------------------------------


def test_autonormal_with_index_trains_in_mini_batches_and_is_not_scored_without_index(register, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g) @ torch.tensor([[1.0, 0.5, 0.0, -1.0], [0.0, 1.0, 2.0, 0.5]])
    register("local_latents", lambda config, data_shape, num_data=40: LocalLatentModel(data_shape[0], num_data))
    cfg = config("local_latents", epochs=2, batch_size=10, optimizer={"name": "adam", "lr": 0.05})
    cfg["data"]["val_size"] = 0
    cfg = pyrovae.load_config(cfg)
    vae = pyrovae.build_model(cfg.model, (4,))
    assert model_fields(vae) == ("x", "index") and required_fields(vae) == ("x", "index")
    history = pyrovae.train(vae, splits(x), cfg, run_dir=tmp_path / "run")
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    locs = vae.guide.locs.z.detach()
    assert locs.shape == (40, 2) and (locs != 0).any(1).all()  # one code per training point, each trained from 0
    loaded, _, _ = pyrovae.load_run(tmp_path / "run")
    torch.testing.assert_close(loaded.guide.locs.z, locs, rtol=0, atol=0)
    with pytest.raises(pyrovae.ConfigError, match="local to its training points") as error:
        pyrovae.log_likelihood(vae, x[:5], num_samples=4)
    assert "pass index=" in str(error.value) and "\n" not in str(error.value)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_trains_a_model_without_capabilities_and_notes_the_figures(register, tmp_path, capsys):
    register("tutorial_vae", lambda config, data_shape: TutorialVAE(data_shape, config.latent_dim))
    path = tmp_path / "tutorial.yaml"
    path.write_text(yaml.safe_dump(config("tutorial_vae")))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 0
    assert (out / "checkpoint.pt").exists() and not (out / "samples.png").exists()
    notes = [line for line in capsys.readouterr().err.splitlines() if "figure" in line]
    assert len(notes) == 1 and "capability" in notes[0] and "protocol.html" in notes[0]


class BrokenSampler(TutorialVAE):
    """The tutorial VAE with every figure capability, whose ``sample`` has a bug."""

    def __init__(self, data_shape, z_dim):
        super().__init__(data_shape, z_dim)
        self.data_shape, self.latent_dim = tuple(data_shape), z_dim

    def sample(self, n, mean=True):
        raise ZeroDivisionError("a bug in the user's sample")

    def reconstruct(self, x):
        return self.decoder(self.encoder(x)[0]).reshape(x.shape)


def test_cli_run_is_complete_when_a_figure_fails_in_the_models_code(register, tmp_path, capsys):
    register("broken_sampler", lambda config, data_shape: BrokenSampler(data_shape, config.latent_dim))
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config("broken_sampler")))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 0
    assert (out / "checkpoint.pt").exists() and (out / "metrics.jsonl").exists()
    err = capsys.readouterr().err
    assert "the run in" in err and "is complete" in err
    assert "Traceback" in err and "ZeroDivisionError: a bug in the user's sample" in err


def test_autonormal_with_index_is_scored_at_its_training_points_against_the_exact_marginal():
    """With index= a local AutoNormal guide is scored at the points it has
    codes for. Its auxiliary site (the unconstrained draw) is log q: with the
    exact posterior as the guide (a diagonal Gaussian, as W's columns are
    orthogonal) every importance weight equals p(x) = N(x; b, W Wᵀ + σ² I)."""
    pyro.enable_validation(True)
    from pyro.nn import PyroParam
    from torch.distributions import constraints

    torch.manual_seed(0)
    n, dim, sigma = 5, 4, 0.1
    model = LocalLatentModel(dim, n)
    w = torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.0, 1.5], [-1.0, -1.0]])
    w[:, 1] -= w[:, 0] * (w[:, 0] @ w[:, 1]) / (w[:, 0] @ w[:, 0])  # orthogonal columns: a diagonal posterior
    b = torch.tensor([0.3, -0.2, 0.1, 0.0])
    with torch.no_grad():
        model.decoder.weight.copy_(w)
        model.decoder.bias.copy_(b)
    x = torch.randn(n, dim)
    precision = torch.eye(2) + w.T @ w / sigma**2
    covariance = torch.linalg.inv(precision)
    assert torch.allclose(covariance, torch.diag(torch.diagonal(covariance)), atol=1e-6)
    mean = (x - b) @ w @ covariance.T / sigma**2
    # event_dim=1: the data plate subsamples them by index, as AutoNormal declares its own
    model.guide.locs.z = PyroParam(mean.clone(), constraint=constraints.real, event_dim=1)
    model.guide.scales.z = PyroParam(torch.diagonal(covariance).sqrt().expand(n, 2).clone(), constraint=constraints.positive,
                                     event_dim=1)
    exact = torch.distributions.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(dim)).log_prob(x)
    result = pyrovae.log_likelihood(model, x, index=torch.arange(n), num_samples=16)
    torch.testing.assert_close(result, exact, rtol=1e-4, atol=1e-3)  # float32 sums of terms near 100 nats
