"""How pyrovae calls a model's ``model`` and ``guide``: the batch fields and
control keywords each one takes, read from its signature.

- **Batch fields.** A parameter named like a batch field (``x``, ``y``,
  ``index``; Pyro's plural style ``xs``, ``ys`` for ``x``, ``y``) receives
  that field when the batch has it; ``x`` goes to the first positional
  parameter when none is named so (``model(self, data)``). A ``fields``
  attribute narrows the set (a tuple of field names) or renames (a dict
  ``{parameter_name: batch_field}``).
- **Control keywords.** ``num_data``, ``beta`` and ``obs_mask`` go only to a
  function that names them or takes ``**kwargs``. A guide that takes
  nothing but ``*args, **kwargs`` (an autoguide such as ``AutoNormal``,
  which calls the model with its own arguments) gets exactly the model's.
- **Zero overhead.** Shared code calls ``pyro_callables(model)``; for a model
  whose parameters use the canonical names and take every control keyword
  (pyrovae's own families), it returns the bound methods themselves.

A control keyword a function cannot take is dropped where dropping it
changes nothing (``beta=1``, ``num_data=None``, ``obs_mask=None``); anywhere
else it is a one-line :class:`~pyrovae.ConfigError` that says how to
add it, so that no model is scored or trained otherwise than asked.

Example::

    >>> class Mine:
    ...     def model(self, xs, ys=None):
    ...         return xs.shape, ys
    ...     def guide(self, xs, ys=None):
    ...         pass
    >>> signature_fields(Mine())            # ys is the batch field y
    ('x', 'y')
    >>> model_fn, guide_fn = pyro_callables(Mine())
    >>> model_fn(x=torch.zeros(2, 3), y=torch.tensor([0, 1]), beta=1.0)  # renamed to xs, ys; beta=1 dropped
    (torch.Size([2, 3]), tensor([0, 1]))
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import torch

from ..errors import ConfigError

__all__ = ["BATCH_FIELDS", "CONTROL_KEYWORDS", "signature_fields", "field_parameters", "takes_keyword",
           "pyro_callables"]

#: the batch fields pyrovae hands to a model by parameter name
BATCH_FIELDS = ("x", "y", "index")
#: Pyro's plural parameter names for batch fields (``model(self, xs, ys=None)``)
PLURALS = {"x": "xs", "y": "ys"}
#: keywords pyrovae passes to ``model``/``guide`` that are not batch fields
CONTROL_KEYWORDS = ("num_data", "beta", "obs_mask")

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _parameters(fn) -> Tuple[Dict[str, inspect.Parameter], bool]:
    """``(named parameters, takes **kwargs)`` of ``fn``; a callable without
    a readable signature counts as taking anything."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}, True
    named = {n: p for n, p in params.items() if p.kind not in _VARIADIC}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _renames(model) -> Dict[str, str]:
    """``{parameter: field}`` of a ``fields`` dict; empty otherwise."""
    declared = getattr(model, "fields", None)
    return dict(declared) if isinstance(declared, Mapping) else {}


def signature_fields(model) -> Tuple[str, ...]:
    """The batch fields ``model`` takes (``x`` first): the ``fields``
    attribute (a tuple of fields, or the values of a ``{parameter: field}``
    dict), else every parameter of ``model.model`` named like a batch field.

    Example::

        signature_fields(vae)   # ('x',); ('x', 'y') for model(self, xs, ys=None)
    """
    declared = getattr(model, "fields", None)
    if isinstance(declared, str):
        raise ConfigError(f"model attribute fields={declared!r} must be a tuple of field names, e.g. ({declared!r},)")
    if declared is not None:
        return tuple(declared.values()) if isinstance(declared, Mapping) else tuple(declared)
    named, _ = _parameters(model.model)
    found = [f for f in BATCH_FIELDS if f in named or PLURALS.get(f) in named]
    return tuple(found) if "x" in found else ("x", *found)


