"""Block-scaled formats (OCP MX, NVFP4): each block of elements shares one scale chosen from the block's amax.

Invariant: value = element × block scale (× tensor scale) exactly, and each element is rounded once from its exact
scaled value; the scale is a function of the block's amax alone (and, for e4m3 scales, of the tensor scale).

Sources and the choices made here:
- OCP Microscaling Formats (MX) v1.0 spec, §6.3: X = 2^(floor(log2(max|V_i|)) − emax_elem), the elements
  P_i = V_i / X rounded to nearest even with normal numbers clamped (saturating) to ±max of the element format.
  E8M0 holds 2^-127 … 2^127 (code 0xFF is NaN). Decoding (§5.1): a NaN scale makes every value of its block NaN;
  under a finite scale an element's own NaN or ±inf stays that element's.
  * `saturated` counts IEEE 754 §7.4 overflows: elements whose rounding, as if the exponent range were unbounded,
    exceeds ±max (then clamped). An element just past max that rounds to max (449 in e4m3) is not saturated.
  * The exponent is clamped to [-127, 127]: an all-zero block (log2 0 = −inf) gets 2^-127, E8M0's smallest, as
    torchao (`to_mx`) and microxcaling (`_shared_exponents`) also give; a block past 2^(127+emax) keeps 2^127 and
    its elements saturate (microxcaling returns NaN there; no float32 input reaches it).
  * A block holding NaN or ±inf gets a NaN scale and so NaN values: fpsim's choice (the spec's NaN-scale rule is
    about decoding), the one torchao makes (`to_mx` maps a non-finite amax to 0xFF); `on_nan="raise"` refuses it.
- torchao's ScaleCalculationMode (torchao/prototype/mx_formats/mx_tensor.py, `to_mx`), with m = amax / 2^floor(log2
  amax) in [1, 2) and emax, max, nmant those of the element format:
  * "floor": floor(log2 amax) − emax (the OCP rule);
  * "rceil": ceil(log2(amax / max)), the smallest power of two that keeps amax / X ≤ max (cuBLAS's MXFP8 rule,
    `cvt.rp.ue8m0`): one more than floor exactly when m·2^emax > max. torchao divides in float32 first; here the
    comparison is exact;
  * "even": floor(log2(amax rounded to nmant mantissa bits, ties up)) − emax: one more than floor exactly when
    m ≥ 2 − 2^-(nmant+1).
- NVFP4 (NVIDIA Blackwell; torchao `nvfp4_tensor._nvfp4_quantize` with a per-tensor scale): blocks of 16 e2m1
  elements, each block's scale an fp8 e4m3 value S_b = RNE_e4m3(amax_b / (6·s_t)) clamped to [2^-6, 448] (torchao
  clamps to e4m3's smallest normal and max before the cast), under an fp32 tensor scale
  s_t = fp32(amax_tensor / (448·6)) over the finite values (1 when they are all zero). The scale is not a power of
  two. Here the quotients are exact rationals rounded once (torchao rounds amax/6 to float32 first).
Exactness: a float64 quotient x / D rounded once to a p-bit format equals the rounding of the exact quotient whenever
every midpoint times D is a float64 (so x cannot lie strictly between); D = s_t·S_b has at most 28 bits, hence the
limit of 24 bits of precision for elements under an e4m3 scale. Power-of-two scales divide exactly. A quotient below
2^-1022 may be rounded or lost to 0, but elements' quanta are at least 2^-1020, so only its sign and that it is
nonzero matter: a lost one is replaced by ±2^-1074 (as fpsim.rounding does for tiny scaled values).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console, ConsoleOptions
from rich.text import Text

from fpsim._inputs import as_float64, as_real_array
from fpsim._terminal import table
from fpsim.codec import round as round_to
from fpsim.flags import suspended
from fpsim.formats import (
    E8M0,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    FP32,
    Format,
    _check_int,
    get_format,
)
from fpsim.rounding import CHUNK, Rounding, check_rounding, keep_tiny_nonzero

SCALE_MODES = {
    "floor": "floor(log2 amax) − emax of the element (OCP MX v1.0); the largest elements may saturate",
    "rceil": "ceil(log2(amax / element max)): the smallest power of two under which nothing saturates",
    "even": "floor(log2 of amax rounded to the element's mantissa bits) − emax (torchao's EVEN)",
}
NAN_BLOCK_POLICIES = {
    "propagate": "a block with NaN or ±inf gets a NaN scale and NaN values (as torchao does)",
    "raise": "NaN or ±inf input raises ValueError",
}
E8M0_EMIN, E8M0_EMAX = E8M0.emin, E8M0.emax  # 2^-127 … 2^127; code 0xFF is NaN
E4M3_SCALE_MIN = FP8_E4M3.smallest_normal  # 2^-6: torchao clamps block scales here before the e4m3 cast
_MAX_ELEMENT_PRECISION_UNDER_E4M3 = 24  # keeps x / (s_t·S_b) rounded once exact (module docstring)
_MIN_ELEMENT_QUANTUM_EXPONENT = -1020  # a scaled element that float64 rounds (below 2^-1022) stays below half a quantum
_SCALE_ALIASES = {"ue4m3": "fp8_e4m3"}  # NVFP4's name for its (positive) e4m3 scales; fpsim.formats has the rest


def _scale_name(scale: object) -> str:
    """'e8m0' or 'fp8_e4m3', from a Format or any name get_format accepts for one of them (or 'ue4m3')."""
    if isinstance(scale, str):
        scale = _SCALE_ALIASES.get(scale.strip().lower().replace("-", "_"), scale)
    elif not isinstance(scale, Format):
        raise TypeError(f"scale must be a format name or a Format, got {type(scale).__name__}")
    try:
        fmt = get_format(scale)
    except ValueError:
        fmt = None  # unknown names get the message below, which says what a block scale can be
    if fmt not in (E8M0, FP8_E4M3):
        shown = scale.name if isinstance(scale, Format) else scale
        raise ValueError(
            f"scale must be 'e8m0' (a power-of-two scale, OCP MX) or 'fp8_e4m3' (NVFP4's recipe); got {shown!r}, "
            "which is not a block-scale format"
        )
    return fmt.name


@dataclass(frozen=True)
class BlockFormat:
    """Elements of format `element` in blocks of `block` along one axis, each block with one scale of `scale`."""

    element: Format
    scale: str
    block: int = 32
    name: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "element", get_format(self.element))
        unbounded_element(self.element)  # refuses elements without sign or zero, or too wide for float64 arithmetic
        object.__setattr__(self, "scale", _scale_name(self.scale))
        object.__setattr__(self, "block", _check_int("block", self.block, 1, 2**20))
        if self.scale == "fp8_e4m3" and self.element.precision > _MAX_ELEMENT_PRECISION_UNDER_E4M3:
            raise ValueError(
                f"an fp8_e4m3 block scale needs elements of at most {_MAX_ELEMENT_PRECISION_UNDER_E4M3} bits of "
                f"precision to stay exact; {self.element.name} has {self.element.precision}"
            )
        if not self.name:
            object.__setattr__(self, "name", f"{self.element.name}x{self.block}/{self.scale}")

    @property
    def power_of_two(self) -> bool:
        """Whether each block's scale is a power of two (E8M0, MX); else an e4m3 value under a tensor scale."""
        return self.scale == "e8m0"

    @property
    def scale_format(self) -> Format:
        """The Format of the stored block scales (e8m0 or fp8_e4m3): `fpsim.encode(result.scales, fmt.scale_format)`
        gives their codes (E8M0: exponent + 127, 0xFF for a NaN block)."""
        return get_format(self.scale)

    @property
    def bits_per_value(self) -> float:
        """Storage per element, the 8-bit scale shared by the block (MXFP8: 8.25; the tensor scale not counted)."""
        return self.element.bits + 8 / self.block

    def __str__(self) -> str:
        return self.name


