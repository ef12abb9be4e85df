"""Training objectives: Pyro ELBOs chosen by name.

``elbo`` is ``Trace_ELBO`` (:class:`LeanTraceELBO`, the same estimator with
less per-step work); ``meanfield`` is ``TraceMeanField_ELBO``
(analytic KL where one is registered); ``iwae`` is the importance-weighted
bound with K particles (:class:`~pyrovae.infer.iwae.IWAE`: per data point,
the mini-batch scale applied once).

Each learns the model's plate nesting from its trace
(:func:`~pyrovae.infer.plates.plate_nesting`), so vectorized particles go to
the left of every plate the model uses.
"""

from __future__ import annotations

import torch

import pyro
import pyro.poutine as poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.distributions.util import is_identically_zero
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan

from ..errors import ConfigError
from ..validators import positive_int
from ..models.base import model_fields
from ..models.protocol import capability
from ..registry import Registry, spec_kwargs, spec_name
from .enumerated import EnumeratedObjective
from .iwae import IWAE
from .plates import NestingFromTrace, plate_nesting

__all__ = ["objectives", "build_objective", "enumerated_objective", "check_sampling_order", "EnumeratedObjective",
           "LeanTraceELBO", "ANALYTIC_KL_PAIRS"]

objectives = Registry("objective")


def _check_particles(num_particles):
    positive_int(num_particles, "num_particles")


def _particle_elbo(cls, num_particles, vectorize_particles):
    """``cls`` learning the model's plate nesting at its first vectorized call."""
    _check_particles(num_particles)
    return _LEARNING[cls](num_particles=num_particles, vectorize_particles=vectorize_particles and num_particles > 1)


