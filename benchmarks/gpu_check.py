"""The prepared device check: fpsim's torch codec against the native casts, its throughput against a copy, and
the simulator against torch on the same experiments, on CUDA when present (the CPU otherwise, for the tests).

    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR            # full check: about 3 minutes on an H200
    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR --quick    # tiny sizes, seconds, any machine

It uses only what the device machine has (torch, numpy, matplotlib, ml_dtypes; no gmpy2), detects the
installed torch's behaviour instead of assuming it, and writes DIR/gpu_check.json and DIR/gpu_check.md after
every section, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import fpsim
from fpsim import torch as fptorch
from fpsim.report import markdown_table

NATIVE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
DETERMINISTIC_MODES = [mode for mode in fpsim.ROUNDING_MODES if mode != "stochastic"]


def wide_range(n: int, device: str, seed: int = 0) -> torch.Tensor:
    """sign·2^U(-40, 20)·(1 + U) as float32: fp16's and fp8's subnormals, normals and overflow, on `device`."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    exponent = torch.empty(n).uniform_(-40, 20, generator=generator)
    x = sign * torch.exp2(exponent) * (1 + torch.rand(n, generator=generator))
    return x.to(torch.float32).to(device)


def codes_and_midpoints(fmt: str, device: str) -> torch.Tensor:
    """Every finite value of a <=16-bit format and, as float32, every midpoint between neighbours and ±1 ulp."""
    values = np.unique(fpsim.decode(np.arange(2 ** fpsim.get_format(fmt).bits), fmt))
    values = values[np.isfinite(values)]
    middles = (values[:-1] + values[1:]) / 2  # exact in float64; the float32 casts below are the probes
    probes = np.concatenate([values, middles]).astype(np.float32)
    neighbours = [np.nextafter(probes, np.float32(np.inf)), np.nextafter(probes, np.float32(-np.inf))]
    return torch.from_numpy(np.concatenate([probes, *neighbours])).to(device)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise bit identity of two float32 tensors, any NaN equal to any NaN."""
    nan = torch.isnan(a) & torch.isnan(b)
    return (a.view(torch.int32) == b.view(torch.int32)) | nan


def e4m3fn_overflow_policy(device: str) -> str:
    """The installed torch's e4m3fn cast past 448: 'saturate' (torch >= 2.13) or 'nan' (older releases)."""
    cast = torch.tensor([480.0, math.inf], device=device).to(torch.float8_e4m3fn).to(torch.float32).cpu()
    if torch.isnan(cast).all():
        return "nan"
    if (cast == 448).all():
        return "saturate"
    return f"unknown ({cast.tolist()})"


def native_overflow_policy(fmt: str, device: str) -> str:
    return e4m3fn_overflow_policy(device) if fmt == "fp8_e4m3" else "inf"


def check_native_casts(device: str, n: int) -> list[dict]:
    """fpsim.torch.round against x.to(dtype) on `device`, under each cast's own overflow policy."""
    rows = []
    x = wide_range(n, device)
    for fmt, dtype in NATIVE.items():
        policy = native_overflow_policy(fmt, device)
        inputs = torch.cat([x, codes_and_midpoints(fmt, device)])
        ours = fptorch.round(inputs, fmt, overflow=policy if policy in ("inf", "nan", "saturate") else None)
        native = inputs.to(dtype).to(torch.float32)
        mismatches = int((~same_bits(ours, native)).sum())
        rows.append({"format": fmt, "values": inputs.numel(), "native overflow": policy, "mismatches": mismatches})
    return rows


def check_against_numpy(device: str, n: int) -> list[dict]:
    """fpsim.torch.round on `device` against the NumPy codec (the exact reference), every deterministic mode."""
    x = wide_range(n, device, seed=1)
    reference_input = x.cpu().numpy()
    rows = []
    for fmt in ("fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"):
        for mode in DETERMINISTIC_MODES:
            ours = fptorch.round(x, fmt, mode).cpu().numpy().astype(np.float64)
            reference = fpsim.round(reference_input, fmt, mode)
            equal = (ours.view(np.int64) == reference.view(np.int64)) | (np.isnan(ours) & np.isnan(reference))
            rows.append({"format": fmt, "mode": mode, "values": n, "mismatches": int((~equal).sum())})
    return rows