@functools.cache
def unbounded_element(element: Format) -> Format:
    """The element's grid with a wider exponent range: rounding into it shows the IEEE overflow (result past max).

    Elements are rounded into this format and then clamped to ±max, so an element is 'saturated' exactly where its
    rounding, as if the exponent range were unbounded, exceeds max (IEEE 754 §7.4's overflow).
    """
    if not (element.signed and element.has_zero):
        raise ValueError(
            f"block elements must be signed formats with zero (fp8, fp6, fp4, fp16, bf16, fp32 or custom signed ones); "
            f"{element.name} is {'unsigned' if not element.signed else 'without zero'}, so a block's negative or "
            "zero elements would have no value"
        )
    if element.emin - element.nmant < _MIN_ELEMENT_QUANTUM_EXPONENT:
        raise ValueError(
            f"block elements need a smallest subnormal of at least 2^{_MIN_ELEMENT_QUANTUM_EXPONENT} so that "
            f"x / scale stays exact in float64; {element.name}'s is 2^{element.emin - element.nmant} (use fp32 or "
            "narrower elements)"
        )
    try:
        return Format(
            f"{element.name}, unbounded",
            element.nexp + 1,
            element.nmant,
            bias=element.bias,
            has_inf=False,
            nan="negative_zero" if element.nan == "negative_zero" else "none",  # fnuz: -0 is NaN's code, so 0 is +0
            subnormals=element.subnormals,
            overflow="saturate",
        )
    except ValueError as error:
        raise ValueError(
            f"block elements need a range within float64's; {element.name} reaches 2^{element.emax}"
        ) from error


