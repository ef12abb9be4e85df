"""The training objectives against hand-written ``torch.distributions``
computations under the same noise, in float64:

- ``elbo`` (Trace_ELBO), with mini-batch scaling and beta;
- ``meanfield`` (TraceMeanField_ELBO), with the Gaussian KL written out,
  and refused where the guide samples in another order than the model;
- ``iwae`` (RenyiELBO, alpha = 0): -sum_i [logsumexp_k log w_ik - log K];
- the 2-layer hierarchical ELBO of Burda et al.;
- and, with the exact posterior of a linear-Gaussian model as the guide,
  the IWAE and ELBO losses both equal -sum_i log p(x_i) exactly.

"The same noise" means the same seed: the hand-written code draws the
standard normals in the order and shapes the guide does, so a change in how
the objective draws its noise fails here as loudly as a wrong formula.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from pyro.infer import TraceMeanField_ELBO

import pyrovae
from pyrovae.data import load_data
from pyrovae.infer.objectives import build_objective, objectives
from pyrovae.models import build_model
from pyrovae.training.trainer import Trainer

from helpers import SHAPE, tiny_config, tiny_model_config
from test_evaluate import exact_marginal, linear_gaussian_vae, orthogonal_columns, set_exact_posterior_guide

ATOL = 1e-5


def double_vae(**model):
    vae = pyrovae.VAE.from_config(tiny_model_config(**model), data_shape=SHAPE).double()
    return vae


def binary_data(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g, dtype=torch.float64).round()


def gaussian_guide(features, d, min_scale=1e-4):
    """The normal guide's documented parameterization: [mu, raw], sigma = softplus(raw) + min_scale."""
    return features[..., :d], F.softplus(features[..., d:]) + min_scale


def standard_normals(*shape, seed):
    """Draw as a reparameterized torch Normal draws (what Pyro's sites call)."""
    torch.manual_seed(seed)
    return Normal(torch.zeros(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64)).rsample()


def bernoulli_log_lik(vae, z, x):
    logits = vae.decoder(z)
    return Bernoulli(logits=logits).log_prob(x.expand(logits.shape)).flatten(-3).sum(-1)


def one_layer_log_weights(vae, x, eps):
    """log p(x|z), log p(z), log q(z|x) for z = mu + sigma * eps; each ``eps.shape[:-1]``."""
    loc, scale = gaussian_guide(vae.encoder(x), vae.latent_dim)
    z = loc + scale * eps
    log_q = Normal(loc, scale).log_prob(z).sum(-1)
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
    return bernoulli_log_lik(vae, z, x), log_p, log_q, (loc, scale)


@pytest.mark.parametrize("num_data, beta", [(None, 1.0), (70, 1.0), (None, 0.3), (35, 2.0)])
def test_trace_elbo_equals_hand_written_elbo(num_data, beta):
    vae, x = double_vae(), binary_data()
    seed = 5
    torch.manual_seed(seed)
    loss = objectives.build("elbo").loss(vae.model, vae.guide, x, num_data=num_data, beta=beta)
    eps = standard_normals(x.shape[0], vae.latent_dim, seed=seed)
    with torch.no_grad():
        log_lik, log_p, log_q, _ = one_layer_log_weights(vae, x, eps)
    scale = (num_data or x.shape[0]) / x.shape[0]
    expected = -scale * (log_lik + beta * (log_p - log_q)).sum()
    assert loss == pytest.approx(float(expected), abs=ATOL, rel=0)


@pytest.mark.parametrize("num_data", [None, 70])
def test_meanfield_elbo_uses_the_written_out_gaussian_kl(num_data):
    vae, x = double_vae(), binary_data()
    torch.manual_seed(6)
    loss = objectives.build("meanfield").loss(vae.model, vae.guide, x, num_data=num_data)
    eps = standard_normals(x.shape[0], vae.latent_dim, seed=6)
    with torch.no_grad():
        log_lik, _, _, (mu, sigma) = one_layer_log_weights(vae, x, eps)
    kl = 0.5 * (sigma**2 + mu**2 - 1 - 2 * sigma.log()).sum(-1)
    scale = (num_data or x.shape[0]) / x.shape[0]
    assert loss == pytest.approx(float(-scale * (log_lik - kl).sum()), abs=ATOL, rel=0)


