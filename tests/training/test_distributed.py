"""Data-parallel training on CPU with two gloo processes.

Each objective's step on two processes is checked against one process on
the concatenated batch, and m2's partly labelled objective on equal and
uneven shares against its hand-written estimate on the whole batch.

One ``torch.multiprocessing`` spawn runs every two-process check (starting
processes is the slow part); a ``torchrun`` launch then resumes the run that
the spawned processes wrote through the CLI.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.training import distributed
from pyrovae.data import Batches, load_data
from pyrovae.infer.objectives import build_objective
from pyrovae.runs import load_checkpoint
from pyrovae.training.strategy import DataParallel, SingleProcess
from pyrovae.training.trainer import Trainer

from helpers import assert_identical, setup, tiny_config, without_seconds

WORLD = 2
TESTS = Path(__file__).parent
ROOT_TESTS = TESTS.parent  # helpers.py, tiny_run.py


class FixedNoiseNormal(dist.Normal):
    """A Normal whose reparameterized draw is ``loc + scale * eps`` with a
    given ``eps``: the same noise for a data point whichever process draws it.

    ``eps`` holds one noise tensor per particle, shape ``(P, *loc.shape)``.
    Expanded to a particles plate of K (the vectorized particles of an ELBO or
    of IWAE), particle k draws with ``eps[k]``; unexpanded, the draw uses ``eps[0]``.
    """

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale)
        assert eps.shape[1:] == self.loc.shape, (eps.shape, self.loc.shape)
        self.eps = eps

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        extra = len(shape) - self.loc.dim()
        if extra == 0:
            eps = self.eps.expand(len(self.eps), *shape)
        else:  # new leading (particle) dims: particle k gets eps[k]
            assert extra == 1 and shape[0] <= len(self.eps), (shape, self.eps.shape)
            eps = self.eps[: shape[0]].expand(shape).unsqueeze(0)
        return FixedNoiseNormal(self.loc.expand(shape), self.scale.expand(shape), eps)

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.scale * self.eps[0]


#: particles whose noise fix_noise prepares (at least the objectives' num_particles)
MAX_PARTICLES = 4


def fix_noise(vae):
    """Make q(z|x)'s draw a fixed function of x and the particle: eps_k = x @ R_k
    (R_k seeded, one matrix per particle), so particles draw different noise,
    a data point draws the same noise in any process, and each rank's points
    draw their own."""
    d = math.prod(vae.data_shape)
    r = torch.randn(MAX_PARTICLES, d, vae.latent_dim, generator=torch.Generator().manual_seed(5)) / math.sqrt(d)
    encode = vae.encode

    def fixed(x):
        base = encode(x).base_dist
        eps = torch.matmul(x.flatten(-len(vae.data_shape)), r)  # (P, *batch, latent_dim)
        return FixedNoiseNormal(base.loc, base.scale, eps).to_event(1)

    vae.encode = fixed


def step_config(objective="elbo"):
    """SGD: unlike Adam's first step, its step shows a wrongly scaled gradient."""
    train = {**tiny_config()["train"], "objective": {"name": objective, "num_particles": 2}, "optimizer": {"name": "sgd", "lr": 1e-4}}
    return pyrovae.load_config(tiny_config(train=train))


def one_step(objective, x, world_rank=None):
    """Build the tiny model (seed 0), take one optimizer step on ``x`` (this
    rank's share when ``world_rank`` is given) with fixed noise; the weights after it."""
    cfg = step_config(objective)
    pyro.set_rng_seed(0)
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    fix_noise(vae)
    trainer = Trainer(vae, splits, cfg)
    if world_rank is not None:
        x = x[world_rank[1] :: world_rank[0]]
    with pyro.validation_enabled(False):
        loss = trainer._step({"x": x}, 1.0)
    trainer.optimizer.step()
    return loss, {k: v.detach().clone() for k, v in vae.state_dict().items()}


#: the objectives whose one-step check runs on two processes
ONE_STEP_OBJECTIVES = ("elbo", "meanfield", "iwae")
#: global batches of the one-step check: two shares of 50, and of 4 and 3
GLOBAL_BATCHES = (100, 7)


def m2_oracles():
    """``tests/models/test_m2.py``: m2 with fixed noise and the hand-written estimate of its objective."""
    models = str(ROOT_TESTS / "models")
    if models not in sys.path:
        sys.path.insert(0, models)
    import test_m2

    return test_m2


