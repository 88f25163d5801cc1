"""Explanations: bits, exact decimals and errors checked against numpy, ml_dtypes and Python's Decimal."""

import re
import sys
from decimal import Decimal, localcontext
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpsim.explanation import exact_decimal, explain

REFERENCE_TYPES = {
    "fp32": (np.float32, np.uint32),
    "fp16": (np.float16, np.uint16),
    "bf16": (ml_dtypes.bfloat16, np.uint16),
}
POINT_ONE = 0.1  # the float64 nearest 1/10, whose exact expansion Decimal(float) gives


@pytest.mark.parametrize("name", REFERENCE_TYPES)
def test_point_one_against_the_reference_types(name):
    dtype, storage = REFERENCE_TYPES[name]
    stored = np.array(0.1, dtype=np.float32).astype(dtype)  # float32 first: 0.1 is not near a bf16 midpoint
    e = explain(0.1, name)
    assert e.code == int(stored.view(storage)) and e.value == float(stored)
    assert "".join(e.bit_fields.values()) == format(e.code, f"0{e.fmt.bits}b")
    assert [len(bits) for bits in e.bit_fields.values()] == [1, e.fmt.nexp, e.fmt.nmant]
    assert e.exact_value == str(Decimal(float(stored)))  # Decimal(float) is exact
    assert e.exact_input == str(Decimal(POINT_ONE))
    assert e.abs_error == Fraction(float(stored)) - Fraction(0.1)
    assert e.rel_error == pytest.approx(float(e.abs_error) / 0.1, rel=1e-15)
    assert e.category == "normal" and e.exponent == -4 and e.biased_exponent == -4 + e.fmt.bias
    assert e.below < 0.1 < e.above and e.value in (e.below, e.above)
    assert e.ulp == e.above - e.below and e.flags.inexact == 1


def test_known_bit_patterns_of_point_one():
    codes = {e.fmt.name: e.code for e in explain(0.1, ["fp32", "fp16", "bf16"])}
    assert codes == {"fp32": 0x3DCCCCCD, "fp16": 0x2E66, "bf16": 0x3DCD}


def test_specials_subnormals_and_overflow():
    tiny = explain(1e-7, "fp16", "up")
    assert (tiny.category, tiny.exponent, tiny.biased_exponent, tiny.value) == ("subnormal", -14, 0, 2.0**-23)
    assert tiny.flags.underflow == 1 and tiny.bit_fields["exponent"] == "00000"
    big = explain(70000, "fp16")
    assert (big.category, big.exponent, big.value, big.abs_error) == ("inf", None, np.inf, np.inf)
    assert big.flags.overflow == 1 and big.below == 65504.0
    assert explain(np.float32(-0.0), "e4m3").rows()["bits"] == "1 0000 000"
    assert explain(0.25, "fp4", rounding="up").value == 0.5


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_exact_decimal_is_exact(x):
    assert Decimal(exact_decimal(x)) == Decimal(x)


def test_exact_decimal_notation():
    assert exact_decimal(0.1) == "0.1000000000000000055511151231257827021181583404541015625"
    assert exact_decimal(2.0**-24) == "5.9604644775390625e-8"
    assert exact_decimal(65504.0) == "65504" and exact_decimal(-2.5) == "-2.5" and exact_decimal(0.0) == "0"
    assert exact_decimal(-0.0) == "-0"
    assert exact_decimal(Fraction(1, 10)) == "0.1" and exact_decimal(Fraction(-1, 10**400)) == "-1e-400"
    assert exact_decimal(Fraction(6551999, 100)) == "65519.99" and exact_decimal(Fraction(10**20)) == "1e20"
    with pytest.raises(ValueError, match="finite decimal expansion"):
        exact_decimal(Fraction(1, 3))


@given(st.integers(), st.integers(0, 400), st.integers(0, 400))
def test_exact_decimal_of_any_terminating_fraction(numerator, twos, fives):
    value = Fraction(numerator, 2**twos * 5**fives)
    with localcontext() as context:
        context.prec = 2000  # enough for every digit: the quotient terminates
        assert Decimal(exact_decimal(value)) == Decimal(value.numerator) / Decimal(value.denominator)


@pytest.mark.parametrize(
    ("value", "text"),
    [(Fraction(10**5000), "1e5000"), (Fraction(3 * 10**4300), "3e4300"), (Fraction(-1, 10**5000), "-1e-5000")],
)
def test_exact_decimal_of_values_with_thousands_of_digits(value, text):
    assert exact_decimal(value) == text  # str() of 10^5000 would exceed Python's int-to-str limit


def _reference_digits(value: Fraction) -> tuple[str, int]:
    """value's significant digits and the exponent of the leading one, by the decimal module (which Python's
    int-to-str limit does not restrain)."""
    with localcontext() as context:
        context.prec = 200_000
        _, digits, exponent = (Decimal(value.numerator) / Decimal(value.denominator)).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, exponent + len(text) - 1


@pytest.mark.parametrize("value", [Fraction(7**5000), Fraction(-(3**9000), 2**3000), Fraction(1, 2**20000)])
def test_exact_decimal_elides_the_middle_of_more_digits_than_anyone_can_type(value):
    digits, exponent = _reference_digits(value)
    assert len(digits) > 4000
    sign = "-" if value < 0 else ""
    elided = f"{sign}{digits[0]}.{digits[1:40]}…({len(digits) - 60} digits omitted)…{digits[-20:]}e{exponent}"
    assert exact_decimal(value) == elided


