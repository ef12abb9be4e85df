"""Benchmark: one training epoch of pyrovae's trainer against a hand-written
eager PyTorch loop of the same networks and the same estimator.

Workload (Burda et al. 2015): 784-200-200-50, tanh, Bernoulli likelihood,
Gaussian guide, single-sample reparameterized ELBO with Monte Carlo KL,
batch 100, Adam(1e-3), dynamically binarized MNIST (60k points).

The variants run interleaved in one process (A B C A B C ...) so that machine
noise hits all of them alike; we report medians and ratios to the
hand-written loop.

    python experiments/bench_train.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import pyro
from pyro.infer import SVI, Trace_ELBO

import pyrovae
from pyrovae.data import Batches, Splits, load_data
from pyrovae.config import DataConfig


def handwritten_fused_epoch(vae, batches, opt):
    """The hand-written loop with torch's fused Adam, as pyrovae's trainer uses."""
    handwritten_epoch(vae, batches, opt)


def handwritten_loss(vae, x):
    """The same model's negative ELBO as plain PyTorch, summed over the batch
    ``x`` (B, 1, 28, 28): encoder -> reparameterized z -> decoder, in nats."""
    loc, raw = vae.encoder(x).split(vae.latent_dim, -1)
    scale = F.softplus(raw) + vae.guide_family.min_scale
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    log_lik = -F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").flatten(1).sum(-1)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_p = (-0.5 * z.pow(2) - half_log_2pi).sum(-1)
    log_q = (-0.5 * eps.pow(2) - scale.log() - half_log_2pi).sum(-1)
    return -(log_lik + log_p - log_q).sum()


def handwritten_epoch(vae, batches, opt):
    """The hand-written loop: :func:`handwritten_loss`, backward, optimizer step."""
    for batch in batches:
        loss = handwritten_loss(vae, batch["x"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


_compiled = {}


def compiled_epoch(vae, batches, opt):
    """The hand-written loss under torch.compile (the stretch-goal reference)."""
    key = id(vae)
    if key not in _compiled:
        enc, dec, d, min_scale = vae.encoder, vae.decoder, vae.latent_dim, vae.guide_family.min_scale

        def loss_fn(x, eps):
            loc, raw = enc(x).split(d, -1)
            scale = F.softplus(raw) + min_scale
            z = loc + scale * eps
            log_lik = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").flatten(1).sum(-1)
            log_p = (-0.5 * z.pow(2)).sum(-1)
            log_q = (-0.5 * eps.pow(2) - scale.log()).sum(-1)
            return -(log_lik + log_p - log_q).sum()

        _compiled[key] = torch.compile(loss_fn)
    fn = _compiled[key]
    for batch in batches:
        x = batch["x"]
        loss = fn(x, torch.randn(x.shape[0], vae.latent_dim))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def stock_pyro_epoch(vae, batches, svi):
    """Pyro's tutorial pattern: SVI + pyro.optim.Adam, validation on."""
    with pyro.validation_enabled(True):
        for batch in batches:
            x = batch["x"]
            svi.step(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--subset", type=int, default=None, help="training points per epoch (default: all 60k)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="wall: elapsed seconds; process: CPU seconds of this process, robust to other load "
        "on the machine when --threads 1",
    )
    parser.add_argument("--variants", default="handwritten,handwritten_fused,pyrovae,stock_pyro,compiled")
    parser.add_argument("--out", help="also write the figures as JSON here (e.g. experiments/results/bench_train.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load_data(DataConfig(val_size=0, subset=args.subset))
    x_train = splits.train[0]
    n = len(x_train)
    base = {"data": {"val_size": 0}, "train": {"epochs": 1, "progress": False, "batch_size": 100}}
    variants = args.variants.split(",")

    clock = time.perf_counter if args.clock == "wall" else time.process_time

    def run(name):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        vae = pyrovae.VAE.from_config(base, data_shape=(1, 28, 28))
        batches = Batches(x_train, 100, shuffle=True, dynamic_binarize=True, seed=0)
        start = clock()
        if name.startswith("pyrovae"):
            if name == "pyrovae_compiled_nets":  # the networks compiled, Pyro's sites left eager
                vae.encoder, vae.decoder = torch.compile(vae.encoder), torch.compile(vae.decoder)
            cfg = pyrovae.load_config(base)
            trainer = pyrovae.Trainer(vae, Splits(train=(x_train, splits.train[1]), test=splits.test), cfg)
            if name == "pyrovae_trace_elbo":  # the A/B of the lean ELBO: Pyro's own Trace_ELBO in the trainer
                trainer.strategy.objective = Trace_ELBO(max_plate_nesting=1)
            start = clock()
            trainer.fit()
        elif name == "stock_pyro":
            svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
            stock_pyro_epoch(vae, batches, svi)
        else:
            opt = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=name == "handwritten_fused")
            {"handwritten": handwritten_epoch, "handwritten_fused": handwritten_fused_epoch, "compiled": compiled_epoch}[name](vae, batches, opt)
        return clock() - start

    for name in variants:  # warm-up (compilation, allocator, caches)
        if "compiled" in name:
            run(name)
    times = {name: [] for name in variants}
    for r in range(args.repeats):
        for name in variants:
            times[name].append(run(name))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    ref = statistics.median(times["handwritten"]) if "handwritten" in times else None
    if args.out:
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        record = {
            "command": "experiments/bench_train.py " + " ".join(sys.argv[1:]),
            "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
                       f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
            "torch": torch.__version__, "pyro": pyro.__version__, "points_per_epoch": n, "batch_size": 100,
            "threads": args.threads, "clock": args.clock, "repeats": args.repeats,
            "load_average_at_end": list(os.getloadavg()),
            "seconds_per_epoch": times, "median_seconds_per_epoch": medians,
            "ratio_to_handwritten": {k: v / ref for k, v in medians.items()} if ref else None,
            "ratio_to_handwritten_fused": ({k: v / medians["handwritten_fused"] for k, v in medians.items()}
                                           if "handwritten_fused" in medians else None),
        }
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    print(f"\nOne epoch, {n} points, batch 100, {args.threads} threads, {args.clock} clock, median of {args.repeats}:\n")
    print("| variant | seconds/epoch (median) | min | ratio to hand-written |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = f"{med / ref:.3f}x" if ref else "-"
        print(f"| {name} | {med:.2f} | {min(ts):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
