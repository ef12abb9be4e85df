"""The ``pyrovae`` command line.

Each sub-command lives in its own module under :mod:`pyrovae.commands` and
exposes ``add_parser(subparsers)``, which sets ``func`` to the function that
runs it. Every ``PyrovaeError`` (a bad config, data, checkpoint or run
directory) is printed as one clear line with exit status 2; ``pyrovae
--debug`` or the environment variable ``PYROVAE_DEBUG=1`` prints its full
traceback before that line. Any other exception is a bug, in pyrovae or in a
user's own component, and keeps its traceback with or without ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import List, Optional

from . import __version__
from .commands import Parser
from .errors import PyrovaeError

__all__ = ["main", "COMMANDS", "DEBUG_ENV", "debug_requested"]

#: sub-command modules in pyrovae.commands, in the order ``--help`` lists them
COMMANDS = ["train", "evaluate", "bdmc", "list", "plot", "sample", "encode", "impute"]

#: the environment variable that turns ``--debug`` on (any value but "", 0, false, no)
DEBUG_ENV = "PYROVAE_DEBUG"

_DEBUG_HELP = ("print the full traceback of a pyrovae error (a bad config, data or run directory) before its "
               f"one-line message; the environment variable {DEBUG_ENV}=1 does the same. A bug's traceback is "
               "printed with or without it")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pyrovae", description="Variational autoencoders the Pyro way.")
    parser.add_argument("--version", action="version", version=f"pyrovae {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    for command in sub.choices.values():
        # also after the sub-command (pyrovae train ... --debug); SUPPRESS keeps a
        # --debug given before it from being reset to False
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def debug_requested(args: Optional[argparse.Namespace] = None) -> bool:
    """Whether to print the traceback of a ``PyrovaeError``: ``--debug`` in
    ``args``, or :data:`DEBUG_ENV` set to anything but ``""``, ``0``, ``false``, ``no``.

    Example::

        >>> import argparse
        >>> debug_requested(argparse.Namespace(debug=True))
        True
    """
    flag = os.environ.get(DEBUG_ENV, "").strip().lower()
    return bool(getattr(args, "debug", False)) or flag not in ("", "0", "false", "no")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PyrovaeError as e:
        if debug_requested(args):
            traceback.print_exc()  # with the chained causes: torch's error under an OutOfMemoryError
        print(f"pyrovae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyrovae: interrupted; the last complete checkpoint is kept (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
