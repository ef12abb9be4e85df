"""The model registry and the contract every model keeps.

A model is an ``nn.Module`` with Pyro ``model`` and ``guide`` methods that
take the fields of a data batch as keyword arguments, the Pyro way::

    model(x, y=None, *, num_data=None, beta=1.0, obs_mask=None)
    guide(x, y=None, *, num_data=None, beta=1.0, obs_mask=None)

``num_data`` (full data-set size, for mini-batch scaling), ``beta`` (the
weight of the latent sites) and ``obs_mask`` are the only keywords pyrovae
adds; a model may leave out the ones it does not support.

A model may also declare:

- ``fields``: the batch fields it takes, e.g. ``("x", "y")`` (default ``("x",)``);
  the fields it needs are those without a default in ``model``'s signature;
- ``latent_sites``: the names of its latent sample sites;
- ``enumerate_sites``: discrete sites to enumerate in parallel, so that the
  objective becomes ``TraceEnum_ELBO`` (see ``pyrovae.infer.objectives``);
- conveniences that commands use: ``sample(n)``, ``reconstruct(x)``,
  ``code(x)``, ``check_data(x, what)``, ``data_shape``.

A command that needs a convenience the model lacks says so
(``require``). Register a model with :func:`~pyrovae.register_model`; its factory
receives the ``model`` config section and the data shape, plus the
options under ``model.options``::

    @pyrovae.register_model("mine")
    def build_mine(config, data_shape, hidden=64):
        return MyModel(data_shape, config.latent_dim, hidden)
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from typing import Any, Dict, Mapping, Tuple

import torch

from ..errors import ConfigError, DataError
from ..registry import Registry

__all__ = [
    "models", "register_model", "build_model", "model_fields", "summed_fields", "required_fields", "select_fields", "require",
    "unregistered", "eval_mode",
]

#: model factories ``(config, data_shape, **options) -> nn.Module``
models = Registry("model", context=("config", "data_shape"))
register_model = models.register

#: keywords pyrovae passes to ``model``/``guide`` that are not batch fields
CONTROL_KEYWORDS = ("num_data", "beta", "obs_mask")


def build_model(config: Any, data_shape: Tuple[int, ...]):
    """The model that ``config.name`` names, built from the ``model`` section
    ``config`` (a :class:`~pyrovae.config.ModelConfig`) for data points of
    shape ``data_shape``.

    Example::

        >>> import pyrovae
        >>> cfg = pyrovae.load_config({"model": {"name": "cvae", "latent_dim": 8}})
        >>> cvae = pyrovae.build_model(cfg.model, data_shape=(1, 28, 28))
        >>> type(cvae).__name__, cvae.fields       # the batch fields its model and guide take
        ('ConditionalVAE', ('x', 'y'))
        >>> pyrovae.build_model(cfg.model, data_shape=(784,)).latent_dim
        8
    """
    import_plugins(config.plugins)
    model = models.build({"name": config.name, **config.options}, config=config, data_shape=tuple(data_shape))
    for method in ("model", "guide"):
        if not callable(getattr(model, method, None)):
            raise ConfigError(f"model {config.name!r} has no {method}() method; a model needs Pyro model and guide methods")
    model.registered_name = config.name  # the name messages and results use
    return model


def import_plugins(modules) -> None:
    """Import each module of ``model.plugins`` (they register components and
    models as a side effect); a clear error when one cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(
                f"model.plugins: cannot import {name!r} ({e}); put the module on PYTHONPATH or "
                "install the package that provides it"
            ) from None


def model_name(model) -> str:
    return getattr(model, "registered_name", None) or getattr(type(model), "registered_name", None) or type(model).__name__


def model_fields(model) -> Tuple[str, ...]:
    """The batch fields ``model`` takes: its ``fields`` attribute, or ``("x",)``."""
    return tuple(getattr(model, "fields", ("x",)))


def summed_fields(model) -> Tuple[str, ...]:
    """The batch fields that are also enumerated sites (M2's label ``y``):
    observed where the batch gives them, summed out where it does not."""
    return tuple(s for s in getattr(model, "enumerate_sites", ()) or () if s in model_fields(model))


def required_fields(model) -> Tuple[str, ...]:
    """The fields without a default value in ``model.model``'s signature."""
    params = inspect.signature(model.model).parameters
    return tuple(
        name for name in model_fields(model)
        if name in params and params[name].default is inspect.Parameter.empty
    )


def select_fields(model, batch: Mapping[str, torch.Tensor], what: str = "the data") -> Dict[str, torch.Tensor]:
    """The fields of ``batch`` that ``model`` takes, as keyword arguments for
    its ``model`` and ``guide``.

    :raises DataError: when a field the model needs is missing from the batch.
    """
    missing = [name for name in required_fields(model) if batch.get(name) is None]
    if missing:
        raise DataError(
            f"model {model_name(model)!r} needs the field(s) {', '.join(missing)}, but {what} provides only "
            f"{', '.join(k for k, v in batch.items() if v is not None) or 'nothing'}; use a data source with "
            f"{', '.join(missing)} (labels are 'y') or another model"
        )
    return {name: batch[name] for name in model_fields(model) if batch.get(name) is not None}


def check_field_names(model, names, where: str) -> None:
    """Raise :class:`ConfigError` for keyword fields the model does not take."""
    unknown = [n for n in names if n not in model_fields(model)]
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; model {model_name(model)!r} takes "
            f"{', '.join(model_fields(model))}"
        )


def require(model, attribute: str, purpose: str):
    """``getattr(model, attribute)``, or a :class:`ConfigError` saying that
    ``purpose`` needs it and the model does not provide it."""
    value = getattr(model, attribute, None)
    if value is None:
        raise ConfigError(
            f"{purpose} needs the model to provide {attribute}(), and model {model_name(model)!r} does not; "
            f"add a {attribute} method to the model"
        )
    return value


def unregistered(model):
    """``model.direct_parameters()`` where the model has it (no ``pyro.module``
    registration in loops that optimize ``model.parameters()`` directly), else
    a no-op context."""
    direct = getattr(model, "direct_parameters", None)
    return direct() if direct is not None else contextlib.nullcontext()


@contextlib.contextmanager
def eval_mode(model):
    """``model.eval()`` inside the block; the train/eval mode it had before
    is restored afterwards, also after an error. Anything without ``eval``
    (a user's plain object) is left alone."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield model
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def model_device(model) -> torch.device:
    """Where ``model`` lives: its ``device`` attribute, else the device of its
    first parameter or buffer, else the CPU (a user's model need not say)."""
    device = getattr(model, "device", None)
    if device is not None:
        return torch.device(device)
    for tensor in list(model.parameters()) + list(model.buffers()) if hasattr(model, "parameters") else []:
        return tensor.device
    return torch.device("cpu")
