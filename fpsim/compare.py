"""The simulator against torch on one config: both backends run it, and their Histories are compared step by step.

Invariant: every agreement figure is read off the two Histories alone; a step where both losses are non-finite
agrees, a step where only one is non-finite differs infinitely.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fpsim import _terminal, train
from fpsim._terminal import StepProgress
from fpsim.report import Report, cell
from fpsim.train import History

POLICIES = ("fp32", "fp16", "fp16-static", "fp16-dynamic", "amp", "bf16")  # every policy torch runs natively
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


@dataclass
class Comparison:
    """One scenario run by both backends, policy by policy."""

    scenario: str
    device: str
    simulator: list[History]
    torch: list[History]
    agreements: list[Agreement]

    def rows(self) -> list[dict]:
        """One summary row per policy: outcomes side by side, then how closely the runs agree."""
        return [_row(s, t, a) for s, t, a in zip(self.simulator, self.torch, self.agreements)]

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "device": self.device, "rows": self.rows(),
                "agreements": [a.to_dict() for a in self.agreements],
                "simulator": [asdict(h) for h in self.simulator], "torch": [asdict(h) for h in self.torch]}  # fmt: skip


def compare(scenario: str, policies: list[str] | tuple[str, ...] = POLICIES, *, device: str = "auto",
            steps: int | None = None, seed: int | None = None, quiet: bool = True) -> Comparison:  # fmt: skip
    """Run `scenario` under each policy in the simulator and in torch on `device`, and compare the runs.

    Every config and the device are checked before the first step; `quiet=False` shows progress on stderr.
    """
    from fpsim.torch import training  # torch is needed from here on; its ImportError names the extra

    overrides = {k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None}
    configs = [train.scenario(scenario, policy=name, **overrides) for name in policies]
    for config in configs:
        config.validate()  # every config is checked before any run starts
    device = str(training.resolve_device(device))
    simulated, hardware = [], []
    with StepProgress(quiet=quiet) as progress:
        for config in configs:
            simulated.append(train.run(config, on_step=_reporter(progress, f"{config.policy} simulator", config)))
            hardware.append(training.run(config, device=device,
                                         on_step=_reporter(progress, f"{config.policy} torch", config)))  # fmt: skip
    agreements = [agreement(s, t) for s, t in zip(simulated, hardware)]
    return Comparison(scenario, device, simulated, hardware, agreements)


def _reporter(progress: StepProgress, label: str, config: train.Config):
    update = progress.task(label, config.steps)
    return lambda history: update(len(history.loss), f"loss {history.loss[-1]:.4g}")


def print_rows(rows: list[dict], console) -> None:
    """A comparison's rows as a terminal table."""
    console.print(_terminal.table(list(rows[0]), ([cell(v) for v in row.values()] for row in rows)))


def report(scenario: str, policies: list[str] | tuple[str, ...] = POLICIES, *, out: str | os.PathLike,
           device: str = "auto", steps: int | None = None, synced: bool = False, console=None) -> Path:  # fmt: skip
    """`fpsim compare`: run the comparison, print it, and write report.md, report.json and the overlay figure
    into the folder `out` (checked before any work). Returns the report.md path."""
    folder = Report(out, f"fpsim compare: the {scenario} scenario, simulator against torch", argument="--out")
    console = console or _terminal.console()
    comparison = compare(scenario, policies, device=device, steps=steps, quiet=False)
    rows = comparison.rows()
    console.print(f"scenario {scenario} on {comparison.device}: {train.SCENARIOS[scenario][0]}", markup=False)
    print_rows(rows, console)
    folder.section(f"{scenario} on {comparison.device}", train.SCENARIOS[scenario][0])
    folder.table(rows)
    folder.data["comparison"] = comparison.to_dict()
    from fpsim import plots  # matplotlib loads only when a figure is drawn

    figure = plots.simulator_vs_hardware(comparison.simulator, comparison.torch)[0]
    folder.figure(f"compare_{scenario}", figure, f"{scenario}: simulator (solid) against torch on "
                  f"{comparison.device} (dashed)")  # fmt: skip
    if synced:
        pass  # synced: wired once the torch backend offers it
    path = folder.write()
    console.print(f"wrote {path}", markup=False)
    return path


def _row(simulated: History, hardware: History, agreed: Agreement) -> dict:
    sim, hw = simulated.summary(), hardware.summary()
    return {
        "policy": agreed.policy,
        "loss sim": sim["final loss"],
        "loss torch": hw["final loss"],
        "accuracy sim": sim["test accuracy"],
        "accuracy torch": hw["test accuracy"],
        "skipped sim": len(agreed.skipped_simulator),
        "skipped torch": len(agreed.skipped_torch),
        "same skipped steps": agreed.skipped_agree,
        "same scales": agreed.scales_equal,
        "flushed % sim": sim["flushed %"],
        "flushed % torch": hw["flushed %"],
        "ms/step sim": 1000 * simulated.seconds / max(1, len(simulated.loss)),
        "ms/step torch": 1000 * hardware.seconds / max(1, len(hardware.loss)),
        "max loss diff": agreed.loss_difference_max,
        "median loss diff": agreed.loss_difference_median,
        f"first step > {agreed.tolerance:g}": agreed.first_divergence,
    }
