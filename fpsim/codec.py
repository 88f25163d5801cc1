"""Encoding of real numbers as the bit patterns of a Format and decoding them back to float64.

Invariant: decode(encode(x)) == round(x) bit for bit, and encode(decode(b)) == b for every non-NaN code.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from fpsim._inputs import as_codes, as_float64, as_real_array, restore_scalar
from fpsim.flags import Flags, suspended
from fpsim.formats import Format, get_format
from fpsim.rounding import CHUNK, Rounding

_MANTISSA_MASK_64 = (1 << 52) - 1
_FLOAT64_BIAS = 1023
_FLOAT64_EMIN = -1022
_FLOAT64_SMALLEST_NORMAL = 2.0**_FLOAT64_EMIN
CLASSES = ("zero", "subnormal", "normal", "inf", "nan")


def _round(x, fmt, rounding, overflow, rng, on_nan, flags):
    plan = Rounding.resolve(fmt, rounding, overflow, rng, on_nan)
    values, scalar = as_real_array(x, "x")
    rounded, counts = plan(values, count_flags=flags)
    return plan.fmt, rounded, scalar, counts


def round(
    x: object,
    fmt: Format | str,
    rounding: str = "nearest_even",
    *,
    overflow: str | None = None,
    rng: object = None,
    on_nan: str = "raise",
    flags: bool = False,
) -> np.ndarray | float | tuple[np.ndarray | float, Flags]:
    """Round x to the nearest values of `fmt` chosen by `rounding`; float64 out, the shape of x.

    x may be a Python or numpy scalar, an array-like, an ml_dtypes array or a torch tensor (returned
    as numpy). `overflow` overrides the format's policy ('inf', 'saturate', 'nan'); `rng` (Generator or
    seed) drives stochastic rounding; `on_nan` says what NaN input becomes in a format without NaN.
    With `flags=True` the result is `(values, Flags)`.
    """
    _, rounded, scalar, counts = _round(x, fmt, rounding, overflow, rng, on_nan, flags)
    result = restore_scalar(rounded, scalar)
    return (result, counts) if flags else result


def encode(
    x: object,
    fmt: Format | str,
    rounding: str = "nearest_even",
    *,
    overflow: str | None = None,
    rng: object = None,
    on_nan: str = "raise",
    flags: bool = False,
) -> np.ndarray | np.unsignedinteger | tuple[np.ndarray | np.unsignedinteger, Flags]:
    """The bit patterns of x rounded to `fmt`, in the narrowest unsigned dtype that holds them.

    NaN becomes the canonical quiet NaN with the input's sign. Arguments are those of `round`.
    """
    fmt, rounded, scalar, counts = _round(x, fmt, rounding, overflow, rng, on_nan, flags)
    codes = np.empty(rounded.shape, dtype=fmt.storage_dtype)
    flat_values, flat_codes = rounded.reshape(-1), codes.reshape(-1)
    for start in range(0, flat_values.size, CHUNK):
        flat_codes[start : start + CHUNK] = _to_codes(flat_values[start : start + CHUNK], fmt)
    result = restore_scalar(codes, scalar)
    return (result, counts) if flags else result


def _to_codes(values: np.ndarray, fmt: Format) -> np.ndarray:
    """Codes of float64 values that `fmt` represents exactly (or ±inf/NaN that it has)."""
    magnitude = np.abs(values)
    raw = magnitude.view(np.int64)
    codes = (raw >> 52) - (_FLOAT64_BIAS - fmt.bias)  # the format's biased exponent
    codes <<= fmt.nmant
    codes |= (raw & _MANTISSA_MASK_64) >> (52 - fmt.nmant)
    no_fields = magnitude < max(fmt.smallest_normal, _FLOAT64_SMALLEST_NORMAL)  # their float64 bits hold no fields
    codes[no_fields] = _codes_by_scaling(magnitude[no_fields], fmt)
    if fmt.has_inf:
        codes[np.isinf(magnitude)] = fmt.max_code + 1
    codes[np.isnan(magnitude)] = _canonical_nan_code(fmt)
    codes = codes.astype(np.uint64)  # the sign bit of a 64-bit format does not fit an int64
    if fmt.signed:  # the kernel leaves no -0 where the format has none; fnuz's NaN code is the sign bit itself
        codes[np.signbit(values)] |= np.uint64(1 << (fmt.bits - 1))
    return codes.astype(fmt.storage_dtype)


def _codes_by_scaling(magnitude: np.ndarray, fmt: Format) -> np.ndarray:
    """Codes of zeros, the format's subnormals and values that are float64 subnormals, by exact scaling.

    code = (binade + bias - 1)·2^nmant + |v| / 2^(binade - nmant), binade = max(floor(log2|v|), emin); the second
    term is the integer significand, hidden bit included, so a normal's exponent field comes out as binade + bias.
    """
    if fmt.emin >= _FLOAT64_EMIN:  # only zeros and the format's subnormals: every binade is emin
        return np.ldexp(magnitude, fmt.nmant - fmt.emin).astype(np.int64)
    exponent = np.frexp(magnitude)[1].astype(np.int64)  # |v| = m·2^exponent, m in [0.5, 1); exact at subnormals
    binade = np.where(magnitude > 0, np.maximum(exponent - 1, fmt.emin), fmt.emin)  # frexp(0) gives exponent 0
    return ((binade + fmt.bias - 1) << fmt.nmant) + np.ldexp(magnitude, fmt.nmant - binade).astype(np.int64)


def _canonical_nan_code(fmt: Format) -> int:
    """The positive quiet NaN: top mantissa bit set for IEEE (0x7e00 in fp16), all ones for 'fn' formats, and the
    code of -0 (0x80) for fnuz formats, whose one NaN has no sign of its own."""
    if fmt.nan == "ieee":
        return fmt.max_code + 1 + (1 << (fmt.nmant - 1))
    if fmt.nan == "negative_zero":
        return 1 << (fmt.bits - 1)
    return fmt.max_code + 1


def decode(bits: object, fmt: Format | str) -> np.ndarray | float:
    """The float64 values of bit patterns of `fmt` (exact: every format value is a float64)."""
    fmt = get_format(fmt)
    codes, scalar = as_codes(bits, fmt.bits, "bits")
    values = _decode_table(fmt)[codes] if fmt.bits <= 16 else _decode_codes(codes.reshape(-1), fmt)
    return restore_scalar(values.reshape(codes.shape), scalar)


@lru_cache(maxsize=32)
def _decode_table(fmt: Format) -> np.ndarray:
    """Every value of a format of at most 16 bits, indexed by code: decoding becomes one gather."""
    table = _decode_codes(np.arange(2**fmt.bits, dtype=np.uint64), fmt)
    table.flags.writeable = False
    return table


def _decode_codes(codes: np.ndarray, fmt: Format) -> np.ndarray:
    """Values of a 1-D array of codes, assembled as float64 bit patterns (every format value is a float64)."""
    sign, exponent, mantissa = (part.astype(np.int64) for part in _split(codes, fmt))
    raw = (exponent + (_FLOAT64_BIAS - fmt.bias)) << 52 | mantissa << (52 - fmt.nmant)
    values = raw.view(np.float64)
    # no float64 bit layout for the format's subnormals nor for its normals below 2^-1022 (a bias above 1023):
    # value = significand · 2^(binade - nmant), exact, the hidden bit only in normals (field 0 too without zero)
    normal_field = fmt.lowest_normal_field  # 1, or 0 in a format without zero
    by_scaling = (exponent < normal_field) | (exponent <= fmt.bias - _FLOAT64_BIAS)
    low_exponent, low_mantissa = exponent[by_scaling], mantissa[by_scaling]
    significand = low_mantissa + ((low_exponent >= normal_field).astype(np.int64) << fmt.nmant)
    binade = np.maximum(low_exponent, normal_field) - fmt.bias
    values[by_scaling] = np.ldexp(significand.astype(np.float64), binade - fmt.nmant)
    if not fmt.subnormals:  # DAZ formats read their subnormal codes as zero (a format without zero has none)
        values[exponent == 0] = 0.0
    top = exponent == 2**fmt.nexp - 1
    if fmt.nan == "ieee":
        values[top] = np.where(mantissa[top] == 0, np.inf, np.nan)
    elif fmt.nan == "all_ones":
        values[top & (mantissa == 2**fmt.nmant - 1)] = np.nan
    negative = sign.astype(bool)
    if fmt.nan == "negative_zero":
        values[negative & (exponent == 0) & (mantissa == 0)] = np.nan
    return np.negative(values, out=values, where=negative)


def _split(codes: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sign = codes >> np.uint64(fmt.bits - 1) if fmt.signed else np.zeros_like(codes)  # unsigned: always 0
    exponent = (codes >> np.uint64(fmt.nmant)) & np.uint64(2**fmt.nexp - 1)
    mantissa = codes & np.uint64(2**fmt.nmant - 1)
    return sign, exponent, mantissa


def fields(bits: object, fmt: Format | str) -> tuple:
    """(sign, biased exponent, mantissa) of bit patterns, each in the format's storage dtype."""
    fmt = get_format(fmt)
    codes, scalar = as_codes(bits, fmt.bits, "bits")
    return tuple(restore_scalar(np.asarray(part, fmt.storage_dtype), scalar) for part in _split(codes, fmt))


