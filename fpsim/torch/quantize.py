"""Fake quantization of torch models: the forward pass rounds to a Format, the backward pass lets the gradient
through unchanged (straight-through) or rounds it to its own Format.

Invariant: a quantized tensor holds exactly `fpsim.round` of its value, in the input's own dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from fpsim.formats import Format, get_format
from fpsim.torch.codec import _contains, _Plan
from fpsim.torch.codec import round as round_to

__all__ = ["Quantize", "fake_quantize", "quantize"]

_DTYPE_FORMATS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
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
) -> tuple[_Rounder, _Rounder | None]:
    forward = _Rounder.checked(fmt, rounding, overflow, on_nan, generator)
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
        return forward, _Rounder.checked(grad_fmt, grad_rounding, None, "raise", grad_generator)
    except ValueError as err:  # name the gradient's arguments, not fpsim.round's
        raise ValueError(f"gradient rounding (grad_fmt={grad_fmt!r}, grad_rounding={grad_rounding!r}): {err}") from None


def quantize(
    x: torch.Tensor,
    fmt: Format | str,
    rounding: str = "nearest_even",
    *,
    overflow: str | None = None,
    on_nan: str = "raise",
    generator: torch.Generator | None = None,
    grad_fmt: Format | str | None = None,
    grad_rounding: str | None = None,
) -> torch.Tensor:
    """x rounded to `fmt` (as fpsim.torch.round, in x's dtype), differentiable: the backward pass passes the
    gradient straight through, or rounds it to `grad_fmt` with `grad_rounding` (default nearest_even; only
    with grad_fmt) when given.

    x's dtype must hold every value of `fmt` and of `grad_fmt` (float32 holds all presets but fp64), checked in
    the forward pass. `generator` (a
    torch.Generator; not a seed, which would repeat the same draws at every call) drives stochastic rounding
    in either direction.
    """
    forward, backward = _rounders(fmt, rounding, overflow, on_nan, generator, grad_fmt, grad_rounding)
    return _RoundFunction.apply(x, forward, backward)


class Quantize(nn.Module):
    """`quantize` as a layer (or a weight parametrization): rounds its input to `fmt`, and the gradient to
    `grad_fmt` when given. Arguments are those of `quantize`, validated here."""

    def __init__(
        self,
        fmt: Format | str,
        rounding: str = "nearest_even",
        *,
        overflow: str | None = None,
        on_nan: str = "raise",
        generator: torch.Generator | None = None,
        grad_fmt: Format | str | None = None,
        grad_rounding: str | None = None,
    ) -> None:
        super().__init__()
        self.forward_rounder, self.backward_rounder = _rounders(
            fmt, rounding, overflow, on_nan, generator, grad_fmt, grad_rounding
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
    The weight parametrization renames the state_dict key `weight` to `parametrizations.weight.original`: load
    weights before calling this.
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
    def quantizer(fmt: object) -> Quantize:
        return Quantize(fmt, rounding, grad_fmt=grad, grad_rounding=grad_rounding)

    if roles["weight"] is not None:
        parametrize.register_parametrization(module, "weight", quantizer(roles["weight"]))
    if roles["input"] is not None:
        to_input = quantizer(roles["input"])
        module.register_forward_pre_hook(lambda _, args: (to_input(args[0]), *args[1:]))
    if roles["output"] is not None:
        to_output = quantizer(roles["output"])
        module.register_forward_hook(lambda _, args, out: to_output(out))
    module.fpsim_fake_quantized = {role: str(fmt) for role, fmt in roles.items() if fmt is not None}
