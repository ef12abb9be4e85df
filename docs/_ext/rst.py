"""Small helpers that the page generators share: rst text building blocks
and writing a generated file only when its text changed (so Sphinx does not
rebuild pages that stayed the same)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


def heading(text: str, char: str = "=", over: bool = False) -> str:
    """An rst section title underlined (and, with ``over``, overlined) with ``char``."""
    line = char * max(len(text), 3)
    return f"{line}\n{text}\n{line}\n" if over else f"{text}\n{line}\n"


def indent(text: str, prefix: str = "   ") -> str:
    """``text`` with every non-empty line indented by ``prefix``."""
    return "\n".join(prefix + line if line.strip() else "" for line in text.splitlines())


def literal(value: str) -> str:
    """Inline code; empty text becomes an em dash."""
    return f"``{value}``" if value else "—"


def list_table(header: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[int] = ()) -> str:
    """A ``list-table`` directive; each cell is rst text (it may hold several lines)."""
    out = [".. list-table::", "   :header-rows: 1"]
    if widths:
        out.append("   :widths: " + " ".join(str(w) for w in widths))
    out.append("")
    for row in [list(header), *map(list, rows)]:
        for i, cell in enumerate(row):
            lines = str(cell).splitlines() or [""]
            bullet = "   * - " if i == 0 else "     - "
            out.append(bullet + lines[0])
            out.extend("       " + line if line.strip() else "" for line in lines[1:])
    return "\n".join(out) + "\n"


def code_block(text: str, language: str = "text") -> str:
    """A ``code-block`` directive holding ``text`` verbatim."""
    return f".. code-block:: {language}\n\n{indent(text.rstrip())}\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds exactly that; True if written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def generated_dir(app) -> Path:
    """Where the generators write: ``docs/generated`` (ignored by git)."""
    return Path(app.srcdir) / "generated"


def register_page(app, filename: str, render) -> dict:
    """Have Sphinx write ``generated/<filename>`` from ``render()`` as soon as
    the configuration is read: before sphinx-gallery runs the examples (so
    nothing an example registers leaks into the reference) and before the
    sources are collected. Returns the extension metadata for ``setup``."""

    def generate(app, config) -> None:
        write_if_changed(generated_dir(app) / filename, render())

    app.connect("config-inited", generate)
    return {"parallel_read_safe": True, "version": "1"}


def wide(markdown_table: str) -> str:
    """A markdown table inside a ``results-table`` container, which
    ``_static/pyrovae.css`` sets in a smaller font so that wide tables fit."""
    return f"```{{container}} results-table\n\n{markdown_table.strip()}\n\n```\n"
