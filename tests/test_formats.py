"""Formats: exact constants, identities between them, the finfo of numpy, ml_dtypes and torch, and name lookup."""

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from oracle import ML_DTYPES_CASTS

import fpsim
from fpsim.formats import ALIASES, PRESETS

# (max, smallest normal, smallest subnormal, eps) written from the specs (IEEE 754, OCP FP8, OCP MX)
SPEC_CONSTANTS = {
    "fp64": ((2 - 2.0**-52) * 2.0**1023, 2.0**-1022, 2.0**-1074, 2.0**-52),
    "fp32": ((2 - 2.0**-23) * 2.0**127, 2.0**-126, 2.0**-149, 2.0**-23),  # 3.4028235e38, 1.1755e-38, 1.4e-45
    "tf32": ((2 - 2.0**-10) * 2.0**127, 2.0**-126, 2.0**-136, 2.0**-10),
    "fp16": (65504.0, 2.0**-14, 2.0**-24, 2.0**-10),  # 6.1035e-5 normal, 5.96e-8 subnormal
    "bf16": ((2 - 2.0**-7) * 2.0**127, 2.0**-126, 2.0**-133, 2.0**-7),  # 3.3895e38, 9.18e-41
    "fp8_e5m2": (57344.0, 2.0**-14, 2.0**-16, 2.0**-2),
    "fp8_e4m3": (448.0, 2.0**-6, 2.0**-9, 2.0**-3),
    "fp6_e3m2": (28.0, 2.0**-2, 2.0**-4, 2.0**-2),
    "fp6_e2m3": (7.5, 1.0, 2.0**-3, 2.0**-3),
    "fp4_e2m1": (6.0, 1.0, 0.5, 0.5),
    # fnuz (AMD MI300, Graphcore): bias one above OCP's, so the all-ones exponent holds numbers, NaN is -0's code
    "fp8_e5m2fnuz": (57344.0, 2.0**-15, 2.0**-17, 2.0**-2),
    "fp8_e4m3fnuz": (240.0, 2.0**-7, 2.0**-10, 2.0**-3),
    "e8m0": (2.0**127, 2.0**-127, 2.0**-127, 1.0),  # OCP MX scale: powers of two only, no zero, no subnormals
}
NEW_ML_DTYPES = {  # formats whose reference dtype only the new tests use (tests/oracle.py is not this module's)
    "fp8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "fp8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e8m0": ml_dtypes.float8_e8m0fnu,
}
TORCH_WRONG_EPS = {"fp8_e5m2fnuz": 0.125}
NUMPY_TYPES = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64}
TORCH_TYPES = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e5m2": torch.float8_e5m2,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2fnuz": torch.float8_e5m2fnuz,
    "fp8_e4m3fnuz": torch.float8_e4m3fnuz,
    "e8m0": torch.float8_e8m0fnu,
}


@pytest.mark.parametrize("name", PRESETS)
def test_constants_match_the_specs(name):
    fmt = PRESETS[name]
    assert (fmt.max, fmt.smallest_normal, fmt.smallest_subnormal, fmt.eps) == SPEC_CONSTANTS[name]


