"""Evaluation over several processes: each scores its share of the data
points, and the per-point results are gathered so that every process
returns the whole result.

Under ``torchrun`` (``torch.distributed`` initialized with more than one
process), :func:`~pyrovae.evaluate`, :func:`~pyrovae.ais_log_likelihood`
and :func:`~pyrovae.inference_gaps` split their points this way. Every
process must call them, with the same data (checked: a clear error
otherwise); a call that one process makes alone takes ``shard=False``.
With one process every function here is the identity.

A process gets whole chunks, so W processes are all busy only from W
chunks on. By default IS cuts 20 points per chunk and AIS about 4000 chain
states (250 points with 16 chains): 10,000 test points make 500 and 40
chunks, 100 points 5 and 1 (pass a smaller AIS ``batch_size`` to split few
points; it changes the chunks, and so the draws, for every W alike).

What makes a run of W processes give the numbers of one process:

- The points are cut into the blocks (chunks) one process would use, whose
  boundaries depend on N and the chunk size, never on W; each process takes
  a contiguous run of whole blocks (:func:`block_shard`).
- The random numbers of a block are seeded by the block's global position
  (:func:`block_seed`), so a block draws the same numbers whichever process
  scores it.
- Statistics over the points (means, standard errors, active units,
  Pareto k̂ shares) are computed from the gathered per-point values, on
  every process alike.

Example::

    >>> from pyrovae.infer.sharding import point_shard, block_shard
    >>> point_shard(10, rank=1, world_size=3)            # 4 + 3 + 3 points
    slice(4, 7, None)
    >>> block_shard([20, 20, 20, 5], rank=1, world_size=2)   # whole blocks: 2 + 2
    (slice(2, 4, None), slice(40, 65, None))
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import DataError

__all__ = ["rank_and_size", "point_shard", "block_shard", "block_seed", "shared_seed", "gather_points",
           "gather_point_fields", "sum_over_ranks", "check_same_data"]


def rank_and_size() -> Tuple[int, int]:
    """``(rank, world size)`` of the default ``torch.distributed`` process
    group; ``(0, 1)`` when none is initialized."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rank_size(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    if rank is None or world_size is None:
        return rank_and_size()
    return rank, world_size


def point_shard(n: int, *, rank: Optional[int] = None, world_size: Optional[int] = None) -> slice:
    """This process's contiguous share of ``n`` points: ranks in order cover
    ``0 .. n`` once, the first ``n % W`` ranks one point more than the rest
    (a rank past ``n`` gets an empty slice). All ``n`` points without
    ``torch.distributed`` or with one process. ``rank`` and ``world_size``
    default to the process group's.

    Example::

        >>> from pyrovae.infer.sharding import point_shard
        >>> [point_shard(5, rank=r, world_size=2) for r in range(2)]
        [slice(0, 3, None), slice(3, 5, None)]
        >>> point_shard(1, rank=2, world_size=3)              # more ranks than points
        slice(1, 1, None)
        >>> point_shard(7)                                    # one process: everything
        slice(0, 7, None)
    """
    rank, world_size = _rank_size(rank, world_size)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def block_shard(sizes: Sequence[int], *, rank: Optional[int] = None,
                world_size: Optional[int] = None) -> Tuple[slice, slice]:
    """This process's share of consecutive blocks of ``sizes`` points: the
    slice of block indices (:func:`point_shard` of the blocks) and the slice
    of points those blocks cover. Whole blocks, so that each block is scored
    as one process would score it.

    Example::

        >>> from pyrovae.infer.sharding import block_shard
        >>> block_shard([3, 3, 2], rank=0, world_size=2)
        (slice(0, 2, None), slice(0, 6, None))
        >>> block_shard([3, 3, 2], rank=1, world_size=2)
        (slice(2, 3, None), slice(6, 8, None))
    """
    blocks = point_shard(len(sizes), rank=rank, world_size=world_size)
    start = sum(sizes[: blocks.start])
    return blocks, slice(start, start + sum(sizes[blocks]))


