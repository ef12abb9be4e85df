"""Rational-spline coupling layers whose every input stays inside its own bin.

Pyro's spline transforms (Durkan et al. 2019; Dolatabadi et al. 2020) find
an input's bin by comparing it with the knots shifted up by ``1e-6``. An
input within that band above a knot is put into the bin below, and the
bin's rational function is evaluated just outside the segment where it is
monotone. For a narrow bin next to a steep one that extrapolation crosses a
pole: the inverse returns ``±inf`` (linear order), its discriminant turns
negative (quadratic order: an ``AssertionError``), or the forward Jacobian
takes the log of a negative number, and the flow's ``log_prob`` is NaN at a
finite point. Which inputs land in the band depends on the last bits of the
conditioner network's output, which differ between CPUs' matrix kernels and
between batch sizes.

:func:`monotonic_rational_spline` is Pyro's function with the bin found
exactly (``knot_k <= x < knot_{k+1}``, no shift): the bin's widths are the
differences of the same knots, so ``0 <= (x - knot_k) / width_k <= 1``
holds in floating point too, and every denominator and Jacobian is
positive. Inputs outside the box take the identity, and are clamped into it
before the spline so that no infinite intermediate reaches the gradient.
Elsewhere it computes Pyro's functions; the linear spline's expressions
are rearranged so that each adds terms of one sign (Pyro's cancel in a
flat bin, down to a zero denominator). :class:`SplineCoupling` is Pyro's layer with these splines; its
parameters and their names are Pyro's, so weights load either way.

Example::

    >>> import torch
    >>> layer = spline_coupling(2, hidden_dims=[8])
    >>> z = torch.randn(5, 2)
    >>> torch.allclose(layer.inv(layer(z)), z, atol=1e-4)
    True
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from pyro.distributions import transforms as T
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms.spline import ConditionedSpline as PyroConditionedSpline
from pyro.distributions.transforms.spline import _calculate_knots, _select_bins
from pyro.nn import DenseNN

__all__ = ["monotonic_rational_spline", "SplineCoupling", "spline_coupling"]


def _bin_index(knots: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The bin ``k`` with ``knots[k] <= input < knots[k + 1]``, in ``[0, K - 1]``:
    ``inputs`` ``(..., D)``, ``knots`` ``(..., D, K + 1)``; returns ``(..., D, 1)``."""
    interior = knots[..., 1:-1]
    return torch.sum(inputs[..., None] >= interior, dim=-1, keepdim=True)


