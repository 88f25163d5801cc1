"""The `fpsim` command line: thin commands over the public API, one module per command.

Invariant: bad input ends with a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import fpsim
from fpsim.cli import calc, codec, plot, train
from fpsim.cli._common import _NUMBER, UsageError, _Parser, parse_value
from fpsim.formats import NAN_ENCODINGS, format_names

__all__ = ["UsageError", "build_parser", "main", "parse_value"]


def build_parser() -> _Parser:
    parser = _Parser(prog="fpsim", description="See how floating-point formats store numbers.")
    parser.add_argument("--version", action="version", version=f"fpsim {fpsim.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (codec, calc, train, plot):
        module.register(commands)
    parser.epilog = f"formats: {', '.join(format_names())}, or eXmY. NaN encodings: {', '.join(NAN_ENCODINGS)}."
    return parser


def _protect_negative_numbers(argv: Sequence[str]) -> list[str]:
    """argparse would read '-1e-5', '-inf' or '-1 + 2' as options; a leading space keeps them values."""
    return [f" {arg}" if arg.startswith("-") and _looks_like_a_value(arg) else arg for arg in argv]


def _looks_like_a_value(arg: str) -> bool:
    return bool(_NUMBER.fullmatch(arg)) or any(c in arg for c in " +*/()")  # no option name has these


def main(argv: Sequence[str] | None = None) -> int:
    argv = _protect_negative_numbers(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except (UsageError, ValueError, TypeError) as err:
        print(f"fpsim: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fpsim ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as err:  # a file that vanished or a full disk: still one line, not a traceback
        print(f"fpsim: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
