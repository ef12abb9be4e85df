"""Importance-sampled log-likelihoods and the evaluation report, checked
against known answers: the exact marginal of linear-Gaussian models (one
and two latent sites), the bounds IS >= ELBO and monotonicity in K,
chunking invariance, and every registered component."""

import math

import pytest
import torch
import torch.nn.functional as F

import pyro
import pyro.distributions as dist
from pyro.infer import Trace_ELBO

import pyrovae
from pyrovae import VAE, log_likelihood, evaluate
from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer.evaluate import ISResult, elbo_terms, log_prob_terms
from pyrovae.components.guides import guides
from pyrovae.components.likelihoods import likelihoods
from pyrovae.components.priors import Prior, priors, register_prior

from helpers import build, component_options
from tiny_run import one_thread


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


# -- linear-Gaussian models with a known marginal ---------------------------------


def inv_softplus(y):
    return y + torch.log(-torch.expm1(-y))


def orthogonal_columns(D, scales, seed=0):
    """A (D, d) matrix with orthogonal columns of the given norms, so W^T W is diagonal."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, len(scales), generator=g, dtype=torch.float64))
    return q * torch.tensor(scales, dtype=torch.float64)


def linear_gaussian_vae(W, b, sigma, prior=None):
    """x = W z + b + sigma * eps in pyrovae's own components (float64):
    an mlp decoder with no hidden layer, a normal likelihood with a fixed scale."""
    D, d = W.shape
    cfg = {
        "latent_dim": d,
        "encoder": {"name": "mlp", "hidden": []},
        "decoder": {"name": "mlp", "hidden": []},
        "likelihood": {"name": "normal", "scale_mode": "fixed", "scale": sigma},
        "guide": {"name": "normal", "min_scale": 0.0},
    }
    if prior is not None:
        cfg["prior"] = prior
    vae = VAE.from_config(cfg, data_shape=(D,)).double()
    with torch.no_grad():
        vae.likelihood.log_scale.fill_(math.log(sigma))  # built in float32; exact in float64
        vae.decoder.net[0].weight.copy_(W)
        vae.decoder.net[0].bias.copy_(b)
    return vae


def exact_marginal(W, b, sigma, m=0.0, s=1.0):
    """p(x) for z ~ N(m, s^2 I): N(b + W m, s^2 W W^T + sigma^2 I)."""
    D, d = W.shape
    loc = b + W @ torch.full((d,), float(m), dtype=W.dtype)
    cov = s**2 * W @ W.T + sigma**2 * torch.eye(D, dtype=W.dtype)
    return torch.distributions.MultivariateNormal(loc, cov)


def set_exact_posterior_guide(vae, W, b, sigma, m=0.0, s=1.0):
    """The guide's encoder set to the exact posterior (diagonal when W has
    orthogonal columns): Sigma = (I/s^2 + W^T W/sigma^2)^-1,
    mu = Sigma (m/s^2 + W^T (x - b)/sigma^2)."""
    D, d = W.shape
    precision = torch.eye(d, dtype=W.dtype) / s**2 + W.T @ W / sigma**2
    assert torch.allclose(precision, torch.diag(torch.diagonal(precision)))
    post_var = 1.0 / torch.diagonal(precision)
    A = post_var[:, None] * W.T / sigma**2  # (d, D)
    c = post_var * (m / s**2) - A @ b
    lin = vae.encoder.net[0]
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:d] = A
        lin.bias[:d] = c
        lin.bias[d:] = inv_softplus(post_var.sqrt())


def test_exact_posterior_guide_gives_the_exact_marginal_for_every_k():
    W = orthogonal_columns(6, [1.5, 0.8, 0.3])
    b = torch.linspace(-1, 1, 6, dtype=torch.float64)
    sigma = 0.4
    vae = linear_gaussian_vae(W, b, sigma)
    set_exact_posterior_guide(vae, W, b, sigma)
    marginal = exact_marginal(W, b, sigma)
    x = marginal.sample((25,))
    exact = marginal.log_prob(x)
    for k, chunk in [(1, None), (7, 3), (64, None)]:
        r = log_likelihood(vae, x, k, chunk_size=chunk, seed=k, return_stats=True)
        assert isinstance(r, ISResult)
        assert r.log_likelihood.shape == (25,)
        torch.testing.assert_close(r.log_likelihood, exact, atol=1e-9, rtol=0)
        if k > 1:  # the weights have zero variance
            torch.testing.assert_close(r.ess, torch.full_like(r.ess, k), atol=1e-6, rtol=0)
            assert float(r.stderr.max()) < 1e-5


def test_user_registered_prior_is_used_exactly():
    """A prior registered from outside the package: its density enters the
    weights (with the exact posterior guide the estimate is exact)."""

    class ShiftedNormal(Prior):
        """N(loc, scale^2 I)."""

        def __init__(self, latent_dim, loc=1.0, scale=2.0):
            super().__init__(latent_dim)
            self.register_buffer("loc", torch.full((latent_dim,), float(loc)))
            self.register_buffer("scale", torch.full((latent_dim,), float(scale)))

        def dist(self):
            return dist.Normal(self.loc, self.scale).to_event(1)

    register_prior("test_shifted_normal", ShiftedNormal)
    try:
        W = orthogonal_columns(5, [1.2, 0.5], seed=1)
        b = torch.zeros(5, dtype=torch.float64)
        sigma, m, s = 0.5, 1.0, 2.0
        vae = linear_gaussian_vae(W, b, sigma, prior={"name": "test_shifted_normal", "loc": m, "scale": s})
        set_exact_posterior_guide(vae, W, b, sigma, m=m, s=s)
        marginal = exact_marginal(W, b, sigma, m=m, s=s)
        x = marginal.sample((10,))
        ll = log_likelihood(vae, x, 16, seed=0)
        torch.testing.assert_close(ll, marginal.log_prob(x), atol=1e-9, rtol=0)
    finally:
        priors.unregister("test_shifted_normal")


def test_trained_guide_converges_to_the_exact_marginal():
    """A correlated posterior (W's columns not orthogonal), so the diagonal
    guide is not exact; after training it, IS with K in the thousands is
    within a few hundredths of a nat of log p(x), and K = 1 is not."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(5, 2, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    sigma = 0.5
    vae = linear_gaussian_vae(W, b, sigma)
    marginal = exact_marginal(W, b, sigma)
    x = marginal.sample((64,))
    exact = marginal.log_prob(x)
    opt = torch.optim.Adam(vae.encoder.parameters(), lr=0.05)
    loss_fn = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    for _ in range(250):
        opt.zero_grad()
        loss_fn.differentiable_loss(vae.model, vae.guide, x).backward()
        opt.step()
    elbo = elbo_terms(vae, x, num_particles=200)["elbo"]
    assert float((exact - elbo).mean()) > 0.05  # the guide is not the posterior
    err_k1 = (log_likelihood(vae, x, 1, seed=0) - exact).mean().abs()
    ll = log_likelihood(vae, x, 3000, seed=0)
    err = (ll - exact).mean().abs()
    assert float(err) < 0.03, float(err)
    assert float(err) < float(err_k1)


# -- models with several latent sites ----------------------------------------------


class TwoLevelLinearGaussian(torch.nn.Module):
    """z1 ~ N(0, 1), z2 | z1 ~ N(z1, t^2), x | z2 ~ N(w z2 + b, sigma^2 I),
    with the exact posterior q(z1 | x) q(z2 | z1, x) as its guide, so every
    importance weight equals p(x). ``nuisance`` adds a latent site that
    only the model samples: it must drop out of the weights."""

    def __init__(self, w, b, sigma, t, nuisance=False):
        super().__init__()
        self.w, self.b, self.sigma, self.t, self.nuisance = w, b, sigma, t, nuisance
        prior_cov = torch.tensor([[1.0, 1.0], [1.0, 1.0 + t**2]], dtype=w.dtype)
        H = torch.stack([torch.zeros_like(w), w], -1)  # x = H (z1, z2) + b + noise
        post_cov = torch.linalg.inv(torch.linalg.inv(prior_cov) + H.T @ H / sigma**2)
        self.gain = post_cov @ H.T / sigma**2  # posterior mean = gain (x - b)
        self.s1 = post_cov[0, 0].sqrt()
        self.slope = post_cov[1, 0] / post_cov[0, 0]
        self.s2 = (post_cov[1, 1] - post_cov[1, 0] ** 2 / post_cov[0, 0]).sqrt()

    def marginal(self):
        D = self.w.shape[0]
        cov = (1 + self.t**2) * torch.outer(self.w, self.w) + self.sigma**2 * torch.eye(D, dtype=self.w.dtype)
        return torch.distributions.MultivariateNormal(self.b, cov)

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1, self.t).to_event(1))
            if self.nuisance:
                pyro.sample("nuisance", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z2 * self.w + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            mean = (x - self.b) @ self.gain.T  # (B, 2)
            m1, m2 = mean[..., :1], mean[..., 1:]
            z1 = pyro.sample("z1", dist.Normal(m1, self.s1).to_event(1))
            pyro.sample("z2", dist.Normal(m2 + self.slope * (z1 - m1), self.s2).to_event(1))


@pytest.mark.parametrize("nuisance", [False, True])
def test_two_latent_sites_exact(nuisance):
    w = torch.tensor([1.0, -0.5, 0.8, 0.3], dtype=torch.float64)
    model = TwoLevelLinearGaussian(w, torch.tensor([0.1, 0.2, -0.3, 0.0], dtype=torch.float64), 0.6, 0.7, nuisance)
    x = model.marginal().sample((20,))
    r = log_likelihood(model, x, 50, chunk_size=20, seed=0, return_stats=True)
    torch.testing.assert_close(r.log_likelihood, model.marginal().log_prob(x), atol=1e-9, rtol=0)
    assert float(r.stderr.max()) < 1e-5


def test_hierarchical_vae_estimate_equals_the_hand_assembled_weights():
    if "hierarchy" not in ModelConfig.__dataclass_fields__:
        pytest.skip("this version has no hierarchical VAE")
    vae = build(hierarchy=[{"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]},
                            "decoder": {"name": "mlp", "hidden": [8]}}])
    x = vae.sample(5, mean=False)
    k, layer = 4, vae.upper[0]
    ll = log_likelihood(vae, x, k, chunk_size=k, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():  # q(z1|x) q(z2|z1) against p(z2) p(z1|z2) p(x|z1), by hand
        q1 = vae.encode(x)
        z1 = q1.sample((k,))
        q2 = layer.encode(z1)
        z2 = q2.sample()
        log_w = (vae.decode(z1).log_prob(x) + layer.decode(z2).log_prob(z1) + vae.prior().log_prob(z2)
                 - q1.log_prob(z1) - q2.log_prob(z2))
    torch.testing.assert_close(ll, torch.logsumexp(log_w, 0) - math.log(k), rtol=1e-5, atol=1e-4)


# -- bounds and chunking ---------------------------------------------------------


def binary_vae_and_data(n=200, seed=0):
    torch.manual_seed(seed)
    vae = VAE.from_config(
        {"latent_dim": 4, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}},
        data_shape=(16,),
    )
    x = (torch.rand(n, 16, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
    return vae, x


def test_is_bounds_the_elbo_and_rises_with_k():
    vae, x = binary_vae_and_data()
    elbo = float(elbo_terms(vae, x, num_particles=200)["elbo"].mean())
    means = {k: float(log_likelihood(vae, x, k, seed=k).mean()) for k in (1, 10, 100)}
    tol = 0.05
    assert abs(means[1] - elbo) < 0.15  # K = 1: an unbiased estimate of the ELBO
    assert means[10] > means[1] + tol and means[100] > means[10] + tol, means
    assert means[100] > elbo + tol
    # with the same samples, logmeanexp >= mean for every point (Jensen)
    result = evaluate(vae, x, 20, seed=1)
    pp = result.per_point
    assert bool((pp["log_likelihood"] >= pp["elbo"] - 1e-5).all())


def test_chunking_gives_the_same_estimate_within_monte_carlo_error():
    vae, x = binary_vae_and_data(n=40)
    a = log_likelihood(vae, x, 300, batch_size=40, chunk_size=300, seed=0, return_stats=True)
    b = log_likelihood(vae, x, 300, batch_size=7, chunk_size=13, seed=1, return_stats=True)
    se = (a.stderr**2 + b.stderr**2).sqrt()  # per point, of the difference
    assert bool(((a.log_likelihood - b.log_likelihood).abs() < 5 * se).all())
    mean_se = float(se.pow(2).sum().sqrt()) / len(x)
    assert abs(float(a.log_likelihood.mean() - b.log_likelihood.mean())) < 4 * mean_se


def test_compiled_log_densities_agree_with_eager():
    vae, x = binary_vae_and_data(n=10)
    eager = log_likelihood(vae, x, 8, seed=0)
    compiled = log_likelihood(vae, x, 8, seed=0, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-4)


def test_streaming_logsumexp_is_exact():
    """Chunked K, combined by the streaming logsumexp, equals one logsumexp
    over the same draws (the seed fixes the draws)."""
    vae, x = binary_vae_and_data(n=12)
    ll = log_likelihood(vae, x, 30, batch_size=12, chunk_size=10, seed=5)
    torch.manual_seed(5)
    with torch.no_grad():
        parts = [log_prob_terms(vae, x, 10) for _ in range(3)]
    log_w = torch.cat([t["log_lik"] + t["log_prior"] - t["log_q"] for t in parts])
    torch.testing.assert_close(ll, torch.logsumexp(log_w, 0) - math.log(30))


def test_seeded_run_is_repeatable_and_leaves_the_global_rng_alone():
    vae, x = binary_vae_and_data(n=10)
    state = torch.get_rng_state()
    a = log_likelihood(vae, x, 20, seed=3)
    b = log_likelihood(vae, x, 20, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, log_likelihood(vae, x, 20, seed=4))


def test_training_mode_is_restored():
    vae, x = binary_vae_and_data(n=4)
    vae.train()
    log_likelihood(vae, x, 2)
    assert vae.training


# -- every registered component ----------------------------------------------------


def check_against_the_components(vae, x, k, seed=11):
    """The IS estimate assembled by hand from the components' own
    distributions, with no Pyro trace: z_k ~ q(z|x) under the same seed,
    log w = log p(x|z) + log p(z) - log q(z|x), and logsumexp_k log w - log K.
    (The densities themselves are checked against quadrature and formulas in
    test_densities.py.)"""
    ll = log_likelihood(vae, x, k, chunk_size=k, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        q = vae.encode(x)
        z = q.sample((k,))  # (K, N, latent_dim), as the guide draws in the particles plate
        log_w = vae.decode(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(ll, torch.logsumexp(log_w, 0) - math.log(k), rtol=1e-5, atol=1e-4)


def spec(kind, name):
    return {"name": name, **component_options(kind, name)}


COMPONENTS = (
    [("prior", n) for n in priors.names()]
    + [("likelihood", n) for n in likelihoods.names()]
    + [("guide", n) for n in guides.names()]
)


@pytest.mark.parametrize("kind,name", COMPONENTS, ids=[f"{k}-{n}" for k, n in COMPONENTS])
def test_every_registered_component(kind, name):
    vae = build(latent_dim=2, **{kind: spec(kind, name)})
    x = vae.sample(6, mean=False)  # inside the likelihood's support, whatever it is
    for k in (1, 5):
        check_against_the_components(vae, x, k)
    r = log_likelihood(vae, x, 5, chunk_size=2, seed=0, return_stats=True)
    assert r.log_likelihood.shape == r.stderr.shape == r.ess.shape == (6,)
    assert torch.isfinite(r.log_likelihood).all()
    assert bool(((r.ess >= 1 - 1e-4) & (r.ess <= 5 + 1e-4)).all())
    result = evaluate(vae, x, 3)
    summary = result.summary()
    assert summary["num_points"] == 6 and summary["latent_units"] == 2
    for key in ("log_likelihood", "elbo", "kl", "reconstruction", "mse"):
        assert math.isfinite(summary[key]), key
    torch.testing.assert_close(result.per_point["elbo"], result.per_point["reconstruction"] - result.per_point["kl"])


# -- evaluate(): active units and reconstruction errors ------------------------------


def test_active_units_and_reconstruction_errors_have_known_values():
    """Two of four latent units ignore the input (zero encoder weights):
    Cov_x(E_q[z]) is 0 for them and the variance of x_j for the others."""
    D, d = 6, 4
    vae = VAE.from_config(
        {"latent_dim": d, "encoder": {"name": "mlp", "hidden": []}, "decoder": {"name": "mlp", "hidden": []},
         "likelihood": {"name": "normal", "scale_mode": "fixed", "scale": 0.5}},
        data_shape=(D,),
    )
    lin = vae.encoder.net[0]
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[2, 0] = 1.0
        lin.weight[3, 1] = 0.05  # variance 0.05^2 * var(x_1) < 1e-2: inactive
        lin.weight[1, 2] = 2.0
    x = torch.randn(300, D, generator=torch.Generator().manual_seed(0))
    result = evaluate(vae, x, 4, seed=0)
    expected = torch.stack([torch.zeros(300), 2.0 * x[:, 2], x[:, 0], 0.05 * x[:, 1]], -1).var(0, correction=0)
    torch.testing.assert_close(result.latent_variance, expected, rtol=1e-4, atol=1e-7)
    assert result.active_units == 2
    with torch.no_grad():
        mse = (vae.reconstruct(x) - x).pow(2).mean(-1)
    torch.testing.assert_close(result.per_point["mse"], mse)
    assert "bce" not in result.per_point and result.summary()["bce"] is None  # data outside [0, 1]


#: what eval.json holds for the image families (m2 adds its classification error and labelled points)
IMAGE_SUMMARY_KEYS = {
    "active_threshold", "active_units", "bce", "conditioned_on", "elbo", "ess", "kl", "latent_units",
    "log_likelihood", "log_likelihood_mc_error", "log_likelihood_se_over_points", "mse", "num_points",
    "num_samples", "reconstruction", "summed_out",
    "pareto_k_mean", "pareto_k_max", "share_pareto_k_above_0_7",  # the IS diagnostics (PSIS)
}


@pytest.mark.parametrize("name, extra", [("vae", set()), ("cvae", set()), ("m2", {"classification_error", "labelled_points"}),
                                         ("hvae", set())])
def test_image_families_keep_their_summary_keys(name, extra):
    options = {"options": {"num_classes": 4}} if name in ("cvae", "m2") else {"options": {"hidden": 8}} if name == "hvae" else {}
    cfg = pyrovae.load_config({"model": {"name": name, "latent_dim": 2, **options}})
    model = pyrovae.build_model(cfg.model, (1, 8, 8))
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    fields = {"y": torch.tensor([0, 1, 2, 3])} if options.get("options", {}).get("num_classes") else {}
    summary = evaluate(model, x, 2, **fields).summary()
    assert set(summary) == IMAGE_SUMMARY_KEYS | extra
    assert summary["mse"] is not None and summary["bce"] is not None


def test_codes_get_the_model_s_reconstruction_error_not_a_squared_error():
    """A text model's reconstructions are codes: no mse/bce, but the share of
    characters (and end symbols) the greedy reconstruction gets wrong,
    counted here on the strings."""
    from pyrovae.data.words import encode_words

    cfg = pyrovae.load_config({"model": {"name": "text_vae", "latent_dim": 2, "options": {"hidden": 8, "embed_dim": 4}}})
    model = pyrovae.build_model(cfg.model, (7,))
    words = ["cat", "horse", "ox", "emu"]
    x = encode_words(words, 6)
    result = evaluate(model, x, 2)
    summary = result.summary()
    assert summary["mse"] is None and summary["bce"] is None and set(summary) == IMAGE_SUMMARY_KEYS | {"char_error_rate", "reconstruction_error_names"}
    assert summary["reconstruction_error_names"] == ["char_error_rate"]
    rebuilt = model.to_text(model.reconstruct(x))
    expected = [(sum(a != b for a, b in zip(w + "$", (r + "$" + " " * 6)[: len(w) + 1]))) / (len(w) + 1)
                for w, r in zip(words, rebuilt)]  # "$" stands for the end symbol
    torch.testing.assert_close(result.per_point["char_error_rate"], torch.tensor(expected))
    assert summary["char_error_rate"] == pytest.approx(sum(expected) / len(expected))


def test_bce_for_binary_data():
    vae, x = binary_vae_and_data(n=30)
    result = evaluate(vae, x, 2)
    with torch.no_grad():
        rec = vae.reconstruct(x)
    bce = F.binary_cross_entropy(rec, x, reduction="none").sum(-1)
    torch.testing.assert_close(result.per_point["bce"], bce, rtol=1e-4, atol=1e-4)
    s = result.summary()
    assert s["log_likelihood_mc_error"] > 0 and s["log_likelihood_se_over_points"] > 0
    assert s["num_samples"] == 2


def test_elbo_terms_keeps_its_contract():
    vae, x = binary_vae_and_data(n=8)
    t = elbo_terms(vae, x)
    assert set(t) == {"elbo", "reconstruction", "kl"} and all(v.shape == (8,) for v in t.values())
    torch.testing.assert_close(t["elbo"], t["reconstruction"] - t["kl"])


def test_public_api_exports():
    assert pyrovae.log_likelihood is log_likelihood and pyrovae.evaluate is evaluate
    assert "log_likelihood" in pyrovae.__all__ and "evaluate" in pyrovae.__all__


# -- bad input -------------------------------------------------------------------------


def test_bad_input_gets_clear_errors():
    vae, x = binary_vae_and_data(n=4)
    with pytest.raises(ConfigError, match="num_samples must be an integer >= 1"):
        log_likelihood(vae, x, 0)
    with pytest.raises(ConfigError, match="num_samples"):
        log_likelihood(vae, x, 2.5)
    with pytest.raises(ConfigError, match="chunk_size"):
        log_likelihood(vae, x, 2, chunk_size=0)
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(vae, x, 2, batch_size=-1)
    with pytest.raises(DataError, match=r"shape \(8,\).*\(16,\)"):
        log_likelihood(vae, x[:, :8], 2)
    with pytest.raises(DataError, match="support"):
        log_likelihood(vae, x * 0.5 + 0.25, 2)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        log_likelihood(vae, bad, 2)
    with pytest.raises(DataError, match="at least one point"):
        log_likelihood(vae, x[:0], 2)
    with pytest.raises(DataError, match="torch.Tensor"):
        log_likelihood(vae, x.numpy(), 2)


# -- the reported standard error against the spread over seeds ------------------------


def test_reported_stderr_matches_the_spread_over_seeds():
    """Over 40 seeds, the standard deviation of the IS estimates of each point
    agrees with the stderr that log_likelihood reports (pooled over 12
    points, within 30%). The guide is the exact posterior with its scale
    inflated 1.4x and its mean shifted, so the weights vary but have finite
    variance."""
    W = orthogonal_columns(5, [1.3, 0.6])
    b = torch.linspace(-0.5, 0.5, 5, dtype=torch.float64)
    vae = linear_gaussian_vae(W, b, 0.3)
    set_exact_posterior_guide(vae, W, b, 0.3)
    lin = vae.encoder.net[0]
    with torch.no_grad():
        lin.bias[:2] += 0.1
        lin.bias[2:] = inv_softplus(1.4 * F.softplus(lin.bias[2:]))
    x = exact_marginal(W, b, 0.3).sample((12,))
    runs = [log_likelihood(vae, x, 50, seed=s, return_stats=True) for s in range(40)]
    estimates = torch.stack([r.log_likelihood for r in runs])  # (seeds, points)
    reported = torch.stack([r.stderr for r in runs])
    assert float(estimates.std(0).min()) > 1e-3  # the estimates really vary
    ratio = float(estimates.var(0).mean().sqrt() / reported.pow(2).mean().sqrt())
    assert 0.7 < ratio < 1.3, ratio
