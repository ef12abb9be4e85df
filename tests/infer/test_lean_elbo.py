"""``LeanTraceELBO`` (the ``elbo`` objective the trainer runs) against
Pyro's own ``Trace_ELBO``: under the same seed both must return the same
loss and the same gradient, to 1e-6, for every registered prior, likelihood
and guide, with mini-batch scaling, beta, element masks and a hierarchy.
Where its lean path does not apply it must be ``Trace_ELBO`` itself."""

import pytest
import torch

import pyro
from pyro.infer import Trace_ELBO

from pyrovae.components.guides import guides
from pyrovae.components.likelihoods import likelihoods
from pyrovae.components.priors import priors
from pyrovae.infer.objectives import LeanTraceELBO, objectives
from pyrovae.models.base import unregistered

from helpers import build, component_options

TOL = 1e-6


def spec(kind, name):
    return {"name": name, **component_options(kind, name)}


def loss_and_grads(elbo, vae, x, seed, **kwargs):
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with unregistered(vae):
        loss = elbo.differentiable_loss(vae.model, vae.guide, x, **kwargs)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}


def assert_same_estimate(vae, x, **kwargs):
    # validation off: the lean path's own condition (Pyro's validation sends it to Trace_ELBO)
    with pyro.validation_enabled(False):
        lean = loss_and_grads(LeanTraceELBO(max_plate_nesting=1), vae, x, 11, **kwargs)
        pyro_ = loss_and_grads(Trace_ELBO(max_plate_nesting=1), vae, x, 11, **kwargs)
    assert lean[0] == pytest.approx(pyro_[0], abs=TOL * max(1.0, abs(pyro_[0])), rel=0)
    assert lean[1].keys() == pyro_[1].keys() and lean[1]
    for name in pyro_[1]:
        assert torch.allclose(lean[1][name], pyro_[1][name], atol=TOL, rtol=1e-6), name
    # where the guide draws noise, another seed gives another loss: the comparison is not vacuous
    if draws_noise(vae, x):
        with pyro.validation_enabled(False):
            other = loss_and_grads(Trace_ELBO(max_plate_nesting=1), vae, x, 12, **kwargs)
        assert other[0] != pytest.approx(pyro_[0], abs=1e-9)


def draws_noise(vae, x):
    codes = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            codes.append(vae.guide(x))
    return not torch.equal(*codes)


def double_model(**model):
    return build(**model).double()


def model_data(vae, n=6):
    torch.manual_seed(0)
    return vae.sample(n, mean=False).double()


@pytest.mark.parametrize("name", priors.names())
def test_same_as_trace_elbo_for_each_prior(name):
    vae = double_model(prior=spec("prior", name))
    assert_same_estimate(vae, model_data(vae))


@pytest.mark.parametrize("name", likelihoods.names())
def test_same_as_trace_elbo_for_each_likelihood(name):
    vae = double_model(likelihood=spec("likelihood", name))
    assert_same_estimate(vae, model_data(vae))


@pytest.mark.parametrize("name", guides.names())
def test_same_as_trace_elbo_for_each_guide(name):
    vae = double_model(guide=spec("guide", name))
    assert_same_estimate(vae, model_data(vae))


@pytest.mark.parametrize("num_data, beta", [(60, 1.0), (None, 0.25), (30, 3.0)])
def test_same_as_trace_elbo_with_minibatch_scale_and_beta(num_data, beta):
    vae = double_model()
    assert_same_estimate(vae, model_data(vae), num_data=num_data, beta=beta)


def test_same_as_trace_elbo_with_an_element_mask_and_a_hierarchy():
    hierarchy = [{"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}]
    vae = double_model(hierarchy=hierarchy)
    x = model_data(vae)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.6
    assert_same_estimate(vae, x, obs_mask=mask)


def test_the_elbo_objective_is_the_lean_one():
    assert isinstance(objectives.build("elbo"), LeanTraceELBO)


def test_other_cases_go_through_trace_elbo(monkeypatch):
    """Validation on, or several particles: Trace_ELBO's own differentiable_loss runs."""
    calls = []
    original = Trace_ELBO.differentiable_loss

    def spy(self, *args, **kwargs):
        calls.append(self.num_particles)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trace_ELBO, "differentiable_loss", spy)
    vae = double_model()
    x = model_data(vae)
    with pyro.validation_enabled(False):
        LeanTraceELBO(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
        assert calls == []
        LeanTraceELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    with pyro.validation_enabled(True):
        LeanTraceELBO(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    assert calls == [2, 1]


def test_a_score_function_guide_site_goes_through_trace_elbo():
    """A guide site drawn without rsample needs Trace_ELBO's surrogate term."""
    import pyro.distributions as dist

    def model(x):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(p), obs=x)

    class NonReparamBeta(dist.Beta):
        has_rsample = False

        def sample(self, sample_shape=()):
            with torch.no_grad():
                return super().rsample(sample_shape)

    a = torch.tensor(3.0, requires_grad=True)

    def guide(x):
        pyro.sample("p", NonReparamBeta(a, 2.0))

    x = torch.tensor([1.0, 0.0, 1.0])

    def grad(elbo):
        a.grad = None
        torch.manual_seed(3)
        elbo.differentiable_loss(model, guide, x).backward()
        return a.grad.clone()

    with pyro.validation_enabled(False):
        lean, reference = grad(LeanTraceELBO()), grad(Trace_ELBO())
    assert torch.allclose(lean, reference, atol=1e-6) and float(reference) != 0
