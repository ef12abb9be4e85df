"""Does the test suite catch wrong densities? Inject one fault at a time and run it.

The faults go in at run time, through the public registries, exactly as a
user's broken component would:

- each registered prior, guide and likelihood is replaced by a subclass
  whose distribution reports ``log_prob + 0.05`` nats (per data point for a
  likelihood, per code for a prior or guide): a density that no longer
  integrates to 1;
- torch's analytic KL(Normal || Normal) is replaced (``register_kl``) by
  1.1 times itself;
- the estimators that sum out an enumerated site (m2's label) are patched
  where they live (``pyrovae.infer.enumerated``, ``pyrovae.infer.loglik``):
  the stderr of log sum_c p(x, c) takes the largest value's variance
  instead of the sum (``summed:variance``); log p(c) stays in the
  reconstruction term (``summed:label-prior``); the ELBO loses the entropy
  of q(c|x) (``summed:label-entropy``); the objective of a partly known
  field weighs its known points by 1 instead of (N_k/N_u)(B_u/B_k)
  (``objective:labelled-weight``), or a share of a batch by the share's own
  counts instead of the whole batch's (``objective:shard-counts``); m2's
  p(y) is not uniform (``m2:label-prior``);
- the training path: the lean ELBO drops the sites' scale and mask
  (``lean:unscaled``), or takes a messenger guide down its own path instead
  of handing it to ``Trace_ELBO`` (``lean:no-handoff``), bf16 layers pass bf16 outputs on (``precision:bf16-outputs``),
  ``meanfield`` is built for a guide that samples in another order than its
  model (``meanfield:order``);
- the flow prior's spline: Pyro's own coupling layer (``spline:pyro``), or
  the bin search shifted by 1e-6 as Pyro's is (``spline:shifted-bins``);
- plates and particles: particles at a fixed dim -2, as if every model used
  the data plate alone (``plates:particles-at-2``); the iwae objective's
  mini-batch scale applied to every site before the logsumexp over
  particles, as Pyro's RenyiELBO does (``iwae:scale-per-site``);
- AIS (``pyrovae.infer.hmc``, ``pyrovae.infer.ais``): the prior tempered as well
  as the likelihood (``ais:temper-prior``), every proposal accepted
  (``ais:no-metropolis``), the log-Jacobian of the unconstrained map dropped
  (``ais:no-jacobian``), the estimate reusing the adaptation pass's noise
  (``ais:reuse-noise``);
- the inference gaps and sharded evaluation: m2's label sampled instead of
  summed out in L[q*] (``gaps:sampled-label``), hvae's per-point offset not
  starting at zero (``local_guide:offset-start``), every chunk of points
  drawing the same noise (``sharding:same-noise-every-chunk``).

For each fault the suite runs in a fresh process (``pytest -x``, the oracle
files first so that a caught fault stops early) and the first failing test
is recorded. A ``sitecustomize`` module on ``PYTHONPATH`` injects the fault
into every Python process the tests start too (torchrun and spawned
workers), so a test that compares one process with several compares two
faulty runs and fails only if the fault breaks their agreement. A fault that no test catches is a hole in the suite; the
script exits 1 if there is one.

Usage::

    python experiments/mutation_check.py                   # every fault, the whole suite
    python experiments/mutation_check.py --faults prior:vamp kl:normal-normal
    python experiments/mutation_check.py --out mutation.json --markdown

It takes a few minutes: about 20-60 s per caught fault on 2 cores, a whole
suite run for a fault that is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIFT = 0.05
KL_FACTOR = 1.1
#: run first, so that a caught fault stops the run early; then the rest of the suite
ORACLE_FILES = [
    "tests/components/test_densities.py", "tests/components/test_kl.py", "tests/infer/test_objectives.py",
    "tests/infer/test_enumerated.py",
    "tests/infer/test_weights.py", "tests/infer/test_evaluate.py", "tests/models/test_m2.py",
    "tests/infer/test_lean_elbo.py", "tests/infer/test_iwae.py", "tests/infer/test_plates.py", "tests/training/test_precision.py", "tests/components/test_spline.py",
    "tests/infer/test_ais.py", "tests/infer/test_ais_target.py", "tests/infer/test_gaps.py",
    "tests/models/test_local_guide.py",
    "tests/infer/test_sharding.py",
]


# -- the faults -------------------------------------------------------------------


def shifted_distribution_class():
    """A distribution that is ``base`` in every way except ``log_prob + shift``;
    it survives Pyro's ``expand`` in plates, and KL divergences involving it
    shift by the same amount (so analytic-KL objectives see the fault too)."""
    import torch
    import pyro.distributions as dist
    from torch.distributions import kl

    class ShiftedLogProb(dist.TorchDistribution):
        arg_constraints = {}

        def __init__(self, base, shift):
            self.base, self.shift = base, shift
            super().__init__(base.batch_shape, base.event_shape, validate_args=False)

        @property
        def has_rsample(self):
            return self.base.has_rsample

        @property
        def support(self):
            return self.base.support

        @property
        def mean(self):
            return self.base.mean

        @property
        def variance(self):
            return self.base.variance

        def sample(self, sample_shape=torch.Size()):
            return self.base.sample(sample_shape)

        def rsample(self, sample_shape=torch.Size()):
            return self.base.rsample(sample_shape)

        def log_prob(self, value):
            return self.base.log_prob(value) + self.shift

        def expand(self, batch_shape, _instance=None):
            return ShiftedLogProb(self.base.expand(batch_shape), self.shift)

        def __getattr__(self, name):  # base_dist, transforms, loc, ...
            if name in ("base", "shift"):
                raise AttributeError(name)
            return getattr(self.base, name)

    @kl.register_kl(ShiftedLogProb, torch.distributions.Distribution)
    def _kl_shifted_q(q, p):
        return kl.kl_divergence(q.base, p) + q.shift

    @kl.register_kl(torch.distributions.Distribution, ShiftedLogProb)
    def _kl_shifted_p(q, p):
        return kl.kl_divergence(q, p.base) - p.shift

    @kl.register_kl(ShiftedLogProb, ShiftedLogProb)
    def _kl_shifted_both(q, p):
        return kl.kl_divergence(q.base, p.base) + q.shift - p.shift

    return ShiftedLogProb


def replace_component(registry, name, method):
    """Re-register ``name`` as a subclass whose ``method`` returns a shifted distribution."""
    Shifted = shifted_distribution_class()
    original = registry.get(name)

    def faulty(self, *args, **kwargs):
        return Shifted(getattr(original, method)(self, *args, **kwargs), SHIFT)

    cls = type(f"Faulty{original.__name__}", (original,), {method: faulty, "__doc__": original.__doc__})
    registry.unregister(name)
    registry.register(name, cls)


def scale_normal_kl():
    from torch.distributions import Normal, kl

    original = kl._kl_normal_normal
    kl.register_kl(Normal, Normal)(lambda p, q: KL_FACTOR * original(p, q))


def patch_summed(fault: str) -> None:
    """The faults of ``SUMMED_FAULTS``, patched into the modules that hold the estimators."""
    import torch

    import pyrovae.infer.enumerated as enumerated
    import pyrovae.infer.loglik as loglik
    from pyrovae.infer.enumerated import EnumeratedObjective
    from pyrovae.models.m2 import M2

    if fault == "summed:variance":
        combine = loglik._combine

        def largest_class(parts, k):
            out = combine(parts, k)
            if len(parts) > 1 and k > 1:
                lse_c = torch.stack([w[0] for _, _, w in parts])
                lse2_c = torch.stack([w[1] for _, _, w in parts])
                terms = k * torch.exp(lse2_c - 2 * out["lse"]) - torch.exp(2 * (lse_c - out["lse"]))
                out["stderr"] = (terms.max(0).values / (k - 1)).clamp(min=0).sqrt()
            return out

        loglik._combine = largest_class
    elif fault == "summed:label-prior":
        enumerated.observed_log_prob = lambda vae, fields, site: fields["x"].new_zeros(len(fields["x"]))
    elif fault == "summed:label-entropy":
        mixed = enumerated.mixed

        def no_entropy(parts):
            log_lik, log_prior, log_q = mixed(parts)
            return log_lik, log_prior, log_q - sum(p[0].exp() * p[0] for p in parts)

        for module in (enumerated, loglik):  # loglik holds its own reference to the function
            module.mixed = no_entropy
    elif fault == "objective:labelled-weight":
        parts = EnumeratedObjective._parts

        def unit_weight(self, args, kwargs):
            factor, items = parts(self, args, kwargs)
            return factor, [(1.0, *rest) for _, *rest in items]

        EnumeratedObjective._parts = unit_weight
    elif fault == "objective:shard-counts":
        import contextlib

        EnumeratedObjective.over_batch = lambda self, counts: contextlib.nullcontext(self)
    elif fault == "m2:label-prior":
        M2.label_prior = lambda self: __import__("pyro").distributions.Categorical(
            logits=torch.arange(self.num_classes, dtype=self.class_logits.dtype, device=self.class_logits.device) * 0.05)


def patch_training(fault: str) -> None:
    """Faults of the training path: the lean ELBO drops each site's scale
    and mask (``lean:unscaled``), or runs its own path for a messenger guide
    (``AutoNormalMessenger``...) instead of handing it to ``Trace_ELBO``
    (``lean:no-handoff``); bf16 layers hand their bf16 output on
    instead of fp32, so the log-densities are taken in bf16
    (``precision:bf16-outputs``); ``meanfield`` is built whatever order the
    guide samples in (``meanfield:order``)."""
    import torch

    from pyrovae.infer import objectives
    from pyrovae.training.precision import Precision

    if fault == "lean:unscaled":
        prune = objectives.prune_subsample_sites

        def unscaled(trace):  # the lean path's traces, before their log-densities are taken
            trace = prune(trace)
            for site in trace.nodes.values():
                site["scale"], site["mask"] = 1.0, None
            return trace

        objectives.prune_subsample_sites = unscaled
    elif fault == "lean:no-handoff":
        from pyro.infer.util import is_validation_enabled

        objectives.LeanTraceELBO._lean_applies = lambda self, guide: (
            self.num_particles == 1 and not self.vectorize_particles and not is_validation_enabled())
    elif fault == "precision:bf16-outputs":
        def enter(self):
            for layer in self.layers:
                region = torch.autocast(self.device_type, dtype=torch.bfloat16)
                self._handles += [layer.register_forward_pre_hook(lambda m, i, r=region: r.__enter__()),
                                  layer.register_forward_hook(lambda m, i, o, r=region: r.__exit__(None, None, None))]
            return self

        Precision.__enter__ = enter
    elif fault == "meanfield:order":
        objectives.check_sampling_order = lambda model, fields: None


def patch_spline(fault: str) -> None:
    """Faults of the flow prior's spline: Pyro's layer in its place
    (``spline:pyro``); the bin search of Pyro, against the knots + 1e-6
    (``spline:shifted-bins``)."""
    import torch
    from pyro.distributions import transforms as T

    from pyrovae.components import priors, spline

    if fault == "spline:pyro":
        priors.FLOW_LAYERS["spline_coupling"] = lambda d, hidden: T.spline_coupling(d, hidden_dims=hidden)
    elif fault == "spline:shifted-bins":
        def shifted(knots, inputs):
            idx = torch.sum(inputs[..., None] >= knots + 1e-6, dim=-1, keepdim=True) - 1
            return idx.clamp(0, knots.shape[-1] - 2)

        spline._bin_index = shifted


#: faults of the training path (see :func:`patch_training`)
TRAINING_FAULTS = ["lean:unscaled", "lean:no-handoff", "precision:bf16-outputs", "meanfield:order"]

def patch_plates(fault: str) -> None:
    """Faults of particle placement and of the iwae objective: every model
    is taken to use one plate, so particles go at dim -2
    (``plates:particles-at-2``); the iwae objective's weights are scaled by
    N / B site by site, before the logsumexp (``iwae:scale-per-site``)."""
    from pyrovae.infer import iwae, objectives, plates, weights

    if fault == "plates:particles-at-2":
        for module in (plates, weights, iwae, objectives):
            for name in ("plate_nesting", "model_nesting"):
                if hasattr(module, name):
                    setattr(module, name, lambda *args, **kwargs: 1)
    elif fault == "iwae:scale-per-site":
        log_weights = iwae.IWAE.log_weights

        def per_site(self, *args, **kwargs):
            log_w, scale = log_weights(self, *args, **kwargs)
            return log_w * scale, 1.0

        iwae.IWAE.log_weights = per_site


def patch_text(fault: str) -> None:
    """The text models score the padding after the end symbol too (``text:padding-counts``)."""
    import torch

    from pyrovae.models import text

    text._Words.scored = lambda self, codes: torch.ones_like(codes, dtype=torch.bool)


TEXT_FAULTS = ["text:padding-counts"]


def patch_ais(fault: str) -> None:
    """AIS (``pyrovae.infer.hmc``, ``pyrovae.infer.ais``): the prior tempered with the likelihood, every
    proposal accepted, the unconstrained map's log-Jacobian dropped, the adaptation's noise reused."""
    import torch

    from pyrovae.infer import ais, hmc

    if fault == "ais:temper-prior":
        hmc.annealed_prior = lambda beta, log_prior, log_lik: beta * (log_prior + log_lik)
    elif fault == "ais:no-metropolis":
        hmc.metropolis = lambda log_ratio: torch.ones_like(log_ratio, dtype=torch.bool)
    elif fault == "ais:no-jacobian":
        hmc.to_constrained = lambda transform, u: (transform(u), u.new_zeros(u.shape[:2]))
    elif fault == "ais:reuse-noise":
        first = ais.pass_seeds
        ais.pass_seeds = lambda seed: (first(seed)[0],) * 2


AIS_FAULTS = ["ais:temper-prior", "ais:no-metropolis", "ais:no-jacobian", "ais:reuse-noise"]


def patch_gaps(fault: str) -> None:
    """Faults of the inference gaps and of sharded evaluation."""
    if fault == "gaps:sampled-label":
        from pyrovae.infer import gaps

        exact = gaps._elbo
        gaps._elbo = lambda *args, site=None, **kwargs: exact(*args[:8], **kwargs)
    elif fault == "local_guide:offset-start":
        from pyrovae.models.hvae import HVAE

        own = HVAE.local_guide

        def shifted(self, x, **fields):
            params, guide_fn = own(self, x, **fields)
            return {k: v + 0.1 if k.endswith("_offset") else v for k, v in params.items()}, guide_fn

        HVAE.local_guide = shifted
    elif fault == "sharding:same-noise-every-chunk":
        from pyrovae.infer import loglik, sharding

        sharding.block_seed = loglik.block_seed = lambda seed, start: int(seed)


GAP_FAULTS = ["gaps:sampled-label", "local_guide:offset-start", "sharding:same-noise-every-chunk"]

#: faults of particle placement and of the iwae objective (see :func:`patch_plates`)
PLATE_FAULTS = ["plates:particles-at-2", "iwae:scale-per-site"]

PLATE_DESCRIPTIONS = {
    "plates:particles-at-2": "particles at dim -2 whatever plates the model nests",
    "iwae:scale-per-site": "iwae: N / B applied to every site before the logsumexp (a power mean)",
}

#: faults of the flow prior's spline (see :func:`patch_spline`)
SPLINE_FAULTS = ["spline:pyro", "spline:shifted-bins"]

#: faults of the estimators of a summed-out label (see :func:`patch_summed`)
SUMMED_FAULTS = ["summed:variance", "summed:label-prior", "summed:label-entropy", "objective:labelled-weight",
                 "objective:shard-counts", "m2:label-prior"]


def registries():
    from pyrovae.components.guides import guides
    from pyrovae.components.likelihoods import likelihoods
    from pyrovae.components.priors import priors

    return {"prior": priors, "guide": guides, "likelihood": likelihoods}


def all_faults():
    """Fault ids: ``prior:NAME``, ``guide:NAME``, ``likelihood:NAME``, ``kl:normal-normal``."""
    faults = [f"{kind}:{name}" for kind, registry in registries().items() for name in registry.names()]
    return faults + ["kl:normal-normal"] + SUMMED_FAULTS + TRAINING_FAULTS + SPLINE_FAULTS + PLATE_FAULTS + TEXT_FAULTS + AIS_FAULTS + GAP_FAULTS


SUMMED_DESCRIPTIONS = {
    "summed:variance": "m2 IS: stderr from the largest class's variance, not the sum",
    "summed:label-prior": "m2 IS/ELBO: log p(y) left in the reconstruction term",
    "summed:label-entropy": "m2 ELBO: the entropy of q(y|x) dropped",
    "objective:labelled-weight": "partly labelled objective: labelled points weighted 1",
    "objective:shard-counts": "partly labelled objective: a share of a batch weighted by its own counts",
    "m2:label-prior": "m2: p(y) not uniform (logits 0.05 k)",
    "lean:unscaled": "lean ELBO: each site's scale and mask dropped",
    "lean:no-handoff": "lean ELBO: messenger guides down the lean path, not handed to Trace_ELBO",
    "precision:bf16-outputs": "bf16 layers pass bf16 outputs on (log-densities in bf16)",
    "meanfield:order": "meanfield built for a bottom-up guide against a top-down model",
    "spline:pyro": "flow prior: Pyro's spline coupling (inputs just above a knot in the bin below)",
    "spline:shifted-bins": "spline: bins searched against the knots + 1e-6",
    "text:padding-counts": "text models: the padding after the end symbol scored too",
    "ais:temper-prior": "AIS from the prior: the prior tempered as well as the likelihood",
    "ais:no-metropolis": "AIS: every HMC proposal accepted",
    "ais:no-jacobian": "AIS: the log-Jacobian of the unconstrained map dropped",
    "ais:reuse-noise": "AIS: the estimate reuses the adaptation pass's noise",
    "gaps:sampled-label": "inference gaps: m2's label sampled in L[q*], not summed out",
    "local_guide:offset-start": "hvae local guide: the per-point offset of q(z1 given x, z2) starts at 0.1, not 0",
    "sharding:same-noise-every-chunk": "IS: every chunk of points draws the same random numbers",
}


def describe(fault: str) -> str:
    if fault in PLATE_DESCRIPTIONS:
        return PLATE_DESCRIPTIONS[fault]
    if fault in SUMMED_DESCRIPTIONS:
        return SUMMED_DESCRIPTIONS[fault]
    kind, name = fault.split(":")
    if kind == "kl":
        return f"analytic KL(Normal ‖ Normal) × {KL_FACTOR}"
    return f"{kind} `{name}`: log-density + {SHIFT}"


def apply(fault: str) -> None:
    if fault in SUMMED_FAULTS:
        patch_summed(fault)
        return
    if fault in TRAINING_FAULTS:
        patch_training(fault)
        return
    if fault in SPLINE_FAULTS:
        patch_spline(fault)
        return
    if fault in PLATE_FAULTS:
        patch_plates(fault)
        return
    if fault in TEXT_FAULTS:
        patch_text(fault)
        return
    if fault in AIS_FAULTS:
        patch_ais(fault)
        return
    if fault in GAP_FAULTS:
        patch_gaps(fault)
        return
    kind, name = fault.split(":")
    if kind == "kl":
        scale_normal_kl()
        return
    method = "dist"
    replace_component(registries()[kind], name, method)


# -- running the suite ----------------------------------------------------------------


#: the environment variable that carries the fault into every Python process a test starts
FAULT_VARIABLE = "PYROVAE_MUTATION_FAULT"

#: a ``sitecustomize`` module: Python imports it at start-up, so every process
#: (the test run, and the torchrun and spawned workers its tests start) has the fault
SITECUSTOMIZE = """\
import os
if os.environ.get({variable!r}):
    import importlib.util, sys
    sys.path.insert(0, {root!r})
    spec = importlib.util.spec_from_file_location("pyrovae_mutation_check", {script!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.apply(os.environ[{variable!r}])
"""


def run_one(fault: str, pytest_args) -> int:
    """In this process: inject ``fault`` (already injected at start-up where
    the sitecustomize of :func:`check` ran), then run pytest (imported after
    the injection, so the registries the tests parametrize over hold it)."""
    if os.environ.get(FAULT_VARIABLE) != fault:
        apply(fault)
    import pytest

    return pytest.main(list(pytest_args))


def check(fault: str, tests, timeout: float):
    import tempfile

    cmd = [sys.executable, __file__, "--run-one", fault, "--", "-x", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as site:
        # tests that compare one process against torchrun or spawned workers must see the fault in both
        Path(site, "sitecustomize.py").write_text(SITECUSTOMIZE.format(
            variable=FAULT_VARIABLE, root=str(ROOT), script=str(Path(__file__).resolve())))
        path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONWARNINGS": "ignore", FAULT_VARIABLE: fault, "PYTHONPATH": path}
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"fault": fault, "caught": False, "status": "timeout", "seconds": timeout, "first_failure": None}
    seconds = time.perf_counter() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
    status = {0: "passed", 1: "failed"}.get(proc.returncode, f"pytest exit {proc.returncode}")
    result = {"fault": fault, "caught": proc.returncode == 1, "status": status, "seconds": round(seconds, 1),
              "first_failure": failed[0] if failed else None}
    if proc.returncode not in (0, 1):
        result["output_tail"] = (proc.stdout + proc.stderr)[-2000:]
    return result


def markdown(results) -> str:
    lines = ["| fault | caught | first failing test | seconds |", "|---|---|---|---|"]
    for r in results:
        first = f"`{r['first_failure']}`" if r["first_failure"] else "—"
        lines.append(f"| {describe(r['fault'])} | {'yes' if r['caught'] else '**no**'} | {first} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run-one"]:
        sys.path.insert(0, str(ROOT))
        fault, rest = argv[1], argv[2:]
        sys.exit(run_one(fault, rest[1:] if rest[:1] == ["--"] else rest))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", nargs="*", help="fault ids (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="print the fault ids and exit")
    parser.add_argument("--tests", nargs="*", default=ORACLE_FILES + ["tests"], help="pytest paths, in order")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per fault")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    faults = all_faults()
    if args.list:
        print("\n".join(faults))
        return 0
    if args.faults:
        unknown = sorted(set(args.faults) - set(faults))
        if unknown:
            parser.error(f"unknown fault(s) {', '.join(unknown)}; valid: {', '.join(faults)}")
        faults = args.faults
    results = []
    for fault in faults:
        r = check(fault, args.tests, args.timeout)
        results.append(r)
        print(f"{fault:32s} {'CAUGHT' if r['caught'] else 'MISSED':7s} {r['seconds']:7.1f}s  {r['first_failure'] or r['status']}", flush=True)
    if args.markdown:
        print()
        print(markdown(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"shift": SHIFT, "kl_factor": KL_FACTOR, "results": results}, indent=2) + "\n")
    missed = [r["fault"] for r in results if not r["caught"]]
    print(f"\n{len(results) - len(missed)} of {len(results)} faults caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
