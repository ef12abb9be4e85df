"""Benchmark: importance-sampled log-likelihood, decoder passes per second.

Workload: the Burda et al. (2015) MNIST model (784-200-200-50, tanh,
Bernoulli likelihood, diagonal Gaussian guide; pyrovae's default config),
N test points, K importance samples each: N x K decoder passes.

Variants, all on the same networks and data, interleaved and repeated (the
table shows medians):

- ``pyrovae``: :func:`pyrovae.log_likelihood` with its default chunking
  (Pyro traces, eager).
- ``pyrovae compile``: the same with ``compile=True`` (the likelihood's
  log-density through ``torch.compile``; compile time excluded, shown apart).
- ``pyrovae, N x 100 chunks``: pyrovae forced to the chunk shape of (a).
- ``(a) torch loop``: a hand-written batched PyTorch IS loop: encode all N
  once, then K in chunks of 100 samples for all N points at once.
- ``(a') torch loop, pyrovae's chunks``: the same loop at pyrovae's chunk shape.
- ``(b) pythae``: ``pythae.models.VAE.get_nll`` (if pythae is installed:
  ``pip install -e .[bench]``), under ``torch.no_grad()``.

Run::

    python experiments/bench_loglik.py                    # N=100, K=1000, 5 repeats
    python experiments/bench_loglik.py --run runs/mnist   # a trained run's weights
    python experiments/bench_loglik.py --sweep            # pyrovae chunk shapes only

The machine's other load distorts timings, and multi-threaded torch
operations suffer most (each waits for a descheduled thread): the script
prints the load average before and after; on a busy machine compare with
``--threads 1``. Full-run estimate: 10,000 x 5,000 passes at the measured
rate.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import pyro

from pyrovae import VAE, log_likelihood
from pyrovae.infer.evaluate import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_PASSES


def get_model_and_data(args):
    if args.run:
        from pyrovae import load_run

        vae, cfg, _ = load_run(args.run)
        data_cfg = cfg.data
    else:
        from pyrovae import DataConfig

        torch.manual_seed(0)
        vae = VAE.from_config(None, data_shape=(1, 28, 28))
        data_cfg = DataConfig()
    try:
        from pyrovae import load_data

        x = load_data(data_cfg).test[0][: args.n]
        source = "MNIST test set, binarized with data.binarize_seed"
    except Exception as e:  # offline without MNIST: random binary images
        print(f"(MNIST unavailable: {e}; using random binary images)", file=sys.stderr)
        x = (torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.13).float()
        source = "random binary images"
    return vae.eval(), x, source


def hand_loop(vae, x, k, k_chunk, n_chunk, seed):
    """A hand-written batched IS loop over the same networks (no Pyro)."""
    d = vae.latent_dim
    min_scale = vae.guide_family.min_scale
    g = torch.Generator().manual_seed(seed)
    out = []
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    with torch.inference_mode():
        for s in range(0, len(x), n_chunk):
            xb = x[s : s + n_chunk]
            b = len(xb)
            loc, raw = vae.encoder(xb).split(d, -1)
            scale = F.softplus(raw) + min_scale
            log_scale_sum = scale.log().sum(-1)
            target = xb.reshape(b, -1)
            acc = torch.full((b,), -math.inf)
            for j in range(0, k, k_chunk):
                kc = min(k_chunk, k - j)
                eps = torch.randn(kc, b, d, generator=g)
                z = loc + scale * eps
                logits = vae.decoder(z).reshape(kc, b, -1)
                log_px = -F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none").sum(-1)
                log_pz = -0.5 * z.pow(2).sum(-1) - d * half_log_2pi
                log_qz = -0.5 * eps.pow(2).sum(-1) - log_scale_sum - d * half_log_2pi
                acc = torch.logaddexp(acc, torch.logsumexp(log_px + log_pz - log_qz, 0))
            out.append(acc - math.log(k))
    return torch.cat(out)


def make_pythae(vae):
    """pythae's VAE around the same networks, or None if pythae is missing."""
    try:
        from pythae.models import VAE as PythaeVAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except Exception as e:
        print(f"(pythae unavailable: {type(e).__name__}: {e}; install with pip install -e .[bench])", file=sys.stderr)
        return None
    d = vae.latent_dim
    min_scale = vae.guide_family.min_scale

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = vae.encoder

        def forward(self, x):
            loc, raw = self.net(x).split(d, -1)
            scale = F.softplus(raw) + min_scale
            return ModelOutput(embedding=loc, log_covariance=2 * scale.log())

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = vae.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    cfg = VAEConfig(input_dim=tuple(vae.data_shape), latent_dim=d, reconstruction_loss="bce")
    return PythaeVAE(cfg, encoder=Encoder(), decoder=Decoder()).eval()


