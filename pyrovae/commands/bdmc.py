"""``pyrovae bdmc RUN_DIR``: bidirectional Monte Carlo on data simulated from
a trained run's model; prints a table and writes ``RUN_DIR/bdmc.json``.

Bidirectional Monte Carlo (pyrovae.bdmc) draws points from the run's model.
Forward AIS gives a stochastic lower bound on each point's log p(x), reverse
AIS from the latents that produced it a stochastic upper bound; a small gap
says that the AIS schedule (``--ais-steps``, ``--chains``, ``--leapfrog``) is
long enough for ``pyrovae evaluate --ais`` on this model. The upper bound
holds only on simulated data. A model that needs labels (field y) is given
the first test labels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import add_run_arguments, format_table, load_run_of, positive_int
from .beyond_is import add_ais_arguments, ais_options, with_ais_defaults, write_record

#: printed under the table and kept in bdmc.json
UPPER_BOUND_NOTE = "the upper bound holds only on data simulated from the model, not on real data"


def add_parser(sub):
    from ..config import TrainConfig

    p = sub.add_parser(
        "bdmc",
        help="bracket log p(x) between forward and reverse AIS on simulated data: is the AIS schedule long enough?",
        description=__doc__.split("\n\n", 1)[1],
    )
    add_run_arguments(p)
    add_ais_arguments(p, "to simulate from the model")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation and of both AIS directions (default 0)")
    p.add_argument("--device", default=TrainConfig.device,
                   help=f"auto (CUDA when available), cpu, cuda or cuda:N (default {TrainConfig.device})")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--out", help="the JSON file to write (default RUN_DIR/bdmc.json)")
    p.set_defaults(func=cmd_bdmc)


def _label_fields(vae, cfg, n: int, device):
    """``{"y": the first n test labels}`` for a model that needs y, else ``{}`` (M2's y is then summed out)."""
    from ..models.base import required_fields

    if "y" not in required_fields(vae):
        return {}
    from .evaluate import split_data

    _, labels = split_data(cfg, "test")
    labels = labels[:n]
    if len(labels) < n or not bool((labels >= 0).all()):
        from ..errors import DataError

        raise DataError(f"this model takes labels y, but the test split has fewer than {n} labelled points; "
                        "choose a smaller --points")
    return {"y": labels.to(device)}


def cmd_bdmc(args) -> int:
    with_ais_defaults(args)
    from .. import __version__
    from ..infer.ais import bdmc
    from ..rundir import RunDir
    from ..training.trainer import resolve_device

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    vae, cfg, state = load_run_of(args, device=device)
    out = Path(args.out) if args.out else RunDir(args.run_dir).bdmc_json
    options = ais_options(args)
    print(f"bdmc on {args.run_dir} ({args.which}.pt): {args.points} simulated points, T={args.ais_steps}, "
          f"{args.chains} chains", file=sys.stderr)
    start = time.perf_counter()
    result = bdmc(vae, args.points, seed=args.seed, progress=args.progress, **options,
                  **_label_fields(vae, cfg, args.points, device))
    seconds = time.perf_counter() - start
    lower, upper = result.lower.detach().double().cpu(), result.upper.detach().double().cpu()
    gaps = upper - lower
    n = len(lower)
    se = float(gaps.std() / n ** 0.5) if n > 1 else None
    record = {
        "run_dir": str(args.run_dir), "checkpoint": f"{args.which}.pt", "epoch": state.get("epoch"),
        "num_points": n, **options, "seed": args.seed,
        "lower_mean": float(lower.mean()), "upper_mean": float(upper.mean()), "gap_mean": result.gap,
        "gap_se_over_points": se, "gap_max": float(gaps.max()),
        "lower": lower.tolist(), "upper": upper.tolist(), "note": UPPER_BOUND_NOTE,
        "seconds": round(seconds, 3), "pyrovae_version": __version__,
    }
    write_record(out, record)
    header = (f"BDMC, {args.run_dir} ({args.which}.pt): {n} simulated points, T={args.ais_steps}, "
              f"{args.chains} chains, {args.leapfrog} leapfrog steps, {seconds:.1f} s")
    gap_se = "" if se is None else f" ± {se:.3f}"
    print(format_table(header, [
        ("forward AIS, lower bound on log p(x)", f"{record['lower_mean']:.2f} nats"),
        ("reverse AIS, upper bound on log p(x)", f"{record['upper_mean']:.2f} nats"),
        ("gap upper - lower (small: T is enough)", f"{record['gap_mean']:.3f}{gap_se} nats"),
    ]))
    print(f"note: {UPPER_BOUND_NOTE}")
    print(f"wrote {out}", file=sys.stderr)
    return 0
