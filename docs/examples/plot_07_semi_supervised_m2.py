"""
Semi-supervised learning with M2
================================

Kingma et al.'s (2014) M2 (``model.name: m2``) is a VAE with a second,
discrete latent: the class y. Where a digit's label is known, y is
observed; where it is not, the guide's classifier q(y | x) is used and y is
summed out exactly by enumeration (Pyro's ``TraceEnum_ELBO``). With
``data.labelled`` set, only that many training digits keep their label,
the same number of every class.

Here 500 of 4000 training digits keep their label (50 of each class). The model is
trained for a few epochs only, so its error is far from the paper's; the
literature page has full runs (:ref:`literature`).
"""

# %%
import torch

import pyrovae
from pyrovae.report.plots import image_rows_figure

torch.set_num_threads(1)

cfg = pyrovae.load_config(
    {
        "data": {
            "name": "mnist",
            "download": False,
            "subset": 5000,
            "val_size": 1000,
            "labelled": 500,
        },
        "model": {
            "name": "m2",
            "latent_dim": 16,
            "options": {"num_classes": 10, "classification_weight": 10.0},
            "encoder": {"name": "mlp", "hidden": [256], "activation": "softplus"},
            "decoder": {"name": "mlp", "hidden": [256], "activation": "softplus"},
        },
        "train": {
            "epochs": 6,
            "batch_size": 100,
            "labelled_batch_size": 50,
            "optimizer": {"name": "adam", "lr": 0.001},
            "progress": False,
            "device": "cpu",
            "seed": 0,
        },
    }
)
splits = pyrovae.load_data(cfg.data)
labels = splits.train[1]
print(
    f"{int((labels >= 0).sum())} of {len(labels)} training digits keep their label "
    "(-1 marks the rest)"
)

# %%
# :func:`pyrovae.build_model` builds any registered model family from the
# ``model`` section; training picks ``TraceEnum_ELBO`` because M2 lists
# ``y`` among its enumerated sites.
m2 = pyrovae.build_model(cfg.model, data_shape=splits.data_shape)
print("enumerated sites:", m2.enumerate_sites)
history = pyrovae.train(m2, splits, cfg)

# %%
# :func:`pyrovae.evaluate` with ``(x, labels)``: the labels are not
# conditioned on (M2 sums y out: log p(x) = logsumexp_y log p(x, y)); they
# score the classifier q(y | x) instead.
x_test, y_test = splits.test[0][:1000], splits.test[1][:1000]
summary = pyrovae.evaluate(m2, (x_test, y_test), num_samples=20, seed=0).summary()
print(
    f"test error of q(y | x): {100 * summary['classification_error']:.1f}% "
    f"(trained with {int((labels >= 0).sum())} labels)"
)
print(f"log p(x), y summed out: {summary['log_likelihood']:.1f} nats per digit")

# %%
# Class-conditional samples: each row fixes y, each column shares one z
# drawn from the prior, so a column keeps its style across classes.
torch.manual_seed(0)
with torch.no_grad():
    z = m2.prior().sample((10,))  # (10, latent_dim)
    classes = torch.arange(10)
    images = m2.decode(
        z.unsqueeze(0), classes.unsqueeze(1)
    ).mean  # (class, z, 1, 28, 28)
samples_fig = image_rows_figure(
    images,
    "M2: one class per row, one z per column",
    row_labels=[str(c) for c in range(10)],
)

# %%
# Analogies (Kingma et al.'s Figure 1): the style z of a test digit (the
# mean of q(z | x, y) at the classifier's label) decoded with every class.
with torch.no_grad():
    style = m2.code(x_test[:8])  # (8, latent_dim)
    images = m2.decode(
        style.unsqueeze(1), classes.unsqueeze(0)
    ).mean  # (8, 10, 1, 28, 28)
analogies = torch.cat([x_test[:8].unsqueeze(1), images], 1)
analogy_fig = image_rows_figure(
    analogies,
    "M2 analogies: the style of each input (left) with every class",
    col_labels=["input"] + [str(c) for c in range(10)],
)
