"""fpsim.strategies: what the strategies draw is what they promise."""

import math

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

import fpsim
from fpsim import strategies as fst


@st.composite
def format_and_value(draw, **options):
    fmt = draw(fst.formats(flush_to_zero=True, asymmetric=True))
    return fmt, draw(fst.values(fmt, **options))


@given(format_and_value())
def test_values_are_exactly_representable_and_finite(case):
    fmt, value = case
    assert math.isfinite(value) and fpsim.round(value, fmt) == value and abs(value) <= fmt.max


@given(format_and_value(allow_nan=True, allow_infinity=True))
def test_specials_appear_only_where_the_format_has_them(case):
    fmt, value = case
    assert fmt.has_inf or not math.isinf(value)
    assert fmt.nan != "none" or not math.isnan(value)


@given(st.sampled_from([4, 6, 8, 16, 64]).flatmap(lambda bits: st.tuples(st.just(bits), fst.formats(max_bits=bits))))
def test_formats_are_valid_and_respect_the_width_limit(case):
    max_bits, fmt = case
    assert fmt.bits <= max_bits and 2 <= fmt.nexp <= 11


@given(st.data())
def test_bit_patterns_are_codes_of_the_format(data):
    fmt = data.draw(fst.formats(asymmetric=True))
    code = data.draw(fst.bit_patterns(fmt))
    assert 0 <= code < 2**fmt.bits
    fpsim.decode(code, fmt)  # raises on an out-of-range code


@given(st.data())
def test_real_numbers_stay_within_the_margin(data):
    fmt = data.draw(fst.formats())
    x = data.draw(fst.real_numbers(fmt, overflow_margin=1.5))
    assert math.isfinite(x) and abs(x) <= min(1.5 * fmt.max, float(np.finfo(np.float64).max)) * (1 + 1e-3)


@pytest.mark.parametrize("name", ["fp8_e4m3fnuz", "fp8_e5m2fnuz", "e8m0"])
def test_asymmetric_presets_can_be_drawn(name):
    assert find(fst.formats(custom=False, asymmetric=True), lambda f: f.name == name).name == name


@given(fst.formats(flush_to_zero=True))
def test_default_formats_are_symmetric(fmt):
    assert fmt.has_negative_zero  # so -x is a value whenever x is: no fnuz, no e8m0


@given(st.sampled_from([("fp8_e4m3fnuz", 0x80), ("e8m0", 0xFF)]).flatmap(
    lambda case: st.tuples(st.just(case[1]), fst.bit_patterns(case[0], allow_nan=False))
))  # fmt: skip
def test_bit_patterns_leave_out_the_nan_code_when_asked(case):
    nan_code, code = case
    assert code != nan_code


def test_strategies_refuse_an_empty_choice():
    with pytest.raises(ValueError, match="presets=True or custom=True"):
        fst.formats(presets=False, custom=False)
    with pytest.raises(ValueError, match="max_bits must be at least 4"):
        fst.formats(max_bits=3)
