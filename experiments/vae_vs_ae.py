"""VAE vs. plain autoencoder on binarized MNIST, with the same networks.

Trains ``configs/vae_mnist.yaml`` (Gaussian guide, beta = 1) and
``configs/ae_mnist.yaml`` (point-mass guide, beta = 0: the autoencoder) and
compares them on the test set:

- reconstruction: -log p(x | z = code(x)) in nats per image (binary
  cross-entropy summed over pixels) and the pixel MSE of E[x | code(x)];
- samples: decoder means E[x|z] for z from the model's prior N(0, I), and
  for z from a full-covariance Gaussian fitted to the training codes (the
  "ex-post" density of Ghosh et al. 2020, the fair way to sample an AE).
  Scored with a small MLP classifier trained here on grey MNIST: the
  Fréchet distance between its 256-D hidden features of 5000 samples and of
  5000 grey test images (FD; lower is better; two random halves of the
  test set give the floor), and its mean top-class probability
  (confidence). Decoder means are smooth where real digits are crisp, and
  the FD sees that too;
- imputation: the central 14x14 pixels, or a random half of the pixels,
  hidden in 1000 binarized test images; importance resampling with the
  guide as proposal (100 particles; for the AE's point-mass guide that is
  decoding the code of the mean-filled input); MSE of the estimated pixel
  probabilities against the binary truth on the hidden pixels, against
  mean imputation and zero fill;
- latent probe: k-NN (k=5) and logistic-regression accuracy and k-means
  NMI / purity on the latent means (10k training codes, 10k test codes).

Writes a side-by-side figure, a markdown table and a JSON file of every
number into experiments/results/. Run from the repository root (about 3
minutes on 2 CPU cores)::

    python experiments/vae_vs_ae.py --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import pyro

from pyrovae import VAE, load_config, load_data, load_run
from pyrovae.infer.impute import imputation_errors, impute, make_mask
from pyrovae.infer.seeds import seeded
from pyrovae.report.latents import encode_data, prior_draws
from pyrovae.report.plots import save_figure, side_by_side_figure
from pyrovae.report.probe import latent_probe
from pyrovae.runs import RunDir
from pyrovae.training.callbacks import callbacks_from_config
from pyrovae.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
MODELS = {"VAE": HERE / "configs" / "vae_mnist.yaml", "AE": HERE / "configs" / "ae_mnist.yaml"}
IMPUTE_MASKS = ("center", "random:0.5")


# -- training -------------------------------------------------------------------


def train_or_load(name, config_path, out_dir, overrides, reuse):
    """Train one model into ``out_dir/<name>`` (or load it with ``--reuse``)."""
    run_path = out_dir / name.lower()
    cfg = load_config(config_path, overrides)
    if not (reuse and (run_path / "checkpoint.pt").exists()):
        run = RunDir.create(run_path, overwrite=True)
        cfg.to_yaml(run.config)
        pyro.set_rng_seed(cfg.train.seed)
        splits = load_data(cfg.data)
        vae = VAE.from_config(cfg, data_shape=splits.data_shape)
        Trainer(vae, splits, cfg, run_dir=run.path, callbacks=callbacks_from_config(cfg, run.path)).fit()
    vae, cfg, _ = load_run(run_path)
    history = RunDir(run_path).read_metrics()
    seconds = sum(r["seconds"] for r in history)
    print(f"{name}: {len(history)} epochs in {seconds:.0f}s, last train loss {history[-1]['train_loss']:.2f}")
    return vae, cfg, seconds


# -- the sample-quality classifier ----------------------------------------------


class Classifier(nn.Module):
    """784-256-10 MLP; ``features`` are its 256 hidden units."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU())
        self.out = nn.Linear(256, 10)

    def features(self, x):
        return self.hidden(x)

    def forward(self, x):
        return self.out(self.hidden(x))


def train_classifier(x, y, epochs=3, seed=0):
    """Train on grey images ``x`` (N, 1, 28, 28) in [0, 1] with labels ``y``."""
    with seeded(seed):
        net = Classifier()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for start in range(0, len(x), 128):
                idx = order[start : start + 128]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


@torch.no_grad()
def feature_stats(net, x):
    """Mean and covariance of the classifier's features, and its mean top-class probability."""
    f = torch.cat([net.features(x[i : i + 1000]) for i in range(0, len(x), 1000)]).double()
    probs = torch.cat([net(x[i : i + 1000]).softmax(-1) for i in range(0, len(x), 1000)])
    return f.mean(0), torch.cov(f.T), float(probs.max(-1).values.mean())


