"""The small base the built-in families (``vae``, ``cvae``, ``m2``,
``hvae``) stand on as siblings: the device, ``pyro.module`` registration,
the data plate, the data checks, and one :meth:`~LatentVariableModel.from_config`
that resolves the config, checks the data shape, reports sizes too large
to allocate the same way for every family, and hands the rest to the
family's ``_build`` hook.

A family subclasses :class:`LatentVariableModel` and defines::

    family = "mine"                                      # messages and the Pyro name prefix
    @classmethod
    def _build(cls, config, data_shape, **options): ...  # the model, its prior set
    def _check_shapes(self): ...                         # run once on zeros (optional)

plus ``model``, ``guide`` and the capabilities it offers
(:mod:`pyrovae.models.protocol`). Nothing else in pyrovae asks which family
a model belongs to.

Example::

    >>> import pyrovae
    >>> from pyrovae.models.family import LatentVariableModel
    >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 8, 8))
    >>> isinstance(vae, LatentVariableModel), vae.pyro_name.startswith("vae_")
    (True, True)
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Optional, Tuple

import torch
from torch import nn

import pyro

from ..config import ModelConfig, load_config
from ..errors import ConfigError, DataError, OutOfMemoryError, is_out_of_memory

__all__ = ["LatentVariableModel", "model_section", "check_data_shape", "check_prior_density", "mean_code"]


def model_section(cfg: Any) -> ModelConfig:
    """The ``model`` section of ``cfg``: a :class:`~pyrovae.config.ModelConfig`,
    a dict of the section's keys, a whole config (dict, YAML path,
    :class:`~pyrovae.config.Config`) or None (the defaults)."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, dict) and not (set(cfg) & {"data", "model", "train"}):
        from ..config import _section_from_dict

        return _section_from_dict("model", cfg)
    return load_config(cfg).model


def check_data_shape(data_shape) -> Tuple[int, ...]:
    """``data_shape`` as a tuple of ints, or a :class:`ConfigError` unless
    it is a non-empty tuple of positive sizes."""
    shape = tuple(int(s) for s in data_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"data_shape must be a tuple of positive sizes, got {shape}")
    return shape


def mean_code(q) -> torch.Tensor:
    """The mean of ``q``, or a draw when it has no closed-form mean (flows)."""
    try:
        return q.mean
    except NotImplementedError:
        return q.rsample()


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


class LatentVariableModel(nn.Module):
    """The base of the built-in families (see the module notes).

    :param tuple data_shape: shape of one data point, e.g. ``(1, 28, 28)``.

    A subclass sets ``self.likelihood`` (a :class:`~pyrovae.Likelihood`),
    which :meth:`check_data` and the conveniences read.
    """

    #: the family's name in messages and in the Pyro parameter prefix
    family = "model"
    #: the batch fields the model and guide take (see ``pyrovae.models.protocol``)
    fields = ("x",)

    def __init__(self, data_shape):
        super().__init__()
        self.data_shape = tuple(data_shape)
        # A name prefix unique to this instance: two models in one process
        # never share parameters through Pyro's global param store.
        self.pyro_name = f"{self.family}_{uuid.uuid4().hex[:12]}"
        self._register_modules = True

    # -- construction ------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any = None, data_shape: Tuple[int, ...] = (1, 28, 28), **options):
        """Build from a dict, a YAML path, a :class:`~pyrovae.config.Config`
        or a :class:`~pyrovae.config.ModelConfig` (the whole config or its
        ``model`` section) for data points of shape ``data_shape``;
        ``options`` are the family's ``model.options``.

        :param tuple data_shape: shape of one data point, e.g. ``(784,)`` or ``(1, 28, 28)``.
        :raises ConfigError: for an unknown component or option, or a data
            shape the chosen networks cannot take. Sizes too large to
            allocate raise pyrovae's ``OutOfMemoryError``, which names them.
        """
        config = model_section(cfg)
        data_shape = check_data_shape(data_shape)
        sizes = lambda: f"with {cls._sizes(config, **options)} and data of shape {data_shape}"  # noqa: E731
        try:
            model = cls._build(config, data_shape, **options)
        except OutOfMemoryError as e:  # a component too large: name the model's sizes too
            raise OutOfMemoryError(f"{e.what} ({sizes()})", e.__cause__) from e.__cause__
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise  # not a failed allocation: a bug keeps its traceback
            raise OutOfMemoryError(f"model {cls.family!r} ({sizes()})", e) from e
        model._check_shapes()
        return model

    @classmethod
    def _build(cls, config: ModelConfig, data_shape: Tuple[int, ...], **options) -> "LatentVariableModel":
        """The family's model for the ``model`` section ``config``, its prior set."""
        raise NotImplementedError(f"{cls.__name__} does not define _build")

    @classmethod
    def _sizes(cls, config: ModelConfig, **options) -> str:
        """The sizes a "too large" message names."""
        return f"model.latent_dim={config.latent_dim}"

    def _check_shapes(self) -> None:
        """Run the networks once on zeros; a clear :class:`ConfigError` where
        the components disagree. Families override it."""

    def _check_round_trip(self, encode, decode, code_dim: int, given: str = "") -> None:
        """Encode two zero points, draw a code, decode it: a
        :class:`ConfigError` unless the code is ``(2, code_dim)`` and p(x|z)
        has the data shape as its event shape. ``given`` names the condition
        in messages (``",y"``)."""
        x = torch.zeros(2, *self.data_shape, device=self.device)
        try:
            z = encode(x).sample()
            p = decode(z)
        except RuntimeError as e:
            raise ConfigError(f"the networks do not fit data of shape {self.data_shape}: {e}") from None
        if tuple(z.shape) != (2, code_dim) or tuple(p.event_shape) != self.data_shape:
            raise ConfigError(
                f"components disagree on shapes: q(z|x{given}) gives z of shape {tuple(z.shape[1:])} "
                f"(want ({code_dim},)), p(x|z{given}) has event shape {tuple(p.event_shape)} "
                f"(want {self.data_shape})"
            )

    # -- plumbing ----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the parameters live (the CPU for a model without any)."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _register(self, **modules) -> None:
        """``pyro.module`` each network under this instance's prefix, so that
        Pyro's optimizers (``SVI``) find and train its parameters."""
        if self._register_modules:
            for name, module in modules.items():
                pyro.module(f"{self.pyro_name}.{name}", module)

    @contextlib.contextmanager
    def direct_parameters(self):
        """Within this context the model and guide skip ``pyro.module``:
        for loops that optimize ``model.parameters()`` directly with a torch
        optimizer (pyrovae's trainer), where registration is pure overhead."""
        previous, self._register_modules = self._register_modules, False
        try:
            yield self
        finally:
            self._register_modules = previous

    def _data_plate(self, x: torch.Tensor, num_data: Optional[int]):
        """``pyro.plate("data", dim=-1)`` over the batch ``x``, subsampled
        from ``num_data`` points when that is given and larger."""
        batch = x.shape[0]
        if num_data is None or num_data == batch:
            return pyro.plate("data", batch, dim=-1)
        subsample = torch.arange(batch, device=x.device)
        return pyro.plate("data", num_data, subsample=subsample, dim=-1)

    def _data_from(self, params: torch.Tensor, mean: bool) -> torch.Tensor:
        """The likelihood's mean at ``params`` (``mean=True``), else a draw
        (integer levels as floats, like the data)."""
        if mean:
            return self.likelihood.mean(params)
        return self.likelihood.dist(params).sample().to(params.dtype)

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
