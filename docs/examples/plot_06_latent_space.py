"""
The latent space: t-SNE, the manifold, traversals
=================================================

What the encoder learned to put where. Three views:

* a t-SNE map (scikit-learn) of the 16-dimensional latent means of test
  digits, coloured by their label;
* a VAE with a 2-dimensional latent, whose plane can be drawn directly:
  its test codes, and the digits decoded on a grid over it (the manifold);
* traversals: one latent dimension of the 16-dimensional model swept
  through its prior quantiles while the others stay fixed.
"""

# %%
import torch
from sklearn.manifold import TSNE

import pyrovae
from pyrovae.report.latents import manifold_codes, prior_quantiles, traversal_codes
from pyrovae.report.plots import (
    latent_scatter_figure,
    manifold_figure,
    traversal_figure,
)

torch.set_num_threads(1)


def trained_vae(latent_dim, splits):
    """The quickstart's small VAE with a latent of ``latent_dim``, trained."""
    cfg = pyrovae.load_config(
        "small_mnist_vae.yaml", overrides=[f"model.latent_dim={latent_dim}"]
    )
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    pyrovae.train(vae, splits, cfg)
    return vae


splits = pyrovae.load_data(pyrovae.load_config("small_mnist_vae.yaml").data)
x_test, y_test = splits.test[0][:1500], splits.test[1][:1500]
vae16 = trained_vae(16, splits)
vae2 = trained_vae(2, splits)

# %%
# :func:`pyrovae.encode_data` gives the mean and standard deviation of
# q(z | x) for every point, ``(N, latent_dim)`` each. t-SNE embeds the 16-D
# means in the plane; digits of one class should share a region.
codes16 = pyrovae.encode_data(vae16, x_test)["mean"]
embedding = TSNE(
    n_components=2, perplexity=30, init="pca", random_state=0
).fit_transform(codes16.numpy())
tsne_fig = latent_scatter_figure(
    torch.as_tensor(embedding),
    y_test,
    title="t-SNE of the 16-D latent means of 1500 test digits",
)

# %%
# With a 2-D latent the codes need no embedding.
codes2 = pyrovae.encode_data(vae2, x_test)["mean"]
scatter_fig = latent_scatter_figure(
    codes2, y_test, title="The 2-D latent means of 1500 test digits"
)

# %%
# The manifold: decode a 12 x 12 grid of prior quantiles (5% to 95%) of the
# 2-D model.
levels = torch.linspace(0.05, 0.95, 12)
grid_values = prior_quantiles(vae2, levels)  # (12, 2)
z_grid = manifold_codes(grid_values)  # (12, 12, 2)
with torch.no_grad():
    images = vae2.decode(z_grid).mean  # (12, 12, 1, 28, 28)
manifold_fig = manifold_figure(images, grid_values[:, 0], grid_values[:, 1].flip(0))

# %%
# Traversals of the 16-D model, from the code of one test digit: each row
# varies one of the six dimensions the model uses most.
activity = codes16.var(0)
dims = activity.argsort(descending=True)[:6].tolist()
levels = torch.linspace(0.05, 0.95, 9)
codes = traversal_codes(
    codes16[0], prior_quantiles(vae16, levels), dims
)  # (6, 9, 16)
with torch.no_grad():
    images = vae16.decode(codes).mean
traversal_fig = traversal_figure(
    images,
    dims,
    levels.tolist(),
    title="Traversals: the six most active dimensions, from one test digit",
)
