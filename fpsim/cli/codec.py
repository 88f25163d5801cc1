"""`fpsim formats`, `fpsim explain` and `fpsim round`: the codec on the command line.

Invariant: every value shown is exact; tables fit the terminal by folding long decimals, never by cutting them.
"""

from __future__ import annotations

import argparse
import math
from fractions import Fraction

from rich.table import Table
from rich.text import Text

from fpsim import _terminal
from fpsim._decimal import VALUE_SYNTAX, round_exact
from fpsim.cli._common import (
    UsageError,
    api_errors,
    check_rounding_options,
    formats_arg,
    inputs,
    rounding_options,
    show,
)
from fpsim.codec import encode
from fpsim.explanation import exact_decimal, explain
from fpsim.formats import NAN_ENCODINGS, PRESETS, Format, get_format

FORMAT_COLUMNS = {  # column -> markdown alignment
    "name": "---",
    "bits": "---:",
    "layout": "---",
    "bias": "---:",
    "max": "---:",
    "smallest normal": "---:",
    "smallest subnormal": "---:",
    "eps": "---:",
    "infinities": "---",
    "NaN": "---",
    "overflow default": "---",
}
# The decimal approximations the README and the tutorials quote, with their significant digits; every other
# constant is shown only exactly. The digits themselves are computed from the format.
_QUOTED = {("fp32", "max"): 5, ("bf16", "max"): 5, ("fp16", "smallest normal"): 2, ("fp16", "smallest subnormal"): 3}
_NAN_NAMES = {"ieee": "IEEE", "all_ones": "all-ones only", "negative_zero": "−0's code only", "none": "none"}
_PLAIN_POWERS = range(-1, 4)  # 2^-1 .. 2^3 read better as 0.5 .. 8
_PLAIN_MAX = 10**6  # a max below this is written out in full (65504), above it as (2−2^-m)·2^e


def format_rows() -> list[dict[str, str]]:
    """One row of exact constants per preset format, keyed by FORMAT_COLUMNS."""
    return [_format_row(fmt) for fmt in PRESETS.values()]


def _format_row(fmt: Format) -> dict[str, str]:
    row = {
        "name": fmt.name,
        "bits": str(fmt.bits),
        "layout": fmt.layout,
        "bias": str(fmt.bias),
        "max": _max_text(fmt.max),
        "smallest normal": _power_text(fmt.smallest_normal),
        "smallest subnormal": _power_text(fmt.smallest_subnormal) if fmt.has_subnormals else "—",
        "eps": _power_text(fmt.eps),
        "infinities": "yes" if fmt.has_inf else "no",
        "NaN": _NAN_NAMES[fmt.nan],
        "overflow default": fmt.overflow,
    }
    for (name, column), digits in _QUOTED.items():
        if name == fmt.name:
            value = {"max": fmt.max, "smallest normal": fmt.smallest_normal}.get(column, fmt.smallest_subnormal)
            row[column] += f" ≈ {_short_decimal(value, digits)}"
    return row


def _power_text(x: float) -> str:
    """An exact power of two as 2^k, or as a decimal for 0.5 .. 8."""
    exponent = math.frexp(x)[1] - 1
    if x != 2.0**exponent:
        return exact_decimal(x)
    return exact_decimal(x) if exponent in _PLAIN_POWERS else f"2^{exponent}"


def _max_text(x: float) -> str:
    """A format's max exactly: in full when short, else (2−2^-m)·2^e."""
    exponent = math.frexp(x)[1] - 1
    if x == 2.0**exponent:  # e8m0: no mantissa bits, its max a power of two
        return _power_text(x)
    gap = 2 - Fraction(x) / 2**exponent  # 2^-m for an IEEE-style max
    if x < _PLAIN_MAX or gap.numerator != 1 or gap.denominator & (gap.denominator - 1):
        return exact_decimal(x)
    return f"(2−2^-{gap.denominator.bit_length() - 1})·2^{exponent}"


def _short_decimal(x: float, digits: int) -> str:
    mantissa, _, exponent = f"{x:.{digits}g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def formats_markdown() -> str:
    """The formats table as the README shows it."""
    lines = ["| " + " | ".join(FORMAT_COLUMNS) + " |", "|" + "|".join(FORMAT_COLUMNS.values()) + "|"]
    lines += ["| " + " | ".join(row.values()) + " |" for row in format_rows()]
    return "\n".join(lines)


