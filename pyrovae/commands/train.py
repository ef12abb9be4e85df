"""``pyrovae train``: train a VAE with SVI and write a run directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import PyrovaeError
from . import add_set_argument


def add_parser(sub):
    p = sub.add_parser("train", help="train a VAE with SVI and write a run directory")
    p.add_argument("--config", help="YAML config file (default: the built-in MNIST VAE)")
    add_set_argument(p, "train.epochs=3 --set model.prior.name=vamp", "override a config key")
    p.add_argument("--out", help="run directory (default: runs/<date>-<time>)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", metavar="RUN_DIR", nargs="?", const=True,
                       help="continue the run in RUN_DIR (or in --out) from its last checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    """Train; under ``torchrun`` every process runs this (see :mod:`pyrovae.training.distributed`)."""
    from ..training import distributed

    ctx = distributed.init()
    finished = False
    try:
        code = _train(args, ctx)
        finished = True
        return code
    except PyrovaeError as e:
        # errors that every rank shares are printed by rank 0 alone
        if ctx.is_main or not getattr(e, "shared", False):
            if not ctx.is_main:
                e.args = (f"(rank {ctx.rank}) {e}",) + e.args[1:]
            raise
        return 2
    finally:
        distributed.shutdown(barrier=finished)


def _resumable(path):
    """The run directory at ``path``, refused with a clear error when its run
    never wrote a checkpoint (a damaged or missing one is the trainer's to explain)."""
    from ..errors import RunDirError
    from ..runs import RunDir

    run = RunDir.existing(path)
    if not run.holds_checkpoint():
        raise RunDirError(
            f"{run.path} holds no checkpoint to resume: its run stopped before the end of its first epoch. "
            f"Start it again in the same folder: pyrovae train --config {run.config} --out {run.path}"
        )
    return run


def _train(args, ctx) -> int:
    import pyro

    from ..training import distributed
    from ..config import Config, load_config
    from ..data import load_data
    from ..errors import TrainingDiverged
    from ..models import build_model
    from ..runs import RunDir
    from ..training.callbacks import callbacks_from_config
    from ..training.strategy import for_context
    from ..training.trainer import Trainer

    def on_main(fn):
        try:
            return distributed.on_main(fn, ctx)
        except PyrovaeError as e:
            e.shared = True
            raise

    if args.resume:
        run_path = args.out if args.resume is True else args.resume
        if run_path is None:
            raise PyrovaeError("--resume needs a run directory: --resume RUN_DIR")
        # rank 0 reads the run's config and shares it: other nodes need no copy of the run
        saved = on_main(lambda: _resumable(run_path).read_config().to_dict())
        run = RunDir(run_path)
        cfg = Config.from_dict(saved).override(args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        out = on_main(lambda: str(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")))
        on_main(lambda: RunDir.check_available(out, overwrite=args.overwrite))  # fail fast, before loading data
    if cfg.train.threads is not None:
        import torch

        torch.set_num_threads(cfg.train.threads)
    pyro.set_rng_seed(cfg.train.seed)
    splits = load_data(cfg.data)
    vae = build_model(cfg.model, data_shape=splits.data_shape)
    say = (lambda msg: print(msg, file=sys.stderr)) if ctx.is_main else (lambda msg: None)
    # nothing is written until the config, data and model are known to be good
    if not args.resume:
        made = on_main(lambda: not Path(out).exists())
        on_main(lambda: RunDir.create(out, overwrite=args.overwrite))
        run = RunDir(out)
    try:
        callbacks = callbacks_from_config(cfg, run.path, is_main=ctx.is_main)
        trainer = Trainer(vae, splits, cfg, run_dir=run.path, callbacks=callbacks, strategy=for_context(ctx))
        if args.resume:
            trainer.resume()
            say(f"resuming {run.path} after epoch {trainer.state.epoch}")
        on_main(lambda: run.write_config(cfg))
        say(f"run directory: {run.path}" + (f" ({ctx.world_size} processes)" if ctx.enabled else ""))
        trainer.fit()
    except BaseException as e:
        if isinstance(e, TrainingDiverged):
            e.shared = True  # every rank sees the same summed loss
        # a start that failed before its first checkpoint leaves nothing behind, so the same command can run again
        if not args.resume and ctx.is_main and run.discard_unstarted(remove_folder=made):
            say(f"nothing kept in {run.path}: the run stopped before its first checkpoint")
        raise
    if ctx.is_main:
        _write_figures(trainer.vae, splits, run.path, say)
    return 0


def _write_figures(vae, splits, run_path, say) -> None:
    """The end-of-run figures, where the model has what they need: each one
    it cannot draw (a missing capability, see the protocol page) gets one
    line, and the finished run stands. A model's own error in them keeps
    its traceback, printed below one line: the run directory is complete
    without the figures."""
    import traceback

    from ..report.figures import write_figures

    try:
        for path in write_figures(vae, splits, run_path, say=say):
            say(f"wrote {path}")
    except Exception:  # the model's own code failed in a figure: the trained run stays complete
        say(f"no end-of-run figures; the run in {run_path} is complete. The figures failed with:\n"
            f"{traceback.format_exc().rstrip()}")
