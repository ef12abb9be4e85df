"""The figures of a trained VAE, written as PNGs.

:data:`FIGURES` maps each figure's file stem to a builder that computes
its tensors from a :class:`PlotInputs` (the VAE, test inputs and labels,
metrics records, a seed) and draws them with :mod:`pyrovae.plots`.
A builder returns a Figure, or a string saying why its figure does not apply
(the 2-D manifold of a 50-D latent, training curves without metrics, images
of data that are not images). Each builder seeds its own draws, so a figure
does not depend on which others were drawn.

:func:`write_plots` writes all of them (``pyrovae plot``);
:func:`write_figures` writes reconstructions and samples at the end of
training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

from ..models.base import eval_mode, model_device, model_fields, require
from . import plots
from .latents import (
    draw_samples,
    encode_data,
    interpolation_codes,
    latent_activity,
    manifold_codes,
    prior_draws as draw_prior,
    prior_quantiles,
    seeded,
    traversal_codes,
)

__all__ = ["PlotInputs", "FIGURES", "write_plots", "write_figures", "EpochFigures"]


@dataclass
class PlotInputs:
    """What the figure builders draw from.

    :ivar vae: the trained :class:`~pyrovae.model.VAE` (in eval mode).
    :ivar x: test inputs ``(N, *data_shape)``.
    :ivar labels: their labels ``(N,)`` (``-1``: none).
    :ivar records: metrics records (``metrics.jsonl``), oldest first.
    :ivar seed: seeds every random draw.
    :ivar num_samples: samples in the samples figure.
    :ivar max_points: test points in the latent scatter.
    :ivar max_traversal_dims: rows of the traversal figure (the most active dimensions).
    :ivar steps: columns of traversals and interpolations.
    :ivar grid_size: points per side of the 2-D manifold.
    """

    vae: Any
    x: torch.Tensor
    labels: Optional[torch.Tensor] = None
    records: Sequence[Mapping[str, Any]] = field(default_factory=list)
    seed: int = 0
    num_samples: int = 64
    max_points: int = 2000
    max_traversal_dims: int = 10
    steps: int = 9
    grid_size: int = 15

    @property
    def value_range(self):
        return self.vae.likelihood.value_range

    @property
    def conditional(self) -> bool:
        """Whether the model's networks read a label ``y`` (cvae, m2)."""
        return "y" in model_fields(self.vae)

    @property
    def label_conditional(self) -> bool:
        """Whether ``y`` is a class label the figures can vary."""
        condition = getattr(self.vae, "condition", None)
        return self.conditional and condition is not None and condition.is_label

    def test_labels(self, n: Optional[int] = None) -> Optional[torch.Tensor]:
        """Labels of the first ``n`` test inputs for a conditional model: the
        data's, or where it has none the model's classifier's (M2); None for
        an unconditional model."""
        if not self.conditional:
            return None
        x = self.x[:n]
        labels = self.labels[:n] if self.labels is not None else None
        if labels is None or bool((labels < 0).any()):
            classify = require(self.vae, "classify", "figures of a conditional model on data without labels")
            labels = classify(x.to(model_device(self.vae))).cpu()
        return labels

    def decode_mean(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """E[x|z] (E[x|z,y] for a conditional model, ``y`` broadcasting
        against ``z``'s batch dims) for codes ``(*batch, latent_dim)``:
        ``(*batch, *data_shape)`` on the CPU."""
        vae = self.vae
        with torch.no_grad():
            z = z.to(model_device(vae))
            if not self.conditional:
                return vae.likelihood.mean(vae.decoder(z)).cpu()
            return vae.likelihood.mean(vae.decoder(z, vae.condition(y.to(z.device), z))).cpu()

    def codes(self, n: Optional[int] = None) -> torch.Tensor:
        """Posterior means of the first ``n`` test inputs, ``(n, latent_dim)``."""
        labels = self.test_labels(n)
        fields = {} if labels is None else {"y": labels}
        return encode_data(self.vae, self.x[:n], seed=self.seed, **fields)["mean"]


def _needs_images(builder):
    """Make ``builder`` say why not, instead of drawing, for data that are not images."""

    @functools.wraps(builder)
    def wrapped(inp: PlotInputs):
        return plots.image_shape_problem(inp.vae.data_shape) or builder(inp)

    return wrapped


@_needs_images
def reconstructions(inp: PlotInputs):
    """The first 32 test inputs above E[x | code(x)]."""
    x = inp.x[:32]
    labels = inp.test_labels(32)
    fields = {} if labels is None else {"y": labels.to(model_device(inp.vae))}
    with torch.no_grad():
        x_rec = inp.vae.reconstruct(x.to(model_device(inp.vae)), **fields).cpu()
    return plots.reconstruction_figure(x, x_rec, inp.value_range, title="Test inputs and their reconstructions")


@_needs_images
def samples(inp: PlotInputs):
    """``num_samples`` decoder means E[x|z], z ~ p(z)."""
    s = draw_samples(inp.vae, inp.num_samples, seed=inp.seed).cpu()
    return plots.samples_figure(s, inp.value_range, title=f"{inp.num_samples} samples from the prior (decoder means)")


def latent_scatter(inp: PlotInputs):
    """Posterior means of up to ``max_points`` test inputs, coloured by label."""
    labels = inp.labels[: inp.max_points] if inp.labels is not None else None
    return plots.latent_scatter_figure(inp.codes(inp.max_points), labels, title="Latent means of the test set")


@_needs_images
def manifold(inp: PlotInputs):
    """E[x|z] over a ``grid_size``² grid of prior quantiles 0.05..0.95 (2-D latents only)."""
    if inp.vae.latent_dim != 2:
        return f"the latent is {inp.vae.latent_dim}-D; the manifold grid needs a 2-D latent"
    levels = torch.linspace(0.05, 0.95, inp.grid_size)
    values = prior_quantiles(inp.vae, levels, seed=inp.seed)
    first = inp.test_labels(1)
    images = inp.decode_mean(manifold_codes(values), None if first is None else first[0])
    return plots.manifold_figure(images, values[:, 0], values[:, 1].flip(0), inp.value_range,
                                 title="The learned 2-D manifold (grid over prior quantiles 0.05-0.95)")


@_needs_images
def traversals(inp: PlotInputs):
    """Starting from the code of the first test input, each of the most active
    dimensions (variance of the posterior means) runs through prior quantiles 0.03..0.97."""
    codes = inp.codes(inp.max_points)
    activity = latent_activity(codes)
    dims = activity.argsort(descending=True)[: inp.max_traversal_dims].sort().values.tolist()
    levels = torch.linspace(0.03, 0.97, inp.steps)
    values = prior_quantiles(inp.vae, levels, seed=inp.seed)
    first = inp.test_labels(1)
    images = inp.decode_mean(traversal_codes(codes[0], values, dims), None if first is None else first[0])
    d = inp.vae.latent_dim
    which = "all dimensions" if len(dims) == d else f"the {len(dims)} most active of {d} dimensions"
    return plots.traversal_figure(images, dims, levels.tolist(), inp.value_range, title=f"Latent traversals ({which})")


@_needs_images
def interpolations(inp: PlotInputs, pairs: int = 6):
    """Straight lines between the codes of test inputs ``i`` and ``pairs + i``."""
    pairs = min(pairs, len(inp.x) // 2)
    if pairs == 0:
        return "interpolations need at least two test points"
    x_a, x_b = inp.x[:pairs], inp.x[pairs : 2 * pairs]
    codes = inp.codes(2 * pairs)
    labels = inp.test_labels(pairs)  # each row is decoded with the label of its first input
    path = interpolation_codes(codes[:pairs], codes[pairs:], inp.steps)
    images = inp.decode_mean(path, None if labels is None else labels.reshape(pairs, *[1] * (path.dim() - 2)))
    return plots.interpolation_figure(x_a, x_b, images, inp.value_range)


def _class_labels(inp: PlotInputs) -> torch.Tensor:
    return torch.arange(inp.vae.condition.num_classes)


@_needs_images
def class_samples(inp: PlotInputs, per_class: int = 10):
    """A row of ``per_class`` samples for each class: E[x | z, y] with
    z ~ p(z) (one column shares its z), y the row's class."""
    if not inp.label_conditional:
        return "the model is not conditioned on a class label"
    classes = _class_labels(inp)
    z = draw_prior(inp.vae, per_class)  # (per_class, latent_dim)
    images = inp.decode_mean(z.unsqueeze(0), classes.reshape(-1, 1))  # (C, per_class, *data_shape)
    return plots.image_rows_figure(images, title="Class-conditional samples: one class per row, one z per column",
                                   row_labels=[str(c) for c in classes.tolist()], value_range=inp.value_range)


@_needs_images
def analogies(inp: PlotInputs, rows: int = 8):
    """Kingma et al.'s (2014) Figure 1: the style z of test inputs (the mean
    of q(z | x, y) at their label) decoded with every class y in turn; the
    first column is the input."""
    if not inp.label_conditional:
        return "the model is not conditioned on a class label"
    rows = min(rows, len(inp.x))
    z = inp.codes(rows)  # (rows, latent_dim)
    classes = _class_labels(inp)
    images = inp.decode_mean(z.unsqueeze(1), classes.reshape(1, -1))  # (rows, C, *data_shape)
    grid = torch.cat([inp.x[:rows].unsqueeze(1).cpu().to(images.dtype), images], 1)
    return plots.image_rows_figure(grid, title="Analogies: the style of each input (left) with every class y",
                                   col_labels=["input"] + [str(c) for c in classes.tolist()], value_range=inp.value_range)


def training_curves(inp: PlotInputs):
    """Losses and validation terms from the metrics records."""
    if not inp.records:
        return "there are no metrics records (metrics.jsonl)"
    return plots.training_curves_figure(inp.records)


#: file stem -> builder(PlotInputs) -> Figure, or a string saying why it does not apply; in writing order
FIGURES: Dict[str, Callable[[PlotInputs], Any]] = {
    "reconstructions": reconstructions,
    "samples": samples,
    "latent_scatter": latent_scatter,
    "manifold": manifold,
    "traversals": traversals,
    "interpolations": interpolations,
    "class_samples": class_samples,
    "analogies": analogies,
    "training_curves": training_curves,
}


@torch.no_grad()
def write_plots(inp: PlotInputs, out_dir, only: Optional[Sequence[str]] = None) -> Dict[str, Union[Path, str]]:
    """Write the figures of :data:`FIGURES` (or those named in ``only``) as
    ``out_dir/<name>.png``. Returns ``{name: path}``, or for a figure that
    does not apply to this model ``{name: "why not"}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Union[Path, str]] = {}
    with eval_mode(inp.vae):  # a model in training (EpochFigures) goes back to training
        for name in only or FIGURES:
            with seeded(inp.seed, model_device(inp.vae)):
                fig = FIGURES[name](inp)
            if isinstance(fig, str):
                written[name] = fig
                continue
            path = out_dir / f"{name}.png"
            plots.save_figure(fig, path)
            written[name] = path
    return written


@torch.no_grad()
def write_figures(vae, splits, run_dir, n: int = 64, seed: int = 0) -> List[Path]:
    """Write ``reconstructions.png`` (test inputs above their reconstructions)
    and ``samples.png`` (``n`` samples from the prior) into ``run_dir``."""
    x, y = splits.test if len(splits.test[0]) else splits.train
    inp = PlotInputs(vae, x[:32], y[:32], seed=seed, num_samples=n)
    return [p for p in write_plots(inp, run_dir, only=["reconstructions", "samples"]).values() if isinstance(p, Path)]


class EpochFigures:
    """A trainer callback (``train.sample_every: N``; built by
    :func:`~pyrovae.training.callbacks.callbacks_from_config`): reconstructions
    and samples every N epochs into ``RUN_DIR/figures/epoch-NNNN/``. The
    samples use a forked RNG, so the training run is unchanged."""

    def __init__(self, run_dir, every: int):
        self.out = Path(run_dir) / "figures"
        self.every = every

    def on_epoch_end(self, trainer, record) -> None:
        if record["epoch"] % self.every == 0:
            write_figures(trainer.vae, trainer.splits, self.out / f"epoch-{record['epoch']:04d}")

    def on_train_end(self, trainer) -> None:
        pass
