"""Figures of formats themselves: range bars, the precision saw-tooth, number lines, bit boxes, rounding errors.

Invariant: every plotted number comes from fpsim's formats and codec; these functions compute no numerics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fpsim.codec import decode
from fpsim.codec import round as round_to
from fpsim.explanation import explain
from fpsim.formats import Format, get_format
from fpsim.plots.style import FIELD_COLORS, LINESTYLES, PALETTE, REGION_COLORS, hatch, style
from fpsim.rounding import ROUNDING_MODES

MAX_NUMBER_LINE_BITS = 10  # 512 non-negative codes: beyond that the points merge into a smear


def axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """The given Axes and its Figure, or a new Figure (no pyplot state, any backend) with one Axes."""
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.add_subplot()


def formats_list(formats: Sequence[Format | str] | Format | str) -> list[Format]:
    items = [formats] if isinstance(formats, (str, Format)) else list(formats)
    if not items:
        raise ValueError("formats must name at least one format")
    return [get_format(f) for f in items]


def _power(value: float) -> str:
    exponent = np.log2(value)
    return f"2^{int(exponent)}" if exponent == int(exponent) else f"{value:.6g}"


def _exact_max(fmt: Format) -> str:
    """max exactly: as an integer when short, else as (2 − k·2^-nmant)·2^emax."""
    if fmt.max < 1e6:
        return f"{fmt.max:g}"
    k = round((2 - fmt.max / 2.0**fmt.emax) * 2**fmt.nmant)  # max = (2 - k·2^-nmant)·2^emax, k = 1 or 2
    return f"(2−{'' if k == 1 else f'{k}·'}2^-{fmt.nmant})·2^{fmt.emax}"


def range_diagram(formats: Sequence[Format | str] = ("fp32", "fp16", "bf16", "fp8_e4m3"), ax: Axes | None = None):
    """One bar per format on a log2 axis: subnormal, normal and overflow regions, with the key values marked."""
    fmts = formats_list(formats)
    figure, ax = axes(ax, (10, 1.2 + 0.8 * len(fmts)))
    left = min(np.log2(f.smallest_subnormal) for f in fmts) - 4
    right = max(np.log2(f.max) for f in fmts) + 4
    for row, fmt in enumerate(fmts):
        low, normal, top = np.log2(fmt.smallest_subnormal), float(fmt.emin), np.log2(fmt.max)
        y, look = len(fmts) - 1 - row, style(fmt)
        spans = {"subnormal": (low, normal), "normal": (normal, top), "overflow": (top, right)}
        for region, (start, stop) in spans.items():
            if stop <= start:
                continue  # no subnormals (flush-to-zero, or no mantissa bits)
            shade = {"normal": 0.85, "subnormal": 0.45, "overflow": 0.12}[region]
            bar = ax.barh(y, stop - start, left=start, height=0.5, color=REGION_COLORS[region], hatch=hatch(fmt),
                          alpha=shade, edgecolor=look["color"])  # fmt: skip
            bar.patches[0].set_gid(f"{fmt.name}:{region}")
        marks = {"smallest subnormal": fmt.smallest_subnormal, "smallest normal": fmt.smallest_normal,
                 "1.0": 1.0, "max": fmt.max}  # fmt: skip
        for i, (name, value) in enumerate(marks.items()):
            x = np.log2(value)
            ax.plot([x], [y], marker="|", markersize=18, color="black")
            text = _power(value) if name != "max" else _exact_max(fmt)
            ax.annotate(text, (x, y), xytext=(0, 13 if i % 2 else -17), textcoords="offset points", ha="center",
                        fontsize=7)  # fmt: skip
    ax.set_yticks(range(len(fmts)), [f.name for f in reversed(fmts)])
    ax.set_xlim(left, right + 0.15 * (right - left))  # room for the max labels
    key = [Rectangle((0, 0), 1, 1, color=REGION_COLORS[r], alpha=a) for r, a in
           (("subnormal", 0.45), ("normal", 0.85), ("overflow", 0.12))]  # fmt: skip
    ax.legend(key, ["subnormal", "normal", "overflow"], loc="lower right", fontsize=8)
    ax.set_xlabel("log2 |x|   (bars: subnormal, normal, overflow; ticks: least subnormal, least normal, 1, max)")
    decades = ax.secondary_xaxis("top", functions=(lambda v: v * np.log10(2), lambda v: v / np.log10(2)))
    decades.set_xlabel("log10 |x|")
    ax.set_title("Range of each format")
    return figure, ax


def precision_diagram(
    formats: Sequence[Format | str] = ("fp32", "fp16", "bf16", "fp8_e4m3"),
    ax: Axes | None = None,
    absolute: bool = False,
    points: int = 4000,
):
    """log2 of ulp(x)/x (or of ulp(x) with absolute=True) against log2|x|: the saw-tooth of precision.

    Drawn in log2 units on linear axes, like range_diagram: matplotlib's log scale overflows near fp64's max.
    """
    fmts = formats_list(formats)
    figure, ax = axes(ax, (9, 5))
    for fmt in fmts:
        with np.errstate(over="ignore"):  # fp64's top exponent rounds past max: clipped back just below
            spread = np.exp2(np.linspace(np.log2(fmt.smallest_subnormal), np.log2(fmt.max), points))
        x = np.clip(spread, fmt.smallest_subnormal, fmt.max)
        edges = np.ldexp(1.0, np.arange(fmt.emin - fmt.nmant, fmt.emax + 1))  # each binade's start: the teeth
        x = np.unique(np.concatenate([x, edges, np.nextafter(edges, 0)]))
        x = x[x >= fmt.smallest_subnormal]  # below it lies only zero
        spacing = fmt.ulp(x)
        ax.plot(np.log2(x), np.log2(spacing if absolute else spacing / x), label=fmt.name, **style(fmt))
        if not absolute:
            ax.axhline(-fmt.nmant, linewidth=0.6, **{**style(fmt), "linestyle": ":"})
            ax.annotate(f"eps {_power(fmt.eps)}", (np.log2(fmt.max), -fmt.nmant), fontsize=7, ha="right", va="bottom")
    ax.set_xlabel("log2 |x|")
    ax.set_ylabel("log2 ulp(x)" if absolute else "log2 (ulp(x) / |x|)   (relative spacing)")
    ax.set_title("Spacing of representable values" + (" (absolute)" if absolute else ": flat teeth, then subnormals"))
    ax.legend()
    return figure, ax


def number_line(fmt: Format | str, ax: Sequence[Axes] | None = None):
    """Every non-negative finite value of a small format, on a linear and on a log axis."""
    fmt = get_format(fmt)
    if fmt.bits > MAX_NUMBER_LINE_BITS:
        raise ValueError(
            f"number_line draws every value; {fmt.name} has {fmt.max_code + 1} non-negative codes, too many to "
            f"see apart: use a format of at most {MAX_NUMBER_LINE_BITS} bits (fp8, fp6, fp4 or a custom eXmY)"
        )
    values = np.unique(decode(np.arange(fmt.max_code + 1), fmt))  # flush-to-zero codes collapse onto 0
    if ax is None:
        figure = Figure(figsize=(10, 3.6), layout="constrained")
        linear, logarithmic = figure.subplots(2, 1)
    elif isinstance(ax, Axes) or len(ax) != 2:
        raise ValueError("ax must be a pair of Axes (linear, log) for number_line")
    else:
        linear, logarithmic = ax
        figure = linear.figure
    subnormal = (values > 0) & (values < fmt.smallest_normal)
    positive = values > 0
    for axis, shown, sub in ((linear, values, subnormal), (logarithmic, values[positive], subnormal[positive])):
        axis.plot(shown[~sub], np.zeros((~sub).sum()), "|", markersize=14, color=REGION_COLORS["normal"],
                  label="normal" + (" and zero" if axis is linear else ""), gid="normal")  # fmt: skip
        axis.plot(shown[sub], np.zeros(sub.sum()), "|", markersize=14, color=REGION_COLORS["subnormal"],
                  label="subnormal", gid="subnormal")  # fmt: skip
        axis.set_yticks([])
        axis.legend(loc="upper left", fontsize=8)
    logarithmic.set_xscale("log", base=2)
    linear.set_title(f"{fmt.name}: all {len(values)} non-negative values (linear: dense near 0, sparse near max)")
    logarithmic.set_title(f"log axis: evenly spread binades; the gap from 0 to {_power(fmt.smallest_subnormal)}")
    return figure, (linear, logarithmic)


def bit_layout(value: float, fmt: Format | str, rounding: str = "nearest_even", ax: Axes | None = None):
    """The bits of `value` stored in fmt as boxes coloured by field, with the decoded meaning below."""
    e = explain(value, fmt, rounding)
    fmt = e.fmt
    figure, ax = axes(ax, (max(4.0, 0.45 * fmt.bits + 1), 2.6))
    position = 0
    for field_name, bits in e.bit_fields.items():
        for bit in bits:
            ax.add_patch(Rectangle((position, 0), 1, 1, facecolor=FIELD_COLORS[field_name], edgecolor="white",
                                   gid=field_name))  # fmt: skip
            ax.text(position + 0.5, 0.5, bit, ha="center", va="center", fontsize=11, color="white", weight="bold")
            position += 1
        if bits:
            ax.text(position - len(bits) / 2, 1.25, field_name, ha="center", fontsize=9)
    significand = "0." if e.category == "subnormal" else "1."
    if e.category in ("subnormal", "normal"):
        digits = f"{significand}{e.bit_fields['mantissa'] or '0'}₂"
        meaning = f"{e.category}: (-1)^{e.bit_fields['sign']} × 2^{e.exponent} × {digits}"
    else:
        meaning = f"{e.category} (sign {e.bit_fields['sign']})"
    raised = ", ".join(n for n, c in e.flags.as_dict().items() if c and n != "total") or "exact"
    stored = e.exact_value if len(e.exact_value) < 40 else repr(float(e.value))
    ax.text(0, -0.45, f"{meaning} = {stored}", fontsize=9)
    ax.text(0, -0.85, f"input {value!r}, hex 0x{e.code:0{(fmt.bits + 3) // 4}x}, error {float(e.abs_error):+.3g}, "
            f"{e.rounding}: {raised}", fontsize=8, color="#555555")  # fmt: skip
    ax.set_xlim(-0.2, fmt.bits + 0.2)
    ax.set_ylim(-1.1, 1.6)
    ax.set_axis_off()
    ax.set_title(f"{value!r} in {fmt.name}")
    return figure, ax


def rounding_error(
    fmt: Format | str,
    low: float = 1.0,
    high: float | None = None,
    modes: Sequence[str] = ("nearest_even", "toward_zero", "up", "down", "stochastic"),
    ax: Axes | None = None,
    samples: int = 801,
    draws: int = 64,
    seed: int = 0,
):
    """round(x) − x across [low, high] (default: eight ulps above `low`), per mode, in units of the ulp at low.

    Stochastic rounding is drawn `draws` times: the band shows its spread, the line its mean (≈ 0: unbiased).
    """
    fmt = get_format(fmt)
    unknown = set(modes) - set(ROUNDING_MODES)
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty list of {', '.join(ROUNDING_MODES)}; got {list(modes)!r}")
    unit = float(fmt.ulp(low))
    high = low + 8 * unit if high is None else high
    if not high > low:
        raise ValueError(f"high must be greater than low, got low={low} and high={high}")
    x = np.linspace(low, high, samples)
    figure, ax = axes(ax, (9, 4.5))
    for i, mode in enumerate(modes):
        look = {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}
        if mode == "stochastic":
            rng = np.random.default_rng(seed)
            errors = np.stack([round_to(x, fmt, mode, rng=rng) - x for _ in range(draws)]) / unit
            ax.fill_between(x, errors.min(axis=0), errors.max(axis=0), alpha=0.2, color=look["color"])
            ax.plot(x, errors.mean(axis=0), label=f"{mode} (mean of {draws}; band: range)", **look)
        else:
            ax.plot(x, (round_to(x, fmt, mode) - x) / unit, label=mode, **look)
    ax.set_xlabel("x")
    ax.set_ylabel(f"round(x) − x  [ulp = {_power(unit)}]")
    ax.set_title(f"Rounding error in {fmt.name}")
    ax.legend(fontsize=8)
    return figure, ax
