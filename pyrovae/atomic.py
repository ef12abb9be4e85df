"""Atomic file writes: a file is replaced whole, or not at all.

Each writer puts the new contents into a temporary file in the target's
own directory (``.NAME.XXXXXXXX.tmp``), flushes it to disk (``fsync``),
renames it over the target (``os.replace``, atomic on POSIX and Windows)
and syncs the directory, so that a crash at any moment leaves the old
version or the new one, never a torn file. A write that fails (disk full,
folder gone or read-only, an exception while writing) removes its
temporary file and raises the original error, leaving the old file as it
was; a process killed mid-write leaves its temporary file behind, which
``is_temp_file`` recognizes (``RunDir.remove_stale_temp_files``
removes them on ``--resume``).

Example::

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "eval.json"
    >>> atomic_write_text(path, '{"elbo": -90.5}\\n')
    >>> path.read_text(), [p.name for p in path.parent.iterdir()]
    ('{"elbo": -90.5}\\n', ['eval.json'])
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Union

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "is_temp_file", "fsync_directory"]

PathLike = Union[str, "os.PathLike[str]"]


def _temp_prefix(name: str) -> str:
    return f".{name}."


def is_temp_file(path: PathLike, names: Optional[Iterable[str]] = None) -> bool:
    """Whether ``path`` is the temporary file of an atomic write (to one of
    the file names ``names``, when given), as a killed process leaves it.

    Example::

        >>> is_temp_file("run/.checkpoint.pt.k2j3_x9a.tmp", ["checkpoint.pt"]), is_temp_file("run/checkpoint.pt")
        (True, False)
    """
    name = Path(path).name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    return names is None or any(name.startswith(_temp_prefix(n)) for n in names)


def fsync_directory(path: PathLike) -> None:
    """Make a rename inside the folder ``path`` durable (POSIX; a no-op where
    folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: Union[bytes, bytearray, memoryview]) -> None:
    """Replace the file ``path`` by ``data``, atomically (see the module).

    :raises OSError: the operating system's own error (e.g. ``ENOSPC``) when
        the file cannot be written; ``path`` is then as it was, and no
        temporary file is left.

    Example::

        atomic_write_bytes(run_dir / "weights.bin", buffer.getbuffer())
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace the file ``path`` by ``text`` (encoded with ``encoding``),
    atomically; errors as :func:`atomic_write_bytes`.

    Example::

        atomic_write_text(run_dir / "eval.json", json.dumps(record, indent=2) + "\\n")
    """
    atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: PathLike, *more_paths: PathLike) -> None:
    """``torch.save(obj)`` into ``path`` atomically; ``more_paths`` get the
    same bytes, in order. The object is serialized in memory first, once,
    so that a full disk fails with the operating system's own error rather
    than one from inside torch's zip writer; errors as :func:`atomic_write_bytes`.

    Example::

        atomic_torch_save({"model": vae.state_dict()}, run_dir / "weights.pt")
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    for target in (path, *more_paths):
        atomic_write_bytes(target, buffer.getbuffer())
