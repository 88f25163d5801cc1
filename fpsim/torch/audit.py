"""A range audit of any torch model: what fp16, bf16 and fp8 would do to each of its tensors, a loss scale per format,
and the first tensor that is not finite.

Invariant: every count is the flag count of fpsim.torch.round (bit for bit fpsim.round) on the very tensor the fp32
forward and backward produced; nothing is estimated. The model passed in is never changed (a copy runs).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import torch
from rich.console import Group, RenderableType
from rich.text import Text
from torch.utils._pytree import tree_flatten

from fpsim._decimal import floor_log2
from fpsim._terminal import percent, table
from fpsim.flags import Flags, suspended
from fpsim.formats import Format, get_format
from fpsim.scaling import DynamicLossScaler
from fpsim.torch._settings import first_line, fp32_matmul
from fpsim.torch.codec import round as round_to

__all__ = ["DEFAULT_FORMATS", "DEFAULT_HEADROOM", "KINDS", "Audit", "FormatCounts", "LossScale", "TensorStats", "audit"]

DEFAULT_FORMATS = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2")
DEFAULT_HEADROOM = 2.0  # one binade: the largest gradient may double (a later step, a spike) before it overflows
KINDS = {
    "parameter": "a weight or bias, before the step",
    "activation": "a module's output in the forward pass",
    "loss": "loss_fn's scalar",
    "activation gradient": "the gradient of a module's output, flowing backward",
    "gradient": "a parameter's gradient",
}
_SHORT_KINDS = {"parameter": "param", "activation": "act", "loss": "loss", "activation gradient": "act-grad",
                "gradient": "grad"}  # fmt: skip
_LARGEST_SCALE_EXPONENT = 127  # GradScaler's scale is an fp32 number: 2^127 is the largest power of two it holds
_SMALLEST_SCALE_EXPONENT = -149  # and 2^-149 the smallest
_TABLE_ROWS = 10
_DEFAULT_LR = 0.01


# ---- results -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FormatCounts:
    """What rounding one tensor to one format does, from the codec's flags: elements that overflow, become
    subnormal or are flushed to zero, and the relative error |round(x) − x| / |x| of the nonzero finite
    elements that stay nonzero and finite (median and max; None when there are none)."""

    total: int
    overflow: int
    subnormal: int
    flushed: int
    error_median: float | None
    error_max: float | None

    def percent(self, name: str) -> float:
        """100 × count / total for "overflow", "subnormal" or "flushed"."""
        return 100 * getattr(self, name) / self.total if self.total else 0.0

    def severity(self) -> tuple[float, ...]:
        """Larger is worse: overflow first (inf or NaN), then flushed (information gone), subnormal (bits gone)."""
        return (*(self.percent(name) for name in ("overflow", "flushed", "subnormal")), self.error_max or 0.0)


@dataclass(frozen=True)
class TensorStats:
    """One tensor of one step, in execution order: its magnitudes in fp32 and what each format would do to it."""

    name: str  # the parameter's name, or the module's path ("(model)" for the model itself)
    kind: str  # a key of KINDS
    module: str  # the path of the module it belongs to ("" is the model itself)
    step: int  # 1-based
    order: int  # position in the step's execution order, from 0
    shape: tuple[int, ...]
    nonzero_min: float | None  # the least |x| of the finite nonzero elements (None: there are none)
    nonzero_max: float | None
    nonfinite: int  # elements that are inf or NaN already in fp32
    formats: dict[str, FormatCounts]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["shape"] = list(self.shape)
        return record


@dataclass(frozen=True)
class LossScale:
    """A loss scale for one format, from the largest gradient over every step.

    `recommended`: the largest power of two S with S × largest ≤ max / headroom. `dynamic`: the scale GradScaler
    settles at (the largest power of two whose product with the largest gradient still rounds to a finite value;
    2^127 for a format that saturates, `saturates`, as GradScaler never sees an inf there), reached after
    `settle_steps` steps of which `settle_skipped` are skipped. Flushed, subnormal and overflow counts are gradient
    elements, unscaled and times `recommended`, counted by the codec; `rescued` those flushed unscaled and not
    flushed scaled, element by element. None: no nonzero finite gradient.
    """

    format: str
    headroom: float
    largest: float | None
    total: int
    recommended: float | None
    flushed_unscaled: int
    flushed_scaled: int
    rescued: int  # elements that round to zero unscaled and not at the recommended scale
    subnormal_unscaled: int
    subnormal_scaled: int
    overflow_unscaled: int
    overflow_scaled: int
    saturates: bool  # fmt clamps an overflow to ±max: no inf or NaN for GradScaler to see
    dynamic: float | None
    settle_steps: int | None
    settle_skipped: int | None
    reasoning: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Audit:
    """The result of `audit`: every tensor's statistics, the first non-finite one, a loss scale per format."""

    formats: tuple[str, ...]
    steps: int  # the steps run (fewer than asked when a step produced a non-finite tensor)
    headroom: float
    tensors: list[TensorStats]
    loss_scales: dict[str, LossScale]
    gradients: torch.Tensor = field(repr=False)  # every finite gradient element (float64, CPU), for the histogram
    unaudited: tuple[str, ...] = ()  # modules owning parameters that were never called as modules: no output row

    @property
    def first_nonfinite(self) -> TensorStats | None:
        """The first tensor, in execution order, holding an inf or NaN in the fp32 run."""
        return next((t for t in self.tensors if t.nonfinite), None)

    def worst(self, fmt: str, limit: int | None = None) -> list[TensorStats]:
        """Tensors by what `fmt` does to them, worst first: non-finite, overflow, flushed, subnormal, error."""
        ranked = sorted(self.tensors, key=lambda t: (t.nonfinite > 0, *t.formats[fmt].severity()), reverse=True)
        return ranked[:limit]

    def to_dict(self) -> dict:
        first = self.first_nonfinite
        return {
            "formats": list(self.formats),
            "steps": self.steps,
            "headroom": self.headroom,
            "first_nonfinite": None if first is None else first.to_dict(),
            "unaudited_modules": list(self.unaudited),
            "loss_scales": {name: scale.to_dict() for name, scale in self.loss_scales.items()},
            "dynamic_scaler": scaler_rules(),
            "tensors": [t.to_dict() for t in self.tensors],
        }

    def table(self, rows: int = _TABLE_ROWS) -> RenderableType:
        """The terminal view: per format its `rows` worst tensors, then the loss scales and the first non-finite."""
        sections = (part for fmt in self.formats for part in _format_section(self, fmt, rows))
        return Group(*_summary(self), *_unaudited_lines(self), *sections, *_loss_scale_section(self),
                     _first_nonfinite_line(self))  # fmt: skip

    def figure(self):
        """The gradient histogram per format (fpsim.plots.gradient_histogram), as computed and, where some gradient
        flushes to zero unscaled, times the format's recommended loss scale. Returns (Figure, Axes)."""
        from fpsim.plots.gradients import gradient_histogram

        scales = {name: s.recommended if s.flushed_unscaled else None for name, s in self.loss_scales.items()}
        return gradient_histogram(self.gradients.numpy(), self.formats, scale=scales)


