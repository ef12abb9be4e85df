"""Guide families q(z|x): turn encoder features into a distribution over z.

A family declares how many encoder features it needs (``num_features``)
and :meth:`GuideFamily.dist` maps features ``(*batch, num_features)`` to a
distribution with batch shape ``batch`` and event shape ``(latent_dim,)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist
import pyro.distributions.transforms as T

from ..registry import Registry
from ..validators import positive_int

__all__ = ["GuideFamily", "guides", "register_guide"]

guides = Registry("guide", context=("latent_dim",))
register_guide = guides.register


class GuideFamily(nn.Module):
    """Base class of the family of q(z | x): it turns the encoder's output
    ``(*batch, num_features)`` into a distribution with event shape
    ``(latent_dim,)``. Subclasses implement :attr:`num_features` and
    :meth:`dist`; register one with :func:`pyrovae.register_guide`.

    Example::

        >>> import torch, pyro.distributions as dist
        >>> from pyrovae import GuideFamily
        >>> class UnitScaleNormal(GuideFamily):
        ...     @property
        ...     def num_features(self):            # the encoder outputs the mean only
        ...         return self.latent_dim
        ...     def dist(self, features):
        ...         return dist.Normal(features, 1.0).to_event(1)
        >>> guide = UnitScaleNormal(latent_dim=4)
        >>> q = guide.dist(torch.zeros(8, guide.num_features))
        >>> q.batch_shape, q.event_shape
        (torch.Size([8]), torch.Size([4]))
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def num_features(self) -> int:
        """Encoder outputs this family needs per data point."""
        raise NotImplementedError

    def dist(self, features) -> dist.TorchDistribution:
        """q(z | x) from the encoder's ``features`` ``(*batch, num_features)``:
        a distribution with event shape ``(latent_dim,)``."""
        raise NotImplementedError


@register_guide("normal")
class NormalGuide(GuideFamily):
    """Diagonal Gaussian q(z|x) = N(mu(x), diag(sigma(x)^2)), reparameterized.

    :param float min_scale: floor added to sigma = softplus(raw) for stability.
    """

    def __init__(self, latent_dim, min_scale=1e-4):
        super().__init__(latent_dim)
        if not 0 <= min_scale < float("inf"):
            raise ValueError(f"min_scale must be a finite number >= 0, got {min_scale!r}")
        self.min_scale = float(min_scale)

    @property
    def num_features(self):
        return 2 * self.latent_dim

    def dist(self, features):
        loc, raw_scale = features.split(self.latent_dim, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)


@register_guide("delta")
class DeltaGuide(GuideFamily):
    """A deterministic code z = f(x) (a point mass). With beta = 0 the model
    is the plain autoencoder; with beta > 0 it is MAP-regularized."""

    @property
    def num_features(self):
        return self.latent_dim

    def dist(self, features):
        return dist.Delta(features, event_dim=1)


@register_guide("iaf")
class IAFGuide(GuideFamily):
    """A diagonal Gaussian followed by ``num_flows`` conditional inverse
    autoregressive flows (Kingma et al. 2016), each conditioned on a context
    vector ``h(x)`` that the encoder outputs alongside mu and sigma.

    Samples are drawn in the flow's fast direction and Pyro caches them, so
    log q(z|x) of the guide's own draws costs one pass.

    :param int num_flows: number of autoregressive transforms.
    :param int context_dim: size of the encoder's context vector h(x).
    :param list hidden: hidden sizes of each transform's autoregressive network.
    :param float min_scale: floor of the base Gaussian's scale.
    """

    def __init__(self, latent_dim, num_flows=2, context_dim=32, hidden=(64, 64), min_scale=1e-4):
        super().__init__(latent_dim)
        num_flows = positive_int(num_flows, "num_flows")
        self.context_dim = context_dim = positive_int(context_dim, "context_dim")
        if not 0 <= min_scale < float("inf"):
            raise ValueError(f"min_scale must be a finite number >= 0, got {min_scale!r}")
        self.min_scale = float(min_scale)
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(latent_dim, context_dim, hidden_dims=list(hidden))
            for _ in range(num_flows)
        )
        perms = torch.stack([torch.randperm(latent_dim) for _ in range(num_flows - 1)]) if num_flows > 1 else torch.zeros(0, latent_dim, dtype=torch.long)
        self.register_buffer("permutations", perms)

    @property
    def num_features(self):
        return 2 * self.latent_dim + self.context_dim

    def dist(self, features):
        loc, raw_scale, context = features.split([self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        base = dist.Normal(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)
        transforms = []
        for i, flow in enumerate(self.flows):
            transforms.append(flow.condition(context))
            if i < len(self.permutations):
                transforms.append(T.Permute(self.permutations[i]))
        return dist.TransformedDistribution(base, transforms)
