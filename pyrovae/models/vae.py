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

import contextlib
import uuid
from typing import Any, Optional, Tuple

import torch
from torch import nn

import pyro
import pyro.poutine as poutine

from ..config import ModelConfig, load_config
from ..errors import ConfigError, DataError
from ..components.guides import guides
from ..components.likelihoods import likelihoods
from ..components.nets import decoders, encoders
from ..components.priors import priors
from .base import register_model

__all__ = ["VAE", "StochasticLayer", "kl_scale", "observe", "observe_masked"]

#: how p(z_{l-1} | z_l) is parameterized between stochastic layers
CONDITIONAL_SPEC = {"name": "normal", "scale_mode": "decoder"}


def kl_scale(beta: float):
    """The context that weights the latent sites by ``beta``: ``poutine.scale``,
    or ``poutine.mask(False)`` for beta = 0 (Pyro's scale must be positive)."""
    if beta == 1.0:
        return contextlib.nullcontext()
    if beta == 0.0:
        return poutine.mask(mask=False)
    return poutine.scale(scale=beta)


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


class VAE(nn.Module):
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

    Build one from a config with :meth:`from_config`. ``model(x, *, num_data,
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
    """

    def __init__(self, data_shape, latent_dim, encoder, decoder, prior, likelihood, guide_family, upper=()):
        super().__init__()
        self.upper = nn.ModuleList(upper)
        self.latent_sites = ["z"] + [f"z{i + 2}" for i in range(len(self.upper))]
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.likelihood = likelihood
        self.guide_family = guide_family
        # A name prefix unique to this instance: two VAEs in one process
        # never share parameters through Pyro's global param store.
        self.pyro_name = f"vae_{uuid.uuid4().hex[:12]}"
        self._register_modules = True

    # -- construction ------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any = None, data_shape: Tuple[int, ...] = (1, 28, 28)) -> "VAE":
        """Build from a dict, a YAML path, a :class:`~pyrovae.config.Config`
        or a :class:`~pyrovae.config.ModelConfig` (the whole config or its
        ``model`` section).

        :param tuple data_shape: shape of one data point, e.g. ``(784,)`` or ``(1, 28, 28)``.
        :raises ConfigError: for an unknown component or option, or a data
            shape the chosen networks cannot take.
        """
        model_cfg = _model_section(cfg)
        data_shape = tuple(int(s) for s in data_shape)
        if not data_shape or any(s < 1 for s in data_shape):
            raise ConfigError(f"data_shape must be a tuple of positive sizes, got {data_shape}")
        d = model_cfg.latent_dim
        try:
            guide_family = guides.build(model_cfg.guide, latent_dim=d)
            likelihood = likelihoods.build(model_cfg.likelihood, data_shape=data_shape)
            encoder = encoders.build(model_cfg.encoder, data_shape=data_shape, out_features=guide_family.num_features)
            decoder = decoders.build(model_cfg.decoder, latent_dim=d, out_shape=likelihood.param_shape)
            upper, below = [], d
            for layer in model_cfg.hierarchy:
                upper.append(StochasticLayer(below, layer["latent_dim"], layer["encoder"], layer["decoder"], layer["guide"]))
                below = layer["latent_dim"]
            vae = cls(data_shape, d, encoder, decoder, None, likelihood, guide_family, upper)
            vae.prior_module = priors.build(
                model_cfg.prior, latent_dim=vae.top_dim, data_shape=data_shape, posterior=vae.encode_top
            )
        except ConfigError as e:
            if not getattr(e, "too_large", False):
                raise
            # the sizes come from the model section as well as from the component's options
            layers = [layer["latent_dim"] for layer in model_cfg.hierarchy]
            sizes = f"model.latent_dim={d}" + (f", hierarchy latent_dims {layers}" if layers else "")
            raise ConfigError(f"{e} (with {sizes} and data of shape {data_shape})") from None
        vae._check_shapes()
        return vae

    @property
    def top_dim(self) -> int:
        """Size of the top latent, the one the prior is over."""
        return self.upper[-1].latent_dim if len(self.upper) else self.latent_dim

    def _probe_condition(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Extra arguments of ``encode``/``decode`` for the two probe points
        ``x`` of the build-time shape check (a conditional model's labels)."""
        return ()

    def _check_shapes(self) -> None:
        with torch.no_grad():
            x = torch.zeros(2, *self.data_shape, device=self.device)
            given = self._probe_condition(x)
            cond = ",y" if given else ""
            try:
                q = self.encode(x, *given)
                z = q.sample()
                p = self.decode(z, *given)
            except RuntimeError as e:
                raise ConfigError(f"the networks do not fit data of shape {self.data_shape}: {e}") from None
            if tuple(z.shape) != (2, self.latent_dim) or tuple(p.event_shape) != self.data_shape:
                raise ConfigError(
                    f"components disagree on shapes: q(z|x{cond}) gives z of shape {tuple(z.shape[1:])} "
                    f"(want ({self.latent_dim},)), p(x|z{cond}) has event shape {tuple(p.event_shape)} "
                    f"(want {self.data_shape})"
                )
            if tuple(self.prior().event_shape) != (self.top_dim,):
                raise ConfigError(f"the prior's event shape {tuple(self.prior().event_shape)} is not ({self.top_dim},)")
            top_guide = self.upper[-1].guide_family if len(self.upper) else self.guide_family
            check_prior_density(self.prior_module, top_guide, self.top_dim, self.device)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # -- distributions -----------------------------------------------------
    def prior(self):
        """p(z) (the top latent's): batch shape ``()``, event shape ``(top_dim,)``."""
        return self.prior_module.dist()

    def encode_top(self, x: torch.Tensor):
        """q(z_top | x), following the guide's means up the hierarchy (the
        VampPrior pushes its pseudo-inputs through this)."""
        q = self.encode(x)
        for layer in self.upper:
            q = layer.encode(_code(q))
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
    def _register(self, **modules) -> None:
        """``pyro.module`` each network under this instance's prefix, so that
        Pyro's optimizers (``SVI``) find and train its parameters."""
        if self._register_modules:
            for name, module in modules.items():
                pyro.module(f"{self.pyro_name}.{name}", module)

    @contextlib.contextmanager
    def direct_parameters(self):
        """Within this context the model and guide skip ``pyro.module``:
        for loops that optimize ``vae.parameters()`` directly with a torch
        optimizer (pyrovae's trainer), where registration is pure overhead."""
        previous, self._register_modules = self._register_modules, False
        try:
            yield self
        finally:
            self._register_modules = previous

    def _data_plate(self, x: torch.Tensor, num_data: Optional[int]):
        batch = x.shape[0]
        if num_data is None or num_data == batch:
            return pyro.plate("data", batch, dim=-1)
        subsample = torch.arange(batch, device=x.device)
        return pyro.plate("data", num_data, subsample=subsample, dim=-1)

    #: the batch fields the model and guide take (see :mod:`pyrovae.models.base`)
    fields = ("x",)

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

    # -- conveniences ------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` new data points ``(n, *data_shape)`` from p(z) p(x|z): the
        likelihood's mean (``mean=True``, what one looks at) or a draw."""
        z = self.prior().sample((n,))
        for layer in reversed(self.upper):
            z = layer.decode(z).sample()
        params = self.decoder(z)
        if mean:
            return self.likelihood.mean(params)
        return self.likelihood.dist(params).sample().to(params.dtype)  # integer levels as floats, like the data

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = code(x)], shape of ``x``: the decoder's mean at the
        guide's mean code (a draw when the guide has no closed-form mean)."""
        return self.likelihood.mean(self.decoder(self.code(x)))

    @torch.no_grad()
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of ``x``: the mean of q(z|x), shape ``(*batch, latent_dim)``."""
        return _code(self.encode(x))

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`~pyrovae.errors.DataError` unless ``x`` is a finite
        batch ``(N, *data_shape)`` inside the likelihood's support."""
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.data_shape:
            raise DataError(
                f"{what} points have shape {tuple(x.shape[1:])} but the model was built for "
                f"{self.data_shape}; reshape the data or build the model with data_shape={tuple(x.shape[1:])}"
            )
        from ..data import check_finite

        check_finite(x, what)
        self.likelihood.check_data(x)


