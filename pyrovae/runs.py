"""Run directories and checkpoints.

A run directory holds::

    config.yaml        the resolved config
    checkpoint.pt      the latest complete epoch (written atomically)
    best.pt            the epoch with the best validation loss
    metrics.jsonl      one JSON line per epoch
    reconstructions.png, samples.png

Checkpoints are loaded with ``torch.load(weights_only=True)``, which never
runs code from the file, and carry a SHA-256 digest of their contents, so a
corrupted byte anywhere in them (tensor data included) is refused with a
clear error instead of loading silently.

Crash safety: every file is replaced atomically (temporary file in the same
directory, ``fsync``, ``os.replace``), so a crash at any moment leaves the
previous or the new version, never a torn one. A write that fails (disk
full, directory gone or read-only) raises :class:`RunDirError` and leaves
the previous version in place. Temporary files left by a killed process
(``.checkpoint.pt.*.tmp``) are removed on ``--resume``.

A start that fails before its first checkpoint leaves nothing to continue:
``pyrovae train`` then removes what it wrote (:meth:`RunDir.discard_unstarted`),
and a folder that holds only such files (the process was killed) is taken
by a new start without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch

from .config import Config, read_yaml
from .errors import CheckpointError, ConfigError, RunDirError

__all__ = ["RunDir", "save_checkpoint", "load_checkpoint", "load_run", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "pyrovae-checkpoint-v1"
#: the files pyrovae writes into a run directory (``--overwrite`` removes only these)
ARTIFACTS = (
    "config.yaml",
    "checkpoint.pt",
    "best.pt",
    "metrics.jsonl",
    "reconstructions.png",
    "samples.png",
    "eval.json",
)
#: the folders pyrovae writes into a run directory (``--overwrite`` removes these too)
ARTIFACT_DIRS = ("plots", "figures", "tensorboard", "imputation")
#: config keys added since pyrovae 0.1.0 whose default changes what a run does, with the
#: value that a run directory without them is read with (the behaviour it was trained with):
#: ``data.split_seed`` null splits an ``npy`` file in its stored order
KEYS_ADDED_SINCE_0_1_0 = {"data": {"split_seed": None}}


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    best = property(lambda self: self.path / "best.pt")
    metrics = property(lambda self: self.path / "metrics.jsonl")

    @classmethod
    def check_available(cls, path, overwrite: bool = False) -> "RunDir":
        """Raise :class:`RunDirError` if ``path`` holds a run (or files that
        are not pyrovae's) and ``overwrite`` is off; creates nothing. A start
        that stopped before its first checkpoint left nothing to continue: its
        folder is available (see :meth:`unstarted`)."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(f"{run.path} exists and is not a directory; choose another --out")
        if run.path.exists() and any(run.path.iterdir()) and not overwrite and not run.unstarted():
            raise RunDirError(
                f"run directory {run.path} already exists. Use --resume to continue it, "
                "--overwrite to replace its run, or choose another --out"
            )
        return run

    def holds_checkpoint(self) -> bool:
        """Whether an epoch of this run was completed (``checkpoint.pt`` or ``best.pt``)."""
        return self.checkpoint.exists() or self.best.exists()

    def unstarted(self) -> bool:
        """Whether the folder holds only pyrovae's files of a run that never
        wrote a checkpoint (say ``config.yaml`` of a start killed in its first
        epoch): nothing to continue, nothing of anyone else's to keep."""
        ours = set(ARTIFACTS) | set(ARTIFACT_DIRS)
        return self.path.is_dir() and not self.holds_checkpoint() and all(
            p.name in ours or _is_temp_file(p) for p in self.path.iterdir()
        )

    def discard_unstarted(self, remove_folder: bool) -> bool:
        """After a start that failed before its first checkpoint: remove what
        it wrote, so that the same command can simply be run again, and the
        folder too when ``remove_folder`` (it was made by that start) and it
        is then empty. Nothing is removed once a checkpoint exists. Returns
        whether the run's files were removed.

        Example::

            run.discard_unstarted(remove_folder=True)   # the start failed in its first step
        """
        if not self.path.is_dir() or self.holds_checkpoint():
            return False
        self._remove_artifacts()
        if remove_folder and not any(self.path.iterdir()):
            self.path.rmdir()
        return True

    def _remove_artifacts(self) -> None:
        """Remove pyrovae's files and folders (:data:`ARTIFACTS`, :data:`ARTIFACT_DIRS`
        and their temporary files), nothing else."""
        for name in ARTIFACTS:
            (self.path / name).unlink(missing_ok=True)
        for name in ARTIFACT_DIRS:
            shutil.rmtree(self.path / name, ignore_errors=True)
        self.remove_stale_temp_files()

    @classmethod
    def create(cls, path, overwrite: bool = False) -> "RunDir":
        """A new run directory. An existing one that holds a run is refused
        unless ``overwrite``, which removes only pyrovae's own files."""
        run = cls.check_available(path, overwrite)
        if run.path.exists():
            run._remove_artifacts()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".pyrovae-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"cannot write to run directory {run.path}: {e}") from None
        return run

    def make(self) -> None:
        """Create the directory (and its parents) if it does not exist.

        :raises RunDirError: when it cannot be created.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {self.path}: {e.strerror or e}") from None

    @classmethod
    def existing(cls, path) -> "RunDir":
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"run directory {run.path} does not exist")
        if not run.config.exists():
            raise RunDirError(f"{run.path} is not a pyrovae run directory (no config.yaml)")
        return run

    def write_config(self, cfg: Config) -> None:
        """Write ``cfg`` as ``config.yaml``, its data paths made absolute
        (:meth:`~pyrovae.DataConfig.with_absolute_paths`): the run is then read
        the same from any folder."""
        dataclasses.replace(cfg, data=cfg.data.with_absolute_paths()).to_yaml(self.config)

    def read_config(self) -> Config:
        """The run's config; a key that a run written by an earlier pyrovae
        lacks takes the value that reproduces what that run did
        (:data:`KEYS_ADDED_SINCE_0_1_0`), not today's default."""
        try:
            raw = read_yaml(self.config)
            if isinstance(raw, dict):
                for section, defaults in KEYS_ADDED_SINCE_0_1_0.items():
                    if isinstance(raw.get(section), dict):
                        raw[section] = {**defaults, **raw[section]}
            return Config.from_dict(raw)
        except ConfigError as e:
            raise RunDirError(f"{self.config}: {e}") from None

    # -- metrics -----------------------------------------------------------
    def append_metrics(self, record: Dict[str, Any]) -> None:
        try:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        except OSError as e:
            raise RunDirError(
                f"could not append to {self.metrics} ({e.strerror or e}); the checkpoint of this epoch is saved. "
                "Free disk space or make the run directory writable, then continue with --resume"
            ) from None

    def write_metrics(self, records: List[Dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` by ``records`` (atomically)."""
        try:
            _atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))
        except OSError as e:
            raise RunDirError(
                f"could not write {self.metrics} ({e.strerror or e}); free disk space or make the run directory writable"
            ) from None

    def remove_stale_temp_files(self) -> List[Path]:
        """Delete temporary files that a killed process left behind; returns them."""
        stale = [p for p in self.path.glob(".*.tmp") if _is_temp_file(p)]
        for p in stale:
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                raise RunDirError(f"cannot clean up {p} ({e.strerror or e}); make the run directory writable") from None
        return stale

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not self.metrics.exists():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash ends the record
        return records


def _is_temp_file(path: Path) -> bool:
    """Whether ``path`` is a temporary file of an atomic write of one of :data:`ARTIFACTS`."""
    return path.name.endswith(".tmp") and any(path.name.startswith(f".{a}.") for a in ARTIFACTS)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
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


def content_digest(obj: Any) -> str:
    """SHA-256 (hex) of a checkpoint's contents: nested dicts (keys in sorted
    order), lists, tuples, tensors (dtype, shape and raw bytes) and plain
    values (their ``repr``, exact for floats). The same contents give the
    same digest before saving and after loading."""
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
    """Write ``state`` atomically: a temporary file in the same directory,
    flushed to disk, then renamed over ``path``. A crash at any moment
    leaves either the old or the new checkpoint, never a torn one.

    The state is serialized in memory first (so the file write fails with
    the operating system's own error, e.g. "No space left on device",
    rather than an error from inside torch's zip writer).

    ``more_paths`` get the same bytes, in order (serialized and hashed once).

    :raises RunDirError: when the file cannot be written; the previous
        checkpoint at ``path`` is then left as it was.
    """
    buffer = io.BytesIO()
    contents = {"format": CHECKPOINT_FORMAT, **state}
    torch.save({**contents, "sha256": content_digest(contents)}, buffer)
    for target in (path, *more_paths):
        _atomic_write_bytes(buffer, Path(target))


def _atomic_write_bytes(buffer: io.BytesIO, path: Path) -> None:
    """Write ``buffer`` to ``path`` through a synced temporary file and a rename."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise RunDirError(
            f"could not write checkpoint {path} ({e.strerror or e}); the previous checkpoint is intact. "
            "Free disk space or make the run directory writable, then continue with --resume"
        ) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """Read a pyrovae checkpoint safely (``weights_only=True``).

    :raises CheckpointError: for a missing, truncated or foreign file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train first (pyrovae train) or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, unpickling refusal, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable pyrovae checkpoint (truncated, corrupt or not a checkpoint): {first}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pyrovae checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    digest = state.pop("sha256", None)
    if digest is None:  # every pyrovae release writes one: the checksum was removed
        raise CheckpointError(
            f"{path} has no checksum (every checkpoint that pyrovae writes has one); it was edited or "
            "written by something else. Use the run's other checkpoint (best.pt or checkpoint.pt)"
        )
    if digest != content_digest(state):
        raise CheckpointError(
            f"{path} is corrupt: its contents do not match the checksum written with it (a damaged disk or "
            "copy). Use the run's other checkpoint (best.pt or checkpoint.pt) or an earlier copy"
        )
    return state


def state_differences(saved: Dict[str, Any], expected: Dict[str, Any], limit: int = 6) -> List[str]:
    """What keeps the weights ``saved`` from loading where ``expected`` (a
    ``state_dict()``) is wanted: each missing key, unexpected key and shape
    that differs, one line each, at most ``limit`` of each kind.

    Example::

        >>> import torch
        >>> state_differences({"w": torch.zeros(3, 2)}, {"w": torch.zeros(4, 2), "b": torch.zeros(4)})
        ['missing from the checkpoint: b (4,)', 'w: (3, 2) in the checkpoint, (4, 2) in this model']
    """
    def shape(t):
        return tuple(t.shape) if hasattr(t, "shape") else type(t).__name__

    def listed(kind, items):
        lines = [f"{kind}{item}" for item in items[:limit]]
        return lines + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])

    missing = [f"{k} {shape(expected[k])}" for k in expected if k not in saved]
    unexpected = [f"{k} {shape(saved[k])}" for k in saved if k not in expected]
    reshaped = [f"{k}: {shape(saved[k])} in the checkpoint, {shape(expected[k])} in this model"
                for k in expected if k in saved and shape(saved[k]) != shape(expected[k])]
    return (listed("missing from the checkpoint: ", missing) + listed("not in this model: ", unexpected)
            + listed("", reshaped))


def load_model_state(vae, state: Dict[str, Any], path="checkpoint") -> None:
    """Load the model weights of ``state`` into ``vae``; a clear error naming
    the keys and shapes that differ if they were written for another model config."""
    if "model" not in state:
        raise CheckpointError(f"{path} holds no model weights (keys: {', '.join(sorted(state)) or 'none'})")
    try:
        vae.load_state_dict(state["model"])
    except RuntimeError as e:
        differences = state_differences(state["model"], vae.state_dict()) or [str(e).splitlines()[0]]
        raise CheckpointError(
            f"{path} was written for a different model config and does not fit this one:\n  "
            + "\n  ".join(differences)
            + "\nResume with the model config it was written with (its run's config.yaml), or start a new run."
        ) from None


def load_run(path, which: str = "checkpoint", device="cpu", overrides: Sequence[str] = ()) -> Tuple[Any, Config, Dict[str, Any]]:
    """The trained VAE of a run directory, its config and the raw checkpoint.

    :param path: a run directory written by :func:`pyrovae.train` or ``pyrovae train``.
    :param str which: ``checkpoint`` (latest epoch) or ``best`` (best validation loss).
    :param overrides: ``section.key=value`` assignments applied to the run's
        config (see :meth:`~pyrovae.Config.override`), for example
        ``["data.path=/new/place/digits.npy"]`` when the data has moved.
    :returns: ``(model, config, checkpoint)``: the model in eval mode on ``device``,
        the run's :class:`~pyrovae.Config`, and the checkpoint's dict.
    :raises RunDirError: for a folder that is not a run directory.
    :raises CheckpointError: for a missing, truncated or foreign checkpoint.

    Example::

        >>> import tempfile, pyrovae
        >>> cfg = pyrovae.load_config({
        ...     "data": {"name": "synthetic", "val_size": 100, "options": {"num_points": 300}},
        ...     "model": {"latent_dim": 2},
        ...     "train": {"epochs": 1, "progress": False, "device": "cpu"}})
        >>> splits = pyrovae.load_data(cfg.data)
        >>> run_dir = tempfile.mkdtemp() + "/run"
        >>> _ = pyrovae.train(pyrovae.VAE.from_config(cfg, splits.data_shape), splits, cfg, run_dir=run_dir)
        >>> vae, run_cfg, checkpoint = pyrovae.load_run(run_dir, which="best")
        >>> run_cfg.model.latent_dim, checkpoint["epoch"], vae.sample(4).shape
        (2, 1, torch.Size([4, 1, 8, 8]))
    """
    from .models import build_model

    run = RunDir.existing(path)
    cfg = run.read_config().override(list(overrides))
    ckpt_path = run.path / f"{which}.pt"
    state = load_checkpoint(ckpt_path, map_location=device)
    vae = build_model(cfg.model, data_shape=tuple(state["data_shape"])).to(device)
    load_model_state(vae, state, ckpt_path)
    vae.eval()
    return vae, cfg, state
