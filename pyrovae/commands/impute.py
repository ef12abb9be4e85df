"""``pyrovae impute RUN_DIR --mask SPEC``: recover hidden pixels of test
data, score the result against mean imputation and the zero-filled input,
and draw masked input / imputation / truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import add_run_arguments, format_table, load_run_of, positive_int


def add_parser(sub):
    from ..infer.impute import imputers, masks

    p = sub.add_parser("impute", help="recover hidden pixels with the trained model (data recovery)")
    add_run_arguments(p)
    p.add_argument("--mask", required=True, metavar="SPEC",
                   help=f"which pixels are hidden: {', '.join(masks.names())} (optionally NAME:VALUE, e.g. random:0.5, "
                        "center:0.3), or a .npy/.npz FILE of bools with 1 = observed, shaped like one data point "
                        "or (N, *data_shape)")
    p.add_argument("--method", choices=imputers.names(), default="importance",
                   help="importance: importance resampling with the guide as proposal (default); "
                        "gibbs: Metropolis-within-Gibbs (see pyrovae.impute)")
    p.add_argument("--particles", type=positive_int, dest="num_particles", help="importance: proposals per point (default 100)")
    p.add_argument("--steps", type=positive_int, help="gibbs: sampler steps (default 100)")
    p.add_argument("--burn-in", type=int, dest="burn_in", help="gibbs: steps left out of the estimate (default 20)")
    p.add_argument("--pseudo-gibbs", action="store_const", const=False, dest="metropolis",
                   help="gibbs: accept every proposal (Rezende et al. 2014) instead of the Metropolis correction")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split to damage (default test)")
    p.add_argument("--limit", type=positive_int, default=1000, help="impute the first N points (default 1000)")
    p.add_argument("--fill", choices=["mean", "zero"], default="mean",
                   help="what the guide sees in hidden pixels: the training mean per pixel (default; for categorical "
                        "data such as text, the most frequent training value per element) or zeros")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask and of the sampler (default 0)")
    p.add_argument("--show", type=positive_int, default=8, help="examples in the figure (default 8)")
    p.add_argument("--out", help="folder for imputation-TAG.png and .json (default RUN_DIR/imputation)")
    p.set_defaults(func=cmd_impute)


def _format_report(report, header: str) -> str:
    """The imputation report as a table; the JSON file holds the same numbers."""
    if "error_rate_imputation" in report:  # categorical data: how many hidden elements are wrong
        rows = [
            ("error rate of the imputation (most probable)", f"{100 * report['error_rate_imputation']:.1f}%"),
            ("error rate of a single draw", f"{100 * report['error_rate_single_draw']:.1f}%"),
            ("error rate of mode imputation", f"{100 * report['error_rate_mode_imputation']:.1f}%"),
            ("errors removed vs. mode imputation", f"{100 * report['error_reduction_vs_mode']:.1f}%"),
        ]
    else:
        rows = [
            ("MSE of the imputation (posterior mean)", f"{report['mse_imputation']:.5f}"),
            ("MSE of a single draw", f"{report['mse_single_draw']:.5f}"),
            ("MSE of mean imputation", f"{report['mse_mean_imputation']:.5f}"),
            ("MSE of the zero-filled input", f"{report['mse_zero_filled']:.5f}"),
            ("error removed vs. mean imputation", f"{100 * report['error_reduction_vs_mean']:.1f}%"),
        ]
    rows = [("hidden elements", f"{report['hidden_elements']}"), *rows]
    rows += [(f"mean {k[len('mean_'):].replace('_', ' ')}", f"{v:.4g}") for k, v in report.items() if k.startswith("mean_")]
    return format_table(header, rows)


def cmd_impute(args) -> int:
    import torch

    from ..data import label_fields, load_data
    from ..errors import DataError, RunDirError
    from ..infer.impute import check_imputable, imputation_error_rates, imputation_errors, impute, make_mask, mask_tag
    from ..models.base import model_fields
    from ..models.protocol import has_capability
    from ..report.plots import image_shape_problem, imputation_figure, save_figure

    vae, cfg, _ = load_run_of(args)
    check_imputable(vae, "pyrovae impute", method=args.method)
    data_shape = tuple(vae.data_shape)  # checked just above
    categorical = has_capability(vae, "impute_point")  # codes: the most probable class, scored right or wrong
    splits = load_data(cfg.data)
    pair = getattr(splits, args.split)
    if pair is None or len(pair[0]) == 0:
        raise DataError(f"the run's data has no {args.split} split; choose another --split")
    x, labels = pair
    n = min(args.limit, len(x))
    mask = make_mask(args.mask, n, data_shape, seed=args.seed)
    if len(mask) > n:  # a mask file with more rows than points
        raise DataError(f"the mask has {len(mask)} rows but only {n} points are imputed; raise --limit or cut the file")
    x = x[:n]
    fields = label_fields(x, labels[:n], model_fields(vae))  # labels as y for a model that takes y
    fields.pop("x")
    train_mean = splits.train[0].mode(0).values if categorical else splits.train[0].mean(0)
    method = {"name": args.method, **{k: getattr(args, k) for k in ("num_particles", "steps", "burn_in", "metropolis")
                                       if getattr(args, k) is not None}}
    fill = train_mean if args.fill == "mean" else torch.zeros(data_shape)
    result = impute(vae, x, mask, method=method, fill=fill, seed=args.seed, **fields)
    mask = result.mask  # the model's impute_mask may keep more elements observed
    if categorical:
        errors = {**imputation_error_rates(x, result.mean, mask, train_mean),
                  "error_rate_single_draw": imputation_error_rates(x, result.draw, mask, train_mean)["error_rate_imputation"]}
    else:
        errors = {**imputation_errors(x, result.mean, mask, train_mean),
                  "mse_single_draw": imputation_errors(x, result.draw, mask, train_mean)["mse_imputation"]}
    report = {
        "mask": args.mask,
        "method": method,
        "fill": args.fill,
        "split": args.split,
        "points": n,
        "seed": args.seed,
        **errors,
        **{f"mean_{k}": float(v.float().mean()) for k, v in result.diagnostics.items()},
    }
    out = Path(args.out) if args.out else Path(args.run_dir) / "imputation"
    tag = mask_tag(args.mask)
    k = min(args.show, n)
    to_text = getattr(vae, "to_text", None)
    not_images = None if to_text is not None else image_shape_problem(data_shape)
    figure = out / f"imputation-{tag}.{'txt' if to_text is not None else 'png'}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"imputation-{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
        if to_text is not None:
            rows = zip(to_text(x[:k]), to_text(result.mean[:k]), to_text(result.draw[:k]))
            figure.write_text("".join(f"truth:    {a}\nimputed:  {b}\none draw: {c}\n\n" for a, b, c in rows))
        elif not not_images:
            value_range = vae.likelihood.value_range if has_capability(vae, "likelihood") else (float(x.min()), float(x.max()))
            fig = imputation_figure(x[:k], mask[:k], result.mean[:k], value_range,
                                    title=f"Imputation ({args.method}, mask {tag})")
            save_figure(fig, figure)
    except OSError as e:
        raise RunDirError(f"cannot write to {out}: {e}") from None
    print(_format_report(report, f"{args.run_dir} ({args.which}.pt), {args.split} split: {n} points, "
                                 f"mask {args.mask}, {args.method}"))
    print(f"wrote {out / f'imputation-{tag}.json'}"
          + (f"; no figure: {not_images}" if not_images else f" and {figure.name}"), file=sys.stderr)
    return 0
