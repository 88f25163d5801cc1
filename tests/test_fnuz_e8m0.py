"""fnuz FP8 (e4m3fnuz, e5m2fnuz) and E8M0: exhaustive bit identity with ml_dtypes, and every rounding mode, overflow
policy and flag against an exact-rational reference written here from the formats' definitions (not from fpsim).

Points: every code's value, every midpoint between neighbouring values and the float just above and below each
midpoint, past max, below E8M0's least value, the specials.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import ml_dtypes
import numpy as np
import pytest
import torch

import fpsim
import fpsim.torch as ft
from fpsim import Format

MODES = ["nearest_even", "nearest_away", "toward_zero", "up", "down", "odd"]
POLICIES = ["nan", "saturate"]


@dataclass(frozen=True)
class Spec:
    """A format as its definition states it (ml_dtypes' float8 docs, OCP MX v1.0 §5.4.1), independent of fpsim."""

    name: str
    nexp: int
    nmant: int
    bias: int
    signed: bool
    has_zero: bool  # False: exponent field 0 is an ordinary binade (E8M0's 2^-127)
    nan_codes: frozenset[int]
    beyond_max: Fraction  # the next value of the unbounded exponent range above max (for IEEE 754 §7.4 overflow)

    def value(self, code: int) -> Fraction | None:
        """The exact value of a code, None for NaN."""
        if code in self.nan_codes:
            return None
        sign = -1 if self.signed and code >> (self.nexp + self.nmant) else 1
        field, mantissa = (code >> self.nmant) & (2**self.nexp - 1), code & (2**self.nmant - 1)
        if field == 0 and self.has_zero:  # zero and subnormals: 0.m · 2^(1 - bias)
            return sign * Fraction(mantissa, 2**self.nmant) * Fraction(2) ** (1 - self.bias)
        return sign * (1 + Fraction(mantissa, 2**self.nmant)) * Fraction(2) ** (field - self.bias)

    @property
    def codes(self) -> range:
        return range(2 ** (self.signed + self.nexp + self.nmant))


SPECS = {
    # fnuz: NaN is the code of -0 (0x80), one unsigned zero, no inf, bias 2^(nexp-1) (one above OCP's)
    "fp8_e4m3fnuz": Spec("fp8_e4m3fnuz", 4, 3, 8, True, True, frozenset({0x80}), Fraction(256)),
    "fp8_e5m2fnuz": Spec("fp8_e5m2fnuz", 5, 2, 16, True, True, frozenset({0x80}), Fraction(65536)),
    # E8M0: 2^(code - 127) for codes 0..254, 0xFF NaN; no sign, no zero, no mantissa
    "e8m0": Spec("e8m0", 8, 0, 127, False, False, frozenset({0xFF}), Fraction(2) ** 128),
    # two custom layouts through the same code paths: unsigned with zero (NVFP4's UE4M3 scale) and signed zeroless
    "ue4m3": Spec("ue4m3", 4, 3, 7, False, True, frozenset({0x7F}), Fraction(480)),  # max 448, as e4m3fn
    "e3m1_nozero": Spec("e3m1_nozero", 3, 1, 3, True, False, frozenset({0b01111, 0b11111}), Fraction(24)),  # max 16
}
CUSTOM = {
    "ue4m3": Format("ue4m3", 4, 3, has_inf=False, nan="all_ones", signed=False),
    "e3m1_nozero": Format("e3m1_nozero", 3, 1, has_inf=False, nan="all_ones", has_zero=False),
}
ML_DTYPES = {
    "fp8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "fp8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e8m0": ml_dtypes.float8_e8m0fnu,
}


def fmt_of(name: str) -> Format:
    return CUSTOM.get(name) or fpsim.get_format(name)


@cache
def float_values(name: str) -> list[float]:
    return [float(v) for v in value_table(name)[0]]  # exact: every value is a float64


@cache
def least_magnitude(name: str) -> Fraction:
    return min(abs(v) for v in value_table(name)[0])


@cache
def value_table(name: str) -> tuple[tuple[Fraction, ...], dict[Fraction, int]]:
    """The format's distinct finite values, ascending, and the code of each (+0's where -0 would also be one)."""
    spec = SPECS[name]
    code_of = {}
    for code in reversed(spec.codes):  # ascending codes win: +0 (code 0) over a -0 code
        value = spec.value(code)
        if value is not None:
            code_of[value] = code
    return tuple(sorted(code_of)), code_of


# ---- the reference: rounding of an exact rational, from the definitions ---------------------------------------
def _unbounded(x: Fraction, precision: int, mode: str) -> Fraction:
    """x rounded to `precision` significant bits with an unbounded exponent range (for overflow and tininess)."""
    k = x.numerator.bit_length() - x.denominator.bit_length()
    k += 1 if abs(x) >= Fraction(2) ** (k + 1) else 0
    k -= 1 if abs(x) < Fraction(2) ** k else 0  # now 2^k <= |x| < 2^(k+1)
    quantum = Fraction(2) ** (k - precision + 1)
    low = math.floor(x / quantum) * quantum
    return _pick(x, low, low + quantum, mode) if low != x else x


def _pick(x: Fraction, low: Fraction, high: Fraction, mode: str) -> Fraction:
    """Between neighbours low < x < high. Ties to even: to the neighbour that is an even multiple of high - low (for
    E8M0's 2^k and 2^(k+1) the tie 1.5·2^k goes to 2^(k+1) = 2·2^k, as at every binade boundary of IEEE 754);
    odd: the odd multiple; toward zero: the smaller magnitude."""
    gap = high - low
    even = low if (low / gap) % 2 == 0 else high
    below, above = x - low, high - x
    if mode in ("nearest_even", "nearest_away") and below != above:
        return low if below < above else high
    return {
        "nearest_even": even,
        "nearest_away": high if x > 0 else low,
        "toward_zero": low if x > 0 else high,
        "up": high,
        "down": low,
        "odd": high if even == low else low,
    }[mode]


@dataclass(frozen=True)
class Expected:
    value: Fraction | None  # None: NaN
    inexact: bool = False
    overflow: bool = False
    underflow: bool = False
    invalid: bool = False


def reference(x: float, name: str, mode: str, policy: str) -> Expected:
    """x (a float64, inf or NaN) rounded to the format by the definitions; the flags IEEE 754 §7 defines."""
    spec = SPECS[name]
    values, _ = value_table(name)
    if math.isnan(x):
        return Expected(None)
    if x == 0 and not spec.has_zero:  # zero has no exponent to store
        return Expected(None, invalid=True)
    if not spec.signed and x < 0:  # no sign: a negative result is invalid (IEEE 754 §5.8's analogue), -0 is +0
        rounds_to_zero = values[0] == 0 and x > -values[1] and _pick(Fraction(x), -values[1], Fraction(0), mode) == 0
        return Expected(Fraction(0), inexact=True, underflow=True) if rounds_to_zero else Expected(None, invalid=True)
    top = values[-1]
    if math.isinf(x) or abs(x) > top:  # comparisons of a float with these Fractions are exact
        return _overflow(x, spec, top, mode, policy)
    i = bisect_left(float_values(name), x)  # floats: exact comparisons too, and quicker
    if x == 0 or (i < len(values) and values[i] == x):
        return Expected(Fraction(x) if x else Fraction(0))
    exact = Fraction(x)
    smallest_normal = Fraction(2) ** ((1 if spec.has_zero else 0) - spec.bias)
    # IEEE 754: tininess after rounding (only below the smallest normal can the unbounded result stay below it)
    tiny = abs(exact) < smallest_normal and abs(_unbounded(exact, spec.nmant + 1, mode)) < smallest_normal
    least = least_magnitude(name)
    if abs(exact) < least:  # only in a format without zero: the one neighbour, or nothing toward zero
        toward_zero = mode == "toward_zero" or (mode == "down" and exact > 0) or (mode == "up" and exact < 0)
        if toward_zero and policy == "nan":
            return Expected(None, inexact=True, underflow=True)
        return Expected(least if exact > 0 else -least, inexact=True, underflow=tiny)
    return Expected(_pick(exact, values[i - 1], values[i], mode), inexact=True, underflow=tiny)


def _overflow(x: float, spec: Spec, top: Fraction, mode: str, policy: str) -> Expected:
    """IEEE 754 §7.4: overflow when the unbounded-exponent result exceeds max; nearest modes and the directed mode
    pointing away from zero give infinity, which the policy makes NaN or ±max; the others give ±max."""
    sign = 1 if x > 0 else -1
    if math.isinf(x):
        unbounded_beyond = True
    else:
        exact = Fraction(x)
        between = abs(exact) < spec.beyond_max
        unbounded = _pick(abs(exact), top, spec.beyond_max, _mirror(mode, sign)) if between else spec.beyond_max
        unbounded_beyond = unbounded > top
    if not unbounded_beyond:
        return Expected(sign * top, inexact=True)
    away = mode in ("nearest_even", "nearest_away") or (mode == "up" and sign > 0) or (mode == "down" and sign < 0)
    result = (None if policy == "nan" else sign * top) if away or math.isinf(x) else sign * top
    return Expected(result, inexact=True, overflow=True)  # inf too: it is not what the format stores


def _mirror(mode: str, sign: int) -> str:
    """The mode on |x|: up and down swap for negative x."""
    return {"up": "down", "down": "up"}.get(mode, mode) if sign < 0 else mode


_reference_cached = cache(reference)  # float32 points are float64 points too; the flags test reuses the codes test's


# ---- the points ---------------------------------------------------------------------------------------------------
def points(name: str, dtype: type) -> np.ndarray:
    """Every value, every midpoint and its neighbours in dtype, past max, below the least value, specials."""
    values, _ = value_table(name)
    finite = np.array([float(v) for v in values])
    midpoints = (finite[:-1] + finite[1:]) / 2  # exact: at most 5 significant bits
    extra = [finite[-1] + (float(SPECS[name].beyond_max) - finite[-1]) / 2, float(SPECS[name].beyond_max), 1e30]
    extra += [-v for v in extra] + [0.0, -0.0, math.inf, -math.inf, math.nan]
    least = float(min(abs(v) for v in values if v != 0))
    extra += [least / 2, least * 0.75, -least / 2, least / 4, 2.0**-149, -(2.0**-149)]
    with np.errstate(over="ignore"):  # E8M0's 2^128 is no float32: inf, on purpose
        base = np.concatenate([finite, midpoints, extra]).astype(dtype)
        return np.unique(np.concatenate([base, np.nextafter(base, dtype(np.inf)), np.nextafter(base, dtype(-np.inf))]))


def expected_codes(name: str, x: np.ndarray, mode: str, policy: str) -> tuple[np.ndarray, list[Expected]]:
    """The reference's codes, -1 for NaN (a signed format's NaN keeps the input's sign: either code will do)."""
    _, code_of = value_table(name)
    expected = [_reference_cached(float(v), name, mode, policy) for v in x]
    return np.array([-1 if e.value is None else code_of[e.value] for e in expected]), expected


def assert_codes(got: np.ndarray, want: np.ndarray, name: str, x: np.ndarray) -> None:
    nan_codes = np.array(sorted(SPECS[name].nan_codes))
    matches = np.where(want == -1, np.isin(got, nan_codes), got == want)
    assert matches.all(), x[~matches][:5]


ALL = list(SPECS)


# ---- the tests ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_every_code_decodes_to_its_definition(name):
    spec, fmt = SPECS[name], fmt_of(name)
    decoded = fpsim.decode(np.array(spec.codes), fmt)
    for code, got in zip(spec.codes, decoded):
        want = spec.value(code)
        if want is None:
            assert math.isnan(got), code
        else:
            assert Fraction(float(got)) == want and (want != 0 or not np.signbit(got)), code  # no -0 in these


@pytest.mark.parametrize("name", ML_DTYPES)
def test_every_code_decodes_bit_for_bit_as_ml_dtypes(name):
    codes = np.arange(256, dtype=np.uint8)
    ours, theirs = fpsim.decode(codes, name), codes.view(ML_DTYPES[name]).astype(np.float64)
    assert np.array_equal(ours.view(np.uint64)[~np.isnan(ours)], theirs.view(np.uint64)[~np.isnan(theirs)])
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))


