"""Formats whose normals reach below float64's (a bias above 1023), samples around float64's subnormals, and an
exact decoder of codes: float64 holds such normals only as subnormals, whose bits carry no format fields."""

from __future__ import annotations

import math

import numpy as np
from oracle import format_range_float64

import fpsim

# Some reach float64's least subnormal 2^-1074; one lies wholly below float64's normals.
BELOW_FLOAT64_NORMALS = [
    fpsim.Format("e11m10_bias1030", 11, 10, bias=1030),
    fpsim.Format("e11m10_bias1030_ftz", 11, 10, bias=1030, subnormals=False),
    fpsim.Format("e11m2_bias1030", 11, 2, bias=1030),
    fpsim.Format("e11m2_bias1030_ftz", 11, 2, bias=1030, subnormals=False),
    fpsim.Format("e11m0_bias1040", 11, 0, bias=1040, has_inf=False, nan="none"),
    fpsim.Format("e11m3_bias1060_ftz", 11, 3, bias=1060, subnormals=False),
    fpsim.Format("e11m20_bias1040fn", 11, 20, bias=1040, has_inf=False, nan="all_ones"),
    fpsim.Format("e11m45_bias1030", 11, 45, bias=1030),  # least subnormal 2^-1074
    fpsim.Format("e11m1_bias1074", 11, 1, bias=1074),  # least subnormal 2^-1074
    fpsim.Format("e11m0_bias1075fn", 11, 0, bias=1075, has_inf=False, nan="all_ones"),  # least normal 2^-1074
    fpsim.Format("e5m2_bias1060", 5, 2, bias=1060),  # max = 1.75·2^-1030: overflow among float64 subnormals
]


def exact_decode(code: int, fmt: fpsim.Format) -> float:
    """A code's value from its fields by integer arithmetic and one exact ldexp; flush-to-zero formats read
    subnormal codes as signed zeros."""
    sign = -1.0 if code >> (fmt.bits - 1) else 1.0
    exponent, mantissa = (code >> fmt.nmant) % 2**fmt.nexp, code % 2**fmt.nmant
    magnitude_code = code % 2 ** (fmt.bits - 1)
    if magnitude_code > fmt.max_code:
        infinite = fmt.nan == "ieee" and mantissa == 0
        return math.copysign(math.inf if infinite else math.nan, sign)
    if exponent == 0 and not fmt.subnormals:
        mantissa = 0
    significand = mantissa + (2**fmt.nmant if exponent else 0)
    return math.copysign(math.ldexp(significand, max(exponent, 1) - fmt.bias - fmt.nmant), sign)


def around_float64_subnormals(fmt: fpsim.Format, n: int, seed: int) -> np.ndarray:
    """fmt's range, float64's whole range (its subnormals included), and values at and beside midpoints of
    adjacent format values at the least subnormals and normals, at 2^-1022 and at max; both signs."""
    rng = np.random.default_rng(seed)
    whole = rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-1080, 1023, n) * (1 + rng.random(n))
    code_of_2_1022 = (-1022 - fmt.emin + 1) << fmt.nmant  # (binade - emin + 1)·2^nmant, if 2^-1022 is a normal
    starts = [0, 2**fmt.nmant - 8, code_of_2_1022 - 8, fmt.max_code - 16]
    codes = np.unique(np.clip(np.concatenate([np.arange(s, s + 16) for s in starts]), 0, fmt.max_code - 1))
    low, high = (np.array([exact_decode(int(c), fmt) for c in codes + step]) for step in (0, 1))
    mids = low / 2 + high / 2  # rounded to float64 where its least subnormal 2^-1074 is no longer fine enough
    ties = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)])
    edges = [5e-324, 2.0**-1022, np.nextafter(2.0**-1022, 0), fmt.smallest_normal, fmt.max, 1.7976931348623157e308]
    x = np.concatenate([format_range_float64(fmt, n, seed), whole, ties, edges, [0.0, np.inf, np.nan]])
    return np.concatenate([x, -x])
