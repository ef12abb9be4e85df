"""Models with a plate inside the data plate (tests/plated_models.py: pixels
in their own plate, a plate over time steps with a latent per step) through
every path that places particles or sums per-point densities: importance
sampling (log_likelihood, evaluate), imputation, the elbo, meanfield and
iwae objectives, and pyrovae.train.

Oracles:

- both models are linear-Gaussian, so with the exact posterior as the guide
  every importance weight equals p(x), whose Gaussian density is written
  out (log_likelihood for every K, the iwae loss);
- each model written with ``.to_event`` inside a one-dim data plate (the
  layout pyrovae has always handled) draws the same noise in the same
  order, so under the same seed every number must agree with the plated
  layout's: per-point estimates, imputations, losses, gradients and whole
  training runs.
"""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.infer.evaluate import elbo_terms
from pyrovae.infer.impute import impute
from pyrovae.infer.objectives import build_objective, objectives
from pyrovae.infer.plates import plate_nesting
from pyrovae.models import build_model

import plated_models  # noqa: F401  (registers the test models)
from helpers import build, tiny_config
from plated_models import PixelPlateModel, TimePlateModel
from tiny_run import one_thread

MODELS = {"pixels": PixelPlateModel, "time": TimePlateModel}


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def make(kind, layout, exact=False, D=6, d=2):
    model = MODELS[kind]((D,), d, layout).double()
    if exact:
        model.set_exact_posterior()
    return model


def pair(kind, exact=False):
    """The plated and the ``.to_event`` layout of one model, with equal parameters."""
    plated, event = make(kind, "plate", exact), make(kind, "event", exact)
    event.load_state_dict(plated.state_dict())
    return plated, event


def data(model, n=9, seed=1):
    torch.manual_seed(seed)
    return model.exact_marginal().sample((n,))


@pytest.mark.parametrize("kind, layout, nesting", [("pixels", "plate", 2), ("pixels", "event", 1),
                                                   ("time", "plate", 2), ("time", "event", 1)])
