"""Score a trained results row by annealed importance sampling: IS against
AIS on the first test points, the BDMC sandwich that certifies the AIS
schedule, and the inference gaps (Cremer et al. 2018).

::

    python experiments/score_ais.py runs/reproduce/burda_vae_1l_fast --name burda_vae_1l_fast \\
        --points 1000 --iw-samples 5000 --bdmc-steps 100,300,1000 --leapfrog 5 --threads 1

Steps, each timed:

1. **BDMC sweep.** For each ``--bdmc-steps`` value T, in order, run
   :func:`pyrovae.bdmc` on ``--bdmc-points`` points simulated from the
   model. The first T whose mean sandwich gap is at most ``--certify``
   nats (default 0.5) with two standard errors to spare is the schedule
   used below; if none is, the last one is used and the record says
   ``certified: false``. A model that BDMC refuses (a text model observes
   a transform of its data, so no exact posterior draw of its own x
   exists) gets ``bdmc: null`` and the last T, and the record says why;
   it gets a weaker check instead, which is no certificate: AIS with T
   and with ``--check-factor`` x T steps on the first ``--bdmc-points``
   real points (``length_check``), since a long enough schedule stops
   moving.
2. **IS and AIS on the same points.** :func:`pyrovae.log_likelihood` with
   K = ``--iw-samples`` and :func:`pyrovae.ais_log_likelihood` with the
   chosen schedule, on the first ``--points`` points of the test split
   (binarized as ``pyrovae evaluate`` does).
3. **Inference gaps** on the first ``--gap-points`` of those points with
   the same AIS schedule (:func:`pyrovae.inference_gaps`).

Writes ``experiments/results/ais_<name>.json`` (``kind: ais_row``), which
``experiments/render_results.py`` reads for the AIS column.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import cpu_name, git_commit  # noqa: E402


def _mean_se(values: torch.Tensor) -> dict:
    v = values.detach().double().cpu()
    return {"mean": float(v.mean()), "se": float(v.std() / len(v) ** 0.5) if len(v) > 1 else None}


def _test_fields(model, cfg, n: int):
    """The first ``n`` test points as ``pyrovae evaluate`` scores them, as the model's batch fields."""
    from pyrovae import load_data
    from pyrovae.data import fixed_split, label_fields
    from pyrovae.models.base import model_fields

    x, labels = fixed_split(load_data(cfg.data).test, cfg.data, "test")
    return label_fields(x[:n], labels[:n], model_fields(model))