def check_prior_density(prior_module, guide_family, dim: int, device, prefix: str = "") -> None:
    """Raise :class:`ConfigError` unless the prior has a finite density at a
    few fixed codes ``(3, dim)`` (no RNG is used): a VampPrior made of a
    delta guide's point masses has none, and its loss would be inf.
    ``prefix`` starts the message (e.g. the model's name)."""
    probe = torch.linspace(-1.0, 1.0, 3 * dim, device=device).reshape(3, dim)
    names = [getattr(type(m), "registered_name", type(m).__name__) for m in (prior_module, guide_family)]
    try:
        log_p = prior_module.dist().log_prob(probe)
        problem = None if bool(torch.isfinite(log_p).all()) else f"log p(z) = {log_p.tolist()}"
    except RuntimeError as e:
        problem = str(e).splitlines()[0]
    if problem is not None:
        raise ConfigError(
            f"{prefix}the prior {names[0]!r} has no usable density at ordinary codes with the {names[1]!r} "
            f"guide ({problem}); choose another prior or guide"
        )


def _code(q) -> torch.Tensor:
    """The mean of ``q``, or a draw when it has no closed-form mean (flows)."""
    try:
        return q.mean
    except NotImplementedError:
        return q.rsample()


def observe(likelihood, params: torch.Tensor, x: torch.Tensor, obs_mask=None) -> torch.Tensor:
    """The data site ``x ~ likelihood.dist(params)``, observed. With
    ``obs_mask`` only the observed elements are scored
    (:func:`observe_masked`), and the deterministic site ``x_mean`` records
    E[x | latents] (``likelihood.mean(params)``), which imputation averages."""
    p_x = likelihood.dist(params)
    if obs_mask is None:
        return pyro.sample("x", p_x, obs=x)
    pyro.deterministic("x_mean", likelihood.mean(params), event_dim=x.dim() - 1)
    return observe_masked("x", p_x, x, obs_mask)