def test_the_nesting_is_read_from_a_trace_without_drawing_noise(kind, layout, nesting):
    model = make(kind, layout)
    x = data(model)
    state = torch.get_rng_state()
    assert plate_nesting(model.model, model.guide, (x,)) == nesting
    assert torch.equal(torch.get_rng_state(), state)
    vae = build()
    assert plate_nesting(vae.model, vae.guide, (vae.sample(2),)) == 1


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("layout", ["plate", "event"])
def test_importance_sampling_with_the_exact_guide_is_the_exact_marginal(kind, layout):
    model = make(kind, layout, exact=True)
    x = data(model)
    exact = model.exact_marginal().log_prob(x)
    for k, chunk in [(1, None), (7, 3)]:
        ll = pyrovae.log_likelihood(model, x, k, batch_size=4, chunk_size=chunk, seed=k)
        torch.testing.assert_close(ll, exact, atol=1e-9, rtol=0)
    result = pyrovae.evaluate(model, x, 5, seed=0)
    torch.testing.assert_close(result.per_point["log_likelihood"], exact, atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_estimates_and_imputations_equal_the_to_event_layout(kind):
    plated, event = pair(kind)
    x = data(plated).clamp(0, 1)  # imputation fills hidden elements with the bottom of the range
    runs = []
    for model in (plated, event):
        stats = pyrovae.log_likelihood(model, x, 20, batch_size=4, chunk_size=6, seed=3, return_stats=True)
        per_point = pyrovae.evaluate(model, x, 8, seed=4).per_point
        torch.manual_seed(5)
        terms = elbo_terms(model, x, 3)
        mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) > 0.4
        imputed = [impute(model, x, mask, method, seed=6) for method in
                   ({"name": "importance", "num_particles": 10}, {"name": "gibbs", "steps": 5, "burn_in": 1})]
        runs.append((stats, per_point, terms, imputed))
    (s1, p1, t1, i1), (s2, p2, t2, i2) = runs
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert set(p1) == set(p2)
    for key in p1:
        torch.testing.assert_close(p1[key], p2[key], atol=1e-10, rtol=1e-10)
    for key in t1:
        torch.testing.assert_close(t1[key], t2[key], atol=1e-10, rtol=1e-10)
    for a, b in zip(i1, i2):
        torch.testing.assert_close(a.mean, b.mean, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(a.draw, b.draw, atol=1e-10, rtol=1e-10)
        for key in a.diagnostics:
            torch.testing.assert_close(a.diagnostics[key], b.diagnostics[key], atol=1e-10, rtol=1e-10)


def loss_and_grads(objective, model, x, seed, **kwargs):
    torch.manual_seed(seed)
    loss = objective.differentiable_loss(model.model, model.guide, x, **kwargs)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return float(loss.detach()), grads


OBJECTIVES = [{"name": "elbo"}, {"name": "elbo", "num_particles": 3}, {"name": "meanfield", "num_particles": 2},
              {"name": "iwae", "num_particles": 4}, {"name": "iwae", "num_particles": 4, "vectorize_particles": False}]


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("spec", OBJECTIVES, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("num_data", [None, 90])
def test_objectives_equal_the_to_event_layout(kind, spec, num_data):
    plated, event = pair(kind)
    x = data(plated)
    loss_p, grads_p = loss_and_grads(objectives.build(spec), plated, x, 7, num_data=num_data, beta=0.7)
    loss_e, grads_e = loss_and_grads(objectives.build(spec), event, x, 7, num_data=num_data, beta=0.7)
    assert loss_p == pytest.approx(loss_e, abs=1e-9, rel=1e-12)
    assert set(grads_p) == set(grads_e) and grads_p
    for name in grads_p:
        torch.testing.assert_close(grads_p[name], grads_e[name], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("num_data", [None, 90])
def test_iwae_with_the_exact_guide_is_the_exact_marginal(kind, num_data):
    model = make(kind, "plate", exact=True)
    x = data(model)
    loss = objectives.build({"name": "iwae", "num_particles": 5}).loss(model.model, model.guide, x, num_data=num_data)
    scale = (num_data or len(x)) / len(x)
    assert loss == pytest.approx(float(-scale * model.exact_marginal().log_prob(x).sum()), abs=1e-8, rel=1e-12)


def plated_config(name, layout, objective):
    cfg = tiny_config(data={"name": "synthetic", "val_size": 100, "binarize": "none",
                            "options": {"shape": [12], "num_points": 400}},
                      train={"epochs": 2, "batch_size": 50, "progress": False, "objective": objective})
    cfg["model"] = {"name": name, "latent_dim": 2, "plugins": ["plated_models"], "options": {"layout": layout}}
    return pyrovae.load_config(cfg)


@pytest.mark.parametrize("name", ["test_pixel_plate", "test_time_plate"])
@pytest.mark.parametrize("objective", [{"name": "elbo"}, {"name": "elbo", "num_particles": 2},
                                       {"name": "iwae", "num_particles": 3}],
                         ids=lambda s: "-".join(map(str, s.values())))
def test_training_equals_the_to_event_layout(name, objective):
    """pyrovae.train, validation included, from equal weights under the same seed."""
    histories = []
    for layout in ("plate", "event"):
        cfg = plated_config(name, layout, objective)
        splits = pyrovae.load_data(cfg.data)
        model = build_model(cfg.model, splits.data_shape)
        pyro.set_rng_seed(0)
        histories.append(pyrovae.train(model, splits, cfg))
    for a, b in zip(*histories):
        for key in ("train_loss", "val_loss", "val_reconstruction", "val_kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert all(math.isfinite(r["val_loss"]) for r in histories[0])


def test_build_objective_learns_the_nesting_of_the_model():
    cfg = plated_config("test_pixel_plate", "plate", {"name": "elbo", "num_particles": 3})
    model = build_model(cfg.model, (12,))
    objective = build_objective(cfg.train.objective, model)
    x = torch.rand(5, 12)
    objective.loss(model.model, model.guide, x)
    assert objective.max_plate_nesting == 3  # two plates, and the particles' own


class TwoUnnamedPlates(torch.nn.Module):
    """Two plates, neither named "data": which one holds the points is unknown."""

    def model(self, x):
        with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", x.shape[1], dim=-1):
            pyro.sample("z", dist.Normal(x / 2, 0.7))


def test_several_plates_none_named_data_are_refused():
    model = TwoUnnamedPlates()
    with pytest.raises(ConfigError, match="none is named 'data'"):
        pyrovae.log_likelihood(model, torch.randn(4, 3), 3)
