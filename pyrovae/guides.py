"""Guide families q(z|x): turn encoder features into a distribution over z.

A family declares how many encoder features it needs (``num_features``)
and :meth:`GuideFamily.dist` maps features ``(*batch, num_features)`` to a
distribution with batch shape ``batch`` and event shape ``(latent_dim,)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist

from .registry import Registry

__all__ = ["GuideFamily", "guides", "register_guide"]

guides = Registry("guide", context=("latent_dim",))
register_guide = guides.register


class GuideFamily(nn.Module):
    """Base class."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def num_features(self) -> int:
        """Encoder outputs this family needs per data point."""
        raise NotImplementedError

    def dist(self, features) -> dist.TorchDistribution:
        raise NotImplementedError


@register_guide("normal")
class NormalGuide(GuideFamily):
    """Diagonal Gaussian q(z|x) = N(mu(x), diag(sigma(x)^2)), reparameterized.

    :param float min_scale: floor added to sigma = softplus(raw) for stability.
    """

    def __init__(self, latent_dim, min_scale=1e-4):
        super().__init__(latent_dim)
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
