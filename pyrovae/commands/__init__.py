"""Sub-commands of the ``pyrovae`` CLI, one module each (see :mod:`pyrovae.cli`),
and the argument types they share."""

import argparse


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, with a clear message otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_which_argument(parser) -> None:
    """``--which checkpoint|best``: which of a run's checkpoints to load."""
    parser.add_argument("--which", choices=["checkpoint", "best"], default="checkpoint",
                        help="the latest checkpoint or the one with the best validation loss")
