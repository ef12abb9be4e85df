"""The inference gaps (pyrovae.inference_gaps) on a linear-Gaussian VAE built
from pyrovae's own ``vae`` family (a linear decoder, a fixed-scale normal
likelihood, an affine encoder), where everything is known in closed form:

- z ~ N(0, I), x | z ~ N(W z + b, s^2 I): p(x) = N(b, W W^T + s^2 I);
- the posterior is N(m, S) with precision P = I + W^T W / s^2 and
  m = S W^T (x - b) / s^2;
- the best diagonal Gaussian has mean m and variances 1 / diag(P), so
  L[q*] = log p(x) - KL(q* || p(z|x)) = log p(x) - (sum log P_ii - log det P) / 2;
- any Gaussian q has L[q] = log p(x) - KL(q || p(z|x)).
"""

import pytest
import torch

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.components.guides import guides
from pyrovae.infer.loglik import elbo_terms

from user_models import LinearGaussianVAE

pyro.enable_validation(True)

D, LATENT, NOISE = 4, 2, 0.5
AIS = {"num_steps": 500, "num_chains": 16, "leapfrog_steps": 5}


def linear_gaussian_vae(quality, w=None):
    """The VAE and its exact posterior map; ``quality`` ``exact`` makes the
    encoder output the best diagonal Gaussian, ``poor`` a shrunk, shifted,
    too-wide one. ``w`` ``(D, LATENT)``: the decoder's weights (default: drawn)."""
    torch.manual_seed(0)
    config = {"latent_dim": LATENT, "decoder": {"name": "mlp", "hidden": []},
              "encoder": {"name": "mlp", "hidden": []},
              "likelihood": {"name": "normal", "scale_mode": "fixed", "scale": NOISE}}
    vae = pyrovae.VAE.from_config(config, data_shape=(D,)).double()
    drawn, b = torch.randn(D, LATENT, dtype=torch.double), torch.randn(D, dtype=torch.double)
    w = drawn if w is None else w
    precision = torch.eye(LATENT, dtype=torch.double) + w.T @ w / NOISE ** 2
    gain = torch.linalg.inv(precision) @ w.T / NOISE ** 2  # m = gain (x - b)
    sd = precision.diagonal().rsqrt()
    if quality == "poor":
        loc_weight, loc_bias, sd = 0.7 * gain, 0.5 - 0.7 * gain @ b, 1.6 * sd
    else:
        loc_weight, loc_bias = gain, -gain @ b
    raw = torch.log(torch.expm1(sd - vae.guide_family.min_scale))
    linear = [m for m in vae.encoder.modules() if isinstance(m, torch.nn.Linear)]
    decoder = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1 and len(decoder) == 1, "the test needs a linear encoder and decoder"
    with torch.no_grad():
        linear[0].weight.copy_(torch.cat([loc_weight, torch.zeros(LATENT, D, dtype=torch.double)]))
        linear[0].bias.copy_(torch.cat([loc_bias, raw]))
        decoder[0].weight.copy_(w)
        decoder[0].bias.copy_(b)
    return vae, w, b, precision


def exact(vae, w, b, precision, x):
    """log p(x), the best diagonal-Gaussian ELBO and the encoder's own ELBO, each ``(N,)``, in closed form."""
    marginal = dist.MultivariateNormal(b, w @ w.T + NOISE ** 2 * torch.eye(D, dtype=torch.double))
    log_px = marginal.log_prob(x)
    best = log_px - 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    cov = torch.linalg.inv(precision)
    mean = (x - b) @ (cov @ w.T / NOISE ** 2).T
    with torch.no_grad():
        q = vae.encode(x)
    loc, var = q.mean, q.variance  # KL(N(loc, diag var) || N(mean, cov)), per point
    diff = mean - loc
    kl = 0.5 * ((precision.diagonal() * var).sum(-1) + ((diff @ precision) * diff).sum(-1) - LATENT
                + torch.logdet(cov) - var.log().sum(-1))
    return log_px, best, log_px - kl


def data(w, b, n=6):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(n, LATENT, generator=g, dtype=torch.double)
    return z @ w.T + b + NOISE * torch.randn(n, D, generator=g, dtype=torch.double)


