import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.components.priors import Prior, priors
from pyrovae.registry import Registry

from helpers import build, tiny_config


def test_unknown_name_lists_choices():
    with pytest.raises(ConfigError) as e:
        build(prior={"name": "vampp"})
    msg = str(e.value)
    assert "unknown prior 'vampp'" in msg and "Did you mean 'vamp'" in msg
    for name in priors.names():
        assert name in msg


def test_misspelled_option_names_component_and_options():
    with pytest.raises(ConfigError) as e:
        build(prior={"name": "mog", "num_component": 3})
    msg = str(e.value)
    assert "prior 'mog' has no option 'num_component'" in msg
    assert "num_components" in msg


def test_context_arguments_cannot_be_set():
    with pytest.raises(ConfigError, match="set by pyrovae itself"):
        build(prior={"name": "standard_normal", "latent_dim": 7})


def test_bad_option_value_is_config_error():
    with pytest.raises(ConfigError, match="num_components"):
        build(prior={"name": "mog", "num_components": 0})


def test_factories_with_var_kwargs_are_refused():
    reg = Registry("thing")
    with pytest.raises(TypeError, match="kwargs"):
        reg.register("bad")(lambda **kwargs: None)


def test_duplicate_name_is_refused():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_external_prior_is_usable_by_name_and_trains():
    import pyro.distributions as dist

    @pyrovae.register_prior("test_wide_normal")
    class WideNormal(Prior):
        """N(0, width^2 I)."""

        def __init__(self, latent_dim, width=2.0):
            super().__init__(latent_dim)
            self.register_buffer("loc", torch.zeros(latent_dim))
            self.register_buffer("scale", torch.full((latent_dim,), width))

        def dist(self):
            return dist.Normal(self.loc, self.scale).to_event(1)

    try:
        cfg = tiny_config(model={**tiny_config()["model"], "prior": {"name": "test_wide_normal", "width": 3.0}})
        splits = pyrovae.load_data(pyrovae.load_config(cfg).data)
        vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
        assert isinstance(vae.prior_module, WideNormal)
        assert torch.allclose(vae.prior().base_dist.scale, torch.full((3,), 3.0))
        history = pyrovae.train(vae, splits, cfg)
        assert history[-1]["train_loss"] < history[0]["train_loss"]
        assert "test_wide_normal" in priors.describe()
    finally:
        priors.unregister("test_wide_normal")
