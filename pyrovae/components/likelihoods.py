"""Likelihoods p(x|z): turn decoder outputs into a Pyro distribution over
one data point.

A likelihood with ``P`` parameters per data element asks the decoder for
``param_shape = (P * C, *rest)`` outputs per data point, where the data
shape is ``(C, *rest)`` (``(784,)`` gives ``(P * 784,)``; ``(1, 28, 28)``
gives ``(P, 28, 28)``). :meth:`Likelihood.dist` splits them and returns a
distribution whose event shape is the data shape.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

import pyro.distributions as dist
from torch.distributions.utils import _sum_rightmost, broadcast_all

from ..errors import DataError
from ..validators import int_at_least
from ..registry import Registry

__all__ = ["Likelihood", "likelihoods", "register_likelihood"]

likelihoods = Registry("likelihood", context=("data_shape",))
register_likelihood = likelihoods.register


class Likelihood(nn.Module):
    """Base class of p(x | z) for data points of shape ``data_shape``.

    Subclasses set ``num_params`` (parameters per data element), ``support``
    (a ``torch.distributions.constraints`` object for the data),
    ``support_hint`` (what to do about data outside it) and implement
    :meth:`dist_from`, which gets ``num_params`` tensors of shape
    ``(*batch, *data_shape)``. The decoder is asked for
    :attr:`param_shape` outputs per data point. Register a subclass with
    :func:`pyrovae.register_likelihood` to name it in a config.

    Example::

        >>> import torch, pyro.distributions as dist
        >>> from pyrovae import Likelihood
        >>> class FixedLaplace(Likelihood):
        ...     num_params = 1                      # a location per pixel
        ...     def dist_from(self, loc):
        ...         return dist.Laplace(loc, 0.1)
        >>> lik = FixedLaplace(data_shape=(1, 28, 28))
        >>> lik.param_shape                         # what the decoder outputs per point
        (1, 28, 28)
        >>> p = lik.dist(torch.zeros(5, *lik.param_shape))
        >>> p.batch_shape, p.event_shape
        (torch.Size([5]), torch.Size([1, 28, 28]))
        >>> lik.mean(torch.zeros(5, 1, 28, 28)).shape
        torch.Size([5, 1, 28, 28])
    """

    num_params: int = 1
    support = constraints.real
    support_hint = ""
    #: the range of data values, used to draw images
    value_range: Tuple[float, float] = (0.0, 1.0)

    def __init__(self, data_shape):
        super().__init__()
        self.data_shape = tuple(data_shape)
        if not self.data_shape:
            raise ValueError("data_shape must have at least one dimension")

    @property
    def param_shape(self) -> Tuple[int, ...]:
        """Decoder outputs per data point: ``(num_params * C, *rest)``."""
        return (self.num_params * self.data_shape[0], *self.data_shape[1:])

    def split(self, params: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(*batch, *param_shape)`` -> ``num_params`` tensors of ``(*batch, *data_shape)``."""
        batch = params.shape[: params.dim() - len(self.data_shape)]
        if self.num_params == 1:  # a view: unbind's backward would copy the whole gradient at every step
            return (params.reshape(*batch, *self.data_shape),)
        return params.reshape(*batch, self.num_params, *self.data_shape).unbind(len(batch))

    def dist(self, params: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z) from decoder outputs ``(*batch, *param_shape)``; event shape = data shape."""
        return self.dist_from(*self.split(params)).to_event(len(self.data_shape))

    def dist_from(self, *params: torch.Tensor) -> dist.TorchDistribution:
        """The distribution of each data element from the ``num_params``
        tensors that :meth:`~pyrovae.Likelihood.split` gives, each
        ``(*batch, *data_shape)``; :meth:`~pyrovae.Likelihood.dist` makes
        the data shape its event shape."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape ``(*batch, *data_shape)``: the reconstruction."""
        return self.dist(params).mean

    def check_data(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` if ``x`` lies outside this likelihood's support."""
        ok = self.support.check(x)
        if not bool(ok.all()):
            bad = x[~ok]
            name = getattr(self, "registered_name", type(self).__name__)
            raise DataError(
                f"{bad.numel()} of {x.numel()} data values lie outside the support of the "
                f"{name!r} likelihood ({self.support}); for example {bad[0].item()!r}. "
                + self.support_hint
            )


class BernoulliPixels(dist.Independent):
    """``Bernoulli(logits).to_event(n)`` whose ``log_prob`` negates after the
    sum over the event: ``-Σ bce`` instead of ``Σ -bce``. Negation is exact,
    so the numbers are the same to the bit, with one pass fewer over a
    ``(*batch, *event)`` tensor; in importance sampling that tensor holds
    K × B × D elements, and the pass was about a tenth of the time.

    Example::

        p = BernoulliPixels(dist.Bernoulli(logits=torch.zeros(5, 1, 28, 28)), 3)
        p.log_prob(torch.ones(1, 28, 28))  # shape (5,): -784 log 2 each
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        base = self.base_dist
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(base.logits, value)
        bce = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -_sum_rightmost(bce, self.reinterpreted_batch_ndims)


@register_likelihood("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder (binary data)."""

    support = constraints.boolean
    support_hint = (
        "Binarize the data (data.binarize: dynamic or static; it needs values in [0, 1], and "
        "data.options.scale scales an npy file's values, e.g. 0.00392156 for 8-bit ones), or pick a "
        "likelihood for grey values: continuous_bernoulli, normal or laplace."
    )

    def dist_from(self, logits):
        return dist.Bernoulli(logits=logits)

    def dist(self, params: torch.Tensor) -> dist.TorchDistribution:
        return BernoulliPixels(self.dist_from(*self.split(params)), len(self.data_shape))

    def mean(self, params):
        return torch.sigmoid(self.split(params)[0])


@register_likelihood("continuous_bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019) for grey values in [0, 1]."""

    support = constraints.unit_interval
    support_hint = (
        "Scale the data into [0, 1]: data.options.scale multiplies an npy file's values (0.00392156, "
        "about 1/255, for 8-bit ones); or pick a likelihood for real values: normal or laplace."
    )

    def dist_from(self, logits):
        return dist.ContinuousBernoulli(logits=logits)


SCALE_MODES = ("fixed", "shared", "per_dim", "decoder")


class LocationScaleLikelihood(Likelihood):
    """Shared machinery of ``normal`` and ``laplace``.

    :param str scale_mode: ``fixed`` (the scale is ``scale``), ``shared``
        (one learned scale), ``per_dim`` (a learned scale per data element)
        or ``decoder`` (the decoder predicts a scale per element).
    :param float scale: the fixed scale, or the initial learned one.
    :param float min_scale: floor added to a predicted scale.
    """

    family = None  # a pyro.distributions location-scale class

    def __init__(self, data_shape, scale_mode="fixed", scale=1.0, min_scale=1e-3):
        super().__init__(data_shape)
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"unknown scale_mode {scale_mode!r}; choose from {', '.join(SCALE_MODES)}")
        if not 0 < scale < float("inf"):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        if not 0 <= min_scale < float("inf"):
            raise ValueError(f"min_scale must be a finite number >= 0, got {min_scale!r}")
        self.scale_mode = scale_mode
        self.min_scale = float(min_scale)
        self.num_params = 2 if scale_mode == "decoder" else 1
        log_scale = torch.tensor(float(scale)).log()
        learned_shape = {"shared": (), "per_dim": self.data_shape}.get(scale_mode)
        if learned_shape is None:
            self.register_buffer("log_scale", log_scale)
        else:
            self.log_scale = nn.Parameter(log_scale.expand(learned_shape).clone())

    def dist_from(self, loc, raw_scale=None):
        if raw_scale is None:
            scale = self.log_scale.exp().expand(loc.shape)
        else:
            scale = F.softplus(raw_scale) + self.min_scale
        return self.family(loc, scale)


@register_likelihood("normal")
class NormalLikelihood(LocationScaleLikelihood):
    """Gaussian pixels; see
    :class:`~pyrovae.components.likelihoods.LocationScaleLikelihood` for the
    scale options."""

    family = dist.Normal


@register_likelihood("laplace")
class LaplaceLikelihood(LocationScaleLikelihood):
    """Laplace pixels (an L1 reconstruction loss); same scale options as ``normal``."""

    family = dist.Laplace


@register_likelihood("categorical")
class CategoricalLikelihood(Likelihood):
    """A categorical over ``levels`` intensity levels per element, for 8-bit
    images stored as integers ``0 .. levels-1`` (``data.quantize: true``).

    :param int levels: number of intensity levels.
    """

    def __init__(self, data_shape, levels=256):
        super().__init__(data_shape)
        self.levels = levels = int_at_least(levels, 2, "levels")
        self.num_params = levels
        self.support = constraints.integer_interval(0, levels - 1)
        self.support_hint = (
            f"The categorical likelihood models integer levels 0..{levels - 1}; set "
            "data.quantize: true to turn grey values in [0, 1] into levels."
        )
        self.value_range = (0.0, float(levels - 1))
        self.register_buffer("level_values", torch.arange(levels, dtype=torch.float))

    def split(self, params):
        batch = params.shape[: params.dim() - len(self.data_shape)]
        logits = params.reshape(*batch, self.levels, *self.data_shape)
        return (logits.movedim(len(batch), -1),)

    def dist_from(self, logits):
        return dist.Categorical(logits=logits)

    def mean(self, params):
        (logits,) = self.split(params)
        return logits.softmax(-1) @ self.level_values
