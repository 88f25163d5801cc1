"""Time fpsim's rounding against numpy's, ml_dtypes' and torch's own casts on one array, in one run.

    python benchmarks/bench_codec.py            # 10^7 wide-range float32 values, best of 5
    python benchmarks/bench_codec.py --n 1000000 --repeat 3 --markdown

Every timed call is a round trip (float32 in, float64 out), the shape of `fpsim.round`. Before timing,
each fpsim result is checked bit for bit against its reference, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import ml_dtypes
import numpy as np
import torch
from timing import best_time  # the sibling module: benchmarks run as scripts from this folder

import fpsim


def wide_range_float32(n: int, seed: int = 0) -> np.ndarray:
    """sign·2^U(-30, 20)·(1 + U): spans fp16's subnormals, normals and overflow."""
    rng = np.random.default_rng(seed)
    return (rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-30, 20, n) * (1 + rng.random(n))).astype(np.float32)


def cases(x: np.ndarray) -> dict[str, tuple[Callable[[], object], str | None]]:
    """name -> (call, the name of the row it is compared with)."""
    xt = torch.from_numpy(x)

    def numpy_fp16() -> np.ndarray:
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float64)

    return {
        "numpy astype(float16)": (numpy_fp16, None),
        "fpsim fp16 nearest_even": (lambda: fpsim.round(x, fpsim.FP16), "numpy astype(float16)"),
        "fpsim fp16 stochastic": (lambda: fpsim.round(x, fpsim.FP16, "stochastic", rng=0), "fpsim fp16 nearest_even"),
        "torch .to(float16)": (lambda: xt.to(torch.float16).to(torch.float64), "numpy astype(float16)"),
        "ml_dtypes bfloat16": (lambda: x.astype(ml_dtypes.bfloat16).astype(np.float64), None),
        "fpsim bf16": (lambda: fpsim.round(x, fpsim.BF16), "ml_dtypes bfloat16"),
        "torch .to(bfloat16)": (lambda: xt.to(torch.bfloat16).to(torch.float64), "ml_dtypes bfloat16"),
        "ml_dtypes float8_e4m3fn": (lambda: x.astype(ml_dtypes.float8_e4m3fn).astype(np.float64), None),
        "fpsim fp8_e4m3": (lambda: fpsim.round(x, fpsim.FP8_E4M3), "ml_dtypes float8_e4m3fn"),
        "torch .to(float8_e4m3fn)": (lambda: xt.to(torch.float8_e4m3fn).to(torch.float64), "ml_dtypes float8_e4m3fn"),
    }


def check_exact(table: dict[str, tuple[Callable[[], object], str | None]]) -> None:
    for ours, reference in [
        ("fpsim fp16 nearest_even", "numpy astype(float16)"),
        ("fpsim bf16", "ml_dtypes bfloat16"),
        ("fpsim fp8_e4m3", "ml_dtypes float8_e4m3fn"),
    ]:
        a, b = np.asarray(table[ours][0]()), np.asarray(table[reference][0]())
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        if not same.all():
            raise SystemExit(f"{ours} differs from {reference} in {np.count_nonzero(~same)} elements")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10**7, help="array length (default 10^7)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case; the best is kept")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    x = wide_range_float32(args.n)
    table = cases(x)
    check_exact(table)
    seconds = {name: best_time(run, args.repeat) for name, (run, _) in table.items()}
    print(f"{args.n:,} wide-range float32 values, best of {args.repeat}, torch threads {torch.get_num_threads()}")
    if args.markdown:
        print("\n| case | ms | ratio | compared with |\n|---|---:|---:|---|")
    for name, (_, reference) in table.items():
        ratio = f"{seconds[name] / seconds[reference]:.2f}x" if reference else ""
        ms = seconds[name] * 1e3
        if args.markdown:
            print(f"| {name} | {ms:.1f} | {ratio} | {reference or ''} |")
        else:
            print(f"{name:28} {ms:9.1f} ms  {ratio:>7}  {'vs ' + reference if reference else ''}")


if __name__ == "__main__":
    main()
