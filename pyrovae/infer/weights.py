"""Per-data-point importance weights from Pyro traces: the one place where
a guide trace and a replayed model trace become ``log p(x, z) - log q(z | x)``.

:func:`~pyrovae.infer.evaluate.log_likelihood`, :func:`~pyrovae.infer.evaluate.evaluate`,
:func:`~pyrovae.infer.evaluate.log_prob_terms` / ``elbo_terms`` and
:func:`~pyrovae.infer.impute.impute` all call :func:`trace_pair` and
:func:`weight_terms`, so they share these rules:

- **Which site goes where.** Observed model sites give ``log_lik``
  (log p(x | z), and log p(y | ...) when a label ``y`` is observed); latent
  model sites that the guide samples give ``log_prior``; latent guide sites
  give ``log_q``. ``log w = log_lik + log_prior - log_q``.
- **Model-only sites.** A latent site of the model that the guide does not
  sample is drawn from the model itself when it is replayed (an imputed
  pixel ``x_unobserved``, a nuisance latent); its density appears in both
  p and the proposal, so it cancels and is left out.
- **Guide-only sites** have nothing to be weighed against: a
  :class:`~pyrovae.errors.ConfigError` names them. Auxiliary guide sites
  (``infer={"is_auxiliary": True}``, as Pyro's autoguides draw a latent in
  unconstrained space) count in log q: an autoguide's Delta site carries
  the log-Jacobian of the transform, so the two together are log q(z), as
  in Pyro's ``Trace_ELBO``.
- **Discrete sites are sampled, not enumerated.** The guide draws
  y ~ q(y | x) like any other latent (the traces run without an
  enumeration messenger, so ``infer={"enumerate": ...}`` is ignored here)
  and the weight holds log p(y) - log q(y | x). With the exact posterior
  as the guide every weight equals p(x) (tests/infer/test_weights.py).
- **Scales are not applied; masks are.** These are plain log densities of
  the model as written: ``poutine.scale`` (beta, mini-batch scaling by
  ``num_data``) weighs a training objective, not the model, so it is
  ignored. A mask says which elements exist (``obs_mask``: hidden pixels
  have no density), so a masked-out element contributes 0.
- **Shapes.** Each site's ``log_prob`` is summed over everything but the
  (particle, data) dims: ``(K, B)`` with ``num_particles = K``, ``(B,)``
  without. The particles plate goes to the left of every plate the model
  uses (:func:`~pyrovae.infer.plates.plate_nesting`), so a model may nest
  plates inside its data plate (pixels in their own plate, a plate over
  time steps): their dims are summed like event dims. The data plate is
  the plate named ``"data"``, or the model's only plate
  (:func:`~pyrovae.infer.plates.data_frame`). A site outside the data
  plate (a global latent) broadcasts over the data points.
- **Deterministic and subsample sites** have no density and are skipped.

All log densities are in nats.

.. note:: Pyro's ``vectorized_importance_weights`` sums over the data plate
   as well, so it cannot give a log-likelihood for each data point; that is
   why the weights are assembled here.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple

import torch

import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError
from ..models.base import pyro_callables
from .plates import data_frame, model_nesting

__all__ = ["TracePair", "WeightTerms", "trace_pair", "traced_in_particles", "weight_terms", "latent_sites", "LogDensity",
           "is_random", "site_log_prob"]


class TracePair(NamedTuple):
    """A guide trace, the model trace replayed on it, the shape of their
    per-point weights (``(K, B)`` in a particles plate, ``(B,)`` without),
    the data ``x`` ``(B, ...)`` the guide saw (its dtype and device are the
    weights') and the dim of the particles plate (None without one)."""

    guide: Any
    model: Any
    batch_shape: Tuple[int, ...]
    x: torch.Tensor
    particle_dim: Optional[int] = None


class WeightTerms(NamedTuple):
    """The parts of the log importance weights, each of :attr:`TracePair.batch_shape`, in nats.

    :ivar log_lik: observed model sites, log p(x | z).
    :ivar log_prior: latent model sites that the guide samples, log p(z).
    :ivar log_q: latent guide sites, log q(z | x).
    """

    log_lik: torch.Tensor
    log_prior: torch.Tensor
    log_q: torch.Tensor

    @property
    def log_weight(self) -> torch.Tensor:
        """``log_lik + log_prior - log_q``."""
        return self.log_lik + self.log_prior - self.log_q


def trace_pair(
    vae,
    fields: Mapping[str, torch.Tensor],
    num_particles: Optional[int] = None,
    *,
    model_fields: Optional[Mapping[str, Any]] = None,
    guide_trace=None,
) -> TracePair:
    """Trace ``vae.guide(**fields)`` (fresh draws, or the latent values of
    ``guide_trace`` re-scored) and ``vae.model(**model_fields)`` replayed on
    it; with ``num_particles`` K both run in ``pyro.plate("particles", K)``,
    to the left of every plate the model uses (its nesting is found by
    :func:`~pyrovae.infer.plates.model_nesting` once per model).

    :param dict fields: the batch fields, each ``(B, ...)``; ``fields["x"]`` sets B.
    :param dict model_fields: the model's keyword arguments when they differ
        from the guide's (imputation: the model sees ``obs_mask``).
    :returns: a :class:`TracePair` with ``batch_shape`` ``(K, B)`` or ``(B,)``.

    Example::

        pair = trace_pair(vae, {"x": x}, num_particles=10)   # x: (B, 784)
        log_w = weight_terms(pair).log_weight                # (10, B)
    """
    x = fields["x"]
    model_fields = fields if model_fields is None else model_fields

    def others(kwargs):  # x goes first, positionally: a user's model may call it ``xs``
        return {k: v for k, v in kwargs.items() if k != "x"}

    guide_kwargs, model_kwargs = others(fields), others(model_fields)
    particle_dim = None
    if num_particles:
        particle_dim = -1 - model_nesting(vae, x, guide_kwargs, model_fields["x"], model_kwargs)
    model_fn, guide_fn = pyro_callables(vae)
    guide = guide_fn if guide_trace is None else poutine.replay(guide_fn, trace=guide_trace)
    return traced_in_particles(guide, model_fn, ((x,), guide_kwargs), ((model_fields["x"],), model_kwargs),
                               x, num_particles, particle_dim)


def traced_in_particles(guide, model, guide_call, model_call, x: torch.Tensor, num_particles: Optional[int],
                        particle_dim: Optional[int]) -> TracePair:
    """``guide(*args, **kwargs)`` traced and ``model`` replayed on it, each
    call an ``(args, kwargs)`` pair; inside ``pyro.plate("particles",
    num_particles, dim=particle_dim)`` when ``particle_dim`` is given, and
    without a particle plate otherwise. ``x`` (``(B, ...)``) sets B."""
    plate = contextlib.nullcontext()
    if particle_dim is not None:
        plate = pyro.plate("particles", num_particles, dim=particle_dim)
    with plate:
        g = poutine.trace(guide).get_trace(*guide_call[0], **guide_call[1])
        m = poutine.trace(poutine.replay(model, trace=g)).get_trace(*model_call[0], **model_call[1])
    shape = (num_particles, len(x)) if particle_dim is not None else (len(x),)
    return TracePair(g, m, shape, x, particle_dim)


def is_random(site) -> bool:
    """A sample site with a density: not a plate's subsample site, not ``pyro.deterministic``."""
    return (
        site["type"] == "sample"
        and not site_is_subsample(site)
        and not site["infer"].get("_deterministic", False)
    )


def latent_sites(trace) -> List[dict]:
    """The latent (unobserved) random sample sites of a trace, in order."""
    return [s for s in trace.nodes.values() if is_random(s) and not s["is_observed"]]


def _log_prob(fn, value):
    return fn.log_prob(value)


#: Inductor options of the compiled log-density. The FX graph cache is off
#: because its key leaves out the vector instruction set that
#: ``ATEN_CPU_CAPABILITY`` selects: a graph compiled under AVX-512 and served
#: from the cache to a process running the AVX2 kernels (or the other way
#: round) returns wrong sums or corrupts the heap. The C++ kernels are still
#: cached, under a key that includes their source, which names the
#: instruction set. ``tests/infer/test_compiled_log_density.py`` runs that
#: sequence in two processes against eager.
COMPILE_OPTIONS = {"fx_graph_cache": False}


class LogDensity:
    """``fn.log_prob(value)``, optionally through ``torch.compile``, which
    fuses a likelihood's elementwise work (for the Bernoulli: log-sigmoid,
    multiply, subtract, negate and sum in one pass). If compilation fails
    (no C++ compiler, an unsupported distribution) it warns once and
    falls back to eager. Compiled with :data:`COMPILE_OPTIONS`."""

    _compiled = None  # one compiled wrapper per process: its cache holds one entry per shape

    def __init__(self, compile: bool = False):
        self.compile = compile

    def __call__(self, fn, value):
        if self.compile:
            if LogDensity._compiled is None:
                LogDensity._compiled = torch.compile(_log_prob, dynamic=False, options=COMPILE_OPTIONS)
            try:
                return LogDensity._compiled(fn, value)
            except Exception as e:  # compilation can fail in many ways; eager always works
                warnings.warn(f"torch.compile of the log-densities failed, evaluating eagerly: {type(e).__name__}: {e}")
                self.compile = False
        return fn.log_prob(value)


_EAGER = LogDensity(False)


class Layout(NamedTuple):
    """Which dims of a site's ``log_prob`` a per-point weight keeps: the
    particles plate's and the data plate's (negative dims, left to right,
    ``keep``), within the ``width`` rightmost batch dims that plates use;
    ``data_scale`` is the data plate's mini-batch scale N / B."""

    keep: Tuple[int, ...]
    width: int
    data_scale: float


def layout(pair: TracePair) -> Layout:
    """The :class:`Layout` of ``pair``'s per-point weights, read from its traces."""
    frame = data_frame(pair.model)
    if frame is None:
        raise ConfigError(
            "per-point importance weights need the data points in a plate (pyro.plate('data', ...)); "
            "the model uses none"
        )
    dims = [f.dim for trace in (pair.model, pair.guide) for site in trace.nodes.values()
            if site["type"] == "sample" for f in site["cond_indep_stack"] if f.vectorized]
    width = -min(dims)
    keep = (frame.dim,) if pair.particle_dim is None else (pair.particle_dim, frame.dim)
    scale = frame.full_size / frame.size if frame.full_size else 1.0
    return Layout(keep, width, scale)


def site_log_prob(site, where: Layout, log_prob=_EAGER) -> torch.Tensor:
    """``log_prob`` of a sample site, masked as the site says, unscaled,
    summed over every dim but the (particle, data) dims of ``where``."""
    log_p = log_prob(site["fn"], site["value"])
    mask = site["mask"]
    if mask is not None:
        if isinstance(mask, bool):
            log_p = log_p if mask else torch.zeros_like(log_p)
        else:
            log_p = torch.where(mask, log_p, log_p.new_zeros(()))
    width = where.width
    if log_p.dim() > width:
        raise ConfigError(
            f"site {site['name']!r} has batch shape {tuple(log_p.shape)}, with dims left of every plate "
            f"the model uses ({width}); put each batch dim of a site in a plate"
        )
    if log_p.dim() < width:
        log_p = log_p.reshape((1,) * (width - log_p.dim()) + log_p.shape)
    others = tuple(d for d in range(-width, 0) if d not in where.keep)
    return log_p.sum(others) if others else log_p


def _split_sites(pair: TracePair) -> Tuple[List[dict], List[dict], List[dict]]:
    """(observed model sites, latent model sites the guide samples, latent guide sites)."""
    guide_latents = latent_sites(pair.guide)
    guide_names = {s["name"] for s in guide_latents}
    observed, prior = [], []
    for site in pair.model.nodes.values():
        if not is_random(site):
            continue
        if site["is_observed"]:
            observed.append(site)
        elif site["name"] in guide_names:
            prior.append(site)
        # else: drawn from the model itself on replay; cancels in the weight
    # an autoguide's auxiliary site (AutoNormal's unconstrained draw) carries the
    # density of the latent it transforms: with the Delta's log-Jacobian it is log q(z)
    auxiliary = {s["name"] for s in guide_latents if s["infer"].get("is_auxiliary")}
    missing = guide_names - {s["name"] for s in prior} - auxiliary
    if missing:
        raise ConfigError(
            f"the guide samples {sorted(missing)}, which the model has no latent site for; "
            "importance weights need a guide over the model's latent sites only (rename the "
            "guide's sites to match the model's, or drop the auxiliary ones)"
        )
    return observed, prior, guide_latents


def weight_terms(pair: TracePair, log_prob: LogDensity = _EAGER, scaled: bool = False) -> WeightTerms:
    """The per-point :class:`WeightTerms` of a :class:`TracePair` (see the
    module notes for the rules). ``log_prob`` evaluates the observed sites'
    densities (a compiled :class:`LogDensity` speeds up large likelihoods).
    With ``scaled`` each site's density is weighed by its scale relative to
    the data plate's (beta on the latent sites, 1 elsewhere), as a training
    objective does before it scales the whole by N / B. Gradients flow."""
    observed, prior, latents = _split_sites(pair)
    where = layout(pair)
    zeros = pair.x.new_zeros(pair.batch_shape)

    def total(sites, fn=_EAGER):
        out = zeros
        for site in sites:
            term = site_log_prob(site, where, fn)
            if scaled and site["scale"] != where.data_scale:
                term = term * (site["scale"] / where.data_scale)
            out = out + term
        return out

    return WeightTerms(total(observed, log_prob), total(prior), total(latents))
