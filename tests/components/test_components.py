"""Every registered component, tested through the registries themselves:
a newly registered prior, likelihood, network or guide is covered here
without editing this file."""

import warnings

import pytest
import torch

import pyro
import pyro.poutine as poutine
from pyro.util import check_model_guide_match

import pyrovae
from pyrovae.data import load_data
from pyrovae.errors import ConfigError
from pyrovae.infer.evaluate import elbo_terms
from pyrovae.components.guides import guides
from pyrovae.components.likelihoods import likelihoods
from pyrovae.components.nets import decoders, encoders
from pyrovae.components.priors import priors

from helpers import SHAPE, build, component_options, data_config_for, tiny_config

IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32)]


def spec(kind, name):
    return {"name": name, **component_options(kind, name)}


def data_for(vae, n=6):
    """Data inside the likelihood's support: draws from the model itself."""
    return vae.sample(n, mean=False)


# -- priors ----------------------------------------------------------------


@pytest.mark.parametrize("name", priors.names())
def test_prior_shapes_and_log_prob(name):
    vae = build(prior=spec("prior", name))
    p = vae.prior()
    assert p.batch_shape == () and p.event_shape == (3,)
    z = p.sample((50,))
    assert z.shape == (50, 3) and torch.isfinite(z).all()
    lp = p.log_prob(z)
    assert lp.shape == (50,) and torch.isfinite(lp).all()
    # normalization, sampling and the analytic KLs: test_densities.py and test_kl.py


def test_standard_normal_kl_matches_closed_form():
    vae = build()
    x = torch.bernoulli(torch.full((5, *SHAPE), 0.5))
    q = vae.encode(x)
    loc, scale = q.base_dist.loc, q.base_dist.scale
    closed = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    analytic = torch.distributions.kl_divergence(q, vae.prior())
    z = q.sample((200000,))
    mc = (q.log_prob(z) - vae.prior().log_prob(z)).mean(0)
    assert torch.allclose(analytic, closed, atol=1e-5)
    assert torch.allclose(mc, closed, atol=0.02)


# -- likelihoods -------------------------------------------------------------


@pytest.mark.parametrize("name", likelihoods.names())
def test_likelihood_shapes_support_and_log_prob(name):
    vae = build(likelihood=spec("likelihood", name))
    z = vae.prior().sample((7,))
    p = vae.decode(z)
    assert p.batch_shape == (7,) and p.event_shape == SHAPE
    x = p.sample()
    assert x.shape == (7, *SHAPE)
    assert bool(vae.likelihood.support.check(x).all())
    assert torch.isfinite(p.log_prob(x)).all()
    mean = vae.likelihood.mean(vae.decoder(z))
    lo, hi = vae.likelihood.value_range
    assert mean.shape == (7, *SHAPE) and torch.isfinite(mean).all()
    if name != "normal" and name != "laplace":  # bounded likelihoods have bounded means
        assert mean.min() >= lo - 1e-6 and mean.max() <= hi + 1e-6


@pytest.mark.parametrize("name", likelihoods.names())
@pytest.mark.parametrize("shape", [(12,), (1, 8, 8)])
def test_likelihood_param_shape_matches_decoder(name, shape):
    vae = build(shape=shape, likelihood=spec("likelihood", name))
    out = vae.decoder(torch.zeros(2, 5, 3))  # two particle dims and a batch dim
    assert out.shape == (2, 5, *vae.likelihood.param_shape)
    assert vae.decode(torch.zeros(2, 5, 3)).event_shape == shape


@pytest.mark.parametrize("scale_mode", ["fixed", "shared", "per_dim", "decoder"])
def test_normal_scale_modes(scale_mode):
    vae = build(likelihood={"name": "normal", "scale_mode": scale_mode, "scale": 0.5})
    learned = {name for name, _ in vae.likelihood.named_parameters()}
    assert ("log_scale" in learned) == (scale_mode in ("shared", "per_dim"))
    p = vae.decode(torch.zeros(4, 3))
    if scale_mode != "decoder":
        assert torch.allclose(p.base_dist.scale, torch.full((4, *SHAPE), 0.5))
    assert vae.likelihood.num_params == (2 if scale_mode == "decoder" else 1)


