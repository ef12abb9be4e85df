"""Training objectives: Pyro ELBOs chosen by name.

``elbo`` is ``Trace_ELBO``; ``meanfield`` is ``TraceMeanField_ELBO``
(analytic KL where one is registered); ``iwae`` is ``RenyiELBO(alpha=0)``,
the importance-weighted bound with K particles.
"""

from __future__ import annotations

import pyro.poutine as poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..errors import ConfigError
from ..registry import Registry, spec_kwargs, spec_name

__all__ = ["objectives", "build_objective", "EnumeratedObjective", "ANALYTIC_KL_PAIRS", "MAX_PLATE_NESTING"]

# The data plate is the only plate in a pyrovae model: particles go at dim -2.
MAX_PLATE_NESTING = 1

objectives = Registry("objective")


def _check_particles(num_particles):
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")


def _particle_elbo(cls, num_particles, vectorize_particles):
    _check_particles(num_particles)
    return cls(
        num_particles=num_particles,
        vectorize_particles=vectorize_particles and num_particles > 1,
        max_plate_nesting=MAX_PLATE_NESTING,
    )


@objectives.register("elbo")
def elbo(num_particles=1, vectorize_particles=True):
    """Trace_ELBO: the standard reparameterized ELBO (Monte Carlo KL)."""
    return _particle_elbo(Trace_ELBO, num_particles, vectorize_particles)


#: (guide, prior) pairs whose KL(q || p) the ``meanfield`` objective takes in
#: closed form (torch registers a formula for their distributions); every
#: other pair falls back to a Monte Carlo estimate of the KL.
ANALYTIC_KL_PAIRS = (("normal", "standard_normal"), ("normal", "normal"), ("normal", "laplace"))


@objectives.register("meanfield")
def meanfield(num_particles=1, vectorize_particles=True):
    """TraceMeanField_ELBO: KL(q || p) in closed form where torch registers one
    (the normal guide against the standard_normal, normal and laplace priors:
    ``ANALYTIC_KL_PAIRS``); a Monte Carlo estimate for other pairs."""
    return _particle_elbo(TraceMeanField_ELBO, num_particles, vectorize_particles)


@objectives.register("iwae")
def iwae(num_particles=5, vectorize_particles=True):
    """RenyiELBO(alpha=0): the IWAE bound log (1/K) sum_k p(x, z_k) / q(z_k|x)."""
    _check_particles(num_particles)
    return RenyiELBO(
        alpha=0.0,
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=MAX_PLATE_NESTING,
    )


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
    """

    def __init__(self, sites, num_particles=1, vectorize_particles=True, max_plate_nesting=MAX_PLATE_NESTING):
        self.sites = frozenset(sites)
        self.elbo = TraceEnum_ELBO(
            num_particles=num_particles,
            vectorize_particles=vectorize_particles and num_particles > 1,
            max_plate_nesting=max_plate_nesting,
        )

    def _config(self, site):
        return {"enumerate": "parallel"} if site["name"] in self.sites else {}

    def _wrap(self, fn):
        return poutine.infer_config(fn, self._config)

    def loss(self, model, guide, *args, **kwargs):
        return self.elbo.loss(self._wrap(model), self._wrap(guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.elbo.differentiable_loss(self._wrap(model), self._wrap(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return self.elbo.loss_and_grads(self._wrap(model), self._wrap(guide), *args, **kwargs)


def build_objective(spec, model=None):
    """The objective that ``spec`` (``train.objective``) names, for ``model``.

    A model that declares discrete ``enumerate_sites`` is trained with
    ``TraceEnum_ELBO`` (an :class:`EnumeratedObjective`), which sums those
    sites out exactly; only ``elbo`` can do that, so ``meanfield`` and
    ``iwae`` are refused for such a model.

    Example::

        objective = build_objective({"name": "elbo", "num_particles": 1}, model)
        loss = objective.differentiable_loss(model.model, model.guide, x=x, y=y)
    """
    sites = tuple(getattr(model, "enumerate_sites", ()) or ())
    if not sites:
        return objectives.build(spec)
    name, options = spec_name(spec), spec_kwargs(spec)
    if name != "elbo":
        raise ConfigError(
            f"the model sums out its discrete site(s) {', '.join(sites)} by enumeration, which train.objective "
            f"{name!r} cannot do; use train.objective: {{name: elbo}} (TraceEnum_ELBO)"
        )
    objectives.build(spec)  # the options' own checks
    nesting = getattr(model, "max_plate_nesting", MAX_PLATE_NESTING)
    return EnumeratedObjective(sites, max_plate_nesting=nesting, **options)
