"""Run directories, checkpoints and loading a trained model, in one import.

The names below live in modules of one job each, and are importable from
here as well:

- :mod:`pyrovae.rundir`: the layout of a run directory (:class:`RunDir`);
- :mod:`pyrovae.checkpoint_file`: the checkpoint file format
  (:func:`save_checkpoint`, :func:`load_checkpoint`, :data:`CHECKPOINT_FORMAT`);
- :mod:`pyrovae.loading`: a trained model rebuilt from a run directory
  (:func:`load_run`);
- :mod:`pyrovae.atomic`: writing a file atomically.

Example::

    from pyrovae.runs import RunDir, load_checkpoint, load_run
    vae, cfg, state = load_run("runs/first", which="best")
"""

from __future__ import annotations

from .atomic import atomic_torch_save, atomic_write_bytes, atomic_write_text
from .checkpoint_file import CHECKPOINT_FORMAT, content_digest, load_checkpoint, save_checkpoint, validate_checkpoint
from .loading import load_model_state, load_run, state_differences
from .rundir import ARTIFACT_DIRS, ARTIFACTS, KEYS_ADDED_SINCE_0_1_0, RunDir

__all__ = [
    "RunDir", "save_checkpoint", "load_checkpoint", "load_run", "CHECKPOINT_FORMAT",
    "ARTIFACTS", "ARTIFACT_DIRS", "KEYS_ADDED_SINCE_0_1_0", "content_digest", "validate_checkpoint",
    "load_model_state", "state_differences", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save",
]
