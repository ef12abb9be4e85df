"""Reading config values: YAML as people write it, and the checks of one
value (its type, a minimum, a choice, a component spec, an override's path).

:mod:`pyrovae.config` builds its dataclasses from these; each check fails
with a :class:`~pyrovae.ConfigError` that names the key and the valid values.

Example::

    >>> from pyrovae.config_values import parse_yaml, coerce
    >>> parse_yaml("lr: 1e-3")                  # YAML 1.1 alone would read a string
    {'lr': 0.001}
    >>> coerce("train.epochs", 3, int), coerce("train.lr", 1, float)
    (3, 1.0)
"""

import difflib
import os
import re
import typing
from typing import Any, Dict, List, Union

import yaml

from .errors import ConfigError
from .validators import int_at_least, is_int, is_number

__all__ = ["parse_yaml", "read_yaml", "check_keys", "coerce", "as_spec", "check_min", "check_choice", "set_path"]

Spec = Dict[str, Any]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; read it as a float, as people mean it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a float."""
    return yaml.load(text, Loader=_Loader)


def read_yaml(path) -> Any:
    """The contents of a YAML file (read as :func:`parse_yaml` does), with a
    :class:`ConfigError` for a missing or invalid file."""
    if not os.path.exists(path):
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path) as f:
            return parse_yaml(f.read())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None


def check_keys(where: str, d: Dict[str, Any], valid) -> None:
    """A :class:`ConfigError` for the first key of ``d`` not in ``valid``, with the closest valid key."""
    for key in d:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(valid)}")


def coerce(where: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted as floats."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is float and is_number(value):
        return float(value)
    if tp is int and is_int(value):
        return int(value)
    if tp in (str, bool) and type(value) is tp:
        return value
    if origin is dict and isinstance(value, dict):
        return value
    if origin is list and isinstance(value, (list, tuple)):
        return list(value)
    expected = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{where} must be of type {expected}, got {value!r} ({type(value).__name__})")


def as_spec(where: str, value: Any) -> Spec:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" in value and isinstance(value["name"], str):
        return dict(value)
    raise ConfigError(f"{where} must be a component name or a mapping with a 'name' key, got {value!r}")


def check_min(where: str, value: Any, minimum: int) -> None:
    int_at_least(value, minimum, where)


def check_choice(where: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")


def set_path(d: Dict[str, Any], path: List[str], value: Any, item: str) -> None:
    """Assign ``value`` at ``path``; sections and their keys must exist
    (component options deeper down are checked when the component is built)."""
    node = d
    for depth, key in enumerate(path):
        if depth < 2 and key not in node:
            check_keys(".".join(path[:depth]) or "config", {key: None}, node)
        if depth == len(path) - 1:
            node[key] = value
        elif not isinstance(node.get(key), dict):
            raise ConfigError(f"override {item!r}: {'.'.join(path[: depth + 1])} is not a mapping")
        else:
            node = node[key]
