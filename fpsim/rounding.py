"""Rounding of real numbers to any Format under every rounding mode, vectorized over cache-sized chunks.

Invariant: each element is rounded once, from its exact float64 value; the only other arithmetic is
scaling by powers of two, which is exact, so no element is ever rounded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fpsim.flags import Flags, report, tracking
from fpsim.formats import Format, get_format

ROUNDING_MODES = {
    "nearest_even": "to the nearest value, ties to an even last bit (IEEE 754 default)",
    "nearest_away": "to the nearest value, ties away from zero",
    "toward_zero": "to the neighbour nearer zero (truncation)",
    "up": "to the neighbour toward +inf",
    "down": "to the neighbour toward -inf",
    "odd": "exact values unchanged, others to the neighbour whose last bit is odd",
    "stochastic": "to either neighbour, with probability proportional to the distance to the other",
}

NAN_INPUT_POLICIES = {
    "raise": "NaN input to a format without NaN raises ValueError",
    "zero": "NaN input to a format without NaN becomes a zero of the NaN's sign",
    "ml_dtypes": "NaN input to a format without NaN becomes a zero of the opposite sign, as ml_dtypes 0.6 does",
}

CHUNK = 1 << 15  # elements per pass: 256 KiB of float64, so the temporaries of one chunk stay in L2 cache
_EXPONENT_MASK = 0x7FF
_SIGN_BIT = np.uint64(1 << 63)
_FLOAT64_BIAS = 1023
_FLOAT64_EMIN = -1022


def check_rounding(mode: object) -> str:
    if not isinstance(mode, str) or mode not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDING_MODES)}; got {mode!r}")
    return mode


def keep_tiny_nonzero(x: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """`scaled` (x divided by something, in place) with each nonzero x that underflowed to 0 made ±2^-1074.

    For a caller whose quanta are all far above 2^-1074, where every rounding mode needs only such an x's sign and
    that it is nonzero (stochastic rounding's probability moves by < 2^-1074).
    """
    lost = (scaled == 0) & (x != 0)
    scaled[lost] = np.copysign(2.0**-1074, x[lost])
    return scaled


# ---- rounding of t = x / quantum to an integer, in place where possible ---------------------
def _nearest_even(t: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    return np.rint(t, out=t)  # the FPU's own round-half-even


def _toward_zero(t: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    return np.trunc(t, out=t)


def _up(t: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    return np.ceil(t, out=t)


def _down(t: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    return np.floor(t, out=t)


def _nearest_away(t: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    fraction, whole = np.modf(t)  # exact split; modf(±inf) = (0, ±inf) with no invalid-operation warning
    whole += np.trunc(2.0 * fraction)  # ±1 exactly when |fraction| >= 1/2
    return np.copysign(whole, t, out=t)  # -0.3 must round to -0, not +0


def _odd(t: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    fraction, whole = np.modf(t)
    even = np.modf(0.5 * whole)[0] == 0  # halving an integer is exact
    whole += np.copysign((fraction != 0) & even, t)  # inexact and even: step away from zero to the odd neighbour
    return np.copysign(whole, t, out=t)


def _stochastic(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # On magnitudes (the split of |t| is exact, that of a negative t is not), with only cheap ufuncs:
    # this mode's time is dominated by drawing the random numbers.
    magnitude = np.minimum(np.abs(t), 2.0**62)  # inf -> a finite value still past max, so no inf - inf
    whole = np.floor(magnitude)
    magnitude -= whole  # the fraction, exactly
    magnitude -= rng.random(t.size)  # > 0 exactly when u < fraction: a rounded difference keeps its sign
    whole += np.ceil(magnitude, out=magnitude)  # +1 with probability = fraction, to a resolution of 2^-53
    whole.view(np.uint64)[...] |= t.view(np.uint64) & _SIGN_BIT  # the sign of t, -0 included
    return whole


def _read_subnormal_exponents(x: np.ndarray, fields: np.ndarray) -> None:
    """Replace the exponent field 0 of float64 subnormals by their true biased exponent floor(log2|x|) + 1023 <= 0.

    Field 0 says only 'below 2^-1022'; a format whose binades reach lower needs the binade itself.
    """
    subnormal = (fields == 0) & (x != 0)
    if subnormal.any():
        fields[subnormal] = np.frexp(x[subnormal])[1] + (_FLOAT64_BIAS - 1)  # x = m·2^e, m in [0.5, 1): binade e - 1


_TO_INTEGER = {
    "nearest_even": _nearest_even,
    "nearest_away": _nearest_away,
    "toward_zero": _toward_zero,
    "up": _up,
    "down": _down,
    "odd": _odd,
    "stochastic": _stochastic,
}


def _as_generator(rng: object) -> np.random.Generator:
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng < 0:
        raise ValueError(f"rng must be a non-negative seed, got {rng}")
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


@dataclass(frozen=True)
class Rounding:
    """One call's rounding parameters, validated once: format, mode, overflow policy, NaN policy, RNG."""

    fmt: Format
    mode: str = "nearest_even"
    overflow: str | None = None
    on_nan: str = "raise"
    rng: np.random.Generator | None = None

    @classmethod
    def resolve(
        cls, fmt: object, rounding: object, overflow: object = None, rng: object = None, on_nan: object = "raise"
    ) -> Rounding:
        fmt = get_format(fmt)
        mode = check_rounding(rounding)
        policy = fmt.overflow if overflow is None else fmt.check_overflow(overflow)
        if not isinstance(on_nan, str) or on_nan not in NAN_INPUT_POLICIES:
            raise ValueError(f"on_nan must be one of {', '.join(map(repr, NAN_INPUT_POLICIES))}; got {on_nan!r}")
        generator = _as_generator(rng) if mode == "stochastic" else None
        return cls(fmt, mode, policy, on_nan, generator)

    @cached_property
    def exact_scaling(self) -> bool:
        """Whether quanta 2^q and 2^-q are normal float64 numbers, so they can be built from bits."""
        return self.fmt.emin - self.fmt.nmant >= _FLOAT64_EMIN and self.fmt.emax <= 1021

    def __call__(
        self, values: np.ndarray, count_flags: bool = False, raised: Flags | None = None
    ) -> tuple[np.ndarray, Flags | None]:
        """Round an array (any dtype that widens exactly to float64); return float64 results and flags.

        `raised` carries exceptions an arithmetic operation raised before this rounding (invalid,
        divide_by_zero), so that they reach the caller and `track_flags` together with the rounding's own.
        """
        self._check_nan_input(values)
        flat = values.reshape(-1)
        out = np.empty(flat.size, dtype=np.float64)
        counting = count_flags or tracking()
        flags = Flags() if counting else None
        for start in range(0, flat.size, CHUNK):
            chunk = flat[start : start + CHUNK]
            if chunk.dtype != np.float64:  # small float64 inputs (reduction steps) skip this context's cost
                with np.errstate(invalid="ignore"):  # widening quietens signaling NaNs: no error of the input
                    chunk = chunk.astype(np.float64)
            chunk_flags = self._round_chunk(chunk, out[start : start + CHUNK], counting)
            if counting:
                flags += chunk_flags
        if counting:
            if raised is not None:
                flags += raised
            report(flags)
        return out.reshape(values.shape), flags

    def _check_nan_input(self, values: np.ndarray) -> None:
        checks_nan = self.fmt.nan == "none" and self.on_nan == "raise" and values.dtype.kind not in "iu"
        if checks_nan and np.isnan(values).any():
            raise ValueError(
                f"x contains NaN, but {self.fmt.name} has no NaN encoding; clean the input, or pass "
                "on_nan='zero' (signed zero) or on_nan='ml_dtypes' (ml_dtypes' opposite-sign zero)"
            )

    def _round_chunk(self, x: np.ndarray, out: np.ndarray, counting: bool) -> Flags | None:
        fmt = self.fmt
        self._round_finite_grid(x, out)
        magnitude = np.abs(out)
        beyond = magnitude > fmt.max  # NaN compares False; infinities are beyond
        if beyond.any():
            self._resolve_overflow(x, out, beyond)
        if not fmt.has_zero:
            self._resolve_below_least(x, out)
        if not fmt.subnormals:  # flush exactly the results whose tininess the underflow flag reports
            flushed = self._tiny(x, magnitude)
            out[flushed] = np.copysign(0.0, out[flushed])  # flush-to-zero keeps the sign
        if fmt.nan == "none" and self.on_nan != "raise":
            self._map_nan(x, out)
        invalid = self._invalid(x, out)
        if invalid is not None:
            out[invalid] = np.nan
        if not fmt.has_negative_zero:
            np.add(out, 0.0, out=out)  # -0 + 0 = +0 (round-to-nearest): the one zero of fnuz and unsigned formats
        return self._count(x, out, beyond, invalid) if counting else None

    def _resolve_below_least(self, x: np.ndarray, out: np.ndarray) -> None:
        """A format without zero (E8M0): below its least magnitude lies only the zero it lacks.

        The modes that round toward zero there (toward_zero, down for x > 0, up for x < 0) have no value to go to,
        just as the modes that round away from zero past max have none: the overflow policy decides both ends
        ('saturate': ±least; otherwise NaN). Every other mode gives ±least, the only neighbour (in nearest modes
        that is also what ml_dtypes gives).
        """
        below = (np.abs(x) < self.fmt.least) & (x != 0)  # NaN compares False; zeros are invalid
        toward_zero = {"toward_zero": below, "down": below & (x > 0), "up": below & (x < 0)}.get(self.mode, False)
        np.copysign(self.fmt.least, x, out=out, where=below)
        bottom = self.fmt.least if self.overflow == "saturate" else np.nan
        np.copysign(bottom, x, out=out, where=toward_zero)

    def _invalid(self, x: np.ndarray, out: np.ndarray) -> np.ndarray | None:
        """Inputs with no value in the format, an invalid operation (NaN): like IEEE 754 §5.8's conversion of a
        negative number to an unsigned integer, a negative result in an unsigned format (a -0 becomes +0), and zero
        in a format without zero (it has no exponent to store). None where the format has sign and zero."""
        fmt = self.fmt
        if fmt.signed and fmt.has_zero:
            return None
        invalid = (x < 0) & (out != 0) if not fmt.signed else np.zeros(x.shape, dtype=bool)
        if not fmt.has_zero:
            invalid |= x == 0
        return invalid

    def _round_finite_grid(self, x: np.ndarray, out: np.ndarray) -> None:
        """out = x rounded to the grid of quanta 2^q, q = max(exponent(x), emin) - nmant; range not yet checked.

        A result far past max may overflow float64 to inf on the way back: the range check treats it as beyond max.
        """
        quantum = (x.view(np.int64) >> 52) & _EXPONENT_MASK
        if self.fmt.emin < _FLOAT64_EMIN:  # the format's binades reach below float64's normals
            _read_subnormal_exponents(x, quantum)
        # clip: binades below emin (float64 subnormals too, when emin >= -1022) share the smallest quantum; at the top,
        # inf/NaN join the highest binade, and the bit-built path also folds in 2^1023 (it overflows there:
        # emax <= 1021) so that 2^-q stays a normal float64 even when nmant = 0.
        np.maximum(quantum, self.fmt.emin + _FLOAT64_BIAS, out=quantum)  # ufuncs: np.clip's wrapper costs more
        np.minimum(quantum, 2045 if self.exact_scaling else 2046, out=quantum)
        quantum -= self.fmt.nmant  # biased float64 exponent of the quantum
        to_integer = _TO_INTEGER[self.mode]
        if self.exact_scaling:
            inverse = ((2 * _FLOAT64_BIAS - quantum) << 52).view(np.float64)  # 2^-q, built exactly from bits
            np.multiply(x, inverse, out=out)  # exact: a power-of-two scaling that stays normal
            rounded = to_integer(self._keep_tiny_nonzero(x, out), self.rng)
            with np.errstate(over="ignore"):
                np.multiply(rounded, (quantum << 52).view(np.float64), out=out)
        else:  # fp64-wide exponent ranges: 2^q may be subnormal and 2^-q may overflow, so ldexp does it
            quantum -= _FLOAT64_BIAS
            rounded = to_integer(self._keep_tiny_nonzero(x, np.ldexp(x, -quantum)), self.rng)
            with np.errstate(over="ignore"):
                np.ldexp(rounded, quantum, out=out)

    def _keep_tiny_nonzero(self, x: np.ndarray, scaled: np.ndarray) -> np.ndarray:
        """Where every quantum exceeds 1 (a custom bias below zero), x / 2^q can underflow float64 to 0.

        Such an x lies below 2^-1074 quanta: every mode then needs only its sign and that it is nonzero,
        so the least float64 stands in for it (stochastic rounding's probability moves by < 2^-1074).
        """
        return keep_tiny_nonzero(x, scaled) if self.fmt.emin - self.fmt.nmant > 0 else scaled

    def _resolve_overflow(self, x: np.ndarray, out: np.ndarray, beyond: np.ndarray) -> None:
        """Past ±max, IEEE 754 §7.4 gives ±max or 'infinity' by mode, and the policy says what infinity is.

        Masked ufuncs on the whole chunk: cheaper than gathering and scattering the overflowed elements.
        """
        infinite = {"inf": np.inf, "saturate": self.fmt.max, "nan": np.nan}[self.overflow]
        away = {"up": x > 0, "down": x < 0, "toward_zero": False, "odd": False}.get(self.mode)
        if away is None:  # nearest and stochastic modes always round past max to infinity
            to_infinity = beyond
        else:
            np.copysign(self.fmt.max, x, out=out, where=beyond)
            to_infinity = beyond & (np.isinf(x) | away)
        np.copysign(infinite, x, out=out, where=to_infinity)
        if self.fmt.has_inf and self.overflow != "inf":  # infinite inputs stay infinite where the format has them
            np.copyto(out, x, where=beyond & np.isinf(x))

    def _map_nan(self, x: np.ndarray, out: np.ndarray) -> None:
        nan = np.isnan(x)
        sign = np.copysign(1.0, x[nan])  # the sign bit of each NaN
        out[nan] = np.copysign(0.0, -sign if self.on_nan == "ml_dtypes" else sign)

    def _count(self, x: np.ndarray, out: np.ndarray, beyond: np.ndarray, invalid: np.ndarray | None) -> Flags:
        fmt = self.fmt
        valid = ~np.isnan(x) if invalid is None else ~(np.isnan(x) | invalid)  # an invalid operation is only that
        inexact = (out != x) & valid
        magnitude = np.abs(out)
        tiny = self._tiny(x, magnitude)
        if not fmt.has_zero:  # below the least magnitude, rounded toward zero to NaN: tiny too
            tiny |= np.isnan(out) & (np.abs(x) < fmt.least)
        overflow = (beyond if not fmt.has_inf else beyond & np.isfinite(x)) & valid
        return Flags(
            total=x.size,
            inexact=int(np.count_nonzero(inexact)),
            overflow=int(np.count_nonzero(overflow)),
            underflow=int(np.count_nonzero(tiny & inexact)),
            flushed_to_zero=int(np.count_nonzero((out == 0) & (x != 0) & valid)),
            subnormal=int(np.count_nonzero((magnitude < fmt.smallest_normal) & (magnitude > 0))),
            nan=int(np.count_nonzero(np.isnan(out))),
            invalid=0 if invalid is None else int(np.count_nonzero(invalid)),
        )

    def _tiny(self, x: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
        """Which results are tiny, detected after rounding as IEEE 754 allows (and x86 does).

        Below the smallest normal is tiny. A result equal to it is tiny too when x lay below it and p-bit
        rounding *without* the subnormal floor would also have stayed below; stochastic rounding, which
        cannot repeat its draw, detects tininess before rounding instead.
        """
        fmt = self.fmt
        tiny = magnitude < fmt.smallest_normal
        at_normal = magnitude == fmt.smallest_normal
        candidates = x[at_normal]
        below = np.abs(candidates) < fmt.smallest_normal
        if self.mode != "stochastic":
            one_more_bit = np.ldexp(candidates, fmt.precision - fmt.emin)  # x / 2^(emin - p), exact
            below &= np.abs(_TO_INTEGER[self.mode](one_more_bit, None)) < 2.0**fmt.precision
        tiny[at_normal] = below
        return tiny
