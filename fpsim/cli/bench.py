"""`fpsim bench`: measure mixed precision's speed and memory on this machine, next to the claims "2–3× faster" and
"50% less memory".

Invariant: the device, the model and policy names and both output paths are checked before anything is measured.
"""

from __future__ import annotations

import argparse
import json

from fpsim import _terminal
from fpsim._files import atomic_write, check_output_path
from fpsim.cli._common import FIGURE_SUFFIXES, LineFormatter, api_errors, device_arg, save_figure

JSON_SUFFIXES = (".json",)
DEVICES = "cpu, cuda, cuda:N or auto (cuda when present, else the CPU)"
API_NAMES = {"models": "--model", "policies": "--policy"}


def _check_outputs(args: argparse.Namespace) -> None:
    outputs = [(args.out, JSON_SUFFIXES, "-o"), (args.plot, FIGURE_SUFFIXES, "--plot")]
    for path, suffixes, name in outputs:
        if path is not None:
            check_output_path(path, suffixes=suffixes, argument=name)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",")]


def cmd_bench(args: argparse.Namespace) -> None:
    _check_outputs(args)
    device = str(device_arg(args.device))
    from fpsim.torch.bench import bench, selection

    with api_errors(names=API_NAMES):
        models, policies = selection(_names(args.model), _names(args.policy))
    report = bench(device, quick=args.quick, models=models, policies=policies)
    out = _terminal.console()
    out.print(report.table())
    if args.out is not None:
        text = json.dumps(report.to_dict(), indent=1) + "\n"
        atomic_write(args.out, lambda file: file.write(text), suffixes=JSON_SUFFIXES, argument="-o")
        out.print(f"wrote {args.out}", markup=False)
    if args.plot is not None:
        from fpsim.plots.bench import bench_figure

        save_figure(bench_figure(report)[0], args.plot, "--plot")


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "bench",
        help='measure mixed precision here: matmul TFLOP/s, training-step time and memory, against "2–3×" and "50%%"',
        description="Measure on this machine: matmul throughput in fp32, tf32, fp16, bf16 (and fp8 where the GPU "
        "has it), and one training step of each bundled model (digits-mlp, digits-cnn, tiny-transformer) under fp32, "
        "amp (autocast fp16 + GradScaler) and bf16 (autocast): median time per step and peak memory, with the "
        'speed-up and memory saving printed next to the claims "2–3× faster" and "50% less memory". A dtype or '
        "policy the device lacks gets a row saying so. Policies (and dtypes) are timed in turn, round by round, after "
        "warm-up, synchronised with the GPU; ratios use each one's fastest round, and a row whose median lies over "
        "1.5× its fastest is marked unreliable instead of judged.",
        epilog="examples:\n  fpsim bench --quick\n  fpsim bench --quick --model digits-mlp --policy fp32,bf16\n"
        "  fpsim bench --device cuda -o bench.json --plot bench.png",
        formatter_class=LineFormatter,
    )
    cmd.add_argument("--device", default="auto", help=f"torch device: {DEVICES} (default: auto)")
    cmd.add_argument("--quick", action="store_true", help="small sizes and few repeats: seconds on a laptop CPU")
    cmd.add_argument("--model", "-m", metavar="NAMES", help="bundled models to step, comma-separated (default: all)")
    cmd.add_argument("--policy", "-p", metavar="NAMES", help="policies: fp32, amp, bf16, fp8, comma-separated "
                     "(default: all; ratios need fp32)")  # fmt: skip
    cmd.add_argument("-o", "--out", metavar="FILE", help="also write the report as JSON (.json)")
    cmd.add_argument("--plot", metavar="FILE", help="also draw time and memory per policy (.png, .svg or .pdf)")
    cmd.set_defaults(run=cmd_bench)
