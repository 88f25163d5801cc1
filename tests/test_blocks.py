"""Block formats (fpsim.blocks) against an exact rational reference from the OCP MX v1.0 text and NVFP4's recipe.

The reference below uses only Fractions and the spec's constants (emax, max normal, mantissa bits, emin of each
element format as the OCP MX spec tables them); it does not call fpsim. Hand-worked examples carry their arithmetic.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fpsim
from fpsim import BLOCK_FORMATS, BlockFormat, explain_block, get_block_format, quantize_blocks
from fpsim._terminal import console
from fpsim.blocks import block_format_or_none

# OCP MX v1.0 §5.3 element formats, and AMD's fnuz e4m3 (one zero, +0): (emax, max normal, stored mantissa bits, emin)
SPEC = {
    "fp8_e4m3": (8, Fraction(448), 3, -6),
    "fp8_e4m3fnuz": (7, Fraction(240), 3, -7),
    "fp8_e5m2": (15, Fraction(57344), 2, -14),
    "fp6_e3m2": (4, Fraction(28), 2, -2),
    "fp6_e2m3": (2, Fraction(15, 2), 3, 0),
    "fp4_e2m1": (2, Fraction(6), 1, 0),
}
E8M0_MIN, E8M0_MAX = -127, 127
MODES = ("floor", "rceil", "even")
ROUNDINGS = ("nearest_even", "nearest_away", "toward_zero", "up", "down", "odd")


def pow2(exponent: int) -> Fraction:
    return Fraction(2) ** exponent


def floor_log2(q: Fraction) -> int:
    """The e with 2^e <= q < 2^(e+1), for q > 0."""
    e = q.numerator.bit_length() - q.denominator.bit_length()
    return e - 1 if pow2(e) > q else e


def round_to_grid(
    q: Fraction, mant: int, emin: int, max_value: Fraction | None, mode: str = "nearest_even"
) -> Fraction:
    """q rounded to a binary format with `mant` stored bits and minimum exponent emin, saturating at ±max_value
    (None: the unbounded exponent range, IEEE 754's 'as if the exponent range were unbounded')."""
    if q == 0:
        return Fraction(0)
    sign = 1 if q > 0 else -1
    quantum = pow2(max(floor_log2(abs(q)), emin) - mant)
    n = abs(q) / quantum  # rounded as a magnitude; 'up' and 'down' swap for negative q
    low = math.floor(n)
    rest = n - low
    if rest == 0:
        k = low
    elif mode in ("nearest_even", "nearest_away"):
        tie_up = low % 2 == 1 if mode == "nearest_even" else True
        k = low + 1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and tie_up) else low
    elif mode == "odd":
        k = low if low % 2 else low + 1
    else:
        away = {"toward_zero": False, "up": sign > 0, "down": sign < 0}[mode]
        k = low + 1 if away else low
    result = k * quantum
    return sign * (result if max_value is None else min(result, max_value))


def ref_mx_exponent(amax: Fraction, element: str, mode: str) -> int:
    """The shared exponent: OCP floor rule, or torchao's RCEIL and EVEN, clamped to E8M0's range."""
    emax, max_value, mant, _ = SPEC[element]
    if amax == 0:
        return E8M0_MIN
    if mode == "floor":
        k = floor_log2(amax) - emax
    elif mode == "rceil":  # the smallest k with amax / 2^k <= max
        k = floor_log2(amax) - emax - 2
        while amax > max_value * pow2(k):
            k += 1
    else:  # even: amax rounded to `mant` mantissa bits, halves up, then the floor rule
        quantum = pow2(floor_log2(amax) - mant)
        k = floor_log2(math.floor(amax / quantum + Fraction(1, 2)) * quantum) - emax
    return min(max(k, E8M0_MIN), E8M0_MAX)


def ref_mx_block(block: list[float], element: str, mode: str, rounding: str = "nearest_even"):
    """(scale, elements, values, flushed, saturated) of one block, or None for a block with NaN or inf."""
    if not all(math.isfinite(v) for v in block):
        return None
    _, max_value, mant, emin = SPEC[element]
    exact = [Fraction(v) for v in block]
    scale = pow2(ref_mx_exponent(max(map(abs, exact)), element, mode))
    elements = [round_to_grid(v / scale, mant, emin, max_value, rounding) for v in exact]
    flushed = sum(v != 0 and e == 0 for v, e in zip(exact, elements))
    saturated = sum(abs(round_to_grid(v / scale, mant, emin, None, rounding)) > max_value for v in exact)
    return scale, elements, [e * scale for e in elements], flushed, saturated


def ref_fp32(q: Fraction) -> Fraction:
    return round_to_grid(q, 23, -126, Fraction(2**128))