def classify(x: object, fmt: Format | str, rounding: str = "nearest_even", **options) -> np.ndarray | str:
    """'zero', 'subnormal', 'normal', 'inf' or 'nan' for each x once rounded to `fmt` (options as `round`)."""
    fmt = get_format(fmt)
    with suspended():  # a query, not a rounding the caller's flag counts should see
        values = np.asarray(round(x, fmt, rounding, **options), dtype=np.float64)
    magnitude = np.abs(values)
    index = np.select(
        [np.isnan(values), np.isinf(values), magnitude == 0, magnitude < fmt.smallest_normal],
        [4, 3, 0, 1],
        default=2,
    )
    names = np.array(CLASSES)[index]
    return str(names) if names.ndim == 0 else names


def next_up(x: object, fmt: Format | str) -> np.ndarray | float:
    """The least value of `fmt` greater than x (x itself need not be representable); -0 steps like +0.

    At or past the largest finite value no value of the format is greater: the result is +inf where the
    format has infinities (IEEE 754 nextUp), NaN in e4m3fn (next_up(448, "e4m3") is NaN: the code after 448's
    is its NaN, as ml_dtypes' nextafter gives); formats with neither (fp6, fp4) raise ValueError. nextUp(-inf)
    is -max where the format has infinities; an infinite x in a format without them (e4m3, fp6, fp4) raises
    ValueError, as arithmetic refuses infinite operands there. NaN gives NaN, and raises ValueError in a
    format without NaN, as `round` does.
    """
    fmt = get_format(fmt)
    values, scalar = as_float64(x, "x")
    _check_has_neighbour(values, fmt, "next_up", values >= fmt.max)
    return restore_scalar(_next_up(values, fmt), scalar)


