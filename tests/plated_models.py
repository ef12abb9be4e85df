"""User models with a second plate inside the data plate, registered as a
user's own module would (``model.plugins: [plated_models]``); used by
tests/infer/test_plates.py.

Each model comes in two layouts with the same densities and the same draws:

- ``"plate"``: the elements of a data point sit in their own plate at
  dim -1, inside ``pyro.plate("data", dim=-2)``;
- ``"event"``: the same elements as an event dimension (``.to_event(1)``)
  inside ``pyro.plate("data", dim=-1)``, the layout pyrovae's own models use.

Both are linear-Gaussian, so p(x) is a Gaussian in closed form and the
exact posterior can be set as the guide (:meth:`set_exact_posterior`):

- ``test_pixel_plate``: z ~ N(0, I_d); x_j | z ~ N((W z + b)_j, sigma^2)
  for each pixel j = 1..D; guide q(z | x) = N(A x + c, diag(s^2)).
- ``test_time_plate``: z ~ N(0, I_d); for each time step t = 1..T a latent
  h_t | z ~ N((W z)_t, tau^2) and x_t | h_t ~ N(h_t + b_t, sigma^2); guide
  q(z | x) q(h | z, x), with q(h_t | z, x_t) = N((G z)_t + g_t x_t + e_t, v_t).
"""

import math

import torch
from torch import nn

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.models.vae import kl_scale, observe_masked

LAYOUTS = ("plate", "event")


def data_plate(x, num_data, dim):
    batch = x.shape[0]
    if num_data is None or num_data == batch:
        return pyro.plate("data", batch, dim=dim)
    return pyro.plate("data", num_data, subsample=torch.arange(batch, device=x.device), dim=dim)


class UnitRange:
    """What imputation reads of a likelihood: its value range and mean."""

    value_range = (0.0, 1.0)

    @staticmethod
    def mean(params):
        return params


class PlatedLinearGaussian(nn.Module):
    """Base of the two models: x ``(B, D)``, latent z ``(d,)``, a fixed
    noise scale ``sigma``; ``layout`` is ``"plate"`` or ``"event"``."""

    fields = ("x",)
    element_plate = "pixels"

    def __init__(self, data_shape, latent_dim, layout="plate", sigma=0.3, seed=0):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        (D,) = data_shape
        self.data_shape, self.latent_dim, self.layout, self.sigma = tuple(data_shape), latent_dim, layout, sigma
        self.likelihood, self.decoder = UnitRange(), nn.Identity()  # what imputation asks for
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(0.5 * torch.randn(D, latent_dim, generator=g))
        self.b = nn.Parameter(0.5 + 0.1 * torch.randn(D, generator=g))
        self.A = nn.Parameter(0.1 * torch.randn(latent_dim, D, generator=g))
        self.c = nn.Parameter(torch.zeros(latent_dim))
        self.log_s = nn.Parameter(torch.full((latent_dim,), -1.0))

    @property
    def nested(self):
        return self.layout == "plate"

    def _sites(self, fn, event_fn):
        """``fn`` as a site in the element plate, or ``event_fn`` over the elements."""
        return fn if self.nested else event_fn

    def _z_dist(self, loc, scale):
        d = dist.Normal(loc, scale).to_event(1)
        return dist.Normal(loc.unsqueeze(-2), scale).to_event(1) if self.nested else d

    def _z(self, z):
        """z as ``(..., B, d)`` in either layout (the plate layout keeps a singleton element dim)."""
        return z.squeeze(-2) if self.nested else z

    def _elements(self):
        """The plate over a data point's elements (one object, entered by every site in it)."""
        return pyro.plate(self.element_plate, self.data_shape[0], dim=-1)

    def _observe(self, loc, x, obs_mask, elements=None):
        if self.nested:
            with elements or self._elements():
                if obs_mask is not None:
                    pyro.deterministic("x_mean", loc)
                    return pyro.sample("x", dist.Normal(loc, self.sigma), obs=x, obs_mask=obs_mask)
                return pyro.sample("x", dist.Normal(loc, self.sigma), obs=x)
        p_x = dist.Normal(loc, self.sigma).to_event(1)
        if obs_mask is not None:
            pyro.deterministic("x_mean", loc, event_dim=1)
            return observe_masked("x", p_x, x, obs_mask)
        return pyro.sample("x", p_x, obs=x)

    def _data(self, x, num_data):
        return data_plate(x, num_data, -2 if self.nested else -1)


