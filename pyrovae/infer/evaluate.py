"""Evaluation built on Pyro traces: importance-sampled log-likelihoods,
ELBO terms, active units and reconstruction errors, per data point.

Everything here works from the traces of ``vae.guide`` and ``vae.model``:
the guide is traced inside ``pyro.plate("particles", K, dim=-2)``, the
model is replayed on that trace, and each sample site's ``log_prob`` is
summed over everything except the (particle, data) dimensions. So it holds
unchanged for every registered prior, likelihood and guide (also those a
user registers from outside the package) and for models with several
latent sites. The evaluator contains no per-component code.

Which site goes where in the log importance weight
``log w = log p(x, z) - log q(z | x)``:

- observed sites of the model: ``log p(x | z)`` (the reconstruction term);
- latent sites of the model that the guide samples: ``log p(z)``;
- latent sites of the guide: ``log q(z | x)``;
- latent sites of the model that the guide does *not* sample are drawn
  from the model itself when it is replayed; their densities cancel in
  the weight and are left out.

All log densities are in nats. Shapes: ``N`` data points, ``K`` importance
samples (particles), ``B`` data points per chunk.

.. note:: Pyro's ``vectorized_importance_weights`` sums over the data plate
   as well, so it cannot give a log-likelihood for each data point; that is
   why the weights are assembled here from the traces.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError, DataError

__all__ = [
    "log_prob_terms",
    "elbo_terms",
    "log_likelihood",
    "evaluate",
    "ISResult",
    "Evaluation",
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
#: setting measured by experiments/bench_loglik.py --sweep on 2 CPU cores)
DEFAULT_CHUNK_PASSES = 4000
#: data points per chunk by default
DEFAULT_BATCH_SIZE = 20
#: with ``compile=None`` the likelihood's log-density is compiled from this
#: many decoder passes (N x K) on: about a minute of eager work, so the few
#: seconds of compilation pay for themselves
AUTO_COMPILE_PASSES = 10_000_000
#: data points per batch of the reconstruction-error pass
RECONSTRUCTION_BATCH = 500


# -- traces -------------------------------------------------------------------


def _traces(vae, x: torch.Tensor, num_particles: int, model_kwargs: Dict[str, Any]):
    """Guide traced in a particles plate (dim -2), model replayed on it."""
    with pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x, **model_kwargs)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, **model_kwargs)
    return guide_trace, model_trace


def _is_random(site) -> bool:
    """A sample site with a density: not a plate's subsample site, not ``pyro.deterministic``."""
    return (
        site["type"] == "sample"
        and not site_is_subsample(site)
        and not site["infer"].get("_deterministic", False)
    )


def _log_prob(fn, value):
    return fn.log_prob(value)


class _LogProb:
    """``fn.log_prob(value)``, optionally through ``torch.compile``, which
    fuses a likelihood's elementwise work (for the Bernoulli: log-sigmoid,
    multiply, subtract, negate and sum in one pass). If compilation fails
    (no C++ compiler, an unsupported distribution) it warns once and
    falls back to eager."""

    _compiled = None  # one compiled wrapper per process: its cache holds one entry per shape

    def __init__(self, compile: bool):
        self.compile = compile

    def __call__(self, fn, value):
        if self.compile:
            if _LogProb._compiled is None:
                _LogProb._compiled = torch.compile(_log_prob, dynamic=False)
            try:
                return _LogProb._compiled(fn, value)
            except Exception as e:  # compilation can fail in many ways; eager always works
                warnings.warn(f"torch.compile of the log-densities failed, evaluating eagerly: {type(e).__name__}: {e}")
                self.compile = False
        return fn.log_prob(value)


_EAGER = _LogProb(False)


def _site_log_prob(site, log_prob=_EAGER) -> torch.Tensor:
    """``log_prob`` of a sample site (masked as the site says), summed over
    everything but the leading (particle, data) dims: ``(K, B)``, or
    broadcastable to it for a site outside the data plate. Scales (beta,
    mini-batch scaling) are not applied: these are plain log densities."""
    log_p = log_prob(site["fn"], site["value"])
    mask = site["mask"]
    if mask is not None:
        if isinstance(mask, bool):
            log_p = log_p if mask else torch.zeros_like(log_p)
        else:
            log_p = torch.where(mask, log_p, log_p.new_zeros(()))
    if log_p.dim() > 2:
        log_p = log_p.sum(tuple(range(2, log_p.dim())))
    return log_p


