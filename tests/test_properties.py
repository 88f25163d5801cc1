"""Hypothesis properties of rounding and coding, over preset, custom and flush-to-zero formats."""

from fractions import Fraction

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from oracle import same_bits

import fpsim
from fpsim import strategies as fst

DETERMINISTIC = [m for m in fpsim.ROUNDING_MODES if m != "stochastic"]
SYMMETRIC = ["nearest_even", "nearest_away", "toward_zero", "odd"]


def finite_policy(fmt):
    """An overflow policy that keeps results ordered (no NaN): saturate where the format has no infinity."""
    return "inf" if fmt.has_inf else "saturate"


@st.composite
def format_and_pair(draw):
    fmt = draw(fst.formats(flush_to_zero=True))
    return fmt, draw(fst.real_numbers(fmt)), draw(fst.real_numbers(fmt))


@given(format_and_pair(), st.sampled_from(DETERMINISTIC))
def test_rounding_is_monotonic(case, mode):
    fmt, x, y = case
    x, y = min(x, y), max(x, y)
    rx, ry = fpsim.round([x, y], fmt, mode, overflow=finite_policy(fmt))
    assert rx <= ry


@given(format_and_pair(), st.sampled_from(list(fpsim.ROUNDING_MODES)))
def test_rounding_is_idempotent(case, mode):
    fmt, x, _ = case
    once = fpsim.round(x, fmt, mode, rng=0)
    assert same_bits(fpsim.round(once, fmt, mode, rng=1), once)


@given(format_and_pair(), st.sampled_from(list(fpsim.ROUNDING_MODES)))
def test_error_is_within_half_an_ulp_for_nearest_modes_and_one_ulp_otherwise(case, mode):
    fmt, x, _ = case
    result = fpsim.round(x, fmt, mode, rng=3)
    assume(abs(result) <= fmt.max and abs(x) <= fmt.max)  # overflow has its own tests
    assume(fmt.subnormals or abs(x) >= fmt.smallest_normal)  # flush-to-zero errs by design below that
    error = abs(Fraction(float(result)) - Fraction(x))
    ulp = Fraction(float(fmt.ulp(x)))
    assert error <= ulp / 2 if mode.startswith("nearest") else error < ulp


@given(format_and_pair(), st.sampled_from(SYMMETRIC))
def test_symmetric_modes_commute_with_negation(case, mode):
    fmt, x, _ = case
    assert same_bits(fpsim.round(-x, fmt, mode), -fpsim.round(x, fmt, mode))


@given(format_and_pair())
def test_up_of_minus_x_is_minus_down_of_x(case):
    fmt, x, _ = case
    assert same_bits(fpsim.round(-x, fmt, "up"), -fpsim.round(x, fmt, "down"))


@given(format_and_pair(), st.sampled_from(list(fpsim.ROUNDING_MODES)))
def test_decode_of_encode_is_round(case, mode):
    fmt, x, y = case
    values = np.array([x, y])
    rounded = fpsim.round(values, fmt, mode, rng=5)
    assert same_bits(fpsim.decode(fpsim.encode(values, fmt, mode, rng=5), fmt), rounded).all()


@st.composite
def format_and_code(draw):
    fmt = draw(fst.formats())
    return fmt, draw(fst.bit_patterns(fmt, allow_nan=False))


@st.composite
def format_and_two_magnitude_codes(draw):
    fmt = draw(fst.formats(flush_to_zero=True))
    magnitude = st.integers(0, fmt.max_code + fmt.has_inf)  # every finite code, and +inf where it exists
    return fmt, draw(magnitude), draw(magnitude)


@given(format_and_code())
def test_encode_of_decode_is_the_identity_on_non_nan_codes(case):
    fmt, code = case
    assert int(fpsim.encode(fpsim.decode(code, fmt), fmt)) == code


@given(format_and_two_magnitude_codes())
def test_non_negative_codes_are_ordered_like_their_values(case):
    fmt, a, b = case
    va, vb = fpsim.decode([a, b], fmt)
    if fmt.subnormals:
        assert (a < b) == (va < vb) and (a == b) == (va == vb)
    else:  # flush-to-zero reads subnormal codes as zero: order is kept, strictness is not
        assert (a <= b) == (va <= vb) or va == vb == 0
