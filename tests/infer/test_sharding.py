"""Evaluation split over processes (pyrovae.infer.sharding).

The oracle of the two-process checks is one process with the same seed:
two spawned gloo processes score their shares of whole chunks, gather, and
must return the single-process per-point numbers and summary. The seeding
rule itself is checked in one process: a chunk scored alone with its block
seed draws what it draws inside the whole run.
"""

import json
import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import pyro

import pyrovae
from pyrovae.errors import DataError
from pyrovae.infer.sharding import (block_seed, block_shard, gather_point_fields, gather_points, point_shard,
                                    sum_over_ranks)

pytestmark = pytest.mark.filterwarnings("ignore:.*Pareto k > 0.7:UserWarning")  # 30 weights of an untrained model

WORLD = 2
#: IS: 7 points in chunks of 2 -> blocks [2, 2, 2, 1], rank 0 scores 4 points and rank 1 three;
#: 3 points in chunks of 5 -> one block, rank 1 scores nothing
IS_CASES = ((7, 2), (3, 5))
K = 30  # > 20: the Pareto k̂ of each point is fitted
AIS_POINTS, AIS_BATCH = 5, 2
AIS = dict(num_steps=4, num_chains=2, leapfrog_steps=2)


def tiny_vae():
    torch.manual_seed(0)
    return pyrovae.VAE.from_config({"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]},
                                    "decoder": {"name": "mlp", "hidden": [8]}}, data_shape=(1, 3, 3))


