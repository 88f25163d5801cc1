"""Fake quantization of torch models: the forward pass rounds to a Format or quantizes in blocks to a BlockFormat,
the backward pass lets the gradient through unchanged (straight-through) or rounds it to its own format.

Invariant: a quantized tensor holds exactly `fpsim.round` (or `fpsim.quantize_blocks(...).values`) of its value,
in the input's own dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from fpsim.blocks import BLOCK_FORMATS, BlockFormat, block_format_or_none
from fpsim.flags import Flags
from fpsim.formats import Format, get_format
from fpsim.policies import block_operand
from fpsim.rounding import check_rounding
from fpsim.torch.blocks import quantize_blocks
from fpsim.torch.codec import _contains, _Plan
from fpsim.torch.codec import round as round_to

__all__ = ["Quantize", "block_matmul", "fake_quantize", "quantize"]

_DTYPE_FORMATS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
FlagsSink = Callable[[Flags], None]  # receives the flags of a block quantization
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class _Rounder:
    """One validated rounding (format, mode, policies, generator), applied to tensors of any float dtype."""

    fmt: Format
    rounding: str
    overflow: str | None
    on_nan: str
    generator: torch.Generator | None

    @classmethod
    def checked(cls, fmt: object, rounding: object, overflow: object, on_nan: object, generator: object) -> _Rounder:
        plan = _Plan.resolve(fmt, rounding, overflow, on_nan, None, torch.device("cpu"))  # validates all but generator
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator is not None and plan.mode != "stochastic":
            raise ValueError(f"generator is used only by rounding='stochastic'; got rounding={plan.mode!r}")
        return cls(plan.fmt, plan.mode, overflow, plan.on_nan, generator)

    def check_dtype(self, dtype: torch.dtype, what: str = "") -> None:
        """Refuse a tensor dtype that cannot hold every value of the format (`what` names a gradient's format)."""
        holder = _DTYPE_FORMATS.get(dtype)
        if holder is None:
            raise TypeError(f"fake quantization needs a float16, bfloat16, float32 or float64 tensor, got {dtype}")
        if not _contains(get_format(holder), self.fmt):
            raise ValueError(
                f"{dtype} cannot hold every {what}{self.fmt.name} value exactly; fake-quantize a float32 tensor instead"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.check_dtype(x.dtype)
        rounded = round_to(
            x, self.fmt, self.rounding, overflow=self.overflow, on_nan=self.on_nan, generator=self.generator
        )
        return rounded.to(x.dtype)  # exact: the format's values are values of x's dtype

    def __str__(self) -> str:
        return f"{self.fmt.name} {self.rounding}"


@dataclass(frozen=True)
class _BlockRounder:
    """One validated block quantization (block format, axis, element rounding), applied to float32/float64 tensors."""

    fmt: BlockFormat
    axis: int
    rounding: str

    def check_dtype(self, dtype: torch.dtype, what: str = "") -> None:
        """Values are elements times a power of two (MX: float32 holds them, fp16 and bf16 may not), or times an e4m3
        scale and an fp32 tensor scale (NVFP4: up to 30 significant bits, only float64 holds them)."""
        holders = (torch.float32, torch.float64) if self.fmt.power_of_two else (torch.float64,)
        if dtype not in holders:
            raise TypeError(f"fake quantization to the {what}block format {self.fmt.name} needs a "
                            f"{' or '.join(map(_name, holders))} tensor, got {dtype}")  # fmt: skip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.check_dtype(x.dtype)
        return quantize_blocks(x, self.fmt, axis=self.axis, rounding=self.rounding).values.to(x.dtype)

    def __str__(self) -> str:
        return f"{self.fmt.name} blocks along axis {self.axis} {self.rounding}"


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _is_block_format(fmt: object) -> bool:
    return block_format_or_none(fmt) is not None  # a BlockFormat, or a preset name or alias in any case


def _rounder(fmt: object, rounding: object, overflow: object, on_nan: object, generator: object, axis: int):
    """The rounder of an element format, or of a block format (blocks along `axis`)."""
    block = block_format_or_none(fmt)
    if block is None:
        return _Rounder.checked(fmt, rounding, overflow, on_nan, generator)
    for name, value, default in (("overflow", overflow, None), ("on_nan", on_nan, "raise"),
                                 ("generator", generator, None)):  # fmt: skip
        if value is not default:
            raise ValueError(f"{name}= does not apply to the block format {fmt!r}: its elements saturate and its "
                             f"rounding is deterministic; drop {name}")  # fmt: skip
    return _BlockRounder(block, axis, check_rounding(rounding))


def _block_axis(axis: object, fmt: object, grad_fmt: object) -> int:
    """`axis` (default -1, the reduction axis of a Linear's input and weight), given only with a block format."""
    if axis is None:
        return -1
    if not (_is_block_format(fmt) or _is_block_format(grad_fmt)):
        raise ValueError(f"axis={axis!r} applies only to block formats ({', '.join(BLOCK_FORMATS)}); "
                         f"{fmt!r} rounds every element on its own: drop axis")  # fmt: skip
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int (the axis along which blocks run), got {type(axis).__name__}")
    return axis


class _RoundFunction(torch.autograd.Function):
    """Forward: round. Backward: the incoming gradient, straight through or rounded by its own rounder."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, forward: _Rounder, backward: _Rounder | None) -> torch.Tensor:
        if backward is not None:  # the gradient will have x's dtype: refuse it now, not in the backward pass
            backward.check_dtype(x.dtype, "grad_fmt ")
        ctx.backward_rounder = backward
        return forward(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        rounder = ctx.backward_rounder
        return (grad if rounder is None else rounder(grad)), None, None


def _rounders(
    fmt: object,
    rounding: object,
    overflow: object,
    on_nan: object,
    generator: object,
    grad_fmt: object,
    grad_rounding: object,
    axis: object = None,
) -> tuple[_Rounder | _BlockRounder, _Rounder | _BlockRounder | None]:
    axis = _block_axis(axis, fmt, grad_fmt)
    forward = _rounder(fmt, rounding, overflow, on_nan, generator, axis)
    if grad_fmt is None:
        if grad_rounding is not None:
            raise ValueError(
                f"grad_rounding={grad_rounding!r} is used only with a gradient format: give grad_fmt= "
                "(grad= in fake_quantize) or drop grad_rounding"
            )
        return forward, None
    grad_rounding = "nearest_even" if grad_rounding is None else grad_rounding
    grad_generator = generator if grad_rounding == "stochastic" else None
    try:
        return forward, _rounder(grad_fmt, grad_rounding, None, "raise", grad_generator, axis)
    except ValueError as err:  # name the gradient's arguments, not fpsim.round's
        raise ValueError(f"gradient rounding (grad_fmt={grad_fmt!r}, grad_rounding={grad_rounding!r}): {err}") from None


def quantize(
    x: torch.Tensor,
    fmt: Format | BlockFormat | str,
    rounding: str = "nearest_even",
    *,
    axis: int | None = None,
    overflow: str | None = None,
    on_nan: str = "raise",
    generator: torch.Generator | None = None,
    grad_fmt: Format | BlockFormat | str | None = None,
    grad_rounding: str | None = None,
) -> torch.Tensor:
    """x rounded to `fmt` (as fpsim.torch.round, in x's dtype), differentiable: the backward pass passes the
    gradient straight through, or rounds it to `grad_fmt` with `grad_rounding` (default nearest_even; only
    with grad_fmt) when given.

    A block format (a BlockFormat, or a name in fpsim.BLOCK_FORMATS such as "mxfp8_e4m3") quantizes in blocks
    along `axis` (default -1), as fpsim.torch.quantize_blocks(...).values; `axis` is for block formats only, and
    overflow, on_nan and generator for element formats only. x's dtype must hold every value of `fmt` and of
    `grad_fmt` (float32 holds all presets but fp64; block formats need float32 or float64), checked in the forward
    pass. `generator` (a torch.Generator; not a seed, which would repeat the same draws at every call) drives
    stochastic rounding in either direction.
    """
    forward, backward = _rounders(fmt, rounding, overflow, on_nan, generator, grad_fmt, grad_rounding, axis)
    return _RoundFunction.apply(x, forward, backward)


class Quantize(nn.Module):
    """`quantize` as a layer (or a weight parametrization): rounds its input to `fmt` (in blocks along `axis` for
    a block format), and the gradient to `grad_fmt` when given. Arguments are those of `quantize`, validated here."""

    def __init__(
        self,
        fmt: Format | BlockFormat | str,
        rounding: str = "nearest_even",
        *,
        axis: int | None = None,
        overflow: str | None = None,
        on_nan: str = "raise",
        generator: torch.Generator | None = None,
        grad_fmt: Format | BlockFormat | str | None = None,
        grad_rounding: str | None = None,
    ) -> None:
        super().__init__()
        self.forward_rounder, self.backward_rounder = _rounders(
            fmt, rounding, overflow, on_nan, generator, grad_fmt, grad_rounding, axis
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RoundFunction.apply(x, self.forward_rounder, self.backward_rounder)

    def extra_repr(self) -> str:
        backward = "straight-through" if self.backward_rounder is None else str(self.backward_rounder)
        return f"{self.forward_rounder}, grad={backward}"


def fake_quantize(
    model: nn.Module,
    *,
    weight: Format | str | None = None,
    input: Format | str | None = None,
    output: Format | str | None = None,
    grad: Format | str | None = None,
    rounding: str = "nearest_even",
    grad_rounding: str | None = None,
    layers: tuple[type[nn.Module], ...] = LAYERS,
) -> nn.Module:
    """Fake-quantize every Linear and Conv layer of `model` in place, and return the model.

    Each layer's weight (through a torch parametrization), input (a forward pre-hook) and output (a forward
    hook) are rounded to the formats given; the bias is added unrounded before the output rounding. With
    `grad`, the gradients through each of these points are rounded to `grad` too, else they pass straight
    through; `grad_rounding` (default nearest_even) needs `grad`. Every option is validated before the model is
    touched, and the model's dtype must hold every value of each format (checked at its first forward pass).
    Block formats (such as "mxfp8_e4m3") run their blocks along the reduction axis: a Linear's last axis (input
    and weight features), a Conv's channel axis. The weight parametrization renames the state_dict key `weight`
    to `parametrizations.weight.original`: load weights before calling this.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    roles = {"weight": weight, "input": input, "output": output}
    if all(fmt is None for fmt in roles.values()):
        raise ValueError("give at least one of weight=, input=, output= (a format name such as 'fp8_e4m3')")
    for fmt in roles.values():
        if fmt is not None:
            Quantize(fmt, rounding, grad_fmt=grad, grad_rounding=grad_rounding)  # validates before any change
    targets = [module for module in model.modules() if isinstance(module, layers)]
    if not targets:
        raise ValueError(f"model has no layer of the kinds {', '.join(t.__name__ for t in layers)} to fake-quantize")
    if any(hasattr(module, "fpsim_fake_quantized") or parametrize.is_parametrized(module) for module in targets):
        raise ValueError("model is already fake-quantized or parametrized; call fake_quantize on the float model")
    for module in targets:
        _wrap(module, roles, rounding, grad, grad_rounding)
    return model


def _wrap(module: nn.Module, roles: dict, rounding: str, grad: object, grad_rounding: str | None) -> None:
    channels = -1 - len(module.kernel_size) if isinstance(module, _ConvNd) else -1  # (N,) C, *spatial; O, C, *kernel

    def quantizer(fmt: object) -> Quantize:
        axis = channels if _is_block_format(fmt) or _is_block_format(grad) else None
        return Quantize(fmt, rounding, axis=axis, grad_fmt=grad, grad_rounding=grad_rounding)

    if roles["weight"] is not None:
        parametrize.register_parametrization(module, "weight", quantizer(roles["weight"]))
    if roles["input"] is not None:
        to_input = quantizer(roles["input"])
        module.register_forward_pre_hook(lambda _, args: (to_input(args[0]), *args[1:]))
    if roles["output"] is not None:
        to_output = quantizer(roles["output"])
        module.register_forward_hook(lambda _, args, out: to_output(out))
    module.fpsim_fake_quantized = {role: str(fmt) for role, fmt in roles.items() if fmt is not None}


class _BlockMatmul(torch.autograd.Function):
    """x @ w.T as an MX GEMM computes it in training: each of the three products (y = x·wᵀ, dx = dy·w, dw = dyᵀ·x)
    quantizes both its operands in blocks along the axis that product reduces, from the unquantized tensors."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, fmt: BlockFormat, gradient_flags: FlagsSink | None):
        ctx.save_for_backward(x, w)
        ctx.fmt, ctx.gradient_flags = fmt, gradient_flags
        return _product(x, -1, w.T, 0, fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, w = ctx.saved_tensors
        fmt, sink = ctx.fmt, ctx.gradient_flags  # dy is quantized along its last axis for dx, its first for dw
        dx = _product(grad, -1, w, 0, fmt, sink) if ctx.needs_input_grad[0] else None
        dw = _product(grad.T, -1, x, 0, fmt, sink) if ctx.needs_input_grad[1] else None
        return dx, dw, None, None


def _product(
    a: torch.Tensor, a_axis: int, b: torch.Tensor, b_axis: int, fmt: BlockFormat, a_flags: FlagsSink | None = None
) -> torch.Tensor:
    """a @ b of block-scaled operands in a's dtype: elements times block scales multiplied and summed, then NVFP4's
    two per-tensor scales applied once as the GEMM's alpha (fpsim.policies.Precision.matmul's model).
    `a_flags` receives what quantizing a flushed."""
    (a, scale_a), (b, scale_b) = _operand(a, a_axis, fmt, a_flags), _operand(b, b_axis, fmt)
    alpha = torch.tensor(scale_a, dtype=torch.float32) * torch.tensor(scale_b, dtype=torch.float32)  # one rounding
    return a @ b * alpha.to(device=a.device, dtype=a.dtype)


def _operand(
    t: torch.Tensor, axis: int, fmt: BlockFormat, flags: FlagsSink | None = None
) -> tuple[torch.Tensor, float]:
    quantized = quantize_blocks(t.detach(), fmt, axis=axis)
    if flags is not None:
        flags(Flags(total=t.numel(), flushed_to_zero=quantized.flags.total_flushed))
    elements_times_scales, tensor_scale = block_operand(quantized)
    return elements_times_scales.to(t.dtype), tensor_scale


def block_matmul(
    x: torch.Tensor, w: torch.Tensor, fmt: BlockFormat | str, *, gradient_flags: FlagsSink | None = None
) -> torch.Tensor:
    """x @ w.T (a Linear without bias: x is batch × in, w is out × in) with every operand of the forward and both
    backward products quantized to `fmt` in blocks along that product's reduction axis, as MX training runs it
    (torchao's MXLinear): the same numerics as fpsim's simulator under a policy with `blocks=`.
    x and w must be float32 or float64 matrices of one dtype; products accumulate in it.
    `gradient_flags`, if given, is called in the backward pass with the Flags (total, flushed_to_zero) of each block
    quantization of the incoming gradient dy (one for dx, one for dw), as fpsim's simulator counts them."""
    if gradient_flags is not None and not callable(gradient_flags):
        raise TypeError(f"gradient_flags must be callable or None, got {type(gradient_flags).__name__}")
    block = block_format_or_none(fmt)
    if block is None:
        raise ValueError(f"fmt must be a block format ({', '.join(BLOCK_FORMATS)}); got {fmt!r}")
    for name, t in (("x", x), ("w", w)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D torch.Tensor (block_matmul computes x @ w.T)")
        if t.dtype not in (torch.float32, torch.float64) or t.dtype != x.dtype:
            raise TypeError(f"x and w must both be float32 or both float64 tensors, got {x.dtype} and {w.dtype}")
    return _BlockMatmul.apply(x, w, block, gradient_flags)
