"""Elementwise arithmetic: bit-exact against MPFR for every operation, format and IEEE mode; against numpy's
float16 and ml_dtypes' ufuncs; IEEE special cases; hypothesis properties; bad input."""

import zlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from oracle import MPFR_MODES, mpfr_operation, random_values, same_bits

import fpsim
from fpsim import strategies as fst

FORMATS = ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "tf32", "fp32"]
OPERATIONS = {"add": 2, "sub": 2, "mul": 2, "div": 2, "sqrt": 1, "fma": 3}
SAMPLES = 10_000


def draw_operands(fmt, arity, seed):
    """Random format values, with the second operand often a near neighbour of the first (cancellation)."""
    columns = [random_values(fmt, SAMPLES, seed + i) for i in range(arity)]
    if arity >= 2:
        near = fpsim.round(columns[0] * (1 + np.random.default_rng(seed).normal(0, 0.01, SAMPLES)), fmt)
        columns[1][::3] = near[::3]
    if arity == 3:  # fma: make c cancel much of a·b every third element
        product = fpsim.round(columns[0] * columns[1], fmt, overflow="saturate")
        columns[2][1::3] = -product[1::3]
    return columns


@pytest.mark.parametrize("mode", MPFR_MODES)
@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_operations_match_mpfr(operation, name, mode):
    fmt = fpsim.get_format(name)
    columns = draw_operands(fmt, OPERATIONS[operation], seed=zlib.crc32(f"{operation} {name} {mode}".encode()))
    ours = getattr(fpsim, operation)(*columns, fmt, mode)
    expected = mpfr_operation(operation, columns, fmt, mode)
    mismatches = np.count_nonzero(~same_bits(ours, expected))
    assert mismatches == 0, f"{mismatches} of {SAMPLES} differ from MPFR"


def test_naive_float64_fma_double_rounds_in_bf16_where_fpsim_does_not():
    # When a·b is exactly a bf16 midpoint and c is far below float64's last bit, a·b + c in float64 is the
    # midpoint itself, which then ties to even: half the time on the wrong side of the exact a·b + c.
    fmt = fpsim.BF16
    rng = np.random.default_rng(7)
    a, b = (fpsim.round(rng.uniform(1, 2, 20_000), fmt) for _ in range(2))
    product = a * b  # exact: 16 significant bits at most
    below, above = fpsim.round(product, fmt, "down"), fpsim.round(product, fmt, "up")
    midpoint = (below != above) & (product == (below + above) / 2)
    a, b = a[midpoint], b[midpoint]
    c = np.where(rng.random(a.size) < 0.5, 2.0**-60, -(2.0**-60))  # bf16 values, lost in a float64 sum near 1
    expected = mpfr_operation("fma", [a, b, c], fmt, "nearest_even")
    naive = fpsim.round(a * b + c, fmt)
    assert a.size > 100 and np.count_nonzero(naive != expected) > a.size // 4  # the hazard is real ...
    assert np.array_equal(fpsim.fma(a, b, c, fmt), expected)  # ... and avoided


@pytest.mark.parametrize("operation", ["add", "sub", "mul", "div"])
def test_binary_operations_match_numpy_float16(operation):
    a, b = (random_values(fpsim.FP16, 100_000, seed) for seed in (1, 2))
    with np.errstate(all="ignore"):
        expected = getattr(np, {"sub": "subtract", "mul": "multiply", "div": "divide"}.get(operation, operation))(
            a.astype(np.float16), b.astype(np.float16)
        )
    assert same_bits(getattr(fpsim, operation)(a, b, "fp16"), expected).all()


@pytest.mark.parametrize("name", ["bf16", "fp8_e5m2", "fp8_e4m3"])
@pytest.mark.parametrize("operation", ["add", "sub", "mul", "div"])
def test_binary_operations_match_ml_dtypes_ufuncs(name, operation):
    fmt = fpsim.get_format(name)
    a, b = (random_values(fmt, 20_000, seed) for seed in (3, 4))
    dtype = {"bf16": ml_dtypes.bfloat16, "fp8_e5m2": ml_dtypes.float8_e5m2, "fp8_e4m3": ml_dtypes.float8_e4m3fn}[name]
    ufunc = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[operation]
    with np.errstate(all="ignore"):
        expected = ufunc(a.astype(dtype), b.astype(dtype)).astype(np.float64)
    assert same_bits(getattr(fpsim, operation)(a, b, fmt), expected).all()


