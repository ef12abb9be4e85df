"""Imputation: masks, bad input, and recovery of hidden pixels by a tiny VAE
trained on structured synthetic data (each image is one of four prototypes
plus noise, so the observed pixels tell which prototype it is)."""

import json

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae import ConfigError, DataError, VAE, cli, load_data, load_run
from pyrovae.infer.impute import check_mask, impute, imputation_errors, make_mask, parse_mask_spec

from tiny_run import one_thread, train_tiny_run


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("impute") / "run"
    train_tiny_run(path, latent_dim=4, epochs=10)
    return path


@pytest.fixture(scope="module")
def trained(run):
    vae, cfg, _ = load_run(run)
    splits = load_data(cfg.data)
    return vae, splits.test[0][:100], splits.train[0].mean(0)


# -- masks ----------------------------------------------------------------------


def test_spatial_masks():
    center = make_mask("center", 3, SHAPE)
    assert center.shape == (3, *SHAPE) and center.dtype == torch.bool
    assert not center[0, 0, 2:6, 2:6].any() and int((~center[0]).sum()) == 16
    left = make_mask("left", 2, SHAPE)
    assert not left[..., :4].any() and left[..., 4:].all()
    small = make_mask("center:0.25", 1, SHAPE)
    assert int((~small).sum()) == 4
    flat = make_mask("top", 2, (64,))
    assert not flat[:, :32].any() and flat[:, 32:].all()


def test_random_mask_is_seeded_and_has_the_fraction():
    a, b, c = (make_mask("random:0.3", 50, SHAPE, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float((~a).float().mean()) - 0.3) < 0.05
    assert not torch.equal(a[0], a[1])  # a different pattern per point
    assert parse_mask_spec("random:0.5") == {"name": "random", "fraction": 0.5}


def test_mask_files(tmp_path):
    one = np.ones(SHAPE, dtype=bool)
    one[0, :2] = False
    np.save(tmp_path / "one.npy", one)
    mask = make_mask(str(tmp_path / "one.npy"), 5, SHAPE)
    assert mask.shape == (5, *SHAPE) and not mask[:, 0, :2].any()
    np.savez(tmp_path / "many.npz", mask=np.stack([one] * 5).astype(np.uint8))
    assert torch.equal(make_mask(str(tmp_path / "many.npz"), 5, SHAPE), mask)


@pytest.mark.parametrize("spec, shape, error, match", [
    ("nonsense", SHAPE, DataError, "neither a mask name"),
    ("random:2", SHAPE, ConfigError, "in \\(0, 1\\)"),
    ("random:abc", SHAPE, ConfigError, "not a number"),
    ("center", (10,), DataError, "needs image data"),
])
def test_bad_mask_specs(spec, shape, error, match):
    with pytest.raises(error, match=match):
        make_mask(spec, 2, shape)


def test_mask_of_the_wrong_shape(tmp_path):
    with pytest.raises(DataError, match="shape"):
        check_mask(torch.ones(2, 1, 7, 7, dtype=torch.bool), (2, *SHAPE))
    np.save(tmp_path / "wrong.npy", np.ones((28, 28), dtype=bool))
    with pytest.raises(DataError, match=r"\(28, 28\)"):
        make_mask(str(tmp_path / "wrong.npy"), 2, SHAPE)


def test_mask_hiding_everything_or_nothing():
    with pytest.raises(DataError, match="hides every element"):
        check_mask(torch.zeros(3, *SHAPE, dtype=torch.bool), (3, *SHAPE))
    partly = torch.ones(3, *SHAPE, dtype=torch.bool)
    partly[1] = False  # one point fully hidden is enough to refuse
    with pytest.raises(DataError, match="point 1"):
        check_mask(partly, (3, *SHAPE))
    with pytest.raises(DataError, match="nothing to impute"):
        check_mask(torch.ones(3, *SHAPE, dtype=torch.bool), (3, *SHAPE))


def test_impute_rejects_bad_masks(trained):
    vae, x, train_mean = trained
    with pytest.raises(DataError):
        impute(vae, x[:4], torch.ones(4, 64, dtype=torch.bool))
    with pytest.raises(DataError):
        impute(vae, x[:4], torch.zeros(4, *SHAPE, dtype=torch.bool))


# -- recovery ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["importance", {"name": "gibbs", "steps": 30, "burn_in": 5},
                                    {"name": "gibbs", "steps": 30, "burn_in": 5, "metropolis": False}])
