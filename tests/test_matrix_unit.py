"""Matrix-unit (Tensor Core) models against an exact rational reference written from the published rule, the H200
probe outcomes, Fasi et al.'s non-monotonicity, promote_every, dispatch through fpsim.matmul/dot, and bad input."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fpsim
from fpsim.matrix_unit import MATRIX_UNITS, MatrixUnit, mma, unit_matmul

# The published parameters (numerics.md §9: Fasi et al. 2021; Khattak & Mikaitis; MMA-Sim; DeepSeek-V3), written
# here again, not read from the module: name -> (input, products per group, fraction bits, fp32 fraction bits kept,
# inputs truncated)
PUBLISHED = {
    "v100_fp16": ("fp16", 4, 23, 23, False),
    "a100_fp16": ("fp16", 8, 24, 23, False),
    "a100_bf16": ("bf16", 8, 24, 23, False),
    "a100_tf32": ("tf32", 4, 24, 23, True),
    "h100_fp16": ("fp16", 16, 25, 23, False),
    "h100_bf16": ("bf16", 16, 25, 23, False),
    "h100_tf32": ("tf32", 8, 25, 23, False),
    "h100_fp8_e4m3": ("fp8_e4m3", 32, 13, 13, False),
    "h100_fp8_e5m2": ("fp8_e5m2", 32, 13, 13, False),
    "ada_fp8_e4m3": ("fp8_e4m3", 16, 13, 13, False),
    "ada_fp8_e5m2": ("fp8_e5m2", 16, 13, 13, False),
    "b200_fp16": ("fp16", 16, 25, 23, False),
    "b200_bf16": ("bf16", 16, 25, 23, False),
    "b200_tf32": ("tf32", 8, 25, 23, False),
    "b200_fp8_e4m3": ("fp8_e4m3", 32, 25, 23, False),
}
# input formats: (significant bits, emin, largest finite value, the numpy dtype that casts to them)
INPUTS = {
    "fp16": (11, -14, 65504.0, np.float16),
    "bf16": (8, -126, 3.3895313892515355e38, ml_dtypes.bfloat16),
    "tf32": (11, -126, 3.4011621342146535e38, None),  # float32 with its low 13 bits cleared below
    "fp8_e4m3": (4, -6, 448.0, ml_dtypes.float8_e4m3fn),
    "fp8_e5m2": (3, -14, 57344.0, ml_dtypes.float8_e5m2),
}
# outputs: (fraction bits, emin, emax)
OUT = {"fp32": (23, -126, 127), "fp16": (10, -14, 15), "bf16": (7, -126, 127)}
H200_RESULTS = Path(__file__).parent.parent / "benchmarks" / "results" / "gpu_check_h200.json"
DEFAULT_DOTS, HEAVY_DOTS = 2000, 10_000  # per preset: the default suite, and `pytest -m heavy`


# ---- the reference: exact rationals, from the rule as published ---------------------------------------------------


def floor_log2(x: Fraction) -> int:
    e = x.numerator.bit_length() - x.denominator.bit_length()
    return e - 1 if x < Fraction(2) ** e else e


def exponent(x: Fraction, emin: int) -> int:
    return max(floor_log2(abs(x)), emin)  # subnormals count at the format's emin


def round_exact(v: Fraction, fraction_bits: int, emin: int, emax: int, nearest: bool) -> Fraction | float:
    if v == 0:
        return Fraction(0)
    quantum = Fraction(2) ** (exponent(v, emin) - fraction_bits)
    steps = round(abs(v) / quantum) if nearest else math.floor(abs(v) / quantum)  # Fraction rounds half to even
    magnitude = steps * quantum
    largest = (2 - Fraction(2) ** -fraction_bits) * Fraction(2) ** emax
    if magnitude > largest:
        magnitude = math.inf if nearest else largest  # toward zero never overflows to inf
    return magnitude if v > 0 else -magnitude


def reference_group(pairs, c: Fraction, preset: str) -> Fraction:
    """One group as published, its result rounded toward zero to the accumulator's `kept` fraction bits."""
    fmt, _, frac, kept, _ = PUBLISHED[preset]
    emin = INPUTS[fmt][1]
    nonzero = [(Fraction(x), Fraction(y)) for x, y in pairs if x != 0 and y != 0]
    exponents = [exponent(x, emin) + exponent(y, emin) for x, y in nonzero] + ([exponent(c, -126)] if c else [])
    if not exponents:
        return Fraction(0)
    units_per_one = Fraction(2) ** (frac - max(exponents))  # addends are truncated to multiples of 2^(E - frac)
    units = sum(math.trunc(x * y * units_per_one) for x, y in nonzero) + math.trunc(c * units_per_one)
    return round_exact(units / units_per_one, kept, -126, 127, nearest=False)


