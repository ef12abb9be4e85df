"""Annealed importance sampling (AIS) of log p(x) and the bidirectional
Monte Carlo (BDMC) sandwich, generic through Pyro traces.

AIS moves C chains per data point from π0 (the guide q(z | x), or the
prior) to the posterior through the densities γ_β of
``pyrovae.infer.hmc``, at temperatures 0 = β_0 < ... < β_T = 1, and
accumulates the log weight Σ_t [log γ_βt(z_t) - log γ_βt-1(z_t)] on the
fly (memory does not grow with T). Between temperatures each chain makes
one HMC move that leaves γ_βt invariant, with its own Metropolis test.
Then log p(x) ≈ logsumexp_c log w_c - log C, a stochastic lower bound
(Wu et al. 2017, arXiv 1611.04273).

**Step sizes.** A first pass adapts each chain's leapfrog step toward an
acceptance rate of 0.65 and records its mean log step over each of up to
50 stretches of the schedule. The estimate comes from a second pass with
those steps fixed and fresh noise (an independent seed), so that its
transitions do not depend on its own draws and the bound stays valid
(Huang et al. 2020).

**BDMC.** On data simulated from the model, the latents z that produced x
are an exact posterior draw. AIS run backwards from there (β from 1 to 0)
gives a stochastic *upper* bound; the gap between the two bounds bounds
the error of either. The upper bound holds only on simulated data.
"""

from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch

import pyro.poutine as poutine

from ..errors import ConfigError
from ..models.base import model_device, pyro_callables
from ..models.protocol import capability
from ..validators import int_at_least
from .enumerated import missing_site
from .fields import chunks, data_fields
from .hmc import Target, hmc_move
from .fields import balanced_sizes
from .loglik import evaluation_mode, progress_bar
from .seeds import seeded
from .sharding import block_shard, check_same_data, gather_point_fields, rank_and_size, shared_seed
from .weights import is_random, latent_sites

__all__ = ["ais_log_likelihood", "bdmc", "AISResult", "BDMCResult", "SCHEDULES", "schedule_betas"]

#: the acceptance rate the first pass steers each chain's step size toward
TARGET_ACCEPTANCE = 0.65
#: log step-size change per unit of acceptance error, per move
ADAPT_RATE = 0.2
INITIAL_STEP = 0.1
#: the most stretches of the schedule that get a step size of their own
MAX_SEGMENTS = 50
#: chain states (points x chains run at once) per chunk by default: Pyro's per-trace bookkeeping (about
#: 0.5 ms per model evaluation) then costs a few per cent, as in the IS estimator's ``DEFAULT_CHUNK_PASSES``
#: (experiments/bench_ais.py); 16 chains give chunks of 250 points
DEFAULT_CHUNK_STATES = 4000
#: seed offset between chain groups (``chain_batch``): the first group keeps the unchunked seeds
CHAIN_GROUP_STRIDE = 104729
INITS = ("guide", "prior")


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(8.0 * (t - 0.5))
    return (s - s[0]) / (s[-1] - s[0])


#: β schedules, as functions of t = (0, 1/T, ..., 1): ``sigmoid`` spends more temperatures near both ends
SCHEDULES = {"sigmoid": _sigmoid, "linear": lambda t: t}


def schedule_betas(schedule: str, num_steps: int) -> list:
    """The ``num_steps + 1`` temperatures of ``schedule``, from 0 to 1.

    Example::

        >>> from pyrovae.infer.ais import schedule_betas
        >>> schedule_betas("linear", 4)
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    betas = SCHEDULES[schedule](torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)).tolist()
    betas[0], betas[-1] = 0.0, 1.0
    return betas


class AISResult(NamedTuple):
    """Per-point AIS statistics, each ``(N,)``.

    :ivar log_likelihood: the estimate of log p(x), nats.
    :ivar chain_std: standard deviation of the chains' log weights, nats.
    :ivar acceptance: mean acceptance probability of the estimate's HMC moves.
    :ivar step_size: mean leapfrog step size (unconstrained space) of the chains.
    """

    log_likelihood: torch.Tensor
    chain_std: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor


class BDMCResult(NamedTuple):
    """:func:`~pyrovae.bdmc`'s sandwich on simulated data.

    :ivar lower: forward AIS, a stochastic lower bound on log p(x) ``(N,)``, nats.
    :ivar upper: reverse AIS from the exact posterior draw, a stochastic upper bound ``(N,)``.
    :ivar gap: mean of ``upper - lower`` (float), nats.
    :ivar x: the simulated data ``(N, *data_shape)``.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    gap: float
    x: torch.Tensor


