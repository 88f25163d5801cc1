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
from fpsim.report import Report, cell, markdown_table
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

    def outcomes(self) -> list[dict]:
        """What each run reached: one row per policy and backend."""
        runs = [(h, "simulator") for h in self.simulator], [(h, f"torch {self.device}") for h in self.torch]
        return [_outcome(h, where) for pair in zip(*runs) for h, where in pair]

    def agreement_rows(self) -> list[dict]:
        """How closely the two runs of each policy agree: one row per policy."""
        return [_agreement_row(a) for a in self.agreements]

    def show(self, console, report: Report | None = None) -> None:
        """Print both tables, and add them to `report` when given."""
        for heading, rows in (("What each run reached", self.outcomes()),
                              ("How closely simulator and torch agree", self.agreement_rows())):  # fmt: skip
            console.print(heading, style="bold", markup=False)
            console.print(_terminal.table(list(rows[0]), ([cell(v) for v in row.values()] for row in rows)))
            if report is not None:
                report.text(f"**{heading}**\n\n" + markdown_table(rows))

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "device": self.device, "outcomes": self.outcomes(),
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


def report(scenario: str, policies: list[str] | tuple[str, ...] = POLICIES, *, out: str | os.PathLike,
           device: str = "auto", steps: int | None = None, synced: bool = False, console=None) -> Path:  # fmt: skip
    """`fpsim compare`: run the comparison, print it, and write report.md, report.json and the overlay figure
    into the folder `out` (checked before any work). Returns the report.md path."""
    folder = Report(out, f"fpsim compare: the {scenario} scenario, simulator against torch", argument="--out",
                    figures=[f"compare_{scenario}"])  # fmt: skip
    console = console or _terminal.console()
    comparison = compare(scenario, policies, device=device, steps=steps, quiet=False)
    console.print(f"scenario {scenario} on {comparison.device}: {train.SCENARIOS[scenario][0]}", markup=False)
    folder.section(f"{scenario} on {comparison.device}", train.SCENARIOS[scenario][0])
    comparison.show(console, folder)
    folder.data["comparison"] = comparison.to_dict()
    from fpsim import plots  # matplotlib loads only when a figure is drawn

    figure = plots.simulator_vs_hardware(comparison.simulator, comparison.torch)[0]
    folder.figure(f"compare_{scenario}", figure, f"{scenario}: simulator (solid) against torch on "
                  f"{comparison.device} (dashed)")  # fmt: skip
    if synced:
        _synced(folder, scenario, policies, comparison.device, steps, console)
    path = folder.write()
    console.print(f"wrote {path}", markup=False)
    return path


def synced(scenario: str, policies: list[str] | tuple[str, ...] = POLICIES, *, device: str = "auto",
           steps: int | None = None, kernels: str = "torch") -> list[dict]:  # fmt: skip
    """Per policy: torch restarted from the simulator's exact state at every step, and how many weight elements
    come out bit-identical (and finite: NaN on both sides is reported as non-finite, not as agreement); where some
    do not, the first tensor (in backward order) that differs and by how many ulps. One row per policy, with the
    per-step fractions under "per step"."""
    from fpsim.torch import training

    configs = [train.scenario(scenario, policy=name, kernels=kernels) for name in policies]
    for config in configs:
        config.validate()
    rows = []
    for config in configs:
        results = training.synced_step_agreement(config, steps, device=device)
        rows.append(_synced_row(config.policy, results))
    return rows


def _synced_row(policy: str, results: list) -> dict:
    fractions = np.array([r.identical for r in results])
    first = next((r for r in results if r.first_different), None)
    return {
        "policy": policy,
        "steps": len(results),
        "identical weights (mean)": float(fractions.mean()),
        "identical weights (worst step)": float(fractions.min()),
        "steps all identical": int((fractions == 1).sum()),
        "non-finite weights (worst step)": max(r.non_finite for r in results),
        "first differing tensor": f"{first.first_different} at step {first.step}, {first.max_ulps} ulp"
        if first
        else None,
        "per step": fractions.tolist(),
    }


def _synced(folder: Report, scenario: str, policies, device: str, steps: int | None, console) -> None:
    rows = synced(scenario, policies, device=device, steps=steps)
    shown = [{k: v for k, v in row.items() if k != "per step"} for row in rows]
    heading = "Synced: torch restarted from the simulator's state at every step (kernels='torch')"
    console.print(heading, style="bold", markup=False)
    console.print(_terminal.table(list(shown[0]), ([cell(v) for v in row.values()] for row in shown)))
    folder.text(f"**{heading}**\n\n" + markdown_table(shown))
    folder.data["synced"] = rows


def _outcome(history: History, where: str) -> dict:
    summary = history.summary()
    return {
        "policy": summary["policy"],
        "backend": where,
        "final loss": summary["final loss"],
        "test accuracy": summary["test accuracy"],
        "skipped steps": summary["skipped steps"],
        "flushed %": summary["flushed %"],
        "ms/step": 1000 * _seconds_per_step(history),
        "peak MiB": None if history.peak_memory_bytes is None else history.peak_memory_bytes / 2**20,
    }


def _seconds_per_step(history: History) -> float:
    """The median training step where the backend timed each (torch: census left out), else the run's seconds
    (evaluations included) over its steps."""
    if history.step_seconds:
        return float(np.median(history.step_seconds))
    return history.seconds / max(1, len(history.loss))


def _agreement_row(agreed: Agreement) -> dict:
    return {
        "policy": agreed.policy,
        "same skipped steps": agreed.skipped_agree,
        "same scales": agreed.scales_equal,
        "max loss diff": agreed.loss_difference_max,
        "median loss diff": agreed.loss_difference_median,
        f"first step > {agreed.tolerance:g}": agreed.first_divergence,
    }
