"""Shared pieces of the command line: the usage error, the parser class, value and format arguments, paths.

Invariant: every piece of bad input becomes a `UsageError` (one line, exit code 2) before any work starts.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence

import fpsim
from fpsim.formats import OVERFLOW_POLICIES, get_format
from fpsim.rounding import NAN_INPUT_POLICIES, ROUNDING_MODES

_NUMBER = re.compile(r"[+-]?(inf|infinity|nan|0x[0-9a-f.]+(p[+-]?\d+)?|(\d+\.?\d*|\.\d+)(e[+-]?\d+)?)", re.IGNORECASE)


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage first
        raise UsageError(message)


def _nonzero_significand(token: str) -> bool:
    """Whether a numeric token names a nonzero value (so that reading it as 0 lost it to underflow)."""
    unsigned = token.lower().lstrip("+-")
    if unsigned.startswith("0x"):
        return bool(re.search(r"[1-9a-f]", unsigned[2:].split("p")[0]))
    return bool(re.search(r"[1-9]", unsigned.split("e")[0]))


def parse_value(text: str) -> float:
    """A real number from decimal, hex float (0x1.8p-3), inf or nan, read as the nearest float64."""
    token = text.strip()
    try:
        if not _NUMBER.fullmatch(token):
            raise ValueError
        value = float.fromhex(token) if "0x" in token.lower() else float(token)
    except ValueError:
        raise UsageError(f"VALUE must be a decimal, a hex float such as 0x1.8p-3, inf or nan; got {text!r}") from None
    except OverflowError:
        value = math.inf
    if (math.isinf(value) and "inf" not in token.lower()) or (value == 0 and _nonzero_significand(token)):
        raise UsageError(f"VALUE {text!r} lies outside float64's range (about 4.9e-324 to 1.8e308)")
    return value


def parse_bits(text: str, fmt: fpsim.Format) -> float:
    """Decode a bit pattern written in hex (0x3c00), binary (0b…) or decimal."""
    try:
        code = int(text.strip(), 0)
    except ValueError:
        raise UsageError(f"--bits values must be integers such as 0x3c00 or 0b0011110000000000; got {text!r}") from None
    return float(fpsim.decode(code, fmt))


def formats_arg(specs: Sequence[str] | None, default: Sequence[str]) -> list[fpsim.Format]:
    names = [name for spec in (specs or default) for name in spec.split(",") if name.strip()]
    if not names:
        raise UsageError("--format needs a format name such as fp16")
    return [get_format(name) for name in names]


def inputs(args: argparse.Namespace, fmt: fpsim.Format) -> list[float]:
    if args.bits:
        return [parse_bits(text, fmt) for text in args.values]
    return [parse_value(text) for text in args.values]


def check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"cannot write {path!r}: it is a folder; name a file")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write {path!r}: {folder} is not a writable folder")


def rounding_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("values", nargs="+", metavar="VALUE", help="decimal, hex float (0x1.8p-3), inf or nan")
    command.add_argument("--rounding", "-r", default="nearest_even", choices=list(ROUNDING_MODES))
    command.add_argument("--overflow", choices=list(OVERFLOW_POLICIES), help="override the format's policy")
    command.add_argument("--seed", type=int, help="seed for --rounding stochastic")
    command.add_argument(
        "--on-nan", default="raise", choices=list(NAN_INPUT_POLICIES), help="NaN into a format without NaN"
    )
    command.add_argument("--bits", action="store_true", help="VALUEs are bit patterns (0x3c00)")