# ---- the audit -----------------------------------------------------------------------------------------------------
def audit(
    model: torch.nn.Module,
    batch: torch.Tensor | Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    formats: Sequence[Format | str] | Format | str = DEFAULT_FORMATS,
    *,
    target: object = None,
    steps: int = 1,
    headroom: float = DEFAULT_HEADROOM,
    lr: float | None = None,
) -> Audit:
    """Run a copy of `model` forward and backward in fp32 on `batch` and count, per tensor and format, what
    rounding it would do (overflow, subnormal, flushed to zero, relative error) with fpsim's codec.

    The loss is `loss_fn(model(batch), target)`, or `loss_fn(model(batch))` without a target; a tuple batch is
    passed as `model(*batch)`; batch and target move to the model's device. Tensors: every parameter, every
    module's floating output (a tensor several nested modules return is counted once, for the innermost; an
    in-place module's output is the tensor it changed, counted once before the change), the loss, the gradient of
    each such output, and every parameter's gradient. A module owning parameters whose forward never ran (its
    weights used functionally, as MultiheadAttention's out_proj) is listed in `Audit.unaudited`. With `steps` > 1,
    a plain SGD step (learning rate `lr`, default 0.01; with steps=1 there is no update, and lr is refused) updates
    the copy between audits, and the run stops after a step with a non-finite tensor. `headroom` (≥ 1) is the factor
    the recommended loss scale keeps between the largest gradient and each format's max.
    """
    fmts = _check_formats(formats)
    _check_arguments(model, batch, loss_fn, steps, headroom, lr)
    copy_ = _fp32_copy(model)
    device = next(copy_.parameters()).device
    inputs = _fp32_inputs(batch, device)
    target = target.to(device) if isinstance(target, torch.Tensor) else target
    recorder = _Recorder(copy_, fmts)
    try:
        with recorder.hooks(), fp32_matmul():
            done = _run(copy_, inputs, loss_fn, target, recorder, steps, _DEFAULT_LR if lr is None else lr)
    except _HookError as err:  # the audit's own failure, as it was raised
        raise err.__cause__ from None
    every = recorder.all_gradients()
    finite = every[torch.isfinite(every)]
    scales = {f.name: _loss_scale(f, every, finite, headroom) for f in fmts}
    return Audit(tuple(f.name for f in fmts), done, headroom, recorder.tensors, scales, finite, recorder.unaudited())


