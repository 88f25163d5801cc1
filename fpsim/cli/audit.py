"""`fpsim audit`: what fp16, bf16 and fp8 would do to every tensor of a bundled model, and a loss scale per format.

Invariant: the model name, formats, device and both output paths are checked before the model runs.
"""

from __future__ import annotations

import argparse
import json

import fpsim
from fpsim import _terminal
from fpsim._files import atomic_write, check_output_path
from fpsim.cli._common import (
    FIGURE_SUFFIXES,
    LineFormatter,
    UsageError,
    api_errors,
    device_arg,
    formats_arg,
    save_figure,
)

JSON_SUFFIXES = (".json",)
API_NAMES = {"steps": "--steps", "headroom": "--headroom", "seed": "--seed", "formats": "--format"}
DEFAULT_FORMATS = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2")  # fpsim.torch.audit.DEFAULT_FORMATS (torch not loaded)
MODEL_NAMES = ("digits-mlp", "digits-cnn", "tiny-transformer")  # fpsim.torch.models.MODELS; a test keeps them equal


def _check_outputs(args: argparse.Namespace) -> None:
    if args.json is not None:
        check_output_path(args.json, suffixes=JSON_SUFFIXES, argument="--json")
    if args.plot is not None:
        check_output_path(args.plot, suffixes=FIGURE_SUFFIXES, argument="--plot")
    if args.rows < 1:
        raise UsageError(f"--rows must be a positive integer, got {args.rows}")


def cmd_audit(args: argparse.Namespace) -> None:
    formats = [f.name for f in formats_arg(args.format, DEFAULT_FORMATS)]
    _check_outputs(args)
    from fpsim.torch import audit, models  # ImportError names the extra to install

    device = device_arg(args.device)
    with api_errors(names=API_NAMES):
        example = models.load(args.model, seed=args.seed)
        result = audit(example.model.to(device), example.batch.to(device), example.loss_fn, formats,
                       target=example.target.to(device), steps=args.steps, headroom=args.headroom)  # fmt: skip
    out = _terminal.console()
    parameters = sum(p.numel() for p in example.model.parameters())
    out.print(f"{args.model}, seed {args.seed}, fp32 on {device}, {parameters:,} parameters:\n{example.description}",
              markup=False)  # fmt: skip
    out.print(result.table(args.rows))
    if args.json is not None:
        record = {"model": args.model, "seed": args.seed, "device": str(device), "fpsim": fpsim.__version__,
                  **result.to_dict()}  # fmt: skip
        atomic_write(args.json, lambda file: json.dump(record, file, indent=1, allow_nan=False), argument="--json")
        out.print(f"wrote {args.json}", markup=False)
    if args.plot is not None:
        save_figure(result.figure()[0], args.plot, "--plot")


_EPILOG = """models:
  digits-mlp        the experiment's MLP (64 → 64 → 10, BatchNorm, ReLU) on 64 UCI 8×8 digits
  digits-cnn        a small ConvNet (two 3×3 convolutions, max-pool, Linear) on 64 digit images
  tiny-transformer  a two-layer transformer encoder reversing 32 random 12-token sequences

examples:
  fpsim audit --model digits-mlp
  fpsim audit --model tiny-transformer --format fp16,fp8_e5m2 --json audit.json --plot audit.png
  fpsim audit --model digits-cnn --steps 3 --device cpu

Python: fpsim.torch.audit(model, batch, loss_fn, target=...) audits any torch model."""


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "audit",
        help="what fp16, bf16 and fp8 would do to every tensor of a model, and a loss scale per format",
        description="Run a bundled model forward and backward in fp32 and count, with fpsim's codec, what each "
        "format would do to every parameter, module output and gradient: overflow, subnormal, flushed to zero, "
        "relative rounding error. Worst tensors first; then a recommended loss scale per format, where "
        "GradScaler would settle, and the first tensor that is inf or NaN.",
        epilog=_EPILOG,
        formatter_class=LineFormatter,
    )
    cmd.add_argument("--model", "-m", required=True, choices=MODEL_NAMES, help="the bundled model to audit")
    cmd.add_argument(
        "--format", "-f", action="append",
        help=f"formats to audit, comma-separated or repeated (default: {','.join(DEFAULT_FORMATS)})",
    )  # fmt: skip
    cmd.add_argument("--steps", type=int, default=1, help="steps to audit, SGD between them (default: 1)")
    cmd.add_argument("--seed", type=int, default=0, help="the model's weights and batch (default: 0)")
    cmd.add_argument(
        "--headroom", type=float, default=2.0,
        help="the recommended loss scale keeps the largest gradient below max / headroom (default: 2)",
    )  # fmt: skip
    cmd.add_argument("--rows", type=int, default=10, help="tensors shown per format, worst first (default: 10)")
    cmd.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    cmd.add_argument("--json", metavar="FILE.json", help="write every tensor's counts and the loss scales as JSON")
    cmd.add_argument("--plot", metavar="FILE.png", help="draw the gradient histogram per format (PNG, SVG or PDF)")
    cmd.set_defaults(run=cmd_audit)
