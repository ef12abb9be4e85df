"""``ais_log_likelihood(chain_batch=...)``: chains run in groups, and the
groups' weights are pooled exactly as if all chains had run at once."""

import math

import pyro
import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.infer import ais

OPTIONS = dict(num_steps=8, leapfrog_steps=2)


@pytest.fixture
def vae_and_x():
    pyro.enable_validation(True)
    torch.manual_seed(0)
    vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 4, 4))
    return vae, torch.bernoulli(torch.full((5, 1, 4, 4), 0.3))


def test_one_group_is_the_unchunked_estimate(vae_and_x):
    vae, x = vae_and_x
    whole = ais.ais_log_likelihood(vae, x, num_chains=4, seed=1, return_stats=True, **OPTIONS)
    same = ais.ais_log_likelihood(vae, x, num_chains=4, chain_batch=4, seed=1, return_stats=True, **OPTIONS)
    for a, b in zip(whole, same):
        assert torch.equal(a, b)


def test_groups_are_pooled_exactly(vae_and_x, monkeypatch):
    """Two groups of 2 chains: log p̂ = log((e^{L_a} + e^{L_b}) / 2), with L_a and L_b
    two 2-chain runs on the groups' seeds (the second group's seeds shifted by the stride)."""
    vae, x = vae_and_x
    pooled = ais.ais_log_likelihood(vae, x, num_chains=4, chain_batch=2, seed=3, **OPTIONS)
    first = ais.ais_log_likelihood(vae, x, num_chains=2, seed=3, **OPTIONS)
    seeds = ais.pass_seeds(3)
    monkeypatch.setattr(ais, "pass_seeds", lambda seed: tuple(s + ais.CHAIN_GROUP_STRIDE for s in seeds))
    second = ais.ais_log_likelihood(vae, x, num_chains=2, seed=3, **OPTIONS)
    expected = torch.logaddexp(first.double(), second.double()) - math.log(2)
    assert torch.allclose(pooled.double(), expected, atol=1e-5)
    assert not torch.allclose(first, second)  # the groups draw different noise


def test_uneven_groups_and_bdmc(vae_and_x):
    vae, x = vae_and_x
    stats = ais.ais_log_likelihood(vae, x, num_chains=5, chain_batch=2, seed=0, return_stats=True, **OPTIONS)
    assert all(t.shape == (5,) for t in stats) and torch.isfinite(stats.log_likelihood).all()
    out = pyrovae.bdmc(vae, 3, seed=0, num_chains=3, chain_batch=2, **OPTIONS)
    assert out.lower.shape == out.upper.shape == (3,)


def test_bad_chain_batch(vae_and_x):
    vae, x = vae_and_x
    with pytest.raises(ConfigError, match="chain_batch"):
        ais.ais_log_likelihood(vae, x, num_chains=4, chain_batch=0, **OPTIONS)
