"""Matplotlib figures. Each function takes tensors (or, for training
curves, the metrics records) and returns a :class:`matplotlib.figure.Figure`;
nothing here reads or writes run directories, so scripts can use them too.

Images are data points ``(N, *data_shape)`` with values in ``value_range``
(the likelihood's, e.g. ``(0, 1)`` or ``(0, 255)``): ``(C, H, W)`` with one
or three channels, ``(H, W)``, or flat data of a square size (784 -> 28x28).
Figures are made without pyplot (no global state) at 100 dpi, so a figure
of ``w x h`` inches saves as a ``100w x 100h`` pixel PNG. The figures of the
inference gaps are in :mod:`pyrovae.report.inference_plots`.
"""

from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import DataError

__all__ = [
    "image_shape_problem",
    "as_images",
    "image_grid",
    "image_rows_figure",
    "samples_figure",
    "reconstruction_figure",
    "latent_scatter_figure",
    "manifold_figure",
    "traversal_figure",
    "interpolation_figure",
    "imputation_figure",
    "training_curves_figure",
    "side_by_side_figure",
    "is_vs_ais_figure",
    "save_figure",
]

DPI = 100
#: colour of hidden pixels in imputation figures (RGB in [0, 1])
MISSING_COLOUR = (0.85, 0.25, 0.2)


def new_figure(width: float, height: float):
    """An empty :class:`~matplotlib.figure.Figure` of ``width x height`` inches
    (rounded to whole pixels at :data:`DPI`), made without pyplot."""
    from matplotlib.figure import Figure

    # whole pixels, so the PNG is exactly figsize * DPI
    return Figure(figsize=(round(width * DPI) / DPI, round(height * DPI) / DPI), dpi=DPI)


def image_shape_problem(data_shape) -> Optional[str]:
    """``None`` if data points of ``data_shape`` can be drawn as images,
    else why not: images are ``(1 or 3, H, W)``, ``(H, W)`` or flat of a
    square size (784 -> 28x28)."""
    data_shape = tuple(data_shape)
    if len(data_shape) == 1 and math.isqrt(data_shape[0]) ** 2 == data_shape[0]:
        return None
    if len(data_shape) == 2 or (len(data_shape) == 3 and data_shape[0] in (1, 3)):
        return None
    return f"data points of shape {data_shape} cannot be drawn as images"


def as_images(x: torch.Tensor, value_range: Tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """``(N, *data_shape)`` -> ``(N, H, W)`` or ``(N, H, W, 3)`` in [0, 1].

    Flat data of a square size (784) is shown as a square image.

    :raises DataError: for data that are not images (see :func:`image_shape_problem`).
    """
    problem = image_shape_problem(x.shape[1:])
    if problem:
        raise DataError(problem)
    x = x.detach().float().cpu()
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        return x.reshape(-1, side, side)
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1)
    return x


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> torch.Tensor:
    """Tile ``(N, H, W[, 3])`` images into one ``(rows*(H+pad)+pad, nrow*(W+pad)+pad[, 3])``
    array, row by row, on a white background."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / nrow)
    grid = torch.ones(rows * (h + pad) + pad, nrow * (w + pad) + pad, *images.shape[3:])
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = images[i]
    return grid


def _show(ax, grid: torch.Tensor, title: str):
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid_size(grid: torch.Tensor, width: float, extra_height: float = 0.6) -> Tuple[float, float]:
    """A figure size of ``width`` inches whose height keeps the grid's aspect."""
    return width, width * grid.shape[0] / grid.shape[1] + extra_height


