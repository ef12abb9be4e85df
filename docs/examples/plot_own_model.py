"""
Your own Pyro model
===================

A model of your own is a class with Pyro ``model`` and ``guide`` methods,
nothing more. This example starts from the VAE of Pyro's tutorial, written
exactly as Pyro writes it, registers it, trains it with :func:`pyrovae.train`
and scores it with :func:`pyrovae.log_likelihood`. It then adds the optional
*capabilities* (``sample``, ``reconstruct``, ``decode_mean``, ...) that the
figures and :func:`pyrovae.impute` ask for; the :doc:`protocol page
</protocol>` lists them all, and which command needs which.

The data are the synthetic 8x8 binary images of the ``synthetic`` source,
so the example runs in seconds.
"""

# %%
# The tutorial's VAE
# ------------------
# Encoder and decoder are plain ``nn.Module``\ s; ``model`` and ``guide``
# take the batch ``x`` and register their networks with ``pyro.module``.
# pyrovae reads the signatures: ``x`` is a batch field, and no ``beta``,
# ``num_data`` or ``obs_mask`` keyword is passed to functions that do not
# take them.
import tempfile

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrovae
from pyrovae.report.figures import PlotInputs, write_plots
from pyrovae.report.plots import imputation_figure, reconstruction_figure, samples_figure

torch.set_num_threads(1)
PIXELS = 64  # 8 x 8 images


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(PIXELS, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, PIXELS)
        hidden = self.softplus(self.fc1(x))
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, PIXELS)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        loc_img = self.sigmoid(self.fc21(hidden))
        return loc_img


class VAE(nn.Module):
    def __init__(self, z_dim=2, hidden_dim=64):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)
        self.z_dim = z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x.reshape(-1, PIXELS))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


# %%
# Register and train
# ------------------
# The factory receives the ``model`` section of the config and the data
# shape; options under ``model.options`` become its keyword arguments.
# Before the first step the trainer traces the model once with a particles
# dimension on the left, as evaluation will: a decoder output reshaped with
# ``reshape(-1, ...)`` would fail here with a one-line message, not later.
@pyrovae.register_model("tutorial_vae")
def build_tutorial_vae(config, data_shape, hidden_dim=64):
    return VAE(config.latent_dim, hidden_dim)


cfg = pyrovae.load_config({
    "data": {"name": "synthetic", "binarize": "static", "val_size": 200},
    "model": {"name": "tutorial_vae", "latent_dim": 2},
    "train": {"epochs": 15, "batch_size": 50, "progress": False, "optimizer": {"name": "adam", "lr": 3e-3}},
})
pyro.set_rng_seed(0)
splits = pyrovae.load_data(cfg.data)
vae = pyrovae.build_model(cfg.model, splits.data_shape)
history = pyrovae.train(vae, splits, cfg)
print(f"validation loss after {len(history)} epochs: {history[-1]['val_loss']:.2f} nats per image")

# %%
# Score it
# --------
# The log-likelihood of each test image by importance sampling with the
# guide as proposal (K = 200), next to the ELBO: the gap is what the
# bound leaves out.
x_test, labels = splits.test[0][:200], splits.test[1][:200]
log_px = pyrovae.log_likelihood(vae, x_test, num_samples=200)
print(f"test log p(x) ~ {log_px.mean():.2f} nats per image")
summary = pyrovae.evaluate(vae, x_test, num_samples=200).summary()
print(f"log p(x) {summary['log_likelihood']:.2f}, ELBO {summary['elbo']:.2f} "
      f"(reconstruction {summary['reconstruction']:.2f}, KL {summary['kl']:.2f}), "
      f"effective sample size {summary['ess']:.0f} of {summary['num_samples']}")

# %%
# ``train.beta`` other than 1 needs a ``beta`` keyword: this model has none,
# so the trainer refuses before it starts, and says how to add it.
try:
    pyrovae.Trainer(vae, splits, cfg.override(["train.beta=0.5"]))
except pyrovae.ConfigError as error:
    print(error)

# %%
# Capabilities: figures and imputation
# ------------------------------------
# Figures and imputation ask the model for optional capabilities by name. A
# subclass adds them: ``data_shape``, ``latent_dim``, ``encode``,
# ``decode_mean``, ``prior_draws``, ``sample``, ``reconstruct`` and a
# ``likelihood`` with the value range of the pixels. Imputation runs the
# model with ``obs_mask`` (True = observed): the model scores the observed
# pixels, draws the hidden ones, and records their mean as ``x_mean``. The
# guide stays the tutorial's: only the model takes ``obs_mask``, so only
# the model is given it.
class BinaryPixels:
    """The observation model: independent Bernoulli pixels with means ``params``."""

    value_range = (0.0, 1.0)

    def dist(self, params):
        return dist.Bernoulli(params, validate_args=False).to_event(3)

    def mean(self, params):
        return params


class CapableVAE(VAE):
    likelihood = BinaryPixels()

    def __init__(self, data_shape, z_dim=2, hidden_dim=64):
        super().__init__(z_dim, hidden_dim)
        self.data_shape, self.latent_dim = tuple(data_shape), z_dim

    def model(self, x, obs_mask=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decode_mean(z)  # (..., 1, 8, 8): any leading dims broadcast
            # the site "x"; with obs_mask, the sites x_observed and x_unobserved, and x_mean
            pyrovae.observe(self.likelihood, loc_img, x, obs_mask)

    def encode(self, x):
        return dist.Normal(*self.encoder(x)).to_event(1)  # q(z | x)

    def decode_mean(self, z):
        return self.decoder(z).reshape(z.shape[:-1] + self.data_shape)

    def prior_draws(self, n):
        return torch.randn(n, self.z_dim)

    def sample(self, n, mean=True):
        means = self.decode_mean(self.prior_draws(n))
        return means if mean else torch.bernoulli(means)

    def reconstruct(self, x):
        return self.decode_mean(self.encode(x).mean)


@pyrovae.register_model("capable_vae")
def build_capable_vae(config, data_shape, hidden_dim=64):
    return CapableVAE(data_shape, config.latent_dim, hidden_dim)


cfg = cfg.override(["model.name=capable_vae"])
pyro.set_rng_seed(0)
vae = pyrovae.build_model(cfg.model, splits.data_shape)
history = pyrovae.train(vae, splits, cfg)

with torch.no_grad():
    fig_samples = samples_figure(vae.sample(64), nrow=8)
    fig_reconstructions = reconstruction_figure(x_test[:16], vae.reconstruct(x_test[:16]), nrow=8)

# %%
# Every figure of ``pyrovae plot`` that these capabilities allow; each one
# that does not apply says why.
with tempfile.TemporaryDirectory() as out:
    written = write_plots(PlotInputs(vae, x_test, labels, records=history), out)
for name, result in written.items():
    print(f"{name:16s} {'written' if not isinstance(result, str) else result}")

# %%
# Imputation: the left half of each test image hidden, filled in by
# importance sampling with the guide as proposal.
mask = torch.ones(16, *splits.data_shape, dtype=torch.bool)
mask[..., :4] = False  # True = observed
result = pyrovae.impute(vae, x_test[:16], mask, method={"name": "importance", "num_particles": 100})
fig_imputation = imputation_figure(x_test[:16], mask, result.mean)

# %%
# The models registered here are for this example only.
pyrovae.models.models.unregister("tutorial_vae")
pyrovae.models.models.unregister("capable_vae")
