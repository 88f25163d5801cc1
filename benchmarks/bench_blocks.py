"""Time block quantization (MXFP8, NVFP4, MXFP4) against per-tensor fp8_e4m3 rounding on the same data, in one run.

    python benchmarks/bench_blocks.py                 # 10^7 gradient-like float32 values, best of 3
    python benchmarks/bench_blocks.py --n 1000000 --repeat 5 --markdown

Each backend (NumPy; torch on the CPU, and on CUDA when present) is compared with its own per-tensor
`round(x, "fp8_e4m3")`. Before timing, the torch results are checked bit for bit against NumPy's, so a fast wrong
answer cannot win.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from timing import best_time  # the sibling module: benchmarks run as scripts from this folder

import fpsim
import fpsim.torch

BLOCK_CASES = [("mxfp8_e4m3", "floor"), ("mxfp8_e4m3", "rceil"), ("nvfp4", None), ("mxfp4", "floor")]


def gradient_like_float32(n: int, seed: int = 0) -> np.ndarray:
    """Normal values whose scale varies by 2^U(-12, 4) from one stretch of 64 to the next, as layers' gradients do."""
    rng = np.random.default_rng(seed)
    spread = np.repeat(2.0 ** rng.uniform(-12, 4, -(-n // 64)), 64)[:n]
    return (rng.standard_normal(n) * spread).astype(np.float32)


def backends(x: np.ndarray) -> dict[str, dict[str, Callable[[], object]]]:
    """backend -> {case name -> call}; the first case of each backend is its per-tensor fp8 reference."""
    table = {"numpy": _cases(x, fpsim.round, fpsim.quantize_blocks)}
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    for device in devices:
        xt = torch.from_numpy(x).to(device)
        table[f"torch {device}"] = _cases(xt, fpsim.torch.round, fpsim.torch.quantize_blocks, device == "cuda")
    return table


def _cases(x, round_fn, blocks_fn, sync: bool = False) -> dict[str, Callable[[], object]]:
    def timed(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            result = call()
            if sync:
                torch.cuda.synchronize()
            return result

        return run

    cases = {"per-tensor fp8_e4m3": timed(lambda: round_fn(x, "fp8_e4m3"))}
    for name, mode in BLOCK_CASES:
        label = f"{name} {mode}" if mode else name
        cases[label] = timed(lambda name=name, mode=mode: blocks_fn(x, name, scale_mode=mode))
    return cases


def check_identical(x: np.ndarray) -> None:
    xt = torch.from_numpy(x)
    for name, mode in BLOCK_CASES:
        ours = fpsim.quantize_blocks(x, name, scale_mode=mode).values
        devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
        for device in devices:
            theirs = fpsim.torch.quantize_blocks(xt.to(device), name, scale_mode=mode).values.cpu().numpy()
            if not np.array_equal(ours.view(np.int64), theirs.view(np.int64)):
                raise SystemExit(f"torch {device} {name} differs from NumPy")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    x = gradient_like_float32(args.n)
    check_identical(x)
    rows = []
    for backend, cases in backends(x).items():
        times = {label: best_time(call, args.repeat) for label, call in cases.items()}
        reference = times["per-tensor fp8_e4m3"]
        rows += [(backend, label, t, args.n / t / 1e6, t / reference) for label, t in times.items()]
    header = ("backend", "case", "seconds", "Mvalues/s", "× per-tensor fp8")
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for backend, label, t, rate, ratio in rows:
            print(f"| {backend} | {label} | {t:.3f} | {rate:.0f} | {ratio:.1f} |")
    else:
        print(f"{args.n:.0e} float32 values, best of {args.repeat}; torch results bit-identical to NumPy's")
        for backend, label, t, rate, ratio in rows:
            print(f"{backend:10} {label:22} {t:8.3f} s {rate:8.0f} Mvalues/s {ratio:6.1f}×")


if __name__ == "__main__":
    main()