def test_poor_encoder_has_an_amortization_gap_that_the_local_optimization_closes():
    vae, w, b, precision = linear_gaussian_vae("poor")
    x = data(w, b)
    log_px, best, amortized = exact(vae, w, b, precision, x)
    gaps = pyrovae.inference_gaps(vae, x, num_samples=2000, num_particles=32, lr=0.03, max_steps=1500,
                                  patience=150, tol=1e-4, seed=0, ais_options=AIS)
    assert (amortized < best - 0.5).all()  # the setting is telling: the encoder is far from q*
    assert torch.allclose(gaps.elbo_amortized, amortized, atol=0.4), (gaps.elbo_amortized, amortized)
    assert torch.allclose(gaps.elbo_optimized, best, atol=0.05), (gaps.elbo_optimized, best)
    # AIS from a poor guide errs by a few tenths of a nat per point, less on average
    assert torch.allclose(gaps.log_px, log_px, atol=0.4), (gaps.log_px, log_px)
    assert abs(float((gaps.log_px - log_px).mean())) < 0.15
    assert (gaps.amortization_gap > 2.0).all()
    # the gaps add up to the exact total, and each matches its closed form
    exact_approximation, exact_total = log_px - best, log_px - amortized
    assert torch.allclose(gaps.approximation_gap, exact_approximation, atol=0.4)
    assert torch.allclose(gaps.amortization_gap + gaps.approximation_gap, exact_total, atol=0.6)
    means = gaps.means()
    assert abs(means["approximation_gap"] - float(exact_approximation.mean())) < 0.15
    assert abs(means["inference_gap"] - float(exact_total.mean())) < 0.2
    assert abs(means["approximation_gap"] + means["amortization_gap"] - means["inference_gap"]) < 1e-9


def test_the_local_optimization_never_lowers_the_elbo():
    vae, w, b, precision = linear_gaussian_vae("exact")
    x = data(w, b)
    _, best, amortized = exact(vae, w, b, precision, x)
    assert torch.allclose(amortized, best)  # the encoder already gives q*: no step can help
    # a learning rate far too large throws the parameters away from q*: those points keep the encoder's
    gaps = pyrovae.inference_gaps(vae, x, num_samples=500, lr=3.0, max_steps=20, seed=0,
                                  ais_options={"num_steps": 5, "num_chains": 2, "leapfrog_steps": 1})
    assert gaps.kept_initial.all()
    assert torch.equal(gaps.elbo_optimized, gaps.elbo_amortized)
    assert (gaps.amortization_gap == 0).all()
    assert torch.allclose(gaps.elbo_amortized, best, atol=0.1)


def test_the_optimization_stops_when_the_elbo_stops_improving():
    vae, w, b, _ = linear_gaussian_vae("exact")
    gaps = pyrovae.inference_gaps(vae, data(w, b), num_samples=10, lr=1e-3, max_steps=1000, patience=10,
                                  tol=0.5, seed=0, ais_options={"num_steps": 2, "num_chains": 2, "leapfrog_steps": 1})
    assert gaps.steps < 100


def test_model_weights_are_left_as_they_were():
    vae, w, b, _ = linear_gaussian_vae("poor")
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    pyrovae.inference_gaps(vae, data(w, b), num_samples=10, lr=0.1, max_steps=20, seed=0,
                           ais_options={"num_steps": 2, "num_chains": 2, "leapfrog_steps": 1})
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad and p.grad is None for p in vae.parameters())


def test_with_the_posterior_in_the_guide_family_the_approximation_gap_vanishes():
    # orthogonal decoder columns: the posterior precision I + W^T W / s^2 is
    # diagonal, so the exact posterior is a diagonal Gaussian, which q* reaches
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, dtype=torch.double, generator=torch.Generator().manual_seed(2)))
    vae, w, b, precision = linear_gaussian_vae("poor", w=q * torch.tensor([1.5, 0.8], dtype=torch.double))
    assert torch.allclose(precision, precision.diagonal().diag())
    x = data(w, b, n=4)
    log_px, best, amortized = exact(vae, w, b, precision, x)
    assert torch.allclose(best, log_px) and (amortized < log_px - 1.0).all()
    gaps = pyrovae.inference_gaps(vae, x, num_samples=1000, num_particles=16, lr=0.05, max_steps=600,
                                  patience=100, tol=1e-4, seed=0,
                                  ais_options={"num_steps": 200, "num_chains": 32, "leapfrog_steps": 3})
    assert torch.allclose(gaps.elbo_optimized, log_px, atol=0.05), (gaps.elbo_optimized, log_px)
    # what is left is AIS's error: about a tenth of a nat per point at this budget, less on average
    assert gaps.approximation_gap.abs().max() < 0.2, gaps.approximation_gap
    assert abs(float(gaps.approximation_gap.mean())) < 0.08, gaps.approximation_gap
    assert torch.allclose(gaps.amortization_gap, log_px - amortized, atol=0.3)