# -- networks ------------------------------------------------------------------


@pytest.mark.parametrize("encoder", encoders.names())
@pytest.mark.parametrize("decoder", decoders.names())
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_networks_on_images(encoder, decoder, shape):
    vae = pyrovae.VAE.from_config({"latent_dim": 4, "encoder": encoder, "decoder": decoder}, data_shape=shape)
    x = torch.rand(2, 3, *shape).round()  # two leading batch dims
    q = vae.encode(x)
    assert q.batch_shape == (2, 3) and q.event_shape == (4,)
    assert vae.decode(q.rsample()).event_shape == shape


def test_mlp_with_no_hidden_layers_is_linear():
    vae = pyrovae.VAE.from_config({"latent_dim": 2, "encoder": {"name": "mlp", "hidden": []}, "decoder": {"name": "mlp", "hidden": []}}, data_shape=(5,))
    assert [type(m).__name__ for m in vae.decoder.net] == ["Linear"]
    z1, z2 = torch.randn(2), torch.randn(2)
    f = vae.decoder
    assert torch.allclose(f(z1 + z2) + f(torch.zeros(2)), f(z1) + f(z2), atol=1e-5)


def test_conv_on_flat_data_is_a_clear_error():
    with pytest.raises(ConfigError, match="image data of shape"):
        pyrovae.VAE.from_config({"encoder": "conv"}, data_shape=(784,))
    with pytest.raises(ConfigError, match="divisible by 4"):
        pyrovae.VAE.from_config({"encoder": "conv", "decoder": "conv"}, data_shape=(1, 30, 30))


# -- guides ----------------------------------------------------------------------


@pytest.mark.parametrize("name", guides.names())
def test_guide_shapes(name):
    vae = build(guide=spec("guide", name))
    x = data_for(vae, 5)
    q = vae.encode(x)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    z = q.rsample()
    assert z.shape == (5, 3) and torch.isfinite(q.log_prob(z)).all()
    assert vae.code(x).shape == (5, 3)
    assert vae.reconstruct(x).shape == x.shape


# -- model and guide traces ------------------------------------------------------


def latent_sites(trace):
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and type(site["fn"]).__name__ != "_Subsample"
    ]


def combos():
    """Each registered component with the defaults for the others."""
    for kind, registry in (("prior", priors), ("likelihood", likelihoods), ("guide", guides)):
        for name in registry.names():
            yield kind, name


@pytest.mark.parametrize("kind, name", list(combos()))
def test_traces_validate_and_agree_site_by_site(kind, name):
    vae = build(**{kind: spec(kind, name)})
    x = data_for(vae, 6)
    pyro.enable_validation(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pyro reports mismatches as warnings
        guide_trace = poutine.trace(vae.guide).get_trace(x, num_data=60)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, num_data=60)
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting=1)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
    assert latent_sites(model_trace) == latent_sites(guide_trace) == ["z"]
    assert model_trace.nodes["z"]["value"] is guide_trace.nodes["z"]["value"]
    assert model_trace.nodes["x"]["is_observed"]
    # the data plate scales a mini-batch to the full data set
    assert model_trace.nodes["x"]["scale"] == pytest.approx(10.0)
    assert model_trace.nodes["x"]["log_prob"].shape == (6,)


def test_vectorized_particles_shapes():
    vae = build()
    x = data_for(vae, 6)
    with pyro.plate("particles", 4, dim=-2):
        tr = poutine.trace(vae.guide).get_trace(x)
        mt = poutine.trace(poutine.replay(vae.model, trace=tr)).get_trace(x)
    assert tr.nodes["z"]["value"].shape == (4, 6, 3)
    mt.compute_log_prob()
    assert mt.nodes["x"]["log_prob"].shape == (4, 6)


