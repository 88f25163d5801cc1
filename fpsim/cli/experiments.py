"""`fpsim demo` and `fpsim compare`: the simulator and torch on the same experiments, written to a report folder.

Invariant: the device, every config and the output folder are checked before the first training step.
"""

from __future__ import annotations

import argparse

from fpsim import _terminal, train
from fpsim.cli._common import UsageError

DEVICES = "cpu, cuda, cuda:N or auto (cuda when present, else the CPU)"


def cmd_demo(args: argparse.Namespace) -> None:
    from fpsim.demo import demo

    demo(args.out, device=args.device, steps=args.steps)


def cmd_compare(args: argparse.Namespace) -> None:
    from fpsim import compare

    policies = [name.strip() for name in args.policy.split(",") if name.strip()]
    if not policies:
        raise UsageError("--policy needs at least one policy name, such as amp or fp32,amp")
    compare.report(args.scenario, policies, out=args.out, device=args.device, steps=args.steps,
                   synced=args.synced, console=_terminal.console())  # fmt: skip


def _steps(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of steps >= 1; got {text!r}")
    return int(text)


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="the main job: the bits of 0.1, then loss scaling in the simulator and in torch, as a report",
        description="Tell mixed precision's story in three parts: the bits of 0.1 in fp32, fp16 and bf16; the "
        "underflow scenario (fp32, fp16, amp) and the overflow scenario (fp16, amp), each trained by fpsim's "
        "simulator and by real torch side by side. Writes report.md with figures and a JSON record into OUT.",
    )
    demo.add_argument("--out", "-o", default="fpsim-demo", help="report folder (default: fpsim-demo)")
    demo.add_argument("--device", default="auto", help=f"torch device: {DEVICES} (default: auto)")
    demo.add_argument("--steps", type=_steps, default=150, help="training steps per run (default: 150)")
    demo.set_defaults(run=cmd_demo)

    cmp = commands.add_parser(
        "compare",
        help="run one scenario in the simulator and in torch, and measure how closely they agree",
        description="Train one scenario under each policy twice, in fpsim's NumPy simulator and in torch on "
        "DEVICE, from the same weights and batches, and report per policy: final loss and accuracy of each, "
        "skipped steps and whether they agree, whether the loss-scale sequences are equal, flushed %, time "
        "per step, and the per-step relative loss difference. --synced also restarts torch from the "
        "simulator's exact state at every step and counts weight elements that stay bit-identical.",
    )
    cmp.add_argument("--scenario", "-s", default="underflow", choices=list(train.SCENARIOS),
                     help="(default: underflow)")  # fmt: skip
    cmp.add_argument("--policy", "-p", default="fp32,fp16,amp,bf16",
                     help="policies, comma-separated (default: fp32,fp16,amp,bf16)")  # fmt: skip
    cmp.add_argument("--device", default="auto", help=f"torch device: {DEVICES} (default: auto)")
    cmp.add_argument("--steps", type=_steps, help="training steps (default: the scenario's, 300)")
    cmp.add_argument("--synced", action="store_true", help="also the step-by-step synced comparison")
    cmp.add_argument("--out", "-o", required=True, help="report folder for report.md, report.json and figures")
    cmp.set_defaults(run=cmd_compare)
