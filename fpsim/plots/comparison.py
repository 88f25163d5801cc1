"""The simulator against hardware: runs of the same configs in fpsim's simulator and in torch, one row per policy,
so that where the two agree and where they part is visible policy by policy.

Invariant: the figure only reads paired Histories (same policy, same steps, same order); in every panel the
simulator is the wide sky-blue line and the hardware the thin black dashed line drawn on top of it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from fpsim._terminal import percent
from fpsim.plots.layout import panel_grid
from fpsim.plots.training import (
    _first_non_finite,
    _histories,
    _mark_non_finite,
    _name,
    _powers_as_mathtext,
    scenario_name,
)
from fpsim.train import SCENARIOS, History

ROW_HEIGHT, WIDTH, TITLE_HEIGHT = 2.1, 13.0, 1.6  # inches
TITLE_CHARACTERS = 150  # characters of the 12 pt title per line across WIDTH
SIMULATOR = {"color": "#56B4E9", "linewidth": 4, "solid_capstyle": "butt"}  # Okabe–Ito sky blue, under the black
HARDWARE = {"color": "black", "linestyle": "--", "linewidth": 1.0, "marker": "o", "markersize": 2.5, "zorder": 3}
SKIPPED = {"simulator": ("x", "#0072B2"), "hardware": ("+", "black")}  # marker, colour
MARKS = 15  # hardware markers per line: enough to see the dashes are there where they cover the simulator


def simulator_vs_hardware(simulated: History | Sequence[History], hardware: History | Sequence[History],
                          ax: object = None):  # fmt: skip
    """Runs of the same configs in the simulator and on hardware such as torch, paired in order: one row per
    policy, with columns loss, loss scale (when a policy has a scaler) and flushed gradients (when any run
    flushed some). Returns (figure, Axes array of shape (policies, columns)); `ax` may give that grid."""
    pairs = list(zip(_histories(simulated), _histories(hardware), strict=True))
    for sim, hw in pairs:
        if _name(sim) != _name(hw) or len(sim.loss) != len(hw.loss):
            raise ValueError("simulated and hardware runs must pair up: the same policy and steps, in the same order")
    runs = [h for pair in pairs for h in pair]
    columns = ["loss"]
    columns += ["scale"] if any(_has_scaler(h) for h in runs) else []
    columns += ["flushed"] if any(np.any(np.asarray(h.flushed, dtype=float) > 0) for h in runs) else []
    size = (WIDTH * len(columns) / 3, TITLE_HEIGHT + ROW_HEIGHT * len(pairs))
    figure, grid = panel_grid(ax, len(pairs), len(columns), size, sharex=True)
    for row, (sim, hw) in zip(grid, pairs):
        for panel, column in zip(row, columns):
            _PANELS[column](panel, sim, hw)
        row[0].set_title(_row_title(sim, hw, "flushed" in columns), loc="left", fontsize=10)
    for column, panels in zip(columns, grid.T):
        _COLUMN_LIMITS.get(column, lambda *_: None)(panels, runs)
    _label_steps(grid)
    if ax is None:
        figure.suptitle(_title(pairs, columns), fontsize=12)
        figure.legend(handles=_legend_handles(hw), loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    return figure, grid


def _label_steps(grid: np.ndarray) -> None:
    """Step numbers under the lowest drawn panel of each column (a policy without a scaler leaves a gap)."""
    for column in grid.T:
        lowest = [panel for panel in column if panel.axison][-1:]
        for panel in lowest:
            panel.tick_params(labelbottom=True)
            panel.set_xlabel("step")


def _has_scaler(history: History) -> bool:
    return history.policy.get("scaler", "none") != "none"


def _where(history: History) -> str:
    """Where a run ran: 'torch on cuda' from its environment record, else its backend."""
    device = history.environment.get("device") if history.environment else None
    return f"{history.backend} on {device}" if device else history.backend


def _skipped(history: History) -> int:
    return int(np.sum(np.asarray(history.skipped, dtype=bool)))


def _row_title(sim: History, hw: History, flushed: bool) -> str:
    """The policy and what each side reached, simulator | hardware."""
    finals = " | ".join(f"{h.loss[-1]:.3g}" for h in (sim, hw))
    title = f"{_name(sim)}: skipped steps {_skipped(sim)} | {_skipped(hw)}, final loss {finals}"
    means = " | ".join(percent(100 * float(np.mean(h.flushed)), ".2g", 0.01) for h in (sim, hw))
    return title + (f", mean flushed {means}" if flushed else "")


def _title(pairs: list[tuple[History, History]], columns: list[str]) -> str:
    """What is compared, the scenario's lesson wrapped to the figure's width, and what a missing column means."""
    sim, hw = pairs[0]
    names = {scenario_name(h.config) for pair in pairs for h in pair}
    scenario = next(iter(names)) if len(names) == 1 and None not in names else None
    head = f"Scenario {scenario!r}" if scenario else "Custom settings"
    lines = [f"{head}, {len(sim.loss)} steps: fpsim's simulator against {_where(hw)}, one row per policy "
             "(row titles: simulator | torch)"]  # fmt: skip
    if scenario:
        lines.append(SCENARIOS[scenario][0])
    if "flushed" not in columns:
        lines.append("No gradient element was flushed to zero in any run.")
    width = int(TITLE_CHARACTERS * len(columns) / 3)
    return "\n".join(_powers_as_mathtext(textwrap.fill(line, width)) for line in lines)


def _legend_handles(hw: History) -> list[Line2D]:
    return [
        Line2D([], [], **SIMULATOR, label="fpsim simulator"),
        Line2D([], [], **HARDWARE, label=_where(hw)),
        Line2D([], [], color="0.3", linestyle=":", linewidth=1.5, label="first non-finite loss (× last finite)"),
        Line2D([], [], color="0.3", marker="x", linestyle="none", label="skipped step (simulator ×, torch +)"),
    ]


def _pair(panel: Axes, sim: History, series: Sequence[np.ndarray], step: bool = False) -> None:
    """The simulator wide and sky blue, the hardware thin, dashed and marked, on top: both stay visible."""
    steps = np.arange(1, len(series[0]) + 1)
    drawstyle = "steps-post" if step else "default"
    panel.plot(steps, series[0], drawstyle=drawstyle, gid="simulator", **SIMULATOR)
    markevery = (max(1, len(steps) // (2 * MARKS)), max(1, len(steps) // MARKS))
    panel.plot(steps, series[1], drawstyle=drawstyle, markevery=markevery, gid="hardware", **HARDWARE)


def _loss_panel(panel: Axes, sim: History, hw: History) -> None:
    losses = [np.asarray(h.loss, dtype=float) for h in (sim, hw)]
    shown = [np.where(np.isfinite(loss) & (loss > 0), loss, np.nan) for loss in losses]  # NaN, inf: gaps, marked
    _pair(panel, sim, shown)
    panel.set_ylabel("loss")
    _mark_divergence(panel, sim, hw)


def _mark_divergence(panel: Axes, sim: History, hw: History) -> None:
    """A dotted line at each side's first non-finite loss, labelled in the panel: one line where they agree."""
    firsts = {side: _first_non_finite(h) for side, h in (("simulator", sim), ("torch", hw))}
    marked = [(side, h) for side, h in (("simulator", sim), ("torch", hw)) if firsts[side]]
    if len(marked) == 2 and firsts["simulator"] == firsts["torch"]:
        marked = [("both", sim)]
    for number, (side, history) in enumerate(marked):
        _mark_non_finite(panel, history, color="0.3")
        step = firsts["simulator" if side in ("simulator", "both") else "torch"]
        if step > 1:  # the last finite loss, which may be a lone point that no line joins
            panel.plot([step - 1], [history.loss[step - 2]], "X", color="0.3", markersize=7, zorder=4)
        kind = "NaN" if np.isnan(history.loss[step - 1]) else "inf"
        label = f"loss {kind} from step {step}" + ("" if side == "both" else f" ({side})")
        box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
        panel.text(step, 0.92 - 0.16 * number, f" {label}", transform=panel.get_xaxis_transform(), fontsize=8,
                   va="top", color="0.15", bbox=box)  # fmt: skip