def _sqrtm_psd(m):
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a, b):
    """Fréchet distance between Gaussians ``a = (mean, cov)`` and ``b``."""
    (mu1, s1), (mu2, s2) = a, b
    root = _sqrtm_psd(s1)
    cross = torch.linalg.eigvalsh(root @ s2 @ root).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross)


# -- per-model measurements ------------------------------------------------------


@torch.no_grad()
def reconstruction(vae, x):
    """-log p(x | code(x)) in nats per image, and the pixel MSE of E[x | code(x)]."""
    nll, sq = 0.0, 0.0
    for start in range(0, len(x), 1000):
        xb = x[start : start + 1000]
        z = vae.code(xb)
        nll += float(-vae.decode(z).log_prob(xb).sum())
        sq += float((vae.likelihood.mean(vae.decoder(z)) - xb).pow(2).mean(tuple(range(1, xb.dim()))).sum())
    return nll / len(x), sq / len(x)


@torch.no_grad()
def samples_from(vae, z):
    return torch.cat([vae.likelihood.mean(vae.decoder(z[i : i + 1000])) for i in range(0, len(z), 1000)])


@torch.no_grad()
def fitted_gaussian_codes(train_codes, n, seed):
    """``n`` draws from a full-covariance Gaussian fitted to ``train_codes``."""
    mean, cov = train_codes.mean(0), torch.cov(train_codes.T)
    cov = cov + 1e-5 * torch.eye(len(mean))
    with seeded(seed):
        return torch.distributions.MultivariateNormal(mean, cov).sample((n,))


def evaluate_model(name, vae, data, classifier, ref_stats, args):
    x_test, y_test = data["test"]
    x_train, y_train = data["train"]
    result = {}
    result["recon_nll"], result["recon_mse"] = reconstruction(vae, x_test)

    n = args.num_samples
    with seeded(args.seed):
        prior_z = prior_draws(vae, n)
    train_codes = encode_data(vae, x_train[: args.probe_train])["mean"]
    test_codes = encode_data(vae, x_test)["mean"]
    fitted_z = fitted_gaussian_codes(train_codes, n, args.seed)
    images = {}
    for key, z in (("prior", prior_z), ("fitted", fitted_z)):
        s = samples_from(vae, z)
        mu, cov, confidence = feature_stats(classifier, s)
        result[f"fd_{key}"] = frechet_distance((mu, cov), ref_stats)
        result[f"confidence_{key}"] = confidence
        images[key] = s[:16]

    k = args.impute_points
    fill = data["train_mean"]
    for spec in IMPUTE_MASKS:
        mask = make_mask(spec, k, vae.data_shape, seed=args.seed)
        imp = impute(vae, x_test[:k], mask, method={"name": "importance", "num_particles": args.particles}, fill=fill, seed=args.seed)
        result[f"impute_{spec}"] = imputation_errors(x_test[:k], imp.mean, mask, fill)
        if spec == "center":
            images["imputed"] = imp.mean[:16]

    result.update(latent_probe(train_codes, y_train[: args.probe_train], test_codes, y_test, seed=args.seed))
    with torch.no_grad():
        images["reconstructions"] = vae.reconstruct(x_test[:16])
    print(f"{name}: " + json.dumps(result))
    return result, images


# -- output ----------------------------------------------------------------------


def table(results, reference, epochs):
    v, a = results["VAE"], results["AE"]

    def row(label, key, fmt, ref=""):
        return f"| {label} | {fmt.format(v[key])} | {fmt.format(a[key])} | {ref} |"

    def imputation_row(what, spec):
        e_v, e_a = v[f"impute_{spec}"], a[f"impute_{spec}"]
        return (f"| imputation MSE on hidden pixels, {what} hidden ↓ | {e_v['mse_imputation']:.4f} | {e_a['mse_imputation']:.4f} | "
                f"mean imputation {e_v['mse_mean_imputation']:.4f}; zero fill {e_v['mse_zero_filled']:.4f} |")

    lines = [
        f"Binarized MNIST, MLP 784-256-256-16 encoder and decoder for both, {epochs} epochs each; test set.",
        "",
        "| | VAE | AE | reference |",
        "|---|---|---|---|",
        row("reconstruction −log p(x given code), nats/image ↓", "recon_nll", "{:.1f}"),
        row("reconstruction pixel MSE ↓", "recon_mse", "{:.4f}"),
        row("sample FD, z ~ N(0, I) ↓", "fd_prior", "{:.1f}", f"test vs. test: {reference['fd_test']:.1f}"),
        row("sample FD, z ~ Gaussian fitted to codes ↓", "fd_fitted", "{:.1f}"),
        row("classifier confidence on N(0, I) samples ↑", "confidence_prior", "{:.3f}", f"test images: {reference['confidence_test']:.3f}"),
        imputation_row("centre 14×14", "center"),
        imputation_row("random 50%", "random:0.5"),
        row("k-NN accuracy (k = 5) ↑", "knn_accuracy", "{:.3f}"),
        row("logistic-regression accuracy ↑", "logreg_accuracy", "{:.3f}"),
        row("k-means NMI ↑", "kmeans_nmi", "{:.3f}"),
        row("k-means purity ↑", "kmeans_purity", "{:.3f}"),
    ]
    return "\n".join(lines) + "\n"


