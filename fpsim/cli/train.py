"""`fpsim train`: train the digits MLP under precision policies and print a comparison table.

Invariant: every config and both output paths are checked before the first training step.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from fpsim import _terminal, train
from fpsim._files import check_output_path
from fpsim.cli._common import LineFormatter, UsageError
from fpsim.formats import get_format
from fpsim.policies import KERNELS, POLICIES, units_for
from fpsim.scaling import SCALERS

# Config fields the command sets, and the option that sets each: Config's messages are translated to options
_OPTIONS = {
    "steps": "--steps",
    "seed": "--seed",
    "lr": "--lr",
    "hidden": "--hidden",
    "optimizer": "--optimizer",
    "loss_scale": "--loss-scale",
    "scaler": "--scaler",
    "data": "--data",
    "clip_norm": "--clip-norm",
    "kernels": "--kernels",
    "accumulate": "--accumulate",
}
_IGNORES_LOSS_SCALE = ("none", "apex")  # no scaler, or Apex's fixed start at 2^32
_NOTE = "flushed % and lost updates %: means over all steps (`fpsim plot histogram` shows the last step's gradients)"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 or not math.isfinite(value) else f"{value:.3e}"
    return str(value)


def _hidden(text: str) -> list[int]:
    """Layer widths from '64' or '128,64'."""
    widths = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"\d+", width) for width in widths):
        raise UsageError(f"--hidden must be layer widths such as 64 or 128,64; got {text!r}")
    return [int(width) for width in widths]


def _configs(args: argparse.Namespace) -> list[train.Config]:
    """One validated Config per policy; Config's messages name the command's options."""
    names = [name.strip() for name in args.policy.split(",") if name.strip()]
    if not names:
        raise UsageError("--policy needs at least one policy name, such as fp32 or fp32,amp")
    overrides = {field: getattr(args, field) for field in _OPTIONS if getattr(args, field) is not None}
    configs = [train.scenario(args.scenario, policy=name, **overrides) for name in names]
    for config in configs:
        try:
            policy = config.validate()
        except ValueError as err:
            field = str(err).split(" ", 1)[0].split("=", 1)[0]
            raise UsageError(str(err).replace(field, _OPTIONS[field], 1) if field in _OPTIONS else str(err)) from None
        if args.loss_scale is not None and policy.scaler in _IGNORES_LOSS_SCALE:
            raise UsageError(
                f"--loss-scale does not apply to policy {policy.name} (scaler {policy.scaler}): "
                "add --scaler static or --scaler dynamic, or choose a policy with a loss scaler"
            )
    return configs


def _check_outputs(args: argparse.Namespace) -> None:
    outputs = [(args.out, train.RESULTS_SUFFIXES, "--out"), (args.csv, train.CSV_SUFFIXES, "--csv")]
    targets = [check_output_path(path, suffixes=sfx, argument=name) for path, sfx, name in outputs if path is not None]
    if len(targets) == 2 and targets[0] == targets[1]:
        raise UsageError(f"--out and --csv name the same file {args.out!r}: name two files")


def _backend(args: argparse.Namespace) -> dict:
    """The run's backend options, the device checked before any training."""
    if args.backend == "numpy":
        if args.device is not None:
            raise UsageError("--device needs --backend torch; the numpy simulator runs on the CPU")
        return {}
    if args.kernels is not None:
        raise UsageError("--kernels sets the simulator's rounding points; torch runs its own kernels: drop --kernels")
    if args.accumulate is not None:
        raise UsageError(
            "--accumulate sets the simulator's matmuls; torch runs the device's own (on an H100/H200 its Tensor "
            "Cores): drop --accumulate"
        )
    from fpsim.torch import training  # ImportError names the extra to install

    return {"backend": "torch", "device": str(training.resolve_device(args.device or "auto"))}


def _train_all(configs: list[train.Config], quiet: bool, backend: dict) -> list[train.History]:
    with _terminal.StepProgress(quiet=quiet) as progress:
        return [train.run(c, on_step=_reporter(progress.task(c.policy, c.steps)), **backend) for c in configs]


def _reporter(update: Callable[[int, str], None]) -> Callable[[train.History], None]:
    return lambda history: update(len(history.loss), f"loss {history.loss[-1]:.4g} scale {history.scale[-1]:g}")


