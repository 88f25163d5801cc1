"""Correctly rounded elementwise arithmetic (+ − × ÷ √ fma) in any format of up to 25 significant bits.

Invariant: each result is the exact operation on the (representable) operands, rounded once by the kernel.
Products are exact in float64 for p <= 25; sums go through TwoSum and a round-to-odd float64 intermediate,
which then rounds correctly to any such format in every mode (Boldo & Melquiond); quotients and square
roots rounded to float64 are never on, or on the wrong side of, a format value or midpoint when
53 >= 2p + 2, so they too round correctly (Figueroa).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from fpsim._inputs import as_float64, restore_scalar
from fpsim.flags import Flags, suspended, tracking
from fpsim.formats import Format
from fpsim.rounding import Rounding

MAX_PRECISION = 25  # 53 >= 2p + 2: float64 intermediates are innocuous (see the module docstring)
OPERAND_POLICIES = {
    "round": "operands that the format cannot hold are rounded to it first (nearest_even), like a cast; "
    "a cast that overflows is counted in the call's flags; one that underflows or is merely inexact is not",
    "exact": "operands that the format cannot hold raise ValueError",
}


def check_arithmetic_format(fmt: Format) -> None:
    """Refuse formats whose products or quotients float64 cannot carry exactly enough."""
    if fmt.precision > MAX_PRECISION:
        raise ValueError(
            f"{fmt.name} has p = {fmt.precision} significant bits; fpsim simulates arithmetic exactly in formats "
            f"of at most {MAX_PRECISION} (fp32 and narrower); for fp64 use numpy's float64 arithmetic"
        )
    least, top = fmt.emin - fmt.nmant, fmt.emax + 1  # every magnitude lies in [2^least, 2^top)
    if 2 * least < -1074 or 2 * top > 1023 or top - least > 1023:  # products and quotients must stay in float64
        raise ValueError(
            f"{fmt.name}'s exponent range (2^{least} to 2^{top}) is too wide for exact float64 products and "
            "quotients; arithmetic supports formats with at most 9 exponent bits"
        )


class Operands(NamedTuple):
    """Operands cast to a format and broadcast together, and what their casts raised that the call reports."""

    arrays: list[np.ndarray]  # flat float64 arrays of format values, one per operand
    shape: tuple
    scalar: bool  # every operand was a scalar
    raised: Flags  # the casts that overflowed, each counted as a rounding of its own


def operands(
    values: tuple[object, ...], plan: Rounding, policy: str, names: str = "abc", count_flags: bool = False
) -> Operands:
    """The operands as format values: cast like `round` (nearest_even, the plan's overflow policy), or refused.

    A cast is the caller's conversion of an input, not the operation, so its flags are not counted, with one
    exception: a cast that overflows changes what the operation computes (500 becomes inf, NaN or 448 in e4m3),
    so with `count_flags` each one is counted as a rounding that raised overflow (and inexact). Casts that
    underflow are not counted: 1e-9 cast to 0 in fp16 raises no underflow, and 1e-6 cast to a subnormal
    no subnormal or inexact, in the call's flags; round such operands first with fpsim.round(..., flags=True)
    to count them. Infinite operands are refused in formats without infinity, where no cast can keep their
    meaning. `names` name the operands in errors.
    """
    if policy not in OPERAND_POLICIES:
        raise ValueError(f"inputs must be one of {', '.join(map(repr, OPERAND_POLICIES))}; got {policy!r}")
    arrays, scalars, overflowed = [], [], 0
    cast = Rounding.resolve(plan.fmt, "nearest_even", plan.overflow, on_nan=plan.on_nan)
    for value, name in zip(values, names):
        array, scalar = as_float64(value, name)
        _refuse_infinity(array, plan.fmt, name)
        beyond = count_flags and bool((np.abs(array) > plan.fmt.max).any())  # only these casts can overflow
        with suspended():  # casting the operands is not the operation whose flags the caller asked for
            rounded, flags = cast(array, count_flags=beyond)
        if policy == "exact" and not np.array_equal(rounded, array, equal_nan=True):
            example = float(array[(rounded != array) & ~np.isnan(array)].flat[0])
            raise ValueError(f"{name} holds {example!r}, which {plan.fmt.name} cannot represent; round it first")
        overflowed += flags.overflow if flags is not None else 0
        arrays.append(rounded)
        scalars.append(scalar)
    try:
        broadcast = np.broadcast_arrays(*arrays)
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays))
        raise ValueError(f"operands must broadcast to one shape; got {shapes}") from None
    raised = Flags(total=overflowed, inexact=overflowed, overflow=overflowed)  # an overflowing cast is inexact
    return Operands([np.ravel(x) for x in broadcast], broadcast[0].shape, all(scalars), raised)


def _refuse_infinity(array: np.ndarray, fmt: Format, name: str) -> None:
    if not fmt.has_inf and np.isinf(array).any():
        raise ValueError(
            f"{name} holds {float(array[np.isinf(array)].flat[0])}, but {fmt.name} has no infinity: round {name} "
            f"to {fmt.name} first with fpsim.round, whose overflow= option says what an infinity becomes"
        )


def fraction_to_odd(value: Fraction) -> float:
    """An exact rational as the float64 that rounds like it to any format of at most 51 bits: the nearest
    float64, moved to odd when inexact (beyond float64's range: its largest value, itself odd)."""
    try:
        nearest = float(value)
    except OverflowError:
        return sys.float_info.max if value > 0 else -sys.float_info.max
    if Fraction(nearest) == value or int(np.float64(nearest).view(np.int64)) & 1:
        return nearest
    return float(np.nextafter(nearest, math.inf if value > nearest else -math.inf))


def to_odd(total: np.ndarray, error: np.ndarray) -> np.ndarray:
    """total + error (an unevaluated sum, |error| <= half an ulp of total) rounded to odd at 53 bits.

    An inexact total with an even last bit moves one ulp toward the error: the result then rounds to any
    format of at most 51 bits exactly as total + error would, in every rounding mode.
    """
    bits = total.view(np.int64).copy()
    sticky = (error != 0) & np.isfinite(total) & ((bits & 1) == 0)
    toward = np.where(np.signbit(error) == np.signbit(total), 1, -1)  # magnitude up or down
    bits[sticky] += toward[sticky]
    return bits.view(np.float64)


def sum_to_odd(a: np.ndarray, b: np.ndarray, mode: str = "nearest_even") -> np.ndarray:
    """a + b as a round-to-odd float64: TwoSum (Knuth) gives the exact error of the float64 sum.

    An exact zero sum is +0 except toward -inf, where it is -0, unless both addends are +0 (IEEE 754 §6.3);
    float64's own addition (round to nearest) gives the +0 the other modes need.
    """
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)  # exact unless the sum overflowed (then total is inf)
    if mode == "down":
        total[(total == 0) & ~((a == 0) & (b == 0) & ~np.signbit(a) & ~np.signbit(b))] = -0.0
    return to_odd(total, error)


def _invalid_and_divide(exact: np.ndarray, inputs: list[np.ndarray], divide_by_zero: np.ndarray | None) -> Flags:
    nan_in = np.zeros(exact.shape, dtype=bool)
    for operand in inputs:
        nan_in |= np.isnan(operand)
    zero_division = 0 if divide_by_zero is None else int(np.count_nonzero(divide_by_zero))
    return Flags(invalid=int(np.count_nonzero(np.isnan(exact) & ~nan_in)), divide_by_zero=zero_division)


def _apply(
    name: str,
    compute: Callable[..., np.ndarray],
    values: tuple[object, ...],
    fmt: object,
    rounding: str,
    options: dict,
):
    inputs_policy = options.pop("inputs", "round")
    want_flags = options.pop("flags", False)
    plan = Rounding.resolve(fmt, rounding, options.pop("overflow", None), options.pop("rng", None),
                            options.pop("on_nan", "raise"))  # fmt: skip
    if options:
        raise TypeError(f"{name}() got unexpected keyword arguments: {', '.join(options)}")
    check_arithmetic_format(plan.fmt)
    arrays, shape, scalar, cast_overflow = operands(values, plan, inputs_policy, count_flags=want_flags or tracking())
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # IEEE results, counted as flags below
        exact = compute(plan.mode, *arrays)
    exact[np.isnan(exact) & ~np.logical_or.reduce([np.isnan(x) for x in arrays])] = np.nan  # +NaN, not x86's -NaN
    divide_by_zero = (np.isfinite(arrays[0]) & (arrays[0] != 0) & (arrays[1] == 0)) if name == "div" else None
    if plan.fmt.nan == "none" and plan.on_nan == "raise" and np.isnan(exact).any():
        raise ValueError(
            f"{name} produced NaN (an invalid operation such as 0/0, inf - inf or sqrt(-1), or a NaN operand) "
            f"and {plan.fmt.name} has no NaN; pass on_nan='zero' to store zero instead"
        )
    raised = _invalid_and_divide(exact, arrays, divide_by_zero) + cast_overflow
    rounded, flags = plan(exact, count_flags=want_flags, raised=raised)
    result = restore_scalar(rounded.reshape(shape), scalar)
    return (result, flags) if want_flags else result


def add(a: object, b: object, fmt: Format | str, rounding: str = "nearest_even", **options):
    """a + b correctly rounded to fmt. Options: inputs ('round' or 'exact'), overflow, rng, on_nan, flags."""
    return _apply("add", lambda mode, x, y: sum_to_odd(x, y, mode), (a, b), fmt, rounding, options)


def sub(a: object, b: object, fmt: Format | str, rounding: str = "nearest_even", **options):
    """a − b correctly rounded to fmt (options as for `add`)."""
    return _apply("sub", lambda mode, x, y: sum_to_odd(x, -y, mode), (a, b), fmt, rounding, options)


def mul(a: object, b: object, fmt: Format | str, rounding: str = "nearest_even", **options):
    """a × b correctly rounded to fmt (the float64 product of two p <= 25 values is exact)."""
    return _apply("mul", lambda mode, x, y: x * y, (a, b), fmt, rounding, options)


def div(a: object, b: object, fmt: Format | str, rounding: str = "nearest_even", **options):
    """a ÷ b correctly rounded to fmt; x/0 is ±inf and raises divide_by_zero, 0/0 is NaN (invalid)."""
    return _apply("div", lambda mode, x, y: x / y, (a, b), fmt, rounding, options)


def sqrt(a: object, fmt: Format | str, rounding: str = "nearest_even", **options):
    """√a correctly rounded to fmt; sqrt(-0) = -0, sqrt of a negative is NaN (invalid)."""
    return _apply("sqrt", lambda mode, x: np.sqrt(x), (a,), fmt, rounding, options)


def fma(a: object, b: object, c: object, fmt: Format | str, rounding: str = "nearest_even", **options):
    """a × b + c with a single rounding: the exact product, then TwoSum and round-to-odd."""
    return _apply("fma", lambda mode, x, y, z: sum_to_odd(x * y, z, mode), (a, b, c), fmt, rounding, options)


def neg(a: object, fmt: Format | str, rounding: str = "nearest_even", **options):
    """−a: exact in every format and mode (only the sign bit changes)."""
    return _apply("neg", lambda mode, x: -x, (a,), fmt, rounding, options)


def abs(a: object, fmt: Format | str, rounding: str = "nearest_even", **options):  # shadows the builtin: numpy's name
    """|a|: exact in every format and mode (the sign bit is cleared)."""
    return _apply("abs", lambda mode, x: np.abs(x), (a,), fmt, rounding, options)