def figure(images, data):
    x_test = data["test"][0]
    masked = x_test[:16].clone()
    masked[~make_mask("center", 16, masked.shape[1:])] = 0.5
    panels = {
        "test data": {"reconstructions": x_test[:16], "samples, z ~ N(0, I)": x_test[16:32],
                 "samples, z ~ fitted Gaussian": x_test[32:48], "centre imputation": masked},
    }
    for name, imgs in images.items():
        panels[name] = {"reconstructions": imgs["reconstructions"], "samples, z ~ N(0, I)": imgs["prior"],
                        "samples, z ~ fitted Gaussian": imgs["fitted"], "centre imputation": imgs["imputed"]}
    return side_by_side_figure(panels, nrow=4, title="VAE vs. autoencoder, same networks (left: test images for reference; masked inputs)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, help="override train.epochs of both configs")
    p.add_argument("--out", type=Path, default=Path("runs/vae_vs_ae"), help="run directories (default runs/vae_vs_ae)")
    p.add_argument("--results", type=Path, default=HERE / "results", help="figure, table and JSON (default experiments/results)")
    p.add_argument("--reuse", action="store_true", help="load runs already in --out instead of training")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--impute-points", type=int, default=1000)
    p.add_argument("--particles", type=int, default=100)
    p.add_argument("--probe-train", type=int, default=10000, help="training codes for the probes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"train.epochs={args.epochs}"] if args.epochs is not None else []

    start = time.perf_counter()
    models, seconds = {}, {}
    for name, path in MODELS.items():
        models[name], cfg, seconds[name] = train_or_load(name, path, args.out, overrides, args.reuse)
        models[name].eval()
    epochs = cfg.train.epochs

    splits = load_data(cfg.data)  # binarized test set (fixed seed), as the models saw it
    grey = load_data(dataclasses.replace(cfg.data, binarize="none"))
    # training data is binarized afresh every batch; the probes and the fitted
    # Gaussian use one fixed binarization of the first --probe-train points
    x_train = torch.bernoulli(splits.train[0][: args.probe_train], generator=torch.Generator().manual_seed(args.seed))
    data = {"train": (x_train, splits.train[1][: args.probe_train]), "test": splits.test, "train_mean": splits.train[0].mean(0)}
    classifier = train_classifier(*grey.train, seed=args.seed)
    x_grey = grey.test[0]
    accuracy = float((classifier(x_grey).argmax(-1) == grey.test[1]).float().mean())
    # two random halves of the test set (its first and second halves come
    # from different writers): the reference, and the floor of the FD
    order = torch.randperm(len(x_grey), generator=torch.Generator().manual_seed(args.seed))
    half = len(x_grey) // 2
    n = min(args.num_samples, half)
    ref_a, ref_b = feature_stats(classifier, x_grey[order[:n]]), feature_stats(classifier, x_grey[order[half : half + n]])
    reference = {"classifier_accuracy": accuracy, "fd_test": frechet_distance(ref_a[:2], ref_b[:2]), "confidence_test": ref_a[2]}
    print(f"classifier test accuracy {accuracy:.3f}; FD between test halves {reference['fd_test']:.2f}")

    results, images = {}, {}
    for name, vae in models.items():
        results[name], images[name] = evaluate_model(name, vae, data, classifier, ref_a[:2], args)

    args.results.mkdir(parents=True, exist_ok=True)
    md = table(results, reference, epochs)
    (args.results / "vae_vs_ae.md").write_text(md)
    save_figure(figure(images, data), args.results / "vae_vs_ae.png")
    (args.results / "vae_vs_ae.json").write_text(json.dumps(
        {"epochs": epochs, "train_seconds": seconds, "reference": reference, "results": results,
         "total_seconds": time.perf_counter() - start}, indent=2) + "\n")
    print(md)
    print(f"wrote {args.results / 'vae_vs_ae.png'}, vae_vs_ae.md and vae_vs_ae.json in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
