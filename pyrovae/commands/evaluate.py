"""``pyrovae evaluate RUN_DIR``: importance-sampled log-likelihood, ELBO,
KL, reconstruction, active units and reconstruction errors of a trained
run on one data split; prints a table and writes ``RUN_DIR/eval.json``.
The table's Pareto k row is the PSIS diagnostic of the importance weights
(pyrovae.infer.psis): where many points have k > 0.7 the IS figure is
unreliable, and evaluate warns.

``--ais`` also scores the first ``--points`` points of the split by
annealed importance sampling (pyrovae.ais_log_likelihood, a tighter
stochastic lower bound) and adds an ``ais`` block to eval.json, with IS on
the same points for comparison, and the figure ``is_vs_ais.png``.
``--gaps`` splits the gap log p(x) - ELBO on those points into the
approximation gap (the guide family is too narrow) and the amortization gap
(the encoder misses each point's best guide; pyrovae.inference_gaps, which
needs the model's ``local_guide`` capability, checked before anything
runs) and adds a ``gaps`` block and the figure ``gaps.png``. The AIS options
set the AIS inside the gaps too; with both flags AIS runs twice, with
different seeds, so the two log p(x) estimates are independent (their
difference shows AIS's own noise). Figures go next to the JSON file unless
``--no-figures``.

Under ``torchrun --nproc_per_node W -m pyrovae evaluate RUN_DIR`` the W
processes split the points (IS, AIS and the gaps' AIS), each scoring whole
chunks seeded by their position, so eval.json holds the numbers one process
writes with the same ``--seed``; rank 0 alone prints and writes.

Binary data (MNIST with ``data.binarize`` dynamic or static) is evaluated
on a binarization fixed by the run's ``data.binarize_seed`` (default 0):
the test set with that seed, the validation set with seed + 1 and the
training set with seed + 2 (pyrovae.data.binarize). So every run with the
same data config is scored on the same binary images, as the literature
does. A model that takes labels (field y) is given the split's labels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import add_run_arguments, format_table, load_run_of, positive_int
from .beyond_is import (GAP_DEFAULTS, add_ais_arguments, ais_block, check_gaps_up_front, format_ais, format_gaps,
                        gaps_block, positive_float, refuse_ignored_options, with_ais_defaults, write_record)

SPLITS = ("test", "val", "train")


def add_parser(sub):
    from ..config import TrainConfig
    from ..infer.evaluate import DEFAULT_NUM_SAMPLES

    p = sub.add_parser(
        "evaluate",
        help="importance-sampled log-likelihood and the other metrics papers report; writes RUN_DIR/eval.json",
        description=__doc__.split("\n\n", 1)[1] if "\n\n" in __doc__ else None,
    )
    add_run_arguments(p)
    p.add_argument("--iw-samples", "-k", type=positive_int, default=DEFAULT_NUM_SAMPLES, dest="num_samples", metavar="K",
                   help=f"importance samples per data point (default {DEFAULT_NUM_SAMPLES}; "
                        "5000 is the literature setting)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="which split to evaluate (default test; val needs data.val_size > 0)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="data points per chunk (default: pyrovae.evaluate's choice)")
    p.add_argument("--chunk-size", type=positive_int, default=None,
                   help="importance samples per chunk; memory grows with batch size x chunk size, not with K")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N points of the split")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default 0)")
    p.add_argument("--device", default=TrainConfig.device,
                   help=f"auto (CUDA when available), cpu, cuda or cuda:N (default {TrainConfig.device}, as pyrovae train)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice, one per core). On a machine that "
                        "other jobs keep busy, 1 thread can beat 2, because multi-threaded operations "
                        "wait for a descheduled thread (see the README)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the likelihood's log-density: a few seconds of compiling, then faster "
                        "for large runs (README: Performance) (default: only for N x K >= 10^7 decoder passes)")
    p.add_argument("--probe", action="store_true",
                   help="also fit k-NN, logistic regression and k-means on the latent means of training points "
                        "and score them on the evaluated split (needs scikit-learn: pip install -e '.[probe]')")
    p.add_argument("--probe-train", type=positive_int, default=10000, metavar="N",
                   help="training points the probe is fitted on (default 10000)")
    add_ais_arguments(p, "of the evaluated split (after --limit) that --ais and --gaps score")
    p.add_argument("--ais", action="store_true",
                   help="also estimate log p(x) by annealed importance sampling on the first --points points "
                        "(slow: about points x chains x ais-steps x (leapfrog + 1) decoder passes, twice)")
    p.add_argument("--gaps", action="store_true",
                   help="also split log p(x) - ELBO on the first --points points into the approximation and "
                        "amortization gaps (needs the model's local_guide capability; runs AIS too)")
    # no argparse defaults: a gap option given without --gaps is refused (see GAP_DEFAULTS)
    p.add_argument("--gap-steps", type=positive_int, default=argparse.SUPPRESS, metavar="S",
                   help="the most Adam steps of the per-point guide optimization of --gaps (default 2000)")
    p.add_argument("--gap-samples", type=positive_int, default=argparse.SUPPRESS, metavar="K",
                   help="draws per point for each ELBO of --gaps (default 1000)")
    p.add_argument("--gap-lr", type=positive_float, default=argparse.SUPPRESS, metavar="LR",
                   help="Adam's learning rate for the per-point guide parameters of --gaps (default 0.01)")
    p.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                   help="write is_vs_ais.png (--ais) and gaps.png (--gaps) next to the JSON file (default: yes)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--out", help="the JSON file to write (default RUN_DIR/eval.json)")
    p.set_defaults(func=cmd_evaluate)


def split_data(cfg, split: str):
    """The split's data ``(x, labels)`` as the run saw it, binarized with the fixed seeds."""
    from ..data import fixed_split, load_data
    from ..errors import DataError

    splits = load_data(cfg.data)
    pair = getattr(splits, split)
    if pair is None or len(pair[0]) == 0:
        hint = "the run's config has data.val_size: 0" if split == "val" else "the data source gave none"
        raise DataError(f"the run has no {split} split ({hint}); choose another --split")
    return fixed_split(pair, cfg.data, split)


