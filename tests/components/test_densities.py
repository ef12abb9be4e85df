"""Every registered density checked against an answer computed another way.

- Normalization: every prior and guide on a 2-D latent integrates to 1 by
  quadrature; every likelihood sums (discrete) or integrates (continuous)
  to 1 over its support.
- Direct formulas: the VampPrior against logsumexp_k log q(z|u_k) - log K
  written out from the encoder, the mixture of Gaussians against torch's
  ``MixtureSameFamily``, and the IAF guide and flow prior against
  log N(eps) - log|det dz/deps| with the Jacobian from autograd.
- Sampling agrees with the density: means of bounded test functions of the
  samples against their quadrature expectations.

The tests iterate the registries, so a component registered later is
covered without editing this file.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import pyrovae
from pyrovae.components.guides import guides
from pyrovae.components.likelihoods import likelihoods
from pyrovae.components.priors import priors

from helpers import SHAPE, tiny_model_config
from oracles import (
    apply_transforms,
    density_expectation,
    gauss_legendre,
    perturb_parameters,
    sinh_nodes,
    smooth_test_functions,
    support_points,
    variant_id,
    variants,
)
from tiny_run import one_thread

PRIORS = variants("prior", priors)
GUIDES = variants("guide", guides)
LIKELIHOODS = variants("likelihood", likelihoods)


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def vae_with(kind, name, options, latent_dim=2, **model):
    return pyrovae.VAE.from_config(
        tiny_model_config(latent_dim=latent_dim, **{kind: {"name": name, **options}}, **model), data_shape=SHAPE
    )


def prior_under_test(name, options):
    vae = vae_with("prior", name, options)
    perturb_parameters(vae.prior_module)
    return vae.prior()


def guide_under_test(name, options):
    """q(z | x) for one data point x: batch shape (), event shape (2,)."""
    vae = vae_with("guide", name, options)
    perturb_parameters(vae.guide_family)
    x = torch.rand(SHAPE, generator=torch.Generator().manual_seed(1)).round()
    with torch.no_grad():
        return vae.guide_family.dist(vae.encoder(x))


def is_point_mass(d) -> bool:
    return type(getattr(d, "base_dist", d)).__name__ == "Delta"


# -- normalization -------------------------------------------------------------


def check_integrates_to_one(d, tol=1e-3):
    mass = float(density_expectation(d)[0])
    assert abs(mass - 1.0) < tol, f"integral of exp(log p) = {mass:.6f}, not 1"


@pytest.mark.parametrize("name, options", PRIORS, ids=map(variant_id, PRIORS))
def test_prior_integrates_to_one(name, options):
    check_integrates_to_one(prior_under_test(name, options))


@pytest.mark.parametrize("name, options", GUIDES, ids=map(variant_id, GUIDES))
def test_guide_integrates_to_one(name, options):
    q = guide_under_test(name, options)
    if is_point_mass(q):
        # a point mass: its one support point carries probability exp(log q) = 1
        z = q.sample()
        torch.testing.assert_close(q.log_prob(z), torch.zeros(()), atol=1e-6, rtol=0)
        assert torch.equal(q.sample((5,)), z.expand(5, -1))
        return
    check_integrates_to_one(q)


def likelihood_under_test(name, options, num_elements, batch=4):
    """p(x | params) for ``batch`` random decoder outputs on ``num_elements`` data elements."""
    lik = likelihoods.build({"name": name, **options}, data_shape=(num_elements,))
    perturb_parameters(lik)
    g = torch.Generator().manual_seed(2)
    params = 2.0 * torch.randn(batch, *lik.param_shape, generator=g)
    return lik, lik.dist(params)


@pytest.mark.parametrize("name, options", LIKELIHOODS, ids=map(variant_id, LIKELIHOODS))
def test_likelihood_sums_or_integrates_to_one(name, options):
    """Discrete supports are summed exhaustively over two elements (one for
    256 levels); continuous ones are integrated along one element, by
    Gauss-Legendre on a bounded interval and a sinh grid on the real line."""
    support = likelihoods.build({"name": name, **options}, data_shape=(1,)).support
    levels = support_points(support, 1)
    num_elements = 1 if levels is not None and len(levels) > 16 else 2
    points = support_points(support, num_elements) if levels is not None else None
    if points is None:
        num_elements = 1
    lik, p = likelihood_under_test(name, options, num_elements)
    with torch.no_grad():
        if points is not None:
            mass = p.log_prob(points[:, None, :]).double().exp().sum(0)
        elif isinstance(support, torch.distributions.constraints.interval):
            nodes, weights = gauss_legendre(float(support.lower_bound), float(support.upper_bound))
            mass = (p.log_prob(nodes[:, None, None].float()).double().exp() * weights[:, None]).sum(0)
        else:
            samples = p.sample((4000,))  # (n, batch, 1)
            mass = []
            for i in range(samples.shape[1]):
                q = torch.quantile(samples[:, i, 0].double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
                nodes, weights = sinh_nodes(float(q[1]), float(q[2] - q[0]) / 4, step=0.002)
                log_p = p.log_prob(nodes[:, None, None].float().expand(-1, samples.shape[1], 1))[:, i]
                mass.append((log_p.double().exp() * weights).sum())
            mass = torch.stack(mass)
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-3, rtol=0)


# -- direct formulas -----------------------------------------------------------------


def normal_log_density(z, loc, scale):
    """log N(z; loc, diag(scale^2)) summed over the last dim, written out."""
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def normal_guide_params(features, latent_dim, min_scale=1e-4):
    """The normal guide's documented map: features = [mu, raw], sigma = softplus(raw) + min_scale."""
    loc, raw = features[..., :latent_dim], features[..., latent_dim:]
    return loc, F.softplus(raw) + min_scale