def _weight_sites(guide_trace, model_trace) -> Tuple[List[dict], List[dict], List[dict]]:
    """(observed model sites, latent model sites the guide samples, latent guide sites)."""
    guide_latents = [s for s in guide_trace.nodes.values() if _is_random(s) and not s["is_observed"]]
    guide_names = {s["name"] for s in guide_latents}
    observed, prior = [], []
    for site in model_trace.nodes.values():
        if not _is_random(site):
            continue
        if site["is_observed"]:
            observed.append(site)
        elif site["name"] in guide_names:
            prior.append(site)
        # else: drawn from the model itself on replay; cancels in the weight
    missing = guide_names - {s["name"] for s in prior}
    if missing:
        raise ConfigError(
            f"the guide samples {sorted(missing)}, which the model has no latent site for; "
            "importance weights need a guide over the model's latent sites only (rename the "
            "guide's sites to match the model's, or drop the auxiliary ones)"
        )
    return observed, prior, guide_latents


def _sum_log_probs(sites, like: torch.Tensor, log_prob=_EAGER) -> torch.Tensor:
    total = torch.zeros_like(like)
    for site in sites:
        total = total + _site_log_prob(site, log_prob)
    return total


def log_prob_terms(vae, x: torch.Tensor, num_particles: int = 1, **model_kwargs) -> Dict[str, torch.Tensor]:
    """Trace the guide inside a particles plate, replay the model on it, and
    return per-particle, per-data-point log densities in nats, each ``(K, B)``
    for ``x`` of shape ``(B, *data_shape)`` and ``K = num_particles``:

    - ``log_lik``: observed sites, log p(x | z)
    - ``log_prior``: latent sites of the model that the guide samples, log p(z)
    - ``log_q``: latent sites of the guide, log q(z | x)

    ``log_lik + log_prior - log_q`` are the log importance weights.
    Gradients flow (no ``no_grad`` here); extra keyword arguments go to
    ``vae.model`` and ``vae.guide``.
    """
    guide_trace, model_trace = _traces(vae, x, num_particles, model_kwargs)
    observed, prior, latents = _weight_sites(guide_trace, model_trace)
    zeros = x.new_zeros(num_particles, x.shape[0])
    return {
        "log_lik": _sum_log_probs(observed, zeros),
        "log_prior": _sum_log_probs(prior, zeros),
        "log_q": _sum_log_probs(latents, zeros),
    }


