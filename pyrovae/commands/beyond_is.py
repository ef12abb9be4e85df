"""The options and eval.json blocks of evaluation beyond importance sampling,
shared by ``pyrovae evaluate`` (``--ais``, ``--gaps``) and ``pyrovae bdmc``:
the AIS and gap options with their defaults, the ``ais`` and ``gaps``
blocks, and their tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import format_table, positive_int


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


def positive_float(text: str) -> float:
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


def refuse_ignored_options(args) -> None:
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


def ais_block(vae, fields, is_per_point, args):
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


def check_gaps_up_front(vae, fields, args) -> None:
    """Refuse --gaps before the long IS pass: the model must have ``local_guide``, and
    pyrovae.inference_gaps must go through on one point with no optimization and a one-step AIS
    (a family can have the capability and still refuse a configuration, or a field)."""
    from ..infer.gaps import inference_gaps
    from ..models.protocol import capability

    capability(vae, "local_guide", "pyrovae evaluate --gaps")
    one = {k: v[:1] for k, v in fields.items()}
    inference_gaps(vae, **one, num_samples=1, max_steps=0, lr=args.gap_lr, seed=args.seed,
                   ais_options={"num_steps": 1, "num_chains": 2, "leapfrog_steps": 1, "schedule": args.schedule})


def gaps_block(vae, fields, args) -> dict:
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


def format_gaps(block) -> str:
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


def format_ais(block) -> str:
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