def _lean_traces(model, guide, args, kwargs):
    """The pair of traces ``get_importance_trace`` builds for a callable
    guide with validation off: the guide's, the model replayed against it,
    subsample sites pruned, the model's log-densities and the guide's score
    parts computed by Pyro's own trace methods (whose errors name the site)."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    return model_trace, guide_trace


def _sample_sites(trace):
    return [site for site in trace.nodes.values() if site["type"] == "sample"]


class LeanTraceELBO(Trace_ELBO):
    """``Trace_ELBO`` without its per-site host syncs, the same estimator.

    Where it provably computes what ``Trace_ELBO`` computes (one particle,
    not vectorized, Pyro's validation off (the trainer's default,
    ``train.validate_model: false``), a guide that is a callable, not a
    ``GuideMessenger``, and every guide site with an identically zero
    score-function term, i.e. drawn by ``rsample``), :meth:`differentiable_loss`
    builds the traces exactly as Pyro's ``get_importance_trace`` does and
    returns, as a tensor,

        loss = -(Σ_model sites scale·log p  -  Σ_guide sites scale·log q)

    with the gradient of Trace_ELBO's surrogate (the guide's entropy terms),
    without the ``.item()`` per site that builds Pyro's float loss (a device
    sync each on a GPU). Everything else hands off to ``Trace_ELBO`` itself:
    several or vectorized particles, validation on, a messenger guide
    (``AutoNormalMessenger``...: Pyro takes both traces from the messenger,
    and a replayed model would score the wrong sites), and a guide site with
    a score-function term (Trace_ELBO's particle, Rao-Blackwellized, on the
    same draws). ``loss_and_grads`` (what ``SVI.step`` calls) takes the same
    path; ``loss`` is ``Trace_ELBO``'s. A ``log_prob`` that raises keeps
    Pyro's message naming the site, and a NaN loss keeps Pyro's warning.

    Example::

        elbo = LeanTraceELBO(max_plate_nesting=1)
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)  # x: (B, *data_shape); loss: scalar
        loss.backward()
    """

    def _lean_applies(self, guide) -> bool:
        """Whether the lean path may run for ``guide`` (the conditions known
        before running it; the guide's sites are checked after)."""
        return (self.num_particles == 1 and not self.vectorize_particles and not is_validation_enabled()
                and not isinstance(poutine.unwrap(guide), Messenger))

    def _lean_loss(self, model, guide, args, kwargs):
        """``(loss, model_trace, guide_trace)``: the differentiable loss of
        one particle, valued as Trace_ELBO's loss, with its surrogate's gradient."""
        model_trace, guide_trace = _lean_traces(model, guide, args, kwargs)
        guide_sites = _sample_sites(guide_trace)
        log_p = sum(site["log_prob_sum"] for site in _sample_sites(model_trace))
        entropy = sum(site["score_parts"].entropy_term.sum() for site in guide_sites
                      if not is_identically_zero(site["score_parts"].entropy_term))
        if not torch.is_tensor(log_p - entropy) or not all(
                is_identically_zero(site["score_parts"].score_function) for site in guide_sites):
            # Trace_ELBO's own particle, Rao-Blackwellized score-function terms included
            loss, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
            surrogate = warn_if_nan(surrogate, "loss")
            return loss + (surrogate - torch_item(surrogate)), model_trace, guide_trace
        log_q = sum(site["log_prob_sum"] for site in guide_sites)
        surrogate = warn_if_nan(-(log_p - entropy), "loss")
        # the value of Trace_ELBO's loss, the gradient of its surrogate (equal where entropy terms are log q)
        loss = -(log_p - log_q).detach() + (surrogate - surrogate.detach())
        return loss, model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if not self._lean_applies(guide):
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return self._lean_loss(model, guide, args, kwargs)[0]

    def loss_and_grads(self, model, guide, *args, **kwargs):
        if not self._lean_applies(guide):
            return super().loss_and_grads(model, guide, *args, **kwargs)
        loss, model_trace, guide_trace = self._lean_loss(model, guide, args, kwargs)
        # as Trace_ELBO: backward only where the traces hold a Pyro parameter
        trainable = any(site["type"] == "param" for trace in (model_trace, guide_trace) for site in trace.nodes.values())
        if trainable and getattr(loss, "requires_grad", False):
            loss.backward(retain_graph=self.retain_graph)
        return warn_if_nan(torch_item(loss), "loss")


class _LeanTraceELBO(NestingFromTrace, LeanTraceELBO):
    __doc__ = LeanTraceELBO.__doc__


class _TraceMeanField_ELBO(NestingFromTrace, TraceMeanField_ELBO):
    __doc__ = TraceMeanField_ELBO.__doc__


_LEARNING = {LeanTraceELBO: _LeanTraceELBO, TraceMeanField_ELBO: _TraceMeanField_ELBO}


@objectives.register("elbo")
def elbo(num_particles=1, vectorize_particles=True):
    """Trace_ELBO: the standard reparameterized ELBO (Monte Carlo KL), as
    ``LeanTraceELBO``."""
    return _particle_elbo(LeanTraceELBO, num_particles, vectorize_particles)


#: (guide, prior) pairs whose KL(q || p) the ``meanfield`` objective takes in
#: closed form (torch registers a formula for their distributions); every
#: other pair falls back to a Monte Carlo estimate of the KL. A conditional
#: prior p(z | z2) counts only where the guide draws z2 before z
#: (:func:`~pyrovae.infer.objectives.check_sampling_order`); ``meanfield`` is refused otherwise.
ANALYTIC_KL_PAIRS = (("normal", "standard_normal"), ("normal", "normal"), ("normal", "laplace"))


@objectives.register("meanfield")
def meanfield(num_particles=1, vectorize_particles=True):
    """TraceMeanField_ELBO: KL(q || p) in closed form where torch registers one
    (the normal guide against the standard_normal, normal and laplace priors:
    ``ANALYTIC_KL_PAIRS``); a Monte Carlo estimate for other pairs. Refused
    for a model whose guide samples its latent sites in another order than
    the model (see :func:`~pyrovae.infer.objectives.check_sampling_order`)."""
    return _particle_elbo(TraceMeanField_ELBO, num_particles, vectorize_particles)


def _latent_order(fn, fields) -> list:
    """The latent (unobserved) sample sites of ``fn(**fields)`` in the order it samples them."""
    from pyro.poutine.util import site_is_subsample

    x = fields["x"]
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(fn).get_trace(**fields)
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)]


def check_sampling_order(model, fields) -> None:
    """Raise ``ConfigError`` when ``model``'s guide samples the latent sites
    the two share in another order than its model does, on the batch
    ``fields`` (a two-point probe is enough).

    ``TraceMeanField_ELBO`` replaces each latent site's log q - log p by
    KL(q(z | ...) || p(z | parents)) with the parents the guide drew. That is
    the expected log-ratio only when the parents were drawn before z, i.e.
    the guide samples in the model's order. A bottom-up guide q(z|x) q(z2|z)
    against a top-down model p(z2) p(z|z2) draws z2 from z, so the closed-form
    KL(q(z|x) || p(z|z2)) is taken at a z2 that depends on the z it
    integrates over: a biased, much larger loss.

    Example::

        check_sampling_order(vae, {"x": x[:2]})   # x: (B, *data_shape); raises for a bottom-up hierarchy
    """
    from ..models.base import pyro_callables, unregistered

    model_fn, guide_fn = pyro_callables(model)
    with unregistered(model):
        model_order, guide_order = _latent_order(model_fn, fields), _latent_order(guide_fn, fields)
    shared = set(model_order) & set(guide_order)
    model_order = [n for n in model_order if n in shared]
    guide_order = [n for n in guide_order if n in shared]
    if model_order != guide_order:
        raise ConfigError(
            f"train.objective 'meanfield' needs a guide that samples the latent sites in the model's order (a "
            f"site's closed-form KL is taken given the sites drawn before it), but the guide samples "
            f"{', '.join(guide_order)} and the model {', '.join(model_order)}; use train.objective: {{name: elbo}}"
        )


