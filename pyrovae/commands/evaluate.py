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
import json
import sys
import time
from pathlib import Path

from . import add_run_arguments, format_table, load_run_of, positive_int

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
    p.add_argument("--gap-lr", type=_positive_float, default=argparse.SUPPRESS, metavar="LR",
                   help="Adam's learning rate for the per-point guide parameters of --gaps (default 0.01)")
    p.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                   help="write is_vs_ais.png (--ais) and gaps.png (--gaps) next to the JSON file (default: yes)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--out", help="the JSON file to write (default RUN_DIR/eval.json)")
    p.set_defaults(func=cmd_evaluate)


def add_ais_arguments(p, points_help: str) -> None:
    """``--points`` and the AIS settings ``--ais-steps``, ``--chains``, ``--leapfrog``, ``--schedule``,
    ``--chain-batch`` and ``--ais-batch-size`` (evaluate, bdmc).

    Example::

        add_ais_arguments(parser, "to simulate from the model")   # --points N: "points to simulate ..."
    """
    from ..infer.ais import SCHEDULES

    # no argparse defaults: evaluate tells an AIS option given without --ais (see AIS_DEFAULTS)
    quiet = argparse.SUPPRESS
    p.add_argument("--points", type=positive_int, default=quiet, metavar="N", help=f"points {points_help} (default 100)")
    p.add_argument("--ais-steps", type=positive_int, default=quiet, metavar="T",
                   help="AIS temperatures after beta = 0 (default 1000; BDMC tells whether it is enough)")
    p.add_argument("--chains", type=positive_int, default=quiet, metavar="C", help="AIS chains per point (default 16)")
    p.add_argument("--leapfrog", type=positive_int, default=quiet, metavar="L",
                   help="leapfrog steps of each HMC move (default 10)")
    p.add_argument("--schedule", choices=tuple(SCHEDULES), default=quiet, help="the beta schedule (default sigmoid)")
    p.add_argument("--chain-batch", type=positive_int, default=quiet, metavar="B",
                   help="AIS chains run at once (default: all); fewer use less memory, the estimate pools all chains")
    p.add_argument("--ais-batch-size", type=positive_int, default=quiet, metavar="P",
                   help="points per AIS chunk (default: 4000 chain states' worth, 250 with 16 chains); each chunk "
                        "has its own seeds, so the estimate depends on it. Under torchrun the processes share "
                        "whole chunks: a smaller one spreads few points over more processes")


#: the AIS options' values where the command line gives none (argparse attribute names)
AIS_DEFAULTS = {"points": 100, "ais_steps": 1000, "chains": 16, "leapfrog": 10, "schedule": "sigmoid", "chain_batch": None,
                "ais_batch_size": None}
#: the options of --gaps where the command line gives none (pyrovae.inference_gaps' defaults)
GAP_DEFAULTS = {"gap_steps": 2000, "gap_samples": 1000, "gap_lr": 1e-2}


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def with_ais_defaults(args, defaults=AIS_DEFAULTS):
    """``args`` with every option of ``defaults`` the command line left out set to its default."""
    for key, value in defaults.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    return args


def _refuse_ignored_options(args) -> None:
    """AIS options without --ais or --gaps, and gap options without --gaps, would be ignored: a one-line error."""
    from ..errors import ConfigError

    for defaults, wanted, what, flags in ((AIS_DEFAULTS, args.ais or args.gaps, "annealed importance sampling",
                                           "--ais or --gaps"),
                                          (GAP_DEFAULTS, args.gaps, "the inference gaps", "--gaps")):
        given = [k for k in defaults if hasattr(args, k)]
        if given and not wanted:
            names = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(f"{names}: options of {what}, which runs only with {flags}; add {flags} or leave them out")