def ref_nvfp4(x: list[float], block: int, tensor_scale: Fraction | None = None, rounding: str = "nearest_even"):
    """NVFP4: s_t = fp32(amax / (448·6)); per block S = RNE_e4m3(clamp(amax_b / (6·s_t), 2^-6, 448))."""
    finite = [abs(Fraction(v)) for v in x if math.isfinite(v)]
    amax_t = max(finite, default=Fraction(0))
    if tensor_scale is None:
        tensor_scale = max(ref_fp32(amax_t / (448 * 6)), pow2(-149)) if amax_t else Fraction(1)  # fp32's least
    blocks = []
    for start in range(0, len(x), block):
        part = x[start : start + block]
        if not all(math.isfinite(v) for v in part):
            blocks.append(None)
            continue
        exact = [Fraction(v) for v in part]
        ratio = min(max(max(map(abs, exact)) / (6 * tensor_scale), pow2(-6)), Fraction(448))
        scale = round_to_grid(ratio, 3, -6, Fraction(448))
        divisor = scale * tensor_scale
        elements = [round_to_grid(v / divisor, 1, 0, Fraction(6), rounding) for v in exact]
        flushed = sum(v != 0 and e == 0 for v, e in zip(exact, elements))
        saturated = sum(abs(round_to_grid(v / divisor, 1, 0, None, rounding)) > 6 for v in exact)
        blocks.append((scale, elements, [e * divisor for e in elements], flushed, saturated))
    return tensor_scale, blocks


def check_block(result, index: int, lo: int, hi: int, expected) -> None:
    """Block `index` of a 1-D result (elements lo:hi) equals the reference's tuple, or is a NaN block."""
    if expected is None:
        assert math.isnan(result.scales[index]) and result.flags.nan[index]
        assert result.flags.flushed[index] == result.flags.saturated[index] == 0  # nothing left to flush
        assert np.isnan(result.values[lo:hi]).all() and np.isnan(result.elements[lo:hi]).all()
        return
    scale, elements, values, flushed, saturated = expected
    assert Fraction(float(result.scales[index])) == scale
    assert [Fraction(float(e)) for e in result.elements[lo:hi]] == elements
    assert [Fraction(float(v)) for v in result.values[lo:hi]] == values
    assert (result.flags.flushed[index], result.flags.saturated[index]) == (flushed, saturated)
    assert not result.flags.nan[index]


# ---- properties against the reference ------------------------------------------------------------------------
def wide_floats(low: int = -150, high: int = 150) -> st.SearchStrategy[float]:
    """Exact float64s m·2^e with up to 21 significant bits over a wide exponent range, zeros of both signs."""
    scaled = st.builds(lambda m, e: math.ldexp(m, e), st.integers(-(2**21), 2**21), st.integers(low, high))
    return st.one_of(scaled, st.sampled_from([0.0, -0.0, 1.0, 448.0, 6.0, 7.5, 28.0, 57344.0]))


def with_specials(values: st.SearchStrategy[float], high: int = 1000) -> st.SearchStrategy[float]:
    """Mostly `values`, with NaN, ±inf and extremes down to float64's subnormals: x / scale then underflows float64."""
    extremes = wide_floats(-1100, high)
    return st.one_of(values, values, values, extremes, st.sampled_from([math.nan, math.inf, -math.inf]))


@settings(max_examples=120)
@given(
    x=st.lists(with_specials(wide_floats()), min_size=1, max_size=80),
    element=st.sampled_from(sorted(SPEC)),
    block=st.integers(1, 40),
    mode=st.sampled_from(MODES),
    rounding=st.sampled_from(ROUNDINGS),
)
def test_mx_matches_the_exact_reference(x, element, block, mode, rounding):
    fmt = BlockFormat(element, "e8m0", block)
    result = quantize_blocks(np.array(x), fmt, scale_mode=mode, rounding=rounding)
    assert result.scales.shape == (math.ceil(len(x) / block),) and result.tensor_scale == 1.0
    for index, lo in enumerate(range(0, len(x), block)):
        hi = min(lo + block, len(x))
        check_block(result, index, lo, hi, ref_mx_block(x[lo:hi], element, mode, rounding))


@settings(max_examples=120)
@given(
    x=st.lists(with_specials(wide_floats(-60, 60), high=110), min_size=1, max_size=70),  # amax / 2688 in fp32
    block=st.integers(1, 24),
    rounding=st.sampled_from(ROUNDINGS),
)
def test_nvfp4_recipe_matches_the_exact_reference(x, block, rounding):
    result = quantize_blocks(np.array(x), BlockFormat("fp4_e2m1", "fp8_e4m3", block), rounding=rounding)
    tensor_scale, blocks = ref_nvfp4(x, block, rounding=rounding)
    assert Fraction(result.tensor_scale) == tensor_scale
    for index, expected in enumerate(blocks):
        check_block(result, index, index * block, min((index + 1) * block, len(x)), expected)


