"""Training callbacks, and the ones that the config asks for.

A callback is any object with two methods, which the
:class:`~pyrovae.training.trainer.Trainer` calls on every rank:

- ``on_epoch_end(trainer, record)``: after each epoch's checkpoint and
  metrics line; ``record`` is that epoch's metrics (``train_loss``,
  ``val_loss``, ... in nats per point). ``trainer.request_stop(reason)``
  ends training after it.
- ``on_train_end(trainer)``: once when :meth:`~pyrovae.Trainer.fit`
  returns or raises.

The caller builds the callbacks and hands them to the trainer; the trainer
builds none. :func:`callbacks_from_config` builds the ones the config names
(per-epoch figures for ``train.sample_every``, TensorBoard for
``train.tensorboard``); ``pyrovae train`` and :func:`pyrovae.train` use it.

Two jobs stay in the trainer and are not callbacks:

- ``metrics.jsonl`` is part of the run's record, not a report: it is
  written together with the checkpoint and rewritten from the checkpoint's
  history on resume, so that the two always agree. A callback that a
  caller could leave out would break that.
- The progress bar advances every step, and callbacks see epochs; it is
  ``Progress``, switched by ``train.progress`` and shown on the main
  rank only. Its one summary line per epoch is shown either way: turning
  the bar off (for a log file) should not hide the losses.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["callbacks_from_config", "Progress"]


def callbacks_from_config(cfg, run_dir, is_main: Optional[bool] = None) -> List[Any]:
    """The callbacks that ``cfg.train`` asks for, writing into ``run_dir``:

    - ``train.sample_every: N`` -> :class:`~pyrovae.report.figures.EpochFigures`
      (reconstructions and samples into ``RUN_DIR/figures/epoch-NNNN/``);
    - ``train.tensorboard: true`` ->
      :class:`~pyrovae.report.tensorboard.TensorBoardCallback`
      (``RUN_DIR/tensorboard``, images every ``sample_every`` epochs, 5 when 0).

    None when ``run_dir`` is None, or on ranks other than 0 of a
    data-parallel run (only rank 0 writes).

    :param is_main: whether this process writes; default: rank 0 of the
        job that torchrun describes (True without torchrun).
    """
    from . import distributed

    if is_main is None:
        is_main = distributed.env_context().is_main
    tc = cfg.train
    if run_dir is None or not is_main:
        return []
    callbacks: List[Any] = []
    if tc.sample_every:
        from ..report.figures import EpochFigures

        callbacks.append(EpochFigures(Path(run_dir), tc.sample_every))
    if tc.tensorboard:
        from ..report.tensorboard import TensorBoardCallback

        callbacks.append(TensorBoardCallback(Path(run_dir) / "tensorboard", image_every=tc.sample_every or 5))
    return callbacks


class Progress:
    """A per-epoch progress bar (points seen, running loss) and one line per
    epoch, on stderr through tqdm.

    :param bool enabled: this process writes (the main rank); else silent.
    :param int epochs: ``train.epochs``, for the bar's label.
    :param bool bar: show the bar (``train.progress``); the epoch lines and
        other messages are shown without it too.

    Example::

        progress = Progress(enabled=True, epochs=30, bar=False)   # lines only, for a log file
    """

    def __init__(self, enabled: bool, epochs: int, bar: bool = True):
        self.enabled = enabled
        self.epochs = epochs
        self.show_bar = bar

    def bar(self, epoch: int, points: int):
        """A bar for epoch ``epoch`` (1-based) of ``points`` points, or None."""
        if not (self.enabled and self.show_bar):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=points,
            desc=f"epoch {epoch}/{self.epochs}",
            unit="pt",
            unit_scale=True,
            leave=False,
            dynamic_ncols=True,
        )

    def log(self, message: str) -> None:
        """``message`` on stderr, above the bar (tqdm's own default is stdout)."""
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)

    def report(self, r: Dict[str, Any]) -> None:
        """One line for the metrics record ``r`` of an epoch."""
        val = f"  val {r['val_loss']:.3f} (rec {r['val_reconstruction']:.2f}, kl {r['val_kl']:.2f})" if "val_loss" in r else ""
        self.log(f"epoch {r['epoch']:>3}  train {r['train_loss']:.3f}{val}  {r['seconds']:.1f}s")
