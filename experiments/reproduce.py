"""Reproduce one row of the results table: train a config, score it with
importance sampling, and write ``experiments/results/<config>.json``.

::

    python experiments/reproduce.py experiments/configs/burda_vae_1l.yaml --budget-minutes 15
    python experiments/reproduce.py experiments/configs/vamp_vae_vampprior.yaml --epochs 5 --iw-samples 1000
    python experiments/render_results.py            # the markdown table and curves.png

Training is one :meth:`pyrovae.Trainer.fit` call (the config's
``train.epochs`` stays the plan, so learning-rate and KL schedules follow
the paper's run length); a callback stops it:

- after ``--epochs E`` epochs, or
- with ``--budget-minutes M``, before an epoch that would end past the
  budget (judged from the mean epoch time so far; at least one epoch runs), or
- at the config's own end (``train.epochs`` or early stopping, ``train.patience``).

``--resume`` continues the run in ``--run-dir`` from its last checkpoint
(exactly, as :meth:`pyrovae.Trainer.resume` does), so a row can be trained
in several legs: ``--budget-minutes`` is then the new leg's budget,
``--epochs`` the total, and the JSON adds up the training time
(``train_legs`` counts the legs: 1 for a run never resumed).

After every epoch the ELBO of the test set (one sample, beta = 1) is
recorded, next to the trainer's training loss and validation ELBO where the
config holds a validation split; the curve shows how far from converged a
budgeted run is. The test curve is only displayed; the model evaluated is
the last one, or the one with the best validation ELBO when the config
holds out a validation set (early stopping).

Evaluation: :func:`pyrovae.evaluate` with ``--iw-samples K`` (default
5000, the literature's setting) on the whole test set. When the estimated
evaluation time exceeds ``--max-eval-minutes``, K falls back to
``--fallback-iw-samples`` and the JSON says so.

The paper's figure is read from the config's comment header
(``# paper_nll: 86.76``, ``# paper_source: ...``, ``# paper_verified: false``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

import pyro

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, also when loaded by path
from provenance import cpu_name, git_commit, load_average  # noqa: E402
from pyrovae import build_model, load_config, load_data
from pyrovae.data import label_fields
from pyrovae.models.base import model_fields, summed_fields
from pyrovae.infer.evaluate import elbo_terms, evaluate, log_likelihood
from pyrovae.runs import RunDir
from pyrovae.training.callbacks import callbacks_from_config
from pyrovae.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


# -- the config's header ------------------------------------------------------


def paper_info(config_path) -> dict:
    """``paper_*`` fields from the config's leading comment block: the
    paper's NLL (``paper_nll: 86.76``) or test error (``paper_error: 11.97%
    (where it is from)``), where it is from (``paper_source``), whether it
    was checked against the paper's text (``paper_verified``) and, in a few
    words, how (``paper_check``)."""
    info = {"nll": None, "error": None, "source": None, "verified": None, "check": None}
    lines = []
    for line in Path(config_path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = "\n".join(lines)
    m = re.search(r"^paper_nll:\s*([0-9.]+)", text, re.M)
    if m:
        info["nll"] = float(m.group(1))
    m = re.search(r"^paper_source:\s*(.+(?:\n  .+)*)", text, re.M)
    if m:
        info["source"] = " ".join(part.strip() for part in m.group(1).splitlines())
    m = re.search(r"^paper_error:\s*([0-9.]+)%\s*(?:\((.+)\))?", text, re.M)
    if m:
        info["error"] = float(m.group(1)) / 100
        if info["source"] is None and m.group(2):
            info["source"] = m.group(2).strip()
    m = re.search(r"^paper_check:\s*(.+)", text, re.M)
    if m:
        info["check"] = m.group(1).strip()
    m = re.search(r"^paper_verified:\s*(\w+)", text, re.M)
    if m:
        info["verified"] = m.group(1).lower() == "true"
    elif info["nll"] is not None:
        info["verified"] = True
    info["header"] = lines
    return info


# -- machine and code ------------------------------------------------------------


def machine() -> dict:
    cpu = cpu_name()
    cuda = torch.cuda.is_available()
    return {
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- training ----------------------------------------------------------------------


def scored_fields(vae, x, labels) -> dict:
    """The fields the test set is scored with: labels as ``y`` for a model
    conditioned on them (cvae); a label the model sums out (m2) is not given."""
    fields = label_fields(x, labels, model_fields(vae))
    return {k: v for k, v in fields.items() if k not in summed_fields(vae)}


def test_elbo(vae, x, labels=None, batch_size=1000) -> float:
    """Mean one-sample ELBO (beta = 1) of ``x`` in nats, from the library's ELBO terms."""
    was_training = vae.training
    vae.eval()
    total = 0.0
    fields = scored_fields(vae, x, labels)
    with torch.no_grad(), pyro.validation_enabled(False):
        for start in range(0, len(x), batch_size):
            chunk = {k: v[start : start + batch_size] for k, v in fields.items()}
            total += float(elbo_terms(vae, **chunk)["elbo"].sum())
    vae.train(was_training)
    return total / len(x)


