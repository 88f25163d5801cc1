"""Figures of formats themselves: range bars on a log2 axis and the saw-tooth of relative precision.

Invariant: every plotted number comes from fpsim's formats (their exact constants and `ulp`); nothing is
computed here but the sample points and their log2 positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from fpsim.formats import Format
from fpsim.plots.layout import axes, formats_list, max_label, panel_grid, power_label
from fpsim.plots.style import REGION_COLORS, style

REGION_SHADES = {"subnormal": 0.55, "normal": 0.85, "overflow": 0.15}
NORMAL_BINADES_SHOWN = 6  # the precision tooth is the same in every normal binade: a few show it
SAMPLES_PER_BINADE = 48


def range_diagram(formats: Sequence[Format | str] = ("fp32", "fp16", "bf16", "fp8_e4m3"), ax: Axes | None = None):
    """One bar per format on a log2 axis: subnormal, normal and overflow regions, with the key values marked.

    Each label sits where no other can reach it: the least subnormal left of the bar, the least normal above,
    max to the right; 1 is one dashed line across all bars.
    """
    fmts = formats_list(formats)
    figure, ax = axes(ax, (10, 1.6 + 0.75 * len(fmts)))
    left = min(np.log2(f.smallest_subnormal) for f in fmts) - 2
    right = max(np.log2(f.max) for f in fmts) + 6
    for row, fmt in enumerate(fmts):
        _range_bar(ax, fmt, len(fmts) - 1 - row, right)
    ax.axvline(0, color="#444444", linestyle="--", linewidth=0.8, zorder=0)
    ax.annotate(" x = 1", (0, 0), xycoords=("data", "axes fraction"), xytext=(2, 3), textcoords="offset points",
                fontsize=7, color="#444444")  # fmt: skip
    span = right - left
    ax.set_xlim(left - 0.12 * span, right + 0.16 * span)  # room for the labels beside the bars
    ax.set_ylim(-0.7, len(fmts) - 0.3)
    ax.set_yticks(range(len(fmts)), [f.name for f in reversed(fmts)])
    key = [Patch(color=REGION_COLORS[r], alpha=a, label=r) for r, a in REGION_SHADES.items()]
    ax.legend(handles=key, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="region", title_fontsize=8)
    ax.set_xlabel(r"$\log_2 |x|$   (marks: least subnormal, least normal, max; dashed: 1)")
    decades = ax.secondary_xaxis("top", functions=(lambda v: v * np.log10(2), lambda v: v / np.log10(2)))
    decades.set_xlabel(r"$\log_{10} |x|$")
    ax.set_title("Range of each format: from the least subnormal to max")
    return figure, ax


def _range_bar(ax: Axes, fmt: Format, y: float, right: float) -> None:
    low, normal, top = np.log2(fmt.smallest_subnormal), float(fmt.emin), np.log2(fmt.max)
    spans = {"subnormal": (low, normal), "normal": (normal, top), "overflow": (top, right)}
    for region, (start, stop) in spans.items():
        if stop > start:  # no subnormal bar without subnormals (flush-to-zero, or no mantissa bits)
            bar = ax.barh(y, stop - start, left=start, height=0.5, color=REGION_COLORS[region],
                          alpha=REGION_SHADES[region], edgecolor="#333333", linewidth=0.5)  # fmt: skip
            bar.patches[0].set_gid(f"{fmt.name}:{region}")
    on_the_line = normal == 0  # the least normal is 1: beside the dashed x = 1 line, not on it
    marks = [(normal, power_label(fmt.smallest_normal), (4, 11) if on_the_line else (0, 11), "left" if on_the_line
              else "center")]  # fmt: skip
    if low < normal:
        marks.append((low, power_label(fmt.smallest_subnormal), (-6, -3), "right"))
    marks.append((top, max_label(fmt), (6, -3), "left"))
    for x, text, offset, align in marks:
        ax.plot([x], [y], marker="|", markersize=16, color="black")
        ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=align, fontsize=9,
                    gid=f"{fmt.name}:label")  # fmt: skip


def precision_diagram(
    formats: Sequence[Format | str] = ("fp32", "fp16", "bf16", "fp8_e4m3"),
    ax: object = None,
    absolute: bool = False,
):
    """log2 of ulp(x)/|x| (or of ulp(x) with absolute=True) against log2|x|, one row of two panels per format.

    Left: the subnormal tail and the first normal binades (precision drains away below 2^emin); right: a
    zoom around 1, where the tooth that every normal binade repeats is tall enough to read.
    """
    fmts = formats_list(formats)
    figure, grid = panel_grid(ax, len(fmts), 2, (10, 0.6 + 2.1 * len(fmts)), width_ratios=(2, 1))
    for fmt, (tail, zoom) in zip(fmts, grid):
        start, stop = _tail_window(fmt)
        _spacing(tail, fmt, (start, stop), absolute)
        _spacing(zoom, fmt, (max(-2.0, start), min(2.0, np.log2(fmt.max))), absolute)
        tail.set_title(f"{fmt.name}: " + ("subnormals and " if fmt.has_subnormals else "no subnormals; ")
                       + "the first normal binades", fontsize=9)  # fmt: skip
        zoom.set_title(f"around 1: one {'step' if absolute else 'tooth'} per binade, {fmt.emax - fmt.emin + 1} in all",
                       fontsize=9)  # fmt: skip
        if absolute:
            zoom.set_ylim(-fmt.nmant - 2.5, -fmt.nmant + 1.5)
        else:
            tail.set_ylim(-fmt.nmant - 1.8, 0.8)
            zoom.set_ylim(-fmt.nmant - 1.5, -fmt.nmant + 0.6)
            zoom.set_yticks([-fmt.nmant - 1, -fmt.nmant],
                            [f"$u = 2^{{{-fmt.nmant - 1}}}$", f"$\\varepsilon = 2^{{{-fmt.nmant}}}$"])  # fmt: skip
    what = r"$\log_2$ ulp(x)" if absolute else r"$\log_2$ (ulp(x) / |x|)"
    for axis in grid[:, 0]:
        axis.set_ylabel(what)
    for axis in grid[-1]:
        axis.set_xlabel(r"$\log_2 |x|$")
    if ax is None:
        figure.suptitle("Absolute spacing ulp(x): constant through the subnormals, doubling with each normal binade"
                        if absolute else "Relative spacing ulp(x)/|x|: the same ε-tooth in every normal binade, "
                        "a climb to 1 through the subnormals")  # fmt: skip
    return figure, grid


def _tail_window(fmt: Format) -> tuple[float, float]:
    """From the least subnormal (the least normal without subnormals) to a few normal binades above emin."""
    start = np.log2(fmt.smallest_subnormal) if fmt.subnormals else float(fmt.emin)
    return start, min(fmt.emin + NORMAL_BINADES_SHOWN, np.log2(fmt.max))


def _spacing(axis: Axes, fmt: Format, window: tuple[float, float], absolute: bool) -> None:
    first, last = int(np.floor(window[0])), int(np.ceil(window[1]))
    steps = np.arange(SAMPLES_PER_BINADE) / SAMPLES_PER_BINADE
    x = np.concatenate([np.ldexp(1.0 + steps, b) for b in range(first, last)] + [np.ldexp(1.0, [last])])
    x = np.sort(np.concatenate([x, np.nextafter(np.ldexp(1.0, np.arange(first + 1, last + 1)), 0)]))  # tooth tips
    x = x[(x >= 2.0 ** window[0]) & (x < 2.0 ** window[1])]
    spacing = fmt.ulp(x)
    axis.plot(np.log2(x), np.log2(spacing if absolute else spacing / x), color=style(fmt)["color"], gid=fmt.name)
    if fmt.has_subnormals and fmt.emin > window[0]:
        axis.axvspan(window[0], fmt.emin, color=REGION_COLORS["subnormal"], alpha=0.15, linewidth=0)
        axis.text(fmt.emin, 0.88, "subnormal | normal", transform=axis.get_xaxis_transform(), ha="center",
                  fontsize=7, color="#555555")  # fmt: skip
    if not absolute:
        for level, dash in ((-fmt.nmant, ":"), (-fmt.nmant - 1, "--")):
            axis.axhline(level, color="#777777", linestyle=dash, linewidth=0.7)
    axis.set_xlim(*window)