def next_down(x: object, fmt: Format | str) -> np.ndarray | float:
    """The greatest value of `fmt` less than x: -next_up(-x) in the signed formats, which are symmetric; its special
    cases mirror next_up's (next_down(-448, "e4m3") is NaN, an infinite x in a format without infinity raises).
    In an unsigned format (e8m0) nothing lies below its least value: next_down(2^-127, "e8m0") is NaN."""
    fmt = get_format(fmt)
    values, scalar = as_float64(x, "x")
    _check_has_neighbour(values, fmt, "next_down", values <= fmt.min)
    signed = fmt if fmt.signed else replace(fmt, signed=True)  # an unsigned format is its signed twin's upper half
    below = _next_up(-values, signed)
    np.negative(below, out=below)  # in place: a 0-d array stays an array
    if not fmt.signed:
        below[values <= fmt.least] = np.nan  # unsigned formats have a NaN (Format checks it)
    if not fmt.has_negative_zero:
        below += 0.0  # -0 + 0 = +0: the one zero of fnuz and unsigned formats
    return restore_scalar(below, scalar)


def _check_has_neighbour(values: np.ndarray, fmt: Format, query: str, at_end: np.ndarray) -> None:
    """Refuse an infinite x in a format without infinity, and, in one with neither infinity nor NaN, what it has
    no answer for: NaN, and x at or past ±max."""
    if not fmt.has_inf and np.isinf(values).any():
        raise ValueError(
            f"x holds {float(values[np.isinf(values)].flat[0])}, but {fmt.name} has no infinity, so {query} has no "
            f"neighbour of it to give; keep x finite (the values of {fmt.name} lie within ±{fmt.max!r})"
        )
    if fmt.nan != "none":
        return
    if np.isnan(values).any():
        raise ValueError(f"x contains NaN, but {fmt.name} has no NaN encoding; {query} needs a number")
    if at_end.any():
        side = "above" if query == "next_up" else "below"
        raise ValueError(
            f"x holds {float(values[at_end].flat[0])!r}, and no value of {fmt.name} lies {side} it: its largest "
            f"magnitude is {fmt.max!r} and it has neither infinity nor NaN; keep x within ({fmt.min!r}, {fmt.max!r})"
        )


def _next_up(values: np.ndarray, fmt: Format) -> np.ndarray:
    with_subnormals = replace(fmt, subnormals=True, signed=True)  # flush-to-zero formats skip its subnormals below
    with suspended():  # a query, not a rounding the caller's flag counts should see
        above = np.asarray(round(values, with_subnormals, "up", overflow="saturate", on_nan="zero"), dtype=np.float64)
    exact = above == values  # x is itself a value of fmt: move one code up
    above[exact] = _step_up(values[exact], with_subnormals)
    if not fmt.subnormals:  # the least value above a subnormal is the smallest normal, or -0 below zero
        subnormal = (above != 0) & (np.abs(above) < fmt.smallest_normal)
        above[subnormal] = np.where(above[subnormal] > 0, fmt.smallest_normal, -0.0)
    if not fmt.has_zero:  # no zero between -least and +least
        above[(values >= -fmt.least) & (values < fmt.least)] = fmt.least
    if not fmt.signed:  # the least value of an unsigned format lies above every x below it, negative x too
        above[values < fmt.least] = fmt.least
    if not fmt.has_negative_zero:
        above += 0.0  # -0 + 0 = +0: the one zero of fnuz and unsigned formats
    above[values >= fmt.max] = np.inf if fmt.has_inf else np.nan  # nothing above max: inf, or e4m3fn's NaN code
    above[np.isnan(values)] = np.nan
    return above


def _step_up(values: np.ndarray, fmt: Format) -> np.ndarray:
    """The next value above finite format values below max, by moving one code in magnitude."""
    negative = np.signbit(values) & (values != 0)  # -0 steps up like +0
    magnitude_code = _to_codes(np.abs(values), fmt).astype(np.int64) + np.where(negative, -1, 1)
    # -least of a format without zero steps to code -1, which its caller replaces: clipped to stay a code
    magnitude = _decode_codes(np.clip(magnitude_code, 0, fmt.max_code).astype(np.uint64), fmt)
    return np.copysign(magnitude, np.where(negative, -1.0, 1.0))
