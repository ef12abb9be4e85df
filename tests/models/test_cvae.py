"""The conditional VAE (pyrovae.models.cvae) against answers computed another
way: its ELBO against torch.distributions written out by hand, its
importance-sampled log p(x | y) against the exact marginal of a
linear-Gaussian model, its class-conditional samples against the decoder's
class templates; and the ways in (API, CLI) with the errors they give."""

import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, MultivariateNormal, Normal

import pyro

import pyrovae
from pyrovae.components.priors import priors
from pyrovae.errors import ConfigError, DataError
from pyrovae.models import build_model

from helpers import assert_resumes_exactly, checked_traces, component_options, tiny_config

C = 4  # the synthetic source's classes


def cvae_config(epochs=2, **model):
    cfg = tiny_config(train={"epochs": epochs, "batch_size": 50, "progress": False})
    cfg["model"] = {"name": "cvae", "latent_dim": 3, "options": {"num_classes": C},
                    "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}, **model}
    return cfg


def build(shape=(1, 8, 8), **model):
    return build_model(pyrovae.load_config(cvae_config(**model)).model, shape)


def binary(n, shape=(1, 8, 8), seed=0, dtype=torch.float64):
    return torch.rand(n, *shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).round()


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_elbo_equals_the_hand_written_one(beta):
    """-sum_i [log p(x_i | z_i, y_i) + beta (log p(z_i) - log q(z_i | x_i, y_i))], float64, same noise."""
    model = build().double()
    x, y = binary(5), torch.tensor([0, 1, 2, 3, 1])
    torch.manual_seed(2)
    loss = pyro.infer.Trace_ELBO().loss(model.model, model.guide, x, y, beta=beta)
    torch.manual_seed(2)
    eps = Normal(torch.zeros(5, 3, dtype=torch.float64), 1.0).rsample()
    with torch.no_grad():
        onehot = F.one_hot(y, C).double()
        h = model.encoder.net(torch.cat([x.flatten(1), onehot], -1))
        loc, scale = h[:, :3], F.softplus(h[:, 3:]) + 1e-4
        z = loc + scale * eps
        logits = model.decoder.net(torch.cat([z, onehot], -1)).reshape(x.shape)
        log_px = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(-1)
        kl = Normal(loc, scale).log_prob(z).sum(-1) - Normal(0.0, 1.0).log_prob(z).sum(-1)
        expected = -(log_px - beta * kl).sum()
    assert loss == pytest.approx(float(expected), abs=1e-8, rel=0)


def test_a_real_valued_condition_is_fed_as_it_is():
    """condition_dim F: c(y) = y, concatenated to x and to z."""
    cfg = cvae_config()
    cfg["model"]["options"] = {"num_classes": 0, "condition_dim": 2}
    model = build_model(pyrovae.load_config(cfg).model, (6,)).double()
    x, y = binary(4, shape=(6,)), torch.randn(4, 2, dtype=torch.float64)
    torch.manual_seed(0)
    loss = pyro.infer.Trace_ELBO().loss(model.model, model.guide, x, y)
    torch.manual_seed(0)
    eps = Normal(torch.zeros(4, 3, dtype=torch.float64), 1.0).rsample()
    with torch.no_grad():
        h = model.encoder.net(torch.cat([x, y], -1))
        loc, scale = h[:, :3], F.softplus(h[:, 3:]) + 1e-4
        z = loc + scale * eps
        log_px = Bernoulli(logits=model.decoder.net(torch.cat([z, y], -1))).log_prob(x).sum(-1)
        kl = Normal(loc, scale).log_prob(z).sum(-1) - Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert loss == pytest.approx(float(-(log_px - kl).sum()), abs=1e-8)
    with pytest.raises(DataError, match=r"expected \(4, 2\)"):
        pyrovae.log_likelihood(model, x, 2, y=y[:, :1])


def test_the_is_log_likelihood_is_the_exact_conditional_marginal():
    """p(x | z, y) = N(W z + B onehot(y) + b, sigma^2 I) with q(z | x, y) the exact
    posterior: every weight is p(x | y), so the estimate equals
    log N(x; B_y + b, W W^T + sigma^2 I)."""
    sigma = 0.5
    cfg = cvae_config(likelihood={"name": "normal", "scale_mode": "fixed", "scale": sigma},
                      encoder={"name": "mlp", "hidden": []}, decoder={"name": "mlp", "hidden": []})
    cfg["model"]["latent_dim"] = 2
    model = build_model(pyrovae.load_config(cfg).model, (3,)).double()
    g = torch.Generator().manual_seed(0)
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    Bm, b = torch.randn(3, C, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + W.T @ W / sigma**2)
    A = cov @ W.T / sigma**2
    with torch.no_grad():
        model.decoder.net.net[0].weight.copy_(torch.cat([W, Bm], 1))
        model.decoder.net.net[0].bias.copy_(b)
        enc = model.encoder.net.net[0]
        enc.weight.zero_()
        enc.weight[:2, :3], enc.weight[:2, 3:] = A, -A @ Bm
        enc.bias.copy_(torch.cat([-A @ b, torch.log(torch.expm1(cov.diagonal().sqrt() - 1e-4))]))
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.arange(8) % C
    exact = torch.stack([MultivariateNormal(Bm[:, c] + b, W @ W.T + sigma**2 * torch.eye(3, dtype=torch.float64)).log_prob(xi)
                         for xi, c in zip(x, y.tolist())])
    torch.testing.assert_close(pyrovae.log_likelihood(model, x, 5, y=y, seed=0), exact, rtol=0, atol=1e-6)
    summary = pyrovae.evaluate(model, (x, y), 5).summary()
    assert summary["log_likelihood"] == pytest.approx(float(exact.mean()), abs=1e-6)
    assert summary["conditioned_on"] == ["y"] and summary["summed_out"] == []


def test_class_conditional_samples_follow_the_label():
    """A decoder that ignores z and maps class c to the logits of a template:
    sample(n, y=c) gives sigmoid(template_c), for every class."""
    model = build(decoder={"name": "mlp", "hidden": []})
    templates = torch.randn(C, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        layer = model.decoder.net.net[0]
        layer.weight.zero_()
        layer.weight[:, 3:] = templates.T
        layer.bias.zero_()
    for c in range(C):
        s = model.sample(5, y=torch.full((5,), c))
        torch.testing.assert_close(s, torch.sigmoid(templates[c]).reshape(1, 1, 8, 8).expand(5, 1, 8, 8))
    cycled = model.sample(2 * C)  # no labels: the classes in turn
    torch.testing.assert_close(cycled[C + 1], torch.sigmoid(templates[1]).reshape(1, 8, 8))


def test_a_conv_encoder_reads_the_label_as_constant_channels():
    model = build(encoder={"name": "conv", "channels": [4, 8], "hidden": 16},
                  decoder={"name": "conv", "channels": [8, 4], "hidden": 16})
    assert model.encoder.channels and model.encoder.net.data_shape == (1 + C, 8, 8)
    x, y = binary(3, dtype=torch.float32), torch.tensor([0, 3, 1])
    assert torch.isfinite(pyrovae.log_likelihood(model, x, 3, y=y)).all()


@pytest.mark.parametrize("prior", sorted(priors.names()))
def test_every_registered_prior_gives_a_finite_loss(prior):
    model = build(prior={"name": prior, **component_options("prior", prior)})
    x, y = binary(4, dtype=torch.float32), torch.tensor([0, 1, 2, 3])
    assert math.isfinite(pyro.infer.Trace_ELBO().loss(model.model, model.guide, x, y))


def test_trains_through_the_api_and_resumes_exactly(tmp_path):
    cfg = cvae_config(epochs=3)
    splits = pyrovae.load_data(pyrovae.load_config(cfg).data)
    history = pyrovae.train(build_model(pyrovae.load_config(cfg).model, splits.data_shape), splits, cfg)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert_resumes_exactly(lambda epochs: cvae_config(epochs=epochs), tmp_path)


def test_the_cli_trains_samples_a_label_evaluates_plots_encodes_and_imputes(tmp_path, capsys):
    """The commands in process (``pyrovae.cli.main``), as a user runs them."""
    import yaml

    from pyrovae.cli import main

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cvae_config(epochs=1)))
    run = tmp_path / "run"

    def cli(*args, ok=True):
        code = main(list(args))
        out = capsys.readouterr()
        assert (code == 0) == ok, out.err[-2000:]
        return out

    cli("train", "--config", str(cfg_path), "--out", str(run))
    cli("sample", str(run), "--label", "2", "-n", "6", "--out", str(tmp_path / "twos.npy"))
    assert np.load(tmp_path / "twos.npy").shape == (6, 1, 8, 8)
    bad = cli("sample", str(run), "--label", "7", ok=False)
    assert "outside the model's classes 0..3" in bad.err
    out = cli("evaluate", str(run), "--iw-samples", "3", "--no-compile", "--no-progress").out
    assert "log p(x | y), IS" in out
    cli("plot", str(run), "--only", "class_samples", "analogies", "reconstructions", "traversals")
    for name in ("class_samples", "analogies", "reconstructions", "traversals"):
        assert (run / "plots" / f"{name}.png").exists()
    cli("encode", str(run))
    assert np.load(run / "codes-test.npz")["mean"].shape[1] == 3
    cli("impute", str(run), "--mask", "bottom", "--limit", "4")