class CurveAndBudget:
    """Trainer callback: after every epoch, record the test ELBO and the
    elapsed time in ``curve.json``, keep the best-validation weights, and
    stop the run at ``--epochs`` or before an epoch that would end past the
    budget (judged from the mean epoch time of this leg).

    :param list curve: records of the run's previous legs (``--resume``);
        their last ``elapsed`` is where this leg's clock starts.
    """

    def __init__(self, run_dir, x_test=None, epochs=None, budget_minutes=None, log=print, curve=(), best_state=None,
                 labels_test=None, select="val_loss"):
        self.run_dir = Path(run_dir)
        self.labels_test, self.select = labels_test, select
        self.best_value = min((r[select] for r in curve if select in r), default=math.inf)
        self.x_test, self.epochs, self.budget_minutes, self.log = x_test, epochs, budget_minutes, log
        self.curve, self.best_state = list(curve), best_state
        self.earlier_seconds = self.curve[-1]["elapsed"] if self.curve else 0.0
        self.leg_epochs = 0
        self.start = time.perf_counter()

    def leg_seconds(self) -> float:
        return time.perf_counter() - self.start

    def on_epoch_end(self, trainer, record) -> None:
        record = dict(record)
        if self.x_test is not None:
            record["test_elbo"] = test_elbo(trainer.vae, self.x_test, self.labels_test)
        self.leg_epochs += 1
        leg = self.leg_seconds()
        record["elapsed"] = self.earlier_seconds + leg
        self.curve.append(record)
        (self.run_dir / "curve.json").write_text(json.dumps(self.curve))
        val = record.get("val_loss")
        chosen = record.get(self.select)
        if chosen is not None and chosen <= self.best_value:
            self.best_value = chosen
            self.best_state = {k: v.detach().clone() for k, v in trainer.vae.state_dict().items()}
        self.log(
            f"epoch {record['epoch']:>4}  train {record['train_loss']:.2f}"
            + (f"  val {-val:.2f}" if val is not None else "")
            + (f"  val error {100 * record['val_error']:.2f}%" if "val_error" in record else "")
            + (f"  test ELBO {record['test_elbo']:.2f}" if "test_elbo" in record else "")
            + f"  lr {record['lr']:.2e}  beta {record['beta']:.2f}  {record['seconds']:.1f}s  ({record['elapsed'] / 60:.1f} min)"
        )
        if self.epochs is not None and trainer.state.epoch >= self.epochs:
            trainer.request_stop("epochs")
        elif self.budget_minutes is not None:
            per_epoch = leg / self.leg_epochs
            if leg + per_epoch > self.budget_minutes * 60:
                trainer.request_stop("budget")

    def on_train_end(self, trainer) -> None:
        pass


def resumed_curve(run_dir: Path, history) -> list:
    """The curve of the run's previous legs, cut to the checkpoint's epochs
    (a crash can leave curve.json one epoch ahead of or behind the checkpoint;
    epochs missing from it come back from the checkpoint's history, without
    their test ELBO)."""
    path = run_dir / "curve.json"
    curve = json.loads(path.read_text()) if path.exists() else []
    by_epoch = {r["epoch"]: r for r in curve}
    out, elapsed = [], 0.0
    for record in history:
        r = by_epoch.get(record["epoch"], dict(record))
        elapsed = r.get("elapsed", elapsed + record.get("seconds", 0.0))
        out.append({**r, "elapsed": elapsed})
    return out


