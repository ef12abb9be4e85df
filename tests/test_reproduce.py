"""Smoke test of experiments/reproduce.py and render_results.py as
subprocesses: one epoch on a tiny subset, a tiny K on a few test points.
The long runs stay out of the tests."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"


def test_reproduce_one_epoch_then_render(tmp_path):
    out_dir = tmp_path / "results"
    cmd = [
        sys.executable, str(EXPERIMENTS / "reproduce.py"), str(EXPERIMENTS / "configs" / "burda_vae_1l.yaml"),
        "--epochs", "1", "--iw-samples", "4", "--test-limit", "20", "--threads", "1", "--no-compile", "--quiet",
        # the synthetic source (8x8 images) keeps the test fast; the config's networks are MLPs
        "--set", "data.name=synthetic", "--set", "data.subset=100", "--set", "train.batch_size=50",
        "--out-dir", str(out_dir), "--run-dir", str(tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out_dir / "burda_vae_1l.json").read_text())
    assert record["kind"] == "reproduce"
    assert record["epochs_run"] == 1 and record["stopped_by"] == "epochs" and not record["converged"]
    assert record["iw_samples"] == 4 and record["test_points"] == 20
    assert record["paper"]["nll"] == 86.76
    assert record["nll"] > 0 and record["gap"] == record["nll"] - 86.76
    assert record["elbo"] <= -record["nll"] + 1.0  # an ELBO lies below the IS estimate (up to MC noise)
    for key in ("active_units", "wall_seconds", "machine", "git", "curve", "overrides"):
        assert key in record
    assert record["machine"]["cpu_count"] >= 1 and record["machine"]["torch"]
    assert len(record["curve"]) == 1 and "test_elbo" in record["curve"][0]

    proc = subprocess.run([sys.executable, str(EXPERIMENTS / "render_results.py"), "--results-dir", str(out_dir), "--print"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "burda_vae_1l" in proc.stdout and "86.76" in proc.stdout and "cut by --epochs" in proc.stdout
    assert (out_dir / "results.md").exists() and (out_dir / "curves.png").stat().st_size > 0
