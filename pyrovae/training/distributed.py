"""Data-parallel training with ``torch.distributed``.

Launch the ordinary command under ``torchrun``; each process runs the same
program and the trainer's strategy is then
:class:`~pyrovae.training.strategy.DataParallel` (chosen from the
environment that torchrun sets: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc_per_node=2 -m pyrovae train --config cfg.yaml --out runs/a
    torchrun --nproc_per_node=2 -m pyrovae train --resume runs/a

This module holds the pieces that strategy is made of: joining the process
group, the loss module that DDP wraps, and the collectives.

What a run of ``W`` processes computes:

- ``train.batch_size`` is the *global* batch. All ranks draw the same
  permutation of the training set (a generator seeded with ``train.seed``);
  rank ``r`` takes points ``r, r + W, r + 2W, ...`` of each global batch, so
  at every step the ranks' batches together are exactly the batch one
  process would use, and an epoch has the same number of steps for every
  ``W``. A last global batch smaller than ``W`` is dropped.
- Gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`
  around ``ElboLoss``; each rank scales its loss by ``W``, so the
  average is the gradient of the ELBO summed over the global batch: one step
  of ``W`` processes is the step of one process on the concatenated batch.
  Objectives without a differentiable loss (``iwae``) sum their gradients
  with one ``all_reduce`` instead (``all_reduce_grads``). Weights that
  depend on the batch's make-up are those of the global batch: the
  objective of a partly known enumerated field (m2's) weighs its known
  points and their auxiliary term by the known and unknown counts summed
  over the ranks (one ``all_reduce`` of two numbers before the step,
  through the objective's ``batch_counts`` and ``over_batch``). ``num_data`` among the
  fields is refused for other objectives: a data plate would scale each
  rank's share by N over the share's size.
- Each rank draws its own noise: the latent samples (torch's global RNG,
  re-seeded per rank) and the dynamic binarization (a generator per rank).
- The loss of every step is summed over ranks, so the decision to stop or
  skip on a NaN is the same everywhere; validation is split over the ranks
  and its sums are reduced, so early stopping agrees as well.
- Rank 0 alone writes checkpoints, metrics and figures. Each checkpoint
  holds every rank's random state, so ``--resume`` with the same ``W`` is
  exact. Rank 0 reads the checkpoint and broadcasts it, so other nodes need
  no shared file system.

Backends: gloo for CPU tensors, NCCL for CUDA tensors (one process group
``cpu:gloo,cuda:nccl`` when CUDA is available; each process then uses GPU
``LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence

import torch
from torch import nn

from ..errors import ConfigError, PyrovaeError
from ..models.base import pyro_callables, unregistered

__all__ = [
    "Context",
    "SINGLE",
    "env_context",
    "init",
    "ElboLoss",
    "wrap",
    "unused_parameters",
    "all_reduce_sum",
    "all_reduce_grads",
    "all_gather_objects",
    "broadcast_object",
    "on_main",
    "rank_seed",
    "shutdown",
]

#: how long a collective waits for a missing rank before giving up
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Context:
    """Where this process stands in a data-parallel job.

    :ivar int rank: global rank, 0 .. world_size - 1.
    :ivar int world_size: number of processes (1: no ``torch.distributed``).
    :ivar int local_rank: rank on this node (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


#: the context of an ordinary single-process run
SINGLE = Context()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from None


def env_context() -> Context:
    """The context torchrun describes in the environment, or :data:`SINGLE`."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    rank = _env_int("RANK", -1)
    if not 0 <= rank < world:
        raise ConfigError(f"WORLD_SIZE={world} but RANK={os.environ.get('RANK')!r}; launch with torchrun")
    return Context(rank, world, _env_int("LOCAL_RANK", 0))


def init() -> Context:
    """Join the process group that the environment describes (a no-op for a
    single process or when it is joined already); returns the context."""
    ctx = env_context()
    if not ctx.enabled:
        return ctx
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise ConfigError(f"WORLD_SIZE > 1 but {' and '.join(missing)} are not set; launch with torchrun")
        backend = "gloo"
        if torch.cuda.is_available() and dist.is_nccl_available():
            backend = "cpu:gloo,cuda:nccl"
            torch.cuda.set_device(ctx.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size, timeout=TIMEOUT)
    elif dist.get_world_size() != ctx.world_size or dist.get_rank() != ctx.rank:
        raise ConfigError(
            f"the process group has rank {dist.get_rank()} of {dist.get_world_size()} but the "
            f"environment says {ctx.rank} of {ctx.world_size}"
        )
    return ctx


def shutdown(barrier: bool = False) -> None:
    """Leave the process group, if one was joined.

    :param bool barrier: wait for every rank first (after a run that ended
        normally on all ranks), so that no rank tears its connections down
        while another still talks to it: gloo aborts a process whose peer
        vanished mid-exchange. Not after an error, when the other ranks may
        never arrive.
    """
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        # free what still refers to the group (a DDP reducer and its pending
        # work in a reference cycle) while the interpreter is fully alive:
        # freed during interpreter shutdown instead, gloo aborts the process
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank ``rank``'s own noise, distinct for every (seed, rank)."""
    return (int(seed) * 1_000_003 + 7919 * (rank + 1)) % (2**63 - 1)


# -- the loss module that DDP wraps ----------------------------------------------


class ElboLoss(nn.Module):
    """``forward(beta, **fields)`` returns ``objective.differentiable_loss(
    model.model, model.guide, **fields, beta=beta)``: the negative ELBO summed
    over the batch whose fields (``x`` of shape ``(B, *data_shape)``, labels
    ``y``, ...) are the keyword arguments, a scalar in nats.

    An ``nn.Module`` holding the model, so that ``DistributedDataParallel`` finds
    its parameters (``Trace_ELBO()(vae.model, vae.guide)`` finds none when
    model and guide are bound methods). The model and guide run without
    ``pyro.module`` registration where the model offers that
    (:func:`~pyrovae.models.base.unregistered`).
    """

    def __init__(self, vae, objective):
        super().__init__()
        self.vae = vae
        self.objective = objective
        self.model_fn, self.guide_fn = pyro_callables(vae)

    def forward(self, beta: float = 1.0, **fields: torch.Tensor) -> torch.Tensor:
        with unregistered(self.vae):
            return self.objective.differentiable_loss(self.model_fn, self.guide_fn, **fields, beta=beta)


def unused_parameters(vae, objective, fields: Dict[str, torch.Tensor], betas: Sequence[float]) -> List[str]:
    """Names of trainable parameters that get no gradient from the loss on
    the batch ``fields`` for some KL weight in ``betas`` (beta = 0 masks the
    latent site, so a learned prior's parameters are unused then). Leaves the
    RNG and the gradients as they were."""
    import pyro

    loss_fn = ElboLoss(vae, objective)
    params = dict((n, p) for n, p in vae.named_parameters() if p.requires_grad)
    unused = set()
    saved = {n: p.grad for n, p in params.items()}
    device = fields["x"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), pyro.validation_enabled(False):
        for beta in betas:
            for p in params.values():
                p.grad = None
            loss_fn(beta, **fields).backward()
            unused |= {n for n, p in params.items() if p.grad is None}
    for n, p in params.items():
        p.grad = saved[n]
    return sorted(unused)


def wrap(vae, objective, device: torch.device, find_unused: bool = False):
    """``DistributedDataParallel(ElboLoss(vae, objective))``.

    Construction broadcasts rank 0's parameters and buffers, so every rank
    starts from the same weights. Buffers are constants in pyrovae's
    components and are not re-sent every step.

    :param bool find_unused: let DDP look for parameters without a gradient
        at every step (an extra walk over the autograd graph); needed when
        :func:`unused_parameters` finds some.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    no_sync = {"broadcast_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        no_sync = {"forward_sync_buffers": False}
    return DistributedDataParallel(
        ElboLoss(vae, objective), device_ids=ids, find_unused_parameters=find_unused, **no_sync
    )


# -- collectives -------------------------------------------------------------------


def all_reduce_sum(values: Sequence[float], device=None) -> List[float]:
    """Element-wise sums over all ranks of a few numbers (float64)."""
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_grads(params: Sequence[torch.Tensor]) -> None:
    """Sum the gradients of ``params`` over all ranks in place (one
    flattened ``all_reduce``). Parameters without a gradient are left alone;
    they are the same on every rank because every rank runs the same graph."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    for g, reduced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(reduced)


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    import torch.distributed as dist

    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: Context) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` is ignored on the others)."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _Failed:
    """What rank 0 broadcasts when its part failed."""

    def __init__(self, error: BaseException):
        self.error = error if isinstance(error, PyrovaeError) else None
        self.text = f"{type(error).__name__}: {error}"


def on_main(fn: Callable[[], Any], ctx: Context) -> Any:
    """Run ``fn`` on rank 0 only; every rank returns its result.

    An error on rank 0 is raised on every rank (a :class:`PyrovaeError` as
    itself, anything else as a ``PyrovaeError`` naming it), so no rank is
    left waiting in a later collective. Doubles as a barrier.
    """
    if not ctx.enabled:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as e:  # shared with the other ranks, then re-raised
            error = e
            result = _Failed(e)
    result = broadcast_object(result, ctx)
    if error is not None:
        raise error
    if isinstance(result, _Failed):
        raise result.error if result.error is not None else PyrovaeError(f"rank 0 failed: {result.text}")
    return result
