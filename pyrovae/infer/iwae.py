"""The importance-weighted bound (IWAE, Burda et al. 2015) per data point,
with the mini-batch scale applied once.

For a batch of B points out of N (``num_data``; N = B without it) and K
particles z_ik ~ q(z | x_i), the loss is

    loss = -(N / B) Σ_i [logsumexp_k log w_ik - log K],
    log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i),

an unbiased estimate of minus the sum over all N points of each point's
IWAE bound, hence a lower bound on the full data's log-likelihood.

Why not Pyro's ``RenyiELBO(alpha=0)``: it scales every site's log-density
by N / B before the logsumexp over particles, so with ``num_data`` it
computes Σ_i log (1/K) Σ_k w_ik^(N/B), a power mean of the weights, which
is no bound on the data's log-likelihood. Without ``num_data`` the two are
the same estimator under the same noise (tests/infer/test_iwae.py).

The weights are :mod:`pyrovae.infer.weights`'s per-point weights, with
particles to the left of every plate the model uses, so a model may nest
plates (pixels, time steps) inside its data plate. Each site's density is
weighed by its scale relative to the data plate's (beta on the latent
sites, as ``poutine.scale`` sets it; ``poutine.mask`` removes a site), so
beta enters as it does in ``RenyiELBO``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro.util import warn_if_nan

from ..errors import ConfigError
from ..validators import positive_int
from .plates import plate_nesting
from .weights import TracePair, is_random, latent_sites, layout, traced_in_particles, weight_terms

__all__ = ["IWAE"]


def _data(args, kwargs) -> torch.Tensor:
    """The batch ``x``: the first positional argument, or the keyword ``x``."""
    x = args[0] if args else kwargs.get("x")
    if not torch.is_tensor(x):
        raise ConfigError("the iwae objective needs the batch as the model's first argument or as the keyword x")
    return x


class IWAE:
    """The IWAE loss of the module notes, with the methods of a Pyro ELBO
    that pyrovae's trainer and a user's own loop call: :meth:`differentiable_loss`
    (a tensor), :meth:`loss` (a float) and :meth:`loss_and_grads` (backward,
    then the float).

    :param int num_particles: K >= 1, importance samples per data point.
    :param bool vectorize_particles: draw the K particles in one plate (else one trace each).
    :param int max_plate_nesting: plate dims the model uses; None (default):
        found from the model's trace at the first call
        (:func:`~pyrovae.infer.plates.plate_nesting`, which leaves the
        random generator as it was).

    Every guide site must be reparameterized (``rsample``): the bound's
    gradient here is pathwise only. Every site with a density must sit in
    the data plate: a latent shared by the points has no per-point bound.

    Example::

        iwae = IWAE(num_particles=5)
        loss = iwae.differentiable_loss(vae.model, vae.guide, x, num_data=60000)   # x: (B, *data_shape)
        loss.backward()                                                            # loss: scalar, nats
    """

    def __init__(self, num_particles: int = 5, vectorize_particles: bool = True,
                 max_plate_nesting: Optional[int] = None):
        self.num_particles = positive_int(num_particles, "num_particles")
        self.vectorize_particles = bool(vectorize_particles)
        self.max_plate_nesting = max_plate_nesting

    def _pair(self, model, guide, args, kwargs, particle_dim: Optional[int]) -> TracePair:
        return traced_in_particles(guide, model, (args, kwargs), (args, kwargs), _data(args, kwargs),
                                   self.num_particles, particle_dim)

    @staticmethod
    def _check(pair: TracePair, data_dim: int) -> None:
        """Refuse what the per-point, pathwise bound cannot score."""
        for site in latent_sites(pair.guide):
            if not getattr(site["fn"], "has_rsample", False) or site["infer"].get("enumerate"):
                raise ConfigError(
                    f"the iwae objective needs every guide site reparameterized, but {site['name']!r} is "
                    f"drawn without rsample (a discrete latent?); use train.objective: {{name: elbo}}"
                )
        for trace in (pair.model, pair.guide):
            for name, site in trace.nodes.items():
                if is_random(site) and not any(f.dim == data_dim for f in site["cond_indep_stack"]):
                    raise ConfigError(
                        f"the iwae objective bounds each data point's log-likelihood, but site {name!r} is "
                        f"outside the data plate (shared by the points); use train.objective: {{name: elbo}}"
                    )

    def log_weights(self, model, guide, *args, **kwargs):
        """``(log w, N / B)``: the per-point log weights ``(K, B)`` (each
        site weighed by its scale relative to the data plate's) and the data
        plate's scale."""
        if self.max_plate_nesting is None:
            self.max_plate_nesting = plate_nesting(model, guide, args, kwargs)
        if self.vectorize_particles and self.num_particles > 1:
            pairs = [self._pair(model, guide, args, kwargs, -1 - self.max_plate_nesting)]
        else:
            pairs = [self._pair(model, guide, args, kwargs, None) for _ in range(self.num_particles)]
        where = layout(pairs[0])
        self._check(pairs[0], where.keep[-1])
        log_w = [weight_terms(pair, scaled=True).log_weight for pair in pairs]
        log_w = log_w[0] if len(pairs) == 1 and pairs[0].particle_dim is not None else torch.stack(log_w)
        return log_w, where.data_scale

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-(N / B) Σ_i [logsumexp_k log w_ik - log K], a scalar tensor in nats."""
        log_w, scale = self.log_weights(model, guide, *args, **kwargs)
        bound = (torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()
        loss = -bound if scale == 1.0 else -scale * bound
        return warn_if_nan(loss, "loss")

    def loss(self, model, guide, *args, **kwargs) -> float:
        """:meth:`differentiable_loss` as a float, without autograd."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Backward through :meth:`differentiable_loss`; returns its value."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())
