"""A tiny VAE trained for a few seconds on the ``synthetic`` source, written
to a run directory; shared by the figure, sampling, imputation and probe tests."""

import contextlib
import copy

import pyro
import torch

from pyrovae import VAE, load_config, load_data
from pyrovae.runs import RunDir
from pyrovae.training.trainer import Trainer

CONFIG = {
    "data": {"name": "synthetic", "binarize": "none", "val_size": 200,
             "options": {"num_points": 1200, "num_test": 200, "shape": [1, 8, 8], "num_classes": 4}},
    "model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
              "likelihood": "continuous_bernoulli"},
    "train": {"epochs": 8, "batch_size": 50, "progress": False, "device": "cpu", "optimizer": {"name": "adam", "lr": 3e-3}},
}


def train_tiny_run(path, latent_dim=2, **train):
    """Train the tiny model into the run directory ``path``; returns (vae, splits, cfg)."""
    d = copy.deepcopy(CONFIG)
    d["model"]["latent_dim"] = latent_dim
    d["train"].update(train)
    cfg = load_config(d)
    pyro.set_rng_seed(0)
    splits = load_data(cfg.data)
    run = RunDir.create(path)
    cfg.to_yaml(run.config)
    vae = VAE.from_config(cfg, data_shape=splits.data_shape)
    with one_thread():
        Trainer(vae, splits, cfg, run_dir=run.path).fit()
    return vae, splits, cfg


@contextlib.contextmanager
def one_thread():
    """Tiny networks gain nothing from threads, and on a shared machine
    extra threads cost a lot of waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
