"""experiments/gpu_check.py, run on the CPU as the device under test (the
GPU run itself needs a GPU): the checks pass for a sound setup, fail when
their tolerance cannot be met, and a missing CUDA device is an error."""

import json

import pytest
import torch
from helpers import load_experiment

SMALL = ["--device", "cpu", "--data", "synthetic", "--epochs", "1", "--val-points", "200", "--test-points", "40", "-k", "20"]


@pytest.fixture(scope="module")
def gpu_check():
    return load_experiment("gpu_check")


def test_a_sound_setup_passes_and_records_its_figures(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*SMALL, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["passed"] and all(record["checks"].values())
    for key in ("val_loss_fp32", "val_loss_cpu", "log_likelihood_device", "log_likelihood_cpu", "stderr_device"):
        assert isinstance(record[key], float)
    assert ("val_loss_bf16" in record) != ("bf16_refused" in record)


def test_a_check_that_cannot_be_met_fails_the_run(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*SMALL, "--loss-tol", "-1", "--out", str(out)]) == 1
    assert json.loads(out.read_text())["checks"]["device fp32 vs cpu: final val loss"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_cuda_device_is_an_error_that_says_what_to_do(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--data", "synthetic", "--out", str(tmp_path / "x.json")]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
