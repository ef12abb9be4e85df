"""Benchmark: :func:`pyrovae.ais_log_likelihood` against a hand-written
batched HMC-AIS loop in plain PyTorch, on the same networks and data.

Workload: the Burda et al. (2015) MNIST VAE of
``experiments/configs/burda_vae_1l_fast.yaml`` (784-200-200-50 tanh MLPs,
Bernoulli likelihood, standard normal prior, diagonal Gaussian guide), N
points (MNIST test images if the data are at hand, else random binary
images), C chains per point, T temperatures, L leapfrog steps per move.

The hand-written loop (:func:`hand_ais`) does the same work as pyrovae,
written directly for this model: log p(z) + log p(x | z) from the decoder
and log q(z | x) from the encoder's output (computed once per chunk),
annealing from q(z | x) to the posterior along the same sigmoid schedule;
an adaptation pass that steers each chain's step size toward acceptance
0.65 and records its mean log step over each of up to 50 stretches, then the
estimate's pass with those steps fixed and fresh noise; L + 1 gradient
evaluations per move (as ``pyro.ops.integrator.velocity_verlet`` does) and a
Metropolis test per chain. Both use the same chunks of points: pyrovae's
default (as many points as make ``DEFAULT_CHUNK_STATES`` chain states: all
100 with 16 chains) unless ``--batch-size`` is given.

The two run interleaved (A B A B ..., alternating which goes first) in one
process with one torch thread, so that the machine's other load hits both
alike; the script reports median seconds and the throughput ratio
(pyrovae / hand-written = hand-written seconds / pyrovae seconds). As a
correctness guard it checks that the two estimates of the mean log p(x)
agree within Monte Carlo error (four standard errors of the difference,
from the spread over points of the per-point differences, plus 0.05 nats).

::

    python experiments/bench_ais.py --out experiments/results/bench_ais.json
    python experiments/bench_ais.py --quick        # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import pyro

import pyrovae
from pyrovae.infer.ais import DEFAULT_CHUNK_STATES
from pyrovae.infer.fields import balanced_sizes

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "burda_vae_1l_fast.yaml")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# pyrovae's AIS constants, restated here so that the loop is written independently
TARGET_ACCEPTANCE, ADAPT_RATE, INITIAL_STEP, MAX_SEGMENTS = 0.65, 0.2, 0.1, 50


def sigmoid_betas(num_steps: int) -> list:
    """The sigmoid schedule: β(t) = (σ(8(t - ½)) - σ(-4)) / (σ(4) - σ(-4)), t = 0, 1/T, ..., 1."""
    s = torch.sigmoid(8.0 * (torch.linspace(0, 1, num_steps + 1, dtype=torch.float64) - 0.5))
    betas = ((s - s[0]) / (s[-1] - s[0])).tolist()
    betas[0], betas[-1] = 0.0, 1.0
    return betas


class Chunk:
    """The hand-written densities of points ``x`` ``(B, 1, 28, 28)``: the
    encoder runs once; the decoder at every evaluation, on ``(C, B, 50)``."""

    def __init__(self, vae, x):
        loc, raw = vae.encoder(x).split(vae.latent_dim, -1)
        self.loc, self.scale = loc, F.softplus(raw) + vae.guide_family.min_scale
        self.log_norm = self.scale.log().sum(-1) + vae.latent_dim * HALF_LOG_2PI  # (B,)
        self.decoder, self.x = vae.decoder, x

    def log_q(self, z):
        return -0.5 * ((z - self.loc) / self.scale).pow(2).sum(-1) - self.log_norm

    def log_joint(self, z):
        logits = self.decoder(z)
        bce = F.binary_cross_entropy_with_logits(logits, self.x.expand_as(logits), reduction="none")
        log_lik = -bce.flatten(2).sum(-1)  # negated after the sum: one pass fewer over (C, B, 784)
        return log_lik - 0.5 * z.pow(2).sum(-1) - z.shape[-1] * HALF_LOG_2PI

    def energy_grad(self, z, beta):
        """-log γ_β at ``z`` ``(C, B)``, its gradient, log q and log p(x, z)."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lq, lj = self.log_q(z), self.log_joint(z)
            energy = -((1 - beta) * lq + beta * lj)
            (grad,) = torch.autograd.grad(energy.sum(), z)
        return energy.detach(), grad, lq.detach(), lj.detach()


