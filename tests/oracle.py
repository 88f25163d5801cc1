"""Independent references for the tests: exact rational rounding, MPFR through gmpy2, and the library casts.

Nothing here calls fpsim's rounding: each oracle computes the answer its own way.
"""

from __future__ import annotations

import math
from fractions import Fraction

import gmpy2
import ml_dtypes
import numpy as np
import torch

from fpsim import Format

# Library casts: format name -> (cast from float32, the overflow policy that library applies)
NUMPY_CASTS = {"fp16": np.float16}
ML_DTYPES_CASTS = {
    "bf16": ml_dtypes.bfloat16,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}
TORCH_CASTS = {
    "fp16": (torch.float16, "inf"),
    "bf16": (torch.bfloat16, "inf"),
    "fp8_e5m2": (torch.float8_e5m2, "inf"),
    "fp8_e4m3": (torch.float8_e4m3fn, "saturate"),  # torch saturates where ml_dtypes gives NaN
}
MPFR_MODES = {
    "nearest_even": gmpy2.RoundToNearest,
    "toward_zero": gmpy2.RoundToZero,
    "up": gmpy2.RoundUp,
    "down": gmpy2.RoundDown,
}


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: equal values with equal signs (so -0 differs from +0), or both NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return ((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))


def library_round(x32: np.ndarray, fmt_name: str, library: str) -> np.ndarray:
    """Round float32 input with a library's own cast, back to float64."""
    if library == "numpy":
        with np.errstate(over="ignore"):  # numpy warns when a cast overflows to inf, which we test on purpose
            return x32.astype(NUMPY_CASTS[fmt_name]).astype(np.float64)
    if library == "ml_dtypes":
        return x32.astype(ML_DTYPES_CASTS[fmt_name]).astype(np.float64)
    dtype, _ = TORCH_CASTS[fmt_name]
    return torch.from_numpy(x32).to(dtype).to(torch.float64).numpy()


def _floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e if Fraction(2) ** e <= a else e - 1


def beyond_range(x: float, fmt: Format, mode: str, policy: str) -> float:
    """IEEE 754 §7.4 on a magnitude past max: infinity where the mode rounds away from zero, else ±max;
    'infinity' then means what the overflow policy says."""
    sign = math.copysign(1.0, x)
    away = mode in ("nearest_even", "nearest_away", "stochastic") or (mode, sign > 0) in (("up", True), ("down", False))
    if not away and not math.isinf(x):
        return sign * fmt.max
    if math.isinf(x) and fmt.has_inf:
        return x
    return {"inf": sign * math.inf, "saturate": sign * fmt.max, "nan": math.copysign(math.nan, sign)}[policy]


def fraction_round(x: float, fmt: Format, mode: str, policy: str | None = None) -> float:
    """x rounded to fmt by rational arithmetic: floor division by the quantum, then the mode's choice."""
    policy = policy or fmt.overflow
    if math.isnan(x) or math.isinf(x):
        return x if math.isnan(x) or fmt.has_inf else beyond_range(x, fmt, mode, policy)
    if x == 0:
        return x
    a = abs(Fraction(x))
    quantum = Fraction(2) ** (max(_floor_log2(a), fmt.emin) - fmt.nmant)
    n, rest = divmod(a, quantum)
    half, negative = quantum / 2, x < 0
    step = {
        "nearest_even": rest > half or (rest == half and n % 2 == 1),
        "nearest_away": rest >= half,
        "toward_zero": False,
        "up": rest > 0 and not negative,
        "down": rest > 0 and negative,
        "odd": rest > 0 and n % 2 == 0,
    }[mode]
    magnitude = (n + step) * quantum
    if magnitude > Fraction(fmt.max):
        return beyond_range(x, fmt, mode, policy)
    if not fmt.subnormals and magnitude < Fraction(fmt.smallest_normal):
        magnitude = 0
    return math.copysign(float(magnitude), x)


def mpfr_context(fmt: Format, mode: str) -> gmpy2.context:
    """MPFR set to fmt's precision and exponent range; MPFR's exponents are for significands in [0.5, 1)."""
    return gmpy2.context(
        precision=fmt.precision,
        emin=fmt.emin - fmt.nmant + 1,  # fp16: -23, so 2^-24 = 0.5·2^-23 is the least subnormal
        emax=fmt.emax + 2,  # one binade past max, so that results beyond max come back finite and testable
        subnormalize=True,
        round=MPFR_MODES[mode],
    )


def mpfr_round(x: np.ndarray, fmt: Format, mode: str, policy: str | None = None) -> np.ndarray:
    """Each element rounded by MPFR, then the overflow rule applied past max."""
    policy = policy or fmt.overflow
    context = mpfr_context(fmt, mode)
    out = np.empty(len(x))
    for i, value in enumerate(map(float, x)):
        rounded = float(context.plus(gmpy2.mpfr(value, 53)))
        out[i] = beyond_range(value, fmt, mode, policy) if abs(rounded) > fmt.max else rounded
    return out


def wide_float32(n: int, seed: int, low: float = -30, high: float = 20) -> np.ndarray:
    """sign·2^U(low, high)·(1 + U): the issue's wide-range sample, as float32."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], n)
    return (sign * 2.0 ** rng.uniform(low, high, n) * (1 + rng.random(n))).astype(np.float32)


def format_range_float64(fmt: Format, n: int, seed: int) -> np.ndarray:
    """float64 values spread over fmt's whole range, from below its least subnormal to past max."""
    rng = np.random.default_rng(seed)
    low = fmt.emin - fmt.nmant - 3
    high = min(math.log2(fmt.max) + 2, 1023)
    return rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(low, high, n) * (1 + rng.random(n))


MPFR_OPERATIONS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "sqrt": "sqrt", "fma": "fma"}


def mpfr_operation(name: str, operands: list[np.ndarray], fmt: Format, mode: str) -> np.ndarray:
    """Each element of an operation evaluated by MPFR in fmt's precision and range, then the overflow rule."""
    context = mpfr_context(fmt, mode)
    method = getattr(context, MPFR_OPERATIONS[name])
    columns = [[gmpy2.mpfr(float(v), 53) for v in operand] for operand in operands]
    out = np.empty(len(operands[0]))
    for i, args in enumerate(zip(*columns)):
        rounded = float(method(*args))
        out[i] = beyond_range(rounded, fmt, mode, fmt.overflow) if abs(rounded) > fmt.max else rounded
    return out


def random_values(fmt: Format, n: int, seed: int) -> np.ndarray:
    """Format values drawn by uniform random finite codes: every binade and both signs equally likely."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, fmt.max_code + 1, n) | (rng.integers(0, 2, n) << (fmt.bits - 1))
    import fpsim  # the decoder is tested against the references on its own

    return fpsim.decode(codes.astype(np.uint64), fmt)
