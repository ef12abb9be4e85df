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


# -- Pyro's autoguides, blocked sites, nested plates, subsampling ------------------------
#
# Every pair is scored by Trace_ELBO and by LeanTraceELBO under the same seed, both
# through differentiable_loss and through loss_and_grads (what SVI.step calls), with
# validation off and on: the same loss and the same gradient of every parameter, or
# the same error where Trace_ELBO refuses the pair.

import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.infer import autoguide

AUTOGUIDES = ["AutoNormal", "AutoDiagonalNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal",
              "AutoIAFNormal", "AutoNormalMessenger", "AutoHierarchicalNormalMessenger", "AutoDelta"]

#: Pyro's messenger guides: both traces come from the guide, never a replayed model
MESSENGER_GUIDES = {"AutoNormalMessenger", "AutoHierarchicalNormalMessenger"}

POINTS = torch.tensor([[0.3, -1.2, 0.8], [1.5, 0.1, -0.4], [-0.7, 0.9, 2.1], [0.0, -0.3, 0.6],
                       [2.2, 1.1, -1.5], [-1.1, 0.4, 0.2], [0.9, -2.0, 1.3]], dtype=torch.float64)


def global_local_model(x, subsample_size=None):
    """7 points × 3 features: a global loc and scale, a local z per point
    (the outer plate, dim -2, optionally subsampled), observations in a
    features plate nested inside (dim -1), a deterministic and a factor site."""
    loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
    scale = pyro.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=x.dtype), 1.0))
    pyro.deterministic("spread", 2 * scale)
    pyro.factor("shrink", -0.1 * loc ** 2)
    with pyro.plate("data", len(x), subsample_size=subsample_size, dim=-2) as index:
        z = pyro.sample("z", dist.Normal(loc, scale))
        with pyro.plate("features", x.shape[1], dim=-1):
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[index])


CASES = {
    "global and local": ({}, None),
    "subsampled": ({"subsample_size": 4}, None),
    "a blocked site": ({}, ["scale"]),
}


def make_guide(name, hide):
    model = global_local_model if hide is None else poutine.block(global_local_model, hide=hide)
    options = {"hidden_dim": [12]} if name == "AutoIAFNormal" else {}
    return getattr(autoguide, name)(model, **options)


def autoguide_run(elbo, guide, kwargs, seed, method):
    """``(loss, {param name: grad})`` of one call of ``method`` under ``seed``."""
    store = pyro.get_param_store()
    for name in store.keys():
        store.get_param(name).unconstrained().grad = None
    pyro.set_rng_seed(seed)
    if method == "differentiable_loss":
        loss = elbo.differentiable_loss(global_local_model, guide, POINTS, **kwargs)
        loss.backward()
        loss = float(loss.detach())
    else:
        loss = elbo.loss_and_grads(global_local_model, guide, POINTS, **kwargs)
    grads = {name: store.get_param(name).unconstrained().grad for name in store.keys()}
    return loss, {name: g.clone() for name, g in grads.items() if g is not None}


def outcome(elbo, guide, kwargs, seed, method):
    try:
        return autoguide_run(elbo, guide, kwargs, seed, method)
    except Exception as error:  # noqa: BLE001 - the refusal itself is compared
        return type(error), str(error).splitlines()[0]


@pytest.mark.filterwarnings("ignore:Found vars in model but not guide")  # the blocked site, as intended
@pytest.mark.parametrize("validation", [False, True], ids=["validation-off", "validation-on"])
@pytest.mark.parametrize("method", ["differentiable_loss", "loss_and_grads"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", AUTOGUIDES)
def test_same_as_trace_elbo_for_each_autoguide(name, case, method, validation):
    kwargs, hide = CASES[case]
    torch.set_default_dtype(torch.float64)
    try:
        guide = make_guide(name, hide)
        with pyro.validation_enabled(validation):
            pyro.set_rng_seed(0)
            try:
                guide(POINTS, **kwargs)  # its parameters, created from the model's draws
            except Exception:  # noqa: BLE001 - a guide that refuses the case: both ELBOs must refuse alike
                pass
            reference = outcome(Trace_ELBO(), guide, kwargs, 5, method)
            lean = outcome(LeanTraceELBO(), guide, kwargs, 5, method)
            other_seed = outcome(Trace_ELBO(), guide, kwargs, 6, method)
    finally:
        torch.set_default_dtype(torch.float32)
    if isinstance(reference[0], type):
        assert lean == reference
        return
    assert lean[0] == pytest.approx(reference[0], rel=1e-12, abs=1e-12)
    assert lean[1].keys() == reference[1].keys() and reference[1]
    for param in reference[1]:
        assert torch.allclose(lean[1][param], reference[1][param], rtol=1e-12, atol=1e-12), param
    if name != "AutoDelta":  # a point-mass guide draws nothing: the same loss at any seed
        assert other_seed[0] != pytest.approx(reference[0], abs=1e-9)


def test_messenger_guides_take_trace_elbo_and_the_right_loss():
    """The messenger guide's own traces: the observed site is scored once, in
    the model, as Trace_ELBO does (a replayed model scores it in the guide too)."""
    guide = autoguide.AutoNormalMessenger(global_local_model)
    x = POINTS.float()
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(0)
        guide(x)
        pyro.set_rng_seed(1)
        lean = float(LeanTraceELBO().differentiable_loss(global_local_model, guide, x).detach())
        pyro.set_rng_seed(1)
        reference = Trace_ELBO().loss(global_local_model, guide, x)
    assert lean == pytest.approx(reference, rel=1e-6)


def test_a_log_prob_error_names_the_site_as_pyro_does():
    """A user's bug keeps its traceback and Pyro's message naming the site."""
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            # a value outside the support: the distribution's own check raises in log_prob
            pyro.sample("obs", dist.Bernoulli(logits=z, validate_args=True), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    x = torch.tensor([0.0, 1.0, 2.0])
    messages = []
    for elbo in (Trace_ELBO(), LeanTraceELBO()):
        with pyro.validation_enabled(False), pytest.raises(ValueError, match="Error while computing log_prob at site 'obs'") as error:
            elbo.differentiable_loss(model, guide, x)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_a_nan_loss_warns_as_pyro_does():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(float("nan"))), 1.0))

    with pyro.validation_enabled(False), pytest.warns(UserWarning, match="Encountered NaN: loss"):
        LeanTraceELBO().differentiable_loss(model, guide)


def test_the_lean_path_runs_for_callable_autoguides(monkeypatch):
    """Where it applies, the lean path runs: the comparisons above are not Trace_ELBO against itself."""
    def refuse(*args, **kwargs):
        raise AssertionError("handed off to Trace_ELBO")

    monkeypatch.setattr(Trace_ELBO, "differentiable_loss", refuse)
    monkeypatch.setattr(Trace_ELBO, "loss_and_grads", refuse)
    guide = autoguide.AutoNormal(global_local_model)
    x = POINTS.float()
    with pyro.validation_enabled(False):
        guide(x)
        LeanTraceELBO().differentiable_loss(global_local_model, guide, x)
        LeanTraceELBO().loss_and_grads(global_local_model, guide, x)
