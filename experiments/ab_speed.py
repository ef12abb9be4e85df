"""A/B speed of this tree against an earlier commit, measured side by side.

The earlier commit is checked out into a temporary git worktree; each round
runs the same workload once with each tree (in a fresh subprocess, the
order alternating between rounds), so both see the same machine load.
Reported: the median per tree and the ratio new / old (< 1: faster now).

Workloads (the ones of ``bench_train.py`` and ``bench_loglik.py``, through
the public API that both trees share):

- ``train``: one epoch of ``pyrovae.Trainer(...).fit()``, the default
  784-200-200-50 model, batch 100, dynamic binarization, on ``--points``
  MNIST training points; CPU seconds of the process, one thread.
- ``loglik``: ``pyrovae.log_likelihood`` (eager, ``compile=False``) of N=100
  test points with K=1000; CPU seconds.

Usage::

    python experiments/ab_speed.py --base cf0a578 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SNIPPET = r"""
import json, sys, time, torch, pyro
torch.set_num_threads(1)
import pyrovae
from pyrovae.data import Splits
workload, points = sys.argv[1], int(sys.argv[2])
cfg = pyrovae.load_config({"data": {"val_size": 0}, "train": {"epochs": 1, "progress": False, "batch_size": 100, "device": "cpu"}})
splits = pyrovae.load_data(cfg.data)
pyro.set_rng_seed(0)
vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
if workload == "train":
    x, y = splits.train
    small = Splits(train=(x[:points], y[:points]), test=splits.test)
    trainer = pyrovae.Trainer(vae, small, cfg)
    start = time.process_time()
    trainer.fit()
else:
    x = torch.bernoulli(splits.test[0][:100], generator=torch.Generator().manual_seed(0))
    pyrovae.log_likelihood(vae, x[:2], 10, compile=False)  # warm-up
    start = time.process_time()
    pyrovae.log_likelihood(vae, x, 1000, seed=0, compile=False)
print(json.dumps({"seconds": time.process_time() - start}))
"""


def run(tree: Path, workload: str, points: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SNIPPET, workload, str(points)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--points", type=int, default=20000, help="training points per epoch")
    parser.add_argument("--workloads", default="train,loglik")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            trees = {"old": old, "new": ROOT}
            results = {}
            for workload in args.workloads.split(","):
                times = {"old": [], "new": []}
                for r in range(args.rounds):
                    order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
                    for name in order:
                        times[name].append(run(trees[name], workload, args.points))
                    print(f"{workload} round {r + 1}: old {times['old'][-1]:.2f}s, new {times['new'][-1]:.2f}s", flush=True)
                med = {k: statistics.median(v) for k, v in times.items()}
                results[workload] = {"old_median": med["old"], "new_median": med["new"], "ratio": med["new"] / med["old"],
                                     "old": times["old"], "new": times["new"]}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    print(f"\nA/B against {args.base}, {args.rounds} alternating rounds, CPU seconds, one thread:\n")
    print("| workload | base (median s) | this tree (median s) | ratio this / base |")
    print("|---|---|---|---|")
    for workload, r in results.items():
        print(f"| {workload} | {r['old_median']:.3f} | {r['new_median']:.3f} | {r['ratio']:.3f} |")
    return results


if __name__ == "__main__":
    main()
