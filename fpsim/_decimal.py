"""Exact reading of numbers written as text, and the one rounding of an exact rational to a format.

Invariant: text becomes its exact value (a Fraction), which is rounded once, in every mode, with truthful flags.
"""

from __future__ import annotations

import math
import re
import sys
from fractions import Fraction

import numpy as np

from fpsim.arithmetic import fraction_to_odd
from fpsim.codec import round as round_float64
from fpsim.flags import Flags, report
from fpsim.formats import Format, get_format
from fpsim.rounding import Rounding

Exact = Fraction | float  # finite nonzero values as Fractions; ±0, ±inf and NaN as the floats that hold them

MAX_CHARACTERS = 4000  # enough to paste back any exact decimal fpsim prints (fp64's longest has 767 digits)
MAX_EXPONENT_DIGITS = 5  # 1e-99999 is fine; 1e999999999 would ask for a billion-digit power of ten

_DIGITS = r"[0-9](?:_?[0-9])*"  # Python's rule: one underscore between digits
_HEX_DIGITS = r"[0-9a-f](?:_?[0-9a-f])*"
UNSIGNED_NUMBER = (
    rf"0x(?:{_HEX_DIGITS}(?:\.(?:{_HEX_DIGITS})?)?|\.{_HEX_DIGITS})(?:p[+-]?{_DIGITS})?"
    rf"|(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:e[+-]?{_DIGITS})?"
    r"|inf(?:inity)?|nan"
)
_NUMBER = re.compile(rf"([+-]?)({UNSIGNED_NUMBER})", re.IGNORECASE | re.ASCII)

VALUE_SYNTAX = (
    "A value is a decimal (0.1, -2.5e-3, 1_000), a hex float (0x1.8p-3) or an integer (65504, 0x3c00 = 15360), "
    "or inf, infinity or nan, in any case; ASCII digits only, at most 4000 characters and a 5-digit exponent. "
    "It is read exactly, integers beyond 2^53 included, and rounded once to the format."
)


def elide_text(text: str, limit: int = 40) -> str:
    """User text for an error message: quoted, and shortened when long."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit // 2]!r}…{text[-8:]!r} ({len(text)} characters)"


def parse_real(text: str, name: str = "value") -> Exact:
    """The exact value of a number written as text (syntax: VALUE_SYNTAX); ValueError naming `name` otherwise."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    token = text.strip()
    if len(token) > MAX_CHARACTERS:
        raise ValueError(f"{name} is {len(token)} characters long; the limit is {MAX_CHARACTERS}")
    if not token.isascii():
        odd = next(c for c in token if not c.isascii())
        raise ValueError(f"{name} must be written in ASCII; {elide_text(text)} contains {odd!r} (U+{ord(odd):04X})")
    match = _NUMBER.fullmatch(token)
    if not match:
        raise ValueError(
            f"{name} must be a decimal (0.1, 1e-5), a hex float (0x1.8p-3), inf or nan; got {elide_text(text)}"
        )
    negative, body = match.group(1) == "-", match.group(2).lower().replace("_", "")
    if body.startswith("inf"):
        return -math.inf if negative else math.inf
    if body == "nan":
        return math.nan
    value = _hex_value(body[2:], name) if body.startswith("0x") else _decimal_value(body, name)
    if value == 0:
        return -0.0 if negative else 0.0
    return -value if negative else value


def _decimal_value(body: str, name: str) -> Fraction:
    mantissa, _, exponent = body.partition("e")
    whole, _, fraction = mantissa.partition(".")
    power = _exponent(exponent, name) - len(fraction)
    return int(whole + fraction or "0") * Fraction(10) ** power


def _hex_value(body: str, name: str) -> Fraction:
    mantissa, _, exponent = body.partition("p")
    whole, _, fraction = mantissa.partition(".")
    power = _exponent(exponent, name) - 4 * len(fraction)
    return int(whole + fraction or "0", 16) * Fraction(2) ** power


def _exponent(digits: str, name: str) -> int:
    if len(digits.lstrip("+-")) > MAX_EXPONENT_DIGITS:
        raise ValueError(f"{name}'s exponent may have at most {MAX_EXPONENT_DIGITS} digits; got {elide_text(digits)}")
    return int(digits or "0")


def exact_float64(value: Exact) -> float | None:
    """value as a float64 when float64 holds it exactly, else None."""
    if isinstance(value, float):
        return value
    try:
        nearest = float(value)
    except OverflowError:  # beyond 2^1024: no float64 is near
        return None
    return nearest if Fraction(nearest) == value else None


