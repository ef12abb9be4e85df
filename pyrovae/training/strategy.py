"""How the training step is spread over processes: one process, or data-parallel.

A strategy owns everything that differs between one process and ``W``
processes under ``torchrun``, so that :class:`~pyrovae.training.trainer.Trainer`
has no branch on distributed state:

- the device of this process;
- the step: forward, backward and the reduction of the loss and gradients
  (:meth:`Strategy.step`), set up once by :meth:`Strategy.setup`;
- this rank's share of a data set (:meth:`Strategy.shard`) and the seed of
  its own noise (:meth:`Strategy.noise_seed`);
- sums over ranks (:meth:`Strategy.sum`: validation totals, point counts,
  stop requests) and every rank's random state (:meth:`Strategy.gather`);
- who writes (:attr:`Strategy.is_main`) and the barriers around writing
  (:meth:`Strategy.on_main`).

:class:`SingleProcess` makes each of these the identity, so nothing of
``torch.distributed`` is on the per-step path of a one-process run.
:class:`DataParallel` is what :mod:`pyrovae.training.distributed` describes.
:func:`from_environment` picks one from the environment torchrun sets.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..devices import canonical_device
from ..errors import ConfigError, DataError
from ..models.base import pyro_callables, unregistered
from . import distributed

__all__ = ["Strategy", "SingleProcess", "DataParallel", "for_context", "from_environment", "resolve_device",
           "canonical_device"]


def resolve_device(spec: str) -> torch.device:
    """``train.device`` as a :func:`canonical_device`: ``auto`` -> the current
    GPU when CUDA is available, else the CPU; ``cuda`` without a GPU, or a
    GPU index past the last, is an error."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DataError(f"train.device={spec!r} but no CUDA device is available; use auto or cpu")
        index = torch.device(spec).index
        if index is not None and index >= torch.cuda.device_count():
            raise DataError(f"train.device={spec!r} but this machine has {torch.cuda.device_count()} GPU(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return canonical_device(spec)


class Strategy:
    """The interface, with the methods of one process (every reduction the
    identity); :class:`SingleProcess` names it, :class:`DataParallel`
    overrides what differs with several processes.

    :ivar ~pyrovae.training.distributed.Context context: rank, world size and local rank.
    """

    context: distributed.Context = distributed.SINGLE

    def __init__(self):
        self.model = self.objective = None
        self.params: List[torch.Tensor] = []
        self.model_fn = self.guide_fn = None  # the model's Pyro functions as the step calls them

    # -- where this process stands --------------------------------------------
    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.context.is_main

    def device(self, spec: str) -> torch.device:
        """The device of this process for ``train.device`` = ``spec``."""
        return resolve_device(spec)

    def check_sizes(self, batch_size: int, num_points: int) -> None:
        """Raise when ``batch_size`` (global) or ``num_points`` training points
        cannot be shared by the processes."""

    def noise_seed(self, seed: int) -> int:
        """The seed of this rank's own noise streams under ``train.seed`` = ``seed``."""
        return distributed.rank_seed(seed, self.rank)

    # -- the step ----------------------------------------------------------------
    def setup(self, model, objective, params: Sequence[torch.Tensor], probe: Dict[str, torch.Tensor],
              betas: Callable[[], List[float]], seed: int) -> None:
        """Prepare :meth:`step` for ``model`` trained with ``objective`` over
        ``params``. ``probe`` (the fields of a two-point batch) and ``betas``
        (the KL weights the run will use, computed only when needed) let a
        data-parallel strategy find parameters that get no gradient; ``seed``
        (``train.seed``) seeds the latent noise of ranks other than 0."""
        self.model, self.objective, self.params = model, objective, list(params)
        self.model_fn, self.guide_fn = pyro_callables(model)  # the bound methods themselves for canonical signatures

    def step(self, fields: Dict[str, torch.Tensor], beta: float) -> float:
        """Forward and backward on one batch's ``fields`` (the keyword
        arguments of the model and guide) at KL weight ``beta``; returns the
        loss, the negative ELBO summed over the batch of every rank, in nats.
        The gradients are those of that global sum."""
        objective = self.objective
        if hasattr(objective, "differentiable_loss"):
            # the optimizer holds model.parameters() itself: skip pyro.module
            with unregistered(self.model):
                loss = objective.differentiable_loss(self.model_fn, self.guide_fn, **fields, beta=beta)
            loss.backward()
            return loss.item()
        # objectives without a differentiable loss (RenyiELBO) do their own
        # backward over the parameters they find registered in the traces
        return objective.loss_and_grads(self.model_fn, self.guide_fn, **fields, beta=beta)

    # -- data and reductions -----------------------------------------------------------
    def shard(self, fields: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """This rank's contiguous share of every field (rows)."""
        return fields

    def sum(self, values: Sequence[float], device=None) -> List[float]:
        """Element-wise sums of a few numbers over all ranks (float64)."""
        return [float(v) for v in values]

    def gather(self, obj: Any) -> Optional[List[Any]]:
        """Every rank's ``obj`` in rank order, or None with one process (a
        checkpoint then holds this process's random state alone)."""
        return None

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the main rank; every rank returns its result and sees
        its error. With several processes this is a barrier as well."""
        return fn()


class SingleProcess(Strategy):
    """One process: the step as written, every reduction the identity."""


class DataParallel(Strategy):
    """``W`` processes under torchrun, one step on the union of their batches.

    The loss is wrapped in ``DistributedDataParallel`` (which averages the
    gradients; each rank scales its loss by ``W`` so that the average is the
    gradient of the global sum) or, for objectives without a differentiable
    loss, the gradients are summed with one ``all_reduce``. An objective
    whose weights depend on the batch's make-up (one with ``batch_counts``
    and ``over_batch``, such as the objective of a partly known enumerated field) gets the counts
    summed over the ranks before the step. See
    :mod:`pyrovae.training.distributed`.

    :param context: this process's place in the job (joined already, see
        :func:`~pyrovae.training.distributed.init`).
    """

    def __init__(self, context: distributed.Context):
        super().__init__()
        if not context.enabled:
            raise ConfigError("DataParallel needs more than one process; use SingleProcess")
        self.context = context
        self.ddp = None

    def device(self, spec: str) -> torch.device:
        device = resolve_device(spec)
        if device.type == "cuda":  # one GPU per process
            device = torch.device("cuda", self.context.local_rank % torch.cuda.device_count())
        return device

    def check_sizes(self, batch_size: int, num_points: int) -> None:
        world = self.world_size
        if batch_size < world:
            raise ConfigError(
                f"train.batch_size={batch_size} is the global batch and is smaller than the "
                f"{world} processes; set it to at least {world}"
            )
        if num_points < world:
            raise DataError(f"{num_points} training points cannot be shared by {world} processes")

    def setup(self, model, objective, params, probe, betas, seed) -> None:
        """Wrap the loss in DDP (which makes every rank's weights rank 0's)
        or broadcast rank 0's weights, then give this rank its own noise."""
        super().setup(model, objective, params, probe, betas, seed)
        if hasattr(objective, "differentiable_loss"):
            unused = distributed.unused_parameters(model, objective, probe, betas())
            device = probe["x"].device
            self.ddp = distributed.wrap(model, objective, device, find_unused=bool(unused))
        else:  # no differentiable loss to wrap: start from rank 0's weights, sum gradients by hand
            with torch.no_grad():
                for t in list(model.parameters()) + list(model.buffers()):
                    torch.distributed.broadcast(t, src=0)
        if not self.is_main:
            torch.manual_seed(self.noise_seed(seed))

    def step(self, fields, beta) -> float:
        counts = getattr(self.objective, "batch_counts", None)
        counts = counts(fields) if counts is not None else None
        if counts is None:
            if "num_data" in fields:
                # the batches pass num_data to a model with a guide over its training points (it takes index)
                raise ConfigError(
                    "num_data under data-parallel training would scale each process's share by N over the share's "
                    "size, and the processes' sum would be about W times the whole batch's estimate; a model that "
                    "takes index and num_data (a guide over its training points) trains in one process: run it "
                    "without torchrun"
                )
            return self._step(fields, beta)
        # weights that depend on the batch's make-up (its known and unknown
        # points) come from the whole batch, not this rank's share
        with self.objective.over_batch(distributed.all_reduce_sum(counts)):
            return self._step(fields, beta)

    def _step(self, fields, beta) -> float:
        world = self.world_size
        if self.ddp is not None:
            loss = self.ddp(beta=beta, **fields)
            (loss * world).backward()  # DDP averages: the gradient of the global sum
            local = float(loss.detach())
        else:
            local = self.objective.loss_and_grads(self.model_fn, self.guide_fn, **fields, beta=beta)
            distributed.all_reduce_grads(self.params)
        return distributed.all_reduce_sum([local])[0]

    def shard(self, fields):
        return {k: torch.tensor_split(v, self.world_size)[self.rank] for k, v in fields.items()}

    def sum(self, values, device=None):
        return distributed.all_reduce_sum(values, device=device)

    def gather(self, obj):
        return distributed.all_gather_objects(obj)

    def on_main(self, fn):
        return distributed.on_main(fn, self.context)


def for_context(context: distributed.Context) -> Strategy:
    """:class:`DataParallel` for a context of several processes (its group
    joined already), else :class:`SingleProcess`."""
    return DataParallel(context) if context.enabled else SingleProcess()


def from_environment() -> Strategy:
    """:class:`DataParallel` under torchrun (joining its process group), else
    :class:`SingleProcess`."""
    return for_context(distributed.init())
