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

Observed pixels are returned unchanged. Everything is seeded.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError, DataError
from ..report.latents import seeded
from ..registry import Registry

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
]

# -- masks ---------------------------------------------------------------------

masks = Registry("mask", context=("num_points", "data_shape", "generator"))
register_mask = masks.register


def _image_view(data_shape) -> Tuple[int, int]:
    """(H, W) of images ``(C, H, W)``, ``(H, W)`` or flat square data."""
    data_shape = tuple(data_shape)
    if len(data_shape) in (2, 3):
        return data_shape[-2], data_shape[-1]
    side = math.isqrt(data_shape[0])
    if len(data_shape) == 1 and side * side == data_shape[0]:
        return side, side
    raise DataError(
        f"a spatial mask needs image data, but the data points have shape {data_shape}; "
        "use random:FRACTION or a mask FILE"
    )


def _spatial(num_points, data_shape, hidden_rows: slice, hidden_cols: slice) -> torch.Tensor:
    h, w = _image_view(data_shape)
    observed = torch.ones(h, w, dtype=torch.bool)
    observed[hidden_rows, hidden_cols] = False
    return observed.expand(math.prod(data_shape) // (h * w), h, w).reshape(data_shape).expand(num_points, *data_shape)


def _check_fraction(fraction) -> float:
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ValueError(f"the hidden fraction must be a number in (0, 1), got {fraction!r}")
    return float(fraction)


@register_mask("center")
def center_mask(num_points, data_shape, size=0.5):
    """Hide the central square whose side is ``size`` times the image side."""
    h, w = _image_view(data_shape)
    size = _check_fraction(size)
    dh, dw = max(1, round(h * size)), max(1, round(w * size))
    top, left = (h - dh) // 2, (w - dw) // 2
    return _spatial(num_points, data_shape, slice(top, top + dh), slice(left, left + dw))


@register_mask("left")
def left_mask(num_points, data_shape, fraction=0.5):
    """Hide the left ``fraction`` of the columns."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(None), slice(0, max(1, round(w * _check_fraction(fraction)))))


@register_mask("right")
def right_mask(num_points, data_shape, fraction=0.5):
    """Hide the right ``fraction`` of the columns."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(None), slice(w - max(1, round(w * _check_fraction(fraction))), None))


@register_mask("top")
def top_mask(num_points, data_shape, fraction=0.5):
    """Hide the top ``fraction`` of the rows."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(0, max(1, round(h * _check_fraction(fraction)))), slice(None))


@register_mask("bottom")
def bottom_mask(num_points, data_shape, fraction=0.5):
    """Hide the bottom ``fraction`` of the rows."""
    h, w = _image_view(data_shape)
    return _spatial(num_points, data_shape, slice(h - max(1, round(h * _check_fraction(fraction))), None), slice(None))


@register_mask("random")
def random_mask(num_points, data_shape, generator, fraction=0.5):
    """Hide each element independently with probability ``fraction``
    (a different pattern for every data point)."""
    fraction = _check_fraction(fraction)
    return torch.rand(num_points, *data_shape, generator=generator) >= fraction


def parse_mask_spec(text: str) -> Dict[str, Any]:
    """``"center"`` -> ``{"name": "center"}``; ``"random:0.5"`` ->
    ``{"name": "random", "fraction": 0.5}`` (the value after the colon sets
    the mask's first option)."""
    name, sep, value = text.partition(":")
    spec: Dict[str, Any] = {"name": name}
    if sep:
        options = list(masks.options(name))
        if not options:
            raise ConfigError(f"mask {name!r} takes no value; write just {name!r}")
        try:
            spec[options[0]] = float(value)
        except ValueError:
            raise ConfigError(f"mask {text!r}: {value!r} is not a number") from None
    return spec


def load_mask_file(path, num_points: int, data_shape) -> torch.Tensor:
    """A mask from a ``.npy`` file (or a ``.npz`` with key ``mask``):
    bool or 0/1, **1 = observed**, of shape ``data_shape`` (one mask for
    every point) or ``(num_points, *data_shape)``."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"mask {str(path)!r} is neither a mask name ({', '.join(masks.names())}, "
            "optionally NAME:VALUE such as random:0.5) nor an existing .npy/.npz file"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable .npy/.npz mask file: {e}") from None
    if not isinstance(loaded, np.ndarray):
        if "mask" not in loaded:
            raise DataError(f"{path} holds {sorted(loaded)}; a .npz mask file must hold an array named 'mask'")
        loaded = loaded["mask"]
    if loaded.dtype != np.bool_ and not np.isin(loaded, (0, 1)).all():
        raise DataError(f"{path}: a mask must be bool or 0/1 (1 = observed), got values such as {loaded.flat[0]!r}")
    mask = torch.as_tensor(loaded.astype(bool))
    return check_mask(mask, (num_points, *data_shape), what=f"mask {path}")


def make_mask(spec: str, num_points: int, data_shape, seed: int = 0) -> torch.Tensor:
    """The bool mask ``(num_points, *data_shape)`` (True = observed) for a
    registered mask name (``center``, ``left``, ``random:0.5``, ...) or a
    mask file (see :func:`load_mask_file`)."""
    name = spec.partition(":")[0]
    if name not in masks:
        return load_mask_file(spec, num_points, data_shape)
    generator = torch.Generator().manual_seed(seed)
    mask = masks.build(parse_mask_spec(spec), num_points=num_points, data_shape=tuple(data_shape), generator=generator)
    return check_mask(mask.contiguous(), (num_points, *data_shape), what=f"mask {spec!r}")


def check_mask(mask: torch.Tensor, shape, what: str = "mask") -> torch.Tensor:
    """``mask`` as bool ``shape`` = ``(N, *data_shape)``, broadcasting one
    mask of ``data_shape``; raise :class:`DataError` for a wrong shape, a
    data point with no observed element, or no hidden element at all."""
    shape = tuple(shape)
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise DataError(f"{what} must be bool or 0/1 (1 = observed)")
        mask = mask.bool()
    if tuple(mask.shape) == shape[1:]:
        mask = mask.expand(shape)
    if tuple(mask.shape) != shape:
        raise DataError(
            f"{what} has shape {tuple(mask.shape)}, but the data needs {shape[1:]} (one mask for every point) "
            f"or {shape} (one per point); True/1 marks an observed element"
        )
    flat = mask.reshape(len(mask), -1)
    blind = ~flat.any(1)
    if bool(blind.any()):
        raise DataError(
            f"{what} hides every element of {int(blind.sum())} of {len(mask)} data points "
            f"(the first is point {int(blind.nonzero()[0])}); there is nothing left to condition on. "
            "Hide fewer elements (True/1 = observed)"
        )
    if bool(flat.all()):
        raise DataError(f"{what} hides no element of any data point, so there is nothing to impute (True/1 = observed)")
    return mask


# -- traces --------------------------------------------------------------------


def _traces(vae, x_guide, x_model, mask, num_particles: Optional[int] = None, guide_trace=None):
    """Trace the guide on ``x_guide`` (fresh draws, or the latent values of
    ``guide_trace`` re-scored), then the model on ``x_model`` replayed on it
    with ``obs_mask=mask`` (None: every element observed). With
    ``num_particles`` both run in a particles plate at dim -2."""
    plate = pyro.plate("particles", num_particles, dim=-2) if num_particles else contextlib.nullcontext()
    with plate:
        guide = vae.guide if guide_trace is None else poutine.replay(vae.guide, trace=guide_trace)
        g = poutine.trace(guide).get_trace(x_guide)
        try:
            m = poutine.trace(poutine.replay(vae.model, trace=g)).get_trace(x_model, obs_mask=mask)
        except ValueError as e:
            if "obs_mask" not in str(e):
                raise
            raise ConfigError(
                "this VAE's model does not take a per-element obs_mask (Pyro's own obs_mask masks whole "
                f"data points only), so it cannot score just the observed pixels: {str(e).splitlines()[0]}"
            ) from None
    return g, m


def _log_weight(g, m) -> torch.Tensor:
    """log p(observed, z) - log q(z): observed model sites plus, for latent
    sites the guide proposed, log p - log q. Latent model sites the guide
    does not propose (``x_unobserved``) were drawn from the model itself, so
    their density cancels. Shape: the plates', e.g. ``(K, B)``."""
    g.compute_log_prob()
    m.compute_log_prob()
    total = 0.0
    for name, site in m.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            total = total + site["log_prob"]
        elif name in g.nodes:
            total = total + site["log_prob"] - g.nodes[name]["log_prob"]
    return total


def _decoded_mean(vae, z: torch.Tensor) -> torch.Tensor:
    """E[x | z] for codes ``(*batch, latent_dim)``."""
    return vae.likelihood.mean(vae.decoder(z))


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
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        self.num_particles = num_particles

    def __call__(self, vae, x_guide, x_model, mask):
        g, m = _traces(vae, x_guide, x_model, mask, self.num_particles)
        log_w = _log_weight(g, m)  # (K, B)
        w = torch.softmax(log_w, 0)
        ess = 1.0 / (w**2).sum(0)
        shape = (-1, len(x_model)) + (1,) * (x_model.dim() - 1)
        mean = (w.reshape(shape) * _decoded_mean(vae, m.nodes["z"]["value"])).sum(0)
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
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not isinstance(burn_in, int) or not 0 <= burn_in < steps:
            raise ValueError(f"burn_in must be an integer in [0, steps), got {burn_in!r}")
        self.steps, self.burn_in, self.metropolis = steps, burn_in, bool(metropolis)

    def __call__(self, vae, x_guide, x_model, mask):
        state, m = _traces(vae, x_guide, x_model, mask)  # z_0 ~ q(z | x_fill), x_m ~ p(x_m | z_0)
        x_hat = m.nodes["x"]["value"]
        total, accepted = 0.0, torch.zeros(len(x_model))
        for step in range(self.steps):
            proposal, m_prop = _traces(vae, x_hat, x_hat, None)
            if self.metropolis:
                current, m_cur = _traces(vae, x_hat, x_hat, None, guide_trace=state)
                log_alpha = _log_weight(proposal, m_prop) - _log_weight(current, m_cur)
                accept = torch.rand_like(log_alpha).log() < log_alpha.nan_to_num(nan=-math.inf)
            else:
                accept = torch.ones(len(x_model), dtype=torch.bool, device=x_model.device)
            state = _merge(proposal, state, accept)
            accepted += accept.float().cpu()
            _, m = _traces(vae, x_guide, x_model, mask, guide_trace=state)
            x_hat = m.nodes["x"]["value"]
            if step >= self.burn_in:
                total = total + _decoded_mean(vae, m.nodes["z"]["value"])
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
    """What :func:`impute` returns; tensors ``(N, *data_shape)`` on the CPU.

    :ivar mean: the point estimate E[x_m | x_o] in the hidden elements, the
        input in the observed ones.
    :ivar draw: one draw from p(x_m | x_o) (multiple imputation), observed
        elements unchanged.
    :ivar mask: the mask used (True = observed).
    :ivar diagnostics: per data point ``(N,)``: ``effective_sample_size``
        (importance) or ``acceptance_rate`` (gibbs).
    """

    mean: torch.Tensor
    draw: torch.Tensor
    mask: torch.Tensor
    diagnostics: Dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def impute(vae, x: torch.Tensor, mask, method: Any = "importance", fill: Optional[torch.Tensor] = None,
           seed: Optional[int] = 0, batch_size: int = 64) -> Imputation:
    """Recover the hidden elements of ``x``.

    :param vae: a trained :class:`~pyrovae.model.VAE`.
    :param torch.Tensor x: data ``(N, *data_shape)``; values in hidden
        elements are never read.
    :param mask: bool ``(N, *data_shape)`` or ``data_shape``, True = observed.
    :param method: an imputer spec: ``"importance"``, ``"gibbs"``,
        ``{"name": "importance", "num_particles": 500}``, ...
    :param fill: what the guide sees in hidden elements, ``data_shape``
        (e.g. the training mean per element); ``None``: zeros.
    :param int seed: seeds every draw (``None``: the global generator).
    :param int batch_size: data points per pass.
    """
    imputer = imputers.build(method)
    vae.check_data(x[:1], "data to impute")
    mask = check_mask(mask, x.shape)
    device = vae.device
    fill = torch.zeros(vae.data_shape) if fill is None else torch.as_tensor(fill, dtype=x.dtype)
    if tuple(fill.shape) != vae.data_shape:
        raise DataError(f"fill has shape {tuple(fill.shape)}; it must have the data shape {vae.data_shape}")
    # The model never scores hidden elements, but Pyro validates the whole
    # value: hidden elements get the bottom of the data range (in every
    # likelihood's support), so no hidden value leaks in.
    low = torch.tensor(vae.likelihood.value_range[0], dtype=x.dtype)
    vae.eval()
    means, draws, diagnostics = [], [], {}
    with seeded(seed, device):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            mb = mask[start : start + batch_size].to(device)
            x_model = torch.where(mb, xb, low.to(device))
            x_guide = torch.where(mb, xb, fill.to(device))
            mean, draw, diag = imputer(vae, x_guide, x_model, mb)
            means.append(torch.where(mb, xb, mean).cpu())
            draws.append(torch.where(mb, xb, draw).cpu())
            for k, v in diag.items():
                diagnostics.setdefault(k, []).append(v.cpu())
    return Imputation(torch.cat(means), torch.cat(draws), mask, {k: torch.cat(v) for k, v in diagnostics.items()})


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


def mask_tag(spec: str) -> str:
    """A file-name-safe tag for a mask spec: ``random:0.5`` -> ``random-0.5``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(spec).stem if spec.partition(":")[0] not in masks else spec).strip("-")
