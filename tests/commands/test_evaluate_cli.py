"""``pyrovae evaluate RUN_DIR``: eval.json, the table, the splits and the
errors a user can make, on a tiny run trained on the synthetic source."""

import json
import math
import re

import pytest

from pyrovae import evaluate
from pyrovae.cli import main
from pyrovae.data import load_data
from pyrovae.runs import load_run

from tiny_run import one_thread, train_tiny_run

REQUIRED = ("split", "num_samples", "log_likelihood", "log_likelihood_mc_error", "log_likelihood_se_over_points", "elbo",
            "kl", "reconstruction", "active_units")


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def cli(*args):
    return main(["evaluate", *map(str, args), "--no-compile"])


def test_writes_eval_json_matching_the_library(run_dir, capsys):
    assert cli(run_dir, "--iw-samples", 12, "--seed", 3, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "log p(x), IS" in out and "active units" in out
    record = json.loads((run_dir / "eval.json").read_text())
    for key in REQUIRED:
        assert key in record, key
    assert record["split"] == "test" and record["num_samples"] == 12 and record["num_points"] == 200
    assert not list(run_dir.glob(".eval.json*"))  # the temporary file was renamed away
    # the same numbers as the library on the same (fixed) binarization and seed
    vae, cfg, _ = load_run(run_dir)
    x = load_data(cfg.data).test[0]
    summary = evaluate(vae, x, 12, seed=3).summary()
    for key in REQUIRED[2:]:
        assert math.isclose(record[key], summary[key], rel_tol=1e-6, abs_tol=1e-6), key
    assert record["log_likelihood"] >= record["elbo"]


def test_progress_bar_and_other_splits(run_dir, tmp_path, capsys):
    out = tmp_path / "val.json"
    assert cli(run_dir, "-k", 3, "--split", "val", "--limit", 20, "--out", out) == 0
    err = capsys.readouterr().err
    assert "log p(x)" in err and "pass" in err  # tqdm's bar on stderr
    record = json.loads(out.read_text())
    assert record["split"] == "val" and record["num_points"] == 20
    assert cli(run_dir, "-k", 2, "--split", "train", "--limit", 10, "--out", tmp_path / "t.json", "--no-progress") == 0


def test_val_split_needs_val_size(tmp_path, capsys):
    run = tmp_path / "noval"
    train_tiny_run(run, epochs=0)
    cfg_text = (run / "config.yaml").read_text().replace("val_size: 200", "val_size: 0")
    (run / "config.yaml").write_text(cfg_text)
    assert cli(run, "-k", 2, "--split", "val", "--no-progress") == 2
    assert "val_size" in capsys.readouterr().err


def test_missing_and_broken_run_directories(tmp_path, run_dir, capsys):
    assert cli(tmp_path / "nope", "--no-progress") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(tmp_path / "empty", "--no-progress") == 2
    assert "not a pyrovae run directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (broken / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes()[:100])
    assert cli(broken, "--no-progress") == 2
    assert "not a readable pyrovae checkpoint" in capsys.readouterr().err


def test_k_below_one_is_refused(run_dir, capsys):
    with pytest.raises(SystemExit) as e:
        cli(run_dir, "--iw-samples", 0)
    assert e.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_probe_adds_representation_scores(run_dir, tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "probe.json"
    assert cli(run_dir, "-k", 2, "--probe", "--probe-train", 300, "--out", out, "--no-progress") == 0
    probe = json.loads(out.read_text())["probe"]
    assert probe["fit_split"] == "train" and probe["fit_points"] == 300
    for key in ("knn_accuracy", "logreg_accuracy", "kmeans_nmi", "kmeans_purity"):
        assert 0.0 <= probe[key] <= 1.0, key
    # 4 well-separated prototypes: the codes of a trained model classify far above chance (0.25)
    assert probe["knn_accuracy"] > 0.5 and probe["logreg_accuracy"] > 0.5
    assert "latent probe:" in capsys.readouterr().out


def test_a_model_that_takes_y_is_given_the_split_labels(run_dir, tmp_path, monkeypatch):
    """``pyrovae evaluate`` passes the split's labels as the field y to a
    model that takes y (here one that needs it: without y it would fail),
    and a model without reconstruct gets n/a for the reconstruction errors."""
    import pyro

    import pyrovae.runs
    from user_models import ConditionalBernoulliVAE

    _, cfg, state = load_run(run_dir)
    pyro.set_rng_seed(0)
    model = ConditionalBernoulliVAE((1, 8, 8), 2, num_classes=4, hidden=16)
    monkeypatch.setattr(pyrovae.runs, "load_run", lambda *a, **k: (model, cfg, state))
    out = tmp_path / "y.json"
    assert cli(run_dir, "-k", 3, "--limit", 30, "--out", out, "--no-progress") == 0
    record = json.loads(out.read_text())
    x, labels = load_data(cfg.data).test
    expected = evaluate(model, (x[:30], labels[:30]), 3, seed=0).summary()
    assert math.isclose(record["log_likelihood"], expected["log_likelihood"], rel_tol=1e-6)
    assert record["mse"] is None and record["bce"] is None


def test_device_defaults_to_that_of_training():
    from pyrovae.cli import build_parser
    from pyrovae.config import TrainConfig

    assert build_parser().parse_args(["evaluate", "RUN"]).device == TrainConfig().device == "auto"


def test_the_two_standard_errors_are_named_for_what_they_are(run_dir, tmp_path, capsys):
    """eval.json names the ± to quote (over the points) apart from the Monte
    Carlo error; the old names still read, from a new summary and from an
    old file."""
    import warnings

    from pyrovae.infer.evaluate import RENAMED_SUMMARY_KEYS, Summary

    out = tmp_path / "e.json"
    assert cli(run_dir, "-k", 4, "--limit", 30, "--out", out, "--no-progress") == 0
    assert "quote this" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert not set(RENAMED_SUMMARY_KEYS) & set(record)  # only the new names are written
    summary = Summary.read(out)
    for old, new in RENAMED_SUMMARY_KEYS.items():
        with pytest.warns(DeprecationWarning, match=new):
            assert summary[old] == record[new]
    assert summary.get("no such key", "default") == "default"
    old_file = tmp_path / "old.json"
    old_names = {new: old for old, new in RENAMED_SUMMARY_KEYS.items()}
    old_record = {old_names.get(k, k): v for k, v in record.items()}  # as evaluate wrote it before the rename
    assert "log_likelihood_stderr" in old_record
    old_file.write_text(json.dumps(old_record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names of an old file read without a warning
        assert Summary.read(old_file) == record


def test_the_table_shows_a_models_own_reconstruction_errors(run_dir, tmp_path, capsys):
    """A model that reports its own reconstruction errors (a text model's
    character error rate) gets a row for each in place of MSE and BCE."""
    from pyrovae.commands.evaluate import _format_table

    out = tmp_path / "e.json"
    assert cli(run_dir, "-k", 2, "--limit", 10, "--out", out, "--no-progress") == 0
    capsys.readouterr()
    summary = json.loads(out.read_text())
    assert "reconstruction_error_names" not in summary  # the image model: MSE and BCE only
    image_table = _format_table(summary, "h")
    assert "MSE" in image_table and "char error rate" not in image_table
    text = dict(summary, mse=None, bce=None, char_error_rate=0.125, reconstruction_error_names=["char_error_rate"])
    text_table = _format_table(text, "h")
    assert "MSE" not in text_table and "reconstruction char error rate" in text_table and "0.1250" in text_table


def test_the_table_and_eval_json_carry_the_pareto_k_diagnostic(run_dir, tmp_path, capsys):
    """eval.json holds the PSIS summary of the library's evaluate, and the
    table shows the share of points above 0.7; K <= 20 gives no fit (n/a)."""
    import warnings

    out = tmp_path / "e.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a one-epoch model may well have heavy-tailed weights
        assert cli(run_dir, "-k", 30, "--limit", 10, "--out", out, "--no-progress") == 0
        vae, cfg, _ = load_run(run_dir)
        k = evaluate(vae, load_data(cfg.data).test[0][:10], 30, seed=0).per_point["pareto_k"]
    record = json.loads(out.read_text())
    share = float((k > 0.7).double().mean())
    assert record["share_pareto_k_above_0_7"] == pytest.approx(share)
    assert record["pareto_k_max"] == pytest.approx(float(k.max()), rel=1e-5)
    row = rf"points with Pareto k > 0\.7 \(unreliable\)\s+{100 * share:.1f}% \(k mean -?\d\.\d\d, max"
    assert re.search(row, capsys.readouterr().out)
    assert cli(run_dir, "-k", 20, "--limit", 10, "--out", out, "--no-progress") == 0
    assert "n/a (K <= 20" in capsys.readouterr().out
    assert json.loads(out.read_text())["pareto_k_mean"] is None
