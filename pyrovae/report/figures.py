"""The figures of a trained model, written as PNGs, or as text files for a
model that shows its data as text (the ``to_text`` capability).

:data:`FIGURES` maps each figure's file stem to a builder that computes
its tensors from a :class:`PlotInputs` (the model, test inputs and labels,
metrics records, a seed) and draws them with :mod:`pyrovae.plots`.
A builder returns a Figure, a :class:`TextFigure`, or a string saying why
its figure does not apply (the 2-D manifold of a 50-D latent, training
curves without metrics, images of data that are not images). Builders read
the model only through its capabilities (:mod:`pyrovae.models.protocol`;
:data:`FIGURE_NEEDS` lists each figure's), and each seeds its own draws, so
a figure does not depend on which others were drawn.

:func:`write_plots` writes all of them (``pyrovae plot``);
:func:`write_figures` writes reconstructions and samples at the end of
training (and interpolations, for a text model).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..models.base import eval_mode, model_device, model_fields
from ..models.protocol import MissingCapability, capability, has_capability
from . import plots
from .figure_needs import FIGURE_NEEDS, LATENT_NEEDS, figure_needs, has_latent, not_applicable
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

__all__ = ["PlotInputs", "TextFigure", "FIGURES", "FIGURE_NEEDS", "LATENT_NEEDS", "figure_needs", "not_applicable",
           "write_plots", "write_figures", "EpochFigures"]


@dataclass
class TextFigure:
    """A figure of a model that shows its data as text: a title and lines,
    written as ``NAME.txt``."""

    title: str
    lines: List[str]

    def render(self) -> str:
        """The file's text: the title, a blank line, the lines."""
        return "\n".join([self.title, "", *self.lines]) + "\n"


