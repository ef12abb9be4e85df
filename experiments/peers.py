"""pyrovae side by side with its peers at an equal budget.

Three implementations of the same model, trained for the same number of
epochs on the same data with the same optimizer settings:

- ``pyrovae``: the library (:class:`pyrovae.Trainer`, config below);
- ``pyro``: a stock-Pyro loop written the way Pyro's VAE tutorial writes
  it: ``nn.Module`` encoder and decoder, ``model``/``guide`` methods with
  ``pyro.module`` and ``pyro.plate("data")``, ``SVI`` with
  ``pyro.optim.Adam`` and ``Trace_ELBO``, a torch ``DataLoader``, and
  ``pyro.enable_validation(True)`` as the tutorial sets it;
- ``pythae``: ``pythae.models.VAE`` (``reconstruction_loss="bce"``) with
  the same networks, trained by pythae's ``BaseTrainer``.

Model: 784-200-200-50 tanh MLPs, diagonal Gaussian q(z|x), N(0, I) prior,
Bernoulli likelihood (Burda et al. 2015, one stochastic layer). Data: MNIST
binarized once (static; pythae's trainer takes a fixed data set, so all
three get the same binary training images), 60k train, 10k test (binarized
with a fixed seed). Adam, lr 1e-3, batch 100, seed 0.

Each implementation runs in its own subprocess, so its peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, read right after
training, before evaluation) is its own. Test NLL: pyrovae's evaluator
(:func:`pyrovae.log_likelihood`, IS with K samples) for all three: the
Pyro tutorial model is scored through its own ``model``/``guide``; pythae's
networks are scored through a Pyro ``model``/``guide`` wrapper around its
encoder and decoder. pythae's own ``get_nll`` is reported too (on
``--pythae-nll-limit`` test points; it loops over points one by one).

Run::

    python experiments/peers.py --epochs 5                       # K=5000 on all 10k test points
    python experiments/peers.py --epochs 3 --test-limit 2000     # quicker

Writes ``experiments/results/peers.json`` and ``peers.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, also when loaded by path
from provenance import cpu_name, git_commit, load_average  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEERS = ("pyrovae", "pyro", "pythae")

LATENT, HIDDEN, PIXELS = 50, 200, 784


def data_config():
    return {"name": "mnist", "download": False, "binarize": "static", "val_size": 0}


def write_data(path, subset=None):
    """Binarize MNIST once with pyrovae's loader and store it as uint8, so the
    workers load 60 MB instead of decoding the source (whose peak memory
    would otherwise hide the training's)."""
    import numpy as np

    from pyrovae import load_config, load_data

    cfg = load_config({"data": {**data_config(), "subset": subset}})
    splits = load_data(cfg.data)
    x_train = splits.train[0].reshape(-1, PIXELS).numpy().astype(np.uint8)
    x_test = splits.test[0].reshape(-1, PIXELS).numpy().astype(np.uint8)
    np.savez(path, train=x_train, test=x_test)
    return len(x_train), len(x_test)


def load_splits(path):
    import numpy as np
    import torch

    with np.load(path) as d:
        return torch.from_numpy(d["train"]).float(), torch.from_numpy(d["test"]).float()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# -- the three trainers ------------------------------------------------------------


def train_pyrovae(x_train, args):
    import pyro

    from pyrovae import VAE, Trainer, load_config

    cfg = load_config({
        "data": data_config(),
        "model": {"latent_dim": LATENT,
                  "encoder": {"name": "mlp", "hidden": [HIDDEN, HIDDEN], "activation": "tanh"},
                  "decoder": {"name": "mlp", "hidden": [HIDDEN, HIDDEN], "activation": "tanh"},
                  "likelihood": "bernoulli", "guide": "normal", "prior": "standard_normal"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": {"name": "adam", "lr": args.lr},
                  "seed": args.seed, "progress": False},
    })
    pyro.set_rng_seed(args.seed)
    vae = VAE.from_config(cfg, data_shape=(PIXELS,))

    class EpochCPU:
        marks: list  # process CPU time before the first epoch and after each one

        def on_epoch_end(self, trainer, record):
            self.marks.append(time.process_time())

        def on_train_end(self, trainer):
            pass

    cpu = EpochCPU()
    trainer = Trainer(vae, x_train, cfg, dynamic_binarize=False, callbacks=[cpu])
    cpu.marks = [time.process_time()]  # after the trainer's setup, like the other two
    history = trainer.fit()
    seconds = [r["seconds"] for r in history]
    losses = [r["train_loss"] for r in history]
    return vae, seconds, losses, {"epoch_cpu_seconds": [b - a for a, b in zip(cpu.marks, cpu.marks[1:])]}


def make_tutorial_vae():
    """The Pyro VAE tutorial's classes, with this benchmark's networks."""
    import torch
    from torch import nn

    import pyro
    import pyro.distributions as dist

    class Encoder(nn.Module):
        def __init__(self, z_dim, hidden_dim):
            super().__init__()
            self.fc1 = nn.Linear(PIXELS, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, hidden_dim)
            self.fc21 = nn.Linear(hidden_dim, z_dim)
            self.fc22 = nn.Linear(hidden_dim, z_dim)
            self.act = nn.Tanh()

        def forward(self, x):
            x = x.reshape(-1, PIXELS)
            hidden = self.act(self.fc2(self.act(self.fc1(x))))
            z_loc = self.fc21(hidden)
            z_scale = torch.exp(self.fc22(hidden))
            return z_loc, z_scale

    class Decoder(nn.Module):
        def __init__(self, z_dim, hidden_dim):
            super().__init__()
            self.fc1 = nn.Linear(z_dim, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, hidden_dim)
            self.fc3 = nn.Linear(hidden_dim, PIXELS)
            self.act = nn.Tanh()

        def forward(self, z):
            hidden = self.act(self.fc2(self.act(self.fc1(z))))
            return torch.sigmoid(self.fc3(hidden))

    class TutorialVAE(nn.Module):
        def __init__(self, z_dim=LATENT, hidden_dim=HIDDEN):
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

    return TutorialVAE()


def train_pyro(x_train, args):
    import torch

    import pyro
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    pyro.enable_validation(True)  # as the tutorial does
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    vae = make_tutorial_vae()
    svi = SVI(vae.model, vae.guide, Adam({"lr": args.lr}), loss=Trace_ELBO())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train), batch_size=args.batch_size, shuffle=True)
    seconds, cpu, losses = [], [], []
    for epoch in range(args.epochs):
        start, cpu_start = time.perf_counter(), time.process_time()
        epoch_loss = 0.0
        for (x,) in loader:
            epoch_loss += svi.step(x)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        losses.append(epoch_loss / len(x_train))
    return vae, seconds, losses, {"epoch_cpu_seconds": cpu}


