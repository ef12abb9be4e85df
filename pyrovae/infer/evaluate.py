"""The evaluation report papers give: importance-sampled log-likelihood,
ELBO, reconstruction and KL terms, active units and reconstruction errors,
per data point and as means.

The importance-sampling part lives in :mod:`pyrovae.infer.loglik` (its
names are re-exported here) and the weights in :mod:`pyrovae.infer.weights`.

Example::

    result = pyrovae.evaluate(vae, x_test, 1000)           # or (x, labels), or {"x": x, "y": y}
    print(result.summary()["log_likelihood"], "nats")
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from .fields import accepted_fields, chunk_sizes, chunks, data_fields, split_data
from ..models.base import eval_mode, model_device, summed_fields
from ..models.protocol import capability
from .loglik import (  # noqa: F401  (re-exported: the public names of evaluation)
    ACTIVE_UNIT_THRESHOLD,
    AUTO_COMPILE_PASSES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_PASSES,
    DEFAULT_NUM_SAMPLES,
    ISResult,
    check_num_samples,
    elbo_terms,
    importance_stats,
    log_likelihood,
    log_prob_terms,
)
from .psis import PARETO_K_THRESHOLD, PARETO_K_WARN_SHARE
from .sharding import block_shard, check_same_data, gather_point_fields, rank_and_size, sum_over_ranks

__all__ = [
    "log_prob_terms",
    "elbo_terms",
    "log_likelihood",
    "evaluate",
    "ISResult",
    "Evaluation",
    "Summary",
    "RENAMED_SUMMARY_KEYS",
    "DEFAULT_NUM_SAMPLES",
    "ACTIVE_UNIT_THRESHOLD",
]

#: data points per batch of the reconstruction-error pass
RECONSTRUCTION_BATCH = 500


# -- the whole report ---------------------------------------------------------


#: summary keys renamed so that the ± to quote is plain, old name -> new name
RENAMED_SUMMARY_KEYS = {
    "log_likelihood_stderr": "log_likelihood_mc_error",
    "log_likelihood_sem": "log_likelihood_se_over_points",
}


class Summary(dict):
    """The means of an :class:`Evaluation` (and what ``eval.json`` holds): a
    plain dict, written to JSON as it is, in which the old names of
    ``RENAMED_SUMMARY_KEYS`` still read (with a ``DeprecationWarning``),
    so that code written for them keeps working.

    Example::

        >>> import warnings
        >>> s = Summary({"log_likelihood": -88.0, "log_likelihood_mc_error": 0.02})
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     s["log_likelihood_stderr"]              # the old name of the Monte Carlo error
        0.02
    """

    def __missing__(self, key):
        new = RENAMED_SUMMARY_KEYS.get(key)
        if new is None or not dict.__contains__(self, new):
            raise KeyError(key)
        warnings.warn(f"the evaluation key {key!r} is now {new!r}", DeprecationWarning, stacklevel=2)
        return self[new]

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    @classmethod
    def read(cls, path) -> "Summary":
        """An ``eval.json`` (or any JSON object of summary keys), with the old
        key names of files written before the rename read as the new ones."""
        with open(path) as f:
            record = json.load(f)
        return cls({RENAMED_SUMMARY_KEYS.get(k, k): v for k, v in record.items()})


@dataclass
class Evaluation:
    """What :func:`~pyrovae.evaluate` measured.

    :ivar num_samples: K, importance samples per data point.
    :ivar per_point: ``(N,)`` tensors, log densities in nats:
        ``log_likelihood`` (IS estimate), ``log_likelihood_stderr`` (its
        Monte Carlo standard error), ``ess``, ``pareto_k`` (the PSIS k̂ of
        the point's K importance weights, :mod:`pyrovae.infer.psis`; above
        0.7 the point's IS estimate is unreliable; absent for K <= 20, too
        few weights for a tail fit), ``elbo``, ``reconstruction``
        (E_q[log p(x|z)]), ``kl`` (E_q[log q(z|x) - log p(z)], estimated from
        the same K samples), and for a model with ``reconstruct``: ``mse``
        (mean squared error per data element of the reconstruction at the
        guide's mean code) and, when data and reconstructions lie in [0, 1],
        ``bce`` (binary cross-entropy of that reconstruction, summed over the
        data elements, nats). Without ``reconstruct`` there is no ``mse``/``bce``
        and the summary reports them as None; a model with the
        ``reconstruction_errors`` capability reports its own errors instead
        (text: ``char_error_rate``), whose means the summary adds.
    :ivar extra: more summary entries: ``conditioned_on`` (the fields besides
        x that the log-likelihood conditions on: ``["y"]`` for a cvae),
        ``summed_out`` (enumerated fields summed out: ``["y"]`` for m2); for a
        model with ``metrics``, each metric's rate (Σ sum / Σ count over the
        points) and count under the keys ``metric_keys`` gives (m2's error:
        ``classification_error`` and ``labelled_points``).
    :ivar latent_variance: ``(L,)`` Cov_x(E_q[z_i | x]) of each latent unit
        (the guide's continuous latent sites flattened and concatenated;
        ``(0,)`` when it has none).
    :ivar active_units: units whose variance exceeds ``active_threshold``;
        None when the guide has no continuous latent site.
    :ivar metrics: ``(key, count key, title)`` of each metric in ``extra``
        (see ``metric_keys``), for tables.
    """

    num_samples: int
    per_point: Dict[str, torch.Tensor]
    latent_variance: torch.Tensor
    active_units: Optional[int]
    active_threshold: float = ACTIVE_UNIT_THRESHOLD
    extra: Dict[str, Any] = field(default_factory=dict)
    metrics: List[Tuple[str, str, str]] = field(default_factory=list)

    @property
    def num_points(self) -> int:
        return int(self.per_point["log_likelihood"].shape[0])

    def summary(self) -> Summary:
        """Means over the data points as plain floats (for JSON), plus two
        standard errors of the mean log-likelihood, in nats:

        - ``log_likelihood_se_over_points``: over the data points, std / sqrt(N).
          This is the ± to quote with a test log-likelihood.
        - ``log_likelihood_mc_error``: the Monte Carlo error of the importance-sampling
          estimate, ``sqrt(sum_i se_i^2) / N``. It shrinks as K grows; it tells
          whether K is large enough, not how precise the number is.

        (Their former names, ``log_likelihood_sem`` and ``log_likelihood_stderr``,
        still read: see :class:`Summary`.)

        The IS diagnostics: ``pareto_k_mean`` and ``pareto_k_max`` of the
        per-point k̂ (over the points with a fit) and
        ``share_pareto_k_above_0_7``, the share of all points with k̂ > 0.7;
        each None when K <= 20 gave no k̂."""
        pp = self.per_point
        n = self.num_points
        ll = pp["log_likelihood"]
        se = pp["log_likelihood_stderr"]
        out = Summary({
            "num_points": n,
            "num_samples": self.num_samples,
            "log_likelihood": float(ll.mean()),
            "log_likelihood_se_over_points": float(ll.std() / math.sqrt(n)) if n > 1 else None,
            "log_likelihood_mc_error": float(se.pow(2).sum().sqrt() / n) if self.num_samples > 1 else None,
            "elbo": float(pp["elbo"].mean()),
            "reconstruction": float(pp["reconstruction"].mean()),
            "kl": float(pp["kl"].mean()),
            "ess": float(pp["ess"].mean()),
            **_pareto_summary(pp.get("pareto_k")),
            "active_units": self.active_units,
            "latent_units": int(self.latent_variance.numel()),
            "active_threshold": self.active_threshold,
            "mse": float(pp["mse"].mean()) if "mse" in pp else None,
            "bce": float(pp["bce"].mean()) if "bce" in pp else None,
        })
        own = sorted(k for k in pp if k not in _SUMMARISED)  # a model's own reconstruction errors
        out.update({k: float(pp[k].float().mean()) for k in own})
        if own:
            out["reconstruction_error_names"] = own
        out.update(self.extra)
        return out


#: per-point keys that :meth:`Evaluation.summary` reports under fixed names
_SUMMARISED = ("log_likelihood", "log_likelihood_stderr", "ess", "pareto_k", "elbo", "reconstruction", "kl", "mse",
               "bce")


def _pareto_summary(k: Optional[torch.Tensor]) -> Dict[str, Optional[float]]:
    """``pareto_k_mean``, ``pareto_k_max`` (NaN fits left out) and
    ``share_pareto_k_above_0_7`` of the per-point k̂ ``(N,)``; all None without k̂."""
    keys = ("pareto_k_mean", "pareto_k_max", "share_pareto_k_above_0_7")
    if k is None:
        return dict.fromkeys(keys)
    fitted = k[~k.isnan()]
    stats = (float(fitted.mean()), float(fitted.max())) if len(fitted) else (None, None)
    return dict(zip(keys, (*stats, float((k > PARETO_K_THRESHOLD).double().mean()))))


def _share(fields: Dict[str, torch.Tensor], shard: bool) -> Tuple[Dict[str, torch.Tensor], List[int]]:
    """This process's share of whole ``RECONSTRUCTION_BATCH`` chunks of the
    fields (:func:`~pyrovae.infer.sharding.block_shard`; all of them in one
    process or without ``shard``) and its chunk sizes (empty for a process with no point)."""
    sizes = chunk_sizes(len(fields["x"]), RECONSTRUCTION_BATCH)
    blocks, points = block_shard(sizes) if shard else (slice(None), slice(None))
    return {k: v[points] for k, v in fields.items()}, sizes[blocks]


def _reconstruction_errors(reconstruct, fields: Dict[str, torch.Tensor], sizes: List[int],
                           device: torch.device, errors=None) -> Dict[str, torch.Tensor]:
    """MSE per element and, where data and reconstruction lie in [0, 1], BCE
    summed over elements (nats), of ``reconstruct(x, **fields)`` in chunks of ``sizes`` points; each ``(N,)``.
    A model's ``errors(x, x_rec) -> {name: (B,)}`` (its ``reconstruction_errors``
    capability) replaces both. ``reconstruct`` gets the other fields its
    signature names (a conditional model's ``reconstruct(x, y)``; the VAE's
    takes ``x`` alone). Each chunk is moved to ``device``, the model's."""
    others = accepted_fields(reconstruct, fields)
    x = fields["x"]
    mse, bce, own = [], [], {}
    bce_applies = bool(((x >= 0) & (x <= 1)).all())
    with torch.no_grad():
        for _, chunk in chunks({"x": x, **others}, sizes):
            chunk = {k: v.to(device, non_blocking=True) for k, v in chunk.items()}
            xb = chunk.pop("x")
            rec = reconstruct(xb, **chunk)
            if errors is not None:
                for name, value in errors(xb, rec).items():
                    own.setdefault(name, []).append(value.cpu())
                continue
            diff = (rec - xb).reshape(xb.shape[0], -1)
            mse.append(diff.pow(2).mean(-1))
            if bce_applies and bool(((rec >= 0) & (rec <= 1)).all()):
                eps = torch.finfo(rec.dtype).eps
                r = rec.clamp(eps, 1 - eps).reshape(xb.shape[0], -1)
                t = xb.reshape(xb.shape[0], -1)
                bce.append(-(t * r.log() + (1 - t) * (1 - r).log()).sum(-1))
            else:
                bce_applies = False
    if errors is not None:
        return {name: torch.cat(values) for name, values in own.items()}
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
    shard: bool = True,
    **fields: torch.Tensor,
) -> Evaluation:
    """The metrics papers report, per data point and as means.

    One pass of importance sampling gives the IS log-likelihood, its
    standard error and effective sample size, and (from the same K samples)
    the ELBO, its reconstruction term E_q[log p(x|z)] and its KL term
    E_q[log q(z|x) - log p(z)]. The latent means E_q[z|x] of that pass give
    the active units (Burda et al., 2015: Cov_x(E_q[z_i|x]) > 1e-2), and
    ``vae.reconstruct`` the reconstruction errors (MSE; BCE where data and
    reconstructions lie in [0, 1]). The same pass keeps each point's M
    largest importance weights for its Pareto k̂ (PSIS,
    :mod:`pyrovae.infer.psis`), and warns (``UserWarning``, one line) when
    more than 10% of the points (``PARETO_K_WARN_SHARE``) have k̂ > 0.7:
    their IS estimates are unreliable and ``pyrovae.ais_log_likelihood``
    (annealed importance sampling) is the remedy.

    What a model without the conveniences gets: the latent means come from
    the guide's traces, so every model has active units as long as its
    guide has a continuous latent site (else ``active_units`` is None);
    a model without ``reconstruct`` gets no ``mse``/``bce`` (None in the
    summary), and one with ``reconstruction_errors`` its own errors instead
    (codes have no squared error: text reports ``char_error_rate``). Neither is an error: the log-likelihood needs neither.

    An enumerated site that is a batch field (M2's ``y``) is not conditioned
    on: the log-likelihood is log p(x) = logsumexp_c [log p(c) + log p(x | c)],
    and the given values go to the model's ``metrics`` instead (M2:
    ``classification_error``). A conditional model (``cvae``) needs its
    labels and reports log p(x | y).

    Under ``torchrun`` (``torch.distributed`` with W > 1 processes) each
    process scores its share of whole chunks and every process returns the
    whole :class:`~pyrovae.infer.evaluate.Evaluation`, with the numbers of one process and the same
    seed (:mod:`pyrovae.infer.sharding`); every process must pass the same data.

    :param vae: a :class:`~pyrovae.models.vae.VAE` or any registered model.
    :param data: a tensor ``x`` ``(N, *data_shape)``; an ``(x, labels)``
        pair (the labels become the field ``y`` when the model takes ``y``,
        else they are ignored); or a dict of fields ``{"x": x, "y": labels}``.
    :param int num_samples: K, importance samples per point.
    :param int batch_size: data points per chunk (see :func:`log_likelihood`).
    :param int chunk_size: importance samples per chunk.
    :param int seed: seed of a forked RNG, re-seeded for each chunk of points from ``seed`` and
        the chunk's first point (default 0: repeatable); None uses the global RNG (rank 0's seed under torchrun).
    :param float active_threshold: variance above which a latent unit counts as active.
    :param bool progress: show a progress bar on stderr.
    :param bool compile: ``torch.compile`` the likelihood's log-density (see :func:`log_likelihood`).
    :param bool shard: under ``torch.distributed``, split the points over the processes (default); False
        scores every point in this process alone, for a call that not every process makes.
    :param fields: further fields as keywords, e.g. ``y=labels`` (each ``(N, ...)``).
    :returns: an :class:`~pyrovae.infer.evaluate.Evaluation`; ``.summary()`` gives the means.
    :raises ConfigError, DataError: as :func:`~pyrovae.log_likelihood`.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 8, 8))
        >>> x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))      # 5 binary 8x8 images
        >>> ev = pyrovae.evaluate(vae, x, num_samples=50)
        >>> ev.per_point["log_likelihood"].shape, ev.per_point["elbo"].shape
        (torch.Size([5]), torch.Size([5]))
        >>> summary = ev.summary()                          # means over the points
        >>> summary["num_points"], summary["num_samples"], summary["latent_units"]
        (5, 50, 2)
        >>> summary["log_likelihood"] >= summary["elbo"]
        True
        >>> ev.per_point["pareto_k"].shape                 # PSIS k̂ of each point's weights (an untrained
        torch.Size([5])
        >>> 0 <= summary["share_pareto_k_above_0_7"] <= 1  # model's are heavy-tailed: evaluate warns)
        True
    """
    check_num_samples(num_samples)
    batch = split_data(vae, data, fields, "evaluate")
    x = batch.pop("x", None)
    fields = data_fields(vae, x, batch, "evaluate")
    if shard:
        check_same_data(fields, "evaluate")
    extra, metrics = _metrics(vae, fields, shard)  # on every given field, the summed-out ones included
    for k in summed_fields(vae):  # summed out for log p(x), not conditioned on
        fields.pop(k, None)
    extra.update(conditioned_on=sorted(k for k in fields if k != "x"), summed_out=sorted(summed_fields(vae)))
    stats = importance_stats(vae, fields, num_samples, batch_size, chunk_size, seed, progress, with_codes=True,
                             compile=compile, with_pareto=True, shard=shard)
    recon = stats["log_lik"]
    kl = stats["log_q"] - stats["log_prior"]
    codes = stats["codes"]  # gathered: the statistics below are over all points
    variance = codes.var(0, correction=0) if codes is not None else recon.new_zeros(0)
    per_point = {
        "log_likelihood": stats["log_likelihood"],
        "log_likelihood_stderr": stats["stderr"],
        "ess": stats["ess"],
        "elbo": recon - kl,
        "reconstruction": recon,
        "kl": kl,
    }
    if stats["pareto_k"] is not None:
        per_point["pareto_k"] = stats["pareto_k"]
        if not shard or rank_and_size()[0] == 0:
            _warn_pareto(stats["pareto_k"], num_samples)
    reconstruct = getattr(vae, "reconstruct", None)
    if reconstruct is not None:
        errors = capability(vae, "reconstruction_errors", "evaluation", default=None)
        device = model_device(vae)
        share, sizes = _share(fields, shard)
        with eval_mode(vae):
            own = _reconstruction_errors(reconstruct, share, sizes, device, errors) if sizes else None
        per_point.update(gather_point_fields(own, len(fields["x"]), device) if shard else own)
    return Evaluation(
        num_samples=num_samples,
        per_point=per_point,
        latent_variance=variance,
        active_units=int((variance > active_threshold).sum()) if codes is not None else None,
        active_threshold=active_threshold,
        extra=extra,
        metrics=metrics,
    )


