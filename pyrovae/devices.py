"""Device names: one name per device, so that equal devices compare equal."""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["canonical_device"]


def canonical_device(device, current_cuda_index: Optional[Callable[[], int]] = None) -> torch.device:
    """One name per device: ``cpu`` (never ``cpu:0``) and ``cuda:N`` (never a
    bare ``cuda``, which means the current GPU). torch compares devices by
    name, ``torch.device("cuda") != torch.device("cuda:0")``, so two names
    for one device would send batches down the copying path with a noise
    stream of their own.

    :param current_cuda_index: the index a bare ``cuda`` stands for
        (default: ``torch.cuda.current_device``).

    Example::

        >>> canonical_device("cpu:0")
        device(type='cpu')
        >>> canonical_device("cuda", current_cuda_index=lambda: 0)
        device(type='cuda', index=0)
    """
    device = torch.device(device)
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        index = (current_cuda_index or torch.cuda.current_device)()
        return torch.device("cuda", index)
    return device
