"""The training state that a checkpoint holds, composed from its parts.

Each part saves and restores its own state (``state_dict()`` /
``load_state_dict()``): the model, the optimizer and the schedule (torch's
own), the ``TrainState``, the batches (``Batches.state_dict``: their
generators) and torch's global generators (``GlobalRNG``,
:mod:`pyrovae.rng`). The trainer hands its parts over as
``CheckpointParts``, which puts their states where a checkpoint file has
always held them (the file format itself is :mod:`pyrovae.checkpoint_file`):

- ``model``, ``optimizer``, ``scheduler``: the three ``state_dict()`` s;
- ``epoch``, ``step``, ``best_val``, ``bad_epochs``, ``history``: the
  ``TrainState``;
- ``rng``: torch's global RNG (``torch``, ``cuda``), the generator that
  shuffles the batches (``batches``, ``batches_device``) and, where the
  batches draw their binarization noise from a generator of its own, that
  one (``noise``, ``noise_device``); in a data-parallel run also ``ranks``,
  every rank's own state (``CheckpointParts.rank_rng``: global RNG and
  noise generator), so that ``--resume`` with the same number of processes
  is bitwise exact;
- ``config`` (the whole config as a dict), ``data_shape``, ``world_size``
  and ``pyrovae_version`` (the version that wrote it).

Checkpoints written by pyrovae 0.1.0 also load: they carry a
``param_store`` entry (a copy of the model's weights that is never read
back), no ``pyrovae_version`` and no generator devices; all are fine.

Example::

    parts = CheckpointParts(state, vae, optimizer, scheduler, batches, cfg, data_shape=(1, 28, 28))
    saved = parts.state_dict()          # what save_checkpoint writes
    parts.load_state_dict(saved)        # what resume restores
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..config import Config
from ..errors import CheckpointError
from ..loading import load_model_state
from ..rng import GlobalRNG, fresh_generator_state
from . import distributed

__all__ = ["TrainState", "CheckpointParts", "TRAINING_KEYS"]

#: what a checkpoint holds besides the weights so that training can continue from it
TRAINING_KEYS = ("optimizer", "scheduler", "rng", "step", "best_val", "bad_epochs", "history")
#: where each entry of the batches' state_dict() sits in a checkpoint's ``rng`` (the names
#: every checkpoint has been written with)
_BATCHES_KEYS = {"generator": "batches", "generator_device": "batches_device", "noise": "noise",
                 "noise_device": "noise_device"}


@dataclass
class TrainState:
    """The progress of a run: what a checkpoint records besides the weights
    and random states.

    Example::

        >>> state = TrainState(epoch=2, step=40, best_val=91.5)
        >>> TrainState().load_state_dict(state.state_dict()) is None, TrainState(**state.state_dict()) == state
        (True, True)
    """

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    best_val: float = math.inf  # best validation loss so far, nats per point
    bad_epochs: int = 0  # epochs since best_val last improved
    history: List[Dict[str, Any]] = field(default_factory=list)  # one metrics record per epoch

    def state_dict(self) -> Dict[str, Any]:
        """``epoch``, ``step``, ``best_val``, ``bad_epochs`` and ``history`` (a copy of the list)."""
        return {"epoch": self.epoch, "step": self.step, "best_val": self.best_val, "bad_epochs": self.bad_epochs,
                "history": list(self.history)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Take the progress of ``state`` (a :meth:`state_dict`, or a
        checkpoint's dict), in place."""
        self.epoch, self.step, self.best_val = state["epoch"], state["step"], state["best_val"]
        self.bad_epochs, self.history = state["bad_epochs"], list(state["history"])


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pyrovae")
    except Exception:  # not installed as a distribution (a source tree on sys.path)
        return "unknown"


