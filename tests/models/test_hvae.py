"""Tomczak & Welling's two-level HVAE (model "hvae"): q(z2|x) q(z1|x,z2),
p(z2) p(z1|z2) p(x|z1,z2).

The oracles are hand-written ``torch.distributions`` computations from the
networks' raw outputs (the guides' and p(z1|z2)'s documented
parameterization sigma = softplus(raw) + floor, Bernoulli logits, the
VampPrior as a logsumexp over the pseudo-inputs' Gaussians), under the same
seed as the code under test, in float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

import pyro
import pyro.poutine as poutine
from pyro.infer import Trace_ELBO

import pyrovae
from pyrovae.components.guides import guides
from pyrovae.components.priors import priors
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer.loglik import elbo_terms
from pyrovae.models import build_model
from pyrovae.models.hvae import HVAE
from pyrovae.runs import load_checkpoint

from helpers import assert_identical, checked_traces, component_options, tiny_config

SHAPE = (1, 4, 4)
D1, D2, HIDDEN = 3, 2, 8
ATOL = 1e-5


def hvae_section(**model):
    options = {"z2_dim": D2, "hidden": HIDDEN, **model.pop("options", {})}
    return {"name": "hvae", "latent_dim": D1, "options": options, **model}


def build(shape=SHAPE, **model):
    return build_model(pyrovae.load_config({"model": hvae_section(**model)}).model, shape)


def binary_data(n=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g, dtype=dtype).round()


def standard_normals(*shape):
    """Draw as a reparameterized Normal site does (Pyro calls torch's rsample)."""
    return Normal(torch.zeros(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64)).rsample()


def gaussian(features, d, floor):
    """[mu, raw] -> (mu, softplus(raw) + floor)."""
    return features[..., :d], F.softplus(features[..., d:]) + floor


def hand_log_weights(m, x, eps2, eps1, prior):
    """log p(x|z1,z2), log p(z2), log p(z1|z2), log q(z2|x), log q(z1|x,z2),
    each ``eps.shape[:-1]``, for z2 = mu2 + s2 * eps2, z1 = mu1 + s1 * eps1."""
    xf = x.flatten(1)
    mu2, s2 = gaussian(m.encoder_z2(xf), D2, 1e-4)
    z2 = mu2 + s2 * eps2
    mu1, s1 = gaussian(m.encoder_z1(xf, z2), D1, 1e-4)
    z1 = mu1 + s1 * eps1
    pm, ps = gaussian(m.decoder_z1(z2), D1, 1e-3)
    logits = m.decoder_x(z1, z2).reshape(*z1.shape[:-1], *SHAPE)
    log_px = Bernoulli(logits=logits).log_prob(x.expand(logits.shape)).flatten(-3).sum(-1)
    if prior == "standard_normal":
        log_pz2 = Normal(0.0, 1.0).log_prob(z2).sum(-1)
    else:  # vamp: 1/K sum_k N(z2; mu2(u_k), s2(u_k))
        u = m.prior_module.pseudo_inputs
        locs, scales = gaussian(m.encoder_z2(u.flatten(1)), D2, 1e-4)
        comp = Normal(locs, scales).log_prob(z2.unsqueeze(-2)).sum(-1)  # (..., K)
        log_pz2 = comp.logsumexp(-1) - math.log(len(u))
    log_pz1 = Normal(pm, ps).log_prob(z1).sum(-1)
    log_qz2 = Normal(mu2, s2).log_prob(z2).sum(-1)
    log_qz1 = Normal(mu1, s1).log_prob(z1).sum(-1)
    return log_px, log_pz2, log_pz1, log_qz2, log_qz1


def test_networks_follow_the_authors_code():
    m = build_model(pyrovae.load_config({"model": {"name": "hvae", "latent_dim": 40}}).model, (1, 28, 28))
    assert m.z2_dim == 40 and m.hidden == 300 and m.topology == "tomczak_welling"
    outs = lambda net: [l.out_features for l in net.modules() if isinstance(l, torch.nn.Linear)]  # noqa: E731
    # a gated layer of n units is one Linear of 2n outputs (W and V stacked)
    assert outs(m.encoder_z2) == [600, 600, 80]  # x -> 300 -> 300 -> (mu, sigma) of z2
    assert outs(m.encoder_z1) == [600, 600, 600, 80]  # x -> 300, z2 -> 300, joint -> 300 -> (mu, sigma) of z1
    assert outs(m.decoder_z1) == [600, 600, 80]  # z2 -> 300 -> 300 -> (mu, sigma) of z1
    assert outs(m.decoder_x) == [600, 600, 600, 784]  # z1 -> 300, z2 -> 300, joint -> 300 -> logits
    assert m.encoder_z1.a.linear.in_features == 784 and m.encoder_z1.b.linear.in_features == 40
    assert m.decoder_x.a.linear.in_features == 40 and m.decoder_x.joint[0].linear.in_features == 600
    w = m.encoder_z2[0].linear.weight  # He-normal: std sqrt(2 / fan_in)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
    assert m.prior().event_shape == (40,)


def test_model_and_guide_traces_agree_in_a_particles_plate():
    m = build(prior={"name": "vamp", "num_components": 4})
    x = m.sample(5, mean=False)
    guide_trace, model_trace = checked_traces(m, x, 3)
    latent = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]
              and n != "data"]
    assert latent == list(m.latent_sites) == ["z2", "z1"]
    for name, d in (("z2", D2), ("z1", D1)):
        assert guide_trace.nodes[name]["value"].shape == (3, 5, d)
        assert model_trace.nodes[name]["value"].shape == guide_trace.nodes[name]["value"].shape
        assert model_trace.nodes[name]["log_prob"].shape == (3, 5)
    assert model_trace.nodes["x"]["log_prob"].shape == (3, 5)
    # without the particles plate the sites are (B, d)
    trace = poutine.trace(m.guide).get_trace(x)
    assert trace.nodes["z1"]["value"].shape == (5, D1)


