"""The ``pyrovae`` command line.

Each sub-command lives in its own module under :mod:`pyrovae.commands` and
exposes ``add_parser(subparsers)``, which sets ``func`` to the function that
runs it. Every ``PyrovaeError`` is printed as one clear line (no traceback)
with exit status 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import List, Optional

from . import __version__
from .commands import Parser
from .errors import PyrovaeError

__all__ = ["main", "COMMANDS"]

#: sub-command modules in pyrovae.commands, in the order ``--help`` lists them
COMMANDS = ["train", "evaluate", "list", "plot", "sample", "encode", "impute"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pyrovae", description="Variational autoencoders the Pyro way.")
    parser.add_argument("--version", action="version", version=f"pyrovae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PyrovaeError as e:
        print(f"pyrovae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyrovae: interrupted; the last complete checkpoint is kept (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
