"""Training objectives: Pyro ELBOs chosen by name.

``elbo`` is ``Trace_ELBO``; ``meanfield`` is ``TraceMeanField_ELBO``
(analytic KL where one is registered); ``iwae`` is ``RenyiELBO(alpha=0)``,
the importance-weighted bound with K particles.
"""

from __future__ import annotations

from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from ..registry import Registry

__all__ = ["objectives", "ANALYTIC_KL_PAIRS", "MAX_PLATE_NESTING"]

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