def cmd_train(args: argparse.Namespace) -> None:
    configs = _configs(args)
    _check_outputs(args)  # every config, both paths and the device are checked before any training starts
    backend = _backend(args)
    histories = _train_all(configs, args.quiet, backend)
    out = _terminal.console()
    where = f", torch on {backend['device']}" if backend else ""
    out.print(f"scenario {args.scenario}{where}: {train.SCENARIOS[args.scenario][0]}", markup=False)
    summaries = [h.summary() for h in histories]
    out.print(_terminal.table(list(summaries[0]), ([_cell(v) for v in s.values()] for s in summaries)))
    out.print(_NOTE, markup=False, style="dim")
    for path, save in ((args.out, train.save_results), (args.csv, train.save_csv)):
        if path is not None:
            save(histories, path)
            print(f"saved {len(histories)} run(s) to {path}")


def _epilog() -> str:
    width = max(map(len, [*POLICIES, *train.SCENARIOS, *SCALERS]))
    lines = ["policies:", *(f"  {name:<{width}}  {p.description}" for name, p in POLICIES.items())]
    lines += ["scenarios:", *(f"  {name:<{width}}  {text}" for name, (text, _) in train.SCENARIOS.items())]
    lines += ["scalers:", *(f"  {name:<{width}}  {text}" for name, text in SCALERS.items())]
    lines += ["matrix units (--accumulate), by the compute format they take:"]
    lines += [f"  {fmt:<{width}}  {', '.join(units_for(fmt))}" for fmt in _unit_formats()]
    return "\n".join(lines)


def _unit_formats() -> list[str]:
    """The compute formats of the built-in policies that a matrix unit can run (same compute and grads formats,
    no per-tensor scaling: Policy refuses the others)."""
    runnable = (p for p in POLICIES.values() if p.grads == p.compute and not p.per_tensor_scaling)
    formats = dict.fromkeys(get_format(p.compute).name for p in runnable)
    return [fmt for fmt in formats if units_for(fmt)]


def register(commands: argparse._SubParsersAction) -> None:
    default = train.Config()
    cmd = commands.add_parser(
        "train",
        help="train the digits MLP under precision policies and compare",
        description="Train a small MLP under one or more precision policies, print a table comparing them, and "
        "optionally save every step (JSON for `fpsim plot --from`, CSV for a spreadsheet). Options left out take "
        "the scenario's value, else the default shown.",
        epilog=_epilog(),
        formatter_class=LineFormatter,
    )
    cmd.add_argument("--policy", "-p", default="fp32", help="one or more policies, comma-separated (default: fp32)")
    cmd.add_argument("--scenario", "-s", default="baseline", choices=list(train.SCENARIOS), help="(default: baseline)")
    cmd.add_argument(
        "--steps", type=int, help=f"training steps (default: {default.steps}, at most {train.MAX_STEPS:,})"
    )
    cmd.add_argument(
        "--seed", type=int, help=f"seed for data split, initialisation and batches (default: {default.seed})"
    )
    cmd.add_argument("--lr", type=float, help=f"learning rate (default: {default.lr:g})")
    cmd.add_argument("--hidden", type=_hidden, help="hidden layer widths, e.g. 128,64 (default: 64)")
    cmd.add_argument("--optimizer", choices=train.OPTIMIZERS, help=f"(default: {default.optimizer})")
    cmd.add_argument(
        "--scaler", choices=list(SCALERS), help="loss scaler, replacing the policy's (default: the policy's)"
    )
    cmd.add_argument("--loss-scale", type=float, help="the scaler's (initial) loss scale (default: the policy's)")
    cmd.add_argument(
        "--accumulate",
        help="the matmuls' accumulation, replacing the policy's: fp32, fp64 (BLAS) or a matrix unit such as "
        "h100_fp16 that takes the policy's compute format (listed below) (default: the policy's)",
    )
    cmd.add_argument("--data", choices=train.DATASETS, help=f"data set (default: {default.data})")
    cmd.add_argument("--clip-norm", type=float, help="clip the gradient norm to this, after unscaling (default: off)")
    cmd.add_argument(
        "--backend",
        choices=train.BACKENDS,
        default="numpy",
        help="numpy: fpsim's bit-exact simulator; torch: the same experiment in real torch (default: numpy)",
    )
    cmd.add_argument("--device", help="with --backend torch: cpu, cuda, cuda:N or auto (default: auto)")
    cmd.add_argument(
        "--kernels",
        choices=KERNELS,
        help="simulator rounding points: exact (one rounding per fused "
        "op, the teaching ideal) or torch (where torch's CPU kernels round) (default: exact)",
    )
    cmd.add_argument("--out", "-o", metavar="FILE.json", help="save every run's history as JSON")
    cmd.add_argument("--csv", metavar="FILE.csv", help="save every run's history as CSV, one row per run per step")
    cmd.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    cmd.set_defaults(run=cmd_train)
