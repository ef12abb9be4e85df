"""``torchrun --nproc_per_node 2 -m pyrovae evaluate``: two gloo processes
split the points of IS, AIS and the gaps' AIS, and rank 0 writes the
eval.json that one process writes with the same seed (timings aside)."""

import json
import math
import os
import re
import socket
import subprocess
import sys

from pyrovae.cli import main

from tiny_run import one_thread

#: 45 points: IS in chunks of 4 (12 chunks, 6 per process), AIS and the gaps' AIS in chunks of 20 (2 and 1)
ARGS = ("--iw-samples", 30, "--limit", 45, "--batch-size", 4, "--seed", 5, "--no-compile", "--no-progress",
        "--ais", "--points", 45, "--ais-steps", 4, "--chains", 2, "--leapfrog", 2,
        "--gaps", "--gap-steps", 5, "--gap-samples", 10, "--no-figures")
#: keys whose values are wall-clock times
TIMINGS = ("seconds", "decoder_passes_per_second")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same(a, b, where="eval.json"):
    """``a`` and ``b`` agree: the same keys and lists, floats to 1e-6 relative (timings not compared)."""
    if isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            if key not in TIMINGS:
                _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{where}[{i}]")
    elif isinstance(a, float):
        assert isinstance(b, float) and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_two_processes_write_what_one_process_writes(run_dir, tmp_path, capsys):
    single, sharded = tmp_path / "single.json", tmp_path / "sharded.json"
    with one_thread():
        assert main(["evaluate", str(run_dir), *map(str, ARGS), "--out", str(single)]) == 0
    table = capsys.readouterr().out
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           "-m", "pyrovae", "evaluate", str(run_dir), *map(str, ARGS), "--out", str(sharded)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = json.loads(single.read_text()), json.loads(sharded.read_text())
    assert len(a["ais"]["per_point"]) == 45 and a["gaps"]["num_points"] == 45
    _same(a, b)
    # rank 0 alone prints: the same tables, once (their headers hold wall-clock seconds)
    assert _without_seconds(done.stdout) == _without_seconds(table)
    assert done.stdout.count("test split:") == 1 and done.stderr.count("wrote ") == 1


def _without_seconds(text: str) -> str:
    return re.sub(r"\d+\.\d s\b", "_ s", text)