def pass_seeds(seed: Optional[int]) -> Tuple[int, int]:
    """The seeds of the adaptation pass and of the estimate's pass: two
    independent streams (from ``seed``, or from the global RNG when None)."""
    gen = torch.Generator()
    if seed is None:
        gen.manual_seed(int(torch.randint(2**62, ())))
    else:
        gen.manual_seed(seed)
    a, b = torch.randint(2**62, (2,), generator=gen).tolist()
    return a, b


def _segment(i: int, moves: int, segments: int) -> int:
    return (i - 1) * segments // moves


def _anneal(target: Target, u, betas, leapfrog_steps, log_steps=None, bar=None):
    """AIS along ``betas`` from states ``u`` ``(C, B, D)``. With ``log_steps``
    ``(S, C, B)`` the move at temperature i uses its stretch's step; without,
    the steps adapt. Returns ``(log w (C, B), mean acceptance (C, B), log steps (S, C, B))``."""
    moves = len(betas) - 2
    segments = max(1, min(moves, MAX_SEGMENTS))
    scores = target.scores(u)
    log_w = torch.zeros_like(scores[0])
    accepted = torch.zeros_like(log_w)
    adapt = log_steps is None
    step = torch.full_like(log_w, math.log(INITIAL_STEP))
    totals = log_w.new_zeros(segments, *log_w.shape)
    counts = [0] * segments
    for i in range(1, len(betas)):
        log_w = log_w + target.log_density(betas[i], scores) - target.log_density(betas[i - 1], scores)
        if bar is not None:
            bar.update(log_w.shape[1])
        if i == len(betas) - 1:
            break
        seg = _segment(i, moves, segments)
        if not adapt:
            step = log_steps[seg]
        u, scores, prob = hmc_move(target, u, scores, betas[i], step.exp(), leapfrog_steps)
        accepted = accepted + prob
        if adapt:
            step = step + ADAPT_RATE * (prob - TARGET_ACCEPTANCE)
            totals[seg] += step
            counts[seg] += 1
    if adapt:
        log_steps = totals / torch.tensor([max(c, 1) for c in counts], dtype=totals.dtype).reshape(-1, 1, 1)
    return log_w, accepted / max(moves, 1), log_steps