@pytest.mark.parametrize("name", ML_DTYPES)
def test_every_code_and_midpoint_encodes_bit_for_bit_as_ml_dtypes(name):
    """float32 inputs (ml_dtypes rounds float64 by way of float32). One documented disagreement: ml_dtypes 0.6 sends
    the float32 subnormals in (2^-127, 1.5·2^-127) to 2^-126 in e8m0, though each lies nearer 2^-127; fpsim gives
    the nearest value there, which the exact reference confirms."""
    x = points(name, np.float32)
    ours = fpsim.encode(x, name)
    theirs = x.astype(ML_DTYPES[name]).view(np.uint8)
    wrong_in_ml_dtypes = (x > 2.0**-127) & (x < 1.5 * 2.0**-127) if name == "e8m0" else np.zeros(x.shape, bool)
    assert np.array_equal(ours[~wrong_in_ml_dtypes], theirs[~wrong_in_ml_dtypes])
    assert (theirs[wrong_in_ml_dtypes] == 1).all() and (ours[wrong_in_ml_dtypes] == 0).all()
    reference_codes, _ = expected_codes(name, x[wrong_in_ml_dtypes], "nearest_even", "nan")
    assert np.array_equal(ours[wrong_in_ml_dtypes], reference_codes)
    assert x.size > 3 * 250 and wrong_in_ml_dtypes.sum() == (2 if name == "e8m0" else 0)  # the points it covers


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALL)
def test_every_mode_and_policy_matches_the_exact_reference(name, mode, policy):
    fmt = fmt_of(name)
    for dtype in (np.float32, np.float64):
        x = points(name, dtype)
        want, _ = expected_codes(name, x, mode, policy)
        got = fpsim.encode(x, fmt, mode, overflow=policy)
        assert_codes(got, want, name, x)
        values = fpsim.round(x, fmt, mode, overflow=policy)
        assert np.array_equal(fpsim.encode(values, fmt), got)  # encode is round, then the code of the value


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALL)
def test_flags_of_each_element_match_the_reference(name, mode):
    """Points grouped by the flags the reference expects: in each group every count must be 0 or the group's size,
    which pins each element's flags exactly, in one call per group."""
    fmt, x = fmt_of(name), points(name, np.float64)
    _, expected = expected_codes(name, x, mode, "nan")
    groups: dict[tuple, list[float]] = {}
    for v, e in zip(x, expected):
        groups.setdefault((e.inexact, e.overflow, e.underflow, e.invalid, e.value is None), []).append(v)
    for want, members in groups.items():
        _, flags = fpsim.round(np.array(members), fmt, mode, overflow="nan", flags=True)
        got = (flags.inexact, flags.overflow, flags.underflow, flags.invalid, flags.nan)
        assert got == tuple(len(members) * w for w in want), (want, members[:5], flags)


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values with equal signs, or both NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    equal = ((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))
    return bool(equal.all())


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALL)
def test_torch_codec_is_bit_identical(name, mode, policy):
    fmt, x = fmt_of(name), points(name, np.float32)
    tensor = torch.from_numpy(x)
    values, flags = fpsim.round(x, fmt, mode, overflow=policy, flags=True)
    got, got_flags = ft.round(tensor, fmt, mode, overflow=policy, flags=True)
    assert same_values(got.numpy(), values) and got_flags == flags
    assert np.array_equal(
        ft.encode(tensor, fmt, mode, overflow=policy).numpy(), fpsim.encode(x, fmt, mode, overflow=policy)
    )
    codes = torch.arange(2**fmt.bits, dtype=torch.uint8)
    assert same_values(ft.decode(codes, fmt).numpy(), fpsim.decode(codes.numpy(), fmt))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", ALL)
