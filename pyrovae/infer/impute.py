"""Data recovery: fill in hidden pixels with a trained VAE.

A *mask* is a bool tensor ``(N, *data_shape)`` with **True = observed**
(Pyro's ``obs_mask`` convention). The model is always run as
``vae.model(x, obs_mask=mask)``, so that it scores only the observed
pixels (site ``x_observed``) and draws the hidden ones from p(x|z) (site
``x_unobserved``). Two registered imputers infer the hidden pixels x_m
given the observed ones x_o:

``importance`` (default): self-normalised importance sampling with the
    guide as proposal, as in MIWAE (Mattei & Frellsen 2019). The guide sees
    the input with hidden pixels filled (``fill``: the training mean per
    pixel, or zeros): z_k ~ q(z | x_fill), k = 1..K, with weights
    w_k ∝ p(z_k) p(x_o | z_k) / q(z_k | x_fill). The point estimate is
    E[x_m | x_o] ≈ Σ_k w_k E[x_m | z_k]; one *draw* resamples a particle by
    its weight and takes its x_unobserved (importance resampling).
``gibbs``: Metropolis-within-Gibbs (Mattei & Frellsen 2018), or with
    ``metropolis: false`` the pseudo-Gibbs sampler of Rezende et al. (2014).
    The state is (z, x_m). Each step proposes z' ~ q(z | x̂) for the current
    completion x̂ = (x_o, x_m) and accepts it with probability
    min(1, p(x̂, z') q(z | x̂) / (p(x̂, z) q(z' | x̂))) (pseudo-Gibbs always
    accepts), then draws x_m ~ p(x_m | z). The point estimate averages
    E[x_m | z] over the steps after ``burn_in``; the draw is the last state.

Log densities come from Pyro traces of the guide and of the model replayed
on it, so any prior, likelihood, guide family and hierarchy works. A
point-mass (delta) guide, i.e. the plain autoencoder, has one proposal
only: ``importance`` then decodes the code of the filled input, and the
Metropolis correction of ``gibbs`` rejects every move (q has no density
off its point), so use ``metropolis: false`` (the iterated autoencoder).

In high dimensions the guide is a poor proposal for p(z | x_o): on MNIST
with half the pixels hidden the effective sample size of 100 particles is
about 2. ``gibbs`` then often does better (see ``diagnostics``).

For categorical data (codes, such as characters) the weighted mean is not
an estimate: such a model records class probabilities as ``x_mean`` and its
``impute_point`` capability reads the most probable class from their
weighted mean (kept as ``Imputation.predictive``); ``impute_mask`` keeps
elements observed that must stay so (a word's length), and
``impute_methods`` refuses ``gibbs`` where the model draws hidden elements
only as an importance proposal.

Observed pixels are returned unchanged. Everything is seeded. Masks live in
:mod:`pyrovae.infer.masks` (re-exported here); the importance weights follow
the rules of :mod:`pyrovae.infer.weights`, like the evaluator's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError, DataError
from ..validators import int_in_range, positive_int
from ..models.base import eval_mode, unregistered
from ..models.protocol import capability, command_needs, has_capability
from ..registry import Registry
from .seeds import seeded
from .masks import check_mask, load_mask_file, make_mask, mask_tag, masks, parse_mask_spec, register_mask  # noqa: F401
from .fields import chunk_sizes, chunks, data_fields
from .weights import TracePair, trace_pair, weight_terms

__all__ = [
    "masks",
    "register_mask",
    "make_mask",
    "load_mask_file",
    "check_mask",
    "imputers",
    "register_imputer",
    "impute",
    "Imputation",
    "imputation_errors",
    "imputation_error_rates",
    "check_imputable",
]

# -- traces --------------------------------------------------------------------


def _traces(vae, x_guide, x_model, mask, fields, num_particles: Optional[int] = None, guide_trace=None) -> TracePair:
    """:func:`~pyrovae.infer.weights.trace_pair` with the guide on
    ``x_guide`` and the model on ``x_model`` with ``obs_mask=mask`` (None:
    every element observed); ``fields`` are the batch's other fields."""
    model_fields = {"x": x_model, **fields, **({"obs_mask": mask} if mask is not None else {})}
    try:
        return trace_pair(vae, {"x": x_guide, **fields}, num_particles, model_fields=model_fields,
                          guide_trace=guide_trace)
    except (ValueError, TypeError) as e:
        if "obs_mask" not in str(e):
            raise
        raise ConfigError(
            "this model does not take a per-element obs_mask (Pyro's own obs_mask masks whole "
            f"data points only), so it cannot score just the observed pixels: {str(e).splitlines()[0]}"
        ) from None