def test_m2_sums_the_missing_label_out_so_the_optimization_moves_q_of_y():
    """With z's guide fixed, the best q(y | x) is proportional to exp ELBO(x, y), with
    the ELBO log_sum_exp_y ELBO(x, y); a classifier sure of the wrong class is far
    below. Summing y out gives its logits the exact gradient (a sampled y gives them
    none), so L[q*] reaches that ELBO: ELBO(x, y) per class from Pyro's Trace_ELBO."""
    from pyrovae.models.m2 import M2

    torch.manual_seed(0)
    model = M2.from_config({"latent_dim": 2}, (1, 4, 4), num_classes=3).eval()
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(3))
    last = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        for p in model.decoder.parameters():  # classes that explain x differently
            p.mul_(4.0)
        last.weight.zero_()
    elbo = pyro.infer.Trace_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        per_class = torch.tensor([[-elbo.loss(model.model, model.guide, x[i:i + 1], y=torch.tensor([c]))
                                   for i in range(len(x))] for c in range(3)])
        last.bias.zero_()
        last.bias[int(per_class.sum(1).argmin())] = 8.0  # q(y | x) sure of the worst class
    best = per_class.logsumexp(0)
    gaps = pyrovae.inference_gaps(model, x, num_samples=2000, num_particles=4, lr=0.2, max_steps=150, seed=0,
                                  ais_options={"num_steps": 2, "num_chains": 2, "leapfrog_steps": 1})
    assert float((best - gaps.elbo_amortized).sum()) > 10.0, (gaps.elbo_amortized, best)
    assert (gaps.elbo_optimized > best - 0.1).all(), (gaps.elbo_optimized, best)


@pytest.mark.parametrize("guide", guides.names())
def test_every_guide_family_of_the_vae_gives_a_local_guide(guide):
    torch.manual_seed(0)
    vae = pyrovae.VAE.from_config({"latent_dim": 2, "guide": {"name": guide}}, data_shape=(1, 4, 4))
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.3))
    fast = {"num_steps": 2, "num_chains": 2, "leapfrog_steps": 1}
    unmoved = pyrovae.inference_gaps(vae, x, num_samples=2000, max_steps=0, seed=0, ais_options=fast)
    # the amortized guide scored another way: the VAE's own guide, through elbo_terms
    torch.manual_seed(1)
    reference = elbo_terms(vae, x, num_particles=2000)["elbo"]
    assert torch.allclose(unmoved.elbo_amortized, reference, atol=0.25), (unmoved.elbo_amortized, reference)
    assert (unmoved.amortization_gap == 0).all()
    gaps = pyrovae.inference_gaps(vae, x, num_samples=200, lr=0.05, max_steps=30, seed=0, ais_options=fast)
    assert (gaps.elbo_optimized >= gaps.elbo_amortized).all() and gaps.elbo_optimized.isfinite().all()


class LocalLinearGaussian(LinearGaussianVAE):
    """A user's model with its own local_guide: a latent site named ``latent``, two free parameters per point."""

    def local_guide(self, x):
        with torch.no_grad():
            params = {"loc": self.encoder(x), "log_scale": self.log_scale.expand(x.shape[0], self.z_dim).clone()}

        def guide_fn(params, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("latent", dist.Normal(params["loc"], params["log_scale"].exp()).to_event(1))

        return params, guide_fn


def test_a_users_model_with_local_guide_reaches_the_best_diagonal_gaussian():
    torch.manual_seed(0)
    model = LocalLinearGaussian(D, LATENT, noise=NOISE).double()
    with torch.no_grad():  # a guide that ignores x, shifted and too wide
        model.encoder.weight.zero_()
        model.encoder.bias.fill_(1.0)
        model.log_scale.fill_(0.7)
    w, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    x = data(w, b)
    precision = torch.eye(LATENT, dtype=torch.double) + w.T @ w / NOISE ** 2
    best = model.marginal().log_prob(x) - 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    gaps = pyrovae.inference_gaps(model, x, num_samples=2000, num_particles=32, lr=0.03, max_steps=1500,
                                  patience=150, tol=1e-4, seed=0,
                                  ais_options={"num_steps": 2, "num_chains": 2, "leapfrog_steps": 1})
    assert torch.allclose(gaps.elbo_optimized, best, atol=0.05), (gaps.elbo_optimized, best)
    assert (gaps.amortization_gap > 0.5).all()


@pytest.mark.parametrize("option, value", [("smoothing", 1.0), ("num_samples", 0), ("lr", -1.0), ("patience", 0)])
def test_a_bad_option_is_refused_in_one_line(option, value):
    vae, w, b, _ = linear_gaussian_vae("exact")
    with pytest.raises(pyrovae.ConfigError, match=option) as err:
        pyrovae.inference_gaps(vae, data(w, b), **{option: value})
    assert "\n" not in str(err.value)
