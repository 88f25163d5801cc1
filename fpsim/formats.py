"""Binary floating-point formats: widths, bias, special values and the exact constants they imply.

Invariant: every constant is derived from (nexp, nmant, bias, specials) by exact power-of-two arithmetic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

NAN_ENCODINGS = {
    "ieee": "every code with an all-ones exponent and a nonzero mantissa (IEEE 754)",
    "all_ones": "only the all-ones code S.1…1.1…1 (OCP 'fn' formats such as e4m3fn)",
    "negative_zero": "only the code of -0, 1.0…0.0…0 (the 'fnuz' formats such as e4m3fnuz): one unsigned zero",
    "none": "no NaN at all (MX fp6/fp4)",
}

OVERFLOW_POLICIES = {
    "inf": "a result beyond max becomes ±inf (IEEE 754)",
    "saturate": "a result beyond max becomes ±max (and in e8m0 one below 2^-127 rounded toward zero, 2^-127)",
    "nan": "a result beyond max becomes NaN (ml_dtypes' e4m3fn; and in e8m0 one below 2^-127 rounded toward zero)",
}

_FLOAT64_EMIN, _FLOAT64_EMAX, _FLOAT64_NMANT = -1022, 1023, 52


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)


def _check_choice(name: str, value: object, allowed: dict) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: 1 sign bit, `nexp` exponent bits and `nmant` stored mantissa bits.

    `precision` is the number of significant *bits* p = nmant + 1 (IEEE 754's p). This differs from
    `numpy.finfo.precision`, which counts decimal digits: that figure is `decimal_digits` here.
    Formats without subnormals (`subnormals=False`) model flush-to-zero hardware: a result that
    would be subnormal becomes ±0, and subnormal codes decode as ±0.
    `signed=False` drops the sign bit (E8M0): a negative result is an invalid operation, NaN.
    `has_zero=False` makes the exponent field 0 an ordinary normal binade (E8M0's 2^-127), so the format
    has neither zero nor subnormals: a zero input is invalid (NaN), and so emin = -bias instead of 1 - bias.
    """

    name: str
    nexp: int
    nmant: int
    bias: int | None = None
    has_inf: bool = True
    nan: str = "ieee"
    subnormals: bool = True
    overflow: str | None = None
    signed: bool = True
    has_zero: bool = True
    _aliases: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        _check_int("nexp", self.nexp, 2, 11)
        _check_int("nmant", self.nmant, 0, 52)
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.nexp - 1) - 1)
        _check_int("bias", self.bias, -(2**20), 2**20)
        for flag in ("has_inf", "subnormals", "signed", "has_zero"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        _check_choice("nan", self.nan, NAN_ENCODINGS)
        if self.has_inf != (self.nan == "ieee"):
            raise ValueError(
                "has_inf=True goes with nan='ieee' (the IEEE layout) and has_inf=False with "
                f"nan='all_ones', 'negative_zero' or 'none'; got has_inf={self.has_inf}, nan={self.nan!r}"
            )
        if self.nan == "ieee" and self.nmant == 0:
            raise ValueError("nan='ieee' needs nmant >= 1: with no mantissa bits there is no NaN code")
        self._check_zero_and_sign()
        if self.overflow is None:
            default = "inf" if self.has_inf else ("nan" if self.nan != "none" else "saturate")
            object.__setattr__(self, "overflow", default)
        self.check_overflow(self.overflow)
        if self.emin - self.nmant < _FLOAT64_EMIN - _FLOAT64_NMANT or self.emax > _FLOAT64_EMAX:
            raise ValueError(
                f"bias={self.bias} puts {self.name} outside float64's range (2^-1074 to 2^1023); "
                "choose a bias closer to the IEEE default 2^(nexp-1)-1"
            )

    def _check_zero_and_sign(self) -> None:
        if self.nan == "negative_zero" and not (self.signed and self.has_zero):
            raise ValueError("nan='negative_zero' puts NaN at the code of -0: it needs signed=True and has_zero=True")
        if self.nan == "none" and not (self.signed and self.has_zero):
            raise ValueError(
                "signed=False and has_zero=False need a NaN code (negative and zero inputs become NaN); "
                "use nan='all_ones' or nan='ieee'"
            )
        if not (self.has_zero or self.subnormals):
            raise ValueError(
                "has_zero=False makes exponent field 0 a normal binade, so there are no subnormals to flush: "
                "drop subnormals=False"
            )

    def check_overflow(self, policy: str) -> str:
        """Return `policy` if this format can honour it, else raise ValueError naming the valid ones."""
        _check_choice("overflow", policy, OVERFLOW_POLICIES)
        if policy == "inf" and not self.has_inf:
            raise ValueError(f"overflow='inf' is impossible: {self.name} has no infinity; use 'saturate' or 'nan'")
        if policy == "nan" and self.nan == "none":
            raise ValueError(f"overflow='nan' is impossible: {self.name} has no NaN; use 'saturate'")
        return policy

    # ---- widths and codes -------------------------------------------------------------------
    @property
    def bits(self) -> int:
        return self.signed + self.nexp + self.nmant

    @property
    def layout(self) -> str:
        """'eXmY' with ml_dtypes' suffix: fn (finite), fnuz (finite, NaN at -0's code, unsigned zero), fnu (finite,
        unsigned: e8m0fnu); none for IEEE layouts with infinities."""
        suffix = "" if self.has_inf else "fnuz" if self.nan == "negative_zero" else "fn" if self.signed else "fnu"
        return f"e{self.nexp}m{self.nmant}{suffix}"

    @property
    def has_negative_zero(self) -> bool:
        """Whether -0 is a value of the format (not in fnuz formats, whose -0 code is NaN, nor unsigned ones)."""
        return self.signed and self.has_zero and self.nan != "negative_zero"

    @property
    def least(self) -> float:
        """The least magnitude of the format: 0, or the smallest normal where it has no zero (E8M0's 2^-127)."""
        return 0.0 if self.has_zero else self.smallest_normal

    @property
    def precision(self) -> int:
        """p, the number of significant bits including the hidden bit."""
        return self.nmant + 1

    @property
    def storage_dtype(self) -> np.dtype:
        """The narrowest unsigned integer dtype that holds one code."""
        for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
            if self.bits <= np.iinfo(dtype).bits:
                return np.dtype(dtype)
        raise AssertionError("formats are at most 64 bits wide")  # unreachable: validated above

    @property
    def max_code(self) -> int:
        """The code of the largest finite positive value."""
        all_ones_exponent = (2**self.nexp - 1) << self.nmant
        if self.nan == "ieee":
            return all_ones_exponent - 1
        magnitude_codes = 2 ** (self.nexp + self.nmant)  # fnuz: every magnitude code is a number, NaN is -0's
        return magnitude_codes - (2 if self.nan == "all_ones" else 1)

    # ---- exponents and constants ------------------------------------------------------------
    @property
    def emin(self) -> int:
        """The exponent of the smallest normal: field 1, or field 0 where the format has no zero."""
        return (1 if self.has_zero else 0) - self.bias

    @property
    def emax(self) -> int:
        return (self.max_code >> self.nmant) - self.bias

    @cached_property
    def max(self) -> float:
        top_mantissa = self.max_code & (2**self.nmant - 1)
        return math.ldexp(2**self.nmant + top_mantissa, self.emax - self.nmant)

    @property
    def min(self) -> float:
        """The least value: -max, or `least` in an unsigned format (as ml_dtypes.finfo gives for e8m0)."""
        return -self.max if self.signed else self.least

    @property
    def smallest_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    tiny = smallest_normal

    @property
    def has_subnormals(self) -> bool:
        """Whether the format has subnormal values: not with subnormals=False (flush to zero), nor without zero
        (E8M0's field 0 is a normal binade), nor with no mantissa bits (field 0 holds only zero). The `subnormals`
        field says only whether flush-to-zero is off."""
        return self.subnormals and self.has_zero and self.nmant > 0

    @property
    def lowest_normal_field(self) -> int:
        """The biased exponent field of the smallest normal, emin + bias: 1, or 0 in a format without zero (E8M0's
        field 0 is 2^-127). Fields below it hold zero and the subnormals."""
        return self.emin + self.bias

    @property
    def smallest_subnormal(self) -> float:
        """2^(emin - nmant); equals `smallest_normal` when the format has no subnormals."""
        return math.ldexp(1.0, self.emin - self.nmant) if self.has_subnormals else self.smallest_normal

    @property
    def eps(self) -> float:
        """The gap between 1 and the next larger value: 2^(1-p)."""
        return math.ldexp(1.0, -self.nmant)

    @property
    def epsneg(self) -> float:
        """The gap between 1 and the next smaller value: 2^-p, or where 1 is the smallest normal (fp6_e2m3, fp4_e2m1)
        the gap below it, the smallest subnormal (as ml_dtypes.finfo gives)."""
        return math.ldexp(1.0, -self.precision) if self.emin < 0 else self.smallest_subnormal

    @property
    def decimal_digits(self) -> float:
        """p·log10(2): how many decimal digits one significand carries (fp16: 3.31)."""
        return self.precision * math.log10(2)

    @property
    def dynamic_range_decades(self) -> float:
        """log10(max / smallest positive value): how many decades the format spans."""
        return math.log10(self.max) - math.log10(self.smallest_subnormal)

    def ulp(self, x: object) -> np.ndarray | float:
        """The spacing of the format at |x|: 2^(max(floor(log2|x|), emin) - p + 1), vectorized.

        ulp(0) is the smallest subnormal (the smallest normal in a flush-to-zero format); beyond max
        the unbounded-exponent spacing is given; NaN for ±inf and NaN.
        """
        from fpsim._inputs import as_float64, restore_scalar

        values, scalar = as_float64(x, "x")
        magnitude = np.abs(values)
        _, exponent = np.frexp(magnitude)  # |x| = m·2^exponent with m in [0.5, 1); frexp(0) gives 0
        binade = np.where(magnitude > 0, np.maximum(exponent.astype(np.int64) - 1, self.emin), self.emin)
        spacing = np.where(np.isfinite(magnitude), np.ldexp(1.0, binade - self.nmant), np.nan)
        if not self.subnormals:  # flush-to-zero: the only gap below the smallest normal is the one from zero
            spacing[magnitude < self.smallest_normal] = self.smallest_normal
        return restore_scalar(spacing, scalar)

    def __str__(self) -> str:
        return self.name


def _preset(name: str, nexp: int, nmant: int, aliases: tuple[str, ...], **specials) -> Format:
    return Format(name, nexp, nmant, _aliases=aliases, **specials)


_FINITE_ONLY = {"has_inf": False, "nan": "none"}
FP64 = _preset("fp64", 11, 52, ("double", "float64", "binary64", "e11m52"))
FP32 = _preset("fp32", 8, 23, ("single", "float32", "binary32", "float", "e8m23"))
TF32 = _preset("tf32", 8, 10, ("tensorfloat32", "e8m10"))
FP16 = _preset("fp16", 5, 10, ("half", "float16", "binary16", "e5m10"))
BF16 = _preset("bf16", 8, 7, ("bfloat16", "e8m7"))
FP8_E5M2 = _preset("fp8_e5m2", 5, 2, ("e5m2", "float8_e5m2"))
FP8_E4M3 = _preset("fp8_e4m3", 4, 3, ("e4m3", "e4m3fn", "fp8_e4m3fn", "float8_e4m3fn"), has_inf=False, nan="all_ones")
# fnuz (AMD, Graphcore): NaN at -0's code, so the all-ones exponent holds numbers; bias one above IEEE's 2^(nexp-1)-1
_FNUZ = {"has_inf": False, "nan": "negative_zero"}
FP8_E5M2FNUZ = _preset("fp8_e5m2fnuz", 5, 2, ("e5m2fnuz", "float8_e5m2fnuz"), bias=2 ** (5 - 1), **_FNUZ)
FP8_E4M3FNUZ = _preset("fp8_e4m3fnuz", 4, 3, ("e4m3fnuz", "float8_e4m3fnuz"), bias=2 ** (4 - 1), **_FNUZ)
FP6_E3M2 = _preset("fp6_e3m2", 3, 2, ("e3m2", "e3m2fn", "fp6_e3m2fn", "float6_e3m2fn"), **_FINITE_ONLY)
FP6_E2M3 = _preset("fp6_e2m3", 2, 3, ("e2m3", "e2m3fn", "fp6_e2m3fn", "float6_e2m3fn"), **_FINITE_ONLY)
FP4_E2M1 = _preset("fp4_e2m1", 2, 1, ("e2m1", "e2m1fn", "fp4", "fp4_e2m1fn", "float4_e2m1fn"), **_FINITE_ONLY)
# OCP MX's scale: 2^-127 … 2^127, one per code; no sign, no zero, NaN at 0xFF ('fnu': finite, NaN, unsigned)
E8M0 = _preset(
    "e8m0", 8, 0, ("e8m0fnu", "float8_e8m0fnu", "ue8m0"), has_inf=False, nan="all_ones", signed=False, has_zero=False
)

PRESETS: dict[str, Format] = {
    f.name: f
    for f in (
        *(FP64, FP32, TF32, FP16, BF16),
        *(FP8_E5M2, FP8_E4M3, FP8_E5M2FNUZ, FP8_E4M3FNUZ),
        *(FP6_E3M2, FP6_E2M3, FP4_E2M1, E8M0),
    )
}
ALIASES: dict[str, str] = {alias: f.name for f in PRESETS.values() for alias in f._aliases}

_CUSTOM_PATTERN = re.compile(r"e(\d+)m(\d+)")


def format_names() -> list[str]:
    """Every name `get_format` accepts, presets first."""
    return [*PRESETS, *ALIASES]


def get_format(spec: Format | str | object) -> Format:
    """A Format from a Format, a name in any case ('fp16', 'BFloat16', 'e4m3'), 'eXmY', or a numpy/torch dtype."""
    if isinstance(spec, Format):
        return spec
    if isinstance(spec, np.dtype) or (isinstance(spec, type) and issubclass(spec, np.generic)):
        spec = np.dtype(spec).name  # numpy and ml_dtypes dtypes: 'float16', 'bfloat16', 'float8_e4m3fn'
    elif type(spec).__module__ == "torch":
        spec = str(spec).removeprefix("torch.")  # torch.float16 -> 'float16'
    if not isinstance(spec, str):
        raise TypeError(f"fmt must be a Format or a format name, got {type(spec).__name__}")
    key = spec.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    custom = _CUSTOM_PATTERN.fullmatch(key)
    if custom:
        nexp, nmant = int(custom[1]), int(custom[2])
        specials = {} if nmant else _FINITE_ONLY  # no mantissa bits, no NaN code: finite only, like e8m0
        return Format(key, nexp, nmant, **specials)
    raise ValueError(
        f"unknown format {spec!r}; valid names are {', '.join(format_names())}, "
        "or 'eXmY' for a custom IEEE-style format with 2 <= X <= 11 and 0 <= Y <= 52"
    )
