"""The SVI training loop.

:func:`train` fits a :class:`~pyrovae.model.VAE` with a Pyro ELBO, one torch
optimizer over all of the model's parameters, an optional learning-rate
schedule, KL weighting and warm-up, validation every epoch, early stopping,
atomic checkpoints, ``metrics.jsonl`` and exact resume.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

import pyro

from .config import Config, load_config
from .data import Batches, Splits
from .errors import DataError, TrainingDiverged
from .evaluate import elbo_terms
from .optim import kl_schedules, objectives, optimizers, schedules
from .runs import RunDir, load_checkpoint, load_model_state, save_checkpoint

__all__ = ["train", "Trainer", "resolve_device"]


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"train.device={spec!r} but no CUDA device is available; use auto or cpu")
    return torch.device(spec)


def _as_splits(data) -> Splits:
    if isinstance(data, Splits):
        return data
    if isinstance(data, torch.Tensor):
        empty = data[:0]
        return Splits(train=(data, torch.full((len(data),), -1)), test=(empty, torch.zeros(0, dtype=torch.long)))
    raise DataError(f"train() takes a Splits or a tensor of data, got {type(data).__name__}")


@dataclass
class TrainState:
    """What a checkpoint records besides the weights."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    best_val: float = math.inf
    bad_epochs: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains ``vae`` on ``data`` as ``cfg.train`` says, writing into ``run_dir``.

    :param vae: the model; moved to the configured device.
    :param data: a :class:`~pyrovae.data.Splits` (validation from ``data.val``)
        or a tensor ``(N, *data_shape)`` of training data.
    :param cfg: the whole :class:`~pyrovae.config.Config` (or anything
        :func:`~pyrovae.config.load_config` takes).
    :param run_dir: where to write config, checkpoints and metrics (None: nowhere).
    :param bool dynamic_binarize: resample binary data every batch.
    """

    def __init__(self, vae, data, cfg=None, run_dir=None, dynamic_binarize=None):
        self.cfg = load_config(cfg)
        tc = self.cfg.train
        self.splits = _as_splits(data)
        self.device = resolve_device(tc.device)
        self.vae = vae.to(self.device)
        if dynamic_binarize is None:
            dynamic_binarize = self.cfg.data.binarize == "dynamic" and isinstance(data, Splits)
        self.dynamic_binarize = dynamic_binarize
        self.run = RunDir(run_dir) if run_dir is not None else None
        self._check_data()
        x_train = self.splits.train[0].to(self.device)
        self.batches = Batches(x_train, tc.batch_size, shuffle=True, dynamic_binarize=dynamic_binarize, seed=tc.seed)
        self.val_x = self.splits.val[0].to(self.device) if self.splits.val is not None else None
        self.objective = objectives.build(tc.objective)
        self.params = [p for p in self.vae.parameters() if p.requires_grad]
        self.optimizer = optimizers.build(tc.optimizer, params=self.params)
        self.scheduler = schedules.build(tc.lr_schedule, optimizer=self.optimizer, epochs=tc.epochs)
        self.kl_weight = kl_schedules.build(tc.kl_schedule, beta=tc.beta, steps_per_epoch=len(self.batches))
        self.state = TrainState()

    # -- checks --------------------------------------------------------------
    def _check_data(self):
        x = self.splits.train[0]
        if len(x) == 0:
            raise DataError("the training set is empty")
        if self.cfg.train.batch_size > len(x):
            warnings.warn(
                f"train.batch_size={self.cfg.train.batch_size} exceeds the {len(x)} training points; "
                "every step uses the whole set"
            )
        sample = x[: self.cfg.train.batch_size]
        if self.dynamic_binarize:
            self.vae.check_data(x[:0], "training data")  # shape only
            sample = torch.bernoulli(sample.clamp(0, 1))
        self.vae.check_data(sample, "training data")
        if self.splits.val is not None:
            self.vae.check_data(self.splits.val[0], "validation data")

    # -- one step --------------------------------------------------------
    def _step(self, x: torch.Tensor, beta: float) -> float:
        """Forward and backward; returns the loss (negative ELBO summed over the batch)."""
        if hasattr(self.objective, "differentiable_loss"):
            # the optimizer holds vae.parameters() itself: skip pyro.module
            with self.vae.direct_parameters():
                loss = self.objective.differentiable_loss(self.vae.model, self.vae.guide, x, beta=beta)
            loss.backward()
            return loss.item()
        # objectives without a differentiable loss (RenyiELBO) do their own
        # backward over the parameters they find registered in the traces
        return self.objective.loss_and_grads(self.vae.model, self.vae.guide, x, beta=beta)

    def _grad_norm(self) -> float:
        """Clip gradients to ``train.grad_clip``; returns their norm (0 when not clipping:
        a non-finite gradient then shows up as a non-finite loss one step later)."""
        clip = self.cfg.train.grad_clip
        if clip is None:
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(self.params, clip))

    # -- epochs ------------------------------------------------------------
    def validate(self) -> Dict[str, float]:
        """Mean negative ELBO (beta = 1), reconstruction and KL per validation point, in nats."""
        if self.val_x is None:
            return {}
        self.vae.eval()
        totals = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
        for start in range(0, len(self.val_x), self.cfg.train.eval_batch_size):
            terms = elbo_terms(self.vae, self.val_x[start : start + self.cfg.train.eval_batch_size])
            for k in totals:
                totals[k] += float(terms[k].sum())
        n = len(self.val_x)
        self.vae.train()
        return {"val_loss": -totals["elbo"] / n, "val_reconstruction": -totals["reconstruction"] / n, "val_kl": totals["kl"] / n}

    def fit(self) -> List[Dict[str, Any]]:
        """Train until ``train.epochs`` or early stopping; returns the metrics history."""
        tc = self.cfg.train
        st = self.state
        validation = contextlib.nullcontext() if tc.validate_model else pyro.validation_enabled(False)
        with validation:
            while st.epoch < tc.epochs:
                record = self._train_epoch()
                record.update(self.validate())
                record["seconds"] = time.perf_counter() - record.pop("_start")
                st.history.append(record)
                improved = record.get("val_loss", -math.inf) < st.best_val
                if "val_loss" in record:
                    st.best_val = min(st.best_val, record["val_loss"])
                    st.bad_epochs = 0 if improved else st.bad_epochs + 1
                self._save(record, improved)
                self._report(record)
                if tc.patience is not None and st.bad_epochs >= tc.patience:
                    self._log(f"early stopping: no better validation loss for {tc.patience} epochs")
                    break
        return st.history

    def _train_epoch(self) -> Dict[str, Any]:
        tc = self.cfg.train
        st = self.state
        start = time.perf_counter()
        self.vae.train()
        total, count, skipped = 0.0, 0, 0
        bar = self._progress_bar()
        for i, x in enumerate(self.batches):
            beta = self.kl_weight(st.step)
            loss = self._step(x, beta)
            norm = self._grad_norm()
            if not (math.isfinite(loss) and math.isfinite(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                where = f"epoch {st.epoch + 1}, step {i + 1} (global step {st.step + 1})"
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                if tc.skip_nonfinite:
                    warnings.warn(f"non-finite {what} at {where}; skipped that batch")
                    skipped += 1
                    continue
                raise TrainingDiverged(
                    f"the {what} became {loss if what == 'loss' else norm} at {where}. "
                    + ("The last good checkpoint is kept. " if self.run else "")
                    + "Lower train.optimizer.lr, set train.grad_clip, or set train.skip_nonfinite: true.",
                    epoch=st.epoch + 1,
                    step=i + 1,
                )
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            st.step += 1
            total += loss
            count += len(x)
            if bar is not None:
                bar.update(len(x))
                if i % 25 == 0:
                    bar.set_postfix(loss=f"{total / count:.2f}", refresh=False)
        if bar is not None:
            bar.close()
        self.scheduler.step()
        st.epoch += 1
        record = {"epoch": st.epoch, "step": st.step, "train_loss": total / max(count, 1), "beta": beta, "lr": self.optimizer.param_groups[0]["lr"], "_start": start}
        if skipped:
            record["skipped_batches"] = skipped
        return record

    def _progress_bar(self):
        if not self.cfg.train.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=len(self.batches.x),
            desc=f"epoch {self.state.epoch + 1}/{self.cfg.train.epochs}",
            unit="pt",
            unit_scale=True,
            leave=False,
            dynamic_ncols=True,
        )

    def _log(self, message: str) -> None:
        if self.cfg.train.progress:
            from tqdm.auto import tqdm

            tqdm.write(message)

    def _report(self, r: Dict[str, Any]) -> None:
        val = f"  val {r['val_loss']:.3f} (rec {r['val_reconstruction']:.2f}, kl {r['val_kl']:.2f})" if "val_loss" in r else ""
        self._log(f"epoch {r['epoch']:>3}  train {r['train_loss']:.3f}{val}  {r['seconds']:.1f}s")

    # -- checkpoints -----------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        st = self.state
        return {
            "epoch": st.epoch,
            "step": st.step,
            "best_val": st.best_val,
            "bad_epochs": st.bad_epochs,
            "history": st.history,
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "param_store": {
                k: v.detach().cpu()
                for k, v in pyro.get_param_store().items()
                if k.startswith(self.vae.pyro_name + ".")
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "batches": self.batches.generator.get_state(),
            },
            "config": self.cfg.to_dict(),
            "data_shape": list(self.vae.data_shape),
        }

    def load_state_dict(self, state: Dict[str, Any], path="checkpoint") -> None:
        load_model_state(self.vae, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.batches.generator.set_state(rng["batches"])
        self.state = TrainState(state["epoch"], state["step"], state["best_val"], state["bad_epochs"], list(state["history"]))

    def _save(self, record, improved: bool) -> None:
        if self.run is None:
            return
        state = self.state_dict()
        save_checkpoint(state, self.run.checkpoint)
        if improved:
            save_checkpoint(state, self.run.best)
        self.run.append_metrics(record)

    def resume(self) -> None:
        """Continue from the run directory's last complete checkpoint."""
        state = load_checkpoint(self.run.checkpoint, map_location=self.device)
        self.load_state_dict(state, self.run.checkpoint)
        self.run.truncate_metrics(self.state.epoch)


def train(vae, data, cfg=None, run_dir=None, resume: bool = False) -> List[Dict[str, Any]]:
    """Fit ``vae`` to ``data`` with SVI; see :class:`Trainer`. Returns the
    per-epoch metrics (``train_loss``, ``val_loss``, ... in nats per point)."""
    trainer = Trainer(vae, data, cfg, run_dir)
    if resume:
        trainer.resume()
    return trainer.fit()
