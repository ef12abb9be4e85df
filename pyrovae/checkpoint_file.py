"""The checkpoint file format: how a checkpoint's dict is written to disk
and read back, whatever it holds.

A checkpoint file is ``torch.save`` of one dict: the contents (see
:mod:`pyrovae.training.checkpoint` for what the trainer puts there), a
``format`` marker (``CHECKPOINT_FORMAT``) and ``sha256``, a SHA-256
digest of everything else (``content_digest``).

- Files are read with ``torch.load(weights_only=True)``, which never runs
  code from the file.
- The digest covers tensor data too, so a corrupted byte anywhere is
  refused with a clear error instead of loading silently.
- Files are written atomically (:mod:`pyrovae.atomic`): a crash at any
  moment leaves the old checkpoint or the new one, never a torn file.
- Every failure is a one-line error that names the file and what to do: a
  missing, truncated, corrupt or foreign file, or one of a format this
  pyrovae does not read, is a :class:`~pyrovae.CheckpointError`; a write
  that fails is a :class:`~pyrovae.RunDirError` (the previous file is kept).

Example::

    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/checkpoint.pt"
    >>> save_checkpoint({"epoch": 3, "model": {"w": torch.ones(2)}, "data_shape": [2]}, path)
    >>> state = load_checkpoint(path)
    >>> state["format"], state["epoch"], state["model"]["w"].tolist()
    ('pyrovae-checkpoint-v1', 3, [1.0, 1.0])
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Dict

import torch

from .atomic import atomic_write_bytes
from .errors import CheckpointError, RunDirError

__all__ = ["CHECKPOINT_FORMAT", "REQUIRED_KEYS", "save_checkpoint", "load_checkpoint", "validate_checkpoint",
           "content_digest"]

#: the format marker of every checkpoint this pyrovae writes and reads (0.1.0's included)
CHECKPOINT_FORMAT = "pyrovae-checkpoint-v1"
#: what every checkpoint holds, whoever wrote it: weights, the data shape they fit, the epoch
REQUIRED_KEYS = ("model", "data_shape", "epoch")
_OTHER_CHECKPOINT = "Use the run's other checkpoint (best.pt or checkpoint.pt) or an earlier copy, or train again"


def content_digest(obj: Any) -> str:
    """SHA-256 (hex) of a checkpoint's contents: nested dicts (keys in sorted
    order), lists, tuples, tensors (dtype, shape and raw bytes) and plain
    values (their ``repr``, exact for floats). The same contents give the
    same digest before saving and after loading.

    Example::

        >>> import torch
        >>> content_digest({"w": torch.zeros(2)}) == content_digest({"w": torch.zeros(2)}) != content_digest({"w": torch.ones(2)})
        True
    """
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for key in sorted(x, key=repr):
                h.update(repr(key).encode())
                feed(x[key])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for item in x:
                feed(item)
            h.update(b"]")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed(obj)
    return h.hexdigest()


def save_checkpoint(state: Dict[str, Any], path, *more_paths) -> None:
    """Write ``state`` with its format marker and digest, atomically
    (:func:`~pyrovae.atomic.atomic_torch_save`); ``more_paths`` get the same
    bytes, in order (serialized and hashed once).

    :raises RunDirError: when a file cannot be written; the previous
        checkpoint at that path is then left as it was.

    Example::

        save_checkpoint(trainer.state_dict(), run.best, run.checkpoint)
    """
    contents = {"format": CHECKPOINT_FORMAT, **state}
    buffer = io.BytesIO()
    torch.save({**contents, "sha256": content_digest(contents)}, buffer)
    for target in map(Path, (path, *more_paths)):
        try:
            atomic_write_bytes(target, buffer.getbuffer())
        except OSError as e:
            raise RunDirError(
                f"could not write checkpoint {target} ({e.strerror or e}); the previous checkpoint is intact. "
                "Free disk space or make the run directory writable, then continue with --resume"
            ) from None


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """Read a pyrovae checkpoint safely (``weights_only=True``) and check it
    (:func:`validate_checkpoint`); returns its contents without the digest.

    :raises CheckpointError: for a missing, truncated, corrupt or foreign
        file, naming it and what to do.

    Example::

        state = load_checkpoint(run.checkpoint)      # {"format": ..., "epoch": ..., "model": ..., ...}
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train first (pyrovae train) or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, unpickling refusal, a folder, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable pyrovae checkpoint (truncated, corrupt or not a checkpoint): {first}. "
            f"{_OTHER_CHECKPOINT}"
        ) from None
    validate_checkpoint(state, path)
    return state


def validate_checkpoint(state: Any, path="checkpoint") -> None:
    """Check what ``torch.load`` read from ``path``: a dict of a format this
    pyrovae reads, whose digest matches its contents and which holds
    :data:`REQUIRED_KEYS`. The digest entry is removed from ``state``.

    :raises CheckpointError: naming ``path``, what is wrong and what to do.
    """
    marker = state.get("format") if isinstance(state, dict) else None
    if marker != CHECKPOINT_FORMAT:
        newer = isinstance(marker, str) and marker.startswith("pyrovae-checkpoint-")
        raise CheckpointError(
            f"{path} was written in checkpoint format {marker!r}, and this pyrovae reads {CHECKPOINT_FORMAT!r}; "
            "upgrade pyrovae to load it" if newer else
            f"{path} is not a pyrovae checkpoint (no '{CHECKPOINT_FORMAT}' marker); "
            "give the checkpoint.pt or best.pt of a pyrovae run directory"
        )
    digest = state.pop("sha256", None)
    if digest is None:  # every pyrovae release writes one: the checksum was removed
        raise CheckpointError(
            f"{path} has no checksum (every checkpoint that pyrovae writes has one); it was edited or "
            "written by something else. Use the run's other checkpoint (best.pt or checkpoint.pt)"
        )
    if digest != content_digest(state):
        raise CheckpointError(
            f"{path} is corrupt: its contents do not match the checksum written with it (a damaged disk or "
            f"copy). {_OTHER_CHECKPOINT}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}, which every pyrovae checkpoint holds. "
                              f"{_OTHER_CHECKPOINT}")
