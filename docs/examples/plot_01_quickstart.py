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
# A config is three flat sections, ``data``, ``model`` and ``train``, in a
# YAML file or a dict; keys left out take their defaults (:ref:`config`).
# The gallery's examples share this one (:download:`small_mnist_vae.yaml </examples/small_mnist_vae.yaml>`):
from pathlib import Path

import torch

import pyrovae
from pyrovae.report.plots import (
    reconstruction_figure,
    samples_figure,
    training_curves_figure,
)

torch.set_num_threads(1)  # these networks are small: one thread is fastest

print(Path("small_mnist_vae.yaml").read_text())
cfg = pyrovae.load_config("small_mnist_vae.yaml")
print("the prior, from the defaults:", cfg.model.prior)

# %%
# Load the data: a :class:`~pyrovae.data.splits.Splits` of ``(x, labels)``
# pairs. MNIST is binarized: dynamically (a fresh draw every epoch) for
# training, once with a fixed seed for validation and test.
splits = pyrovae.load_data(cfg.data)
x_train, _ = splits.train
x_test, y_test = splits.test
print("train", tuple(x_train.shape))
print("validation", tuple(splits.val[0].shape))
print("test", tuple(x_test.shape))

# %%
# Build the model from the ``model`` section and fit it. :func:`pyrovae.train`
# returns one record per epoch; the loss is the negative ELBO in nats per
# digit.
vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
history = pyrovae.train(vae, splits, cfg)
print(
    f"epoch {history[-1]['epoch']}: train {history[-1]['train_loss']:.1f}, "
    f"validation {history[-1]['val_loss']:.1f} nats"
)
curves = training_curves_figure(
    history, title="Training a small VAE on 4000 digits"
)

# %%
# Evaluate on 1000 test digits with K = 200 importance samples each. The
# IS estimate of log p(x) lies above the ELBO; ``active_units`` counts the
# latent dimensions the model uses.
evaluation = pyrovae.evaluate(vae, x_test[:1000], num_samples=200, seed=0)
summary = evaluation.summary()
for key in (
    "log_likelihood",
    "log_likelihood_se_over_points",
    "elbo",
    "reconstruction",
    "kl",
    "active_units",
):
    print(
        f"{key:>29}: {summary[key]:.3f}"
        if isinstance(summary[key], float)
        else f"{key:>29}: {summary[key]}"
    )

# %%
# Reconstructions of test digits: the decoder's mean at the guide's mean code.
reconstructions = vae.reconstruct(x_test[:16])
recon_fig = reconstruction_figure(
    x_test[:16],
    reconstructions.detach(),
    title="Test digits and their reconstructions",
)

# %%
# New digits: z from the prior, then the decoder's mean. The same seed gives
# the same digits.
samples = pyrovae.draw_samples(vae, 64, seed=0)
samples_fig = samples_figure(samples, title="Samples from p(z) p(x | z)")
