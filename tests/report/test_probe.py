"""The latent probe: known answers on synthetic codes, real codes of a tiny
trained VAE, and clear errors for unusable labels."""

import pytest
import torch

pytest.importorskip("sklearn")

from pyrovae import DataError, load_data, load_run  # noqa: E402
from pyrovae.report.latents import encode_data  # noqa: E402
from pyrovae.report.probe import latent_probe  # noqa: E402

from tiny_run import one_thread, train_tiny_run  # noqa: E402

KEYS = {"knn_accuracy", "logreg_accuracy", "kmeans_nmi", "kmeans_purity"}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def blobs(n, separation, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = separation * torch.eye(3, 4)
    return centres[labels] + torch.randn(n, 4, generator=g), labels


def test_separated_classes_score_perfectly():
    scores = latent_probe(*blobs(300, 20.0, 0), *blobs(150, 20.0, 1))
    assert set(scores) == KEYS
    assert scores == pytest.approx({k: 1.0 for k in KEYS})


def test_random_labels_score_near_chance():
    (x_tr, _), (x_te, _) = blobs(600, 0.0, 0), blobs(300, 0.0, 1)
    g = torch.Generator().manual_seed(2)
    scores = latent_probe(x_tr, torch.randint(3, (600,), generator=g), x_te, torch.randint(3, (300,), generator=g))
    assert scores["knn_accuracy"] < 0.45 and scores["logreg_accuracy"] < 0.45
    assert scores["kmeans_nmi"] < 0.05


def test_codes_of_a_trained_vae(tmp_path):
    train_tiny_run(tmp_path / "run", latent_dim=2, epochs=6)
    vae, cfg, _ = load_run(tmp_path / "run")
    splits = load_data(cfg.data)
    train = encode_data(vae, splits.train[0])["mean"]
    test = encode_data(vae, splits.test[0])["mean"]
    scores = latent_probe(train, splits.train[1], test, splits.test[1])
    assert scores["knn_accuracy"] > 0.9 and scores["logreg_accuracy"] > 0.8, scores
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_bad_labels_are_clear_errors():
    x, y = blobs(30, 5.0, 0)
    with pytest.raises(DataError, match="no label"):
        latent_probe(x, torch.full((30,), -1), x, y)
    with pytest.raises(DataError, match="shape"):
        latent_probe(x, y[:10], x, y)
    with pytest.raises(DataError, match="single class"):
        latent_probe(x, torch.zeros(30, dtype=torch.long), x, y)
    with pytest.raises(DataError, match="dimensions"):
        latent_probe(x, y, x[:, :2], y)