@pytest.mark.parametrize("bounds", [None, [0, 1]])
@pytest.mark.parametrize("hierarchical", [False, True])
def test_vamp_prior_is_the_mean_of_the_encoded_pseudo_inputs(bounds, hierarchical):
    """log p(z) = logsumexp_k log q(z | u_k) - log K, with q(z | u) computed by
    hand from the encoder; under a hierarchy, q(z_top | u) follows the mean of
    q(z1 | u) up through the upper encoder."""
    K = 7
    model = {"hierarchy": [{"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}]} if hierarchical else {}
    vae = vae_with("prior", "vamp", {"num_components": K, "init_std": 0.6, **({"bounds": bounds} if bounds else {})},
                   latent_dim=3 if hierarchical else 2, **model)
    u = vae.prior_module.pseudo_inputs
    if bounds:
        u = u.clamp(*bounds)
        assert (vae.prior_module.pseudo_inputs != u).any()  # the clamp matters here
    with torch.no_grad():
        loc, scale = normal_guide_params(vae.encoder(u), vae.latent_dim)
        if hierarchical:
            loc, scale = normal_guide_params(vae.upper[0].encoder(loc), 2)
        z = 2.0 * torch.randn(40, 2)
        expected = torch.logsumexp(normal_log_density(z[:, None, :], loc, scale), -1) - math.log(K)
        torch.testing.assert_close(vae.prior().log_prob(z), expected, atol=1e-5, rtol=1e-6)


def test_mog_prior_matches_mixture_same_family():
    vae = vae_with("prior", "mog", {"num_components": 6}, latent_dim=3)
    perturb_parameters(vae.prior_module, std=0.5)
    m = vae.prior_module
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=m.logits.detach()),
        torch.distributions.Independent(torch.distributions.Normal(m.locs.detach(), m.log_scales.detach().exp()), 1),
    )
    z = torch.cat([reference.sample((100,)), 4.0 * torch.randn(100, 3)])
    with torch.no_grad():
        torch.testing.assert_close(vae.prior().log_prob(z), reference.log_prob(z), atol=1e-5, rtol=1e-6)


def check_change_of_variables(d, eps, tol=1e-8):
    """``d`` is a TransformedDistribution; for each base point eps (a row),
    log d(z) = log base(eps) - log|det dz/deps| with z = T(eps), computed with
    the Jacobian from autograd; the cached density (z as the transforms
    returned it) and the uncached one (a copy of z, inverted) agree with it."""
    z = apply_transforms(d.transforms, eps)
    with torch.no_grad():
        cached = d.log_prob(z)
        uncached = d.log_prob(z.detach().clone())
    for i in range(eps.shape[0]):
        J = torch.autograd.functional.jacobian(lambda e: apply_transforms(d.transforms, e[None])[0], eps[i])
        expected = d.base_dist.log_prob(eps[i]) - torch.linalg.slogdet(J).logabsdet
        torch.testing.assert_close(cached[i], expected.detach(), atol=tol, rtol=tol)
        torch.testing.assert_close(uncached[i], expected.detach(), atol=100 * tol, rtol=100 * tol)


FLOW_PRIORS = [(n, o) for n, o in PRIORS if n == "flow"]


@pytest.mark.parametrize("name, options", FLOW_PRIORS, ids=map(variant_id, FLOW_PRIORS))
def test_flow_prior_change_of_variables(name, options):
    # float64, except for Pyro's autoregressive inverse, which builds float32 zeros
    double = options.get("layer") != "maf"
    vae = vae_with("prior", name, options, latent_dim=3)
    vae = vae.double() if double else vae
    perturb_parameters(vae.prior_module)
    p = vae.prior()
    check_change_of_variables(p, p.base_dist.sample((4,)), tol=1e-8 if double else 2e-6)


def test_iaf_guide_change_of_variables():
    vae = vae_with("guide", "iaf", {"num_flows": 3, "context_dim": 4, "hidden": [8]}, latent_dim=3).double()
    perturb_parameters(vae.guide_family)
    x = torch.rand(SHAPE, dtype=torch.float64).round()  # one data point: batch shape ()
    q = vae.encode(x)
    check_change_of_variables(q, q.base_dist.sample((3,)))


# -- sampling agrees with the density --------------------------------------------------


def check_samples_match_density(d, n=40000):
    torch.manual_seed(3)
    with torch.no_grad():
        samples = d.sample((n,))
    fns = smooth_test_functions(samples[:4000])
    integrals = density_expectation(d, fns)
    exact = integrals[1:] / integrals[0]
    values = torch.stack([f(samples.double()) for f in fns])  # (F, n)
    mean, se = values.mean(1), values.std(1) / math.sqrt(n)
    z = (mean - exact) / (se + 1e-12)
    assert float(z.abs().max()) < 5, f"sample means {mean.tolist()} vs density {exact.tolist()} (z-scores {z.tolist()})"


@pytest.mark.parametrize("name, options", PRIORS, ids=map(variant_id, PRIORS))
def test_prior_samples_follow_its_density(name, options):
    check_samples_match_density(prior_under_test(name, options))


@pytest.mark.parametrize("name, options", GUIDES, ids=map(variant_id, GUIDES))
def test_guide_samples_follow_its_density(name, options):
    q = guide_under_test(name, options)
    if is_point_mass(q):
        pytest.skip("a point mass has no density to sample against (checked in test_guide_integrates_to_one)")
    check_samples_match_density(q)


def test_vamp_prior_with_a_flow_guide_is_the_mean_of_its_components():
    """With the iaf guide the VampPrior's components are conditional flows:
    log p(z) = logsumexp_k log q(z | u_k) - log K with each q(z | u_k) built
    for one pseudo-input at a time, and p integrates to 1."""
    K = 4
    vae = pyrovae.VAE.from_config(
        tiny_model_config(latent_dim=2, guide={"name": "iaf", "context_dim": 4, "hidden": [8]},
                          prior={"name": "vamp", "num_components": K, "init_std": 0.6}),
        data_shape=SHAPE,
    )
    perturb_parameters(vae.guide_family)
    z = 2.0 * torch.randn(30, 2)
    with torch.no_grad():
        per_component = torch.stack([vae.encode(u).log_prob(z) for u in vae.prior_module.inputs()], -1)
        expected = torch.logsumexp(per_component, -1) - math.log(K)
        torch.testing.assert_close(vae.prior().log_prob(z), expected, atol=1e-5, rtol=1e-6)
    check_integrates_to_one(vae.prior())
