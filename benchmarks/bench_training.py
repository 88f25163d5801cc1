"""Time one training step of the default digits MLP under each precision policy, in one run.

    python benchmarks/bench_training.py            # 200 steps per policy, best of 3
    python benchmarks/bench_training.py --steps 100 --repeat 5

Prints the time per step and its ratio to fp32's (the issue's target: amp at most 3x fp32).
"""

from __future__ import annotations

import argparse

from fpsim.policies import POLICIES
from fpsim.train import Config, run


def seconds_per_step(policy: str, steps: int, repeat: int) -> float:
    run(Config(policy=policy, steps=5))  # warm caches and lazy imports
    return min(run(Config(policy=policy, steps=steps, eval_every=steps)).seconds for _ in range(repeat)) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    times = {policy: seconds_per_step(policy, args.steps, args.repeat) for policy in POLICIES}
    print(f"digits MLP 64-64-10, batch 64, {args.steps} steps, best of {args.repeat}")
    print("| policy | ms per step | ratio to fp32 |\n|---|---:|---:|")
    for policy, seconds in times.items():
        print(f"| {policy} | {seconds * 1e3:.2f} | {seconds / times['fp32']:.2f}x |")


if __name__ == "__main__":
    main()