def ais_options(args) -> dict:
    """The keyword options of ``pyrovae.ais_log_likelihood`` and ``pyrovae.bdmc`` from ``add_ais_arguments``.

    Example::

        pyrovae.ais_log_likelihood(vae, x, seed=args.seed, **ais_options(args))
    """
    return {"num_steps": args.ais_steps, "num_chains": args.chains, "leapfrog_steps": args.leapfrog,
            "schedule": args.schedule, "chain_batch": args.chain_batch, "batch_size": args.ais_batch_size}


def _ais_block(vae, fields, is_per_point, args):
    """The ``ais`` block of eval.json: AIS on the first ``--points`` points, and IS on those same points."""
    from ..infer.ais import ais_log_likelihood

    n = min(args.points, len(fields["x"]))
    head = {k: v[:n] for k, v in fields.items()}
    options = ais_options(args)
    start = time.perf_counter()
    stats = ais_log_likelihood(vae, **head, **options, seed=args.seed, return_stats=True, progress=args.progress)
    seconds = time.perf_counter() - start
    ll = stats.log_likelihood.detach().double().cpu()
    is_ll = is_per_point[:n].detach().double().cpu()
    se = float(ll.std() / n ** 0.5) if n > 1 else None
    gap = ll - is_ll
    return {"num_points": n, "num_steps": options["num_steps"], "num_chains": options["num_chains"],
            "leapfrog_steps": options["leapfrog_steps"], "schedule": options["schedule"], "chain_batch": options["chain_batch"],
            "batch_size": options["batch_size"], "seed": args.seed,
            "log_likelihood": float(ll.mean()), "se_over_points": se,
            "acceptance_mean": float(stats.acceptance.double().mean()),
            "step_size_mean": float(stats.step_size.double().mean()),
            "chain_std_mean": float(stats.chain_std.double().mean()),
            "is_on_the_same_points": float(is_ll.mean()), "gap_ais_minus_is": float(gap.mean()),
            "gap_se_over_points": float(gap.std() / n ** 0.5) if n > 1 else None,
            "per_point": ll.tolist(), "is_per_point": is_ll.tolist(), "seconds": round(seconds, 3)}


def _check_gaps_up_front(vae, fields, args) -> None:
    """Refuse --gaps before the long IS pass: the model must have ``local_guide``, and
    pyrovae.inference_gaps must go through on one point with no optimization and a one-step AIS
    (a family can have the capability and still refuse a configuration, or a field)."""
    from ..infer.gaps import inference_gaps
    from ..models.protocol import capability

    capability(vae, "local_guide", "pyrovae evaluate --gaps")
    one = {k: v[:1] for k, v in fields.items()}
    inference_gaps(vae, **one, num_samples=1, max_steps=0, lr=args.gap_lr, seed=args.seed,
                   ais_options={"num_steps": 1, "num_chains": 2, "leapfrog_steps": 1, "schedule": args.schedule})


def _gaps_block(vae, fields, args) -> dict:
    """The ``gaps`` block of eval.json: pyrovae.inference_gaps on the first ``--points`` points."""
    from ..infer.gaps import GAP_KEYS, inference_gaps

    n = min(args.points, len(fields["x"]))
    head = {k: v[:n] for k, v in fields.items()}
    ais = {**ais_options(args), "progress": args.progress}
    start = time.perf_counter()
    gaps = inference_gaps(vae, **head, num_samples=args.gap_samples, max_steps=args.gap_steps, lr=args.gap_lr,
                          seed=args.seed, ais_options=ais)
    seconds = time.perf_counter() - start
    per_point = {k: getattr(gaps, k).detach().double().cpu() for k in ("log_px", "elbo_amortized", "elbo_optimized")}
    # the gaps again in float64 from the three estimates, the inference gap as the sum of the other two,
    # so the written numbers add up exactly
    per_point["approximation_gap"] = per_point["log_px"] - per_point["elbo_optimized"]
    per_point["amortization_gap"] = per_point["elbo_optimized"] - per_point["elbo_amortized"]
    per_point["inference_gap"] = per_point["approximation_gap"] + per_point["amortization_gap"]
    kept = gaps.kept_initial.detach().cpu()
    return {"num_points": n, "num_samples": args.gap_samples, "max_steps": args.gap_steps, "lr": args.gap_lr,
            "seed": args.seed, "ais": {k: v for k, v in ais.items() if k != "progress"},
            "means": {k: float(per_point[k].mean()) for k in GAP_KEYS},
            "se_over_points": {k: float(per_point[k].std() / n ** 0.5) if n > 1 else None for k in GAP_KEYS},
            "share_kept_initial": float(kept.double().mean()), "steps": int(gaps.steps),
            "per_point": {**{k: per_point[k].tolist() for k in GAP_KEYS}, "kept_initial": kept.tolist()},
            "seconds": round(seconds, 3)}