@pytest.mark.parametrize("fmt", PRESETS.values(), ids=str)
def test_derived_identities(fmt):
    p = fmt.precision
    assert p == fmt.nmant + 1 and fmt.bits == fmt.signed + fmt.nexp + fmt.nmant
    assert fmt.eps == 2.0 ** (1 - p) and fmt.epsneg == (fmt.eps / 2 if fmt.emin < 0 else fmt.smallest_subnormal)
    lowest_normal_field = 1 if fmt.has_zero else 0  # E8M0's field 0 is 2^-127
    assert fmt.smallest_normal == 2.0**fmt.emin and fmt.emin == lowest_normal_field - fmt.bias
    assert fmt.smallest_subnormal == fmt.smallest_normal * (fmt.eps if fmt.has_zero else 1)
    top_significand = {"ieee": 2 - fmt.eps, "all_ones": 2 - 2 * fmt.eps, "none": 2 - fmt.eps}.get(fmt.nan, 2 - fmt.eps)
    if fmt.nmant == 0:  # no mantissa: the significand is always 1
        top_significand = 1
    assert fmt.max == top_significand * 2.0**fmt.emax
    assert fmt.min == (-fmt.max if fmt.signed else fmt.smallest_normal)
    assert fmt.decimal_digits == pytest.approx(p * math.log10(2), rel=1e-15)
    decades = math.log10(fmt.max) - math.log10(fmt.smallest_subnormal)  # the ratio itself overflows for fp64
    assert fmt.dynamic_range_decades == pytest.approx(decades, rel=1e-12)
    storage_bits = np.iinfo(fmt.storage_dtype).bits
    assert storage_bits >= fmt.bits and (storage_bits == 8 or fmt.bits > storage_bits // 2)


@pytest.mark.parametrize("name", NUMPY_TYPES)
def test_matches_numpy_finfo(name):
    fmt, info = PRESETS[name], np.finfo(NUMPY_TYPES[name])
    assert (fmt.bits, fmt.nexp, fmt.nmant) == (info.bits, info.nexp, info.nmant)
    assert (fmt.emin, fmt.emax) == (info.minexp, info.maxexp - 1)  # numpy's maxexp is the first exponent that overflows
    assert (fmt.max, fmt.min, fmt.tiny, fmt.smallest_normal) == (info.max, info.min, info.tiny, info.smallest_normal)
    assert (fmt.smallest_subnormal, fmt.eps, fmt.epsneg) == (info.smallest_subnormal, info.eps, info.epsneg)
    assert int(-math.log10(fmt.eps)) == info.precision  # numpy's "precision" counts decimal digits, not bits


@pytest.mark.parametrize("name", [*ML_DTYPES_CASTS, *NEW_ML_DTYPES])
def test_matches_ml_dtypes_finfo(name):
    fmt, info = PRESETS[name], ml_dtypes.finfo({**ML_DTYPES_CASTS, **NEW_ML_DTYPES}[name])
    assert (fmt.bits, fmt.nexp, fmt.nmant) == (info.bits, info.nexp, info.nmant)
    assert (fmt.emin, fmt.emax) == (info.minexp, info.maxexp - 1)
    assert (float(info.max), float(info.smallest_normal)) == (fmt.max, fmt.smallest_normal)
    assert (float(info.smallest_subnormal), float(info.eps)) == (fmt.smallest_subnormal, fmt.eps)
    assert (float(info.min), float(info.epsneg)) == (fmt.min, fmt.epsneg)


@pytest.mark.parametrize("name", TORCH_TYPES)
def test_matches_torch_finfo(name):
    fmt, info = PRESETS[name], torch.finfo(TORCH_TYPES[name])
    # torch 2.13 reports eps 0.125 for float8_e5m2fnuz: wrong, 2 mantissa bits make eps 2^-2 (ml_dtypes: 0.25)
    torch_eps = TORCH_WRONG_EPS.get(name, fmt.eps)
    assert (fmt.bits, fmt.max, fmt.min, torch_eps) == (info.bits, info.max, info.min, info.eps)
    assert (fmt.smallest_normal, fmt.tiny) == (info.smallest_normal, info.tiny)


def test_fp16_boundaries_from_the_reference_notes():
    assert fpsim.round([65519.99, 65520.0], "fp16").tolist() == [65504.0, math.inf]
    assert fpsim.round([2.0**-25, 2.0**-25 * (1 + 2.0**-40)], "fp16").tolist() == [0.0, 2.0**-24]


@pytest.mark.parametrize("fmt", [f for f in PRESETS.values() if f.bits <= 16], ids=str)
def test_ulp_is_the_gap_to_the_next_value(fmt):
    values = fpsim.decode(np.arange(fmt.max_code), fmt)  # every finite non-negative value below max
    assert np.array_equal(fmt.ulp(values), fpsim.decode(np.arange(1, fmt.max_code + 1), fmt) - values)


def test_ulp_agrees_with_numpy_spacing_and_handles_specials():
    x = np.array([1.0, 3.0, 1e-6, 1e-7, 32768.0, 2.0**-14])  # numpy's spacing overflows at 65504
    assert np.array_equal(fpsim.FP16.ulp(x), np.spacing(x.astype(np.float16)).astype(np.float64))
    assert fpsim.FP64.ulp(1.0) == np.spacing(1.0) and fpsim.FP64.ulp(0.0) == 2.0**-1074
    assert np.isnan(fpsim.FP16.ulp([np.inf, np.nan])).all() and fpsim.FP16.ulp(-1.0) == 2.0**-10
    assert fpsim.FP16.ulp(1e6) == 2.0 ** (19 - 10)  # past max: the unbounded-exponent spacing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("FP16", "fp16"), ("half", "fp16"), ("Float16", "fp16"), ("binary16", "fp16"), ("e5m10", "fp16"),
        ("bfloat16", "bf16"), ("single", "fp32"), ("double", "fp64"), ("TF32", "tf32"),
        ("e4m3", "fp8_e4m3"), ("FP8_E4M3", "fp8_e4m3"), ("float8_e4m3fn", "fp8_e4m3"), ("e5m2", "fp8_e5m2"),
        ("float8_e5m2", "fp8_e5m2"), ("fp6_e3m2fn", "fp6_e3m2"), ("e2m3", "fp6_e2m3"), ("fp4", "fp4_e2m1"),
        (np.float16, "fp16"), (np.dtype("float32"), "fp32"), (ml_dtypes.bfloat16, "bf16"),
        (torch.float8_e4m3fn, "fp8_e4m3"), (torch.bfloat16, "bf16"),
        ("e4m3fnuz", "fp8_e4m3fnuz"), ("float8_e5m2fnuz", "fp8_e5m2fnuz"), ("E8M0", "e8m0"),
        ("float8_e8m0fnu", "e8m0"), (ml_dtypes.float8_e4m3fnuz, "fp8_e4m3fnuz"), (torch.float8_e8m0fnu, "e8m0"),
        (torch.float8_e5m2fnuz, "fp8_e5m2fnuz"),
    ],
)  # fmt: skip
def test_get_format_names_and_aliases(spec, expected):
    assert fpsim.get_format(spec) is PRESETS[expected]


