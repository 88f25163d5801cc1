"""`fpsim calc`: evaluate an expression in a format, rounding every literal and every step."""

from __future__ import annotations

import argparse
import textwrap

from fpsim._decimal import VALUE_SYNTAX
from fpsim.calc import GRAMMAR, MAX_LENGTH, MAX_NODES, calc
from fpsim.cli._common import UsageError, api_errors, formats_arg, show
from fpsim.rounding import ROUNDING_MODES

_NO_NAN_ADVICE = "calc keeps a NaN only in a format that has one: try -f fp16, bf16 or fp8_e4m3"
_MODES = {name: meaning for name, meaning in ROUNDING_MODES.items() if name != "stochastic"}


def cmd_calc(args: argparse.Namespace) -> None:
    formats = formats_arg([args.format], [])
    if len(formats) != 1:
        raise UsageError("calc takes exactly one --format")
    with api_errors(names={"x": "EXPR"}, lacking={"on_nan": _NO_NAN_ADVICE}):
        calculation = calc(args.expression, formats[0], args.rounding)
    show(calculation)


def register(commands: argparse._SubParsersAction) -> None:
    calc_cmd = commands.add_parser(
        "calc",
        help="evaluate an expression, rounding every literal and step",
        description=textwrap.fill(
            "Evaluate EXPR in --format: every number is rounded once from its exact value and every operation is "
            "rounded once, each step shown with its stored value, exact error and IEEE flags. Only arithmetic is "
            f"parsed (Python's ast, a whitelist), at most {MAX_LENGTH} characters and {MAX_NODES} parts."
        )
        + f"\n\ngrammar:\n{GRAMMAR}\n\n{textwrap.fill(VALUE_SYNTAX)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    calc_cmd.add_argument("expression", metavar="EXPR", help='e.g. "65504 + 16" or "sqrt(2) * (0.1 + 0.2)"')
    calc_cmd.add_argument("--format", "-f", required=True, help="format name, at most 25 significant bits (required)")
    calc_cmd.add_argument(
        "--rounding",
        "-r",
        default="nearest_even",
        choices=list(_MODES),
        metavar="MODE",
        help="rounding mode of every step (default: nearest_even). "
        + "; ".join(f"{name}: {meaning}" for name, meaning in _MODES.items()),
    )
    calc_cmd.set_defaults(run=cmd_calc)
