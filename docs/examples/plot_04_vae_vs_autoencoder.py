"""
A VAE against a plain autoencoder
=================================

A plain autoencoder is a VAE with a point-mass guide, z = f(x)
(``guide: delta``), trained with ``beta = 0``, which masks the latent site
out of the loss: training then minimises the reconstruction error
-log p(x | f(x)) alone. Same networks, same data, same epochs; only the
guide and beta differ.

The autoencoder reconstructs better, but its codes do not follow any
prior, so decoding z ~ N(0, I) gives no digits. The VAE trades some
reconstruction for a code space that can be sampled.
"""

# %%
import torch

import pyrovae
from pyrovae.report.plots import side_by_side_figure

torch.set_num_threads(1)

vae_cfg = pyrovae.load_config("small_mnist_vae.yaml")  # the quickstart's small VAE
ae_cfg = pyrovae.load_config(
    "small_mnist_vae.yaml", overrides=["model.guide=delta", "train.beta=0"]
)
print("autoencoder:", ae_cfg.model.guide, "beta =", ae_cfg.train.beta)

splits = pyrovae.load_data(vae_cfg.data)
models = {}
for name, cfg in (("VAE", vae_cfg), ("autoencoder", ae_cfg)):
    models[name] = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    pyrovae.train(models[name], splits, cfg)

# %%
# Reconstruction error on test digits: the ``bce`` of
# :func:`pyrovae.evaluate` is the binary cross-entropy of the
# reconstruction (nats per digit), ``mse`` the mean squared pixel error.
# (Its log-likelihood is no estimate of log p(x) for the autoencoder: a
# point-mass guide has no density.)
x_test = splits.test[0][:1000]
for name, model in models.items():
    summary = pyrovae.evaluate(model, x_test, num_samples=10, seed=0).summary()
    print(
        f"{name:>12}: reconstruction BCE {summary['bce']:.1f} nats, "
        f"MSE {summary['mse']:.4f}"
    )

# %%
# Top: reconstructions of the same test digits. Bottom: the decoder's mean
# at z ~ N(0, I), the same draws for both models.
z = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
panels = {}
for name, model in models.items():
    with torch.no_grad():
        panels[name] = {
            "reconstructions": model.reconstruct(x_test[:32]),
            "decoded z ~ N(0, I)": model.decode(z).mean,
        }  # decode(z) is p(x | z)
fig = side_by_side_figure(
    panels, title="VAE against autoencoder: same networks, same data"
)
