"""How closely two runs of one config agree: the simulator against torch, step by step.

Invariant: every figure is read off the two Histories alone; a step where both losses are non-finite agrees,
a step where only one is non-finite differs infinitely.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from fpsim.train import History

LOSS_TOLERANCE = 1e-3  # relative per-step loss difference past which two runs are said to diverge


@dataclass(frozen=True)
class Agreement:
    """The agreement of two runs of one policy; `first_divergence` is a 1-based step, or None."""

    policy: str
    steps: int
    skipped_simulator: list[int]
    skipped_torch: list[int]
    scales_equal: bool
    loss_difference_max: float
    loss_difference_median: float
    first_divergence: int | None
    tolerance: float

    @property
    def skipped_agree(self) -> bool:
        return self.skipped_simulator == self.skipped_torch

    def to_dict(self) -> dict:
        return {**asdict(self), "skipped_agree": self.skipped_agree}


def loss_differences(simulated: History, hardware: History) -> np.ndarray:
    """|a − b| / |a| per step: 0 where both are non-finite, inf where only one is."""
    a, b = _aligned(simulated.loss, hardware.loss)
    both_bad, one_bad = ~np.isfinite(a) & ~np.isfinite(b), np.isfinite(a) != np.isfinite(b)
    with np.errstate(invalid="ignore", divide="ignore"):  # the non-finite steps are resolved just below
        relative = np.abs(a - b) / np.abs(a)
    relative[(a == b) | both_bad] = 0.0  # equal losses, zeros included, agree exactly
    relative[one_bad] = math.inf
    return relative


def agreement(simulated: History, hardware: History, tolerance: float = LOSS_TOLERANCE) -> Agreement:
    """Compare two Histories of the same policy and steps; ValueError if they are not runs of one experiment."""
    if not tolerance > 0:
        raise ValueError(f"tolerance must be a number > 0, got {tolerance!r}")
    if simulated.policy["name"] != hardware.policy["name"] or len(simulated.loss) != len(hardware.loss):
        raise ValueError("the two Histories must be runs of one policy over the same number of steps")
    differences = loss_differences(simulated, hardware)
    beyond = np.flatnonzero(differences > tolerance)
    return Agreement(
        policy=simulated.policy["name"],
        steps=len(differences),
        skipped_simulator=_skipped_steps(simulated),
        skipped_torch=_skipped_steps(hardware),
        scales_equal=list(map(float, simulated.scale)) == list(map(float, hardware.scale)),
        loss_difference_max=float(differences.max()),
        loss_difference_median=float(np.median(differences)),
        first_divergence=int(beyond[0]) + 1 if beyond.size else None,
        tolerance=tolerance,
    )


def _aligned(a: list[float], b: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def _skipped_steps(history: History) -> list[int]:
    return [step + 1 for step, skipped in enumerate(history.skipped) if skipped]
