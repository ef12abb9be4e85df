"""``pyrovae train``: train a VAE with SVI and write a run directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import PyrovaeError


def add_parser(sub):
    p = sub.add_parser("train", help="train a VAE with SVI and write a run directory")
    p.add_argument("--config", help="YAML config file (default: the built-in MNIST VAE)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 --set model.prior.name=vamp")
    p.add_argument("--out", help="run directory (default: runs/<date>-<time>)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", metavar="RUN_DIR", nargs="?", const=True,
                       help="continue the run in RUN_DIR (or in --out) from its last checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import pyro

    from ..config import load_config
    from ..data import load_data
    from ..model import VAE
    from ..runs import RunDir
    from ..train import Trainer
    from ..report import write_figures

    if args.resume:
        run_path = args.out if args.resume is True else args.resume
        if run_path is None:
            raise PyrovaeError("--resume needs a run directory: --resume RUN_DIR")
        run = RunDir.existing(run_path)
        cfg = run.read_config().override(args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        RunDir.check_available(out, overwrite=args.overwrite)  # fail fast, before loading data
    pyro.set_rng_seed(cfg.train.seed)
    splits = load_data(cfg.data)
    vae = VAE.from_config(cfg, data_shape=splits.data_shape)
    # nothing is written until the config, data and model are known to be good
    if not args.resume:
        run = RunDir.create(out, overwrite=args.overwrite)
    trainer = Trainer(vae, splits, cfg, run_dir=run.path)
    if args.resume:
        trainer.resume()
        print(f"resuming {run.path} after epoch {trainer.state.epoch}", file=sys.stderr)
    cfg.to_yaml(run.config)
    print(f"run directory: {run.path}", file=sys.stderr)
    trainer.fit()
    for path in write_figures(trainer.vae, splits, run.path):
        print(f"wrote {path}", file=sys.stderr)
    return 0