@dataclass
class CheckpointParts:
    """The parts of a trainer that a checkpoint holds, and what describes
    the run they belong to.

    :ivar TrainState state: the run's progress (restored in place).
    :ivar model: the model (``torch.nn.Module``).
    :ivar optimizer: its torch optimizer.
    :ivar scheduler: the learning-rate schedule.
    :ivar batches: the training :class:`~pyrovae.data.Batches`.
    :ivar Config config: the run's config (its ``train.seed``, optimizer and schedule).
    :ivar tuple data_shape: the shape of one training point.
    :ivar int rank: this process's rank.
    :ivar int world_size: the number of processes.
    """

    state: TrainState
    model: Any
    optimizer: Any
    scheduler: Any
    batches: Any
    config: Config
    data_shape: Tuple[int, ...]
    rank: int = 0
    world_size: int = 1
    global_rng: GlobalRNG = field(default_factory=GlobalRNG)

    def rank_rng(self) -> Dict[str, Any]:
        """This process's own random state: torch's global generators (latent
        noise) and the batches' noise generator (dynamic binarization)."""
        own = self.batches.state_dict()
        noise = "noise" if "noise" in own else "generator"  # no generator of its own: the shuffling one draws it
        return {**self.global_rng.state_dict(), "noise": own[noise], "noise_device": own[f"{noise}_device"]}

    def state_dict(self, ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        """Everything a checkpoint holds (the layout in :mod:`pyrovae.training.checkpoint`).

        :param ranks: every rank's :meth:`rank_rng` (data-parallel runs),
            stored so that a resume is exact.
        """
        rng = {**self.global_rng.state_dict(),
               **{_BATCHES_KEYS[k]: v for k, v in self.batches.state_dict().items()}}
        if ranks is not None:
            rng["ranks"] = ranks
        return {
            **self.state.state_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "config": self.config.to_dict(),
            "data_shape": list(self.data_shape),
            "world_size": self.world_size,
            "pyrovae_version": _version(),
        }

    def load_state_dict(self, state: Dict[str, Any], path="checkpoint") -> None:
        """Restore a :meth:`state_dict` into each part: weights, optimizer,
        schedule, random states and :class:`TrainState`.

        :raises CheckpointError: when the checkpoint was written for other
            data, another model config, or another optimizer or schedule,
            or holds no training state.
        """
        shape = tuple(state.get("data_shape", self.data_shape))
        if shape != tuple(self.data_shape):
            raise CheckpointError(f"{path} was written for data of shape {shape}, this data has {tuple(self.data_shape)}")
        load_model_state(self.model, state, path)
        missing = [key for key in TRAINING_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"{path} holds no training state ({', '.join(missing)} missing), so training "
                                  "cannot continue from it; start a new run (its weights still load with load_run)")
        saved = (state.get("config") or {}).get("train", {})
        for key in ("optimizer", "lr_schedule"):
            before, now = (saved.get(key) or {}).get("name"), getattr(self.config.train, key)["name"]
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
        self._restore_rng(state["rng"], state.get("epoch", 0))
        self.state.load_state_dict(state)

    def _restore_rng(self, rng: Dict[str, Any], epoch: int) -> None:
        """The random states of ``rng``: this rank's own when the checkpoint
        was written by as many processes as this run has, else fresh noise
        streams for every rank (with a warning: the run then differs from
        an uninterrupted one). A generator saved on another device type
        starts afresh, with a warning (:meth:`~pyrovae.data.Batches.load_state_dict`)."""
        seed = distributed.rank_seed(self.config.train.seed + epoch, self.rank)
        # the same shuffling on every rank; the noise is each rank's own
        batches = {own: rng[key] for own, key in _BATCHES_KEYS.items() if key in rng and not own.startswith("noise")}
        ranks = rng.get("ranks")
        written_by = len(ranks) if ranks is not None else 1
        if written_by == self.world_size:
            mine = ranks[self.rank] if ranks is not None else rng
            self.global_rng.load_state_dict(mine)
            self.batches.load_state_dict({**batches, **{k: mine[k] for k in ("noise", "noise_device") if k in mine}},
                                         seed)
            return
        # another number of processes: rank 0 keeps the saved global state, every
        # rank draws fresh noise under a seed of its own
        if self.rank == 0:
            self.global_rng.load_state_dict(rng)
        else:
            self.global_rng.seed(seed)
        own = self.batches.state_dict()
        if "noise" in own:
            batches.update(noise=fresh_generator_state(own["noise_device"], seed), noise_device=own["noise_device"])
        self.batches.load_state_dict(batches, seed)
        if self.rank == 0:
            warnings.warn(
                f"the checkpoint was written by {written_by} process(es), this run has "
                f"{self.world_size}: training continues with fresh noise streams, so it is not "
                "bitwise identical to an uninterrupted one"
            )
