"""experiments/gpu_check.py, run on the CPU as the device under test (the
GPU run itself needs a GPU): the checks pass for a sound setup, fail when
their tolerance cannot be met, and a missing CUDA device is an error."""

import argparse
import json

import pytest
import torch
from helpers import load_experiment

#: the docstring's CPU command (the data's own validation size), with a small test set and K
SMALL = ["--device", "cpu", "--data", "synthetic", "--epochs", "1", "--test-points", "40", "-k", "20"]


@pytest.fixture(scope="module")
def gpu_check():
    return load_experiment("gpu_check")


def test_a_sound_setup_passes_and_records_its_figures(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*SMALL, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["passed"] and all(record["checks"].values())
    for key in ("val_loss_fp32", "val_loss_cpu", "log_likelihood_device", "log_likelihood_cpu", "mc_error_device"):
        assert isinstance(record[key], float)
    assert ("val_loss_bf16" in record) != ("bf16_refused" in record)
    assert record["checks"]["exact resume on the device"] and record["resume"]["differing_tensors"] == []
    assert "errors" not in record


def test_a_failing_part_is_recorded_and_the_rest_still_runs(gpu_check, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("resume broke")

    monkeypatch.setattr(gpu_check, "resume_check", broken)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*SMALL, "--out", str(out)]) == 1
    record = json.loads(out.read_text())
    assert "RuntimeError: resume broke" in record["errors"]["resume"]
    assert record["checks"]["exact resume on the device"] is False and not record["passed"]
    assert record["checks"]["IS on device vs cpu, same weights"] is True  # the parts before it ran


def test_a_missing_torchrun_is_a_failed_check(gpu_check, tmp_path, monkeypatch):
    """The data-parallel part needs two GPUs; here its launcher is made to fail."""
    def no_launcher(*args, **kwargs):
        raise FileNotFoundError("torch.distributed.run")

    monkeypatch.setattr(gpu_check.subprocess, "run", no_launcher)
    args = argparse.Namespace(data="synthetic", val_points=None, train_points=None, epochs=1)
    record = {}
    assert gpu_check.run_part(record, "ddp", lambda: gpu_check.ddp_check(args, 2)) is None
    assert "FileNotFoundError" in record["errors"]["ddp"]


def test_a_check_that_cannot_be_met_fails_the_run(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*SMALL, "--loss-tol", "-1", "--out", str(out)]) == 1
    assert json.loads(out.read_text())["checks"]["device fp32 vs cpu: final val loss"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_cuda_device_is_an_error_that_says_what_to_do(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--data", "synthetic", "--out", str(tmp_path / "x.json")]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