def _log_weight(pair: TracePair) -> torch.Tensor:
    """log p(observed, z) - log q(z), by the rules of :mod:`pyrovae.infer.weights`:
    latent model sites the guide does not propose (``x_unobserved``) were
    drawn from the model itself, so their density cancels. ``(K, B)`` or ``(B,)``."""
    return weight_terms(pair).log_weight


def _decoded_mean(vae, model_trace) -> torch.Tensor:
    """E[x | latents] of each particle: the model's deterministic site
    ``x_mean`` (pyrovae's models record it when given ``obs_mask``; see
    :func:`~pyrovae.models.helpers.observe`), or for a model without it
    its ``decode_mean`` capability at its site ``z``."""
    node = model_trace.nodes.get("x_mean")
    if node is not None:
        return node["value"]
    if "z" not in model_trace.nodes or getattr(vae, "decode_mean", None) is None:
        raise ConfigError(
            "imputation needs E[x | latents]: record it in the model as pyro.deterministic('x_mean', ...) "
            "when obs_mask is given (pyrovae.observe does), or give the model a decode_mean(z) capability"
        )
    return vae.decode_mean(model_trace.nodes["z"]["value"])


# -- imputers ------------------------------------------------------------------

imputers = Registry("imputer")
register_imputer = imputers.register


@register_imputer("importance")
class ImportanceResampling:
    """Self-normalised importance sampling with the guide as proposal (see
    the module docstring).

    :param int num_particles: proposals K per data point.
    """

    def __init__(self, num_particles=100):
        self.num_particles = positive_int(num_particles, "num_particles")

    def __call__(self, vae, x_guide, x_model, mask, fields=None):
        pair = _traces(vae, x_guide, x_model, mask, fields or {}, self.num_particles)
        log_w = _log_weight(pair)  # (K, B)
        w = torch.softmax(log_w, 0)
        ess = 1.0 / (w**2).sum(0)
        m = pair.model
        decoded = _decoded_mean(vae, m)  # (K, B, ...): a categorical model's class probabilities add a dim
        mean = (w.reshape(w.shape + (1,) * (decoded.dim() - w.dim())) * decoded).sum(0)
        pick = torch.multinomial(w.T, 1)[:, 0]  # (B,) a particle per point
        draw = m.nodes["x"]["value"][pick, torch.arange(len(x_model))]
        return mean, draw, {"effective_sample_size": ess}


@register_imputer("gibbs")
class MetropolisWithinGibbs:
    """Metropolis-within-Gibbs over (z, x_m) with the guide as proposal for z
    (Mattei & Frellsen 2018); ``metropolis=False`` always accepts, which is
    the pseudo-Gibbs sampler of Rezende et al. (2014).

    :param int steps: sampler steps.
    :param int burn_in: first steps left out of the point estimate.
    :param bool metropolis: use the Metropolis-Hastings correction.
    """

    def __init__(self, steps=100, burn_in=20, metropolis=True):
        steps = positive_int(steps, "steps")
        burn_in = int_in_range(burn_in, 0, steps, "burn_in", hint=f"it counts steps left out of the estimate, below steps={steps}")
        self.steps, self.burn_in, self.metropolis = steps, burn_in, bool(metropolis)

    def __call__(self, vae, x_guide, x_model, mask, fields=None):
        fields = fields or {}
        first = _traces(vae, x_guide, x_model, mask, fields)  # z_0 ~ q(z | x_fill), x_m ~ p(x_m | z_0)
        state, x_hat = first.guide, first.model.nodes["x"]["value"]
        total, accepted = 0.0, torch.zeros(len(x_model))
        for step in range(self.steps):
            proposal = _traces(vae, x_hat, x_hat, None, fields)
            if self.metropolis:
                current = _traces(vae, x_hat, x_hat, None, fields, guide_trace=state)
                log_alpha = _log_weight(proposal) - _log_weight(current)
                accept = torch.rand_like(log_alpha).log() < log_alpha.nan_to_num(nan=-math.inf)
            else:
                accept = torch.ones(len(x_model), dtype=torch.bool, device=x_model.device)
            state = _merge(proposal.guide, state, accept)
            accepted += accept.float().cpu()
            m = _traces(vae, x_guide, x_model, mask, fields, guide_trace=state).model
            x_hat = m.nodes["x"]["value"]
            if step >= self.burn_in:
                total = total + _decoded_mean(vae, m)
        mean = total / (self.steps - self.burn_in)
        return mean, x_hat, {"acceptance_rate": accepted / self.steps}


