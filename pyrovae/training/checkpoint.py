"""Capturing and restoring the training state that a checkpoint holds.

A checkpoint (written by :func:`pyrovae.runs.save_checkpoint`) holds:

- ``model``, ``optimizer``, ``scheduler``: the three ``state_dict()`` s;
- ``epoch``, ``step``, ``best_val``, ``bad_epochs``, ``history``: the
  :class:`TrainState`;
- ``rng``: torch's global RNG (CPU and CUDA) and the generator that shuffles
  the batches; in a data-parallel run also ``ranks``, every rank's own
  state (global RNG and noise generator), so that ``--resume`` with the same
  number of processes is bitwise exact;
- ``config`` (the whole config as a dict), ``data_shape``, ``world_size``
  and ``pyrovae_version`` (the version that wrote it).

Checkpoints written by pyrovae 0.1.0 also load: they carry a
``param_store`` entry (a copy of the model's weights that is never read
back) and no ``pyrovae_version``; both are fine.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..runs import load_model_state
from . import distributed

__all__ = ["TrainState", "capture", "restore", "rank_rng"]


@dataclass
class TrainState:
    """What a checkpoint records besides the weights and random states."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    best_val: float = math.inf  # best validation loss so far, nats per point
    bad_epochs: int = 0  # epochs since best_val last improved
    history: List[Dict[str, Any]] = field(default_factory=list)  # one metrics record per epoch


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pyrovae")
    except Exception:  # not installed as a distribution (a source tree on sys.path)
        return "unknown"


def data_shape(trainer) -> Tuple[int, ...]:
    """The shape of one training point (what :func:`pyrovae.runs.load_run`
    builds the model for); from the data, since a model need not say."""
    return tuple(trainer.splits.train[0].shape[1:])


def rank_rng(trainer) -> Dict[str, Any]:
    """This process's own random state: torch's global RNG (latent noise) and
    the noise generator of the batches (dynamic binarization)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "noise": trainer.batches.noise_generator.get_state(),
    }


def capture(trainer, ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Everything a checkpoint holds, from a :class:`~pyrovae.training.trainer.Trainer`.

    :param ranks: every rank's :func:`rank_rng` (data-parallel runs), stored
        so that a resume is exact.
    """
    st = trainer.state
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches": trainer.batches.generator.get_state(),
    }
    if ranks is not None:
        rng["ranks"] = ranks
    return {
        "epoch": st.epoch,
        "step": st.step,
        "best_val": st.best_val,
        "bad_epochs": st.bad_epochs,
        "history": st.history,
        "model": trainer.vae.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "rng": rng,
        "config": trainer.cfg.to_dict(),
        "data_shape": list(data_shape(trainer)),
        "world_size": trainer.strategy.world_size,
        "pyrovae_version": _version(),
    }


def restore(trainer, state: Dict[str, Any], path="checkpoint") -> None:
    """Restore a :func:`capture` into ``trainer``: weights, optimizer,
    schedule, random states and :class:`TrainState`.

    :raises CheckpointError: when the checkpoint was written for other
        data, another model config, or another optimizer or schedule.
    """
    vae, cfg = trainer.vae, trainer.cfg
    shape, now = tuple(state.get("data_shape", data_shape(trainer))), data_shape(trainer)
    if shape != now:
        raise CheckpointError(f"{path} was written for data of shape {shape}, this data has {now}")
    load_model_state(vae, state, path)
    saved = (state.get("config") or {}).get("train", {})
    for key in ("optimizer", "lr_schedule"):
        before, now = (saved.get(key) or {}).get("name"), getattr(cfg.train, key)["name"]
        if before is not None and before != now:
            raise CheckpointError(
                f"{path} was written with train.{key} {before!r}, this config has {now!r}; "
                f"resume with the same {key} (or start a new run)"
            )
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: the optimizer or schedule state does not fit this config: {e}") from None
    _restore_rng(trainer, state["rng"], state.get("epoch", 0))
    trainer.state = TrainState(state["epoch"], state["step"], state["best_val"], state["bad_epochs"], list(state["history"]))


def _set_global_rng(saved: Dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])


def _restore_rng(trainer, rng: Dict[str, Any], epoch: int) -> None:
    """The random states of ``rng``; this rank's own when the checkpoint was
    written by as many processes as this run has, else fresh noise streams
    for every rank (with a warning: the run then differs from an
    uninterrupted one)."""
    strategy, batches = trainer.strategy, trainer.batches
    batches.generator.set_state(rng["batches"])  # the same shuffling on every rank
    own_noise = batches.noise_generator is not batches.generator
    ranks = rng.get("ranks")
    written_by = len(ranks) if ranks is not None else 1
    if written_by == strategy.world_size:
        mine = ranks[strategy.rank] if ranks is not None else rng
        _set_global_rng(mine)
        if own_noise and "noise" in mine:
            batches.noise_generator.set_state(mine["noise"])
        return
    # another number of processes: rank 0 keeps the saved global state, every
    # rank draws fresh noise under a seed of its own
    seed = distributed.rank_seed(trainer.cfg.train.seed + epoch, strategy.rank)
    if strategy.is_main:
        _set_global_rng(rng)
    else:
        torch.manual_seed(seed)
    if own_noise:
        batches.noise_generator.manual_seed(seed)
    if strategy.is_main:
        warnings.warn(
            f"the checkpoint was written by {written_by} process(es), this run has "
            f"{strategy.world_size}: training continues with fresh noise streams, so it is not "
            "bitwise identical to an uninterrupted run"
        )
