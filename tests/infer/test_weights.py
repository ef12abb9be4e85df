"""The one importance-weighting path (pyrovae.infer.weights) against exact
answers: a mixture of linear-Gaussian models with a discrete label y and a
continuous z, whose marginal p(x) is a mixture of Gaussians. With the exact
posterior q(y, z | x) = p(y | x) p(z | x, y) as the guide every weight is
p(x), so the estimate is exact for every K; y is sampled from the guide
(the documented rule for discrete sites). Also: y observed as a batch field
(log p(x, y)), sites only the model samples, guide-only sites, scales, and
the field checks of log_likelihood / evaluate / impute / encode_data."""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae import ConfigError, DataError, evaluate, log_likelihood
from pyrovae.infer.impute import impute
from pyrovae.infer.weights import trace_pair, weight_terms
from pyrovae.report.latents import draw_samples, encode_data

from helpers import build
from tiny_run import one_thread


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


class LabelledLinearGaussian(torch.nn.Module):
    """y ~ Categorical(pi) over C classes, z ~ N(0, I_d),
    x | y, z ~ N(W z + b_y, sigma^2 I_D), in float64.

    The guide is the exact posterior, worked out by hand:

    - p(y | x) ∝ pi_y N(x; b_y, S) with S = W W^T + sigma^2 I (y sampled from it
      unless it is given);
    - p(z | x, y) = N(mu_y, Sigma), Sigma = (I + W^T W / sigma^2)^-1,
      mu_y = Sigma W^T (x - b_y) / sigma^2.

    ``nuisance``: ``"normal"`` or ``"bernoulli"`` adds a latent site that only
    the model samples; it must cancel out of the weights.
    """

    fields = ("x", "y")

    def __init__(self, C=3, D=4, d=2, sigma=0.5, seed=0, nuisance=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(D, d, generator=g, dtype=torch.float64)
        self.b = 2.0 * torch.randn(C, D, generator=g, dtype=torch.float64)
        self.pi = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
        self.sigma, self.d, self.nuisance = sigma, d, nuisance
        self.S = self.W @ self.W.T + sigma**2 * torch.eye(D, dtype=torch.float64)
        self.Sigma = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + self.W.T @ self.W / sigma**2)

    def component_log_probs(self, x):
        """log pi_y + log N(x; b_y, S): ``(N, C)``; logsumexp over y is log p(x)."""
        mvn = torch.distributions.MultivariateNormal(self.b, self.S)  # batch (C,)
        return self.pi.log() + mvn.log_prob(x[:, None, :])

    def marginal(self, x):
        return torch.logsumexp(self.component_log_probs(x), -1)

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        y = torch.multinomial(self.pi, n, replacement=True, generator=g)
        z = torch.randn(n, self.d, generator=g, dtype=torch.float64)
        noise = self.sigma * torch.randn(n, self.b.shape[1], generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b[y] + noise, y

    def model(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(self.pi), obs=y)
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.d), 1.0).to_event(1))
            if self.nuisance == "normal":
                pyro.sample("nuisance", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            elif self.nuisance == "bernoulli":
                pyro.sample("coin", dist.Bernoulli(x.new_tensor(0.3)))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b[y], self.sigma).to_event(1), obs=x)

    def guide(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=self.component_log_probs(x)))
            mu = ((x - self.b[y]) @ self.W / self.sigma**2) @ self.Sigma  # Sigma is symmetric
            pyro.sample("z", dist.MultivariateNormal(mu, self.Sigma))


@pytest.mark.parametrize("nuisance", [None, "normal", "bernoulli"])
def test_sampled_discrete_label_with_the_exact_posterior_is_exact_for_every_k(nuisance):
    model = LabelledLinearGaussian(nuisance=nuisance)
    x, _ = model.sample_x(30)
    exact = model.marginal(x)
    for k, chunk in [(1, None), (5, 2), (40, None)]:
        r = log_likelihood(model, x, k, chunk_size=chunk, batch_size=7, seed=k, return_stats=True)
        torch.testing.assert_close(r.log_likelihood, exact, atol=1e-9, rtol=0)
        if k > 1:
            assert float(r.stderr.max()) < 1e-5
    # the guide really does sample y: different labels across particles
    pair = trace_pair(model, {"x": x}, num_particles=50)
    assert pair.guide.nodes["y"]["value"].shape == (50, 30)
    assert bool((pair.guide.nodes["y"]["value"] != pair.guide.nodes["y"]["value"][0]).any())


