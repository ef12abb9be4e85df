"""Figures written into a run directory at the end of training."""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch

from .plots import reconstruction_figure, samples_figure, save_figure

__all__ = ["write_figures"]


@torch.no_grad()
def write_figures(vae, splits, run_dir, n: int = 64, seed: int = 0) -> List[Path]:
    """Write ``reconstructions.png`` (test inputs above their reconstructions)
    and ``samples.png`` (``n`` samples from the prior) into ``run_dir``."""
    run_dir = Path(run_dir)
    vae.eval()
    value_range = vae.likelihood.value_range
    x = (splits.test[0] if len(splits.test[0]) else splits.train[0])[:32].to(vae.device)
    written = []
    fig = reconstruction_figure(x, vae.reconstruct(x), value_range)
    save_figure(fig, run_dir / "reconstructions.png")
    written.append(run_dir / "reconstructions.png")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        samples = vae.sample(n)
    save_figure(samples_figure(samples, value_range), run_dir / "samples.png")
    written.append(run_dir / "samples.png")
    return written
