"""Peak memory (RSS) of two loads that must stay bounded.

1. ``is``: importance-sampled log-likelihood with K up to 100,000 samples
   per point (``pyrovae.evaluate.log_likelihood``). Memory should follow
   ``batch_size * chunk_size``, not K.
2. ``mmap``: training on a float32 ``.npy`` through ``data.options.mmap``.
   The process's memory should stay flat while it streams through the file,
   and should not grow with the file's size.

Every measurement runs in a fresh process. The peak is the kernel's VmHWM,
reset (``/proc/self/clear_refs``) once the model and data are loaded, so it
is the peak *of the measured phase*; the RSS before it is reported too. A
sampler thread also records VmRSS (and its anonymous / file-backed parts)
every 0.2 s.

    python experiments/bench_memory.py is-all --out experiments/results/bench_memory_is.json
    python experiments/bench_memory.py mmap-all --sizes-gb 1 4 --out experiments/results/bench_memory_mmap.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MB = 1 << 20


def status() -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


class Sampler(threading.Thread):
    """Records :func:`status` every ``every`` seconds."""

    def __init__(self, every=0.2):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()
        self.t0 = time.perf_counter()

    def run(self):
        while not self.stop.is_set():
            self.samples.append({"t": round(time.perf_counter() - self.t0, 2), **status()})
            time.sleep(self.every)

    def summary(self):
        self.stop.set()
        self.join()
        rss = [s["VmRSS"] for s in self.samples]
        anon = [s["RssAnon"] for s in self.samples]
        return {"samples": len(rss), "rss_min": min(rss), "rss_median": statistics.median(rss), "rss_max": max(rss),
                "anon_min": min(anon), "anon_max": max(anon), "file_max": max(s["RssFile"] for s in self.samples)}


# -- workers (run in their own process) ----------------------------------------------


def work_is(args):
    import torch

    torch.set_num_threads(1)
    import pyrovae
    from pyrovae.infer.evaluate import log_likelihood

    x = torch.load(args.path, weights_only=True)  # a few MNIST test points (loading all of MNIST here would
    # leave freed heap pages that the evaluation then reuses, hiding its own growth)
    vae = pyrovae.VAE.from_config(None, data_shape=tuple(x.shape[1:]))  # the default 784-200-200-50 model
    vae.eval()
    import gc

    gc.collect()
    before = status()
    reset_peak()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    ll = log_likelihood(vae, x, num_samples=args.k, batch_size=args.batch, chunk_size=args.chunk, seed=0)
    seconds = time.perf_counter() - t0
    after = status()
    return {"K": args.k, "chunk_size": args.chunk, "batch_size": args.batch, "points": len(x),
            "seconds": round(seconds, 2), "rss_before_mb": round(before["VmRSS"], 1),
            "peak_rss_mb": round(after["VmHWM"], 1), "peak_increase_mb": round(after["VmHWM"] - before["VmRSS"], 1),
            "log_likelihood": [round(float(v), 3) for v in ll], "sampler": sampler.summary()}


def make_npy(path: Path, gb: float, dim=784, seed=0):
    """A float32 .npy of about ``gb`` GiB in [0, 1], written in chunks (never all in memory)."""
    import numpy as np

    n = int(gb * (1 << 30) // (dim * 4))
    if path.exists() and path.stat().st_size >= n * dim * 4:
        return n
    a = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed)
    protos = rng.random((10, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        a[start:stop] = np.clip(protos[rng.integers(0, 10, stop - start)] + 0.1 * rng.standard_normal((stop - start, dim), dtype=np.float32), 0, 1)
    a.flush()
    del a
    return n


def work_mmap(args):
    import torch

    torch.set_num_threads(1)
    import pyro

    import pyrovae
    from pyrovae.data import load_data
    from pyrovae.training.trainer import Trainer

    cfg = pyrovae.load_config({
        "data": {"name": "npy", "path": args.path, "val_size": 1000, "binarize": "dynamic",
                 "options": {"mmap": not args.in_memory, "test_fraction": 0.0}},
        "model": {"latent_dim": 50},
        "train": {"epochs": 1, "batch_size": args.batch, "device": "cpu", "progress": False},
    })
    pyro.set_rng_seed(0)
    start_status = status()
    reset_peak()
    t0 = time.perf_counter()
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    trainer = Trainer(vae, splits, cfg)
    load_seconds = time.perf_counter() - t0
    loaded = status()
    steps = min(args.steps, len(trainer.batches)) if args.steps else len(trainer.batches)
    # train `steps` steps of one epoch, sampling memory all along
    reset_peak()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    it = iter(trainer.batches)
    with pyro.validation_enabled(False):
        for _ in range(steps):
            loss = trainer._step(next(it), 1.0)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - t0
    it.close()
    after = status()
    return {"file_gb": round(os.path.getsize(args.path) / (1 << 30), 2), "points": len(splits.train[0]),
            "mode": "in-memory" if args.in_memory else "mmap", "batch": args.batch, "steps": steps,
            "points_read": steps * args.batch,
            "rss_at_start_mb": round(start_status["VmRSS"], 1), "peak_rss_while_loading_mb": round(loaded["VmHWM"], 1),
            "rss_after_loading_mb": round(loaded["VmRSS"], 1), "load_seconds": round(load_seconds, 1),
            "peak_rss_while_training_mb": round(after["VmHWM"], 1), "train_seconds": round(train_seconds, 1),
            "ms_per_step": round(1000 * train_seconds / steps, 2), "last_loss": float(loss),
            "sampler": sampler.summary()}


# -- driver ---------------------------------------------------------------------------


def spawn(argv) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["is", "mmap", "is-all", "mmap-all"])
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--path")
    ap.add_argument("--in-memory", action="store_true")
    ap.add_argument("--steps", type=int, default=0, help="training steps (0: one epoch)")
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--dir", default="/tmp/pyrovae-bench-memory")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.mode == "is":
        print(json.dumps(work_is(args)))
        return
    if args.mode == "mmap":
        print(json.dumps(work_mmap(args)))
        return
    results = []
    if args.mode == "is-all":
        import torch

        from pyrovae.config import DataConfig
        from pyrovae.data import load_data

        Path(args.dir).mkdir(parents=True, exist_ok=True)
        points = Path(args.dir) / "mnist-test-points.pt"
        torch.save(load_data(DataConfig(name="mnist", val_size=0)).test[0][: args.n].clone(), points)
        for k, chunk in [(1000, 100), (1000, 1000), (100_000, 100), (100_000, 1000), (100_000, 10_000)]:
            r = spawn(["is", "--k", str(k), "--chunk", str(chunk), "--batch", "1", "--path", str(points)])
            print(json.dumps({key: v for key, v in r.items() if key != "sampler"}), flush=True)
            results.append(r)
    else:
        d = Path(args.dir)
        d.mkdir(parents=True, exist_ok=True)
        for gb in args.sizes_gb:
            path = d / f"data-{gb:g}gb.npy"
            make_npy(path, gb)
            for in_memory in ([False, True] if gb == min(args.sizes_gb) else [False]):
                argv = ["mmap", "--path", str(path), "--batch", str(args.batch), "--steps", str(args.steps)]
                r = spawn(argv + (["--in-memory"] if in_memory else []))
                print(json.dumps({key: v for key, v in r.items() if key != "sampler"} | {"sampler": r["sampler"]}), flush=True)
                results.append(r)
    summary = {"command": " ".join(sys.argv), "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
