"""Figures of training runs: loss curves, the loss-scale trajectory with skipped steps, flushed gradients,
and a simulator-versus-hardware overlay, all drawn from History records.

Invariant: the figures only read Histories; each policy keeps one style in every figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fpsim.plots.formats import axes
from fpsim.plots.style import policy_style
from fpsim.train import History


def _histories(histories: History | Sequence[History]) -> list[History]:
    runs = [histories] if isinstance(histories, History) else list(histories)
    if not runs or not all(isinstance(h, History) for h in runs):
        raise ValueError("histories must be one or more History records (fpsim.train.run or load_results)")
    for h in runs:
        lengths = {len(getattr(h, name)) for name in ("loss", "scale", "skipped", "flushed")}
        if lengths != {len(h.loss)} or not h.loss:
            raise ValueError(f"History of {h.policy.get('name', '?')} is empty or its per-step lists differ in length")
    return runs


def _look(history: History) -> dict:
    return policy_style(history.policy["name"])


def loss_curves(histories: History | Sequence[History], ax: Axes | None = None, log: bool = False):
    """Training loss per step, one line per run; NaN and inf steps are left as gaps."""
    figure, ax = axes(ax, (8, 4.5))
    for h in _histories(histories):
        loss = np.asarray(h.loss, dtype=float)
        ax.plot(np.arange(1, len(loss) + 1), np.where(np.isfinite(loss), loss, np.nan), label=h.policy["name"],
                **_look(h))  # fmt: skip
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.legend()
    return figure, ax


def scale_trajectory(histories: History | Sequence[History], ax: Axes | None = None):
    """The loss scale per step on a log2 axis, skipped (overflow) steps marked with crosses."""
    figure, ax = axes(ax, (8, 4))
    for h in _histories(histories):
        steps, scale = np.arange(1, len(h.scale) + 1), np.asarray(h.scale)
        skipped = np.asarray(h.skipped, dtype=bool)
        ax.step(steps, scale, where="post", label=h.policy["name"], **_look(h))
        ax.plot(steps[skipped], scale[skipped], "x", color=_look(h)["color"], gid=f"{h.policy['name']}:skipped",
                label=f"{h.policy['name']}: {skipped.sum()} skipped")  # fmt: skip
    ax.set_yscale("log", base=2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss scale")
    ax.set_title("Loss scale: backs off on overflow, grows after clean runs")
    ax.legend(fontsize=8)
    return figure, ax


def flushed_fraction(histories: History | Sequence[History], ax: Axes | None = None):
    """The share of gradient elements flushed to zero in the gradient format, per step."""
    figure, ax = axes(ax, (8, 4))
    for h in _histories(histories):
        ax.plot(np.arange(1, len(h.flushed) + 1), 100 * np.asarray(h.flushed), label=h.policy["name"], **_look(h))
    ax.set_xlabel("step")
    ax.set_ylabel("gradients flushed to zero (%)")
    ax.set_title("Gradient underflow")
    ax.legend()
    return figure, ax


def simulator_vs_hardware(simulated: History, hardware: History, ax: Axes | None = None):
    """The same config's loss from the simulator (solid) and from real hardware (dashed, e.g. torch)."""
    _histories([simulated, hardware])
    figure, ax = axes(ax, (8, 4.5))
    for h, label, dashes in ((simulated, "simulator", "-"), (hardware, "hardware", "--")):
        ax.plot(np.arange(1, len(h.loss) + 1), h.loss, linestyle=dashes, color=_look(h)["color"],
                label=f"{h.policy['name']} ({label})")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Simulator against hardware")
    ax.legend()
    return figure, ax


def training_figure(histories: History | Sequence[History]):
    """Loss, loss scale and flushed gradients of the runs, one panel each."""
    runs = _histories(histories)
    figure = Figure(figsize=(9, 10), layout="constrained")
    top, middle, bottom = figure.subplots(3, 1, sharex=True)
    loss_curves(runs, ax=top, log=True)
    scale_trajectory(runs, ax=middle)
    flushed_fraction(runs, ax=bottom)
    return figure, (top, middle, bottom)
