"""Evaluation built on Pyro traces: per-data-point ELBO terms.

Everything here works from the traces of ``vae.guide`` and ``vae.model``,
so it holds unchanged for every registered prior, likelihood and guide and
for models with more than one latent site.
"""

from __future__ import annotations

from typing import Dict

import torch

import pyro
import pyro.poutine as poutine

__all__ = ["log_prob_terms", "elbo_terms"]


def _site_log_prob(site, batch_dims: int = 2) -> torch.Tensor:
    """``log_prob`` of a sample site summed over everything but the leading
    (particle, data) dims; result ``(K, B)``."""
    log_p = site["fn"].log_prob(site["value"])
    if site["mask"] is not None:
        log_p = log_p * site["mask"]
    while log_p.dim() > batch_dims:
        log_p = log_p.sum(-1)
    return log_p


def log_prob_terms(vae, x: torch.Tensor, num_particles: int = 1, **model_kwargs) -> Dict[str, torch.Tensor]:
    """Trace the guide inside a particles plate, replay the model on it, and
    return per-particle, per-data-point log densities, each ``(K, B)``:

    - ``log_lik``: observed sites, log p(x | z)
    - ``log_prior``: latent sites of the model, log p(z)
    - ``log_q``: latent sites of the guide, log q(z | x)

    ``log_lik + log_prior - log_q`` are the log importance weights.
    """
    batch = x.shape[0]
    with pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x, **model_kwargs)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, **model_kwargs)
    zeros = x.new_zeros(num_particles, batch)
    terms = {"log_lik": zeros, "log_prior": zeros, "log_q": zeros}
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            key = "log_lik" if site["is_observed"] else "log_prior"
            terms[key] = terms[key] + _site_log_prob(site)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            terms["log_q"] = terms["log_q"] + _site_log_prob(site)
    return terms


@torch.no_grad()
def elbo_terms(vae, x: torch.Tensor, num_particles: int = 1) -> Dict[str, torch.Tensor]:
    """Per-data-point ELBO and its parts, each ``(B,)``, in nats:
    ``elbo = reconstruction - kl``, averaged over ``num_particles`` draws
    (``kl`` is the Monte Carlo estimate E_q[log q(z|x) - log p(z)])."""
    t = log_prob_terms(vae, x, num_particles)
    recon = t["log_lik"].mean(0)
    kl = (t["log_q"] - t["log_prior"]).mean(0)
    return {"elbo": recon - kl, "reconstruction": recon, "kl": kl}
