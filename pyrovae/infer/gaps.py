"""The inference gaps of Cremer et al. (2018, arXiv 1801.03558).

The gap between log p(x) and the amortized ELBO L[q] splits in two::

    log p(x) - L[q]  =  (log p(x) - L[q*])  +  (L[q*] - L[q])
    inference gap       approximation gap      amortization gap

where q* is the guide's family with its parameters fitted to each point
alone. L[q*] comes from the model's ``local_guide`` capability (free
per-point parameters, initialized at the encoder's output) optimized by
SVI with the model's weights fixed, all points in one batch; log p(x)
comes from :func:`~pyrovae.ais_log_likelihood`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Mapping, NamedTuple, Optional

import torch

import pyro.poutine as poutine

from ..errors import ConfigError
from ..models.base import eval_mode, model_device, pyro_callables, unregistered
from ..models.protocol import capability
from ..validators import int_at_least, positive_number
from .ais import ais_log_likelihood
from .enumerated import missing_site
from .fields import data_fields
from .plates import model_nesting
from .seeds import seeded
from .sharding import check_same_data, shared_seed
from .weights import traced_in_particles, weight_terms

__all__ = ["inference_gaps", "GapsResult"]

#: particles x points per pass when the ELBO is evaluated with many samples
EVAL_PASS = 1 << 16

#: the keys of :meth:`GapsResult.means`
GAP_KEYS = ("log_px", "elbo_amortized", "elbo_optimized", "approximation_gap", "amortization_gap", "inference_gap")


class GapsResult(NamedTuple):
    """Per-point results of :func:`~pyrovae.inference_gaps`, each ``(N,)`` in nats
    (``kept_initial`` bool ``(N,)``; ``steps`` an int).

    :ivar log_px: log p(x) by AIS.
    :ivar elbo_amortized: L[q], the ELBO of the amortized guide.
    :ivar elbo_optimized: L[q*], the ELBO of the per-point optimized guide (>= L[q]).
    :ivar approximation_gap: log p(x) - L[q*].
    :ivar amortization_gap: L[q*] - L[q], >= 0.
    :ivar inference_gap: log p(x) - L[q], the sum of the two gaps.
    :ivar kept_initial: points whose optimized parameters scored lower than
        the encoder's, and so kept the encoder's.
    :ivar steps: optimization steps taken.
    """

    log_px: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_optimized: torch.Tensor
    approximation_gap: torch.Tensor
    amortization_gap: torch.Tensor
    inference_gap: torch.Tensor
    kept_initial: torch.Tensor
    steps: int

    def means(self) -> Dict[str, float]:
        """The mean over points of each per-point value, in nats."""
        return {k: float(getattr(self, k).mean()) for k in GAP_KEYS}


def _elbo(model_fn, guide_fn, params, x, fields, num_samples: int, particle_dim: int, per_pass: int,
          site: Optional[str] = None) -> torch.Tensor:
    """Per-point ELBO ``(N,)``: the mean of ``num_samples`` log weights
    log p(x, z) - log q(z) with z from ``guide_fn(params, x)``, drawn
    ``per_pass`` particles at a time (gradients flow). ``site`` names an
    enumerated site that ``fields`` does not give (M2's label): it is summed
    out exactly, as ``TraceEnum_ELBO`` does in training,
    Σ_c q(c) [ELBO(x, c) - log q(c)] with q(c) from ``guide_fn``'s
    parameters. Sampling c instead would leave its logits without a
    gradient (its value has no reparameterization)."""
    if site is not None:
        trace = poutine.trace(guide_fn).get_trace(params, x, **fields)
        fn = trace.nodes[site]["fn"]
        values = fn.enumerate_support(expand=False).reshape(-1)
        log_q = fn.log_prob(values.reshape(-1, *([1] * len(fn.batch_shape)))).expand(len(values), len(x))
        total = x.new_zeros(x.shape[0])
        for value, log_q_c in zip(values, log_q):
            given = {**fields, site: torch.full((len(x),), int(value), device=x.device)}
            elbo_c = _elbo(model_fn, guide_fn, params, x, given, num_samples, particle_dim, per_pass)
            total = total + log_q_c.exp() * (elbo_c - log_q_c)
        return total

    def guide(x_, **kwargs):
        return guide_fn(params, x_, **kwargs)

    total, done = x.new_zeros(x.shape[0]), 0
    while done < num_samples:
        k = min(per_pass, num_samples - done)
        pair = traced_in_particles(guide, model_fn, ((x,), fields), ((x,), fields), x, k, particle_dim)
        total = total + weight_terms(pair).log_weight.sum(0)
        done += k
    return total / num_samples


@contextlib.contextmanager
def _frozen(model):
    """The model's own parameters without gradients inside the block (only
    the per-point parameters are optimized), restored afterwards."""
    parameters = list(model.parameters()) if hasattr(model, "parameters") else []
    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)


def _check_params(params: Any, n: int) -> Dict[str, torch.Tensor]:
    if not isinstance(params, Mapping) or not params or not all(
            isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == n for v in params.values()):
        raise ConfigError(f"local_guide(x) must return a non-empty dict of tensors with a leading dim of {n} "
                          "(one row per point) and a guide function; see the local_guide capability")
    return {k: v.detach() for k, v in params.items()}


def inference_gaps(model, x: torch.Tensor, *, num_samples: int = 1000, num_particles: int = 1, lr: float = 1e-2,
                   max_steps: int = 2000, patience: int = 50, smoothing: float = 0.95, tol: float = 1e-3,
                   seed: Optional[int] = None, ais_options: Optional[Mapping[str, Any]] = None,
                   shard: bool = True, **fields: torch.Tensor) -> GapsResult:
    """The approximation and amortization gaps of each point (Cremer et al. 2018), in nats.

    - L[q]: the amortized guide's ELBO, from ``num_samples`` draws per point.
    - L[q*]: the same guide family with free per-point parameters (the
      model's ``local_guide`` capability), started at the encoder's output
      and optimized by Adam on the per-point parameters only (the model's
      weights fixed), all points at once, ``num_particles`` draws per step.
      It stops when the smoothed mean ELBO (an exponential moving average
      with weight ``smoothing`` on the past) has not risen by ``tol`` for
      ``patience`` steps, or after ``max_steps``. It is then evaluated with
      the same ``num_samples`` draws (the same random numbers) as L[q]; a
      point whose optimized ELBO is lower than its amortized one keeps the
      encoder's parameters (``kept_initial``), so L[q*] >= L[q] always.
    - log p(x): :func:`~pyrovae.ais_log_likelihood` with ``ais_options``.

    The gaps hold up to the estimators' errors: AIS is a stochastic lower
    bound, so a small negative approximation gap is Monte Carlo error.

    Under ``torchrun`` AIS, by far the costliest part, is split over the
    processes (:func:`~pyrovae.ais_log_likelihood`); the optimization, one
    batch of all points, runs on every process with the same seed, so every
    process returns the same result, that of one process.

    :param model: a model of the protocol with the ``local_guide`` capability
        (every built-in family with a latent has it). An enumerated site
        that ``fields`` does not give (m2's label, without ``y``) is summed
        out exactly in every ELBO, as in training.
    :param torch.Tensor x: data ``(N, *data_shape)``.
    :param int num_samples: draws per point for each ELBO estimate.
    :param int num_particles: draws per point in each optimization step.
    :param float lr: Adam's learning rate for the per-point parameters.
    :param int max_steps: the most optimization steps.
    :param int patience: steps without improvement before stopping.
    :param float smoothing: in [0, 1), the moving average's weight on the past.
    :param float tol: the smallest rise of the smoothed mean ELBO (nats) that counts.
    :param int seed: seeds the optimization, the ELBO draws and AIS (None:
        drawn from the global RNG).
    :param dict ais_options: keywords of :func:`~pyrovae.ais_log_likelihood`
        (``num_steps``, ``num_chains``, ...).
    :param bool shard: under ``torch.distributed``, split AIS's points over the processes (default); False
        scores every point in this process alone, for a call that not every process makes.
    :param fields: the model's other batch fields, each ``(N, ...)``.
    :returns: a :class:`~pyrovae.infer.gaps.GapsResult` of ``(N,)`` tensors; ``.means()`` averages them.
    :raises ~pyrovae.models.protocol.MissingCapability: for a model without ``local_guide``.
    :raises ConfigError: for a bad option.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 4, 4))
        >>> x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.3))
        >>> gaps = pyrovae.inference_gaps(vae, x, num_samples=20, max_steps=5, seed=0,
        ...                               ais_options={"num_steps": 5, "num_chains": 2, "leapfrog_steps": 2})
        >>> gaps.amortization_gap.shape, bool((gaps.amortization_gap >= 0).all())
        (torch.Size([3]), True)
        >>> sorted(gaps.means())[:2]
        ['amortization_gap', 'approximation_gap']
    """
    local_guide = capability(model, "local_guide", "inference_gaps")
    num_samples = int_at_least(num_samples, 1, "num_samples", hint="draws per point for each ELBO estimate")
    num_particles = int_at_least(num_particles, 1, "num_particles", hint="draws per point in each step")
    max_steps = int_at_least(max_steps, 0, "max_steps", hint="0 keeps the encoder's parameters")
    patience = int_at_least(patience, 1, "patience", hint="steps without improvement before stopping")
    lr = positive_number(lr, "lr")
    if not (isinstance(smoothing, (int, float)) and 0 <= smoothing < 1):
        raise ConfigError(f"smoothing must be a number in [0, 1), got {smoothing!r}")
    if not (isinstance(tol, (int, float)) and 0 <= tol < math.inf):
        raise ConfigError(f"tol must be a finite number >= 0, got {tol!r}")
    data = data_fields(model, x, fields, "inference_gaps")
    if shard:
        check_same_data(data, "inference_gaps")
    x = data.pop("x")
    n = x.shape[0]
    site = missing_site(model, data)
    seed = shared_seed(seed) if shard else seed  # under torchrun: rank 0's draw, so every process optimizes alike
    if seed is None:
        seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())
    device = model_device(model) if hasattr(model, "parameters") else x.device
    model_fn = pyro_callables(model)[0]
    with eval_mode(model), unregistered(model), _frozen(model):
        params, guide_fn = local_guide(x, **data)
        initial = _check_params(params, n)
        particle_dim = -1 - model_nesting(model, x, data, x, data)
        free = {k: v.clone().requires_grad_(True) for k, v in initial.items()}
        optimizer = torch.optim.Adam(list(free.values()), lr=lr)
        smooth, best, since, steps = None, -math.inf, 0, 0
        with seeded(seed, device):
            for steps in range(1, max_steps + 1):
                optimizer.zero_grad()
                elbo = _elbo(model_fn, guide_fn, free, x, data, num_particles, particle_dim, num_particles, site)
                (-elbo.sum()).backward()  # a sum: each point's parameters get their own ELBO's gradient
                optimizer.step()
                value = float(elbo.detach().mean())
                smooth = value if smooth is None else smoothing * smooth + (1 - smoothing) * value
                if smooth > best + tol:
                    best, since = smooth, 0
                else:
                    since += 1
                    if since >= patience:
                        break
        per_pass = max(1, min(num_samples, EVAL_PASS // n))
        with torch.no_grad():
            scores = []
            for p in (initial, {k: v.detach() for k, v in free.items()}):
                with seeded(seed + 1, device):  # the same draws for both: their difference has less noise
                    scores.append(_elbo(model_fn, guide_fn, p, x, data, num_samples, particle_dim, per_pass, site))
    amortized, optimized = scores
    kept = optimized < amortized
    optimized = torch.where(kept, amortized, optimized)
    log_px = ais_log_likelihood(model, x, seed=seed + 2, shard=shard, **dict(ais_options or {}), **data).to(optimized)
    return GapsResult(log_px, amortized, optimized, log_px - optimized, optimized - amortized, log_px - amortized,
                      kept, steps)