def _merge(proposal, current, accept: torch.Tensor):
    """A guide trace holding, per data point, the proposal's latent values
    where ``accept`` ``(B,)`` and the current ones elsewhere."""
    merged = poutine.Trace()
    for name, site in proposal.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        new, old = site["value"], current.nodes[name]["value"]
        keep = accept.reshape(accept.shape + (1,) * (new.dim() - accept.dim()))
        merged.add_node(name, **{**site, "value": torch.where(keep, new, old)})
    return merged


# -- the entry point -----------------------------------------------------------


@dataclass
class Imputation:
    """What :func:`~pyrovae.impute` returns; tensors ``(N, *data_shape)`` on the CPU.

    :ivar mean: the point estimate E[x_m | x_o] in the hidden elements (for a
        model with ``impute_point``, its estimate from ``predictive``: the
        most probable class), the input in the observed ones.
    :ivar draw: one draw from p(x_m | x_o) (multiple imputation), observed
        elements unchanged.
    :ivar mask: the mask used (True = observed; a model's ``impute_mask``
        may keep more elements observed than the mask given).
    :ivar diagnostics: per data point ``(N,)``: ``effective_sample_size``
        (importance) or ``acceptance_rate`` (gibbs).
    :ivar predictive: for a model with ``impute_point``, the weighted mean of
        its ``x_mean`` site from which ``mean`` was read: per-element class
        probabilities ``(N, *data_shape, C)`` of a categorical model; else None.
    """

    mean: torch.Tensor
    draw: torch.Tensor
    mask: torch.Tensor
    diagnostics: Dict[str, torch.Tensor] = field(default_factory=dict)
    predictive: Optional[torch.Tensor] = None


def check_imputable(vae, purpose: str = "imputation", method: Any = None) -> None:
    """Raise :class:`~pyrovae.models.protocol.MissingCapability` (a
    :class:`ConfigError`) unless ``vae`` has the capabilities :func:`impute`
    reads (``COMMAND_NEEDS["impute"]``: ``data_shape``), or a
    :class:`ConfigError` when its ``impute_methods`` leave out ``method``
    (an imputer name or spec)."""
    for name in command_needs("impute"):
        capability(vae, name, purpose)
    allowed = capability(vae, "impute_methods", purpose, default=None)
    name = method.get("name") if isinstance(method, dict) else method
    if method is not None and allowed is not None and name not in allowed:
        raise ConfigError(f"{purpose}: the model draws its hidden elements as an importance proposal only, not "
                          f"from p(x_m | x_o, z), so the {name!r} imputer does not apply; use {', '.join(allowed)}")


