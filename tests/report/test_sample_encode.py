"""``pyrovae sample`` and ``pyrovae encode``: shapes, determinism under a
seed, and clear errors for a run directory without a checkpoint."""

import matplotlib.image
import numpy as np
import pytest
import torch

from pyrovae import CheckpointError, DataError, cli, load_data, load_run
from pyrovae.report.latents import draw_samples, encode_data

from tiny_run import one_thread, train_tiny_run


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "run"
    train_tiny_run(path, latent_dim=3)
    return path


def test_draw_samples_shape_and_seed(run):
    vae, _, _ = load_run(run)
    a, b, c = draw_samples(vae, 10, seed=1), draw_samples(vae, 10, seed=1), draw_samples(vae, 10, seed=2)
    assert a.shape == (10, 1, 8, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_seeded_draws_leave_the_global_generator_alone(run):
    vae, _, _ = load_run(run)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    draw_samples(vae, 4, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_sample_command_npy(run, tmp_path):
    out_a, out_b, out_c = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    assert cli.main(["sample", str(run), "-n", "12", "--out", str(out_a), "--seed", "7"]) == 0
    assert cli.main(["sample", str(run), "-n", "12", "--out", str(out_b), "--seed", "7"]) == 0
    assert cli.main(["sample", str(run), "-n", "12", "--out", str(out_c), "--seed", "8", "--draw"]) == 0
    a, b, c = np.load(out_a), np.load(out_b), np.load(out_c)
    assert a.shape == c.shape == (12, 1, 8, 8) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_command_png(run, tmp_path):
    out = tmp_path / "s.png"
    assert cli.main(["sample", str(run), "-n", "16", "--out", str(out)]) == 0
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[0] > 200 and float(pixels[..., :3].var()) > 1e-3


def test_sample_command_rejects_other_suffixes(run):
    with pytest.raises(SystemExit):
        cli.main(["sample", str(run), "--out", "samples.jpg"])
    with pytest.raises(SystemExit):
        cli.main(["sample", str(run), "-n", "0"])


def test_encode_shapes_and_labels(run, tmp_path):
    out = tmp_path / "codes.npz"
    assert cli.main(["encode", str(run), "--split", "test", "--out", str(out)]) == 0
    codes = np.load(out)
    vae, cfg, _ = load_run(run)
    x, labels = load_data(cfg.data).test
    assert codes["mean"].shape == codes["scale"].shape == (len(x), 3)
    assert np.array_equal(codes["labels"], labels.numpy())
    assert (codes["scale"] > 0).all()
    direct = encode_data(vae, x)
    assert np.allclose(codes["mean"], direct["mean"].numpy())


def test_encode_is_deterministic(run, tmp_path):
    for name in ("a", "b"):
        assert cli.main(["encode", str(run), "--split", "val", "--out", str(tmp_path / f"{name}.npz"), "--batch-size", "64"]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["mean"].shape == (200, 3)
    assert all(np.array_equal(a[k], b[k]) for k in ("mean", "scale", "labels"))


def test_encode_point_mass_guide_has_zero_scale(run):
    vae, cfg, _ = load_run(run)
    from pyrovae import VAE

    ae = VAE.from_config({**cfg.to_dict()["model"], "guide": "delta"}, data_shape=(1, 8, 8))
    codes = encode_data(ae, torch.rand(5, 1, 8, 8))
    assert codes["mean"].shape == (5, 3) and torch.equal(codes["scale"], torch.zeros(5, 3))


def test_run_dir_without_checkpoint(run, tmp_path, capsys):
    (tmp_path / "config.yaml").write_text((run / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(tmp_path)
    for command in (["sample", str(tmp_path)], ["encode", str(tmp_path)], ["impute", str(tmp_path), "--mask", "center"]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert "no checkpoint" in err and "pyrovae train" in err


def test_draw_samples_rejects_a_bad_count(run):
    vae, _, _ = load_run(run)
    with pytest.raises(DataError):
        draw_samples(vae, 0)