def hmc_move(chunk, z, beta, eps, leapfrog, gen):
    """One HMC move at β with per-chain steps ``eps`` ``(C, B)``: new z, log q, log p(x, z), acceptance prob."""
    e = eps[..., None]
    r = torch.randn(z.shape, generator=gen)
    e0, g, _, _ = chunk.energy_grad(z, beta)
    z1, r1 = z, r
    for _ in range(leapfrog):
        r1 = r1 - 0.5 * e * g
        z1 = z1 + e * r1
        e1, g, lq1, lj1 = chunk.energy_grad(z1, beta)
        r1 = r1 - 0.5 * e * g
    log_ratio = (e0 + 0.5 * r.pow(2).sum(-1)) - (e1 + 0.5 * r1.pow(2).sum(-1))
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    accept = torch.rand(log_ratio.shape, generator=gen).log() < log_ratio
    return torch.where(accept[..., None], z1, z), lq1, lj1, accept, log_ratio.clamp(max=0).exp()


def anneal(chunk, num_chains, betas, leapfrog, gen, log_steps=None):
    """One AIS pass from q(z | x): log w ``(C, B)`` and the per-stretch log steps ``(S, C, B)``."""
    b = len(chunk.x)
    z = chunk.loc + chunk.scale * torch.randn(num_chains, b, chunk.loc.shape[-1], generator=gen)
    lq, lj = chunk.log_q(z), chunk.log_joint(z)
    moves = len(betas) - 2
    segments = max(1, min(moves, MAX_SEGMENTS))
    adapt = log_steps is None
    step = torch.full((num_chains, b), math.log(INITIAL_STEP))
    totals, counts = torch.zeros(segments, num_chains, b), [0] * segments
    log_w = torch.zeros(num_chains, b)
    for i in range(1, len(betas)):
        log_w += (betas[i] - betas[i - 1]) * (lj - lq)
        if i == len(betas) - 1:
            break
        seg = (i - 1) * segments // moves
        if not adapt:
            step = log_steps[seg]
        z, lq_new, lj_new, accept, prob = hmc_move(chunk, z, betas[i], step.exp(), leapfrog, gen)
        lq, lj = torch.where(accept, lq_new, lq), torch.where(accept, lj_new, lj)
        if adapt:
            step = step + ADAPT_RATE * (prob - TARGET_ACCEPTANCE)
            totals[seg] += step
            counts[seg] += 1
    if adapt:
        log_steps = totals / torch.tensor([max(c, 1) for c in counts], dtype=totals.dtype).reshape(-1, 1, 1)
    return log_w, log_steps


def hand_ais(vae, x, num_chains, num_steps, leapfrog, sizes, seed):
    """The hand-written AIS estimate of log p(x) ``(N,)``, in chunks of ``sizes`` points."""
    betas = sigmoid_betas(num_steps)
    gen = torch.Generator().manual_seed(seed)
    out, start = [], 0
    with torch.no_grad():
        for size in sizes:
            chunk = Chunk(vae, x[start:start + size])
            start += size
            _, log_steps = anneal(chunk, num_chains, betas, leapfrog, gen)
            log_w, _ = anneal(chunk, num_chains, betas, leapfrog, gen, log_steps)
            out.append(torch.logsumexp(log_w, 0) - math.log(num_chains))
    return torch.cat(out)


