"""The VAE: registered components composed into a Pyro model and guide.

::

    model(x):  z ~ p(z)          (prior)           scaled by beta
               x ~ p(x | z)      (likelihood of decoder(z))
    guide(x):  z ~ q(z | x)      (guide family of encoder(x)) scaled by beta

Both live in ``pyro.plate("data")`` with the latent and data dimensions as
event dimensions, so an outer particles plate vectorizes ELBO particles
and importance sampling.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

import pyro

from ..errors import ConfigError
from ..components.guides import guides
from ..components.likelihoods import likelihoods
from ..components.nets import decoders, encoders
from ..components.priors import priors
from .base import register_model
from .family import LatentVariableModel, check_prior_density, mean_code
from .helpers import kl_scale, observe, observe_masked

__all__ = ["VAE", "StochasticLayer", "kl_scale", "observe", "observe_masked"]

#: how p(z_{l-1} | z_l) is parameterized between stochastic layers
CONDITIONAL_SPEC = {"name": "normal", "scale_mode": "decoder"}


class StochasticLayer(nn.Module):
    """One stochastic layer z_l above z_{l-1} in a hierarchical VAE.

    - guide: q(z_l | z_{l-1}) = ``guide_family(encoder(z_{l-1}))``
    - model: p(z_{l-1} | z_l) = ``conditional(decoder(z_l))``, a diagonal
      Gaussian whose mean and scale the decoder predicts.

    :param int below_dim: size of z_{l-1}.
    :param int latent_dim: size of z_l.
    """

    def __init__(self, below_dim: int, latent_dim: int, encoder_spec, decoder_spec, guide_spec):
        super().__init__()
        self.latent_dim = latent_dim
        self.guide_family = guides.build(guide_spec, latent_dim=latent_dim)
        self.conditional = likelihoods.build(CONDITIONAL_SPEC, data_shape=(below_dim,))
        self.encoder = encoders.build(encoder_spec, data_shape=(below_dim,), out_features=self.guide_family.num_features)
        self.decoder = decoders.build(decoder_spec, latent_dim=latent_dim, out_shape=self.conditional.param_shape)

    def encode(self, z_below: torch.Tensor):
        """q(z_l | z_{l-1}): batch shape of ``z_below`` minus its last dim, event ``(latent_dim,)``."""
        return self.guide_family.dist(self.encoder(z_below))

    def decode(self, z: torch.Tensor):
        """p(z_{l-1} | z_l): event shape ``(below_dim,)``."""
        return self.conditional.dist(self.decoder(z))


class VAE(LatentVariableModel):
    """A variational autoencoder p(z) p(x|z) with guide q(z|x).

    With ``upper`` stochastic layers it is the hierarchical VAE of Burda et
    al. (2015): the guide is q(z1|x) q(z2|z1) ... and the model is
    p(z_L) ... p(z1|z2) p(x|z1). The latent sites are named ``z``, ``z2``,
    ..., ``zL``; the prior is over the top one.

    :param tuple data_shape: shape of one data point, e.g. ``(1, 28, 28)``.
    :param int latent_dim: size of z.
    :param encoder: network ``(*batch, *data_shape) -> (*batch, guide.num_features)``.
    :param decoder: network ``(*batch, latent_dim) -> (*batch, *likelihood.param_shape)``.
    :param prior: a :class:`~pyrovae.Prior`.
    :param likelihood: a :class:`~pyrovae.Likelihood`.
    :param guide_family: a :class:`~pyrovae.GuideFamily`.
    :param upper: :class:`~pyrovae.models.vae.StochasticLayer` s above z1, bottom first (default none).

    Build one from a config with
    :meth:`~pyrovae.models.family.LatentVariableModel.from_config`. ``model(x, *, num_data,
    beta, obs_mask)`` and ``guide(...)`` are Pyro functions of a batch
    ``x`` ``(N, *data_shape)``; the conveniences below give the
    distributions and tensors directly.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 4}, data_shape=(1, 28, 28))
        >>> x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
        >>> vae.prior().event_shape                     # p(z)
        torch.Size([4])
        >>> q = vae.encode(x)                           # q(z | x)
        >>> q.batch_shape, q.event_shape
        (torch.Size([8]), torch.Size([4]))
        >>> vae.decode(q.rsample()).event_shape         # p(x | z), one per z
        torch.Size([1, 28, 28])
        >>> vae.sample(3).shape, vae.reconstruct(x).shape
        (torch.Size([3, 1, 28, 28]), torch.Size([8, 1, 28, 28]))
        >>> vae.decode_mean(vae.prior_draws(5)).shape   # E[x | z] at codes from the prior
        torch.Size([5, 1, 28, 28])
    """

    family = "vae"

    def __init__(self, data_shape, latent_dim, encoder, decoder, prior, likelihood, guide_family, upper=()):
        super().__init__(data_shape)
        self.upper = nn.ModuleList(upper)
        self.latent_sites = ["z"] + [f"z{i + 2}" for i in range(len(self.upper))]
        self.latent_dim = latent_dim
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.likelihood = likelihood
        self.guide_family = guide_family

    # -- construction ------------------------------------------------------
    @classmethod
    def _build(cls, config, data_shape):
        d = config.latent_dim
        guide_family = guides.build(config.guide, latent_dim=d)
        likelihood = likelihoods.build(config.likelihood, data_shape=data_shape)
        encoder = encoders.build(config.encoder, data_shape=data_shape, out_features=guide_family.num_features)
        decoder = decoders.build(config.decoder, latent_dim=d, out_shape=likelihood.param_shape)
        upper, below = [], d
        for layer in config.hierarchy:
            upper.append(StochasticLayer(below, layer["latent_dim"], layer["encoder"], layer["decoder"], layer["guide"]))
            below = layer["latent_dim"]
        vae = cls(data_shape, d, encoder, decoder, None, likelihood, guide_family, upper)
        vae.prior_module = priors.build(config.prior, latent_dim=vae.top_dim, data_shape=data_shape,
                                        posterior=vae.encode_top)
        return vae

    @classmethod
    def _sizes(cls, config) -> str:
        layers = [layer["latent_dim"] for layer in config.hierarchy]
        return f"model.latent_dim={config.latent_dim}" + (f", hierarchy latent_dims {layers}" if layers else "")

    @property
    def top_dim(self) -> int:
        """Size of the top latent, the one the prior is over."""
        return self.upper[-1].latent_dim if len(self.upper) else self.latent_dim

    def _check_shapes(self) -> None:
        with torch.no_grad():
            self._check_round_trip(self.encode, self.decode, self.latent_dim)
            if tuple(self.prior().event_shape) != (self.top_dim,):
                raise ConfigError(f"the prior's event shape {tuple(self.prior().event_shape)} is not ({self.top_dim},)")
            top_guide = self.upper[-1].guide_family if len(self.upper) else self.guide_family
            check_prior_density(self.prior_module, top_guide, self.top_dim, self.device)

    # -- distributions -----------------------------------------------------
    def prior(self):
        """p(z) (the top latent's): batch shape ``()``, event shape ``(top_dim,)``."""
        return self.prior_module.dist()

    def encode_top(self, x: torch.Tensor):
        """q(z_top | x), following the guide's means up the hierarchy (the
        VampPrior pushes its pseudo-inputs through this)."""
        q = self.encode(x)
        for layer in self.upper:
            q = layer.encode(mean_code(q))
        return q

    def encode(self, x: torch.Tensor):
        """q(z|x) for ``x`` of shape ``(*batch, *data_shape)``: batch shape
        ``batch``, event shape ``(latent_dim,)``."""
        return self.guide_family.dist(self.encoder(x))

    def decode(self, z: torch.Tensor):
        """p(x|z) for ``z`` of shape ``(*batch, latent_dim)``: batch shape
        ``batch``, event shape ``data_shape``."""
        return self.likelihood.dist(self.decoder(z))

    # -- Pyro model and guide --------------------------------------------
    def model(self, x: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0, obs_mask=None):
        """p(z) p(x|z).

        :param torch.Tensor x: a batch ``(B, *data_shape)``.
        :param int num_data: full data-set size; the log-likelihood is scaled
            by ``num_data / B`` so a mini-batch ELBO estimates the full one.
        :param float beta: weight of the latent site (KL weight).
        :param torch.Tensor obs_mask: optional bool ``(B, *data_shape)``;
            only ``True`` elements are scored.
        """
        self._register(decoder=self.decoder, prior=self.prior_module, likelihood=self.likelihood, upper=self.upper)
        prior = self.prior()
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                z = pyro.sample(self.latent_sites[-1], prior)
                for layer, site in zip(reversed(self.upper), reversed(self.latent_sites[:-1])):
                    z = pyro.sample(site, layer.decode(z))
            observe(self.likelihood, self.decoder(z), x, obs_mask)
        return z

    def guide(self, x: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0, obs_mask=None):
        """q(z|x); takes the same arguments as :meth:`model`."""
        self._register(encoder=self.encoder, guide=self.guide_family, upper=self.upper)
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                z = pyro.sample("z", self.encode(x))
                for layer, site in zip(self.upper, self.latent_sites[1:]):
                    z = pyro.sample(site, layer.encode(z))
        return z

    # -- capabilities --------------------------------------------------------
    def local_guide(self, x: torch.Tensor):
        """The guide family with free per-point parameters (the
        ``local_guide`` capability, for :func:`~pyrovae.inference_gaps`).

        q(z1 | x) reads x alone, so its features are free per point. An
        upper layer's q(z_l | z_{l-1}) reads a latent, which differs from
        draw to draw, so it cannot take free features; it gets a free
        per-point offset added to its encoder's output instead:
        q*(z_l | z_{l-1}) = family(encoder_l(z_{l-1}) + offset_l). The
        offsets start at zero, so q* starts at the amortized guide and its
        family contains it: q* is the amortized guide plus per-point
        corrections, the natural per-point family for a conditional layer.

        :param torch.Tensor x: a batch ``(N, *data_shape)``.
        :returns: ``(params, guide_fn)``: ``params["z"]``, the encoder's output
            ``(N, guide.num_features)`` detached, and for each upper site
            ``zL`` ``params["zL_offset"]``, zeros ``(N, layer.guide.num_features)``;
            ``guide_fn(params, x, **kwargs)`` is a Pyro guide over the
            sites of :meth:`guide`, in the data plate (the networks'
            weights stay as they are).

        Example::

            >>> import torch, pyrovae
            >>> vae = pyrovae.VAE.from_config({"latent_dim": 2, "hierarchy": [{"latent_dim": 3}]}, (1, 4, 4))
            >>> params, guide_fn = vae.local_guide(torch.zeros(5, 1, 4, 4))
            >>> {k: tuple(v.shape) for k, v in params.items()}
            {'z': (5, 4), 'z2_offset': (5, 6)}
        """
        with torch.no_grad():
            params = {"z": self.encoder(x).detach().clone()}
            for layer, site in zip(self.upper, self.latent_sites[1:]):
                params[f"{site}_offset"] = params["z"].new_zeros(len(x), layer.guide_family.num_features)

        def guide_fn(params, x, **kwargs):
            with self._data_plate(x, None):
                z = pyro.sample("z", self.guide_family.dist(params["z"]))
                for layer, site in zip(self.upper, self.latent_sites[1:]):
                    z = pyro.sample(site, layer.guide_family.dist(layer.encoder(z) + params[f"{site}_offset"]))
            return z

        return params, guide_fn

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] for codes ``z`` ``(*batch, latent_dim)`` (the bottom
        latent): ``(*batch, *data_shape)``."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def prior_draws(self, n: int) -> torch.Tensor:
        """``n`` codes ``(n, latent_dim)`` of the latent the decoder reads:
        z ~ p(z), passed down the stochastic layers (a draw from each)."""
        z = self.prior().sample((n,))
        for layer in reversed(self.upper):
            z = layer.decode(z).sample()
        return z

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` new data points ``(n, *data_shape)`` from p(z) p(x|z): the
        likelihood's mean (``mean=True``, what one looks at) or a draw."""
        return self._data_from(self.decoder(self.prior_draws(n)), mean)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = code(x)], shape of ``x``: the decoder's mean at the
        guide's mean code (a draw when the guide has no closed-form mean)."""
        return self.decode_mean(self.code(x))

    @torch.no_grad()
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x``: the mean of q(z|x), shape ``(*batch, latent_dim)``."""
        return mean_code(self.encode(x))


@register_model("vae")
def build_vae(config, data_shape):
    """The variational autoencoder p(z) p(x|z) with guide q(z|x), built from the
    ``model`` section's components; ``model.hierarchy`` stacks Burda et al.'s
    stochastic layers above z."""
    return VAE.from_config(config, data_shape=data_shape)