@dataclass
class PlotInputs:
    """What the figure builders draw from.

    :ivar vae: the trained model (in eval mode).
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
    def data_shape(self) -> Tuple[int, ...]:
        return tuple(capability(self.vae, "data_shape", "figures of the data"))

    @property
    def value_range(self) -> Tuple[float, float]:
        """The likelihood's value range, or for a model without a likelihood the test inputs' range."""
        if has_capability(self.vae, "likelihood"):
            return tuple(self.vae.likelihood.value_range)
        lo, hi = float(self.x.min()), float(self.x.max())
        return lo, hi if hi > lo else lo + 1.0

    @property
    def conditional(self) -> bool:
        """Whether the model's networks read a label ``y`` (cvae, m2)."""
        return "y" in model_fields(self.vae)

    @property
    def label_conditional(self) -> bool:
        """Whether ``y`` is a class label the figures can vary (the ``num_classes`` capability)."""
        return self.conditional and has_capability(self.vae, "num_classes")

    def test_labels(self, n: Optional[int] = None) -> Optional[torch.Tensor]:
        """Labels of the first ``n`` test inputs for a conditional model: the
        data's, or where it has none the model's classifier's (M2); None for
        an unconditional model."""
        if not self.conditional:
            return None
        x = self.x[:n]
        labels = self.labels[:n] if self.labels is not None else None
        if labels is None or bool((labels < 0).any()):
            classify = capability(self.vae, "classify", "figures of a conditional model on data without labels")
            labels = classify(x.to(model_device(self.vae))).cpu()
        return labels

    def fields(self, labels: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``{"y": labels}`` on the model's device, or ``{}`` for no labels."""
        return {} if labels is None else {"y": labels.to(model_device(self.vae))}

    def decode_mean(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """E[x|z] (E[x|z,y] for a conditional model, ``y`` broadcasting
        against ``z``'s batch dims) for codes ``(*batch, latent_dim)``:
        ``(*batch, *data_shape)`` on the CPU (the ``decode_mean`` capability)."""
        decode = capability(self.vae, "decode_mean", "figures of the latent space")
        with torch.no_grad():
            return decode(z.to(model_device(self.vae)), **self.fields(y)).cpu()

    def codes(self, n: Optional[int] = None) -> torch.Tensor:
        """Posterior means of the first ``n`` test inputs, ``(n, latent_dim)``."""
        return encode_data(self.vae, self.x[:n], seed=self.seed, **self.fields(self.test_labels(n)))["mean"]

    def text(self, x: torch.Tensor) -> List[str]:
        """Data points ``(N, *data_shape)`` as ``N`` strings (the ``to_text`` capability)."""
        return list(capability(self.vae, "to_text", "text figures")(x))


def _images(text_builder: Optional[Callable[[PlotInputs], Any]] = None):
    """Make an image builder say why not, instead of drawing, for data that
    are not images; for a model with ``to_text``, build ``text_builder``'s
    text figure instead (or say that the figure is for images only)."""

    def wrap(builder):
        @functools.wraps(builder)
        def wrapped(inp: PlotInputs):
            if has_capability(inp.vae, "to_text"):
                if text_builder is None:
                    return "the model shows its data as text; this figure is drawn for images only"
                return text_builder(inp)
            return plots.image_shape_problem(inp.data_shape) or builder(inp)

        return wrapped

    return wrap


def _reconstructed(inp: PlotInputs, n: int = 32):
    """The first ``n`` test inputs and E[x | code(x)], both ``(n, *data_shape)`` on the CPU."""
    x = inp.x[:n]
    reconstruct = capability(inp.vae, "reconstruct", "the reconstructions figure")
    with torch.no_grad():
        return x, reconstruct(x.to(model_device(inp.vae)), **inp.fields(inp.test_labels(n))).cpu()


def _reconstructions_text(inp: PlotInputs):
    x, x_rec = _reconstructed(inp)
    lines = []
    for a, b in zip(inp.text(x), inp.text(x_rec)):
        lines += [f"input:  {a}", f"recon.: {b}", ""]
    return TextFigure("Test inputs and their reconstructions", lines)


@_images(_reconstructions_text)
def reconstructions(inp: PlotInputs):
    """The first 32 test inputs above E[x | code(x)]."""
    x, x_rec = _reconstructed(inp)
    return plots.reconstruction_figure(x, x_rec, inp.value_range, title="Test inputs and their reconstructions")


def _samples_title(inp: PlotInputs) -> str:
    if not has_latent(inp.vae, inp.x):
        return f"{inp.num_samples} draws from the model"
    return f"{inp.num_samples} samples from the prior (decoder means)"


def _drawn(inp: PlotInputs) -> torch.Tensor:
    """Decoder means at prior codes; draws for a model without a latent code,
    whose decoder means are all one point."""
    return draw_samples(inp.vae, inp.num_samples, seed=inp.seed, mean=has_latent(inp.vae, inp.x)).cpu()


def _samples_text(inp: PlotInputs):
    return TextFigure(_samples_title(inp), inp.text(_drawn(inp)))


@_images(_samples_text)
def samples(inp: PlotInputs):
    """``num_samples`` decoder means E[x|z], z ~ p(z) (draws from a model without a latent code)."""
    return plots.samples_figure(_drawn(inp), inp.value_range, title=_samples_title(inp))


def latent_scatter(inp: PlotInputs):
    """Posterior means of up to ``max_points`` test inputs, coloured by label."""
    labels = inp.labels[: inp.max_points] if inp.labels is not None else None
    return plots.latent_scatter_figure(inp.codes(inp.max_points), labels, title="Latent means of the test set")


def _first_label(inp: PlotInputs) -> Optional[torch.Tensor]:
    first = inp.test_labels(1)
    return None if first is None else first[0]


@_images()
def manifold(inp: PlotInputs):
    """E[x|z] over a ``grid_size``² grid of prior quantiles 0.05..0.95 (2-D latents only)."""
    values = prior_quantiles(inp.vae, torch.linspace(0.05, 0.95, inp.grid_size), seed=inp.seed)
    if values.shape[-1] != 2:
        return f"the latent is {values.shape[-1]}-D; the manifold grid needs a 2-D latent"
    images = inp.decode_mean(manifold_codes(values), _first_label(inp))
    return plots.manifold_figure(images, values[:, 0], values[:, 1].flip(0), inp.value_range,
                                 title="The learned 2-D manifold (grid over prior quantiles 0.05-0.95)")


@_images()
def traversals(inp: PlotInputs):
    """Starting from the code of the first test input, each of the most active
    dimensions (variance of the posterior means) runs through prior quantiles 0.03..0.97."""
    codes = inp.codes(inp.max_points)
    activity = latent_activity(codes)
    dims = activity.argsort(descending=True)[: inp.max_traversal_dims].sort().values.tolist()
    levels = torch.linspace(0.03, 0.97, inp.steps)
    values = prior_quantiles(inp.vae, levels, seed=inp.seed)
    images = inp.decode_mean(traversal_codes(codes[0], values, dims), _first_label(inp))
    d = codes.shape[-1]
    which = "all dimensions" if len(dims) == d else f"the {len(dims)} most active of {d} dimensions"
    return plots.traversal_figure(images, dims, levels.tolist(), inp.value_range, title=f"Latent traversals ({which})")


def _interpolated(inp: PlotInputs, pairs: int):
    """``(x_a, x_b, decoded)``: test inputs ``i`` and ``pairs + i`` and E[x|z]
    along the line between their codes, ``(P, steps, *data_shape)``; or why not."""
    pairs = min(pairs, len(inp.x) // 2)
    if pairs == 0:
        return "interpolations need at least two test points"
    codes = inp.codes(2 * pairs)
    labels = inp.test_labels(pairs)  # each row is decoded with the label of its first input
    path = interpolation_codes(codes[:pairs], codes[pairs:], inp.steps)
    decoded = inp.decode_mean(path, None if labels is None else labels.reshape(pairs, *[1] * (path.dim() - 2)))
    return inp.x[:pairs], inp.x[pairs : 2 * pairs], decoded


def _interpolations_text(inp: PlotInputs, pairs: int = 6):
    got = _interpolated(inp, pairs)
    if isinstance(got, str):
        return got
    x_a, x_b, decoded = got
    steps = decoded.shape[1]
    texts = inp.text(decoded.reshape(-1, *decoded.shape[2:]))
    lines = []
    for p, (a, b) in enumerate(zip(inp.text(x_a), inp.text(x_b))):
        lines += [f"input A  {a}"]
        lines += [f"t={t:.2f}   {texts[p * steps + i]}" for i, t in enumerate(torch.linspace(0, 1, steps).tolist())]
        lines += [f"input B  {b}", ""]
    return TextFigure("Interpolations between the codes of test inputs A and B (decoder means)", lines)


@_images(_interpolations_text)
def interpolations(inp: PlotInputs, pairs: int = 6):
    """Straight lines between the codes of test inputs ``i`` and ``pairs + i``."""
    got = _interpolated(inp, pairs)
    if isinstance(got, str):
        return got
    return plots.interpolation_figure(*got, inp.value_range)


def _class_labels(inp: PlotInputs) -> torch.Tensor:
    return torch.arange(inp.vae.num_classes)


@_images()
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


@_images()
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


#: file stem -> builder(PlotInputs) -> Figure, TextFigure, or a string saying why it does not apply; in writing order
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
    ``out_dir/<name>.png`` (``<name>.txt`` for a text figure). Returns
    ``{name: path}``, or for a figure that does not apply to this model
    (:func:`not_applicable`, images of text, ...), or needs a capability it
    lacks, ``{name: "why not"}`` in one line; nothing raises for a missing
    capability."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Union[Path, str]] = {}
    with eval_mode(inp.vae):  # a model in training (EpochFigures) goes back to training
        for name in only or FIGURES:
            with seeded(inp.seed, model_device(inp.vae)):
                try:
                    fig = not_applicable(inp.vae, name, inp.x) or FIGURES[name](inp)
                except MissingCapability as e:
                    fig = str(e)
            if isinstance(fig, str):
                written[name] = fig
                continue
            if isinstance(fig, TextFigure):
                path = out_dir / f"{name}.txt"
                path.write_text(fig.render())
            else:
                path = out_dir / f"{name}.png"
                plots.save_figure(fig, path)
            written[name] = path
    return written


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


@torch.no_grad()
def write_figures(vae, splits, run_dir, n: int = 64, seed: int = 0,
                  say: Optional[Callable[[str], None]] = None) -> List[Path]:
    """Write ``reconstructions.png`` (test inputs above their reconstructions)
    and ``samples.png`` (``n`` samples from the prior) into ``run_dir``; for
    a model with ``to_text``, ``reconstructions.txt``, ``samples.txt`` and
    ``interpolations.txt`` instead. Returns the files written. What cannot
    be drawn (a missing capability, data that are not images) is skipped
    with one message per reason, handed to ``say`` (default: a warning);
    nothing raises for a missing capability.

    Example::

        for path in write_figures(vae, splits, run_dir, say=print):
            print("wrote", path)
    """
    x, y = splits.test if len(splits.test[0]) else splits.train
    inp = PlotInputs(vae, x[:32], y[:32] if y is not None else None, seed=seed, num_samples=n)
    names = ["reconstructions", "samples"] + (["interpolations"] if has_capability(vae, "to_text") else [])
    written = write_plots(inp, run_dir, only=names)
    skipped: Dict[str, List[str]] = {}
    for name, result in written.items():
        if isinstance(result, str):
            skipped.setdefault(result, []).append(name)
    for reason, which in skipped.items():
        (say or _warn)(f"no {' or '.join(which)} figure: {reason}")
    return [p for p in written.values() if isinstance(p, Path)]


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
