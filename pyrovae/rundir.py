"""The layout of a run directory: where each file of a run lives.

A run directory holds::

    config.yaml        the resolved config (data paths absolute)
    checkpoint.pt      the latest complete epoch (see pyrovae.checkpoint_file)
    best.pt            the epoch with the best validation loss
    metrics.jsonl      one JSON line per epoch
    reconstructions.png, samples.png     pyrovae train's figures
    figures/           figures every train.sample_every epochs
    tensorboard/       train.tensorboard's event files
    eval.json          pyrovae evaluate's default output
    bdmc.json          pyrovae bdmc's default output
    plots/             pyrovae plot's and pyrovae sample's default output
    imputation/        pyrovae impute's default output

Every file is replaced atomically (:mod:`pyrovae.atomic`), so a crash
leaves the previous or the new version. Temporary files left by a killed
process (``.checkpoint.pt.*.tmp``) are removed on ``--resume``
(``RunDir.remove_stale_temp_files``).

A start that fails before its first checkpoint leaves nothing to continue:
``pyrovae train`` then removes what it wrote (``RunDir.discard_unstarted``),
and a folder that holds only such files (the process was killed) is taken
by a new start without ``--overwrite``.

Example::

    >>> import tempfile
    >>> run = RunDir.create(tempfile.mkdtemp() + "/run")
    >>> run.checkpoint.name, run.eval_json.name, run.unstarted()
    ('checkpoint.pt', 'eval.json', True)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

from .atomic import atomic_write_text, is_temp_file
from .config import Config, read_yaml
from .errors import ConfigError, RunDirError

__all__ = ["RunDir", "ARTIFACTS", "ARTIFACT_DIRS", "KEYS_ADDED_SINCE_0_1_0"]

#: the files pyrovae writes into a run directory (``--overwrite`` removes only these)
ARTIFACTS = (
    "config.yaml",
    "checkpoint.pt",
    "best.pt",
    "metrics.jsonl",
    "reconstructions.png",
    "samples.png",
    "eval.json",
    "bdmc.json",
)
#: the folders pyrovae writes into a run directory (``--overwrite`` removes these too)
ARTIFACT_DIRS = ("plots", "figures", "tensorboard", "imputation")
#: config keys added since pyrovae 0.1.0 whose default changes what a run does, with the
#: value that a run directory without them is read with (the behaviour it was trained with):
#: ``data.split_seed`` null splits an ``npy`` file in its stored order
KEYS_ADDED_SINCE_0_1_0 = {"data": {"split_seed": None}}


class RunDir:
    """Paths and files of one run directory (the layout in :mod:`pyrovae.rundir`).

    :param path: the run directory; nothing is created until :meth:`make`
        or :meth:`create`.
    """

    def __init__(self, path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml", doc="the resolved config")
    checkpoint = property(lambda self: self.path / "checkpoint.pt", doc="the latest complete epoch")
    best = property(lambda self: self.path / "best.pt", doc="the epoch with the best validation loss")
    metrics = property(lambda self: self.path / "metrics.jsonl", doc="one JSON line per epoch")
    reconstructions = property(lambda self: self.path / "reconstructions.png", doc="pyrovae train's reconstructions")
    samples = property(lambda self: self.path / "samples.png", doc="pyrovae train's samples")
    figures = property(lambda self: self.path / "figures", doc="figures every train.sample_every epochs")
    tensorboard = property(lambda self: self.path / "tensorboard", doc="train.tensorboard's event files")
    eval_json = property(lambda self: self.path / "eval.json", doc="pyrovae evaluate's default output")
    bdmc_json = property(lambda self: self.path / "bdmc.json", doc="pyrovae bdmc's default output")
    plots = property(lambda self: self.path / "plots", doc="pyrovae plot's and pyrovae sample's default folder")
    imputation = property(lambda self: self.path / "imputation", doc="pyrovae impute's default folder")

    def checkpoint_path(self, which: str) -> Path:
        """The checkpoint ``which`` (``checkpoint`` or ``best``).

        :raises RunDirError: for another name.
        """
        if which not in ("checkpoint", "best"):
            raise RunDirError(f"no checkpoint {which!r}; choose 'checkpoint' (latest epoch) or 'best'")
        return self.path / f"{which}.pt"

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
            p.name in ours or is_temp_file(p, ARTIFACTS) for p in self.path.iterdir()
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
        """The run directory at ``path``, which must hold a ``config.yaml``.

        :raises RunDirError: for a missing folder or one that is not a run directory.
        """
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
        """Append ``record`` as one JSON line to ``metrics.jsonl``.

        :raises RunDirError: when the line cannot be written.
        """
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
            atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))
        except OSError as e:
            raise RunDirError(
                f"could not write {self.metrics} ({e.strerror or e}); free disk space or make the run directory writable"
            ) from None

    def remove_stale_temp_files(self) -> List[Path]:
        """Delete temporary files that a killed process left behind; returns them."""
        stale = [p for p in self.path.glob(".*.tmp") if is_temp_file(p, ARTIFACTS)]
        for p in stale:
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                raise RunDirError(f"cannot clean up {p} ({e.strerror or e}); make the run directory writable") from None
        return stale

    def read_metrics(self) -> List[Dict[str, Any]]:
        """The records of ``metrics.jsonl`` (none when it does not exist); a
        last line cut short by a crash ends them."""
        if not self.metrics.exists():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash ends the record
        return records
