"""How a dot product's error grows with its length K under each accumulation: exact then rounded once, fp32 on
CUDA cores, the matrix units of one input format, and Hopper fp8 with and without DeepSeek's promotion.

Invariant: every curve is measured on the same inputs (fp8 e4m3 values, which every model takes exactly), and
the drawing only reads the curves `dot_error_curves` measured with fpsim's public models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FixedLocator, NullLocator

import fpsim
from fpsim.matrix_unit import MATRIX_UNITS
from fpsim.plots.layout import axes

KS = tuple(2**p for p in range(4, 13))  # 16 … 4096
DATA = "fp8_e4m3"  # the inputs: representable in every matrix unit's input format, so all see the same data
FP8_UNIT, PROMOTE_EVERY = "h100_fp8_e4m3", 128  # DeepSeek-V3 §3.3.2
EXACT, FP32 = "exact sum, rounded once to fp32", "fp32 sequential (CUDA cores)"
_FP8 = MATRIX_UNITS[FP8_UNIT]
FP8 = f"{FP8_UNIT}: {_FP8.group} products, {_FP8.fraction_bits} bits"
PROMOTED = f"{FP8_UNIT}, promote_every={PROMOTE_EVERY}"
_SCALE = 2.0**18  # e4m3 products are multiples of 2^-18 (2^-9 squared): scaled, they are integers
_UNIT_COLORS = ("#009E73", "#CC79A7", "#0072B2", "#56B4E9")  # Okabe–Ito; fp32 black, fp8 vermilion
_LOOKS = {
    EXACT: {"color": "0.45", "linestyle": ":", "marker": "o"},
    FP32: {"color": "black", "linestyle": "-", "marker": "s"},
    FP8: {"color": "#D55E00", "linestyle": "-", "marker": "v", "linewidth": 2.2},
    PROMOTED: {"color": "#D55E00", "linestyle": "--", "marker": "^"},
}


def unit_curves(inputs: str) -> dict[str, list[str]]:
    """Curve label (names, group, fraction bits) -> the presets taking `inputs` (aliases left out) that share
    every numeric parameter, so that identical units (H100 and B200 fp16) make one curve."""
    groups: dict[tuple, list[str]] = {}
    for name, unit in MATRIX_UNITS.items():
        if unit.name == name and fpsim.get_format(inputs).name in unit.inputs:  # h200_* are aliases of h100_*
            key = (unit.group, unit.fraction_bits, unit.input_truncation, unit.split, unit.accumulator_bits)
            groups.setdefault(key, []).append(name)
    if not groups:
        raise ValueError(f"inputs: no matrix unit takes {inputs!r}; try fp16, bf16 or tf32")
    return {f"{' = '.join(names)}: {key[0]} products, {key[1]} bits": names for key, names in groups.items()}


def dot_error_curves(ks: Sequence[int] = KS, inputs: str = "fp16", rows: int = 64, seed: int = 0) -> dict:
    """Mean relative error, |computed − exact| / exact, of `rows` dot products of positive e4m3 values at each K
    (prefixes of the same vectors): label -> array over ks. Curves: exact then one rounding, fp32 sequential,
    each matrix unit taking `inputs`, and h100 fp8 with and without promote_every=128."""
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 or k > 2**16 for k in ks):
        raise ValueError(f"ks must be lengths between 1 and 65536; got {ks}")  # 2^16 · 2^35 < 2^53: sums exact
    rng = np.random.default_rng(seed)
    a, b = (_positive_e4m3(rng, shape) for shape in ((rows, max(ks)), (max(ks),)))
    models = {FP32: {"model": "fp32"}}
    models |= {label: {"model": names[0]} for label, names in unit_curves(inputs).items()}
    models |= {FP8: {"model": FP8_UNIT}, PROMOTED: {"model": FP8_UNIT, "promote_every": PROMOTE_EVERY}}
    curves = {label: np.empty(len(ks)) for label in (EXACT, *models)}
    for column, k in enumerate(ks):
        x, y = a[:, :k], b[:k]
        scaled = (x * y * _SCALE).astype(np.int64)  # exact integers < 2^35, and their sum < 2^53: no rounding
        exact = scaled.sum(axis=1).astype(np.float64) / _SCALE
        computed = {EXACT: fpsim.round(exact, "fp32")}
        computed |= {label: fpsim.matmul(x, y, **options) for label, options in models.items()}
        for label, values in computed.items():
            curves[label][column] = np.mean(np.abs(np.asarray(values, dtype=np.float64) - exact) / exact)
    return curves


def _positive_e4m3(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """|N(0,1)| times 2^u, u uniform in -6…6, rounded to e4m3: products spread over 2^32, so even 16 of them
    rarely sum exactly in fp32, and every rounding is visible."""
    spread = np.exp2(rng.integers(-6, 7, size=shape))
    return fpsim.round(np.abs(rng.standard_normal(shape)) * spread, DATA, overflow="saturate")


def accumulation_error(ks: Sequence[int], curves: Mapping[str, Sequence[float]], ax: Axes | None = None):
    """The curves of `dot_error_curves` against K on log axes, fp8's last points labelled in percent.
    Returns (Figure, Axes)."""
    ks = np.asarray(ks, dtype=float)
    if any(len(values) != len(ks) for values in curves.values()):
        raise ValueError("curves must hold one error per K")
    figure, axis = axes(ax, (11, 5.2))
    unit_colors = iter(_UNIT_COLORS * len(curves))
    markers = iter("DPX*<>" * len(curves))
    for label, values in curves.items():
        look = _LOOKS.get(label) or {"color": next(unit_colors), "linestyle": "-.", "marker": next(markers)}
        shown = np.where(np.asarray(values, dtype=float) > 0, values, np.nan)  # an exact 0 has no place on a log axis
        axis.plot(ks, shown, label=label, markersize=5, linewidth=look.pop("linewidth", 1.5), gid=label, **look)
    for label in (FP8, PROMOTED):
        if label in curves:
            axis.annotate(f"{100 * curves[label][-1]:.2g}%", (ks[-1], curves[label][-1]), xytext=(6, 0),
                          textcoords="offset points", va="center", fontsize=9, color="#D55E00")  # fmt: skip
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.xaxis.set_major_locator(FixedLocator(ks))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xticklabels([f"{k:g}" for k in ks])
    axis.set_xlim(ks[0] / 1.3, ks[-1] * 1.6)  # room for the percent labels
    axis.axhline(2.0**-24, color="0.75", linewidth=0.8, zorder=0)
    axis.text(ks[-1], 2.0**-24 * 1.15, "fp32 unit roundoff $2^{-24}$", fontsize=8, color="0.4", va="bottom",
              ha="right")  # fmt: skip
    axis.set_xlabel("K, the length of the dot product")
    axis.set_ylabel("mean relative error  |computed − exact| / exact")
    axis.grid(True, which="major", color="0.92")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # beside: clear of the data
    if ax is None:
        axis.set_title("Dot products of K positive fp8-e4m3 values (the same data for every curve): a matrix unit "
                       "truncates,\nHopper's fp8 unit keeps 13 bits, and promoting to fp32 every 128 terms "
                       "(DeepSeek-V3) repairs it", fontsize=10)  # fmt: skip
    return figure, axis