def test_beta_scales_latent_sites_in_model_and_guide():
    vae = build()
    x = data_for(vae, 6)
    for beta, expected in ((0.25, 0.25), (0.0, None)):
        tr = poutine.trace(vae.guide).get_trace(x, beta=beta)
        mt = poutine.trace(poutine.replay(vae.model, trace=tr)).get_trace(x, beta=beta)
        for t in (tr, mt):
            if expected is None:
                assert t.nodes["z"]["mask"] is False
            else:
                assert t.nodes["z"]["scale"] == pytest.approx(expected)
        assert mt.nodes["x"]["scale"] == 1.0


# -- a short training run lowers the loss for each prior and each likelihood ------


def _fit_and_compare(**model):
    cfg = tiny_config(model={**tiny_config()["model"], **model}, train={"epochs": 4, "batch_size": 50, "progress": False})
    vae0 = pyrovae.VAE.from_config(cfg, data_shape=SHAPE)
    cfg["data"].update(data_config_for(vae0.likelihood))
    splits = load_data(pyrovae.load_config(cfg).data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    x = splits.val[0]
    before = -elbo_terms(vae, x, num_particles=4)["elbo"].mean()
    pyrovae.train(vae, splits, cfg)
    after = -elbo_terms(vae, x, num_particles=4)["elbo"].mean()
    assert torch.isfinite(after)
    return float(before), float(after)


@pytest.mark.parametrize("name", priors.names())
def test_training_lowers_loss_for_each_prior(name):
    before, after = _fit_and_compare(prior=spec("prior", name))
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("name", likelihoods.names())
def test_training_lowers_loss_for_each_likelihood(name):
    before, after = _fit_and_compare(likelihood=spec("likelihood", name))
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("name", guides.names())
def test_training_lowers_loss_for_each_guide(name):
    before, after = _fit_and_compare(guide=spec("guide", name))
    assert after < before - 1.0, (before, after)


def test_fast_gaussian_mixture_matches_mixture_same_family():
    """The matrix-product mixture density used by the mog and vamp priors."""
    import pyro.distributions as dist
    from pyrovae.components.priors import DiagonalNormalMixture

    logits, locs, scales = torch.randn(30), torch.randn(30, 5), torch.rand(30, 5) * 0.5 + 0.01
    reference = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    fast = DiagonalNormalMixture(logits, locs, scales)
    z = torch.cat([reference.sample((200,)), 3 * torch.randn(200, 5)])
    assert torch.allclose(fast.log_prob(z), reference.log_prob(z), atol=1e-4)
    assert fast.log_prob(z.reshape(4, 100, 5)).shape == (4, 100)
    draws = fast.sample((20000,))
    assert torch.allclose(draws.mean(0), reference.mean, atol=0.05)


def test_gated_dense_is_a_sigmoid_gated_linear_map():
    from pyrovae.components.nets import GatedDense

    layer = GatedDense(5, 3)
    x = torch.randn(4, 5)
    w, v = layer.linear.weight.split(3), layer.linear.bias.split(3)
    expected = (x @ w[0].T + v[0]) * torch.sigmoid(x @ w[1].T + v[1])
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_he_init_has_variance_two_over_fan_in():
    vae = pyrovae.VAE.from_config(
        {"latent_dim": 4, "encoder": {"name": "gated_mlp", "hidden": [400], "init": "he"}}, data_shape=(900,)
    )
    first = vae.encoder.net[0].linear
    assert abs(first.weight.var().item() - 2 / 900) < 0.05 * 2 / 900
    assert torch.all(first.bias == 0)


def test_vamp_bounds_clamp_the_pseudo_inputs():
    vae = build(prior={"name": "vamp", "num_components": 6, "init_mean": 0.5, "init_std": 2.0, "bounds": [0, 1]})
    raw = vae.prior_module.pseudo_inputs
    assert (raw < 0).any() and (raw > 1).any()  # the raw parameters leave [0, 1] ...
    u = vae.prior_module.inputs()
    assert u.min() >= 0 and u.max() <= 1  # ... the inputs the encoder sees do not
    assert torch.equal(u, raw.clamp(0, 1))
    with pytest.raises(ConfigError, match="low < high"):
        build(prior={"name": "vamp", "bounds": [1, 0]})
