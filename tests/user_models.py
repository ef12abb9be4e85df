"""Models registered from outside pyrovae, as a user's own module would
(``model.plugins: [user_models]``); used by tests/models/test_models.py.

- ``test_conditional_vae``: p(z) p(x | z, y) with guide q(z | x, y); it
  needs the labels ``y`` of every batch.
- ``test_mixture_vae``: y ~ Cat(pi), z ~ N(0, I), x ~ p(x | z, y), with guide
  q(y | x) q(z | x, y); the discrete y is summed out by enumeration.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.models.vae import kl_scale


def data_plate(x, num_data):
    batch = x.shape[0]
    if num_data is None or num_data == batch:
        return pyro.plate("data", batch, dim=-1)
    return pyro.plate("data", num_data, subsample=torch.arange(batch, device=x.device), dim=-1)


class ConditionalBernoulliVAE(nn.Module):
    """x: binary ``(B, *data_shape)``; y: class labels ``(B,)`` in 0..C-1."""

    fields = ("x", "y")
    latent_sites = ("z",)

    def __init__(self, data_shape, latent_dim, num_classes, hidden):
        super().__init__()
        self.data_shape, self.latent_dim, self.num_classes = tuple(data_shape), latent_dim, num_classes
        size = math.prod(self.data_shape)
        self.encoder = nn.Sequential(nn.Linear(size + num_classes, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim + num_classes, hidden), nn.Tanh(), nn.Linear(hidden, size))

    def onehot(self, y, like):
        return F.one_hot(y.long(), self.num_classes).to(like.dtype)

    def q_z(self, x, y):
        h = self.encoder(torch.cat([x.flatten(1), self.onehot(y, x)], -1))
        loc, raw = h.split(self.latent_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def p_x(self, z, y):
        c = self.onehot(y, z).expand(*z.shape[:-1], self.num_classes)
        logits = self.decoder(torch.cat([z, c], -1)).reshape(*z.shape[:-1], *self.data_shape)
        return dist.Bernoulli(logits=logits).to_event(len(self.data_shape))

    def model(self, x, y, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_conditional_vae", self)
        with data_plate(x, num_data):
            with kl_scale(beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.p_x(z, y), obs=x)

    def guide(self, x, y, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_conditional_vae", self)
        with data_plate(x, num_data):
            with kl_scale(beta):
                pyro.sample("z", self.q_z(x, y))


@pyrovae.register_model("test_conditional_vae")
def build_conditional_vae(config, data_shape, num_classes=4, hidden=32):
    """The conditional VAE above, with ``config.latent_dim`` latents."""
    return ConditionalBernoulliVAE(data_shape, config.latent_dim, num_classes, hidden)


class MixtureVAE(ConditionalBernoulliVAE):
    """The conditional VAE with y latent: y ~ Cat(uniform) in the model,
    y ~ q(y | x) in the guide; ``enumerate_sites`` asks for it to be summed out."""

    fields = ("x",)
    latent_sites = ("y", "z")
    enumerate_sites = ("y",)

    def __init__(self, data_shape, latent_dim, num_classes, hidden):
        super().__init__(data_shape, latent_dim, num_classes, hidden)
        self.classifier = nn.Linear(math.prod(self.data_shape), num_classes)

    def model(self, x, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_mixture_vae", self)
        with data_plate(x, num_data):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.num_classes)))
            with kl_scale(beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.p_x(z, y), obs=x)

    def guide(self, x, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_mixture_vae", self)
        with data_plate(x, num_data):
            y = pyro.sample("y", dist.Categorical(logits=self.classifier(x.flatten(1))))
            with kl_scale(beta):
                pyro.sample("z", self.q_z_batched(x, y))

    def q_z_batched(self, x, y):
        """q(z | x, y) for y of any leading (enumeration) shape ``(..., B)``."""
        batch = torch.broadcast_shapes(y.shape, x.shape[:1])
        xf = x.flatten(1).expand(*batch, -1)
        h = self.encoder(torch.cat([xf, self.onehot(y, x).expand(*batch, self.num_classes)], -1))
        loc, raw = h.split(self.latent_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)


@pyrovae.register_model("test_mixture_vae")
def build_mixture_vae(config, data_shape, num_classes=4, hidden=32):
    """The mixture VAE above."""
    return MixtureVAE(data_shape, config.latent_dim, num_classes, hidden)
