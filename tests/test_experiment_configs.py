"""Every config in experiments/configs loads strictly and builds a VAE."""

from pathlib import Path

import pytest
from helpers import load_experiment

import pyrovae

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"
FILES = sorted(CONFIGS.glob("*.yaml"))
MNIST_SHAPE = (1, 28, 28)


def _reproduce():
    return load_experiment("reproduce")


def test_there_are_configs():
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_config_loads_and_builds(path):
    cfg = pyrovae.load_config(path)
    vae = pyrovae.build_model(cfg.model, MNIST_SHAPE)  # the model the config names
    assert vae.registered_name == cfg.model.name
    assert vae.latent_dim == cfg.model.latent_dim
    # the prior is over the top latent (of the hierarchy, or hvae's z2)
    top = cfg.model.hierarchy[-1]["latent_dim"] if cfg.model.hierarchy else cfg.model.options.get("z2_dim", cfg.model.latent_dim)
    assert tuple(vae.prior().event_shape) == (top,)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
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


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_config_trains_evaluates_and_plots_through_the_cli(path, tmp_path):
    """The user's path for every shipped config: ``pyrovae train`` (one short
    epoch on small synthetic 8x8 images), ``pyrovae evaluate`` (IS) and
    ``pyrovae plot`` (every figure), in process."""
    import json

    from pyrovae.cli import main

    cfg = pyrovae.load_config(path)
    run = tmp_path / "run"
    overrides = ["data.name=synthetic", "data.subset=120", "train.epochs=1", "train.batch_size=40",
                 "train.progress=false"]
    if cfg.data.val_size:
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
    for name in ("checkpoint.pt", "metrics.jsonl", "reconstructions.png", "samples.png"):
        assert (run / name).stat().st_size > 0, name
    assert main(["evaluate", str(run), "--iw-samples", "3", "--limit", "30", "--no-compile", "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())
    ll = result.get("log_likelihood", result.get("test", {}).get("log_likelihood"))
    assert ll is not None and ll == ll and ll < 1e9  # a finite number was written
    assert main(["plot", str(run), "-n", "4", "--max-points", "30"]) == 0
    pngs = sorted(p.name for p in (run / "plots").glob("*.png"))
    assert {"reconstructions.png", "samples.png", "latent_scatter.png", "training_curves.png"} <= set(pngs), pngs
