"""Smoke test of experiments/reproduce.py and render_results.py as
subprocesses: one epoch on a tiny subset, a tiny K on a few test points.
The long runs stay out of the tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_experiment

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


def run_reproduce(tmp_path, *extra):
    cmd = [
        sys.executable, str(EXPERIMENTS / "reproduce.py"), str(EXPERIMENTS / "configs" / "burda_vae_1l.yaml"),
        "--iw-samples", "4", "--test-limit", "20", "--threads", "1", "--no-compile", "--quiet",
        "--set", "data.name=synthetic", "--set", "data.subset=100", "--set", "train.batch_size=50",
        "--out-dir", str(tmp_path / "results"), "--run-dir", str(tmp_path / "run"), *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_resume_continues_a_run_in_legs(tmp_path):
    first = run_reproduce(tmp_path, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    one = json.loads((tmp_path / "results" / "burda_vae_1l.json").read_text())
    second = run_reproduce(tmp_path, "--epochs", "3", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    three = json.loads((tmp_path / "results" / "burda_vae_1l.json").read_text())
    assert three["epochs_run"] == 3 and three["train_legs"] == 2
    assert [r["epoch"] for r in three["curve"]] == [1, 2, 3]
    assert three["curve"][0] == one["curve"][0]  # the first leg's record is kept
    elapsed = [r["elapsed"] for r in three["curve"]]
    assert elapsed == sorted(elapsed) and three["train_seconds"] >= elapsed[-1] - 0.05  # rounded to 0.1 s
    # resuming with another config is refused, and the run is left as it was
    other = run_reproduce(tmp_path, "--epochs", "4", "--resume", "--set", "train.optimizer.lr=0.5")
    assert other.returncode == 2 and other.stderr.startswith("error: ") and "another config" in other.stderr
    assert json.loads((tmp_path / "run" / "curve.json").read_text())[-1]["epoch"] == 3


def test_readme_table_is_replaced_between_its_markers_only(tmp_path):
    render = load_experiment("render_results")
    start, end = render.README_MARKERS
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{start}\n| old | table |\n{end}\n\noutro\n")
    render.put_in_readme("| new | table |", readme)
    assert readme.read_text() == f"intro\n\n{start}\n| new | table |\n{end}\n\noutro\n"


def test_readme_without_markers_is_left_as_it_was(tmp_path):
    render = load_experiment("render_results")
    readme = tmp_path / "README.md"
    before = "intro\n| old | table |\n"
    readme.write_text(before)
    with pytest.raises(ValueError, match="results-table:start"):
        render.put_in_readme("| new | table |", readme)
    assert readme.read_text() == before


def test_the_headline_keeps_the_best_row_of_each_paper_model():
    render = load_experiment("render_results")
    records = render.load_results(EXPERIMENTS / "results")
    best = {render.paper_model(r["paper"]): r for r in render.best_rows(records)}
    for r in records:  # no row of a paper model beats the one the headline shows
        paper = r.get("paper") or {}
        shown = best.get(render.paper_model(paper))
        if shown is None:
            continue
        if paper.get("error") is not None:
            assert shown["test_error"] <= r["test_error"]
        else:
            assert shown["nll"] <= r["nll"]
    text = render.headline(records)
    assert len(text.splitlines()) == 2 + len(best)
    m2 = next(line for line in text.splitlines() if "M2 with 100 labels" in line)
    assert "% |" in m2  # M2's test error is a column of its row


def test_the_ais_rows_are_rendered_from_their_per_point_numbers(tmp_path):
    render = load_experiment("render_results")
    rows = render.load_ais_rows(EXPERIMENTS / "results")
    assert rows, "experiments/results holds ais_*.json files (experiments/score_ais.py)"
    records = render.load_results(EXPERIMENTS / "results")
    headline = render.headline(records, rows).splitlines()
    table = render.ais_table(rows)
    for name, a in rows.items():
        is_ll, ais_ll = a["per_point"]["is"], a["per_point"]["ais"]
        assert len(is_ll) == len(ais_ll) == a["test_points"]
        # the summaries are the per-point means, recomputed here from the stored points
        assert abs(a["is"]["mean"] - sum(is_ll) / len(is_ll)) < 1e-6
        assert abs(a["ais_minus_is"]["mean"] - sum(y - x for x, y in zip(is_ll, ais_ll)) / len(is_ll)) < 1e-6
        nll = f"| {-sum(ais_ll) / len(ais_ll):.2f} |"
        assert nll in next(line for line in table.splitlines() if f"`{name}`" in line)
        g = a.get("gaps")
        if g:  # the two gaps add up to the whole
            assert abs(g["approximation_gap"]["mean"] + g["amortization_gap"]["mean"] - g["inference_gap"]["mean"]) < 1e-4
        shown = [line for line in headline if f"`{name}`" in line]
        for line in shown:
            assert line.rstrip(" |").endswith(render.ais_cell(a).rstrip(" |")) and "weights not kept" not in line
    unscored = [line for line in headline[2:] if not any(f"`{n}`" in line for n in rows)]
    assert unscored and all(line.endswith("| weights not kept |") for line in unscored)
    assert render.gaps_figure(rows, tmp_path / "gaps.png") and (tmp_path / "gaps.png").stat().st_size > 0
    assert render.ais_gap_figure(rows, tmp_path / "gap.png") and (tmp_path / "gap.png").stat().st_size > 0
    assert not render.gaps_figure({}, tmp_path / "none.png") and not (tmp_path / "none.png").exists()
