"""The two-stochastic-layer VAE of Burda et al. (2015), expressed in the config."""


import pytest
import torch


import pyrovae
from pyrovae.data import load_data
from pyrovae.errors import ConfigError
from pyrovae.infer.evaluate import elbo_terms
from pyrovae.components.priors import priors

from helpers import SHAPE, checked_traces, component_options, tiny_config

TWO_LAYER = {
    "latent_dim": 6,
    "encoder": {"name": "mlp", "hidden": [32]},
    "decoder": {"name": "mlp", "hidden": [32]},
    "hierarchy": [{"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}}],
}


def test_burda_two_layer_architecture_from_config():
    vae = pyrovae.VAE.from_config(
        {"latent_dim": 100, "hierarchy": [{"latent_dim": 50}]}, data_shape=(1, 28, 28)
    )
    sizes = lambda net: [m.out_features for m in net if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert sizes(vae.encoder.net) == [200, 200, 200]  # x -> 200 -> 200 -> (mu, sigma) of z1 (100)
    assert sizes(vae.upper[0].encoder.net) == [100, 100, 100]  # z1 -> 100 -> 100 -> (mu, sigma) of z2 (50)
    assert sizes(vae.upper[0].decoder.net) == [100, 100, 200]  # z2 -> 100 -> 100 -> (mu, sigma) of z1
    assert sizes(vae.decoder.net) == [200, 200, 784]
    assert vae.latent_sites == ["z", "z2"] and vae.top_dim == 50
    assert vae.prior().event_shape == (50,)


@pytest.mark.parametrize("prior", priors.names())
def test_traces_validate_for_every_top_prior(prior):
    vae = pyrovae.VAE.from_config({**TWO_LAYER, "prior": {"name": prior, **component_options("prior", prior)}}, data_shape=SHAPE)
    x = vae.sample(5, mean=False)
    guide_trace, model_trace = checked_traces(vae, x, 2)
    assert guide_trace.nodes["z"]["value"].shape == (2, 5, 6)
    assert guide_trace.nodes["z2"]["value"].shape == (2, 5, 3)
    # the model's z1 is drawn from p(z1 | z2): it depends on the guide's z2
    assert model_trace.nodes["z"]["log_prob"].shape == (2, 5)


def test_two_layer_model_trains_and_samples():
    cfg = tiny_config(model={**tiny_config()["model"], **TWO_LAYER}, train={**tiny_config()["train"], "epochs": 4})
    splits = load_data(pyrovae.load_config(cfg).data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    x = splits.val[0]
    before = float(-elbo_terms(vae, x, 4)["elbo"].mean())
    pyrovae.train(vae, splits, cfg)
    after = float(-elbo_terms(vae, x, 4)["elbo"].mean())
    assert after < before - 1.0
    samples = vae.sample(7)
    assert samples.shape == (7, *SHAPE) and samples.min() >= 0 and samples.max() <= 1


def test_bad_hierarchy_entries():
    with pytest.raises(ConfigError, match=r"unknown key 'size' in model.hierarchy\[0\]"):
        pyrovae.VAE.from_config({"hierarchy": [{"size": 3}]}, data_shape=SHAPE)
    with pytest.raises(ConfigError, match=r"model.hierarchy\[0\].latent_dim must be an integer >= 1"):
        pyrovae.VAE.from_config({"hierarchy": [{}]}, data_shape=SHAPE)


def test_importance_sampling_runs_unchanged_on_two_layers():
    """log p(x) by IS is above the ELBO on average and rises with K."""
    vae = pyrovae.VAE.from_config({**TWO_LAYER, "guide": {"name": "iaf", "num_flows": 1, "hidden": [8]}}, data_shape=SHAPE)
    x = vae.sample(20, mean=False)
    elbo = elbo_terms(vae, x, 50)["elbo"].mean()
    ll_10 = pyrovae.log_likelihood(vae, x, num_samples=10, seed=0).mean()
    ll_300 = pyrovae.log_likelihood(vae, x, num_samples=300, seed=0).mean()
    assert torch.isfinite(ll_300)
    assert elbo < ll_10 + 0.05 < ll_300 + 0.1
