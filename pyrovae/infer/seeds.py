"""Seeded draws that neither depend on nor disturb the global random state."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: Optional[int], device=None) -> Iterator[None]:
    """Run the block with torch's global generator (and the CUDA one of
    ``device``) seeded by ``seed``, and restore their states afterwards, so
    a seeded draw neither depends on nor disturbs anything else.
    ``seed=None`` leaves the generators alone."""
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