def float64_neighbours(value: Fraction) -> tuple[float, float]:
    """The adjacent float64s lo < value < hi around a rational float64 cannot hold (±inf past its range)."""
    try:
        nearest = float(value)
    except OverflowError:
        return (sys.float_info.max, math.inf) if value > 0 else (-math.inf, -sys.float_info.max)
    if Fraction(nearest) < value:
        return nearest, math.nextafter(nearest, math.inf)
    return math.nextafter(nearest, -math.inf), nearest


def _odd_stands_in(fmt: Format) -> bool:
    """Whether a float64 rounded to odd rounds like the exact value in fmt: at least 2 bits to spare below
    the finest grid the kernel uses there (fmt's quanta, and the grid 2^(emin-p) of its tininess check), and
    float64's max (the stand-in for values past 2^1024) a binade past fmt's, so that it overflows there too."""
    return fmt.precision <= 51 and fmt.emin - fmt.precision >= -1072 and fmt.emax < 1023


def round_exact(
    value: Exact,
    fmt: Format | str,
    rounding: str = "nearest_even",
    *,
    overflow: str | None = None,
    rng: object = None,
    on_nan: str = "raise",
) -> tuple[float, Flags]:
    """value rounded once to fmt (options as in fpsim.round), and the flags of that one rounding."""
    fmt = get_format(fmt)
    options = {"overflow": overflow, "rng": rng, "on_nan": on_nan}
    stand_in = exact_float64(value)
    if stand_in is None and _odd_stands_in(fmt):
        stand_in = fraction_to_odd(value)  # inexact, so odd: rounds to fmt exactly as value would
    if stand_in is not None:
        rounded, flags = round_float64(stand_in, fmt, rounding, flags=True, **options)
        return float(rounded), flags
    return _round_rational(value, Rounding.resolve(fmt, rounding, overflow, rng, on_nan))


def _round_rational(value: Fraction, how: Rounding) -> tuple[float, Flags]:
    """Rational arithmetic throughout, for a value float64 cannot hold in a format as fine as float64 (fp64)."""
    fmt, magnitude = how.fmt, abs(value)
    result = _round_at(value, Fraction(2) ** (max(floor_log2(magnitude), fmt.emin) - fmt.nmant), how)
    smallest_normal = Fraction(fmt.smallest_normal)
    tiny = abs(result) < smallest_normal or (
        abs(result) == smallest_normal
        and magnitude < smallest_normal
        and (
            how.mode == "stochastic" or abs(_round_at(value, smallest_normal / 2**fmt.precision, how)) < smallest_normal
        )
    )  # tininess after rounding, as the kernel detects it: would an unbounded exponent have stayed below?
    beyond = abs(result) > Fraction(fmt.max)
    sign = -1.0 if value < 0 else 1.0  # not copysign(…, value): a huge Fraction has no float
    out = np.array([sign * (math.inf if beyond else abs(float(result)))])  # float(): exact, a format value
    if beyond:  # IEEE 754 §7.4 and the overflow policy, decided by the kernel's own rule
        how._resolve_overflow(np.array([sign]), out, np.array([True]))
    elif tiny and not fmt.subnormals:
        out[0] = sign * 0.0
    stored = float(out[0])
    flags = Flags(
        total=1,
        inexact=1,
        overflow=int(beyond),
        underflow=int(tiny),
        flushed_to_zero=int(stored == 0),
        subnormal=int(0 < abs(stored) < fmt.smallest_normal),
        nan=int(math.isnan(stored)),
    )
    report(flags)
    return stored, flags


def _round_at(value: Fraction, quantum: Fraction, how: Rounding) -> Fraction:
    """value rounded to a multiple of quantum in how.mode, the range not yet considered."""
    scaled = value / quantum
    whole = math.trunc(scaled)
    rest = abs(scaled - whole)
    if rest == 0:  # possible only on the tininess grid 2^(emin-p), finer than float64's
        return value
    mode = how.mode
    if mode == "nearest_even":
        away = rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1)
    elif mode == "nearest_away":
        away = rest >= Fraction(1, 2)
    elif mode in ("up", "down"):
        away = (value > 0) == (mode == "up")
    elif mode == "odd":
        away = whole % 2 == 0
    elif mode == "stochastic":
        away = how.rng.random() < rest  # probability = rest, to the resolution of the draw (2^-53)
    else:
        away = False  # toward_zero
    return (whole + (1 if away and value > 0 else -1 if away else 0)) * quantum


def floor_log2(magnitude: Fraction) -> int:
    """The largest k with 2^k ≤ magnitude (> 0), exactly: the bit lengths put k within one of the estimate."""
    estimate = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    return estimate if Fraction(2) ** estimate <= magnitude else estimate - 1


def to_float(ratio: Fraction) -> float:
    """An exact ratio as the nearest float, ±inf past float64's range (an error of 1e400 in fp16 is 1e395 ulp)."""
    try:
        return float(ratio)
    except OverflowError:
        return math.inf if ratio > 0 else -math.inf
