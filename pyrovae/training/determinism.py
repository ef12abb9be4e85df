"""Deterministic kernels for training that resumes bitwise on a GPU.

On a CPU, pyrovae's training is deterministic as it is: a run cut and
resumed gives the weights of an uninterrupted one, bit for bit. On a GPU,
cuDNN picks convolution algorithms by timing them, several CUDA kernels
accumulate with atomics in whatever order the threads arrive, and cuBLAS
splits reductions by its workspace, so two runs of the same step can differ
in the last bits. ``train.deterministic: true`` asks torch for its
deterministic kernels while :meth:`~pyrovae.Trainer.fit` runs:

- ``torch.use_deterministic_algorithms(True)``: an operation without a
  deterministic kernel raises an error that names it (nothing silent);
- ``torch.backends.cudnn.deterministic = True`` and ``benchmark = False``;
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when it is not set (cuBLAS reads it
  when a process makes its first handle, so set it yourself if CUDA work
  ran before training).

What it costs depends on the GPU and the model: cuDNN's deterministic
convolutions are often slower, and the MLP models' matrix products are not
affected. ``experiments/gpu_check.py`` measures exact resume with it on.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

__all__ = ["deterministic_kernels", "CUBLAS_WORKSPACE"]

#: the cuBLAS workspace setting that makes its reductions repeatable
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """Torch's deterministic kernels inside the block when ``on``; the
    caller's settings are restored after it (``on=False`` changes nothing).

    Example::

        >>> import torch
        >>> with deterministic_kernels(True):
        ...     torch.are_deterministic_algorithms_enabled()
        True
        >>> torch.are_deterministic_algorithms_enabled()
        False
    """
    if not on:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]