def test_every_alias_resolves_and_custom_patterns_build_ieee_formats():
    assert all(fpsim.get_format(alias).name == name for alias, name in ALIASES.items())
    custom = fpsim.get_format("E6M9")
    assert (custom.nexp, custom.nmant, custom.bias, custom.has_inf, custom.nan) == (6, 9, 31, True, "ieee")
    assert fpsim.get_format(custom) is custom


def test_unknown_format_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown format 'fp17'.*fp16.*bf16.*eXmY"):
        fpsim.get_format("fp17")
    with pytest.raises(TypeError, match="fmt must be a Format"):
        fpsim.get_format(16)
    with pytest.raises(ValueError, match="nexp must be between 2 and 11"):
        fpsim.get_format("e12m3")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"nexp": 1, "nmant": 3}, ValueError, "nexp must be between 2 and 11"),
        ({"nexp": 12, "nmant": 3}, ValueError, "nexp must be between 2 and 11"),
        ({"nexp": 5, "nmant": 53}, ValueError, "nmant must be between 0 and 52"),
        ({"nexp": 5, "nmant": -1}, ValueError, "nmant must be between 0 and 52"),
        ({"nexp": 5.0, "nmant": 2}, TypeError, "nexp must be an int"),
        ({"nexp": True, "nmant": 2}, TypeError, "nexp must be an int"),
        ({"nexp": 5, "nmant": 0}, ValueError, "nan='ieee' needs nmant >= 1"),
        ({"nexp": 5, "nmant": 2, "has_inf": False}, ValueError, "has_inf=True goes with nan='ieee'"),
        ({"nexp": 5, "nmant": 2, "nan": "sometimes"}, ValueError, "nan must be one of"),
        ({"nexp": 5, "nmant": 2, "overflow": "wrap"}, ValueError, "overflow must be one of"),
        ({"nexp": 4, "nmant": 3, "has_inf": False, "nan": "none", "overflow": "nan"}, ValueError, "has no NaN"),
        ({"nexp": 4, "nmant": 3, "has_inf": False, "nan": "all_ones", "overflow": "inf"}, ValueError, "no infinity"),
        ({"nexp": 8, "nmant": 2, "bias": -1000}, ValueError, "outside float64's range"),
        ({"nexp": 5, "nmant": 2, "subnormals": 0}, TypeError, "subnormals must be a bool"),
        ({"nexp": 8, "nmant": 0, "has_inf": False, "nan": "none", "signed": False}, ValueError, "need a NaN code"),
        ({"nexp": 8, "nmant": 0, "has_inf": False, "nan": "none", "has_zero": False}, ValueError, "need a NaN code"),
        ({"nexp": 4, "nmant": 3, "has_inf": False, "nan": "negative_zero", "signed": False}, ValueError, "signed=True"),
        ({"nexp": 4, "nmant": 3, "has_inf": False, "nan": "negative_zero", "has_zero": False}, ValueError, "has_zero"),
        ({"nexp": 4, "nmant": 3, "nan": "negative_zero"}, ValueError, "has_inf=True goes with nan='ieee'"),
        (
            {"nexp": 4, "nmant": 3, "has_inf": False, "nan": "all_ones", "has_zero": False, "subnormals": False},
            ValueError,
            "no subnormals to flush",
        ),
        ({"nexp": 5, "nmant": 2, "signed": 1}, TypeError, "signed must be a bool"),
        ({"nexp": 5, "nmant": 2, "has_zero": None}, TypeError, "has_zero must be a bool"),
    ],
)
def test_invalid_custom_formats_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        fpsim.Format("custom", **kwargs)


