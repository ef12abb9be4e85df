"""The conditional VAE (Sohn, Lee & Yan 2015; Pyro's ``examples/cvae``):
every distribution is conditioned on an observed field ``y``.

::

    model(x, y):  z ~ p(z)            (any registered prior)     scaled by beta
                  x ~ p(x | z, y)     (likelihood of decoder(z ⊕ c(y)))
    guide(x, y):  z ~ q(z | x, y)     (guide family of encoder(x ⊕ c(y)))

``c(y)`` is the condition vector: the one-hot code of a class label
(``num_classes`` C, labels ``(B,)`` in 0..C-1), or ``y`` itself for a
real-valued field (``condition_dim`` F, ``y`` of shape ``(B, F)``).

The networks are the registered ones, fed the condition by concatenation:
the decoder reads ``z ⊕ c`` (built for ``latent_dim + C`` inputs); the
encoder reads ``flatten(x) ⊕ c`` when it takes flat input (``mlp``,
``gated_mlp``), or ``x`` with C constant channels appended when it needs
images (``conv``). A VampPrior's pseudo-inputs are pushed through
q(z | u_k, y_k) with pseudo-labels ``y_k = k mod C`` (a zero condition for
real-valued fields).

:class:`ConditionalVAE` and the semi-supervised M2 (:mod:`pyrovae.models.m2`,
whose labels may be missing) share :class:`ConditionalBase`.

Example::

    cfg = pyrovae.load_config({"model": {"name": "cvae", "options": {"num_classes": 10}}})
    cvae = pyrovae.build_model(cfg.model, (1, 28, 28))
    digits = cvae.sample(10, y=torch.full((10,), 3))   # ten 3s, (10, 1, 28, 28)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import pyro

from ..components.guides import guides
from ..components.likelihoods import likelihoods
from ..components.nets import decoders, encoders
from ..components.priors import priors
from ..errors import ConfigError, DataError
from ..validators import int_at_least
from .base import register_model
from .family import LatentVariableModel, check_prior_density, mean_code
from .helpers import kl_scale, observe

__all__ = ["Condition", "ConditionalEncoder", "ConditionalDecoder", "ConditionalBase", "ConditionalVAE"]


class Condition(nn.Module):
    """Turns the field ``y`` into the condition vector c(y) the networks read.

    :param int num_classes: C for class labels ``(..., B)`` in 0..C-1 (c is one-hot, size C).
    :param int condition_dim: F for a real-valued field ``(B, F)`` (c = y, size F).

    Exactly one of the two is set.
    """

    def __init__(self, num_classes: Optional[int] = None, condition_dim: Optional[int] = None):
        super().__init__()
        if (num_classes is None) == (condition_dim is None):
            raise ConfigError(
                "a conditional model needs exactly one of model.options.num_classes (class labels) and "
                f"model.options.condition_dim (a real-valued field), got num_classes={num_classes}, "
                f"condition_dim={condition_dim}"
            )
        for name, value, least in (("num_classes", num_classes, 2), ("condition_dim", condition_dim, 1)):
            if value is not None:
                int_at_least(value, least, f"model.options.{name}")
        self.num_classes = num_classes
        self.condition_dim = condition_dim

    @property
    def is_label(self) -> bool:
        """Whether ``y`` holds class labels (else a real-valued vector per point)."""
        return self.num_classes is not None

    @property
    def size(self) -> int:
        """Length of c(y)."""
        return self.num_classes if self.is_label else self.condition_dim

    def forward(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """c(y) in the dtype and device of ``like``: ``(*y.shape, C)`` for
        labels (any leading enumeration dims), ``y`` itself for vectors."""
        if self.is_label:
            return F.one_hot(y.long(), self.num_classes).to(like.dtype)
        return y.to(like.dtype)

    def pseudo(self, count: int, like: torch.Tensor) -> torch.Tensor:
        """Conditions for ``count`` VampPrior pseudo-inputs ``(count, size)``:
        labels ``k mod C``, or zeros for a real-valued field."""
        if self.is_label:
            return self(torch.arange(count, device=like.device) % self.num_classes, like)
        return like.new_zeros(count, self.condition_dim)

    def check(self, y: Any, num_points: int, what: str, allow_missing: bool = False) -> None:
        """Raise :class:`DataError` unless ``y`` fits: one finite entry per
        point; labels integers in 0..C-1 (or -1, "no label", when ``allow_missing``)."""
        if not isinstance(y, torch.Tensor):
            raise DataError(f"{what}: the field y must be a torch.Tensor, got {type(y).__name__}")
        want = (num_points,) if self.is_label else (num_points, self.condition_dim)
        if tuple(y.shape) != want:
            kind = "one class label per point" if self.is_label else f"a vector of {self.condition_dim} values per point"
            raise DataError(f"{what}: y has shape {tuple(y.shape)}, expected {want} ({kind})")
        if y.is_floating_point():
            bad = ~torch.isfinite(y)
            if bool(bad.any()):
                first = int(bad.flatten().nonzero()[0])
                raise DataError(f"{what}: y holds {int(bad.sum())} NaN/inf values (first at flat index {first}); "
                                "drop those points or give them a label")
        if not self.is_label:
            return
        if y.is_floating_point() and bool((y != y.round()).any()):
            first = int((y != y.round()).nonzero()[0])
            raise DataError(f"{what}: label {float(y[first])} at index {first} is not an integer; "
                            f"labels are integers 0..{self.num_classes - 1}")
        low = -1 if allow_missing else 0
        bad = (y < low) | (y >= self.num_classes)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            missing = " (-1 marks a missing label)" if allow_missing else ""
            hint = "" if allow_missing or int(y[first]) != -1 else (
                "; -1 marks a missing label, and this model needs every label: use the m2 model for partly labelled data")
            raise DataError(
                f"{what}: label {int(y[first])} at index {first} is outside 0..{self.num_classes - 1}{missing} "
                f"(model.options.num_classes={self.num_classes}){hint or '; relabel the data or raise num_classes'}"
            )


def _broadcast_batch(*shapes) -> Tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*shapes))


class ConditionalEncoder(nn.Module):
    """A registered encoder fed ``x ⊕ c``: ``(x (*batch, *data_shape), c (*batch', size))
    -> (*broadcast(batch, batch'), out_features)``; leading dims broadcast,
    so an enumerated label ``(C, 1)`` against ``x`` ``(B, ...)`` gives ``(C, B, out)``.

    The condition is concatenated to the flattened data when the encoder
    takes flat input, else appended as constant channels of an image.
    """

    def __init__(self, spec, data_shape: Tuple[int, ...], cond_size: int, out_features: int):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.cond_size = cond_size
        flat = (math.prod(self.data_shape) + cond_size,)
        try:
            self.net = encoders.build(spec, data_shape=flat, out_features=out_features)
            self.channels = False
        except ValueError:  # an encoder that needs images (ConfigError is a ValueError too)
            if len(self.data_shape) != 3:
                raise
            c, h, w = self.data_shape
            self.net = encoders.build(spec, data_shape=(c + cond_size, h, w), out_features=out_features)
            self.channels = True

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        nd = len(self.data_shape)
        batch = _broadcast_batch(x.shape[: x.dim() - nd], c.shape[:-1])
        if self.channels:
            h, w = self.data_shape[1:]
            maps = c[..., None, None].expand(*batch, self.cond_size, h, w)
            return self.net(torch.cat([x.expand(*batch, *self.data_shape), maps], -3))
        flat = x.reshape(*x.shape[: x.dim() - nd], -1)
        return self.net(torch.cat([flat.expand(*batch, flat.shape[-1]), c.expand(*batch, self.cond_size)], -1))


class ConditionalDecoder(nn.Module):
    """A registered decoder fed ``z ⊕ c``: ``(z (*batch, latent_dim), c (*batch', size))
    -> (*broadcast(batch, batch'), *out_shape)``."""

    def __init__(self, spec, latent_dim: int, cond_size: int, out_shape: Tuple[int, ...]):
        super().__init__()
        self.latent_dim, self.cond_size = latent_dim, cond_size
        self.net = decoders.build(spec, latent_dim=latent_dim + cond_size, out_shape=out_shape)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        batch = _broadcast_batch(z.shape[:-1], c.shape[:-1])
        return self.net(torch.cat([z.expand(*batch, self.latent_dim), c.expand(*batch, self.cond_size)], -1))


class ConditionalBase(LatentVariableModel):
    """What the conditional families (:class:`ConditionalVAE` and
    :class:`~pyrovae.models.m2.M2`) share: z ~ p(z), x ~ p(x | z, y) through
    networks fed the condition c(y), and q(z | x, y). It defines the methods
    whose signatures both keep (:meth:`decode`, :meth:`decode_mean`,
    :meth:`prior_draws`, ...); each family adds ``model``, ``guide``,
    ``encode``, ``code``, ``reconstruct`` and ``sample`` with its own
    handling of ``y`` (always given for the cvae, optional for m2).

    :param tuple data_shape: shape of one data point, e.g. ``(1, 28, 28)``.
    :param int latent_dim: size of z.
    :param Condition condition: how ``y`` becomes the networks' condition vector.
    :param ConditionalEncoder encoder: ``(x, c) -> guide features``.
    :param ConditionalDecoder decoder: ``(z, c) -> likelihood parameters``.
    :param prior: a :class:`~pyrovae.Prior` over z.
    :param likelihood: a :class:`~pyrovae.Likelihood`.
    :param guide_family: a :class:`~pyrovae.GuideFamily` for q(z | x, y).
    """

    fields = ("x", "y")
    latent_sites = ("z",)

    def __init__(self, data_shape, latent_dim, condition, encoder, decoder, prior, likelihood, guide_family):
        super().__init__(data_shape)
        self.latent_dim = latent_dim
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.likelihood = likelihood
        self.guide_family = guide_family
        self.condition = condition

    # -- construction ------------------------------------------------------
    @classmethod
    def _build_conditional(cls, config, data_shape, condition: Condition, **extra):
        """The model for the ``model`` section ``config`` conditioned by
        ``condition``; ``extra`` goes to the family's constructor."""
        if config.hierarchy:
            raise ConfigError(f"model.hierarchy is for the vae model; the {cls.family} model has one latent layer")
        d = config.latent_dim
        guide_family = guides.build(config.guide, latent_dim=d)
        likelihood = likelihoods.build(config.likelihood, data_shape=data_shape)
        encoder = ConditionalEncoder(config.encoder, data_shape, condition.size, guide_family.num_features)
        decoder = ConditionalDecoder(config.decoder, d, condition.size, likelihood.param_shape)
        model = cls(data_shape, d, condition, encoder, decoder, None, likelihood, guide_family, **extra)
        model.prior_module = priors.build(config.prior, latent_dim=d, data_shape=data_shape, posterior=model.encode_top)
        return model

    def _check_shapes(self) -> None:
        with torch.no_grad():
            if self.condition.is_label:
                y = torch.arange(2, device=self.device) % self.condition.num_classes
            else:
                y = torch.zeros(2, self.condition.condition_dim, device=self.device)
            self._check_round_trip(lambda x: self._posterior(x, y), lambda z: self.decode(z, y), self.latent_dim, ",y")
            if tuple(self.prior().event_shape) != (self.latent_dim,):
                raise ConfigError(f"the prior's event shape {tuple(self.prior().event_shape)} is not ({self.latent_dim},)")
            check_prior_density(self.prior_module, self.guide_family, self.latent_dim, self.device)

    # -- distributions -----------------------------------------------------
    def prior(self):
        """p(z): batch shape ``()``, event shape ``(latent_dim,)``."""
        return self.prior_module.dist()

    def _posterior(self, x: torch.Tensor, y: torch.Tensor):
        """q(z | x, y): batch shape the broadcast of ``x``'s and ``y``'s batch dims, event ``(latent_dim,)``."""
        return self.guide_family.dist(self.encoder(x, self.condition(y, x)))

    def decode(self, z: torch.Tensor, y: torch.Tensor):
        """p(x | z, y): batch shape the broadcast of ``z``'s and ``y``'s batch dims, event ``data_shape``."""
        return self.likelihood.dist(self.decoder(z, self.condition(y, z)))

    def encode_top(self, u: torch.Tensor):
        """q(z | u_k, y_k) for VampPrior pseudo-inputs ``u`` ``(K, *data_shape)``
        with the pseudo-conditions of :meth:`Condition.pseudo`."""
        return self.guide_family.dist(self.encoder(u, self.condition.pseudo(len(u), u)))

    # -- capabilities --------------------------------------------------------
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """E[x | z, y] for codes ``z`` ``(*batch, latent_dim)`` and labels
        (or conditions) ``y`` broadcasting against ``z``'s batch dims:
        ``(*broadcast batch, *data_shape)``."""
        return self.likelihood.mean(self.decoder(z, self.condition(y, z)))

    @torch.no_grad()
    def prior_draws(self, n: int) -> torch.Tensor:
        """``n`` codes z ~ p(z), ``(n, latent_dim)``."""
        return self.prior().sample((n,))

    @torch.no_grad()
    def _sample_given(self, n: int, mean: bool, y: torch.Tensor) -> torch.Tensor:
        """``n`` points ``(n, *data_shape)`` from p(z) p(x | z, y) for the checked ``y``."""
        self.condition.check(y, n, "sample")
        z = self.prior_draws(n)
        return self._data_from(self.decoder(z, self.condition(y, z)), mean)


class ConditionalVAE(ConditionalBase):
    """p(z) p(x | z, y) with guide q(z | x, y); ``y`` is always observed.

    The parameters are those of :class:`ConditionalBase`. Build one from a
    config with :meth:`from_config` (options ``num_classes``, 10 by
    default, or ``condition_dim`` with ``num_classes=None``).

    Example::

        >>> import torch
        >>> from pyrovae.models.cvae import ConditionalVAE
        >>> cvae = ConditionalVAE.from_config({"latent_dim": 2}, (1, 8, 8), num_classes=4)
        >>> x, y = torch.zeros(3, 1, 8, 8), torch.tensor([0, 1, 3])
        >>> cvae.encode(x, y).event_shape, cvae.reconstruct(x, y).shape
        (torch.Size([2]), torch.Size([3, 1, 8, 8]))
        >>> cvae.decode_mean(cvae.prior_draws(5), torch.tensor(2)).shape   # five samples of class 2
        torch.Size([5, 1, 8, 8])
    """

    registered_name = "cvae"
    family = "cvae"

    @classmethod
    def _build(cls, config, data_shape, num_classes: Optional[int] = 10, condition_dim: Optional[int] = None):
        condition = Condition(None if condition_dim is not None else num_classes, condition_dim)
        return cls._build_conditional(config, data_shape, condition)

    @property
    def num_classes(self) -> Optional[int]:
        """C, the number of class labels ``y`` takes; None where ``y`` is a
        real-valued vector (the ``num_classes`` capability)."""
        return self.condition.num_classes

    def encode(self, x: torch.Tensor, y: torch.Tensor):
        """q(z | x, y): batch shape the broadcast of ``x``'s and ``y``'s batch dims, event ``(latent_dim,)``."""
        return self._posterior(x, y)

    # -- Pyro model and guide --------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0,
              obs_mask=None):
        """p(z) p(x | z, y).

        :param torch.Tensor x: a batch ``(B, *data_shape)``.
        :param torch.Tensor y: labels ``(B,)`` in 0..C-1, or conditions ``(B, condition_dim)``.
        :param int num_data: full data-set size (mini-batch scaling by ``num_data / B``).
        :param float beta: weight of the latent site (KL weight).
        :param torch.Tensor obs_mask: optional bool ``(B, *data_shape)``; only ``True`` elements are scored.
        """
        self._register(decoder=self.decoder, prior=self.prior_module, likelihood=self.likelihood)
        prior = self.prior()
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                z = pyro.sample("z", prior)
            observe(self.likelihood, self.decoder(z, self.condition(y, z)), x, obs_mask)
        return z

    def guide(self, x: torch.Tensor, y: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0,
              obs_mask=None):
        """q(z | x, y); takes the same arguments as :meth:`model`."""
        self._register(encoder=self.encoder, guide=self.guide_family)
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                return pyro.sample("z", self.encode(x, y))

    def local_guide(self, x: torch.Tensor, y: torch.Tensor):
        """The guide family with free per-point parameters (the
        ``local_guide`` capability, for :func:`~pyrovae.inference_gaps`):
        q*(z | x, y) with its features free for each point, ``y`` given.

        :param torch.Tensor x: a batch ``(N, *data_shape)``.
        :param torch.Tensor y: labels ``(N,)`` or conditions ``(N, condition_dim)``.
        :returns: ``(params, guide_fn)``: ``params = {"z": features}``, the
            encoder's output at ``(x, y)`` ``(N, guide.num_features)`` detached,
            and ``guide_fn(params, x, y, **kwargs)``, a Pyro guide that samples
            ``z`` from ``guide_family.dist(params["z"])`` in the data plate.

        Example::

            >>> import torch
            >>> from pyrovae.models.cvae import ConditionalVAE
            >>> cvae = ConditionalVAE.from_config({"latent_dim": 2}, (1, 4, 4), num_classes=3)
            >>> params, guide_fn = cvae.local_guide(torch.zeros(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1]))
            >>> tuple(params["z"].shape)
            (5, 4)
        """
        with torch.no_grad():
            params = {"z": self.encoder(x, self.condition(y, x)).detach().clone()}

        def guide_fn(params, x, y=None, **kwargs):
            with self._data_plate(x, None):
                return pyro.sample("z", self.guide_family.dist(params["z"]))

        return params, guide_fn

    # -- conveniences ------------------------------------------------------
    def default_labels(self, n: int) -> torch.Tensor:
        """Labels for ``n`` samples when none are given: 0, 1, ..., C-1, 0, ... ``(n,)``."""
        if not self.condition.is_label:
            raise ConfigError("this model is conditioned on a real-valued field y; give y to sample() explicitly")
        return torch.arange(n, device=self.device) % self.condition.num_classes

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``n`` data points ``(n, *data_shape)`` from p(z) p(x | z, y): for labels ``y`` ``(n,)``
        (default: the classes in turn), the likelihood's mean (``mean=True``) or a draw."""
        y = self.default_labels(n) if y is None else torch.as_tensor(y, device=self.device)
        return self._sample_given(n, mean, y)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """E[x | z = code(x, y), y], shape of ``x``."""
        return self.likelihood.mean(self.decoder(self.code(x, y), self.condition(y, x)))

    @torch.no_grad()
    def code(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of q(z | x, y), ``(N, latent_dim)``."""
        return mean_code(self.encode(x, y))

    def check_fields(self, fields: Mapping[str, torch.Tensor], what: str = "data") -> None:
        """Raise :class:`DataError` unless the field ``y`` (when given) holds
        one valid label (or condition vector) per point of ``x``."""
        if fields.get("y") is not None:
            self.condition.check(fields["y"], len(fields["x"]), what)


@register_model("cvae")
def build_cvae(config, data_shape, num_classes=10, condition_dim=0):
    """The conditional VAE p(z) p(x | z, y), q(z | x, y) (Sohn et al. 2015),
    conditioned on ``num_classes`` class labels, or (``num_classes: 0``) on a
    real-valued field of ``condition_dim`` values; the networks, prior,
    likelihood and guide come from the ``model`` section."""
    if condition_dim and num_classes:
        raise ConfigError(
            f"model.options: condition_dim={condition_dim} conditions on a real-valued field and num_classes="
            f"{num_classes} on class labels; a cvae takes exactly one: set num_classes: 0 for a real-valued field"
        )
    return ConditionalVAE.from_config(config, data_shape, num_classes=num_classes or None,
                                      condition_dim=condition_dim or None)