def test_stochastic_rounding_lands_on_a_neighbour_in_both_backends(name, policy):
    fmt, x = fmt_of(name), points(name, np.float64)
    down, up = (fpsim.round(x, fmt, mode, overflow=policy) for mode in ("down", "up"))
    ours = fpsim.round(x, fmt, "stochastic", overflow=policy, rng=0)
    theirs = ft.round(torch.from_numpy(x), fmt, "stochastic", overflow=policy, generator=0).numpy()
    for got in (ours, theirs):
        on_a_neighbour = (got == down) | (got == up) | (np.isnan(got) & (np.isnan(down) | np.isnan(up)))
        assert on_a_neighbour.all(), x[~on_a_neighbour][:5]
    tiny = (x > 0) & (x < fmt.least)  # below E8M0's 2^-127 the only neighbour is 2^-127
    assert (ours[tiny] == fmt.least).all() and (theirs[tiny] == fmt.least).all()


# ---- the documented behaviours, one by one ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fp8_e4m3fnuz", "fp8_e5m2fnuz"])
def test_fnuz_has_one_zero_and_one_nan(name):
    assert fpsim.encode([0.0, -0.0, -1e-30], name).tolist() == [0, 0, 0]  # -0 and tiny negatives: the unsigned zero
    assert not np.signbit(fpsim.round([-0.0, -1e-30], name)).any()
    assert fpsim.encode([math.nan, -math.nan, math.inf, -math.inf], name).tolist() == [0x80] * 4
    assert fpsim.encode([math.inf, -math.inf], name, overflow="saturate").tolist() == [0x7F, 0xFF]
    assert np.isnan(fpsim.decode(0x80, name)) and fpsim.classify(-1e-30, name) == "zero"
    least = fpsim.get_format(name).smallest_subnormal
    assert fpsim.next_up(-least, name) == 0 and not np.signbit(fpsim.next_up(-least, name))
    assert fpsim.next_down(least, name) == 0 and not np.signbit(fpsim.next_down(least, name))
    assert np.isnan(fpsim.next_up(fpsim.get_format(name).max, name))  # the code after max (0x7F) is 0x80, NaN