@settings(max_examples=60)
@given(x=st.lists(wide_floats(-30, 30), min_size=1, max_size=40), scale_exponent=st.integers(-20, 20))
def test_nvfp4_given_tensor_scale_matches_the_reference(x, scale_exponent):
    tensor_scale = math.ldexp(1.25, scale_exponent)  # a float32 value
    result = quantize_blocks(np.array(x), "nvfp4", tensor_scale=tensor_scale)
    _, blocks = ref_nvfp4(x, 16, Fraction(tensor_scale))
    assert result.tensor_scale == tensor_scale
    for index, expected in enumerate(blocks):
        check_block(result, index, index * 16, min((index + 1) * 16, len(x)), expected)


@pytest.mark.parametrize("name", list(BLOCK_FORMATS))
def test_zeros_keep_their_sign(name):
    result = quantize_blocks(np.array([-0.0, 0.0, -1e-30, 1e-30, 100.0]), name)
    assert list(np.signbit(result.elements)) == [True, False, True, False, False]
    assert list(np.signbit(result.values)) == [True, False, True, False, False]


def test_fnuz_elements_have_only_plus_zero():
    # fp8_e4m3fnuz (emax 7, least subnormal 2^-10): floor(log2 100) = 6 -> X = 2^-1. 100/X = 200, spacing 16 in
    # [128, 256): 12.5 ties to 12 -> 192; -0.001/X = -0.002 = -2.05 least subnormals -> -2^-9; -1e-30 rounds to 0,
    # which fnuz holds only as +0 (its -0 code is NaN), and -0 itself becomes +0.
    result = quantize_blocks(np.array([-0.0, -1e-30, 100.0, -0.001]), BlockFormat("fp8_e4m3fnuz", "e8m0", 4))
    assert result.scales.tolist() == [0.5] and result.elements.tolist() == [0, 0, 192, -(2.0**-9)]
    assert list(np.signbit(result.elements)) == list(np.signbit(result.values)) == [False, False, False, True]
    assert result.values.tolist() == [0, 0, 96, -(2.0**-10)] and result.flags.total_flushed == 1


# ---- hand-worked examples, one or more per preset ------------------------------------------------------------
HAND_WORKED = [
    # mxfp8_e4m3: amax 1000, floor(log2 1000) = 9 (512 <= 1000 < 1024), emax 8 -> X = 2^1.
    # 1000/2 = 500 > 448 saturates; 1/2 = 0.5 exact; 0.01/2 = 0.005 is subnormal (spacing 2^-9): 2.56 -> 3 -> 3/512;
    # -3/2 = -1.5 exact.
    ("mxfp8_e4m3", [1000, 1, 0.01, -3], 2, [448, 0.5, 3 / 512, -1.5], 0, 1),
    # mxfp8_e5m2: floor(log2 1e5) = 16, emax 15 -> X = 2. 50000 in [2^15, 2^16), spacing 2^13: 6.10 -> 6 -> 49152;
    # 0.05 in [2^-5, 2^-4), spacing 2^-7: 6.4 -> 6 -> 0.046875; 3.5 exact.
    ("mxfp8_e5m2", [100000, 0.1, 7], 2, [49152, 0.046875, 3.5], 0, 0),
    # mxfp6_e3m2: floor(log2 20) = 4, emax 4 -> X = 1. 20 = 5·4 exact; 0.3 in [2^-2, 2^-1), spacing 2^-4: 4.8 -> 5
    # -> 0.3125; 1.1 spacing 2^-2: 4.4 -> 4 -> 1.
    ("mxfp6_e3m2", [20, -0.3, 1.1], 1, [20, -0.3125, 1], 0, 0),
    # mxfp6_e2m3: floor(log2 7.9) = 2, emax 2 -> X = 1. 7.9 > 7.5 saturates; 0.2 is subnormal (spacing 2^-3):
    # 1.6 -> 2 -> 0.25; 2.6 spacing 2^-2: 10.4 -> 10 -> 2.5.
    ("mxfp6_e2m3", [7.9, 0.2, -2.6], 1, [7.5, 0.25, -2.5], 0, 1),
    # mxfp4: floor(log2 5) = 2, emax 2 -> X = 1. 5 is the tie between 4 (1.0·2^2) and 6 (1.5·2^2): even -> 4;
    # 0.7 (spacing 0.5) -> 0.5; -0.2 < 0.25 -> -0 (flushed); 2.5 ties between 2 and 3 -> 2.
    ("mxfp4", [5, 0.7, -0.2, 2.5], 1, [4, 0.5, 0, 2], 1, 0),
    # mxfp4, an outlier flushes its neighbours: floor(log2 24) = 4 -> X = 4. 24/4 = 6 exact; 1/4 = 0.25 ties between
    # 0 and 0.5 -> 0 (even); 0.4/4 = 0.1 -> 0.
    ("mxfp4", [24, 1, 0.4], 4, [6, 0, 0], 2, 0),
]