def block_seed(seed: int, start: int) -> int:
    """The seed of the block of points that begins at point ``start``:
    ``seed`` itself for the first block (so one block draws what one seeded
    pass always drew), else a 63-bit hash of ``(seed, start)``.

    Example::

        >>> from pyrovae.infer.sharding import block_seed
        >>> block_seed(7, 0), block_seed(7, 20) == block_seed(7, 20) != block_seed(8, 20)
        (7, True)
    """
    if start == 0:
        return int(seed)
    digest = hashlib.blake2b(f"{int(seed)}:{int(start)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def shared_seed(seed: Optional[int]) -> Optional[int]:
    """``seed``; with ``seed=None`` under ``torch.distributed``, a seed that
    rank 0 draws from its global RNG and broadcasts, so the processes score
    their blocks as parts of one run. None stays None in one process.

    Example::

        seed = shared_seed(None)   # one process: None; several: the same int everywhere
    """
    rank, world_size = rank_and_size()
    if seed is not None or world_size == 1:
        return seed
    import torch.distributed as dist

    box = [int(torch.randint(0, 2**31 - 1, ())) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_points(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """The per-point rows of every process, in rank order: ``(n, *rest)``
    from each rank's ``(n_r, *rest)`` with ``Σ n_r = n`` (the shares of
    :func:`point_shard` or :func:`block_shard`). A rank that holds no point
    may pass any empty tensor (``torch.empty(0)``): the other ranks' trailing
    shape and dtype are used. Works on CPU tensors (gloo) and CUDA tensors
    (NCCL; all ranks then pass tensors on their GPU). The identity without
    ``torch.distributed``.

    :raises DataError: when the ranks' rows do not add up to ``n`` (the ranks
        were given different data), or their shapes or dtypes differ.

    Example::

        >>> import torch
        >>> from pyrovae.infer.sharding import gather_points
        >>> gather_points(torch.arange(3.0), 3)               # one process
        tensor([0., 1., 2.])

    Under torchrun with 2 processes and ``n = 5``, rank 0 passes rows 0..2
    and rank 1 rows 3..4; both get all 5.
    """
    _, world_size = rank_and_size()
    if world_size == 1:
        if len(tensor) != n:
            raise DataError(f"gather_points: one process holds {len(tensor)} rows, not n={n}")
        return tensor
    import torch.distributed as dist

    rows = len(tensor) if tensor.dim() else 0
    metas: List = [None] * world_size
    dist.all_gather_object(metas, (rows, tuple(tensor.shape[1:]), tensor.dtype))
    counts = [m[0] for m in metas]
    if sum(counts) != n:
        raise DataError(f"gather_points: the processes hold {counts} rows, {sum(counts)} in all, not n={n}; "
                        "give every process the same data")
    kinds = {m[1:] for m in metas if m[0]}
    if len(kinds) > 1:
        raise DataError(f"gather_points: the processes' rows differ in (shape, dtype): {sorted(map(str, kinds))}")
    rest, dtype = kinds.pop() if kinds else (tuple(tensor.shape[1:]), tensor.dtype)
    wire = torch.uint8 if dtype is torch.bool else dtype  # gloo has no bool collectives
    buffer = torch.zeros((max(counts), *rest), dtype=wire, device=tensor.device)
    if rows:
        buffer[:rows] = tensor.to(wire)
    parts = [torch.empty_like(buffer) for _ in range(world_size)]
    dist.all_gather(parts, buffer)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(dtype)


def gather_point_fields(fields: Optional[Mapping[str, Optional[torch.Tensor]]], n: int,
                        device=None) -> Dict[str, Optional[torch.Tensor]]:
    """:func:`gather_points` of each per-point tensor of a dict, on every
    rank. ``fields`` is None on a rank that holds no point (it then makes
    empty tensors on ``device``, its model's: a GPU under NCCL). A key
    whose value is None on the ranks with points stays None; a key that some
    rank with points lacks is dropped (a statistic that holds only where
    every point allows it: BCE of reconstructions in [0, 1]). The identity
    in one process.

    Example::

        >>> import torch
        >>> from pyrovae.infer.sharding import gather_point_fields
        >>> gather_point_fields({"ll": torch.zeros(2), "codes": None}, 2)    # one process
        {'ll': tensor([0., 0.]), 'codes': None}
    """
    _, world_size = rank_and_size()
    if world_size == 1:
        return dict(fields)
    import torch.distributed as dist

    keys: List = [None] * world_size
    dist.all_gather_object(keys, None if fields is None else {k: v is None for k, v in fields.items()})
    held = [k for k in keys if k is not None]
    out: Dict[str, Optional[torch.Tensor]] = {}
    for key, empty in held[0].items():
        if not all(key in k for k in held):
            continue
        if empty:
            out[key] = None
            continue
        local = fields[key] if fields is not None else torch.empty(0, device=device)
        out[key] = gather_points(local, n)
    return out


def sum_over_ranks(totals: Mapping[str, Sequence[float]]) -> Dict[str, List[float]]:
    """Each key's numbers summed element-wise over the ranks, in rank order
    (a key some rank lacks counts as zeros there); the identity in one process.

    Example::

        >>> from pyrovae.infer.sharding import sum_over_ranks
        >>> sum_over_ranks({"error": [3.0, 40.0]})           # one process
        {'error': [3.0, 40.0]}
    """
    _, world_size = rank_and_size()
    if world_size == 1:
        return {k: list(v) for k, v in totals.items()}
    import torch.distributed as dist

    parts: List = [None] * world_size
    dist.all_gather_object(parts, {k: list(v) for k, v in totals.items()})
    out: Dict[str, List[float]] = {}
    for part in parts:
        for key, values in part.items():
            sums = out.setdefault(key, [0.0] * len(values))
            out[key] = [s + v for s, v in zip(sums, values)]
    return out


def check_same_data(fields: Mapping[str, torch.Tensor], where: str) -> None:
    """Under ``torch.distributed``, a :class:`DataError` unless every rank
    was given the same points (compared by count and float64 sum of each
    field): a sharded evaluation of different data would mix them silently.

    Example::

        check_same_data({"x": x}, "evaluate")   # one process: nothing to compare
    """
    _, world_size = rank_and_size()
    if world_size == 1:
        return
    import torch.distributed as dist

    mine = {k: (tuple(v.shape), float(v.double().sum())) for k, v in fields.items()}
    every: List = [None] * world_size
    dist.all_gather_object(every, mine)
    if any(other != mine for other in every):
        raise DataError(f"{where} under torch.distributed: the processes were given different data "
                        f"(shapes and sums {every}); give every process the whole data set, it scores its own share")
