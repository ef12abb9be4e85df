"""Every config in experiments/configs (and its subfolders) loads strictly,
builds its model and trains, evaluates and plots through the CLI, each on
small data of the kind it models (:data:`TEST_DATA`)."""

from pathlib import Path

import pytest
from helpers import load_experiment

import pyrovae
from pyrovae.report.figures import FIGURES

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"
FILES = sorted(CONFIGS.rglob("*.yaml"))
MNIST_SHAPE = (1, 28, 28)
WORDS = Path(__file__).resolve().parent / "fixtures" / "words.txt"  # 300 words of web2

#: per data source: the data shape a config's model is built for, and the overrides that train it on small data
#: of that kind (a source not listed: small synthetic 8x8 images)
TEST_DATA = {
    "words": (lambda cfg: (cfg.data.options.get("max_length", 12) + 1,),
              [f"data.path={WORDS}", "data.val_size=20", "data.options.num_test=20", "model.options.hidden=8",
               "model.options.embed_dim=4", "train.epochs=1"]),
}
IMAGES = (lambda cfg: MNIST_SHAPE, ["data.name=synthetic", "data.subset=120", "train.epochs=1", "train.batch_size=40"])


def _reproduce():
    return load_experiment("reproduce")


def test_there_are_configs():
    assert len(FILES) >= 10


IDS = [str(p.relative_to(CONFIGS).with_suffix("")) for p in FILES]


def test_configs_in_subfolders_are_found():
    assert {"text/text_vae", "text/char_lm"} <= set(IDS)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_config_loads_and_builds(path):
    cfg = pyrovae.load_config(path)
    shape, _ = TEST_DATA.get(cfg.data.name, IMAGES)
    vae = pyrovae.build_model(cfg.model, shape(cfg))  # the model the config names
    assert vae.registered_name == cfg.model.name
    if getattr(vae, "prior", None) is None:  # a model without a latent (a language model)
        assert getattr(vae, "latent_dim", None) is None
        return
    assert vae.latent_dim == cfg.model.latent_dim
    # the prior is over the top latent (of the hierarchy, or hvae's z2)
    top = cfg.model.hierarchy[-1]["latent_dim"] if cfg.model.hierarchy else cfg.model.options.get("z2_dim", cfg.model.latent_dim)
    assert tuple(vae.prior().event_shape) == (top,)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_config_names_its_source(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{path.name} needs a comment header naming its source"


def test_paper_figures_are_read_from_the_headers():
    reproduce = _reproduce()
    expected = {
        "burda_vae_1l": 86.76,
        "burda_iwae_1l_k5": 85.54,
        "burda_iwae_1l_k50": 84.78,
        "burda_vae_2l": 85.33,
        "burda_iwae_2l_k50": 82.90,
        "vamp_vae_vampprior": 85.57,
    }
    for stem, nll in expected.items():
        info = reproduce.paper_info(CONFIGS / f"{stem}.yaml")
        assert info["nll"] == pytest.approx(nll), stem
        assert info["source"]
    assert reproduce.paper_info(CONFIGS / "vamp_vae_vampprior.yaml")["verified"] is False
    assert reproduce.paper_info(CONFIGS / "conv_vae.yaml")["nll"] is None


def test_burda_rows_copy_the_paper_settings():
    for stem, k in (("burda_vae_1l", 1), ("burda_iwae_1l_k5", 5), ("burda_iwae_1l_k50", 50),
                    ("burda_vae_2l", 1), ("burda_iwae_2l_k50", 50)):
        cfg = pyrovae.load_config(CONFIGS / f"{stem}.yaml")
        assert cfg.data.binarize == "dynamic" and cfg.data.val_size == 0
        assert cfg.train.batch_size == 20 and cfg.train.epochs == 3280
        assert cfg.train.lr_schedule["name"] == "burda"
        assert cfg.train.optimizer == {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999], "eps": 0.0001}
        assert cfg.train.objective["num_particles"] == k
        assert cfg.train.objective["name"] == ("elbo" if k == 1 else "iwae")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_config_trains_evaluates_and_plots_through_the_cli(path, tmp_path, capsys):
    """The user's path for every shipped config: ``pyrovae train`` (one short
    epoch on small data of its kind), ``pyrovae evaluate`` (IS) and ``pyrovae
    plot`` (every figure that applies; one line for each that does not), in
    process. A model that shows its data as text gets text files."""
    import json

    from pyrovae.cli import main

    cfg = pyrovae.load_config(path)
    run = tmp_path / "run"
    _, overrides = TEST_DATA.get(cfg.data.name, IMAGES)
    overrides = [*overrides, "train.progress=false"]
    if cfg.data.val_size and cfg.data.name not in TEST_DATA:
        overrides.append("data.val_size=40")
    if cfg.model.prior.get("name") == "vamp":
        overrides.append("model.prior.num_components=7")
    if "num_classes" in cfg.model.options:  # the synthetic source has 4 classes
        overrides.append("model.options.num_classes=4")
    if cfg.data.labelled is not None:
        overrides.append("data.labelled=8")
    args = ["train", "--config", str(path), "--out", str(run)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    vae, _, _ = pyrovae.load_run(run)
    suffix = "txt" if getattr(vae, "to_text", None) is not None else "png"
    reconstructs = getattr(vae, "reconstruct", None) is not None
    for name in ("checkpoint.pt", "metrics.jsonl", f"samples.{suffix}") + ((f"reconstructions.{suffix}",) if reconstructs else ()):
        assert (run / name).stat().st_size > 0, name
    assert main(["evaluate", str(run), "--iw-samples", "3", "--limit", "30", "--no-compile", "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())
    ll = result.get("log_likelihood", result.get("test", {}).get("log_likelihood"))
    assert ll is not None and ll == ll and ll < 1e9  # a finite number was written
    capsys.readouterr()
    assert main(["plot", str(run), "-n", "4", "--max-points", "30"]) == 0
    written = sorted(p.name for p in (run / "plots").iterdir())
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped ")]
    assert len(written) + len(skipped) == len(FIGURES), (written, skipped)  # one line for each figure not written
    assert {f"samples.{suffix}", "training_curves.png"} <= set(written), written
    if suffix == "txt":  # words drawn one character at a time, each a word the data could hold
        assert main(["sample", str(run), "-n", "5", "--draw", "--out", str(tmp_path / "drawn.txt")]) == 0
        drawn = (tmp_path / "drawn.txt").read_text().splitlines()
        assert len(drawn) == 5 and all(len(w) <= cfg.data.options["max_length"] for w in drawn)
    if suffix == "png":
        assert {"reconstructions.png", "latent_scatter.png"} <= set(written), written
    elif reconstructs:
        assert {"reconstructions.txt", "interpolations.txt"} <= set(written), written
    else:  # no latent code: draws, and the latent figures say why not
        assert len(set((run / "plots" / "samples.txt").read_text().splitlines()[2:])) > 1
        assert any(line.startswith("skipped reconstructions: the model has no latent code") for line in skipped)
        assert main(["plot", str(run), "--only", "reconstructions", "traversals"]) == 2
        assert "none of the figures asked for applies" in capsys.readouterr().err