def tiny_m2():
    """M2 (its label summed out of log p(x); its classification error a metric) and 600 points, some
    labelled: 6 IS chunks of 100 (3 per process) and metric chunks of 500 and 100 (1 per process)."""
    from pyrovae.models import build_model

    torch.manual_seed(0)
    cfg = pyrovae.load_config({"data": {"name": "synthetic"}, "model": {
        "name": "m2", "latent_dim": 2, "options": {"num_classes": 3},
        "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}})
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((600, 1, 3, 3), 0.4), generator=g)
    return build_model(cfg.model, (1, 3, 3)), {"x": x, "y": torch.randint(-1, 3, (600,), generator=g)}


def data(n):
    return torch.bernoulli(torch.full((n, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(n))


def runs(rank=None):
    """The evaluations the two processes run, and the single process repeats."""
    vae = tiny_vae()
    out = {}
    for n, b in IS_CASES:
        ev = pyrovae.evaluate(vae, data(n), K, batch_size=b, seed=3)
        out[f"is-{n}"] = {"per_point": ev.per_point, "variance": ev.latent_variance, "summary": dict(ev.summary())}
    m2, fields = tiny_m2()
    ev = pyrovae.evaluate(m2, fields, 2, batch_size=100, seed=3)
    out["is-m2"] = {"per_point": ev.per_point, "variance": ev.latent_variance, "summary": dict(ev.summary())}
    ais = pyrovae.ais_log_likelihood(vae, data(AIS_POINTS), seed=4, batch_size=AIS_BATCH, return_stats=True, **AIS)
    out["ais"] = ais._asdict()
    return out


# -- shares --------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 7, 10, 23])
def test_point_shards_cover_every_point_once_in_rank_order(n, world_size):
    shares = [point_shard(n, rank=r, world_size=world_size) for r in range(world_size)]
    covered = [i for s in shares for i in range(n)[s]]
    assert covered == list(range(n))
    sizes = [s.stop - s.start for s in shares]
    assert max(sizes) - min(sizes) <= 1 and all(s.step is None for s in shares)


def test_one_process_takes_every_point():
    assert point_shard(9) == slice(0, 9)
    assert block_shard([4, 4, 1]) == (slice(0, 3), slice(0, 9))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_block_shards_are_whole_blocks(world_size):
    sizes = [3, 3, 3, 2, 2]
    starts = [0, 3, 6, 9, 11, 13]
    points = []
    for r in range(world_size):
        blocks, share = block_shard(sizes, rank=r, world_size=world_size)
        assert share == slice(starts[blocks.start], starts[blocks.stop])
        points += list(range(13))[share]
    assert points == list(range(13))


def test_block_seeds():
    assert block_seed(5, 0) == 5  # the first block draws what one seeded pass drew
    seeds = {block_seed(s, start) for s in range(3) for start in (2, 4, 6)}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)


def test_one_process_gathers_are_the_identity():
    t = torch.arange(6.0).reshape(3, 2)
    assert gather_points(t, 3) is t
    assert gather_point_fields({"a": t, "b": None}, 3) == {"a": t, "b": None}
    assert sum_over_ranks({"e": [1.0, 2.0]}) == {"e": [1.0, 2.0]}
    with pytest.raises(DataError, match="n=4"):
        gather_points(t, 4)


# -- the seeding rule, in one process ---------------------------------------------


def test_a_chunk_scored_alone_with_its_block_seed_draws_what_it_draws_in_the_run():
    pyro.enable_validation(True)
    vae, x = tiny_vae(), data(7)
    whole = pyrovae.log_likelihood(vae, x, K, batch_size=2, seed=3, return_stats=True)
    for start in (0, 2, 6):
        part = pyrovae.log_likelihood(vae, x[start:start + 2], K, batch_size=2, seed=block_seed(3, start),
                                      return_stats=True)
        for a, b in zip(whole, part):
            torch.testing.assert_close(a[start:start + 2], b, rtol=1e-6, atol=1e-6)
    # each chunk draws its own numbers: the same point in two chunks gets two estimates
    twice = pyrovae.log_likelihood(vae, x[:1].expand(4, 1, 3, 3), K, batch_size=2, seed=3)
    assert twice[0] != twice[2] and twice[1] != twice[3]


# -- two gloo processes against one -----------------------------------------------------


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from pyrovae.training import distributed

    distributed.init()
    try:
        pyro.enable_validation(True)
        out = Path(out)
        torch.save(runs(rank), out / f"runs-{rank}.pt")
        # gather_points: uneven shares, a trailing shape, bool, and a rank without points
        share = point_shard(5)
        rows = torch.arange(15.0).reshape(5, 3)[share]
        flags = (torch.arange(5) % 2 == 0)[share]
        gathered = {"rows": gather_points(rows, 5), "flags": gather_points(flags, 5),
                    "one": gather_points(torch.ones(1, 2) if rank == 0 else torch.empty(0), 1),
                    "fields": gather_point_fields({"a": torch.zeros(1), "b": None, "c": torch.ones(1)}
                                                  if rank == 0 else None, 1),
                    "dropped": gather_point_fields({"a": torch.zeros(1)} if rank == 0 else {"b": torch.ones(1)}, 2),
                    "sums": sum_over_ranks({"e": [rank + 0.5, 1.0]})}
        torch.save(gathered, out / f"gathered-{rank}.pt")
        # unseeded: rank 0's seed is shared, so both ranks hold the same numbers
        unseeded = pyrovae.evaluate(tiny_vae(), data(7), K, batch_size=2, seed=None)
        torch.save(unseeded.per_point["log_likelihood"], out / f"unseeded-{rank}.pt")
        # shard=False: one rank alone scores every point (no collective waits for the other)
        if rank == 1:
            vae = tiny_vae()
            alone = {"is": pyrovae.evaluate(vae, data(7), K, batch_size=2, seed=3, shard=False).per_point,
                     "ais": pyrovae.ais_log_likelihood(vae, data(AIS_POINTS), seed=4, batch_size=AIS_BATCH,
                                                       shard=False, **AIS)}
            torch.save(alone, out / "alone.pt")
        # different data on the ranks is refused on every rank
        try:
            pyrovae.evaluate(tiny_vae(), data(4 + rank), K, seed=0)
            refused = ""
        except DataError as e:
            refused = str(e)
        (out / f"refused-{rank}.json").write_text(json.dumps(refused))
    finally:
        distributed.shutdown(barrier=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    return out


@pytest.fixture(scope="module")
def one_process():
    pyro.enable_validation(True)
    return runs()


def _close(a, b, where):
    assert a.shape == b.shape and a.dtype == b.dtype, where
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, equal_nan=True, msg=where)


@pytest.mark.parametrize("case", [f"is-{n}" for n, _ in IS_CASES] + ["is-m2"])
def test_is_per_point_and_summary_match_one_process(two_processes, one_process, case):
    single = one_process[case]
    assert set(single["per_point"]) >= {"log_likelihood", "mse", "elbo"}
    if case != "is-m2":
        assert {"pareto_k", "bce"} <= set(single["per_point"])
    else:
        assert single["summary"]["labelled_points"] > 400 and single["summary"]["summed_out"] == ["y"]
    for rank in range(WORLD):
        got = torch.load(two_processes / f"runs-{rank}.pt", weights_only=False)[case]
        assert sorted(got["per_point"]) == sorted(single["per_point"])
        for key, value in single["per_point"].items():
            _close(got["per_point"][key], value, f"rank {rank}, {key}")
        _close(got["variance"], single["variance"], "latent variance")
        assert sorted(got["summary"]) == sorted(single["summary"])
        for key, value in single["summary"].items():
            if isinstance(value, float):
                assert math.isclose(got["summary"][key], value, rel_tol=1e-6, abs_tol=1e-9), key
            else:
                assert got["summary"][key] == value, key


def test_ais_per_point_matches_one_process(two_processes, one_process):
    for rank in range(WORLD):
        got = torch.load(two_processes / f"runs-{rank}.pt", weights_only=False)["ais"]
        for key, value in one_process["ais"].items():
            _close(got[key], value, f"rank {rank}, AIS {key}")


def test_gathers_in_rank_order(two_processes):
    for rank in range(WORLD):
        g = torch.load(two_processes / f"gathered-{rank}.pt", weights_only=False)
        assert torch.equal(g["rows"], torch.arange(15.0).reshape(5, 3))
        assert torch.equal(g["flags"], torch.arange(5) % 2 == 0)
        assert torch.equal(g["one"], torch.ones(1, 2))
        assert set(g["fields"]) == {"a", "b", "c"} and g["fields"]["b"] is None
        assert torch.equal(g["fields"]["c"], torch.ones(1))
        assert g["dropped"] == {}  # a key some rank with points lacks is dropped everywhere
        assert g["sums"] == {"e": [2.0, 2.0]}


def test_unseeded_runs_share_rank_zeros_seed(two_processes):
    a, b = (torch.load(two_processes / f"unseeded-{r}.pt") for r in range(WORLD))
    assert torch.equal(a, b) and a.shape == (7,)


def test_one_process_alone_scores_every_point_without_shard(two_processes, one_process):
    alone = torch.load(two_processes / "alone.pt", weights_only=False)
    for key, value in one_process["is-7"]["per_point"].items():
        _close(alone["is"][key], value, key)
    _close(alone["ais"], one_process["ais"]["log_likelihood"], "AIS")


def test_different_data_on_the_processes_is_refused(two_processes):
    for rank in range(WORLD):
        message = json.loads((two_processes / f"refused-{rank}.json").read_text())
        assert "different data" in message, message
