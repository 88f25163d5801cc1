"""The bench figure: time and peak memory of one training step per policy, relative to fp32, against the claims
"2–3× faster" and "50% less memory", and matmul throughput per dtype.

Invariant: the figure only reads a bench report (`fpsim.torch.bench(...)` or its `to_dict()`, e.g. from `fpsim bench
-o`); it measures nothing. Each bar is labelled with its measured value, so the figure stands without the table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from fpsim.plots.layout import panel_grid
from fpsim.plots.style import policy_style, style

SCHEMA = "fpsim.bench/1"
CLAIM = {"facecolor": "#BBBBBB", "alpha": 0.5, "hatch": "//", "edgecolor": "black", "linewidth": 0}  # behind the bars
BAR_WIDTH = 0.8  # of one model's slot, shared by its policies


def bench_figure(report: object, ax: object = None):
    """Three panels: time per training step ÷ fp32's (claim band: 1/3 to 1/2), peak memory ÷ fp32's (claim: 0.5),
    both per model and policy; and matmul TFLOP/s per dtype and size. `report` is a BenchReport or its dict.
    Returns (figure, array of 3 Axes); `ax` may give those three."""
    record = _record(report)
    steps = [row for row in record["steps"] if row["seconds"] is not None]
    if not steps:
        raise ValueError("report has no measured training steps to draw")
    figure, grid = panel_grid(ax, 1, 3, (15.0, 4.8))
    panels = grid[0]
    _relative_bars(panels[0], steps, "seconds", _ms)
    panels[0].axhspan(1 / 3, 1 / 2, **CLAIM, zorder=0, label="claimed: 2–3× faster")
    panels[0].set(ylabel="time per step ÷ fp32's (log scale; lower is faster)", title="One training step: time")
    _relative_bars(panels[1], steps, "peak_bytes", _mib)
    panels[1].axhline(0.5, color="black", linestyle="--", linewidth=1.5, label="claimed: 50% less memory")
    panels[1].set(ylabel="peak memory ÷ fp32's", title="One training step: peak memory")
    for panel in panels[:2]:
        panel.axhline(1, color="black", linewidth=0.8)
        panel.legend(loc="upper left", fontsize=8, ncols=4)  # one row above the bars and their labels
    times = [bar.get_height() for container in panels[0].containers for bar in container]
    panels[0].set_yscale("log")  # a ratio: 2× faster and 2× slower lie equally far from 1
    panels[0].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}×"))
    panels[0].set_ylim(min(0.2, min(times) / 2), 6 * max(1.0, *times))  # room above for the labels and legend
    memory = [bar.get_height() for container in panels[1].containers for bar in container]
    panels[1].set_ylim(0, 1.5 * max(1.0, *memory))
    _matmul_bars(panels[2], record["matmul"])
    if ax is None:
        env = record["environment"]
        quick = ", quick" if record["quick"] else ""
        busy = env.get("load_average") is not None and env.get("cpus") and env["load_average"] > env["cpus"]
        warning = (
            f"\nthe machine was busy (load {env['load_average']:g} on {env['cpus']} CPUs): times unreliable"
            if busy
            else ""
        )
        figure.suptitle(f"fpsim bench on {env['name']} ({env['device']}), torch {env['torch']}{quick}{warning}",
                        fontsize=12)  # fmt: skip
    return figure, panels


def _record(report: object) -> Mapping:
    record = report.to_dict() if hasattr(report, "to_dict") else report
    if not isinstance(record, Mapping) or record.get("schema") != SCHEMA:
        raise TypeError(f"report must be a fpsim.torch.bench report or its to_dict() ({SCHEMA!r}); got "
                        f"{type(report).__name__}")  # fmt: skip
    return record


def _relative_bars(ax: Axes, steps: list[dict], key: str, label) -> None:
    """Bars of each model's `key` under each policy divided by its fp32 value, labelled with the measured value."""
    models = list(dict.fromkeys(row["model"] for row in steps))
    policies = list(dict.fromkeys(row["policy"] for row in steps))
    fp32 = {row["model"]: row[key] for row in steps if row["policy"] == "fp32"}
    width = BAR_WIDTH / len(policies)
    for i, policy in enumerate(policies):
        rows = [row for row in steps if row["policy"] == policy and row["model"] in fp32]
        x = np.array([models.index(row["model"]) for row in rows]) + (i - (len(policies) - 1) / 2) * width
        ratios = [row[key] / fp32[row["model"]] for row in rows]
        bars = ax.bar(x, ratios, width, color=policy_style(policy)["color"], label=policy)
        ax.bar_label(bars, [label(row[key]) for row in rows], fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(models)), models)


def _matmul_bars(ax: Axes, rows: list[dict]) -> None:
    """TFLOP/s per dtype (bars) at each measured size (groups), on a log axis: CPUs span a factor of 100."""
    measured = [row for row in rows if row["tflops"] is not None]
    sizes = list(dict.fromkeys(row["n"] for row in measured))
    dtypes = list(dict.fromkeys(row["dtype"] for row in measured))
    width = BAR_WIDTH / max(1, len(dtypes))
    for i, dtype in enumerate(dtypes):
        chosen = [row for row in measured if row["dtype"] == dtype]
        x = np.array([sizes.index(row["n"]) for row in chosen]) + (i - (len(dtypes) - 1) / 2) * width
        bars = ax.bar(x, [row["tflops"] for row in chosen], width, color=style(dtype)["color"], label=dtype)
        ax.bar_label(bars, [f"{row['tflops']:.3g}" for row in chosen], fontsize=7, rotation=90, padding=2)
    missing = [row["dtype"] for row in rows if row["tflops"] is None]
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 10)  # a decade above for the labels and the legend
    ax.set_xticks(range(len(sizes)), [f"n = {n}" for n in sizes])
    note = f"\nnot on this device: {', '.join(missing)}" if missing else ""
    ax.set(ylabel="TFLOP/s (log scale)", title=f"Matmul throughput, n×n by n×n{note}")
    ax.legend(loc="upper left", fontsize=8, ncols=len(dtypes))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def _mib(count: int) -> str:
    return f"{count / 2**20:.3g} MiB"
