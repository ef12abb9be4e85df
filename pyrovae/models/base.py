"""The model registry and the contract every model keeps.

A model is an object with Pyro ``model`` and ``guide`` methods (the
protocol: ``pyrovae.models.protocol`` and :ref:`protocol`). The batch fields they take
follow from ``model``'s signature (:mod:`pyrovae.models.signatures`): a
parameter named ``x``, ``y`` or ``index`` (or Pyro's ``xs``, ``ys``)
receives that field, the Pyro way::

    model(x, y=None, *, num_data=None, beta=1.0, obs_mask=None)
    guide(x, y=None, *, num_data=None, beta=1.0, obs_mask=None)

``num_data`` (full data-set size, for mini-batch scaling), ``beta`` (the
weight of the latent sites) and ``obs_mask`` are the only keywords pyrovae
adds; each goes only to a function that takes it. A model that takes
``index`` gets the positions of the batch's points in the training set.

A model may also declare:

- ``fields``: narrows the batch fields (``("x", "y")``) or renames them
  (``{"images": "x"}``); the fields it needs are those without a default
  in ``model``'s signature;
- ``latent_sites``: the names of its latent sample sites;
- ``enumerate_sites``: discrete sites to enumerate in parallel, so that the
  objective becomes ``TraceEnum_ELBO`` (see ``pyrovae.infer.objectives``);
- the optional capabilities of ``pyrovae.models.protocol.CAPABILITIES``
  that commands use: ``sample(n)``, ``reconstruct(x)``, ``check_data(x, what)``, ...

Shared code calls a model through ``pyro_callables(model)``, and checks
once, before training, that β can reach it (``check_beta``) and that it
broadcasts over a particles dimension (``check_broadcasting``).
Register a model with :func:`~pyrovae.register_model`; its factory
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
import warnings
import weakref
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..errors import ConfigError, DataError
from ..registry import Registry
from .signatures import CONTROL_KEYWORDS, field_parameters, pyro_callables, signature_fields, takes_keyword  # noqa: F401 (CONTROL_KEYWORDS re-exported)

__all__ = [
    "models", "register_model", "build_model", "model_fields", "summed_fields", "required_fields", "select_fields",
    "unregistered", "eval_mode", "pyro_callables", "check_beta", "check_broadcasting", "check_model",
]

#: model factories ``(config, data_shape, **options) -> nn.Module``
models = Registry("model", context=("config", "data_shape"))
register_model = models.register


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
    """The batch fields ``model`` takes, ``x`` first: its ``fields``
    attribute, else those ``model.model``'s signature names
    (:func:`~pyrovae.models.signatures.signature_fields`)."""
    return signature_fields(model)


def summed_fields(model) -> Tuple[str, ...]:
    """The batch fields that are also enumerated sites (M2's label ``y``):
    observed where the batch gives them, summed out where it does not."""
    return tuple(s for s in getattr(model, "enumerate_sites", ()) or () if s in model_fields(model))


def required_fields(model) -> Tuple[str, ...]:
    """The fields whose parameter in ``model.model``'s signature has no default value."""
    params = inspect.signature(model.model).parameters
    return tuple(
        field for field, name in field_parameters(model).items()
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


# -- checks before training and scoring -------------------------------------------------


def check_model(model, train_config, probe: Mapping[str, torch.Tensor]) -> None:
    """The checks a trainer makes once, on ``probe`` (the fields of two
    training points): :func:`check_beta` and :func:`check_broadcasting`,
    under Pyro's validation as ``train.validate_model`` sets it for the
    steps. Traced without autograd on a forked random generator, so the run draws
    what it would draw without them; an autoguide's parameters are made here,
    before the optimizer collects the model's parameters.

    Example::

        check_model(vae, cfg.train, {"x": x[:2]})   # x: (N, *data_shape)
    """
    import pyro

    check_beta(model, train_config)
    with pyro.validation_enabled(bool(train_config.validate_model)):  # as the steps will run
        check_broadcasting(model, probe)
        check_beta(model, train_config, probe)


def _beta_configured(train_config) -> Optional[str]:
    """How ``train_config`` sets a KL weight other than 1, or None."""
    from ..registry import spec_name

    schedule = spec_name(train_config.kl_schedule)
    if schedule != "constant":
        return f"train.kl_schedule {schedule!r}"
    return f"train.beta={train_config.beta}" if float(train_config.beta) != 1.0 else None


def check_beta(model, train_config, probe: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Refuse a KL weight other than 1 (``train.beta``, a KL schedule) for a
    model whose ``model`` and ``guide`` take no ``beta``: a one-line
    :class:`ConfigError`. With ``probe`` (batch fields of a few points), warn
    when the model takes ``beta`` but no latent site's ``scale`` or ``mask``
    differs between a trace at beta = 0.5 and one at beta = 1.

    Example::

        check_beta(vae, cfg.train)   # cfg.train.beta = 0.5 and a model without beta: ConfigError
    """
    setting = _beta_configured(train_config)
    if setting is None:
        return
    name = model_name(model)
    if not takes_keyword(model, "beta"):
        raise ConfigError(
            f"{setting} weighs the latent sites, but model {name!r} takes no beta keyword; add beta=1.0 to its "
            f"model and guide and scale the latent sites with pyrovae.kl_scale(beta) (or poutine.scale), "
            f"or set train.beta=1 with train.kl_schedule: constant"
        )
    if probe is not None and _latent_scales(model, probe, 0.5) == _latent_scales(model, probe, 1.0):
        warnings.warn(
            f"model {name!r} takes beta but no latent site's scale changes with it ({setting}): beta appears "
            "unused; scale the latent sites with pyrovae.kl_scale(beta) in model and guide"
        )


def _quiet(model, fields: Mapping[str, torch.Tensor]):
    """No autograd, no enclosing handlers, eval mode and a forked, seeded
    random generator: a check leaves the run as it was."""
    import pyro.poutine as poutine

    devices = sorted({v.device.index or 0 for v in fields.values() if torch.is_tensor(v) and v.device.type == "cuda"})
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=devices))
    torch.default_generator.manual_seed(0)  # the forked generators alone: other GPUs' streams stay as they were
    for index in devices:
        torch.cuda.default_generators[index].manual_seed(0)
    for context in (torch.no_grad(), poutine.block(), eval_mode(model), unregistered(model)):
        stack.enter_context(context)
    return stack


def _latent_scales(model, fields: Mapping[str, torch.Tensor], beta: float):
    """``(trace, site, scale, mask)`` of every latent site of the guide and
    the replayed model at KL weight ``beta``."""
    import pyro.poutine as poutine
    from pyro.poutine.util import site_is_subsample

    def plain(v):
        return tuple(v.detach().flatten().tolist()) if torch.is_tensor(v) else v

    fields = {k: v for k, v in fields.items() if k not in summed_fields(model)}  # as in evaluation: summed out
    model_fn, guide_fn = pyro_callables(model)
    with _quiet(model, fields):
        guide = poutine.trace(guide_fn).get_trace(**fields, beta=beta)
        traced = poutine.trace(poutine.replay(model_fn, trace=guide)).get_trace(**fields, beta=beta)
    return [(which, site["name"], plain(site["scale"]), plain(site["mask"]))
            for which, trace in (("guide", guide), ("model", traced)) for site in trace.nodes.values()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)]


def _rows(value, n: int = 2):
    """The first ``n`` rows of a per-point field; a number (``num_data``) as it is."""
    return value[:n] if torch.is_tensor(value) and value.dim() > 0 else value


def _is_shape_error(error: Exception) -> bool:
    """Whether ``error`` is about shapes (Pyro's plate mismatch, torch's size
    and reshape errors), not a value outside a constraint."""
    text = str(error).lower()
    return any(w in text for w in ("shape", "size", "dimension", "broadcast")) and "constraint" not in text


#: models whose broadcasting over particles is known good (checked once each)
_BROADCASTS: "weakref.WeakSet[Any]" = weakref.WeakSet()

#: particles of the broadcasting check: not 2, the size of the probe, so that no shape lines up by chance
_CHECK_PARTICLES = 3


def check_broadcasting(model, probe: Mapping[str, torch.Tensor]) -> None:
    """Trace ``model`` and ``guide`` on the first two points of ``probe``,
    then again inside a ``pyro.plate("particles", 3)`` to the left of every
    plate the model uses, as evaluation and vectorized objectives do. A
    failure of the second trace alone is a one-line :class:`ConfigError`
    (the error it raised chained); a failure of the first is the model's own
    and is raised unchanged. Once per model object.

    Example::

        check_broadcasting(vae, {"x": x[:2]})   # a decoder output reshaped with reshape(-1, 784) fails here
    """
    from ..infer.plates import model_nesting
    from ..infer.weights import traced_in_particles

    try:
        if model in _BROADCASTS:
            return
    except TypeError:  # an object without weak references: checked each time
        pass
    summed = summed_fields(model)  # scored as evaluation scores them: summed out, so drawn by the guide
    fields = {k: _rows(v) for k, v in probe.items() if k not in summed}
    x, others = fields["x"], {k: v for k, v in fields.items() if k != "x"}
    model_fn, guide_fn = pyro_callables(model)
    with _quiet(model, fields):
        nesting = model_nesting(model, x, others, x, others)  # the model's own errors surface here (found once)
        try:
            traced_in_particles(guide_fn, model_fn, ((x,), others), ((x,), others), x, _CHECK_PARTICLES, -1 - nesting)
        except (ValueError, RuntimeError, IndexError) as e:
            if not _is_shape_error(e):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError(
                f"model {model_name(model)!r} must broadcast over leading batch dimensions (evaluation adds a "
                f"particles dimension on the left): e.g. reshape with x.shape[:-1] + (...) instead of "
                f"reshape(-1, ...); with {_CHECK_PARTICLES} particles it failed: {first}"
            ) from e
    try:
        _BROADCASTS.add(model)
    except TypeError:
        pass
