"""
Quickstart: train, evaluate, sample
===================================

Train a small VAE on 5000 MNIST digits for a few epochs, score it on test
digits by importance sampling, and draw new digits from it. Everything goes
through the public API: :func:`pyrovae.load_config`, :func:`pyrovae.load_data`,
:class:`pyrovae.VAE`, :func:`pyrovae.train`, :func:`pyrovae.evaluate` and
:func:`pyrovae.draw_samples`.
"""

# %%
# A config is three flat sections, ``data``, ``model`` and ``train``; keys
# left out take their defaults (:ref:`config`). Here: the first 5000
# training digits (1000 of them held out for validation), a latent of 16
# and one hidden layer of 256 units, 10 epochs. Keep torch on one thread:
# these networks are small.
import torch

import pyrovae
from pyrovae.report.plots import (
    reconstruction_figure,
    samples_figure,
    training_curves_figure,
)

torch.set_num_threads(1)

cfg = pyrovae.load_config({
    "data": {"name": "mnist", "download": False, "subset": 5000, "val_size": 1000},
    "model": {"latent_dim": 16,
              "encoder": {"name": "mlp", "hidden": [256], "activation": "relu"},
              "decoder": {"name": "mlp", "hidden": [256], "activation": "relu"}},
    "train": {"epochs": 10, "batch_size": 100, "progress": False, "device": "cpu", "seed": 0},
})
print(cfg.to_yaml())

# %%
# Load the data: a :class:`~pyrovae.data.splits.Splits` of ``(x, labels)``
# pairs. MNIST is binarized: dynamically (a fresh draw every epoch) for
# training, once with a fixed seed for validation and test.
splits = pyrovae.load_data(cfg.data)
x_train, _ = splits.train
x_test, y_test = splits.test
print("train", tuple(x_train.shape), "validation", tuple(splits.val[0].shape), "test", tuple(x_test.shape))

# %%
# Build the model from the ``model`` section and fit it. :func:`pyrovae.train`
# returns one record per epoch; the loss is the negative ELBO in nats per
# digit.
vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
history = pyrovae.train(vae, splits, cfg)
print(f"epoch {history[-1]['epoch']}: train {history[-1]['train_loss']:.1f}, "
      f"validation {history[-1]['val_loss']:.1f} nats")
curves = training_curves_figure(history, title="Training a small VAE on 4000 digits")

# %%
# Evaluate on 1000 test digits with K = 200 importance samples each. The
# IS estimate of log p(x) lies above the ELBO; ``active_units`` counts the
# latent dimensions the model uses.
evaluation = pyrovae.evaluate(vae, x_test[:1000], num_samples=200, seed=0)
summary = evaluation.summary()
for key in ("log_likelihood", "log_likelihood_stderr", "elbo", "reconstruction", "kl", "active_units"):
    print(f"{key:>22}: {summary[key]:.3f}" if isinstance(summary[key], float) else f"{key:>22}: {summary[key]}")

# %%
# Reconstructions of test digits: the decoder's mean at the guide's mean code.
reconstructions = vae.reconstruct(x_test[:16])
recon_fig = reconstruction_figure(x_test[:16], reconstructions.detach(), title="Test digits and their reconstructions")

# %%
# New digits: z from the prior, then the decoder's mean. The same seed gives
# the same digits.
samples = pyrovae.draw_samples(vae, 64, seed=0)
samples_fig = samples_figure(samples, title="Samples from p(z) p(x | z)")
