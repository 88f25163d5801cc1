"""Figures of training runs: loss curves, the loss-scale trajectory with skipped steps and flushed gradients,
all drawn from History records.

Invariant: the figures only read Histories; each policy keeps one style in every figure, and a run's first
non-finite loss is marked in every panel, so a run that diverges never just vanishes.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes

from fpsim.plots.layout import axes, panel_grid
from fpsim.plots.style import policy_style
from fpsim.train import SCENARIOS, Config, History

MARKS_PER_LINE = 12  # sparse markers, offset per run, keep coinciding lines apart


def _histories(histories: History | Sequence[History]) -> list[History]:
    runs = [histories] if isinstance(histories, History) else list(histories)
    if not runs or not all(isinstance(h, History) for h in runs):
        raise ValueError("histories must be one or more History records (fpsim.train.run or load_results)")
    for h in runs:
        lengths = {len(getattr(h, name)) for name in ("loss", "scale", "skipped", "flushed")}
        if lengths != {len(h.loss)} or not h.loss:
            raise ValueError(f"History of {h.policy.get('name', '?')} is empty or its per-step lists differ in length")
    return runs


def scenario_name(config: dict) -> str | None:
    """The named scenario whose settings a run's config holds, or None for custom settings."""
    defaults = Config().to_dict()
    for name, (_, settings) in SCENARIOS.items():
        if settings and all(config.get(key) == value for key, value in settings.items()):
            return name
    changed = {key for _, settings in SCENARIOS.values() for key in settings}
    return "baseline" if all(config.get(key) == defaults[key] for key in changed) else None


def _name(history: History) -> str:
    return history.policy["name"]