def pythae_nll(model, x, k, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(model.get_nll(x, n_samples=k, batch_size=100))  # pythae returns the mean log p(x)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def sweep(vae, x, k, repeats):
    shapes = [(20, 100), (20, 200), (40, 100), (50, 100), (20, 400), (50, 160), (100, 100), (20, 500), (100, 200)]
    times = {s: [] for s in shapes}
    for r in range(repeats):
        for s in shapes[r % len(shapes):] + shapes[: r % len(shapes)]:
            dt, _ = timed(lambda: log_likelihood(vae, x, k, batch_size=s[0], chunk_size=s[1], seed=r))
            times[s].append(dt)
    print("| batch_size x chunk_size | passes per chunk | passes/s (median) | min-max |")
    print("| --- | ---: | ---: | ---: |")
    for s in shapes:
        rates = [len(x) * k / t for t in times[s]]
        print(f"| {s[0]} x {s[1]} | {s[0] * s[1]} | {statistics.median(rates):,.0f} | {min(rates):,.0f}-{max(rates):,.0f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="data points (default 100)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per point (default 1000)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--run", help="a pyrovae run directory whose trained weights to use (default: random init)")
    p.add_argument("--sweep", action="store_true", help="time pyrovae's chunk shapes only")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--no-pythae", action="store_true", help="skip pythae")
    p.add_argument("--out", help="also write the figures as JSON here (e.g. experiments/results/bench_loglik.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    vae, x, source = get_model_and_data(args)
    n, k = len(x), args.k
    print(f"# log-likelihood benchmark: N={n}, K={k} ({n * k:,} decoder passes per run), {args.repeats} repeats")
    print(f"- model: pyrovae default config (784-200-200-50 tanh, Bernoulli), {'weights of ' + args.run if args.run else 'random init'}")
    print(f"- data: {source}")
    print(f"- torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"- load average before: {os.getloadavg()[0]:.2f}")
    if args.sweep:
        sweep(vae, x, k, args.repeats)
        print(f"- load average after: {os.getloadavg()[0]:.2f}")
        return 0

    b = min(n, DEFAULT_BATCH_SIZE)
    kc = max(1, DEFAULT_CHUNK_PASSES // b)
    variants = {
        "pyrovae": lambda r: log_likelihood(vae, x, k, seed=r).mean().item(),
        "pyrovae compile": lambda r: log_likelihood(vae, x, k, seed=r, compile=True).mean().item(),
        f"pyrovae, {n} x 100 chunks": lambda r: log_likelihood(vae, x, k, seed=r, batch_size=n, chunk_size=100).mean().item(),
        "(a) torch loop": lambda r: hand_loop(vae, x, k, 100, n, r).mean().item(),
        f"(a') torch loop, {b} x {kc} chunks": lambda r: hand_loop(vae, x, k, kc, b, r).mean().item(),
    }
    if args.no_compile:
        del variants["pyrovae compile"]
    compile_seconds = None
    if not args.no_compile:
        compile_seconds, _ = timed(lambda: log_likelihood(vae, x[: min(n, 2 * b)], 2 * kc, seed=0, compile=True))
    pythae = None if args.no_pythae else make_pythae(vae)
    if pythae is not None:
        variants["(b) pythae get_nll"] = lambda r: pythae_nll(pythae, x, k, r)
    # warm-up (allocator, thread pool)
    log_likelihood(vae, x[:b], 2 * kc, seed=0)
    hand_loop(vae, x[:b], 2 * kc, kc, b, 0)

    names = list(variants)
    times = {name: [] for name in names}
    values = {name: [] for name in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: no variant always runs first
        for name in order:
            dt, value = timed(lambda: variants[name](r))
            times[name].append(dt)
            values[name].append(value)
        print(f"  repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    load_after = os.getloadavg()[0]

    rate = {name: statistics.median(n * k / t for t in times[name]) for name in names}
    base_a = rate["(a) torch loop"]
    base_b = rate.get("(b) pythae get_nll")
    print()
    print("| variant | decoder passes/s (median) | min - max | vs (a) | vs (b) pythae | mean log p(x), nats |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        rates = [n * k / t for t in times[name]]
        vs_b = f"{rate[name] / base_b:.2f}x" if base_b else "n/a"
        print(f"| {name} | {rate[name]:,.0f} | {min(rates):,.0f} - {max(rates):,.0f} | {rate[name] / base_a:.2f}x | "
              f"{vs_b} | {statistics.mean(values[name]):.2f} |")
    print()
    if compile_seconds is not None:
        print(f"- torch.compile warm-up (first call, once per process): {compile_seconds:.1f} s")
    for name in ("pyrovae", "pyrovae compile"):
        if name in rate:
            print(f"- full run estimate, K=5000 on 10,000 points with {name}: "
                  f"{10_000 * 5_000 / rate[name] / 60:.1f} min (target: 10 min, 83,333 passes/s)")
    print(f"- load average after: {load_after:.2f}")
    if args.out:
        import json

        record = {
            "command": "experiments/bench_loglik.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
                       f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
            "torch": torch.__version__, "pyro": pyro.__version__, "threads": torch.get_num_threads(),
            "points": n, "iw_samples": k, "repeats": args.repeats, "load_average_at_end": load_after,
            "passes_per_second": {name: [n * k / t for t in times[name]] for name in names},
            "median_passes_per_second": rate,
            "ratio_to_a": {name: rate[name] / base_a for name in names},
        }
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
