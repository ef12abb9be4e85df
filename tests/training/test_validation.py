"""``train.validate_model: true`` trains every registered component with
Pyro's validation really on.

Each prior, likelihood, guide, encoder and decoder (iterated from the
registries, so a component registered later is covered with no edit here)
gets one short epoch with Pyro's validation switched off globally
beforehand: the trainer itself must switch it on. A probe wrapped around
the model records, at every training step, Pyro's validation flags and
whether an out-of-support value really raises; the loss must be finite.
"""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist
import pyro.distributions.util
import pyro.infer.util
import pyro.poutine.util

import pyrovae
from pyrovae.data import load_data
from pyrovae.components.guides import guides
from pyrovae.components.likelihoods import likelihoods
from pyrovae.components.nets import decoders, encoders
from pyrovae.components.priors import priors
from pyrovae.training.trainer import Trainer

from helpers import SHAPE, component_options, data_config_for, tiny_config

REGISTRIES = {"prior": priors, "likelihood": likelihoods, "guide": guides, "encoder": encoders, "decoder": decoders}


def components():
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            yield kind, name


def validation_state():
    """What Pyro's validation looks like from inside a step: its three flags,
    torch's default for distribution arguments, and whether a Bernoulli
    really refuses the out-of-support value 0.5."""
    try:
        dist.Bernoulli(probs=torch.tensor(0.3)).log_prob(torch.tensor(0.5))
        raises = False
    except ValueError:
        raises = True
    return {
        "infer": pyro.infer.util.is_validation_enabled(),
        "poutine": pyro.poutine.util.is_validation_enabled(),
        "distributions": pyro.distributions.util.is_validation_enabled(),
        "torch default": torch.distributions.Distribution._validate_args,
        "out-of-support value raises": raises,
    }


def probe(vae):
    """Record :func:`validation_state` at every call of ``vae.model`` (each step and validation batch)."""
    seen = []
    model = vae.model

    def probed(*args, **kwargs):
        seen.append(validation_state())
        return model(*args, **kwargs)

    vae.model = probed
    return seen


def short_run(model_overrides=(), validate_model=True):
    """One epoch on 200 tiny points with ``model_overrides``; data inside the likelihood's support."""
    cfg = tiny_config(
        model={**tiny_config()["model"], **dict(model_overrides)},
        train={**tiny_config()["train"], "epochs": 1, "validate_model": validate_model},
    )
    likelihood = pyrovae.VAE.from_config(cfg, data_shape=SHAPE).likelihood
    cfg["data"].update(data_config_for(likelihood), val_size=50, options={"num_points": 250, "num_test": 10})
    cfg = pyrovae.load_config(cfg)
    splits = load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    seen = probe(vae)
    history = Trainer(vae, splits, cfg).fit()
    return history, seen


@pytest.mark.parametrize("kind, name", list(components()))
def test_each_component_trains_with_pyro_validation_on(kind, name):
    """validate_model: true turns Pyro's validation on for every step, even
    when it was off before, and leaves it as it found it; the losses are finite."""
    pyro.enable_validation(False)
    history, seen = short_run({kind: {"name": name, **component_options(kind, name)}})
    assert len(seen) >= 4 + 1  # 4 training steps and a validation pass
    on = {key: True for key in validation_state()} | {"out-of-support value raises": True}
    assert all(state == on for state in seen), [s for s in seen if s != on][:1]
    assert validation_state()["infer"] is False  # restored after training
    assert math.isfinite(history[0]["train_loss"]) and math.isfinite(history[0]["val_loss"])


def test_validation_is_off_during_steps_when_not_asked_for():
    """The control: validate_model: false switches validation off during
    training although it is on outside (as in every test), and the probe sees
    the difference."""
    assert validation_state()["out-of-support value raises"]  # conftest turned it on
    history, seen = short_run(validate_model=False)
    assert seen and all(not any(state.values()) for state in seen), seen[:1]
    assert validation_state()["out-of-support value raises"]  # restored after training
    assert math.isfinite(history[0]["train_loss"])