def train(cfg, splits, run_dir, epochs=None, budget_minutes=None, x_test=None, log=print, resume=False,
          labels_test=None, select="val_loss"):
    """Train with one :meth:`Trainer.fit` call (the config's ``train.epochs``
    stays the plan that schedules follow); returns (vae, curve, info).

    With ``resume``, continue the run in ``run_dir`` from its checkpoint:
    ``budget_minutes`` is then this leg's budget and ``epochs`` the
    total; the record's training time adds up all legs.
    """
    from pyrovae.errors import ConfigError
    from pyrovae.runs import load_checkpoint

    pyro.set_rng_seed(cfg.train.seed)
    vae = build_model(cfg.model, splits.data_shape)
    curve, best_state, legs = [], None, 1
    if resume:
        run = RunDir.existing(run_dir)
        if run.read_config() != cfg:
            raise ConfigError(
                f"the run in {run_dir} was trained with another config (its config.yaml differs from this one); "
                "resume it with the same config file and --set options, or start afresh without --resume"
            )
        if (run.path / "train_info.json").exists():
            legs = json.loads((run.path / "train_info.json").read_text()).get("legs", 1) + 1
    else:
        run = RunDir.create(run_dir, overwrite=True)
        cfg.to_yaml(run.config)
    trainer = Trainer(vae, splits, cfg, run_dir=run.path, callbacks=callbacks_from_config(cfg, run.path))
    if resume:
        trainer.resume()
        curve = resumed_curve(run.path, trainer.state.history)
        if splits.val is not None and run.best.exists():
            best_state = load_checkpoint(run.best)["model"]
        log(f"resuming {run.path} after epoch {trainer.state.epoch} "
            f"({curve[-1]['elapsed'] / 60 if curve else 0:.1f} min of earlier training)")
    recorder = CurveAndBudget(run.path, x_test, epochs, budget_minutes, log, curve=curve, best_state=best_state,
                              labels_test=labels_test, select=select)
    trainer.callbacks.append(recorder)
    trainer.fit()
    seconds = recorder.earlier_seconds + recorder.leg_seconds()
    stopped_by = trainer.stop_reason or "epochs"  # None: the config's own train.epochs
    vae = trainer.vae
    which = "last"
    if recorder.best_state is not None:
        vae.load_state_dict(recorder.best_state)
        which = "best_validation"
    info = {"stopped_by": stopped_by, "train_seconds": round(seconds, 1), "evaluated_weights": which,
            "epochs_limit": epochs, "budget_minutes": budget_minutes, "legs": legs}
    (Path(run_dir) / "train_info.json").write_text(json.dumps(info))
    return vae, recorder.curve, info


def load_trained(cfg, splits, run_dir, budget_minutes=None, epochs=None):
    """For ``--eval-only``: the weights, curve and training info a previous
    (possibly interrupted-at-evaluation) run left in ``run_dir``."""
    from pyrovae import load_run

    run_dir = Path(run_dir)
    val = splits.val is not None
    which = "best" if val and (run_dir / "best.pt").exists() else "checkpoint"
    vae, _, _ = load_run(run_dir, which=which)
    if (run_dir / "curve.json").exists():
        curve = json.loads((run_dir / "curve.json").read_text())
    else:
        curve = RunDir(run_dir).read_metrics()
    if (run_dir / "train_info.json").exists():
        info = json.loads((run_dir / "train_info.json").read_text())
    else:
        # a run stopped before it wrote train_info.json: infer what the metrics say
        epochs_run = len(curve)
        patience = cfg.train.patience
        stopped = "epochs" if epochs is not None and epochs_run >= epochs else ("budget" if budget_minutes else "unknown")
        if patience is not None and len(curve) > patience:
            best = min(range(epochs_run), key=lambda i: curve[i].get("val_loss", math.inf))
            if epochs_run - 1 - best >= patience:
                stopped = "early_stopping"
        info = {"stopped_by": stopped, "train_seconds": round(sum(r["seconds"] for r in curve), 1),
                "train_seconds_note": "sum of the trainer's epoch times from metrics.jsonl (the per-epoch test ELBO is not included)",
                "budget_minutes": budget_minutes, "epochs_limit": epochs}
    info["evaluated_weights"] = "best_validation" if which == "best" else "last"
    info["eval_only"] = True
    return vae, curve, info