def _format_gaps(block) -> str:
    def value(key):
        se = block["se_over_points"][key]
        return f"{block['means'][key]:.3f}" + ("" if se is None else f" ± {se:.3f}") + " nats"

    ais = block["ais"]
    header = (f"inference gaps on the first {block['num_points']} points: {block['steps']} of at most "
              f"{block['max_steps']} steps, {block['num_samples']} draws per ELBO, AIS T={ais['num_steps']} "
              f"x {ais['num_chains']} chains, {block['seconds']:.1f} s")
    return format_table(header, [
        ("log p(x), AIS", value("log_px")),
        ("ELBO, amortized guide L[q]", value("elbo_amortized")),
        ("ELBO, per-point optimized guide L[q*]", value("elbo_optimized")),
        ("inference gap log p(x) - L[q]", value("inference_gap")),
        ("  approximation gap log p(x) - L[q*]", value("approximation_gap")),
        ("  amortization gap L[q*] - L[q]", value("amortization_gap")),
        ("  points that kept the encoder's guide", f"{100 * block['share_kept_initial']:.1f}%"),
    ])


def write_record(out: Path, record: dict) -> None:
    """Write ``record`` as JSON to ``out`` atomically; a path that cannot be written is a one-line error.

    Example::

        write_record(Path(run_dir) / "bdmc.json", {"gap_mean": 0.12})
    """
    from ..atomic import atomic_write_text
    from ..errors import RunDirError

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    except OSError as e:
        raise RunDirError(f"cannot write {out}: {e}; choose another --out") from None


def _format_ais(block) -> str:
    se = "n/a" if block["se_over_points"] is None else f"{block['se_over_points']:.3f}"
    gap_se = "" if block["gap_se_over_points"] is None else f" ± {block['gap_se_over_points']:.3f}"
    header = (f"AIS on the first {block['num_points']} points: T={block['num_steps']}, {block['num_chains']} chains, "
              f"{block['leapfrog_steps']} leapfrog steps, {block['schedule']} schedule, {block['seconds']:.1f} s")
    return format_table(header, [
        ("log p(x), AIS", f"{block['log_likelihood']:.2f} nats"),
        ("  ± std. error over points", f"{se} nats"),
        ("  mean acceptance", f"{block['acceptance_mean']:.3f}"),
        ("log p(x), IS on the same points", f"{block['is_on_the_same_points']:.2f} nats"),
        ("AIS - IS (> 0: IS understates log p(x))", f"{block['gap_ais_minus_is']:.3f}{gap_se} nats"),
    ])


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

    _refuse_ignored_options(args)
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
        _check_gaps_up_front(vae, _fields(vae, x, labels), args)
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
        record["ais"] = _ais_block(vae, _fields(vae, x, labels), result.per_point["log_likelihood"], args)
    if args.gaps:
        record["gaps"] = _gaps_block(vae, _fields(vae, x, labels), args)
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
    for key, table in (("ais", _format_ais), ("gaps", _format_gaps)):
        if key in record:
            print("\n" + table(record[key]))
    print(f"wrote {', '.join(map(str, [out, *figures]))}", file=sys.stderr)
    return 0
