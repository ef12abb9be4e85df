"""Sphinx extension: the configuration reference, written from the config
dataclasses of :mod:`pyrovae.config` at build time.

Each section (``data``, ``model``, ``train``) lists every key with its type,
its default and its meaning; the meaning is the key's ``:ivar:`` entry in
the dataclass docstring. A key without one, or an ``:ivar:`` for a key that
no longer exists, stops the build, so the page cannot fall behind the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from registry_reference import WHERE_CHOSEN, registry_label, yaml_value
from rst import (
    code_block,
    heading,
    list_table,
    literal,
    register_page,
)
from sphinx.errors import ExtensionError

IVAR = re.compile(r"^:ivar (\w+):(.*(?:\n[ \t]+.*)*)", re.MULTILINE)


def key_meanings(cls) -> dict[str, str]:
    """``{key: meaning}`` from the ``:ivar key: meaning`` lines of ``cls``'s docstring."""
    doc = inspect.getdoc(cls) or ""
    return {m.group(1): " ".join(m.group(2).split()) for m in IVAR.finditer(doc)}


def class_summary(cls) -> str:
    """``cls``'s docstring up to its first ``:ivar:`` (the prose about the section)."""
    doc = inspect.getdoc(cls) or ""
    return doc.split(":ivar", 1)[0].strip()


def type_name(tp) -> str:
    """``Optional[int]`` -> ``int or null``; ``Dict[str, Any]`` -> ``mapping``."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " or null"
    if origin is dict:
        return "mapping"
    if origin is list:
        return "list"
    return getattr(tp, "__name__", str(tp))


def spec_registries() -> dict[str, str]:
    """``{"model.prior": "prior", ...}``: which registry a spec-valued key chooses from."""
    return {key: kind for kind, (key, _) in WHERE_CHOSEN.items() if key}


def section_table(section: str, cls) -> str:
    meanings = key_meanings(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [k for k in fields if k not in meanings]
    stale = [k for k in meanings if k not in fields]
    if missing or stale:
        raise ExtensionError(
            f"config reference: {cls.__name__}'s docstring needs an ':ivar KEY:' for every key; "
            f"missing {missing}, for keys that do not exist {stale}"
        )
    hints = typing.get_type_hints(cls)
    defaults = cls()
    chooses = spec_registries()
    rows = []
    for name, f in fields.items():
        key = f"{section}.{name}"
        meaning = meanings[name]
        if f.metadata.get("spec"):
            kind = chooses.get(key)
            meaning += f" A component spec; choices: :ref:`{registry_label(kind)}`." if kind else " A component spec."
        rows.append((literal(key), type_name(hints[name]),
                     literal(yaml_value(getattr(defaults, name))), meaning))
    return list_table(("key", "type", "default", "meaning"), rows, widths=(18, 12, 25, 45))


def hierarchy_table() -> str:
    from pyrovae.config import LAYER_DEFAULTS

    rows = [(literal(k), literal(yaml_value(v)) if v is not None else "required") for k, v in LAYER_DEFAULTS.items()]
    return list_table(("key of a ``model.hierarchy`` entry", "default"), rows, widths=(1, 2))


def config_page() -> str:
    from pyrovae.config import SECTIONS, Config

    # this page is the reference of pyrovae.config: the target of :mod:`pyrovae.config`
    out = [".. _config:", "", heading("Configuration", "=", over=True), ".. py:module:: pyrovae.config", ""]
    out += [
        ("A run is configured by one YAML file (or a dict) with three sections, ``data``, ``model`` and "
        "``train``; :func:`pyrovae.load_config` reads it, and ``pyrovae train --set section.key=value`` "
        "overrides single keys (values are parsed as YAML). Missing keys take the defaults below; an "
        "unknown key is an error that names the valid keys. This page is written from the dataclasses "
        "in :mod:`pyrovae.config` when the documentation is built."),
        "",
        heading("The defaults", "-"),
        "``pyrovae train`` with no ``--config`` trains this:",
        "",
        code_block(Config().to_yaml(), "yaml"),
    ]
    for section, cls in SECTIONS.items():
        out += [heading(f"``{section}``: :class:`~pyrovae.{cls.__name__}`", "-"), class_summary(cls), "", section_table(section, cls)]
        if section == "model":
            out += ["Each entry of ``model.hierarchy`` is one stochastic layer above z1:", "", hierarchy_table()]
    return "\n".join(out)


def setup(app):
    return register_page(app, "config.rst", config_page)