def test_ieee_special_cases():
    result, flags = fpsim.div([1.0, -1.0, 0.0, np.inf], [0.0, 0.0, 0.0, np.inf], "fp16", flags=True)
    assert same_bits(result, [np.inf, -np.inf, np.nan, np.nan]).all()
    assert (flags.divide_by_zero, flags.invalid, flags.nan) == (2, 2, 2)
    result, flags = fpsim.sqrt([-1.0, -0.0, 4.0], "fp16", flags=True)
    assert same_bits(result, [np.nan, -0.0, 2.0]).all() and flags.invalid == 1
    _, flags = fpsim.add([np.inf, np.nan], [-np.inf, 1.0], "fp16", flags=True)
    assert (flags.invalid, flags.nan) == (1, 2)  # a NaN operand propagates without being invalid
    assert fpsim.add(65504, 15, "fp16") == 65504.0 and fpsim.add(65504, 16, "fp16") == np.inf  # 65520 ties to "65536"
    assert fpsim.mul(1e-4, 1e-4, "fp16") == 0.0  # 1e-8 is below half of 2^-24: flushed
    assert same_bits(fpsim.add(-0.0, -0.0, "fp16"), -0.0) and same_bits(fpsim.sub(1.0, 1.0, "fp16", "down"), -0.0)
    assert fpsim.neg(0.1, "fp16") == -0.0999755859375 and fpsim.abs(-0.1, "bf16") == 0.10009765625


def test_directed_addition_sees_the_sticky_bits_float64_would_lose():
    # 1 + 2^-60 is 1.0 in float64; rounded up to fp32 it must still be the next float32 above 1
    assert fpsim.add(1.0, 2.0**-60, "fp32", "up") == 1 + 2.0**-23
    assert fpsim.add(1.0, -(2.0**-60), "fp32", "toward_zero") == 1 - 2.0**-24
    assert fpsim.add(1.0, 2.0**-60, "fp32", "odd") == 1 + 2.0**-23


def test_operands_outside_the_format_are_rounded_first_or_refused():
    assert fpsim.add(0.1, 0.2, "fp16") == fpsim.add(fpsim.round(0.1, "fp16"), fpsim.round(0.2, "fp16"), "fp16")
    with pytest.raises(ValueError, match=r"a holds 0\.1, which fp16 cannot represent"):
        fpsim.add(0.1, 0.5, "fp16", inputs="exact")
    with fpsim.track_flags() as flags:
        fpsim.add(0.1, 0.2, "fp16")
    assert flags.total == 1  # the operation, not the two casts of its operands


def test_operand_casts_follow_the_overflow_policy_and_invalid_results_are_positive_nan():
    assert fpsim.add(500, -100, "e4m3", overflow="saturate") == 352.0  # 500 saturates to 448 first
    assert fpsim.encode(fpsim.div(0.0, 0.0, "fp16"), "fp16") == 0x7E00  # the canonical NaN, whatever the CPU gives


def flag_counts(flags):
    return {name: count for name, count in flags.as_dict().items() if count}


@pytest.mark.parametrize(
    ("call", "result", "counts"),
    [
        # fp16 holds inf: inf·0 is invalid (IEEE 754 §7.2) and no cast changes anything
        (lambda: fpsim.mul(np.inf, 0.0, "fp16", flags=True), np.nan, {"total": 1, "nan": 1, "invalid": 1}),
        # 70000 > 65520 (max + half an ulp) becomes ±inf in the cast: two overflows, then inf - inf is invalid
        (
            lambda: fpsim.add(70000.0, -70000.0, "fp16", flags=True),
            np.nan,
            {"total": 3, "inexact": 2, "overflow": 2, "nan": 1, "invalid": 1},
        ),
        # e4m3fn has no inf and overflows to NaN: both operands become NaN, which the sum then carries
        (
            lambda: fpsim.add(1000.0, -1000.0, "e4m3", flags=True),
            np.nan,
            {"total": 3, "inexact": 2, "overflow": 2, "nan": 1},
        ),
        # fp4 saturates: ±100 become ±6, whose sum is an exact +0
        (lambda: fpsim.add(100.0, -100.0, "fp4", flags=True), 0.0, {"total": 3, "inexact": 2, "overflow": 2}),
        # 500 saturates to 448 and 448 - 96 = 352 is exact; 96 itself is an e4m3 value
        (
            lambda: fpsim.sub(500.0, 96.0, "e4m3", overflow="saturate", flags=True),
            352.0,
            {"total": 2, "inexact": 1, "overflow": 1},
        ),
        # an inexact cast that does not overflow is the caller's conversion, and is not counted
        (lambda: fpsim.add(0.1, 0.0, "fp16", flags=True), 0.0999755859375, {"total": 1}),
    ],
)
def test_operand_casts_that_overflow_are_counted_in_the_calls_flags(call, result, counts):
    value, flags = call()
    assert same_bits(value, result) and flag_counts(flags) == counts
    with fpsim.track_flags() as tracked:
        call()
    assert tracked.as_dict() == flags.as_dict()


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
@pytest.mark.parametrize(
    "call",
    [
        lambda fmt: fpsim.mul(np.inf, 0.0, fmt),
        lambda fmt: fpsim.add(np.inf, -np.inf, fmt, flags=True),
        lambda fmt: fpsim.add(np.inf, 1.0, fmt, overflow="saturate"),
        lambda fmt: fpsim.fma(1.0, 1.0, [0.0, -np.inf], fmt, inputs="exact"),
    ],
)
def test_infinite_operands_are_refused_in_formats_without_infinity(fmt, call):
    with pytest.raises(ValueError, match=r"holds -?inf, but \w+ has no infinity: round \w to"):
        call(fmt)


