"""Validation during training: the mean negative ELBO, its reconstruction
and KL terms per validation point, and the model's own metrics.

Each rank scores its share of the validation set
(:meth:`~pyrovae.training.strategy.Strategy.shard`) in chunks of
``train.eval_batch_size``; the totals are summed over the ranks. An
enumerated site that is also a batch field (``summed_fields``)
is summed out, as in evaluation, not observed. A model with the ``metrics``
capability adds ``val_<name>`` = Σ sum / Σ count over every chunk and rank
(left out where the count is 0).

A model that takes the field ``index`` has a guide local to its training
points (free parameters per point): it has nothing to say about points
it was not trained on, so it gets no validation (one line says so).

Example::

    record = validate(trainer)   # {"val_loss": ..., "val_reconstruction": ..., "val_kl": ..., "val_error": ...}
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from ..infer.fields import chunk_sizes, chunks
from ..infer.loglik import elbo_terms
from ..models.base import eval_mode, model_fields, summed_fields
from ..models.protocol import capability

__all__ = ["validation_shard", "validate", "LOCAL_GUIDE_FIELD"]

#: the batch field of a model whose guide is local to its training points
LOCAL_GUIDE_FIELD = "index"


def validation_shard(trainer, fields: Optional[Dict[str, torch.Tensor]]) -> Optional[Dict[str, torch.Tensor]]:
    """This rank's part of the validation ``fields`` (all of them with one
    process) on the trainer's device; None without a validation set, or for
    a model whose guide is local to its training points (logged once)."""
    if fields is None:
        return None
    if LOCAL_GUIDE_FIELD in model_fields(trainer.vae):
        trainer.progress.log(f"no validation: the model takes {LOCAL_GUIDE_FIELD!r}, so its guide is local to "
                             "the training points and cannot score other points")
        return None
    return trainer.strategy.shard({k: v.to(trainer.device) for k, v in fields.items()})


def validate(trainer) -> Dict[str, float]:
    """Mean negative ELBO (beta = 1), reconstruction and KL per validation
    point, in nats, and the model's metrics, over ``trainer.val_batch``."""
    batch = trainer.val_batch
    if batch is None:
        return {}
    vae = trainer.vae
    summed = summed_fields(vae)
    metrics = capability(vae, "metrics", "validation", default=None)
    totals = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
    extra: Dict[str, list] = {}
    n = len(batch["x"])
    with eval_mode(vae):
        for _, chunk in chunks(batch, chunk_sizes(n, trainer.cfg.train.eval_batch_size)):
            terms = elbo_terms(vae, **{k: v for k, v in chunk.items() if k not in summed})
            for k in totals:
                totals[k] += float(terms[k].sum())
            for name, (value, count) in (metrics(chunk) if metrics is not None else {}).items():
                sums = extra.setdefault(name, [0.0, 0.0])
                sums[0] += float(value)
                sums[1] += float(count)
        if n == 0 and metrics is not None:  # an empty share still names the metrics the ranks sum
            extra = {name: [0.0, 0.0] for name in metrics(batch)}
    names = sorted(extra)
    flat = [v for name in names for v in extra[name]]
    *sums, n = trainer.strategy.sum(list(totals.values()) + flat + [n])  # each rank scored its share
    elbo, reconstruction, kl = sums[:3]
    record = {"val_loss": -elbo / n, "val_reconstruction": -reconstruction / n, "val_kl": kl / n}
    for i, name in enumerate(names):
        value, count = sums[3 + 2 * i], sums[4 + 2 * i]
        if count > 0:
            record[f"val_{name}"] = value / count
    return record
