"""The ``iwae`` objective (pyrovae.infer.iwae.IWAE) against a hand-written
float64 computation under the same noise:

    loss = -(N / B) Σ_i [logsumexp_k log w_ik - log K],
    log w_ik = log p(x_i | z_ik) + beta (log p(z_ik) - log q(z_ik | x_i)),

loss and gradients, with and without ``num_data``; and, without
``num_data``, against Pyro's own ``RenyiELBO(alpha=0)``, which is the same
estimator there (with ``num_data`` Pyro scales each site before the
logsumexp and computes a power mean of the weights instead).
"""

import math

import pytest
import torch
from torch.distributions import Normal

import pyro
import pyro.distributions as dist
from pyro.infer import RenyiELBO

from pyrovae.errors import ConfigError
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.objectives import objectives

from test_objectives import binary_data, double_vae, one_layer_log_weights, standard_normals

ATOL = 1e-8


def gradients(vae):
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in vae.parameters()]
    vae.zero_grad()
    return grads


def hand_written_loss(vae, x, k, seed, num_data=None, beta=1.0):
    """-(N/B) Σ_i [logsumexp_k log w_ik - log K] from torch.distributions, with
    the standard normals drawn as the guide draws them; differentiable."""
    eps = standard_normals(k, x.shape[0], vae.latent_dim, seed=seed)
    log_lik, log_p, log_q, _ = one_layer_log_weights(vae, x, eps)
    log_w = log_lik + beta * (log_p - log_q)  # (K, B)
    scale = (num_data or x.shape[0]) / x.shape[0]
    return -scale * (torch.logsumexp(log_w, 0) - math.log(k)).sum(), log_w


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("num_data, beta", [(None, 1.0), (70, 1.0), (None, 0.4), (70, 0.4), (700, 2.0)])
def test_iwae_equals_the_hand_written_per_point_bound(k, num_data, beta):
    vae, x = double_vae(), binary_data()  # B = 7
    seed = 11
    torch.manual_seed(seed)
    loss = objectives.build({"name": "iwae", "num_particles": k}).differentiable_loss(
        vae.model, vae.guide, x, num_data=num_data, beta=beta)
    loss.backward()
    ours = gradients(vae)
    expected, _ = hand_written_loss(vae, x, k, seed, num_data, beta)
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=ATOL, rel=1e-12)
    for a, b in zip(ours, gradients(vae)):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)


def test_with_num_data_the_bound_is_scaled_once_not_raised_to_a_power():
    """B = 7 of N = 70, K = 5: (N/B) Σ_i log mean_k w_ik, not Σ_i log mean_k w_ik^(N/B),
    the power mean that a scale applied to every site before the logsumexp gives."""
    vae, x = double_vae(), binary_data()
    torch.manual_seed(0)
    loss = objectives.build({"name": "iwae", "num_particles": 5}).loss(vae.model, vae.guide, x, num_data=70)
    with torch.no_grad():
        expected, log_w = hand_written_loss(vae, x, 5, 0, num_data=70)
        power_mean = -(torch.logsumexp(10 * log_w, 0) - math.log(5)).sum()
    assert loss == pytest.approx(float(expected), abs=ATOL, rel=1e-12)
    assert abs(float(expected) - float(power_mean)) > 10.0  # tens of nats apart: a real difference


@pytest.mark.parametrize("k, beta", [(2, 1.0), (6, 1.0), (6, 0.3)])
def test_without_num_data_it_is_pyros_renyi_elbo(k, beta):
    """The same loss and the same gradients as RenyiELBO(alpha=0) under the same noise (one plate)."""
    vae, x = double_vae(), binary_data()
    torch.manual_seed(3)
    renyi = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    pyro_loss = renyi.loss_and_grads(vae.model, vae.guide, x, beta=beta)
    pyro_grads = gradients(vae)
    torch.manual_seed(3)
    loss = IWAE(num_particles=k).loss_and_grads(vae.model, vae.guide, x, beta=beta)
    assert loss == pytest.approx(pyro_loss, abs=1e-9, rel=1e-12)
    for a, b in zip(gradients(vae), pyro_grads):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_particles_drawn_one_trace_at_a_time_give_the_same_bound():
    """``vectorize_particles=False``: K traces of B points each, the draws
    taken in that order, against the same hand-written bound."""
    vae, x = double_vae(), binary_data()
    torch.manual_seed(2)
    looped = IWAE(4, vectorize_particles=False).loss(vae.model, vae.guide, x, num_data=35)
    torch.manual_seed(2)
    shape = (x.shape[0], vae.latent_dim)
    eps = torch.stack([Normal(torch.zeros(shape, dtype=torch.float64), 1.0).rsample() for _ in range(4)])
    with torch.no_grad():
        log_lik, log_p, log_q, _ = one_layer_log_weights(vae, x, eps)
    expected = -5.0 * (torch.logsumexp(log_lik + log_p - log_q, 0) - math.log(4)).sum()
    assert looped == pytest.approx(float(expected), abs=ATOL, rel=1e-12)


def test_the_nesting_is_learned_once_without_drawing_noise():
    """The objective finds the model's plate nesting at its first call, on a
    forked generator: the loss uses the same draws as a hand-written one
    seeded just before the call."""
    vae, x = double_vae(), binary_data()
    objective = IWAE(3)
    assert objective.max_plate_nesting is None
    torch.manual_seed(8)
    loss = objective.loss(vae.model, vae.guide, x)
    assert objective.max_plate_nesting == 1
    with torch.no_grad():
        expected, _ = hand_written_loss(vae, x, 3, 8)
    assert loss == pytest.approx(float(expected), abs=ATOL, rel=1e-12)


class GlobalLatent(torch.nn.Module):
    """A latent shared by every data point: there is no per-point bound."""

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(self, x):
        pyro.sample("mu", dist.Normal(x.mean(), 1.0))


class DiscreteGuide(torch.nn.Module):
    """A Bernoulli latent drawn without rsample: no pathwise gradient."""

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("c", dist.Bernoulli(torch.sigmoid(x)))


@pytest.mark.parametrize("model, match", [(GlobalLatent(), "outside the data plate"), (DiscreteGuide(), "rsample")])
def test_what_the_bound_cannot_score_is_refused(model, match):
    x = torch.randn(4)
    with pytest.raises(ConfigError, match=match):
        IWAE(3).loss(model.model, model.guide, x)
