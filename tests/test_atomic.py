"""Atomic writes (pyrovae.atomic): a write that fails at any point, by an
error of the operating system or an interruption, leaves the old file as it
was and no temporary file behind. The oracle is the old file's bytes and
the folder's listing, read back from disk."""

import errno
import io
import os

import pytest
import torch

import pyro

from pyrovae import atomic
from pyrovae.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_text, is_temp_file

pyro.enable_validation(True)

OLD = b"the previous version\n"

WRITERS = {
    "bytes": lambda path: atomic_write_bytes(path, b"x" * 100_000),
    "text": lambda path: atomic_write_text(path, "y" * 100_000),
    "torch": lambda path: atomic_torch_save({"w": torch.arange(10_000.0)}, path),
}


class _FailingFile(io.RawIOBase):
    """A file object that writes half of the first chunk it is given, then raises ``error``."""

    def __init__(self, real, error):
        self.real, self.error = real, error

    def write(self, data):
        data = memoryview(data)
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise self.error

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()
        super().close()


def _fail_at(monkeypatch, where, error):
    """Make the write fail at ``where``: the data write, the fsync of the
    temporary file, or the rename over the target."""
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FailingFile(real_fdopen(fd, mode), error))
    elif where == "fsync":
        def fsync(fd):
            raise error
        monkeypatch.setattr(atomic.os, "fsync", fsync)
    else:
        def replace(src, dst):
            raise error
        monkeypatch.setattr(atomic.os, "replace", replace)


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()],
                         ids=["disk-full", "interrupted"])
def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary_file(
        tmp_path, monkeypatch, writer, where, error):
    path = tmp_path / "eval.json"
    path.write_bytes(OLD)
    _fail_at(monkeypatch, where, error)
    with pytest.raises(type(error)):
        WRITERS[writer](path)
    monkeypatch.undo()
    assert path.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_write_replaces_the_file_whole(tmp_path, writer):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    WRITERS[writer](path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    if writer == "bytes":
        assert path.read_bytes() == b"x" * 100_000
    elif writer == "text":
        assert path.read_text() == "y" * 100_000
    else:
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(10_000.0))


def test_a_missing_folder_is_the_operating_systems_error_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "gone" / "eval.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_torch_save_to_several_paths_writes_the_same_bytes(tmp_path):
    obj = {"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), "epoch": 2}
    atomic_torch_save(obj, tmp_path / "best.pt", tmp_path / "checkpoint.pt")
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # the oracle: torch's own serialization
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "checkpoint.pt").read_bytes() == buffer.getvalue()


def test_the_temporary_file_of_an_interrupted_write_is_recognized(tmp_path, monkeypatch):
    """A process killed between writing and renaming leaves ``.NAME.XXXX.tmp``
    beside NAME; is_temp_file tells it from the run's own files."""
    seen = []

    def replace(src, dst):
        seen.append(os.path.basename(src))
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "checkpoint.pt", b"z")
    assert seen[0].startswith(".checkpoint.pt.") and seen[0].endswith(".tmp")
    assert is_temp_file(seen[0], ["checkpoint.pt"]) and not is_temp_file(seen[0], ["best.pt"])
    assert not is_temp_file("checkpoint.pt") and not is_temp_file(".hidden") and is_temp_file(".x.abc.tmp")
