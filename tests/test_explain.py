"""Explanations: bits, exact decimals and errors checked against numpy, ml_dtypes and Python's Decimal."""

from decimal import Decimal
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
    with pytest.raises(ValueError, match="dyadic"):
        exact_decimal(Fraction(1, 3))


def test_terminal_view_is_plain_unless_colour_is_wanted(monkeypatch):
    e = explain(0.1, "fp16")
    plain = e.render(color=False)
    assert "\x1b[" not in plain and "0 01011 1001100110" in plain and "0x2e66" in plain
    assert "\x1b[35m0\x1b[0m \x1b[34m01011\x1b[0m \x1b[33m1001100110\x1b[0m" in e.render(color=True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[" in str(e)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in str(e)


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
        (lambda: explain("0.1", "fp16"), TypeError, "value must be a number"),
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