@torch.no_grad()
def impute(vae, x: torch.Tensor, mask, method: Any = "importance", fill: Optional[torch.Tensor] = None,
           seed: Optional[int] = 0, batch_size: int = 64, **fields: torch.Tensor) -> Imputation:
    """Recover the hidden elements of ``x``.

    The model must take ``obs_mask``, record E[x | latents] as the site
    ``x_mean`` (or have ``decode_mean``), and have the ``data_shape``
    capability; a model without them gets a :class:`ConfigError` that names
    what is missing. The capabilities ``impute_mask``, ``impute_point`` and
    ``impute_methods`` adapt imputation to categorical data (text: the most
    probable character, see :mod:`pyrovae.models.protocol`).

    :param vae: a trained :class:`~pyrovae.models.vae.VAE`.
    :param torch.Tensor x: data ``(N, *data_shape)``; values in hidden
        elements are never read.
    :param mask: bool ``(N, *data_shape)`` or ``data_shape``, True = observed.
    :param method: an imputer spec: ``"importance"``, ``"gibbs"``,
        ``{"name": "importance", "num_particles": 500}``, ...
    :param fill: what the guide sees in hidden elements, ``data_shape``
        (e.g. the training mean per element); ``None``: zeros.
    :param int seed: seeds every draw (``None``: the global generator).
    :param int batch_size: data points per pass.
    :param fields: the model's other batch fields (``y=labels``), each
        ``(N, ...)``, chunked with ``x`` and passed to the model and guide.

    :returns: an :class:`~pyrovae.infer.impute.Imputation` of ``(N, *data_shape)`` tensors.

    Example::

        >>> import torch, pyrovae
        >>> from pyrovae.infer.masks import make_mask
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 8, 8))
        >>> x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))
        >>> mask = make_mask("center:0.5", 5, vae.data_shape)       # True = observed
        >>> mask.shape, int((~mask[0]).sum())                        # a 4x4 hole in each image
        (torch.Size([5, 1, 8, 8]), 16)
        >>> result = pyrovae.impute(vae, x, mask, method={"name": "importance", "num_particles": 20})
        >>> result.mean.shape, result.draw.shape
        (torch.Size([5, 1, 8, 8]), torch.Size([5, 1, 8, 8]))
        >>> torch.equal(result.mean[mask], x[mask])                  # observed pixels are kept
        True
        >>> result.diagnostics["effective_sample_size"].shape
        torch.Size([5])
    """
    imputer = imputers.build(method)
    check_imputable(vae, method=method)
    data = data_fields(vae, x, fields, "impute", "data to impute", check_values=False)
    mask = check_mask(mask, x.shape)
    narrow = capability(vae, "impute_mask", "imputation", default=None)
    if narrow is not None:
        mask = check_mask(narrow(x, mask), x.shape, what="the model's impute_mask of the mask")
    point = capability(vae, "impute_point", "imputation", default=None)
    device = getattr(vae, "device", x.device)
    fill = torch.zeros(vae.data_shape) if fill is None else torch.as_tensor(fill, dtype=x.dtype)
    if tuple(fill.shape) != vae.data_shape:
        raise DataError(f"fill has shape {tuple(fill.shape)}; it must have the data shape {vae.data_shape}")
    # The model never scores hidden elements, but Pyro validates the whole
    # value: hidden elements get the bottom of the data range (in every
    # likelihood's support; without a likelihood, the least observed
    # value), so no hidden value leaks in.
    bottom = vae.likelihood.value_range[0] if has_capability(vae, "likelihood") else float(x[mask].min())
    low = torch.tensor(bottom, dtype=x.dtype, device=device)
    fill = fill.to(device)
    sizes = chunk_sizes(len(x), batch_size)
    means, draws, predictives, diagnostics = [], [], [], {}
    with eval_mode(vae), seeded(seed, device), unregistered(vae):
        for _, chunk in chunks({**data, "mask": mask}, sizes, device):
            xb, mb = chunk.pop("x"), chunk.pop("mask")
            x_model = torch.where(mb, xb, low)
            x_guide = torch.where(mb, xb, fill)
            # user imputers registered before batch fields existed take no ``fields``
            mean, draw, diag = imputer(vae, x_guide, x_model, mb, **({"fields": chunk} if chunk else {}))
            if point is not None:
                predictives.append(mean.cpu())
                mean = point(mean)
            means.append(torch.where(mb, xb, mean).cpu())
            draws.append(torch.where(mb, xb, draw).cpu())
            for k, v in diag.items():
                diagnostics.setdefault(k, []).append(v.cpu())
    return Imputation(torch.cat(means), torch.cat(draws), mask, {k: torch.cat(v) for k, v in diagnostics.items()},
                      torch.cat(predictives) if predictives else None)


def imputation_errors(x_true: torch.Tensor, imputed: torch.Tensor, mask: torch.Tensor, train_mean: torch.Tensor) -> Dict[str, float]:
    """Mean squared error over the hidden elements (in the data's units
    squared) of the imputation, of mean imputation (``train_mean``, the
    training mean per element, ``data_shape``) and of the zero-filled input.
    Also the number of hidden elements and the share of error the model
    removes relative to mean imputation."""
    hidden = ~mask
    truth = x_true[hidden]

    def mse(estimate):
        return float(((estimate - truth) ** 2).mean())

    model, mean_fill = mse(imputed[hidden]), mse(train_mean.expand_as(x_true)[hidden])
    return {
        "mse_imputation": model,
        "mse_mean_imputation": mean_fill,
        "mse_zero_filled": mse(torch.zeros_like(truth)),
        "error_reduction_vs_mean": 1.0 - model / mean_fill if mean_fill > 0 else 0.0,
        "hidden_elements": int(hidden.sum()),
    }


def imputation_error_rates(x_true: torch.Tensor, imputed: torch.Tensor, mask: torch.Tensor,
                           train_mode: torch.Tensor) -> Dict[str, float]:
    """For categorical data (codes): the share of hidden elements the
    imputation gets wrong, and that of mode imputation (``train_mode``, the
    most frequent training value per element, ``data_shape``); also the
    number of hidden elements and the share of errors the model removes
    relative to mode imputation.

    Example::

        >>> import torch
        >>> x, guess = torch.tensor([[3., 4., 1.]]), torch.tensor([[3., 5., 1.]])
        >>> mask = torch.tensor([[False, False, True]])
        >>> imputation_error_rates(x, guess, mask, torch.tensor([9., 4., 1.]))["error_rate_imputation"]
        0.5
    """
    hidden = ~mask
    truth = x_true[hidden]
    model = float((imputed[hidden] != truth).float().mean())
    mode = float((train_mode.expand_as(x_true)[hidden] != truth).float().mean())
    return {
        "error_rate_imputation": model,
        "error_rate_mode_imputation": mode,
        "error_reduction_vs_mode": 1.0 - model / mode if mode > 0 else 0.0,
        "hidden_elements": int(hidden.sum()),
    }
