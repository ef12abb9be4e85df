"""The local_guide capability of every built-in family (the per-point guide
family of pyrovae.inference_gaps), checked against Pyro:

- at its initial parameters, the local guide is the model's own guide:
  traced with the same random seed, it samples the same sites with the same
  shapes, values and log densities;
- the ELBO that inference_gaps gives the initial parameters equals Pyro's own
  Trace_ELBO on the model and its guide (TraceEnum_ELBO with m2's label
  enumerated), point by point, within Monte Carlo error;
- inference_gaps runs on every family: the gaps add up and the local
  optimization never lowers the ELBO.
"""

import pytest
import torch

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

import pyrovae
from pyrovae.data.words import encode_words
from pyrovae.models.cvae import ConditionalVAE
from pyrovae.models.hvae import HVAE
from pyrovae.models.m2 import M2
from pyrovae.models.protocol import MissingCapability

pyro.enable_validation(True)

SHAPE, N, C = (1, 4, 4), 3, 3
FAST_AIS = {"num_steps": 2, "num_chains": 2, "leapfrog_steps": 1}


def _binary():
    return torch.bernoulli(torch.full((N, *SHAPE), 0.4), generator=torch.Generator().manual_seed(3))


def _text_vae():
    cfg = pyrovae.load_config({"model": {"name": "text_vae", "latent_dim": 2,
                                         "options": {"hidden": 8, "embed_dim": 4}}})
    return pyrovae.build_model(cfg.model, data_shape=(6,)), encode_words(["cat", "dog", "ab"], max_length=5).float()


def _family(name):
    """``(model, x, fields)`` for a tiny model of the family ``name``, in eval mode."""
    torch.manual_seed(0)
    x, labels = _binary(), torch.tensor([0, 2, 1])
    if name == "vae":
        model, fields = pyrovae.VAE.from_config({"latent_dim": 2}, SHAPE), {}
    elif name == "vae_hierarchy":
        config = {"latent_dim": 2, "hierarchy": [{"latent_dim": 3}, {"latent_dim": 2}]}
        model, fields = pyrovae.VAE.from_config(config, SHAPE), {}
    elif name == "vae_hierarchy_iaf":
        config = {"latent_dim": 2, "hierarchy": [{"latent_dim": 2, "guide": {"name": "iaf"}}]}
        model, fields = pyrovae.VAE.from_config(config, SHAPE), {}
    elif name == "cvae":
        model, fields = ConditionalVAE.from_config({"latent_dim": 2}, SHAPE, num_classes=C), {"y": labels}
    elif name == "cvae_real":
        model = ConditionalVAE.from_config({"latent_dim": 2}, SHAPE, num_classes=None, condition_dim=2)
        fields = {"y": torch.randn(N, 2, generator=torch.Generator().manual_seed(4))}
    elif name == "m2_labelled":
        model, fields = M2.from_config({"latent_dim": 2}, SHAPE, num_classes=C), {"y": labels}
    elif name == "m2_unlabelled":
        model, fields = M2.from_config({"latent_dim": 2}, SHAPE, num_classes=C), {}
    elif name == "hvae":
        model, fields = HVAE.from_config({"latent_dim": 2}, SHAPE, z2_dim=2, hidden=8, init="default"), {}
    else:
        assert name == "text_vae"
        (model, x), fields = _text_vae(), {}
    return model.eval(), x, fields


FAMILIES = ["vae", "vae_hierarchy", "vae_hierarchy_iaf", "cvae", "cvae_real", "m2_labelled", "m2_unlabelled",
            "hvae", "text_vae"]


def _sample_sites(trace):
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_parameters_have_one_row_per_point_and_are_detached(name):
    model, x, fields = _family(name)
    params, guide_fn = model.local_guide(x, **fields)
    assert params and all(v.shape[0] == N and not v.requires_grad for v in params.values())
    assert callable(guide_fn)


@pytest.mark.parametrize("name", FAMILIES)
def test_at_its_initial_parameters_the_local_guide_is_the_models_guide(name):
    model, x, fields = _family(name)
    params, guide_fn = model.local_guide(x, **fields)
    with torch.no_grad():
        pyro.set_rng_seed(11)
        own = poutine.trace(model.guide).get_trace(x, **fields)
        pyro.set_rng_seed(11)
        local = poutine.trace(guide_fn).get_trace(params, x, **fields)
    own_sites, local_sites = _sample_sites(own), _sample_sites(local)
    assert list(local_sites) == list(own_sites) and own_sites
    for site, a in own_sites.items():
        b = local_sites[site]
        assert a["value"].shape == b["value"].shape, site
        assert torch.allclose(a["value"], b["value"], atol=1e-6), site
        lp_a, lp_b = a["fn"].log_prob(a["value"]), b["fn"].log_prob(b["value"])
        assert lp_a.shape == lp_b.shape == (N,), site
        assert torch.allclose(lp_a, lp_b, atol=1e-5), site


