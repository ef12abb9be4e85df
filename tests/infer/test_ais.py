"""AIS and BDMC (pyrovae.infer.ais) against marginals computed another way:

- linear-Gaussian z ~ N(0, I), x | z ~ N(W z + b, s^2 I): p(x) = N(b, W W^T + s^2 I) in closed form;
- a two-component mixture with its label summed out (tests/infer/test_enumerated.py): p(x) in closed form;
- a Gamma scale latent, whose unconstrained map has a Jacobian: p(x) by Gauss-Legendre quadrature.
"""

import torch
from torch import nn

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.infer import ais, hmc

from oracles import gauss_legendre
from test_enumerated import TwoComponentMixture, data as mixture_data
from user_models import LinearGaussianVAE

pyro.enable_validation(True)

FAST = dict(num_chains=16, leapfrog_steps=3, batch_size=40)


def assert_close_on_average(estimate, exact, tolerance=0.05):
    """The mean error over points is within ``tolerance`` nats or three of its standard errors, whichever is larger."""
    error = estimate - exact
    mc_error = 3 * float(error.std()) / len(error) ** 0.5
    assert abs(float(error.mean())) < max(tolerance, mc_error), (float(error.mean()), mc_error)


def linear_gaussian(poor=True, seed=0, n=40):
    torch.manual_seed(seed)
    model = LinearGaussianVAE(5, 2).double()
    if poor:  # a guide that ignores x, shifted and too wide
        with torch.no_grad():
            model.encoder.weight.zero_()
            model.encoder.bias.fill_(1.0)
            model.log_scale.fill_(0.7)
    x = model.marginal().sample((n,))
    return model, x, model.marginal().log_prob(x)


def test_ais_recovers_the_exact_marginal_where_importance_sampling_misses_it():
    model, x, exact = linear_gaussian()
    is_error = (pyrovae.log_likelihood(model, x, 10, seed=0) - exact).mean()
    assert is_error < -1.0
    stats = pyrovae.ais_log_likelihood(model, x, num_steps=200, seed=0, return_stats=True, **FAST)
    assert abs(float((stats.log_likelihood - exact).mean())) < 0.05
    assert stats.log_likelihood.shape == stats.acceptance.shape == stats.step_size.shape == (40,)
    assert 0.4 < float(stats.acceptance.mean()) < 0.95  # adapted toward 0.65


def test_ais_from_the_prior_tempers_only_the_likelihood():
    model, x, exact = linear_gaussian()
    ll = pyrovae.ais_log_likelihood(model, x, num_steps=150, init="prior", seed=1, **FAST)
    assert abs(float((ll - exact).mean())) < 0.1


def test_with_the_exact_posterior_as_guide_every_chain_gives_the_exact_value():
    torch.manual_seed(0)
    model = LinearGaussianVAE(4, 2).double()
    w = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64))[0] * torch.tensor([1.5, 0.7], dtype=torch.float64)
    model.set_exact_posterior(w)
    x = model.marginal().sample((6,))
    stats = pyrovae.ais_log_likelihood(model, x, num_steps=3, seed=0, return_stats=True, **FAST)
    torch.testing.assert_close(stats.log_likelihood, model.marginal().log_prob(x), rtol=0, atol=1e-9)
    assert float(stats.chain_std.max()) < 1e-9  # each increment (β_t - β_t-1)(log p(x, z) - log q(z|x)) is constant
    out = pyrovae.bdmc(model, 6, seed=0, data_shape=(4,), num_steps=3, **FAST)  # the reverse chains too
    exact = model.marginal().log_prob(out.x)
    torch.testing.assert_close(out.lower, exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.upper, exact, rtol=0, atol=1e-9)


