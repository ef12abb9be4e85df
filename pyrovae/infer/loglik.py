"""Importance-sampled log-likelihoods and ELBO terms, per data point.

The weights come from :mod:`pyrovae.infer.weights` (guide traced in a
particles plate, model replayed on it; the rules for scales, masks,
model-only and discrete sites are written there), so this holds unchanged
for every registered prior, likelihood and guide, for models with several
latent sites and for a user's own model. Here the weights are streamed:
K importance samples in chunks, combined by a running logsumexp, so
memory depends on the chunk, never on K.

The batch fields a model takes besides ``x`` (labels ``y``, ...) are
keyword arguments, chunked with ``x``::

    ll = log_likelihood(model, x, 1000, y=labels)      # (N,) nats

All log densities are in nats. Shapes: ``N`` data points, ``K`` importance
samples (particles), ``B`` data points per chunk.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

import pyro

from ..validators import int_at_least
from ..models.base import eval_mode, model_device, unregistered
from .enumerated import missing_site, mixed, summed_out
from .fields import balanced_sizes, chunks, data_fields
from .psis import merge_top, pareto_k, tail_size
from .sharding import block_seed, block_shard, gather_point_fields, rank_and_size, shared_seed
from .weights import LogDensity, latent_sites, trace_pair, weight_terms

__all__ = [
    "log_prob_terms",
    "elbo_terms",
    "log_likelihood",
    "importance_stats",
    "ISResult",
    "DEFAULT_NUM_SAMPLES",
    "ACTIVE_UNIT_THRESHOLD",
]

#: default number of importance samples K of :func:`log_likelihood`,
#: :func:`evaluate` and ``pyrovae evaluate`` (the literature uses 5000)
DEFAULT_NUM_SAMPLES = 1000
#: Burda et al. (2015): a latent unit is active when Cov_x(E_q[z_i | x]) exceeds this
ACTIVE_UNIT_THRESHOLD = 1e-2
#: decoder passes (particles x data points) per traced chunk when the caller
#: sets neither ``batch_size`` nor ``chunk_size``: large enough that Pyro's
#: per-trace bookkeeping costs a few per cent, small enough that each of the
#: likelihood's intermediates stays around 10 MB for MNIST (the fastest
#: setting of experiments/bench_loglik.py --sweep; figures in the README)
DEFAULT_CHUNK_PASSES = 4000
#: data points per chunk by default
DEFAULT_BATCH_SIZE = 20
#: with ``compile=None`` the likelihood's log-density is compiled from this
#: many decoder passes (N x K) on: about a minute of eager work, so the few
#: seconds of compilation pay for themselves
AUTO_COMPILE_PASSES = 10_000_000


def log_prob_terms(vae, x: torch.Tensor, num_particles: int = 1, **fields) -> Dict[str, torch.Tensor]:
    """Trace the guide inside a particles plate, replay the model on it, and
    return per-particle, per-data-point log densities in nats, each ``(K, B)``
    for ``x`` of shape ``(B, *data_shape)`` and ``K = num_particles``:

    - ``log_lik``: observed sites, log p(x | z)
    - ``log_prior``: latent sites of the model that the guide samples, log p(z)
    - ``log_q``: latent sites of the guide, log q(z | x)

    ``log_lik + log_prior - log_q`` are the log importance weights
    (:mod:`pyrovae.infer.weights`). Gradients flow (no ``no_grad`` here);
    ``fields`` (the batch's other fields, e.g. ``y=labels``) go to
    ``vae.model`` and ``vae.guide`` with ``x``. No input checks: this is the
    inner loop of validation.
    """
    t = weight_terms(trace_pair(vae, {"x": x, **fields}, num_particles))
    return {"log_lik": t.log_lik, "log_prior": t.log_prior, "log_q": t.log_q}


@torch.no_grad()
def elbo_terms(vae, x: torch.Tensor, num_particles: int = 1, **fields: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-data-point ELBO and its parts, each ``(B,)``, in nats:
    ``elbo = reconstruction - kl``, averaged over ``num_particles`` draws
    (``kl`` is the Monte Carlo estimate E_q[log q(z|x) - log p(z)]).
    ``fields`` are the batch's other fields (labels ``y``, ...), passed to the
    model and guide with ``x``. An enumerated site that is a batch field
    (:func:`~pyrovae.models.base.summed_fields`) and is not given is summed
    over exactly (:mod:`pyrovae.infer.enumerated`):
    elbo = Σ_c q(c|x) [ELBO(x, c) - log q(c|x)], with log p(c) counted in
    ``kl``, not in ``reconstruction``."""
    site = missing_site(vae, fields)

    def means(given):
        t = log_prob_terms(vae, x, num_particles, **{k: v for k, v in given.items() if k != "x"})
        return t["log_lik"].mean(0), t["log_prior"].mean(0), t["log_q"].mean(0)

    if site is None:
        recon, log_prior, log_q = means(fields)
    else:
        recon, log_prior, log_q = mixed(summed_out(vae, {"x": x, **fields}, site, means))
    kl = log_q - log_prior
    return {"elbo": recon - kl, "reconstruction": recon, "kl": kl}


# -- importance sampling --------------------------------------------------------


class ISResult(NamedTuple):
    """Importance-sampling estimates for each data point, each ``(N,)``.

    :ivar log_likelihood: log p(x) ≈ logsumexp_k log w_k - log K, in nats.
    :ivar stderr: delta-method standard error of that estimate, in nats:
        ``sqrt((K / ess - 1) / (K - 1))`` (NaN for K = 1). It measures the
        spread of the weights; it cannot see a proposal that misses
        posterior mass, so treat it as a lower bound on the error.
    :ivar ess: effective sample size ``(sum w)^2 / sum w^2``, between 1 and K.
    """

    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor


def _check_int(name: str, value: Any, minimum: int, hint: str) -> int:
    return int_at_least(value, minimum, name, hint=hint)


def check_num_samples(num_samples: Any) -> int:
    """``num_samples`` (K), or a :class:`ConfigError` unless it is an integer >= 1."""
    return _check_int("num_samples", num_samples, 1, "use at least one importance sample (5000 is the literature setting)")


def _chunk_sizes(n: int, num_samples: int, batch_size: Optional[int], chunk_size: Optional[int]) -> Tuple[int, int]:
    if batch_size is not None:
        _check_int("batch_size", batch_size, 1, "it is the number of data points per chunk")
    if chunk_size is not None:
        _check_int("chunk_size", chunk_size, 1, "it is the number of importance samples per chunk")
    if batch_size is None:
        batch_size = min(n, DEFAULT_BATCH_SIZE if chunk_size is None else max(1, DEFAULT_CHUNK_PASSES // chunk_size))
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_CHUNK_PASSES // batch_size)
    return min(batch_size, n), min(chunk_size, num_samples)


@contextlib.contextmanager
def evaluation_mode(vae, seed: Optional[int], device: torch.device):
    """eval() mode, no autograd, Pyro validation off (the data was checked
    once up front), no ``pyro.module`` registration (nothing is trained
    here; see :func:`~pyrovae.models.base.unregistered`), and a forked,
    seeded RNG when ``seed`` is given."""
    fork = contextlib.nullcontext()
    if seed is not None:
        devices = [device.index or 0] if device.type == "cuda" else []
        fork = torch.random.fork_rng(devices=devices)
    with eval_mode(vae), fork, unregistered(vae), torch.no_grad(), pyro.validation_enabled(False):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pass", unit_scale=True, desc=desc, file=sys.stderr, dynamic_ncols=True)


def _continuous(site) -> bool:
    support = getattr(site["fn"], "support", None)
    return not getattr(support, "is_discrete", False)


def _latent_means(sites) -> Optional[torch.Tensor]:
    """Per particle, the guide's mean of each continuous latent site where
    it has one in closed form (else the drawn value), flattened and
    concatenated: ``(K, B, total latent size)``; None without such a site.
    Discrete sites are left out: active units are about codes.
    For a hierarchical guide this is a Rao-Blackwellized draw of E_q[z | x]."""
    parts = []
    for site in filter(_continuous, sites):
        try:
            m = site["fn"].mean
        except NotImplementedError:
            m = site["value"]
        m = torch.broadcast_to(m, site["value"].shape)
        parts.append(m.reshape(*m.shape[:2], -1))
    return torch.cat(parts, -1) if parts else None


def _chunk_weights(vae, chunk, particle_chunks, obs_log_prob, with_codes, bar, tail=0):
    """For one chunk of ``b`` points: log Σ_k w_k and log Σ_k w_k² ``(b,)``,
    the sums over particles of log_lik, log_prior and log_q ``(3, b)``,
    of the latent means ``(b, L)`` (None without codes), and the ``tail + 1``
    largest log weights ``(tail + 1, b)`` (``pyrovae.infer.psis.merge_top``;
    None for ``tail = 0``)."""
    xb = chunk["x"]
    b = len(xb)
    lse = xb.new_full((b,), -math.inf)
    lse2 = xb.new_full((b,), -math.inf)
    sums = xb.new_zeros(3, b)
    codes = top = None
    for k in particle_chunks:
        pair = trace_pair(vae, chunk, k)
        t = weight_terms(pair, obs_log_prob)
        log_w = t.log_weight
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
        if tail:
            top = merge_top(top, log_w, tail)
        sums += torch.stack([t.log_lik.sum(0), t.log_prior.sum(0), t.log_q.sum(0)])
        means = _latent_means(latent_sites(pair.guide)) if with_codes else None
        if means is not None:
            codes = means.sum(0) if codes is None else codes + means.sum(0)
        if bar is not None:
            bar.update(k * b)
    return lse, lse2, sums, codes, top


def _combine(parts, k: int) -> Dict[str, torch.Tensor]:
    """Per-point statistics from the weights of each value of a summed-out
    site (one part, with q = 1 and log p = 0, when nothing is summed out).

    ``parts``: ``[(log q(c|x) (b,), log p(c) (b,), (lse, lse2, sums, codes, top))]``
    (:func:`~pyrovae.infer.enumerated.summed_out` of :func:`_chunk_weights`).
    The estimate is p̂(x) = Σ_c (1/K) Σ_k w_ck, whose variance is the sum of
    the values' variances; ``ess`` counts all C·K weights, and ``top`` keeps
    the largest of all C·K (as many as one value's)."""
    lse_c = torch.stack([w[0] for _, _, w in parts])
    lse2_c = torch.stack([w[1] for _, _, w in parts])
    lse = torch.logsumexp(lse_c, 0)
    lse2 = torch.logsumexp(lse2_c, 0)
    if k > 1:
        rel_var = (k * torch.exp(lse2_c - 2 * lse) - torch.exp(2 * (lse_c - lse))).sum(0) / (k - 1)
        stderr = rel_var.clamp(min=0).sqrt()
    else:
        stderr = torch.full_like(lse, math.nan)
    log_lik, log_prior, log_q = mixed([(log_q_c, log_p_c, w[2] / k) for log_q_c, log_p_c, w in parts])
    codes = None
    top = None
    for log_q_c, _, (_, _, _, codes_c, top_c) in parts:
        if top_c is not None:
            top = top_c if top is None else merge_top(top, top_c, len(top_c) - 1)
        if codes_c is not None:
            weighted = log_q_c.exp()[:, None] * codes_c / k
            codes = weighted if codes is None else codes + weighted
    return {"lse": lse, "lse2": lse2, "stderr": stderr, "log_lik": log_lik, "log_prior": log_prior,
            "log_q": log_q, "codes": codes, "top": top}


def importance_stats(
    vae,
    fields: Dict[str, torch.Tensor],
    num_samples: int,
    batch_size: Optional[int] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    progress: bool = False,
    with_codes: bool = False,
    compile: Optional[bool] = None,
    desc: str = "log p(x)",
    with_pareto: bool = False,
    shard: bool = False,
) -> Dict[str, torch.Tensor]:
    """The streaming core behind :func:`log_likelihood` and
    :func:`~pyrovae.infer.evaluate.evaluate`: for each chunk of data points
    (every field of ``fields`` cut with ``x``; checked by
    :func:`~pyrovae.infer.fields.data_fields`), draw the K importance
    samples in chunks, combine them with a streaming logsumexp, and return
    per-point statistics ``(N,)``: ``log_likelihood``, ``stderr``, ``ess``
    and the mean ``log_lik``, ``log_prior`` and ``log_q``; with
    ``with_codes`` also ``codes`` ``(N, L)``, the latent means (None when
    the guide has no continuous latent site); with ``with_pareto`` also
    ``pareto_k`` ``(N,)``, the PSIS k̂ of each point's weights
    (:mod:`pyrovae.infer.psis`; None for K <= 20, too few for a tail fit),
    from the M largest log weights kept per point. Memory depends on
    ``batch_size * chunk_size`` (plus ``N * M`` for k̂), never on K.

    An enumerated site that is a batch field (:func:`~pyrovae.models.base.summed_fields`)
    and that ``fields`` does not give is summed over exactly
    (:mod:`pyrovae.infer.enumerated`): K samples of the other latents for
    each value c, and log p(x) = logsumexp_c [log p̂(x, c)]. The means are
    then weighted by q(c | x), with log p(c) counted in ``log_prior``.

    With ``seed``, each chunk of points draws from its own seed, derived
    from ``seed`` and the chunk's first point (:func:`~pyrovae.infer.sharding.block_seed`;
    the first chunk uses ``seed`` itself), so a point's estimate depends on
    the seed and the chunking, never on which process scores it. With
    ``shard`` under ``torch.distributed`` each process scores its share of
    whole chunks (:mod:`pyrovae.infer.sharding`) and every process returns
    the gathered ``(N,)`` statistics; every process must pass the same data."""
    x = fields["x"]
    n = x.shape[0]
    site = missing_site(vae, fields)
    batch_size, chunk_size = _chunk_sizes(n, num_samples, batch_size, chunk_size)
    particle_chunks = balanced_sizes(num_samples, chunk_size)
    if compile is None:
        compile = n * num_samples >= AUTO_COMPILE_PASSES
    obs_log_prob = LogDensity(bool(compile))
    tail = tail_size(num_samples) if with_pareto else 0
    sizes = balanced_sizes(n, batch_size)  # the chunks, whichever process scores them
    blocks, points = block_shard(sizes) if shard else (slice(None), slice(0, n))
    if shard:
        seed = shared_seed(seed)
    out: Dict[str, List[torch.Tensor]] = {k: [] for k in ("lse", "lse2", "stderr", "log_lik", "log_prior", "log_q",
                                                          "codes", "top")}
    shown = progress and (not shard or rank_and_size()[0] == 0)
    bar = progress_bar((points.stop - points.start) * num_samples, shown, desc)
    device = model_device(vae)  # data on another device are moved a chunk at a time
    try:
        with evaluation_mode(vae, seed, device):
            for start, chunk in chunks({k: v[points] for k, v in fields.items()}, sizes[blocks]):
                if seed is not None:
                    torch.manual_seed(block_seed(seed, points.start + start))
                chunk = {k: v.to(device, non_blocking=True) for k, v in chunk.items()}

                def weights(given):
                    return _chunk_weights(vae, given, particle_chunks, obs_log_prob, with_codes, bar, tail)

                if site is None:
                    zero = chunk["x"].new_zeros(len(chunk["x"]))
                    parts = [(zero, zero, weights(chunk))]
                else:
                    parts = summed_out(vae, chunk, site, weights)
                for key, value in _combine(parts, num_samples).items():
                    if value is not None:
                        out[key].append(value)
    finally:
        if bar is not None:
            bar.close()
    stats = _stats(out, num_samples, with_codes, with_pareto and bool(tail)) if out["lse"] else None
    if shard:
        return gather_point_fields(stats, n, device)
    return stats


def _stats(out: Dict[str, List[torch.Tensor]], num_samples: int, with_codes: bool, with_pareto: bool):
    """The per-point statistics of :func:`importance_stats` from its chunks' parts."""
    lse, lse2 = torch.cat(out["lse"]), torch.cat(out["lse2"])
    stats = {
        "log_likelihood": lse - math.log(num_samples),
        "stderr": torch.cat(out["stderr"]),
        "ess": torch.exp(2 * lse - lse2),
        "log_lik": torch.cat(out["log_lik"]),
        "log_prior": torch.cat(out["log_prior"]),
        "log_q": torch.cat(out["log_q"]),
    }
    if with_codes:
        stats["codes"] = torch.cat(out["codes"]) if out["codes"] else None
    stats["pareto_k"] = pareto_k(torch.cat(out["top"], 1)) if with_pareto else None
    return stats


def log_likelihood(
    vae,
    x: torch.Tensor,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    *,
    batch_size: Optional[int] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    return_stats: bool = False,
    progress: bool = False,
    compile: Optional[bool] = None,
    **fields: torch.Tensor,
):
    """Importance-sampled log-likelihood of each data point, in nats::

        log p(x) ≈ logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K,   z_k ~ q(z | x)

    Built from Pyro traces of ``vae.guide`` and ``vae.model`` (see the
    module notes), so it works for any prior, likelihood and guide and for
    models with several latent sites. The estimate is a stochastic lower
    bound on log p(x) whose expectation rises towards it as K grows; with
    K = 1 it is a single-sample ELBO. (A guide without a density, such as
    the ``delta`` guide of a plain autoencoder, gives log p(x, z) at its
    code instead: not an estimate of log p(x).)

    :param vae: a :class:`~pyrovae.models.vae.VAE`, or any model with Pyro
        ``model(x, ...)`` and ``guide(x, ...)`` that put the data points in
        ``pyro.plate("data")`` (other plates may nest inside it: the particles
        go to the left of every plate, see :mod:`pyrovae.infer.plates`).
    :param torch.Tensor x: data ``(N, *data_shape)``, inside the likelihood's support, on any
        device (each chunk is moved to the model's; the estimates are on the model's device).
    :param fields: the model's other batch fields, each ``(N, ...)`` and
        chunked with ``x``: ``y=labels`` for a model with ``fields = ("x", "y")``.
        With an observed ``y`` the estimate is of log p(x, y).
    :param int num_samples: K >= 1, importance samples per data point.
    :param int batch_size: data points per chunk (default: 20).
    :param int chunk_size: importance samples per chunk; memory grows with
        ``batch_size * chunk_size`` decoder outputs, never with K
        (default: about 4000 / batch_size).
    :param int seed: seed for a forked RNG, so the result is repeatable and
        the global RNG is left as it was (None: draw from the global RNG).
    :param bool return_stats: also return the per-point standard error and
        effective sample size, as an :class:`~pyrovae.infer.loglik.ISResult`.
    :param bool progress: show a progress bar (decoder passes) on stderr.
    :param bool compile: evaluate the observed sites' log-densities through
        ``torch.compile``, which fuses the likelihood's elementwise work
        (the speed-up for the Bernoulli MNIST model is in the README).
        The first call in a process compiles for a few seconds, so the
        default (None) compiles only from N x K >= 10^7 decoder passes.
        Falls back to eager (with a warning) if compilation fails.
    :returns: ``(N,)`` tensor of log p(x) estimates in nats, or an
        :class:`~pyrovae.infer.loglik.ISResult` of ``(N,)`` tensors if ``return_stats``.
    :raises ConfigError: for ``num_samples``, ``batch_size`` or ``chunk_size`` < 1,
        or a field the model does not take (the message lists its fields).
    :raises DataError: for data of the wrong shape, non-finite, or outside the
        likelihood's support, or a missing field the model needs.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 8, 8))
        >>> x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))      # 5 binary 8x8 images
        >>> ll = pyrovae.log_likelihood(vae, x, num_samples=100, seed=0)
        >>> ll.shape                                       # one estimate per point, nats
        torch.Size([5])
        >>> torch.equal(ll, pyrovae.log_likelihood(vae, x, num_samples=100, seed=0))
        True
        >>> stats = pyrovae.log_likelihood(vae, x, 100, seed=0, return_stats=True)
        >>> stats.log_likelihood.shape, stats.stderr.shape, stats.ess.shape
        (torch.Size([5]), torch.Size([5]), torch.Size([5]))
        >>> pyrovae.log_likelihood(vae, x, num_samples=1, seed=0).shape   # K = 1: a one-sample ELBO
        torch.Size([5])

    For a model with more batch fields, pass them by name:
    ``pyrovae.log_likelihood(cvae, x, 1000, y=labels)`` estimates log p(x | y).
    """
    check_num_samples(num_samples)
    data = data_fields(vae, x, fields, "log_likelihood")
    stats = importance_stats(vae, data, num_samples, batch_size, chunk_size, seed, progress, compile=compile)
    if return_stats:
        return ISResult(stats["log_likelihood"], stats["stderr"], stats["ess"])
    return stats["log_likelihood"]


