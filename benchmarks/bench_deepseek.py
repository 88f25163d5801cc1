"""The DeepSeek-V3 experiment (§3.3.2) on the h100_fp8_e4m3 model: an fp8 GEMM at K = 4096, with and without
promoting the partial sums to fp32 every 128 terms, against the exact product.

    python benchmarks/bench_deepseek.py                 # 64x4096 by 4096x64, seed 0
    python benchmarks/bench_deepseek.py --m 16 --n 16 --k 4096 --seed 3

Inputs are N(0,1), scaled per tensor so the largest magnitude is e4m3's max (448), rounded to e4m3. The exact
product is integer arithmetic: every e4m3 value is a multiple of 2^-9 and below 2^9, so 2^9·a and 2^9·b are
integers below 2^18, their products below 2^36 and K = 4096 of them below 2^48: an exact int64 matmul.
On the H200, torch._scaled_mm (fp32 out, no fast accumulation) gave exactly the error figures of this model with
promote_every=128 on benchmarks/gpu_check.py's GEMM (tests/test_matrix_unit.py checks it): cuBLAS promotes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fpsim

E4M3_QUANTUM = 2.0**-9  # e4m3's smallest subnormal: every e4m3 value is an integer multiple of it


def e4m3_matrix(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    values = rng.standard_normal(shape)
    return fpsim.round(values * (448.0 / np.abs(values).max()), "fp8_e4m3")  # per-tensor scale into range


def exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b exactly (see the module docstring for why int64 holds it), as float64 (one rounding, 2^-53 relative)."""
    integers = [np.rint(x / E4M3_QUANTUM).astype(np.int64) for x in (a, b)]  # exact: multiples of 2^-9
    return (integers[0] @ integers[1]).astype(np.float64) * E4M3_QUANTUM**2


def errors(got: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    error = np.abs(got - exact)
    nonzero = exact != 0
    relative = error[nonzero] / np.abs(exact[nonzero])  # large where the exact sum nearly cancels
    return {
        "max relative error": float(relative.max()),
        "median relative error": float(np.median(relative)),
        "max error / max abs exact": float(error.max() / np.abs(exact).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="h100_fp8_e4m3")
    parser.add_argument("--promote-every", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    a, b = e4m3_matrix(rng, (args.m, args.k)), e4m3_matrix(rng, (args.k, args.n))
    exact = exact_product(a, b)
    runs = {
        f"{args.model}": None,
        f"{args.model}, promote_every={args.promote_every}": args.promote_every,
    }
    rows, seconds = {}, {}
    for name, every in runs.items():
        start = time.perf_counter()
        rows[name] = errors(fpsim.matmul(a, b, model=args.model, promote_every=every), exact)
        seconds[name] = time.perf_counter() - start
    rows["fp32 sequential (fpsim 'fp32' model)"] = errors(fpsim.matmul(a, b, model="fp32"), exact)
    columns = list(next(iter(rows.values())))
    print(f"{args.m}x{args.k} by {args.k}x{args.n}, e4m3 inputs (per-tensor scale), seed {args.seed}\n")
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3e}" for c in columns) + " |")
    plain, promoted = (rows[name] for name in runs)
    print("\nreduction factor with promotion: " + ", ".join(f"{c} {plain[c] / promoted[c]:.1f}x" for c in columns))
    print("model time: " + ", ".join(f"{name} {s:.2f} s" for name, s in seconds.items()))


if __name__ == "__main__":
    main()
