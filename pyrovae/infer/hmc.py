"""The pieces of annealed importance sampling (``pyrovae.infer.ais``):
the tempered target of a chunk of points, read from Pyro traces, and one
HMC move per temperature with a Metropolis test for each chain.

**States.** Each chain of each data point holds every continuous latent
site of the model, mapped to unconstrained space by
``torch.distributions.biject_to(site.support)`` and flattened: ``u`` of
shape ``(C, B, D)`` for ``C`` chains, ``B`` points and ``D`` unconstrained
numbers per point. The chains sit in a particles plate left of every plate
the model uses, so every log density here is ``(C, B)`` in nats, summed
over everything else as ``pyrovae.infer.weights`` sums a weight.

**Target.** With log π0 = log q(z | x) (``init="guide"``) or log p(z)
(``init="prior"``) the density at temperature β is

    log γ_β(z) = (1 - β) log π0(z) + β log p(x, z),

plus the log-Jacobian of the unconstrained map. An enumerated site c that
the data do not give (``pyrovae.infer.enumerated.missing_site``) is
summed out exactly: log p(x, z) = logsumexp_c log p(x, z, c), log p(z) =
logsumexp_c log p(z, c) and log q(z | x) = logsumexp_c [log q(c | x) +
log q(z | x, c)], each value traced with the field set to c.

**Cost.** Each gradient evaluation traces the model once (without the
particles plate where that gives the same numbers) and computes each of
its sites' densities once. A guide whose one held site comes first
(a VAE's, a CVAE's) is traced once per chunk and that site's distribution
reused, since it cannot depend on the held values; other guides (a
hierarchy's) are traced at every evaluation. experiments/bench_ais.py
compares the whole with a hand-written loop of the same model.

Each rule is one module-level function (``annealed_guide``,
``annealed_prior``, ``to_constrained``, ``momentum``,
``metropolis``) so that experiments/mutation_check.py can replace it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch.distributions import biject_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform

import pyro
import pyro.poutine as poutine
from pyro.ops.integrator import velocity_verlet

from ..errors import ConfigError
from ..models.base import pyro_callables
from .enumerated import site_posterior
from .plates import model_nesting
from .weights import TracePair, is_random, site_log_prob, latent_sites, layout

__all__ = ["Target", "hmc_move", "annealed_guide", "annealed_prior", "to_constrained", "momentum", "metropolis"]


def annealed_guide(beta: float, log_q, log_prior, log_lik):
    """log q(z|x)^(1-β) p(x, z)^β, each term ``(C, B)``."""
    return (1 - beta) * log_q + beta * (log_prior + log_lik)


def annealed_prior(beta: float, log_prior, log_lik):
    """log p(z) p(x|z)^β: only the likelihood is tempered."""
    return log_prior + beta * log_lik


def to_constrained(transform, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``z = transform(u)`` and log |dz/du| summed to ``(C, B)``."""
    z = transform(u)
    log_jac = transform.log_abs_det_jacobian(u, z)
    return z, log_jac.reshape(*log_jac.shape[:2], -1).sum(-1) if log_jac.dim() > 2 else log_jac


def momentum(u: torch.Tensor) -> torch.Tensor:
    """A standard normal momentum for each coordinate of each chain (unit mass)."""
    return torch.randn_like(u)


def metropolis(log_ratio: torch.Tensor) -> torch.Tensor:
    """Accept each chain's proposal with probability min(1, exp(log_ratio)) ``(C, B)``; NaN rejects."""
    return torch.rand_like(log_ratio).log() < torch.nan_to_num(log_ratio, nan=-math.inf)