def _probe(vae, cfg, args, x, labels):
    """Latent-probe scores: fit on training codes, score on the evaluated split's codes."""
    from ..report.latents import encode_data
    from ..report.probe import latent_probe

    fit_split = "train" if args.split != "train" else "val"
    x_fit, y_fit = split_data(cfg, fit_split)
    n = args.probe_train
    fit_codes = encode_data(vae, **_fields(vae, x_fit[:n].to(x.device), y_fit[:n]))["mean"]
    codes = encode_data(vae, **_fields(vae, x, labels))["mean"]
    return {"fit_split": fit_split, "fit_points": len(fit_codes), **latent_probe(fit_codes, y_fit[:n], codes, labels, seed=args.seed)}


def _fields(vae, x, labels):
    """The batch fields of ``(x, labels)`` for this model: labels as ``y`` when it takes ``y``."""
    from ..data import label_fields
    from ..models.base import model_fields

    return label_fields(x, labels.to(x.device), model_fields(vae))


def _format_table(summary, header: str, metrics=()) -> str:
    def num(v, fmt="{:.2f}"):
        return "n/a" if v is None else fmt.format(v)

    k = summary["num_samples"]
    given = summary.get("conditioned_on") or []
    summed = summary.get("summed_out") or []
    target = f"log p(x | {', '.join(given)})" if given else "log p(x)"
    target += f", {', '.join(summed)} summed out" if summed else ""
    rows = [
        (f"{target}, IS", f"{num(summary['log_likelihood'])} nats"),
        ("  ± std. error over points (quote this)", f"{num(summary['log_likelihood_se_over_points'], '{:.3f}')} nats"),
        ("  Monte Carlo error (is K enough?)", f"{num(summary['log_likelihood_mc_error'], '{:.3f}')} nats"),
        ("  mean effective sample size", f"{num(summary['ess'], '{:.1f}')} of {k}"),
        ("  points with Pareto k > 0.7 (unreliable)", _pareto_row(summary)),
        ("ELBO", f"{num(summary['elbo'])} nats"),
        ("  reconstruction E_q[log p(x|z)]", f"{num(summary['reconstruction'])} nats"),
        ("  KL E_q[log q(z|x) - log p(z)]", f"{num(summary['kl'])} nats"),
        ("gap log p(x) - ELBO", f"{num(summary['log_likelihood'] - summary['elbo'])} nats"),
        ("active units", "n/a" if summary["active_units"] is None
         else f"{summary['active_units']} of {summary['latent_units']}"),
    ]
    own = summary.get("reconstruction_error_names") or []
    if not own or summary["mse"] is not None:
        rows += [("reconstruction MSE per element", num(summary["mse"], "{:.5f}")),
                 ("reconstruction BCE", f"{num(summary['bce'])} nats" if summary["bce"] is not None else "n/a")]
    rows += [(f"reconstruction {name.replace('_', ' ')}", num(summary[name], "{:.4f}")) for name in own]
    for key, count_key, title in metrics:  # the model's metrics (evaluate's metric_keys)
        rows.append((title, f"{100 * summary[key]:.2f}% of {summary[count_key]} points"))
    return format_table(header, rows)