BLOCK_FORMATS: dict[str, BlockFormat] = {
    f.name: f
    for f in (
        BlockFormat(FP8_E4M3, "e8m0", 32, "mxfp8_e4m3"),
        BlockFormat(FP8_E5M2, "e8m0", 32, "mxfp8_e5m2"),
        BlockFormat(FP6_E3M2, "e8m0", 32, "mxfp6_e3m2"),
        BlockFormat(FP6_E2M3, "e8m0", 32, "mxfp6_e2m3"),
        BlockFormat(FP4_E2M1, "e8m0", 32, "mxfp4"),
        BlockFormat(FP4_E2M1, "fp8_e4m3", 16, "nvfp4"),
    )
}
BLOCK_ALIASES = {"mxfp8": "mxfp8_e4m3", "mxfp4_e2m1": "mxfp4", "mxfp6": "mxfp6_e2m3"}


def get_block_format(spec: BlockFormat | str) -> BlockFormat:
    """A BlockFormat from itself or a preset name in any case ('mxfp8_e4m3', 'MXFP4', 'nvfp4', alias 'mxfp8')."""
    if isinstance(spec, BlockFormat):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"fmt must be a BlockFormat or a block format name, got {type(spec).__name__}")
    key = spec.strip().lower().replace("-", "_")
    key = BLOCK_ALIASES.get(key, key)
    if key not in BLOCK_FORMATS:
        names = ", ".join([*BLOCK_FORMATS, *BLOCK_ALIASES])
        raise ValueError(f"unknown block format {spec!r}; valid names are {names}, or build fpsim.BlockFormat(...)")
    return BLOCK_FORMATS[key]


def block_format_or_none(spec: object) -> BlockFormat | None:
    """The BlockFormat `spec` names (as get_block_format accepts it: a BlockFormat, a preset or alias in any case),
    else None: for callers that tell block formats from element formats."""
    try:
        return get_block_format(spec)
    except (TypeError, ValueError):
        return None