@pytest.mark.parametrize("spec", ["center", "random:0.5"])
def test_imputation_beats_mean_imputation(trained, method, spec):
    vae, x, train_mean = trained
    mask = make_mask(spec, len(x), SHAPE, seed=0)
    result = impute(vae, x, mask, method=method, fill=train_mean, seed=0)
    errors = imputation_errors(x, result.mean, mask, train_mean)
    assert errors["mse_imputation"] < 0.5 * errors["mse_mean_imputation"], errors
    assert errors["mse_mean_imputation"] < errors["mse_zero_filled"]
    for estimate in (result.mean, result.draw):
        assert estimate.shape == x.shape
        assert torch.equal(estimate[mask], x[mask])  # observed pixels unchanged
        assert torch.isfinite(estimate).all()


def test_imputation_is_deterministic_under_seed(trained):
    vae, x, train_mean = trained
    mask = make_mask("left", 20, SHAPE)
    a, b, c = (impute(vae, x[:20], mask, fill=train_mean, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.mean, b.mean) and torch.equal(a.draw, b.draw)
    assert not torch.equal(a.draw, c.draw)


def test_hidden_values_are_never_read(trained):
    vae, x, train_mean = trained
    mask = make_mask("center", 20, SHAPE)
    scrambled = torch.where(mask, x[:20], torch.rand(20, *SHAPE))
    a = impute(vae, x[:20], mask, fill=train_mean, seed=0)
    b = impute(vae, scrambled, mask, fill=train_mean, seed=0)
    assert torch.equal(a.mean, b.mean)


def test_point_mass_guide_imputes(trained):
    vae, x, _ = trained
    ae = VAE.from_config({"latent_dim": 4, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]},
                          "likelihood": "continuous_bernoulli", "guide": "delta"}, data_shape=SHAPE)
    mask = make_mask("center", 5, SHAPE)
    result = impute(ae, x[:5], mask, method={"name": "importance", "num_particles": 3})
    assert result.mean.shape == (5, *SHAPE) and torch.equal(result.mean[mask], x[:5][mask])


def test_unknown_imputer_option(trained):
    vae, x, _ = trained
    with pytest.raises(ConfigError, match="num_particles"):
        impute(vae, x[:2], make_mask("center", 2, SHAPE), method={"name": "importance", "steps": 3})