def reference_dot(a, b, preset: str, out: str = "fp32", promote_every: int | None = None) -> float:
    """The groups chained in fp32; promoted segments summed in fp32 (nearest even); then `out` rounds the fp32
    result once, to nearest even (what cuBLAS did on the H200: fp32 accumulation, one final conversion)."""
    group = PUBLISHED[preset][1]
    segment = promote_every or len(a)
    total = Fraction(0)
    for start in range(0, len(a), segment):
        c = Fraction(0)
        for first in range(start, min(start + segment, len(a)), group):
            last = min(first + group, start + segment, len(a))
            c = reference_group(list(zip(a[first:last], b[first:last])), c, preset)
        total = round_exact(total + c, 23, -126, 127, nearest=True) if promote_every else c  # fp32 add, RNE
    return float(total if out == "fp32" else round_exact(total, *OUT[out], nearest=True))


# ---- random dot products built to expose the rule -------------------------------------------------------------------


def to_format(values: np.ndarray, fmt: str) -> np.ndarray:
    """Values of the input format, by an independent cast (numpy / ml_dtypes; tf32 by clearing fp32 bits)."""
    *_, largest, dtype = INPUTS[fmt]
    values = np.clip(values, -largest, largest)
    if dtype is None:
        bits = values.astype(np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
        return bits.view(np.float32).astype(np.float64)
    return values.astype(dtype).astype(np.float64)


def random_dots(rng: np.random.Generator, fmt: str, count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """count pairs of length-k vectors: wide exponent spreads, subnormals, zeros and near-cancelling pairs."""
    precision, emin, largest, _ = INPUTS[fmt]
    top = min(int(math.log2(largest)) // 2 - 1, 12)  # products stay finite; spreads of up to 2·top binades
    spread = rng.integers(0, top + 1, size=(count, 1))
    a = rng.standard_normal((count, k)) * np.exp2(rng.integers(-spread, spread + 1, size=(count, k)))
    b = rng.standard_normal((count, k)) * np.exp2(rng.integers(-spread, spread + 1, size=(count, k)))
    subnormal = rng.random((count, k)) < 0.1
    a[subnormal] = rng.integers(1, 2 ** (precision - 1), size=subnormal.sum()) * 2.0 ** (emin - precision + 1)
    a[rng.random((count, k)) < 0.05] = 0.0
    a, b = to_format(a, fmt), to_format(b, fmt)
    cancel = rng.random(count) < 0.3  # the second half undoes the first, up to a small change
    half = k // 2
    if half:
        a[cancel, half : 2 * half] = -a[cancel, :half]
        b[cancel, half : 2 * half] = to_format(
            b[cancel, :half] * (1 + rng.integers(-2, 3, (cancel.sum(), half)) / 64), fmt
        )
    return a, b


def model_dots(a: np.ndarray, b: np.ndarray, preset: str, **options) -> np.ndarray:
    return np.array([unit_matmul(x, y, preset, inputs="exact", **options) for x, y in zip(a, b)])


def check_against_reference(preset: str, count: int, seed: int) -> int:
    fmt, group, *_ = PUBLISHED[preset]
    rng = np.random.default_rng(seed)
    checked = 0
    for k in (group, 3 * group + group // 2):  # one group; several, the last one partial
        a, b = random_dots(rng, fmt, count // 2, k)
        got = np.concatenate(  # blocks of 25 rows against 25 columns, diagonal kept: few wasted products
            [
                np.diagonal(unit_matmul(a[i : i + 25], b[i : i + 25].T, preset, inputs="exact"))
                for i in range(0, len(a), 25)
            ]
        )
        want = np.array([reference_dot(x, y, preset) for x, y in zip(a, b)])
        mismatch = np.flatnonzero(got != want)
        assert mismatch.size == 0, f"{preset} K={k}: {a[mismatch[0]]!r} · {b[mismatch[0]]!r}"
        checked += len(a)
    return checked


@pytest.mark.parametrize("preset", PUBLISHED)
def test_preset_has_the_published_parameters(preset):
    fmt, group, frac, kept, truncated = PUBLISHED[preset]
    unit = MATRIX_UNITS[preset]
    assert (unit.inputs, unit.group, unit.fraction_bits, unit.input_truncation) == ((fmt,), group, frac, truncated)
    assert (unit.accumulator_bits or 23) == kept and unit.citation


@pytest.mark.parametrize("preset", PUBLISHED)
def test_preset_matches_the_exact_reference(preset):
    assert check_against_reference(preset, DEFAULT_DOTS, seed=len(preset)) == DEFAULT_DOTS


@pytest.mark.heavy
@pytest.mark.parametrize("preset", PUBLISHED)
def test_preset_matches_the_exact_reference_heavy(preset):
    assert check_against_reference(preset, HEAVY_DOTS, seed=1000 + len(preset)) == HEAVY_DOTS


@pytest.mark.parametrize(("preset", "out"), [("h100_fp16", "fp16"), ("a100_bf16", "bf16"), ("v100_fp16", "fp16")])
def test_fp16_and_bf16_outputs_match_the_reference(preset, out):
    rng = np.random.default_rng(7)
    a, b = random_dots(rng, PUBLISHED[preset][0], 200, 40)
    got = model_dots(a, b, preset, out=out)
    np.testing.assert_array_equal(got, [reference_dot(x, y, preset, out) for x, y in zip(a, b)])


@pytest.mark.parametrize(("preset", "every", "out"), [("h100_fp8_e4m3", 64, "fp32"), ("ada_fp8_e5m2", 40, "bf16")])
def test_promote_every_matches_the_reference(preset, every, out):
    rng = np.random.default_rng(8)
    a, b = random_dots(rng, PUBLISHED[preset][0], 200, 160)
    got = model_dots(a, b, preset, out=out, promote_every=every)
    np.testing.assert_array_equal(got, [reference_dot(x, y, preset, out, every) for x, y in zip(a, b)])


# ---- consequences of the rule --------------------------------------------------------------------------------


def test_raising_the_accumulator_lowers_the_result():
    """Fasi et al.: without normalizing the partial sums, increasing one addend can decrease the sum. Sixteen
    products of 2^-26 survive alignment to c = 1 - 2^-24 (E = -1, units of 2^-26) but not to c = 1 (E = 0)."""
    a = np.full(16, 2.0**-13)
    below, at_one = mma(a, a, 1 - 2.0**-24, "h100_fp16"), mma(a, a, 1.0, "h100_fp16")
    assert below == 1 + 2.0**-23 and at_one == 1.0 and at_one < below
    assert reference_group(list(zip(a, a)), Fraction(1) - Fraction(1, 2**24), "h100_fp16") == below


def test_fp32_output_rounds_toward_zero_and_fp16_to_nearest():
    a, b = np.array([1.0, 2.0**-12, 2.0**-12]), np.array([1.0, 2.0**-12, 2.0**-12])  # 1 + 2^-23: exact in fp32
    assert mma(-a, b, 0.0, "h100_fp16") == -(1 + 2.0**-23)
    three_quarters = np.array([1.0, 0.75]), np.array([1.0, 2.0**-10])  # 1 + 0.75·2^-10: fp16 nearest is 1 + 2^-10
    assert mma(*three_quarters, 0.0, "h100_fp16", out="fp16") == 1 + 2.0**-10
    assert mma(*three_quarters, 0.0, "h100_fp16") == 1 + 0.75 * 2.0**-10


@pytest.mark.parametrize(
    ("preset", "out", "half_ulp"), [("h100_fp16", "fp16", 2.0**-11), ("h100_bf16", "bf16", 2.0**-8)]
)
def test_fp16_and_bf16_outputs_round_the_fp32_chain_once(preset, out, half_ulp):
    """The H200's cuBLAS chains the groups in fp32 and rounds only the final result to fp16/bf16. Two groups each
    add half an output ulp to 1: per group they would tie to 1 (even) twice; in fp32 they make one whole ulp."""
    a = np.zeros(32)
    a[0], a[1], a[16] = 1.0, half_ulp, half_ulp
    assert fpsim.dot(a, np.ones(32), model=preset, out=out) == 1 + 2 * half_ulp
    assert reference_dot(a, np.ones(32), preset, out) == 1 + 2 * half_ulp
    assert mma(a[:16], np.ones(16), 0.0, preset, out=out) == 1.0  # one group alone: a tie, to even
    text = fpsim.explain_dot(a[:18], np.ones(18), preset, out=out)
    assert f"result in {out} (nearest even)" in text and "result of group 2" in text


def test_tf32_inputs_are_truncated_on_a100_and_rounded_on_h100():
    x = 1 + 2.0**-10 + 2.0**-11 + 2.0**-12  # between tf32 neighbours 1 + 2^-10 and 1 + 2^-9, nearer the upper
    assert fpsim.dot([x], [1.0], model="a100_tf32") == 1 + 2.0**-10
    assert fpsim.dot([x], [1.0], model="h100_tf32") == 1 + 2.0**-9


def test_special_values_follow_ieee():
    assert fpsim.dot([np.inf, 1.0], [1.0, 1.0], model="h100_fp16") == np.inf
    assert np.isnan(fpsim.dot([np.inf, -np.inf], [1.0, 1.0], model="h100_fp16"))
    assert np.isnan(fpsim.dot([np.nan, 1.0], [1.0, 1.0], model="h100_fp8_e4m3"))


def test_a_hypothetical_unit():
    unit = MatrixUnit("mine", ("fp16",), 2, 4, citation="made up")
    assert fpsim.dot([1.0, 1.0, 2.0**-5], [1.0, 1.0, 1.0], model=unit) == 2.0  # 2^-5 truncated against c = 2 (E = 1)
    assert fpsim.dot([2.0**-5, 1.0, 1.0], [1.0, 1.0, 1.0], model=unit) == 2.0  # 1 + 2^-5 -> 1 (4 bits), then 2


def test_explain_dot_shows_the_truncated_bits_and_the_three_sums():
    text = fpsim.explain_dot([1.0, 2.0**-13, 0.5], [1.0, 2.0**-13, -3.0], "v100_fp16")
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert lines["a[1]·b[1]"][-2:] == ["0.0", repr(2.0**-26)]  # 2^-26 lies below the unit 2^-23: truncated
    assert lines["result"][-1] == "-0.5" and lines["exact"][-1] == repr(-0.5 + 2.0**-26)
    assert lines["fp32"][-1] == repr(float(np.float32(-0.5 + 2.0**-26)))  # the fp32 sum rounds to nearest: -0.5


# ---- dispatch and bad input --------------------------------------------------------------------------------


def test_matmul_dispatches_to_the_unit():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 40)), rng.standard_normal((40, 3))
    got = fpsim.matmul(a, b, model="h100_fp8_e4m3", promote_every=32)
    np.testing.assert_array_equal(got, unit_matmul(a, b, "h100_fp8_e4m3", promote_every=32))
    np.testing.assert_array_equal(fpsim.matmul(a[0], b, model="v100_fp16"), unit_matmul(a, b, "v100_fp16")[0])
    assert fpsim.dot(a[0], b[:, 0], model="h100_bf16") == unit_matmul(a, b, "h100_bf16")[0, 0]


def test_inputs_are_rounded_to_the_unit_format_or_refused():
    assert fpsim.dot([1 + 2.0**-11 + 2.0**-20], [1.0], model="h100_fp16") == 1 + 2.0**-10  # fp16 nearest even
    with pytest.raises(ValueError, match=r"a holds .* fp16 cannot represent"):
        fpsim.dot([0.1], [1.0], model="h100_fp16", inputs="exact")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((3, 2)), model="h300"), ValueError, "h300.*h100_fp16.*b200"),
        (lambda: unit_matmul(np.ones((2, 3)), np.ones((3, 2)), "h300"), ValueError, "presets are v100_fp16"),
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((4, 2)), model="h100_fp16"), ValueError, r"last axis \(3\)"),
        (lambda: fpsim.dot(np.ones(3), np.ones(4), model="h100_fp16"), ValueError, "same length"),
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((3, 2)), "bf16", model="h100_fp16"), ValueError, "takes fp16"),
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((3, 2)), model="h100_fp16", out="fp8_e4m3"), ValueError, "out"),
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((3, 2)), model="fp32", promote_every=4), ValueError, "matrix"),
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((3, 2)), model="h100_fp16", promote_every=0), ValueError, "pro"),
        (lambda: fpsim.matmul(np.ones((2, 3)), np.ones((3, 2)), model="h100_fp16", order="kahan"), TypeError, "order"),
        (lambda: fpsim.matmul(np.ones((2, 2, 3)), np.ones((3, 2)), model="h100_fp16"), ValueError, "1-D or 2-D"),
        (lambda: mma(np.ones(17), np.ones(17), 0.0, "h100_fp16"), ValueError, "at most 16"),
        (lambda: mma(np.ones(2), np.ones(2), 0.1, "h100_fp16"), ValueError, "c must hold"),
        (lambda: MatrixUnit("x", ("fp32",), 4, 23), ValueError, "11 significant bits"),
        (lambda: MatrixUnit("x", ("fp16",), 0, 23), ValueError, "group"),
        (lambda: unit_matmul([1.0], [1.0], 3), TypeError, "MatrixUnit"),
    ],
)
def test_bad_input_is_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_h200_fp8_gemm_is_the_model_promoting_every_128():
    """torch._scaled_mm on the H200 (benchmarks/gpu_check.py's 64x4096 by 4096x64 GEMM of N(0,1) inputs in e4m3)
    gave exactly the error figures of h100_fp8_e4m3 with promote_every=128 (cuBLAS without fast accumulation)."""
    measured = json.loads(H200_RESULTS.read_text())["sections"]["tensor core probes"]["gemm_k4096"]["fp8_e4m3"]
    rng = np.random.default_rng(0)
    a = fpsim.round(rng.standard_normal((64, 4096)), "fp8_e4m3")
    b = fpsim.round(rng.standard_normal((4096, 64)), "fp8_e4m3")
    exact = a @ b  # exact: multiples of 2^-18 below 2^30 in any order fit float64's 53 bits
    error = np.abs(fpsim.matmul(a, b, model="h100_fp8_e4m3", promote_every=128) - exact)
    relative = np.sort((error / np.abs(exact)).ravel())
    assert relative[-1] == measured["max relative error"]
    assert relative[(relative.size - 1) // 2] == measured["median relative error"]  # torch's median: the lower middle
    assert (error / (np.abs(a) @ np.abs(b))).max() == measured["max error / sum|ab|"]


def test_no_rows_give_an_empty_result_and_numpy_ints_count():
    assert fpsim.matmul(np.ones((0, 3)), np.ones((3, 2)), model="h100_fp16").shape == (0, 2)
    ones = np.ones((2, 64))
    assert (fpsim.matmul(ones, ones.T, model="h100_fp16", promote_every=np.int64(32)) == 64).all()
