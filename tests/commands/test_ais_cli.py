"""``pyrovae evaluate --ais`` and ``pyrovae bdmc``: the ``ais`` block of
eval.json and bdmc.json against the library called directly, on a tiny run
trained on the synthetic source."""

import json
import math

import pytest
import torch

import pyrovae
from pyrovae.cli import main
from pyrovae.data import load_data
from pyrovae.runs import load_run


AIS_KEYS = ("num_points", "num_steps", "num_chains", "leapfrog_steps", "schedule", "log_likelihood", "se_over_points",
            "acceptance_mean", "is_on_the_same_points", "gap_ais_minus_is", "per_point", "is_per_point")
BDMC_KEYS = ("num_points", "num_steps", "num_chains", "leapfrog_steps", "schedule", "lower_mean", "upper_mean",
             "gap_mean", "lower", "upper", "note")


def test_evaluate_ais_block_matches_the_library(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["evaluate", run_dir, "-k", 8, "--limit", 20, "--seed", 5, "--no-progress", "--no-compile", "--out", out]
    assert main([*map(str, args), "--ais", "--points", "5", "--ais-steps", "20", "--chains", "4", "--leapfrog", "3",
                 "--chain-batch", "2", "--ais-batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "log p(x), AIS" in printed and "AIS - IS" in printed and "mean acceptance" in printed
    record = json.loads(out.read_text())
    block = record["ais"]
    for key in AIS_KEYS:
        assert key in block, key
    assert (block["num_points"], block["num_steps"], block["num_chains"], block["leapfrog_steps"]) == (5, 20, 4, 3)
    assert record["num_points"] == 20  # IS still scores the whole (limited) split
    # an independent path to the same numbers: the library on the same points, seeds and fixed binarization
    vae, cfg, _ = load_run(run_dir)
    x = load_data(cfg.data).test[0][:20]
    ais = pyrovae.ais_log_likelihood(vae, x[:5], num_steps=20, num_chains=4, leapfrog_steps=3, seed=5,
                                     chain_batch=2, batch_size=2)
    is_ll = pyrovae.evaluate(vae, x, 8, seed=5).per_point["log_likelihood"][:5]
    assert math.isclose(block["log_likelihood"], float(ais.mean()), rel_tol=1e-6, abs_tol=1e-6)
    assert math.isclose(block["se_over_points"], float(ais.std() / math.sqrt(5)), rel_tol=1e-6)
    assert math.isclose(block["is_on_the_same_points"], float(is_ll.mean()), rel_tol=1e-6, abs_tol=1e-6)
    assert torch.allclose(torch.tensor(block["is_per_point"], dtype=torch.float64), is_ll.double(), atol=1e-5)
    assert (out.parent / "is_vs_ais.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert math.isclose(block["gap_ais_minus_is"], float((ais - is_ll).mean()), rel_tol=1e-6, abs_tol=1e-6)
    assert 0.0 < block["acceptance_mean"] <= 1.0
    assert block["chain_batch"] == 2 and block["batch_size"] == 2
    # the keys without --ais are the same as with it
    plain = tmp_path / "plain.json"
    assert main([*map(str, args[:-1]), str(plain)]) == 0
    assert set(json.loads(plain.read_text())) == set(record) - {"ais"}


def test_bdmc_writes_the_sandwich(run_dir, capsys):
    assert main(["bdmc", str(run_dir), "--points", "3", "--ais-steps", "20", "--chains", "2"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "AIS: 100%" in captured.err and "180/180" in captured.err  # tqdm's bar: 3 passes x 3 points x 20 steps
    assert "upper bound" in printed and "simulated" in printed
    record = json.loads((run_dir / "bdmc.json").read_text())
    for key in BDMC_KEYS:
        assert key in record, key
    lower, upper = (torch.tensor(record[k], dtype=torch.float64) for k in ("lower", "upper"))
    assert lower.shape == upper.shape == (3,)
    assert math.isclose(record["gap_mean"], float((upper - lower).mean()), rel_tol=1e-6, abs_tol=1e-9)
    # lower <= upper on average, within the Monte Carlo error of 3 points
    assert record["gap_mean"] > -3 * max(float((upper - lower).std()), 0.05)
    # the library with the same seed gives the same bounds
    vae, _, _ = load_run(run_dir)
    direct = pyrovae.bdmc(vae, 3, seed=0, num_steps=20, num_chains=2, leapfrog_steps=10)
    assert torch.allclose(direct.lower.double(), lower, atol=1e-5)
    assert torch.allclose(direct.upper.double(), upper, atol=1e-5)


@pytest.mark.parametrize("argv", [
    ["evaluate", "{run}", "--ais", "--ais-steps", "-5"],
    ["evaluate", "{run}", "--ais", "--chains", "0"],
    ["bdmc", "{run}", "--points", "-1"],
    ["bdmc", "{run}", "--leapfrog", "x"],
])
def test_bad_options_are_one_line_errors(run_dir, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(run=run_dir) for a in argv])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "positive integer" in errors[0]


@pytest.mark.parametrize("name, given", [("cvae", True), ("m2", False), ("vae", False)])
def test_bdmc_gives_labels_only_to_a_model_that_needs_them(name, given):
    from pyrovae.commands.bdmc import _label_fields
    from tiny_run import CONFIG

    cfg = pyrovae.load_config({**CONFIG, "model": {"name": name, "latent_dim": 2, "options": {"num_classes": 4}
                                                   if name != "vae" else {}}})
    model = pyrovae.build_model(cfg.model, (1, 8, 8))
    fields = _label_fields(model, cfg, 3, "cpu")
    assert ("y" in fields) == given
    if given:
        assert torch.equal(fields["y"], load_data(cfg.data).test[1][:3])
        out = pyrovae.bdmc(model, 3, seed=0, num_steps=4, num_chains=2, leapfrog_steps=2, **fields)
        assert torch.isfinite(out.lower).all() and torch.isfinite(out.upper).all()


@pytest.mark.parametrize("options", [["--points", "5"], ["--ais-steps", "20", "--chains", "2"], ["--schedule", "linear"]])
def test_ais_options_without_ais_are_refused(run_dir, options, capsys):
    """An AIS option given without --ais would be ignored: it is a one-line error naming it."""
    try:
        code = main(["evaluate", str(run_dir), "-k", "2", *options])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--ais" in errors[0] and options[0] in errors[0]
