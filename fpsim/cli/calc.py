"""`fpsim calc`: evaluate an expression in a format, rounding every literal and every step."""

from __future__ import annotations

import argparse

from fpsim.calc import calc
from fpsim.cli._common import UsageError, formats_arg
from fpsim.rounding import ROUNDING_MODES


def cmd_calc(args: argparse.Namespace) -> None:
    formats = formats_arg([args.format], [])
    if len(formats) != 1:
        raise UsageError("calc takes exactly one --format")
    print(calc(args.expression, formats[0], args.rounding))


def register(commands: argparse._SubParsersAction) -> None:
    calc_cmd = commands.add_parser("calc", help="evaluate an expression, rounding every literal and step")
    calc_cmd.add_argument("expression", metavar="EXPR", help='e.g. "65504 + 16" or "sqrt(2) * (0.1 + 0.2)"')
    calc_cmd.add_argument("--format", "-f", required=True, help="format name")
    modes = [m for m in ROUNDING_MODES if m != "stochastic"]
    calc_cmd.add_argument("--rounding", "-r", default="nearest_even", choices=modes)
    calc_cmd.set_defaults(run=cmd_calc)
