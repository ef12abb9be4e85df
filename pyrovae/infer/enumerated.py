"""Enumerated discrete sites, summed out exactly: the one place that does it.

A model names discrete sites in ``enumerate_sites``. Such a site may also be
a batch field (a *partly known field*): observed at the points where the
batch gives its value (``>= 0``), summed out where it does not (``-1``
marks an unknown value). Two consumers sum it out, both from here:

- training: :class:`EnumeratedObjective`, ``TraceEnum_ELBO`` over the
  sites marked ``infer={"enumerate": "parallel"}``, which scores a batch's
  known and unknown points apart and weighs them;
- evaluation: ``summed_out`` traces the guide once for the values c of
  the site and their probabilities q(c | x), scores the fields with the site
  set to each value, and ``mixed`` weighs the per-value log densities by
  q(c | x) (``elbo_terms`` and ``importance_stats`` of
  ``pyrovae.infer.loglik``). So

      ELBO(x) = Σ_c q(c|x) [ELBO(x, c) - log q(c|x)],
      log p(x) = logsumexp_c log p(x, c).

Shapes: ``B`` data points, ``C`` values of the site. Log densities in nats.

Example::

    site = missing_site(model, {"x": x})                       # "c" for a model with enumerate_sites = ("c",)
    parts = summed_out(model, {"x": x}, site, lambda given: score(given))
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

import pyro.poutine as poutine
from pyro.infer import TraceEnum_ELBO

from ..errors import ConfigError
from ..models.base import pyro_callables, summed_fields
from .weights import trace_pair

__all__ = ["EnumeratedObjective", "KNOWN_WEIGHTINGS", "missing_site", "site_posterior", "observed_log_prob",
           "summed_out", "mixed", "known_counts"]

#: how a batch that mixes known and unknown points weighs its known points' ELBO (see :class:`EnumeratedObjective`)
KNOWN_WEIGHTINGS = ("data", "batch")


def known_counts(values: Optional[torch.Tensor]) -> Optional[Tuple[int, int]]:
    """``(known, unknown)`` points of a partly known field ``values`` ``(N,)``
    (``-1`` marks an unknown value); None without the field.

    Example::

        >>> import torch
        >>> known_counts(torch.tensor([0, -1, 2, -1, -1]))
        (2, 3)
    """
    if values is None:
        return None
    known = int((values >= 0).sum())
    return known, len(values) - known


class EnumeratedObjective:
    """``TraceEnum_ELBO`` over a model whose discrete sites ``sites`` are summed
    out exactly (enumerated in parallel, as in Pyro's semi-supervised VAE)
    instead of sampled.

    The sites are marked ``infer={"enumerate": "parallel"}`` in both model and
    guide when the objective runs, so a model only names them
    (``enumerate_sites``). Enumeration dims sit left of the model's plates
    (``max_plate_nesting``). Has the methods of a Pyro ELBO that pyrovae
    calls: ``loss``, ``differentiable_loss`` and ``loss_and_grads``.

    **Partly known field.** When an enumerated site is also a batch field
    (``partial_field``), a batch may hold points whose value is known
    (``>= 0``) and points whose value is not (``-1``). The loss of such a
    batch is

        U_b + w · K_b + s · A_b,

    with U_b the negative ELBO of its unknown points (the site summed out),
    K_b that of its known points (the site observed), A_b the ``auxiliary``
    loss of the known points, and, for B_u unknown and B_k known points in
    the batch out of N_u and N_k in the data (``counts``; by default the
    batch's own), w = (N_k / N_u)(B_u / B_k) and s = (N / N_u)(B_u / B_k).
    This is B_u / N_u times an unbiased estimate of the whole data's
    Σ_known K + Σ_unknown U + N · mean_known[A], however the batch
    over-samples the known points. A batch that is all known scores
    Σ K + N/N_k · A; all unknown, Σ U. Without ``counts`` and
    ``auxiliary`` this is the sum of every point's negative ELBO.

    With ``known_weighting="batch"`` w = 1 instead: a known point in the
    batch weighs as much as an unknown one (the auxiliary term keeps s).

    **num_data.** Given ``num_data`` = N (which must equal N_k + N_u when
    ``counts`` are given; without them the data is taken to share the
    batch's proportions) the loss is (N_u / B_u) times the above (N_k / B_k
    for a batch without unknown points): the full-data estimate. The model
    and guide then run without ``num_data``, since their data plate would
    scale the two parts by N / B_u and N / B_k on top of w.

    **Data-parallel.** B_u and B_k are the counts of the whole batch. A
    process that holds only its share computes the loss of that share with
    the global counts, set by :meth:`over_batch` (the data-parallel strategy
    sums :meth:`batch_counts` over the ranks), so that the ranks' losses add
    up to the loss of the whole batch.

    :param sites: names of the discrete sites to enumerate.
    :param str partial_field: the enumerated site that is also a batch field (None: none).
    :param tuple counts: ``(N_k, N_u)``, known and unknown points in the training data.
    :param auxiliary: ``(x, value) -> scalar``, a loss of the known points (optional).
    :param str known_weighting: ``data`` or ``batch`` (see above).

    Example::

        objective = EnumeratedObjective(("c",), max_plate_nesting=1)
        loss = objective.differentiable_loss(model.model, model.guide, x)   # x: (B, *data_shape); scalar, nats
    """

    def __init__(self, sites, num_particles=1, vectorize_particles=True, max_plate_nesting=1,
                 partial_field=None, counts=None, auxiliary=None, known_weighting="data"):
        if known_weighting not in KNOWN_WEIGHTINGS:
            raise ConfigError(f"known_weighting must be one of {', '.join(KNOWN_WEIGHTINGS)}, got {known_weighting!r}")
        self.known_weighting = known_weighting
        self.sites = frozenset(sites)
        self.partial_field = partial_field
        self.counts = counts
        #: (B_k, B_u) of the whole batch while this process scores a share of it (see over_batch)
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
        """``(B_k, B_u)``: the known and unknown points of the batch
        ``fields``, or None when it has no partly known field."""
        return known_counts(fields.get(self.partial_field) if self.partial_field is not None else None)

    @contextmanager
    def over_batch(self, counts):
        """Score shares of a batch whose known and unknown points are
        ``counts`` ``(B_k, B_u)`` in all (None: each batch is whole)."""
        before, self.global_batch = self.global_batch, (None if counts is None else tuple(int(c) for c in counts))
        try:
            yield self
        finally:
            self.global_batch = before

    def _data_counts(self, b_k, b_u, num_data):
        """``(N_k, N_u)`` for a batch of ``b_k`` known and ``b_u`` unknown points."""
        if self.counts is not None:
            n_k, n_u = self.counts
            if num_data is not None and int(num_data) != n_k + n_u:
                raise ValueError(f"num_data={num_data} but the objective's counts say {n_k} known and "
                                 f"{n_u} unknown points ({n_k + n_u} in all)")
            return n_k, n_u
        if num_data is None:
            return b_k, b_u
        return num_data * b_k / (b_k + b_u), num_data * b_u / (b_k + b_u)

    def _parts(self, args, kwargs):
        """``(factor, [(weight, args, kwargs, auxiliary weight or None)])``:
        the batch split into its unknown and known points and their
        weights, and the factor of the whole (see the class notes)."""
        name = self.partial_field
        value = kwargs.get(name) if name is not None else None
        if value is None:
            return 1.0, [(1.0, args, kwargs, None)]
        x = args[0] if args else kwargs["x"]
        known = value >= 0
        own_k = int(known.sum())
        own_u = len(value) - own_k
        b_k, b_u = self.global_batch if self.global_batch is not None else (own_k, own_u)
        num_data = kwargs.get("num_data")
        others = {k: v for k, v in kwargs.items() if k not in (name, "x", "num_data")}

        def rows(mask, with_value):
            fields = {"x": x[mask], **{k: v[mask] if torch.is_tensor(v) and v.shape[:1] == mask.shape else v
                                      for k, v in others.items()}}
            return (), {**fields, **({name: value[mask]} if with_value else {})}

        n_k, n_u = self._data_counts(b_k, b_u, num_data)
        if b_u == 0:  # all known: the counts of a fully known data set
            factor = 1.0 if num_data is None else n_k / b_k
            return factor, [(1.0, *rows(known, True), (n_k + n_u) / max(n_k, 1))]
        factor = 1.0 if num_data is None else n_u / b_u
        if b_k == 0:
            return factor, [(1.0, *rows(~known, False), None)]
        if n_u == 0:
            raise ValueError("a batch with unknown points, but counts say the data has none")
        scale = b_u / (n_u * b_k)
        weight = n_k * scale if self.known_weighting == "data" else 1.0
        parts = [(1.0, *rows(~known, False), None)] if own_u else []
        if own_k:
            parts.append((weight, *rows(known, True), (n_k + n_u) * scale))
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


# -- exact sums in evaluation ---------------------------------------------------------


def missing_site(model, fields) -> Optional[str]:
    """The enumerated site that is a batch field of ``model`` and that
    ``fields`` does not give (to be summed out), if any."""
    missing = [s for s in summed_fields(model) if fields.get(s) is None]
    if len(missing) > 1:
        raise ConfigError(f"summing out several fields at once ({', '.join(missing)}) is not supported; give all but one")
    return missing[0] if missing else None


def site_posterior(model, fields: Dict[str, torch.Tensor], site: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The values ``(C,)`` of the discrete guide site ``site`` and their log
    probabilities ``(C, B)`` under the guide, q(c | x), from one guide trace
    without the field."""
    x = fields["x"]
    others = {k: v for k, v in fields.items() if k not in ("x", site)}
    trace = poutine.trace(pyro_callables(model)[1]).get_trace(x, **others)
    node = trace.nodes.get(site)
    if node is None or node["type"] != "sample" or node["is_observed"]:
        raise ConfigError(
            f"the model sums out {site!r}, but its guide samples no site {site!r} when {site} is not given; "
            f"the guide must draw {site} ~ q({site} | x) where it is missing"
        )
    fn = node["fn"]
    values = fn.enumerate_support(expand=False).reshape(-1)
    log_q = fn.log_prob(values.reshape(-1, *([1] * len(fn.batch_shape))))
    return values, log_q.reshape(len(values), -1).expand(len(values), len(x))


def observed_log_prob(model, fields: Dict[str, torch.Tensor], site: str) -> torch.Tensor:
    """log p(site = its value in ``fields``) under the model, ``(B,)``."""
    trace = trace_pair(model, fields, None).model
    node = trace.nodes[site]
    return node["fn"].log_prob(node["value"]).expand(len(fields["x"]))


def summed_out(model, fields: Dict[str, torch.Tensor], site: str,
               score: Callable[[Dict[str, torch.Tensor]], Any]) -> List[Tuple[torch.Tensor, torch.Tensor, Any]]:
    """For each value c of ``site``: ``(log q(c|x) (B,), log p(c) (B,), score(fields with site = c))``.

    ``score`` runs first for each value, then log p(c) is traced (the order
    the random draws take)."""
    x = fields["x"]
    values, log_q = site_posterior(model, fields, site)
    parts = []
    for value, log_q_c in zip(values, log_q):
        given = {**fields, site: torch.full((len(x),), int(value), device=x.device)}
        scored = score(given)
        parts.append((log_q_c, observed_log_prob(model, given, site), scored))
    return parts


def mixed(parts: Sequence[Tuple[torch.Tensor, torch.Tensor, Sequence[torch.Tensor]]]) -> Tuple[torch.Tensor, ...]:
    """The per-value means ``(log_lik, log_prior, log_q)`` (each ``(B,)``) of
    ``parts`` ``[(log q(c|x), log p(c), (log_lik_c, log_prior_c, log_q_c))]``
    weighted by q(c | x): log p(c) moves from ``log_lik`` (where the observed
    site put it) to ``log_prior``, and log q(c | x) joins ``log_q``."""
    log_lik = log_prior = log_q = 0.0
    for log_q_c, log_p_c, (lik, prior, q) in parts:
        q_c = log_q_c.exp()
        log_lik = log_lik + q_c * (lik - log_p_c)
        log_prior = log_prior + q_c * (prior + log_p_c)
        log_q = log_q + q_c * (q + log_q_c)
    return log_lik, log_prior, log_q