def _add(total: Optional[torch.Tensor], term: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return term if total is None else total if term is None else total + term


def _is_identity(transform) -> bool:
    """Whether ``transform`` is the identity (``biject_to`` of a real support, possibly as an event)."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


def _sum_values(log_ps):
    """log Σ_c exp(log p_c) over the values of the enumerated field (the one value itself without one)."""
    return log_ps[0] if len(log_ps) == 1 else torch.logsumexp(torch.stack(log_ps), 0)


class Target:
    """The tempered densities of one chunk of points (``fields``, each
    ``(B, ...)``) for ``num_chains`` chains per point.

    :param str site: the enumerated site to sum out (None: none).
    :param str init: ``"guide"`` or ``"prior"``, the distribution at β = 0.

    Example::

        target = Target(vae, {"x": x}, None, num_chains=16, init="guide")
        u = target.pack(target.initial())          # (16, B, D) unconstrained
        log_init, log_prior, log_lik, log_jac = target.scores(u)    # each (16, B)
    """

    def __init__(self, vae, fields: Dict[str, torch.Tensor], site: Optional[str], num_chains: int, init: str):
        self.model_fn, self.guide_fn = pyro_callables(vae)
        self.x = fields["x"]
        self.shape = (num_chains, len(self.x))
        self.init, self.site = init, site
        self.others = {k: v for k, v in fields.items() if k != "x"}
        self.dim = -1 - model_nesting(vae, self.x, self.others, self.x, self.others)
        self._particles = pyro.plate("particles", num_chains, dim=self.dim)  # entered once per trace
        zero = self.x.new_zeros(len(self.x))
        if site is None:
            self.given = [(self.others, zero)]
        else:
            values, log_q = site_posterior(vae, fields, site)
            self.given = [({**self.others, site: torch.full((len(self.x),), int(v), device=self.x.device)}, lq)
                          for v, lq in zip(values, log_q)]
        self.parts: List[Tuple[str, object, Tuple[int, ...], int, int]] = []
        self.where = None
        self._guide_cache: Dict[int, Optional[tuple]] = {}
        self._model_plated: Dict[int, bool] = {}

    def _plate(self):
        return self._particles

    def initial(self) -> Dict[str, torch.Tensor]:
        """A draw from π0 for every chain: ``{site: (C, B, ...)}``, constrained;
        it also fixes the sites the chains hold and their flat layout."""
        fn = self.guide_fn if self.init == "guide" else self.model_fn
        with self._plate():
            trace = poutine.trace(fn).get_trace(self.x, **self.others)
        self.parts, start, values = [], 0, {}
        for s in latent_sites(trace):
            if s["name"] == self.site:
                continue
            if getattr(s["fn"].support, "is_discrete", False):
                raise ConfigError(
                    f"AIS moves continuous latents only, but {s['name']!r} is discrete; name it in the model's "
                    "enumerate_sites and fields so that it is summed out exactly")
            value = s["value"]
            if value.dim() < 2 or tuple(value.shape[:2]) != self.shape:
                raise ConfigError(
                    f"latent site {s['name']!r} has shape {tuple(value.shape)}, not (chains, points, ...) = "
                    f"{self.shape + ('...',)}; AIS scores each point apart, so every latent must sit in the data plate")
            size = value[0, 0].numel()
            self.parts.append((s["name"], biject_to(s["fn"].support), tuple(value.shape[2:]), start, size))
            values[s["name"]] = value
            start += size
        if not self.parts:
            raise ConfigError("AIS needs at least one continuous latent site; this model has none")
        return values

    def pack(self, z: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Constrained values ``{site: (C or 1, B, ...)}`` to unconstrained ``(C, B, D)``."""
        flat = [t.inv(z[name]).expand(*self.shape, *shape).reshape(*self.shape, size)
                for name, t, shape, _, size in self.parts]
        return torch.cat(flat, -1)

    def _unpack(self, u):
        z, log_jac = {}, None
        for name, t, shape, start, size in self.parts:
            value = u[..., start:start + size].reshape(*self.shape, *shape)
            if _is_identity(t):  # a real latent: z = u, log-Jacobian 0
                z[name] = value
                continue
            z[name], lj = to_constrained(t, value)
            log_jac = lj if log_jac is None else log_jac + lj
        return z, u.new_zeros(self.shape) if log_jac is None else log_jac

    def _model_terms(self, i: int, z, kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """log p(x, z) and log p(z) ``(C, B)`` for the ``i``-th given value of the enumerated
        field, from one trace of the model conditioned on ``z``; each site's density is computed once.

        The model runs without the particles plate where, at the chunk's
        first evaluation, that gives the plated run's numbers: the chains
        then reach the model only through the held values ``(C, B, ...)``,
        and the sites' own parameters stay ``(B, ...)`` where they do not
        read them (the prior's), which spares full-size copies of those
        parameters at every evaluation."""
        plated = self._model_plated.get(i, True)
        terms = self._terms(self._trace_model(z, kwargs, plated), z)
        if i not in self._model_plated:
            self._model_plated[i] = not self._same_without_plate(z, kwargs, terms)
        return terms

    def _trace_model(self, z, kwargs, plated: bool):
        with self._plate() if plated else contextlib.nullcontext():
            return poutine.trace(poutine.condition(self.model_fn, data=z)).get_trace(self.x, **kwargs)

    def _same_without_plate(self, z, kwargs, terms) -> bool:
        try:
            with torch.no_grad():
                other = self._terms(self._trace_model({k: v.detach() for k, v in z.items()}, kwargs, False), z)
        except (RuntimeError, ValueError, IndexError, ConfigError):  # shapes that need the plate
            return False
        return all(a.shape == b.shape and torch.allclose(a.detach(), b) for a, b in zip(terms, other))

    def _terms(self, m, z) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.where is None:
            self.where = layout(TracePair(m, m, self.shape, self.x, self.dim))
        joint = prior = None
        for s in m.nodes.values():
            if not is_random(s):
                continue
            if not s["is_observed"]:  # the held latents are observed here: conditioned on z
                raise ConfigError(f"the model samples {s['name']!r}, which AIS does not hold; every latent must be "
                                  "continuous in the guide's draw or an enumerated field")
            log_p = site_log_prob(s, self.where)
            joint = _add(joint, log_p)
            if s["name"] in z or s["name"] == self.site:
                prior = _add(prior, log_p)
        return self._full(joint), self._full(prior)

    def _full(self, t: Optional[torch.Tensor]) -> torch.Tensor:
        """``t`` broadcast to ``(C, B)``: without the plate, terms that read no held value are ``(1, B)``."""
        if t is None:
            return self.x.new_zeros(self.shape)
        return t if t.shape == self.shape else t.expand(self.shape)

    def _guide_term(self, i: int, z, kwargs) -> torch.Tensor:
        """log q(z | x) ``(C, B)`` for the ``i``-th given value of the enumerated field.

        A guide whose random sites before the first site AIS holds are all
        observed, and which has no random site after it, is traced once per
        chunk: that first held site's distribution was built before any
        held value reached the guide, so it cannot depend on ``z`` and is
        reused, and the observed sites' densities are constants. Any other
        guide (a hierarchy, whose upper sites read the lower ones) is traced
        at every evaluation."""
        if i not in self._guide_cache:
            with torch.no_grad():
                self._guide_cache[i] = self._cached_guide({k: v.detach() for k, v in z.items()}, kwargs)
        cached = self._guide_cache[i]
        if cached is None:
            return self._sum(self._trace_guide(z, kwargs))
        return self._cached_log_q(cached, z)

    def _cached_log_q(self, cached, z) -> torch.Tensor:
        constant, site = cached
        return constant + site_log_prob({**site, "value": z[site["name"]]}, self.where)

    def _trace_guide(self, z, kwargs, plated=True):
        with self._plate() if plated else contextlib.nullcontext():
            return poutine.trace(poutine.condition(self.guide_fn, data=z)).get_trace(self.x, **kwargs)

    def _cached_guide(self, z, kwargs):
        """The guide's reusable part, preferably traced without the particles
        plate: its parameters then stay ``(B, ...)`` and broadcast against
        the chains' values, which spares full-size ``(C, B, ...)`` copies of
        them at every evaluation. That form is used only where it gives the
        plated form's numbers at ``z``."""
        plated = self._cacheable_guide(self._trace_guide(z, kwargs))
        if plated is None:
            return None
        single = self._cacheable_guide(self._trace_guide({k: v[0] for k, v in z.items()}, kwargs, plated=False))
        if single is None or single[1]["name"] != plated[1]["name"]:
            return plated
        try:
            same = torch.allclose(self._cached_log_q(single, z), self._cached_log_q(plated, z))
        except (RuntimeError, ValueError):  # a distribution whose log_prob does not broadcast
            same = False
        return single if same else plated

    def _cacheable_guide(self, trace):
        """``(log-density of the observed sites before it (C, B), the first held site)``, or None."""
        held = {part[0] for part in self.parts}
        sites = [s for s in trace.nodes.values() if is_random(s)]
        first = next((j for j, s in enumerate(sites) if s["name"] in held), None)
        if first is None or len(sites) > first + 1 or not all(s["is_observed"] for s in sites[:first]):
            return None
        constant = self.x.new_zeros(self.shape)
        for s in sites[:first]:
            constant = constant + site_log_prob(s, self.where)  # (B,) sites broadcast to (C, B)
        return constant, sites[first]

    def _sum(self, trace) -> torch.Tensor:
        out = self.x.new_zeros(self.shape)
        for s in trace.nodes.values():
            if is_random(s):
                out = out + site_log_prob(s, self.where)
        return out

    def scores(self, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log π0, log p(z), log p(x | z), log-Jacobian)`` at ``u``, each ``(C, B)``."""
        z, log_jac = self._unpack(u)
        joints, priors, inits = [], [], []
        for i, (kwargs, log_q_c) in enumerate(self.given):
            joint, prior = self._model_terms(i, z, kwargs)
            joints.append(joint)
            priors.append(prior)
            if self.init == "guide":
                inits.append(self._guide_term(i, z, kwargs) + log_q_c)
        joint, prior = _sum_values(joints), _sum_values(priors)
        log_init = _sum_values(inits) if inits else prior
        return log_init, prior, joint - prior, log_jac

    def log_density(self, beta: float, scores) -> torch.Tensor:
        """log γ_β ``(C, B)`` from ``scores``, without the Jacobian."""
        log_init, log_prior, log_lik = scores[:3]
        if self.init == "prior":
            return annealed_prior(beta, log_prior, log_lik)
        return annealed_guide(beta, log_init, log_prior, log_lik)


def hmc_move(target: Target, u: torch.Tensor, scores, beta: float, step_size: torch.Tensor, leapfrog_steps: int):
    """One HMC move that leaves γ_β invariant, with a Metropolis test for
    each chain of each point.

    :param u: states ``(C, B, D)``; ``scores``: ``Target.scores`` at ``u``.
    :param step_size: ``(C, B)``, the leapfrog step of each chain.
    :returns: ``(u, scores, acceptance probability (C, B))`` after the move.
    """
    seen = []

    def potential(state):
        s = target.scores(state["u"])
        energy = -(target.log_density(beta, s) + s[3])
        seen.append((energy.detach(), tuple(t.detach() for t in s)))
        return energy.sum()

    r = momentum(u)
    with torch.enable_grad():
        u1, r1, _, _ = velocity_verlet({"u": u}, {"u": r}, potential, lambda p: p, step_size[..., None],
                                       leapfrog_steps)
    (e0, _), (e1, s1) = seen[0], seen[-1]
    log_ratio = (e0 + 0.5 * r.pow(2).sum(-1)) - (e1 + 0.5 * r1["u"].pow(2).sum(-1))
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    accept = metropolis(log_ratio)
    u = torch.where(accept[..., None], u1["u"].detach(), u)
    scores = tuple(torch.where(accept, new, old) for new, old in zip(s1, scores))
    return u, scores, log_ratio.clamp(max=0).exp()