def _run(model: torch.nn.Module, inputs: tuple, loss_fn: Callable, target: object, recorder: _Recorder, steps: int,
         lr: float) -> int:  # fmt: skip
    """Up to `steps` audited steps, SGD between them, stopping after a step with a non-finite tensor: the count."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    done = 0
    while done < steps and not recorder.saw_nonfinite:
        done += 1
        optimizer.zero_grad(set_to_none=True)
        recorder.start_step(done)
        loss = _loss(model, inputs, loss_fn, target)
        recorder.record(loss.detach(), "loss", "loss", "")
        loss.backward()
        if done < steps:  # the last step's update would be audited by no one
            optimizer.step()
    return done


def _check_formats(formats: object) -> list[Format]:
    listed = [formats] if isinstance(formats, (str, Format)) else formats
    if not isinstance(listed, Iterable) or not (listed := list(listed)):
        raise ValueError(f"formats must name at least one format, such as ('fp16', 'bf16'); got {formats!r}")
    fmts = []
    for item in listed:
        try:
            fmts.append(get_format(item))
        except (ValueError, TypeError) as err:
            raise ValueError(f"formats: {err}") from None
    return list(dict.fromkeys(fmts))  # a format named twice is audited once


def _check_arguments(model: object, batch: object, loss_fn: object, steps: object, headroom: object, lr: object):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ValueError("model has no parameters: there are no weights or gradients to audit; pass a trainable model")
    parts = batch if isinstance(batch, (tuple, list)) else [batch]
    if not parts or not all(isinstance(part, torch.Tensor) for part in parts):
        raise TypeError(f"batch must be a torch tensor (or a tuple of tensors for model(*batch)), got {batch!r:.80}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output, target), got {type(loss_fn).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if lr is not None and steps == 1:
        raise ValueError(f"lr={lr!r} has no effect with steps=1 (the SGD step runs between audited steps); "
                         "pass steps > 1 or leave lr out")  # fmt: skip
    for name, value, least in (("headroom", headroom, 1.0), *([("lr", lr, 0.0)] if lr is not None else [])):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < least:
            raise ValueError(f"{name} must be a finite number >= {least:g}, got {value!r}")


def _fp32_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy in training mode: the caller's weights, buffers (BatchNorm statistics) and mode stay."""
    return copy.deepcopy(model).float().train()


