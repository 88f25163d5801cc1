"""`fpsim formats`, `fpsim explain` and `fpsim round`: the codec on the command line."""

from __future__ import annotations

import argparse

import numpy as np

import fpsim
from fpsim.cli._common import UsageError, formats_arg, inputs, rounding_options
from fpsim.explanation import _elide, exact_decimal, explain
from fpsim.formats import PRESETS, get_format


def cmd_formats(args: argparse.Namespace) -> None:
    header = ("name", "bits", "e/m", "bias", "max", "smallest normal", "smallest subnormal", "eps", "digits", "decades")
    rows = [header]
    for f in PRESETS.values():
        layout = f"e{f.nexp}m{f.nmant}{'' if f.has_inf else 'fn'}"
        rows.append((
            f.name, str(f.bits), layout, str(f.bias), f"{f.max:.6g}", f"{f.smallest_normal:.6g}",
            f"{f.smallest_subnormal:.6g}", f"{f.eps:.6g}", f"{f.decimal_digits:.2f}", f"{f.dynamic_range_decades:.1f}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print("\n'fn' = finite only: no infinities, NaN (if any) only at the all-ones code.")


def cmd_explain(args: argparse.Namespace) -> None:
    formats = formats_arg(args.format, ["fp32,fp16,bf16"])
    if args.bits and len(formats) != 1:
        raise UsageError("--bits reads patterns of one format: give exactly one --format")
    options = {"overflow": args.overflow, "rng": args.seed, "on_nan": args.on_nan}
    for value in inputs(args, formats[0]):
        print(explain(value, formats, args.rounding, **options))


def cmd_round(args: argparse.Namespace) -> None:
    formats = formats_arg([args.format], [])
    if len(formats) != 1:
        raise UsageError("round takes exactly one --format; use explain to compare formats")
    (fmt,) = formats
    source = get_format(args.source) if args.source else fmt
    values = np.array(inputs(args, source), dtype=np.float64)
    rounded, flags = fpsim.round(
        values, fmt, args.rounding, overflow=args.overflow, rng=args.seed, on_nan=args.on_nan, flags=True
    )
    codes = fpsim.encode(rounded, fmt)
    print(f"{fmt.name}, rounding {args.rounding}")
    for value, result, code in zip(values, rounded, codes):
        stored = _elide(exact_decimal(float(result)))
        print(f"  {float(value)!r:>24} -> {stored}  0x{int(code):0{(fmt.bits + 3) // 4}x}")
    print(f"flags: {flags}")


def register(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("formats", help="table of the preset formats").set_defaults(run=cmd_formats)
    explain_cmd = commands.add_parser("explain", help="bits, stored value and exact error, formats side by side")
    rounding_options(explain_cmd)
    explain_cmd.add_argument("--format", "-f", action="append", help="format name(s), repeatable or comma-separated")
    explain_cmd.set_defaults(run=cmd_explain)

    round_cmd = commands.add_parser("round", help="round values to a format and count IEEE exceptions")
    rounding_options(round_cmd)
    round_cmd.add_argument("--format", "-f", required=True, help="target format name")
    round_cmd.add_argument("--from", dest="source", help="with --bits: the format the patterns belong to")
    round_cmd.set_defaults(run=cmd_round)
