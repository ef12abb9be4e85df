"""The conditional VAE against the unconditional VAE with the same networks.

Trains ``configs/cvae_mnist.yaml`` and ``configs/vae_mnist.yaml`` (MLP
256-256, latent 16, Bernoulli, 10 epochs, dynamically binarized MNIST) and
measures on the 10k test set:

- the IS log-likelihood: log p(x | y) of the cvae (given the test labels)
  and log p(x) of the vae, K importance samples each (nats; the conditional
  one should be the higher: knowing the digit leaves less to explain);
- ``sample_label_accuracy``: 100 class-conditional samples (decoder means)
  of each digit, labelled by the MLP classifier of ``vae_vs_ae.py``
  trained here on grey MNIST; the fraction given the class they were drawn
  for (the classifier's own test accuracy is reported next to it).

Writes ``experiments/results/<name>.json`` and the class-conditional
sample grid ``experiments/results/<name>_class_samples.png`` (name
``cvae_mnist`` by default). ``--set`` overrides go to both configs, so the
two models keep the same networks. Run from the repository root::

    python experiments/cvae_vs_vae.py --threads 1
    python experiments/cvae_vs_vae.py --threads 1 --set train.epochs=30 --name cvae_mnist_30ep
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

import pyro

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import cpu_name, git_commit, load_average  # noqa: E402
from vae_vs_ae import train_classifier  # noqa: E402

from pyrovae import build_model, evaluate, load_config, load_data, load_run  # noqa: E402
from pyrovae.report.figures import PlotInputs, class_samples  # noqa: E402
from pyrovae.report.latents import class_labels, draw_samples  # noqa: E402
from pyrovae.report.plots import save_figure  # noqa: E402
from pyrovae.runs import RunDir  # noqa: E402
from pyrovae.training.callbacks import callbacks_from_config  # noqa: E402
from pyrovae.training.trainer import Trainer  # noqa: E402

MODELS = {"cvae": HERE / "configs" / "cvae_mnist.yaml", "vae": HERE / "configs" / "vae_mnist.yaml"}


def train_or_load(name, config_path, out_dir, reuse, overrides=()):
    """Train one model into ``out_dir/<name>`` (or load it with ``reuse``); returns (model, cfg, seconds)."""
    run_path = out_dir / name
    cfg = load_config(config_path, list(overrides))
    if not (reuse and (run_path / "checkpoint.pt").exists()):
        run = RunDir.create(run_path, overwrite=True)
        cfg.to_yaml(run.config)
        pyro.set_rng_seed(cfg.train.seed)
        splits = load_data(cfg.data)
        model = build_model(cfg.model, splits.data_shape)
        Trainer(model, splits, cfg, run_dir=run.path, callbacks=callbacks_from_config(cfg, run.path)).fit()
    model, cfg, _ = load_run(run_path)
    seconds = sum(r["seconds"] for r in RunDir(run_path).read_metrics())
    print(f"{name}: trained in {seconds:.0f} s", file=sys.stderr)
    return model.eval(), cfg, seconds


@torch.no_grad()
def sample_label_accuracy(cvae, classifier, per_class: int, seed: int):
    """Fraction of ``per_class`` decoder-mean samples of each class that the classifier labels as that class."""
    hits, per = 0, {}
    for c in range(cvae.condition.num_classes):
        samples = draw_samples(cvae, per_class, seed=seed + c, y=class_labels(cvae, c, per_class))
        right = int((classifier(samples).argmax(-1) == c).sum())
        per[c] = right / per_class
        hits += right
    return hits / (per_class * cvae.condition.num_classes), per


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/cvae_vs_vae"), help="run directories")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--reuse", action="store_true", help="load runs already in --out instead of training")
    p.add_argument("--iw-samples", "-k", type=int, default=1000, help="importance samples K (default 1000)")
    p.add_argument("--per-class", type=int, default=100, help="samples per class for sample_label_accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override applied to both models (they keep the same networks)")
    p.add_argument("--name", default="cvae_mnist", help="results file stem (default cvae_mnist)")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_average()
    models, cfgs, seconds = {}, {}, {}
    for name, path in MODELS.items():
        models[name], cfgs[name], seconds[name] = train_or_load(name, path, args.out, args.reuse, args.overrides)
    splits = load_data(cfgs["cvae"].data)
    x, y = splits.test
    scores = {}
    for name, model in models.items():
        t = time.perf_counter()
        summary = evaluate(model, (x, y), args.iw_samples, seed=0).summary()
        summary["eval_seconds"] = round(time.perf_counter() - t, 1)
        scores[name] = summary
        print(f"{name}: {summary['conditioned_on']} log-likelihood {summary['log_likelihood']:.2f} nats", file=sys.stderr)
    grey = load_data(dataclasses.replace(cfgs["cvae"].data, binarize="none"))
    classifier = train_classifier(*grey.train, seed=args.seed)
    with torch.no_grad():
        classifier_accuracy = float((classifier(grey.test[0]).argmax(-1) == grey.test[1]).float().mean())
    accuracy, per_class = sample_label_accuracy(models["cvae"], classifier, args.per_class, args.seed)
    args.results.mkdir(parents=True, exist_ok=True)
    figure = class_samples(PlotInputs(models["cvae"], x, y, seed=args.seed))
    save_figure(figure, args.results / f"{args.name}_class_samples.png")
    record = {
        "kind": "cvae_vs_vae",
        "configs": {k: str(v.relative_to(HERE.parent)) for k, v in MODELS.items()},
        "overrides": args.overrides,
        "latent_dim": cfgs["cvae"].model.latent_dim,
        "test_points": len(x),
        "iw_samples": args.iw_samples,
        "nll_conditional": -scores["cvae"]["log_likelihood"],
        "nll_unconditional": -scores["vae"]["log_likelihood"],
        "conditional_below_unconditional": -scores["cvae"]["log_likelihood"] <= -scores["vae"]["log_likelihood"],
        "sample_label_accuracy": accuracy,
        "sample_label_accuracy_per_class": per_class,
        "samples_per_class": args.per_class,
        "classifier_test_accuracy": classifier_accuracy,
        "epochs": {k: c.train.epochs for k, c in cfgs.items()},
        "train_seconds": seconds,
        "test": scores,
        "machine": {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "pyro": pyro.__version__, "gpu": None},
        "load_average": {"before": load_before, "after": load_average()},
        "git": git_commit(),
        "started": started,
    }
    out = args.results / f"{args.name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"conditional NLL {record['nll_conditional']:.2f} vs unconditional {record['nll_unconditional']:.2f} nats "
          f"(K={args.iw_samples}); sample label accuracy {accuracy:.3f} (classifier test accuracy "
          f"{classifier_accuracy:.3f}); wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
