"""Capturing and restoring the training state that a checkpoint holds.

A checkpoint (written by :func:`pyrovae.runs.save_checkpoint`) holds:

- ``model``, ``optimizer``, ``scheduler``: the three ``state_dict()`` s;
- ``epoch``, ``step``, ``best_val``, ``bad_epochs``, ``history``: the
  :class:`TrainState`;
- ``rng``: torch's global RNG (CPU and CUDA), the generator that shuffles
  the batches and, where the batches draw their binarization noise from a
  generator of its own, that one (each with the device it ran on); in a
  data-parallel run also ``ranks``, every rank's own state (global RNG and
  noise generator), so that ``--resume`` with the same number of processes
  is bitwise exact;
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
        "noise_device": str(trainer.batches.noise_generator.device),
    }


def capture(trainer, ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Everything a checkpoint holds, from a :class:`~pyrovae.training.trainer.Trainer`.

    :param ranks: every rank's :func:`rank_rng` (data-parallel runs), stored
        so that a resume is exact.
    """
    st = trainer.state
    batches = trainer.batches
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches": batches.generator.get_state(),
        "batches_device": str(batches.generator.device),
    }
    if batches.noise_generator is not batches.generator:  # a noise stream of its own: saved too
        rng["noise"] = batches.noise_generator.get_state()
        rng["noise_device"] = str(batches.noise_generator.device)
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
    """torch's CPU and CUDA generators as ``saved`` has them. With fewer GPUs
    visible than were saved, those there are set and the rest warned about."""
    torch.set_rng_state(saved["torch"])
    states = saved["cuda"] if torch.cuda.is_available() else []
    count = torch.cuda.device_count() if states else 0
    for index, state in enumerate(states[:count]):
        torch.cuda.set_rng_state(state, index)
    if len(states) > count:
        warnings.warn(f"the checkpoint holds the random state of {len(states)} GPUs and {count} are visible: "
                      f"GPUs {count} to {len(states) - 1} are not restored")


def _same_kind(saved_device: Optional[str], generator: torch.Generator) -> bool:
    """Whether a generator state saved on ``saved_device`` fits ``generator``
    (states of CPU and CUDA generators differ in size and meaning; a state
    saved without its device came from a generator on the data's device of
    that run, taken as matching)."""
    return saved_device is None or torch.device(saved_device).type == generator.device.type


def _restore_generator(generator: torch.Generator, state, saved_device: Optional[str], seed: int, what: str) -> bool:
    """Set ``generator`` to ``state``; a state from another device type (a
    run resumed on the CPU after a GPU, or the other way round) cannot be
    set: the generator is seeded with ``seed`` instead, and False says so."""
    if _same_kind(saved_device, generator):
        generator.set_state(state)
        return True
    generator.manual_seed(seed)
    warnings.warn(f"the {what} generator was saved on {saved_device} and runs on {generator.device.type} now: "
                  "it starts afresh, so the run is not bitwise identical to an uninterrupted one")
    return False


def _restore_rng(trainer, rng: Dict[str, Any], epoch: int) -> None:
    """The random states of ``rng``; this rank's own when the checkpoint was
    written by as many processes as this run has, else fresh noise streams
    for every rank (with a warning: the run then differs from an
    uninterrupted one). A generator saved on another device type is seeded
    afresh, with a warning."""
    strategy, batches = trainer.strategy, trainer.batches
    seed = distributed.rank_seed(trainer.cfg.train.seed + epoch, strategy.rank)
    # the same shuffling on every rank
    _restore_generator(batches.generator, rng["batches"], rng.get("batches_device"), seed, "shuffling")
    own_noise = batches.noise_generator is not batches.generator
    ranks = rng.get("ranks")
    written_by = len(ranks) if ranks is not None else 1
    if written_by == strategy.world_size:
        mine = ranks[strategy.rank] if ranks is not None else rng
        _set_global_rng(mine)
        if own_noise:
            if "noise" in mine:
                _restore_generator(batches.noise_generator, mine["noise"], mine.get("noise_device"), seed + 1,
                                   "binarization")
            else:  # the writing run drew its noise from the shuffling generator
                batches.noise_generator.manual_seed(seed + 1)
                warnings.warn("the checkpoint's run drew its binarization noise from the shuffling generator and "
                              "this one has a generator of its own (another device): it starts afresh, so the run "
                              "is not bitwise identical to an uninterrupted one")
        return
    # another number of processes: rank 0 keeps the saved global state, every
    # rank draws fresh noise under a seed of its own
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
            "bitwise identical to an uninterrupted one"
        )