HIERARCHY = [{"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}]


def test_meanfield_is_refused_where_the_guide_samples_in_another_order():
    """The vae hierarchy's guide is bottom-up, q(z|x) q(z2|z), its model
    top-down, p(z2) p(z|z2): a closed-form KL(q(z|x) || p(z|z2)) would be
    taken at a z2 drawn from z. build_objective and the trainer refuse it
    with one line naming both orders and the objective to use."""
    vae = double_vae(hierarchy=HIERARCHY)
    message = r"guide samples z, z2 and the model z2, z; use train.objective: \{name: elbo\}"
    with pytest.raises(pyrovae.ConfigError, match=message):
        build_objective({"name": "meanfield"}, vae)
    with pytest.raises(pyrovae.ConfigError, match=message):
        build_objective({"name": "meanfield"}, vae, probe={"x": binary_data(2)})
    cfg = pyrovae.load_config(tiny_config(model={**tiny_model_config(), "hierarchy": HIERARCHY},
                                          train={**tiny_config()["train"], "objective": {"name": "meanfield"}}))
    splits = load_data(cfg.data)
    with pytest.raises(pyrovae.ConfigError, match=message) as error:
        Trainer(pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape), splits, cfg)
    assert "\n" not in str(error.value)
    for name in ("elbo", "iwae"):  # they score the sampled values: any order is right
        build_objective({"name": name}, vae)


def test_meanfield_for_a_users_model_with_other_fields_is_checked_on_the_probe_given():
    """A model that takes x and y: without a probe there is nothing to trace
    it on (the trainer passes its own), with one its single site passes."""
    from user_models import ConditionalBernoulliVAE

    model = ConditionalBernoulliVAE(SHAPE, latent_dim=2, num_classes=3, hidden=8)
    assert isinstance(build_objective({"name": "meanfield"}, model), TraceMeanField_ELBO)
    probe = {"x": binary_data(2).float(), "y": torch.tensor([0, 2])}
    assert isinstance(build_objective({"name": "meanfield"}, model, probe=probe), TraceMeanField_ELBO)


@pytest.mark.parametrize("family", ["vae", "hvae"])
def test_meanfield_is_built_where_the_guide_samples_in_the_models_order(family):
    """One latent layer, and hvae, whose guide is top-down like its model
    (q(z2|x) q(z1|x, z2) against p(z2) p(z1|z2))."""
    section = tiny_model_config() if family == "vae" else {"name": "hvae", "latent_dim": 3,
                                                            "options": {"z2_dim": 2, "hidden": 8}}
    model = build_model(pyrovae.load_config({"model": section}).model, SHAPE)
    assert isinstance(build_objective({"name": "meanfield"}, model), TraceMeanField_ELBO)


@pytest.mark.parametrize("k", [2, 9])
def test_iwae_bound_equals_hand_written_logsumexp(k):
    vae, x = double_vae(), binary_data()
    torch.manual_seed(7)
    loss = objectives.build({"name": "iwae", "num_particles": k}).loss(vae.model, vae.guide, x)
    eps = standard_normals(k, x.shape[0], vae.latent_dim, seed=7)
    with torch.no_grad():
        log_lik, log_p, log_q, _ = one_layer_log_weights(vae, x, eps)
    log_w = log_lik + log_p - log_q  # (K, B)
    expected = -(torch.logsumexp(log_w, 0) - math.log(k)).sum()
    assert loss == pytest.approx(float(expected), abs=ATOL, rel=0)
    # and it is not the ELBO of the same draws: the particles really differ
    assert abs(loss - float(-log_w.mean(0).sum())) > 1e-3


def test_two_layer_hierarchical_elbo_equals_hand_written():
    """Guide q(z1|x) q(z2|z1); model p(z2) p(z1|z2) p(x|z1), with p(z1|z2) a
    Gaussian whose mean and softplus scale (+1e-3) the upper decoder predicts."""
    hierarchy = [{"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}]
    vae, x = double_vae(hierarchy=hierarchy), binary_data()
    layer = vae.upper[0]
    torch.manual_seed(8)
    loss = objectives.build("elbo").loss(vae.model, vae.guide, x)
    torch.manual_seed(8)
    with torch.no_grad():
        loc1, scale1 = gaussian_guide(vae.encoder(x), 3)
        z1 = Normal(loc1, scale1).rsample()
        loc2, scale2 = gaussian_guide(layer.encoder(z1), 2)
        z2 = Normal(loc2, scale2).rsample()
        log_q = Normal(loc1, scale1).log_prob(z1).sum(-1) + Normal(loc2, scale2).log_prob(z2).sum(-1)
        cond = layer.decoder(z2)  # [mean of z1, raw scale of z1]
        p_z1 = Normal(cond[..., :3], F.softplus(cond[..., 3:]) + 1e-3)
        log_p = Normal(0.0, 1.0).log_prob(z2).sum(-1) + p_z1.log_prob(z1).sum(-1)
        log_lik = bernoulli_log_lik(vae, z1, x)
    assert loss == pytest.approx(float(-(log_lik + log_p - log_q).sum()), abs=ATOL, rel=0)


@pytest.mark.parametrize("objective", [{"name": "iwae", "num_particles": 6}, {"name": "elbo"}])
def test_exact_posterior_makes_every_bound_the_exact_marginal(objective):
    """With q(z|x) = p(z|x) every weight equals p(x), so the single-draw IWAE
    and ELBO losses are both -sum_i log p(x_i) from the Gaussian marginal.
    (The mean-field estimator splits the weight into a Monte Carlo
    reconstruction and an exact KL, so it is exact only in expectation.)"""
    W = orthogonal_columns(5, [1.2, 0.5])
    b = torch.linspace(-0.5, 0.5, 5, dtype=torch.float64)
    vae = linear_gaussian_vae(W, b, 0.3)
    set_exact_posterior_guide(vae, W, b, 0.3)
    marginal = exact_marginal(W, b, 0.3)
    x = marginal.sample((9,))
    loss = objectives.build(objective).loss(vae.model, vae.guide, x)
    assert loss == pytest.approx(float(-marginal.log_prob(x).sum()), abs=1e-8, rel=0)
