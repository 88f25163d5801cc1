"""`fpsim plot`: draw one of the figures to PNG, SVG or PDF."""

from __future__ import annotations

import argparse
import os

from fpsim import train
from fpsim.cli._common import UsageError, check_writable, formats_arg, parse_value

PLOT_KINDS = ("range", "precision", "numberline", "bits", "histogram", "rounding", "training")


def _plot_figure(args: argparse.Namespace):
    from fpsim import plots  # matplotlib loads only when a figure is asked for

    formats = formats_arg(args.formats, ["fp32,fp16,bf16,fp8_e4m3"])
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


def cmd_plot(args: argparse.Namespace) -> None:
    out = args.out or f"{args.kind}.png"
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise UsageError(f"-o must end in .png, .svg or .pdf (the format is taken from it); got {out!r}")
    check_writable(out)
    if args.source and not os.path.isfile(args.source):
        raise UsageError(f"--from {args.source!r}: no such file; write one with fpsim train --out FILE")
    figure = _plot_figure(args)
    try:
        figure.savefig(out, dpi=110)
    except OSError as err:
        raise UsageError(f"cannot write {out!r}: {err.strerror or err}") from None
    print(f"wrote {out}")


def register(commands: argparse._SubParsersAction) -> None:
    plot_cmd = commands.add_parser("plot", help="draw a figure to PNG, SVG or PDF")
    plot_cmd.add_argument("kind", choices=PLOT_KINDS)
    plot_cmd.add_argument("--formats", "-f", action="append", help="format name(s), comma-separated")
    plot_cmd.add_argument("--value", default="0.1", help="for bits: the value to lay out")
    plot_cmd.add_argument("--from", dest="source", help="for histogram and training: a results file of fpsim train")
    plot_cmd.add_argument("--scale", type=float, help="for histogram: also draw the gradients times this loss scale")
    plot_cmd.add_argument("--absolute", action="store_true", help="for precision: absolute ulp instead of relative")
    plot_cmd.add_argument("--out", "-o", help="output file; .png, .svg or .pdf (default: KIND.png)")
    plot_cmd.set_defaults(run=cmd_plot)
