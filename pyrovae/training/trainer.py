"""The SVI training loop.

:func:`train` fits a model (a :class:`~pyrovae.models.vae.VAE` or any
registered model) with a Pyro ELBO, one torch optimizer over all of the
model's parameters, an optional learning-rate schedule, KL weighting and
warm-up, validation every epoch, early stopping, atomic checkpoints,
``metrics.jsonl`` and exact resume.

The :class:`Trainer` delegates three jobs:

- how the step is spread over processes, and every reduction, rank check
  and barrier: a strategy (:mod:`pyrovae.training.strategy`; under
  ``torchrun`` data-parallel, else one process, with nothing of
  ``torch.distributed`` on the per-step path);
- capturing and restoring the checkpoint state:
  :mod:`pyrovae.training.checkpoint`;
- what is reported besides the metrics file: the callbacks the caller
  hands in (:mod:`pyrovae.training.callbacks`).

Non-finite losses, gradients and weights are caught as
:mod:`pyrovae.training.nonfinite` describes.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

import pyro

from . import checkpoint, checks, nonfinite
from ..config import load_config
from ..data import Batches, Splits, binarizes_dynamically, label_fields
from ..errors import CheckpointError, DataError
from ..data.batches import BatchNeeds
from ..models.base import check_model, model_fields, select_fields
from ..models.signatures import takes_keyword
from ..models.protocol import capability
from ..infer.objectives import build_objective
from . import validation
from .callbacks import Progress, callbacks_from_config
from .checkpoint import TrainState
from .optim import kl_schedules, optimizers, schedules
from .precision import Precision
from .determinism import deterministic_kernels
from .strategy import Strategy, canonical_device, from_environment, resolve_device
from ..checkpoint_file import load_checkpoint, save_checkpoint
from ..rundir import RunDir

__all__ = ["train", "Trainer", "TrainState", "resolve_device", "torch_threads"]


@contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """torch's CPU threads set to ``count`` (``train.threads``) inside the
    block and restored after it, so that training leaves the caller's setting
    as it was; None leaves torch's setting alone.

    Example::

        with torch_threads(1):
            trainer.fit()
    """
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_splits(data) -> Splits:
    if isinstance(data, Splits):
        return data
    if isinstance(data, torch.Tensor):
        empty = data[:0]
        return Splits(train=(data, torch.full((len(data),), -1)), test=(empty, torch.zeros(0, dtype=torch.long)))
    raise DataError(f"train() takes a Splits or a tensor of data, got {type(data).__name__}")


class Trainer:
    """Trains ``vae`` on ``data`` as ``cfg.train`` says, writing into ``run_dir``.

    :param vae: the model; moved to the configured device.
    :param data: a :class:`~pyrovae.data.splits.Splits` (validation from ``data.val``)
        or a tensor ``(N, *data_shape)`` of training data.
    :param cfg: the whole :class:`~pyrovae.config.Config` (or anything
        :func:`~pyrovae.load_config` takes).
    :param run_dir: where to write checkpoints and metrics (None: nowhere).
    :param bool dynamic_binarize: resample binary data every batch.
    :param list callbacks: objects with ``on_epoch_end(trainer, record)`` and
        ``on_train_end(trainer)``, called on every rank (see
        :mod:`pyrovae.training.callbacks`; :func:`~pyrovae.training.callbacks.callbacks_from_config`
        builds the ones the config names). A callback ends training early
        with :meth:`request_stop`.
    :param strategy: a :class:`~pyrovae.training.strategy.Strategy`; default:
        data-parallel under torchrun, else one process.

    :func:`pyrovae.train` builds one with the config's callbacks and calls
    :meth:`fit`; build it yourself to pass your own callbacks.

    Example::

        >>> import torch, pyrovae
        >>> x = torch.bernoulli(torch.full((200, 1, 8, 8), 0.3))    # training data, no validation set
        >>> cfg = pyrovae.load_config({"model": {"latent_dim": 2},
        ...                            "train": {"epochs": 3, "progress": False, "device": "cpu"}})
        >>> class StopAtTwo:                       # a callback
        ...     def on_epoch_end(self, trainer, record):
        ...         if record["epoch"] == 2:
        ...             trainer.request_stop("enough")
        ...     def on_train_end(self, trainer):
        ...         pass
        >>> vae = pyrovae.VAE.from_config(cfg, data_shape=(1, 8, 8))
        >>> history = pyrovae.Trainer(vae, x, cfg, callbacks=[StopAtTwo()]).fit()
        >>> [record["epoch"] for record in history], "val_loss" in history[-1]
        ([1, 2], False)
    """

    def __init__(self, vae, data, cfg=None, run_dir=None, dynamic_binarize=None, callbacks=None,
                 strategy: Optional[Strategy] = None):
        self.cfg = load_config(cfg)
        tc = self.cfg.train
        self.strategy = strategy if strategy is not None else from_environment()
        self.splits = _as_splits(data)
        self.device = canonical_device(self.strategy.device(tc.device))  # a strategy may name it either way
        self.vae = vae.to(self.device)
        self.precision = Precision(tc.precision, self.vae, self.device)  # bf16 refused, before any file is made, where it does not pay
        if dynamic_binarize is None:
            dynamic_binarize = binarizes_dynamically(self.cfg.data) and isinstance(data, Splits)
        self.dynamic_binarize = dynamic_binarize
        # the main rank alone writes; the others know the path only for messages
        self.run_path = run_dir
        self.run = RunDir(run_dir) if run_dir is not None and self.strategy.is_main else None
        if run_dir is not None:  # made now, not at the first checkpoint an epoch later (every rank waits)
            self.strategy.on_main(lambda: self.run.make())
        self.progress = Progress(self.strategy.is_main, tc.epochs, bar=bool(tc.progress))
        checks.check_data(self)
        x_train = self.splits.train[0]
        mapped = self.splits.mapped is not None
        if not mapped:
            x_train = x_train.to(self.device)
        self.batches = Batches(
            x_train, tc.batch_size, shuffle=True, dynamic_binarize=dynamic_binarize, seed=tc.seed,
            rank=self.strategy.rank, world_size=self.strategy.world_size,
            noise_seed=self.strategy.noise_seed(tc.seed), device=self.device,
            reader=self.splits.row_reader(x_train) if mapped else None,
            fields=self._extra_fields(self.splits.train), needs=self._batch_needs(),
            with_index=validation.LOCAL_GUIDE_FIELD in model_fields(self.vae),
            num_data=len(x_train) if takes_keyword(self.vae, "num_data") else None,
        )
        # a missing field fails here; a model indexing its training points gets their number too
        probe = {**select_fields(self.vae, self._probe_batch(), "the training data"), **self.batches.controls}
        check_model(self.vae, tc, probe)  # beta reaches the model; it broadcasts over particles
        self.val_batch = validation.validation_shard(
            self, None if self.splits.val is None else {"x": self.splits.val[0], **self._extra_fields(self.splits.val)})
        # the model's own objective, else TraceEnum_ELBO for enumerated sites, else the configured one
        train_fields = {"x": self.batches.x, **self.batches.fields}
        self.objective = build_objective(tc.objective, self.vae, probe=probe, train_fields=train_fields)
        self.params = [p for p in self.vae.parameters() if p.requires_grad]
        self.optimizer = optimizers.build(tc.optimizer, params=self.params)
        checks.check_hyperparameters(self.optimizer, self.params)
        self.scheduler = schedules.build(tc.lr_schedule, optimizer=self.optimizer, epochs=tc.epochs)
        self.kl_weight = kl_schedules.build(tc.kl_schedule, beta=tc.beta, steps_per_epoch=len(self.batches))
        self.state = TrainState()
        self.stop_reason: Optional[str] = None  # set by request_stop() or early stopping
        self.callbacks = list(callbacks or [])
        self._grad_norm = nonfinite.grad_norm_check(tc, self.params)
        self._guard = nonfinite.NonfiniteGuard(self.vae, self.params, self.optimizer, tc.skip_nonfinite, run_dir is not None)
        self.strategy.setup(self.vae, self.objective, self.params, probe, self._betas, tc.seed)

    def _betas(self) -> List[float]:
        """The KL weights of the run that matter for which parameters get a
        gradient: 1, and 0 if some step has weight 0 (a masked latent site)."""
        total_steps = self.cfg.train.epochs * len(self.batches)
        return [1.0] + ([0.0] if any(self.kl_weight(s) == 0 for s in range(min(total_steps, 10**6))) else [])

    def _step(self, fields: Dict[str, torch.Tensor], beta: float) -> float:
        """Forward and backward on one batch's fields; the loss summed over
        every rank's batch, in nats (see :meth:`Strategy.step`). For tests
        and benchmarks; the epoch loop calls the strategy directly."""
        return self.strategy.step(fields, beta)

    def _extra_fields(self, pair) -> Dict[str, torch.Tensor]:
        """The per-point fields of a split's ``(x, labels)`` pair besides ``x``
        that the model takes (labels as ``y``), on the training device."""
        fields = label_fields(*pair, model_fields(self.vae))
        return {k: v.to(self.device) for k, v in fields.items() if k != "x"}

    def _batch_needs(self) -> Optional[BatchNeeds]:
        """What the model asks every batch to carry (its ``batch_needs``), or None."""
        needs = capability(self.vae, "batch_needs", "training", default=None)
        return needs(self.cfg.train) if needs is not None else None

    def _probe_batch(self) -> Dict[str, torch.Tensor]:
        """Two training points with every field, for checks before training."""
        x = self.splits.train[0]
        probe = {"x": x[:2].to(self.device), **{k: v[:2] for k, v in self._extra_fields(self.splits.train).items()}}
        if self.batches.with_index:
            probe[validation.LOCAL_GUIDE_FIELD] = torch.arange(min(2, len(x)), device=self.device)
        return probe

    # -- epochs ------------------------------------------------------------
    def validate(self) -> Dict[str, float]:
        """Mean negative ELBO (beta = 1), reconstruction and KL per validation
        point, in nats, and ``val_<name>`` for each of the model's metrics
        (:func:`pyrovae.training.validation.validate`)."""
        return validation.validate(self)

    def request_stop(self, reason: str) -> None:
        """Stop after the current epoch (its checkpoint is written first).

        For callbacks: a time budget, a target metric, a user's own rule. In a
        data-parallel run the ranks stop together once any of them asks.
        """
        self.stop_reason = str(reason)

    def fit(self, max_epochs: Optional[int] = None) -> List[Dict[str, Any]]:
        """Train until ``train.epochs``, early stopping or :meth:`request_stop`;
        returns the metrics history.

        :param int max_epochs: stop once this many epochs in all are done
            (``state.epoch``), sooner than ``train.epochs``. Schedules keep
            following ``train.epochs``, so a later ``fit()`` carries on the
            same run as if it had never paused.
        """
        tc = self.cfg.train
        st = self.state
        self.stop_reason = None
        until = tc.epochs if max_epochs is None else min(int(max_epochs), tc.epochs)
        # on or off as the config says, whatever the global setting (restored afterwards)
        validation = pyro.validation_enabled(bool(tc.validate_model))
        try:
            with validation, torch_threads(tc.threads), deterministic_kernels(tc.deterministic):
                self._fit_epochs(until)
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self)
        return st.history

    def _fit_epochs(self, until: int) -> None:
        """Epochs until epoch ``until``, early stopping or a stop request."""
        tc = self.cfg.train
        st = self.state
        while st.epoch < until:
            record = self._train_epoch()
            self._guard.check_parameters(st.epoch, st.step)
            record.update(self.validate())
            record["seconds"] = time.perf_counter() - record.pop("_start")
            st.history.append(record)
            improved = record.get("val_loss", -math.inf) < st.best_val
            if "val_loss" in record:
                st.best_val = min(st.best_val, record["val_loss"])
                st.bad_epochs = 0 if improved else st.bad_epochs + 1
            self._save(record, improved)
            self.progress.report(record)
            for callback in self.callbacks:
                callback.on_epoch_end(self, record)
            if tc.patience is not None and st.bad_epochs >= tc.patience:
                self.stop_reason = "early_stopping"
                self.progress.log(f"early stopping: no better validation loss for {tc.patience} epochs")
                break
            if self._stop_requested():
                self.progress.log(f"stopped after epoch {st.epoch}: {self.stop_reason}")
                break

    def _stop_requested(self) -> bool:
        """Whether any rank's callbacks asked to stop (ranks must agree, or they hang)."""
        asked = self.strategy.sum([float(self.stop_reason is not None)], device=self.device)[0] > 0
        if asked and self.stop_reason is None:
            self.stop_reason = "another rank asked to stop"
        return asked

    def _train_epoch(self) -> Dict[str, Any]:
        st = self.state
        start = time.perf_counter()
        self.vae.train()
        bar = self.progress.bar(st.epoch + 1, self.batches.points_per_epoch)
        with self.precision:  # the steps' products in bf16 under precision: bf16; validation stays fp32
            total, count, skipped, beta = self._train_steps(bar)
        if bar is not None:
            bar.close()
        count = int(self.strategy.sum([count])[0])  # the loss is summed over ranks already; the count is not
        self.scheduler.step()
        st.epoch += 1
        record = {"epoch": st.epoch, "step": st.step, "train_loss": total / max(count, 1), "beta": beta, "lr": self.optimizer.param_groups[0]["lr"], "_start": start}
        if skipped:
            record["skipped_batches"] = skipped
        return record

    def _train_steps(self, bar) -> Tuple[float, int, int, float]:
        """One pass over the batches: ``(loss summed, points, skipped batches, last beta)``."""
        st = self.state
        world = self.strategy.world_size  # the step's loss is summed over the ranks' batches
        total, count, skipped, beta = 0.0, 0, 0, self.kl_weight(st.step)
        step = self.strategy.step
        for i, batch in enumerate(self.batches):
            beta = self.kl_weight(st.step)
            x = batch["x"]
            # batches hold just the fields the model takes (checked once in the constructor)
            loss = step(batch, beta)
            norm = self._grad_norm()
            if not (math.isfinite(loss) and math.isfinite(norm)):
                error = self._guard.diverged(*(("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)), st.epoch, st.step, i)
                if error is not None:
                    raise error
                skipped += 1
                continue
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            st.step += 1
            total += loss
            count += self.batches.points(batch)
            if bar is not None:
                bar.update(len(x))
                if i % 25 == 0:
                    bar.set_postfix(loss=f"{total / (count * world):.2f}", refresh=False)
        return total, count, skipped, beta

    # -- checkpoints -----------------------------------------------------
    def _parts(self) -> checkpoint.CheckpointParts:
        return checkpoint.CheckpointParts(self.state, self.vae, self.optimizer, self.scheduler, self.batches, self.cfg,
                                          self.splits.train[0].shape[1:], self.strategy.rank, self.strategy.world_size)

    def state_dict(self, ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        """Everything a checkpoint holds, from each part's ``state_dict()``
        (:mod:`pyrovae.training.checkpoint`); ``ranks``: every rank's random state."""
        return self._parts().state_dict(ranks)

    def load_state_dict(self, state: Dict[str, Any], path="checkpoint") -> None:
        """Restore a :meth:`state_dict` into each part; a :class:`~pyrovae.CheckpointError` when it was
        written for other data, another model config, or another optimizer or schedule."""
        self._parts().load_state_dict(state, path)

    def _save(self, record, improved: bool) -> None:
        """The main rank writes ``best.pt`` (if improved), then
        ``checkpoint.pt``, then the metrics line; every rank waits for it and
        sees its errors. ``best.pt`` goes first: a crash between the two files
        then leaves a checkpoint whose epoch is redone on resume, rewriting
        the same best."""
        ranks = self.strategy.gather(self._parts().rank_rng())

        def write():
            if self.run is None:
                return
            state = self.state_dict(ranks)
            if improved:  # best.pt first, as the docstring says
                save_checkpoint(state, self.run.best, self.run.checkpoint)
            else:
                save_checkpoint(state, self.run.checkpoint)
            self.run.append_metrics(record)

        self.strategy.on_main(write)

    def resume(self) -> None:
        """Continue from the run directory's last complete checkpoint
        (read by the main rank and shared with the others)."""
        if self.run_path is None:
            raise CheckpointError("resume() needs the trainer's run_dir")

        def read():
            self.run.remove_stale_temp_files()
            return load_checkpoint(self.run.checkpoint, map_location="cpu")

        state = self.strategy.on_main(read)
        self.load_state_dict(state, RunDir(self.run_path).checkpoint)
        # the checkpoint's history is the record: a metrics line lost to a
        # crash after the checkpoint was written comes back, later ones go
        self.strategy.on_main(lambda: self.run.write_metrics(self.state.history))

def train(vae, data, cfg=None, run_dir=None, resume: bool = False) -> List[Dict[str, Any]]:
    """Fit ``vae`` to ``data`` with SVI; see :class:`~pyrovae.Trainer`. Returns the
    per-epoch metrics (``train_loss``, ``val_loss``, ... in nats per point).
    Writes into ``run_dir`` (when given) the resolved config (``config.yaml``,
    so that :func:`~pyrovae.load_run` can rebuild the model), the
    checkpoints, the metrics and what the config's callbacks write
    (:func:`~pyrovae.training.callbacks.callbacks_from_config`).

    :param data: a :class:`~pyrovae.data.splits.Splits` (from
        :func:`~pyrovae.load_data`) or a tensor ``(N, *data_shape)``.

    Example::

        >>> import pyrovae
        >>> cfg = pyrovae.load_config({
        ...     "data": {"name": "synthetic", "val_size": 100, "options": {"num_points": 300}},
        ...     "model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [16]},
        ...               "decoder": {"name": "mlp", "hidden": [16]}},
        ...     "train": {"epochs": 2, "progress": False, "device": "cpu"}})
        >>> splits = pyrovae.load_data(cfg.data)          # 1x8x8 images
        >>> vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
        >>> history = pyrovae.train(vae, splits, cfg)
        >>> len(history), sorted(history[-1])[:5]
        (2, ['beta', 'epoch', 'lr', 'seconds', 'step'])
    """
    cfg = load_config(cfg)
    strategy = from_environment()
    callbacks = callbacks_from_config(cfg, run_dir, is_main=strategy.is_main)
    trainer = Trainer(vae, data, cfg, run_dir, callbacks=callbacks, strategy=strategy)
    if trainer.run is not None and not trainer.run.config.exists():
        trainer.run.write_config(cfg)
    if resume:
        trainer.resume()
    return trainer.fit()