def _draw(ax: Axes, runs: list[History], series: list[np.ndarray], step: bool = False) -> None:
    """One line per run, with sparse markers offset per run; a series equal to an earlier run's says so."""
    period = max(1, len(series[0]) // MARKS_PER_LINE)
    for i, (h, values) in enumerate(zip(runs, series)):
        twin = next((_name(o) for o, v in zip(runs[:i], series[:i]) if np.array_equal(v, values, equal_nan=True)), None)
        label = _name(h) + (f" (same as {twin})" if twin else "")
        markevery = (i * period // len(runs), period)
        steps = np.arange(1, len(values) + 1)
        shown = np.where(np.isfinite(values), values, np.nan)  # NaN and inf: gaps, marked by _mark_non_finite
        ax.plot(steps, shown, label=label, markevery=markevery, markersize=4, drawstyle="steps-post" if step else
                "default", gid=_name(h), **policy_style(_name(h)))  # fmt: skip
    for h in runs:
        if _first_non_finite(h):
            _mark_non_finite(ax, h)


def _first_non_finite(history: History) -> int | None:
    """The first step (1-based) whose loss is NaN or inf, or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(history.loss, dtype=float)))
    return int(bad[0]) + 1 if bad.size else None


def _non_finite_label(history: History) -> str:
    step = _first_non_finite(history)
    return f"{_name(history)}: loss {'NaN' if np.isnan(history.loss[step - 1]) else 'inf'} from step {step}"


def _mark_non_finite(ax: Axes, history: History, color: str | None = None) -> None:
    """A dotted vertical line at the run's first non-finite step, named in the legend (the policy's colour)."""
    color = color or policy_style(_name(history))["color"]
    ax.axvline(_first_non_finite(history), color=color, linestyle=":", linewidth=1.5,
               label=_non_finite_label(history), gid=f"{_name(history)}:non-finite")  # fmt: skip


def _mark_line_ends(ax: Axes, runs: list[History]) -> None:
    """Where a loss line ends at a non-finite step: a cross on its last finite point, and the label beside it."""
    for h in runs:
        step = _first_non_finite(h)
        if step and step > 1:
            look = policy_style(_name(h))
            ax.plot([step - 1], [h.loss[step - 2]], "X", color=look["color"], markersize=9, gid=f"{_name(h)}:end")
            box = {"facecolor": "white", "edgecolor": look["color"], "alpha": 0.8, "linewidth": 0.5}
            ax.annotate(_non_finite_label(h), (step - 1, h.loss[step - 2]), xytext=(8, -4), textcoords="offset points",
                        fontsize=8, color=look["color"], va="top", bbox=box)  # fmt: skip


def _legend(ax: Axes) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the data, never over it


def loss_curves(histories: History | Sequence[History], ax: Axes | None = None, log: bool = False):
    """Training loss per step, one line per run; the first NaN or inf step of a run is marked and labelled."""
    figure, ax = axes(ax, (8, 4.5))
    runs = _histories(histories)
    _draw(ax, runs, [np.asarray(h.loss, dtype=float) for h in runs])
    _mark_line_ends(ax, runs)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    ax.set_title("Training loss per step", loc="left")
    _legend(ax)
    return figure, ax


def scale_trajectory(histories: History | Sequence[History], ax: Axes | None = None):
    """The loss scale per step on a log2 axis; skipped steps (inf or NaN gradients) marked with crosses."""
    figure, ax = axes(ax, (8, 4))
    runs = _histories(histories)
    _draw(ax, runs, [np.asarray(h.scale, dtype=float) for h in runs], step=True)
    for h in runs:
        steps, scale, skipped = np.arange(1, len(h.scale) + 1), np.asarray(h.scale), np.asarray(h.skipped, dtype=bool)
        if skipped.any():  # "0 skipped" in the legend would say nothing
            label = f"{_name(h)}: {_count(int(skipped.sum()), 'step')} skipped"
            ax.plot(steps[skipped], scale[skipped], "x", color=policy_style(_name(h))["color"], markersize=7,
                    gid=f"{_name(h)}:skipped", label=label)  # fmt: skip
    ax.set_yscale("log", base=2)
    ax.set_ylabel("loss scale (log2)")
    ax.set_title("Loss scale per step (1: no scaling); × a skipped step: inf/NaN gradients, scale backs off",
                 loc="left")  # fmt: skip
    _legend(ax)
    return figure, ax


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def flushed_fraction(histories: History | Sequence[History], ax: Axes | None = None):
    """The share of gradient elements flushed to zero in the gradient format, per step."""
    figure, ax = axes(ax, (8, 4))
    runs = _histories(histories)
    _draw(ax, runs, [100 * np.asarray(h.flushed, dtype=float) for h in runs])
    ax.set_ylabel("flushed (%)")
    ax.set_title("Gradient elements flushed to zero in the gradient format (nonzero before rounding), per step",
                 loc="left")  # fmt: skip
    _legend(ax)
    return figure, ax


def training_figure(histories: History | Sequence[History], ax: object = None):
    """Loss, loss scale and flushed gradients of the runs, one panel each (`ax`: three Axes, top to bottom);
    a new figure is titled with the scenario the runs share."""
    runs = _histories(histories)
    figure, grid = panel_grid(ax, 3, 1, (10, 10), sharex=True)
    top, middle, bottom = grid[:, 0]
    loss_curves(runs, ax=top, log=True)
    scale_trajectory(runs, ax=middle)
    flushed_fraction(runs, ax=bottom)
    bottom.set_xlabel("step")
    if ax is None:
        figure.suptitle(_figure_title(runs))
    return figure, (top, middle, bottom)


def _powers_as_mathtext(text: str) -> str:
    """2^16 in a scenario's plain-text description, drawn as a superscript."""
    return re.sub(r"\b2\^(-?\d+)", r"$2^{\1}$", text)


def _figure_title(runs: list[History]) -> str:
    names = {scenario_name(h.config) for h in runs}
    policies = ", ".join(_name(h) for h in runs)
    if len(names) == 1 and None not in names:
        (name,) = names
        lesson = _powers_as_mathtext(textwrap.fill(SCENARIOS[name][0], 110))
        return f"Scenario {name!r}: {policies}, {len(runs[0].loss)} steps\n{lesson}"
    return f"Training runs: {policies} (custom settings)"
