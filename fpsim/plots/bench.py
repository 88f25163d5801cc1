"""The bench figure: time and peak memory of one training step per policy, relative to fp32, against the claims
"2–3× faster" and "50% less memory", and matmul throughput per dtype.

Invariant: the figure only reads a bench report (`fpsim.torch.bench(...)` or its `to_dict()`, e.g. from `fpsim bench
-o`); it measures nothing. Each bar is labelled with its measured value, so the figure stands without the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter

from fpsim._bench_text import SCHEMA, SPREAD_LIMIT, busy, mebibytes, milliseconds, unreliable
from fpsim.plots.layout import panel_grid
from fpsim.plots.style import policy_style, style

CLAIM = {"facecolor": "#BBBBBB", "alpha": 0.5, "hatch": "//", "edgecolor": "black", "linewidth": 0}  # behind the bars
BAR_WIDTH = 0.8  # of one model's slot, shared by its policies
DOUBTED = {"hatch": "xx", "alpha": 0.45}  # a bar whose timings spread too far to judge
DOUBTED_LABEL = f"unreliable: median over {SPREAD_LIMIT:g}× the fastest"
LABEL_ROOM = 0.25  # the part of a log axis above its tallest bar, for the bar labels


def bench_figure(report: object, ax: object = None):
    """Three panels: time per training step ÷ fp32's (claim band: 1/3 to 1/2), peak memory ÷ fp32's (claim: 0.5),
    both per model and policy; and matmul TFLOP/s per dtype and size. `report` is a BenchReport or its dict.
    Returns (figure, array of 3 Axes); `ax` may give those three."""
    record = _record(report)
    steps = [row for row in record["steps"] if row["seconds"] is not None]
    if not steps:
        raise ValueError("report has no measured training steps to draw")
    figure, grid = panel_grid(ax, 1, 3, (15.0, 5.2))
    panels = grid[0]
    _relative_bars(panels[0], steps, "seconds", lambda value: f"{milliseconds(value)} ms")
    panels[0].axhspan(1 / 3, 1 / 2, **CLAIM, zorder=0, label="claimed: 2–3× faster")
    panels[0].set(ylabel="fastest time per step ÷ fp32's (log scale; lower is faster)", title="One training step: time")
    _relative_bars(panels[1], steps, "peak_bytes", lambda value: f"{mebibytes(value)} MiB")
    panels[1].axhline(0.5, color="black", linestyle="--", linewidth=1.5, label="claimed: 50% less memory")
    panels[1].set(ylabel="peak memory ÷ fp32's", title="One training step: peak memory")
    for panel in panels[:2]:
        panel.axhline(1, color="black", linewidth=0.8)
        handles = panel.get_legend_handles_labels()[0]
        if panel is panels[0] and any(_doubted(row) for row in steps):
            handles.append(Patch(facecolor="white", edgecolor="black", **DOUBTED, label=DOUBTED_LABEL))
        panel.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=8, ncols=3)  # below
    times = [bar.get_height() for container in panels[0].containers for bar in container]
    panels[0].set_yscale("log")  # a ratio: 2× faster and 2× slower lie equally far from 1
    panels[0].yaxis.set_major_formatter(TimesFormatter())
    panels[0].yaxis.set_minor_formatter(TimesFormatter())  # labels a minor tick only where the axis needs it
    bottom = min(0.2, min(times) / 2)
    panels[0].set_ylim(bottom, log_top(bottom, max(1.0, *times)))
    memory = [bar.get_height() for container in panels[1].containers for bar in container]
    panels[1].set_ylim(0, max(1.0, *memory) / (1 - LABEL_ROOM))
    _matmul_bars(panels[2], record["matmul"])
    if ax is None:
        env = record["environment"]
        quick = ", quick" if record["quick"] else ""
        reason = busy(env)
        warning = f"\n{reason}: times unreliable" if reason else ""
        figure.suptitle(f"fpsim bench on {env['name']} ({env['device']}), torch {env['torch']}{quick}{warning}",
                        fontsize=12)  # fmt: skip
    return figure, panels


class TimesFormatter(LogFormatter):
    """Log-axis ticks as ratios (0.5×, 2×), labelling the ticks matplotlib's own log formatter labels."""

    def __call__(self, value: float, pos: int | None = None) -> str:
        return f"{value:g}×" if super().__call__(value, pos) else ""


