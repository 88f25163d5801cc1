"""Codec: every small-format code and every midpoint against the libraries, wide random samples against
numpy, ml_dtypes, torch and MPFR, and bad input."""

import ml_dtypes
import numpy as np
import pytest
import torch
from below_float64 import BELOW_FLOAT64_NORMALS, around_float64_subnormals, exact_decode
from oracle import (
    ML_DTYPES_CASTS,
    TORCH_CASTS,
    format_range_float64,
    fraction_round,
    library_round,
    mpfr_round,
    same_bits,
    wide_float32,
)

import fpsim
from fpsim.formats import PRESETS

SMALL_REFERENCES = {"fp16": np.float16, **ML_DTYPES_CASTS}  # every format of <= 16 bits, with its reference dtype
LIBRARY_PAIRS = [("fp16", "numpy")] + [(n, "ml_dtypes") for n in ML_DTYPES_CASTS] + [(n, "torch") for n in TORCH_CASTS]
LIBRARY_POLICY = {"numpy": lambda name: "inf", "ml_dtypes": lambda name: None, "torch": lambda n: TORCH_CASTS[n][1]}
NAN_FREE = {"on_nan": "ml_dtypes"}  # ml_dtypes' mapping of NaN into fp6/fp4


def reference_values(name):
    """Every code of a small format decoded by its reference library."""
    fmt = PRESETS[name]
    storage = np.uint16 if fmt.bits == 16 else np.uint8
    with np.errstate(invalid="ignore"):  # ml_dtypes warns when its NaN codes widen to float64 NaN
        return np.arange(2**fmt.bits, dtype=storage).view(SMALL_REFERENCES[name]).astype(np.float64)


@pytest.mark.parametrize("name", SMALL_REFERENCES)
def test_every_code_decodes_like_the_reference(name):
    codes = np.arange(2 ** PRESETS[name].bits)
    assert same_bits(fpsim.decode(codes, name), reference_values(name)).all()


@pytest.mark.parametrize("name", SMALL_REFERENCES)
def test_every_code_reencodes_to_itself_and_nans_to_the_canonical_nan(name):
    fmt = PRESETS[name]
    codes = np.arange(2**fmt.bits, dtype=fmt.storage_dtype)
    values = fpsim.decode(codes, fmt)
    again = fpsim.encode(values, fmt)
    nan = np.isnan(values)
    assert np.array_equal(again[~nan], codes[~nan])
    if nan.any():
        sign = (codes[nan] >> (fmt.bits - 1)).astype(fmt.storage_dtype) << (fmt.bits - 1)
        assert np.array_equal(again[nan], fpsim.encode(np.nan, fmt) | sign)


def test_tf32_codes_are_float32_with_13_low_bits_dropped():
    codes = np.arange(2**19, dtype=np.uint32)
    with np.errstate(invalid="ignore"):  # NaN payloads widen with a warning
        reference = (codes << 13).view(np.float32).astype(np.float64)
    assert same_bits(fpsim.decode(codes, "tf32"), reference).all()
    finite = np.isfinite(reference)
    assert np.array_equal(fpsim.encode(reference[finite], "tf32"), codes[finite])


def midpoints_and_neighbours(name):
    """Each midpoint between adjacent finite values (and past max), and one float32 ulp either side."""
    fmt = PRESETS[name]
    positive = fpsim.decode(np.arange(fmt.max_code + 1), fmt)
    past_max = fmt.max + fmt.ulp(fmt.max)
    mids = (np.append(positive[1:], past_max) + positive) / 2
    mids32 = mids.astype(np.float32)
    assert np.array_equal(mids32.astype(np.float64), mids)  # every midpoint is exactly a float32
    around = [mids32, np.nextafter(mids32, np.float32(np.inf)), np.nextafter(mids32, np.float32(0))]
    points = np.concatenate(around)
    return np.concatenate([points, -points])


@pytest.mark.parametrize(("name", "library"), LIBRARY_PAIRS)
def test_every_midpoint_rounds_like_the_library(name, library):
    x = midpoints_and_neighbours(name)
    ours = fpsim.round(x, name, overflow=LIBRARY_POLICY[library](name))
    assert same_bits(ours, library_round(x, name, library)).all()


