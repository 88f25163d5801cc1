"""Rounding, encoding and decoding of torch tensors to any Format, with torch tensor operations only (any device).

Invariant: values, codes and flag counts equal the NumPy codec's (fpsim.codec) bit for bit: each element is rounded
once, from its exact value, and every other operation is a scaling by a power of two that stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fpsim.codec import CLASSES
from fpsim.flags import Flags, report, suspended, tracking
from fpsim.formats import FP32, FP64, Format, get_format
from fpsim.rounding import Rounding

__all__ = ["CLASSES", "classify", "decode", "encode", "round"]

_FLOAT8 = tuple(
    getattr(torch, name)
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
    if hasattr(torch, name)
)
_WIDENS_TO_FLOAT32 = (torch.float16, torch.bfloat16, torch.float32, *_FLOAT8)  # each widening is exact
_DIRECTED_PAST_MAX = ("up", "down", "toward_zero", "odd")  # IEEE 754 §7.4: these may stop at ±max


@dataclass(frozen=True)
class _Work:
    """A working precision (float32 or float64) and the integer type of its width, for bit access."""

    fmt: Format
    dtype: torch.dtype
    bits_dtype: torch.dtype

    @property
    def exponent_mask(self) -> int:
        return (2**self.fmt.nexp - 1) << self.fmt.nmant

    def power_of_two(self, exponent: torch.Tensor) -> torch.Tensor:
        """2^exponent built from bits; each exponent must lie in [emin, emax], where 2^e is a normal number."""
        return ((exponent + self.fmt.bias) << self.fmt.nmant).to(self.bits_dtype).view(self.dtype)

    def scale(self, values: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
        """values · 2^exponent for exponents up to twice the normal range, in two exact steps.

        The two halves of the exponent have one sign, so the intermediate lies between values and the result:
        it is exact whenever the result is representable.
        """
        half = exponent >> 1  # floor(exponent / 2)
        return values * self.power_of_two(half) * self.power_of_two(exponent - half)


_FLOAT32 = _Work(FP32, torch.float32, torch.int32)
_FLOAT64 = _Work(FP64, torch.float64, torch.int64)


def _contains(outer: Format, inner: Format) -> bool:
    """Whether every finite value of `inner` is a value of `outer` (which has subnormals)."""
    return (
        inner.nmant <= outer.nmant and inner.emax <= outer.emax and inner.emin - inner.nmant >= outer.emin - outer.nmant
    )


@dataclass(frozen=True)
class _Grid:
    """How one format's quanta 2^q, q = max(exponent(x), emin) - nmant, are applied in one working precision.

    Fast path: q from the exponent field, and Q = 2^(q + constant) built from bits as a normal number; the
    constant (> 0 for bf16, tf32, fp32 in float32 and fp64 in float64, whose least quanta are subnormal)
    lifts the least Q to the least normal. Otherwise (exotic biases) q comes from frexp and each scaling
    takes two exact steps.
    """

    low: int  # least unbiased exponent: emin
    top: int  # greatest: binades above emax + 1 hold only values beyond max, which any quantum shows
    constant: int | None  # None: the two-step path
    fix_tiny: bool  # every quantum exceeds 1 (a bias below zero): x / 2^q may underflow to 0


def _grid(fmt: Format, work: _Work) -> _Grid:
    low, top = fmt.emin, min(fmt.emax + 1, work.fmt.emax)
    constant = max(0, work.fmt.emin - (low - fmt.nmant))  # the least Q becomes 2^emin of the working precision
    greatest_is_normal = top - fmt.nmant + constant <= work.fmt.emax
    field_is_exponent = low >= work.fmt.emin - 1  # a subnormal x's field (0) then reads as emin - 1 <= low
    fast = greatest_is_normal and field_is_exponent
    return _Grid(low, top, constant if fast else None, fmt.emin - fmt.nmant > 0)


@dataclass(frozen=True)
class _Plan:
    """One call's validated parameters."""

    fmt: Format
    mode: str
    overflow: str
    on_nan: str
    generator: torch.Generator | None

    @classmethod
    def resolve(
        cls, fmt: object, rounding: object, overflow: object, on_nan: object, generator: object, device: torch.device
    ) -> _Plan:
        checked = Rounding.resolve(fmt, rounding, overflow, None, on_nan)  # fpsim.round's own validation
        return cls(
            checked.fmt, checked.mode, checked.overflow, checked.on_nan, _generator(generator, checked.mode, device)
        )


