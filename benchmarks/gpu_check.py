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
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import fpsim
from fpsim import compare
from fpsim import torch as fptorch
from fpsim.report import markdown_table

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark, also when imported from the tests
import bench_torch

DETERMINISTIC_MODES = [mode for mode in fpsim.ROUNDING_MODES if mode != "stochastic"]


def wide_range(n: int, device: str, seed: int = 0) -> torch.Tensor:
    return bench_torch.wide_range_float32(n, torch.device(device), seed)


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


def check_native_casts(device: str, n: int) -> list[dict]:
    """fpsim.torch.round against x.to(dtype) on `device`, under each cast's own overflow policy."""
    rows = []
    x = wide_range(n, device)
    for fmt, dtype in fptorch.NATIVE_CASTS.items():
        policy = fptorch.native_overflow(dtype, device)  # detected: torch 2.13 saturates e4m3fn, 2.11 gives NaN
        inputs = torch.cat([x, codes_and_midpoints(fmt, device)])
        ours = fptorch.round(inputs, fmt, overflow=policy)
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
        row = {"format": fmt, "values": n}
        for mode in DETERMINISTIC_MODES:  # one column per mode: the count of elements that differ
            ours = fptorch.round(x, fmt, mode).cpu().numpy().astype(np.float64)
            reference = fpsim.round(reference_input, fmt, mode)
            equal = (ours.view(np.int64) == reference.view(np.int64)) | (np.isnan(ours) & np.isnan(reference))
            row[mode] = int((~equal).sum())
        rows.append(row)
    return rows


def throughput(device: str, n: int, repeat: int, compile_: bool) -> list[dict]:
    """bench_torch's cases on `device`: fpsim.torch.round (eager, and compiled when asked) against the native
    casts and a copy of the same bytes, each checked bit for bit before it is timed."""
    x = wide_range(n, device, seed=2)
    try:
        return bench_torch.measure(x, repeat, compile_)
    except Exception as err:  # torch.compile needs a working toolchain: the eager timings still count
        if not compile_:
            raise
        rows = bench_torch.measure(x, repeat, False)
        return [*rows, {"case": "torch.compile", "ms": None, "GB/s": None, "% of copy": None,
                        "x native": unavailable(err)}]  # fmt: skip


def unavailable(err: BaseException) -> str:
    """A short note for a feature this torch or device lacks: the error's type and its first line, cut at the
    first sentence (torch's own messages run on for lines, with build hints and backend lists)."""
    lines = str(err).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"unavailable: {type(err).__name__}: {first}"[:200]


def experiments(device: str, policies, steps: int | None, synced_steps: int) -> dict:
    """The simulator against torch on `device`: underflow and overflow, free-running and synced."""
    results = {}
    for scenario in ("underflow", "overflow"):
        comparison = compare.compare(scenario, policies, device=device, steps=steps)
        synced = compare.synced(scenario, policies, device=device, steps=synced_steps)
        tables = [markdown_table(rows) for rows in (comparison.outcomes(), comparison.agreement_rows())]
        shown = [{k: v for k, v in row.items() if k != "per step"} for row in synced]
        results[scenario] = {"markdown": "\n\n".join([f"### {scenario}", *tables, markdown_table(shown)]),
                             "synced": synced,
                             "agreements": [a.to_dict() for a in comparison.agreements],
                             "environment": comparison.torch[0].environment}  # fmt: skip
    return {"markdown": "\n\n".join(r["markdown"] for r in results.values()), **results}


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
            outputs[kind] = unavailable(err)
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
            out[name] = unavailable(err)
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
    log.section("native cast overflow", lambda: {f: fptorch.native_overflow(d, device)
                                                  for f, d in fptorch.NATIVE_CASTS.items()})  # fmt: skip
    log.section("round vs native casts", lambda: check_native_casts(device, n_cast))
    log.section("round vs the NumPy codec, every deterministic mode", lambda: check_against_numpy(device, n_modes))
    log.section("throughput", lambda: throughput(device, n_speed, 20 if full else 3, compile_=full))
    log.section("tensor core probes", lambda: tensor_core_probes(device))
    policies = compare.POLICIES if full else ("fp32", "amp")
    log.section("simulator vs torch", lambda: experiments(device, policies, None if full else 3, 30 if full else 1))
    print(f"[gpu_check] wrote {args.out}/gpu_check.json and gpu_check.md", file=sys.stderr)
    return 1 if log.record["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