def log_top(bottom: float, highest: float) -> float:
    """The top of a log axis from `bottom` that leaves LABEL_ROOM of its height above `highest`: in decades,
    log(top) − log(highest) = LABEL_ROOM · (log(top) − log(bottom))."""
    return 10 ** ((np.log10(highest) - LABEL_ROOM * np.log10(bottom)) / (1 - LABEL_ROOM))


def _record(report: object) -> Mapping:
    record = report.to_dict() if hasattr(report, "to_dict") else report
    if not isinstance(record, Mapping) or record.get("schema") != SCHEMA:
        raise TypeError(f"report must be a fpsim.torch.bench report or its to_dict() ({SCHEMA!r}); got "
                        f"{type(report).__name__}")  # fmt: skip
    return record


def _relative_bars(ax: Axes, steps: list[dict], key: str, label) -> None:
    """Bars of each model's `key` under each policy divided by its fp32 value, labelled with the measured value;
    for times, a bar whose timings spread too far (its own or fp32's) is hatched and pale."""
    models = list(dict.fromkeys(row["model"] for row in steps))
    policies = list(dict.fromkeys(row["policy"] for row in steps))
    fp32 = {row["model"]: row for row in steps if row["policy"] == "fp32"}
    series = {p: [row for row in steps if row["policy"] == p and row["model"] in fp32] for p in policies}
    _grouped_bars(ax, models, series, group=lambda row: row["model"],
                  height=lambda row: row[key] / fp32[row["model"]][key], color=lambda p: policy_style(p)["color"],
                  doubted=lambda row: key == "seconds" and (_doubted(row) or _doubted(fp32[row["model"]])),
                  label=lambda row: label(row[key]))  # fmt: skip
    ax.set_xticks(range(len(models)), models)


def _grouped_bars(ax: Axes, groups: list, series: dict[str, list[dict]], *, group: Callable, height: Callable,
                  color: Callable, doubted: Callable, label: Callable) -> None:  # fmt: skip
    """One bar per row of each series, the series side by side at their group's index (x = groups.index(group(row))):
    height(row) tall in color(series name), labelled label(row), hatched and pale where doubted(row)."""
    width = BAR_WIDTH / max(1, len(series))
    for i, (name, rows) in enumerate(series.items()):
        x = np.array([groups.index(group(row)) for row in rows]) + (i - (len(series) - 1) / 2) * width
        bars = ax.bar(x, [height(row) for row in rows], width, color=color(name), label=name)
        for bar, row in zip(bars, rows):
            if doubted(row):
                bar.set(**DOUBTED)
        ax.bar_label(bars, [label(row) for row in rows], fontsize=7, rotation=90, padding=2)


def _doubted(row: Mapping) -> bool:
    return unreliable(row["seconds"], row["median_seconds"]) is not None


def dtype_color(dtype: str) -> str:
    """A matmul dtype's colour: the colour of the policy that computes in it (fp32, amp's fp16, bf16, fp8), so a
    precision looks the same in every panel; tf32, no policy's, keeps its format colour."""
    policy = {"fp32": "fp32", "fp16": "amp", "bf16": "bf16", "fp8_e4m3": "fp8"}.get(dtype)
    return policy_style(policy)["color"] if policy else style(dtype)["color"]


def _matmul_bars(ax: Axes, rows: list[dict]) -> None:
    """TFLOP/s per dtype (bars) at each measured size (groups), on a log axis: CPUs span a factor of 100."""
    measured = [row for row in rows if row["tflops"] is not None]
    sizes = list(dict.fromkeys(row["n"] for row in measured))
    dtypes = list(dict.fromkeys(row["dtype"] for row in measured))
    series = {dtype: [row for row in measured if row["dtype"] == dtype] for dtype in dtypes}
    _grouped_bars(ax, sizes, series, group=lambda row: row["n"], height=lambda row: row["tflops"], color=dtype_color,
                  doubted=_doubted, label=lambda row: f"{row['tflops']:.3g}")  # fmt: skip
    missing = [row["dtype"] for row in rows if row["tflops"] is None]
    ax.set_yscale("log")
    low = min(row["tflops"] for row in measured)
    ax.set_ylim(low / 3, log_top(low / 3, max(row["tflops"] for row in measured)))
    ax.set_xticks(range(len(sizes)), [f"n = {n}" for n in sizes])
    note = f"\nnot on this device: {', '.join(missing)}" if missing else ""
    ax.set(ylabel="TFLOP/s at the fastest repeat (log scale)", title=f"Matmul throughput, n×n by n×n{note}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=8, ncols=len(dtypes))