def test_impute_command(run, capsys):
    assert cli.main(["impute", str(run), "--mask", "center", "--limit", "60", "--particles", "50", "--show", "6"]) == 0
    report = json.loads((run / "imputation" / "imputation-center.json").read_text())
    assert report["points"] == 60 and report["hidden_elements"] == 60 * 16
    assert report["mse_imputation"] < report["mse_mean_imputation"] < report["mse_zero_filled"]
    png = (run / "imputation" / "imputation-center.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    out = capsys.readouterr().out  # a table, as pyrovae evaluate prints
    assert "mask center" in out and "error removed vs. mean imputation" in out and "{" not in out
    assert f"{report['mse_imputation']:.5f}" in out and "mean effective sample size" in out


def test_impute_command_bad_mask_file(run, tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.ones((3, 3), dtype=bool))
    assert cli.main(["impute", str(run), "--mask", str(tmp_path / "m.npy")]) == 2
    assert "shape" in capsys.readouterr().err
    np.save(tmp_path / "none.npy", np.zeros(SHAPE, dtype=bool))
    assert cli.main(["impute", str(run), "--mask", str(tmp_path / "none.npy")]) == 2
    assert "hides every element" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [
    {"hierarchy": [{"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}]},
    {"guide": "iaf"},
])
@pytest.mark.parametrize("method", [{"name": "importance", "num_particles": 4}, {"name": "gibbs", "steps": 3, "burn_in": 1}])
def test_other_model_shapes_impute(trained, extra, method):
    """Log weights come from traces, so hierarchical models and flow guides work too."""
    _, x, train_mean = trained
    vae = VAE.from_config({"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]},
                           "likelihood": "continuous_bernoulli", **extra}, data_shape=SHAPE)
    mask = make_mask("random:0.5", 6, SHAPE)
    result = impute(vae, x[:6], mask, method=method, fill=train_mean)
    assert result.mean.shape == (6, *SHAPE) and torch.isfinite(result.mean).all()
    assert torch.equal(result.mean[mask], x[:6][mask])


def _images(n=3):
    """Binary 8x8 images and a mask that hides their bottom half."""
    x = torch.bernoulli(torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(0)))
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[..., 4:, :] = False
    return x, mask


def _words(n=3):
    """Words as codes (``pyrovae.data.words``) and a mask that hides each one's second character."""
    from pyrovae.data.words import encode_words

    x = encode_words(["cat", "horse", "ox"][:n], max_length=6)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 1] = False
    return x, mask


def _bernoulli_means(hidden):
    return bool(((hidden > 0) & (hidden < 1)).all())  # Bernoulli means, not the fill


def _characters(hidden):
    from pyrovae.data.words import FIRST_CHAR, VOCAB_SIZE

    return bool(((hidden >= FIRST_CHAR) & (hidden < VOCAB_SIZE) & (hidden == hidden.round())).all())


_SMALL = {"encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}}
_TEXT = {"options": {"hidden": 8, "embed_dim": 4}}
#: each family's model section, data it models (x and a mask) and what its hidden estimates must be;
#: a family not listed reads binary images with small MLPs
FAMILY_DATA = {
    "cvae": ({"options": {"num_classes": 4}, **_SMALL}, _images, _bernoulli_means),
    "m2": ({"options": {"num_classes": 4}, **_SMALL}, _images, _bernoulli_means),
    "hvae": ({"options": {"hidden": 16}}, _images, _bernoulli_means),  # hvae builds its own gated networks
    "text_vae": (_TEXT, _words, _characters),
    "char_lm": (_TEXT, _words, _characters),
}


@pytest.mark.parametrize("name", sorted(n for n in pyrovae.models.models.names() if not n.startswith("test_")))
@pytest.mark.parametrize("method", ["importance", "gibbs"])
def test_every_registered_model_family_imputes(name, method):
    """Observed elements come back unchanged and hidden ones get the model's
    estimate (E[x | latents] from its x_mean site, or for categorical data
    the most probable class), for every registered family on data it models
    (a label goes to the models that take one); an imputer outside the
    model's ``impute_methods`` is refused with the ones to use."""
    sections, make_data, plausible = FAMILY_DATA.get(name, (_SMALL, _images, _bernoulli_means))
    cfg = pyrovae.load_config({"model": {"name": name, "latent_dim": 3, **sections}})
    x, mask = make_data()
    model = pyrovae.build_model(cfg.model, tuple(x.shape[1:]))
    fields = {"y": torch.tensor([0, 1, 2])} if "y" in pyrovae.models.base.required_fields(model) else {}
    methods = getattr(model, "impute_methods", None)
    if methods is not None and method not in methods:
        with pytest.raises(ConfigError, match=f"use {', '.join(methods)}"):
            pyrovae.impute(model, x, mask, method=method, **fields)
        return
    result = pyrovae.impute(model, x, mask, method=method, **fields)
    assert torch.equal(result.mean[result.mask], x[result.mask]) and not bool(result.mask.all())
    assert plausible(result.mean[~result.mask])
