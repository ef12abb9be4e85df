"""Priors p(z): ``nn.Module``s whose :meth:`Prior.dist` returns a Pyro
distribution with ``batch_shape == ()`` and ``event_shape == (latent_dim,)``.

Constants are buffers and learned quantities are parameters, so a prior
moves with ``.to(device)`` and is saved with the model.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import pyro.distributions as dist
import pyro.distributions.transforms as T

from ..registry import Registry
from ..validators import int_at_least, positive_int, positive_ints
from . import spline

__all__ = ["Prior", "priors", "register_prior"]

priors = Registry("prior", context=("latent_dim", "data_shape", "posterior"))
register_prior = priors.register


class Prior(nn.Module):
    """Base class: a distribution over R^latent_dim.

    A subclass implements :meth:`dist`; constants are buffers and learned
    quantities parameters, so the prior moves with ``.to(device)`` and is
    saved with the model. Register it with :func:`pyrovae.register_prior` to
    name it in a config.

    Example::

        >>> import torch, pyro.distributions as dist
        >>> from pyrovae import Prior
        >>> class CauchyPrior(Prior):
        ...     def __init__(self, latent_dim):
        ...         super().__init__(latent_dim)
        ...         self.register_buffer("loc", torch.zeros(latent_dim))
        ...     def dist(self):
        ...         return dist.Cauchy(self.loc, 1.0).to_event(1)
        >>> p = CauchyPrior(3).dist()
        >>> p.batch_shape, p.event_shape
        (torch.Size([]), torch.Size([3]))
        >>> p.sample((5,)).shape
        torch.Size([5, 3])
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = positive_int(latent_dim, "latent_dim")

    def dist(self) -> dist.TorchDistribution:
        """p(z): batch shape ``()``, event shape ``(latent_dim,)``."""
        raise NotImplementedError


@register_prior("standard_normal")
class StandardNormalPrior(Prior):
    """N(0, I), the classic VAE prior."""

    def __init__(self, latent_dim):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def dist(self):
        return dist.Normal(self.loc, self.scale).to_event(1)


@register_prior("normal")
class LearnedNormalPrior(Prior):
    """N(mu, diag(sigma^2)) with learned mean and scale.

    :param float init_scale: initial sigma.
    """

    def __init__(self, latent_dim, init_scale=1.0):
        super().__init__(latent_dim)
        if not 0 < init_scale < math.inf:
            raise ValueError(f"init_scale must be a positive finite number, got {init_scale!r}")
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.full((latent_dim,), float(init_scale)).log())

    def dist(self):
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)


class DiagonalNormalMixture(dist.TorchDistribution):
    """A mixture of K diagonal Gaussians over R^D, with batch shape ``()``.

    ``log_prob`` expands the Gaussian exponent into matrix products,
    ``-z^2 @ (1/(2 s^2))^T + z @ (m/s^2)^T + c_k`` (in float64, so that small
    scales lose no precision), instead of building the ``(*batch, K, D)``
    tensor that ``MixtureSameFamily`` builds: the VampPrior's 500 components
    then cost a matrix product per point.

    :param logits: ``(K,)`` unnormalized mixture log-weights.
    :param locs: ``(K, D)`` component means.
    :param scales: ``(K, D)`` component standard deviations.
    """

    arg_constraints = {}
    support = torch.distributions.constraints.real_vector
    has_rsample = False

    def __init__(self, logits, locs, scales, validate_args=None):
        self.logits = logits - logits.logsumexp(-1)
        self.locs, self.scales = locs, scales
        super().__init__(torch.Size(), locs.shape[-1:], validate_args=validate_args)

    def log_prob(self, z):
        shape = z.shape[:-1]
        z64 = z.reshape(-1, z.shape[-1]).double()
        prec = self.scales.double().pow(-2)
        locs = self.locs.double()
        const = (
            -0.5 * (locs.pow(2) * prec).sum(-1)
            - self.scales.double().log().sum(-1)
            - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        )
        log_n = -0.5 * z64.pow(2) @ prec.T + z64 @ (locs * prec).T + const
        return (log_n + self.logits.double()).logsumexp(-1).to(z.dtype).reshape(shape)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
            eps = torch.randn(*k.shape, self.locs.shape[-1], dtype=self.locs.dtype, device=self.locs.device)
            return self.locs[k] + self.scales[k] * eps

    @property
    def mean(self):
        return (self.logits.exp().unsqueeze(-1) * self.locs).sum(0)


