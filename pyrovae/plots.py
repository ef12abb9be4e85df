"""Matplotlib figures. Each function takes tensors and returns a Figure;
nothing here reads or writes run directories."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

__all__ = ["image_grid", "reconstruction_figure", "samples_figure", "save_figure"]


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def as_images(x: torch.Tensor, value_range: Tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """``(N, *data_shape)`` -> ``(N, H, W)`` or ``(N, H, W, 3)`` in [0, 1].

    Flat data of a square size (784) is shown as a square image.
    """
    x = x.detach().float().cpu()
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"cannot show flat data of size {x.shape[1]} as an image")
        return x.reshape(-1, side, side)
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 4 and x.shape[1] == 3:
        return x.permute(0, 2, 3, 1)
    if x.dim() == 3:
        return x
    raise ValueError(f"cannot show data of shape {tuple(x.shape[1:])} as images")


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> torch.Tensor:
    """Tile ``(N, H, W[, 3])`` images into one ``(rows*(H+pad), nrow*(W+pad)[, 3])`` array."""
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


def samples_figure(samples: torch.Tensor, value_range=(0.0, 1.0), nrow: Optional[int] = None, title="Samples from the prior"):
    """A grid of samples ``(N, *data_shape)``."""
    images = as_images(samples, value_range)
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    grid = image_grid(images, nrow)
    fig = _figure(6, 6 * grid.shape[0] / grid.shape[1] + 0.4)
    _show(fig.add_subplot(1, 1, 1), grid, title)
    fig.tight_layout()
    return fig


def reconstruction_figure(x: torch.Tensor, x_rec: torch.Tensor, value_range=(0.0, 1.0), nrow: int = 8, title="Reconstructions"):
    """Inputs (odd rows) above their reconstructions (even rows)."""
    a, b = as_images(x, value_range), as_images(x_rec, value_range)
    n = (len(a) // nrow) * nrow or len(a)
    rows = []
    for start in range(0, n, nrow):
        rows += [a[start : start + nrow], b[start : start + nrow]]
    grid = image_grid(torch.cat(rows), min(nrow, n))
    fig = _figure(6, 6 * grid.shape[0] / grid.shape[1] + 0.4)
    _show(fig.add_subplot(1, 1, 1), grid, f"{title} (rows: input, reconstruction)")
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Write ``fig`` as a PNG."""
    fig.savefig(path, format="png")
