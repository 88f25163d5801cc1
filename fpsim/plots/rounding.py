"""The error of each rounding mode, round(x) − x in ulps, one panel per mode for negative and positive x.

Invariant: every plotted error is the codec's rounding of the sample points; ties are marked where they lie.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from fpsim.codec import round as round_to
from fpsim.formats import Format
from fpsim.plots.layout import formats_list, panel_grid, power_label
from fpsim.rounding import ROUNDING_MODES

MODE_COLOR = "#0072B2"
DOTS_DRAWN = 4  # single stochastic draws shown as dots; the mean line uses all of them


def rounding_error(
    formats: Sequence[Format | str] | Format | str,
    low: float = 1.0,
    high: float | None = None,
    modes: Sequence[str] = ("nearest_even", "toward_zero", "down", "up", "stochastic"),
    ax: object = None,
    samples: int = 801,
    draws: int = 64,
    seed: int = 0,
):
    """round(x) − x across [low, high] (default: four ulps above `low`), in units of the ulp at low: one row
    per format and mode, with a mirrored column for [−high, −low] when low > 0 (where `down` and `toward_zero`
    part ways). Ties (exact midpoints) are marked; stochastic rounding shows single draws and the mean of
    `draws` draws (≈ 0: unbiased)."""
    fmts = formats_list(formats)
    unknown = set(modes) - set(ROUNDING_MODES)
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty list of {', '.join(ROUNDING_MODES)}; got {list(modes)!r}")
    units = [float(fmt.ulp(low)) for fmt in fmts]
    highs = [low + 4 * unit if high is None else high for unit in units]
    if not all(top > low for top in highs):
        raise ValueError(f"high must be greater than low, got low={low} and high={high}")
    signs = (-1, 1) if low > 0 else (1,)
    rows = len(fmts) * len(modes)
    figure, grid = panel_grid(ax, rows, len(signs), (10, 0.9 + 1.35 * rows), sharey=True)
    for i, (fmt, unit, top) in enumerate(zip(fmts, units, highs)):
        x = np.linspace(low, top, samples)
        for j, mode in enumerate(modes):
            row = grid[i * len(modes) + j]
            for axis, sign in zip(row, signs):
                _mode_panel(axis, fmt, mode, sign * x, sign * low, unit, draws, seed)
            prefix = f"{fmt.name}, " if len(fmts) > 1 else ""
            row[0].set_title(f"{prefix}{mode}: {ROUNDING_MODES[mode]}", loc="left", fontsize=9)
    for axis, sign in zip(grid[-1], signs):
        axis.set_xlabel(f"x = {sign * low:g} + t·ulp   (t; integer t: representable)".replace("-", "−"))
    reach = max(1.2, *(max(-a.dataLim.y0, a.dataLim.y1) for a in grid.flat))  # past 1 ulp where binades change
    grid[0, 0].set_ylim(-reach - 0.1, reach + 0.1)
    grid[0, -1].legend(handles=_key(modes, draws), loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    if ax is None:
        units_text = "; ".join(f"{f.name}: ulp {power_label(u)}" for f, u in zip(fmts, units))
        figure.supylabel("round(x) − x  (in ulps of |x| = low)", fontsize=10)
        figure.suptitle(f"Rounding error per mode ({units_text})")
    return figure, grid


def _mode_panel(axis: Axes, fmt: Format, mode: str, x: np.ndarray, origin: float, unit: float, draws: int,
                seed: int) -> None:  # fmt: skip
    """Errors in ulps against t = (x − origin) / ulp, so that representable values sit at integer t."""
    x = np.sort(x)
    t = (x - origin) / unit
    axis.axhline(0, color="#BBBBBB", linewidth=0.6)
    if mode == "stochastic":
        rng = np.random.default_rng(seed)
        errors = np.stack([round_to(x, fmt, mode, rng=rng) - x for _ in range(draws)]) / unit
        for draw in errors[:DOTS_DRAWN]:
            axis.plot(t, draw, ".", markersize=1.5, color="#E69F00", alpha=0.6, gid="draws")
        axis.plot(t, errors.mean(axis=0), color=MODE_COLOR, linewidth=1, gid="mean")
    else:
        axis.plot(t, (round_to(x, fmt, mode) - x) / unit, color=MODE_COLOR, linewidth=1.2, gid=mode)
        ties = _ties(fmt, x)
        tie_errors = (round_to(ties, fmt, mode) - ties) / unit
        axis.plot((ties - origin) / unit, tie_errors, "o", markersize=4, markerfacecolor="white", color="#D55E00",
                  gid="ties")  # fmt: skip


def _ties(fmt: Format, x: np.ndarray) -> np.ndarray:
    """The midpoints between neighbouring values of fmt inside [x.min(), x.max()]."""
    if fmt.precision >= 53:
        return np.array([])  # fp64's midpoints need 54 bits: no float64 input is a tie
    values = np.unique(round_to(x, fmt, "toward_zero"))
    midpoints = values + np.sign(values) * fmt.ulp(values) / 2  # exact: one more bit than fmt holds
    return midpoints[(midpoints >= x.min()) & (midpoints <= x.max())]


def _key(modes: Sequence[str], draws: int) -> list[Line2D]:
    key = [Line2D([], [], color=MODE_COLOR, label="round(x) − x")]
    if set(modes) - {"stochastic"}:
        key.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white", color="#D55E00", label="at a tie"))
    if "stochastic" in modes:
        key += [
            Line2D([], [], marker=".", linestyle="", color="#E69F00", label=f"stochastic: {DOTS_DRAWN} single draws"),
            Line2D([], [], color=MODE_COLOR, linewidth=1, label=f"stochastic: mean of {draws}"),
        ]
    return key