# -- evaluation ---------------------------------------------------------------------


def estimate_eval_seconds(vae, x, k, compile, labels=None) -> float:
    """Time a small importance-sampling pass and scale it to len(x) x k."""
    n = min(len(x), 20)
    kk = min(k, 500)
    fields = {name: v[:n] for name, v in scored_fields(vae, x, labels).items()}
    log_likelihood(vae, num_samples=kk, seed=1, compile=compile, **fields)  # warm-up (and compilation)
    t = time.perf_counter()
    log_likelihood(vae, num_samples=kk, seed=2, compile=compile, **fields)
    dt = time.perf_counter() - t
    return dt * (len(x) / n) * (k / kk)


def score(vae, x, k, fallback_k, max_minutes, compile, log=print, labels=None):
    requested = k
    note = None
    est = estimate_eval_seconds(vae, x, k, compile, labels)
    log(f"evaluation estimate: {len(x)} points x K={k}: {est / 60:.1f} min")
    if max_minutes is not None and est > max_minutes * 60 and fallback_k < k:
        note = (f"K={k} was estimated at {est / 60:.1f} min, over --max-eval-minutes {max_minutes}; "
                f"evaluated with K={fallback_k} instead")
        log(note)
        k = fallback_k
    start = time.perf_counter()
    data = x if labels is None else (x, labels.to(x.device))  # labels: y of a cvae, the classifier's error of an m2
    result = evaluate(vae, data, k, seed=0, compile=compile)
    seconds = time.perf_counter() - start
    summary = result.summary()
    summary.update({"iw_samples_requested": requested, "eval_seconds": round(seconds, 1), "eval_note": note})
    return summary