def m2_model():
    """The float64 test m2 (weights drawn under seed 0) with fixed noise, and the noise function."""
    oracles = m2_oracles()
    torch.manual_seed(0)
    model = oracles.build()
    return model, oracles.fix_noise(model)


def m2_step(b_u, b_l, num_data, rank):
    """This rank's data-parallel step on its share of a global batch of
    ``b_u`` unlabelled and ``b_l`` labelled points (cut as ``Batches``
    cuts it): the loss the strategy returns and the gradients."""
    oracles = m2_oracles()
    model, _ = m2_model()
    x, y = oracles.partly_labelled_batch(b_u, b_l)
    objective = oracles.m2_objective(model, (40, 760))
    params = [p for p in model.parameters() if p.requires_grad]
    strategy = DataParallel(distributed.env_context())
    strategy.setup(model, objective, params, {"x": x[-2:], "y": y[-2:]}, lambda: [1.0], seed=0)
    rows = oracles.shares(len(x), WORLD)[rank]
    fields = {"x": x[rows], "y": y[rows], **({"num_data": num_data} if num_data else {})}
    with pyro.validation_enabled(False):
        loss = strategy.step(fields, 1.0)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def global_batch():
    cfg = step_config()
    return load_data(cfg.data).train[0][:100]  # two ranks x 50


def _worker(rank, port, cli_port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    sys.path[:0] = [str(TESTS), str(ROOT_TESTS)]
    out = Path(out)
    result = {}
    x = global_batch()
    # 1. one step with fixed noise, DDP (elbo, meanfield) and the hand-written all_reduce (iwae),
    # on equal shares and on uneven ones
    for n in GLOBAL_BATCHES:
        for objective in ONE_STEP_OBJECTIVES:
            loss, weights = one_step(objective, x[:n], (WORLD, rank))
            torch.save(weights, out / f"step-{objective}-{n}-{rank}.pt")
            result[f"loss-{objective}-{n}"] = loss
    # 1b. m2's partly labelled objective on shares of uneven global batches
    for b_u, b_l in m2_oracles().SHARDED_BATCHES:
        for num_data in (None, 800):
            loss, grads = m2_step(b_u, b_l, num_data, rank)
            torch.save(grads, out / f"m2-{b_u}-{b_l}-{num_data}-{rank}.pt")
            result[f"loss-m2-{b_u}-{b_l}-{num_data}"] = loss
    # 2. each rank draws its own noise
    cfg = pyrovae.load_config(tiny_config(data={**tiny_config()["data"], "binarize": "dynamic"}))
    splits = load_data(cfg.data)
    trainer = Trainer(pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape), splits, cfg)
    result["latent_noise"] = torch.rand(3).tolist()
    result["binarization_noise"] = torch.rand(3, generator=trainer.batches.noise_generator).tolist()
    result["first_batch"] = next(iter(trainer.batches))["x"].sum().item()
    # 3. several steps: the weights stay bitwise identical on every rank
    history = trainer.fit()
    result["fit_losses"] = [r["train_loss"] for r in history]
    torch.save(trainer.vae.state_dict(), out / f"final-{rank}.pt")
    # 4. the CLI trains for several epochs; rank 0 alone writes
    config = out / "tiny.yaml"
    if rank == 0:
        config.write_text(yaml.safe_dump(tiny_config(data={**tiny_config()["data"], "binarize": "dynamic"}, train={**tiny_config()["train"], "epochs": 4})))
    distributed.on_main(lambda: None, distributed.env_context())  # barrier
    os.environ["MASTER_PORT"] = str(cli_port)  # the trainer above owns the first group; the CLI makes its own
    distributed.shutdown()
    from pyrovae.cli import main

    result["exit"] = main(["train", "--config", str(config), "--out", str(out / "run")])
    (out / f"result-{rank}.json").write_text(json.dumps(result))