def timed(run: Callable[[], object], device: str, repeat: int) -> float:
    """Median seconds of `run`, after a warm-up, with CUDA events on a GPU."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            run()
            times.append(time.perf_counter() - begin)
    return float(np.median(times))


def throughput(device: str, n: int, repeat: int) -> list[dict]:
    """GB/s of fpsim.torch.round (float32 in, float32 out) against the native cast and a copy of the same bytes."""
    x = wide_range(n, device, seed=2)
    out = torch.empty_like(x)
    generator = torch.Generator(device=device).manual_seed(0)
    moved = 2 * x.numel() * x.element_size()  # every case reads and writes one float32 per element
    cases = {
        "copy (device to device)": lambda: out.copy_(x),
        "native .to(float16).to(float32)": lambda: x.to(torch.float16).to(torch.float32),
        "fpsim fp16 nearest_even": lambda: fptorch.round(x, "fp16"),
        "fpsim bf16 nearest_even": lambda: fptorch.round(x, "bf16"),
        "fpsim fp8_e4m3 nearest_even": lambda: fptorch.round(x, "fp8_e4m3"),
        "fpsim fp16 stochastic": lambda: fptorch.round(x, "fp16", "stochastic", generator=generator),
    }
    seconds = {name: timed(run, device, repeat) for name, run in cases.items()}
    copy = seconds["copy (device to device)"]
    return [
        {"case": name, "ms": 1000 * s, "GB/s": moved / s / 1e9, "fraction of copy bandwidth": copy / s}
        for name, s in seconds.items()
    ]


def experiments(device: str, steps: int | None, synced_steps: int) -> dict:
    """The simulator against torch on `device`: underflow and overflow, every policy, free-running and synced."""
    from fpsim import compare

    results = {}
    for scenario in ("underflow", "overflow"):
        comparison = compare.compare(scenario, compare.POLICIES, device=device, steps=steps, synced=synced_steps)
        results[scenario] = comparison.to_dict()
    return results


def probe_rows(k: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Dot products that expose a matrix unit's rules (name -> (a, b), length k), exact in fp16 and bf16.

    - frac_t: 1·1 + 8 products of 2^-t (each 2^-(t//2) · 2^-(t - t//2), so fp16 holds the factors). Each 2^-t
      survives alignment to 1's exponent only if t <= the fraction bits kept, so the fp32 result is
      1 + 2^(3-t) up to that t and 1 beyond it (an fp32 sum alone would keep it up to t = 26).
    - group_p: 1 + 2^-24 − 1 with the −1 at position p. In one group the three are summed exactly (2^-24 left);
      once −1 falls in a later group, the first group's 1 + 2^-24 is normalized to fp32 first and 2^-24 is lost.
    """
    rows = {}
    for t in range(8, 30):
        a, b = np.zeros(k), np.zeros(k)
        a[0], b[0], a[1:9], b[1:9] = 1.0, 1.0, 2.0 ** -(t // 2), 2.0 ** -(t - t // 2)
        rows[f"frac_{t}"] = (a, b)
    for p in range(2, k):
        a = np.zeros(k)
        a[0], a[1], a[p] = 1.0, 2.0**-24, -1.0
        rows[f"group_{p}"] = (a, np.ones(k))
    return rows


def tensor_core_probes(device: str) -> dict:
    """Raw matrix-unit outputs for the Tensor Core models to come: crafted dot products and one K = 4096 GEMM
    per input format, with fp32 outputs where torch offers them (torch.mm out_dtype, torch._scaled_mm).
    On the CPU the same calls run (or report themselves unavailable), which keeps this code tested."""
    rows = probe_rows()
    kinds = {"fp16 mm -> fp16": _mm(torch.float16, None), "fp16 mm -> fp32": _mm(torch.float16, torch.float32),
             "bf16 mm -> bf16": _mm(torch.bfloat16, None), "bf16 mm -> fp32": _mm(torch.bfloat16, torch.float32),
             "fp8_e4m3 scaled_mm -> fp32": _scaled_mm}  # fmt: skip
    outputs = {}
    for kind, product in kinds.items():
        try:
            outputs[kind] = {name: _dot(product, a, b, device) for name, (a, b) in rows.items()}
        except (AttributeError, TypeError, RuntimeError) as err:
            outputs[kind] = f"unavailable: {err}"[:300]
    return {"outputs": outputs, "gemm_k4096": _gemm_errors(device)}


def _dot(product: Callable, a: np.ndarray, b: np.ndarray, device: str) -> float:
    """a·b through a 16×K by K×16 matrix product (the smallest shape every kernel takes), read at [0, 0]."""
    rows = torch.tensor(np.tile(a, (16, 1)), dtype=torch.float32, device=device)
    columns = torch.tensor(np.tile(b[:, None], (1, 16)), dtype=torch.float32, device=device)
    return float(product(rows, columns)[0, 0])


def _mm(dtype: torch.dtype, out_dtype: torch.dtype | None) -> Callable:
    if out_dtype is None:
        return lambda a, b: torch.mm(a.to(dtype), b.to(dtype))
    return lambda a, b: torch.mm(a.to(dtype), b.to(dtype), out_dtype=out_dtype)


def _scaled_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """e4m3 × e4m3 on the FP8 Tensor Cores, unit scales, fp32 out (b must be column-major)."""
    one = torch.tensor(1.0, device=a.device)
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
    return torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.float32)


