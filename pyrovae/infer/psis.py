"""The Pareto k̂ diagnostic of importance weights, per data point (PSIS).

Vehtari, Simpson, Gelman, Yao and Gabry, *Pareto smoothed importance
sampling* (2015/2022): fit a generalized Pareto distribution (GPD) to the
M largest of a point's K importance weights, ``M = ceil(min(K / 5, 3 sqrt(K)))``,
as exceedances over the largest weight left out of the tail. The shape k̂
estimates the tail index of the weights: the weights have finite variance
for k < 1/2, and the IS estimate is unreliable above 0.7
(``PARETO_K_THRESHOLD``), where AIS (``pyrovae.ais_log_likelihood``)
is the remedy. A k̂ from M weights has a standard error of about
(1 + k) / sqrt(M): about 0.15 per point at K = 1000 (M = 95), so at small K
a few points cross 0.7 by chance; the share above 0.7 is the figure to read.

The importance-sampling estimator streams its K weights in chunks, so only
the M + 1 largest log weights of each point are kept, merged chunk by chunk
(``merge_top``): memory ``O(N M)``, never ``O(N K)``. The fit
(``pareto_k``) is the Zhang and Stephens (2009) estimator of
``pyro.ops.stats.fit_generalized_pareto``, vectorized over the points
(Pyro's takes one 1-D sample and returns floats).

Shapes: ``N`` or ``B`` data points, ``K`` importance samples, ``M`` tail size.

Example::

    >>> import torch
    >>> m = tail_size(1000)                                   # 95 largest weights of 1000
    >>> log_w = torch.randn(1000, 3)                          # (K, B) log weights
    >>> top = merge_top(merge_top(None, log_w[:600], m), log_w[600:], m)
    >>> torch.equal(top.sort(0).values, log_w.topk(m + 1, 0).values.sort(0).values)
    True
    >>> pareto_k(top).shape                                   # one k̂ per point
    torch.Size([3])
"""

from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ["PARETO_K_THRESHOLD", "PARETO_K_WARN_SHARE", "MIN_TAIL", "tail_size", "merge_top", "pareto_k"]

#: k̂ above which a point's importance-sampling estimate is unreliable (Vehtari et al.)
PARETO_K_THRESHOLD = 0.7
#: share of points with k̂ > PARETO_K_THRESHOLD from which ``evaluate`` warns
PARETO_K_WARN_SHARE = 0.1
#: the smallest tail a GPD is fitted to; fewer largest weights (K <= 20) give no k̂
MIN_TAIL = 5
#: points per block of the vectorized fit (its intermediates are block x 40 x M doubles)
_FIT_BLOCK = 2048


def tail_size(num_samples: int) -> int:
    """M = ceil(min(K / 5, 3 sqrt(K))), the number of largest weights the GPD
    is fitted to; 0 when that is under ``MIN_TAIL`` (K <= 20: no k̂).

    Example::

        >>> tail_size(1000), tail_size(100), tail_size(21), tail_size(20)
        (95, 20, 5, 0)
    """
    m = int(math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))))
    return m if m >= MIN_TAIL else 0


def merge_top(top: Optional[torch.Tensor], log_w: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m + 1`` largest of the running ``top`` ``(m + 1, B)`` (None at
    the start) and a chunk's log weights ``log_w`` ``(k, B)``, in no
    particular order along dim 0 (an unsorted topk is the cheaper):
    ``(min(m + 1, seen), B)``. The extra one is the threshold the tail's
    exceedances are measured from."""
    both = log_w if top is None else torch.cat([top, log_w])
    return both.topk(min(m + 1, both.shape[0]), dim=0, sorted=False).values


def _fit_shape(x: torch.Tensor) -> torch.Tensor:
    """GPD shape k̂ of each row of ``x`` ``(B, M)`` (exceedances >= 0, sorted
    ascending, float64): Zhang and Stephens (2009) with the prior of Vehtari
    et al., row by row the arithmetic of ``pyro.ops.stats.fit_generalized_pareto``."""
    n = x.shape[1]
    grid = 30 + int(math.sqrt(n))
    base = 1.0 - math.sqrt(grid) / (torch.arange(1, grid + 1, dtype=x.dtype, device=x.device) - 0.5).sqrt()
    bs = base / (3.0 * x[:, int(n / 4 - 0.5), None]) + 1.0 / x[:, -1:]          # (B, grid): candidates of k / sigma
    ks = torch.log1p(-bs[:, :, None] * x[:, None, :]).mean(-1)                  # (B, grid)
    profile = n * (torch.log(-bs / ks) - (ks + 1.0))
    weights = 1.0 / torch.exp(profile[:, None, :] - profile[:, :, None]).sum(-1)  # posterior weight of each b
    weights = torch.where(weights > 1e-30, weights, torch.zeros_like(weights))
    weights = weights / weights.sum(-1, keepdim=True)
    b = torch.where(weights > 0, bs * weights, torch.zeros_like(bs)).sum(-1, keepdim=True)
    k = torch.log1p(-b * x).mean(-1)
    return k * n / (n + 10.0) + 5.0 / (n + 10.0)


def pareto_k(top: torch.Tensor) -> torch.Tensor:
    """Pareto k̂ of each point ``(B,)`` from its ``M + 1`` largest log
    weights ``top`` ``(M + 1, B)`` (``merge_top``; any order): the GPD
    is fitted to ``w_i - w_(M+1)`` of the M largest, scaled by the largest
    weight. Computed in float64, on ``top``'s device, in blocks of points.
    NaN where a point's tail is degenerate (all M weights equal)."""
    lw = top.double().sort(dim=0, descending=True).values
    lw = lw - lw[:1]                                        # the largest weight is 1: no overflow
    exceed = (lw[:-1].exp() - lw[-1:].exp()).flip(0).t()    # (B, M), ascending
    return torch.cat([_fit_shape(block) for block in exceed.split(_FIT_BLOCK)]).to(top.dtype)