def test_observed_label_as_a_field_gives_the_joint():
    """``log_likelihood(model, x, y=labels)``: y is observed, so the estimate
    is log p(x, y) = log pi_y + log N(x; b_y, S), exactly (the guide is
    p(z | x, y))."""
    model = LabelledLinearGaussian()
    x, y = model.sample_x(25)
    joint = model.component_log_probs(x).gather(1, y[:, None])[:, 0]
    for k in (1, 9):
        torch.testing.assert_close(log_likelihood(model, x, k, batch_size=6, seed=0, y=y), joint, atol=1e-9, rtol=0)
    # evaluate(): an (x, labels) pair, a dict and a keyword all pass y
    for call in (lambda: evaluate(model, (x, y), 4), lambda: evaluate(model, {"x": x, "y": y}, 4),
                 lambda: evaluate(model, x, 4, y=y)):
        result = call()
        torch.testing.assert_close(result.per_point["log_likelihood"], joint, atol=1e-9, rtol=0)


def test_evaluate_a_model_without_conveniences():
    """No reconstruct: no mse/bce (None in the summary). Active units come
    from the guide's continuous site z only; the discrete y is left out."""
    model = LabelledLinearGaussian()
    x, _ = model.sample_x(40)
    result = evaluate(model, x, 3)
    summary = result.summary()
    assert summary["mse"] is None and summary["bce"] is None and "mse" not in result.per_point
    assert summary["latent_units"] == model.d and summary["active_units"] is not None
    torch.testing.assert_close(result.per_point["log_likelihood"], model.marginal(x), atol=1e-9, rtol=0)


def test_unlabelled_pair_gives_no_y():
    """Labels of -1 everywhere (a source without labels) are no field y."""
    model = LabelledLinearGaussian()
    x, _ = model.sample_x(10)
    result = evaluate(model, (x, torch.full((10,), -1)), 2)
    torch.testing.assert_close(result.per_point["log_likelihood"], model.marginal(x), atol=1e-9, rtol=0)


def test_field_errors_name_the_field_and_the_model_fields():
    model = LabelledLinearGaussian()
    x, y = model.sample_x(6)
    with pytest.raises(ConfigError, match=r"'label'.*takes x, y"):
        log_likelihood(model, x, 2, label=y)
    with pytest.raises(ConfigError, match=r"'label'"):
        evaluate(model, x, 2, label=y)
    with pytest.raises(DataError, match="rows"):
        log_likelihood(model, x, 2, y=y[:3])
    with pytest.raises(ConfigError, match="both"):
        evaluate(model, {"x": x, "y": y}, 2, y=y)
    vae = build()
    with pytest.raises(ConfigError, match=r"'y'.*takes x"):
        log_likelihood(vae, vae.sample(2, mean=False), 2, y=y[:2])


class NeedsLabels(LabelledLinearGaussian):
    """The same model with y required (no default in ``model``'s signature)."""

    def model(self, x, y):
        return super().model(x, y)

    def guide(self, x, y):
        return super().guide(x, y)


def test_a_missing_required_field_is_a_data_error():
    model = NeedsLabels()
    x, y = model.sample_x(5)
    with pytest.raises(DataError, match="needs the field"):
        log_likelihood(model, x, 2)
    with pytest.raises(DataError, match="needs the field"):
        evaluate(model, (x, torch.full((5,), -1)), 2)
    assert torch.isfinite(log_likelihood(model, x, 2, y=y)).all()


