"""The two-level hierarchical VAE of Tomczak & Welling (2018), "VAE with a
VampPrior" (AISTATS 2018, arXiv:1705.07120; the authors' code is
``models/HVAE_2level.py`` of github.com/jmtomczak/vae_vampprior)::

    guide(x):  z2 ~ q(z2 | x)           (guide family of enc2(x))         scaled by beta
               z1 ~ q(z1 | x, z2)       (guide family of enc1(x, z2))     scaled by beta
    model(x):  z2 ~ p(z2)               (the prior, e.g. the VampPrior)   scaled by beta
               z1 ~ p(z1 | z2)          (diagonal Gaussian of dec1(z2))   scaled by beta
               x  ~ p(x | z1, z2)       (likelihood of dec0(z1, z2))

Unlike the ``vae`` model's ``hierarchy`` (Burda et al.'s chain
q(z1|x) q(z2|z1), p(x|z1)), both of z1's guide and x's decoder read z2
as well: the top-down guide and the skip connection of the paper.

Networks, as in the authors' code (``hidden`` = 300 units, gated dense
layers h = (W a + b) * sigmoid(V a + c), a plain linear output layer):

- q(z2 | x):      x -> 300 -> 300 -> guide features
- q(z1 | x, z2):  [x -> 300, z2 -> 300] concatenated -> 300 -> guide features
- p(z1 | z2):     z2 -> 300 -> 300 -> (mean, scale) of z1
- p(x | z1, z2):  [z1 -> 300, z2 -> 300] concatenated -> 300 -> likelihood parameters

Sites are ``z2`` and ``z1`` (sampled in that order), then ``x``; all live in
``pyro.plate("data", dim=-1)`` with the latent and data dimensions as event
dimensions, so an outer particles plate at dim -2 vectorizes ELBO particles
and importance sampling. The prior (any registered one) is over z2; the
VampPrior's components are q(z2 | u_k).

The model reads ``model.latent_dim`` (the size of z1), ``model.prior``,
``model.likelihood`` and ``model.guide`` (the family of both q(z1|x,z2) and
q(z2|x)); its options are ``z2_dim`` (default: ``latent_dim``), ``hidden``
and ``init``. It builds its own networks, so ``model.encoder``,
``model.decoder`` and ``model.hierarchy`` must be left at their defaults.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

import pyro

from ..config import ModelConfig
from ..errors import ConfigError
from ..validators import positive_int
from ..components.guides import guides
from ..components.likelihoods import likelihoods
from ..components.nets import INITS, GatedDense, gated_mlp
from ..components.priors import priors
from .base import register_model
from .family import LatentVariableModel, check_prior_density, mean_code
from .helpers import kl_scale, observe
from .vae import CONDITIONAL_SPEC

__all__ = ["HVAE", "TwoInputGated"]


def _init_linear(module: nn.Module, init: str) -> None:
    """``init`` (a key of :data:`~pyrovae.components.nets.INITS`) on every
    linear layer of ``module``, biases zeroed, as :func:`gated_mlp` does."""
    if INITS[init] is None:
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            INITS[init](m.weight)
            nn.init.zeros_(m.bias)


def _flat(x: torch.Tensor, event_shape: Tuple[int, ...]) -> torch.Tensor:
    """``(*batch, *event_shape) -> (*batch, prod(event_shape))``."""
    return x.reshape(*x.shape[: x.dim() - len(event_shape)], -1)


class TwoInputGated(nn.Module):
    """``(a, b) -> linear(gated([gated(a), gated(b)]))``: one gated layer of
    ``hidden`` units per input, concatenated, one joint gated layer and a
    linear output layer of ``out_features``. The inputs' batch dimensions
    broadcast: ``a (*batch_a, a_dim)``, ``b (*batch_b, b_dim)`` ->
    ``(*broadcast(batch_a, batch_b), out_features)``."""

    def __init__(self, a_dim: int, b_dim: int, hidden: int, out_features: int, init: str = "default"):
        super().__init__()
        self.a = GatedDense(a_dim, hidden)
        self.b = GatedDense(b_dim, hidden)
        self.joint = gated_mlp([2 * hidden, hidden, out_features], init)
        _init_linear(self.a, init)
        _init_linear(self.b, init)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ha, hb = torch.broadcast_tensors(self.a(a), self.b(b))
        return self.joint(torch.cat([ha, hb], -1))


class HVAE(LatentVariableModel):
    """Tomczak & Welling's two-level VAE: p(z2) p(z1|z2) p(x|z1,z2) with
    guide q(z2|x) q(z1|x,z2) (see the module notes).

    :param tuple data_shape: shape of one data point, e.g. ``(1, 28, 28)``.
    :param int latent_dim: size of z1.
    :param int z2_dim: size of z2, the latent the prior is over.
    :param likelihood: a :class:`~pyrovae.components.likelihoods.Likelihood` for p(x|z1,z2).
    :param guide_z1: a :class:`~pyrovae.components.guides.GuideFamily` of size ``latent_dim``.
    :param guide_z2: a :class:`~pyrovae.components.guides.GuideFamily` of size ``z2_dim``.
    :param int hidden: units of every gated layer (300 in the paper).
    :param str init: ``he`` (the authors' He-normal init) or ``default`` (torch's).

    The prior is set after construction (``prior_module``), because the
    VampPrior needs :meth:`encode_z2`; build one from a config with
    :meth:`from_config` (options ``z2_dim``, ``hidden``, ``init``).

    The figures' code is z2, the top latent: :meth:`encode`, :meth:`code`,
    :meth:`decode_mean` and :meth:`prior_draws` all read or give z2.

    Example::

        >>> from pyrovae.models.hvae import HVAE
        >>> m = HVAE.from_config({"latent_dim": 3}, data_shape=(1, 8, 8), z2_dim=2, hidden=16)
        >>> z2 = m.prior_draws(4)                      # z2 ~ p(z2), (4, z2_dim)
        >>> z2.shape, m.decode_mean(z2).shape           # E[x | z1 = E[z1 | z2], z2]
        (torch.Size([4, 2]), torch.Size([4, 1, 8, 8]))
    """

    family = "hvae"
    #: the latent sites, top first (the order they are sampled in)
    latent_sites = ("z2", "z1")
    #: how the stochastic layers are wired (recorded in results)
    topology = "tomczak_welling"

    def __init__(self, data_shape, latent_dim: int, z2_dim: int, likelihood, guide_z1, guide_z2,
                 hidden: int = 300, init: str = "he"):
        super().__init__(data_shape)
        self.latent_dim = latent_dim
        self.z2_dim = z2_dim
        self.hidden = hidden
        n_x = math.prod(self.data_shape)
        self.likelihood = likelihood
        self.guide_z1 = guide_z1
        self.guide_z2 = guide_z2
        self.conditional = likelihoods.build(CONDITIONAL_SPEC, data_shape=(latent_dim,))
        # guide networks
        self.encoder_z2 = gated_mlp([n_x, hidden, hidden, guide_z2.num_features], init)
        self.encoder_z1 = TwoInputGated(n_x, z2_dim, hidden, guide_z1.num_features, init)
        # model networks
        self.decoder_z1 = gated_mlp([z2_dim, hidden, hidden, math.prod(self.conditional.param_shape)], init)
        self.decoder_x = TwoInputGated(latent_dim, z2_dim, hidden, math.prod(likelihood.param_shape), init)
        self.prior_module = None

    # -- construction ------------------------------------------------------
    @classmethod
    def _build(cls, config, data_shape, z2_dim: Optional[int] = None, hidden: int = 300, init: str = "he"):
        """The model for the ``model`` section ``config``; a :class:`ConfigError`
        for a bad option or for ``model.encoder``/``decoder``/``hierarchy``
        set (this model does not read them)."""
        _check_unread_keys(config)
        d1 = config.latent_dim
        d2 = d1 if z2_dim is None else z2_dim
        for name, value in (("z2_dim", d2), ("hidden", hidden)):
            positive_int(value, f"model 'hvae': option {name}")
        if init not in INITS:
            raise ConfigError(f"model 'hvae': unknown init {init!r}; choose from {', '.join(INITS)}")
        guide_z1 = guides.build(config.guide, latent_dim=d1)
        guide_z2 = guides.build(config.guide, latent_dim=d2)
        likelihood = likelihoods.build(config.likelihood, data_shape=data_shape)
        model = cls(data_shape, d1, d2, likelihood, guide_z1, guide_z2, hidden, init)
        model.prior_module = priors.build(config.prior, latent_dim=d2, data_shape=data_shape, posterior=model.encode_z2)
        return model

    @classmethod
    def _sizes(cls, config, z2_dim: Optional[int] = None, hidden: int = 300, **options) -> str:
        z2 = config.latent_dim if z2_dim is None else z2_dim
        return f"model.latent_dim={config.latent_dim}, z2_dim={z2}, hidden={hidden}"

    def _check_shapes(self) -> None:
        """Run the networks once on zeros: a clear :class:`ConfigError` when
        the components disagree on shapes, or the prior has no density at
        ordinary codes (a VampPrior made of a delta guide's point masses)."""
        with torch.no_grad():
            x = torch.zeros(2, *self.data_shape, device=self.device)
            try:
                z2 = self.encode_z2(x).sample()
                z1 = self.encode_z1(x, z2).sample()
                p_z1 = self.decode_z1(z2)
                p_x = self.decode(z1, z2)
            except RuntimeError as e:
                raise ConfigError(f"model 'hvae': the networks do not fit data of shape {self.data_shape}: {e}") from None
            shapes = {
                "q(z2|x) gives z2 of shape": (tuple(z2.shape), (2, self.z2_dim)),
                "q(z1|x,z2) gives z1 of shape": (tuple(z1.shape), (2, self.latent_dim)),
                "p(z1|z2) has event shape": (tuple(p_z1.event_shape), (self.latent_dim,)),
                "p(x|z1,z2) has event shape": (tuple(p_x.event_shape), self.data_shape),
                "the prior p(z2) has event shape": (tuple(self.prior().event_shape), (self.z2_dim,)),
            }
            for what, (got, want) in shapes.items():
                if got != want:
                    raise ConfigError(f"model 'hvae': components disagree on shapes: {what} {got}, want {want}")
            check_prior_density(self.prior_module, self.guide_z2, self.z2_dim, self.device, prefix="model 'hvae': ")

    # -- distributions -----------------------------------------------------
    def prior(self):
        """p(z2): batch shape ``()``, event shape ``(z2_dim,)``."""
        return self.prior_module.dist()

    def encode_z2(self, x: torch.Tensor):
        """q(z2 | x) for ``x`` ``(*batch, *data_shape)``: batch shape ``batch``,
        event ``(z2_dim,)``. The VampPrior's components are this at its pseudo-inputs."""
        return self.guide_z2.dist(self.encoder_z2(_flat(x, self.data_shape)))

    def encode_z1(self, x: torch.Tensor, z2: torch.Tensor):
        """q(z1 | x, z2): batch shape the broadcast of ``x``'s and ``z2``'s batch
        dimensions (e.g. ``(B,)`` and ``(K, B)`` give ``(K, B)``), event ``(latent_dim,)``."""
        return self.guide_z1.dist(self.encoder_z1(_flat(x, self.data_shape), z2))

    def decode_z1(self, z2: torch.Tensor):
        """p(z1 | z2), a diagonal Gaussian: batch shape ``z2.shape[:-1]``, event ``(latent_dim,)``."""
        return self.conditional.dist(self.decoder_z1(z2))

    def decode_params(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The likelihood parameters of p(x | z1, z2): ``(*batch, *likelihood.param_shape)``."""
        h = self.decoder_x(z1, z2)
        return h.reshape(*h.shape[:-1], *self.likelihood.param_shape)

    def decode(self, z1: torch.Tensor, z2: torch.Tensor):
        """p(x | z1, z2): batch shape the broadcast of the codes' batch dims, event ``data_shape``."""
        return self.likelihood.dist(self.decode_params(z1, z2))

    # the single-code view of the figures (pyrovae.report): the code is z2
    def encode(self, x: torch.Tensor):
        """q(z2 | x): the distribution of the code the figures read (the top
        latent, which the prior is over); see :meth:`decode_mean`."""
        return self.encode_z2(x)

    def decode_mean(self, z2: torch.Tensor) -> torch.Tensor:
        """E[x | z1, z2] at z1 = the mean of p(z1 | z2), for top codes ``z2``
        ``(*batch, z2_dim)``: ``(*batch, *data_shape)``. With :meth:`encode`
        and :meth:`prior_draws` it gives the figures (traversals,
        interpolations, manifold) one code space, z2's."""
        return self.likelihood.mean(self.decode_params(self.decode_z1(z2).mean, z2))

    @torch.no_grad()
    def prior_draws(self, n: int) -> torch.Tensor:
        """``n`` top codes z2 ~ p(z2), ``(n, z2_dim)``: the space of :meth:`decode_mean`."""
        return self.prior().sample((n,))

    # -- Pyro model and guide --------------------------------------------
    def model(self, x: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0, obs_mask=None):
        """p(z2) p(z1 | z2) p(x | z1, z2).

        :param torch.Tensor x: a batch ``(B, *data_shape)``.
        :param int num_data: full data-set size; the batch is scaled by
            ``num_data / B`` so a mini-batch ELBO estimates the full one.
        :param float beta: weight of both latent sites (KL weight).
        :param torch.Tensor obs_mask: optional bool ``(B, *data_shape)``;
            only ``True`` elements are scored (see :func:`~pyrovae.models.vae.observe_masked`).
        :returns: ``(z1, z2)``.
        """
        self._register(decoder_z1=self.decoder_z1, decoder_x=self.decoder_x, prior=self.prior_module,
                       likelihood=self.likelihood, conditional=self.conditional)
        prior = self.prior()
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                z2 = pyro.sample("z2", prior)
                z1 = pyro.sample("z1", self.decode_z1(z2))
            observe(self.likelihood, self.decode_params(z1, z2), x, obs_mask)
        return z1, z2

    def guide(self, x: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0, obs_mask=None):
        """q(z2 | x) q(z1 | x, z2); takes the same arguments as :meth:`model`
        and returns ``(z1, z2)``."""
        self._register(encoder_z2=self.encoder_z2, encoder_z1=self.encoder_z1, guide_z2=self.guide_z2,
                       guide_z1=self.guide_z1)
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                z2 = pyro.sample("z2", self.encode_z2(x))
                z1 = pyro.sample("z1", self.encode_z1(x, z2))
        return z1, z2

    def local_guide(self, x: torch.Tensor):
        """The guide family with free per-point parameters (the
        ``local_guide`` capability, for :func:`~pyrovae.inference_gaps`).

        q(z2 | x) reads x alone, so its features are free per point.
        q(z1 | x, z2) reads z2, which differs from draw to draw, so it
        cannot take free features; it gets a free per-point offset added to
        its encoder's output instead: q*(z1 | x, z2) = family(enc1(x, z2) +
        offset). The offset starts at zero, so q* starts at the amortized
        guide and its family contains it: q* is the amortized guide plus
        per-point corrections, the natural per-point family for a
        conditional layer.

        :param torch.Tensor x: a batch ``(N, *data_shape)``.
        :returns: ``(params, guide_fn)``: ``params = {"z2": (N, F2), "z1_offset": (N, F1)}``
            (q(z2 | x)'s features detached, zeros; F the guide features of
            each layer), and ``guide_fn(params, x, **kwargs)``, a Pyro guide
            over the sites of :meth:`guide` in the data plate.

        Example::

            >>> import torch
            >>> from pyrovae.models.hvae import HVAE
            >>> m = HVAE.from_config({"latent_dim": 3}, data_shape=(1, 4, 4), z2_dim=2, hidden=8)
            >>> params, guide_fn = m.local_guide(torch.zeros(5, 1, 4, 4))
            >>> {k: tuple(v.shape) for k, v in params.items()}
            {'z2': (5, 4), 'z1_offset': (5, 6)}
        """
        with torch.no_grad():
            z2 = self.encoder_z2(_flat(x, self.data_shape)).detach().clone()
            params = {"z2": z2, "z1_offset": z2.new_zeros(len(x), self.guide_z1.num_features)}

        def guide_fn(params, x, **kwargs):
            with self._data_plate(x, None):
                z2 = pyro.sample("z2", self.guide_z2.dist(params["z2"]))
                features = self.encoder_z1(_flat(x, self.data_shape), z2) + params["z1_offset"]
                z1 = pyro.sample("z1", self.guide_z1.dist(features))
            return z1, z2

        return params, guide_fn

    # -- conveniences ------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` new data points ``(n, *data_shape)``: z2 ~ p(z2), z1 ~ p(z1|z2)
        (a draw, as the authors' ``generate_x``), then the likelihood's mean
        (``mean=True``) or a draw from p(x | z1, z2)."""
        z2 = self.prior_draws(n)
        z1 = self.decode_z1(z2).sample()
        return self._data_from(self.decode_params(z1, z2), mean)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(z1, z2)`` codes of ``x``: z2 the mean of q(z2 | x), z1 the mean
        of q(z1 | x, z2) at that z2; ``(*batch, latent_dim)`` and ``(*batch, z2_dim)``."""
        z2 = mean_code(self.encode_z2(x))
        return mean_code(self.encode_z1(x, z2)), z2

    @torch.no_grad()
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x``: the mean of q(z2 | x), the top latent
        (``(*batch, z2_dim)``; the space of :meth:`encode`, :meth:`decode_mean` and
        the prior). :meth:`codes` gives z1's as well."""
        return mean_code(self.encode_z2(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z1, z2] at the codes of :meth:`codes`, shape of ``x``."""
        z1, z2 = self.codes(x)
        return self.likelihood.mean(self.decode_params(z1, z2))


def _check_unread_keys(model_cfg: ModelConfig) -> None:
    """A :class:`ConfigError` for the model-section keys this model would
    silently ignore: ``encoder``, ``decoder`` (it builds its own gated
    networks) and ``hierarchy`` (its two levels are fixed)."""
    if model_cfg.hierarchy:
        raise ConfigError(
            "model.hierarchy is for the vae model; the hvae model has its two stochastic layers built in "
            "(set the size of z2 with model.options.z2_dim)"
        )
    defaults = ModelConfig()
    for key in ("encoder", "decoder"):
        if getattr(model_cfg, key) != getattr(defaults, key):
            raise ConfigError(
                f"model.{key} is not read by the hvae model, which builds the gated networks of Tomczak & "
                f"Welling (options hidden and init under model.options); remove model.{key} from the config"
            )


@register_model("hvae")
def build_hvae(config, data_shape, z2_dim=None, hidden=300, init="he"):
    """The two-level hierarchical VAE of Tomczak & Welling, "VAE with a
    VampPrior" (2018): q(z2|x) q(z1|x,z2) and p(z2) p(z1|z2) p(x|z1,z2), with
    the prior on z2 and gated networks of ``hidden`` units. ``model.latent_dim``
    is the size of z1; ``z2_dim`` that of z2 (default: the same)."""
    return HVAE.from_config(config, data_shape, z2_dim=z2_dim, hidden=hidden, init=init)
