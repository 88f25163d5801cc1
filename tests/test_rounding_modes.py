"""Rounding modes: directed modes against MPFR, the others against exact rational rounding, IEEE overflow
rules under every mode, round-to-odd's double-rounding theorem, and stochastic rounding's statistics."""

import math
import zlib

import numpy as np
import pytest
from below_float64 import BELOW_FLOAT64_NORMALS, around_float64_subnormals, exact_decode
from oracle import MPFR_MODES, format_range_float64, fraction_round, mpfr_round, same_bits

import fpsim
from fpsim.formats import OVERFLOW_POLICIES, PRESETS

SAMPLED = ["fp16", "bf16", "tf32", "fp32", "fp8_e5m2", "fp8_e4m3", "fp6_e3m2", "fp4_e2m1"]
EXTRA = [
    fpsim.Format("e6m5", 6, 5),
    fpsim.Format("fp16_ftz", 5, 10, subnormals=False),
    fpsim.Format("e11m20", 11, 20),
    fpsim.Format("e5m2_bias_minus_3", 5, 2, bias=-3),  # every quantum exceeds 1: x / 2^q can underflow float64
    fpsim.Format("e5m2_bias_minus_993", 5, 2, bias=-993),  # the same on the ldexp path
    fpsim.Format("e3m0", 3, 0, has_inf=False, nan="none"),
]


@pytest.mark.parametrize("mode", MPFR_MODES)
@pytest.mark.parametrize("name", SAMPLED)
def test_ieee_modes_match_mpfr(name, mode):
    fmt = PRESETS[name]
    x = format_range_float64(fmt, 10_000, seed=zlib.crc32(f"{name} {mode}".encode()))
    assert same_bits(fpsim.round(x, fmt, mode), mpfr_round(x, fmt, mode)).all()


@pytest.mark.parametrize("mode", [m for m in fpsim.ROUNDING_MODES if m != "stochastic"])
@pytest.mark.parametrize("fmt", [PRESETS[n] for n in SAMPLED] + EXTRA, ids=str)
def test_every_deterministic_mode_matches_exact_rational_rounding(fmt, mode):
    x = format_range_float64(fmt, 2_000, seed=len(mode) * 7919 + fmt.bits)
    codes = np.arange(min(200, fmt.max_code))
    ties = fpsim.decode(codes, fmt) / 2 + fpsim.decode(codes + 1, fmt) / 2  # halves first: no overflow
    extremes = [0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, 1e-300, 1.7976931348623157e308]
    x = np.concatenate([x, ties, -ties, extremes])
    expected = [fraction_round(v, fmt, mode) for v in x]
    assert same_bits(fpsim.round(x, fmt, mode), expected).all()


DETERMINISTIC = [m for m in fpsim.ROUNDING_MODES if m != "stochastic"]


def with_policies(formats):
    """(format, overflow policy) for every policy each format can honour."""
    pairs = []
    for fmt in formats:
        for policy in OVERFLOW_POLICIES:
            try:
                pairs.append((fmt, fmt.check_overflow(policy)))
            except ValueError:
                continue
    return pairs


def exact_round(x: float, fmt: fpsim.Format, mode: str, policy: str) -> float:
    """fraction_round, with IEEE tininess after rounding in flush-to-zero formats: a result at the smallest
    normal is flushed when x, rounded to p bits with an unbounded exponent, would have stayed below it."""
    rounded = fraction_round(x, fmt, mode, policy)
    if fmt.subnormals or abs(rounded) != fmt.smallest_normal or abs(x) >= fmt.smallest_normal:
        return rounded
    one_binade_lower = fpsim.Format("unbounded", fmt.nexp, fmt.nmant, bias=fmt.bias + 1)  # emin - 1 is normal there
    stays_below = abs(fraction_round(x, one_binade_lower, mode)) < fmt.smallest_normal
    return math.copysign(0.0, x) if stays_below else rounded


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize(("fmt", "policy"), with_policies(BELOW_FLOAT64_NORMALS), ids=lambda p: str(p))
def test_normals_below_float64s_round_like_exact_rationals(fmt, policy, mode):
    x = around_float64_subnormals(fmt, 200, seed=zlib.crc32(f"{fmt} {mode}".encode()))
    x = x[~np.isnan(x)] if fmt.nan == "none" else x
    expected = [exact_round(v, fmt, mode, policy) for v in x]
    assert same_bits(fpsim.round(x, fmt, mode, overflow=policy), expected).all()


@pytest.mark.heavy
@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("fmt", [f for f in BELOW_FLOAT64_NORMALS if f.nmant == 2], ids=str)
def test_every_midpoint_below_float64_normals_rounds_like_exact_rationals(fmt, mode):
    values = np.array([exact_decode(c, fmt) for c in range(fmt.max_code + 1)])
    mids = values[:-1] / 2 + values[1:] / 2  # exact: half a quantum (>= 2^-1062) is a float64
    x = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)])
    x = np.concatenate([x, -x])
    expected = [exact_round(v, fmt, mode, fmt.overflow) for v in x]
    assert same_bits(fpsim.round(x, fmt, mode), expected).all()


def test_the_reported_float64_subnormal_rounds_to_its_nearest_format_value():
    fmt = BELOW_FLOAT64_NORMALS[0]
    # |x| = 177.527...·2^-1039, 2^-1039 being the least subnormal: 178·2^-1039 (the bug gave 192·2^-1039)
    assert fpsim.round(-3.0137e-311, fmt) == -math.ldexp(178, -1039) == -3.0217220063345e-311