def _warn_pareto(k: torch.Tensor, num_samples: int) -> None:
    """One-line ``UserWarning`` when the share of points with k̂ > 0.7 exceeds ``PARETO_K_WARN_SHARE``."""
    share = float((k > PARETO_K_THRESHOLD).double().mean())
    if share > PARETO_K_WARN_SHARE:
        warnings.warn(
            f"{share:.0%} of the {len(k)} points have Pareto k > {PARETO_K_THRESHOLD} (PSIS): their importance-sampling "
            f"log-likelihood (K={num_samples}) is unreliable; estimate it with pyrovae.ais_log_likelihood (AIS)",
            UserWarning, stacklevel=3)


def metric_keys(model, name: str):
    """``(key, count key, title)`` of the metric ``name`` in an evaluation:
    the model's ``metric_names`` entry, else ``(name, name + "_points", name)``.

    Example::

        metric_keys(model, "error")   # model.metric_names["error"], else ("error", "error_points", "error")
    """
    names = capability(model, "metric_names", "evaluation", default={})
    return tuple(names.get(name, (name, f"{name}_points", name.replace("_", " "))))


def _metrics(vae, fields: Dict[str, torch.Tensor], shard: bool) -> Tuple[Dict[str, Any], List[Tuple[str, str, str]]]:
    """Each of the model's ``metrics`` over ``fields`` (chunked, on the
    model's device; each process its share, the sums added): its rate Σ sum / Σ count and its count, under
    ``metric_keys`` (a metric with count 0 is left out), and those keys."""
    metrics = capability(vae, "metrics", "evaluation", default=None)
    if metrics is None:
        return {}, []
    device = model_device(vae)
    totals: Dict[str, list] = {}
    share, sizes = _share(fields, shard)
    with eval_mode(vae), torch.no_grad():
        for _, chunk in chunks(share, sizes):
            for name, (value, count) in metrics({k: v.to(device) for k, v in chunk.items()}).items():
                sums = totals.setdefault(name, [0.0, 0.0])
                sums[0] += float(value)
                sums[1] += float(count)
    totals = sum_over_ranks(totals) if shard else totals
    out: Dict[str, Any] = {}
    keys = [(metric_keys(vae, name), value, count) for name, (value, count) in totals.items() if count > 0]
    for (key, count_key, _), value, count in keys:
        out.update({key: value / count, count_key: int(count)})
    return out, [k for k, _, _ in keys]