def monotonic_rational_spline(inputs, widths, heights, derivatives, lambdas=None, inverse=False, bound=3.0,
                              min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3, min_lambda=0.025):
    """A monotonic rational spline on ``[-bound, bound]`` (the identity
    outside), or its inverse, and ``log |dy/dx|`` at each input.

    :param inputs: ``(..., D)``.
    :param widths: bin widths ``(..., D, K)`` on the simplex (softmax).
    :param heights: bin heights ``(..., D, K)`` on the simplex.
    :param derivatives: positive derivatives at the ``K - 1`` inner knots ``(..., D, K - 1)``.
    :param lambdas: ``(..., D, K)`` in (0, 1) for a linear rational spline;
        None for a quadratic one.
    :param bool inverse: evaluate the inverse map; the log-Jacobian is then
        ``log |dx/dy|``.
    :returns: ``(outputs, logabsdet)``, each shaped like ``inputs``.

    The parameterization (minimum widths, heights and derivatives, unit
    slopes at the bounds) is Pyro's ``_monotonic_rational_spline``.
    """
    num_bins = widths.shape[-1]
    if min_bin_width * num_bins > 1.0 or min_bin_height * num_bins > 1.0:
        raise ValueError("minimal bin width or height too large for the number of bins")
    inside = (inputs >= -bound) & (inputs <= bound)

    widths = min_bin_width + (1.0 - min_bin_width * num_bins) * widths
    heights = min_bin_height + (1.0 - min_bin_height * num_bins) * heights
    derivatives = min_derivative + derivatives
    widths, cumwidths = _calculate_knots(widths, -bound, bound)
    heights, cumheights = _calculate_knots(heights, -bound, bound)
    derivatives = F.pad(derivatives, pad=(1, 1), mode="constant", value=1.0 - min_derivative)

    x = inputs.clamp(-bound, bound)
    bin_idx = _bin_index(cumheights if inverse else cumwidths, x)
    w_k = _select_bins(widths, bin_idx)
    x_k = _select_bins(cumwidths, bin_idx)
    y_k = _select_bins(cumheights, bin_idx)
    h_k = _select_bins(heights, bin_idx)
    delta = _select_bins(heights / widths, bin_idx)
    d_k = _select_bins(derivatives, bin_idx)
    d_k1 = _select_bins(derivatives[..., 1:], bin_idx)
    if inverse:
        y = x
    else:
        theta = (x - x_k) / w_k

    if lambdas is not None:
        # Pyro's linear rational spline (weights wa = 1, wb, wc; the bin split at
        # x_k + lam w_k, y = yc), each expression rearranged so that it adds
        # terms of one sign: Pyro's forms, e.g. (wc - wa) y + wa ya - wc yc,
        # cancel when wc is large (a flat bin) and can return a zero denominator
        lam = _select_bins((1 - 2 * min_lambda) * lambdas + min_lambda, bin_idx)
        wb = torch.sqrt(d_k / d_k1)
        wc = (lam * d_k + (1 - lam) * wb * d_k1) / delta
        total = (1.0 - lam) + lam * wb
        lower_rise = lam * wb * h_k / total  # yc - ya
        upper_rise = (1.0 - lam) * h_k / total  # yb - yc
        ya = y_k
        yc = ya + lower_rise
        if inverse:
            low = y <= yc
            above_c = y - yc  # <= 0 where low, > 0 elsewhere
            numerator = torch.where(low, lam * (ya - y), wc * above_c + lam * wb * (ya + h_k - y))
            denominator = torch.where(low, (ya - y) + wc * above_c, wb * (ya + h_k - y) + wc * above_c)
            outputs = numerator / denominator * w_k + x_k
            slope = torch.where(low, wc * lam * lower_rise, wb * wc * (1 - lam) * upper_rise) * w_k
            logabsdet = torch.log(slope) - 2 * torch.log(torch.abs(denominator))
        else:
            low = theta <= lam
            denominator = torch.where(low, (lam - theta) + wc * theta, wc * (1 - theta) + wb * (theta - lam))
            outputs = torch.where(low, ya + wc * theta * lower_rise / denominator,
                                  yc + wb * (theta - lam) * upper_rise / denominator)
            slope = torch.where(low, wc * lam * lower_rise, wb * wc * (1 - lam) * upper_rise) / w_k
            logabsdet = torch.log(slope) - 2 * torch.log(torch.abs(denominator))
    else:
        curvature = d_k + d_k1 - 2 * delta
        if inverse:
            a = (y - y_k) * curvature + h_k * (delta - d_k)
            b = h_k * d_k - (y - y_k) * curvature
            c = -delta * (y - y_k)
            discriminant = (b.pow(2) - 4 * a * c).clamp(min=0.0)  # >= 0 in exact arithmetic
            # in [0, 1] in exact arithmetic; rounding outside would turn the Jacobian negative
            theta = ((2 * c) / (-b - torch.sqrt(discriminant))).clamp(0.0, 1.0)
            outputs = theta * w_k + x_k
        t1t = theta * (1 - theta)
        denominator = delta + curvature * t1t
        slope = delta.pow(2) * (d_k1 * theta.pow(2) + 2 * delta * t1t + d_k * (1 - theta).pow(2))
        logabsdet = torch.log(slope) - 2 * torch.log(denominator)
        if inverse:
            logabsdet = -logabsdet
        else:
            outputs = y_k + h_k * (delta * theta.pow(2) + d_k * t1t) / denominator

    outputs = torch.where(inside, outputs, inputs)
    logabsdet = torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
    return outputs, logabsdet


class _ExactBins:
    """``spline_op`` of Pyro's spline transforms through :func:`monotonic_rational_spline`."""

    def spline_op(self, x, **kwargs):
        w, h, d, lam = self._params() if callable(self._params) else self._params
        return monotonic_rational_spline(x, w, h, d, lam, bound=self.bound, **kwargs)


class ConditionedSpline(_ExactBins, PyroConditionedSpline):
    """Pyro's ``ConditionedSpline`` with exact bins."""


class Spline(_ExactBins, T.Spline):
    """Pyro's element-wise ``Spline`` with exact bins."""


class ConditionalSpline(T.ConditionalSpline):
    """Pyro's ``ConditionalSpline``, conditioned into :class:`ConditionedSpline`."""

    def condition(self, context):
        return ConditionedSpline(partial(self._params, context), bound=self.bound, order=self.order)


class SplineCoupling(T.SplineCoupling):
    """Pyro's ``SplineCoupling`` built from the exact-bin splines above.

    Parameters are created in Pyro's order and under Pyro's names, so a
    seed gives the same initial weights and state dicts are interchangeable.
    """

    def __init__(self, input_dim, split_dim, hypernet, count_bins=8, bound=3.0, order="linear", identity=False):
        TransformModule.__init__(self, cache_size=1)
        self.lower_spline = Spline(split_dim, count_bins, bound, order)
        self.upper_spline = ConditionalSpline(hypernet, input_dim - split_dim, count_bins, bound, order)
        self.split_dim = split_dim
        self.identity = identity


def spline_coupling(input_dim, split_dim=None, hidden_dims=None, count_bins=8, bound=3.0) -> SplineCoupling:
    """Pyro's ``spline_coupling`` helper (same network, same defaults) for :class:`SplineCoupling`."""
    split_dim = input_dim // 2 if split_dim is None else split_dim
    hidden_dims = [input_dim * 10, input_dim * 10] if hidden_dims is None else hidden_dims
    rest = input_dim - split_dim
    hypernet = DenseNN(split_dim, hidden_dims,
                       param_dims=[rest * count_bins, rest * count_bins, rest * (count_bins - 1), rest * count_bins])
    return SplineCoupling(input_dim, split_dim, hypernet, count_bins, bound)