@pytest.mark.parametrize(("name", "x", "scale", "elements", "flushed", "saturated"), HAND_WORKED)
def test_hand_worked_mx_examples(name, x, scale, elements, flushed, saturated):
    result = quantize_blocks(np.array(x, dtype=np.float64), name)
    assert result.scales.tolist() == [scale]
    assert result.elements.tolist() == elements
    assert result.values.tolist() == [e * scale for e in elements]
    assert (result.flags.total_flushed, result.flags.total_saturated) == (flushed, saturated)


def test_hand_worked_nvfp4_with_a_given_tensor_scale():
    # tensor scale 1/4: amax 100 -> 100 / (6 · 0.25) = 66.67, e4m3 spacing 8 in [64, 128) -> 64; divisor 64 · 0.25 = 16.
    # 100/16 = 6.25 rounds to 6 (the grid past 6 goes on at 8), no overflow: not saturated;
    # 12/16 = 0.75 ties between 0.5 and 1.0 -> 1.0 (even); 1/16, -3/16, 0.3/16 < 0.25
    # flush to zero.
    result = quantize_blocks(np.array([12, 1, -3, 0.3, 100]), "nvfp4", tensor_scale=0.25)
    assert result.scales.tolist() == [64.0]
    assert result.elements.tolist() == [1.0, 0.0, -0.0, 0.0, 6.0]
    assert result.values.tolist() == [16.0, 0.0, -0.0, 0.0, 96.0]
    assert result.flags.to_dict() == {"flushed": 3, "saturated": 0, "nan_blocks": 0}


# Saturated means IEEE 754 §7.4's overflow: rounded as if the exponent range were unbounded, the element exceeds max.
# e4m3's grid goes on 448, 480 (spacing 32); e2m1's goes on 6, 8.
SATURATION_CASES = [
    ("mxfp8_e4m3", 449.0, "nearest_even", 0),  # nearer 448
    ("mxfp8_e4m3", 464.0, "nearest_even", 0),  # the tie goes to 448 (last bit 0)
    ("mxfp8_e4m3", 464.0, "nearest_away", 1),  # the tie goes to 480
    ("mxfp8_e4m3", 465.0, "nearest_even", 1),  # nearer 480
    ("mxfp8_e4m3", 449.0, "up", 1),
    ("mxfp8_e4m3", 479.0, "toward_zero", 0),
    ("mxfp8_e4m3", 480.0, "toward_zero", 1),  # 480 itself lies past max
    ("mxfp8_e4m3", 449.0, "odd", 1),  # 448 is even: odd rounding takes 480
    ("mxfp4", 6.5, "nearest_even", 0),
    ("mxfp4", 7.0, "nearest_even", 1),  # the tie goes to 8 (6 = 1.1b·2^2 is odd)
    ("mxfp4", 6.5, "odd", 0),  # 6 is odd
]


@pytest.mark.parametrize(("name", "amax", "rounding", "saturated"), SATURATION_CASES)
def test_saturated_counts_elements_that_round_past_max(name, amax, rounding, saturated):
    # floor(log2 amax) = emax: X = 1, so amax itself is the scaled element
    result = quantize_blocks(np.array([amax, 1.0]), name, rounding=rounding)
    assert result.scales.tolist() == [1.0]
    assert result.flags.total_saturated == saturated
    assert explain_block([amax, 1.0], name, rounding=rounding).saturated == saturated


def test_hand_worked_nvfp4_with_its_own_tensor_scale():
    # s_t = fp32(12 / 2688) = fp32(1/224) = fp32(2^-8 · 8/7); 8/7 = 1.001001001..._2. Its 23 fraction bits are
    # 001 repeated seven times then 00, the next bit is 1 followed by more ones: round up to ...01.
    significand = int("1" + "001" * 7 + "01", 2)  # 24 bits: the hidden 1 and 23 fraction bits
    tensor_scale = Fraction(significand, 2**31)
    assert float(np.float32(1 / 224)) == tensor_scale  # numpy's own conversion agrees
    # s_t > 1/224, so 12 / (6·s_t) = 2/s_t is a little under 448, above 432 (the midpoint below): scale 448.
    # divisor D = 448·s_t = 2·(1+d), d > 0: 12/D, 1/D, -3/D a little under 6, 0.5, -1.5 -> 6, 0.5, -1.5; 0.3/D ~ 0.15
    # -> 0 (flushed).
    result = quantize_blocks(np.array([12, 1, -3, 0.3]), "nvfp4")
    assert Fraction(result.tensor_scale) == tensor_scale
    assert result.scales.tolist() == [448.0]
    assert result.elements.tolist() == [6.0, 0.5, -1.5, 0.0]
    assert [Fraction(v) for v in result.values] == [e * 448 * tensor_scale for e in (6, Fraction(1, 2), -1.5, 0)]
    assert result.flags.to_dict() == {"flushed": 1, "saturated": 0, "nan_blocks": 0}


