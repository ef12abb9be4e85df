"""The model protocol: what a model must have, and the optional
capabilities that training, evaluation, the figures and the commands ask for.

A model is anything with Pyro ``model`` and ``guide`` methods
(:class:`PyroModel`). Everything else is an optional *capability*, looked up
by name in ``CAPABILITIES``; shared code asks for a capability with
:func:`capability` (or tests for it with :func:`has_capability`), never for a
model family. A command that needs a capability the model lacks fails with
a one-line :class:`MissingCapability` that names it and this page.

Batch fields are handed to ``model`` and ``guide`` by their signatures: a
parameter named like a batch field (``x``, ``y``, ``index``, ...) receives
that field when the data has it (a ``fields`` attribute narrows the set).
The control keywords ``num_data``, ``beta`` and ``obs_mask`` are passed
only to a ``model``/``guide`` that takes them.

Example::

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyrovae.models.protocol import PyroModel, has_capability, command_needs
    >>> class Tiny(torch.nn.Module):
    ...     def model(self, x):
    ...         with pyro.plate("data", x.shape[0]):
    ...             pyro.sample("x", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1), obs=x)
    ...     def guide(self, x):
    ...         pass
    >>> isinstance(Tiny(), PyroModel), has_capability(Tiny(), "sample")
    (True, False)
    >>> command_needs("encode")
    ('encode',)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, Tuple, runtime_checkable

from ..errors import ConfigError

__all__ = [
    "PyroModel", "Capability", "CAPABILITIES", "COMMAND_NEEDS", "MissingCapability",
    "capability", "has_capability", "command_needs", "require_command", "PROTOCOL_PAGE",
]

#: the docs page that documents the protocol (docs/protocol.md), named in every error
PROTOCOL_PAGE = "the docs page protocol.html, docs/protocol.md in the source"


@runtime_checkable
class PyroModel(Protocol):
    """What every model has: Pyro ``model`` and ``guide`` functions over the
    same batch fields (``model(x)``, ``model(x, y=None)``, ...)."""

    def model(self, *args: Any, **kwargs: Any) -> Any: ...

    def guide(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Capability:
    """One optional capability of a model.

    :ivar str name: the attribute or method name the model defines.
    :ivar str signature: how it is called (or its type, for an attribute).
    :ivar str meaning: what it provides, in one sentence.
    :ivar tuple used_by: the commands and parts of pyrovae that use it.
    """

    name: str
    signature: str
    meaning: str
    used_by: Tuple[str, ...] = ()


#: every optional capability, by name; the docs render this table
CAPABILITIES: Dict[str, Capability] = {c.name: c for c in (
    Capability("fields", "tuple of str", "narrows (or renames) the batch fields read from model's signature",
               ("train", "evaluate")),
    Capability("enumerate_sites", "tuple of str", "discrete sites summed out exactly (TraceEnum_ELBO in training, "
               "an exact sum in evaluation); a site that is also a batch field is observed where given",
               ("train", "evaluate")),
    Capability("max_plate_nesting", "int", "the model's plate depth; read from a trace when absent",
               ("train", "evaluate")),
    Capability("objective", "objective(spec, train_fields) -> ELBO", "the family's own training objective "
               "(default: Trace_ELBO, TraceEnum_ELBO where sites are enumerated)", ("train",)),
    Capability("batch_needs", "batch_needs(train_config) -> BatchNeeds", "how batches are drawn "
               "(e.g. a number of points with a known label in every step)", ("train",)),
    Capability("metrics", "metrics(fields) -> {name: (sum, count)}", "extra per-point metrics "
               "(e.g. classification error), reported as val_<name> in training and <name> in evaluation",
               ("train", "evaluate")),
    Capability("metric_names", "{name: (key, count key, title)}", "the evaluation keys and table title of "
               "each metric (default: <name>, <name>_points and the name)", ("evaluate",)),
    Capability("check_data", "check_data(x, what)", "checks data before use (shape, support); "
               "default: finiteness only", ("train", "evaluate", "impute")),
    Capability("check_fields", "check_fields(fields, what)", "checks the other batch fields (label range)",
               ("train", "evaluate")),
    Capability("data_shape", "tuple of int", "the shape of one data point", ("plot", "sample", "impute")),
    Capability("latent_dim", "int", "the size of the latent code that encode and decode_mean use",
               ("plot", "encode")),
    Capability("sample", "sample(n, mean=True, **fields) -> (n, *data_shape)", "draws from the model "
               "(decoder means by default)", ("plot", "sample", "train figures")),
    Capability("reconstruct", "reconstruct(x, **fields) -> x_rec", "E[x | code(x)]",
               ("plot", "evaluate", "train figures")),
    Capability("encode", "encode(x, **fields) -> distribution", "the guide's code distribution for x (with mean and stddev)",
               ("encode", "plot")),
    Capability("decode_mean", "decode_mean(z, **fields) -> (*batch, *data_shape)", "E[x | z], how a code "
               "is shown in pictures (traversals, interpolations, the 2-D manifold)", ("plot",)),
    Capability("prior_draws", "prior_draws(n) -> (n, latent_dim)", "codes drawn from the prior, in the "
               "space decode_mean reads", ("plot",)),
    Capability("likelihood", "object with value_range and mean(params)", "the observation model; its value "
               "range scales pictures", ("plot", "sample", "impute")),
    Capability("classify", "classify(x) -> (N,) labels", "a classifier (for data without labels)",
               ("plot",)),
    Capability("num_classes", "int", "the number of classes of a label field y (labels 0..C-1): figures draw "
               "one row per class and --label picks one", ("plot", "sample")),
    Capability("to_text", "to_text(x) -> list of str", "shows data points as text instead of images "
               "(text models)", ("plot", "sample", "train figures")),
    Capability("impute_point", "impute_point(predictive) -> (*batch, *data_shape)", "imputation's point "
               "estimate from the importance-weighted mean of the model's x_mean site (default: that mean); a "
               "categorical model records class probabilities there (one more dim, the classes) and returns the "
               "most probable class", ("impute",)),
    Capability("impute_mask", "impute_mask(x, mask) -> mask", "the mask imputation uses, True = observed "
               "(default: the mask given); a text model keeps each word's end symbol and padding observed",
               ("impute",)),
    Capability("impute_methods", "tuple of str", "the imputers whose draws are valid for the model "
               "(default: all); a model that draws hidden elements as a proposal only lists importance",
               ("impute",)),
    Capability("reconstruction_errors", "reconstruction_errors(x, x_rec) -> {name: (N,)}", "per-point errors "
               "of reconstruct(x), reported under their names (default: mse, and bce where data and "
               "reconstructions lie in [0, 1]); a model of codes states its own (text: char_error_rate)",
               ("evaluate",)),
    Capability("local_guide", "local_guide(x, **fields) -> (params, guide_fn)", "the guide family with free "
               "per-point parameters: params is a dict of tensors with a leading N dim, initialized so that "
               "guide_fn at them is the model's own guide (the encoder's output; zero offsets for a guide layer "
               "that reads another latent), and guide_fn(params, x, ...) samples the guide's latent sites from "
               "them; an enumerated site the fields do not give (m2's label) is summed out exactly (inference "
               "gaps)", ("evaluate --gaps", "inference_gaps")),
)}

#: the capabilities each command needs beyond model and guide
COMMAND_NEEDS: Dict[str, Tuple[str, ...]] = {
    "train": (),
    "evaluate": (),
    "plot": ("sample", "reconstruct", "encode", "decode_mean", "prior_draws", "data_shape"),
    "sample": ("sample",),
    "encode": ("encode",),
    "impute": ("data_shape",),
}


class MissingCapability(ConfigError):
    """A command or function needs a capability the model does not provide."""


def has_capability(model: Any, name: str) -> bool:
    """Whether ``model`` provides the capability ``name`` (not None)."""
    _known(name)
    return getattr(model, name, None) is not None


def capability(model: Any, name: str, purpose: str, default: Any = ...) -> Any:
    """The capability ``name`` of ``model``; ``default`` where the model lacks
    it and a default is given, else a one-line :class:`MissingCapability`
    saying that ``purpose`` needs it.

    Example::

        sample = capability(model, "sample", "pyrovae sample")
    """
    _known(name)
    value = getattr(model, name, None)
    if value is not None:
        return value
    if default is not ...:
        return default
    from .base import model_name

    spec = CAPABILITIES[name]
    # a method is named by its call, an attribute by its name and type
    usage = spec.signature.split(" ->")[0] if spec.signature.startswith(name + "(") else f"{name} ({spec.signature})"
    raise MissingCapability(
        f"{purpose} needs the model capability {usage}: {spec.meaning}; model {model_name(model)!r} "
        f"does not provide it; add it (see {PROTOCOL_PAGE})"
    )


def command_needs(command: str) -> Tuple[str, ...]:
    """The capabilities ``command`` needs (``COMMAND_NEEDS``)."""
    return COMMAND_NEEDS[command]


def require_command(model: Any, command: str, needs: Optional[Tuple[str, ...]] = None) -> None:
    """Check up front that ``model`` has every capability ``command`` needs
    (``needs`` overrides the table); the first one missing raises
    :class:`MissingCapability`."""
    for name in command_needs(command) if needs is None else needs:
        capability(model, name, f"pyrovae {command}")


def _known(name: str) -> None:
    if name not in CAPABILITIES:
        raise KeyError(f"{name!r} is not a model capability; known: {', '.join(CAPABILITIES)}")
