"""TensorBoard logging as a training callback (``train.tensorboard: true``,
built by :func:`~pyrovae.training.callbacks.callbacks_from_config`;
``pip install 'pyrovae[tensorboard]'``).

:class:`TensorBoardCallback` writes every numeric field of each epoch's
metrics record as a scalar (``train_loss``, ``val_loss``,
``val_reconstruction``, ``val_kl``, ``beta``, ``lr``, ``seconds``, ...) and,
every ``image_every`` epochs and after the last one, a grid of samples
from the prior and one of inputs above their reconstructions (for image
data). View with
``tensorboard --logdir RUN_DIR/tensorboard``.

The trainer calls ``on_epoch_end(trainer, record)`` after each epoch and
``on_train_end(trainer)`` when training stops. Image draws run on a forked
and seeded random generator, so logging never changes the training run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..errors import ConfigError
from ..validators import is_number, positive_int
from ..models.base import eval_mode, model_device
from ..models.protocol import has_capability
from ..infer.seeds import seeded
from .latents import draw_samples
from .plots import as_images, image_grid, image_shape_problem

__all__ = ["TensorBoardCallback"]


class TensorBoardCallback:
    """Log a training run to TensorBoard.

    :param log_dir: where the event files go (e.g. ``RUN_DIR/tensorboard``).
    :param int image_every: log images every this many epochs (and after the last).
    :param int num_images: samples and reconstructions per grid.
    :param int seed: seed of the image draws (the same prior draws every time,
        so the sample grids show how the decoder changes).
    """

    def __init__(self, log_dir, image_every: int = 5, num_images: int = 32, seed: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard: true needs the tensorboard package: pip install 'pyrovae[tensorboard]' "
                "(or pip install tensorboard), or set train.tensorboard: false"
            ) from None
        image_every = positive_int(image_every, "image_every")
        self.log_dir = Path(log_dir)
        self.image_every = image_every
        self.num_images = num_images
        self.seed = seed
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_epoch_end(self, trainer, record: Dict[str, Any]) -> None:
        """Log ``record``'s numbers at step ``record["epoch"]``, and images
        every ``image_every`` epochs and after the last epoch."""
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and is_number(value) and math.isfinite(value):
                self.writer.add_scalar(key, value, epoch)
        images_due = epoch % self.image_every == 0 or epoch >= trainer.cfg.train.epochs
        if images_due and self._draws_images(trainer.vae):
            self.log_images(trainer.vae, self._inputs(trainer), epoch)
        self.writer.flush()

    def on_train_end(self, trainer=None) -> None:
        """Flush and close the event file."""
        self.writer.close()

    @staticmethod
    def _draws_images(vae) -> bool:
        """Whether ``vae`` has what the image grids read (samples and
        reconstructions of image-shaped data, not text)."""
        if has_capability(vae, "to_text") or not all(has_capability(vae, c) for c in ("sample", "reconstruct", "data_shape")):
            return False
        return image_shape_problem(vae.data_shape) is None

    def _inputs(self, trainer) -> torch.Tensor:
        x = trainer.val_batch["x"] if trainer.val_batch is not None else trainer.batches.x
        return x[: self.num_images]

    @torch.no_grad()
    def log_images(self, vae, x: torch.Tensor, step: int) -> None:
        """Log ``samples`` (from the prior) and ``reconstructions`` (``x``
        above its reconstruction) at ``step``."""
        with eval_mode(vae):
            # the likelihood's range, or for a model without a likelihood the inputs' own
            value_range = vae.likelihood.value_range if has_capability(vae, "likelihood") else (float(x.min()), max(float(x.max()), float(x.min()) + 1.0))
            samples = draw_samples(vae, self.num_images, seed=self.seed)
            self._add_grid("samples", as_images(samples, value_range), step)
            with seeded(self.seed, model_device(vae)):
                rec = vae.reconstruct(x)
            nrow = min(8, len(x))
            n = len(x) // nrow * nrow
            inputs, outputs = as_images(x[:n], value_range), as_images(rec[:n], value_range)
            rows = [part for s in range(0, n, nrow) for part in (inputs[s : s + nrow], outputs[s : s + nrow])]
            self._add_grid("reconstructions", torch.cat(rows), step, nrow)

    def _add_grid(self, tag: str, images: torch.Tensor, step: int, nrow: Optional[int] = None) -> None:
        nrow = nrow or math.ceil(math.sqrt(len(images)))
        grid = image_grid(images, nrow)
        self.writer.add_image(tag, grid.numpy(), step, dataformats="HWC" if grid.dim() == 3 else "HW")