def make_pythae_vae():
    import torch
    from torch import nn
    from pythae.models import VAE as PythaeVAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(PIXELS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh())
            self.mu = nn.Linear(HIDDEN, LATENT)
            self.log_var = nn.Linear(HIDDEN, LATENT)

        def forward(self, x):
            h = self.net(x.reshape(-1, PIXELS))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                                     nn.Linear(HIDDEN, PIXELS))

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(*z.shape[:-1], PIXELS))

    config = VAEConfig(input_dim=(PIXELS,), latent_dim=LATENT, reconstruction_loss="bce")
    return PythaeVAE(config, encoder=Encoder(), decoder=Decoder())


def train_pythae(x_train, args):
    import torch
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    torch.manual_seed(args.seed)
    model = make_pythae_vae()
    marks = []

    class EpochTimer(TrainingCallback):
        def on_epoch_begin(self, training_config, **kwargs):
            marks.append(("begin", time.perf_counter(), time.process_time()))

        def on_epoch_end(self, training_config, **kwargs):
            marks.append(("end", time.perf_counter(), time.process_time()))

    out = str(Path(args.work_dir) / "pythae")
    Path(out).mkdir(parents=True, exist_ok=True)
    config = BaseTrainerConfig(
        output_dir=out, num_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        optimizer_cls="Adam", seed=args.seed, no_cuda=True, steps_saving=None,
    )
    dataset = BaseDataset(x_train, torch.zeros(len(x_train)))
    trainer = BaseTrainer(model, train_dataset=dataset, training_config=config, callbacks=[EpochTimer()])
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    begins = [m[1:] for m in marks if m[0] == "begin"]
    ends = [m[1:] for m in marks if m[0] == "end"]
    if len(begins) != args.epochs or len(ends) != args.epochs:
        raise RuntimeError(f"pythae's epoch callbacks fired {len(begins)}/{len(ends)} times for {args.epochs} epochs")
    seconds = [e[0] - b[0] for b, e in zip(begins, ends)]
    cpu = [e[1] - b[1] for b, e in zip(begins, ends)]
    model.eval()
    return model, seconds, [], {"pythae_train_call_seconds": round(total, 2), "pythae_output_dir": out,
                                "epoch_cpu_seconds": cpu}