def test_e8m0_holds_powers_of_two_and_ties_go_up():
    k = np.arange(-127, 127)
    assert np.array_equal(fpsim.round(1.5 * 2.0**k, "e8m0"), 2.0 ** (k + 1))  # ml_dtypes agrees
    assert np.array_equal(fpsim.round(1.5 * 2.0**k, "e8m0", "odd"), 2.0**k)
    assert fpsim.round(1.4999, "e8m0") == 1 and fpsim.round(2.9, "e8m0") == 2 and fpsim.round(3, "e8m0") == 4
    assert fpsim.encode(1.0, "e8m0") == 127 and fpsim.decode(254, "e8m0") == 2.0**127


@pytest.mark.parametrize("mode", [*MODES, "stochastic"])
def test_e8m0_refuses_zero_and_negatives_as_invalid_in_every_mode(mode):
    x = [0.0, -0.0, -1.0, -1e-300, -math.inf]
    values, flags = fpsim.round(x, "e8m0", mode, flags=True, rng=0)
    assert np.isnan(values).all() and fpsim.encode(x, "e8m0", mode, rng=0).tolist() == [0xFF] * 5
    assert (flags.invalid, flags.nan, flags.inexact, flags.overflow, flags.underflow) == (5, 5, 0, 0, 0)


