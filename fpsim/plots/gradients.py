"""The gradient histogram of the mixed precision paper: log2|g| against each format's flush, subnormal and
normal bands, before and after loss scaling.

Invariant: band fractions come from the format's exact rounding thresholds (the tests check them against
the codec's flag counts on the same data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.patches import Patch

from fpsim._terminal import percent
from fpsim.formats import Format, get_format
from fpsim.plots.layout import formats_list, panel_grid, power_label
from fpsim.plots.style import REGION_COLORS
from fpsim.plots.training import scenario_name
from fpsim.train import History


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


NEAR_EDGES = 16  # binades beyond the data within which a band edge is still worth showing
WHOLE_RANGE_BINADES = 64  # a format spanning at most this many binades (fp16, fp8) is shown whole
EDGE_MARGIN = 3  # binades shown past a band edge, so that the band beyond it is seen


Scale = float | Mapping[str, float | None] | None  # one loss scale, one per format name, or none


def check_scale(scale: Scale) -> None:
    """A loss scale for gradient_histogram: None, a finite number > 0, or a mapping of format names to those."""
    for value in scale.values() if isinstance(scale, Mapping) else [scale]:
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"scale must be a finite number > 0 (a loss scale such as 65536), got {value:g}")


def _scales(scale: Scale, fmts: list[Format]) -> dict[str, float | None]:
    """The loss scale of each format's panels: the one scale for all, or the mapping's (None where it has none)."""
    if not isinstance(scale, Mapping):
        return dict.fromkeys((f.name for f in fmts), scale)
    named = {get_format(name).name: value for name, value in scale.items()}
    if unknown := set(named) - {f.name for f in fmts}:
        raise ValueError(f"scale names {', '.join(sorted(unknown))}, which formats lacks: scale only drawn formats")
    return {f.name: named.get(f.name) for f in fmts}


def _scale_text(scale: float) -> str:
    """65536 as it is; a power of two beyond a million (2^34, 2^127) as a power."""
    return power_label(scale) if scale > 1e6 else f"{scale:g}"


def _samples(data: np.ndarray, scale: float | None) -> list[tuple[str, np.ndarray]]:
    return [("as computed", data)] + ([(f"× {_scale_text(scale)} (loss scale)", data * scale)] if scale else [])


def gradient_histogram(
    values: object, formats: Sequence[Format | str] | Format | str = ("fp16",), scale: Scale = None,
    bins: int = 80, ax: object = None,
):  # fmt: skip
    """Histogram of log2|g| against each format's flush, subnormal, normal and overflow bands, one panel per
    format; with `scale`, a second panel per format shows the same gradients times the loss scale (`scale` may map
    format names to their own scales, as fpsim.torch.audit recommends them). Every panel shares one x range, so
    the shift that scaling causes is visible.

    `values` is an array of gradients, or a History: its last step's gradient sample, named in the title.
    """
    fmts = formats_list(formats)
    history = values if isinstance(values, History) else None
    data = _gradient_values(history.gradient_sample if history else values)
    check_scale(scale)
    scales = _scales(scale, fmts)
    panels = [(fmt, name, sample) for fmt in fmts for name, sample in _samples(data, scales[fmt.name])]
    figure, grid = panel_grid(ax, len(panels), 1, (10, 1.0 + 2.6 * len(panels)), sharex=True)
    logs = [np.log2(np.abs(sample[sample != 0])) for _, _, sample in panels]
    left, right = _window(fmts, logs)
    edges = np.linspace(left, right, bins + 1)  # one set of bins: bars compare across panels
    what = "the last step's" if history else "the"
    drawn: set[str] = set()
    for axis, (fmt, name, sample), shown in zip(grid[:, 0], panels, logs):
        axis.hist(shown, bins=edges, color="#555555", alpha=0.85, gid="gradients")
        drawn |= _shade(axis, fmt, (left, right))
        bands = gradient_bands(sample, fmt)
        axis.set_title(f"{fmt.name}, gradients {name}: " + _band_text(bands, f"{what} {len(sample)} gradients"),
                       loc="left", fontsize=9)  # fmt: skip
        axis.set_ylabel("count")
    grid[-1, 0].set_xlabel(r"$\log_2 |g|$")
    grid[-1, 0].set_xlim(left, right)
    grid[0, 0].legend(handles=_band_key(drawn), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
                      title="a value in this band", title_fontsize=8)  # fmt: skip
    if ax is None:
        figure.suptitle(_histogram_title(history, len(data), scale))
    return figure, grid[:, 0]


def _window(fmts: list[Format], logs: list[np.ndarray]) -> tuple[float, float]:
    """Where the data lie, widened to show band edges within NEAR_EDGES binades of them, and every edge of a
    format narrow enough to show whole (fp16: flush to overflow, the headroom that loss scaling spends)."""
    low, high = min(x.min() for x in logs) - 2, max(x.max() for x in logs) + 2
    shown = []
    for f in fmts:
        edges = (np.log2(f.smallest_subnormal) - 1, f.emin, np.log2(f.max))
        whole = edges[-1] - edges[0] <= WHOLE_RANGE_BINADES
        shown += [e for e in edges if whole or low - NEAR_EDGES < e < high + NEAR_EDGES]
    return min([low, *(e - EDGE_MARGIN for e in shown)]), max([high, *(e + EDGE_MARGIN for e in shown)])


def _histogram_title(history: History | None, size: int, scale: Scale) -> str:
    if isinstance(scale, Mapping):
        shown = "as computed and × each format's loss scale" if any(scale.values()) else "as computed (unscaled)"
    else:
        shown = f"as computed and × {_scale_text(scale)} (loss scale)" if scale else "as computed (unscaled)"
    if history is None:  # two lines: one would run past a 10-inch figure's edges
        return f"Gradient magnitudes ({size} finite values) against each format's bands,\n{shown}"
    scenario = scenario_name(history.config)
    where = f"the {scenario} scenario" if scenario else "custom settings"
    return (f"Gradients of the {history.policy['name']} run ({where}) at its last step (step {len(history.loss)}):\n"
            f"{size} sampled values, {shown}")  # fmt: skip


def _band_text(bands: dict[str, float], of_what: str) -> str:
    parts = [f"{name} {_share(bands[band])}" for name, band in (("flushed", "flush"), ("subnormal", "subnormal"),
                                                                 ("normal", "normal"))]  # fmt: skip
    parts += [f"{extra} {_share(bands[extra])}" for extra in ("overflow", "zero") if bands[extra]]  # no log2 of 0
    return ", ".join(parts) + f" of {of_what}"


def _share(fraction: float) -> str:
    """A fraction as a percentage with one decimal, never rounded to 0% or 100% while some value is (not) in it."""
    if 0.9995 <= fraction < 1:
        return ">99.9%"
    return percent(100 * fraction, ".1f", 0.05)  # below 0.05%: "<0.1%"


_ALPHA = {"overflow": 0.15}  # the grey band, lighter than the coloured ones (0.3)
BAND_LABELS = {
    "flush": "rounds to zero (flushed)",
    "subnormal": "subnormal: fewer significant bits",
    "normal": "normal: full precision",
    "overflow": "overflows to inf (or max)",
}


def _band_key(drawn: set[str]) -> list:
    """Legend entries for the bands some panel shows, in BAND_LABELS order."""
    return [Patch(facecolor=REGION_COLORS[r], alpha=_ALPHA.get(r, 0.3), label=text)
            for r, text in BAND_LABELS.items() if r in drawn]  # fmt: skip


def _shade(axis, fmt: Format, span: tuple[float, float]) -> set[str]:
    """The bands where a value rounds to zero, a subnormal, a normal value, past max, within span; edges at the
    midpoints. Returns the bands drawn."""
    least, normal, top = np.log2(fmt.smallest_subnormal), float(fmt.emin), np.log2(fmt.max)
    edge = least - 1 if fmt.has_subnormals else normal - 1  # half the least subnormal (normal) rounds to zero
    spans = {"flush": (span[0], edge), "subnormal": (edge, normal) if fmt.has_subnormals else (0, 0),
             "normal": (normal, top), "overflow": (top, span[1])}  # fmt: skip
    drawn = set()
    for region, (start, stop) in spans.items():
        start, stop = max(start, span[0]), min(stop, span[1])  # a band beyond the window is not drawn
        if stop > start:
            axis.axvspan(start, stop, facecolor=REGION_COLORS[region], alpha=_ALPHA.get(region, 0.3), linewidth=0,
                         gid=f"{fmt.name}:{region}")  # fmt: skip
            drawn.add(region)
    return drawn
