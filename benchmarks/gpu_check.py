"""The prepared device check: fpsim's torch codec against the native casts, its throughput against a copy, the
simulator against torch on the same experiments, and `fpsim bench --quick` and `fpsim audit` as a user runs them, on
CUDA when present (the CPU otherwise, for the tests).

    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR            # full check: about 3 minutes on an H200
    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR --quick    # tiny sizes, seconds, any machine

It uses only what the device machine has (torch, numpy, matplotlib, ml_dtypes; no gmpy2), detects the
installed torch's behaviour instead of assuming it, and writes DIR/gpu_check.json and DIR/gpu_check.md after
every section, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
from fpsim.torch.models import MODELS

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


# ---- matrix units vs the chip ---------------------------------------------------------------------------------

FAMILIES = {(7, 0): "v100", (8, 0): "a100", (8, 9): "ada", (9, 0): "h100"}  # compute capability -> preset family
UNIT_INPUTS = ("fp16", "bf16", "tf32", "fp8_e4m3")  # the matrix-unit inputs torch reaches: mm, tf32 mm, _scaled_mm
INPUT_KINDS = ("wide exponents", "cancellation", "subnormals")
# exponents of the "wide exponents" inputs: products spread over more than 2^25 (so truncation shows) while the
# sums of K <= 1024 stay far inside fp16 (the fp16-output rows) and fp32
SPREADS = {"fp16": (-12, 3), "bf16": (-20, 3), "tf32": (-20, 3), "fp8_e4m3": (-6, 4)}
ULP_BINS = (1, 2, 4, 8, 16, 256)  # histogram edges: 1, 2, 3-4, 5-8, 9-16, 17-256, more
# order probe: (one, big) per input format; big/one >= 2^40 absorbs every 1 and any partial sum of K <= 2^13 ones
# (aligned to big's exponent and truncated to 25 fraction bits), while ±big cancel exactly
PROBE_VALUES = {"bf16": (1.0, 2.0**40), "fp16": (2.0**-24, 2.0**15)}  # fp16: a subnormal one, as 2^-24


def matrix_unit_family(name: str, capability: tuple[int, int]) -> tuple[str | None, str]:
    """The preset family of a CUDA device ("h100" for an H100 or H200, ...) from its compute capability, and a
    note naming the device; None for a device the presets do not describe."""
    major, minor = capability
    family = "b200" if major == 10 else FAMILIES.get((major, minor))  # 10.x: datacenter Blackwell (B200, GB200)
    if family is None:
        return None, f"{name} (capability {major}.{minor}) has no matrix-unit presets: skipped"
    return family, f"{name} (capability {major}.{minor}): the {family}_* presets"


def family_presets(family: str) -> list[str]:
    """The family's presets for the inputs torch can reach, in UNIT_INPUTS order."""
    from fpsim.matrix_unit import MATRIX_UNITS

    return [f"{family}_{fmt}" for fmt in UNIT_INPUTS if f"{family}_{fmt}" in MATRIX_UNITS]


def format_values(fmt: str, shape: tuple[int, ...], exponents: tuple[int, int], rng: np.random.Generator,
                  subnormal_share: float = 0.0) -> np.ndarray:  # fmt: skip
    """Random values of `fmt` (float64, exact): random sign and significand, exponent uniform in `exponents`,
    and the given share of subnormals."""
    f = fpsim.get_format(fmt)
    fraction = rng.integers(0, 2**f.nmant, size=shape) / 2.0**f.nmant
    exponent = rng.integers(exponents[0], exponents[1] + 1, size=shape)
    values = (1 + fraction) * np.exp2(exponent)
    subnormal = rng.random(shape) < subnormal_share
    values[subnormal] = fraction[subnormal] * 2.0**f.emin  # 0 and the subnormals of the format
    return np.where(rng.random(shape) < 0.5, -values, values)


