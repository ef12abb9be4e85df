"""``pyrovae evaluate --gaps``: the ``gaps`` block of eval.json against
pyrovae.inference_gaps called directly, the figures it writes, and its
refusals (gap options without --gaps; a model without local_guide, refused
before the importance-sampling pass), on a tiny run trained on the synthetic source."""

import json
import math
import statistics

import pytest
import torch

import pyrovae
import pyrovae.commands.evaluate as evaluate_command
import pyrovae.infer.evaluate
from pyrovae.cli import main
from pyrovae.data import load_data
from pyrovae.errors import ConfigError
from pyrovae.runs import load_run


PNG = b"\x89PNG\r\n\x1a\n"
GAP_KEYS = ("log_px", "elbo_amortized", "elbo_optimized", "approximation_gap", "amortization_gap", "inference_gap")
SMALL = ["--points", "4", "--gap-steps", "15", "--gap-samples", "10", "--ais-steps", "10", "--chains", "2",
         "--leapfrog", "2"]


def _evaluate(run_dir, out, *extra):
    args = ["evaluate", run_dir, "-k", 8, "--limit", 10, "--seed", 3, "--no-progress", "--no-compile", "--out", out]
    return main([*map(str, args), *extra])


@pytest.fixture(scope="module")
def gaps_record(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gapsout") / "eval.json"
    assert _evaluate(run_dir, out, "--gaps", *SMALL) == 0
    return json.loads(out.read_text()), out


def test_gaps_block_matches_the_library(run_dir, gaps_record):
    record, _ = gaps_record
    block = record["gaps"]
    assert (block["num_points"], block["num_samples"], block["max_steps"], block["lr"], block["seed"]) == (4, 10, 15, 0.01, 3)
    assert block["ais"] == {"num_steps": 10, "num_chains": 2, "leapfrog_steps": 2, "schedule": "sigmoid",
                            "chain_batch": None, "batch_size": None}
    assert 1 <= block["steps"] <= 15 and block["seconds"] > 0
    assert record["num_points"] == 10  # IS still scores the whole (limited) split
    # an independent path to the same numbers: the library on the same points and seed
    vae, cfg, _ = load_run(run_dir)
    x = load_data(cfg.data).test[0][:4]
    direct = pyrovae.inference_gaps(vae, x, num_samples=10, max_steps=15, lr=0.01, seed=3,
                                    ais_options={"num_steps": 10, "num_chains": 2, "leapfrog_steps": 2})
    for key in GAP_KEYS:
        written = block["per_point"][key]
        assert len(written) == 4
        assert torch.allclose(torch.tensor(written, dtype=torch.float64), getattr(direct, key).double(), atol=1e-4), key
        assert math.isclose(block["means"][key], statistics.fmean(written), rel_tol=1e-9, abs_tol=1e-12), key
        assert math.isclose(block["se_over_points"][key], statistics.stdev(written) / 2, rel_tol=1e-9, abs_tol=1e-12)
    assert block["steps"] == direct.steps
    assert block["per_point"]["kept_initial"] == direct.kept_initial.tolist()
    assert block["share_kept_initial"] == statistics.fmean(map(float, block["per_point"]["kept_initial"]))


def test_written_gaps_add_up_exactly(gaps_record):
    per_point = gaps_record[0]["gaps"]["per_point"]
    for approx, amort, total in zip(per_point["approximation_gap"], per_point["amortization_gap"],
                                    per_point["inference_gap"]):
        assert approx + amort == total
        assert amort >= 0.0
    for log_px, opt, amortized, approx in zip(per_point["log_px"], per_point["elbo_optimized"],
                                              per_point["elbo_amortized"], per_point["approximation_gap"]):
        assert opt >= amortized and log_px - opt == approx


def test_gaps_figure_written_next_to_the_json(gaps_record):
    _, out = gaps_record
    assert (out.parent / "gaps.png").read_bytes()[:8] == PNG
    assert not (out.parent / "is_vs_ais.png").exists()  # no --ais


def test_ais_and_gaps_together(run_dir, tmp_path, capsys):
    out = tmp_path / "both" / "eval.json"
    assert _evaluate(run_dir, out, "--gaps", "--ais", *SMALL) == 0
    printed = capsys.readouterr().out
    assert "log p(x), AIS" in printed and "amortization gap L[q*] - L[q]" in printed
    record = json.loads(out.read_text())
    assert record["ais"]["num_points"] == record["gaps"]["num_points"] == 4
    # the IS values on the AIS points, from the library's IS estimator
    vae, cfg, _ = load_run(run_dir)
    x = load_data(cfg.data).test[0][:10]
    is_ll = pyrovae.evaluate(vae, x, 8, seed=3).per_point["log_likelihood"][:4]
    assert torch.allclose(torch.tensor(record["ais"]["is_per_point"], dtype=torch.float64), is_ll.double(), atol=1e-5)
    assert math.isclose(statistics.fmean(record["ais"]["is_per_point"]), record["ais"]["is_on_the_same_points"],
                        rel_tol=1e-9)
    for name in ("is_vs_ais.png", "gaps.png"):
        assert (out.parent / name).read_bytes()[:8] == PNG
    quiet = tmp_path / "quiet" / "eval.json"
    assert _evaluate(run_dir, quiet, "--gaps", "--ais", "--no-figures", *SMALL) == 0
    assert sorted(p.name for p in quiet.parent.iterdir()) == ["eval.json"]


@pytest.mark.parametrize("options", [["--gap-steps", "5"], ["--gap-samples", "3", "--gap-lr", "0.1"],
                                     ["--ais", "--gap-steps", "5"]])
def test_gap_options_without_gaps_are_refused(run_dir, options, capsys):
    code = main(["evaluate", str(run_dir), "-k", "2", *options])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    given = [o for o in options if o.startswith("--gap")]
    assert len(errors) == 1 and "--gaps" in errors[0] and all(o in errors[0] for o in given)


@pytest.mark.parametrize("value", ["0", "-1e-3", "nan", "x"])
def test_bad_gap_lr_is_a_usage_error(run_dir, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(run_dir), "--gaps", f"--gap-lr={value}"])
    assert exit_info.value.code == 2
    assert "positive number" in capsys.readouterr().err


def _refusing(kind):
    def local_guide(x, **fields):
        raise ConfigError("local_guide (inference gaps) supports a VAE with one latent layer; use a VAE without one")

    return None if kind == "missing" else local_guide


@pytest.mark.parametrize("kind, message", [("missing", "needs the model capability local_guide"),
                                           ("refusing", "one latent layer")])
def test_a_model_without_local_guide_is_refused_before_importance_sampling(run_dir, tmp_path, monkeypatch, capsys,
                                                                           kind, message):
    def load_without(args, device="cpu"):
        vae, cfg, state = load_run(args.run_dir, which=args.which, device=device)
        vae.local_guide = _refusing(kind)
        return vae, cfg, state

    def no_importance_sampling(*args, **kwargs):
        raise AssertionError("the IS pass ran before --gaps was checked")

    monkeypatch.setattr(evaluate_command, "load_run_of", load_without)
    monkeypatch.setattr(pyrovae.infer.evaluate, "evaluate", no_importance_sampling)
    out = tmp_path / "eval.json"
    assert _evaluate(run_dir, out, "--gaps", *SMALL) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists()
