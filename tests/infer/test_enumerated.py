"""An enumerated discrete site summed out generically (pyrovae.infer.enumerated),
on a user's two-component mixture that is not M2, against its exact marginal
written out with torch.distributions:

    c ~ Cat(pi),  z ~ N(0, 1),  x | z, c ~ N(w z + mu_c, sigma^2 I)    =>    p(x | c) = N(mu_c, w w^T + sigma^2 I)

The guide is the exact q(z | x, c) and a deliberately wrong q(c | x), so the
summed-out ELBO is log p(x) - KL(q(c|x) || p(c|x)) and the IS estimate is
log p(x) itself for any K."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, MultivariateNormal

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.infer.enumerated import EnumeratedObjective, known_counts
from pyrovae.infer.loglik import elbo_terms, importance_stats
from pyrovae.infer.objectives import build_objective

pyro.enable_validation(True)

SIGMA = 0.5


class TwoComponentMixture(nn.Module):
    """The mixture above, with ``c`` a batch field: observed where given, summed out where not."""

    fields = ("x", "c")
    enumerate_sites = ("c",)
    max_plate_nesting = 1

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.tensor([1.0, -0.5], dtype=torch.float64))
        self.mu = nn.Parameter(torch.randn(2, 2, generator=g, dtype=torch.float64) * 2)
        self.register_buffer("pi", torch.tensor([0.3, 0.7], dtype=torch.float64))
        self.q_c = nn.Linear(2, 2).double()  # a q(c | x) that is not the posterior

    def posterior_z(self, x, c):
        """The exact q(z | x, c) = N(m, s^2)."""
        var = 1.0 / (1.0 + (self.w ** 2).sum() / SIGMA ** 2)
        m = var * ((x - self.mu[c]) * self.w).sum(-1) / SIGMA ** 2
        return dist.Normal(m, var.sqrt())

    def model(self, x, c=None):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(self.pi), obs=c)
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(z[..., None] * self.w + self.mu[c], SIGMA).to_event(1), obs=x)

    def guide(self, x, c=None):
        with pyro.plate("data", x.shape[0]):
            if c is None:
                c = pyro.sample("c", dist.Categorical(logits=self.q_c(x)))
            pyro.sample("z", self.posterior_z(x, c))

    def exact(self, x):
        """log p(x, c) for each component ``(2, B)``, from the marginal Gaussians."""
        with torch.no_grad():
            cov = torch.outer(self.w, self.w) + SIGMA ** 2 * torch.eye(2, dtype=torch.float64)
            return torch.stack([MultivariateNormal(self.mu[c], cov).log_prob(x) + self.pi[c].log() for c in range(2)])


def data(n=9, seed=1):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_the_summed_out_is_log_likelihood_is_the_exact_marginal():
    model, x = TwoComponentMixture(), data()
    exact = torch.logsumexp(model.exact(x), 0)
    stats = importance_stats(model, {"x": x}, 5, seed=0)
    torch.testing.assert_close(stats["log_likelihood"], exact, rtol=0, atol=1e-9)
    assert float(stats["stderr"].max()) < 1e-6  # every weight exact: no spread
    assert pyrovae.log_likelihood(model, x, 3, seed=0).sub(exact).abs().max() < 1e-9


def test_the_summed_out_elbo_is_log_px_less_the_kl_of_the_discrete_guide():
    """With the exact q(z|x,c), ELBO = sum_c q(c|x) [log p(x, c) - log q(c|x)]
    for any number of particles, from elbo_terms and from importance_stats alike."""
    model, x = TwoComponentMixture(), data()
    with torch.no_grad():
        q = Categorical(logits=model.q_c(x)).probs.T  # (2, B)
    log_joint = model.exact(x)
    expected = (q * (log_joint - q.log())).sum(0)
    terms = elbo_terms(model, x, num_particles=3)
    torch.testing.assert_close(terms["elbo"], expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(terms["reconstruction"] - terms["kl"], terms["elbo"], rtol=0, atol=1e-12)
    stats = importance_stats(model, {"x": x}, 4, seed=0)
    torch.testing.assert_close(stats["log_lik"] + stats["log_prior"] - stats["log_q"], expected, rtol=0, atol=1e-9)
    # given c, nothing is summed: the ELBO of the exact q(z|x,c) is log p(x, c)
    c = torch.tensor([0, 1] * 4 + [0])
    given = elbo_terms(model, x, c=c)["elbo"]
    torch.testing.assert_close(given, log_joint.gather(0, c[None])[0], rtol=0, atol=1e-9)


def test_the_reconstruction_term_holds_log_p_x_given_z_c_alone():
    """reconstruction = sum_c q(c|x) E_q(z|x,c)[log p(x | z, c)], in closed form
    for the linear Gaussian: log N(x; w m + mu_c, sigma^2 I) - |w|^2 s^2 / (2 sigma^2);
    log p(c) belongs to the KL term (20000 particles: Monte Carlo error about 0.01)."""
    model, x = TwoComponentMixture(), data(5)
    with torch.no_grad():
        q = Categorical(logits=model.q_c(x)).probs.T
        expected = 0.0
        for c in range(2):
            post = model.posterior_z(x, torch.full((5,), c))
            mean = post.loc[:, None] * model.w + model.mu[c]
            fit = torch.distributions.Normal(mean, SIGMA).log_prob(x).sum(-1)
            expected = expected + q[c] * (fit - (model.w ** 2).sum() * post.scale ** 2 / (2 * SIGMA ** 2))
    torch.manual_seed(0)
    terms = elbo_terms(model, x, num_particles=20000)
    torch.testing.assert_close(terms["reconstruction"], expected, rtol=0, atol=0.05)


def test_the_default_objective_sums_the_site_out_and_observes_it_where_known():
    """TraceEnum_ELBO built generically (no objective of the model's own): a
    batch with c known at some points is the sum of every point's negative
    ELBO, -log p(x_i, c_i) where c_i is known, -ELBO(x_i) where it is not."""
    model, x = TwoComponentMixture(), data(6)
    objective = build_objective({"name": "elbo"}, model)
    assert isinstance(objective, EnumeratedObjective) and objective.partial_field == "c"
    c = torch.tensor([-1, 1, -1, 0, -1, -1])
    known = c >= 0
    with torch.no_grad():
        q = Categorical(logits=model.q_c(x)).probs.T
    log_joint = model.exact(x)
    elbo_unknown = (q * (log_joint - q.log())).sum(0)
    expected = -(elbo_unknown[~known].sum() + log_joint[c[known], known.nonzero().flatten()].sum())
    assert objective.loss(model.model, model.guide, x, c=c) == pytest.approx(float(expected), abs=1e-9)
    assert known_counts(c) == (2, 4) and objective.batch_counts({"x": x, "c": c}) == (2, 4)


def test_two_values_missing_at_once_is_a_clear_error():
    class Two(TwoComponentMixture):
        fields = ("x", "c", "d")
        enumerate_sites = ("c", "d")

    with pytest.raises(pyrovae.ConfigError, match="several fields at once"):
        elbo_terms(Two(), data(2))