@objectives.register("iwae")
def iwae(num_particles=5, vectorize_particles=True):
    """The IWAE bound log (1/K) sum_k p(x, z_k) / q(z_k|x) of each data point,
    summed over the batch and scaled by N / B once (:class:`~pyrovae.infer.iwae.IWAE`;
    Pyro's RenyiELBO(alpha=0) without ``num_data``)."""
    _check_particles(num_particles)
    return IWAE(num_particles=num_particles, vectorize_particles=vectorize_particles)


def _zero_probe(model):
    """Two zero points of ``model.data_shape`` as the fields ``{"x": ...}``."""
    like = next(iter(model.parameters()), torch.zeros(()))
    return {"x": like.new_zeros((2, *model.data_shape))}


def build_objective(spec, model=None, probe=None, train_fields=None):
    """The training objective for ``model`` under ``spec`` (``train.objective``).

    A model that supplies its own (the ``objective`` capability,
    ``model.objective(spec, train_fields)``, as ``pyro.contrib.cevae`` ships
    ``TraceCausalEffect_ELBO``) is trained with that; ``train_fields`` are
    the training set's fields ``{"x": (N, ...), ...}`` (None: not at hand).
    Otherwise a model that declares discrete ``enumerate_sites`` is trained
    with ``TraceEnum_ELBO`` (:func:`enumerated_objective`), and any other
    with the objective ``spec`` names. ``meanfield`` is refused where the
    guide samples the latent sites in another order than the model
    (:func:`~pyrovae.infer.objectives.check_sampling_order`, traced once on
    ``probe``, a batch's fields; by default two zero points of
    ``model.data_shape`` for a model that takes ``x`` alone, else no check:
    the trainer passes its probe).

    Example::

        objective = build_objective({"name": "elbo", "num_particles": 1}, model)
        loss = objective.differentiable_loss(model.model, model.guide, x=x)   # x: (B, *data_shape); nats
    """
    own = capability(model, "objective", "training", default=None) if model is not None else None
    if own is not None:
        return own(spec, train_fields)
    if tuple(getattr(model, "enumerate_sites", ()) or ()):
        return enumerated_objective(spec, model, probe)
    objective = objectives.build(spec)
    if spec_name(spec) == "meanfield" and model is not None:
        fields = probe
        if fields is None and hasattr(model, "data_shape") and model_fields(model) == ("x",):
            fields = _zero_probe(model)
        if fields is not None:
            check_sampling_order(model, fields)
    return objective


def enumerated_objective(spec, model, probe=None, **options) -> EnumeratedObjective:
    """``TraceEnum_ELBO`` summing out ``model.enumerate_sites`` exactly (an
    :class:`~pyrovae.infer.enumerated.EnumeratedObjective`). Only ``elbo``
    can enumerate, so ``meanfield`` and ``iwae`` are refused. The model's
    plate nesting is its ``max_plate_nesting``, else read from a trace of
    ``probe`` (default: two zero points of ``model.data_shape``). An
    enumerated site that is also a batch field is the objective's partly
    known field; ``options`` (``counts``, ``auxiliary``,
    ``known_weighting``) weigh its known and unknown points.

    Example::

        objective = enumerated_objective({"name": "elbo"}, model)   # model.enumerate_sites = ("c",)
    """
    sites = tuple(getattr(model, "enumerate_sites", ()) or ())
    name = spec_name(spec)
    if name != "elbo":
        raise ConfigError(
            f"the model sums out its discrete site(s) {', '.join(sites)} by enumeration, which train.objective "
            f"{name!r} cannot do; use train.objective: {{name: elbo}} (TraceEnum_ELBO)"
        )
    objectives.build(spec)  # the options' own checks
    nesting = getattr(model, "max_plate_nesting", None)
    if nesting is None:  # the model's own, from a trace (as Pyro guesses it, without enumeration)
        from ..models.base import pyro_callables, unregistered

        fields = probe if probe is not None else (_zero_probe(model) if hasattr(model, "data_shape") else None)
        if fields is None:
            nesting = float("inf")  # no batch to trace: TraceEnum_ELBO guesses it at its first call
        else:
            with unregistered(model):  # an enumerated field left out, as where it is missing
                nesting = plate_nesting(*pyro_callables(model), (), {k: v for k, v in fields.items() if k not in sites})
    fields = model_fields(model)
    partial = next((s for s in sites if s in fields), None)
    return EnumeratedObjective(sites, max_plate_nesting=nesting, partial_field=partial, **spec_kwargs(spec), **options)