def _pyro_elbo(model, x, fields, num_particles):
    """Per point ``(N,)``: -loss of Pyro's Trace_ELBO on the model and its own
    guide, one point at a time; TraceEnum_ELBO with ``y`` enumerated where the
    model enumerates a label that is not given."""
    enumerated = set(getattr(model, "enumerate_sites", ())) - set(fields)

    def config(site):
        return {"enumerate": "parallel"} if site["name"] in enumerated else {}

    if enumerated:
        elbo = TraceEnum_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    else:
        elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    model_fn, guide_fn = poutine.infer_config(model.model, config), poutine.infer_config(model.guide, config)
    with torch.no_grad():
        return torch.tensor([-elbo.loss(model_fn, guide_fn, x[i:i + 1], **{k: v[i:i + 1] for k, v in fields.items()})
                             for i in range(len(x))])


@pytest.mark.parametrize("name", FAMILIES)
def test_the_initial_elbo_is_pyros_elbo_of_the_models_guide(name):
    model, x, fields = _family(name)
    gaps = pyrovae.inference_gaps(model, x, num_samples=4000, max_steps=0, seed=0, ais_options=FAST_AIS, **fields)
    pyro.set_rng_seed(5)
    reference = _pyro_elbo(model, x, fields, 4000).to(gaps.elbo_amortized)
    assert torch.allclose(gaps.elbo_amortized, reference, atol=0.12), (gaps.elbo_amortized, reference)
    assert (gaps.amortization_gap == 0).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_inference_gaps_add_up_on_every_family(name):
    model, x, fields = _family(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gaps = pyrovae.inference_gaps(model, x, num_samples=200, lr=0.05, max_steps=30, seed=0, ais_options=FAST_AIS,
                                  **fields)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(t.shape == (N,) and t.isfinite().all() for t in (gaps.log_px, gaps.elbo_optimized))
    assert (gaps.amortization_gap >= 0).all() and (gaps.elbo_optimized >= gaps.elbo_amortized).all()
    assert torch.allclose(gaps.approximation_gap + gaps.amortization_gap, gaps.inference_gap, atol=1e-5)
    assert torch.allclose(gaps.log_px - gaps.elbo_amortized, gaps.inference_gap, atol=1e-5)
    assert gaps.amortization_gap.sum() > 0  # 30 steps of Adam from an untrained encoder find something


class NoLocalGuide(torch.nn.Module):
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).expand([x.shape[-1]]).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def _char_lm():
    cfg = pyrovae.load_config({"model": {"name": "char_lm", "options": {"hidden": 8, "embed_dim": 4}}})
    return pyrovae.build_model(cfg.model, data_shape=(6,)), encode_words(["cat"], max_length=5).float()


@pytest.mark.parametrize("make", [lambda: (NoLocalGuide(), torch.zeros(3, 2)), _char_lm], ids=["user", "char_lm"])
def test_a_model_without_local_guide_is_refused_in_one_line(make):
    model, x = make()
    with pytest.raises(MissingCapability, match="local_guide") as err:
        pyrovae.inference_gaps(model, x)
    assert "\n" not in str(err.value) and "inference_gaps" in str(err.value)


def test_m2_parameters_made_without_labels_take_labels_and_those_made_with_labels_need_them():
    model, x, _ = _family("m2_unlabelled")
    params, guide_fn = model.local_guide(x)
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():  # each point's z features at its class: the labelled guide's
        given = poutine.trace(guide_fn).get_trace(params, x, y=labels).nodes["z"]["fn"]
        labelled_params, labelled_fn = model.local_guide(x, y=labels)
        assert "y" not in labelled_params
        own = poutine.trace(labelled_fn).get_trace(labelled_params, x, y=labels).nodes["z"]["fn"]
    assert torch.allclose(given.mean, own.mean) and torch.allclose(given.stddev, own.stddev)
    with pytest.raises(pyrovae.DataError, match="pass their y"):
        labelled_fn(labelled_params, x)
    with pytest.raises(pyrovae.DataError, match="missing"):
        model.local_guide(x, y=torch.tensor([0, -1, 1]))