@pytest.mark.parametrize("prior", ["standard_normal", "vamp"])
@pytest.mark.parametrize("num_data, beta", [(None, 1.0), (60, 0.3), (None, 0.0)])
def test_trace_elbo_equals_the_hand_written_elbo(prior, num_data, beta):
    spec = {"name": prior, **({"num_components": 4} if prior == "vamp" else {})}
    m, x = build(prior=spec).double(), binary_data()
    torch.manual_seed(5)
    loss = Trace_ELBO().loss(m.model, m.guide, x, num_data=num_data, beta=beta)
    torch.manual_seed(5)
    eps2, eps1 = standard_normals(len(x), D2), standard_normals(len(x), D1)
    with torch.no_grad():
        log_px, log_pz2, log_pz1, log_qz2, log_qz1 = hand_log_weights(m, x, eps2, eps1, prior)
    scale = (num_data or len(x)) / len(x)
    expected = -scale * (log_px + beta * (log_pz2 + log_pz1 - log_qz2 - log_qz1)).sum()
    assert loss == pytest.approx(float(expected), abs=ATOL, rel=0)


def test_elbo_terms_equal_the_hand_written_terms():
    m, x = build(prior={"name": "vamp", "num_components": 4}).double(), binary_data()
    K = 3
    torch.manual_seed(7)
    terms = elbo_terms(m, x, K)
    torch.manual_seed(7)
    eps2, eps1 = standard_normals(K, len(x), D2), standard_normals(K, len(x), D1)
    with torch.no_grad():
        log_px, log_pz2, log_pz1, log_qz2, log_qz1 = hand_log_weights(m, x, eps2, eps1, "vamp")
    torch.testing.assert_close(terms["reconstruction"], log_px.mean(0), rtol=0, atol=ATOL)
    torch.testing.assert_close(terms["kl"], (log_qz2 + log_qz1 - log_pz2 - log_pz1).mean(0), rtol=0, atol=ATOL)
    torch.testing.assert_close(terms["elbo"], (log_px + log_pz2 + log_pz1 - log_qz2 - log_qz1).mean(0),
                               rtol=0, atol=ATOL)


def test_log_likelihood_is_the_hand_assembled_importance_estimate():
    """log p(x) ~ logsumexp_k [log p(x, z1_k, z2_k) - log q(z1_k, z2_k | x)] - log K, same draws."""
    m, x = build(prior={"name": "vamp", "num_components": 4}).double(), binary_data()
    K = 9
    ll = pyrovae.log_likelihood(m, x, K, seed=3)
    torch.manual_seed(3)
    eps2, eps1 = standard_normals(K, len(x), D2), standard_normals(K, len(x), D1)
    with torch.no_grad():
        log_px, log_pz2, log_pz1, log_qz2, log_qz1 = hand_log_weights(m, x, eps2, eps1, "vamp")
        expected = (log_px + log_pz2 + log_pz1 - log_qz2 - log_qz1).logsumexp(0) - math.log(K)
    assert ll.shape == (len(x),)
    torch.testing.assert_close(ll, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("prior", priors.names())
def test_every_registered_prior_sits_on_z2(prior):
    m = build(prior={"name": prior, **component_options("prior", prior)})
    assert tuple(m.prior().event_shape) == (D2,)
    x = binary_data(dtype=torch.float32)
    loss = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1).loss(m.model, m.guide, x)
    assert math.isfinite(loss)


@pytest.mark.parametrize("guide", guides.names())
def test_every_registered_guide_family_serves_both_latents(guide):
    opts = {"iaf": {"num_flows": 1, "context_dim": 4, "hidden": [8]}}.get(guide, {})
    m = build(guide={"name": guide, **opts})
    x = binary_data(dtype=torch.float32)
    assert math.isfinite(Trace_ELBO().loss(m.model, m.guide, x))
    assert m.guide_z1.latent_dim == D1 and m.guide_z2.latent_dim == D2