def cmd_formats(args: argparse.Namespace) -> None:
    if args.markdown:
        print(formats_markdown())
        return
    rows = format_rows()
    justify = ["right" if alignment.endswith(":") else "left" for alignment in FORMAT_COLUMNS.values()]
    table = _terminal.table(list(FORMAT_COLUMNS), [row.values() for row in rows], justify)
    note = (
        "fn = finite only: no infinities, and NaN (if any) only at the all-ones code; fnuz = finite, NaN at -0's "
        "code, one unsigned zero; fnu = finite, unsigned (no sign bit). NaN: "
    ) + "; ".join(f"{_NAN_NAMES[name]}: {meaning}" for name, meaning in NAN_ENCODINGS.items())
    show(table, Text(""), Text(note))


def cmd_explain(args: argparse.Namespace) -> None:
    formats = formats_arg(args.format, ["fp32,fp16,bf16"])
    if args.bits and len(formats) != 1:
        raise UsageError("--bits reads patterns of one format: give exactly one --format")
    rng = check_rounding_options(args)
    values = inputs(args, formats[0])
    with api_errors():
        views = [explain(value, formats, args.rounding, overflow=args.overflow, rng=rng, on_nan=args.on_nan)
                 for value in values]  # fmt: skip
    show(*views)


def cmd_round(args: argparse.Namespace) -> None:
    formats = formats_arg([args.format], [])
    if len(formats) != 1:
        raise UsageError("round takes exactly one --format; use explain to compare formats")
    (fmt,) = formats
    if args.source is not None and not args.bits:
        raise UsageError("--from names the format of bit patterns: add --bits, or leave --from out")
    if args.source == "":
        raise UsageError("--from needs a format name such as fp16")
    rng = check_rounding_options(args)
    source = get_format(args.source) if args.source else fmt
    values = inputs(args, source)
    options = {"overflow": args.overflow, "rng": rng, "on_nan": args.on_nan}
    with api_errors():
        results = [round_exact(value, fmt, args.rounding, **options) for value in values]
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(justify="right", overflow="fold")
    table.add_column()
    table.add_column(overflow="fold")
    table.add_column(no_wrap=True)
    digits = (fmt.bits + 3) // 4
    with api_errors():
        for value, (stored, _) in zip(values, results):
            code = int(encode(stored, fmt))  # exact: stored is a value of fmt
            table.add_row(*map(Text, (exact_decimal(value), "->", exact_decimal(stored), f"0x{code:0{digits}x}")))
    total = sum((flags for _, flags in results[1:]), results[0][1])
    show(Text(f"{fmt.name}, rounding {args.rounding}"), table, Text(f"flags: {total}"))


def register(commands: argparse._SubParsersAction) -> None:
    formats_cmd = commands.add_parser(
        "formats",
        help="table of the preset formats with their exact constants",
        description="The preset formats with their exact constants: widths, bias, max, smallest normal and "
        "subnormal, eps, infinities, NaN and the default overflow policy. Powers of two are written 2^k.",
    )
    formats_cmd.set_defaults(run=cmd_formats)
    formats_cmd.add_argument("--markdown", action="store_true", help="print the table as markdown (as the README)")

    explain_cmd = commands.add_parser(
        "explain",
        help="bits, stored value and exact error of a value, formats side by side",
        description="How VALUE is stored in each format, side by side where the terminal is wide enough: bits, "
        "class, exponent, stored value, exact error, ulp, neighbours and the IEEE flags of the rounding. "
        + VALUE_SYNTAX,
    )
    rounding_options(explain_cmd)
    explain_cmd.add_argument(
        "--format",
        "-f",
        action="append",
        help="format name(s), repeatable or comma-separated (default: fp32,fp16,bf16)",
    )
    explain_cmd.set_defaults(run=cmd_explain)

    round_cmd = commands.add_parser(
        "round",
        help="round values to a format and count IEEE exceptions",
        description="Round each VALUE once, from its exact value, to --format; print the stored values, their "
        "codes and the IEEE flags. " + VALUE_SYNTAX,
    )
    rounding_options(round_cmd)
    round_cmd.add_argument("--format", "-f", required=True, help="target format name (required)")
    round_cmd.add_argument(
        "--from", dest="source", help="with --bits: the format the patterns belong to (default: --format)"
    )
    round_cmd.set_defaults(run=cmd_round)