def test_e8m0_below_its_least_value_and_past_max():
    tiny = [1e-300, 2.0**-128]
    assert fpsim.round(tiny, "e8m0").tolist() == [2.0**-127] * 2  # the only neighbour (ml_dtypes too)
    assert fpsim.round(tiny, "e8m0", "up").tolist() == [2.0**-127] * 2
    assert np.isnan(fpsim.round(tiny, "e8m0", "down")).all()  # nothing at or below: the policy's NaN
    assert fpsim.round(tiny, "e8m0", "toward_zero", overflow="saturate").tolist() == [2.0**-127] * 2
    _, flags = fpsim.round(tiny, "e8m0", "down", flags=True)
    assert (flags.underflow, flags.inexact, flags.nan, flags.invalid) == (2, 2, 2, 0)
    assert np.isnan(fpsim.round([1.5 * 2.0**127, math.inf], "e8m0")).all()
    assert fpsim.round([1.5 * 2.0**127, math.inf], "e8m0", overflow="saturate").tolist() == [2.0**127] * 2
    assert fpsim.round(1.4 * 2.0**127, "e8m0") == 2.0**127
    with pytest.raises(ValueError, match="no infinity"):
        fpsim.round(1.0, "e8m0", overflow="inf")


def test_e8m0_neighbours_classes_and_ulp():
    assert fpsim.next_up([-5.0, 0.0, 2.0**-200], "e8m0").tolist() == [2.0**-127] * 3
    assert np.isnan(fpsim.next_down([2.0**-127, 1e-300, -1.0], "e8m0")).all()
    assert fpsim.next_down(1.0, "e8m0") == 0.5 and np.isnan(fpsim.next_up(2.0**127, "e8m0"))
    assert fpsim.classify([2.0**-127, 1.0, -1.0], "e8m0").tolist() == ["normal", "normal", "nan"]
    assert fpsim.get_format("e8m0").ulp([1.0, 3.0, 2.0**-127]).tolist() == [1.0, 2.0, 2.0**-127]


def test_explain_shows_no_sign_field_in_e8m0():
    explanation = fpsim.explain(0.1, "e8m0")
    assert explanation.bit_fields == {"exponent": "01111100"} and explanation.value == 0.125
    assert explanation.rows()["exponent"] == "-3 (biased 124)"
    least = fpsim.explain(1e-300, "e8m0")
    assert least.exponent == -127 and least.below is None and least.above == 2.0**-127
    assert fpsim.explain(0.1, "fp8_e4m3fnuz").rows()["bits"] == "0 0100 101"  # biased 4 = -4 + 8


def test_custom_exmy_formats_are_unaffected():
    assert fpsim.get_format("e5m2") is fpsim.get_format("fp8_e5m2")  # the OCP/IEEE one, bias 15
    custom = fpsim.get_format("e4m0")  # a signed finite-only custom format, unlike e8m0
    assert (custom.signed, custom.has_zero, custom.nan) == (True, True, "none")
    assert fpsim.encode(-0.0, "e5m2") == 0x80  # IEEE formats keep -0
