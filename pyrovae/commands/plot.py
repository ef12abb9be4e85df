"""``pyrovae plot RUN_DIR``: write the figures of a trained run as PNGs
(as text files for a model that shows its data as text), with one line for
each figure that does not apply to the model (a language model has no
latent code to show)."""

from __future__ import annotations

import sys
from pathlib import Path

from . import add_run_arguments, load_run_of

def add_parser(sub):
    from ..report.figures import FIGURES

    p = sub.add_parser("plot", help="write reconstructions, samples, latent and training-curve figures as PNGs "
                                    "(text files for a text model)")
    add_run_arguments(p)
    p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots)")
    p.add_argument("--only", nargs="+", choices=list(FIGURES), metavar="NAME",
                   help=f"write only these figures: {', '.join(FIGURES)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and prior quantiles (default 0)")
    p.add_argument("-n", "--num-samples", type=int, default=64, help="samples in samples.png (default 64)")
    p.add_argument("--max-points", type=int, default=2000, help="test points in the latent scatter (default 2000)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    from ..data import load_data
    from ..models.protocol import require_command
    from ..errors import ConfigError
    from ..report.figures import FIGURES, PlotInputs, figure_needs, write_plots
    from ..runs import RunDir

    vae, cfg, _ = load_run_of(args)
    splits = load_data(cfg.data)
    x, labels = splits.test if len(splits.test[0]) else splits.train
    # the figures that apply read these; say which one a model lacks before drawing any
    require_command(vae, "plot", needs=figure_needs(args.only, vae, x))
    records = RunDir(args.run_dir).read_metrics()
    inp = PlotInputs(vae, x, labels, records, seed=args.seed, num_samples=args.num_samples, max_points=args.max_points)
    out = Path(args.out) if args.out else Path(args.run_dir) / "plots"
    written = write_plots(inp, out, only=args.only)
    for name, result in written.items():
        print(f"wrote {result}" if isinstance(result, Path) else f"skipped {name}: {result}", file=sys.stderr)
    if not any(isinstance(result, Path) for result in written.values()):
        raise ConfigError(f"none of the figures asked for applies to this model ({', '.join(written)}); "
                          f"choose others with --only ({', '.join(FIGURES)})")
    return 0