def test_impute_conditions_on_the_label():
    model = build()
    x, y = binary(3, dtype=torch.float32), torch.tensor([0, 1, 2])
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :4, :] = True
    result = pyrovae.impute(model, x, mask, y=y)
    assert result.mean.shape == x.shape and torch.equal(result.mean[mask], x[mask])
    with pytest.raises(DataError, match="needs the field"):
        pyrovae.impute(model, x, mask)


def test_data_without_labels_and_bad_labels_are_clear_errors():
    cfg = pyrovae.load_config(cvae_config())
    splits = pyrovae.load_data(cfg.data)
    model = build_model(cfg.model, splits.data_shape)
    unlabelled = type(splits)(train=(splits.train[0], torch.full_like(splits.train[1], -1)), test=splits.test, val=splits.val)
    with pytest.raises(DataError, match="needs the field\\(s\\) y"):
        pyrovae.train(model, unlabelled, cfg)
    partly = splits.train[1].clone()
    partly[5] = -1
    with pytest.raises(DataError, match="needs every label: use the m2 model"):
        pyrovae.train(model, type(splits)(train=(splits.train[0], partly), test=splits.test, val=splits.val), cfg)
    too_big = splits.train[1].clone()
    too_big[0] = C
    with pytest.raises(DataError, match=f"label {C} at index 0 is outside 0..{C - 1}"):
        pyrovae.train(model, type(splits)(train=(splits.train[0], too_big), test=splits.test, val=splits.val), cfg)