# ---- the three scale modes ------------------------------------------------------------------------------------
# m = amax / 2^floor(log2 amax). rceil moves up when m·2^emax > max; even when m >= 2 - 2^-(nmant+1).
# mxfp4: max 6 = 1.5·2^2, even threshold 1.75. mxfp8_e4m3: max 448 = 1.75·2^8, threshold 1.9375.
# mxfp6_e2m3: max 7.5 = 1.875·2^2, threshold 1.9375.
SCALE_MODE_CASES = [
    ("mxfp4", 5.0, {"floor": 0, "rceil": 0, "even": 0}),  # m = 1.25: all agree
    ("mxfp4", 6.0, {"floor": 0, "rceil": 0, "even": 0}),  # exactly max: nothing saturates under floor either
    ("mxfp4", 6.5, {"floor": 0, "rceil": 1, "even": 0}),  # m = 1.625: only rceil moves (6.5 > 6)
    ("mxfp4", 7.0, {"floor": 0, "rceil": 1, "even": 1}),  # m = 1.75: only floor stays
    ("mxfp8_e4m3", 448.0, {"floor": 0, "rceil": 0, "even": 0}),
    ("mxfp8_e4m3", 449.0, {"floor": 0, "rceil": 1, "even": 0}),
    ("mxfp8_e4m3", 495.0, {"floor": 0, "rceil": 1, "even": 0}),  # m = 1.93359375 < 1.9375
    ("mxfp8_e4m3", 496.0, {"floor": 0, "rceil": 1, "even": 1}),  # m = 1.9375
    ("mxfp6_e2m3", 7.6, {"floor": 0, "rceil": 1, "even": 0}),
    ("mxfp6_e2m3", 7.75, {"floor": 0, "rceil": 1, "even": 1}),
]


@pytest.mark.parametrize(("name", "amax", "exponents"), SCALE_MODE_CASES)
def test_scale_modes_differ_exactly_where_they_should(name, amax, exponents):
    for mode, exponent in exponents.items():
        result = quantize_blocks(np.array([amax, -0.5]), name, scale_mode=mode)
        assert result.scales.tolist() == [2.0**exponent], mode
        assert result.scale_mode == mode


def test_floor_saturates_where_rceil_does_not():
    floor = quantize_blocks(np.array([7.0, 1.0]), "mxfp4", scale_mode="floor")
    rceil = quantize_blocks(np.array([7.0, 1.0]), "mxfp4", scale_mode="rceil")
    assert floor.flags.total_saturated == 1 and floor.values.tolist() == [6.0, 1.0]
    assert rceil.flags.total_saturated == 0 and rceil.values.tolist() == [8.0, 1.0]  # 3.5 ties to 4 (even)


# ---- the spec's edge cases -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n, f in BLOCK_FORMATS.items() if f.power_of_two])
@pytest.mark.parametrize("mode", MODES)
def test_all_zero_block_gets_the_smallest_e8m0_scale(name, mode):
    result = quantize_blocks(np.zeros(40), name, scale_mode=mode)
    assert result.scales.tolist() == [2.0**-127, 2.0**-127]
    assert not result.values.any() and result.flags.to_dict() == {"flushed": 0, "saturated": 0, "nan_blocks": 0}


def test_all_zero_tensor_under_nvfp4():
    result = quantize_blocks(np.zeros(20), "nvfp4")
    assert result.tensor_scale == 1.0 and result.scales.tolist() == [2.0**-6, 2.0**-6]
    assert not result.values.any()


def test_shared_exponent_clamps_at_both_ends_of_e8m0():
    # 2^-140: floor rule gives -148, clamped to -127; 2^-140 / 2^-127 = 2^-13 < 2^-10 (half of e4m3's 2^-9): flushed
    low = quantize_blocks(np.array([2.0**-140, 2.0**-130]), "mxfp8_e4m3")
    assert low.scales.tolist() == [2.0**-127] and low.values.tolist() == [0.0, 2.0**-130]
    assert low.flags.total_flushed == 1
    # 2^200: 200 - 8 = 192, clamped to 127; 2^73 saturates at 448
    high = quantize_blocks(np.array([2.0**200, 1.0]), "mxfp8_e4m3")
    assert high.scales.tolist() == [2.0**127] and high.values.tolist() == [448 * 2.0**127, 0.0]
    assert high.flags.total_saturated == 1


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", list(BLOCK_FORMATS))
def test_nan_or_inf_makes_its_block_nan_and_leaves_the_others(special, name):
    fmt = get_block_format(name)
    x = np.linspace(-3, 3, 3 * fmt.block)
    x[fmt.block + 2] = special
    result = quantize_blocks(x, fmt)
    clean = quantize_blocks(np.delete(x, np.s_[fmt.block : 2 * fmt.block]), fmt, tensor_scale=_tensor_scale(result))
    assert result.flags.nan.tolist() == [False, True, False] and result.flags.nan_blocks == 1
    assert np.isnan(result.scales[1]) and np.isnan(result.values[fmt.block : 2 * fmt.block]).all()
    np.testing.assert_array_equal(result.values[: fmt.block], clean.values[: fmt.block])
    np.testing.assert_array_equal(result.values[2 * fmt.block :], clean.values[fmt.block :])