class PixelPlateModel(PlatedLinearGaussian):
    """``test_pixel_plate``: see the module notes."""

    def model(self, x, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_pixel_plate", self)
        with self._data(x, num_data):
            with kl_scale(beta):
                zeros = x.new_zeros(x.shape[0], self.latent_dim)
                z = self._z(pyro.sample("z", self._z_dist(zeros, 1.0)))
            self._observe(z @ self.W.T + self.b, x, obs_mask)

    def guide(self, x, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_pixel_plate", self)
        with self._data(x, num_data):
            with kl_scale(beta):
                pyro.sample("z", self._z_dist(x @ self.A.T + self.c, self.log_s.exp()))

    def exact_marginal(self):
        """p(x) = N(b, W W^T + sigma^2 I)."""
        W = self.W.detach()
        cov = W @ W.T + self.sigma**2 * torch.eye(len(W), dtype=W.dtype)
        return torch.distributions.MultivariateNormal(self.b.detach(), cov)

    @torch.no_grad()
    def set_exact_posterior(self, noise_var=None):
        """The guide set to p(z | x), with W's columns made orthogonal so that it is diagonal."""
        noise_var = self.sigma**2 if noise_var is None else noise_var
        q, _ = torch.linalg.qr(self.W)
        self.W.copy_(q * torch.linspace(1.5, 0.5, self.latent_dim, dtype=q.dtype))
        post_var = 1.0 / (1.0 + (self.W**2).sum(0) / noise_var)  # (d,)
        self.A.copy_(post_var[:, None] * self.W.T / noise_var)
        self.c.copy_(-self.A @ self.b)
        self.log_s.copy_(0.5 * post_var.log())


class TimePlateModel(PixelPlateModel):
    """``test_time_plate``: see the module notes."""

    element_plate = "time"

    def __init__(self, data_shape, latent_dim, layout="plate", sigma=0.3, tau=0.4, seed=0):
        super().__init__(data_shape, latent_dim, layout, sigma, seed)
        (T,) = data_shape
        self.tau = tau
        g = torch.Generator().manual_seed(seed + 1)
        self.G = nn.Parameter(0.1 * torch.randn(T, latent_dim, generator=g))
        self.gain = nn.Parameter(torch.full((T,), 0.5))
        self.e = nn.Parameter(torch.zeros(T))
        self.log_v = nn.Parameter(torch.full((T,), -1.0))

    def _steps(self, name, loc, scale, steps):
        """A latent site with one element per time step: in the time plate, or as an event."""
        if self.nested:
            with steps:
                return pyro.sample(name, dist.Normal(loc, scale))
        return pyro.sample(name, dist.Normal(loc, scale).to_event(1))

    def model(self, x, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_time_plate", self)
        with self._data(x, num_data):
            with kl_scale(beta):
                zeros = x.new_zeros(x.shape[0], self.latent_dim)
                z = self._z(pyro.sample("z", self._z_dist(zeros, 1.0)))
                steps = self._elements()
                h = self._steps("h", z @ self.W.T, self.tau, steps)
            self._observe(h + self.b, x, obs_mask, steps)

    def guide(self, x, *, num_data=None, beta=1.0, obs_mask=None):
        pyro.module("test_time_plate", self)
        with self._data(x, num_data):
            with kl_scale(beta):
                z = self._z(pyro.sample("z", self._z_dist(x @ self.A.T + self.c, self.log_s.exp())))
                self._steps("h", z @ self.G.T + self.gain * x + self.e, (0.5 * self.log_v).exp(), self._elements())

    def exact_marginal(self):
        """p(x) = N(b, W W^T + (tau^2 + sigma^2) I)."""
        W = self.W.detach()
        cov = W @ W.T + (self.tau**2 + self.sigma**2) * torch.eye(len(W), dtype=W.dtype)
        return torch.distributions.MultivariateNormal(self.b.detach(), cov)

    @torch.no_grad()
    def set_exact_posterior(self):
        """q(z | x) = p(z | x) (h integrated out: noise variance tau^2 + sigma^2)
        and q(h_t | z, x_t) = p(h_t | z, x_t), a product of two Gaussians in h_t."""
        super().set_exact_posterior(self.tau**2 + self.sigma**2)
        v = 1.0 / (1.0 / self.tau**2 + 1.0 / self.sigma**2)
        self.G.copy_(self.W * v / self.tau**2)
        self.gain.fill_(v / self.sigma**2)
        self.e.copy_(-self.b * v / self.sigma**2)
        self.log_v.fill_(math.log(v))


@pyrovae.register_model("test_pixel_plate")
def build_pixel_plate(config, data_shape, layout="plate", sigma=0.3):
    """The pixel-plate model above, with ``config.latent_dim`` latents."""
    return PixelPlateModel(data_shape, config.latent_dim, layout, sigma)


@pyrovae.register_model("test_time_plate")
def build_time_plate(config, data_shape, layout="plate", sigma=0.3, tau=0.4):
    """The time-plate model above, with ``config.latent_dim`` latents."""
    return TimePlateModel(data_shape, config.latent_dim, layout, sigma, tau)