def _log_mean(log_w: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def _chain_groups(num_chains: int, chain_batch: Optional[int]) -> list:
    """The sizes of the chain groups that run one after another (one group without ``chain_batch``)."""
    return balanced_sizes(num_chains, min(chain_batch or num_chains, num_chains))


def _chunk(model, chunk, site, options, seeds, start, bar):
    """Adapt, then estimate, for one chunk of points, one group of chains at a
    time; the groups' log weights are pooled before the log-mean-exp, so the
    estimate is that of all chains at once: ``{key: (B,)}``."""
    betas = options["betas"]
    init, leapfrog = options["init"], options["leapfrog_steps"]
    device = chunk["x"].device
    parts: Dict[str, list] = {}
    for g, c in enumerate(_chain_groups(options["num_chains"], options["chain_batch"])):
        group_seeds = [seed + CHAIN_GROUP_STRIDE * g for seed in seeds]
        target = Target(model, chunk, site, c, init)
        with seeded(group_seeds[0], device):
            _, _, log_steps = _anneal(target, target.pack(target.initial()), betas, leapfrog, bar=bar)
        with seeded(group_seeds[1], device):
            log_w, acceptance, _ = _anneal(target, target.pack(target.initial()), betas, leapfrog, log_steps, bar)
        group = {"log_w": log_w, "acceptance": acceptance, "step": log_steps.exp().mean(0)}
        if start is not None:
            with seeded(group_seeds[1] + 1, device):
                group["log_w_rev"], _, _ = _anneal(target, target.pack(start), betas[::-1], leapfrog,
                                                   log_steps.flip(0), bar)
        for key, value in group.items():
            parts.setdefault(key, []).append(value)
    pooled = {key: torch.cat(value, 0) for key, value in parts.items()}  # (C, B) each
    log_w = pooled["log_w"]
    out = {"log_likelihood": _log_mean(log_w),
           "chain_std": log_w.std(0) if len(log_w) > 1 else torch.zeros_like(log_w[0]),
           "acceptance": pooled["acceptance"].mean(0), "step_size": pooled["step"].mean(0)}
    if start is not None:
        out["upper"] = -_log_mean(pooled["log_w_rev"])
    return out


def _options(num_steps, num_chains, leapfrog_steps, schedule, init, batch_size, chain_batch=None) -> Dict[str, Any]:
    int_at_least(num_steps, 1, "num_steps", hint="AIS needs at least one intermediate temperature; 1000 is typical")
    int_at_least(num_chains, 1, "num_chains", hint="the number of AIS chains per data point (16 is typical)")
    int_at_least(leapfrog_steps, 1, "leapfrog_steps", hint="leapfrog steps per HMC move (10 is typical)")
    if batch_size is not None:
        int_at_least(batch_size, 1, "batch_size", hint="it is the number of data points per chunk")
    if chain_batch is not None:
        int_at_least(chain_batch, 1, "chain_batch", hint="it is the number of chains run at once")
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    return {"betas": schedule_betas(schedule, num_steps), "num_chains": num_chains, "init": init,
            "leapfrog_steps": leapfrog_steps,
            "batch_size": batch_size or max(1, DEFAULT_CHUNK_STATES // min(chain_batch or num_chains, num_chains)),
            "chain_batch": chain_batch}


def _run(model, data, options, seed, progress, start=None, shard=False) -> Dict[str, torch.Tensor]:
    """AIS chunk by chunk; chunk j's seeds come from ``seed`` and j alone. With ``shard`` under
    torch.distributed each process runs its share of whole chunks and all get the gathered results."""
    n = len(data["x"])
    site = missing_site(model, data)
    seeds = pass_seeds(shared_seed(seed) if shard else seed)
    device = model_device(model)
    sizes = balanced_sizes(n, min(options["batch_size"], n))
    blocks, points = block_shard(sizes) if shard else (slice(None), slice(0, n))
    mine = range(len(sizes))[blocks]
    passes = 2 + (start is not None)
    groups = len(_chain_groups(options["num_chains"], options["chain_batch"]))
    shown = progress and (not shard or rank_and_size()[0] == 0)
    bar = progress_bar(passes * groups * (points.stop - points.start) * (len(options["betas"]) - 1), shown, "AIS")
    out: Dict[str, list] = {}
    try:
        with evaluation_mode(model, None, device):
            for j, (offset, chunk) in enumerate(chunks(data, sizes)):
                if j not in mine:
                    continue
                chunk = {k: v.to(device) for k, v in chunk.items()}
                b = len(chunk["x"])
                given = None if start is None else {k: v[offset:offset + b].to(device) for k, v in start.items()}
                chunk_seeds = (seeds[0] + 7919 * j, seeds[1] + 7919 * j)
                for key, value in _chunk(model, chunk, site, options, chunk_seeds, given, bar).items():
                    out.setdefault(key, []).append(value)
    finally:
        if bar is not None:
            bar.close()
    own = {k: torch.cat(v) for k, v in out.items()} if out else None
    return gather_point_fields(own, n, device) if shard else own


def ais_log_likelihood(model, x: torch.Tensor, *, num_steps: int = 1000, num_chains: int = 16,
                       leapfrog_steps: int = 10, schedule: str = "sigmoid", init: str = "guide",
                       seed: Optional[int] = None, return_stats: bool = False, batch_size: Optional[int] = None,
                       chain_batch: Optional[int] = None, progress: bool = False, shard: bool = True,
                       **fields: torch.Tensor):
    """Annealed-importance-sampled log-likelihood of each data point, in nats.

    Works for any model with Pyro ``model`` and ``guide`` whose latents
    are continuous (each moved in unconstrained space, Jacobians included)
    or enumerated fields (``enumerate_sites``, such as M2's label: summed
    out exactly), all inside the data plate. Each of ``num_chains`` chains
    per point goes from π0 to the posterior through ``num_steps``
    temperatures, with one HMC move of ``leapfrog_steps`` steps at each and a
    Metropolis test per chain; step sizes are adapted in a first pass and
    fixed, with fresh noise, for the estimate (``pyrovae.infer.ais``).
    The estimate is a stochastic lower bound on log p(x), tighter than
    importance sampling from the guide; :func:`~pyrovae.bdmc` checks how tight.

    Each chunk of ``batch_size`` points draws from seeds derived from
    ``seed`` and the chunk's index, so under ``torchrun`` (``torch.distributed``
    with several processes) each process runs its share of whole chunks and
    every process returns all N estimates, the numbers of one process with
    the same seed (:mod:`pyrovae.infer.sharding`); every process must pass the same data.

    :param model: a model of the protocol (``model(x, ...)``, ``guide(x, ...)``).
    :param torch.Tensor x: data ``(N, *data_shape)``.
    :param int num_steps: T, the number of temperatures after β = 0.
    :param int num_chains: chains per data point.
    :param int leapfrog_steps: leapfrog steps per HMC move.
    :param str schedule: ``sigmoid`` or ``linear`` (``SCHEDULES``).
    :param str init: ``guide`` (π0 = q(z | x)) or ``prior`` (π0 = p(z): only the likelihood is tempered).
    :param int seed: seed of both passes (None: drawn from the global RNG, which is otherwise left alone;
        rank 0's under torchrun).
    :param bool return_stats: return an :class:`~pyrovae.infer.ais.AISResult` instead of the estimates alone.
    :param int batch_size: data points per chunk (default: as many as make 4000 chain states, 250 with
        16 chains); memory grows with ``batch_size * num_chains`` model evaluations, not with ``num_steps``.
    :param int chain_batch: chains run at once (default: all ``num_chains``); memory then grows with
        ``batch_size * chain_batch``. The groups' log weights are pooled before the average, so the
        estimate is that of all chains; each group adapts its own step sizes.
    :param bool progress: show a progress bar on stderr.
    :param bool shard: under ``torch.distributed``, split the points over the processes (default); False
        scores every point in this process alone, for a call that not every process makes.
    :param fields: the model's other batch fields, each ``(N, ...)`` (``y=labels``).
    :returns: ``(N,)`` log p(x) estimates, or an :class:`~pyrovae.infer.ais.AISResult` of ``(N,)`` tensors.
    :raises ConfigError: for a bad option or a latent that AIS cannot move.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 4, 4))
        >>> x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.3))
        >>> ll = pyrovae.ais_log_likelihood(vae, x, num_steps=5, num_chains=2, leapfrog_steps=2, seed=0)
        >>> ll.shape
        torch.Size([3])
        >>> stats = pyrovae.ais_log_likelihood(vae, x, num_steps=5, num_chains=2, leapfrog_steps=2, seed=0,
        ...                                    return_stats=True)
        >>> torch.equal(stats.log_likelihood, ll), stats.acceptance.shape
        (True, torch.Size([3]))
    """
    options = _options(num_steps, num_chains, leapfrog_steps, schedule, init, batch_size, chain_batch)
    data = data_fields(model, x, fields, "ais_log_likelihood")
    if shard:
        check_same_data(data, "ais_log_likelihood")
    out = _run(model, data, options, seed, progress, shard=shard)
    if return_stats:
        return AISResult(out["log_likelihood"], out["chain_std"], out["acceptance"], out["step_size"])
    return out["log_likelihood"]


def _simulate(model, num_points: int, data_shape, fields) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """(x, z) from the model: the model is traced with a placeholder x, so
    its latents are prior draws, and x is drawn from the observed site whose
    value is the placeholder, given those latents."""
    model_fn, _ = pyro_callables(model)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    placeholder = torch.zeros(num_points, *data_shape, dtype=dtype, device=model_device(model))
    trace = poutine.trace(model_fn).get_trace(placeholder, **fields)
    observed = [s for s in trace.nodes.values() if is_random(s) and s["is_observed"]
                and s["value"].data_ptr() == placeholder.data_ptr()]
    if len(observed) != 1:
        raise ConfigError(
            f"bdmc draws x from the one observed site whose value is x itself (obs=x, or a view of it), but this "
            f"model has {len(observed)} such sites; a model that observes a transform of x (codes cast to integers, "
            "say) cannot have its draws mapped back to x, so bdmc does not support it")
    x = observed[0]["fn"].sample().reshape(placeholder.shape)
    return x, {s["name"]: s["value"] for s in latent_sites(trace)}


def bdmc(model, num_points: int, *, seed: Optional[int] = None, data_shape=None, **ais_options) -> BDMCResult:
    """Bidirectional Monte Carlo: bracket log p(x) between forward and reverse AIS on simulated data.

    Draws (z, x) ~ p(z) p(x | z) (``num_points`` of them: the model is traced
    with a placeholder x of shape ``(num_points, *data_shape)``, so its
    latents are prior draws, and x is then drawn from the observed site's
    distribution), runs forward AIS from π0 (a stochastic lower bound) and
    reverse AIS from the z that produced x, an exact posterior draw (a
    stochastic upper bound), with the same adapted step sizes. A small
    ``gap`` says the AIS schedule is long enough for this model.

    .. warning:: The upper bound holds only on data simulated from the
       model: on real data nothing provides an exact posterior draw.

    :param int num_points: N, the simulated points.
    :param int seed: seed of the simulation and both AIS directions.
    :param data_shape: the shape of one point (default: the model's ``data_shape``).
    :param ais_options: options of :func:`~pyrovae.ais_log_likelihood` (``num_steps``,
        ``num_chains``, ...) and the model's other batch fields, each ``(N, ...)``.
    :returns: a :class:`~pyrovae.infer.ais.BDMCResult` (``lower``, ``upper`` ``(N,)``, ``gap``, ``x``), in nats.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 4, 4))
        >>> out = pyrovae.bdmc(vae, 3, seed=0, num_steps=5, num_chains=2, leapfrog_steps=2)
        >>> out.lower.shape, out.upper.shape, out.x.shape
        (torch.Size([3]), torch.Size([3]), torch.Size([3, 1, 4, 4]))
    """
    int_at_least(num_points, 1, "num_points", hint="the number of points to simulate")
    names = ("num_steps", "num_chains", "leapfrog_steps", "schedule", "init", "batch_size", "chain_batch")
    fields = {k: v for k, v in ais_options.items() if k not in names + ("progress",)}
    options = _options(**{**dict(num_steps=1000, num_chains=16, leapfrog_steps=10, schedule="sigmoid",
                                 init="guide", batch_size=None), **{k: ais_options[k] for k in names if k in ais_options}})
    shape = tuple(data_shape) if data_shape is not None else tuple(capability(model, "data_shape", "bdmc"))
    with seeded(seed):
        sim_seed = int(torch.randint(2**62, ()))
    with seeded(sim_seed, model_device(model)), evaluation_mode(model, None, model_device(model)):
        x, z = _simulate(model, num_points, shape, fields)
    data = data_fields(model, x, fields, "bdmc")
    start = {k: v for k, v in z.items() if k not in set(data)}
    out = _run(model, data, options, None if seed is None else seed + 1, ais_options.get("progress", False), start)
    return BDMCResult(out["log_likelihood"], out["upper"], float((out["upper"] - out["log_likelihood"]).mean()), x)