SMALL_FORMATS = [f for f in PRESETS.values() if f.bits <= 16] + [
    fpsim.Format("e2m0", 2, 0, has_inf=False, nan="none"),  # subnormals=True, but no mantissa: field 0 is only 0
    fpsim.Format("fp16_ftz", 5, 10, subnormals=False),
    fpsim.Format("e3m2", 3, 2),
]


@pytest.mark.parametrize("fmt", SMALL_FORMATS, ids=str)
def test_subnormals_and_the_lowest_normal_field_from_every_code(fmt):
    """Every code decoded: the format has subnormals iff some value lies strictly between 0 and 2^emin; the lowest
    normal field is the lowest exponent field whose code with mantissa 0 decodes to a nonzero value."""
    values = np.abs(fpsim.decode(np.arange(2**fmt.bits), fmt))
    assert fmt.has_subnormals == bool(np.any((values > 0) & (values < 2.0**fmt.emin)))
    fields = [f for f in range(2**fmt.nexp) if fpsim.decode(f << fmt.nmant, fmt) != 0]
    assert fmt.lowest_normal_field == fields[0]
    assert fmt.subnormals or not fmt.has_subnormals


def test_custom_formats_at_the_width_limits():
    widest = fpsim.Format("e11m52", 11, 52)
    assert widest.bits == 64 and widest.storage_dtype == np.uint64 and widest.max == np.finfo(np.float64).max
    narrow = fpsim.Format("e2m0", 2, 0, has_inf=False, nan="none")
    assert narrow.bits == 3 and narrow.max == 4.0 and narrow.smallest_subnormal == 1.0
    assert fpsim.Format("e4m3", 4, 3).max == 240.0  # the IEEE-style e4m3, unlike OCP's e4m3fn (448)
    no_mantissa = fpsim.get_format("e5m0")  # no mantissa bit, so no NaN code: finite only
    assert (no_mantissa.has_inf, no_mantissa.nan, no_mantissa.max) == (False, "none", 2.0**16)


def test_layout_names_follow_ml_dtypes():
    layouts = {name: fmt.layout for name, fmt in PRESETS.items()}
    assert (layouts["fp16"], layouts["fp8_e4m3"], layouts["fp4_e2m1"]) == ("e5m10", "e4m3fn", "e2m1fn")
    assert (layouts["fp8_e4m3fnuz"], layouts["fp8_e5m2fnuz"], layouts["e8m0"]) == ("e4m3fnuz", "e5m2fnuz", "e8m0fnu")
    for name, dtype in NEW_ML_DTYPES.items():
        assert np.dtype(dtype).name.endswith(layouts[name])


def test_default_overflow_policies():
    policies = {name: fmt.overflow for name, fmt in PRESETS.items()}
    assert policies["fp16"] == policies["bf16"] == policies["fp8_e5m2"] == "inf"
    assert policies["fp8_e4m3"] == policies["fp8_e4m3fnuz"] == policies["fp8_e5m2fnuz"] == policies["e8m0"] == "nan"
    assert policies["fp6_e3m2"] == policies["fp6_e2m3"] == policies["fp4_e2m1"] == "saturate"