def _tensor_scale(result):
    return None if result.fmt.power_of_two else result.tensor_scale


def test_on_nan_raise_refuses_nan_input():
    with pytest.raises(ValueError, match=r"NaN or ±inf in 1 block"):
        quantize_blocks(np.array([1.0, math.nan]), "mxfp4", on_nan="raise")


@pytest.mark.parametrize(
    ("name", "x", "rounding", "tiny_element"),
    [
        # X = 2^(996 - 8) clamped to 2^127: 1e-300 / 2^127 ~ 6e-339 underflows float64, yet is nonzero
        ("mxfp8_e4m3", [1e300, 1e-300], "up", 2.0**-9),  # e4m3's least subnormal
        ("mxfp8_e4m3", [1e300, -1e-300], "down", -(2.0**-9)),
        ("mxfp8_e4m3", [1e300, 1e-300], "odd", 2.0**-9),  # inexact, so to the odd neighbour of 0
        ("mxfp8_e4m3", [1e300, 1e-300], "nearest_even", 0.0),
        ("nvfp4", [1e40, 1e-320], "up", 0.5),  # D ~ 1.7e39: 1e-320 / D underflows float64; e2m1's least is 0.5
    ],
)
def test_elements_far_below_a_quantum_round_by_sign_and_mode(name, x, rounding, tiny_element):
    result = quantize_blocks(np.array(x), name, rounding=rounding)
    assert result.elements[1] == tiny_element and math.copysign(1, result.elements[1]) == math.copysign(1, x[1])
    assert result.flags.total_flushed == (tiny_element == 0)


# ---- layout: axis, partial last block, shapes -----------------------------------------------------------------
def test_partial_last_block_gets_its_own_scale():
    x = np.concatenate([np.full(64, 0.001), [100.0, 1.0, -2.0, 0.5, 3.0, 0.25]])
    result = quantize_blocks(x, "mxfp8_e4m3")
    alone = quantize_blocks(x[64:], "mxfp8_e4m3")
    assert result.scales.shape == (3,)
    assert result.scales[2] == alone.scales[0] and result.scales[0] != result.scales[2]
    np.testing.assert_array_equal(result.values[64:], alone.values)
    with pytest.raises(ValueError, match="not a multiple of the block size 32"):
        quantize_blocks(x, "mxfp8_e4m3", partial=False)
    assert quantize_blocks(x[:64], "mxfp8_e4m3", partial=False).scales.shape == (2,)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_blocks_run_along_the_axis(axis):
    x = np.random.default_rng(axis + 5).standard_normal((6, 35, 9)) * 10.0 ** np.arange(9)
    result = quantize_blocks(x, "mxfp4", axis=axis)
    moved = np.moveaxis(x, axis, -1)
    flat = quantize_blocks(moved.reshape(-1, moved.shape[-1]), "mxfp4")
    nblocks = math.ceil(x.shape[axis] / 32)
    np.testing.assert_array_equal(np.moveaxis(result.values, axis, -1).reshape(flat.values.shape), flat.values)
    expected_scale_shape = tuple(nblocks if i == axis % 3 else n for i, n in enumerate(x.shape))
    assert result.scales.shape == result.flags.flushed.shape == expected_scale_shape
    assert result.values.shape == result.elements.shape == x.shape and result.axis == axis % 3


def test_inputs_of_any_float_dtype_and_lists():
    x = [0.1, -2.5, 300.0]
    expected = quantize_blocks(np.array(x), "mxfp6_e3m2").values
    np.testing.assert_array_equal(quantize_blocks(x, "mxfp6_e3m2").values, expected)
    x32 = np.array(x, dtype=np.float32)  # float32 0.1 is not 0.1: the result is that of its exact widening
    as32 = quantize_blocks(x32, "mxfp6_e3m2")
    assert as32.values.dtype == np.float64
    widened = quantize_blocks(x32.astype(np.float64), "mxfp6_e3m2")
    for name in ("values", "elements", "scales"):
        np.testing.assert_array_equal(getattr(as32, name), getattr(widened, name))


@pytest.mark.parametrize("name", ["nvfp4", "mxfp4", "mxfp8"])
def test_track_flags_counts_none_of_the_kernels_roundings(name):
    x = np.linspace(-3, 3, 256)  # inexact in every format here: the rounding inside would count 256 and more
    with fpsim.track_flags() as flags:
        quantize_blocks(x, name)
        explain_block(x[:16], name)
        fpsim.round(x[:3], "fp8_e4m3")  # a plain rounding beside them still counts
    assert flags.total == 3