def test_bdmc_brackets_the_exact_value_and_the_gap_shrinks_with_more_steps():
    model, _, _ = linear_gaussian()
    gaps = []
    for steps in (10, 100):
        out = pyrovae.bdmc(model, 40, seed=0, data_shape=(5,), num_steps=steps, **FAST)
        exact = model.marginal().log_prob(out.x)
        for bound, sign in ((out.lower, 1), (out.upper, -1)):
            error = bound - exact
            mc_error = 3 * float(error.std()) / len(error) ** 0.5  # three standard errors of the mean
            assert sign * float(error.mean()) < mc_error, (steps, sign, float(error.mean()), mc_error)
        gaps.append(out.gap)
    assert gaps[1] < 0.5 * gaps[0] and gaps[1] < 0.5


def test_an_enumerated_site_is_summed_out_exactly_inside_the_target():
    model, x = TwoComponentMixture(), mixture_data(40)
    with torch.no_grad():  # components close enough that HMC moves between the posterior's two modes in z
        model.mu.mul_(0.3)
    exact = torch.logsumexp(model.exact(x), 0)
    for init in ("guide", "prior"):
        assert_close_on_average(pyrovae.ais_log_likelihood(model, x, num_steps=100, init=init, seed=0, **FAST), exact)


class GammaScale(nn.Module):
    """s ~ Gamma(2, 2), x | s ~ N(0, s^2 I_3), with a guide LogNormal(0, 1) that ignores x."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Gamma(torch.tensor(2.0, dtype=x.dtype), 2.0))
            pyro.sample("x", dist.Normal(0.0, s[:, None] if s.dim() == 1 else s[..., None]).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("s", dist.LogNormal(torch.zeros(x.shape[0], dtype=x.dtype), 1.0))

    @staticmethod
    def exact(x):
        nodes, weights = gauss_legendre(1e-4, 12.0, 400)
        nodes, weights = nodes.double(), weights.double()
        log_p = dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 2.0).log_prob(nodes)[:, None] + \
            dist.Normal(0.0, nodes[:, None, None]).log_prob(x).sum(-1)
        return torch.logsumexp(log_p + weights.log()[:, None], 0)


def test_a_constrained_latent_is_moved_in_unconstrained_space_with_its_jacobian():
    g = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.2, 2.5, 40, dtype=torch.float64)[:, None]
    x = scale * torch.randn(40, 3, generator=g, dtype=torch.float64)
    exact = GammaScale.exact(x)
    assert abs(float((pyrovae.log_likelihood(GammaScale(), x, 2000, seed=0) - exact).mean())) < 0.05  # quadrature ok
    error = pyrovae.ais_log_likelihood(GammaScale(), x, num_steps=100, seed=0, **FAST) - exact
    assert abs(float(error.mean())) < 0.05
    assert float(error.pow(2).mean().sqrt()) < 0.2  # each point, not only the average


def test_the_estimate_draws_fresh_noise_not_the_adaptation_pass(monkeypatch):
    model, x, _ = linear_gaussian()
    drawn = []

    def recorded(u):
        r = torch.randn_like(u)
        drawn.append(r)
        return r

    monkeypatch.setattr(hmc, "momentum", recorded)
    steps = 4
    pyrovae.ais_log_likelihood(model, x, num_steps=steps, seed=0, **FAST)
    moves = steps - 1
    assert len(drawn) == 2 * moves
    for adapting, estimating in zip(drawn[:moves], drawn[moves:]):
        assert not torch.equal(adapting, estimating)


def test_the_schedules_and_bad_options():
    for name in ais.SCHEDULES:
        betas = ais.schedule_betas(name, 10)
        assert betas[0] == 0.0 and betas[-1] == 1.0 and all(b > a for a, b in zip(betas, betas[1:]))
    model, x, _ = linear_gaussian()
    for bad in ({"init": "posterior"}, {"schedule": "cosine"}, {"num_steps": 0}):
        try:
            pyrovae.ais_log_likelihood(model, x, **bad)
        except pyrovae.ConfigError as e:
            assert str(next(iter(bad.values()))) in str(e)
        else:
            raise AssertionError(f"{bad} was accepted")