# ---- validation shared with fpsim.torch.blocks --------------------------------------------------------------
@dataclass(frozen=True)
class BlockPlan:
    """One call's validated parameters: format, scale rule, element rounding, NaN policy, partial blocks."""

    fmt: BlockFormat
    scale_mode: str | None
    rounding: str
    on_nan: str
    partial: bool

    @classmethod
    def resolve(cls, fmt: object, scale_mode: object, rounding: object, on_nan: object, partial: object) -> BlockPlan:
        fmt = get_block_format(fmt)
        if fmt.power_of_two:
            scale_mode = "floor" if scale_mode is None else scale_mode
            if not isinstance(scale_mode, str) or scale_mode not in SCALE_MODES:
                raise ValueError(f"scale_mode must be one of {', '.join(map(repr, SCALE_MODES))}; got {scale_mode!r}")
        elif scale_mode is not None:
            raise ValueError(
                f"scale_mode applies to power-of-two (e8m0) scales; {fmt.name}'s fp8_e4m3 scale is amax / "
                f"{fmt.element.max:g} rounded to nearest even: leave scale_mode=None"
            )
        if not isinstance(on_nan, str) or on_nan not in NAN_BLOCK_POLICIES:
            raise ValueError(f"on_nan must be one of {', '.join(map(repr, NAN_BLOCK_POLICIES))}; got {on_nan!r}")
        if not isinstance(partial, bool):
            raise TypeError(f"partial must be a bool, got {type(partial).__name__}")
        return cls(fmt, scale_mode, check_rounding(rounding), on_nan, partial)

    def check_length(self, length: int, axis: int) -> None:
        if not self.partial and length % self.fmt.block:
            raise ValueError(
                f"x has {length} elements along axis {axis}, not a multiple of the block size {self.fmt.block}; "
                "pad x, or pass partial=True to quantize the last short block on its own"
            )

    def check_tensor_scale(self, tensor_scale: object) -> float | None:
        """None, or a positive finite float32 value (only formats with an e4m3 scale have a tensor scale)."""
        if tensor_scale is None:
            return None
        if self.fmt.power_of_two:
            raise ValueError(
                f"tensor_scale applies to formats with an fp8_e4m3 scale (nvfp4); {self.fmt.name} has none"
            )
        if isinstance(tensor_scale, bool) or not isinstance(tensor_scale, (int, float, np.floating, np.integer)):
            raise TypeError(f"tensor_scale must be a number, got {type(tensor_scale).__name__}")
        value = float(tensor_scale)
        if not (math.isfinite(value) and value > 0 and float(round_to(value, FP32)) == value):
            raise ValueError(f"tensor_scale must be a positive finite float32 value, got {tensor_scale!r}")
        return value

    def refuse_nonfinite(self, rows: object, isfinite: Callable) -> None:
        """Under on_nan='raise', refuse (rows, length) holding NaN or ±inf; `isfinite` is the array library's."""
        if self.on_nan != "raise":
            return
        bad_blocks = sum(int((~part.all(axis=1)).sum()) for part in split_blocks(isfinite(rows), self.fmt.block))
        if bad_blocks:
            raise ValueError(
                f"x has NaN or ±inf in {bad_blocks} block(s); on_nan='propagate' gives such a block a NaN scale "
                "and NaN values, as torchao does"
            )

    def tensor_scale(self, given: float | None, finite_amax: Callable[[], float]) -> float:
        """The tensor scale: 1 for power-of-two formats, else `given` or the default from x's finite amax."""
        if self.fmt.power_of_two:
            return 1.0
        return given if given is not None else self.default_tensor_scale(finite_amax())

    def default_tensor_scale(self, finite_amax: float) -> float:
        """s_t = fp32(amax / (448 · element max)); 1 for an all-zero tensor, fp32's smallest subnormal at least."""
        if finite_amax == 0:
            return 1.0
        quotient = finite_amax / (FP8_E4M3.max * self.fmt.element.max)  # exact divisor; rounded once (docstring)
        scale = float(round_to(quotient, FP32, overflow="inf"))
        if math.isinf(scale):
            raise ValueError(
                f"x's largest magnitude {finite_amax:g} needs a tensor scale amax / (448 · {self.fmt.element.max:g}) "
                "beyond float32's range; scale x down, or pass tensor_scale"
            )
        return max(scale, math.ldexp(1.0, FP32.emin - FP32.nmant))


