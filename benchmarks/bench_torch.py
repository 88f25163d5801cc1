"""Time fpsim.torch.round against torch's own casts and a copy of the same bytes, in one run, on one device.

    python benchmarks/bench_torch.py                    # 10^7 wide-range float32 values on the CPU, median of 7
    python benchmarks/bench_torch.py --device cuda      # CUDA events after a warm-up; GB/s against the copy
    python benchmarks/bench_torch.py --compile          # also torch.compile(fpsim.torch.round), checked identical

Every call is float32 in, float32 out: 8 bytes of traffic per element, like `x.clone()`. Before timing, each
fpsim result is checked bit for bit against torch's cast (under the cast's own overflow policy, detected), and
each compiled variant against the eager one, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Callable

import torch

import fpsim.torch as ft
from fpsim._terminal import console
from fpsim.torch.bench import interleaved_seconds

NATIVE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn}
BYTES_PER_ELEMENT = 8  # a float32 read and a float32 written


def wide_range_float32(n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """sign·2^U(-30, 20)·(1 + U): spans fp16's subnormals, normals and overflow (as bench_codec.py)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    sign = torch.randint(0, 2, (n,), generator=generator, device=device) * 2 - 1
    exponent = torch.rand(n, generator=generator, device=device, dtype=torch.float64) * 50 - 30
    mantissa = 1 + torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return (sign * torch.exp2(exponent) * mantissa).to(torch.float32)


def cases(x: torch.Tensor, compile_: bool) -> dict[str, tuple[Callable[[], torch.Tensor], str | None]]:
    """name -> (call, the row it is compared with); the e4m3 row uses the native cast's overflow policy."""
    e4m3_policy = ft.native_overflow(torch.float8_e4m3fn, x.device)
    generator = torch.Generator(device=x.device).manual_seed(1)
    fpsim_calls = {
        "fp16 nearest_even": (lambda f: lambda: f(x, "fp16"), "fp16"),
        "bf16 nearest_even": (lambda f: lambda: f(x, "bf16"), "bf16"),
        f"fp8_e4m3 nearest_even, {e4m3_policy}": (lambda f: lambda: f(x, "fp8_e4m3", overflow=e4m3_policy), "fp8_e4m3"),
        "fp16 stochastic": (lambda f: lambda: f(x, "fp16", "stochastic", generator=generator), "fp16"),
    }
    table = {"copy x.clone()": (x.clone, None)}
    for dtype in NATIVE.values():
        table[f"torch .to({str(dtype).removeprefix('torch.')}).float()"] = (
            lambda d=dtype: x.to(d).to(torch.float32),
            None,
        )
    native_row = {name: f"torch .to({str(dtype).removeprefix('torch.')}).float()" for name, dtype in NATIVE.items()}
    for name, (bind, fmt) in fpsim_calls.items():
        table[f"fpsim {name}"] = (bind(ft.round), native_row[fmt])
    if compile_:  # deterministic modes only: compiled code draws its own random numbers (inductor's RNG)
        compiled = torch.compile(ft.round, dynamic=False)  # one size is timed; torch 2.11 fails on symbolic ones
        for name, (bind, fmt) in fpsim_calls.items():
            if "stochastic" not in name:
                table[f"compiled fpsim {name}"] = (bind(compiled), native_row[fmt])
    return table


class MismatchError(Exception):
    """A timed case whose result is not bit for bit its reference's: it must not be timed."""


def check_exact(table: dict, x: torch.Tensor) -> None:
    """fpsim against the native casts, and every compiled variant against eager fpsim, bit for bit."""
    pairs = [(name, reference) for name, (_, reference) in table.items() if reference and "stochastic" not in name]
    pairs += [(name, name.removeprefix("compiled ")) for name in table if name.startswith("compiled")]
    for ours, reference in pairs:
        a, b = table[ours][0](), table[reference][0]()
        same = (a.view(torch.int32) == b.view(torch.int32)) | (torch.isnan(a) & torch.isnan(b))
        if not bool(same.all()):
            raise MismatchError(f"{ours} differs from {reference} in {int((~same).sum())} of {x.numel()} elements")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10**7, help="tensor length (default 10^7)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case; the median is kept")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(fpsim.torch.round)")
    args = parser.parse_args()
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be at least 1")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"unknown device {args.device!r}; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch has no CUDA device; use --device cpu")
    try:
        rows = measure(wide_range_float32(args.n, device), args.repeat, args.compile)
    except MismatchError as err:
        parser.exit(1, f"bench_torch: {err}\n")
    out = console()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    out.print(f"{args.n:,} wide-range float32 values, median of {args.repeat}; torch {torch.__version__}, {where}")
    out.print("| case | ms | GB/s | % of copy | × native |\n|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['x native']:.2f}" if row["x native"] else ""
        out.print(f"| {row['case']} | {row['ms']:.2f} | {row['GB/s']:.1f} | {row['% of copy']:.0f}% | {ratio} |")


def measure(x: torch.Tensor, repeat: int, compile_: bool) -> list[dict]:
    """Check every case bit for bit, then time it: one row per case with ms, GB/s, % of copy and × native."""
    torch._logging.set_logs(dynamo=logging.ERROR)  # graph breaks at fpsim's host checks are expected, not news
    table = cases(x, compile_)
    check_exact(table, x)
    rounds = interleaved_seconds({name: run for name, (run, _) in table.items()}, x.device, repeat, warmup=3)
    seconds = {name: statistics.median(times) for name, times in rounds.items()}
    copy = seconds["copy x.clone()"]
    return [
        {"case": name, "ms": 1e3 * seconds[name], "GB/s": BYTES_PER_ELEMENT * x.numel() / seconds[name] / 1e9,
         "% of copy": 100 * copy / seconds[name], "x native": seconds[name] / seconds[ref] if ref else None}
        for name, (_, ref) in table.items()
    ]  # fmt: skip


if __name__ == "__main__":
    main()