def _fp32_inputs(batch: torch.Tensor | Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    parts = batch if isinstance(batch, (tuple, list)) else (batch,)
    return tuple((p.float() if p.is_floating_point() else p).to(device) for p in parts)  # token ids stay integers


def _loss(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], loss_fn: Callable, target: object):
    shapes = " and ".join(str(tuple(p.shape)) for p in inputs)
    try:
        output = model(*inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as err:  # torch reports a shape mismatch this way
        raise ValueError(f"batch of shape {shapes} does not fit the model: {first_line(err)}") from None
    try:
        loss = loss_fn(output) if target is None else loss_fn(output, target)
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise ValueError(f"loss_fn(output, target) failed on the model's output: {first_line(err)}") from None
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar (reduce it, e.g. with .mean()); it returned shape "
                         f"{tuple(loss.shape)}")  # fmt: skip
    if not loss.requires_grad:
        raise ValueError(
            "loss_fn's result does not depend on the model's parameters: there is nothing to differentiate"
        )
    return loss.reshape(())


class _HookError(Exception):
    """An error inside the audit's own hooks: not the model's, so never reported as a batch that does not fit."""


def _guarded(function: Callable) -> Callable:
    """`function`, its errors wrapped in _HookError (audit() re-raises the original)."""

    def call(*args: object) -> object:
        try:
            return function(*args)
        except _HookError:
            raise
        except Exception as err:
            raise _HookError() from err

    return call


class _Recorder:
    """Forward hooks on every module, tensor hooks on their outputs and on the parameters: each tensor is measured
    when it is produced, so the list is in execution order."""

    def __init__(self, model: torch.nn.Module, formats: list[Format]) -> None:
        self.model, self.formats = model, formats
        self.tensors: list[TensorStats] = []
        self.gradients: list[torch.Tensor] = []  # every gradient of every step, for the loss scales
        self.step, self._order = 0, 0
        self._seen: dict[int, torch.Tensor] = {}  # this step's outputs by id (held, so that ids stay unique)
        self._calls: dict[str, int] = {}
        self._ever_called: set[str] = set()

    @property
    def saw_nonfinite(self) -> bool:
        return any(t.nonfinite for t in self.tensors)

    def start_step(self, step: int) -> None:
        self.step, self._order, self._seen, self._calls = step, 0, {}, {}
        for name, parameter in self.model.named_parameters():
            self.record(parameter.detach(), name, "parameter", _owner(name))

    def hooks(self) -> ExitStack:
        stack = ExitStack()
        for path, module in self.model.named_modules():
            stack.callback(module.register_forward_hook(self._forward_hook(path)).remove)
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                stack.callback(parameter.register_hook(self._gradient_hook(name, "gradient", _owner(name))).remove)
        return stack

    def _forward_hook(self, path: str):
        @_guarded
        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            calls = self._calls[path] = self._calls.get(path, 0) + 1
            self._ever_called.add(path)
            label = (path or "(model)") + (f"#{calls}" if calls > 1 else "")  # a module called twice: its 2nd call
            parts = tree_flatten(output)[0]  # nested tuples (an LSTM's (out, (h, c))), lists and dicts
            for i, part in enumerate(parts):
                if isinstance(part, torch.Tensor) and part.is_floating_point() and id(part) not in self._seen:
                    self._seen[id(part)] = part
                    name = label + (f"[{i}]" if len(parts) > 1 else "")
                    self.record(part.detach(), name, "activation", path)
                    if part.requires_grad:
                        part.register_hook(self._gradient_hook(name, "activation gradient", path))

        return hook

    def _gradient_hook(self, name: str, kind: str, module: str):
        @_guarded
        def hook(gradient: torch.Tensor) -> None:
            kept = gradient.detach().clone()  # autograd may accumulate into the tensor it handed us
            self.gradients.append(kept)
            self.record(kept, name, kind, module)

        return hook

    def unaudited(self) -> tuple[str, ...]:
        """Modules owning parameters whose forward hook never fired: their outputs have no row."""
        owners = [path for path, module in self.model.named_modules() if _owns_parameters(module)]
        return tuple(path for path in owners if path not in self._ever_called)

    def record(self, tensor: torch.Tensor, name: str, kind: str, module: str) -> None:
        self.tensors.append(_measure(tensor, self.formats, name, kind, module, self.step, self._order))
        self._order += 1

    def all_gradients(self) -> torch.Tensor:
        """Every gradient element of every step, flat, float64 (exact), on the CPU."""
        return torch.cat(
            [g.reshape(-1).double().cpu() for g in self.gradients] or [torch.zeros(0, dtype=torch.float64)]
        )


