"""Loss scalers: static, dynamic (torch.amp.GradScaler's state machine, bit for bit), and variants to compare.

Invariant: the scale is an fp32 value, updated exactly as torch's CPU kernel does (the product formed in
float64, then stored as fp32); gradients are unscaled by the fp32-rounded reciprocal, in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fpsim.codec import round as round_to
from fpsim.flags import suspended
from fpsim.formats import FP32


def _fp32(value: float) -> float:
    with suspended():  # bookkeeping of the scaler, not a rounding of the model's tensors
        return float(round_to(value, FP32))


def _positive(name: str, value: object, *, above_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= (1 if above_one else 0):
        raise ValueError(f"{name} must be a finite number {'> 1' if above_one else '> 0'}, got {value}")
    return float(value)


def fp32_scale(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A loss scale as the fp32 the scaler keeps: it must round to a finite fp32, and to a nonzero one
    unless it is a stored state that backed off to zero."""
    scale = 0.0 if allow_zero and value == 0 else _positive(name, value)
    stored = _fp32(scale)
    if not math.isfinite(stored) or (stored == 0 and not allow_zero):
        raise ValueError(f"{name}={value!r} rounds to {stored} in fp32; use a scale between 2^-149 and 2^127")
    return stored


def unscale(gradients: Sequence[np.ndarray], scale: float) -> tuple[list[np.ndarray], bool]:
    """Multiply fp32 gradients by the fp32-rounded reciprocal of the scale, in fp32, as GradScaler.unscale_ does.

    That is not g / scale: with scale 3, the two differ in about a third of the elements. Returns the
    unscaled gradients and found_inf (any inf or NaN among the scaled gradients).
    """
    with np.errstate(divide="ignore", over="ignore"):  # a scale backed off to 0 gives inf, as in torch
        inverse = np.float32(np.divide(1.0, _fp32(scale)))  # the fp32 scale's float64 reciprocal, rounded to fp32
    found_inf = False
    unscaled = []
    for gradient in gradients:
        with np.errstate(over="ignore"):  # float64 gradients past fp32's range become inf: found_inf says so
            g = np.asarray(gradient, dtype=np.float32)
        found_inf = found_inf or not bool(np.isfinite(g).all())
        with np.errstate(invalid="ignore", over="ignore"):  # inf·x and NaN propagate: they are what found_inf says
            unscaled.append((g * inverse).astype(np.float64))  # fp32 × fp32, rounded once: torch's kernel
    return unscaled, found_inf


@dataclass
class StaticLossScaler:
    """A constant scale: the loss is multiplied by it, gradients divided by it; overflow steps are still skipped."""

    scale: float = 2.0**10

    def __post_init__(self) -> None:
        self.scale = fp32_scale("scale", self.scale)

    def unscale(self, gradients: Sequence[np.ndarray]) -> tuple[list[np.ndarray], bool]:
        return unscale(gradients, self.scale)

    def update(self, found_inf: bool) -> None:
        """A static scale never changes."""

    def state_dict(self) -> dict:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.scale = fp32_scale("scale", state["scale"])


@dataclass
class DynamicLossScaler:
    """torch.amp.GradScaler's policy: back off by `backoff_factor` on inf/NaN, grow by `growth_factor` after
    `growth_interval` consecutive clean steps, unless the grown scale would not be a finite fp32.

    `min_scale` and `hysteresis` are off by default (torch has neither); the variants below set them.
    """

    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    min_scale: float = 0.0
    hysteresis: int = 1
    scale: float = field(init=False)
    growth_tracker: int = field(init=False, default=0)
    hysteresis_left: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        self._check_factors()
        self.scale = fp32_scale("init_scale", self.init_scale)
        self.hysteresis_left = self.hysteresis

    def _check_factors(self) -> None:
        _positive("growth_factor", self.growth_factor, above_one=True)
        if not 0 < self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be between 0 and 1, got {self.backoff_factor}")
        for name in ("growth_interval", "hysteresis"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def unscale(self, gradients: Sequence[np.ndarray]) -> tuple[list[np.ndarray], bool]:
        return unscale(gradients, self.scale)

    def update(self, found_inf: bool) -> None:
        """One step of the state machine (torch's _amp_update_scale_cpu_ kernel, plus this class's options)."""
        if found_inf:
            if self.hysteresis_left <= 1:  # torch (hysteresis 1): back off at once; DeepSpeed: once it is used up
                self.scale = max(_fp32(self.scale * self.backoff_factor), self.min_scale)
            else:
                self.hysteresis_left -= 1
            self.growth_tracker = 0
            return
        successful = self.growth_tracker + 1
        if successful == self.growth_interval:
            grown = _fp32(self.scale * self.growth_factor)  # formed in float64, stored as fp32
            if math.isfinite(grown):  # near fp32's max the scale stops growing instead of becoming inf
                self.scale = grown
            self.growth_tracker = 0
            self.hysteresis_left = self.hysteresis  # DeepSpeed restores its hysteresis when the scale grows
        else:
            self.growth_tracker = successful

    def state_dict(self) -> dict:
        """torch.amp.GradScaler's keys."""
        return {
            "scale": self.scale,
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "_growth_tracker": self.growth_tracker,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state)
        if missing:
            raise ValueError(f"state is missing {', '.join(sorted(missing))}; pass a state_dict() of a scaler")
        tracker = state["_growth_tracker"]
        if isinstance(tracker, bool) or not isinstance(tracker, (int, np.integer)) or tracker < 0:
            raise ValueError(f"_growth_tracker must be a non-negative int, got {tracker!r}")
        self.growth_factor, self.backoff_factor = state["growth_factor"], state["backoff_factor"]
        self.growth_interval = state["growth_interval"]
        self._check_factors()
        self.scale = fp32_scale("scale", state["scale"], allow_zero=True)  # a scale may back off to 0, as torch's
        self.growth_tracker = int(tracker)


def apex_scaler() -> DynamicLossScaler:
    """Apex's DynamicLossScaler: starts at 2^32, doubles after 1000 clean steps, halves on overflow, floor 1."""
    return DynamicLossScaler(init_scale=2.0**32, growth_interval=1000, min_scale=1.0)


def hysteresis_scaler(hysteresis: int = 2, **options: float) -> DynamicLossScaler:
    """DeepSpeed's rule: the first `hysteresis` - 1 overflows only use up the hysteresis; every overflow after
    that backs off, until a growth of the scale restores it."""
    return DynamicLossScaler(hysteresis=hysteresis, **options)


def naive_scaler(init_scale: float = 2.0**16) -> DynamicLossScaler:
    """The common broken snippet: double after *every* clean step. It overflows every other step once it
    reaches the largest safe scale, so half the steps are skipped."""
    return DynamicLossScaler(init_scale=init_scale, growth_interval=1)


SCALERS = {
    "none": "no loss scaling",
    "static": "StaticLossScaler: a fixed scale",
    "dynamic": "DynamicLossScaler: torch.amp.GradScaler's state machine",
    "apex": "Apex: init 2^32, growth window 1000, floor 1",
    "hysteresis": "DeepSpeed's hysteresis: the first overflow is forgiven until the scale grows again",
    "naive": "grows after every clean step: oscillates",
}
