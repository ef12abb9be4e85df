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

from contextlib import contextmanager

import torch

import pyro
import pyro.poutine as poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.distributions.util import is_identically_zero
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan

from ..errors import ConfigError
from ..registry import Registry, spec_kwargs, spec_name
from .iwae import IWAE
from .plates import NestingFromTrace, plate_nesting

__all__ = ["objectives", "build_objective", "check_sampling_order", "EnumeratedObjective", "LeanTraceELBO", "ANALYTIC_KL_PAIRS", "MAX_PLATE_NESTING"]

#: The plate nesting an :class:`EnumeratedObjective` built by hand assumes
#: (pyrovae's families use the data plate alone); :func:`build_objective`
#: reads the model's own from its trace, and the particle objectives learn it
#: at their first call.
MAX_PLATE_NESTING = 1

objectives = Registry("objective")


def _check_particles(num_particles):
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")


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
    from ..models.base import unregistered

    with unregistered(model):
        model_order, guide_order = _latent_order(model.model, fields), _latent_order(model.guide, fields)
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


#: how a partly labelled batch weighs its labelled points' ELBO (see :class:`EnumeratedObjective`)
LABELLED_WEIGHTINGS = ("data", "batch")


class EnumeratedObjective:
    """``TraceEnum_ELBO`` over a model whose discrete sites ``sites`` are summed
    out exactly (enumerated in parallel, as in Pyro's semi-supervised VAE)
    instead of sampled.

    The sites are marked ``infer={"enumerate": "parallel"}`` in both model and
    guide when the objective runs, so a model only names them
    (``enumerate_sites``). Enumeration dims sit left of the data plate
    (``max_plate_nesting`` = 1, or the model's own ``max_plate_nesting``).
    Has the methods of a Pyro ELBO that pyrovae calls: ``loss``,
    ``differentiable_loss`` and ``loss_and_grads``.

    **Partly labelled batches.** When an enumerated site is also a batch
    field (M2's ``y``), a batch may hold points whose value is known
    (``y >= 0``) and points whose value is missing (``y = -1``). The loss of
    such a batch is

        U_b + w · L_b + s · A_b,

    with U_b the negative ELBO of its unlabelled points (y summed out), L_b
    that of its labelled points (y observed), A_b the model's
    ``auxiliary_loss`` of the labelled points (M2: a · Σ -log q(y|x)), and,
    for B_u unlabelled and B_l labelled points in the batch out of N_u and
    N_l in the data (``counts``; by default the batch's own),
    w = (N_l / N_u)(B_u / B_l) and s = (N / N_u)(B_u / B_l). This is
    B_u / N_u times an unbiased estimate of Kingma et al.'s J^α = Σ L + Σ U
    + a·N·mean_labelled[-log q(y|x)], however the batch over-samples the
    labelled points. A batch that is all labelled scores Σ L + a·N/N_l·Σ(-log q);
    all unlabelled, Σ U.

    With ``labelled_weighting="batch"`` (the model's choice, e.g. m2's
    option) w = 1 instead: a labelled point in the batch weighs as much as
    an unlabelled one, so the few labelled points shape the decoder far
    more than their share of the data (the classification term keeps s).

    **num_data.** Given ``num_data`` = N (which must equal N_l + N_u when
    ``counts`` are given; without them the data is taken to share the
    batch's proportions) the loss is (N_u / B_u) times the above (N_l / B_l
    for a batch without unlabelled points): the full-data estimate of J^α.
    The model and guide then run without ``num_data``, since their data
    plate would scale the two parts by N / B_u and N / B_l on top of w.

    **Data-parallel.** B_u and B_l are the counts of the whole batch. A
    process that holds only its share computes the loss of that share with
    the global counts, set by :meth:`over_batch` (the data-parallel strategy
    sums :meth:`batch_counts` over the ranks), so that the ranks' losses add
    up to the loss of the whole batch.

    :param sites: names of the discrete sites to enumerate.
    :param tuple counts: ``(N_l, N_u)``, labelled and unlabelled points in the training data.
    :param auxiliary: ``(x, y) -> scalar``, the model's ``auxiliary_loss`` (optional).
    """

    def __init__(self, sites, num_particles=1, vectorize_particles=True, max_plate_nesting=MAX_PLATE_NESTING,
                 partial_field=None, counts=None, auxiliary=None, labelled_weighting="data"):
        if labelled_weighting not in LABELLED_WEIGHTINGS:
            raise ConfigError(f"labelled_weighting must be one of {', '.join(LABELLED_WEIGHTINGS)}, got {labelled_weighting!r}")
        self.labelled_weighting = labelled_weighting
        self.sites = frozenset(sites)
        self.partial_field = partial_field
        self.counts = counts
        #: (B_l, B_u) of the whole batch while this process scores a share of it (see over_batch)
        self.global_batch = None
        self.auxiliary = auxiliary
        self.elbo = TraceEnum_ELBO(
            num_particles=num_particles,
            vectorize_particles=vectorize_particles and num_particles > 1,
            max_plate_nesting=max_plate_nesting,
        )

    def _config(self, site):
        return {"enumerate": "parallel"} if site["name"] in self.sites else {}

    def _wrap(self, fn):
        return poutine.infer_config(fn, self._config)

    def batch_counts(self, fields):
        """``(B_l, B_u)``: the labelled and unlabelled points of the batch
        ``fields``, or None when it has no partly observed field."""
        value = fields.get(self.partial_field) if self.partial_field is not None else None
        if value is None:
            return None
        b_l = int((value >= 0).sum())
        return b_l, len(value) - b_l

    @contextmanager
    def over_batch(self, counts):
        """Score shares of a batch whose labelled and unlabelled points are
        ``counts`` ``(B_l, B_u)`` in all (None: each batch is whole)."""
        before, self.global_batch = self.global_batch, (None if counts is None else tuple(int(c) for c in counts))
        try:
            yield self
        finally:
            self.global_batch = before

    def _data_counts(self, b_l, b_u, num_data):
        """``(N_l, N_u)`` for a batch of ``b_l`` labelled and ``b_u`` unlabelled points."""
        if self.counts is not None:
            n_l, n_u = self.counts
            if num_data is not None and int(num_data) != n_l + n_u:
                raise ValueError(f"num_data={num_data} but the objective's counts say {n_l} labelled and "
                                 f"{n_u} unlabelled points ({n_l + n_u} in all)")
            return n_l, n_u
        if num_data is None:
            return b_l, b_u
        return num_data * b_l / (b_l + b_u), num_data * b_u / (b_l + b_u)

    def _parts(self, args, kwargs):
        """``(factor, [(weight, args, kwargs, auxiliary weight or None)])``:
        the batch split into its unlabelled and labelled points and their
        weights, and the factor of the whole (see the class notes)."""
        name = self.partial_field
        value = kwargs.get(name) if name is not None else None
        if value is None:
            return 1.0, [(1.0, args, kwargs, None)]
        x = args[0] if args else kwargs["x"]
        known = value >= 0
        own_l = int(known.sum())
        own_u = len(value) - own_l
        b_l, b_u = self.global_batch if self.global_batch is not None else (own_l, own_u)
        num_data = kwargs.get("num_data")
        others = {k: v for k, v in kwargs.items() if k not in (name, "x", "num_data")}

        def rows(mask, with_value):
            fields = {"x": x[mask], **others, **({name: value[mask]} if with_value else {})}
            return (), fields

        n_l, n_u = self._data_counts(b_l, b_u, num_data)
        if b_u == 0:  # all labelled: the counts of a fully labelled data set
            factor = 1.0 if num_data is None else n_l / b_l
            return factor, [(1.0, *rows(known, True), (n_l + n_u) / max(n_l, 1))]
        factor = 1.0 if num_data is None else n_u / b_u
        if b_l == 0:
            return factor, [(1.0, *rows(~known, False), None)]
        if n_u == 0:
            raise ValueError("a batch with unlabelled points, but counts say the data has none")
        scale = b_u / (n_u * b_l)
        weight = n_l * scale if self.labelled_weighting == "data" else 1.0
        parts = [(1.0, *rows(~known, False), None)] if own_u else []
        if own_l:
            parts.append((weight, *rows(known, True), (n_l + n_u) * scale))
        return factor, parts

    def _total(self, elbo_loss, model, guide, args, kwargs):
        factor, parts = self._parts(args, kwargs)
        total = 0.0
        for weight, a, kw, aux in parts:
            total = total + weight * elbo_loss(self._wrap(model), self._wrap(guide), *a, **kw)
            if aux is not None and self.auxiliary is not None:
                x = a[0] if a else kw["x"]
                total = total + aux * self.auxiliary(x, kw[self.partial_field])
        return total if factor == 1.0 else factor * total

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self._total(self.elbo.differentiable_loss, model, guide, args, kwargs)

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self._total(self.elbo.loss, model, guide, args, kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss)