def _gemm_errors(device: str, k: int = 4096) -> dict:
    """A 64×K by K×64 GEMM of N(0,1) inputs rounded to each format: max and median relative error of the fp32
    result against the exact (float64) sum of the same rounded inputs; DeepSeek-V3 reports ~2% for fp8."""
    rng = np.random.default_rng(0)
    a64, b64 = rng.standard_normal((64, k)), rng.standard_normal((k, 64))
    out = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp8_e4m3", torch.float8_e4m3fn)):
        a = torch.tensor(a64, dtype=torch.float32, device=device).to(dtype).float()
        b = torch.tensor(b64, dtype=torch.float32, device=device).to(dtype).float()
        exact = a.double() @ b.double()  # float64's error, <= K·2^-53 relative, is nothing beside the unit's
        try:
            got = _scaled_mm(a, b) if name == "fp8_e4m3" else _mm(dtype, torch.float32)(a, b)
        except (AttributeError, TypeError, RuntimeError) as err:
            out[name] = f"unavailable: {err}"[:200]
            continue
        error = (got.double() - exact).abs()
        relative = (error / exact.abs()).flatten()  # large where the exact sum cancels to nearly 0
        normwise = (error / (a.double().abs() @ b.double().abs())).flatten()  # error against sum |a_i b_i|
        out[name] = {"max relative error": float(relative.max()), "median relative error": float(relative.median()),
                     "max error / sum|ab|": float(normwise.max())}  # fmt: skip
    return out


def environment(device: str) -> dict:
    record = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
              "device": device, "fpsim": fpsim.__version__}  # fmt: skip
    if device.startswith("cuda"):
        record |= {"name": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
                   "cuda": torch.version.cuda}  # fmt: skip
    return record


class Log:
    """The report, rewritten after each section so that a run cut short keeps what it measured."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.record = folder, {"sections": {}, "errors": {}, "seconds": {}}
        folder.mkdir(parents=True, exist_ok=True)

    def section(self, name: str, run: Callable[[], object]) -> None:
        start = time.perf_counter()
        try:
            self.record["sections"][name] = run()
        except Exception:  # one failing section must not cost the others; the traceback is kept
            self.record["errors"][name] = traceback.format_exc()
            print(f"[gpu_check] {name} FAILED:\n{self.record['errors'][name]}", file=sys.stderr, flush=True)
        self.record["seconds"][name] = round(time.perf_counter() - start, 2)
        print(f"[gpu_check] {name}: {self.record['seconds'][name]} s", file=sys.stderr, flush=True)
        self.write()

    def write(self) -> None:
        (self.folder / "gpu_check.json").write_text(json.dumps(self.record, indent=1, default=str))
        (self.folder / "gpu_check.md").write_text(self.markdown())

    def markdown(self) -> str:
        lines = ["# fpsim GPU check", ""]
        for name, value in self.record["sections"].items():
            lines += [f"## {name} ({self.record['seconds'][name]} s)", ""]
            lines += [_markdown(value), ""]
        for name, error in self.record["errors"].items():
            lines += [f"## {name}: FAILED", "", "```", error.strip(), "```", ""]
        return "\n".join(lines)


def _markdown(value: object) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return markdown_table(value)
    if isinstance(value, dict) and "markdown" in value:
        return value["markdown"]
    return "```\n" + json.dumps(value, indent=1, default=str) + "\n```"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default: cuda when present)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test for any machine")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    full = not args.quick
    n_cast, n_modes, n_speed = (10**7, 10**6, 2**26) if full else (10**4, 10**3, 10**5)
    log = Log(Path(args.out))
    log.section("environment", lambda: environment(device))
    log.section("native e4m3fn overflow", lambda: e4m3fn_overflow_policy(device))
    log.section("round vs native casts", lambda: check_native_casts(device, n_cast))
    log.section("round vs the NumPy codec, every deterministic mode", lambda: check_against_numpy(device, n_modes))
    log.section("throughput", lambda: throughput(device, n_speed, 20 if full else 3))
    log.section("tensor core probes", lambda: tensor_core_probes(device))
    log.section("simulator vs torch", lambda: experiments(device, None if full else 6, 30 if full else 2))
    print(f"[gpu_check] wrote {args.out}/gpu_check.json and gpu_check.md", file=sys.stderr)
    return 1 if log.record["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
