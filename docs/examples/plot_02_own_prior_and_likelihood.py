"""
Writing your own prior and likelihood
=====================================

Every part of a pyrovae model is chosen by name from a registry, and the
registries are open: a class decorated with :func:`pyrovae.register_prior`
or :func:`pyrovae.register_likelihood` can be named in a config like the
built-in ones, with its options checked against its signature.

This example registers

* a prior with a learned full covariance, ``N(mu, L L^T)``, and
* a Student-t likelihood for grey pixel values, which tolerates outlying
  pixels better than a Gaussian,

and trains a VAE on grey MNIST digits with them.
"""

# %%
# A prior is an ``nn.Module`` whose ``dist()`` returns a Pyro distribution
# with batch shape ``()`` and event shape ``(latent_dim,)``. pyrovae passes
# ``latent_dim`` to the constructor; every other argument is an option the
# config may set. Learned quantities are parameters, so they train with the
# rest of the model.
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

import pyrovae
from pyrovae import (
    ConfigError,
    Likelihood,
    Prior,
    register_likelihood,
    register_prior,
)
from pyrovae.report.plots import reconstruction_figure, samples_figure

torch.set_num_threads(1)


@register_prior("correlated_normal")
class CorrelatedNormalPrior(Prior):
    """N(mu, L L^T) with a learned mean and a learned lower-triangular L."""

    def __init__(self, latent_dim, init_scale=1.0):
        super().__init__(latent_dim)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_tril = nn.Parameter(torch.eye(latent_dim) * init_scale)

    def scale_tril(self):
        diagonal = F.softplus(self.raw_tril.diagonal()) + 1e-3
        return self.raw_tril.tril(-1) + torch.diag(diagonal)

    def dist(self):
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril())


# %%
# A likelihood says how many decoder outputs it needs per data element
# (``num_params``), which data it accepts (``support``), and builds
# p(x | z) from the decoder's outputs in ``dist_from``, one tensor of shape
# ``(*batch, *data_shape)`` per parameter. pyrovae passes ``data_shape``.
@register_likelihood("student_t")
class StudentTLikelihood(Likelihood):
    """Independent Student-t pixels: a location and a scale per pixel."""

    num_params = 2
    support = constraints.real

    def __init__(self, data_shape, df=3.0, min_scale=0.01):
        super().__init__(data_shape)
        self.df = df
        self.min_scale = min_scale

    def dist_from(self, loc, raw_scale):
        return dist.StudentT(self.df, loc, F.softplus(raw_scale) + self.min_scale)

    def mean(self, params):
        return self.split(params)[0]  # the location: Student-t's mean for df > 1


# %%
# Both are now names in their registries, listed with their options, just as
# ``pyrovae list`` would print them:
from pyrovae.registry import all_registries

for registry in all_registries():
    if registry.kind in ("prior", "likelihood"):
        print(f"{registry.kind}s:\n{registry.describe()}\n")

# %%
# A misspelled option fails when the model is built, and says what was meant:
try:
    pyrovae.VAE.from_config(
        {"prior": {"name": "correlated_normal", "init_scal": 0.5}},
        data_shape=(784,),
    )
except ConfigError as error:
    print("ConfigError:", error)

# %%
# Train the quickstart's small VAE on grey digits (``binarize: none``, values
# in [0, 1]) with both new components, chosen by name in ``key=value``
# overrides (the values are YAML), as ``pyrovae train --set`` would.
cfg = pyrovae.load_config(
    "small_mnist_vae.yaml",
    overrides=[
        "data.binarize=none",
        "model.latent_dim=8",
        "model.prior={name: correlated_normal, init_scale: 0.5}",
        "model.likelihood={name: student_t, df: 3.0}",
    ],
)
splits = pyrovae.load_data(cfg.data)
vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
history = pyrovae.train(vae, splits, cfg)
# The Student-t is a density over real pixel values: with pixel scales near
# 0.01 it exceeds 1 on most pixels, so the -ELBO is negative and not
# comparable with a Bernoulli model's.
print(
    f"validation -ELBO after {len(history)} epochs: "
    f"{history[-1]['val_loss']:.1f} nats per digit"
)

# %%
# The prior the model learned: the correlations of its latent dimensions.
with torch.no_grad():
    covariance = (
        vae.prior().covariance_matrix
    )  # vae.prior() is p(z), the prior's dist()
    std = covariance.diagonal().sqrt()
    correlation = covariance / std[:, None] / std[None, :]

from matplotlib.figure import Figure

prior_fig = Figure(figsize=(4.2, 3.6))
ax = prior_fig.add_subplot()
image = ax.imshow(correlation, cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_title("Learned prior: correlation of z")
ax.set_xlabel("latent dimension")
ax.set_ylabel("latent dimension")
prior_fig.colorbar(image, ax=ax)
prior_fig.tight_layout()

# %%
# Reconstructions (the Student-t location) and samples from the learned prior.
x_test = splits.test[0][:16]
recon_fig = reconstruction_figure(
    x_test,
    vae.reconstruct(x_test).detach().clamp(0, 1),
    title="Grey test digits and their reconstructions",
)
samples_fig = samples_figure(
    pyrovae.draw_samples(vae, 36, seed=0).clamp(0, 1),
    title="Samples: z from the learned prior, x the Student-t location",
)
