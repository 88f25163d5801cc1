"""Exact reading of numeric text and the one rounding of an exact rational, checked against MPFR and Decimal."""

import math
import random
from decimal import Decimal
from fractions import Fraction

import gmpy2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracle import beyond_range, same_bits

import fpsim
from fpsim._decimal import _round_rational, exact_float64, float64_neighbours, parse_real, round_exact
from fpsim.arithmetic import fraction_to_odd
from fpsim.formats import Format
from fpsim.rounding import Rounding

FORMATS = [fpsim.get_format(n) for n in ("fp64", "fp32", "fp16", "bf16", "fp8_e4m3")]
FORMATS += [Format("e11m49", 11, 49), Format("e11m50", 11, 50)]  # where float64 round-to-odd cannot stand in
MODES = ["nearest_even", "nearest_away", "toward_zero", "up", "down", "odd"]
_MPFR = {"nearest_even": gmpy2.RoundToNearest, "toward_zero": gmpy2.RoundToZero, "up": gmpy2.RoundUp}
_MPFR |= {"down": gmpy2.RoundDown, "away": gmpy2.RoundAwayZero}


def _mpfr(text: str, fmt: Format, mode: str, unbounded: bool = False) -> gmpy2.mpfr:
    """text rounded by MPFR straight from its digits: fmt's precision, and its range unless unbounded."""
    emin, emax = (-(10**6), 10**6) if unbounded else (fmt.emin - fmt.nmant + 1, fmt.emax + 2)
    context = gmpy2.context(precision=fmt.precision, emin=emin, emax=emax, subnormalize=not unbounded)
    context.round = _MPFR[mode]
    return gmpy2.mpfr(text.lstrip("+"), 0, 10, context)  # MPFR refuses a leading +


def _mpfr_mode(text: str, fmt: Format, mode: str, unbounded: bool = False) -> gmpy2.mpfr:
    """Every mode from MPFR's directed ones: nearest_away and odd choose between toward-zero and away."""
    if mode in _MPFR:
        return _mpfr(text, fmt, mode, unbounded)
    low, high = _mpfr(text, fmt, "toward_zero", unbounded), _mpfr(text, fmt, "away", unbounded)
    if low == high or gmpy2.is_infinite(high):
        return low if low == high else high
    if mode == "nearest_away":
        return high if abs(Fraction(Decimal(text))) >= abs((_fraction(low) + _fraction(high)) / 2) else low
    mantissa, power = map(int, low.as_mantissa_exp())  # odd: the neighbour with an odd significand
    floor = -(10**6) if unbounded else fmt.emin
    exponent = max(abs(mantissa).bit_length() - 1 + power, floor) if low != 0 else floor
    return low if (_fraction(low) / Fraction(2) ** (exponent - fmt.nmant)) % 2 == 1 else high


def _fraction(x: gmpy2.mpfr) -> Fraction:
    return Fraction(*x.as_integer_ratio())


def reference(text: str, fmt: Format, mode: str) -> tuple[float, dict[str, int]]:
    """The stored value and flags by MPFR alone, with IEEE 754 §7.4 past max."""
    exact = Fraction(Decimal(text))
    rounded = _mpfr_mode(text, fmt, mode)
    beyond = abs(rounded) > fmt.max
    stored = beyond_range(-1.0 if exact < 0 else 1.0, fmt, mode, fmt.overflow) if beyond else float(rounded)
    tiny = exact != 0 and abs(_mpfr_mode(text, fmt, mode, unbounded=True)) < fmt.smallest_normal
    inexact = beyond or _fraction(rounded) != exact
    flags = {
        "inexact": int(inexact),
        "overflow": int(beyond),
        "underflow": int(tiny and inexact),
        "flushed_to_zero": int(stored == 0 and exact != 0),
        "subnormal": int(0 < abs(stored) < fmt.smallest_normal),
    }
    return stored, flags


