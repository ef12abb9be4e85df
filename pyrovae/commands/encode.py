"""``pyrovae encode RUN_DIR``: the latent codes of a data split, as .npz."""

from __future__ import annotations

import sys
from pathlib import Path

from . import add_run_arguments, load_run_of, positive_int

SPLITS = ("train", "val", "test")


def add_parser(sub):
    p = sub.add_parser("encode", help="write the latent means, scales and labels of a data split to a .npz file")
    add_run_arguments(p)
    p.add_argument("--split", choices=SPLITS, default="test", help="which split to encode (default test)")
    p.add_argument("--out", help="the .npz file (default RUN_DIR/codes-SPLIT.npz)")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="points encoded at once (default 1000)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the Monte Carlo estimate for guides without closed-form moments (default 0)")
    p.set_defaults(func=cmd_encode)


def cmd_encode(args) -> int:
    import numpy as np

    from ..data import label_fields, load_data
    from ..errors import DataError, RunDirError
    from ..models.base import model_fields
    from ..models.protocol import require_command
    from ..report.latents import encode_data

    vae, cfg, _ = load_run_of(args)
    require_command(vae, "encode")
    pair = getattr(load_data(cfg.data), args.split)
    if pair is None or len(pair[0]) == 0:
        raise DataError(f"the run's data has no {args.split} split (data.val_size is 0?); choose another --split")
    x, labels = pair
    # a model that takes labels (field y) is encoded with them
    codes = encode_data(vae, **label_fields(x, labels, model_fields(vae)), batch_size=args.batch_size, seed=args.seed)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"codes-{args.split}.npz"
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")  # what np.savez would do silently; say it
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, mean=codes["mean"].numpy(), scale=codes["scale"].numpy(), labels=labels.numpy())
    except OSError as e:
        raise RunDirError(f"cannot write {out}: {e}") from None
    print(f"wrote {out}: mean and scale {tuple(codes['mean'].shape)}, labels ({len(x)},)", file=sys.stderr)
    return 0
