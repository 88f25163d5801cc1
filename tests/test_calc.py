"""The calculator: every literal and operation becomes a step with its exact error; only arithmetic parses."""

import math
from fractions import Fraction

import pytest

import fpsim
from fpsim.calc import MAX_LENGTH, MAX_NODES


def test_overflow_at_the_tie_past_fp16_max():
    calculation = fpsim.calc("65504 + 16", "fp16")
    assert [s.text for s in calculation.steps] == ["65504", "16", "65504 + 16"]
    assert calculation.result == math.inf and calculation.flags.overflow == 1


def test_product_of_small_numbers_underflows():
    calculation = fpsim.calc("1e-4*1e-4", "fp16")
    literal = float(fpsim.round(1e-4, "fp16"))
    assert calculation.result == 0.0 and calculation.steps[-1].exact == Fraction(literal) ** 2
    assert calculation.flags.flushed_to_zero == 1 and calculation.steps[-1].error == -(literal**2)


def test_every_step_is_one_correctly_rounded_operation():
    calculation = fpsim.calc("(0.1 + 0.2) * 3 - sqrt(2) / fma(2, 3, -1)", "bf16")
    a, b = fpsim.round(0.1, "bf16"), fpsim.round(0.2, "bf16")
    total = fpsim.add(a, b, "bf16")
    product = fpsim.mul(total, 3, "bf16")
    quotient = fpsim.div(fpsim.sqrt(2, "bf16"), fpsim.fma(2, 3, -1, "bf16"), "bf16")
    assert calculation.result == fpsim.sub(product, quotient, "bf16")
    assert calculation.steps[2].exact == Fraction(float(a)) + Fraction(float(b))
    assert abs(calculation.steps[6].exact - Fraction(2) ** 0.5) < 1e-15  # sqrt(2) to 60 digits
    text = str(calculation)
    assert "0.10009765625 + 0.2001953125 = 0.30078125" in text and text.splitlines()[-1].startswith("result: ")


def test_literals_are_rounded_once_from_their_exact_decimal():
    # float64 would read 65519.99999999999999 as 65520, the tie that overflows; the literal itself is below it
    assert fpsim.calc("65519.99999999999999", "fp16").result == 65504.0
    tiny = fpsim.calc("1e-400", "fp16", "up")
    assert tiny.result == 2.0**-24 and tiny.flags.underflow == 1  # positive, so up gives the least subnormal
    assert fpsim.calc("1.0000000000000000001", "fp16", "up").result == 1 + 2.0**-10
    assert fpsim.calc("1" + "0" * 400, "fp16").result == math.inf  # a huge integer overflows, no traceback
    assert fpsim.calc("1e400", "fp16").flags.overflow == 1
    assert fpsim.calc("1e-8", "fp32").steps[0].exact == Fraction(1, 10**8)


def test_literals_use_the_command_lines_value_syntax():
    calculation = fpsim.calc("0x1.8p-3 + 1_000 * 1E-3", "fp16")
    assert [s.text for s in calculation.steps[:3]] == ["0x1.8p-3", "1_000", "1E-3"]
    assert calculation.steps[0].exact == Fraction(3, 16) and calculation.steps[1].exact == 1000
    assert fpsim.calc("inf - inf", "fp16").flags.invalid == 1 and math.isnan(fpsim.calc("NaN", "fp16").result)
    assert fpsim.calc("-inf", "fp16").steps[-1].error == 0  # exact: the negation of inf is -inf
    assert fpsim.calc("sqrt(0x4p0)", "fp16").result == 2.0


def test_unary_minus_applies_to_the_whole_expression():
    assert fpsim.calc("-5", "fp16").result == -5.0 and fpsim.calc("-(1+2)", "fp16").result == -3.0
    assert fpsim.calc("-0.1", "fp16").result == -0.0999755859375 and fpsim.calc("+2", "fp16").result == 2.0


def test_division_by_zero_and_invalid_steps():
    assert fpsim.calc("1/0", "fp16").flags.divide_by_zero == 1
    invalid = fpsim.calc("sqrt(-1)", "fp32")
    assert math.isnan(invalid.result) and invalid.flags.invalid == 1
    assert (
        fpsim.calc("-1 + 1", "fp16", "down").result == 0.0
        and math.copysign(1, fpsim.calc("-1 + 1", "fp16", "down").result) < 0
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "may only contain"),
        ("x + 1", "may only contain"),
        ("2 ** 10", "may only contain"),
        ("abs(-1)", "may only contain"),
        ("sqrt(1, 2)", "sqrt takes 1 argument"),
        ("fma(1, 2)", "fma takes 3 arguments"),
        ("1 +", "not valid arithmetic"),
        ("1" + "+1" * (MAX_NODES // 2), f"more than {MAX_NODES} parts"),
        ("1" * (MAX_LENGTH + 1), f"the limit is {MAX_LENGTH}"),
        ("True + 1", "may only contain"),
        ("0b101 + 1", "found '0b101'"),
        ("1e5j", "found '1e5j'"),
        ("_0 + 1", "found '_0'"),
        ("1 + \u0661", "ASCII"),
        ("1e123456", "at most 5 digits"),
        ("0x1p0 +* 2", "at column 8"),  # the column in the expression as typed
    ],
)
def test_only_arithmetic_is_accepted(expression, message):
    with pytest.raises(ValueError, match=message):
        fpsim.calc(expression, "fp16")


def test_bad_arguments():
    with pytest.raises(TypeError, match="expression must be a str"):
        fpsim.calc(1.0, "fp16")
    with pytest.raises(ValueError, match="at most 25"):
        fpsim.calc("1 + 1", "fp64")


def test_an_error_beyond_float64s_range_is_infinite_not_a_crash():
    steps = fpsim.calc("1e400", "fp4").steps  # 1e400 saturates to 6: the error 6 - 1e400 has no float64
    assert steps[-1].result == 6.0 and steps[-1].error == -math.inf and steps[-1].flags.overflow == 1