# ---- formats and bad input -----------------------------------------------------------------------------------
def test_presets():
    assert {n: (f.element.name, f.scale, f.block) for n, f in BLOCK_FORMATS.items()} == {
        "mxfp8_e4m3": ("fp8_e4m3", "e8m0", 32),
        "mxfp8_e5m2": ("fp8_e5m2", "e8m0", 32),
        "mxfp6_e3m2": ("fp6_e3m2", "e8m0", 32),
        "mxfp6_e2m3": ("fp6_e2m3", "e8m0", 32),
        "mxfp4": ("fp4_e2m1", "e8m0", 32),
        "nvfp4": ("fp4_e2m1", "fp8_e4m3", 16),
    }
    assert get_block_format("MXFP8") is BLOCK_FORMATS["mxfp8_e4m3"] and get_block_format(" nvfp4 ").name == "nvfp4"
    assert BLOCK_FORMATS["mxfp8_e4m3"].bits_per_value == 8.25 and BLOCK_FORMATS["nvfp4"].bits_per_value == 4.5
    assert BlockFormat("e2m1", "float8_e8m0fnu", 8).name == "fp4_e2m1x8/e8m0"
    assert BlockFormat(fpsim.FP4_E2M1, fpsim.FP8_E4M3, 16).scale == "fp8_e4m3"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mxfp8", "mxfp8_e4m3"),
        (" NVFP4 ", "nvfp4"),
        ("mxfp6", "mxfp6_e2m3"),
        ("fp8_e4m3", None),
        ("mxfp9", None),
        (32, None),
        (None, None),
    ],
)
def test_block_format_or_none(spec, expected):
    found = block_format_or_none(spec)
    assert (found if found is None else found.name) == expected
    custom = BlockFormat("e2m1", "e8m0", 8)
    assert block_format_or_none(custom) is custom


UNSIGNED_E4M3 = fpsim.Format("ue4m3", 4, 3, has_inf=False, nan="all_ones", signed=False)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: BlockFormat("fp4", "fp16", 32), ValueError, "not a block-scale format"),
        (lambda: BlockFormat("fp4", 3, 32), TypeError, "scale must be"),
        (lambda: BlockFormat(fpsim.Format("e8m30", 8, 30), "fp8_e4m3", 16), ValueError, "at most 24 bits of precision"),
        (lambda: BlockFormat("e8m0", "e8m0", 4), ValueError, "signed formats with zero.*e8m0 is unsigned"),
        (lambda: BlockFormat(UNSIGNED_E4M3, "e8m0", 4), ValueError, "signed formats with zero.*ue4m3 is unsigned"),
        (lambda: BlockFormat("fp64", "e8m0", 32), ValueError, "smallest subnormal of at least 2"),
        (lambda: BlockFormat("fp4", "e8m0", 0), ValueError, "block must be between 1"),
        (lambda: BlockFormat("fp4", "e8m0", 2.0), TypeError, "block must be an int"),
        (lambda: BlockFormat("fp99", "e8m0", 32), ValueError, "unknown format"),
        (lambda: get_block_format("mxfp9"), ValueError, "valid names are mxfp8_e4m3"),
        (lambda: get_block_format(32), TypeError, "BlockFormat or a block format name"),
        (lambda: quantize_blocks([1.0], "mxfp4", scale_mode="ceil"), ValueError, "scale_mode must be one of"),
        (lambda: quantize_blocks([1.0], "nvfp4", scale_mode="floor"), ValueError, "leave scale_mode=None"),
        (lambda: quantize_blocks([1.0], "mxfp4", tensor_scale=1.0), ValueError, "tensor_scale applies"),
        (lambda: quantize_blocks([1.0], "nvfp4", tensor_scale=0.1), ValueError, "positive finite float32"),
        (lambda: quantize_blocks([1.0], "nvfp4", tensor_scale=-1.0), ValueError, "positive finite float32"),
        (lambda: quantize_blocks([1e42], "nvfp4"), ValueError, "beyond float32's range"),
        (lambda: quantize_blocks([1.0], "mxfp4", rounding="sideways"), ValueError, "rounding"),
        (lambda: quantize_blocks([1.0], "mxfp4", on_nan="ignore"), ValueError, "on_nan must be one of"),
        (lambda: quantize_blocks([1.0], "mxfp4", partial="no"), TypeError, "partial must be a bool"),
        (lambda: quantize_blocks([1.0], "mxfp4", axis=1), ValueError, "axis 1 is out of range"),
        (lambda: quantize_blocks([1.0], "mxfp4", axis=0.0), TypeError, "axis must be an int"),
        (lambda: quantize_blocks(1.0, "mxfp4"), ValueError, "at least one dimension"),
        (lambda: quantize_blocks("1.0", "mxfp4"), TypeError, "x must be"),
        (lambda: explain_block(np.ones(33), "mxfp4"), ValueError, "1 to 32 numbers"),
        (lambda: explain_block(np.ones((2, 2)), "mxfp4"), ValueError, "values must be one block"),
    ],
)
def test_bad_input_gets_a_clear_error(build, error, match):
    with pytest.raises(error, match=match):
        build()


