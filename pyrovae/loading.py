"""Model loading: a trained model rebuilt from a run directory.

:func:`~pyrovae.load_run` reads the run's ``config.yaml`` (``RunDir``, :mod:`pyrovae.rundir`),
builds the model it names for the data shape the checkpoint records, and
loads the checkpoint's weights (``load_checkpoint``, :mod:`pyrovae.checkpoint_file`);
``load_model_state`` loads weights into a model with an error that
names each key and shape that differs, for the trainer's resume too.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from .checkpoint_file import load_checkpoint
from .config import Config
from .errors import CheckpointError
from .rundir import RunDir

__all__ = ["load_run", "load_model_state", "state_differences"]


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
    """Load the model weights of ``state`` (a checkpoint's dict) into
    ``vae``; a clear error naming the keys and shapes that differ if they
    were written for another model config.

    Example::

        load_model_state(vae, load_checkpoint(run.best), run.best)
    """
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
    ckpt_path = run.checkpoint_path(which)
    state = load_checkpoint(ckpt_path, map_location=device)
    vae = build_model(cfg.model, data_shape=tuple(state["data_shape"])).to(device)
    load_model_state(vae, state, ckpt_path)
    vae.eval()
    return vae, cfg, state