def _binding(fn, fields: Tuple[str, ...], renames: Mapping[str, str]) -> Dict[str, Optional[str]]:
    """``{keyword pyrovae passes: the parameter of fn that receives it}``,
    None where ``fn`` cannot take it."""
    named, var_kw = _parameters(fn)
    inverse = {f: p for p, f in renames.items()}
    binding: Dict[str, Optional[str]] = {}
    for field in fields:
        name = next((n for n in (inverse.get(field), field, PLURALS.get(field)) if n in named), None)
        binding[field] = name if name is not None else (field if var_kw else None)
    if "x" in binding and (binding["x"] is None or binding["x"] not in named):
        claimed = set(binding.values())
        positional = [n for n, p in named.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        first = next((n for n in positional if n not in claimed and n not in CONTROL_KEYWORDS), None)
        binding["x"] = first if first is not None else binding["x"]
    for key in CONTROL_KEYWORDS:
        binding[key] = key if key in named or var_kw else None
    return binding


class _Plan(NamedTuple):
    model: Dict[str, Optional[str]]
    guide: Dict[str, Optional[str]]
    source: Tuple[Any, ...]  # what it was read from: a model whose guide or fields change is read again


def _source(model) -> Tuple[Any, ...]:
    return tuple(getattr(f, "__func__", f) for f in (model.model, model.guide)) + (getattr(model, "fields", None),)


#: per model object, how its model and guide are called (read once from their signatures)
_PLANS: "weakref.WeakKeyDictionary[Any, _Plan]" = weakref.WeakKeyDictionary()


def _plan(model) -> _Plan:
    try:
        plan = _PLANS.get(model)
    except TypeError:  # an object without weak references: read each time
        return _make_plan(model)
    source = _source(model)
    if plan is None or any(a is not b for a, b in zip(plan.source, source)):
        plan = _PLANS[model] = _make_plan(model, source)
    return plan


def _make_plan(model, source: Optional[Tuple[Any, ...]] = None) -> _Plan:
    fields, renames = signature_fields(model), _renames(model)
    model_binding = _binding(model.model, fields, renames)
    named, _ = _parameters(model.guide)
    # a guide that names no parameter (an autoguide) calls the model with its own arguments
    guide_binding = _binding(model.guide, fields, renames) if named else model_binding
    return _Plan(model_binding, guide_binding, _source(model) if source is None else source)


def field_parameters(model) -> Dict[str, Optional[str]]:
    """``{batch field: the parameter of model.model that receives it}``
    (None where it cannot take it)."""
    binding = _plan(model).model
    return {f: binding[f] for f in signature_fields(model)}


def takes_keyword(model, key: str) -> bool:
    """Whether ``model.model`` or ``model.guide`` takes the control keyword ``key``."""
    plan = _plan(model)
    return plan.model[key] is not None or plan.guide[key] is not None


def pyro_callables(model) -> Tuple[Callable, Callable]:
    """``(model_fn, guide_fn)``: ``model.model`` and ``model.guide`` as shared
    code calls them, with canonical keywords (``x``, ``y``, ``index``,
    ``num_data``, ``beta``, ``obs_mask``; ``x`` may come first positionally).

    For a model whose parameters use those names and take every control
    keyword, these are the bound methods themselves; otherwise thin wrappers
    that rename the fields and drop the keywords a function does not take.

    Example::

        model_fn, guide_fn = pyro_callables(vae)
        loss = Trace_ELBO().differentiable_loss(model_fn, guide_fn, x=x, beta=0.5)   # x: (B, *data_shape)
    """
    plan = _plan(model)
    beta_taken = plan.model["beta"] is not None or plan.guide["beta"] is not None
    return (_caller(model.model, plan.model, model, "model", beta_taken),
            _caller(model.guide, plan.guide, model, "guide", beta_taken))


def _caller(fn, binding: Dict[str, Optional[str]], model, role: str, beta_taken: bool) -> Callable:
    if all(k == v for k, v in binding.items()):
        return fn

    def call(*args, **kwargs):
        if args:  # the batch x, first and alone positionally (how evaluation calls)
            if len(args) > 1 or "x" in kwargs:
                raise TypeError(f"{role}: pass the batch x first and every other field by keyword")
            kwargs["x"] = args[0]
        out = {}
        for key, value in kwargs.items():
            target = binding.get(key, key)
            if target is None:
                _check_dropped(model, role, key, value, beta_taken)
                continue
            out[target] = value
        return fn(**out)

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", role)
    call.__wrapped__ = fn
    return call


def _check_dropped(model, role: str, key: str, value, beta_taken: bool) -> None:
    """A keyword ``role`` cannot take is dropped only where that changes nothing."""
    if key == "beta":
        fine = beta_taken or float(value) == 1.0
    elif key in ("num_data", "obs_mask"):
        fine = value is None or role == "guide"
    else:  # a batch field this function does not read (a guide without y)
        fine = True
    if not fine:
        from .base import model_name
        from .protocol import PROTOCOL_PAGE

        value_text = "a mask" if torch.is_tensor(value) else f"{value}"
        raise ConfigError(
            f"model {model_name(model)!r}: its {role} takes no {key!r} keyword but was called with {key}="
            f"{value_text}; add a {key}=None keyword to its {role} and use it (see {PROTOCOL_PAGE})"
        )