def _free_ports(n=2):
    """``n`` distinct free ports (held open together while they are picked)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Runs :func:`_worker` on two spawned gloo processes once for the module."""
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(*_free_ports(2), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    results = [json.loads((out / f"result-{r}.json").read_text()) for r in range(WORLD)]
    return out, results


@pytest.mark.parametrize("n", GLOBAL_BATCHES)
@pytest.mark.parametrize("objective", ONE_STEP_OBJECTIVES)
def test_one_step_matches_one_process_on_the_concatenated_batch(two_processes, objective, n):
    out, results = two_processes
    loss, expected = one_step(objective, global_batch()[:n])
    pyro.set_rng_seed(0)
    start = pyrovae.VAE.from_config(step_config(), data_shape=(1, 8, 8)).state_dict()
    for r in results:  # every rank reports the loss summed over both ranks' batches
        assert r[f"loss-{objective}-{n}"] == pytest.approx(loss, rel=1e-6)
    if objective == "iwae" and n == 100:  # the particles draw different noise: IWAE's bound is tighter than the ELBO's
        elbo_loss, _ = one_step("elbo", global_batch())
        assert loss < elbo_loss - 1e-2, (loss, elbo_loss)
        for r in results:
            assert r["loss-iwae-100"] < r["loss-elbo-100"] - 1e-2, r
    for rank in range(WORLD):
        got = torch.load(out / f"step-{objective}-{n}-{rank}.pt", weights_only=True)
        for name, value in expected.items():
            assert not torch.equal(value, start[name]) or name.endswith(("loc", "scale")), name  # the step moved it
            assert (got[name] - value).abs().max() <= 1e-6, (rank, name, (got[name] - value).abs().max())


@pytest.mark.parametrize("num_data", [None, 800])
@pytest.mark.parametrize("b_u, b_l", m2_oracles().SHARDED_BATCHES)
def test_an_m2_step_on_two_shares_is_the_hand_written_step_of_the_whole_batch(two_processes, b_u, b_l, num_data):
    """Equal and uneven shares, a last short batch and a share without a
    labelled point: the summed loss and every rank's gradient are those of
    the hand-written estimate of J^alpha on the whole batch (float64)."""
    out, results = two_processes
    oracles = m2_oracles()
    model, noise = m2_model()
    x, y = oracles.partly_labelled_batch(b_u, b_l)
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    expected = oracles.full_data_estimate(model, x, y, noise, (40, 760), num_data)
    grads = torch.autograd.grad(expected, list(params.values()), allow_unused=True)
    for r in results:
        assert r[f"loss-m2-{b_u}-{b_l}-{num_data}"] == pytest.approx(expected.item(), rel=1e-10, abs=0)
    for rank in range(WORLD):
        got = torch.load(out / f"m2-{b_u}-{b_l}-{num_data}-{rank}.pt", weights_only=True)
        for (name, p), want in zip(params.items(), grads):
            want = torch.zeros_like(p) if want is None else want
            torch.testing.assert_close(got.get(name, torch.zeros_like(p)), want, rtol=1e-8, atol=1e-10)


def test_parameters_stay_bitwise_identical_and_the_loss_goes_down(two_processes):
    out, results = two_processes
    assert [r["exit"] for r in results] == [0, 0]
    run = out / "run"
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["world_size"] == WORLD and len(state["rng"]["ranks"]) == WORLD
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]  # written once, by rank 0
    losses = [m["train_loss"] for m in metrics]
    assert losses[-1] < losses[0] - 1.0 and all(math.isfinite(v) for v in losses)
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.yaml", "checkpoint.pt", "best.pt", "metrics.jsonl", "reconstructions.png", "samples.png"]
    )
    # the Python API's fit (40 steps, each rank with its own binarization and noise)
    weights = [torch.load(out / f"final-{r}.pt", weights_only=True) for r in range(WORLD)]
    start = pyrovae.VAE.from_config(tiny_config(), data_shape=(1, 8, 8)).state_dict()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
        assert weights[0][name].dtype != torch.float32 or not torch.equal(weights[0][name], start[name]) or name.endswith(("loc", "scale"))
    assert results[0]["fit_losses"] == results[1]["fit_losses"]
    assert results[0]["fit_losses"][-1] < results[0]["fit_losses"][0]


def test_each_rank_draws_its_own_noise(two_processes):
    _, results = two_processes
    for key in ("latent_noise", "binarization_noise", "first_batch"):
        assert results[0][key] != results[1][key], key