def get_model_and_data(n):
    torch.manual_seed(0)
    cfg = pyrovae.load_config(CONFIG)
    vae = pyrovae.build_model(cfg.model, data_shape=(1, 28, 28)).eval()
    try:
        x = pyrovae.load_data(cfg.data).test[0][:n]
        source = "MNIST test set, binarized with data.binarize_seed"
    except Exception as e:  # offline without MNIST: random binary images
        print(f"(MNIST unavailable: {type(e).__name__}; using random binary images)", file=sys.stderr)
        x = (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.13).float()
        source = "random binary images (p = 0.13)"
    return vae, x, source


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except Exception:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except Exception:
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="data points (default 100)")
    p.add_argument("--chains", type=int, default=16, help="chains per point (default 16)")
    p.add_argument("--steps", type=int, default=200, help="temperatures T (default 200)")
    p.add_argument("--leapfrog", type=int, default=10, help="leapfrog steps per move (default 10, pyrovae's default)")
    p.add_argument("--batch-size", type=int, help="points per chunk, both variants (default: pyrovae's default)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 10 points, 4 chains, 10 temperatures, 2 repeats")
    p.add_argument("--out", help="write the figures as JSON here (e.g. experiments/results/bench_ais.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.chains, args.steps, args.repeats = 10, 4, 10, 2
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    vae, x, source = get_model_and_data(args.n)
    opts = dict(num_steps=args.steps, num_chains=args.chains, leapfrog_steps=args.leapfrog, batch_size=args.batch_size)
    batch = args.batch_size or max(1, DEFAULT_CHUNK_STATES // args.chains)  # pyrovae's chunks, by default
    sizes = balanced_sizes(len(x), min(batch, len(x)))
    variants = {
        "pyrovae": lambda r: pyrovae.ais_log_likelihood(vae, x, seed=r, **opts),
        "hand-written": lambda r: hand_ais(vae, x, args.chains, args.steps, args.leapfrog, sizes, r),
    }
    print(f"# AIS benchmark: N={len(x)}, {args.chains} chains, {args.steps} temperatures, {args.leapfrog} leapfrog "
          f"steps, chunks of {sizes} points, {args.repeats} interleaved repeats")
    print(f"- model: {os.path.relpath(CONFIG)} (random init); data: {source}")
    print(f"- torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} thread(s), {cpu_model()}")
    load_before = os.getloadavg()[0]
    print(f"- load average before: {load_before:.2f}")
    # warm-up (allocator, first-call costs)
    pyrovae.ais_log_likelihood(vae, x[:2], seed=0, **dict(opts, num_steps=2, num_chains=2))
    hand_ais(vae, x[:2], 2, 2, args.leapfrog, [2], 0)

    names = list(variants)
    times = {name: [] for name in names}
    estimates = {name: [] for name in names}
    for r in range(args.repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            ll = variants[name](1000 + r)
            times[name].append(time.perf_counter() - start)
            estimates[name].append(ll)
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {times[k][-1]:.1f} s" for k in names),
              file=sys.stderr)
    load_after = os.getloadavg()[0]

    median = {name: statistics.median(times[name]) for name in names}
    ratio = median["hand-written"] / median["pyrovae"]
    # the guard: per point, each variant's mean over repeats; their difference's mean over points
    mean_ll = {name: torch.stack(estimates[name]).mean(0) for name in names}
    diff = mean_ll["pyrovae"] - mean_ll["hand-written"]
    diff_se = float(diff.std()) / math.sqrt(len(diff))
    agree = abs(float(diff.mean())) < 4 * diff_se + 0.05
    print()
    print("| variant | median s | min - max s | mean log p(x), nats |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        print(f"| {name} | {median[name]:.2f} | {min(times[name]):.2f} - {max(times[name]):.2f} | "
              f"{float(mean_ll[name].mean()):.3f} |")
    print()
    print(f"- throughput ratio pyrovae / hand-written: {ratio:.3f}x")
    print(f"- estimates agree: {agree} (mean difference {float(diff.mean()):+.4f} nats, "
          f"standard error {diff_se:.4f})")
    print(f"- load average after: {load_after:.2f}")
    if args.out:
        record = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python experiments/bench_ais.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "pyro": pyro.__version__,
            "settings": {"points": len(x), "chains": args.chains, "temperatures": args.steps,
                         "leapfrog_steps": args.leapfrog, "chunks": sizes, "schedule": "sigmoid",
                         "init": "guide", "repeats": args.repeats, "model": os.path.relpath(CONFIG),
                         "weights": "random init", "data": source},
            "pyrovae_commit": git_commit(),
            "gradient_evaluations_per_run": 2 * len(sizes) * (args.steps - 1) * (args.leapfrog + 1),
            "seconds": times, "median_seconds": median, "throughput_ratio_pyrovae_to_hand": ratio,
            "mean_log_likelihood": {name: float(mean_ll[name].mean()) for name in names},
            "estimates_agree": agree, "mean_difference_nats": float(diff.mean()), "difference_standard_error": diff_se,
            "load_average_before_after": [load_before, load_after],
        }
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
