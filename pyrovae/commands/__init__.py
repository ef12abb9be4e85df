"""Sub-commands of the ``pyrovae`` CLI, one module each (see :mod:`pyrovae.cli`),
and the parser, help formatter and argument types they share."""

import argparse
import re
import sys

#: reST markup in docstrings that help text reuses: ``:role:`~a.b.c```,
#: ``:role:`text <target>```, double and single backquotes
_ROLE = re.compile(r":[\w:.-]+:`(?:~(?:[\w.]*\.)?)?(?:([^`<]*?)\s*<[^`>]*>|([^`]*))`")
_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")


def plain_text(text: str) -> str:
    """``text`` with the reST markup of a docstring removed, as a terminal shows help.

    Example::

        >>> plain_text("Binary data (``data.binarize``) is read by :func:`~pyrovae.data.load_data`.")
        'Binary data (data.binarize) is read by load_data.'
    """
    text = _ROLE.sub(lambda m: m.group(1) or m.group(2), text)
    return _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)


class PlainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help without reST markup; descriptions keep their paragraphs (they are docstrings)."""

    def _format_text(self, text):
        return super()._format_text(plain_text(text))

    def _get_help_string(self, action):
        return plain_text(super()._get_help_string(action) or "")


class Parser(argparse.ArgumentParser):
    """The parser of ``pyrovae`` and of each sub-command: help without reST
    markup, and a hint on ``--set`` when arguments are left over (a value
    split by the shell, or ``--set KEY VALUE`` written without ``=``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        self._argv = tuple(sys.argv[1:] if args is None else args)  # (`list` here is the list command)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        if message.startswith("unrecognized arguments") and "--set" in getattr(self, "_argv", ()):
            message += ("; each --set takes one KEY=VALUE word: --set train.epochs=2, and quote a value "
                        "with spaces: --set 'model.encoder.hidden=[200, 200]'")
        super().error(message)


def key_value(text: str) -> str:
    """An argparse type: ``section.key=value``, with a clear message otherwise."""
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        example = f"{text}=VALUE" if not sep and text else "train.epochs=2"
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}; write it as one word: --set {example}")
    return text


def add_set_argument(parser, example: str, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable): config overrides, parsed as YAML values."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", type=key_value,
                        help=f"{what}, e.g. --set {example} (values are YAML; repeat --set for more keys)")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, with a clear message otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_run_arguments(parser) -> None:
    """``RUN_DIR``, ``--which checkpoint|best`` and ``--set KEY=VALUE``: the
    arguments of a command that reads a trained run (see :func:`load_run_of`)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by pyrovae train")
    parser.add_argument("--which", choices=["checkpoint", "best"], default="checkpoint",
                        help="the latest checkpoint or the one with the best validation loss")
    add_set_argument(parser, "data.path=/new/place/digits.npy",
                     "override a key of the run's config, e.g. where its data is now")


def load_run_of(args, device="cpu"):
    """``(model, config, checkpoint)`` of the run that :func:`add_run_arguments` named.

    Example::

        vae, cfg, state = load_run_of(args)   # RUN_DIR, --which and --set of the command line
    """
    from ..runs import load_run

    return load_run(args.run_dir, which=args.which, device=device, overrides=args.overrides)


def format_table(header: str, rows) -> str:
    """``header``, a rule, and ``(name, value)`` rows with the values aligned:
    what ``evaluate`` and ``impute`` print.

    Example::

        >>> print(format_table("run", [("log p(x)", "-88.1 nats"), ("active units", "20 of 50")]))
        run
        ---
        log p(x)      -88.1 nats
        active units  20 of 50
    """
    rows = [*rows]  # (`list` here is the list command)
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join([header, "-" * len(header)] + [f"{name:<{width}}  {value}" for name, value in rows])