def test_batches_split_each_global_batch_between_ranks():
    x = torch.arange(23.0).unsqueeze(1)
    single = [b["x"].squeeze(1).tolist() for b in Batches(x, 10, seed=3)]
    shards = [[b["x"].squeeze(1).tolist() for b in Batches(x, 10, seed=3, rank=r, world_size=2)] for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3  # the last global batch (3 points) is kept: 3 >= 2 ranks
    for step, batch in enumerate(single):
        assert sorted(shards[0][step] + shards[1][step]) == sorted(batch)
    assert len(Batches(torch.zeros(21, 1), 10, world_size=2)) == 2  # a last batch of 1 point < 2 ranks is dropped


def _torchrun(port, *args):
    """``torchrun --nproc_per_node=2 -m pyrovae train ARGS``, started (not waited for)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(port),
           "-m", "pyrovae", "train", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_torchrun_resume_is_bitwise_exact(two_processes):
    """``torchrun -m pyrovae train --resume`` continues the 4-epoch run the
    spawned processes wrote to 5 epochs; the oracle is an uninterrupted
    5-epoch ``torchrun`` run of the same config (started alongside): the same
    weights, optimizer, every rank's random state and metrics, bit for bit."""
    out, _ = two_processes
    run, full = out / "run", out / "full"
    cut = load_checkpoint(run / "checkpoint.pt")
    assert cut["epoch"] == 4 and cut["world_size"] == WORLD
    assert not torch.equal(cut["rng"]["ranks"][0]["noise"], cut["rng"]["ranks"][1]["noise"])  # two noise streams to restore
    ports = _free_ports(2)
    launches = [
        _torchrun(ports[0], "--config", str(out / "tiny.yaml"), "--set", "train.epochs=5", "--out", str(full)),
        _torchrun(ports[1], "--resume", str(run), "--set", "train.epochs=5"),
    ]
    results = []
    try:
        for p in launches:
            stdout, stderr = p.communicate(timeout=240)
            results.append(stderr)
            assert p.returncode == 0, stderr[-3000:]
    finally:
        for p in launches:
            p.kill()
    assert results[1].count("resuming") == 1 and "after epoch 4" in results[1]
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]
    a, b = load_checkpoint(full / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 5 and a["world_size"] == b["world_size"] == WORLD
    for key in ("model", "optimizer", "scheduler", "rng", "step", "best_val", "bad_epochs", "config"):
        assert_identical(a[key], b[key], key)
    assert_identical(without_seconds(a["history"]), without_seconds(b["history"]), "history")
    metrics = [without_seconds(json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()) for d in (full, run)]
    assert_identical(metrics[0], metrics[1], "metrics.jsonl")


def test_single_process_strategy_is_the_identity():
    strategy = SingleProcess()
    assert strategy.is_main and (strategy.rank, strategy.world_size) == (0, 1)
    assert strategy.sum([1, 2.5]) == [1.0, 2.5]
    assert strategy.gather({"rng": 1}) is None  # a one-process checkpoint holds no per-rank states
    assert strategy.on_main(lambda: 3) == 3
    fields = {"x": torch.zeros(4, 2)}
    assert strategy.shard(fields) is fields
    strategy.check_sizes(batch_size=1, num_points=1)
    with pytest.raises(pyrovae.ConfigError, match="more than one process"):
        DataParallel(distributed.SINGLE)


def test_a_strategy_handed_in_runs_every_step():
    """The trainer takes every step through its strategy (so that a strategy
    of one's own, e.g. another reduction, needs no edit of the trainer)."""
    calls = []

    class Counting(SingleProcess):
        def step(self, fields, beta):
            calls.append(len(fields["x"]))
            return super().step(fields, beta)

    cfg, splits, vae = setup()
    history = Trainer(vae, splits, cfg, strategy=Counting()).fit()
    assert len(calls) == history[-1]["step"] == 2 * len(splits.train[0]) // 50
    cfg, splits, vae = setup()
    assert [r["train_loss"] for r in Trainer(vae, splits, cfg).fit()] == [r["train_loss"] for r in history]


@pytest.mark.parametrize("objective", ["elbo", "meanfield", "iwae"])
def test_num_data_is_refused_where_each_share_would_be_scaled_by_its_own_size(objective):
    """A data plate scales a share of B_r points by N / B_r, so the ranks'
    sum would be about W times the whole batch's estimate (m2's objective
    takes num_data with the whole batch's counts; see the m2 steps above).
    Refused before any collective, so no rank waits for another."""
    strategy = DataParallel(distributed.Context(rank=0, world_size=WORLD))
    strategy.objective = build_objective({"name": objective})
    with pytest.raises(pyrovae.ConfigError, match="num_data under data-parallel training"):
        strategy.step({"x": global_batch()[:3], "num_data": 1000}, 1.0)


def test_process_group_errors_are_clear(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(pyrovae.ConfigError, match="launch with torchrun"):
        distributed.init()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(pyrovae.ConfigError, match="MASTER_ADDR"):
        distributed.init()
