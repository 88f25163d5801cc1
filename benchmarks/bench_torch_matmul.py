"""Time fpsim.torch.matmul on matrix-unit presets at growing square sizes, on one device.

    python benchmarks/bench_torch_matmul.py                          # CPU: n = 64, 128, 256
    python benchmarks/bench_torch_matmul.py --device cuda            # n = 512 .. 4096 (DeepSeek's K = 4096)
    python benchmarks/bench_torch_matmul.py --device cuda --sizes 4096 --presets h100_fp8_e4m3

Before timing, each preset's result on a small product (with subnormals and several groups) is checked bit for
bit against fpsim.matmul, so a fast wrong answer cannot count. GFLOP/s counts 2·n³ operations, as for a GEMM.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import fpsim
import fpsim.torch as ft
from fpsim._terminal import console

PRESETS = ("h100_fp8_e4m3", "h100_fp16")
SIZES = {"cpu": (64, 128, 256), "cuda": (512, 1024, 2048, 4096)}


def random_operands(n: int, k: int, m: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal samples times 2^U(-12, 4): fp16's and e4m3's subnormals, normals, and cancellation in the sums."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def sample(shape: tuple[int, int]) -> torch.Tensor:
        scale = torch.exp2(torch.randint(-12, 5, shape, generator=generator, device=device).float())
        return torch.randn(shape, generator=generator, device=device) * scale

    return sample((n, k)), sample((k, m))


def check(preset: str, device: torch.device) -> None:
    a, b = random_operands(16, 100, 12, device, seed=1)
    ours = ft.matmul(a, b, preset).cpu().double().numpy()
    reference = fpsim.matmul(a.cpu().double().numpy(), b.cpu().double().numpy(), model=preset)
    if not np.array_equal(ours, reference, equal_nan=True):
        raise SystemExit(f"{preset}: fpsim.torch.matmul differs from fpsim.matmul on {device}; not timing it")


def seconds(preset: str, n: int, device: torch.device) -> float:
    a, b = random_operands(n, n, n, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    ft.matmul(a, b, preset)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", help="square sizes n (M = N = K = n)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), help=f"matrix units (default {PRESETS})")
    options = parser.parse_args()
    device = torch.device(options.device)
    sizes = options.sizes or SIZES.get(device.type, SIZES["cpu"])
    out = console()
    out.print(f"fpsim.torch.matmul on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    for preset in options.presets:
        check(preset, device)
        out.print(f"{preset}: bit for bit fpsim.matmul on a 16x100x12 check")
        seconds(preset, 64, device)  # warm-up: kernels compiled and cached
        for n in sizes:
            elapsed = seconds(preset, n, device)
            out.print(f"  n = {n:5d}: {elapsed:8.3f} s, {2 * n**3 / elapsed / 1e9:8.3f} GFLOP/s")


if __name__ == "__main__":
    main()
