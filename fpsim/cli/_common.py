"""Shared pieces of the command line: the usage error, the parser class, value and format arguments, API errors.

Invariant: every piece of bad input becomes a `UsageError` (one line, exit code 2) before any work starts, and
every hint it gives is written in command-line syntax (--on-nan zero), not Python's (on_nan='zero').
"""

from __future__ import annotations

import argparse
import math
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from rich.console import RenderableType

import fpsim
from fpsim._decimal import _NUMBER, VALUE_SYNTAX, Exact, parse_real
from fpsim._terminal import console, print_unpadded
from fpsim.formats import OVERFLOW_POLICIES, get_format
from fpsim.rounding import NAN_INPUT_POLICIES, ROUNDING_MODES

__all__ = [
    "_NUMBER",
    "LineFormatter",
    "UsageError",
    "api_errors",
    "format_names",
    "formats_arg",
    "parse_exact",
    "parse_value",
    "show",
]

_PYTHON_OPTION = re.compile(r"\b(on_nan|overflow|rounding|rng)=('[^']*'|\w+)")
_CLI_OPTIONS = {"on_nan": "--on-nan", "overflow": "--overflow", "rounding": "--rounding", "rng": "--seed"}


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage first
        raise UsageError(message)


class LineFormatter(argparse.HelpFormatter):
    """Help whose description and epilog wrap to the terminal line by line; an indented `  name  text` line
    hangs its text under the text, so lists of kinds, policies and scenarios stay readable."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(self._fill_line(line, width, indent) for line in text.splitlines())

    def _fill_line(self, line: str, width: int, indent: str) -> str:
        hang = len(re.match(r"\s+\S+\s*", line).group()) if line.startswith(" ") and line.strip() else 0
        return textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent + " " * hang) or indent


def parse_exact(text: str) -> Exact:
    """A VALUE argument's exact value (VALUE_SYNTAX): the one reader of round, explain and calc."""
    if re.fullmatch(r"\s*[+-]?0[bo][0-9_]*\s*", text, re.IGNORECASE):
        raise UsageError(f"VALUE {text.strip()!r} is binary or octal: bit patterns need --bits (0x3c00, 0b0011…)")
    try:
        return parse_real(text, "VALUE")
    except ValueError as err:
        raise UsageError(str(err)) from None


def parse_value(text: str) -> float:
    """A VALUE argument as the nearest float64 (for plotting), refused where float64 would lose all of it."""
    value = parse_exact(text)
    if isinstance(value, float):  # zeros, infinities and NaN
        return value
    try:
        nearest = float(value)
    except OverflowError:  # beyond 2^1024
        nearest = math.inf
    if math.isinf(nearest) or nearest == 0:
        raise UsageError(f"VALUE {text.strip()[:40]!r} lies outside float64's range (about 4.9e-324 to 1.8e308)")
    return nearest


def parse_bits(text: str, fmt: fpsim.Format) -> float:
    """Decode a bit pattern written in hex (0x3c00), binary (0b…) or decimal."""
    try:
        code = int(text.strip(), 0)
    except ValueError:
        raise UsageError(f"--bits values must be integers such as 0x3c00 or 0b0011110000000000; got {text!r}") from None
    return float(fpsim.decode(code, fmt))