def _zero_probe(model):
    """Two zero points of ``model.data_shape`` as the fields ``{"x": ...}``."""
    like = next(iter(model.parameters()), torch.zeros(()))
    return {"x": like.new_zeros((2, *model.data_shape))}


def build_objective(spec, model=None, counts=None, probe=None):
    """The objective that ``spec`` (``train.objective``) names, for ``model``.

    A model that declares discrete ``enumerate_sites`` is trained with
    ``TraceEnum_ELBO`` (an :class:`EnumeratedObjective`), which sums those
    sites out exactly; only ``elbo`` can do that, so ``meanfield`` and
    ``iwae`` are refused for such a model. ``meanfield`` is refused as well
    where the guide samples the latent sites in another order than the model
    (:func:`~pyrovae.infer.objectives.check_sampling_order`, traced once on ``probe``, a batch's
    fields; by default two zero points of ``model.data_shape`` for a model
    that takes ``x`` alone, else no check: the trainer passes its probe).
    ``counts`` ``(N_l, N_u)`` are the labelled and unlabelled training
    points when an enumerated site is also a partly observed batch field
    (M2's ``y``; see :class:`EnumeratedObjective`).

    Example::

        objective = build_objective({"name": "elbo", "num_particles": 1}, model)
        loss = objective.differentiable_loss(model.model, model.guide, x=x, y=y)
    """
    sites = tuple(getattr(model, "enumerate_sites", ()) or ())
    if not sites:
        objective = objectives.build(spec)
        if spec_name(spec) == "meanfield" and model is not None:
            fields = probe
            if fields is None and hasattr(model, "data_shape") and tuple(getattr(model, "fields", ("x",))) == ("x",):
                fields = _zero_probe(model)
            if fields is not None:
                check_sampling_order(model, fields)
        return objective
    name, options = spec_name(spec), spec_kwargs(spec)
    if name != "elbo":
        raise ConfigError(
            f"the model sums out its discrete site(s) {', '.join(sites)} by enumeration, which train.objective "
            f"{name!r} cannot do; use train.objective: {{name: elbo}} (TraceEnum_ELBO)"
        )
    objectives.build(spec)  # the options' own checks
    nesting = getattr(model, "max_plate_nesting", None)
    if nesting is None:  # the model's own, from a trace (as Pyro guesses it, without enumeration)
        from ..models.base import unregistered

        fields = probe if probe is not None else (_zero_probe(model) if hasattr(model, "data_shape") else None)
        if fields is None:
            nesting = float("inf")  # no batch to trace: TraceEnum_ELBO guesses it at its first call
        else:
            with unregistered(model):  # an enumerated field left out, as where it is missing
                nesting = plate_nesting(model.model, model.guide, (), {k: v for k, v in fields.items() if k not in sites})
    fields = getattr(model, "fields", ("x",))
    partial = next((s for s in sites if s in fields), None)
    return EnumeratedObjective(sites, max_plate_nesting=nesting, partial_field=partial, counts=counts,
                               auxiliary=getattr(model, "auxiliary_loss", None),
                               labelled_weighting=getattr(model, "labelled_weighting", "data"), **options)