def test_commands_that_need_a_convenience_say_so():
    model = LabelledLinearGaussian()
    x, _ = model.sample_x(4)
    with pytest.raises(ConfigError, match="sample"):
        draw_samples(model, 3)
    with pytest.raises(ConfigError, match="encode"):
        encode_data(model, x)
    with pytest.raises(ConfigError, match="data_shape"):
        impute(model, x, torch.rand(x.shape) > 0.5)


def test_a_guide_only_site_is_refused():
    model = LabelledLinearGaussian()
    x, _ = model.sample_x(4)
    original = model.guide

    def guide(x, y=None):
        original(x, y)
        pyro.sample("extra", dist.Normal(x.new_zeros(()), 1.0))  # a global auxiliary latent

    model.guide = guide
    with pytest.raises(ConfigError, match="extra"):
        log_likelihood(model, x, 2)


def test_scales_are_not_applied_and_masks_are():
    """beta and num_data scale sites for training; the weights are plain log
    densities, so they do not change. A mask on the data removes exactly
    the masked elements' log-density."""
    vae = build()
    x = vae.sample(5, mean=False)
    with torch.no_grad():
        torch.manual_seed(0)
        plain = weight_terms(trace_pair(vae, {"x": x}, 3))
        torch.manual_seed(0)
        scaled = weight_terms(trace_pair(vae, {"x": x, "beta": 0.3, "num_data": 1000}, 3))
    for a, b in zip(plain, scaled):
        torch.testing.assert_close(a, b)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 0, 0, :4] = False
    with torch.no_grad():
        torch.manual_seed(0)
        pair = trace_pair(vae, {"x": x}, 3, model_fields={"x": x, "obs_mask": mask})
        masked = weight_terms(pair)
        z = pair.guide.nodes["z"]["value"]
        elementwise = vae.decode(z).base_dist.log_prob(x)  # (3, 5, 1, 8, 8)
    torch.testing.assert_close(masked.log_lik, (elementwise * mask).flatten(2).sum(-1))
    torch.testing.assert_close(masked.log_prior, plain.log_prior)
    assert masked.log_weight.shape == (3, 5)


def test_a_single_point_agrees_with_pyros_vectorized_importance_weights():
    """For one data point Pyro's own estimator (which sums over the data
    plate) is an independent check of the same weights. (Pyro keeps the
    density of a model-only site in its weights, so this model has none.)"""
    from pyro.infer.importance import vectorized_importance_weights

    model = LabelledLinearGaussian()
    x, _ = model.sample_x(1)
    torch.manual_seed(0)
    log_w, _, _ = vectorized_importance_weights(model.model, model.guide, x, num_samples=20, max_plate_nesting=1)
    torch.testing.assert_close(log_w, model.marginal(x).expand(20), atol=1e-9, rtol=0)
    torch.testing.assert_close(log_likelihood(model, x, 20, seed=0), model.marginal(x), atol=1e-9, rtol=0)


def test_pyrovae_list_shows_every_registry(capsys):
    """Every Registry a pyrovae module holds is in REGISTRIES, and ``pyrovae list`` prints each."""
    import sys

    from pyrovae.cli import main
    from pyrovae.registry import Registry, all_registries

    listed = all_registries()
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("pyrovae.") and m is not None]
    existing = [v for m in modules for v in vars(m).values() if isinstance(v, Registry)]
    assert len({id(r) for r in existing}) >= 13
    assert {id(r) for r in existing} <= {id(r) for r in listed}, sorted(r.kind for r in existing if r not in listed)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in listed:
        assert f"{registry.kind}s:" in out
    assert "kl_schedules:" in out and "masks:" in out and "imputers:" in out and "models:" in out


def test_exact_result_is_independent_of_the_label_count():
    """Sanity of the oracle itself: with one class the mixture is one Gaussian."""
    model = LabelledLinearGaussian(C=1)
    x, _ = model.sample_x(5)
    g = torch.distributions.MultivariateNormal(model.b[0], model.S)
    torch.testing.assert_close(model.marginal(x), g.log_prob(x))
    assert math.isfinite(float(log_likelihood(model, x, 3).sum()))


def test_public_names():
    assert pyrovae.log_likelihood is log_likelihood