def format_names(specs: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """The names in repeated, comma-separated format options (`default` when none was given), blanks dropped."""
    return [name.strip() for spec in (specs or default) for name in spec.split(",") if name.strip()]


def formats_arg(specs: Sequence[str] | None, default: Sequence[str]) -> list[fpsim.Format]:
    names = format_names(specs, default)
    if not names:
        raise UsageError("--format needs a format name such as fp16")
    return [get_format(name) for name in names]


def inputs(args: argparse.Namespace, fmt: fpsim.Format) -> list[Exact]:
    """The VALUE arguments, exact; or, with --bits, the values of the patterns in fmt."""
    if args.bits:
        return [parse_bits(text, fmt) for text in args.values]
    return [parse_exact(text) for text in args.values]


def check_rounding_options(args: argparse.Namespace) -> np.random.Generator | None:
    """Refuse options that would be ignored; the generator that --seed asks for (one for all values)."""
    if args.seed is not None and args.rounding != "stochastic":
        raise UsageError(f"--seed drives stochastic rounding only; add --rounding stochastic (got {args.rounding})")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    return np.random.default_rng(args.seed) if args.rounding == "stochastic" else None


@contextmanager
def api_errors(names: Mapping[str, str] | None = None, lacking: Mapping[str, str] | None = None) -> Iterator[None]:
    """Errors of the Python API, in command-line terms (see as_cli_syntax)."""
    try:
        yield
    except ValueError as err:
        raise UsageError(as_cli_syntax(str(err), names, lacking)) from None


def as_cli_syntax(
    message: str, names: Mapping[str, str] | None = None, lacking: Mapping[str, str] | None = None
) -> str:
    """An API error as the command's user should read it.

    Hints name options as typed (on_nan='zero' -> --on-nan zero, rng=… -> --seed …). `names` maps the API's
    name of an argument to the command's ("scale" -> "--scale"): a message that opens with it ("scale must be
    …", "steps=10 is …") opens with the option. `lacking` maps a Python option the command has no option for
    (on_nan) to the command's own advice, which replaces the hint naming it (the clause after the last '; ').
    """
    for name, option in (names or {}).items():
        if opening := re.match(rf"{re.escape(name)}\b(?:=(\S+))?", message):
            message = " ".join(filter(None, (option, opening[1]))) + message[opening.end() :]
    for option, advice in (lacking or {}).items():
        if (position := message.find(f"{option}=")) >= 0:
            clause = message.rfind("; ", 0, position)
            message = f"{message[: clause if clause >= 0 else position].rstrip()}; {advice}"
    return _PYTHON_OPTION.sub(lambda m: f"{_CLI_OPTIONS[m.group(1)]} {m.group(2).strip(chr(39))}", message)


def show(*renderables: RenderableType) -> None:
    """Print to stdout through the one console (terminal width and colour, or plain at a fixed width when
    piped), one renderable after another, without the trailing spaces of padded table cells."""
    print_unpadded(console(), *renderables)


def _choices(registry: dict[str, str]) -> str:
    return "; ".join(f"{name}: {meaning}" for name, meaning in registry.items())


def rounding_options(command: argparse.ArgumentParser) -> None:
    """VALUE arguments and the rounding options that round and explain share."""
    command.add_argument("values", nargs="+", metavar="VALUE", help=VALUE_SYNTAX)
    command.add_argument(
        "--rounding",
        "-r",
        default="nearest_even",
        choices=list(ROUNDING_MODES),
        metavar="MODE",
        help=f"rounding mode (default: nearest_even). {_choices(ROUNDING_MODES)}",
    )
    command.add_argument(
        "--overflow",
        choices=list(OVERFLOW_POLICIES),
        metavar="POLICY",
        help=f"what lies past max becomes (default: the format's own policy). {_choices(OVERFLOW_POLICIES)}",
    )
    command.add_argument("--seed", type=int, help="seed of --rounding stochastic (default: fresh randomness)")
    command.add_argument(
        "--on-nan",
        default="raise",
        choices=list(NAN_INPUT_POLICIES),
        metavar="POLICY",
        help=f"NaN into a format without NaN (default: raise). {_choices(NAN_INPUT_POLICIES)}",
    )
    command.add_argument("--bits", action="store_true", help="VALUEs are bit patterns (0x3c00, 0b…, decimal)")


def device_arg(text: str):
    """--device as a torch.device; resolve_device's errors in option syntax (torch loads here)."""
    from fpsim.torch.training import resolve_device  # ImportError names the torch extra

    try:
        return resolve_device(text)
    except ValueError as err:
        message = as_cli_syntax(str(err), {"device": "--device"})
        raise UsageError(message.replace("use the device", "use --device")) from None


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")  # what save_figure writes


def save_figure(figure, path: str, argument: str) -> None:
    """Write a matplotlib figure to `path` (already passed check_output_path) in the format its suffix names, at
    110 dpi, and say so."""
    from fpsim._files import atomic_write  # here: the rest of this module writes no files

    suffix = path.rpartition(".")[2].lower()  # check_output_path let only .png, .svg or .pdf through
    atomic_write(path, lambda file: figure.savefig(file, format=suffix, dpi=110), binary=True, argument=argument)
    console().print(f"wrote {path}", markup=False)
