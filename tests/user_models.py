"""Models written outside pyrovae, as a user's own module would
(``model.plugins: [user_models]``).

Registered here, for tests/models/test_models.py:

- ``test_conditional_vae``: p(z) p(x | z, y) with guide q(z | x, y); it
  needs the labels ``y`` of every batch.
- ``test_mixture_vae``: y ~ Cat(pi), z ~ N(0, I), x ~ p(x | z, y), with guide
  q(y | x) q(z | x, y); the discrete y is summed out by enumeration.

Written the Pyro way and registered by tests/models/test_user_models.py
itself (each test unregisters what it registered):

- :class:`TutorialVAE`: the VAE of Pyro's tutorial, ``model(self, x)`` and
  ``guide(self, x)``, with no ``beta``, no ``num_data`` and no capability;
- :class:`LinearGaussianVAE`: the same code with linear maps and a Gaussian
  likelihood, whose exact marginal N(b, W W^T + s^2 I) is known;
- :class:`PluralCVAE`: Pyro's ``model(self, xs, ys=None)`` style; it records
  the labels it receives;
- :class:`BetaVAE`: the tutorial VAE with a ``beta`` keyword, used or ignored;
- :class:`FlatReshapeVAE`: the tutorial VAE whose decoder output is reshaped
  with ``reshape(-1, ...)`` (it cannot broadcast over particles);
- :class:`LocalLatentModel`: per-point latents in ``pyro.plate("data",
  num_data, subsample=index)`` with an ``AutoNormal`` guide.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

import pyro
import pyro.distributions as dist
from pyro.infer.autoguide import AutoNormal

import pyrovae
from pyrovae import kl_scale


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


# -- models written the Pyro way (registered by the tests that use them) --------------


class Encoder(nn.Module):
    """The tutorial's encoder: x ``(B, *data_shape)`` -> (loc, scale) ``(B, z_dim)``."""

    def __init__(self, size, z_dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(size, hidden)
        self.fc21 = nn.Linear(hidden, z_dim)
        self.fc22 = nn.Linear(hidden, z_dim)

    def forward(self, x):
        hidden = F.softplus(self.fc1(x.flatten(1)))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    """The tutorial's decoder: z ``(..., z_dim)`` -> pixel means ``(..., size)``."""

    def __init__(self, size, z_dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden)
        self.fc21 = nn.Linear(hidden, size)

    def forward(self, z):
        return torch.sigmoid(self.fc21(F.softplus(self.fc1(z))))


class TutorialVAE(nn.Module):
    """Pyro's tutorial VAE on images ``(B, *data_shape)`` in {0, 1}: the decoder
    output takes the image shape with ``z.shape[:-1] + x.shape[1:]``, so that
    any leading dims (particles) broadcast."""

    def __init__(self, data_shape, z_dim=3, hidden=32):
        super().__init__()
        self.encoder = Encoder(math.prod(data_shape), z_dim, hidden)
        self.decoder = Decoder(math.prod(data_shape), z_dim, hidden)
        self.z_dim = z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z).reshape(z.shape[:-1] + x.shape[1:])
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(x.dim() - 1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


class LinearGaussianVAE(nn.Module):
    """z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D), with a linear Gaussian guide
    q(z | x) = N(A x + c, diag(exp(2 r))); data ``(B, D)``. The exact marginal
    is N(b, W W^T + s^2 I) and the exact posterior is Gaussian, so the guide
    can be set to it (:meth:`set_exact_posterior`)."""

    def __init__(self, dim, z_dim=2, noise=0.5):
        super().__init__()
        self.z_dim, self.noise = z_dim, noise
        self.decoder = nn.Linear(z_dim, dim)
        self.encoder = nn.Linear(dim, z_dim)
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(self.decoder(z), self.noise).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc = self.encoder(x)
            pyro.sample("latent", dist.Normal(loc, self.log_scale.exp().expand_as(loc)).to_event(1))

    def marginal(self) -> dist.MultivariateNormal:
        """The exact p(x), N(b, W W^T + s^2 I)."""
        w, b = self.decoder.weight.detach(), self.decoder.bias.detach()
        return dist.MultivariateNormal(b, w @ w.T + self.noise**2 * torch.eye(len(b), dtype=w.dtype))

    @torch.no_grad()
    def set_exact_posterior(self, w=None):
        """Make the guide p(z | x) of this decoder, with a diagonal posterior
        covariance: ``w`` (D, d) with orthogonal columns (default: the
        decoder's weight made so)."""
        if w is not None:
            self.decoder.weight.copy_(w)
        w, b, s2 = self.decoder.weight, self.decoder.bias, self.noise**2
        precision = torch.eye(self.z_dim, dtype=w.dtype) + w.T @ w / s2
        cov = torch.linalg.inv(precision)
        assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-6), "columns of w must be orthogonal"
        gain = cov @ w.T / s2
        self.encoder.weight.copy_(gain)
        self.encoder.bias.copy_(-gain @ b)
        self.log_scale.copy_(0.5 * torch.log(torch.diagonal(cov)))