def test_a_label_given_to_a_model_that_takes_none_is_a_clear_error():
    vae = pyrovae.VAE.from_config(tiny_config()["model"], data_shape=(1, 8, 8))
    x = binary(2, dtype=torch.float32)
    with pytest.raises(ConfigError, match="unknown field.*'y'.*takes x"):
        pyrovae.log_likelihood(vae, x, 2, y=torch.tensor([0, 1]))
    from pyrovae.report.latents import class_labels

    with pytest.raises(ConfigError, match="--label needs a model conditioned on class labels"):
        class_labels(vae, 1, 3)


@pytest.mark.parametrize("options, message", [({"num_classes": 1}, "num_classes"), ({"num_classes": 0, "condition_dim": -2}, "condition_dim"),
                                              ({"num_classes": 3, "condition_dim": 2}, "exactly one")])
def test_bad_options_are_clear_errors(options, message):
    cfg = cvae_config()
    cfg["model"]["options"] = options
    with pytest.raises(ConfigError, match=message):
        build_model(pyrovae.load_config(cfg).model, (1, 8, 8))


def test_model_and_guide_traces_agree_site_by_site():
    model = build()
    x, y = binary(5, dtype=torch.float32), torch.tensor([0, 1, 2, 3, 0])
    guide_trace, model_trace = checked_traces(model, x, 3, y=y)
    assert [n for n, s in guide_trace.nodes.items() if s["type"] == "sample" and n != "data"] == ["z"]
    assert model_trace.nodes["z"]["log_prob"].shape == (3, 5)
