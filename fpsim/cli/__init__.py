"""The `fpsim` command line: thin commands over the public API, one module per command.

Invariant: bad input ends with a one-line message on stderr and exit code 2, never a traceback. The command
modules load inside main's Ctrl-C handler (importing fpsim.cli loads none of them), so an interrupt while they
load is exit code 130 and one line, as at any later moment.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import fpsim
from fpsim.formats import NAN_ENCODINGS, format_names

__all__ = ["UsageError", "build_parser", "main", "parse_value"]

# fpsim.cli.<module>, each with register()
_COMMANDS = ("experiments", "codec", "calc", "train", "plot", "tutorial", "bench", "audit")
_SHARED = ("UsageError", "parse_value")  # from fpsim.cli._common, on first use


def __getattr__(name: str) -> object:
    if name in _SHARED:
        return getattr(importlib.import_module("fpsim.cli._common"), name)
    raise AttributeError(f"module 'fpsim.cli' has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    from fpsim.cli._common import _Parser

    parser = _Parser(prog="fpsim", description="See how floating-point formats store numbers.")
    parser.add_argument("--version", action="version", version=f"fpsim {fpsim.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(f"fpsim.cli.{name}").register(commands)
    parser.epilog = f"formats: {', '.join(format_names())}, or eXmY. NaN encodings: {', '.join(NAN_ENCODINGS)}."
    return parser


def _protect_negative_numbers(argv: Sequence[str]) -> list[str]:
    """argparse would read '-1e-5', '-inf' or '-1 + 2' as options; a leading space keeps them values."""
    return [f" {arg}" if arg.startswith("-") and _looks_like_a_value(arg) else arg for arg in argv]


def _looks_like_a_value(arg: str) -> bool:
    from fpsim.cli._common import _NUMBER

    return bool(_NUMBER.fullmatch(arg)) or any(c in arg for c in " +*/()")  # no option name has these


def _command_list(parser: argparse.ArgumentParser) -> str:
    """What plain `fpsim` prints: each command with its one-line help, and where to read more."""
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    width = max(len(choice.dest) for choice in commands._choices_actions)
    lines = [f"  {choice.dest:<{width}}  {choice.help}" for choice in commands._choices_actions]
    return "\n".join(["usage: fpsim COMMAND [options]", "", "commands:", *lines, "", _MORE])


_MORE = "`fpsim COMMAND --help` shows a command's options; `fpsim --help` also lists the format names."


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit code 0, 2 for bad input, a failed write or a missing optional dependency (torch),
    130 on Ctrl-C. No command: the list."""
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # Ctrl-C, even while the commands load: outputs are atomic, nothing partial is left
        print("fpsim: interrupted", file=sys.stderr)
        return 130


def _run(argv: Sequence[str]) -> int:
    from fpsim._extras import MissingExtraError
    from fpsim.cli._common import UsageError  # the commands load here, under main's Ctrl-C handler

    try:
        parser = build_parser()
        args = parser.parse_args(_protect_negative_numbers(argv))
        if args.command is None:  # plain `fpsim`: a request for orientation, not an error
            print(_command_list(parser))
            return 0
        args.run(args)
    except (UsageError, ValueError, TypeError, MissingExtraError) as err:  # other ImportErrors are bugs: shown
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
