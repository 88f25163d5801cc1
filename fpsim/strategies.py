"""Hypothesis strategies for formats, their exactly representable values, bit patterns and real inputs.

Invariant: `values(fmt)` only yields numbers that fmt represents exactly; hypothesis is imported on first use.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fpsim.codec import decode
from fpsim.formats import PRESETS, Format, get_format


def _st() -> Any:
    try:
        import hypothesis.strategies as st
    except ImportError:
        raise ImportError("fpsim.strategies needs hypothesis: pip install 'fpsim[test]'") from None
    return st


def formats(
    *,
    presets: bool = True,
    custom: bool = True,
    flush_to_zero: bool = False,
    max_bits: int = 64,
    asymmetric: bool = False,
) -> Any:
    """Formats: the presets, custom IEEE-style eXmY layouts, and (optionally) their flush-to-zero variants.

    The presets are the symmetric ones, in which -x is a value whenever x is; `asymmetric=True` adds those in which
    it is not (fnuz: no -0; e8m0: no sign, no zero), for which rounding does not commute with negation.
    """
    st = _st()
    if custom and max_bits < 4:
        raise ValueError(
            f"max_bits must be at least 4 for custom formats (sign, 2 exponent bits, 1 mantissa bit), got {max_bits}"
        )
    choices = []
    if presets:
        symmetric = [f for f in PRESETS.values() if f.has_negative_zero or asymmetric]
        choices.append(st.sampled_from([f for f in symmetric if f.bits <= max_bits]))
    if custom:
        widths = st.integers(2, min(11, max_bits - 2))
        layout = widths.flatmap(lambda e: st.tuples(st.just(e), st.integers(1, min(52, max_bits - 1 - e))))
        choices.append(layout.map(lambda em: Format(f"e{em[0]}m{em[1]}", *em)))
    if not choices:
        raise ValueError("formats() needs presets=True or custom=True")
    strategy = st.one_of(choices)
    if flush_to_zero:
        with_zero = strategy.filter(lambda f: f.has_zero)  # a format without zero has no subnormals to flush
        ftz = with_zero.map(lambda f: dataclasses.replace(f, name=f"{f.name}_ftz", subnormals=False, _aliases=()))
        strategy = st.one_of(strategy, ftz)
    return strategy


def bit_patterns(fmt: Format | str, *, allow_nan: bool = True, allow_infinity: bool = True) -> Any:
    """Codes of `fmt` as Python ints: every finite code, plus ±inf and NaN codes when allowed and present."""
    st = _st()
    fmt = get_format(fmt)
    sign = 1 << (fmt.bits - 1) if fmt.signed else 0  # unsigned formats: every code is a magnitude
    finite = st.integers(0, fmt.max_code)
    special_codes = []
    if allow_infinity and fmt.has_inf:
        special_codes.append(fmt.max_code + 1)
    if allow_nan and fmt.nan == "ieee":
        special_codes += [fmt.max_code + 2, 2 ** (fmt.bits - 1) - 1]  # lowest and highest NaN payloads
    elif allow_nan and fmt.nan == "all_ones":
        special_codes.append(fmt.max_code + 1)
    magnitude = st.one_of(finite, st.sampled_from(special_codes)) if special_codes else finite
    codes = st.tuples(st.booleans(), magnitude).map(lambda s_m: s_m[1] | (sign if s_m[0] else 0))
    if fmt.nan == "negative_zero" and not allow_nan:  # fnuz: the code of -0 is the NaN
        codes = codes.filter(lambda code: code != sign)
    return codes


def values(fmt: Format | str, *, allow_nan: bool = False, allow_infinity: bool = False) -> Any:
    """float64 numbers that `fmt` represents exactly (subnormals included where the format has them)."""
    fmt = get_format(fmt)
    return bit_patterns(fmt, allow_nan=allow_nan, allow_infinity=allow_infinity).map(lambda b: float(decode(b, fmt)))


def real_numbers(fmt: Format | str, *, overflow_margin: float = 2.0) -> Any:
    """Finite float64 inputs worth rounding to `fmt`: uniform floats across ±margin·max mixed with format
    values nudged by tiny amounts, and exact midpoints between neighbours (the ties)."""
    st = _st()
    fmt = get_format(fmt)
    bound = min(overflow_margin * fmt.max, 1.7976931348623157e308)
    anywhere = st.floats(-bound, bound, allow_nan=False, allow_infinity=False)
    nudged = st.tuples(values(fmt), st.floats(-1e-3, 1e-3)).map(lambda vd: vd[0] * (1 + vd[1]))
    near_values = nudged.filter(math.isfinite)  # fp64's max nudged up is inf
    ties = st.integers(0, fmt.max_code - 1).map(lambda c: _midpoint(c, fmt))
    sign = st.sampled_from([1.0, -1.0])
    return st.one_of(anywhere, st.tuples(sign, st.one_of(near_values, ties)).map(lambda s_v: s_v[0] * s_v[1]))


def _midpoint(code: int, fmt: Format) -> float:
    low, high = float(decode(code, fmt)), float(decode(code + 1, fmt))
    return low / 2 + high / 2  # exact for p <= 52; halves first so the sum cannot overflow