# -- scoring -------------------------------------------------------------------------


class PythaeAsPyro:
    """pythae's encoder and decoder as a Pyro model/guide, for pyrovae's evaluator."""

    def __init__(self, model):
        self.model_ = model

    def eval(self):
        self.model_.eval()

    def train(self, mode=True):
        self.model_.train(mode)

    def model(self, x):
        import pyro
        import pyro.distributions as dist

        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            probs = self.model_.decoder(z)["reconstruction"]
            pyro.sample("x", dist.Bernoulli(probs=probs, validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        import pyro
        import pyro.distributions as dist

        out = self.model_.encoder(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(out.embedding, (0.5 * out.log_covariance).exp()).to_event(1))


def score(name, model, x_test, args):
    import torch

    from pyrovae import log_likelihood

    target = PythaeAsPyro(model) if name == "pythae" else model
    start = time.perf_counter()
    ll = log_likelihood(target, x_test, args.iw_samples, seed=0)
    out = {"nll": -float(ll.mean()), "nll_sem": float(ll.std() / len(ll) ** 0.5), "eval_seconds": round(time.perf_counter() - start, 1)}
    if name == "pythae" and args.pythae_nll_limit:
        n = min(args.pythae_nll_limit, len(x_test))
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.no_grad():
            # pythae's get_nll returns the mean log p(x) over the points it is given
            value = model.get_nll(x_test[:n], n_samples=args.iw_samples, batch_size=min(args.iw_samples, 1000))
        out["pythae_get_nll"] = -float(value)
        out["pythae_get_nll_points"] = n
        out["pythae_get_nll_seconds"] = round(time.perf_counter() - start, 1)
        ll_n = ll[:n]
        out["pyrovae_eval_nll_same_points"] = -float(ll_n.mean())
    return out


def worker(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    x_train, x_test = load_splits(args.data)
    if args.test_limit:
        x_test = x_test[: args.test_limit]
    rss_before = peak_rss_mb()
    trainer = {"pyrovae": train_pyrovae, "pyro": train_pyro, "pythae": train_pythae}[args.worker]
    start, cpu_start = time.perf_counter(), time.process_time()
    model, seconds, losses, extra = trainer(x_train, args)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rss = peak_rss_mb()
    record = {
        "name": args.worker,
        "epochs": args.epochs,
        "epoch_seconds": [round(s, 2) for s in seconds],
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "train_wall_seconds": round(wall, 2),
        # CPU seconds of this process (all its threads) within the epochs:
        # what the implementation itself costs, whatever else the machine runs
        "train_cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_epoch": sum(extra["epoch_cpu_seconds"]) / args.epochs,
        "train_losses": losses,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb_after_data": round(rss_before, 1),
        "peak_rss_mb": round(rss, 1),
        **extra,
    }
    if args.iw_samples > 0:  # 0: a timing-only repeat
        record.update(score(args.worker, model, x_test, args))
        record["test_points"] = len(x_test)
    Path(args.out).write_text(json.dumps(record, indent=2))
    return 0


# -- the driver ------------------------------------------------------------------------


def machine(threads):
    return {"cpu_count": os.cpu_count(), "cpu": cpu_name(), "gpu": None, "torch_threads": threads,
            "python": platform.python_version()}


def versions():
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "pyro-ppl", "pythae", "pyrovae"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def markdown(record) -> str:
    a = record["args"]
    rounds = a.get("repeats", 1)
    head = (f"Equal budget: {a['epochs']} epochs each, batch {a['batch_size']}, Adam lr {a['lr']}, "
            f"784-200-200-50 tanh Bernoulli VAE, statically binarized MNIST ({record['train_points']} train); "
            f"test NLL by pyrovae's IS evaluator, K={a['iw_samples']} on {record['test_points']} test points. "
            f"Times are medians over {rounds} training run{'s' if rounds > 1 else ''} of each implementation, "
            "interleaved round robin; CPU s / epoch is the worker process's CPU time within its epochs "
            "(between the same marks as wall s / epoch), which other jobs on the machine do not inflate.")
    lines = [head, "",
             "| implementation | test NLL (pyrovae IS) | pythae get_nll | wall s / epoch | CPU s / epoch | CPU vs pyrovae "
             "| peak RSS (MB) | RSS added by training (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def median(r, key):
        return r.get(f"median_{key}", r.get(key))

    base = next((median(r, "cpu_seconds_per_epoch") for r in record["peers"] if r["name"] == "pyrovae" and "error" not in r), None)
    label = {"pyrovae": "pyrovae (Trainer)", "pyro": "stock Pyro (tutorial loop: SVI + pyro.optim.Adam)",
             "pythae": "pythae VAE (BaseTrainer)"}
    for r in record["peers"]:
        if "error" in r:
            lines.append(f"| {label.get(r['name'], r['name'])} | failed: {r['error']} | | | | | | |")
            continue
        get_nll = (f"{r['pythae_get_nll']:.2f} ({r['pythae_get_nll_points']} pts; pyrovae on them: "
                   f"{r['pyrovae_eval_nll_same_points']:.2f})") if "pythae_get_nll" in r else "—"
        cpu = median(r, "cpu_seconds_per_epoch")
        ratio = f"{cpu / base:.2f}×" if base and cpu is not None else "—"
        nll = f"{r['nll']:.2f} ± {r['nll_sem']:.2f}" if "nll" in r else "—"
        cpu_txt = f"{cpu:.2f}" if cpu is not None else "—"
        lines.append(f"| {label.get(r['name'], r['name'])} | {nll} | {get_nll} "
                     f"| {median(r, 'seconds_per_epoch'):.2f} | {cpu_txt} | {ratio} | {r['peak_rss_mb']:.0f} "
                     f"| {r['peak_rss_mb'] - r['peak_rss_mb_after_data']:.0f} |")
    m = record["machine"]
    lines += ["", f"Machine: {m['cpu_count']} CPU cores ({m['cpu']}), no GPU, {m['torch_threads']} torch threads; "
                  f"versions {', '.join(f'{k} {v}' for k, v in record['versions'].items())}; "
                  f"load average {record['load_average']['before']} before, {record['load_average']['after']} after. "
                  "± is the standard error over test points. Peak RSS is ru_maxrss of each worker process "
                  "after training (torch, numpy and the uint8 data loaded before training are included; "
                  "the last column is the rise during training)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iw-samples", "-k", type=int, default=5000)
    p.add_argument("--test-limit", type=int, default=None, help="score only the first N test points")
    p.add_argument("--pythae-nll-limit", type=int, default=500, help="test points for pythae's own get_nll (0: skip)")
    p.add_argument("--subset", type=int, default=None, help="train on the first N points only (smoke tests)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in each worker (default 1: on a shared 2-core machine more threads thrash)")
    p.add_argument("--only", nargs="+", choices=PEERS, default=list(PEERS))
    p.add_argument("--repeats", type=int, default=1,
                   help="train each implementation this many times, round robin, and report median times "
                        "(the first round alone is scored)")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--work-dir", default=str(HERE.parent / "runs" / "peers"), help="scratch files (pythae's output_dir)")
    p.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prepare:
        n_train, n_test = write_data(args.data, args.subset)
        Path(args.data + ".json").write_text(json.dumps({"train": n_train, "test": n_test}))
        return 0
    if args.worker:
        return worker(args)

    # The driver stays small: on Linux a child's ru_maxrss starts from its
    # parent's resident size at fork, so the data is prepared in a subprocess
    # too, and torch is never imported here.
    load_before = load_average()
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    args.data = str(Path(args.work_dir) / "data.npz")
    prep = [sys.executable, __file__, "--prepare", "--data", args.data] + (["--subset", str(args.subset)] if args.subset else [])
    subprocess.run(prep, check=True)
    with open(args.data + ".json") as f:
        train_points = json.load(f)["train"]
    peers = {name: None for name in args.only}
    timings = {name: [] for name in args.only}
    for round_ in range(args.repeats):
        # each round starts with another implementation, so slow drifts in the
        # machine's load fall on all of them alike
        order = args.only[round_ % len(args.only):] + args.only[: round_ % len(args.only)]
        for name in order:
            if round_ and peers[name] is not None and "error" in peers[name]:
                continue
            out = str(Path(args.work_dir) / f"{name}.json")
            cmd = [sys.executable, __file__, "--worker", name, "--out", out, "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
                   "--iw-samples", str(args.iw_samples if round_ == 0 else 0),
                   "--pythae-nll-limit", str(args.pythae_nll_limit), "--work-dir", args.work_dir, "--data", args.data]
            for flag, value in (("--test-limit", args.test_limit), ("--subset", args.subset), ("--threads", args.threads)):
                if value:
                    cmd += [flag, str(value)]
            print(f"[{time.strftime('%H:%M:%S')}] round {round_ + 1}/{args.repeats}: {name} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or "").strip().splitlines()[-1:] or ["unknown error"]
                print(proc.stderr[-3000:], file=sys.stderr)
                peers[name] = {"name": name, "error": tail[0][:300]}
                continue
            r = json.loads(Path(out).read_text())
            os.unlink(out)
            timings[name].append({"wall": r["seconds_per_epoch"], "cpu": r["cpu_seconds_per_epoch"]})
            if round_ == 0:
                peers[name] = r
            print(f"  {name}: " + (f"NLL {r['nll']:.2f}, " if "nll" in r else "")
                  + f"{r['seconds_per_epoch']:.1f} s/epoch wall, {r['cpu_seconds_per_epoch']:.1f} CPU s/epoch, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    for name, r in peers.items():
        if r is not None and "error" not in r:
            r["rounds"] = timings[name]
            r["median_seconds_per_epoch"] = statistics.median(t["wall"] for t in timings[name])
            r["median_cpu_seconds_per_epoch"] = statistics.median(t["cpu"] for t in timings[name])
    peers = [r for r in peers.values() if r is not None]
    record = {
        "kind": "peers",
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "out", "out_dir", "work_dir", "data")},
        "train_points": train_points,
        "test_points": next((r["test_points"] for r in peers if "test_points" in r), None),
        "peers": peers,
        "machine": machine(args.threads),
        "versions": versions(),
        "load_average": {"before": load_before, "after": load_average()},
        "git": git_commit(),
        "platform": platform.platform(),
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "peers.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    (out_dir / "peers.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