def _generator(generator: object, mode: str, device: torch.device) -> torch.Generator | None:
    if generator is None:
        return None
    if mode != "stochastic":
        raise ValueError(f"generator is used only by rounding='stochastic'; got rounding={mode!r}: drop generator")
    if isinstance(generator, int) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(f"generator must be a torch.Generator or a non-negative seed; got {generator}")
        return torch.Generator(device=device).manual_seed(generator)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None; got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {device}: create it with torch.Generator(device=x.device)"
        )
    return generator


# ---- rounding of t = x / quantum to an integer; t is a fresh tensor, modified in place ---------------------------
def _nearest_even(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return t.round_()  # torch.round rounds half to even, on every device


def _toward_zero(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return t.trunc_()


def _up(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return t.ceil_()


def _down(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return t.floor_()


def _nearest_away(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    magnitude = t.abs()
    whole = magnitude.floor()
    whole += (magnitude - whole) >= 0.5  # the fraction is exact; at inf it is NaN, which compares False
    return whole.copysign_(t)  # -0.3 rounds to -0, not +0


def _odd(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    magnitude = t.abs()
    whole = magnitude.floor()
    even = torch.remainder(whole, 2) == 0  # exact on integers
    whole += (magnitude != whole) & even  # inexact and even: one step away from zero, to the odd neighbour
    return whole.copysign_(t)


def _stochastic(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    magnitude = t.abs().clamp_(max=2.0**62)  # inf -> a finite value still past max, so no inf - inf
    whole = magnitude.floor()
    magnitude -= whole  # the fraction, exactly
    # u in [0, 1) on a grid of 2^-24 (float32) or 2^-53 (float64): the probability of rounding up is the fraction
    # rounded up to that grid, exactly the fraction whenever x has no more bits than the working precision
    magnitude -= torch.rand(t.shape, generator=generator, dtype=t.dtype, device=t.device)
    whole += magnitude.ceil_()  # a rounded difference keeps its sign: +1 exactly when u < fraction
    return whole.copysign_(t)


_TO_INTEGER: dict[str, Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "nearest_even": _nearest_even,
    "nearest_away": _nearest_away,
    "toward_zero": _toward_zero,
    "up": _up,
    "down": _down,
    "odd": _odd,
    "stochastic": _stochastic,
}


# ---- the rounding pipeline, in one working precision ----------------------------------------------------------
def _overflow_headroom(plan: _Plan, work: _Work) -> int | None:
    """k such that results past max overflow to ±inf by themselves once scaled by 2^k, where that is the answer.

    In nearest and stochastic modes with the 'inf' policy, beyond max means infinity. An IEEE-layout format's
    max is (2 - 2^-nmant)·2^emax, so a grid value lies beyond it exactly when it reaches 2^(emax+1); scaled by
    2^k, k = emax(work) - emax, that is 2^(emax(work)+1), which overflows the working precision to ±inf.
    None where the masks of `_resolve_overflow` are needed (other modes and policies, the two-step path).
    """
    fmt = plan.fmt
    natural = plan.overflow == "inf" and plan.mode in ("nearest_even", "nearest_away", "stochastic")
    if not natural or _grid(fmt, work).constant is None:
        return None
    headroom = work.fmt.emax - fmt.emax
    fits = fmt.nmant + 1 + headroom - _grid(fmt, work).constant <= work.fmt.emax and -headroom >= work.fmt.emin
    return headroom if fits else None


def _round_on_grid(x: torch.Tensor, plan: _Plan, work: _Work, headroom: int | None) -> torch.Tensor:
    """x rounded to the grid of quanta 2^q: a fresh tensor. The range is not checked, except that with a
    headroom every result past max is ±inf; without, results past max may be finite or inf."""
    grid = _grid(plan.fmt, work)
    nmant = plan.fmt.nmant
    if grid.constant is not None:
        bias, shift = work.fmt.bias, work.fmt.nmant
        field = torch.bitwise_and(x.view(work.bits_dtype), work.exponent_mask)  # biased exponent << M, sign dropped
        field.clamp_((grid.low + bias) << shift, (grid.top + bias) << shift)  # inf/NaN join the top binade
        quantum = field.sub_((nmant - grid.constant) << shift).view(work.dtype)  # 2^(q + constant), normal
        t = x / quantum  # exact: division by a power of two with a normal (or, for subnormal x, larger) result
        if grid.constant:
            t *= 2.0**grid.constant  # exact: t / 2^constant was normal
        t = _keep_tiny_nonzero(x, t) if grid.fix_tiny else t
        rounded = _TO_INTEGER[plan.mode](t, plan.generator)
        lift = headroom or 0
        if lift != grid.constant:
            rounded *= 2.0 ** (lift - grid.constant)  # exact: an integer times 2^(lift - constant) stays normal
        rounded.mul_(quantum)  # r · 2^(q + lift): exact, or ±inf (with a headroom: exactly when past max)
        return rounded.mul_(2.0**-lift) if lift else rounded  # exact: back to r · 2^q, a value of the format
    quantum = (torch.frexp(x).exponent.to(torch.int64) - 1).clamp_(grid.low, grid.top) - nmant  # exact at subnormals
    t = work.scale(x, -quantum)
    t = _keep_tiny_nonzero(x, t) if grid.fix_tiny else t
    return work.scale(_TO_INTEGER[plan.mode](t, plan.generator), quantum)


def _keep_tiny_nonzero(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Where x / 2^q underflowed to 0, every mode needs only the sign and that x is nonzero: the least float will do.

    (Stochastic rounding's probability then moves by less than the working precision's least subnormal.)
    """
    least = torch.finfo(t.dtype).smallest_normal * torch.finfo(t.dtype).eps  # the least subnormal
    lost = (t == 0) & (x != 0)
    return torch.where(lost, torch.copysign(t.new_tensor(least), x), t)


def _nothing_beyond(out: torch.Tensor, fmt: Format) -> bool:
    """Whether every result lies within ±max: one pass without temporaries, so clean data skips the masks."""
    low, high = torch.aminmax(out)
    return bool((low >= -fmt.max) & (high <= fmt.max))  # a NaN makes this False: the masks then decide


def _resolve_overflow(x: torch.Tensor, out: torch.Tensor, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """Past ±max, IEEE 754 §7.4 gives ±max or 'infinity' by mode; the policy says what infinity is.

    Works in place on magnitudes (no float temporaries) and returns (out, which results lay beyond max).
    """
    fmt, mode = plan.fmt, plan.mode
    magnitude = out.abs_()  # the signs come back from x at the end: every mode kept x's sign, -0 and NaN included
    beyond = magnitude > fmt.max  # NaN compares False; infinities are beyond
    to_infinity = beyond
    if mode in _DIRECTED_PAST_MAX:
        magnitude.masked_fill_(beyond, fmt.max)
        away = {"up": x > 0, "down": x < 0}.get(mode)
        to_infinity = beyond & (torch.isinf(x) if away is None else torch.isinf(x) | away)
    magnitude.masked_fill_(to_infinity, {"inf": math.inf, "saturate": fmt.max, "nan": math.nan}[plan.overflow])
    if fmt.has_inf and plan.overflow != "inf":  # infinite inputs stay infinite where the format has them
        magnitude.masked_fill_(torch.isinf(x), math.inf)
    return magnitude.copysign_(x), beyond


def _tiny(x: torch.Tensor, magnitude: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """Which results are tiny, detected after rounding as IEEE 754 allows (and x86 does), as fpsim.codec does.

    Below the smallest normal is tiny. A result equal to it is tiny too when x lay below it and p-bit rounding
    *without* the subnormal floor would also have stayed below; stochastic rounding, which cannot repeat its
    draw, detects tininess before rounding instead.
    """
    fmt = plan.fmt
    at_normal = (magnitude == fmt.smallest_normal) & (x.abs() < fmt.smallest_normal)
    if plan.mode != "stochastic":
        exponent = fmt.precision - fmt.emin  # x · 2^(p - emin) in two exact halves: near 2^p where it matters
        one_more_bit = x * math.ldexp(1.0, exponent // 2) * math.ldexp(1.0, exponent - exponent // 2)
        at_normal &= _TO_INTEGER[plan.mode](one_more_bit, None).abs() < 2.0**fmt.precision
    return (magnitude < fmt.smallest_normal) | at_normal


def _flush(x: torch.Tensor, out: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """Flush-to-zero formats: exactly the results whose tininess the underflow flag reports become ±0."""
    flushed = _tiny(x, out.abs(), plan)
    return torch.where(flushed, torch.copysign(out.new_zeros(()), out), out)  # the sign is kept


def _resolve_below_least(x: torch.Tensor, out: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """A format without zero (E8M0), as fpsim.rounding: below its least magnitude, ±least, except where the mode
    rounds toward zero (toward_zero, down for x > 0, up for x < 0): there the overflow policy decides."""
    least = plan.fmt.least
    below = (x.abs() < least) & (x != 0)  # NaN compares False; zeros are invalid
    toward_zero = {"toward_zero": below, "down": below & (x > 0), "up": below & (x < 0)}.get(plan.mode)
    out = torch.where(below, torch.copysign(out.new_tensor(least), x), out)
    if toward_zero is None:
        return out
    bottom = out.new_tensor(least if plan.overflow == "saturate" else math.nan)
    return torch.where(toward_zero, torch.copysign(bottom, x), out)


def _invalid(x: torch.Tensor, out: torch.Tensor, fmt: Format) -> torch.Tensor | None:
    """As fpsim.rounding: a negative result in an unsigned format (a -0 becomes +0), zero in one without zero."""
    if fmt.signed and fmt.has_zero:
        return None
    invalid = (x < 0) & (out != 0) if not fmt.signed else torch.zeros_like(x, dtype=torch.bool)
    return invalid | (x == 0) if not fmt.has_zero else invalid


def _map_nan(x: torch.Tensor, out: torch.Tensor, on_nan: str) -> torch.Tensor:
    sign = -x if on_nan == "ml_dtypes" else x  # negation flips a NaN's sign bit too
    return torch.where(torch.isnan(x), torch.copysign(out.new_zeros(()), sign), out)


def _count(
    x: torch.Tensor, out: torch.Tensor, beyond: torch.Tensor | None, invalid: torch.Tensor | None, plan: _Plan
) -> Flags:
    fmt = plan.fmt
    valid = ~torch.isnan(x) if invalid is None else ~(torch.isnan(x) | invalid)  # an invalid operation is only that
    inexact = (out != x) & valid
    magnitude = out.abs()
    tiny = _tiny(x, magnitude, plan)
    if not fmt.has_zero:  # below the least magnitude, rounded toward zero to NaN: tiny too
        tiny |= torch.isnan(out) & (x.abs() < fmt.least)
    overflow = 0 if beyond is None else int(((beyond & torch.isfinite(x) if fmt.has_inf else beyond) & valid).sum())
    return Flags(
        total=x.numel(),
        inexact=int(inexact.sum()),
        overflow=overflow,
        underflow=int((tiny & inexact).sum()),
        flushed_to_zero=int(((out == 0) & (x != 0) & valid).sum()),
        subnormal=int(((magnitude < fmt.smallest_normal) & (magnitude > 0)).sum()),
        nan=int(torch.isnan(out).sum()),
        invalid=0 if invalid is None else int(invalid.sum()),
    )


def _round_exact(x: torch.Tensor, plan: _Plan, work: _Work, counting: bool) -> tuple[torch.Tensor, Flags | None]:
    """The rounded values of x (already in the working dtype), exact in it; flags when counting."""
    fmt = plan.fmt
    if fmt.nan == "none" and plan.on_nan == "raise" and bool(torch.isnan(x).any()):
        raise ValueError(
            f"x contains NaN, but {fmt.name} has no NaN encoding; clean the input, or pass "
            "on_nan='zero' (signed zero) or on_nan='ml_dtypes' (ml_dtypes' opposite-sign zero)"
        )
    if x.numel() == 0:
        return x.clone(), Flags() if counting else None
    headroom = _overflow_headroom(plan, work)
    out, beyond = _round_on_grid(x, plan, work, headroom), None
    if headroom is not None:  # past max is ±inf already
        beyond = torch.isinf(out) if counting else None
    elif not _nothing_beyond(out, fmt):
        out, beyond = _resolve_overflow(x, out, plan)
    if not fmt.has_zero:
        out = _resolve_below_least(x, out, plan)
    if not fmt.subnormals:
        out = _flush(x, out, plan)
    if fmt.nan == "none" and plan.on_nan != "raise":
        out = _map_nan(x, out, plan.on_nan)
    invalid = _invalid(x, out, fmt)
    if invalid is not None:
        out = out.masked_fill(invalid, math.nan)
    if not fmt.has_negative_zero:
        out = out + 0.0  # -0 + 0 = +0: the one zero of fnuz and unsigned formats; nothing else changes
    return out, _count(x, out, beyond, invalid, plan) if counting else None


# ---- public API ---------------------------------------------------------------------------------------------------
def _floating(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch tensor, got {type(x).__name__}; for NumPy arrays and numbers use fpsim.round"
        )
    if x.dtype not in (*_WIDENS_TO_FLOAT32, torch.float64):
        raise TypeError(
            f"{name} must be a floating tensor (float16, bfloat16, float32, float64 or float8), got {x.dtype}; "
            f"convert it first, e.g. {name}.float()"
        )
    return x.detach()


def _work_for(dtype: torch.dtype, fmt: Format) -> _Work:
    """float32 when the input and every value of the format are float32 values (fast on GPUs), else float64."""
    return _FLOAT32 if dtype in _WIDENS_TO_FLOAT32 and _contains(FP32, fmt) else _FLOAT64


def _round_values(
    x: object, fmt: object, rounding: object, overflow: object, on_nan: object, generator: object, flags: bool
) -> tuple[torch.Tensor, _Plan, torch.dtype, Flags | None]:
    """Validate, round exactly in the working precision; return (values, plan, the output dtype, flags)."""
    tensor = _floating(x, "x")
    plan = _Plan.resolve(fmt, rounding, overflow, on_nan, generator, tensor.device)
    work = _work_for(tensor.dtype, plan.fmt)
    counting = flags or tracking()
    values, counts = _round_exact(tensor.to(work.dtype), plan, work, counting)
    if counting:
        report(counts)
    out_dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    return values, plan, out_dtype, counts


def round(
    x: torch.Tensor,
    fmt: Format | str,
    rounding: str = "nearest_even",
    *,
    overflow: str | None = None,
    on_nan: str = "raise",
    generator: torch.Generator | int | None = None,
    flags: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Flags]:
    """x rounded to `fmt` as `fpsim.round` does, on x's device: float64 in gives float64 out, any other float32.

    The float32 result is exact for every format whose values are float32 values (all presets but fp64, which
    returns float32 input unchanged); where a wider custom format gives a value float32 cannot hold (its max,
    say), ValueError asks for float64 input.
    `generator` (a torch.Generator on x's device, or an int seed) drives rounding='stochastic'. With
    `flags=True` the result is `(tensor, Flags)`; `fpsim.track_flags()` blocks count these roundings too.
    """
    values, plan, out_dtype, counts = _round_values(x, fmt, rounding, overflow, on_nan, generator, flags)
    result = values.to(out_dtype)
    if result.dtype != values.dtype:  # float32 input, a format wider than float32: check that nothing was lost
        lost = (result.to(values.dtype) != values) & ~torch.isnan(values)
        if bool(lost.any()):
            raise ValueError(
                f"x rounded to {plan.fmt.name} gives values that float32 cannot hold (such as its max "
                f"{plan.fmt.max!r}); pass x as a float64 tensor"
            )
    return (result, counts) if flags else result


def _code_dtype(fmt: Format) -> torch.dtype:
    """uint8 up to 8 bits, else the signed type of the next width: torch has no arithmetic on uint16/32/64."""
    for bits, dtype in ((8, torch.uint8), (16, torch.int16), (32, torch.int32)):
        if fmt.bits <= bits:
            return dtype
    return torch.int64


def _sign_value(fmt: Format, dtype: torch.dtype) -> int:
    """What the sign bit adds to a code: 2^(bits-1), or -2^(bits-1) when it is the sign bit of a signed dtype."""
    full_width = dtype.is_signed and torch.iinfo(dtype).bits == fmt.bits
    return -(1 << (fmt.bits - 1)) if full_width else 1 << (fmt.bits - 1)


def _canonical_nan_code(fmt: Format) -> int:
    """The positive quiet NaN: top mantissa bit set for IEEE (0x7e00 in fp16), all ones for 'fn' formats; in fnuz
    formats the one NaN, at the code of -0, gets its sign bit from `_sign_value` (every NaN counts as negative)."""
    if fmt.nan == "negative_zero":
        return 0
    return fmt.max_code + 1 + ((1 << (fmt.nmant - 1)) if fmt.nan == "ieee" else 0)


def _to_codes(values: torch.Tensor, fmt: Format, work: _Work) -> torch.Tensor:
    """Codes of values that fmt holds exactly (or ±inf/NaN that it has), in `_code_dtype(fmt)`."""
    magnitude = values.abs()
    binade = (torch.frexp(magnitude).exponent.to(torch.int64) - 1).clamp_(min=fmt.emin)  # exact at subnormals
    binade = torch.where(magnitude == 0, fmt.emin, binade)  # frexp(0) gives exponent 0, not emin
    # code = (binade + bias - 1)·2^nmant + |v| / 2^(binade - nmant); the second term is the integer significand,
    # whose hidden bit lifts a normal's field to binade + bias (in a format without zero, field 0 is normal too)
    significand = work.scale(magnitude, fmt.nmant - binade).nan_to_num_(0.0, 0.0, 0.0).to(torch.int64)
    codes = ((binade + fmt.bias - 1) << fmt.nmant) + significand
    if fmt.has_inf:
        codes = torch.where(torch.isinf(magnitude), fmt.max_code + 1, codes)
    codes = torch.where(torch.isnan(magnitude), _canonical_nan_code(fmt), codes)
    dtype = _code_dtype(fmt)
    if fmt.signed:  # the kernel leaves no -0 where the format has none
        negative = torch.signbit(values)
        if fmt.nan == "negative_zero":  # fnuz's one NaN is the code of -0, whatever the NaN's sign
            negative |= torch.isnan(values)
        codes += negative * _sign_value(fmt, dtype)
    return codes.to(dtype)


def encode(
    x: torch.Tensor,
    fmt: Format | str,
    rounding: str = "nearest_even",
    *,
    overflow: str | None = None,
    on_nan: str = "raise",
    generator: torch.Generator | int | None = None,
    flags: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Flags]:
    """The bit patterns of x rounded to `fmt`, on x's device; arguments are those of `round`.

    Codes of formats up to 8 bits are uint8; wider ones use int16, int32 or int64, which hold the same bits as
    fpsim.encode's uint16/32/64 (torch lacks arithmetic on those): a code with the sign bit of a 16-, 32- or
    64-bit format reads as negative, and `.view(torch.float16)` of fp16 codes gives the values back.
    NaN becomes the canonical quiet NaN with the input's sign.
    """
    values, plan, _, counts = _round_values(x, fmt, rounding, overflow, on_nan, generator, flags)
    codes = _to_codes(values, plan.fmt, _FLOAT64 if values.dtype == torch.float64 else _FLOAT32)
    return (codes, counts) if flags else codes


def _as_codes(codes: object, fmt: Format) -> torch.Tensor:
    """Codes as int64 in [0, 2^bits): a dtype exactly `bits` wide may be signed (the sign bit reads negative)."""
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype.is_complex:
        kind = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise TypeError(f"codes must be an integer torch tensor of bit patterns, got {kind}")
    if codes.dtype == torch.bool:
        raise TypeError("codes must be an integer torch tensor of bit patterns, got torch.bool")
    wide = codes.to(torch.int64)
    if codes.dtype.is_signed and torch.iinfo(codes.dtype).bits == fmt.bits:
        return wide & ((1 << fmt.bits) - 1) if fmt.bits < 64 else wide  # int64: the sign bit stays in place
    # every non-negative int64 lies below 2^63, a bound int64 cannot hold: formats of 63 bits check only the sign
    bounded = fmt.bits < 63
    if wide.numel() and (bool(wide.min() < 0) or (bounded and bool(wide.max() >= 1 << fmt.bits))):
        raise ValueError(
            f"codes must be in [0, 2^{fmt.bits}) for {fmt.name} (or a signed {fmt.bits}-bit dtype); "
            f"got values from {int(wide.min())} to {int(wide.max())}"
        )
    return wide


def decode(codes: torch.Tensor, fmt: Format | str) -> torch.Tensor:
    """The values of bit patterns of `fmt`, on the codes' device: float32 when every value of fmt is a float32
    (all presets but fp64), else float64. Accepts the dtypes `encode` gives and any integer tensor in range.
    """
    fmt = get_format(fmt)
    wide = _as_codes(codes, fmt)
    work = _FLOAT32 if _contains(FP32, fmt) else _FLOAT64
    exponent = (wide >> fmt.nmant) & (2**fmt.nexp - 1)  # arithmetic shift: the mask drops a 64-bit sign
    mantissa = wide & (2**fmt.nmant - 1)
    normal_field = fmt.lowest_normal_field  # 1, or 0 in a format without zero (e8m0's field 0 is 2^-127)
    significand = torch.where(exponent < normal_field, mantissa, mantissa + 2**fmt.nmant)
    if not fmt.subnormals:  # flush-to-zero formats read subnormal codes as zero
        significand = torch.where(exponent == 0, 0, significand)
    # value = significand · 2^(max(exponent, normal_field) - bias - nmant): at most p bits, exact in work
    values = work.scale(significand.to(work.dtype), exponent.clamp(min=normal_field) - fmt.bias - fmt.nmant)
    top = exponent == 2**fmt.nexp - 1
    if fmt.nan == "ieee":
        values = torch.where(top, torch.where(mantissa == 0, math.inf, math.nan), values)
    elif fmt.nan == "all_ones":
        values = torch.where(top & (mantissa == 2**fmt.nmant - 1), math.nan, values)
    if not fmt.signed:
        return values
    negative = ((wide >> (fmt.bits - 1)) & 1) == 1
    if fmt.nan == "negative_zero":  # the code of -0 is the NaN
        values = torch.where(negative & (exponent == 0) & (mantissa == 0), math.nan, values)
    return torch.where(negative, -values, values)


def classify(
    x: torch.Tensor,
    fmt: Format | str,
    rounding: str = "nearest_even",
    *,
    overflow: str | None = None,
    on_nan: str = "raise",
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """The class of each x once rounded to `fmt`, as an int8 tensor indexing CLASSES
    ('zero', 'subnormal', 'normal', 'inf', 'nan'): `CLASSES[i]` names class i. Options are those of `round`.
    """
    with suspended():  # a query, not a rounding the caller's flag counts should see
        values, plan, _, _ = _round_values(x, fmt, rounding, overflow, on_nan, generator, flags=False)
    magnitude = values.abs()
    classes = torch.full(values.shape, CLASSES.index("normal"), dtype=torch.int8, device=values.device)
    classes[magnitude < plan.fmt.smallest_normal] = CLASSES.index("subnormal")
    classes[magnitude == 0] = CLASSES.index("zero")
    classes[torch.isinf(values)] = CLASSES.index("inf")
    classes[torch.isnan(values)] = CLASSES.index("nan")
    return classes
