"""The `fpsim` command line: thin commands over the public API, one module per command.

Invariant: bad input ends with a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import fpsim
from fpsim.cli import calc, codec, experiments, plot, train
from fpsim.cli._common import _NUMBER, UsageError, _Parser, parse_value
from fpsim.formats import NAN_ENCODINGS, format_names

__all__ = ["UsageError", "build_parser", "main", "parse_value"]


def build_parser() -> _Parser:
    parser = _Parser(prog="fpsim", description="See how floating-point formats store numbers.")
    parser.add_argument("--version", action="version", version=f"fpsim {fpsim.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (experiments, codec, calc, train, plot):
        module.register(commands)
    parser.epilog = f"formats: {', '.join(format_names())}, or eXmY. NaN encodings: {', '.join(NAN_ENCODINGS)}."
    return parser


def _protect_negative_numbers(argv: Sequence[str]) -> list[str]:
    """argparse would read '-1e-5', '-inf' or '-1 + 2' as options; a leading space keeps them values."""
    return [f" {arg}" if arg.startswith("-") and _looks_like_a_value(arg) else arg for arg in argv]


def _looks_like_a_value(arg: str) -> bool:
    return bool(_NUMBER.fullmatch(arg)) or any(c in arg for c in " +*/()")  # no option name has these


def _command_list(parser: _Parser) -> str:
    """What plain `fpsim` prints: each command with its one-line help, and where to read more."""
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    width = max(len(choice.dest) for choice in commands._choices_actions)
    lines = [f"  {choice.dest:<{width}}  {choice.help}" for choice in commands._choices_actions]
    return "\n".join(["usage: fpsim COMMAND [options]", "", "commands:", *lines, "", _MORE])


_MORE = "`fpsim COMMAND --help` shows a command's options; `fpsim --help` also lists the format names."


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit code 0, 2 for bad input or a failed write, 130 on Ctrl-C. No command: the list."""
    argv = _protect_negative_numbers(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # plain `fpsim`: a request for orientation, not an error
            print(_command_list(parser))
            return 0
        args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: outputs are atomic, so nothing partial is left behind
        print("fpsim: interrupted", file=sys.stderr)
        return 130
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
