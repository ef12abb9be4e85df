"""Sphinx extension: the "Components" reference, written from pyrovae's
registries at build time.

Every registry that :data:`pyrovae.registry.REGISTRIES` lists gets a section,
and every registered name a subsection with its summary, its options and
their defaults (read with :meth:`Registry.options`, the same call that checks
a spec), and a spec to paste into a config. A component registered in
pyrovae appears here without anyone editing the docs.

The pages are written when the config is read, before sphinx-gallery runs
the examples, so components that an example registers stay out of them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import yaml
from rst import heading, list_table, literal, register_page

#: where each registry's choice is made, by registry kind; a registry not
#: listed here is still documented, just without this line
WHERE_CHOSEN = {
    "model": ("model.name", "its options under ``model.options``"),
    "prior": ("model.prior", None),
    "likelihood": ("model.likelihood", None),
    "encoder": ("model.encoder", None),
    "decoder": ("model.decoder", None),
    "guide": ("model.guide", None),
    "dataset": ("data.name", "its options under ``data.options``"),
    "objective": ("train.objective", None),
    "optimizer": ("train.optimizer", None),
    "lr_schedule": ("train.lr_schedule", None),
    "kl_schedule": ("train.kl_schedule", None),
    "mask": (None, "``pyrovae impute --mask NAME[:VALUE]`` (the value sets the first option)"),
    "imputer": (None, "``pyrovae impute --method NAME`` and the ``method`` argument of :func:`pyrovae.impute`"),
}


def yaml_value(value: Any) -> str:
    """A default as it would be written in a YAML config."""
    if value is inspect.Parameter.empty:
        return "(required)"
    plain = list(value) if isinstance(value, tuple) else value
    try:
        return yaml.safe_dump(plain, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()
    except yaml.representer.RepresenterError:
        return repr(value)


def spec_example(name: str, options: dict[str, Any]) -> str:
    """``{name: mog, num_components: 10, ...}``: the spec with every default spelled out."""
    parts = [f"name: {name}"]
    parts += [f"{key}: {'<required>' if v is inspect.Parameter.empty else yaml_value(v)}" for key, v in options.items()]
    return "{" + ", ".join(parts) + "}"


#: registries whose choice is ``section.name`` with the options under ``section.options``
OPTIONS_KEY = {"model": "model", "dataset": "data"}


def config_example(kind: str, name: str, options: dict[str, Any]) -> str:
    """How a config chooses this component, every default spelled out."""
    spec = spec_example(name, options)
    if kind in OPTIONS_KEY:
        inner = spec[len("{name: " + name):].lstrip(", ").rstrip("}")
        text = f"{{name: {name}" + (f", options: {{{inner}}}}}" if inner else "}")
        return f"In a config: ``{OPTIONS_KEY[kind]}: {text}``"
    key = WHERE_CHOSEN.get(kind, (None, None))[0]
    if key:
        section, field = key.split(".")
        return f"In a config: ``{section}: {{{field}: {spec}}}``"
    return f"Spec: ``{spec}``"


def register_function(module_name: str, registry) -> str | None:
    """The public ``register_*`` name that adds to ``registry``, if its module has one."""
    module = importlib.import_module(module_name)
    for attr in sorted(dir(module)):
        if attr.startswith("register") and getattr(getattr(module, attr), "__self__", None) is registry:
            import pyrovae

            if attr in pyrovae.__all__:
                return f":func:`pyrovae.{attr}`"
            return f"``{module_name}.{attr}``"
    return None


def summary_and_body(factory) -> tuple:
    """The first paragraph of a factory's docstring, and the rest."""
    doc = inspect.getdoc(factory) or ""
    head, _, rest = doc.partition("\n\n")
    return " ".join(head.split()), rest.strip()


def component_label(kind: str, name: str) -> str:
    """The rst label of one component's entry, e.g. ``component-prior-mog``."""
    return f"component-{kind}-{name}"


def registry_label(kind: str) -> str:
    """The rst label of one registry's section, e.g. ``registry-prior``."""
    return f"registry-{kind}"


#: section titles that the registry kind does not spell well by itself
TITLES = {"lr_schedule": "Learning-rate schedules", "kl_schedule": "KL schedules", "dataset": "Data sets"}


def section_title(kind: str) -> str:
    return TITLES.get(kind, kind.replace("_", " ").capitalize() + "s")


def component_entry(registry, name: str) -> str:
    factory = registry.get(name)
    options = registry.options(name)
    summary, body = summary_and_body(factory)
    out = [f".. _{component_label(registry.kind, name)}:", "", heading(f"{registry.kind} ``{name}``", "~")]
    out.append(summary or "(no docstring)")
    out.append("")
    if body:
        out += [body, ""]
    if options:
        rows = [(literal(k), "required" if v is inspect.Parameter.empty else literal(yaml_value(v))) for k, v in options.items()]
        out += [list_table(("option", "default"), rows, widths=(1, 2)), ""]
    else:
        out += ["No options.", ""]
    out += [f"{config_example(registry.kind, name, options)}", ""]
    where = f"{factory.__module__}.{factory.__qualname__}"
    out += [f"Defined by ``{where}``.", ""]
    return "\n".join(out)


def registry_section(module_name: str, attr: str, registry) -> str:
    out = [f".. _{registry_label(registry.kind)}:", "", heading(section_title(registry.kind), "-")]
    key, note = WHERE_CHOSEN.get(registry.kind, (None, None))
    lines: list[str] = []
    if key:
        lines.append(f"Chosen with ``{key}`` in the config" + (f", {note}." if note else "."))
    elif note:
        lines.append(f"Chosen with {note}.")
    registrar = register_function(module_name, registry)
    if registrar:
        lines.append(f"Add your own with {registrar}.")
    if registry.context:
        names = ", ".join(literal(c) for c in registry.context)
        lines.append(f"pyrovae passes {names} itself to a factory whose signature asks for them; a spec cannot set them.")
    links = ", ".join(f":ref:`{n} <{component_label(registry.kind, n)}>`" for n in registry.names())
    lines.append(f"Registry ``{module_name}.{attr}``; {len(registry.names())} registered: {links}.")
    out += [" ".join(lines), ""]
    out += [component_entry(registry, name) for name in registry.names()]
    return "\n".join(out)


def components_page() -> str:
    from pyrovae.registry import REGISTRIES, all_registries

    intro = (
        "Every swappable part of pyrovae is chosen by name from a registry. This page is written from "
        "the registries when the documentation is built, so it lists exactly what ``pyrovae list`` "
        "prints. A spec is a name, or a mapping ``{name: ..., <option>: <value>}``; an unknown name or "
        "option fails when the model is built, with the valid choices."
    )
    sections = [registry_section(m, a, r) for (m, a), r in zip(REGISTRIES, all_registries())]
    return "\n".join([".. _components:", "", heading("Components", "=", over=True), intro, "", *sections])


def setup(app):
    return register_page(app, "components.rst", components_page)
