"""Pyro helpers for writing a model: the KL weight ``beta`` on latent sites,
and the observed data site with the ``x_mean`` record imputation reads.

Every built-in family uses these, and a model of one's own can too::

    def model(self, x, *, num_data=None, beta=1.0, obs_mask=None):
        with pyro.plate("data", x.shape[0]):
            with pyrovae.kl_scale(beta):
                z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyrovae.observe(self.likelihood, self.decoder(z), x, obs_mask)
"""

from __future__ import annotations

import contextlib

import torch

import pyro
import pyro.poutine as poutine

from ..errors import DataError

__all__ = ["kl_scale", "observe", "observe_masked"]


def kl_scale(beta: float):
    """The context that weights the latent sites inside it by ``beta`` (the
    KL weight of a β-VAE): ``poutine.scale(scale=beta)``, or
    ``poutine.mask(mask=False)`` at ``beta = 0`` (Pyro's scale must be
    positive), or nothing at ``beta = 1``. Use it around the latent sites
    of both ``model`` and ``guide``.

    Example::

        >>> import torch, pyro, pyro.distributions as dist, pyrovae
        >>> def model(beta):
        ...     with pyrovae.kl_scale(beta):
        ...         pyro.sample("z", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))
        >>> log_p = dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.0))
        >>> float(pyro.poutine.trace(model).get_trace(0.5).log_prob_sum()) == float(0.5 * log_p)
        True
        >>> float(pyro.poutine.trace(model).get_trace(0.0).log_prob_sum())   # masked out at beta = 0
        0.0
    """
    if beta == 1.0:
        return contextlib.nullcontext()
    if beta == 0.0:
        return poutine.mask(mask=False)
    return poutine.scale(scale=beta)


def observe(likelihood, params: torch.Tensor, x: torch.Tensor, obs_mask=None) -> torch.Tensor:
    """The data site ``x ~ likelihood.dist(params)``, observed at ``x``
    ``(B, *data_shape)``. With ``obs_mask`` (bool, the shape of ``x``, True =
    observed) only the observed elements are scored (``observe_masked``),
    and the deterministic site ``x_mean`` records E[x | latents]
    (``likelihood.mean(params)``, the shape of ``x``), which imputation averages.

    :param likelihood: a :class:`~pyrovae.Likelihood` (``dist(params)`` and ``mean(params)``).
    :param torch.Tensor params: its parameters ``(*batch, *likelihood.param_shape)``.

    Example::

        >>> import torch, pyro, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 4, 4))
        >>> x, params = torch.ones(3, 1, 4, 4), torch.zeros(3, 1, 4, 4)   # Bernoulli logits 0
        >>> mask = torch.rand(3, 1, 4, 4) < 0.5
        >>> def model(obs_mask=None):
        ...     with pyro.plate("data", 3):
        ...         pyrovae.observe(vae.likelihood, params, x, obs_mask)
        >>> trace = pyro.poutine.trace(model).get_trace(mask)
        >>> sorted(name for name in trace.nodes if name.startswith("x"))
        ['x', 'x_mean', 'x_observed', 'x_unobserved']
        >>> trace.nodes["x_mean"]["value"].unique()                      # sigmoid(0)
        tensor([0.5000])
    """
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

    Example::

        x = observe_masked("x", likelihood.dist(params), x, obs_mask)
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