def test_conveniences():
    m = build()
    x = binary_data(5, dtype=torch.float32)
    assert m.sample(7).shape == (7, *SHAPE) and 0 <= m.sample(7).min() and m.sample(7).max() <= 1
    assert set(m.sample(7, mean=False).unique().tolist()) <= {0.0, 1.0}
    assert m.reconstruct(x).shape == x.shape
    z1, z2 = m.codes(x)
    assert z1.shape == (5, D1) and z2.shape == (5, D2)
    torch.testing.assert_close(m.code(x), z2)
    torch.testing.assert_close(z2, m.encode(x).mean)
    # decode_mean reads z2: E[x | z1, z2] at z1 = E[z1 | z2], the decoder's sigmoid written out
    z1_mean = m.decoder_z1(z2)[..., :D1]
    logits = m.decoder_x(z1_mean, z2).reshape(5, *SHAPE)
    torch.testing.assert_close(m.decode_mean(z2), torch.sigmoid(logits))
    assert m.latent_dim == D1 and m.data_shape == SHAPE and m.device == torch.device("cpu")
    with pytest.raises(DataError, match="were built for|was built for"):
        m.check_data(torch.zeros(3, 1, 5, 5))
    with pytest.raises(DataError, match="outside the support"):
        m.check_data(torch.full((3, *SHAPE), 0.5))
    # two instances never share parameters through Pyro's param store
    other = build()
    pyro.clear_param_store()
    Trace_ELBO().loss(m.model, m.guide, x)
    Trace_ELBO().loss(other.model, other.guide, x)
    names = list(pyro.get_param_store().keys())
    assert any(n.startswith(m.pyro_name) for n in names) and any(n.startswith(other.pyro_name) for n in names)
    with m.direct_parameters():
        pyro.clear_param_store()
        Trace_ELBO().loss(m.model, m.guide, x)
        assert not list(pyro.get_param_store().keys())


def test_obs_mask_scores_only_the_observed_elements():
    m, x = build().double(), binary_data()
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    guide_trace = poutine.trace(m.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x, obs_mask=mask)
    z1, z2 = guide_trace.nodes["z1"]["value"], guide_trace.nodes["z2"]["value"]
    with torch.no_grad():
        logits = m.decoder_x(z1, z2).reshape(-1, *SHAPE)
        expected = (Bernoulli(logits=logits).log_prob(x) * mask).flatten(1).sum(-1)
    got = model_trace.nodes["x_observed"]["fn"].log_prob(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def train_config(epochs, **train):
    cfg = tiny_config(train={"epochs": epochs, "batch_size": 50, "progress": False,
                             "optimizer": {"name": "adam", "lr": 3e-3}, **train})
    cfg["data"]["options"] = {"num_points": 300, "num_test": 50, "shape": list(SHAPE)}
    cfg["data"]["val_size"] = 50
    cfg["model"] = hvae_section(prior={"name": "vamp", "num_components": 5})
    return cfg


def test_trains_through_the_api_and_resumes_exactly(tmp_path):
    warmup = {"kl_schedule": {"name": "linear", "warmup_epochs": 2.5}}
    cfg = pyrovae.load_config(train_config(3, **warmup))
    splits = pyrovae.load_data(cfg.data)
    pyro.set_rng_seed(0)
    straight = build_model(cfg.model, splits.data_shape)
    history = pyrovae.train(straight, splits, train_config(3, **warmup), run_dir=tmp_path / "straight")
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in history)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    betas = [r["beta"] for r in history]
    assert 0 < betas[0] < betas[1] < 1 == betas[2], betas  # the cut after epoch 1 falls inside the warm-up
    loaded, loaded_cfg, _ = pyrovae.load_run(tmp_path / "straight")
    assert isinstance(loaded, HVAE) and loaded_cfg.model.name == "hvae"
    assert_identical(loaded.state_dict(), straight.state_dict())

    pyro.set_rng_seed(0)
    cut = build_model(cfg.model, splits.data_shape)
    pyrovae.train(cut, splits, train_config(1, **warmup), run_dir=tmp_path / "cut")
    pyro.set_rng_seed(1)  # other initial weights: resume must overwrite them
    resumed = build_model(cfg.model, splits.data_shape)
    pyrovae.train(resumed, splits, train_config(3, **warmup), run_dir=tmp_path / "cut", resume=True)
    a, b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert_identical(a["model"], b["model"])
    assert_identical(a["optimizer"], b["optimizer"])


@pytest.mark.parametrize("model, needle", [
    ({"options": {"z2_dim": 0}}, "option z2_dim must be a positive integer, got 0"),
    ({"options": {"hidden": -3}}, "option hidden must be a positive integer, got -3"),
    ({"options": {"init": "xavier"}}, "unknown init 'xavier'"),
    ({"options": {"z3_dim": 2}}, "has no option 'z3_dim'. Did you mean 'z2_dim'"),
    ({"hierarchy": [{"latent_dim": 2}]}, "model.hierarchy is for the vae model"),
    ({"encoder": {"name": "gated_mlp"}}, "model.encoder is not read by the hvae model"),
    ({"prior": "vamp", "guide": "delta"}, "no usable density"),
    ({"prior": "no_such_prior"}, "unknown prior 'no_such_prior'"),
])
def test_bad_options_are_clear_config_errors(model, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        build(**model)


def test_data_of_the_wrong_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="data_shape must be a tuple of positive sizes"):
        build(shape=(0,))
