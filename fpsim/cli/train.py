"""`fpsim train`: train the digits MLP under precision policies and print a comparison table."""

from __future__ import annotations

import argparse
import math
import sys

from fpsim import train
from fpsim.cli._common import UsageError, check_writable
from fpsim.policies import POLICIES


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


def _progress_line(history: train.History) -> None:
    step, steps = len(history.loss), history.config["steps"]
    if step % max(1, steps // 10) == 0:
        print(f"[{history.policy['name']}] step {step}/{steps} loss {history.loss[-1]:.4g} scale {history.scale[-1]:g}",
              file=sys.stderr)  # fmt: skip


def cmd_train(args: argparse.Namespace) -> None:
    names = [name.strip() for name in args.policy.split(",") if name.strip()]
    if not names:
        raise UsageError("--policy needs at least one policy name")
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    configs = [train.scenario(args.scenario, policy=name, **overrides) for name in names]
    for config in configs:
        config.validate()  # every config, and the output path, are checked before any training starts
    if args.out:
        check_writable(args.out)
    histories = [train.run(config, on_step=None if args.quiet else _progress_line) for config in configs]
    print(f"scenario {args.scenario}: {train.SCENARIOS[args.scenario][0]}")
    print(_table([h.summary() for h in histories]))
    if args.out:
        train.save_results(histories, args.out)
        print(f"saved {len(histories)} run(s) to {args.out}")


def register(commands: argparse._SubParsersAction) -> None:
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