def _bdmc_sweep(model, args, options) -> tuple:
    """``(chosen num_steps, sweep records, refusal reason or None)``."""
    from pyrovae import bdmc
    from pyrovae.errors import PyrovaeError

    sweep = []
    for steps in args.bdmc_steps:
        start = time.perf_counter()
        try:
            result = bdmc(model, args.bdmc_points, seed=args.seed, num_steps=steps, **options)
        except PyrovaeError as e:
            return args.bdmc_steps[-1], sweep, str(e)
        gap = (result.upper - result.lower).double()
        record = {"num_steps": steps, "points": args.bdmc_points, "lower": _mean_se(result.lower),
                  "upper": _mean_se(result.upper), "gap_mean": float(gap.mean()),
                  "gap_se": float(gap.std() / len(gap) ** 0.5), "seconds": round(time.perf_counter() - start, 1)}
        sweep.append(record)
        print(f"BDMC T={steps}: gap {record['gap_mean']:.3f} nats ({record['seconds']:.0f} s)", file=sys.stderr)
        if record["gap_mean"] + 2 * record["gap_se"] <= args.certify:
            return steps, sweep, None
    return args.bdmc_steps[-1], sweep, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory (pyrovae train / experiments/reproduce.py)")
    p.add_argument("--name", required=True, help="the results row's name (file ais_<name>.json)")
    p.add_argument("--which", default="checkpoint", choices=("checkpoint", "best"),
                   help="the weights the row's IS figure was computed from (reproduce.py's evaluated_weights)")
    p.add_argument("--points", type=int, default=1000, help="test points scored by IS and AIS (default 1000)")
    p.add_argument("--iw-samples", type=int, default=5000, help="K of the IS estimate on those points (default 5000)")
    p.add_argument("--bdmc-steps", default="100,300,1000",
                   help="AIS lengths tried by BDMC, shortest first (default 100,300,1000)")
    p.add_argument("--bdmc-points", type=int, default=50, help="simulated points of each BDMC run (default 50)")
    p.add_argument("--certify", type=float, default=0.5, help="the largest BDMC gap that certifies a schedule (nats)")
    p.add_argument("--check-factor", type=int, default=4,
                   help="where BDMC is refused: compare AIS with T and this many times T steps (default 4)")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--schedule", default="sigmoid")
    p.add_argument("--gap-points", type=int, default=100, help="points of the gap decomposition (default 100; 0 skips)")
    p.add_argument("--gap-steps", type=int, default=2000, help="most local optimization steps (default 2000)")
    p.add_argument("--gap-samples", type=int, default=1000, help="draws per point of each ELBO (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--note", default=None, help="where the weights came from, kept in the record")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    args = p.parse_args(argv)
    args.bdmc_steps = [int(s) for s in args.bdmc_steps.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)

    import pyrovae

    started = datetime.now(timezone.utc)
    model, cfg, state = pyrovae.load_run(args.run_dir, which=args.which)
    options = {"num_chains": args.chains, "leapfrog_steps": args.leapfrog, "schedule": args.schedule}
    timings = {}

    start = time.perf_counter()
    steps, sweep, refused = _bdmc_sweep(model, args, options)
    timings["bdmc_seconds"] = round(time.perf_counter() - start, 1)
    certified = bool(sweep) and sweep[-1]["gap_mean"] + 2 * sweep[-1]["gap_se"] <= args.certify

    fields = _test_fields(model, cfg, args.points)
    n = len(fields["x"])
    length_check = None
    if refused:
        head = {k: v[:args.bdmc_points] for k, v in fields.items()}
        start = time.perf_counter()
        short, long = (pyrovae.ais_log_likelihood(model, num_steps=t, seed=args.seed, **options, **head).double()
                       for t in (steps, args.check_factor * steps))
        diff = long - short
        length_check = {"points": len(diff), "num_steps": [steps, args.check_factor * steps],
                        "ais": [float(short.mean()), float(long.mean())], "longer_minus_shorter": _mean_se(diff),
                        "seconds": round(time.perf_counter() - start, 1)}
        timings["bdmc_seconds"] += length_check["seconds"]
        print(f"length check: T={steps} {float(short.mean()):.3f}, T={args.check_factor * steps} "
              f"{float(long.mean()):.3f}", file=sys.stderr)
    start = time.perf_counter()
    is_ll = pyrovae.log_likelihood(model, num_samples=args.iw_samples, seed=args.seed, **fields)
    timings["is_seconds"] = round(time.perf_counter() - start, 1)
    print(f"IS K={args.iw_samples} on {n} points: {float(is_ll.mean()):.3f} ({timings['is_seconds']:.0f} s)", file=sys.stderr)
    start = time.perf_counter()
    ais = pyrovae.ais_log_likelihood(model, num_steps=steps, seed=args.seed, return_stats=True, progress=True,
                                     **options, **fields)
    timings["ais_seconds"] = round(time.perf_counter() - start, 1)
    print(f"AIS T={steps} on {n} points: {float(ais.log_likelihood.mean()):.3f} ({timings['ais_seconds']:.0f} s)",
          file=sys.stderr)

    gaps = None
    if args.gap_points > 0:
        m = min(args.gap_points, n)
        start = time.perf_counter()
        result = pyrovae.inference_gaps(model, num_samples=args.gap_samples, max_steps=args.gap_steps, seed=args.seed,
                                        ais_options={"num_steps": steps, **options},
                                        **{k: v[:m] for k, v in fields.items()})
        timings["gaps_seconds"] = round(time.perf_counter() - start, 1)
        gaps = {"points": m, "num_samples": args.gap_samples, "max_steps": args.gap_steps, "steps": result.steps,
                "share_kept_initial": float(result.kept_initial.double().mean()),
                **{k: _mean_se(getattr(result, k)) for k in result.means()}}
        print(f"gaps on {m} points: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in gaps.items()
                                                  if isinstance(v, dict)), file=sys.stderr)

    record = {
        "kind": "ais_row", "name": args.name, "run_dir": str(args.run_dir), "weights": f"{args.which}.pt",
        "epoch": state.get("epoch"), "weights_note": args.note,
        "date": started.date().isoformat(), "started": started.isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "git": git_commit(),
        "command": "python experiments/score_ais.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "test_points": n, "iw_samples": args.iw_samples,
        "ais_settings": {"num_steps": steps, **options, "seed": args.seed},
        "certify_nats": args.certify, "certified": certified, "bdmc": sweep or None, "bdmc_refused": refused,
        "length_check": length_check,
        "is": _mean_se(is_ll), "ais": _mean_se(ais.log_likelihood),
        "ais_minus_is": _mean_se(ais.log_likelihood.double() - is_ll.double()),
        "acceptance_mean": float(ais.acceptance.double().mean()),
        "gaps": gaps, **timings,
        "per_point": {"is": is_ll.double().tolist(), "ais": ais.log_likelihood.double().tolist()},
    }
    out = Path(args.out_dir) / f"ais_{args.name}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