class UniformMixture(dist.TorchDistribution):
    """An equally weighted mixture of the ``K`` distributions in the batch of
    ``components`` (batch shape ``(K,)``, event shape ``(D,)``), for any
    component family: ``log p(z) = logsumexp_k log q_k(z) - log K``.

    Unlike ``MixtureSameFamily`` it scores ``z`` against each component with
    ``z`` expanded to ``(*batch, K, D)``, so conditional flows whose context
    has batch shape ``(K,)`` (the ``iaf`` guide) work as components.
    """

    arg_constraints = {}
    support = torch.distributions.constraints.real_vector
    has_rsample = False

    def __init__(self, components, validate_args=None):
        if len(components.batch_shape) != 1:
            raise ValueError(f"components need batch shape (K,), got {tuple(components.batch_shape)}")
        self.components = components
        super().__init__(torch.Size(), components.event_shape, validate_args=validate_args)

    def log_prob(self, z):
        k = self.components.batch_shape[0]
        expanded = z.unsqueeze(-2).expand(*z.shape[:-1], k, z.shape[-1])
        return self.components.log_prob(expanded).logsumexp(-1) - math.log(k)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            draws = self.components.sample(sample_shape)  # (*sample_shape, K, D)
            k = torch.randint(draws.shape[-2], tuple(sample_shape), device=draws.device)
            index = k[..., None, None].expand(*k.shape, 1, draws.shape[-1])
            return draws.gather(-2, index).squeeze(-2)


@register_prior("mog")
class MixtureOfGaussiansPrior(Prior):
    """A learned mixture of K diagonal Gaussians.

    :param int num_components: K.
    :param float init_spread: standard deviation of the initial component means.
    :param float init_scale: initial component scale.
    """

    def __init__(self, latent_dim, num_components=10, init_spread=1.0, init_scale=1.0):
        super().__init__(latent_dim)
        num_components = int_at_least(num_components, 1, "num_components")
        if not (0 <= init_spread < float("inf") and 0 < init_scale < float("inf")):
            raise ValueError(f"init_spread must be >= 0 and init_scale > 0, got {init_spread!r} and {init_scale!r}")
        self.locs = nn.Parameter(init_spread * torch.randn(num_components, latent_dim))
        self.log_scales = nn.Parameter(
            torch.full((num_components, latent_dim), float(init_scale)).log()
        )
        self.logits = nn.Parameter(torch.zeros(num_components))

    def dist(self):
        return DiagonalNormalMixture(self.logits, self.locs, self.log_scales.exp())


