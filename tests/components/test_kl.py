"""Analytic KL divergences against Monte Carlo, for every (guide, prior)
pair of the registries for which torch has a KL registered, and a check that
the pairs documented as analytic never fall back to Monte Carlo silently
inside the ``meanfield`` objective."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

import pyro.poutine as poutine

import pyrovae
from pyrovae.components.guides import guides
from pyrovae.infer.objectives import ANALYTIC_KL_PAIRS, objectives
from pyrovae.components.priors import priors

from helpers import SHAPE, component_options, tiny_model_config
from oracles import perturb_parameters

PAIRS = [(g, p) for g in guides.names() for p in priors.names()]
NUM_DRAWS = 100_000


def pair_model(guide, prior):
    cfg = tiny_model_config(
        latent_dim=3,
        guide={"name": guide, **component_options("guide", guide)},
        prior={"name": prior, **component_options("prior", prior)},
    )
    try:
        vae = pyrovae.VAE.from_config(cfg, data_shape=SHAPE)
    except pyrovae.ConfigError as e:
        pytest.skip(f"({guide}, {prior}) is refused when built: {e}")
    perturb_parameters(vae.prior_module)
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0)).round()
    return vae, x


def analytic_kl(q, p):
    """``kl_divergence(q, p)``, or None when torch has no formula for the pair."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


@pytest.mark.parametrize("guide, prior", PAIRS)
def test_analytic_kl_matches_monte_carlo(guide, prior):
    """1e5 draws from q; the analytic value lies within 5 standard errors of
    the Monte Carlo mean of log q(z) - log p(z). (For the point-mass guide,
    Pyro's KL is -log p(z) at the point, and the draws all agree with it.)"""
    vae, x = pair_model(guide, prior)
    with torch.no_grad():
        q, p = vae.encode(x), vae.prior()
        kl = analytic_kl(q, p)
        if kl is None:
            pytest.skip(f"no analytic KL for ({guide}, {prior}): the meanfield objective uses Monte Carlo there")
        z = q.sample((NUM_DRAWS,))
        log_ratio = (q.log_prob(z) - p.log_prob(z)).double()
    mean, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(NUM_DRAWS)
    assert kl.shape == (4,)
    tol = 5 * se + 1e-6 * (1 + mean.abs())  # a point-mass guide has zero variance
    assert bool(((kl.double() - mean).abs() < tol).all()), f"analytic {kl.tolist()} vs MC {mean.tolist()} +- {se.tolist()}"


def test_documented_analytic_pairs_have_a_registered_kl():
    """Every pair that ``pyrovae.optim.ANALYTIC_KL_PAIRS`` (the documented list)
    names gets a closed form from torch, for the distributions pyrovae builds."""
    assert ANALYTIC_KL_PAIRS, "the documented list is empty"
    for guide, prior in ANALYTIC_KL_PAIRS:
        vae, x = pair_model(guide, prior)
        with torch.no_grad():
            assert analytic_kl(vae.encode(x), vae.prior()) is not None, (guide, prior)


@pytest.mark.parametrize("guide, prior", ANALYTIC_KL_PAIRS)
def test_meanfield_objective_uses_the_closed_form(guide, prior):
    """With the likelihood hidden, the meanfield loss is the KL alone: the
    closed form (to float precision) and the same under any noise, which a
    Monte Carlo fallback would not be."""
    vae, x = pair_model(guide, prior)
    kl_only = poutine.block(vae.model, hide=["x"])
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        losses.append(objectives.build("meanfield").loss(kl_only, vae.guide, x))
    with torch.no_grad():
        expected = float(kl_divergence(vae.encode(x), vae.prior()).sum())
    assert losses[0] == losses[1]
    assert losses[0] == pytest.approx(expected, rel=1e-6, abs=1e-6)
