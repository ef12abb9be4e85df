"""Shuffled mini-batches of named fields, driven by explicit generators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence

import torch

from ..devices import canonical_device
from ..errors import DataError
from .splits import RowReader

__all__ = ["Batches", "BatchNeeds", "label_fields"]


@dataclass(frozen=True)
class BatchNeeds:
    """What every training step must carry, as a model asks for it (the
    ``batch_needs`` capability): ``per_step`` points whose field ``field``
    is known (``>= 0``; ``-1`` marks an unknown value), drawn again and again
    from the few known points, besides ``batch_size`` points with the field
    unknown.

    Example::

        >>> BatchNeeds(field="y", per_step=10)
        BatchNeeds(field='y', per_step=10)
    """

    field: str
    per_step: int


class Batches:
    """Shuffled mini-batches, with optional dynamic binarization, driven by
    explicit ``torch.Generator`` objects (so their state can be checkpointed).

    With ``world_size`` W > 1 (data-parallel training, see
    :mod:`pyrovae.training.distributed`) ``batch_size`` is the global batch: every
    rank draws the same permutation and keeps points ``rank, rank + W, ...``
    of each global batch; a last global batch smaller than W is dropped, so
    every rank takes the same number of steps.

    :param torch.Tensor x: ``(N, *data_shape)``, in memory or a view of a
        memory-mapped file (then only each batch's rows are read).
    :param int batch_size: points per (global) batch; the last may be smaller.
    :param bool shuffle: reshuffle each epoch.
    :param bool dynamic_binarize: draw fresh binary values for every batch.
    :param int seed: seed of the permutation generator :attr:`generator` (on
        the data's device). With one process it also draws the binarization.
    :param int rank: this process's rank.
    :param int world_size: number of processes.
    :param int noise_seed: seed of this rank's binarization generator
        :attr:`noise_generator` (only when W > 1).
    :param device: where batches go (default: where ``x`` is); for mapped data
        on a GPU, each batch is copied there.
    :param reader: a :class:`RowReader` over the same rows as ``x``; batches
        are then read through it (data larger than memory).
    :param dict fields: other per-point fields, each ``(N, ...)`` in memory
        (labels as ``"y"``), batched with the same rows as ``x``.
    :param BatchNeeds needs: for a partly known field (``needs.field``, -1
        where a point's value is unknown): every batch takes ``batch_size``
        points whose value is unknown, in a shuffled pass over them (one pass
        is an epoch), plus ``needs.per_step`` points whose value is known,
        drawn from reshuffled passes over those (the stream is drawn from
        :attr:`generator` at the start of each epoch, so it resumes exactly).
        None, or a field that is known everywhere or nowhere: plain batches.
    :param bool with_index: add the field ``"index"``, the batch's rows in
        ``x`` (``(B,)`` long), for a model whose guide is local to its
        training points (its data plate subsamples the training set by
        ``index``, so each batch's loss stands for all N points: see
        :meth:`points`).
    :param int num_data: with ``with_index``, also pass ``num_data`` (the
        training set's size N) with every batch, for a model whose plate
        takes its size from that keyword.

    Each batch is a dict of named fields: ``{"x": (B, *data_shape), **fields}``,
    the keyword arguments of a model's ``model`` and ``guide`` (see
    :mod:`pyrovae.models.base`).

    Example::

        for batch in Batches(x, 100, fields={"y": labels}):
            loss = elbo.differentiable_loss(vae.model, vae.guide, batch["x"])
    """

    def __init__(self, x, batch_size, shuffle=True, dynamic_binarize=False, seed=0, rank=0, world_size=1,
                 noise_seed=None, device=None, reader: Optional[RowReader] = None,
                 fields: Optional[Dict[str, torch.Tensor]] = None, needs: Optional[BatchNeeds] = None,
                 with_index: bool = False, num_data: Optional[int] = None):
        self.x = x
        self.fields = {k: v for k, v in (fields or {}).items() if v is not None}
        for name, values in self.fields.items():
            if name == "x" or len(values) != len(x):
                raise DataError(f"batch field {name!r} has {len(values)} rows but x has {len(x)}; give one per data point")
        self.batch_size = batch_size
        self.with_index = bool(with_index)
        self.controls = {"num_data": int(num_data)} if with_index and num_data is not None else {}
        self.known_rows = self.unknown_rows = None
        values = self.fields.get(needs.field) if needs is not None else None
        if values is not None:
            known = (values >= 0).to(x.device)
            if bool(known.any()) and not bool(known.all()):
                self.known_rows = known.nonzero().flatten()
                self.unknown_rows = (~known).nonzero().flatten()
                self.known_per_step = int(needs.per_step)
                self.known_field = needs.field
        self.shuffle = shuffle
        self.dynamic_binarize = dynamic_binarize
        self.rank, self.world_size = rank, world_size
        self.device = canonical_device(device if device is not None else x.device)
        self.reader = reader
        self.generator = torch.Generator(device=x.device).manual_seed(seed)
        if world_size == 1 and self.device == canonical_device(x.device):
            self.noise_generator = self.generator
        else:
            seed2 = noise_seed if noise_seed is not None else seed + rank + 1
            self.noise_generator = torch.Generator(device=self.device).manual_seed(seed2)

    @property
    def mixes_known(self) -> bool:
        """Whether batches join points with the field unknown and known (see ``needs``)."""
        return self.known_rows is not None

    def points(self, batch: Dict[str, torch.Tensor]) -> float:
        """How many data points ``batch`` stands for in a per-point loss:
        its size; N with the ``index`` field (the data plate subsamples the N
        training points); or when it mixes known and unknown points
        B_u · N / N_u (the objective weighs the known points to estimate the
        whole data set's loss from the B_u unknown ones; see
        ``pyrovae.infer.enumerated.EnumeratedObjective``)."""
        if self.with_index:
            return len(self.x)
        if not self.mixes_known:
            return len(batch["x"])
        unknown = int((batch[self.known_field] < 0).sum())
        return unknown * len(self.x) / len(self.unknown_rows)

    def _rows(self) -> int:
        """Rows one epoch passes over: the unknown ones when batches mix."""
        return len(self.unknown_rows) if self.mixes_known else len(self.x)

    def __len__(self):
        n, b, w = self._rows(), self.batch_size, self.world_size
        full, tail = divmod(n, b)
        return full + (1 if tail >= w else 0)  # w = 1: ceil(n / b)

    @property
    def points_per_epoch(self) -> int:
        """Points this rank sees in one epoch."""
        n, b, w, r = self._rows(), self.batch_size, self.world_size, self.rank
        full, tail = divmod(n, b)
        own = lambda size: len(range(r, size, w))  # noqa: E731
        extra = len(self) * own(self.known_per_step) if self.mixes_known else 0
        return full * own(b) + (own(tail) if tail >= w else 0) + extra

    def state_dict(self) -> dict:
        """The random state that the next batches depend on: the shuffling
        generator's (``generator``, ``generator_device``) and, where the
        binarization draws from a generator of its own, that one's
        (``noise``, ``noise_device``). An epoch begun after
        :meth:`load_state_dict` of it yields the batches this object's next
        epoch would.

        Example::

            saved = batches.state_dict()          # at the end of an epoch
            other.load_state_dict(saved)          # other's next epoch: batches' next epoch
        """
        state = {"generator": self.generator.get_state(), "generator_device": str(self.generator.device)}
        if self.noise_generator is not self.generator:
            state.update(noise=self.noise_generator.get_state(), noise_device=str(self.noise_generator.device))
        return state

    def load_state_dict(self, state: dict, seed: int = 0) -> None:
        """Restore a :meth:`state_dict`. A generator saved on another device
        type starts afresh from ``seed`` (the noise generator from
        ``seed + 1``), and so does a noise generator of this object's own
        whose state ``state`` lacks (its writer drew the binarization from
        the shuffling generator); each with a warning, as the batches then
        differ from an uninterrupted run's."""
        import warnings

        from ..rng import restore_generator

        restore_generator(self.generator, state["generator"], state.get("generator_device"), seed, "shuffling")
        if self.noise_generator is self.generator:
            return
        if "noise" in state:
            restore_generator(self.noise_generator, state["noise"], state.get("noise_device"), seed + 1, "binarization")
            return
        self.noise_generator.manual_seed(seed + 1)
        warnings.warn("the checkpoint's run drew its binarization noise from the shuffling generator and this one "
                      "has a generator of its own (another device): it starts afresh, so the run is not bitwise "
                      "identical to an uninterrupted one")

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        if self.reader is None and self.device == canonical_device(self.x.device):
            return self._in_memory()
        return self._streamed()

    def _order(self, n: int) -> torch.Tensor:
        device = self.x.device
        if self.shuffle:
            return torch.randperm(n, generator=self.generator, device=device)
        return torch.arange(n, device=device)

    def _indices(self) -> Iterator[torch.Tensor]:
        """The rows of each of this rank's batches in one epoch."""
        rank, world = self.rank, self.world_size
        if not self.mixes_known:
            order = self._order(len(self.x))
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield idx if world == 1 else idx[rank::world]
            return
        order = self.unknown_rows[self._order(len(self.unknown_rows))]
        per_step = self.known_per_step
        need, have = len(self) * per_step, len(self.known_rows)
        stream = torch.cat([self.known_rows[self._order(have)] for _ in range(-(-need // have))])
        for i, start in enumerate(range(0, len(self) * self.batch_size, self.batch_size)):
            known = stream[i * per_step : (i + 1) * per_step]
            idx = torch.cat([order[start : start + self.batch_size], known])
            yield idx if world == 1 else idx[rank::world]

    def _binarize(self, batch: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(batch.shape, generator=self.noise_generator, device=batch.device)
        return (noise < batch).to(batch.dtype)

    def _in_memory(self) -> Iterator[Dict[str, torch.Tensor]]:
        for idx in self._indices():
            batch = self.x[idx]
            if self.dynamic_binarize:
                batch = self._binarize(batch)
            yield self._with_fields(batch, idx)

    def _streamed(self) -> Iterator[Dict[str, torch.Tensor]]:
        """Mapped data (or data on another device): each batch's rows are
        read in ascending order on the host, then copied to ``device``."""
        read = self.reader if self.reader is not None else self.x.__getitem__
        for idx in self._indices():
            idx = idx.sort().values
            batch = read(idx).to(self.device, non_blocking=True)
            if self.dynamic_binarize:
                batch = self._binarize(batch)
            yield self._with_fields(batch, idx)

    def _with_fields(self, batch: torch.Tensor, idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {"x": batch}
        for name, values in self.fields.items():
            out[name] = values[idx.to(values.device)].to(self.device, non_blocking=True)
        if self.with_index:
            out["index"] = idx.to(self.device, non_blocking=True)
            out.update(self.controls)
        return out


def label_fields(x: torch.Tensor, labels: Optional[torch.Tensor], names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The batch fields of a split's ``(x, labels)`` pair for a model that
    takes the fields ``names``: ``{"x": x}``, plus ``"y": labels`` when
    ``names`` holds ``"y"`` and some label is given (sources mark a missing
    label with -1; a split with no label at all gives no ``y``).

    Example::

        label_fields(x, splits.test[1], ("x", "y"))   # {"x": x, "y": labels}
    """
    fields = {"x": x}
    if labels is not None and "y" in names and bool((labels >= 0).any()):
        fields["y"] = labels
    return fields