def test_exact_decimal_prints_every_digit_under_the_lowest_int_to_str_limit(monkeypatch):
    value = Fraction(-(7**2000), 2**1000)  # 1690 significant digits, far above the lowest limit (640)
    digits, exponent = _reference_digits(value)
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        text = exact_decimal(value)
    finally:
        sys.set_int_max_str_digits(limit)
    assert text == f"-{digits[0]}.{digits[1:]}e{exponent}"


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("fp8_e4m3", ml_dtypes.float8_e4m3fn),
        ("fp6_e3m2", ml_dtypes.float6_e3m2fn),
        ("fp4_e2m1", ml_dtypes.float4_e2m1fn),
    ],
)
def test_neighbours_of_infinities_in_formats_without_infinity_are_their_max(name, dtype):
    largest = float(ml_dtypes.finfo(dtype).max)  # the reference: ml_dtypes' own constant
    for value in (float("inf"), "1e400", Fraction(10**400)):
        assert explain(value, name).below == largest
    assert explain(float("-inf"), name).above == -largest and explain("-1e400", name).above == -largest


def test_terminal_view_is_plain_unless_colour_is_wanted(monkeypatch):
    e = explain(0.1, "fp16")
    plain = e.render(color=False)
    assert "\x1b[" not in plain and "0 01011 1001100110" in plain and "0x2e66" in plain
    assert "\x1b[35m0\x1b[0m \x1b[34m01011\x1b[0m \x1b[33m1001100110\x1b[0m" in e.render(color=True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[" in str(e)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in str(e)


def test_text_is_read_exactly_and_the_headline_says_what_float64_would_do():
    typed, python = explain("0.1", "fp64", "down"), explain(0.1, "fp64", "down")
    assert Fraction(typed.value) < Fraction(1, 10) < Fraction(typed.above) and typed.flags.inexact == 1
    assert python.value == 0.1 and python.flags.inexact == 0  # Python's 0.1 is a float64 already
    assert typed.abs_error == Fraction(typed.value) - Fraction(1, 10)
    assert typed.render().startswith("0.1 exactly (float64 would round it to 0.1000000000000000055511151231257827")
    assert python.render().startswith("0.1 as float64 = 0.1000000000000000055511151231257827021181583404541015625")
    assert explain(Fraction(3, 4), "fp16").render().startswith("0.75 exactly (a float64 too)")
    beyond = explain("-1e400", "fp16", "toward_zero")
    assert beyond.value == -65504 and beyond.flags.overflow == 1 and beyond.below == -np.inf
    assert beyond.render().startswith("-1e400 exactly (beyond float64's range)")


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 200])
def test_views_fit_the_width_and_keep_every_digit(width):
    group = explain("1e-40", ["fp64", "fp32", "fp16", "bf16"], "up")
    text = group.render(width=width)
    assert max(map(len, text.splitlines())) <= width
    for e in group:
        for decimal in (e.exact_value, exact_decimal(e.abs_error), exact_decimal(e.ulp)):
            assert decimal in _column_text(text, e.fmt.name), (e.fmt.name, decimal)
    side_by_side = ["fp64", "fp32", "fp16", "bf16"] in [line.split() for line in text.splitlines()]
    assert side_by_side == (width >= 200)  # else one table per format


def _column_text(text: str, name: str) -> str:
    """A format's cells with the folds undone: its column of a side-by-side view, or its own table."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if name in line.split())
    starts = [m.start() for m in re.finditer(r"\S+", lines[header])]
    if len(starts) == 1:  # stacked: this format's table runs to the next blank line
        end = next((i for i in range(header, len(lines)) if not lines[i].strip()), len(lines))
        return "".join("".join(line[14:] for line in lines[header + 1 : end]).split())  # after the labels
    begin = lines[header].index(name)
    stop = next((start for start in starts if start > begin), None)
    return "".join(line[begin:stop].strip() for line in lines[header + 1 :])


def test_side_by_side_and_html_views():
    group = explain(0.1, ["fp32", "fp16", "bf16"])
    header = group.render().splitlines()[1].split()
    assert header == ["fp32", "fp16", "bf16"]
    html = group._repr_html_()
    assert html.startswith("<table>") and html.count("<th>fp") == 2 and "#0072b2" in html
    assert "0x3dcd" in explain(0.1, "bf16")._repr_html_()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: explain("abc", "fp16"), ValueError, "value must be a decimal"),
        (lambda: explain("\u0661", "fp16"), ValueError, "ASCII"),
        (lambda: explain(Fraction(1, 3), "fp16"), ValueError, "finite decimal expansion"),
        (lambda: explain(b"1", "fp16"), TypeError, "value must be a number"),
        (lambda: explain([0.1, 0.2], "fp16"), TypeError, "value must be one real number"),
        (lambda: explain(2**60 + 1, "fp16"), ValueError, "beyond 2\\^53"),
        (lambda: explain(0.1, []), ValueError, "fmt must name at least one format"),
        (lambda: explain(0.1, "fp16", "sideways"), ValueError, "rounding must be one of"),
        (lambda: explain(np.nan, "fp6_e3m2"), ValueError, "has no NaN encoding"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