def _scale_panel(panel: Axes, sim: History, hw: History) -> None:
    if not _has_scaler(sim):
        panel.set_axis_off()
        text = f"{_name(sim)}: no loss scaling (scale 1)"
        panel.text(0.5, 0.5, text, transform=panel.transAxes, ha="center", va="center", color="0.4")
        return
    scales = [np.asarray(h.scale, dtype=float) for h in (sim, hw)]
    _pair(panel, sim, scales, step=True)
    for history, scale, side in ((sim, scales[0], "simulator"), (hw, scales[1], "hardware")):
        skipped = np.asarray(history.skipped, dtype=bool)
        steps = np.arange(1, len(scale) + 1)
        marker, color = SKIPPED[side]
        panel.plot(steps[skipped], scale[skipped], marker, color=color, markersize=5, linestyle="none", zorder=4)
    panel.set_yscale("log", base=2)
    panel.set_ylabel("loss scale")


def _flushed_panel(panel: Axes, sim: History, hw: History) -> None:
    flushed = [100 * np.asarray(h.flushed, dtype=float) for h in (sim, hw)]
    _pair(panel, sim, flushed)
    if not any(np.any(f > 0) for f in flushed):
        panel.text(0.5, 0.5, "none flushed", transform=panel.transAxes, ha="center", va="center", color="0.4")
    panel.set_ylabel("flushed %")


def _share_loss_axis(panels: np.ndarray, runs: list[History]) -> None:
    """One loss axis for every policy, so that rows compare at a glance; log where the losses span a decade."""
    losses = np.concatenate([np.asarray(h.loss, dtype=float) for h in runs])
    finite = losses[np.isfinite(losses) & (losses > 0)]
    if not finite.size:
        return
    low, high = float(finite.min()), float(finite.max())
    log = high > 10 * low
    pad = 0.05 * (high - low or 1)
    for panel in panels:
        panel.set_yscale("log" if log else "linear")
        panel.set_ylim(*((low / 1.3, high * 1.3) if log else (low - pad, high + pad)))


def _share_flushed_axis(panels: np.ndarray, runs: list[History]) -> None:
    """One flushed % axis from 0 (a share is never negative) to the largest share of any run."""
    top = max(100 * float(np.max(np.asarray(h.flushed, dtype=float), initial=0.0)) for h in runs)
    for panel in panels:
        panel.set_ylim(0, 1.1 * top)


_PANELS = {"loss": _loss_panel, "scale": _scale_panel, "flushed": _flushed_panel}
_COLUMN_LIMITS = {"loss": _share_loss_axis, "flushed": _share_flushed_axis}
