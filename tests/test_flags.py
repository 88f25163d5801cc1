"""IEEE exception counts: hand-derived cases, an independent count through numpy's float16, MPFR's flags,
and accumulation in track_flags blocks."""

import gmpy2
import numpy as np
import pytest
from oracle import format_range_float64, mpfr_context, wide_float32

import fpsim
from fpsim.flags import FLAG_DESCRIPTIONS

# Each input's flags, derived by hand from the definitions (tininess is detected after rounding).
FP16_CASES = [
    (1.0, set()),
    (65504.0, set()),
    (65520.0, {"overflow", "inexact"}),  # the midpoint past max ties away to "65536": overflow
    (1e6, {"overflow", "inexact"}),
    (np.inf, set()),  # an infinity is exact in fp16
    (2.0**-24, {"subnormal"}),  # exact, so no underflow
    (2.0**-25, {"inexact", "underflow", "flushed_to_zero"}),  # tie to even: 0
    (1e-10, {"inexact", "underflow", "flushed_to_zero"}),
    (3e-5, {"inexact", "underflow", "subnormal"}),
    (0.1, {"inexact"}),
    (np.nan, {"nan"}),
    (-0.0, set()),
    (2.0**-14 - 2.0**-26, {"inexact"}),  # rounds to 2^-14 even with an unbounded exponent: not tiny
    (2.0**-14 - 2.0**-25, {"inexact", "underflow"}),  # 11-bit exact below 2^-14, so tiny; stored as 2^-14
]


def expected_counts(cases):
    counts = dict.fromkeys(FLAG_DESCRIPTIONS, 0)
    counts["total"] = len(cases)
    for _, raised in cases:
        for name in raised:
            counts[name] += 1
    return counts


def test_hand_derived_fp16_flags_case_by_case():
    for value, raised in FP16_CASES:
        _, flags = fpsim.round(value, "fp16", flags=True)
        assert {name for name, count in flags.as_dict().items() if count and name != "total"} == raised, value


def test_hand_derived_fp16_flags_as_one_array():
    _, flags = fpsim.round([v for v, _ in FP16_CASES], "fp16", flags=True)
    assert flags.as_dict() == expected_counts(FP16_CASES)


def test_flags_agree_with_an_independent_count_through_numpy_float16():
    x = wide_float32(200_000, seed=21, low=-28, high=17).astype(np.float64)
    x[::1000] = np.nan
    _, flags = fpsim.round(x, "fp16", flags=True)
    with np.errstate(over="ignore", invalid="ignore"):
        reference = x.astype(np.float16).astype(np.float64)
        # 11-bit rounding with an unbounded exponent, for tininess after rounding: scale into fp16's normal range
        unbounded = (x * 2.0**20).astype(np.float16).astype(np.float64) / 2.0**20
    magnitude = np.abs(reference)
    inexact = (reference != x) & ~np.isnan(x)
    tiny = (magnitude < 2.0**-14) | ((magnitude == 2.0**-14) & (np.abs(unbounded) < 2.0**-14))
    assert flags.as_dict() == {
        "total": x.size,
        "inexact": np.count_nonzero(inexact),
        "overflow": np.count_nonzero(np.isinf(reference) & np.isfinite(x)),
        "underflow": np.count_nonzero(tiny & inexact),
        "flushed_to_zero": np.count_nonzero((reference == 0) & (x != 0) & ~np.isnan(x)),
        "subnormal": np.count_nonzero((magnitude > 0) & (magnitude < 2.0**-14)),
        "nan": np.count_nonzero(np.isnan(reference)),
        "invalid": 0,
        "divide_by_zero": 0,
    }


@pytest.mark.parametrize("name", ["bf16", "fp8_e5m2", "tf32"])
def test_inexact_and_overflow_counts_agree_with_mpfr(name):
    fmt = fpsim.get_format(name)
    x = format_range_float64(fmt, 5_000, seed=31)
    inexact = overflow = 0
    for value in x:
        context = mpfr_context(fmt, "nearest_even")
        context.emax = fmt.emax + 1  # MPFR's own range this time, so that its overflow flag is the IEEE one
        context.plus(gmpy2.mpfr(float(value), 53))
        inexact += context.inexact
        overflow += context.overflow
    _, flags = fpsim.round(x, fmt, flags=True)
    assert (flags.inexact, flags.overflow) == (inexact, overflow)


def test_formats_without_infinity_count_overflow_and_nan():
    _, flags = fpsim.round([480.0, 1e9, np.inf, 448.0], "e4m3", flags=True)
    assert (flags.overflow, flags.nan, flags.inexact) == (3, 3, 3)
    _, flags = fpsim.round([480.0, np.inf, 6.0], "fp4", flags=True)
    assert (flags.overflow, flags.nan, flags.inexact) == (2, 0, 2)


def test_track_flags_accumulates_over_calls_and_nested_blocks():
    with fpsim.track_flags() as outer:
        fpsim.round([1e6, 1.0], "fp16")
        with fpsim.track_flags() as inner:
            codes = fpsim.encode([1e-10, 0.1, 2.0], "fp16")
            fpsim.decode(codes, "fp16")  # decoding is exact and counts nothing
        _, per_call = fpsim.round([65520.0], "fp16", flags=True)
    assert (inner.total, inner.inexact, inner.underflow, inner.flushed_to_zero) == (3, 2, 1, 1)
    assert (outer.total, outer.overflow, outer.inexact) == (6, 2, 4)
    assert per_call.as_dict() == {**expected_counts([]), "total": 1, "overflow": 1, "inexact": 1}
    fpsim.round(1e6, "fp16")
    assert outer.total == 6  # closed blocks stop counting


def test_queries_do_not_count_as_roundings():
    with fpsim.track_flags() as flags:
        fpsim.next_up(0.1, "fp16"), fpsim.next_down(0.1, "fp16"), fpsim.classify(0.1, "fp16")
        fpsim.explain(0.1, ["fp16", "bf16"])
    assert flags.total == 0


def test_flags_objects_add_and_describe_themselves():
    a = fpsim.Flags(total=4, inexact=2, overflow=1)
    b = fpsim.Flags(total=6, inexact=1, nan=2)
    total = a + b
    assert total.as_dict() == {**expected_counts([]), "total": 10, "inexact": 3, "overflow": 1, "nan": 2}
    assert a.total == 4 and total.fraction("inexact") == 0.3 and fpsim.Flags().fraction("nan") == 0.0
    assert str(total) == "10 rounded: 3 inexact, 1 overflow, 2 nan"
    assert str(fpsim.Flags(total=2)) == "2 rounded: all exact"
    with pytest.raises(ValueError, match="name must be one of"):
        total.fraction("overflows")
