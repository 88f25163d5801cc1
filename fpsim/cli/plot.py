"""`fpsim plot`: draw one of the figures to PNG, SVG or PDF.

Invariant: every option is checked against the kind, and the output path before any work; the file is written
atomically, so a failed or interrupted write leaves an existing file as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import stat

from fpsim import _terminal, train
from fpsim._files import check_output_path
from fpsim.blocks import BLOCK_ALIASES, BLOCK_FORMATS, block_format_or_none
from fpsim.cli._common import (
    FIGURE_SUFFIXES,
    LineFormatter,
    UsageError,
    api_errors,
    format_names,
    formats_arg,
    parse_value,
    save_figure,
)

KINDS = {
    "range": "subnormal, normal and overflow regions of each format on a log2 axis",
    "precision": "relative spacing ulp(x)/|x| per format: the ε-tooth, the climb through the subnormals",
    "numberline": "every value of a small format (at most 10 bits) on linear and log2 number lines",
    "bits": "the bits of VALUE in each format, with the exponent arithmetic and the stored value",
    "rounding": "round(x) − x per rounding mode around 1, ties marked, stochastic draws and mean",
    "histogram": "log2|g| of a run's last-step gradients against each format's bands (--scale: after scaling)",
    "training": "loss, loss scale and flushed gradients per step of fp32, fp16 and amp runs",
    "compare": "fpsim's simulator against torch, one row per policy, from the report.json of `fpsim compare` or "
    "`fpsim demo` (--from; --scenario picks one of a demo's)",
    "tensorcore": "relative error of a dot product against K: exact then rounded, fp32, the fp16 matrix units of "
    "V100..B200, and H100 fp8 with and without promote_every=128, on the same data",
    "blocks": "a block of values and the same block with an outlier in one block format (-f, default mxfp4): the "
    "shared scale, and which elements round, flush to zero or saturate",
    "block-error": "per-element relative error of one gradient tensor (from a fresh fp32 run) in block formats and "
    "per-tensor-scaled FP8 (-f, default mxfp4,nvfp4,fp8_e4m3)",
}
DEFAULT_FORMATS = {"range": "fp32,fp16,bf16,fp8_e4m3", "precision": "fp32,fp16,bf16,fp8_e4m3",
                   "numberline": "fp8_e4m3", "bits": "fp16", "rounding": "fp16", "histogram": "fp16"}  # fmt: skip
RUN_KINDS = ("histogram", "training")
BLOCK_DEFAULTS = {"blocks": "mxfp4", "block-error": "mxfp4,nvfp4,fp8_e4m3"}  # block formats (and element formats)
RUN_POLICIES = ("fp32", "fp16", "amp")
DEFAULT_SCENARIO, DEFAULT_STEPS, DEFAULT_VALUE = "underflow", 150, "0.1"
# option → the kinds it applies to; any other kind given it is an error, not a silently ignored option
APPLIES = {"value": ("bits",), "formats": (*DEFAULT_FORMATS, *BLOCK_DEFAULTS), "source": (*RUN_KINDS, "compare"),
           "scenario": (*RUN_KINDS, "compare", "block-error"), "steps": (*RUN_KINDS, "block-error"),
           "scale": ("histogram",), "absolute": ("precision",)}  # fmt: skip
OPTION_NAMES = {"value": "VALUE (or --value)", "formats": "--formats", "source": "--from", "scenario": "--scenario",
                "steps": "--steps", "scale": "--scale", "absolute": "--absolute"}  # fmt: skip

API_NAMES = {"scale": "--scale", "steps": "--steps", "x": "VALUE",
             "formats": "--formats"}  # API argument -> this command's option  # fmt: skip
_NO_NAN_ADVICE = "plot bits draws a NaN only in a format that has one: try -f fp16, bf16 or fp8_e4m3"


def _check_options(args: argparse.Namespace) -> None:
    if args.value is not None and args.value_option is not None:
        raise UsageError("give the value once: as VALUE or as --value, not both")
    args.value = args.value if args.value is not None else args.value_option
    for option, kinds in APPLIES.items():
        if getattr(args, option) not in (None, False) and args.kind not in kinds:
            raise UsageError(f"{OPTION_NAMES[option]} does not apply to `plot {args.kind}`; it is for "
                             f"{', '.join(kinds)}")  # fmt: skip
    if args.kind == "compare":
        if args.source is None or not args.source.strip():
            raise UsageError("plot compare needs --from DIR/report.json, the report of `fpsim compare` or `fpsim demo`")
        return
    if args.source is not None:
        if not args.source.strip():
            raise UsageError("--from must name a results file of `fpsim train --out FILE.json`; got an empty path")
        if args.scenario is not None or args.steps is not None:
            raise UsageError("--scenario and --steps choose a run to train; with --from the runs come from the file")


def _figure(args: argparse.Namespace):
    from fpsim import plots  # matplotlib loads only when a figure is asked for

    if args.kind == "compare":
        return plots.simulator_vs_hardware(*_load_comparison(args.source, args.scenario))[0]
    if args.kind == "tensorcore":
        return plots.accumulation_error(plots.accumulation.KS, plots.dot_error_curves())[0]
    if args.kind in BLOCK_DEFAULTS:
        return _block_figure(args, plots)
    formats = formats_arg(args.formats, [DEFAULT_FORMATS[args.kind]]) if args.kind in DEFAULT_FORMATS else []
    if args.kind == "range":
        return plots.range_diagram(formats)[0]
    if args.kind == "precision":
        return plots.precision_diagram(formats, absolute=args.absolute)[0]
    if args.kind == "numberline":
        return plots.number_line(formats)[0]
    if args.kind == "bits":
        return plots.bit_layout(parse_value(args.value or DEFAULT_VALUE), formats)[0]
    if args.kind == "rounding":
        return plots.rounding_error(formats)[0]
    plots.gradients.check_scale(args.scale)  # before any training
    runs = train.load_results(args.source) if args.source is not None else _train(args)
    if args.kind == "training":
        return plots.training_figure(runs)[0]
    return plots.gradient_histogram(runs[0], formats, scale=args.scale)[0]


def _block_figure(args: argparse.Namespace, plots):
    """blocks: one block format (validated before drawing); block-error: block or element formats, validated
    before the run that gives the gradient."""
    names = format_names(args.formats, [BLOCK_DEFAULTS[args.kind]])
    if not names:
        raise UsageError("--formats needs a format name such as mxfp4")
    if args.kind == "blocks":
        if len(names) != 1:
            raise UsageError(f"plot blocks draws one block format; got --formats {','.join(names)}: give one, "
                             "such as mxfp4")  # fmt: skip
        fmt = block_format_or_none(names[0])
        if fmt is None:
            raise UsageError(f"plot blocks draws a block format; {names[0]!r} is not one: give one of "
                             f"{', '.join(BLOCK_FORMATS)} (aliases {', '.join(BLOCK_ALIASES)})")  # fmt: skip
        return plots.block_diagram(plots.blocks.outlier_example(fmt.block), fmt)[0]
    for name in names:
        plots.blocks.check_error_format(name)
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    scenario = args.scenario or DEFAULT_SCENARIO
    sample = plots.blocks.hidden_gradient(scenario, steps)
    return plots.block_error(sample, names, source=plots.blocks.hidden_source(scenario, steps))[0]


def _load_comparison(path: str, scenario: str | None) -> tuple[list[train.History], list[train.History]]:
    """The simulator's and torch's runs of one comparison in a compare or demo report.json (demo: one per
    scenario, chosen by `scenario`); UsageError naming the file and the problem otherwise."""
    content = _read_report(path)
    found = {c.get("scenario"): c for c in content.values() if isinstance(c, dict) and {"simulator", "torch"} <= set(c)}
    if not found:
        raise _bad_report(path, "it holds no comparison (no 'simulator' and 'torch' runs)")
    if scenario is None and len(found) > 1:
        raise UsageError(f"--from {path!r} holds the {' and '.join(map(str, found))} comparisons: pick one with "
                         "--scenario")  # fmt: skip
    if scenario is not None and scenario not in found:
        raise UsageError(f"--from {path!r} holds no {scenario} comparison, only {', '.join(map(str, found))}: "
                         "pick one of those with --scenario")  # fmt: skip
    comparison = found[scenario] if scenario is not None else next(iter(found.values()))
    sides = [comparison["simulator"], comparison["torch"]]
    if not all(isinstance(runs, list) and runs for runs in sides) or len(sides[0]) != len(sides[1]):
        raise _bad_report(path, "its 'simulator' and 'torch' entries must be lists of runs, one per policy each")
    return tuple([_history_of(run, path, number) for number, run in enumerate(runs, start=1)] for runs in sides)


def _history_of(run: object, path: str, number: int) -> train.History:
    """One History of a report, checked so that the figure can trust it."""
    names = {f.name for f in dataclasses.fields(train.History)}
    if not isinstance(run, dict) or not {"config", "policy", "loss"} <= set(run) or not set(run) <= names:
        raise _bad_report(path, f"run {number} is not a History record")
    steps = len(run["loss"]) if isinstance(run["loss"], list) else 0
    for key in ("loss", "scale", "skipped", "flushed"):
        values = run.get(key)
        if not isinstance(values, list) or len(values) != steps or steps == 0:
            raise _bad_report(path, f"run {number}: '{key}' must list one value per step, as 'loss' does")
        if not all(isinstance(v, int | float) for v in values):  # bool is an int: 'skipped' holds booleans
            raise _bad_report(path, f"run {number}: '{key}' holds a value that is not a number")
    if not isinstance(run["policy"], dict) or not isinstance(run["policy"].get("name"), str):
        raise _bad_report(path, f"run {number}: its policy has no name")
    return train.History(**run)


def _read_report(path: str) -> dict:
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise _bad_report(path, f"cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(mode):  # a folder, FIFO or device: reading would fail or never end
        raise _bad_report(path, "it is a folder or another non-regular file, not a report.json")
    try:
        with open(path, encoding="utf-8") as file:
            content = json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad_report(path, f"it is not JSON ({err})") from None
    except OSError as err:
        raise _bad_report(path, f"cannot read it ({err.strerror})") from None
    if not isinstance(content, dict):
        raise _bad_report(path, "it is not a JSON object")
    return content


def _bad_report(path: str, problem: str) -> UsageError:
    return UsageError(f"--from {path!r}: {problem}; give the report.json of `fpsim compare` or `fpsim demo`")


def _train(args: argparse.Namespace) -> list[train.History]:
    """Fresh runs of the scenario (fp32 alone for a histogram), with progress on stderr."""
    policies = RUN_POLICIES if args.kind == "training" else RUN_POLICIES[:1]
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    configs = [train.scenario(args.scenario or DEFAULT_SCENARIO, policy=p, steps=steps) for p in policies]
    for config in configs:
        config.validate()  # every config before the first step
    with _terminal.StepProgress() as progress:
        return [train.run(c, on_step=_reporter(progress.task(c.policy, c.steps))) for c in configs]


def _reporter(update):
    return lambda history: update(len(history.loss), f"loss {history.loss[-1]:.4g}")


def cmd_plot(args: argparse.Namespace) -> None:
    _check_options(args)
    out = args.out if args.out is not None else f"{args.kind}.png"
    check_output_path(out, suffixes=FIGURE_SUFFIXES, argument="-o")  # before any training or drawing
    with api_errors(names=API_NAMES, lacking={"on_nan": _NO_NAN_ADVICE}):
        figure = _figure(args)
    save_figure(figure, out, "-o")


def _epilog() -> str:
    width = max(map(len, KINDS))
    lines = ["kinds:", *(f"  {kind:<{width}}  {text}" for kind, text in KINDS.items())]
    lines += ["", "examples:", "  fpsim plot bits 0.1 -f fp16,bf16 -o bits.png",
              "  fpsim plot histogram --scale 65536 -o histogram.png",
              "  fpsim train -p fp32,fp16,amp -s overflow --steps 100 -o runs.json",
              "  fpsim plot training --from runs.json",
              "  fpsim compare -s overflow -p fp16,amp --steps 60 -o cmp",
              "  fpsim plot compare --from cmp/report.json",
              "  fpsim plot compare --from fpsim-demo/report.json --scenario overflow",
              "  fpsim plot tensorcore -o tensorcore.png",
              "  fpsim plot blocks -f nvfp4 -o blocks.png",
              "  fpsim plot block-error -f mxfp4,mxfp8_e4m3,fp8_e4m3"]  # fmt: skip
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "plot",
        help="draw a figure to PNG, SVG or PDF",
        description="Draw one figure of formats, rounding, gradients or training to a file. Options that do not "
        "apply to the kind are errors. histogram and training read runs from --from FILE, or train them now "
        f"(the {DEFAULT_SCENARIO!r} scenario, {DEFAULT_STEPS} steps, with progress on stderr).",
        epilog=_epilog(),
        formatter_class=LineFormatter,
    )
    cmd.add_argument("kind", choices=list(KINDS), help="the figure (see the list below)")
    cmd.add_argument("value", nargs="?", metavar="VALUE", help=f"for bits: the value to lay out (default: "
                     f"{DEFAULT_VALUE}); decimal, hex float, inf or nan")  # fmt: skip
    cmd.add_argument("--value", dest="value_option", metavar="VALUE", help="the same as VALUE")
    cmd.add_argument("--formats", "-f", action="append", help="format name(s), comma-separated; several give one "
                     "panel each (default: range, precision: fp32,fp16,bf16,fp8_e4m3; numberline: fp8_e4m3; "
                     "blocks: mxfp4; block-error: mxfp4,nvfp4,fp8_e4m3; others: fp16)")  # fmt: skip
    cmd.add_argument("--from", dest="source", metavar="FILE.json", help="for histogram and training: the runs "
                     "saved by `fpsim train --out` (histogram: the file's first run); for compare: the report.json "
                     "of `fpsim compare` or `fpsim demo`")  # fmt: skip
    cmd.add_argument("--scenario", "-s", choices=list(train.SCENARIOS), help="for histogram and training without "
                     f"--from, and block-error: the scenario to train (default: {DEFAULT_SCENARIO}); for compare: "
                     "which of a demo report's comparisons")  # fmt: skip
    cmd.add_argument("--steps", type=int, help=f"for histogram and training without --from, and block-error: "
                     f"training steps (default: {DEFAULT_STEPS})")  # fmt: skip
    cmd.add_argument("--scale", type=float, help="for histogram: also draw the gradients times this loss scale "
                     "(default: none)")  # fmt: skip
    cmd.add_argument("--absolute", action="store_true", help="for precision: absolute ulp(x), not ulp(x)/|x|")
    cmd.add_argument("--out", "-o", metavar="FILE", help="output file; .png, .svg or .pdf, which sets the format "
                     "(default: KIND.png)")  # fmt: skip
    cmd.set_defaults(run=cmd_plot)