# ---- explain_block -------------------------------------------------------------------------------------------
def test_explain_block_shows_the_scale_and_each_element():
    explanation = explain_block([24, 1, 0.4], "mxfp4")  # the outlier example above: X = 2^2
    assert (explanation.scale, explanation.amax, explanation.tensor_scale) == (4.0, 24.0, 1.0)
    assert [e.status for e in explanation.elements] == ["exact", "flushed to 0", "flushed to 0"]
    assert [(e.scaled, e.element, e.value) for e in explanation.elements] == [(6, 6, 24), (0.25, 0, 0), (0.1, 0, 0)]
    assert (explanation.flushed, explanation.saturated) == (2, 0)
    text = str(explanation)
    assert "amax = 24.0: scale = 2^(floor(log2 amax) − emax) = 2^(4 − 2) = 2^2 = 4.0" in text
    assert text.count("flushed to 0") == 3  # two rows and the summary line
    buffer = io.StringIO()
    console(buffer).print(explanation)
    assert buffer.getvalue().rstrip("\n") == text
    assert explanation.to_dict()["elements"][0] == {
        "index": 0,
        "input": 24.0,
        "scaled": 6.0,
        "element": 6.0,
        "value": 24.0,
        "status": "exact",
    }


def test_explain_block_saturation_nan_and_nvfp4():
    assert [e.status for e in explain_block([7.9, 2.6], "mxfp6_e2m3").elements] == ["saturated", "rounded"]
    nan = explain_block([1.0, math.nan], "mxfp8")
    assert math.isnan(nan.scale) and {e.status for e in nan.elements} == {"NaN block"} and "NaN" in str(nan)
    # the hand-worked nvfp4 block: 100 / 16 = 6.25 rounds to 6 (nearest) or to 8 (up), past max
    nv = explain_block([12, 1, -3, 0.3, 100], "nvfp4", tensor_scale=0.25)
    assert nv.scale == 64.0 and [e.status for e in nv.elements][-1] == "rounded" and "s_t = 0.25" in nv.rule
    up = explain_block([12, 1, -3, 0.3, 100], "nvfp4", rounding="up", tensor_scale=0.25)
    assert [e.status for e in up.elements][-1] == "saturated" and up.elements[-1].element == 6.0


@pytest.mark.parametrize(
    ("x", "note"),
    [
        ([2.0**-140, 2.0**-130], "(2^-138 clamped to E8M0's range)"),  # -130 - 8 lies below -127
        ([2.0**200, 1.0], "(2^192 clamped to E8M0's range)"),
        ([2.0**-119], None),  # -119 - 8 = -127 exactly: E8M0's least, nothing clamped
        ([2.0**135], None),  # 135 - 8 = 127 exactly
        ([0.0, 0.0], "(clamped to E8M0's range)"),  # log2(0) = -inf
    ],
)
def test_explain_says_clamped_only_when_the_rule_left_e8m0s_range(x, note):
    rule = explain_block(x, "mxfp8_e4m3").rule
    assert ("clamped" in rule) == (note is not None) and (note is None or rule.endswith(note)), rule


def test_explain_names_the_divisor_of_each_scale_kind():
    assert "input / scale " in str(explain_block([3.0, 1.0], "mxfp4"))
    nv = str(explain_block([3.0, 1.0], "nvfp4"))
    assert "input / (scale·s_t)" in nv and "input / scale " not in nv


@pytest.mark.parametrize("name", list(BLOCK_FORMATS))
def test_scales_are_values_of_the_scale_format(name):
    fmt = get_block_format(name)
    x = np.array([1e-30, 3.0, 1e20, math.nan, 0.0, 7.0]).repeat(fmt.block)
    scales = quantize_blocks(x, fmt).scales
    codes = fpsim.encode(scales, fmt.scale_format)
    np.testing.assert_array_equal(fpsim.decode(codes, fmt.scale_format), scales)  # NaN blocks: NaN both sides
    if fmt.power_of_two:  # E8M0: the code is the exponent plus 127, 0xFF the NaN
        exponents = [math.frexp(s)[1] - 1 if math.isfinite(s) else 128 for s in scales]
        assert codes.tolist() == [e + 127 for e in exponents] and codes[3] == 0xFF


def test_stochastic_rounding_draws_one_stream_for_full_and_short_blocks():
    x = np.full(63, 1.25)  # X = 2^(0 - 2): 1.25 / X = 5 lies between e2m1's 4 and 6
    first = quantize_blocks(x, "mxfp4", rounding="stochastic", rng=3)
    assert np.array_equal(first.elements, quantize_blocks(x, "mxfp4", rounding="stochastic", rng=3).elements)
    assert set(first.elements.tolist()) == {4.0, 6.0}
    assert not np.array_equal(first.elements[:31], first.elements[32:])  # the short block does not replay the draws
