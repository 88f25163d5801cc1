"""The gradient histogram of the mixed precision paper: log2|g| against each format's flush, subnormal and
normal bands, before and after loss scaling.

Invariant: band fractions come from the format's exact rounding thresholds (the tests check them against
the codec's flag counts on the same data).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from fpsim.formats import Format
from fpsim.plots.formats import formats_list
from fpsim.plots.style import REGION_COLORS, style


def _gradient_values(values: object) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError("values is empty: there is no gradient to draw")
    finite = array[np.isfinite(array)]
    if not np.any(finite != 0):
        raise ValueError("values holds no finite nonzero gradient: log2|g| has nothing to show")
    return finite


def gradient_bands(values: object, fmt: Format | str) -> dict[str, float]:
    """Fractions of the finite values that round (to nearest, ties to even) to zero, a subnormal, a normal
    value, or past max, from the format's exact thresholds (ties settled by the even neighbour):

    - with subnormals: flushed up to half the least subnormal, subnormal below the midpoint under the least
      normal; flush-to-zero formats flush whatever stays below the least normal when rounded to p bits;
    - past max: beyond the midpoint above max, or on it when max's last bit is odd (the tie goes up).
    """
    (fmt,) = formats_list([fmt])
    magnitude = np.abs(_gradient_values(values))
    nonzero = magnitude[magnitude > 0]
    if fmt.subnormals:
        half_least = fmt.smallest_subnormal / 2  # a tie goes to the even code: zero
        flushed = nonzero <= half_least
        subnormal = (nonzero > half_least) & (nonzero < fmt.smallest_normal - half_least)  # a tie goes up
    else:  # tiny after rounding is flushed; a tie rounds up to the (even) least normal
        flushed = nonzero < fmt.smallest_normal - fmt.smallest_normal * 2.0 ** -(fmt.precision + 1)
        subnormal = np.zeros_like(flushed)
    past_max = fmt.max + fmt.ulp(fmt.max) / 2
    beyond = (nonzero >= past_max) if fmt.max_code % 2 else (nonzero > past_max)  # odd last bit: the tie overflows
    flush, subnormal, overflow = (int(np.count_nonzero(mask)) for mask in (flushed, subnormal, beyond))
    n = magnitude.size
    return {
        "zero": (magnitude.size - nonzero.size) / n,
        "flush": flush / n,
        "subnormal": subnormal / n,
        "normal": (nonzero.size - flush - subnormal - overflow) / n,
        "overflow": overflow / n,
    }


def gradient_histogram(
    values: object, formats: Sequence[Format | str] | Format | str = ("fp16",), scale: float | None = None,
    bins: int = 80, ax: object = None,
):  # fmt: skip
    """Histogram of log2|g| with each format's bands shaded and their fractions written; with `scale`, a
    second panel shows the same gradients multiplied by the loss scale."""
    fmts = formats_list(formats)
    data = _gradient_values(values)
    panels = [("gradients", data)] + ([(f"× {scale:g} (loss scale)", data * scale)] if scale else [])
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    if ax is None:
        figure = Figure(figsize=(10, 3.4 * len(panels)), layout="constrained")
        axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    else:
        axes = np.atleast_1d(ax)
        figure = axes[0].figure
        if len(axes) != len(panels):
            raise ValueError(f"ax must hold {len(panels)} Axes for these panels, got {len(axes)}")
    for axis, (title, sample) in zip(axes, panels):
        logs = np.log2(np.abs(sample[sample != 0]))
        axis.hist(logs, bins=bins, color="#777777", alpha=0.8)
        for row, fmt in enumerate(fmts):
            _shade(axis, fmt, gradient_bands(sample, fmt), row, logs)
        axis.set_xlabel("log2 |g|")
        axis.set_ylabel("count")
        axis.set_title(f"{title}: {len(sample)} values")
    return figure, axes


def _shade(axis, fmt: Format, bands: dict[str, float], row: int, logs: np.ndarray) -> None:
    least, normal = np.log2(fmt.smallest_subnormal), float(fmt.emin)
    left = min(logs.min(), least) - 1
    has_subnormals = fmt.subnormals and fmt.nmant > 0
    edge = least - 1 if has_subnormals else normal - 1
    spans = {"flush": (left, edge), "subnormal": (edge, normal) if has_subnormals else (0, 0),
             "normal": (normal, np.log2(fmt.max))}  # fmt: skip
    patterns = {"flush": "//", "subnormal": "..", "normal": ""}  # hatching tells the bands apart in greyscale
    for region, (start, stop) in spans.items():
        if stop > start:
            axis.axvspan(start, stop, facecolor=REGION_COLORS[region], alpha=0.15, hatch=patterns[region],
                         edgecolor=REGION_COLORS[region], linewidth=0, gid=f"{fmt.name}:{region}")  # fmt: skip
    axis.axvline(least - 1, **style(fmt), linewidth=1)
    axis.axvline(normal, **style(fmt), linewidth=1)
    text = f"{fmt.name}: flushed {bands['flush']:.1%}, subnormal {bands['subnormal']:.1%}, normal {bands['normal']:.1%}"
    for extra in ("overflow", "zero"):  # exact zeros have no log2 and are not drawn: say how many
        if bands[extra]:
            text += f", {extra} {bands[extra]:.1%}"
    axis.text(0.01, 0.95 - 0.09 * row, text, transform=axis.transAxes, fontsize=8, va="top", color=style(fmt)["color"],
              bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})  # fmt: skip