# -- main -----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a YAML file in experiments/configs")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--budget-minutes", type=float, help="training wall-time budget (whole epochs)")
    stop.add_argument("--epochs", type=int, help="train this many epochs (at most the config's train.epochs)")
    p.add_argument("--iw-samples", "-k", type=int, default=5000, help="importance samples K (default 5000)")
    p.add_argument("--fallback-iw-samples", type=int, default=1000,
                   help="K used when K=--iw-samples would exceed --max-eval-minutes (default 1000)")
    p.add_argument("--max-eval-minutes", type=float, default=None,
                   help="fall back to --fallback-iw-samples when the estimate exceeds this (default: never)")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate only the first N test points (smoke tests)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, recorded in the JSON (e.g. data.subset=1000)")
    p.add_argument("--out-dir", default=str(RESULTS), help="where <config>.json goes (default experiments/results)")
    p.add_argument("--run-dir", default=None, help="run directory for checkpoints (default runs/reproduce/<config>)")
    p.add_argument("--name", default=None, help="result name (default: the config's file stem)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="evaluate eagerly (no torch.compile of the likelihood)")
    p.add_argument("--no-test-curve", dest="test_curve", action="store_false",
                   help="skip the per-epoch test ELBO")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its last checkpoint (same config and --set); "
                        "--budget-minutes is then this leg's budget, --epochs the total")
    p.add_argument("--eval-only", action="store_true",
                   help="skip training: evaluate the run already in --run-dir (give the same --budget-minutes/--epochs "
                        "and --set as the training run, so that the record describes it)")
    p.add_argument("--select", choices=("val_loss", "val_error"), default="val_loss",
                   help="which validation metric picks the evaluated weights (val_error: the classifier's, for m2)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        p.error("--budget-minutes must be > 0")
    if args.iw_samples < 1 or args.fallback_iw_samples < 1:
        p.error("K must be >= 1")
    if args.resume and args.eval_only:
        p.error("--resume trains; --eval-only does not: give one of them")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    config_path = Path(args.config)
    name = args.name or config_path.stem
    cfg = load_config(config_path, args.overrides)
    paper = paper_info(config_path)
    run_dir = Path(args.run_dir) if args.run_dir else ROOT / "runs" / "reproduce" / name
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = load_average()

    splits = load_data(cfg.data)
    x_test, labels_test = splits.test
    if args.test_limit is not None:
        x_test, labels_test = x_test[: args.test_limit], labels_test[: args.test_limit]
    log(f"{name}: {len(splits.train[0])} training points, "
        f"{0 if splits.val is None else len(splits.val[0])} validation, {len(x_test)} test; "
        f"plan {cfg.train.epochs} epochs" + (f", budget {args.budget_minutes} min" if args.budget_minutes else "")
        + (f", {args.epochs} epochs" if args.epochs else ""))

    if args.eval_only:
        vae, curve, info = load_trained(cfg, splits, run_dir, args.budget_minutes, args.epochs)
        log(f"evaluating the run in {run_dir} ({len(curve)} epochs, {info['evaluated_weights']} weights)")
    else:
        vae, curve, info = train(cfg, splits, run_dir, epochs=args.epochs, budget_minutes=args.budget_minutes,
                                 x_test=x_test if args.test_curve else None, log=log, resume=args.resume,
                                 labels_test=labels_test, select=args.select)
    summary = score(vae, x_test.to(vae.device), args.iw_samples, args.fallback_iw_samples,
                    args.max_eval_minutes, args.compile, log=log, labels=labels_test)

    epochs_run = len(curve)
    planned = cfg.train.epochs
    converged = info["stopped_by"] == "early_stopping" or (epochs_run >= planned and info.get("epochs_limit") is None)
    nll = -summary["log_likelihood"]
    record = {
        "kind": "reproduce",
        "name": name,
        "config": str(config_path.resolve().relative_to(ROOT)) if config_path.resolve().is_relative_to(ROOT) else str(config_path),
        "overrides": args.overrides,
        "paper": {k: v for k, v in paper.items() if k != "header"},
        "nll": nll,
        "gap": None if paper["nll"] is None else nll - paper["nll"],
        "elbo": summary["elbo"],
        "model": cfg.model.name,
        "model_topology": getattr(vae, "topology", None),
        "labelled_points": cfg.data.labelled,
        "test_error": summary.get("classification_error"),
        "test": summary,
        "active_units": summary["active_units"],
        "latent_units": summary["latent_units"],
        "iw_samples": summary["num_samples"],
        "test_points": len(x_test),
        "train_points": len(splits.train[0]),
        "epochs_run": epochs_run,
        "epochs_planned": planned,
        "budget_minutes": info.get("budget_minutes", args.budget_minutes),
        "epochs_limit": info.get("epochs_limit", args.epochs),
        "eval_only": bool(info.get("eval_only")),
        "train_seconds_note": info.get("train_seconds_note"),
        "stopped_by": info["stopped_by"],
        "converged": converged,
        "evaluated_weights": info["evaluated_weights"],
        "train_seconds": info["train_seconds"],
        "train_legs": info.get("legs", 1),
        "eval_seconds": summary["eval_seconds"],
        "wall_seconds": round(info["train_seconds"] + summary["eval_seconds"], 1),
        "seconds_per_epoch": round(info["train_seconds"] / max(epochs_run, 1), 2),
        "machine": machine(),
        "load_average": {"before": load_before, "after": load_average()},
        "git": git_commit(),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "curve": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
             if k in ("epoch", "train_loss", "val_loss", "val_reconstruction", "val_kl", "val_error", "test_elbo", "lr", "beta", "seconds", "elapsed")}
            for r in curve
        ],
        "run_dir": str(run_dir),
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    paper_txt = "" if paper["nll"] is None else f" (paper {paper['nll']:.2f}, gap {record['gap']:+.2f})"
    log(f"{name}: NLL {nll:.2f} nats with K={summary['num_samples']} on {len(x_test)} test points{paper_txt}; "
        f"ELBO {summary['elbo']:.2f}; {summary['active_units']}/{summary['latent_units']} active units; "
        f"{epochs_run} epochs ({info['stopped_by']}) in {info['train_seconds'] / 60:.1f} min")
    log(f"wrote {out}")
    print(json.dumps({"nll": nll, "epochs_run": epochs_run, "out": str(out)}))
    return 0


if __name__ == "__main__":
    from pyrovae.errors import PyrovaeError

    try:
        sys.exit(main())
    except PyrovaeError as e:  # a clear message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
