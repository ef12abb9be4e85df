"""The SVI training loop.

:func:`train` fits a :class:`~pyrovae.model.VAE` with a Pyro ELBO, one torch
optimizer over all of the model's parameters, an optional learning-rate
schedule, KL weighting and warm-up, validation every epoch, early stopping,
atomic checkpoints, ``metrics.jsonl`` and exact resume.

Under ``torchrun`` the same trainer runs data-parallel (see
:mod:`pyrovae.distributed`); with one process none of that code is on the
per-step path.

Non-finite values: the loss of every step is checked (it is read anyway).
Gradients are checked through their norm when ``train.grad_clip`` or
``train.skip_nonfinite`` is set; otherwise a non-finite gradient shows up as
a non-finite loss one step later (the message then says so), and the
parameters are checked once per epoch before a checkpoint is written, so a
checkpoint never holds NaN weights.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

import pyro

from . import distributed
from ..config import load_config
from ..data import Batches, Splits, check_finite
from ..errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from ..infer.evaluate import elbo_terms
from ..models.base import model_fields, select_fields, unregistered
from ..infer.objectives import objectives
from .optim import kl_schedules, optimizers, schedules
from ..runs import RunDir, load_checkpoint, load_model_state, save_checkpoint

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


def _total_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all ``grads`` together (a 0-dim tensor; 0 for none)."""
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


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
    :param list callbacks: objects with ``on_epoch_end(trainer, record)`` and
        ``on_train_end(trainer)``, called on every rank (the TensorBoard and
        per-epoch figure callbacks that the config adds run on rank 0 only).
        A callback ends training early with :meth:`request_stop`.
    """

    def __init__(self, vae, data, cfg=None, run_dir=None, dynamic_binarize=None, callbacks=None):
        self.cfg = load_config(cfg)
        tc = self.cfg.train
        self.dist = distributed.init()
        self.splits = _as_splits(data)
        self.device = resolve_device(tc.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank % torch.cuda.device_count())
        self.vae = vae.to(self.device)
        if dynamic_binarize is None:
            dynamic_binarize = self.cfg.data.binarize == "dynamic" and isinstance(data, Splits)
        self.dynamic_binarize = dynamic_binarize
        # rank 0 alone writes; the others know the path only for messages
        self.run_path = run_dir
        self.run = RunDir(run_dir) if run_dir is not None and self.dist.is_main else None
        self._check_data()
        x_train, y_train = self.splits.train
        mapped = self.splits.mapped is not None
        if not mapped:
            x_train = x_train.to(self.device)
        self.batches = Batches(
            x_train, tc.batch_size, shuffle=True, dynamic_binarize=dynamic_binarize, seed=tc.seed,
            rank=self.dist.rank, world_size=self.dist.world_size,
            noise_seed=distributed.rank_seed(tc.seed, self.dist.rank), device=self.device,
            reader=self.splits.row_reader(x_train) if mapped else None,
            fields=self._extra_fields(y_train),
        )
        select_fields(self.vae, self._probe_batch(), "the training data")  # a missing field fails here
        self.val_batch = self._val_shard()
        self.objective = objectives.build(tc.objective)
        self.params = [p for p in self.vae.parameters() if p.requires_grad]
        self.optimizer = optimizers.build(tc.optimizer, params=self.params)
        self._check_hyperparameters()
        self.scheduler = schedules.build(tc.lr_schedule, optimizer=self.optimizer, epochs=tc.epochs)
        self.kl_weight = kl_schedules.build(tc.kl_schedule, beta=tc.beta, steps_per_epoch=len(self.batches))
        self.state = TrainState()
        self.stop_reason: Optional[str] = None  # set by request_stop() or early stopping
        self.callbacks = list(callbacks or [])
        if tc.sample_every and self.run is not None:
            from ..report.figures import EpochFigures

            self.callbacks.append(EpochFigures(self.run.path, tc.sample_every))
        if tc.tensorboard and self.run is not None:
            from ..report.tensorboard import TensorBoardCallback

            self.callbacks.append(TensorBoardCallback(self.run.path / "tensorboard", image_every=tc.sample_every or 5))
        self._grad_norm = self._pick_grad_norm()
        self.ddp = None
        if self.dist.enabled:
            self._setup_data_parallel()

    def _setup_data_parallel(self) -> None:
        """Wrap the loss in DDP (which makes every rank's weights rank 0's),
        give this rank its own noise, and route steps through :meth:`_dist_step`."""
        if hasattr(self.objective, "differentiable_loss"):
            total_steps = self.cfg.train.epochs * len(self.batches)
            betas = [1.0] + ([0.0] if any(self.kl_weight(s) == 0 for s in range(min(total_steps, 10**6))) else [])
            probe = select_fields(self.vae, self._probe_batch())
            unused = distributed.unused_parameters(self.vae, self.objective, probe, betas)
            self.ddp = distributed.wrap(self.vae, self.objective, self.device, find_unused=bool(unused))
        else:  # no differentiable loss to wrap: start from rank 0's weights, sum gradients by hand
            with torch.no_grad():
                for t in list(self.vae.parameters()) + list(self.vae.buffers()):
                    torch.distributed.broadcast(t, src=0)
        if not self.dist.is_main:
            torch.manual_seed(distributed.rank_seed(self.cfg.train.seed, self.dist.rank))
        self._step = self._dist_step

    def _extra_fields(self, labels) -> Dict[str, torch.Tensor]:
        """The per-point fields besides ``x`` that the model takes: labels as ``y``."""
        fields = {"y": labels} if labels is not None and "y" in model_fields(self.vae) else {}
        return {k: v.to(self.device) for k, v in fields.items()}

    def _probe_batch(self) -> Dict[str, torch.Tensor]:
        """Two training points with every field, for checks before training."""
        x, y = self.splits.train
        return {"x": x[:2].to(self.device), **{k: v[:2] for k, v in self._extra_fields(y).items()}}

    def _val_shard(self) -> Optional[Dict[str, torch.Tensor]]:
        """This rank's part of the validation set (all of it with one process), as batch fields."""
        if self.splits.val is None:
            return None
        x, y = self.splits.val
        fields = {"x": x.to(self.device), **self._extra_fields(y)}
        if self.dist.enabled:
            fields = {k: torch.tensor_split(v, self.dist.world_size)[self.dist.rank] for k, v in fields.items()}
        return fields

    # -- checks --------------------------------------------------------------
    def _check_data(self):
        x = self.splits.train[0]
        if len(x) == 0:
            raise DataError("the training set is empty")
        dtype = next((p.dtype for p in self.vae.parameters()), torch.get_default_dtype())
        for what, t in (("training data", x), ("validation data", self.splits.val[0] if self.splits.val else None)):
            if t is not None and t.dtype != dtype:
                raise DataError(f"the {what} has dtype {t.dtype} but the model computes in {dtype}; convert it, e.g. x.to({dtype})")
        world = self.dist.world_size
        if world > 1 and self.cfg.train.batch_size < world:
            raise ConfigError(
                f"train.batch_size={self.cfg.train.batch_size} is the global batch and is smaller than the "
                f"{world} processes; set it to at least {world}"
            )
        if world > 1 and len(x) < world:
            raise DataError(f"{len(x)} training points cannot be shared by {world} processes")
        if self.cfg.train.batch_size > len(x):
            warnings.warn(
                f"train.batch_size={self.cfg.train.batch_size} exceeds the {len(x)} training points; "
                "every step uses the whole set"
            )
        # all of the data when it is in memory (one cheap pass: a NaN or an
        # out-of-support value further down must not surface later as a
        # diverged loss, or not at all); mapped data, checked for NaN by
        # load_data already, only through its first batch
        sample = x[: self.cfg.train.batch_size] if self.splits.mapped is not None else x
        if self.dynamic_binarize:
            self.vae.check_data(x[:0], "training data")  # shape only
            check_finite(sample, "training data")
            sample = torch.bernoulli(sample.clamp(0, 1))
        self.vae.check_data(sample, "training data")
        if self.splits.val is not None:
            self.vae.check_data(self.splits.val[0], "validation data")

    def _check_hyperparameters(self) -> None:
        """Optimizer settings must fit the parameters' dtype (an lr of 1e300
        would otherwise fail inside the optimizer's step)."""
        if not self.params:
            return
        largest = torch.finfo(self.params[0].dtype).max
        for group in self.optimizer.param_groups:
            for key, value in group.items():
                for v in value if isinstance(value, (tuple, list)) and key != "params" else [value]:
                    if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= largest):
                        raise ConfigError(
                            f"train.optimizer.{key}={value} does not fit in {self.params[0].dtype} "
                            f"(largest {largest:.3g}); choose a smaller value"
                        )

    # -- one step --------------------------------------------------------
    def _step(self, fields: Dict[str, torch.Tensor], beta: float) -> float:
        """Forward and backward on one batch's fields (the keyword arguments of
        the model and guide); returns the loss (negative ELBO summed over the batch)."""
        if hasattr(self.objective, "differentiable_loss"):
            # the optimizer holds vae.parameters() itself: skip pyro.module
            with unregistered(self.vae):
                loss = self.objective.differentiable_loss(self.vae.model, self.vae.guide, **fields, beta=beta)
            loss.backward()
            return loss.item()
        # objectives without a differentiable loss (RenyiELBO) do their own
        # backward over the parameters they find registered in the traces
        return self.objective.loss_and_grads(self.vae.model, self.vae.guide, **fields, beta=beta)

    def _dist_step(self, fields: Dict[str, torch.Tensor], beta: float) -> float:
        """:meth:`_step` of a data-parallel run: returns the loss summed over
        all ranks' batches (the same number on every rank)."""
        world = self.dist.world_size
        if self.ddp is not None:
            loss = self.ddp(beta=beta, **fields)
            (loss * world).backward()  # DDP averages: the gradient of the global sum
            local = float(loss.detach())
        else:
            local = self.objective.loss_and_grads(self.vae.model, self.vae.guide, **fields, beta=beta)
            distributed.all_reduce_grads(self.params)
        return distributed.all_reduce_sum([local])[0]

    def _pick_grad_norm(self):
        """The per-step gradient check, chosen once: clip to ``train.grad_clip``
        and return the norm; or, with ``skip_nonfinite``, only the norm (to skip
        a batch whose gradient is not finite); otherwise a constant 0 (a
        non-finite gradient then shows up as a non-finite loss one step later)."""
        clip = self.cfg.train.grad_clip
        params = self.params
        if clip is not None:

            def clip_norm() -> float:
                grads = [p.grad for p in params if p.grad is not None]
                norm = float(_total_norm(grads))
                if norm > clip and math.isfinite(norm):  # non-finite: left as is, to name the culprit
                    torch._foreach_mul_(grads, clip / (norm + 1e-6))
                return norm

            return clip_norm
        if self.cfg.train.skip_nonfinite:
            return lambda: float(_total_norm([p.grad for p in params if p.grad is not None]))
        return lambda: 0.0

    def _nonfinite(self, grads: bool = False) -> List[str]:
        """Names of parameters (or of their gradients) that hold NaN/inf.
        Only called once something went wrong."""
        bad = []
        for name, p in self.vae.named_parameters():
            t = p.grad if grads else p
            if t is not None and not bool(torch.isfinite(t).all()):
                bad.append(name)
        return bad

    def _diverged(self, what: str, value: float, i: int) -> Optional[TrainingDiverged]:
        """The error for a non-finite ``what`` at step ``i`` of this epoch, or
        None when the batch may be skipped."""
        st, tc = self.state, self.cfg.train
        where = f"epoch {st.epoch + 1}, step {i + 1} (global step {st.step + 1})"
        detail = ""
        broken = self._nonfinite()
        if broken:
            detail = (
                f" The parameters were already non-finite ({', '.join(broken[:3])}"
                f"{', ...' if len(broken) > 3 else ''}): the gradient or update of the step before "
                f"(global step {st.step}) was not finite although its loss was."
            )
        elif what == "gradient norm":
            names = self._nonfinite(grads=True)
            if names:
                detail = f" First non-finite gradient: {names[0]}."
        self.optimizer.zero_grad(set_to_none=True)
        if tc.skip_nonfinite and not broken:
            warnings.warn(f"non-finite {what} at {where}; skipped that batch")
            return None
        kept = "The last good checkpoint is kept. " if self.run_path is not None else ""
        return TrainingDiverged(
            f"the {what} became {value} at {where}.{detail} {kept}"
            "Lower train.optimizer.lr, set train.grad_clip, or set train.skip_nonfinite: true.",
            epoch=st.epoch + 1,
            step=i + 1,
        )

    def _check_parameters(self) -> None:
        """Once per epoch, before a checkpoint: the weights must be finite
        (they are not when the last step's gradient was not)."""
        if bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            return
        st = self.state
        raise TrainingDiverged(
            f"the parameters ({', '.join(self._nonfinite()[:3])}) became non-finite at the last step of "
            f"epoch {st.epoch} (global step {st.step}): its loss was finite but its gradient or update was not. "
            + ("The last good checkpoint is kept. " if self.run_path is not None else "")
            + "Lower train.optimizer.lr or set train.grad_clip (which checks every step's gradient).",
            epoch=st.epoch,
            step=None,
        )

    # -- epochs ------------------------------------------------------------
    def validate(self) -> Dict[str, float]:
        """Mean negative ELBO (beta = 1), reconstruction and KL per validation point, in nats."""
        if self.val_batch is None:
            return {}
        self.vae.eval()
        totals = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
        n, size = len(self.val_batch["x"]), self.cfg.train.eval_batch_size
        for start in range(0, n, size):
            chunk = select_fields(self.vae, {k: v[start : start + size] for k, v in self.val_batch.items()})
            terms = elbo_terms(self.vae, **chunk)
            for k in totals:
                totals[k] += float(terms[k].sum())
        if self.dist.enabled:  # each rank scored its share of the validation set
            totals["elbo"], totals["reconstruction"], totals["kl"], n = distributed.all_reduce_sum(
                [totals["elbo"], totals["reconstruction"], totals["kl"], n]
            )
        self.vae.train()
        return {"val_loss": -totals["elbo"] / n, "val_reconstruction": -totals["reconstruction"] / n, "val_kl": totals["kl"] / n}

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
            with validation:
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
            self._check_parameters()
            record.update(self.validate())
            record["seconds"] = time.perf_counter() - record.pop("_start")
            st.history.append(record)
            improved = record.get("val_loss", -math.inf) < st.best_val
            if "val_loss" in record:
                st.best_val = min(st.best_val, record["val_loss"])
                st.bad_epochs = 0 if improved else st.bad_epochs + 1
            self._save(record, improved)
            self._report(record)
            for callback in self.callbacks:
                callback.on_epoch_end(self, record)
            if tc.patience is not None and st.bad_epochs >= tc.patience:
                self.stop_reason = "early_stopping"
                self._log(f"early stopping: no better validation loss for {tc.patience} epochs")
                break
            if self._stop_requested():
                self._log(f"stopped after epoch {st.epoch}: {self.stop_reason}")
                break

    def _stop_requested(self) -> bool:
        """Whether any rank's callbacks asked to stop (ranks must agree, or they hang)."""
        asked = self.stop_reason is not None
        if self.dist.enabled:
            asked = distributed.all_reduce_sum([float(asked)], device=self.device)[0] > 0
            if asked and self.stop_reason is None:
                self.stop_reason = "another rank asked to stop"
        return asked

    def _train_epoch(self) -> Dict[str, Any]:
        st = self.state
        world = self.dist.world_size  # the step's loss is summed over the ranks' batches
        start = time.perf_counter()
        self.vae.train()
        total, count, skipped = 0.0, 0, 0
        bar = self._progress_bar()
        for i, batch in enumerate(self.batches):
            beta = self.kl_weight(st.step)
            x = batch["x"]
            loss = self._step(select_fields(self.vae, batch), beta)
            norm = self._grad_norm()
            if not (math.isfinite(loss) and math.isfinite(norm)):
                error = self._diverged(*(("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)), i)
                if error is not None:
                    raise error
                skipped += 1
                continue
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            st.step += 1
            total += loss
            count += len(x)
            if bar is not None:
                bar.update(len(x))
                if i % 25 == 0:
                    bar.set_postfix(loss=f"{total / (count * world):.2f}", refresh=False)
        if bar is not None:
            bar.close()
        if self.dist.enabled:  # the loss is summed over ranks already; the count is not
            count = int(distributed.all_reduce_sum([count])[0])
        self.scheduler.step()
        st.epoch += 1
        record = {"epoch": st.epoch, "step": st.step, "train_loss": total / max(count, 1), "beta": beta, "lr": self.optimizer.param_groups[0]["lr"], "_start": start}
        if skipped:
            record["skipped_batches"] = skipped
        return record

    def _progress_bar(self):
        if not self.cfg.train.progress or not self.dist.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.batches.points_per_epoch,
            desc=f"epoch {self.state.epoch + 1}/{self.cfg.train.epochs}",
            unit="pt",
            unit_scale=True,
            leave=False,
            dynamic_ncols=True,
        )

    def _log(self, message: str) -> None:
        if self.cfg.train.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            tqdm.write(message)

    def _report(self, r: Dict[str, Any]) -> None:
        val = f"  val {r['val_loss']:.3f} (rec {r['val_reconstruction']:.2f}, kl {r['val_kl']:.2f})" if "val_loss" in r else ""
        self._log(f"epoch {r['epoch']:>3}  train {r['train_loss']:.3f}{val}  {r['seconds']:.1f}s")

    # -- checkpoints -----------------------------------------------------
    def _rank_rng(self) -> Dict[str, Any]:
        """This process's own random state."""
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "noise": self.batches.noise_generator.get_state(),
        }

    def state_dict(self, ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        """Everything a checkpoint holds. ``ranks``: every rank's random
        state (data-parallel runs), stored so that a resume is exact."""
        st = self.state
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batches": self.batches.generator.get_state(),
        }
        if ranks is not None:
            rng["ranks"] = ranks
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
            "rng": rng,
            "config": self.cfg.to_dict(),
            "data_shape": list(self.vae.data_shape),
            "world_size": self.dist.world_size,
        }

    def load_state_dict(self, state: Dict[str, Any], path="checkpoint") -> None:
        """Restore a :meth:`state_dict`.

        :raises CheckpointError: when the checkpoint was written for other
            data, another model config, or another optimizer or schedule.
        """
        shape = tuple(state.get("data_shape", self.vae.data_shape))
        if shape != tuple(self.vae.data_shape):
            raise CheckpointError(f"{path} was written for data of shape {shape}, this data has {tuple(self.vae.data_shape)}")
        load_model_state(self.vae, state, path)
        saved = (state.get("config") or {}).get("train", {})
        for key in ("optimizer", "lr_schedule"):
            before, now = (saved.get(key) or {}).get("name"), getattr(self.cfg.train, key)["name"]
            if before is not None and before != now:
                raise CheckpointError(
                    f"{path} was written with train.{key} {before!r}, this config has {now!r}; "
                    f"resume with the same {key} (or start a new run)"
                )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{path}: the optimizer or schedule state does not fit this config: {e}") from None
        self._load_rng(state["rng"], state.get("epoch", 0))
        self.state = TrainState(state["epoch"], state["step"], state["best_val"], state["bad_epochs"], list(state["history"]))

    def _load_rng(self, rng: Dict[str, Any], epoch: int) -> None:
        self.batches.generator.set_state(rng["batches"])
        ranks = rng.get("ranks")
        if ranks is not None and len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            torch.set_rng_state(mine["torch"])
            if mine["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(mine["cuda"])
            if self.batches.noise_generator is not self.batches.generator:
                self.batches.noise_generator.set_state(mine["noise"])
            return
        if self.dist.is_main:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        if self.dist.enabled or ranks is not None:
            # another number of processes: fresh noise streams for this rank
            seed = distributed.rank_seed(self.cfg.train.seed + epoch, self.dist.rank)
            if not self.dist.is_main:
                torch.manual_seed(seed)
            if self.batches.noise_generator is not self.batches.generator:
                self.batches.noise_generator.manual_seed(seed)
            if self.dist.is_main:
                warnings.warn(
                    f"the checkpoint was written by {len(ranks) if ranks else 1} process(es), this run has "
                    f"{self.dist.world_size}: training continues with fresh noise streams, so it is not "
                    "bitwise identical to an uninterrupted run"
                )

    def _save(self, record, improved: bool) -> None:
        """Rank 0 writes ``best.pt`` (if improved), then ``checkpoint.pt``,
        then the metrics line; every rank waits for it and sees its errors.
        ``best.pt`` goes first: a crash between the two files then leaves a
        checkpoint whose epoch is redone on resume, rewriting the same best."""
        ranks = distributed.all_gather_objects(self._rank_rng()) if self.dist.enabled else None

        def write():
            if self.run is None:
                return
            state = self.state_dict(ranks)
            if improved:  # best.pt first, as the docstring says
                save_checkpoint(state, self.run.best, self.run.checkpoint)
            else:
                save_checkpoint(state, self.run.checkpoint)
            self.run.append_metrics(record)

        distributed.on_main(write, self.dist)

    def resume(self) -> None:
        """Continue from the run directory's last complete checkpoint
        (read by rank 0 and broadcast to the others)."""
        if self.run_path is None:
            raise CheckpointError("resume() needs the trainer's run_dir")

        def read():
            self.run.remove_stale_temp_files()
            return load_checkpoint(self.run.checkpoint, map_location="cpu")

        state = distributed.on_main(read, self.dist)
        self.load_state_dict(state, RunDir(self.run_path).checkpoint)
        # the checkpoint's history is the record: a metrics line lost to a
        # crash after the checkpoint was written comes back, later ones go
        distributed.on_main(lambda: self.run.write_metrics(self.state.history), self.dist)


def train(vae, data, cfg=None, run_dir=None, resume: bool = False) -> List[Dict[str, Any]]:
    """Fit ``vae`` to ``data`` with SVI; see :class:`Trainer`. Returns the
    per-epoch metrics (``train_loss``, ``val_loss``, ... in nats per point)."""
    trainer = Trainer(vae, data, cfg, run_dir)
    if resume:
        trainer.resume()
    return trainer.fit()