def _rgb(images: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` grey or ``(N, H, W, 3)`` -> ``(N, H, W, 3)``."""
    return images if images.dim() == 4 else images[..., None].expand(*images.shape, 3)


def image_rows_figure(
    rows: torch.Tensor,
    title: str,
    value_range=(0.0, 1.0),
    row_labels: Optional[Sequence[str]] = None,
    col_labels: Optional[Sequence[str]] = None,
    xlabel: Optional[str] = None,
    ylabel: Optional[str] = None,
    width: float = 7.0,
):
    """Rows of images with labelled rows and columns.

    :param torch.Tensor rows: ``(R, C, *data_shape)`` data in ``value_range``.
    :param row_labels: ``R`` strings; ``col_labels``: ``C`` strings.
    """
    n_rows, n_cols = rows.shape[:2]
    images = as_images(rows.reshape(n_rows * n_cols, *rows.shape[2:]), value_range)
    return _rows_figure(images, n_cols, title, row_labels, col_labels, xlabel, ylabel, width)


def _rows_figure(images, n_cols, title, row_labels=None, col_labels=None, xlabel=None, ylabel=None, width=7.0):
    """Images ``(R*C, H, W[, 3])`` in [0, 1], ``n_cols`` per row, with labels."""
    pad = 1
    grid = image_grid(images, n_cols, pad)
    h, w = images.shape[1:3]
    # the image takes the width left by the row labels; the height follows its aspect
    image_width = width - (1.3 if row_labels is not None else 0.2) - (0.3 if ylabel else 0.0)
    extra = 0.6 + (0.25 if col_labels is not None else 0.0) + (0.25 if xlabel else 0.0)
    fig = new_figure(width, image_width * grid.shape[0] / grid.shape[1] + extra)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, grid, title)
    if row_labels is not None:
        ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(len(row_labels))], list(row_labels), fontsize=8)
    if col_labels is not None:
        ax.set_xticks([pad + c * (w + pad) + (w - 1) / 2 for c in range(n_cols)], list(col_labels), fontsize=7)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def samples_figure(samples: torch.Tensor, value_range=(0.0, 1.0), nrow: Optional[int] = None, title="Samples from the prior"):
    """A grid of samples ``(N, *data_shape)``."""
    images = as_images(samples, value_range)
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    grid = image_grid(images, nrow)
    fig = new_figure(*_grid_size(grid, 6))
    _show(fig.add_subplot(1, 1, 1), grid, title)
    fig.tight_layout()
    return fig


def reconstruction_figure(x: torch.Tensor, x_rec: torch.Tensor, value_range=(0.0, 1.0), nrow: int = 8, title="Reconstructions"):
    """Inputs ``(N, *data_shape)`` above their reconstructions (same shape),
    ``nrow`` per row; the row labels say which is which."""
    n = (len(x) // nrow) * nrow or len(x)
    nrow = min(nrow, n)
    pairs = torch.stack([x[:n].reshape(-1, nrow, *x.shape[1:]), x_rec[:n].reshape(-1, nrow, *x.shape[1:])], 1)
    rows = pairs.reshape(-1, nrow, *x.shape[1:])
    labels = ["input", "recon."] * (len(rows) // 2)
    return image_rows_figure(rows, title, value_range, row_labels=labels, width=6.5)


def latent_scatter_figure(codes: torch.Tensor, labels: Optional[torch.Tensor] = None, title: str = "Latent codes of the test set"):
    """Codes ``(N, latent_dim)`` as points coloured by ``labels`` ``(N,)``
    (``-1`` or ``None``: no labels). A 2-D latent is drawn directly, a
    larger one on its first two principal components (the axis labels give
    the share of variance each explains), a 1-D one against the label."""
    codes = codes.detach().float().cpu()
    n, d = codes.shape
    labels = None if labels is None else labels.detach().cpu().long()
    if labels is not None and bool((labels < 0).all()):
        labels = None
    if d == 1:
        xs = codes[:, 0]
        ys = (labels.float() if labels is not None else torch.zeros(n)) + 0.3 * (torch.rand(n, generator=torch.Generator().manual_seed(0)) - 0.5)
        xlabel, ylabel = "z1", "label (jittered)" if labels is not None else "jitter"
    elif d == 2:
        xs, ys = codes[:, 0], codes[:, 1]
        xlabel, ylabel = "z1", "z2"
    else:
        centred = codes - codes.mean(0)
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        proj = centred @ vh[:2].T
        share = (s**2 / (s**2).sum().clamp_min(1e-12))[:2]
        xs, ys = proj[:, 0], proj[:, 1]
        xlabel, ylabel = f"PC 1 ({100 * share[0]:.0f}% of variance)", f"PC 2 ({100 * share[1]:.0f}% of variance)"
        title = f"{title} ({d}-D latent, PCA)"
    fig = new_figure(6.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(xs.numpy(), ys.numpy(), s=6, alpha=0.6, color="tab:blue", linewidths=0)
    else:
        classes = torch.unique(labels).tolist()
        if len(classes) <= 10:
            for i, c in enumerate(classes):
                sel = labels == c
                ax.scatter(xs[sel].numpy(), ys[sel].numpy(), s=6, alpha=0.7, color=f"C{i}", label=str(c), linewidths=0)
            ax.legend(title="label", markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        else:
            points = ax.scatter(xs.numpy(), ys.numpy(), s=6, alpha=0.7, c=labels.numpy(), cmap="viridis", linewidths=0)
            fig.colorbar(points, ax=ax, label="label")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def _fmt(values) -> List[str]:
    return [f"{float(v):.2g}" for v in values]


def manifold_figure(images: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, value_range=(0.0, 1.0), title="The learned 2-D manifold"):
    """Decoded points of a grid over a 2-D latent.

    :param images: ``(n, n, *data_shape)``: row ``i`` decodes ``z2[i]``,
        column ``j`` decodes ``z1[j]`` (``z2`` decreasing down the rows; see
        :func:`~pyrovae.latents.manifold_codes`).
    :param z1: the ``n`` values along the columns.
    :param z2: the ``n`` values down the rows.
    """
    return image_rows_figure(images, title, value_range, row_labels=_fmt(z2), col_labels=_fmt(z1), xlabel="z1", ylabel="z2", width=7.5)


def traversal_figure(images: torch.Tensor, dims: Sequence[int], quantiles: Sequence[float], value_range=(0.0, 1.0), title="Latent traversals"):
    """One row per latent dimension: ``images`` ``(len(dims), steps, *data_shape)``
    decode a code whose dimension ``dims[r]`` runs through the prior
    quantiles ``quantiles`` (in (0, 1)) while the others stay fixed."""
    return image_rows_figure(
        images, title, value_range,
        row_labels=[f"z{d + 1}" for d in dims], col_labels=[f"{q:.2f}" for q in quantiles],
        xlabel="prior quantile of the varied dimension", ylabel="varied dimension", width=7.0,
    )


def interpolation_figure(x_a: torch.Tensor, x_b: torch.Tensor, images: torch.Tensor, value_range=(0.0, 1.0), title="Interpolations between test inputs"):
    """Each row: input ``x_a[p]``, the decoded points ``images[p]`` ``(P, steps, *data_shape)``
    along the line between the two codes, input ``x_b[p]``."""
    rows = torch.cat([x_a[:, None], images, x_b[:, None]], 1)
    steps = images.shape[1]
    cols = ["input A"] + [f"{t:.2f}" for t in torch.linspace(0, 1, steps).tolist()] + ["input B"]
    return image_rows_figure(rows, title, value_range, col_labels=cols, row_labels=[f"pair {p + 1}" for p in range(len(rows))],
                             xlabel="position t on the line from code(A) to code(B)", width=8.0)


def imputation_figure(x_true: torch.Tensor, mask: torch.Tensor, imputed: torch.Tensor, value_range=(0.0, 1.0), title="Imputation"):
    """Three rows over ``N`` examples: the masked input (hidden pixels in
    :data:`MISSING_COLOUR`), the imputation, the truth.

    :param x_true: ``(N, *data_shape)``.
    :param mask: bool, same shape (True = observed).
    :param imputed: ``(N, *data_shape)``.
    """
    truth, filled = _rgb(as_images(x_true, value_range)), _rgb(as_images(imputed, value_range))
    hidden = ~_rgb(as_images(mask.float(), (0.0, 1.0)) > 0.5)
    masked = torch.where(hidden, torch.tensor(MISSING_COLOUR).expand_as(truth), truth)
    images = torch.cat([masked, filled, truth])
    return _rows_figure(images, len(x_true), title, row_labels=["input (red: hidden)", "imputation", "truth"], width=7.5)


def training_curves_figure(records: Sequence[Mapping[str, float]], title="Training curves"):
    """Two panels from metrics records (``metrics.jsonl``): the training and
    validation loss (negative ELBO), and the validation reconstruction term
    (-E log p(x|z)) and KL, all in nats per data point against the epoch."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(10, 4)
    ax_loss, ax_terms = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    epochs = [r["epoch"] for r in records]

    def curve(ax, key, label, colour):
        pts = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=label, color=colour)

    curve(ax_loss, "train_loss", "train", "C0")
    curve(ax_loss, "val_loss", "validation", "C1")
    curve(ax_terms, "val_reconstruction", "reconstruction -E log p(x|z)", "C2")
    ax_kl = ax_terms.twinx()
    curve(ax_kl, "val_kl", "KL(q(z|x) || p(z))", "C3")
    ax_loss.set_title("Loss (negative ELBO)")
    ax_terms.set_title("Validation terms")
    for ax in (ax_loss, ax_terms):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 1.2
        ax.set_ylabel("nats per data point")
        ax.grid(alpha=0.3)
    ax_kl.set_ylabel("KL, nats per data point")
    ax_loss.legend(fontsize=8)
    handles = ax_terms.get_legend_handles_labels()[0] + ax_kl.get_legend_handles_labels()[0]
    if handles:
        ax_terms.legend(handles=handles, fontsize=8)
    else:
        ax_terms.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=ax_terms.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def side_by_side_figure(panels: Mapping[str, Mapping[str, torch.Tensor]], value_range=(0.0, 1.0), nrow: int = 8, title: Optional[str] = None):
    """A table of image grids: one column per outer key (e.g. a model; the
    column heads), one row per inner key (e.g. "reconstructions"; the row
    labels), each cell the images ``(N, *data_shape)`` tiled ``nrow`` wide.
    Every column must have the same inner keys."""
    columns = list(panels)
    row_names = list(panels[columns[0]])
    fig = new_figure(3.2 * len(columns) + 0.4, 3.1 * len(row_names) + (0.4 if title else 0))
    for r, row in enumerate(row_names):
        for c, col in enumerate(columns):
            ax = fig.add_subplot(len(row_names), len(columns), r * len(columns) + c + 1)
            images = panels[col][row]
            _show(ax, image_grid(as_images(images, value_range), min(nrow, len(images))), col if r == 0 else "")
            if c == 0:
                ax.set_ylabel(row)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def is_vs_ais_figure(is_ll: torch.Tensor, ais_ll: torch.Tensor, title: str = "Importance sampling against AIS"):
    """Per-point log p(x) by importance sampling (x axis) against annealed
    importance sampling (y axis), both ``(N,)`` in nats, with the diagonal
    y = x. Points above it are where IS understates log p(x). A text box gives
    the mean gap AIS - IS and its standard error over the points.

    Example::

        >>> import torch
        >>> from pyrovae.report.plots import is_vs_ais_figure
        >>> fig = is_vs_ais_figure(torch.tensor([-90.0, -85.0]), torch.tensor([-89.0, -84.5]))
        >>> fig.axes[0].texts[0].get_text().splitlines()[0]
        'mean gap AIS - IS: 0.750 nats'
    """
    is_ll = is_ll.detach().double().cpu().reshape(-1)
    ais_ll = ais_ll.detach().double().cpu().reshape(-1)
    if is_ll.shape != ais_ll.shape or is_ll.numel() == 0:
        raise DataError(f"is_vs_ais_figure needs two non-empty (N,) tensors of the same points; got "
                        f"{tuple(is_ll.shape)} and {tuple(ais_ll.shape)}: pass one estimate per point for each")
    gap = ais_ll - is_ll
    n = gap.numel()
    sem = gap.std().item() / math.sqrt(n) if n > 1 else float("nan")
    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(is_ll.numpy(), ais_ll.numpy(), s=14, alpha=0.8, color="tab:blue", linewidths=0, label="data point")
    lo, hi = min(is_ll.min().item(), ais_ll.min().item()), max(is_ll.max().item(), ais_ll.max().item())
    pad = 0.05 * (hi - lo) + 0.1
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", ls="--", lw=1, label="AIS = IS")
    ax.text(0.03, 0.97, f"mean gap AIS - IS: {gap.mean().item():.3f} nats\nstandard error: {sem:.3f} (N = {n})",
            transform=ax.transAxes, va="top", ha="left", fontsize=9,
            bbox=dict(boxstyle="round", facecolor="white", alpha=0.85, edgecolor="0.7"))
    ax.set_xlabel("IS log p(x), nats")
    ax.set_ylabel("AIS log p(x), nats")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Write ``fig`` as a PNG of ``fig.get_size_inches() * 100`` pixels."""
    fig.savefig(path, format="png", dpi=DPI)