@register_prior("vamp")
class VampPrior(Prior):
    """VampPrior (Tomczak & Welling, 2018): p(z) = 1/K sum_k q(z | u_k) with
    K learned pseudo-inputs u_k pushed through the encoder.

    The encoder is shared with the guide; it is held as a function, not a
    submodule, so its weights are registered (and trained) once.

    :param int num_components: K, the number of pseudo-inputs.
    :param float init_mean: mean of the initial pseudo-inputs.
    :param float init_std: standard deviation of the initial pseudo-inputs.
    :param list bounds: ``[low, high]`` to clamp the pseudo-inputs into with a
        hardtanh, as Tomczak & Welling do for data in [0, 1]; ``null`` leaves them free.
    """

    def __init__(self, latent_dim, data_shape, posterior, num_components=500, init_mean=0.5, init_std=0.05,
                 bounds=None):
        super().__init__(latent_dim)
        num_components = int_at_least(num_components, 1, "num_components")
        if not 0 <= init_std < math.inf:
            raise ValueError(f"init_std must be a finite number >= 0, got {init_std!r}")
        if bounds is not None:
            if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
                raise ValueError(f"bounds must be [low, high] with low < high, got {bounds}")
            if not float(bounds[0]) <= init_mean <= float(bounds[1]):
                raise ValueError(f"init_mean {init_mean} lies outside bounds {list(bounds)}; the clamped "
                                 "pseudo-inputs would get no gradient")
            bounds = (float(bounds[0]), float(bounds[1]))
        self.bounds = bounds
        self.pseudo_inputs = nn.Parameter(
            init_mean + init_std * torch.randn(num_components, *data_shape)
        )
        # A plain attribute (not a submodule): the encoder belongs to the guide.
        self.__dict__["_posterior"] = posterior

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs, ``(num_components, *data_shape)``, clamped to ``bounds`` if set."""
        if self.bounds is None:
            return self.pseudo_inputs
        return F.hardtanh(self.pseudo_inputs, *self.bounds)

    def dist(self):
        components = self._posterior(self.inputs())
        logits = self.pseudo_inputs.new_zeros(self.pseudo_inputs.shape[0])
        base = getattr(components, "base_dist", None)
        if isinstance(components, dist.Independent) and type(base) is dist.Normal:
            return DiagonalNormalMixture(logits, base.loc, base.scale)  # the fast path
        return UniformMixture(components)


FLOW_LAYERS = {
    # exact bins: Pyro's own layer can return NaN at inputs just above a knot (see .spline)
    "spline_coupling": lambda d, hidden: spline.spline_coupling(d, hidden_dims=hidden),
    "affine_coupling": lambda d, hidden: T.affine_coupling(d, hidden_dims=hidden),
    # Autoregressive layers used in the density direction (MAF), so that
    # log p(z) takes one pass; sampling is the sequential direction.
    "maf": lambda d, hidden: T.affine_autoregressive(d, hidden_dims=hidden),
}


@register_prior("flow")
class FlowPrior(Prior):
    """A standard normal pushed through learned Pyro transforms.

    :param str layer: one of ``spline_coupling``, ``affine_coupling``, ``maf``.
    :param int num_layers: number of transforms; a permutation sits between them.
    :param list hidden: hidden sizes of each transform's network.
    """

    def __init__(self, latent_dim, layer="spline_coupling", num_layers=2, hidden=(64, 64)):
        super().__init__(latent_dim)
        if layer not in FLOW_LAYERS:
            raise ValueError(f"unknown flow layer {layer!r}; choose from {', '.join(FLOW_LAYERS)}")
        hidden = positive_ints(hidden, "hidden sizes")
        num_layers = positive_int(num_layers, "num_layers")
        if latent_dim < 2 and layer != "maf":
            raise ValueError(f"a {layer} flow needs latent_dim >= 2; use layer='maf'")
        self.layers = nn.ModuleList(FLOW_LAYERS[layer](latent_dim, list(hidden)) for _ in range(num_layers))
        self.invert = layer == "maf"
        perms = torch.stack([torch.randperm(latent_dim) for _ in range(num_layers)])
        self.register_buffer("permutations", perms)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def transforms(self):
        out = []
        for layer, perm in zip(self.layers, self.permutations):
            out += [layer.inv if self.invert else layer, T.Permute(perm)]
        return out

    def dist(self):
        base = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.TransformedDistribution(base, self.transforms())


@register_prior("laplace")
class LaplacePrior(Prior):
    """Independent Laplace(0, scale) coordinates: a heavier-tailed, sparser prior.

    :param float scale: the Laplace scale b (variance 2 b^2).
    """

    def __init__(self, latent_dim, scale=1.0):
        super().__init__(latent_dim)
        if not 0 < scale < math.inf:
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), float(scale)))

    def dist(self):
        return dist.Laplace(self.loc, self.scale).to_event(1)


@register_prior("student_t")
class StudentTPrior(Prior):
    """Independent Student-t coordinates with ``df`` degrees of freedom.

    :param float df: degrees of freedom (heavier tails when small).
    :param float scale: scale of each coordinate.
    """

    def __init__(self, latent_dim, df=3.0, scale=1.0):
        super().__init__(latent_dim)
        if not (0 < df < math.inf and 0 < scale < math.inf):
            raise ValueError(f"df and scale must be positive finite numbers, got {df!r} and {scale!r}")
        self.register_buffer("df", torch.full((latent_dim,), float(df)))
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), float(scale)))

    def dist(self):
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)
