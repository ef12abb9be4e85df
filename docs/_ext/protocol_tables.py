"""Sphinx extension: the tables of the model protocol page
(``docs/protocol.md``), written from :mod:`pyrovae.models.protocol` at
build time.

``generated/protocol_capabilities.rst.inc`` lists every optional capability
of :data:`~pyrovae.models.protocol.CAPABILITIES` (name, how it is called,
what it provides, who uses it); ``generated/protocol_commands.rst.inc`` the
capabilities each command needs (:data:`~pyrovae.models.protocol.COMMAND_NEEDS`).
A capability added to the table in the code appears on the page without
anyone editing the docs. The ``.rst.inc`` suffix keeps them from being
pages of their own: ``protocol.md`` includes them.
"""

from __future__ import annotations

from rst import generated_dir, list_table, literal, write_if_changed


def capabilities_table() -> str:
    from pyrovae.models.protocol import CAPABILITIES

    rows = [(literal(c.name), literal(c.signature), c.meaning, ", ".join(literal(u) for u in c.used_by))
            for c in CAPABILITIES.values()]
    return list_table(("Capability", "Signature or type", "What it provides", "Used by"), rows, widths=(14, 28, 42, 16))


def commands_table() -> str:
    from pyrovae.models.protocol import COMMAND_NEEDS

    rows = [(literal(f"pyrovae {command}"), ", ".join(literal(n) for n in needs) or "nothing beyond model and guide")
            for command, needs in COMMAND_NEEDS.items()]
    return list_table(("Command", "Needs"), rows, widths=(25, 75))


def setup(app):
    def generate(app, config) -> None:
        out = generated_dir(app)
        write_if_changed(out / "protocol_capabilities.rst.inc", capabilities_table())
        write_if_changed(out / "protocol_commands.rst.inc", commands_table())

    app.connect("config-inited", generate)
    return {"parallel_read_safe": True, "version": "1"}