def test_broadcasting_shapes_and_scalars():
    assert fpsim.add([[1.0], [2.0]], [1.0, 2.0, 3.0], "fp16").shape == (2, 3)
    assert np.ndim(fpsim.mul(3.0, 0.5, "fp16")) == 0 and not isinstance(fpsim.mul(3.0, 0.5, "fp16"), np.ndarray)
    assert fpsim.fma(2.0, 3.0, [1.0, -6.0], "fp16").tolist() == [7.0, 0.0]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: fpsim.add([1.0, 2.0], [1.0, 2.0, 3.0], "fp16"), ValueError, r"broadcast.*a \(2,\), b \(3,\)"),
        (lambda: fpsim.add("1", 2.0, "fp16"), TypeError, "a must be a number"),
        (lambda: fpsim.mul(1.0, None, "fp16"), TypeError, "b must"),
        (lambda: fpsim.add(1.0, 2.0, "fp64"), ValueError, "at most 25"),
        (lambda: fpsim.add(1.0, 2.0, "e11m10"), ValueError, "at most 9 exponent bits"),
        (lambda: fpsim.div(1.0, 2.0, "e10m5"), ValueError, "at most 9 exponent bits"),  # max/min overflows float64
        (lambda: fpsim.add(1.0, 2.0, "fp16", inputs="cast"), ValueError, "inputs must be one of"),
        (lambda: fpsim.add(1.0, 2.0, "fp16", flag=True), TypeError, "unexpected keyword arguments: flag"),
        (lambda: fpsim.div(0.0, 0.0, "fp4"), ValueError, "div produced NaN.*fp4_e2m1 has no NaN"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- properties -------------------------------------------------------------------------------
@st.composite
def format_and_values(draw, count=2):
    fmt = draw(fst.formats(max_bits=32).filter(lambda f: f.precision <= 25 and f.nexp <= 9))
    return fmt, *(draw(fst.values(fmt)) for _ in range(count))


@given(format_and_values(), st.sampled_from(list(MPFR_MODES)))
def test_addition_and_multiplication_commute(case, mode):
    fmt, x, y = case
    assert same_bits(fpsim.add(x, y, fmt, mode), fpsim.add(y, x, fmt, mode))
    assert same_bits(fpsim.mul(x, y, fmt, mode), fpsim.mul(y, x, fmt, mode))


@given(format_and_values(count=1), st.sampled_from(list(MPFR_MODES)))
def test_adding_zero_and_multiplying_by_one_are_exact(case, mode):
    fmt, x = case
    _, flags = fpsim.add(x, 0.0, fmt, mode, flags=True)
    assert fpsim.add(x, 0.0, fmt, mode) == x and flags.inexact == 0
    assert same_bits(fpsim.mul(x, 1.0, fmt, mode), x)


@given(format_and_values(count=1), st.floats(0.5, 2.0), st.sampled_from(list(MPFR_MODES)))
def test_sterbenz_lemma(case, factor, mode):
    fmt, y = case
    y = abs(y)
    x = float(fpsim.round(y * factor, fmt, "toward_zero", overflow="saturate"))
    assume(y > 0 and y / 2 <= x <= 2 * y)
    result, flags = fpsim.sub(x, y, fmt, mode, flags=True)
    assert result == x - y and flags.inexact == 0  # x - y is exact in float64 and in fmt


@given(format_and_values(), st.sampled_from(["add", "sub", "mul", "div"]), st.sampled_from(list(MPFR_MODES)))
def test_relative_error_is_at_most_the_unit_roundoff_for_normal_results(case, operation, mode):
    fmt, x, y = case
    assume(operation != "div" or y != 0)
    exact = {"add": Fraction(x) + Fraction(y), "sub": Fraction(x) - Fraction(y), "mul": Fraction(x) * Fraction(y)}.get(
        operation, Fraction(x) / Fraction(y) if y else None
    )
    assume(exact != 0 and fmt.smallest_normal <= abs(exact) <= fmt.max)
    result = getattr(fpsim, operation)(x, y, fmt, mode)
    u = Fraction(1, 2**fmt.precision) * (1 if mode == "nearest_even" else 2)  # 2^-p, or 2^(1-p) when directed
    assert abs(Fraction(float(result)) - exact) <= u * abs(exact)