class PluralCVAE(nn.Module):
    """Pyro's ``model(self, xs, ys=None)`` style: a VAE conditioned on class
    labels ``ys`` ``(B,)``; :attr:`received` holds the labels each training
    call got (None where it got none)."""

    def __init__(self, data_shape, z_dim=3, num_classes=4, hidden=32):
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.encoder = Encoder(math.prod(data_shape) + num_classes, z_dim, hidden)
        self.decoder = Decoder(math.prod(data_shape), z_dim + num_classes, hidden)
        self.received = []

    def onehot(self, ys, like):
        return F.one_hot(ys.long(), self.num_classes).to(like.dtype)

    def model(self, xs, ys=None):
        if self.training:
            self.received.append(None if ys is None else ys.clone())
        pyro.module("plural_cvae", self)
        with pyro.plate("data", xs.shape[0]):
            z = pyro.sample("z", dist.Normal(xs.new_zeros(xs.shape[0], self.z_dim), 1.0).to_event(1))
            c = self.onehot(ys, xs).expand(*z.shape[:-1], self.num_classes)
            loc = self.decoder(torch.cat([z, c], -1)).reshape(z.shape[:-1] + xs.shape[1:])
            pyro.sample("xs", dist.Bernoulli(loc, validate_args=False).to_event(xs.dim() - 1), obs=xs)

    def guide(self, xs, ys=None):
        pyro.module("plural_cvae", self)
        with pyro.plate("data", xs.shape[0]):
            loc, scale = self.encoder(torch.cat([xs.flatten(1), self.onehot(ys, xs)], -1))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class BetaVAE(TutorialVAE):
    """The tutorial VAE with a ``beta`` keyword that weighs the latent site
    (``kl_scale``) or, with ``use_beta=False``, is taken and ignored;
    :attr:`betas` holds the values training passed."""

    def __init__(self, data_shape, z_dim=3, hidden=32, use_beta=True):
        super().__init__(data_shape, z_dim, hidden)
        self.use_beta = use_beta
        self.betas = []

    def model(self, x, beta=1.0):
        if self.training:
            self.betas.append(beta)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            with kl_scale(beta if self.use_beta else 1.0):
                z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            loc_img = self.decoder(z).reshape(z.shape[:-1] + x.shape[1:])
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(x.dim() - 1), obs=x)

    def guide(self, x, beta=1.0):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            with kl_scale(beta if self.use_beta else 1.0):
                pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


class FlatReshapeVAE(TutorialVAE):
    """The tutorial VAE with the decoder output reshaped by ``reshape(-1,
    *data_shape)``: right for a batch ``(B, z_dim)`` of codes, wrong for
    codes with a particles dim ``(K, B, z_dim)``."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            loc_img = self.decoder(z).reshape(-1, *x.shape[1:])
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(x.dim() - 1), obs=x)


class LocalLatentModel(nn.Module):
    """Per-point latents z_i ~ N(0, I), x_i | z_i ~ N(decoder(z_i), 0.1^2 I)
    for data ``(B, D)``, in ``pyro.plate("data", num_data, subsample=index)``
    (``index``: the batch's positions in the training set); the guide is
    Pyro's ``AutoNormal``, one (loc, scale) per training point, whose plate
    subsamples by the same index (``create_plates``)."""

    def __init__(self, dim, num_data, z_dim=2):
        super().__init__()
        self.num_data, self.z_dim = num_data, z_dim
        self.decoder = nn.Linear(z_dim, dim)
        # the guide's data plate subsamples by the batch's index, as the model's does
        self.guide = AutoNormal(self.model, create_plates=self.plates)
        with torch.no_grad(), pyro.poutine.block():  # its parameters made now, so that a saved run loads
            self.guide(torch.zeros(1, dim), torch.arange(1))

    def plates(self, x, index):
        return pyro.plate("data", self.num_data, subsample=index)

    def model(self, x, index):
        pyro.module("decoder", self.decoder)
        with self.plates(x, index):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.1).to_event(1), obs=x)
