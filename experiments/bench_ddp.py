"""Benchmark: data-parallel training with 2 processes against 1 process.

Workload: the default model (784-200-200-50 tanh MLPs, Bernoulli likelihood,
Gaussian guide, single-sample ELBO, Adam 1e-3) on dynamically binarized
MNIST, global batch ``--batch`` (each of the 2 processes takes half of it).
Every variant runs the same optimization: the same steps per epoch.

Variants, interleaved (A B C A B C ...) so that machine noise hits all alike:

- ``1p x 1t``: ``pyrovae train``, one process, OMP/torch threads = 1
- ``1p x 2t``: ``pyrovae train``, one process, 2 threads
- ``2p x 1t``: ``torchrun --nproc_per_node=2 -m pyrovae train``, 1 thread each

Each run trains ``--epochs`` epochs; we take the median epoch time (training
and validation, from ``metrics.jsonl``) without the first epoch, then the
median over repeats.

``--steps N`` instead times single optimizer steps of the same model in
spawned processes (median over N steps after 20 warm-up steps), wall clock
and CPU time of rank 0: one process; two processes without any
communication (the bound for two processes); two processes with DDP; two
processes with a hand-written flattened ``all_reduce`` after backward.

    python experiments/bench_ddp.py --epochs 4 --repeats 3 --batch 100
    python experiments/bench_ddp.py --steps 300 --batch 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

VARIANTS = {
    "1p x 1t": (1, 1),
    "1p x 2t": (1, 2),
    "2p x 1t": (2, 1),
}


def run(variant, cfg_path, out, port):
    nproc, threads = VARIANTS[variant]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    args = ["train", "--config", str(cfg_path), "--out", str(out), "--overwrite"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "pyrovae", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}", "-m", "pyrovae", *args]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = [json.loads(l)["seconds"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


def _step_worker(rank, world, port, mode, batch, steps, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    import torch

    torch.set_num_threads(1)
    import pyro

    import pyrovae
    from pyrovae.training import distributed
    from pyrovae.infer.objectives import objectives

    if world > 1:
        distributed.init()
    pyro.set_rng_seed(0)
    pyro.enable_validation(False)
    vae = pyrovae.VAE.from_config(None, data_shape=(1, 28, 28))
    objective = objectives.build({"name": "elbo"})
    params = list(vae.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    x = (torch.rand(len(range(rank, batch, world)), 1, 28, 28) < 0.5).float()
    ddp = distributed.wrap(vae, objective, torch.device("cpu")) if mode == "ddp" else None
    wall, cpu = [], []
    for _ in range(steps + 20):
        t, c = time.perf_counter(), time.process_time()
        if ddp is not None:
            loss = ddp(beta=1.0, x=x)
            (loss * world).backward()
        else:
            with vae.direct_parameters():
                loss = objective.differentiable_loss(vae.model, vae.guide, x)
            loss.backward()
            if mode == "all_reduce":
                distributed.all_reduce_grads(params)
        value = loss.item()
        if mode in ("ddp", "all_reduce"):
            distributed.all_reduce_sum([value])
        opt.step()
        opt.zero_grad(set_to_none=True)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if rank == 0:
        queue.put((statistics.median(wall[20:]) * 1e3, statistics.median(cpu[20:]) * 1e3))
    if world > 1:
        distributed.shutdown()


def step_times(batch, steps):
    import torch.multiprocessing as mp

    out = {}
    for world, mode in [(1, "one process"), (2, "no communication"), (2, "ddp"), (2, "all_reduce")]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        queue = mp.get_context("spawn").SimpleQueue()
        mp.start_processes(_step_worker, args=(world, port, mode, batch, steps, queue), nprocs=world, start_method="spawn")
        wall, cpu = queue.get()
        out[f"{world}p {mode}"] = {"wall_ms": round(wall, 2), "cpu_ms": round(cpu, 2)}
        print(f"{world}p {mode}: {wall:.2f} ms/step wall, {cpu:.2f} ms CPU (rank 0)", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--subset", type=int, default=None, help="train on the first N MNIST points only")
    ap.add_argument("--steps", type=int, default=0, help="time single steps instead (see above)")
    ap.add_argument("--work", default="/tmp/pyrovae-bench-ddp")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    args = ap.parse_args()
    if args.steps:
        result = {"command": " ".join(sys.argv), "cpu_cores": os.cpu_count(), "global_batch": args.batch,
                  "load_average_before": os.getloadavg(), "ms_per_step": step_times(args.batch, args.steps),
                  "load_average_after": os.getloadavg()}
        print(json.dumps(result, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = {
        "data": {"name": "mnist", "val_size": 1000, "subset": args.subset},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "device": "cpu", "progress": False},
    }
    cfg_path = work / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    times = {v: [] for v in VARIANTS}
    load_at_start = os.getloadavg()
    for r in range(args.repeats):
        for i, v in enumerate(VARIANTS):
            t = run(v, cfg_path, work / f"run-{i}", 29400 + 10 * r + i)
            times[v].append(t)
            print(f"repeat {r}: {v}: {t:.2f} s/epoch", flush=True)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    result = {
        "command": " ".join(sys.argv),
        "cpu_cores": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "global_batch": args.batch,
        "epochs_per_run": args.epochs,
        "seconds_per_epoch": times,
        "median_seconds_per_epoch": med,
        "speedup_2p_vs_1p1t": med["1p x 1t"] / med["2p x 1t"],
        "speedup_2p_vs_1p2t": med["1p x 2t"] / med["2p x 1t"],
        "speedup_1p2t_vs_1p1t": med["1p x 1t"] / med["1p x 2t"],
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