def normalize_axis(axis: object, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if ndim == 0:
        raise ValueError("x must have at least one dimension: blocks run along an axis")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for x with {ndim} dimension(s)")
    return int(axis) % ndim


# ---- results ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockFlags:
    """Per block (the shape of `scales`): elements flushed to zero (nonzero in, zero out), elements saturated (rounded
    past ±max as if the exponent range were unbounded, IEEE overflow, then clamped to ±max), NaN-scale blocks."""

    flushed: object
    saturated: object
    nan: object

    @property
    def total_flushed(self) -> int:
        return int(self.flushed.sum())

    @property
    def total_saturated(self) -> int:
        return int(self.saturated.sum())

    @property
    def nan_blocks(self) -> int:
        return int(self.nan.sum())

    def to_dict(self) -> dict[str, int]:
        return {"flushed": self.total_flushed, "saturated": self.total_saturated, "nan_blocks": self.nan_blocks}


@dataclass(frozen=True)
class BlockQuantized:
    """x quantized to a block format (NumPy arrays here, tensors from fpsim.torch.quantize_blocks).

    `values` (x's shape): element × scale × tensor_scale, exact. `elements` (x's shape): the element-format values
    before scaling back. `scales` (x's shape with the block axis holding one entry per block, the last one for a
    short last block): the decoded block scales (powers of two for MX, e4m3 values for nvfp4), NaN for a block with
    NaN or ±inf. `tensor_scale`: 1.0 for MX. `flags`: BlockFlags.
    """

    fmt: BlockFormat
    axis: int
    scale_mode: str | None
    values: object
    elements: object
    scales: object
    tensor_scale: float
    flags: BlockFlags


# ---- the NumPy kernel ----------------------------------------------------------------------------------------
def power_of_two_exponents(amax: np.ndarray, element: Format, scale_mode: str, clamp: bool = True) -> np.ndarray:
    """The E8M0 exponent per block from its amax (finite, ≥ 0), clamped to [-127, 127] (unless `clamp=False`, for
    amax > 0); see the module docstring."""
    mantissa, exponent = np.frexp(amax)  # amax = mantissa·2^exponent, mantissa in [0.5, 1); frexp(0) = (0, 0)
    shared = exponent.astype(np.int64) - 1 - element.emax  # floor(log2 amax) − emax, exact
    if scale_mode == "rceil":
        shared += np.ldexp(mantissa, element.emax + 1) > element.max  # amax / 2^shared beyond max: one more
    elif scale_mode == "even":
        shared += 2 * mantissa >= 2 - math.ldexp(1.0, -(element.nmant + 1))  # rounding amax carries a binade
    shared[amax == 0] = E8M0_EMIN  # log2(0) = −inf, clamped to E8M0's smallest
    return np.clip(shared, E8M0_EMIN, E8M0_EMAX) if clamp else shared


def e4m3_block_scales(amax: np.ndarray, element: Format, tensor_scale: float) -> np.ndarray:
    """S_b = RNE_e4m3(amax / (element max · s_t)) clamped to [2^-6, 448] (torchao's clamp), one rounding."""
    with np.errstate(over="ignore"):  # a given tensor scale far below amax / 2688: inf, which saturates at 448
        ratio = amax / (element.max * tensor_scale)  # the divisor is exact (≤ 28 bits); rounded once (docstring)
    return np.maximum(round_to(ratio, FP8_E4M3, overflow="saturate"), E4M3_SCALE_MIN)


def _quantize_rows(blocks: np.ndarray, plan: BlockPlan, tensor_scale: float, rounding: Rounding) -> tuple:
    """Quantize a (nblocks, size) array of blocks: (elements, values, scales, flushed, saturated, nan).

    Works through cache-sized chunks of blocks (as the rounding kernel does), so temporaries stay in L2 cache.
    """
    nblocks, size = blocks.shape
    out = (
        np.empty(blocks.shape),
        np.empty(blocks.shape),
        np.empty(nblocks),
        np.empty(nblocks, np.int64),
        np.empty(nblocks, np.int64),
        np.empty(nblocks, bool),
    )
    step = max(1, CHUNK // size)
    for start in range(0, nblocks, step):
        chunk = slice(start, start + step)
        results = _quantize_chunk(blocks[chunk], plan, tensor_scale, rounding)
        for target, result in zip(out, results):
            target[chunk] = result
    elements, values, scales, flushed, saturated, nan = out
    return elements, values, scales, flushed, saturated, nan


def _quantize_chunk(blocks: np.ndarray, plan: BlockPlan, tensor_scale: float, rounding: Rounding) -> tuple:
    element = plan.fmt.element
    blocks = blocks.astype(np.float64, copy=False)  # exact for every accepted dtype
    amax = np.abs(blocks).max(axis=1, initial=0.0)  # NaN or inf when the block holds one
    nan = ~np.isfinite(amax)
    if nan.any():  # NaN and ±inf leave the arithmetic; their blocks become NaN below
        blocks = np.where(nan[:, None], 0.0, blocks)  # whole blocks: a finite 2^900 beside a NaN would overflow
        amax[nan] = 0.0
    if plan.fmt.power_of_two:
        exponents = power_of_two_exponents(amax, element, plan.scale_mode)
        scales = divisor = np.ldexp(1.0, exponents)
        inverse = np.ldexp(1.0, -exponents)  # exact: 2^-k is a normal float64 for |k| <= 127
        scaled, peak = blocks * inverse[:, None], amax * inverse  # exact, or below 2^-1022 (see `lost`)
    else:
        scales = e4m3_block_scales(amax, element, tensor_scale)
        divisor = scales * tensor_scale  # exact: 4 bits times 24 bits
        with np.errstate(over="ignore"):  # only under a given tensor scale far too small: ±inf saturates
            scaled, peak = blocks / divisor[:, None], amax / divisor
    keep_tiny_nonzero(blocks, scaled)  # underflowed float64: only sign and nonzero matter so far below a quantum
    elements = rounding(scaled)[0]  # into the unbounded grid: clamped to ±max below
    saturated = np.zeros(len(blocks), np.int64)
    beyond = np.flatnonzero(peak > element.max)  # only these blocks can hold a saturated element
    if beyond.size:
        overflowed = np.abs(elements[beyond]) > element.max  # IEEE overflow: rounded past max
        saturated[beyond] = np.count_nonzero(overflowed, axis=1)
        elements[beyond] = np.clip(elements[beyond], -element.max, element.max)
    values = elements * divisor[:, None]  # exact: element bits plus divisor bits stay within float64
    # NaN blocks were zeroed above, so they count no flushed or saturated elements
    flushed = np.count_nonzero(elements == 0, axis=1) - np.count_nonzero(blocks == 0, axis=1)  # zeros stay zeros
    elements[nan] = np.nan
    values[nan] = np.nan
    return elements, values, np.where(nan, np.nan, scales), flushed, saturated, nan


def _finite_amax(rows: np.ndarray) -> float:
    """The largest finite magnitude (0 for none): NaN and ±inf are left out."""
    amax = float(np.abs(rows).max(initial=0.0))
    return amax if math.isfinite(amax) else float(np.abs(rows[np.isfinite(rows)]).max(initial=0.0))


def split_blocks(rows: np.ndarray, block: int) -> list[np.ndarray]:
    """The full blocks of every row as one (rows·nfull, block) array, then the short last blocks (rows, tail)."""
    full = (rows.shape[1] // block) * block
    parts = [rows[:, :full].reshape(-1, block)]
    if full < rows.shape[1]:
        parts.append(rows[:, full:])
    return parts


@suspended()  # its roundings are the kernel's own, not ones a track_flags block should count
def quantize_blocks(
    x: object,
    fmt: BlockFormat | str,
    axis: int = -1,
    scale_mode: str | None = None,
    rounding: str = "nearest_even",
    *,
    partial: bool = True,
    on_nan: str = "propagate",
    tensor_scale: float | None = None,
    rng: object = None,
) -> BlockQuantized:
    """Quantize x to a block format, blocks of `fmt.block` consecutive elements along `axis`.

    `scale_mode` ('floor' by default, 'rceil', 'even') chooses MX power-of-two scales; formats with an e4m3
    scale (nvfp4) take none. Elements are rounded with `rounding` (the spec's 'nearest_even' by default; `rng` for
    'stochastic') and saturate at ±max. A last block shorter than `fmt.block` (when the axis length is not a
    multiple) is quantized on its own, with its own scale; `partial=False` refuses such x. `tensor_scale` (nvfp4
    only; a float32 value) replaces the default amax / (448 · 6).
    """
    plan = BlockPlan.resolve(fmt, scale_mode, rounding, on_nan, partial)
    given_scale = plan.check_tensor_scale(tensor_scale)
    values, _ = as_real_array(x, "x")  # widened to float64 chunk by chunk
    axis = normalize_axis(axis, values.ndim)
    plan.check_length(values.shape[axis], axis)
    moved = np.moveaxis(values, axis, -1)
    rows = moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])
    plan.refuse_nonfinite(rows, np.isfinite)
    t_scale = plan.tensor_scale(given_scale, lambda: _finite_amax(rows))
    rounding = Rounding.resolve(unbounded_element(plan.fmt.element), plan.rounding, rng=rng)  # one generator
    parts = [_quantize_rows(part, plan, t_scale, rounding) for part in split_blocks(rows, plan.fmt.block)]
    elements, result, scales, flushed, saturated, nan = (
        join_blocks(rows.shape[0], [part[i] for part in parts], np.concatenate) for i in range(6)
    )
    blocks_shape = (*moved.shape[:-1], -(-moved.shape[-1] // plan.fmt.block))

    def per_element(array: np.ndarray) -> np.ndarray:
        return np.moveaxis(array.reshape(moved.shape), -1, axis)

    def per_block(array: np.ndarray) -> np.ndarray:
        return np.moveaxis(array.reshape(blocks_shape), -1, axis)

    flags = BlockFlags(per_block(flushed), per_block(saturated), per_block(nan))
    return BlockQuantized(
        plan.fmt, axis, plan.scale_mode, per_element(result), per_element(elements), per_block(scales), t_scale, flags
    )


def join_blocks(nrows: int, parts: list, concatenate: Callable) -> object:
    """Per row, the full blocks' entries then the short block's (each part holds `nrows` rows' worth); arrays or
    tensors, with their library's `concatenate(list, axis=...)`."""
    if nrows == 0:  # no rows at all: nothing to join (reshape cannot infer a width from size 0)
        return parts[0].reshape(0, 0)
    if len(parts) == 1:  # no short last block: a view, no copy
        return parts[0].reshape(nrows, -1)
    return concatenate([part.reshape(nrows, -1) for part in parts], axis=1)


# ---- one block, explained ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockElement:
    """One element of an explained block: input, input / scale, element chosen, value, and what happened."""

    index: int
    input: float
    scaled: float
    element: float
    value: float
    status: str


@dataclass(frozen=True)
class BlockExplanation:
    """How one block was quantized: its amax, the scale rule and scale chosen, then each element before and after."""

    fmt: BlockFormat
    scale_mode: str | None
    amax: float
    scale: float
    tensor_scale: float
    rule: str
    elements: tuple[BlockElement, ...]

    @property
    def flushed(self) -> int:
        return sum(e.status == "flushed to 0" for e in self.elements)

    @property
    def saturated(self) -> int:
        return sum(e.status.startswith("saturated") for e in self.elements)

    def to_dict(self) -> dict:
        return {
            "format": self.fmt.name,
            "scale_mode": self.scale_mode,
            "amax": self.amax,
            "scale": self.scale,
            "tensor_scale": self.tensor_scale,
            "rule": self.rule,
            "elements": [vars(e) for e in self.elements],
        }

    def _lines(self) -> list[str]:
        element = self.fmt.element
        mode = f", scale_mode {self.scale_mode!r}" if self.scale_mode else ""
        head = f"{self.fmt.name}: {element.name} elements (max {element.max:g}), one {self.fmt.scale} scale per "
        return [
            head + f"block of {self.fmt.block}{mode}",
            f"amax = {self.amax!r}: {self.rule}",
            f"{self.flushed} flushed to 0, {self.saturated} saturated at ±{element.max:g}",
        ]

    def _table(self):
        rows = [
            (e.index, repr(e.input), repr(e.scaled), repr(e.element), repr(e.value), e.status) for e in self.elements
        ]
        scaled = "input / scale" if self.fmt.power_of_two else "input / (scale·s_t)"  # the divisor an element sees
        return table(["#", "input", scaled, "element", "value", "what happened"], rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[object]:
        for line in self._lines():
            yield Text(line)
        yield self._table()

    def __str__(self) -> str:
        buffer = io.StringIO()
        Console(file=buffer, width=120, color_system=None, highlight=False, soft_wrap=False).print(self)
        return buffer.getvalue().rstrip("\n")


def _status(x: float, scaled: float, element: float, unbounded: float, element_max: float) -> str:
    """What happened to one element; `unbounded` is its rounding as if the exponent range were unbounded."""
    if math.isnan(element):
        return "NaN block"
    if abs(unbounded) > element_max:  # IEEE overflow, as the block's `saturated` flag counts it
        return "saturated"
    if x != 0 and element == 0:
        return "flushed to 0"
    return "exact" if element == scaled else "rounded"


def _rule(fmt: BlockFormat, scale_mode: str | None, amax: float, scale: float, tensor_scale: float) -> str:
    """How the scale came out of amax, in one line of numbers."""
    if math.isnan(scale):
        return "the block holds NaN or ±inf: scale NaN (E8M0 0xFF), every value NaN"
    element = fmt.element
    if not fmt.power_of_two:
        return f"scale = RNE_e4m3(amax / ({element.max:g} · s_t)) = {scale!r}, tensor scale s_t = {tensor_scale!r}"
    exponent = math.frexp(scale)[1] - 1
    if amax == 0:
        return f"log2(0) = −inf: scale = 2^{exponent} = {scale!r} (clamped to E8M0's range)"
    unclamped = int(power_of_two_exponents(np.array([amax]), element, scale_mode, clamp=False)[0])
    clamped = f" (2^{unclamped} clamped to E8M0's range)" if unclamped != exponent else ""
    if scale_mode == "floor":
        how = f"2^(floor(log2 amax) − emax) = 2^({math.frexp(amax)[1] - 1} − {element.emax})"
    elif scale_mode == "rceil":
        how = f"2^ceil(log2(amax / {element.max:g}))"
    else:
        how = f"2^(floor(log2 of amax rounded to {element.nmant} mantissa bit(s)) − {element.emax})"
    return f"scale = {how} = 2^{exponent} = {scale!r}{clamped}"


@suspended()  # explaining is a query: the caller's flag counts must not see its roundings
def explain_block(
    values: object,
    fmt: BlockFormat | str,
    scale_mode: str | None = None,
    rounding: str = "nearest_even",
    *,
    tensor_scale: float | None = None,
) -> BlockExplanation:
    """One block (1 to fmt.block values): the scale chosen and why, then each element before and after.

    Print it (rich table on a terminal, plain text when piped) or read its fields. For nvfp4 the tensor scale
    defaults to this block's own amax / (448 · 6); pass the tensor's `tensor_scale` to explain a block inside it.
    """
    fmt = get_block_format(fmt)
    array, _ = as_float64(values, "values")
    if array.ndim != 1 or not 1 <= array.size <= fmt.block:
        raise ValueError(
            f"values must be one block: a 1-D sequence of 1 to {fmt.block} numbers for {fmt.name}, got shape "
            f"{array.shape}; use fpsim.quantize_blocks for more"
        )
    result = quantize_blocks(array, fmt, scale_mode=scale_mode, rounding=rounding, tensor_scale=tensor_scale)
    scale, t_scale = float(result.scales[0]), result.tensor_scale
    finite = array[np.isfinite(array)]
    amax = float(np.abs(finite).max(initial=0.0)) if finite.size == array.size else math.nan
    divisor = scale * t_scale
    scaled = array / divisor  # exact for the statuses that need it (not far below a quantum); NaN block: NaN
    # the same rounding as the block's, unclamped (stochastic: a second draw can differ from the element's)
    unbounded = round_to(np.where(np.isfinite(scaled), scaled, 0.0), unbounded_element(fmt.element), rounding)
    rows = tuple(
        BlockElement(
            i, float(x), float(q), float(e), float(v), _status(float(x), q, float(e), float(u), fmt.element.max)
        )
        for i, (x, q, e, v, u) in enumerate(zip(array, scaled, result.elements, result.values, unbounded))
    )
    return BlockExplanation(
        fmt, result.scale_mode, amax, scale, t_scale, _rule(fmt, result.scale_mode, amax, scale, t_scale), rows
    )