@pytest.mark.parametrize("mode", MPFR_MODES)
@pytest.mark.parametrize("fmt", [f for f in BELOW_FLOAT64_NORMALS if f.subnormals], ids=str)
def test_normals_below_float64s_round_like_mpfr(fmt, mode):
    x = around_float64_subnormals(fmt, 1000, seed=zlib.crc32(f"mpfr {fmt} {mode}".encode()))
    x = x[np.isfinite(x)]
    assert same_bits(fpsim.round(x, fmt, mode), mpfr_round(x, fmt, mode)).all()


@pytest.mark.parametrize(
    ("mode", "positive", "negative"),
    [
        ("nearest_even", math.inf, -math.inf),
        ("nearest_away", math.inf, -math.inf),
        ("toward_zero", 65504.0, -65504.0),
        ("up", math.inf, -65504.0),
        ("down", 65504.0, -math.inf),
        ("odd", 65504.0, -65504.0),
        ("stochastic", math.inf, -math.inf),
    ],
)
def test_overflow_follows_ieee_rules_for_each_mode(mode, positive, negative):
    # IEEE 754 §7.4: overflow gives infinity when the mode rounds away from zero, else the largest finite value
    assert fpsim.round([1e6, -1e6], "fp16", mode, rng=0).tolist() == [positive, negative]
    assert fpsim.round([np.inf, -np.inf], "fp16", mode, rng=0).tolist() == [math.inf, -math.inf]


def test_directed_modes_bracket_the_input():
    x = format_range_float64(fpsim.FP16, 10_000, seed=4)
    x = x[np.abs(x) < 65504]
    down, up = fpsim.round(x, "fp16", "down"), fpsim.round(x, "fp16", "up")
    assert (down <= x).all() and (x <= up).all()
    exact = down == up
    assert np.array_equal(fpsim.next_up(down[~exact], "fp16"), up[~exact])


def test_round_to_odd_leaves_exact_values_and_sets_the_last_bit_otherwise():
    x = format_range_float64(fpsim.FP16, 10_000, seed=8)
    x = x[np.abs(x) < 65504]
    codes, flags = fpsim.encode(x, "fp16", "odd", flags=True)
    inexact = fpsim.decode(codes, "fp16") != x
    assert (codes[inexact] & 1 == 1).all() and flags.inexact == inexact.sum() > 0
    exact_values = fpsim.decode(np.arange(0x7C00), "fp16")
    assert np.array_equal(fpsim.round(exact_values, "fp16", "odd"), exact_values)


def test_round_to_odd_with_two_extra_bits_then_nearest_is_correct_rounding():
    # Boldo & Melquiond: rounding to odd at p + 2 bits, then to nearest at p bits, rounds correctly once.
    x = format_range_float64(fpsim.FP16, 50_000, seed=9)
    x = x[(np.abs(x) > 2.0**-14) & (np.abs(x) < 65504)]
    wide_odd = fpsim.round(x, fpsim.Format("e8m12", 8, 12), "odd")
    assert np.array_equal(fpsim.round(wide_odd, "fp16"), fpsim.round(x, "fp16"))


@pytest.mark.parametrize(
    "fmt", [fpsim.FP16, fpsim.BF16, fpsim.FP8_E4M3, fpsim.FP4_E2M1, BELOW_FLOAT64_NORMALS[0]], ids=str
)
def test_stochastic_rounding_lands_on_a_neighbour_and_is_reproducible(fmt):
    x = format_range_float64(fmt, 50_000, seed=12)
    x = x[np.abs(x) < fmt.max]
    result = fpsim.round(x, fmt, "stochastic", rng=42)
    down, up = fpsim.round(x, fmt, "down"), fpsim.round(x, fmt, "up")
    assert ((result == down) | (result == up)).all()
    assert (result == down).any() and (result == up).any()
    assert same_bits(result, fpsim.round(x, fmt, "stochastic", rng=np.random.default_rng(42))).all()
    generator = np.random.default_rng(42)
    pieces = [fpsim.round(part, fmt, "stochastic", rng=generator) for part in (x[:12_345], x[12_345:])]
    assert same_bits(np.concatenate(pieces), result).all()  # one draw per element, in order, whatever the chunking


def test_stochastic_rounding_keeps_representable_values_and_signs():
    values = fpsim.decode(np.arange(0x7C00), "fp16")
    assert same_bits(fpsim.round(values, "fp16", "stochastic", rng=1), values).all()
    assert same_bits(fpsim.round(-values, "fp16", "stochastic", rng=1), -values).all()
    assert same_bits(fpsim.round([-1e-12, 1e-12], "fp16", "stochastic", rng=1), [-0.0, 0.0]).all()


@pytest.mark.parametrize(
    ("low", "gap", "fraction"),
    [
        (1.0, 2.0**-10, 0.3),  # normal fp16 binade
        (-1.0, -(2.0**-10), 0.1),  # negative: "up" means away from zero here
        (0.0, 2.0**-24, 0.25),  # below the least subnormal
        (1024.0, 1.0, 1 / 3),
    ],
)
def test_stochastic_rounding_is_unbiased(low, gap, fraction):
    n = 400_000
    x = low + fraction * gap
    result = fpsim.round(np.full(n, x), "fp16", "stochastic", rng=2024)
    away = np.count_nonzero(result == low + gap)
    assert np.count_nonzero(result == low) + away == n
    p = (x - low) / gap  # the exact probability of the farther neighbour, x being a float64
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(away - n * p) < 5 * sigma  # a fixed seed; 5 sigma leaves room only for a real bias
    assert abs(result.mean() - x) < 5 * sigma / n * abs(gap)  # E[round(x)] = x
