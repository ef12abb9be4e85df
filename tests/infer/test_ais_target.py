"""AIS's tempered target (pyrovae.infer.hmc.Target) against Pyro's own log
densities, traced one chain at a time (``Trace.compute_log_prob``), for
families whose guides take each of the target's paths:

- vae, cvae, m2 with labels: the guide's one latent site is traced once per
  chunk and reused at every evaluation;
- a hierarchical vae and hvae: the upper guide sites read the lower ones, so
  the guide is traced at every evaluation;
- every model here runs without the particles plate after the first
  evaluation (it gives the same numbers); one that fails without it keeps it.

Both the values and the gradient that HMC follows are checked, at the guide's
draw (where the reusable part is built) and at a second point.
"""

import pytest
import torch

import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample

import pyrovae
from pyrovae.infer.hmc import Target
from pyrovae.infer.loglik import evaluation_mode
from pyrovae.models.cvae import ConditionalVAE
from pyrovae.models.hvae import HVAE
from pyrovae.models.m2 import M2

pyro.enable_validation(True)

SHAPE, N, CHAINS, BETA = (1, 4, 4), 3, 4, 0.3


def _family(name):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((N, *SHAPE), 0.4), generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 2, 1])
    if name == "vae":
        model, fields = pyrovae.VAE.from_config({"latent_dim": 2}, SHAPE), {}
    elif name == "vae_hierarchy":
        model, fields = pyrovae.VAE.from_config({"latent_dim": 2, "hierarchy": [{"latent_dim": 3}]}, SHAPE), {}
    elif name == "cvae":
        model, fields = ConditionalVAE.from_config({"latent_dim": 2}, SHAPE, num_classes=3), {"y": labels}
    elif name == "m2_labelled":
        model, fields = M2.from_config({"latent_dim": 2}, SHAPE, num_classes=3), {"y": labels}
    else:
        assert name == "hvae"
        model, fields = HVAE.from_config({"latent_dim": 2}, SHAPE, z2_dim=2, hidden=8, init="default"), {}
    return model.eval(), x, fields


def _log_densities(trace):
    trace.compute_log_prob()
    return {name: site["log_prob"] for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("_deterministic")}


def pyro_terms(model, x, fields, z):
    """``(log q(z | x), log p(z), log p(x | z))`` ``(C, B)``, each chain traced alone without a particles plate."""
    rows = []
    for c in range(CHAINS):
        zc = {k: v[c] for k, v in z.items()}
        guide = _log_densities(poutine.trace(poutine.condition(model.guide, data=zc)).get_trace(x, **fields))
        joint = _log_densities(poutine.trace(poutine.condition(model.model, data=zc)).get_trace(x, **fields))
        rows.append((sum(guide.values()), sum(v for k, v in joint.items() if k in zc),
                     sum(v for k, v in joint.items() if k not in zc)))
    return tuple(torch.stack(column) for column in zip(*rows))


@pytest.mark.parametrize("name", ["vae", "cvae", "m2_labelled", "vae_hierarchy", "hvae"])
def test_the_scores_and_their_gradient_are_pyros(name):
    model, x, fields = _family(name)
    with evaluation_mode(model, None, torch.device("cpu")):
        target = Target(model, {"x": x, **fields}, None, CHAINS, "guide")
        start = target.initial()
        moved = {k: v + 0.3 * torch.randn_like(v) for k, v in start.items()}
        for z in (start, moved):
            with torch.enable_grad():
                u = target.pack(z).requires_grad_(True)
                scores = target.scores(u)
                (grad,) = torch.autograd.grad((target.log_density(BETA, scores) + scores[3]).sum(), u)
                leaves = {k: v.detach().requires_grad_(True) for k, v in z.items()}
                log_q, log_prior, log_lik = pyro_terms(model, x, fields, leaves)
                tempered = (1 - BETA) * log_q + BETA * (log_prior + log_lik)
                expected = torch.autograd.grad(tempered.sum(), list(leaves.values()))
            for got, want in zip(scores[:3], (log_q, log_prior, log_lik)):
                torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
            assert float(scores[3].abs().max()) == 0.0  # real latents: no Jacobian
            torch.testing.assert_close(grad, target.pack(dict(zip(leaves, expected))), rtol=1e-4, atol=1e-5)
        assert target._model_plated == {0: False}  # the second point ran the model without the plate


def test_a_model_that_needs_the_particles_plate_keeps_it(monkeypatch):
    model, x, fields = _family("vae")
    original = Target._trace_model

    def needs_plate(self, z, kwargs, plated):
        if not plated:
            raise ValueError("Shape mismatch inside plate('data')")
        return original(self, z, kwargs, plated)

    monkeypatch.setattr(Target, "_trace_model", needs_plate)
    with evaluation_mode(model, None, torch.device("cpu")):
        target = Target(model, {"x": x}, None, CHAINS, "guide")
        u = target.pack(target.initial())
        first, again = target.scores(u), target.scores(u)
    assert target._model_plated == {0: True}
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
