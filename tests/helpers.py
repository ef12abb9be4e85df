"""Small configs and models shared by the tests, and the experiment scripts
loaded as modules."""

import importlib.util
from pathlib import Path

import pyrovae

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

SHAPE = (1, 8, 8)


def tiny_config(**sections):
    """A fast config on the synthetic source: 8x8 images, latent 3, one hidden layer."""
    cfg = {
        "data": {"name": "synthetic", "val_size": 200, "binarize": "static"},
        "model": {
            "latent_dim": 3,
            "encoder": {"name": "mlp", "hidden": [32]},
            "decoder": {"name": "mlp", "hidden": [32]},
        },
        "train": {"epochs": 2, "batch_size": 50, "progress": False, "device": "cpu"},
    }
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


def tiny_model_config(**model):
    """The ``model`` section of :func:`tiny_config` with ``model`` overrides."""
    return {**tiny_config()["model"], **model}


def component_options(registry_kind, name):
    """Options that keep a component small in tests."""
    small = {("prior", "vamp"): {"num_components": 5}, ("prior", "mog"): {"num_components": 3}, ("prior", "flow"): {"hidden": [8]}}
    return small.get((registry_kind, name), {})


def build(shape=SHAPE, **model):
    return pyrovae.VAE.from_config(tiny_model_config(**model), data_shape=shape)


def data_config_for(likelihood):
    """A ``data`` section whose values lie in ``likelihood``'s support,
    derived from the support itself (so user likelihoods work too)."""
    from torch.distributions import constraints

    support = likelihood.support
    if support is constraints.boolean:
        return {"binarize": "static"}
    if isinstance(support, constraints.integer_interval):
        return {"binarize": "none", "quantize": True}
    return {"binarize": "none"}


def setup(seed=0, **sections):
    """``(cfg, splits, vae)`` of :func:`tiny_config` with ``sections``; the
    model's initial weights are drawn under ``seed``."""
    import pyro

    from pyrovae.data import load_data

    cfg = pyrovae.load_config(tiny_config(**sections))
    pyro.set_rng_seed(seed)
    splits = load_data(cfg.data)
    return cfg, splits, pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)


def without_seconds(records):
    """Metrics records without their wall-clock ``seconds`` (the one field two runs may not share)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_identical(a, b, where="state"):
    """``a`` and ``b`` (nested dicts, lists, tuples, tensors, numbers) are
    exactly equal: tensors by ``torch.equal`` with the same dtype."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a, key=str) == sorted(b, key=str), (where, sorted(a, key=str), sorted(b, key=str))
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), (where, a, b)  # NaN == NaN here


def checked_traces(model, x, num_particles=2, **fields):
    """``(guide_trace, model_trace)`` of ``model`` on ``x`` (and ``fields``)
    in a particles plate at dim -2, with Pyro validation on and warnings
    as errors; the traces are checked to agree site by site
    (``check_model_guide_match``) and their log-densities computed."""
    import warnings

    import pyro
    import pyro.poutine as poutine
    from pyro.util import check_model_guide_match

    pyro.enable_validation(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pyro.plate("particles", num_particles, dim=-2):
            guide_trace = poutine.trace(model.guide).get_trace(x, **fields)
            model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x, **fields)
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting=1)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
    return guide_trace, model_trace


def assert_resumes_exactly(make_config, tmp_path, epochs=3):
    """Train a registered model (``make_config(epochs)`` gives its config
    dict) for ``epochs`` epochs straight, and again cut after one epoch and
    resumed into a model with other initial weights: the checkpoints'
    weights and optimizer states must be bitwise identical."""
    import pyro

    from pyrovae.runs import load_checkpoint

    cfg = pyrovae.load_config(make_config(epochs))
    splits = pyrovae.load_data(cfg.data)
    runs = {}
    for name, seed, plan in (("straight", 0, [epochs]), ("cut", 0, [1, epochs])):
        for i, total in enumerate(plan):
            pyro.set_rng_seed(seed + i)  # a resumed model starts from other weights: resume must overwrite them
            model = pyrovae.build_model(cfg.model, splits.data_shape)
            pyrovae.train(model, splits, make_config(total), run_dir=tmp_path / name, resume=i > 0)
        runs[name] = load_checkpoint(tmp_path / name / "checkpoint.pt")
    assert_identical(runs["straight"]["model"], runs["cut"]["model"])
    assert_identical(runs["straight"]["optimizer"], runs["cut"]["optimizer"])


def load_experiment(name):
    """The script ``experiments/<name>.py`` as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