def observe_masked(name: str, fn, obs: torch.Tensor, obs_mask: torch.Tensor) -> torch.Tensor:
    """Pyro's ``obs_mask`` down to single data elements.

    ``pyro.sample(name, fn, obs=obs, obs_mask=m)`` takes a mask over
    ``fn.batch_shape`` only: one flag per data point. Here ``fn`` is p(x|z)
    with the data shape as event shape, and ``obs_mask`` is bool
    ``(B, *data_shape)`` (True = observed). As Pyro does, this makes two
    sites: ``{name}_observed`` scores only the observed elements and
    ``{name}_unobserved`` samples the others from p(x|z); ``{name}`` is a
    deterministic site with the two interleaved. Needs ``fn`` to be an
    ``Independent`` over elements (every registered likelihood is).
    """
    obs_mask = torch.as_tensor(obs_mask, dtype=torch.bool, device=obs.device)
    if obs_mask.shape != obs.shape:
        raise DataError(
            f"obs_mask has shape {tuple(obs_mask.shape)} but the data has shape {tuple(obs.shape)}; "
            "give one bool per data element (True = observed)"
        )
    base, n = fn.base_dist, fn.reinterpreted_batch_ndims
    observed = pyro.sample(f"{name}_observed", base.mask(obs_mask).to_event(n), obs=obs)
    unobserved = pyro.sample(f"{name}_unobserved", base.mask(~obs_mask).to_event(n))
    return pyro.deterministic(name, torch.where(obs_mask, observed, unobserved), event_dim=n)


def _model_section(cfg: Any) -> ModelConfig:
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, dict) and not (set(cfg) & {"data", "model", "train"}):
        from ..config import _section_from_dict

        return _section_from_dict("model", cfg)
    return load_config(cfg).model


@register_model("vae")
def build_vae(config, data_shape):
    """The variational autoencoder p(z) p(x|z) with guide q(z|x), built from the
    ``model`` section's components; ``model.hierarchy`` stacks Burda et al.'s
    stochastic layers above z."""
    return VAE.from_config(config, data_shape=data_shape)