@pytest.mark.parametrize(("name", "library"), LIBRARY_PAIRS)
def test_a_million_wide_range_float32_values_match_the_library_bit_for_bit(name, library):
    x = np.concatenate([wide_float32(10**6, seed=7), np.float32([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0])])
    fmt = PRESETS[name]
    expected = library_round(x, name, library)
    codes = fpsim.encode(x, fmt, overflow=LIBRARY_POLICY[library](name), **NAN_FREE)
    if library != "torch":  # torch's NaN bits differ from ours (0x7f for e5m2); compare its values below
        storage = np.uint16 if fmt.bits == 16 else np.uint8
        with np.errstate(over="ignore"):
            reference_codes = x.astype(SMALL_REFERENCES[name]).view(storage)
        assert np.array_equal(codes, reference_codes)
    assert same_bits(fpsim.decode(codes, fmt), expected).all()


@pytest.mark.parametrize("name", ["bf16", "fp8_e5m2", "fp8_e4m3", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
def test_whole_range_float32_matches_ml_dtypes(name):
    fmt = PRESETS[name]
    with np.errstate(over="ignore"):  # bf16's range reaches float32's: past max, the float32 input is inf
        x = format_range_float64(fmt, 10**5, seed=3).astype(np.float32)
    assert same_bits(fpsim.round(x, fmt), library_round(x, name, "ml_dtypes")).all()


def test_float64_to_float32_matches_numpys_correctly_rounded_cast():
    x = format_range_float64(fpsim.FP32, 10**6, seed=5)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float32).astype(np.float64)
    assert same_bits(fpsim.round(x, "fp32"), expected).all()


@pytest.mark.parametrize("name", ["fp16", "bf16", "tf32", "fp32", "fp8_e5m2", "fp8_e4m3", "fp6_e3m2", "fp4_e2m1"])
def test_float64_input_is_rounded_once_like_mpfr(name):
    fmt = PRESETS[name]
    x = format_range_float64(fmt, 20_000, seed=11)
    assert same_bits(fpsim.round(x, fmt), mpfr_round(x, fmt, "nearest_even")).all()


@pytest.mark.parametrize("name", ["bf16", "fp8_e4m3"])
def test_no_double_rounding_where_ml_dtypes_and_torch_double_round(name):
    # ml_dtypes and torch go float64 -> float32 -> target; 1 + 2^-8 + 2^-30 then lands on 1.0 in bf16,
    # while the correctly rounded bf16 is 1 + 2^-7 (the float64 input lies above the midpoint 1 + 2^-8).
    fmt = PRESETS[name]
    midpoint = 1 + fmt.eps / 2
    x = np.array([midpoint + 2.0**-30, -(midpoint + 2.0**-30)])
    assert fpsim.round(x, fmt).tolist() == [1 + fmt.eps, -(1 + fmt.eps)]
    assert x.astype(ML_DTYPES_CASTS[name]).astype(np.float64).tolist() == [1.0, -1.0]  # the reference is wrong here
    assert [fraction_round(v, fmt, "nearest_even") for v in x] == [1 + fmt.eps, -(1 + fmt.eps)]


def test_fp64_and_wide_custom_formats_use_the_exact_wide_path():
    x = format_range_float64(fpsim.FP64, 10**4, seed=2)
    assert same_bits(fpsim.round(x, "fp64"), x).all()
    wide = fpsim.Format("e11m20", 11, 20)
    sample = np.concatenate([x, [2.0**-1074, 3 * 2.0**-1060, 1.7976931348623157e308]])
    assert same_bits(fpsim.round(sample, wide), [fraction_round(v, wide, "nearest_even") for v in sample]).all()


SMALL_BELOW_FLOAT64 = [f for f in BELOW_FLOAT64_NORMALS if f.bits <= 16]
WALKABLE = [f for f in PRESETS.values() if f.bits <= 16] + [f for f in SMALL_BELOW_FLOAT64 if f.subnormals]


def exactly_decoded(codes: np.ndarray, fmt: fpsim.Format) -> np.ndarray:
    return np.array([exact_decode(int(c), fmt) for c in codes])


def every_or_random_codes(fmt: fpsim.Format, n: int = 5000) -> np.ndarray:
    """Every code of a format of at most 16 bits; else n random codes of either sign, and the 64 least."""
    if fmt.bits <= 16:
        return np.arange(2**fmt.bits, dtype=fmt.storage_dtype)
    rng = np.random.default_rng(fmt.bits)
    magnitudes = np.concatenate([rng.integers(0, fmt.max_code + 1, n, dtype=np.uint64), np.arange(64, dtype=np.uint64)])
    signs = rng.integers(0, 2, n + 64, dtype=np.uint64) << np.uint64(fmt.bits - 1)
    return (magnitudes | signs).astype(fmt.storage_dtype)


@pytest.mark.parametrize("fmt", BELOW_FLOAT64_NORMALS, ids=str)
def test_codes_of_normals_below_float64s_decode_exactly_and_reencode(fmt):
    codes = every_or_random_codes(fmt)
    values = fpsim.decode(codes, fmt)
    assert same_bits(values, exactly_decoded(codes, fmt)).all()
    exponent = (codes >> fmt.nmant) & (2**fmt.nexp - 1)
    read_as_zero = (exponent == 0) & (not fmt.subnormals)  # flush-to-zero: a subnormal code decodes as ±0
    sign = codes & (1 << (fmt.bits - 1))
    kept = ~np.isnan(values)
    assert np.array_equal(fpsim.encode(values[kept], fmt), np.where(read_as_zero, sign, codes)[kept])


@pytest.mark.parametrize("mode", ["nearest_even", "toward_zero", "odd"])
@pytest.mark.parametrize("fmt", BELOW_FLOAT64_NORMALS, ids=str)
def test_encoding_float64_subnormals_gives_the_code_of_the_exact_rounding(fmt, mode):
    x = around_float64_subnormals(fmt, 300, seed=fmt.bits)
    x = x[~np.isnan(x)] if fmt.nan == "none" else x
    codes = fpsim.encode(x, fmt, mode)
    decoded = exactly_decoded(codes.astype(np.uint64), fmt)
    expected = [fraction_round(v, fmt, mode) for v in x]
    if fmt.subnormals:  # flush-to-zero formats: tininess after rounding, tested in test_rounding_modes
        assert same_bits(decoded, expected).all()
    assert same_bits(decoded, fpsim.round(x, fmt, mode)).all()


@pytest.mark.parametrize("fmt", SMALL_BELOW_FLOAT64, ids=str)
def test_next_up_and_down_of_float64s_between_codes_below_float64_normals(fmt):
    finite = exactly_decoded(np.arange(fmt.max_code + 1), fmt)
    if not fmt.subnormals:
        finite = finite[(finite == 0) | (finite >= fmt.smallest_normal)]
    ordered = np.unique(np.concatenate([-finite, finite]))  # -max ... 0 ... max, each value once
    x = around_float64_subnormals(fmt, 2000, seed=7)
    x = x[np.isfinite(x) & (np.abs(x) < fmt.max)]
    above = ordered[np.searchsorted(ordered, x, side="right")]  # the least format value greater than x
    below = ordered[np.searchsorted(ordered, x, side="left") - 1]  # the greatest one less than x
    assert np.array_equal(fpsim.next_up(x, fmt), above) and np.array_equal(fpsim.next_down(x, fmt), below)


def test_overflow_policies_reproduce_each_library_for_e4m3():
    x = np.float32([480.0, -480.0, np.inf, -np.inf, 464.0, 1e9])
    as_ml_dtypes = x.astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    as_torch = torch.from_numpy(x).to(torch.float8_e4m3fn).double().numpy()
    assert same_bits(fpsim.round(x, "e4m3"), as_ml_dtypes).all()  # the default: NaN, like ml_dtypes
    assert same_bits(fpsim.round(x, "e4m3", overflow="saturate"), as_torch).all()
    assert fpsim.round(1e9, "fp16", overflow="saturate") == 65504.0
    assert np.isnan(fpsim.round(1e9, "fp16", overflow="nan"))
    assert fpsim.round(np.inf, "fp16", overflow="saturate") == np.inf  # infinities stay where the format has them


def test_nan_keeps_its_sign_and_formats_without_nan_refuse_it():
    assert fpsim.encode([np.nan, -np.nan], "fp16").tolist() == [0x7E00, 0xFE00]
    assert fpsim.encode([np.nan, -np.nan], "e4m3").tolist() == [0x7F, 0xFF]
    with pytest.raises(ValueError, match=r"fp4_e2m1 has no NaN encoding.*on_nan"):
        fpsim.round([1.0, np.nan], "fp4")
    assert fpsim.encode([np.nan, -np.nan], "fp4", on_nan="zero").tolist() == [0x0, 0x8]
    assert fpsim.encode([np.nan, -np.nan], "fp4", on_nan="ml_dtypes").tolist() == [0x8, 0x0]


def test_encode_returns_the_narrowest_unsigned_dtype():
    dtypes = {name: fpsim.encode([1.0], fmt).dtype for name, fmt in PRESETS.items()}
    assert dtypes["fp64"] == np.uint64 and dtypes["fp32"] == dtypes["tf32"] == np.uint32
    assert dtypes["fp16"] == dtypes["bf16"] == np.uint16 and dtypes["fp4_e2m1"] == np.uint8


def test_codes_of_any_width_from_python_lists():
    assert fpsim.decode([0xBFF0000000000000, 0x3FF0000000000000], "fp64").tolist() == [-1.0, 1.0]
    assert fpsim.decode([], "fp16").shape == (0,) and fpsim.decode([[0x3C00], [0x4000]], "fp16").shape == (2, 1)
    with pytest.raises(TypeError, match="rectangular"):
        fpsim.decode([[1], [2, 3]], "fp16")


def test_fields_split_sign_exponent_and_mantissa():
    sign, exponent, mantissa = fpsim.fields([0x3C00, 0xFBFF, 0x0001], "fp16")
    assert sign.tolist() == [0, 1, 0] and exponent.tolist() == [15, 30, 0] and mantissa.tolist() == [0, 1023, 1]
    assert fpsim.fields(0x7F, "e4m3") == (0, 15, 7)


@pytest.mark.parametrize("fmt", WALKABLE, ids=str)
def test_classify_every_code(fmt):
    values = fpsim.decode(np.arange(2**fmt.bits), fmt)
    magnitude = np.abs(values)
    expected = np.where(
        np.isnan(values),
        "nan",
        np.where(
            np.isinf(values),
            "inf",
            np.where(magnitude == 0, "zero", np.where(magnitude < fmt.smallest_normal, "subnormal", "normal")),
        ),
    )
    assert np.array_equal(fpsim.classify(values, fmt), expected)
    assert fpsim.classify(1e-6, "fp16") == "subnormal" and fpsim.classify(1e6, "fp16") == "inf"


@pytest.mark.parametrize("fmt", WALKABLE, ids=str)
def test_next_up_and_down_walk_every_code(fmt):
    every = fpsim.decode(np.arange(2**fmt.bits), fmt)
    ordered = np.unique(every[np.isfinite(every)])  # ascending, one zero (-0 == +0): -max ... 0 ... max
    assert np.array_equal(fpsim.next_up(ordered[:-1], fmt), ordered[1:])
    assert fpsim.next_up(-0.0, fmt) == fpsim.next_up(0.0, fmt) == ordered[ordered > 0][0]
    assert np.array_equal(fpsim.next_down(ordered[1:], fmt), ordered[:-1])


# What lies past ±max, from each format's specification: IEEE formats have ±inf (nextUp(max) = inf, IEEE 754
# §5.3.1); OCP e4m3fn has no inf and its code after 448, S.1111.111, is NaN; MX fp6/fp4 have no code after max.
BEYOND_MAX = {"fp16": np.inf, "bf16": np.inf, "fp8_e5m2": np.inf, "fp32": np.inf, "fp8_e4m3": np.nan}


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8_e5m2", "fp32", "fp8_e4m3", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
def test_next_up_and_down_past_the_largest_value(name):
    fmt = fpsim.get_format(name)
    top = [fmt.max, 2 * fmt.max]  # max itself, and a value beyond it
    if name in BEYOND_MAX:
        assert same_bits(fpsim.next_up(top, fmt), [BEYOND_MAX[name]] * 2).all()
        assert same_bits(fpsim.next_down(np.negative(top), fmt), [-BEYOND_MAX[name]] * 2).all()
        return
    for x in top:  # fp6 and fp4 have neither infinity nor NaN: there is no answer to give
        with pytest.raises(ValueError, match=rf"x holds {x!r}, and no value of {name} lies above it"):
            fpsim.next_up(x, fmt)
        with pytest.raises(ValueError, match=rf"x holds -{x!r}, and no value of {name} lies below it"):
            fpsim.next_down([0.5, -x], fmt)
    assert fpsim.next_down(fmt.max, fmt) < fmt.max and fpsim.next_up(-fmt.max, fmt) > -fmt.max  # the other way works
    with pytest.raises(ValueError, match=f"x contains NaN, but {name} has no NaN encoding"):
        fpsim.next_up(np.nan, fmt)


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
@pytest.mark.parametrize("query", [fpsim.next_up, fpsim.next_down])
@pytest.mark.parametrize("x", [np.inf, -np.inf])
def test_an_infinity_has_no_neighbour_in_a_format_without_infinity(name, query, x):
    # refused both ways, as arithmetic refuses infinite operands there: next_down(inf, fp4) was 6, next_up(inf) raised
    with pytest.raises(ValueError, match=rf"x holds {x!r}, but {name} has no infinity"):
        query([1.0, x], name)


def test_next_up_of_values_between_codes_and_flush_to_zero():
    assert fpsim.next_up(0.1, "fp16") == 0.10003662109375 and fpsim.next_down(0.1, "fp16") == 0.0999755859375
    assert fpsim.next_up(-np.inf, "fp16") == -65504.0 and np.isnan(fpsim.next_up(np.nan, "fp16"))
    ftz = fpsim.Format("fp16_ftz", 5, 10, subnormals=False)
    assert fpsim.next_up(0.0, ftz) == 2.0**-14 and fpsim.next_down(2.0**-14, ftz) == 0.0
    x = [3e-5, -3e-5, -(2.0**-14), 2.0**-14]  # the flush-to-zero values near 0 are -2^-14, ±0, 2^-14
    assert same_bits(fpsim.next_up(x, ftz), [2.0**-14, -0.0, -0.0, 2.0**-14 + 2.0**-24]).all()
    assert same_bits(fpsim.next_down(x, ftz), [0.0, -(2.0**-14), -(2.0**-14) - 2.0**-24, 0.0]).all()


def test_flush_to_zero_format_flushes_results_and_reads_subnormal_codes_as_zero():
    ftz = fpsim.Format("fp16_ftz", 5, 10, subnormals=False)
    assert same_bits(fpsim.round([3e-5, -3e-5, 2.0**-14, 1e-7], ftz), [0.0, -0.0, 2.0**-14, 0.0]).all()
    # tiny after rounding (11 bits, unbounded exponent, stay below 2^-14) is flushed, like the underflow flag says
    result, flags = fpsim.round([2.0**-14 - 2.0**-25, 2.0**-14 - 2.0**-26], ftz, flags=True)
    assert result.tolist() == [0.0, 2.0**-14] and (flags.underflow, flags.flushed_to_zero) == (1, 1)
    assert ftz.ulp(0.0) == ftz.ulp(1e-6) == 2.0**-14 == ftz.smallest_subnormal
    assert same_bits(fpsim.decode([0x0001, 0x83FF, 0x0400], ftz), [0.0, -0.0, 2.0**-14]).all()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: fpsim.round(1.0, "fp16", "nearest"), ValueError, "rounding must be one of"),
        (lambda: fpsim.round(1.0, "fp16", overflow="clamp"), ValueError, "overflow must be one of"),
        (lambda: fpsim.round(1.0, "e4m3", overflow="inf"), ValueError, "has no infinity"),
        (lambda: fpsim.round(1.0, "fp4", overflow="nan"), ValueError, "has no NaN"),
        (lambda: fpsim.round(1.0, "fp16", on_nan="drop"), ValueError, "on_nan must be one of"),
        (lambda: fpsim.round(1.0, "fp16", "stochastic", rng="seed"), TypeError, "rng must be"),
        (lambda: fpsim.round("1.0", "fp16"), TypeError, "x must be a number"),
        (lambda: fpsim.decode(0x10000, "fp16"), ValueError, r"bits must be in \[0, 2\^16\)"),
        (lambda: fpsim.decode([-1], "fp16"), ValueError, r"bits must be in \[0, 2\^16\)"),
        (lambda: fpsim.decode(1.0, "fp16"), TypeError, "bits must be non-negative integers"),
        (lambda: fpsim.decode([0.5], "fp16"), TypeError, "bits must be non-negative integers"),
        (lambda: fpsim.fields([256], "e4m3"), ValueError, r"bits must be in \[0, 2\^8\)"),
        (lambda: fpsim.round(1.0, "fp12"), ValueError, "unknown format 'fp12'"),
        (lambda: fpsim.round(1.0, "fp16", ["up"]), ValueError, "rounding must be one of"),
        (lambda: fpsim.round(1.0, "fp16", overflow=["inf"]), ValueError, "overflow must be one of"),
        (lambda: fpsim.round(1.0, "fp16", "stochastic", rng=-1), ValueError, "rng must be a non-negative seed"),
    ],
)
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()
