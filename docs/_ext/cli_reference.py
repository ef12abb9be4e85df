"""Sphinx extension: the command-line reference, written from the argparse
parser of :mod:`pyrovae.cli` at build time.

Every verb gets its ``--help`` text, exactly as the terminal shows it at a
fixed width, and the examples of :mod:`cli_examples`, each parsed by the
real parser first: a verb without examples, an example for a verb that does
not exist, or an example that does not parse stops the build.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager

from cli_examples import EXAMPLES
from rst import code_block, heading, register_page
from sphinx.errors import ExtensionError

HELP_WIDTH = 88


@contextmanager
def terminal_width(columns: int) -> Iterator[None]:
    """argparse wraps help at ``$COLUMNS``; fix it so the page does not depend on the terminal."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def verb_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{verb: its sub-parser}``, in the order ``pyrovae --help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise ExtensionError("CLI reference: the pyrovae parser has no sub-commands")


def example_argv(line: str):
    """The arguments after ``pyrovae`` (or ``-m pyrovae`` under torchrun) of an example line."""
    words = shlex.split(line)
    for i, word in enumerate(words):
        if word == "pyrovae":
            return words[i + 1:]
    raise ExtensionError(f"CLI example {line!r} does not run pyrovae")


def check_examples(parser, verbs) -> None:
    missing = [v for v in verbs if not EXAMPLES.get(v)]
    unknown = [v for v in EXAMPLES if v not in verbs]
    if missing or unknown:
        raise ExtensionError(f"docs/_ext/cli_examples.py: verbs without examples {missing}, examples for unknown verbs {unknown}")
    for verb, examples in EXAMPLES.items():
        for line, _ in examples:
            argv = example_argv(line)
            if not argv or argv[0] != verb:
                raise ExtensionError(f"CLI example {line!r} is listed under {verb!r}")
            try:
                parser.parse_args(argv)
            except SystemExit:
                raise ExtensionError(f"CLI example {line!r} does not parse (see the usage message above)") from None


def examples_block(verb: str) -> str:
    text = "\n".join(f"# {what}\n{line}\n" for line, what in EXAMPLES[verb])
    return code_block(text, "bash")


def cli_page() -> str:
    from pyrovae.cli import build_parser

    with terminal_width(HELP_WIDTH):
        parser = build_parser()
        verbs = verb_parsers(parser)
        check_examples(parser, verbs)
        main_help = parser.format_help()
        helps = {verb: sub.format_help() for verb, sub in verbs.items()}
    out = [".. _cli:", "", heading("Command line", "=", over=True)]
    out += [
        ("``pip install -e .`` puts a ``pyrovae`` command on the path (``python -m pyrovae`` is the same). "
        "Every error from bad input prints one line, ``pyrovae: error: ...``, and exits with status 2. "
        "This page is written from the argument parser when the documentation is built."),
        "",
        code_block(main_help),
    ]
    for verb, text in helps.items():
        out += [f".. _cli-{verb}:", "", heading(f"``pyrovae {verb}``", "-"), "Examples:", "", examples_block(verb),
                "``--help``:", "", code_block(text)]
    return "\n".join(out)


def setup(app):
    return register_page(app, "cli.rst", cli_page)
