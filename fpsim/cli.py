"""The `fpsim` command line: thin commands over the public API.

Invariant: bad input ends with a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence

import numpy as np

import fpsim
from fpsim import train
from fpsim.calc import calc
from fpsim.explanation import _elide, exact_decimal, explain
from fpsim.formats import NAN_ENCODINGS, OVERFLOW_POLICIES, PRESETS, format_names, get_format
from fpsim.policies import POLICIES
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


def _formats(specs: Sequence[str] | None, default: Sequence[str]) -> list[fpsim.Format]:
    names = [name for spec in (specs or default) for name in spec.split(",") if name.strip()]
    if not names:
        raise UsageError("--format needs a format name such as fp16")
    return [get_format(name) for name in names]


def _inputs(args: argparse.Namespace, fmt: fpsim.Format) -> list[float]:
    if args.bits:
        return [parse_bits(text, fmt) for text in args.values]
    return [parse_value(text) for text in args.values]


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
    formats = _formats(args.format, ["fp32,fp16,bf16"])
    if args.bits and len(formats) != 1:
        raise UsageError("--bits reads patterns of one format: give exactly one --format")
    options = {"overflow": args.overflow, "rng": args.seed, "on_nan": args.on_nan}
    for value in _inputs(args, formats[0]):
        print(explain(value, formats, args.rounding, **options))


def cmd_round(args: argparse.Namespace) -> None:
    formats = _formats([args.format], [])
    if len(formats) != 1:
        raise UsageError("round takes exactly one --format; use explain to compare formats")
    (fmt,) = formats
    source = get_format(args.source) if args.source else fmt
    values = np.array(_inputs(args, source), dtype=np.float64)
    rounded, flags = fpsim.round(
        values, fmt, args.rounding, overflow=args.overflow, rng=args.seed, on_nan=args.on_nan, flags=True
    )
    codes = fpsim.encode(rounded, fmt)
    print(f"{fmt.name}, rounding {args.rounding}")
    for value, result, code in zip(values, rounded, codes):
        stored = _elide(exact_decimal(float(result)))
        print(f"  {float(value)!r:>24} -> {stored}  0x{int(code):0{(fmt.bits + 3) // 4}x}")
    print(f"flags: {flags}")


def cmd_calc(args: argparse.Namespace) -> None:
    formats = _formats([args.format], [])
    if len(formats) != 1:
        raise UsageError("calc takes exactly one --format")
    print(calc(args.expression, formats[0], args.rounding))


def _table(rows: list[dict]) -> str:
    headers = list(rows[0])
    cells = [[_cell(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    lines += [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 or not math.isfinite(value) else f"{value:.3e}"
    return str(value)


def cmd_train(args: argparse.Namespace) -> None:
    names = [name.strip() for name in args.policy.split(",") if name.strip()]
    if not names:
        raise UsageError("--policy needs at least one policy name")
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    configs = [train.scenario(args.scenario, policy=name, **overrides) for name in names]
    for config in configs:
        config.validate()  # every config, and the output path, are checked before any training starts
    if args.out:
        _check_writable(args.out)
    progress = 0 if args.quiet else max(1, configs[0].steps // 10)
    histories = [train.run(config, progress_every=progress) for config in configs]
    print(f"scenario {args.scenario}: {train.SCENARIOS[args.scenario][0]}")
    print(_table([h.summary() for h in histories]))
    if args.out:
        train.save_results(histories, args.out)
        print(f"saved {len(histories)} run(s) to {args.out}")


PLOT_KINDS = ("range", "precision", "numberline", "bits", "histogram", "rounding", "training")


def _plot_figure(args: argparse.Namespace):
    from fpsim import plots  # matplotlib loads only when a figure is asked for

    formats = _formats(args.formats, ["fp32,fp16,bf16,fp8_e4m3"])
    if args.kind == "range":
        return plots.range_diagram(formats)[0]
    if args.kind == "precision":
        return plots.precision_diagram(formats, absolute=args.absolute)[0]
    if args.kind == "numberline":
        return plots.number_line(formats[0] if args.formats else "fp8_e4m3")[0]
    if args.kind == "bits":
        return plots.bit_layout(parse_value(args.value), formats[0] if args.formats else "fp16")[0]
    if args.kind == "rounding":
        return plots.rounding_error(formats[0] if args.formats else "fp16")[0]
    if args.source:
        runs = train.load_results(args.source)
    else:  # no saved experiment: the underflow lesson, measured now (about a second)
        runs = [train.run(train.scenario("underflow", policy=p, steps=150)) for p in ("fp32", "fp16", "amp")]
    if args.kind == "training":
        return plots.training_figure(runs)[0]
    sample = runs[0].gradient_sample
    return plots.gradient_histogram(sample, formats if args.formats else "fp16", scale=args.scale)[0]


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"cannot write {path!r}: it is a folder; name a file")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write {path!r}: {folder} is not a writable folder")


def cmd_plot(args: argparse.Namespace) -> None:
    out = args.out or f"{args.kind}.png"
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise UsageError(f"-o must end in .png, .svg or .pdf (the format is taken from it); got {out!r}")
    _check_writable(out)
    if args.source and not os.path.isfile(args.source):
        raise UsageError(f"--from {args.source!r}: no such file; write one with fpsim train --out FILE")
    figure = _plot_figure(args)
    try:
        figure.savefig(out, dpi=110)
    except OSError as err:
        raise UsageError(f"cannot write {out!r}: {err.strerror or err}") from None
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fpsim", description="See how floating-point formats store numbers.")
    parser.add_argument("--version", action="version", version=f"fpsim {fpsim.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("formats", help="table of the preset formats").set_defaults(run=cmd_formats)

    def rounding_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("values", nargs="+", metavar="VALUE", help="decimal, hex float (0x1.8p-3), inf or nan")
        command.add_argument("--rounding", "-r", default="nearest_even", choices=list(ROUNDING_MODES))
        command.add_argument("--overflow", choices=list(OVERFLOW_POLICIES), help="override the format's policy")
        command.add_argument("--seed", type=int, help="seed for --rounding stochastic")
        command.add_argument(
            "--on-nan", default="raise", choices=list(NAN_INPUT_POLICIES), help="NaN into a format without NaN"
        )
        command.add_argument("--bits", action="store_true", help="VALUEs are bit patterns (0x3c00)")

    explain_cmd = commands.add_parser("explain", help="bits, stored value and exact error, formats side by side")
    rounding_options(explain_cmd)
    explain_cmd.add_argument("--format", "-f", action="append", help="format name(s), repeatable or comma-separated")
    explain_cmd.set_defaults(run=cmd_explain)

    round_cmd = commands.add_parser("round", help="round values to a format and count IEEE exceptions")
    rounding_options(round_cmd)
    round_cmd.add_argument("--format", "-f", required=True, help="target format name")
    round_cmd.add_argument("--from", dest="source", help="with --bits: the format the patterns belong to")
    round_cmd.set_defaults(run=cmd_round)

    calc_cmd = commands.add_parser("calc", help="evaluate an expression, rounding every literal and step")
    calc_cmd.add_argument("expression", metavar="EXPR", help='e.g. "65504 + 16" or "sqrt(2) * (0.1 + 0.2)"')
    calc_cmd.add_argument("--format", "-f", required=True, help="format name")
    modes = [m for m in ROUNDING_MODES if m != "stochastic"]
    calc_cmd.add_argument("--rounding", "-r", default="nearest_even", choices=modes)
    calc_cmd.set_defaults(run=cmd_calc)

    train_cmd = commands.add_parser("train", help="train the digits MLP under precision policies and compare")
    train_cmd.add_argument(
        "--policy", "-p", default="fp32", help=f"one or more of {', '.join(POLICIES)}, comma-separated"
    )
    train_cmd.add_argument("--scenario", "-s", default="baseline", choices=list(train.SCENARIOS))
    train_cmd.add_argument("--steps", type=int, help="training steps (default: the scenario's)")
    train_cmd.add_argument("--seed", type=int, help="seed for data split, initialisation and batches")
    train_cmd.add_argument("--out", "-o", help="save the runs' histories to this JSON file")
    train_cmd.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    train_cmd.set_defaults(run=cmd_train)

    plot_cmd = commands.add_parser("plot", help="draw a figure to PNG, SVG or PDF")
    plot_cmd.add_argument("kind", choices=PLOT_KINDS)
    plot_cmd.add_argument("--formats", "-f", action="append", help="format name(s), comma-separated")
    plot_cmd.add_argument("--value", default="0.1", help="for bits: the value to lay out")
    plot_cmd.add_argument("--from", dest="source", help="for histogram and training: a results file of fpsim train")
    plot_cmd.add_argument("--scale", type=float, help="for histogram: also draw the gradients times this loss scale")
    plot_cmd.add_argument("--absolute", action="store_true", help="for precision: absolute ulp instead of relative")
    plot_cmd.add_argument("--out", "-o", help="output file; .png, .svg or .pdf (default: KIND.png)")
    plot_cmd.set_defaults(run=cmd_plot)
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