def _pareto_row(summary) -> str:
    """The PSIS diagnostic's table cell: share of points with k̂ > 0.7, mean and max k̂ (n/a for K <= 20)."""
    share = summary.get("share_pareto_k_above_0_7")
    if share is None:
        return "n/a (K <= 20: too few weights for a tail fit)"
    spread = "" if summary["pareto_k_mean"] is None else \
        f" (k mean {summary['pareto_k_mean']:.2f}, max {summary['pareto_k_max']:.2f})"
    return f"{100 * share:.1f}%{spread}"


def cmd_evaluate(args) -> int:
    """Evaluate; under ``torchrun`` every process runs this, scores its share of the points
    (pyrovae.infer.sharding) and gets the gathered results; rank 0 alone prints and writes."""
    from ..training import distributed

    ctx = distributed.init()  # before resolve_device: a bare cuda is then this process's GPU
    finished = False
    try:
        code = _evaluate(args, ctx.is_main)
        finished = True
        return code
    finally:
        distributed.shutdown(barrier=finished)


def _evaluate(args, is_main: bool) -> int:
    from .. import __version__
    from ..infer.evaluate import evaluate
    from ..training.trainer import resolve_device

    refuse_ignored_options(args)
    with_ais_defaults(with_ais_defaults(args), GAP_DEFAULTS)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    vae, cfg, state = load_run_of(args, device=device)
    x, labels = split_data(cfg, args.split)
    if args.limit is not None:
        x, labels = x[: args.limit], labels[: args.limit]
    x = x.to(device)
    if args.gaps:
        check_gaps_up_front(vae, _fields(vae, x, labels), args)
    out = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    if is_main:
        print(f"evaluating {args.run_dir} ({args.which}.pt) on {len(x)} {args.split} points with K={args.num_samples} "
              f"importance samples", file=sys.stderr)
    start = time.perf_counter()
    result = evaluate(vae, _fields(vae, x, labels), args.num_samples, batch_size=args.batch_size,
                      chunk_size=args.chunk_size, seed=args.seed, progress=args.progress, compile=args.compile)
    seconds = time.perf_counter() - start
    summary = result.summary()
    record = {"run_dir": str(args.run_dir), "checkpoint": f"{args.which}.pt", "epoch": state.get("epoch"),
              "split": args.split, "binarize_seed": cfg.data.binarize_seed if cfg.data.binarize != "none" else None,
              "seed": args.seed, **summary, "seconds": round(seconds, 3),
              "decoder_passes_per_second": round(len(x) * args.num_samples / seconds, 1),
              "pyrovae_version": __version__}
    if args.probe and is_main:
        record["probe"] = _probe(vae, cfg, args, x, labels)
    if args.ais:
        record["ais"] = ais_block(vae, _fields(vae, x, labels), result.per_point["log_likelihood"], args)
    if args.gaps:
        record["gaps"] = gaps_block(vae, _fields(vae, x, labels), args)
    if not is_main:  # every process has the whole result; one writes it
        return 0
    write_record(out, record)
    figures = []
    if args.figures:
        from ..report.inference_plots import evaluation_figures
        from ..report.plots import save_figure

        for name, fig in evaluation_figures(record).items():
            figures.append(out.parent / name)
            save_figure(fig, figures[-1])
    header = (f"{args.run_dir} ({args.which}.pt), {args.split} split: {len(x)} points, "
              f"K={args.num_samples}, {seconds:.1f} s")
    print(_format_table(summary, header, result.metrics))
    if args.probe:
        print("latent probe: " + ", ".join(f"{k} {v:.3f}" for k, v in record["probe"].items() if isinstance(v, float)))
    for key, table in (("ais", format_ais), ("gaps", format_gaps)):
        if key in record:
            print("\n" + table(record[key]))
    print(f"wrote {', '.join(map(str, [out, *figures]))}", file=sys.stderr)
    return 0