def _owner(parameter_name: str) -> str:
    """The path of the module holding a parameter ('' for the model itself): named_parameters' prefix."""
    return parameter_name.rpartition(".")[0]


def _owns_parameters(module: torch.nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _measure(x: torch.Tensor, formats: list[Format], name: str, kind: str, module: str, step: int, order: int):
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()  # fp16, bf16, fp8 outputs: exact in float32
    finite = torch.isfinite(x)
    finite_nonzero = finite & (x != 0)
    magnitudes = x.abs()[finite_nonzero]
    return TensorStats(
        name, kind, module, step, order, tuple(x.shape),
        float(magnitudes.min()) if magnitudes.numel() else None,
        float(magnitudes.max()) if magnitudes.numel() else None,
        int((~finite).sum()),
        {fmt.name: _counts(x, fmt, finite_nonzero) for fmt in formats},
    )  # fmt: skip


def _counts(x: torch.Tensor, fmt: Format, finite_nonzero: torch.Tensor) -> FormatCounts:
    with suspended():  # the audit's own roundings stay out of the caller's track_flags blocks
        rounded, flags = round_to(x, fmt, flags=True, on_nan="zero")  # on_nan: a NaN in a format without NaN
    kept = finite_nonzero & torch.isfinite(rounded) & (rounded != 0)
    wide, exact = rounded[kept].double(), x[kept].double()
    errors = (wide - exact).abs() / exact.abs()  # the difference is exact in float64; the quotient rounds once
    return FormatCounts(flags.total, flags.overflow, flags.subnormal, flags.flushed_to_zero, _median(errors),
                        float(errors.max()) if errors.numel() else None)  # fmt: skip


def _median(values: torch.Tensor) -> float | None:
    """The median as NumPy takes it: the mean of the two middle values of an even count."""
    n = values.numel()
    if n == 0:
        return None
    low, high = values.kthvalue((n + 1) // 2).values, values.kthvalue(n // 2 + 1).values
    return float((low + high) / 2)


# ---- loss scales ---------------------------------------------------------------------------------------------------
def _fp32_scale(k: int) -> int:
    return min(max(k, _SMALLEST_SCALE_EXPONENT), _LARGEST_SCALE_EXPONENT)


def _loss_scale(fmt: Format, every: torch.Tensor, finite: torch.Tensor, headroom: float) -> LossScale:
    """fmt's loss scale for `every` gradient element (all_gradients) of which `finite` are the finite ones."""
    nonzero = finite[finite != 0]
    unscaled, flushed = _rounding(every, fmt, 1.0)
    saturates = fmt.overflow == "saturate"
    if nonzero.numel() == 0:
        return LossScale(fmt.name, headroom, None, unscaled.total, None, unscaled.flushed_to_zero,
                         unscaled.flushed_to_zero, 0, unscaled.subnormal, unscaled.subnormal, unscaled.overflow,
                         unscaled.overflow, saturates, None, None, None,
                         "no nonzero finite gradient: a loss scale would multiply zeros")  # fmt: skip
    largest = float(nonzero.abs().max())
    k = _fp32_scale(floor_log2(Fraction(fmt.max) / (Fraction(headroom) * Fraction(largest))))
    scaled, flushed_scaled = _rounding(every, fmt, 2.0**k)
    rescued = int((flushed & ~flushed_scaled).sum())  # element by element: a scale below 1 flushes more, rescues none
    all_finite = finite.numel() == every.numel()
    dynamic, steps, skipped, reasoning = _dynamic_steady_state(fmt, largest, all_finite)
    return LossScale(fmt.name, headroom, largest, unscaled.total, 2.0**k, unscaled.flushed_to_zero,
                     scaled.flushed_to_zero, rescued, unscaled.subnormal, scaled.subnormal, unscaled.overflow,
                     scaled.overflow, saturates, dynamic, steps, skipped, reasoning)  # fmt: skip


def _rounding(every: torch.Tensor, fmt: Format, scale: float) -> tuple[Flags, torch.Tensor]:
    """The codec's flags of every gradient element (flat float64, as all_gradients) times `scale` rounded to fmt,
    and which elements flush: a nonzero finite value that rounds to zero."""
    scaled = every * scale  # exact: 2^k × a float32 value stays in float64's range
    with suspended():
        rounded, flags = round_to(scaled, fmt, flags=True, on_nan="zero")
    return flags, torch.isfinite(scaled) & (scaled != 0) & (rounded == 0)


def _survives(fmt: Format, value: float) -> bool:
    """Whether `value` rounds to a finite number in fmt: what GradScaler's inf/NaN check sees."""
    with suspended():
        return bool(torch.isfinite(round_to(torch.tensor([value], dtype=torch.float64), fmt, on_nan="zero")).all())


def scaler_rules() -> str:
    """torch.amp.GradScaler's defaults in words (fpsim.scaling.DynamicLossScaler is its state machine)."""
    scaler = DynamicLossScaler()
    return (f"GradScaler (from {_power(scaler.init_scale)}: ×½ and a skipped step on inf/NaN, ×2 after "
            f"{scaler.growth_interval} clean steps), if the gradients stay as measured")  # fmt: skip


def _dynamic_steady_state(fmt: Format, largest: float, all_finite: bool) -> tuple:
    """GradScaler's scale once the gradients stay as measured: (scale, steps to reach it, skipped steps, why)."""
    if not all_finite:
        return None, None, None, "the fp32 gradients already hold inf/NaN: it halves at every step, toward 0"
    scaler = DynamicLossScaler()
    start, interval, top = round(math.log2(scaler.init_scale)), scaler.growth_interval, _LARGEST_SCALE_EXPONENT
    k = floor_log2(Fraction(fmt.max) / Fraction(largest))  # 2^k × largest ≤ max: finite for sure
    if fmt.overflow == "saturate":  # an overflow rounds to ±max: GradScaler's inf/NaN check never fires
        clipped = f"from {_power(2.0 ** (k + 1))} on" if k < top else "never"
        return 2.0**top, (top - start) * interval, 0, (
            "the format saturates (beyond max is ±max, never inf), so no step is ever skipped: it grows for "
            f"{(top - start) * interval} clean steps to {_power(2.0**top)}, the largest fp32 scale, and "
            f"{clipped} the largest gradient is silently clipped to max")  # fmt: skip
    if k < top:  # 2^(k+1) is still an fp32 scale: between max and the overflow threshold it rounds to max, finite
        k += _survives(fmt, largest * 2.0 ** (k + 1))
    k = _fp32_scale(k)
    growth = f"grows for {(k - start) * interval} clean steps to {_power(2.0**k)}"
    if k == top and _survives(fmt, largest * 2.0**k):  # 2^128 is no fp32 number
        return 2.0**k, (k - start) * interval, 0, f"{growth}: no fp32 scale overflows it"
    cycle = f"every {interval}th step then tries {_power(2.0 ** (k + 1))}, overflows and is skipped"
    if k < start:
        halves = f"halves {start - k} times to {_power(2.0**k)} ({start - k} steps skipped); {cycle}"
        return 2.0**k, start - k, start - k, halves
    return 2.0**k, (k - start) * interval, 0, f"{growth}; {cycle}"


def _power(value: float) -> str:
    mantissa, exponent = math.frexp(value)
    return f"2^{exponent - 1}" if mantissa == 0.5 else f"{value:g}"


# ---- the terminal view ---------------------------------------------------------------------------------------------
def _summary(result: Audit) -> list[RenderableType]:
    kinds = {kind: sum(1 for t in result.tensors if t.kind == kind) for kind in KINDS}
    counted = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in kinds.items() if n)
    steps = f"{result.steps} step{'s' if result.steps != 1 else ''}"
    return [Text(f"{len(result.tensors)} tensors of the fp32 run, {steps}: {counted}.\n"
                 "kind: param (a weight or bias), act (a module's output), act-grad (its gradient), grad (a "
                 "parameter's gradient).\n"
                 "overflow, subnormal, flushed: % of the tensor's elements, counted by fpsim's codec.\n"
                 "error: |round(x) - x| / |x| over the elements that stay nonzero and finite.")]  # fmt: skip


def _format_section(result: Audit, fmt: str, rows: int) -> list[RenderableType]:
    spec = get_format(fmt)
    shown = result.worst(fmt, rows)
    heading = (f"\n{fmt} (max {spec.max:g}, least normal {spec.smallest_normal:.3g}, least subnormal "
               f"{spec.smallest_subnormal:.3g}): the {len(shown)} worst of {len(result.tensors)} tensors")  # fmt: skip
    step = result.steps > 1
    columns = ["tensor", "kind", *(["step"] if step else []), "min |x|", "max |x|", "overflow", "subnormal", "flushed",
               "error median", "error max"]  # fmt: skip
    return [Text(heading, style="bold"), table(columns, (_row(t, fmt, step) for t in shown))]


def _row(t: TensorStats, fmt: str, step: bool) -> list[str]:
    counts = t.formats[fmt]
    name = t.name + (f" ({t.nonfinite} inf/NaN)" if t.nonfinite else "")
    shares = [_percent(getattr(counts, n), counts.total) for n in ("overflow", "subnormal", "flushed")]
    return [name, _SHORT_KINDS[t.kind], *([str(t.step)] if step else []), _number(t.nonzero_min),
            _number(t.nonzero_max), *shares, _number(counts.error_median), _number(counts.error_max)]  # fmt: skip


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _percent(count: int, total: int) -> str:
    return "0" if count == 0 else percent(100 * count / total, ".3g", 0.01)  # never print a nonzero count as 0


def _loss_scale_section(result: Audit) -> list[RenderableType]:
    columns = ["format", "largest gradient", "scale", "overflow unscaled", "flushed unscaled", "flushed scaled",
               "rescued", "GradScaler settles at"]  # fmt: skip
    rows = [[s.format, _number(s.largest), "-" if s.recommended is None else _power(s.recommended),
             str(s.overflow_unscaled), str(s.flushed_unscaled), str(s.flushed_scaled), str(s.rescued),
             "-" if s.dynamic is None else _power(s.dynamic)] for s in result.loss_scales.values()]  # fmt: skip
    total = next(iter(result.loss_scales.values())).total
    heading = (f"\nLoss scales: the largest power of two that keeps the largest gradient below max / headroom "
               f"({result.headroom:g}), and\nthe gradient elements (of {total}: activation and parameter gradients) "
               "it rescues from flushing to zero")  # fmt: skip
    why = [Text(f"{scaler_rules()}:", style="dim")]
    why += [Text(f"  {s.format}: {_needs(s)}{s.reasoning}", style="dim") for s in result.loss_scales.values()]
    return [Text(heading, style="bold"), table(columns, rows), *why]


def _needs(scale: LossScale) -> str:
    if scale.recommended is None:
        return ""
    if scale.overflow_unscaled:
        return f"{scale.overflow_unscaled} gradient elements overflow unscaled: the scale must be below 1; "
    return "" if scale.flushed_unscaled else "needs no scale (nothing flushes or overflows); "


def _unaudited_lines(result: Audit) -> list[RenderableType]:
    return [Text(f"{path}: never called as a module (its weights used functionally): its output is not audited.",
                 style="yellow") for path in result.unaudited]  # fmt: skip


def _first_nonfinite_line(result: Audit) -> Text:
    first = result.first_nonfinite
    if first is None:
        return Text("\nFirst non-finite tensor: none, every tensor of the fp32 run is finite.")
    where = f"module {first.module!r}" if first.module else "the model itself"
    return Text(f"\nFirst non-finite tensor: {first.name} ({first.kind} of {where}, step {first.step}): "
                f"{first.nonfinite} of {first.numel} elements are inf or NaN in fp32.", style="bold red")  # fmt: skip
