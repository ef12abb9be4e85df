"""
Imputing missing pixels
=======================

A trained VAE is a model of whole digits, so it can fill in the part of a
digit that is hidden: :func:`pyrovae.impute` conditions on the observed
pixels x_o and estimates the hidden ones x_m,

* ``method="importance"``: importance resampling, proposals z from the
  guide q(z | x) with the hidden pixels filled in, weighted by
  p(x_o, z) / q(z | x); the estimate is E[x_m | x_o];
* ``method="gibbs"``: Metropolis-within-Gibbs, alternating z and x_m.

Here the middle of each test digit is hidden, then half of the pixels at
random, and both are compared with filling in the training mean.
"""

# %%
import torch

import pyrovae
from pyrovae.infer.impute import imputation_errors
from pyrovae.infer.masks import make_mask
from pyrovae.report.plots import imputation_figure

torch.set_num_threads(1)

cfg = pyrovae.load_config("small_mnist_vae.yaml")  # the quickstart's small VAE
splits = pyrovae.load_data(cfg.data)
vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
pyrovae.train(vae, splits, cfg)

x_test = splits.test[0][:200]
train_mean = splits.train[0].mean(0)  # what mean imputation fills in, (1, 28, 28)

# %%
# A mask is a bool tensor shaped like the data, True where a pixel is
# observed. :func:`~pyrovae.infer.masks.make_mask` builds the registered
# ones (see :ref:`registry-mask`); any bool tensor works.
center = make_mask("center:0.5", len(x_test), vae.data_shape)
print("hidden pixels per digit:", int((~center[0]).sum()))

result = pyrovae.impute(
    vae,
    x_test,
    center,
    method={"name": "importance", "num_particles": 200},
    fill=train_mean,
    seed=0,
)
errors = imputation_errors(x_test, result.mean, center, train_mean)
print({k: round(v, 4) for k, v in errors.items()})
center_fig = imputation_figure(
    x_test[:12],
    center[:12],
    result.mean[:12],
    title="Centre hidden: importance resampling, 200 proposals",
)

# %%
# Half of the pixels hidden at random, and the Gibbs sampler next to
# importance resampling.
random_half = make_mask("random:0.5", len(x_test), vae.data_shape, seed=1)
for method in (
    {"name": "importance", "num_particles": 200},
    {"name": "gibbs", "steps": 60, "burn_in": 20},
):
    result = pyrovae.impute(
        vae, x_test, random_half, method=method, fill=train_mean, seed=0
    )
    errors = imputation_errors(x_test, result.mean, random_half, train_mean)
    print(
        f"{method['name']:>10}: MSE on hidden pixels {errors['mse_imputation']:.4f}, "
        f"mean imputation {errors['mse_mean_imputation']:.4f}, "
        f"zero fill {errors['mse_zero_filled']:.4f}"
    )
random_fig = imputation_figure(
    x_test[:12],
    random_half[:12],
    result.mean[:12],
    title="Half the pixels hidden at random: Metropolis-within-Gibbs",
)
