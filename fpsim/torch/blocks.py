"""Block-scaled formats (OCP MX, NVFP4) on torch tensors, on the tensor's device; the rules are fpsim.blocks'.

Invariant: every field equals fpsim.quantize_blocks's bit for bit: the same scale rule from the same exact amax, each
element rounded once by fpsim.torch.round, and every other operation exact (powers of two built from bits, products
that fit float64).
"""

from __future__ import annotations

import math

import torch

from fpsim.blocks import (
    E4M3_SCALE_MIN,
    E8M0_EMAX,
    E8M0_EMIN,
    BlockFlags,
    BlockFormat,
    BlockPlan,
    BlockQuantized,
    join_blocks,
    normalize_axis,
    split_blocks,
    unbounded_element,
)
from fpsim.flags import suspended
from fpsim.formats import FP8_E4M3, Format
from fpsim.torch.codec import _keep_tiny_nonzero
from fpsim.torch.codec import round as round_to

__all__ = ["quantize_blocks"]

_FLOAT64_BIAS, _FLOAT64_NMANT = 1023, 52


def _power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """2^exponent as float64 from its bits (exact; each exponent a normal float64's, as E8M0's all are)."""
    return ((exponent + _FLOAT64_BIAS) << _FLOAT64_NMANT).view(torch.float64)


def power_of_two_exponents(amax: torch.Tensor, element: Format, scale_mode: str) -> torch.Tensor:
    """fpsim.blocks.power_of_two_exponents on a tensor of block amaxes (finite, ≥ 0)."""
    mantissa, exponent = torch.frexp(amax)  # amax = mantissa·2^exponent, mantissa in [0.5, 1); frexp(0) = (0, 0)
    shared = exponent.to(torch.int64) - 1 - element.emax
    if scale_mode == "rceil":
        shared += mantissa * math.ldexp(1.0, element.emax + 1) > element.max  # exact product: a power of two
    elif scale_mode == "even":
        shared += 2 * mantissa >= 2 - math.ldexp(1.0, -(element.nmant + 1))
    shared = torch.where(amax == 0, E8M0_EMIN, shared)  # log2(0) = −inf, clamped to E8M0's smallest
    return shared.clamp(E8M0_EMIN, E8M0_EMAX)


def _quantize_rows(
    blocks: torch.Tensor, plan: BlockPlan, tensor_scale: float, generator: object
) -> tuple[torch.Tensor, ...]:
    element = plan.fmt.element
    amax = blocks.abs().amax(dim=1) if blocks.shape[1] else blocks.new_zeros(blocks.shape[0])  # NaN, inf propagate
    nan = ~torch.isfinite(amax)
    if bool(nan.any()):  # NaN and ±inf leave the arithmetic; their blocks become NaN below
        blocks = torch.where(nan[:, None], 0.0, blocks)  # whole blocks, as in NumPy
        amax = torch.where(nan, 0.0, amax)
    if plan.fmt.power_of_two:
        exponents = power_of_two_exponents(amax, element, plan.scale_mode)
        scales = divisor = _power_of_two(exponents)
        inverse = _power_of_two(-exponents)  # exact: a power-of-two scale
        scaled = blocks * inverse[:, None]
    else:
        ratio = amax / (element.max * tensor_scale)  # exact divisor, one rounding (fpsim.blocks' docstring)
        scales = round_to(ratio, FP8_E4M3, overflow="saturate").clamp_min(E4M3_SCALE_MIN)
        divisor = scales * tensor_scale  # exact: 4 bits times 24 bits
        scaled = blocks / divisor[:, None]
    scaled = _keep_tiny_nonzero(blocks, scaled)  # underflowed float64: only sign and nonzero matter so far below
    elements = round_to(scaled, unbounded_element(element), plan.rounding, generator=generator)  # clamped below
    overflowed = elements.abs() > element.max  # IEEE overflow: rounded past max
    saturated = torch.count_nonzero(overflowed, dim=1)
    elements = elements.clamp(-element.max, element.max)
    values = elements * divisor[:, None]  # exact, as in NumPy
    # NaN blocks were zeroed above, so they count no flushed or saturated elements
    flushed = torch.count_nonzero(elements == 0, dim=1) - torch.count_nonzero(blocks == 0, dim=1)  # zeros stay 0
    if bool(nan.any()):
        elements, values = (torch.where(nan[:, None], torch.nan, t) for t in (elements, values))
        scales = torch.where(nan, torch.nan, scales)
    return elements, values, scales, flushed, saturated, nan


def _finite_amax(rows: torch.Tensor) -> float:
    """The largest finite magnitude (0 for none): NaN and ±inf are left out."""
    if rows.numel() == 0:
        return 0.0
    amax = float(rows.abs().max())
    return amax if math.isfinite(amax) else float(torch.where(torch.isfinite(rows), rows.abs(), 0.0).max())


def _as_tensor(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor, got {type(x).__name__}; use fpsim.quantize_blocks for arrays")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    return x.detach().to(torch.float64)  # exact for every floating dtype


@suspended()  # its roundings are the kernel's own, not ones a track_flags block should count
def quantize_blocks(
    x: torch.Tensor,
    fmt: BlockFormat | str,
    axis: int = -1,
    scale_mode: str | None = None,
    rounding: str = "nearest_even",
    *,
    partial: bool = True,
    on_nan: str = "propagate",
    tensor_scale: float | None = None,
    generator: torch.Generator | int | None = None,
) -> BlockQuantized:
    """fpsim.quantize_blocks on a tensor: the same BlockQuantized with float64 tensors on x's device.

    Arguments are fpsim.quantize_blocks's, with `generator` (a torch.Generator on x's device, or a seed) in place
    of `rng` for rounding='stochastic' (whose draws differ from NumPy's). Fake quantization: `.values.to(x.dtype)`
    (exact into float32 for MX formats; nvfp4 values carry the fp32 tensor scale and need float64).
    """
    plan = BlockPlan.resolve(fmt, scale_mode, rounding, on_nan, partial)
    given_scale = plan.check_tensor_scale(tensor_scale)
    tensor = _as_tensor(x)
    axis = normalize_axis(axis, tensor.ndim)
    plan.check_length(tensor.shape[axis], axis)
    moved = tensor.movedim(axis, -1)
    rows = moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])
    plan.refuse_nonfinite(rows, torch.isfinite)
    t_scale = plan.tensor_scale(given_scale, lambda: _finite_amax(rows))
    if isinstance(generator, int) and not isinstance(generator, bool):  # one stream for the full and short blocks
        generator = torch.Generator(device=rows.device).manual_seed(generator)
    parts = [_quantize_rows(part, plan, t_scale, generator) for part in split_blocks(rows, plan.fmt.block)]
    elements, values, scales, flushed, saturated, nan = (
        join_blocks(rows.shape[0], [part[i] for part in parts], torch.concatenate) for i in range(6)
    )

    def per_element(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(moved.shape).movedim(-1, axis)

    def per_block(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*moved.shape[:-1], -(-moved.shape[-1] // plan.fmt.block)).movedim(-1, axis)

    flags = BlockFlags(per_block(flushed), per_block(saturated), per_block(nan))
    return BlockQuantized(
        plan.fmt, axis, plan.scale_mode, per_element(values), per_element(elements), per_block(scales), t_scale, flags
    )
