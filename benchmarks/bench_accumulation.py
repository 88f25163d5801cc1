"""Time fpsim's reductions on their native fast paths against the general loop, side by side, in one run.

    python benchmarks/bench_accumulation.py            # 10^5 terms, fast path best of 5
    python benchmarks/bench_accumulation.py --n 20000 --markdown

The general loop (one correctly rounded addition per term through the rounding kernel) runs once per case,
since it takes seconds; its result must equal the fast path's bit for bit, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from timing import best_time  # the sibling module: benchmarks run as scripts from this folder

import fpsim
from fpsim.accumulation import general_loop


def cases(n: int) -> dict[str, Callable[[], object]]:
    """name -> a reduction that a fast path serves (order 'sequential' unless named)."""
    rng = np.random.default_rng(0)
    terms = rng.standard_normal(n) * 1e-2  # a random walk: rounding matters at every step
    depth = max(1, n // 256)  # a 16 x depth x 16 matmul: n products, a loop over depth in the general path
    a, b = rng.standard_normal((16, depth)), rng.standard_normal((depth, 16))
    return {
        "sum fp16": lambda: fpsim.sum(terms, "fp16"),
        "sum fp16, fp32 partial sums": lambda: fpsim.sum(terms, model="fp16_fp32acc"),
        "sum bf16": lambda: fpsim.sum(terms, "bf16"),
        "sum bf16, fp32 partial sums": lambda: fpsim.sum(terms, model="bf16_fp32acc"),
        "sum fp32": lambda: fpsim.sum(terms, "fp32"),
        "sum fp16, kahan": lambda: fpsim.sum(terms, "fp16", order="kahan"),
        f"matmul fp16_fp32acc 16x{depth}x16": lambda: fpsim.matmul(a, b, model="fp16_fp32acc"),
    }


def general_time(run: Callable[[], object], fast_result: object, name: str) -> float:
    """One timed run of the general loop, checked bit for bit against the fast path."""
    start = time.perf_counter()
    with general_loop():
        result = run()
    seconds = time.perf_counter() - start
    if not np.array_equal(np.asarray(result).view(np.uint64), np.asarray(fast_result).view(np.uint64)):
        raise SystemExit(f"{name}: the fast path gives {fast_result}, the general loop {result}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10**5, help="terms per reduction (default 10^5)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each fast path; the best is kept")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be positive")
    print(f"{args.n:,} terms; fast path best of {args.repeat}, general loop once")
    if args.markdown:
        print("\n| case | fast path ms | general loop ms | speed-up |\n|---|---:|---:|---:|")
    for name, run in cases(args.n).items():
        fast = best_time(run, args.repeat)
        general = general_time(run, run(), name)
        if args.markdown:
            print(f"| {name} | {fast * 1e3:.1f} | {general * 1e3:.0f} | {general / fast:.0f}x |")
        else:
            print(f"{name:34} {fast * 1e3:9.1f} ms  {general * 1e3:9.0f} ms  {general / fast:7.0f}x")


if __name__ == "__main__":
    main()
