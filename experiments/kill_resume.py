"""SIGKILL ``pyrovae train`` at random moments, then ``--resume``; repeat.

Every trial launches training (the first from scratch, the rest with
``--resume``) and kills it (with torchrun: the agent and its workers) with SIGKILL, either after a
random delay or the moment a checkpoint write is seen in progress (its
temporary file appears). After each kill it checks that:

- ``checkpoint.pt`` loads (``torch.load(weights_only=True)``) and is complete;
- its epoch never goes back, and it is the last epoch the process reported
  finishing, or the one after it (saved, killed before the report): no epoch
  is lost beyond the one in progress;
- ``metrics.jsonl`` holds no epoch that the checkpoint does not.

At the end the run is resumed to completion and compared with a run that was
never interrupted: the same metrics, one line per epoch, and bitwise the
same weights.

    python experiments/kill_resume.py --kills 24
    python experiments/kill_resume.py --kills 10 --nproc 2      # under torchrun
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from pyrovae.runs import load_checkpoint

CONFIG = {
    "data": {"name": "synthetic", "val_size": 200, "binarize": "dynamic",
             "options": {"num_points": 2200, "shape": [1, 16, 16]}},
    "model": {"latent_dim": 16, "encoder": {"name": "mlp", "hidden": [512, 512]},
              "decoder": {"name": "mlp", "hidden": [512, 512]}},
    "train": {"epochs": 200, "batch_size": 100, "device": "cpu", "progress": True},
}
EPOCH_LINE = re.compile(r"(?:^|\r)epoch\s+(\d+)\s+train", re.M)  # the trainer's report, after each checkpoint


def command(args, nproc, port):
    if nproc == 1:
        return [sys.executable, "-m", "pyrovae", *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
            "-m", "pyrovae", *args]


def launch(args, nproc, port, log):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command(args, nproc, port), stdout=log, stderr=subprocess.STDOUT, env=env)


def descendants(pid: int):
    """PIDs of all processes below ``pid`` (torchrun starts its workers with
    ``start_new_session=True``, so killing torchrun's process group misses them)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill(proc):
    """SIGKILL the launched process and every process below it (stopped
    first, so that it starts no new one meanwhile)."""
    try:
        os.kill(proc.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    for pid in [proc.pid] + descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def temp_files(run: Path, prefixes=("",)):
    """Temporary files of unfinished writes (those starting with a prefix)."""
    return sorted(p.name for p in run.glob(".*.tmp") if p.name.startswith(tuple("." + x for x in prefixes)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/pyrovae-kill-resume")
    ap.add_argument("--out", default=None, help="write the summary JSON here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run, ref = work / "run", work / "reference"
    port = 29600 + rng.randrange(300)

    t0 = time.time()
    with open(work / "reference.log", "w") as log:
        assert launch(["train", "--config", str(config), "--out", str(ref)], args.nproc, port, log).wait() == 0
    reference_seconds = time.time() - t0
    print(f"reference run: {reference_seconds:.1f} s", flush=True)

    trials, last_epoch, failures = [], 0, []
    for k in range(args.kills):
        fresh = not (run / "checkpoint.pt").exists()
        argv = ["train", "--config", str(config), "--out", str(run)] + (["--overwrite"] if run.exists() else [])
        if not fresh:
            argv = ["train", "--resume", str(run)]
        mode = "during a checkpoint write" if k % 2 else "random time"
        logfile = work / f"trial-{k}.log"
        before = set(temp_files(run, ("checkpoint.pt.", "best.pt."))) if run.exists() else set()
        left_over = set(temp_files(run)) if run.exists() else set()  # from the previous kill
        with open(logfile, "w") as log:
            proc = launch(argv, args.nproc, port + 1 + k, log)
            start = time.time()
            if mode == "random time":  # startup (imports, data) takes about 3 s, 10 s under torchrun
                time.sleep(rng.uniform(0.5, 7.0 * args.nproc))
            else:  # when the n-th checkpoint write (n = 1..6) shows its temporary file, plus up to 5 ms
                n, seen = rng.randint(1, 6), set(before)
                while proc.poll() is None and time.time() - start < 120:
                    new = set(temp_files(run, ("checkpoint.pt.", "best.pt."))) - seen
                    seen |= new
                    n -= len(new)
                    if n <= 0:
                        break
                    time.sleep(0.0002)
                time.sleep(rng.uniform(0, 0.005))
            finished = proc.poll() is not None
            kill(proc)
        alive = time.time() - start
        reported = [int(e) for e in EPOCH_LINE.findall(logfile.read_text())]
        torn = sorted(set(temp_files(run)) - left_over)  # writes this kill cut short
        trial = {"trial": k, "mode": mode, "fresh": fresh, "seconds_alive": round(alive, 3),
                 "finished_before_kill": finished, "torn_temp_files": torn}
        problems = []
        if (run / "checkpoint.pt").exists():
            try:
                state = load_checkpoint(run / "checkpoint.pt")
                epoch = state["epoch"]
            except Exception as e:  # noqa: BLE001 -- any failure here is what we look for
                problems.append(f"checkpoint does not load: {e}")
                epoch = -1
        else:
            epoch = 0
        done = reported[-1] if reported else last_epoch
        if epoch < last_epoch:
            problems.append(f"checkpoint went back from epoch {last_epoch} to {epoch}")
        if not done <= epoch <= done + 1:
            problems.append(f"process reported epoch {done} done, checkpoint holds {epoch}")
        metric_epochs = [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()
                         if l.strip().endswith("}")] if (run / "metrics.jsonl").exists() else []
        if metric_epochs and max(metric_epochs) > epoch:
            problems.append(f"metrics hold epoch {max(metric_epochs)} beyond the checkpoint's {epoch}")
        trial.update(checkpoint_epoch=epoch, last_reported_epoch=done, problems=problems)
        trials.append(trial)
        failures += problems
        last_epoch = max(last_epoch, epoch)
        print(json.dumps(trial), flush=True)

    final = ["train", "--resume", str(run)] if (run / "checkpoint.pt").exists() else ["train", "--config", str(config), "--out", str(run), "--overwrite"]
    with open(work / "final.log", "w") as log:
        final_rc = launch(final, args.nproc, port + 999, log).wait()
    got, want = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(ref / "checkpoint.pt")
    identical = all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    reference_metrics = [json.loads(l) for l in (ref / "metrics.jsonl").read_text().splitlines()]
    same_losses = [m["train_loss"] for m in metrics] == [m["train_loss"] for m in reference_metrics]
    summary = {
        "command": " ".join(sys.argv),
        "nproc": args.nproc,
        "kills": len(trials),
        "kills_that_left_a_torn_write": sum(bool(t["torn_temp_files"]) for t in trials),
        "kills_that_left_a_torn_checkpoint_write": sum(any(".pt." in f for f in t["torn_temp_files"]) for t in trials),
        "kills_before_training_resumed": sum(t["checkpoint_epoch"] == t["last_reported_epoch"] and not t["torn_temp_files"] and t["seconds_alive"] < 5 for t in trials),
        "runs_that_finished_before_their_kill": sum(t["finished_before_kill"] for t in trials),
        "epochs_at_last_kill": last_epoch,
        "problems": failures,
        "final_resume_exit_code": final_rc,
        "final_epochs_are_1_to_E_once_each": [m["epoch"] for m in metrics] == list(range(1, CONFIG["train"]["epochs"] + 1)),
        "final_weights_bitwise_equal_to_uninterrupted_run": identical,
        "final_train_losses_equal_to_uninterrupted_run": same_losses,
        "stale_temp_files_after_final_resume": temp_files(run),
        "reference_run_seconds": round(reference_seconds, 1),
        "trials": trials,
    }
    ok = (not failures and final_rc == 0 and identical and same_losses and summary["final_epochs_are_1_to_E_once_each"]
          and not summary["stale_temp_files_after_final_resume"])
    summary["ok"] = ok
    text = json.dumps(summary, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
