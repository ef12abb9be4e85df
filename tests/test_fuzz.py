"""Fuzzing the config loader and the data validation with hypothesis.

Every case must end in a valid object (or run) or a :class:`PyrovaeError`;
anything else (a raw error from torch, Pyro, numpy or YAML) fails the test.

Example counts are kept small for the test suite; a longer campaign::

    PYROVAE_FUZZ_SCALE=20 python -m pytest tests/test_fuzz.py --hypothesis-show-statistics
"""

import math
import os
import string
import warnings

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyro

import pyrovae
from pyrovae.config import SECTIONS, Config
from pyrovae.data import load_data
from pyrovae.errors import PyrovaeError
from pyrovae.guides import guides
from pyrovae.likelihoods import likelihoods
from pyrovae.nets import decoders, encoders
from pyrovae.optim import objectives, optimizers, schedules
from pyrovae.priors import priors
from pyrovae.train import Trainer

from helpers import tiny_config

SCALE = int(os.environ.get("PYROVAE_FUZZ_SCALE", "1"))


def fuzz(n):
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        database=None,
        derandomize=SCALE == 1,  # the suite is repeatable; a campaign explores
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


def ends_cleanly(fn, *args, **kwargs):
    """Run ``fn``; a PyrovaeError is a clean end (its message must say something)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except PyrovaeError as e:
        assert str(e).strip(), "an error must explain itself"
        return None


# -- strategies ---------------------------------------------------------------------

EXTREME_INTS = st.sampled_from([0, -1, 1, 2, 3, 10**5, -(10**9), 2**63])
EXTREME_FLOATS = st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf])
words = st.text(alphabet=string.ascii_lowercase + "_.", min_size=0, max_size=10)
leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), EXTREME_INTS, st.floats(), EXTREME_FLOATS, words,
)
values = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(words, inner, max_size=4), max_leaves=10)

COMPONENTS = {
    "encoder": encoders, "decoder": decoders, "prior": priors, "likelihood": likelihoods, "guide": guides,
    "objective": objectives, "optimizer": optimizers, "lr_schedule": schedules,
}


def spec(registry):
    """A component spec: a real or bogus name with real or bogus options of random values."""
    name = st.sampled_from(registry.names()) | words
    return st.one_of(
        name,
        st.builds(lambda n, opts: {"name": n, **opts}, name, st.dictionaries(words | st.sampled_from(_all_options(registry)), values, max_size=3)),
        values,
    )


def _all_options(registry):
    return sorted({k for n in registry.names() for k in registry.options(n)}) or ["x"]


def section(name):
    keys = list(SECTIONS[name].__dataclass_fields__)
    field_values = {k: (spec(COMPONENTS[k]) if k in COMPONENTS else values) for k in keys}
    return st.fixed_dictionaries({}, optional={k: v for k, v in field_values.items()}) | st.dictionaries(words, values, max_size=3)


random_configs = st.one_of(
    st.fixed_dictionaries({}, optional={name: section(name) for name in SECTIONS}),
    st.dictionaries(st.sampled_from(list(SECTIONS)) | words, values, max_size=3),
    values,
)


# -- the config loader ----------------------------------------------------------------


@fuzz(300)
@given(random_configs)
def test_random_nested_configs(d):
    cfg = ends_cleanly(Config.from_dict, d)
    if cfg is not None:  # a config that loads survives its YAML round trip (as text: NaN != NaN)
        assert Config.from_dict(yaml.safe_load(cfg.to_yaml())).to_yaml() == cfg.to_yaml()


@fuzz(200)
@given(st.lists(st.tuples(words, st.text(max_size=20)), min_size=1, max_size=3))
def test_random_overrides(pairs):
    ends_cleanly(Config().override, [f"{k}={v}" for k, v in pairs])


@fuzz(100)
@given(st.text(max_size=200))
def test_random_yaml_files(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    ends_cleanly(Config.from_yaml, path)


# -- configs all the way to a trained model --------------------------------------------

TINY_DATA = {"name": "synthetic", "options": {"num_points": 48, "num_test": 8, "shape": [1, 4, 4]}, "val_size": 8}


@st.composite
def run_configs(draw):
    """tiny_config with a few keys set to random or extreme values."""
    cfg = tiny_config(data=dict(TINY_DATA), train={**tiny_config()["train"], "epochs": 1, "batch_size": 16})
    extremes = {
        ("model", "latent_dim"): EXTREME_INTS | st.integers(-3, 4),
        ("train", "batch_size"): EXTREME_INTS | st.sampled_from([47, 48, 49, 1000]),  # around and over the data size
        ("train", "epochs"): st.sampled_from([0, 1, -1, 1.5, "2"]),
        ("train", "optimizer"): st.builds(lambda n, lr: {"name": n, "lr": lr}, st.sampled_from(optimizers.names()), EXTREME_FLOATS | st.floats(1e-4, 1.0)),
        ("train", "beta"): EXTREME_FLOATS,
        ("train", "grad_clip"): st.none() | EXTREME_FLOATS,
        ("train", "eval_batch_size"): EXTREME_INTS,
        ("data", "val_size"): st.sampled_from([0, 1, 47, 48, 100, -1]),
        ("data", "binarize"): st.sampled_from(["dynamic", "static", "none", "sometimes"]),
        ("data", "quantize"): st.booleans(),
        ("data", "subset"): st.none() | EXTREME_INTS,
    }
    for key in ("encoder", "decoder", "prior", "likelihood", "guide"):
        extremes[("model", key)] = spec(COMPONENTS[key])
    for key in ("objective", "lr_schedule"):
        extremes[("train", key)] = spec(COMPONENTS[key])
    chosen = draw(st.lists(st.sampled_from(sorted(extremes)), min_size=1, max_size=3, unique=True))
    for sec, key in chosen:
        cfg[sec][key] = draw(extremes[(sec, key)])
    return cfg


def train_run(cfg_dict):
    cfg = pyrovae.load_config(cfg_dict)
    pyro.set_rng_seed(0)
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    history = Trainer(vae, splits, cfg).fit()
    return history


@fuzz(40)
@given(run_configs())
def test_extreme_configs_train_or_fail_clearly(cfg):
    ends_cleanly(train_run, cfg)


# -- data validation -------------------------------------------------------------------

DTYPES = st.sampled_from(["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "U3", "datetime64[s]"])
SHAPES = st.sampled_from([(0,), (5,), (0, 16), (12, 0), (12, 16), (12, 1, 4, 4), (12, 2, 2, 2, 2), (3, 16), (40, 1, 4, 4)])


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind in "fc":
        elements = st.floats(0, 1, width=16 if dtype == np.float16 else 32) | st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 2.0])
        a = draw(hnp.arrays(dtype, shape, elements=elements))
    else:
        a = draw(hnp.arrays(dtype, shape))
    return a


def load_and_check(path, binarize, likelihood):
    cfg = pyrovae.load_config(
        tiny_config(
            data={"name": "npy", "path": str(path), "val_size": 2, "binarize": binarize, "options": {"test_fraction": 0.25}},
            model={**tiny_config()["model"], "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}, "likelihood": likelihood},
            train={**tiny_config()["train"], "epochs": 1, "batch_size": 4},
        )
    )
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    return Trainer(vae, splits, cfg).fit()


@fuzz(80)
@given(arrays(), st.sampled_from(["dynamic", "static", "none"]), st.sampled_from(["bernoulli", "gaussian", "continuous_bernoulli"]))
def test_random_arrays_train_or_fail_clearly(tmp_path, a, binarize, likelihood):
    path = tmp_path / "x.npy"
    np.save(path, a, allow_pickle=False) if a.dtype != object else None
    ends_cleanly(load_and_check, path, binarize, likelihood if likelihood in likelihoods else "bernoulli")


@fuzz(60)
@given(
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool, torch.float16]),
    st.sampled_from([(0, 1, 4, 4), (6, 1, 4, 4), (6, 16), (6, 4, 4), (6,), (6, 1, 4, 4, 1)]),
    st.sampled_from([0.5, 1.0, 0.0, math.nan, math.inf, 3.0]),
)
def test_random_tensors_through_the_python_api(dtype, shape, fill):
    x = torch.full(shape, fill).to(dtype) if dtype.is_floating_point else torch.full(shape, fill if math.isfinite(fill) else 0).to(dtype)
    vae = pyrovae.VAE.from_config(tiny_config()["model"], data_shape=(1, 4, 4))
    cfg = tiny_config(train={**tiny_config()["train"], "epochs": 1, "batch_size": 4})
    ends_cleanly(pyrovae.train, vae, x, cfg)


@pytest.mark.parametrize("model", [{"latent_dim": 10**9}, {"encoder": {"name": "mlp", "hidden": [10**6, 10**6]}}])
def test_sizes_beyond_memory_fail_clearly(model):
    """Sizes too large to allocate (left out of the strategies above, which
    would otherwise stop at this known case)."""
    cfg = tiny_config(data=dict(TINY_DATA), train={**tiny_config()["train"], "epochs": 1})
    cfg["model"].update(model)
    ends_cleanly(train_run, cfg)