def _decimals(fmt: Format, seed: int, n: int) -> list[str]:
    """Decimals of 20 to 40 digits over fmt's whole range, from below its least subnormal to past max,
    and decimals within 10^-30 of a midpoint between neighbours, or on it."""
    rng = random.Random(seed)
    low, high = fmt.emin - fmt.nmant - 3, min(fmt.emax + 2, 1025)
    texts = []
    for _ in range(n):
        digits = str(rng.randrange(10**19, 10 ** rng.randint(20, 40)))
        exponent = math.floor(rng.uniform(low, high) * math.log10(2)) - len(digits) + 1
        texts.append(f"{rng.choice('+-')}{digits}e{exponent}")
    values = fpsim.decode(np.array([rng.randrange(fmt.max_code) for _ in range(n // 4)], dtype=np.uint64), fmt)
    for value in map(float, values):
        midpoint = (Fraction(value) + Fraction(float(fpsim.next_up(value, fmt)))) / 2  # dyadic: m / 2^k
        k = midpoint.denominator.bit_length() - 1
        mantissa = midpoint.numerator * 5**k  # m / 2^k = m·5^k / 10^k exactly
        texts += [f"{mantissa}e-{k}", f"{mantissa * 10**30 + 1}e-{k + 30}", f"-{mantissa * 10**30 - 1}e-{k + 30}"]
    return texts


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_rounding_from_the_exact_decimal_matches_mpfr(fmt):
    texts = _decimals(fmt, seed=fmt.bits, n=120)
    for mode in MODES:
        for text in texts:
            stored, flags = round_exact(parse_real(text), fmt, mode)
            expected, expected_flags = reference(text, fmt, mode)
            assert same_bits(stored, expected), (text, mode, stored, expected)
            assert {k: getattr(flags, k) for k in expected_flags} == expected_flags, (text, mode)


@pytest.mark.parametrize(
    "fmt",
    [fpsim.get_format(n) for n in ("fp32", "fp16", "fp8_e4m3", "fp6_e2m3", "fp4_e2m1")]
    + [Format("ftz16", 5, 10, subnormals=False), Format("e5m2sat", 5, 2, overflow="saturate")],
    ids=str,
)
def test_rational_path_agrees_with_the_kernel_path_where_both_apply(fmt):
    """The rational path (fp64's) and the round-to-odd stand-in through the kernel compute the same rounding
    their own ways: on formats where both apply, they agree bit for bit and flag for flag."""
    values = [parse_real(t) for t in _decimals(fmt, seed=fmt.bits, n=80)]
    values = [v for v in values if exact_float64(v) is None]  # the rational path is for what float64 cannot hold
    for mode in MODES:
        for value in values:
            stored, flags = _round_rational(value, Rounding.resolve(fmt, mode))
            through_kernel, kernel_flags = fpsim.round(fraction_to_odd(value), fmt, mode, flags=True)
            assert same_bits(stored, through_kernel) and flags == kernel_flags, (value, mode)


def test_the_issue_examples():
    below, flags = round_exact(parse_real("0.1"), "fp64", "down")
    assert Fraction(below) < Fraction(1, 10) and below == 0.09999999999999999 and flags.inexact == 1
    assert round_exact(parse_real("1.00000000000000000001"), "fp16", "up")[0] == 1 + 2**-10
    assert round_exact(parse_real("9007199254740993"), "fp64")[0] == 2.0**53  # a tie beyond 2^53: to even
    assert round_exact(parse_real("9007199254740993"), "fp64", "up")[0] == 2.0**53 + 2


@pytest.mark.parametrize("mode", MODES)
def test_values_past_2_to_the_1024_overflow_with_the_flag_where_float64_max_is_no_stand_in(mode):
    wide = Format("e11m10", 11, 10)  # float64's max lies in its last binade: it would round to max unflagged
    stored, flags = round_exact(parse_real("1e400"), wide, mode)
    assert flags.overflow == 1 and flags.inexact == 1
    assert stored == (wide.max if mode in ("toward_zero", "down", "odd") else math.inf)


def test_stochastic_rounding_of_a_rational_draws_each_neighbour_in_proportion():
    value = Fraction(1) + Fraction(1, 3) * Fraction(2) ** -52  # a third of the way from 1 to fp64's next value
    generator = np.random.default_rng(5)
    ups = sum(round_exact(value, "fp64", "stochastic", rng=generator)[0] > 1 for _ in range(3000))
    assert abs(ups - 1000) < 5 * math.sqrt(3000 * (1 / 3) * (2 / 3))


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimals_are_read_exactly(decimal):
    value = parse_real(str(decimal))
    assert value == Fraction(decimal) and (value != 0 or math.copysign(1, value) == (-1 if decimal.is_signed() else 1))


@given(st.floats(allow_nan=False))
def test_hex_floats_are_read_exactly(x):
    assert parse_real(x.hex()) == x and math.copysign(1, float(parse_real(x.hex()))) == math.copysign(1, x)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1_000.000_1", Fraction(10000001, 10000)), ("-INF", -math.inf), ("Infinity", math.inf), ("0x1P-1074", 2.0**-1074),
     ("0x10", 16), (" .5e1 ", 5), ("5.", 5), ("0x.8", 0.5), ("1e-99999", Fraction(1, 10**99999))],
)  # fmt: skip
def test_accepted_syntax(text, value):
    assert parse_real(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\u0661", "ASCII"),  # Arabic-Indic one: Python's float() reads it, fpsim does not
        ("\uff11", "ASCII"),  # fullwidth one
        ("0b101", "must be a decimal"),
        ("1__0", "must be a decimal"),
        ("1_", "must be a decimal"),
        ("0x", "must be a decimal"),
        ("1e", "must be a decimal"),
        ("--1", "must be a decimal"),
        ("1e123456", "at most 5 digits"),
        ("1" * 5000, "the limit is 4000"),
    ],
)
def test_refused_syntax(text, message):
    with pytest.raises(ValueError, match=message):
        parse_real(text)


def test_long_text_is_not_echoed_in_full():
    with pytest.raises(ValueError, match="must be a decimal") as error:
        parse_real("x" * 3000)
    assert len(str(error.value)) < 200 and "3000 characters" in str(error.value)


@pytest.mark.parametrize("value", [Fraction(1, 10), Fraction(-1, 10**400), Fraction(10**400), Fraction(2**53 + 1)])
def test_float64_neighbours_bracket_the_value(value):
    low, high = float64_neighbours(value)
    assert low < value < high and math.nextafter(low, math.inf) == high