@torch.no_grad()
def elbo_terms(vae, x: torch.Tensor, num_particles: int = 1, **fields: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-data-point ELBO and its parts, each ``(B,)``, in nats:
    ``elbo = reconstruction - kl``, averaged over ``num_particles`` draws
    (``kl`` is the Monte Carlo estimate E_q[log q(z|x) - log p(z)]).
    ``fields`` are the batch's other fields (labels ``y``, ...), passed to the
    model and guide with ``x``."""
    t = log_prob_terms(vae, x, num_particles, **fields)
    recon = t["log_lik"].mean(0)
    kl = (t["log_q"] - t["log_prior"]).mean(0)
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
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}; {hint}")
    return value


def _check_input(vae, x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"data must be a torch.Tensor of shape (N, *data_shape), got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(f"data must hold at least one point, shape (N, *data_shape); got shape {tuple(x.shape)}")
    check = getattr(vae, "check_data", None)
    if check is not None:
        check(x, "data")  # shape, finiteness and the likelihood's support
    elif not bool(torch.isfinite(x).all()):
        raise DataError("data holds NaN/inf values; clean or drop those points")


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
def _evaluation_mode(vae, seed: Optional[int], device: torch.device):
    """eval() mode, no autograd, Pyro validation off (the data was checked
    once up front), no ``pyro.module`` registration (nothing is trained
    here; see :meth:`VAE.direct_parameters`), and a forked, seeded RNG when
    ``seed`` is given."""
    was_training = getattr(vae, "training", False)
    if hasattr(vae, "eval"):
        vae.eval()
    fork = contextlib.nullcontext()
    if seed is not None:
        devices = [device.index or 0] if device.type == "cuda" else []
        fork = torch.random.fork_rng(devices=devices)
    direct = getattr(vae, "direct_parameters", None)
    unregistered = direct() if direct is not None else contextlib.nullcontext()
    try:
        with fork, unregistered, torch.no_grad(), pyro.validation_enabled(False):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        if was_training:
            vae.train()


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pass", unit_scale=True, desc=desc, file=sys.stderr, dynamic_ncols=True)


def _latent_means(sites) -> torch.Tensor:
    """Per particle, the guide's mean of each latent site where it has one
    in closed form (else the drawn value), flattened and concatenated:
    ``(K, B, total latent size)``. For a hierarchical guide this is a
    Rao-Blackwellized draw of E_q[z | x]."""
    parts = []
    for site in sites:
        try:
            m = site["fn"].mean
        except NotImplementedError:
            m = site["value"]
        m = torch.broadcast_to(m, site["value"].shape)
        parts.append(m.reshape(*m.shape[:2], -1))
    return torch.cat(parts, -1)


def _balanced(total: int, size: int) -> List[int]:
    """Split ``total`` into the fewest parts of at most ``size``, as equal as
    possible (fewer distinct shapes: fewer torch.compile specializations)."""
    parts = -(-total // size)
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def _importance_stats(
    vae,
    x: torch.Tensor,
    num_samples: int,
    batch_size: Optional[int],
    chunk_size: Optional[int],
    seed: Optional[int],
    progress: bool,
    with_codes: bool,
    compile: Optional[bool] = None,
    desc: str = "log p(x)",
) -> Dict[str, torch.Tensor]:
    """The streaming core: for each data chunk, draw the K importance samples
    in chunks, combine them with a streaming logsumexp, and return per-point
    statistics ``(N,)`` (and the latent means ``(N, L)`` if ``with_codes``).
    Memory depends on ``batch_size * chunk_size``, never on K."""
    _check_int("num_samples", num_samples, 1, "use at least one importance sample (5000 is the literature setting)")
    _check_input(vae, x)
    n = x.shape[0]
    batch_size, chunk_size = _chunk_sizes(n, num_samples, batch_size, chunk_size)
    particle_chunks = _balanced(num_samples, chunk_size)
    if compile is None:
        compile = n * num_samples >= AUTO_COMPILE_PASSES
    obs_log_prob = _LogProb(bool(compile))
    out: Dict[str, List[torch.Tensor]] = {k: [] for k in ("lse", "lse2", "log_lik", "log_prior", "log_q", "codes")}
    bar = _progress(n * num_samples, progress, desc)
    try:
        with _evaluation_mode(vae, seed, x.device):
            start = 0
            for b in _balanced(n, batch_size):
                xb = x[start : start + b]
                start += b
                lse = xb.new_full((b,), -math.inf)
                lse2 = xb.new_full((b,), -math.inf)
                sums = xb.new_zeros(3, b)
                codes = None
                for k in particle_chunks:
                    guide_trace, model_trace = _traces(vae, xb, k, {})
                    observed, prior, latents = _weight_sites(guide_trace, model_trace)
                    zeros = xb.new_zeros(k, b)
                    log_lik = _sum_log_probs(observed, zeros, obs_log_prob)
                    log_prior = _sum_log_probs(prior, zeros)
                    log_q = _sum_log_probs(latents, zeros)
                    log_w = log_lik + log_prior - log_q
                    lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
                    lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
                    sums += torch.stack([log_lik.sum(0), log_prior.sum(0), log_q.sum(0)])
                    if with_codes and latents:
                        c = _latent_means(latents).sum(0)
                        codes = c if codes is None else codes + c
                    if bar is not None:
                        bar.update(k * b)
                out["lse"].append(lse)
                out["lse2"].append(lse2)
                for i, key in enumerate(("log_lik", "log_prior", "log_q")):
                    out[key].append(sums[i] / num_samples)
                if with_codes:
                    out["codes"].append(codes / num_samples if codes is not None else xb.new_zeros(b, 0))
    finally:
        if bar is not None:
            bar.close()
    lse, lse2 = torch.cat(out["lse"]), torch.cat(out["lse2"])
    k = num_samples
    ess = torch.exp(2 * lse - lse2)
    if k > 1:
        stderr = ((k / ess - 1) / (k - 1)).clamp(min=0).sqrt()
    else:
        stderr = torch.full_like(lse, math.nan)
    stats = {
        "log_likelihood": lse - math.log(k),
        "stderr": stderr,
        "ess": ess,
        "log_lik": torch.cat(out["log_lik"]),
        "log_prior": torch.cat(out["log_prior"]),
        "log_q": torch.cat(out["log_q"]),
    }
    if with_codes:
        stats["codes"] = torch.cat(out["codes"])
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

    :param vae: a :class:`~pyrovae.model.VAE`, or any object with Pyro
        ``model(x)`` and ``guide(x)`` that use ``pyro.plate("data", dim=-1)``.
    :param torch.Tensor x: data ``(N, *data_shape)``, inside the likelihood's support.
    :param int num_samples: K >= 1, importance samples per data point.
    :param int batch_size: data points per chunk (default: 20).
    :param int chunk_size: importance samples per chunk; memory grows with
        ``batch_size * chunk_size`` decoder outputs, never with K
        (default: about 4000 / batch_size).
    :param int seed: seed for a forked RNG, so the result is repeatable and
        the global RNG is left as it was (None: draw from the global RNG).
    :param bool return_stats: also return the per-point standard error and
        effective sample size, as an :class:`ISResult`.
    :param bool progress: show a progress bar (decoder passes) on stderr.
    :param bool compile: evaluate the observed sites' log-densities through
        ``torch.compile``, which fuses the likelihood's elementwise work
        (about 1.35x faster for the Bernoulli MNIST model on 2 CPU cores).
        The first call in a process compiles for a few seconds, so the
        default (None) compiles only from N x K >= 10^7 decoder passes.
        Falls back to eager (with a warning) if compilation fails.
    :returns: ``(N,)`` tensor of log p(x) estimates in nats, or an
        :class:`ISResult` of ``(N,)`` tensors if ``return_stats``.
    :raises ConfigError: for ``num_samples``, ``batch_size`` or ``chunk_size`` < 1.
    :raises DataError: for data of the wrong shape, non-finite, or outside the
        likelihood's support.

    Example::

        ll = pyrovae.log_likelihood(vae, x_test, num_samples=5000, seed=0)
        print(f"{ll.mean():.2f} nats")
    """
    stats = _importance_stats(vae, x, num_samples, batch_size, chunk_size, seed, progress, with_codes=False, compile=compile)
    if return_stats:
        return ISResult(stats["log_likelihood"], stats["stderr"], stats["ess"])
    return stats["log_likelihood"]


# -- the whole report ---------------------------------------------------------


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    :ivar num_samples: K, importance samples per data point.
    :ivar per_point: ``(N,)`` tensors, log densities in nats:
        ``log_likelihood`` (IS estimate), ``log_likelihood_stderr`` (its
        Monte Carlo standard error), ``ess``, ``elbo``, ``reconstruction``
        (E_q[log p(x|z)]), ``kl`` (E_q[log q(z|x) - log p(z)], estimated from
        the same K samples), ``mse`` (mean squared error per data element of
        the reconstruction at the guide's mean code) and, when data and
        reconstructions lie in [0, 1], ``bce`` (binary cross-entropy of that
        reconstruction, summed over the data elements, nats).
    :ivar latent_variance: ``(L,)`` Cov_x(E_q[z_i | x]) of each latent unit
        (all latent sites flattened and concatenated).
    :ivar active_units: units whose variance exceeds ``active_threshold``.
    """

    num_samples: int
    per_point: Dict[str, torch.Tensor]
    latent_variance: torch.Tensor
    active_units: int
    active_threshold: float = ACTIVE_UNIT_THRESHOLD
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.per_point["log_likelihood"].shape[0])

    def summary(self) -> Dict[str, Any]:
        """Means over the data points as plain floats (for JSON), plus:
        ``log_likelihood_stderr``, the Monte Carlo standard error of the mean
        log-likelihood, ``sqrt(sum_i se_i^2) / N``; ``log_likelihood_sem``, the
        standard error of that mean over the data points (std / sqrt(N)),
        which is what a ± over a test set usually reports."""
        pp = self.per_point
        n = self.num_points
        ll = pp["log_likelihood"]
        se = pp["log_likelihood_stderr"]
        out: Dict[str, Any] = {
            "num_points": n,
            "num_samples": self.num_samples,
            "log_likelihood": float(ll.mean()),
            "log_likelihood_stderr": float(se.pow(2).sum().sqrt() / n) if self.num_samples > 1 else None,
            "log_likelihood_sem": float(ll.std() / math.sqrt(n)) if n > 1 else None,
            "elbo": float(pp["elbo"].mean()),
            "reconstruction": float(pp["reconstruction"].mean()),
            "kl": float(pp["kl"].mean()),
            "ess": float(pp["ess"].mean()),
            "active_units": self.active_units,
            "latent_units": int(self.latent_variance.numel()),
            "active_threshold": self.active_threshold,
            "mse": float(pp["mse"].mean()),
            "bce": float(pp["bce"].mean()) if "bce" in pp else None,
        }
        out.update(self.extra)
        return out


def _reconstruction_errors(vae, x: torch.Tensor, batch_size: int) -> Dict[str, torch.Tensor]:
    """MSE per element and, where data and reconstruction lie in [0, 1], BCE
    summed over elements (nats), of ``vae.reconstruct(x)``; each ``(N,)``."""
    mse, bce = [], []
    bce_applies = bool(((x >= 0) & (x <= 1)).all())
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            rec = vae.reconstruct(xb)
            diff = (rec - xb).reshape(xb.shape[0], -1)
            mse.append(diff.pow(2).mean(-1))
            if bce_applies and bool(((rec >= 0) & (rec <= 1)).all()):
                eps = torch.finfo(rec.dtype).eps
                r = rec.clamp(eps, 1 - eps).reshape(xb.shape[0], -1)
                t = xb.reshape(xb.shape[0], -1)
                bce.append(-(t * r.log() + (1 - t) * (1 - r).log()).sum(-1))
            else:
                bce_applies = False
    out = {"mse": torch.cat(mse)}
    if bce_applies:
        out["bce"] = torch.cat(bce)
    return out


def evaluate(
    vae,
    data,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    *,
    batch_size: Optional[int] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = 0,
    active_threshold: float = ACTIVE_UNIT_THRESHOLD,
    progress: bool = False,
    compile: Optional[bool] = None,
) -> Evaluation:
    """The metrics papers report, per data point and as means.

    One pass of importance sampling gives the IS log-likelihood, its
    standard error and effective sample size, and (from the same K samples)
    the ELBO, its reconstruction term E_q[log p(x|z)] and its KL term
    E_q[log q(z|x) - log p(z)]. The latent means E_q[z|x] of that pass give
    the active units (Burda et al., 2015: Cov_x(E_q[z_i|x]) > 1e-2), and
    ``vae.reconstruct`` the reconstruction errors (MSE; BCE where data and
    reconstructions lie in [0, 1]).

    :param vae: a :class:`~pyrovae.model.VAE`.
    :param data: a tensor ``(N, *data_shape)`` or an ``(x, labels)`` pair.
    :param int num_samples: K, importance samples per point.
    :param int batch_size: data points per chunk (see :func:`log_likelihood`).
    :param int chunk_size: importance samples per chunk.
    :param int seed: seed of a forked RNG (default 0: repeatable); None uses the global RNG.
    :param float active_threshold: variance above which a latent unit counts as active.
    :param bool progress: show a progress bar on stderr.
    :param bool compile: ``torch.compile`` the likelihood's log-density (see :func:`log_likelihood`).
    :returns: an :class:`Evaluation`; ``.summary()`` gives the means.
    :raises ConfigError, DataError: as :func:`log_likelihood`.
    """
    x = data[0] if isinstance(data, (tuple, list)) else data
    stats = _importance_stats(vae, x, num_samples, batch_size, chunk_size, seed, progress, with_codes=True, compile=compile)
    recon = stats["log_lik"]
    kl = stats["log_q"] - stats["log_prior"]
    codes = stats["codes"]
    variance = codes.var(0, correction=0) if codes.shape[1] else codes.new_zeros(0)
    per_point = {
        "log_likelihood": stats["log_likelihood"],
        "log_likelihood_stderr": stats["stderr"],
        "ess": stats["ess"],
        "elbo": recon - kl,
        "reconstruction": recon,
        "kl": kl,
    }
    was_training = vae.training
    vae.eval()
    try:
        per_point.update(_reconstruction_errors(vae, x, RECONSTRUCTION_BATCH))
    finally:
        vae.train(was_training)
    return Evaluation(
        num_samples=num_samples,
        per_point=per_point,
        latent_variance=variance,
        active_units=int((variance > active_threshold).sum()),
        active_threshold=active_threshold,
    )