def unit_inputs(fmt: str, kind: str, m: int, k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), M×K and K×N values of `fmt`, built to expose alignment and truncation:
    - wide exponents: products spread over more than 2^25, so small ones lose bits when aligned to the largest;
    - cancellation: the second half of each row negates the first (reversed) with one ulp nudged here and there,
      so the exact sums are tiny beside their terms and every truncated bit shows;
    - subnormals: a mixes subnormals with the smallest normals, b is large, so the products are ordinary numbers
      (the unit must take the subnormals at the format's minimum exponent)."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(INPUT_KINDS)}; got {kind!r}")
    f, rng = fpsim.get_format(fmt), np.random.default_rng(seed)
    if kind == "subnormals":
        a = format_values(fmt, (m, k), (f.emin, f.emin + 4), rng, subnormal_share=0.5)
        return a, format_values(fmt, (k, n), (f.emax - 10, f.emax - 2), rng)
    a, b = format_values(fmt, (m, k), SPREADS[fmt], rng), format_values(fmt, (k, n), SPREADS[fmt], rng)
    if kind == "cancellation":
        half = k // 2
        b[half : 2 * half] = b[:half][::-1]
        _, exponent = np.frexp(a[:, :half][:, ::-1])
        nudge = rng.integers(-1, 2, size=(m, half)) * np.exp2(exponent - 1 - f.nmant)  # ±1 ulp or 0: still exact
        a[:, half : 2 * half] = -a[:, :half][:, ::-1] + nudge
    return a, b


def ulp_distance(x: np.ndarray, y: np.ndarray, fmt: str) -> np.ndarray:
    """|x − y| in units in the last place of `fmt` (values of that format, finite): the distance between their
    codes on the ordered line of the format's values (−0 and +0 one apart, as neighbours)."""
    sign = 1 << (fpsim.get_format(fmt).bits - 1)

    def ordered(values: np.ndarray) -> np.ndarray:
        codes = fpsim.encode(values, fmt).astype(np.int64)
        return np.where(codes & sign, -(codes & (sign - 1)) - 1, codes)  # -0 just below +0

    return np.abs(ordered(x) - ordered(y))


def ulp_histogram(chip: np.ndarray, model: np.ndarray, fmt: str) -> dict[str, int]:
    """How many outputs are bit-identical, how many differ by 1, 2, 3-4, ... ulps of `fmt`, and how many differ
    where either is not finite (NaN equal to NaN)."""
    chip, model = np.ravel(chip), np.ravel(model)
    both_nan = np.isnan(chip) & np.isnan(model)
    finite = np.isfinite(chip) & np.isfinite(model)
    same = both_nan | (finite & (chip == model) & (np.signbit(chip) == np.signbit(model)))
    same |= ~finite & (chip == model)  # equal infinities
    ulps = ulp_distance(chip[finite & ~same], model[finite & ~same], fmt)
    histogram = {"identical": int(same.sum())}
    low = 0
    for high in ULP_BINS:
        histogram[str(high) if high == low + 1 else f"{low + 1}-{high}"] = int(((ulps > low) & (ulps <= high)).sum())
        low = high
    histogram[f">{low}"] = int((ulps > low).sum())
    histogram["non-finite"] = int((~same & ~finite).sum())
    return histogram


def chip_matmul(fmt: str, out: str, device: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The device's product of two float64 arrays holding values of `fmt`, output `out`, as float64: torch.mm
    (out_dtype=fp32 for fp32 out), fp32 mm under TF32, or torch._scaled_mm for fp8 (unit scales, fp32 out)."""
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        at, bt = (torch.tensor(x, dtype=torch.float32, device=device) for x in (a, b))  # exact: fmt ⊂ fp32
        if fmt == "fp8_e4m3":
            result = _scaled_mm(at, bt)
        elif fmt == "tf32":
            with matmul_flags(tf32=True):
                result = torch.mm(at, bt)
        else:
            with matmul_flags(tf32=False):
                result = _mm(dtypes[fmt], torch.float32 if out == "fp32" else None)(at, bt)
        return result.float().cpu().numpy().astype(np.float64)

    return run


@contextlib.contextmanager
def matmul_flags(tf32: bool):
    """Reduced-precision reductions off and TF32 as asked, restored afterwards."""
    flags = torch.backends.cuda.matmul
    names = ("allow_tf32", "allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction")
    saved = [getattr(flags, name) for name in names]
    for name, value in zip(names, (tf32, False, False)):
        setattr(flags, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(flags, name, value)


def unit_cases(preset: str) -> list[tuple[str, str]]:
    """(input format, output format) pairs to check for a preset: fp32 output, and for fp16/bf16 also their own
    (the output torch gives when mm has no out_dtype)."""
    fmt = preset.split("_", 1)[1]
    return [(fmt, "fp32"), (fmt, fmt)] if fmt in ("fp16", "bf16") else [(fmt, "fp32")]


def model_matmul(preset: str, out: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda a, b: np.asarray(fpsim.matmul(a, b, model=preset, out=out), dtype=np.float64)


def compare_unit(preset: str, fmt: str, out: str, chip: Callable, ks: list[int], m: int, n: int) -> list[dict]:
    """One row per K: the chip against fpsim.matmul(model=preset) on every kind of input (share identical per
    kind, ulp histogram of the rest over all). An fp16/bf16 output is the model's fp32 chain rounded once to
    nearest even, as cuBLAS gave on an H200."""
    rows = []
    for k in ks:
        row, total = {"model": preset, "out": out, "K": k}, {}
        for number, kind in enumerate(INPUT_KINDS):
            a, b = unit_inputs(fmt, kind, m, k, n, seed=k + number)
            got = chip(a, b)
            histogram = ulp_histogram(got, model_matmul(preset, out)(a, b), out)
            row[kind] = f"{histogram['identical'] / got.size:.1%}"
            total = {key: total.get(key, 0) + count for key, count in histogram.items()}
        outputs = sum(total.values())
        row["identical"] = f"{total.pop('identical') / outputs:.2%}"
        row["ulps of the rest"] = " ".join(f"{key}:{count}" for key, count in total.items() if count) or "-"
        rows.append(row)
    return rows


def order_probe(k: int, fmt: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """FPRev-style rows (Xie et al., ATC 2025): ones, with +big at i and −big at j, for the pairs (0, j) and
    (i, K−1). A one survives only where it is added outside the stretch in which big is in the sum; a one
    fused or accumulated alongside big is truncated away. The row sums, in ones, reveal the order."""
    one, big = PROBE_VALUES[fmt]
    pairs = [(0, j) for j in range(1, k)] + [(i, k - 1) for i in range(1, k - 1)]
    rows = np.full((len(pairs), k), one)
    for row, (i, j) in zip(rows, pairs):
        row[i], row[j] = big, -big
    return rows, pairs


def read_order(survivors: np.ndarray, pairs: list[tuple[int, int]], k: int, group: int) -> str:
    """What the surviving ones say. One sequential chain of `group`-product fused groups leaves, for (0, j), the
    ones of the groups after j's, K − group·(⌊j/group⌋ + 1), and for (i, K−1) none."""
    chain = np.array([k - group * (j // group + 1) if i == 0 else 0 for i, j in pairs])
    if np.array_equal(survivors, chain):
        return f"one sequential chain of {group}-product groups over all K = {k}: the preset's order"
    first = np.array([j for i, j in pairs if i == 0])
    counts = survivors[: len(first)]
    steps = first[1:][counts[1:] != counts[:-1]].tolist()
    last = sorted({float(s) for s in survivors[len(first) :]})
    more = (" …" if len(steps) > 16 else "", " …" if len(last) > 8 else "")
    return (f"not one chain of {group}-product groups: for (0, j) the survivors change at j = {steps[:16]}{more[0]}; "
            f"(i, K−1) leaves {last[:8]}{more[1]}")  # fmt: skip


def probe_order(preset: str, k: int, chip: Callable | None) -> dict:
    """The order probe through the model, and the chip when given: raw survivors per pair and their reading."""
    from fpsim.matrix_unit import MATRIX_UNITS

    fmt, group = preset.split("_", 1)[1], MATRIX_UNITS[preset].group
    rows, pairs = order_probe(k, fmt)
    one = PROBE_VALUES[fmt][0]
    sides = {"model": model_matmul(preset, "fp32")(rows, np.ones((k, 1)))[:, 0] / one}  # one column: all alike
    if chip is not None:
        sides["chip"] = chip(rows, np.ones((k, 16)))[:, 0] / one  # 16 columns: a shape every kernel takes
    result = {"model": preset, "K": k, "shape": f"{len(pairs)}×{k} by {k}×16", "pairs": pairs}
    for side, survivors in sides.items():
        result[f"{side} survivors"] = survivors.tolist()
        result[f"{side} reading"] = read_order(survivors, pairs, k, group)
    if chip is not None:
        result["chip equals model"] = bool(np.array_equal(sides["chip"], sides["model"]))
    return result


def matrix_units_vs_chip(device: str, full: bool) -> dict:
    """Each preset of the device's family against the chip: share bit-identical and ulp histogram per K, then the
    order probe beyond one tile. Without CUDA the h100 models run against themselves (so every code path but the
    chip's own call stays tested) and the report says so."""
    cuda = device.startswith("cuda")
    if cuda:
        family, note = matrix_unit_family(torch.cuda.get_device_name(), torch.cuda.get_device_capability())
    else:
        family, note = "h100", "needs CUDA: no chip here, so the h100_* presets are compared with themselves"
    record = {"device": note, "torch": torch.__version__, "flags": "reduced-precision reductions off; TF32 on for "
              "the tf32 rows only; fp8 through torch._scaled_mm, unit scales, b column-major"}  # fmt: skip
    if family is None:
        return record | {"markdown": f"{note}."}
    from fpsim.matrix_unit import MATRIX_UNITS

    presets, m = family_presets(family), 64 if full else 16
    rows = []
    for preset in presets:
        group = MATRIX_UNITS[preset].group
        ks = sorted({group, 2 * group, 4 * group, 256, 1024}) if full else [group, 2 * group]
        for fmt, out in unit_cases(preset):
            product = chip_matmul(fmt, out, device) if cuda else model_matmul(preset, out)
            try:
                rows += compare_unit(preset, fmt, out, product, ks, m, m)
            except (AttributeError, TypeError, RuntimeError) as err:  # e.g. no out_dtype or _scaled_mm here
                rows.append({"model": preset, "out": out, "K": ks, "identical": unavailable(err)})
    record["rows"] = rows
    probed = [f"{family}_{fmt}" for fmt in PROBE_VALUES if f"{family}_{fmt}" in presets][:1]  # bf16 first
    for preset in probed:
        chip = chip_matmul(preset.split("_", 1)[1], "fp32", device) if cuda else None
        record["order probe"] = [probe_order(preset, k, chip) for k in ((64, 256, 1024, 4096) if full else (64,))]
    record["markdown"] = _unit_markdown(record)
    return record


def _unit_markdown(record: dict) -> str:
    lines = [f"{record['device']}; torch {record['torch']}; {record['flags']}.", "", markdown_table(record["rows"])]
    for probe in record.get("order probe", []):
        lines += ["", f"Order probe, {probe['model']}, K = {probe['K']} ({probe['shape']}):"]
        lines += [f"- {side}: {probe[f'{side} reading']}" for side in ("model", "chip") if f"{side} reading" in probe]
        if "chip equals model" in probe:
            lines.append(f"- chip survivors equal the model's: {probe['chip equals model']}")
    return "\n".join(lines)


# ---- the practitioner commands, as a user runs them -------------------------------------------------------------


def run_command(argv: list[str]) -> tuple[int, str]:
    """`fpsim ARGV` in this process: its exit code and everything it printed (plain text, 120 columns)."""
    from fpsim.cli import main as fpsim_main

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = fpsim_main(argv)
    return code, text.getvalue().rstrip()


def command_section(argv: list[str], outputs: dict[str, Path]) -> dict:
    """`fpsim ARGV` with its output files: exit code, printed text (as markdown), and each JSON output read back;
    a non-zero exit is a failure."""
    code, text = run_command(argv)
    if code != 0:
        raise RuntimeError(f"fpsim {' '.join(argv)} exited with {code}: {text}")
    record = {"command": "fpsim " + " ".join(argv), "exit code": code, "files": {k: p.name for k, p in outputs.items()}}
    record |= {key: json.loads(path.read_text()) for key, path in outputs.items() if path.suffix == ".json"}
    return record | {"markdown": f"`{record['command']}`\n\n```\n{text}\n```"}


def bench_quick(device: str, folder: Path, models: tuple[str, ...] | None = None) -> dict:
    """`fpsim bench --quick` on the device: matmul TFLOP/s and the training steps of the bundled models (all, or
    `models`) against the claims, with bench.json and bench.png beside the report."""
    outputs = {"report": folder / "bench.json", "figure": folder / "bench.png"}
    argv = ["bench", "--quick", "--device", device, "-o", str(outputs["report"]), "--plot", str(outputs["figure"])]
    argv += ["--model", ",".join(models)] if models else []
    return command_section(argv, outputs)


def audits(device: str, folder: Path, models: tuple[str, ...]) -> dict:
    """`fpsim audit --model NAME` on the device for each model: per-tensor range counts, loss scales, the first
    non-finite tensor, with audit_NAME.json beside the report."""
    sections = {}
    for name in models:
        report = folder / f"audit_{name}.json"
        argv = ["audit", "--model", name, "--device", device, "--json", str(report)]
        sections[name] = command_section(argv, {"report": report})
    return sections | {"markdown": "\n\n".join(f"### {name}\n\n{s['markdown']}" for name, s in sections.items())}


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
    log.section("matrix units vs the chip", lambda: matrix_units_vs_chip(device, full))
    policies = compare.POLICIES if full else ("fp32", "amp")
    log.section("simulator vs torch", lambda: experiments(device, policies, None if full else 3, 30 if full else 1))
    audited = tuple(MODELS) if full else ("digits-mlp",)
    log.section("fpsim bench --quick", lambda: bench_quick(device, log.folder, audited))
    log.section("fpsim audit", lambda: audits(device, log.folder, audited))
    print(f"[gpu_check] wrote {args.out}/gpu_check.json and gpu_check.md", file=sys.stderr)
    return 1 if log.record["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
