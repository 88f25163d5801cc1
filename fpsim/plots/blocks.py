"""Figures of block-scaled formats: one block's shared scale and what each element becomes (kept, flushed to zero,
saturated), and the per-element error of block formats against per-tensor FP8 on the same gradient sample.

Invariant: every quantized value and status comes from fpsim.quantize_blocks or fpsim.explain_block (block formats)
or the training simulator's per-tensor scaled cast (element formats); the drawing only places them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fpsim.blocks import (
    BLOCK_FORMATS,
    BlockFormat,
    block_format_or_none,
    explain_block,
    get_block_format,
    quantize_blocks,
)
from fpsim.formats import Format, get_format
from fpsim.plots.layout import panel_grid, power_label
from fpsim.plots.style import REGION_COLORS
from fpsim.policies import scaled_cast
from fpsim.train import last_gradients, scenario

ERROR_FORMATS = ("mxfp4", "nvfp4", "fp8_e4m3")  # two block formats against per-tensor-scaled FP8
_KEPT, _FLUSHED, _SATURATED = "#0072B2", REGION_COLORS["flush"], "black"
_FLOOR = 2.0**-12  # relative errors below this (exact values included) are drawn on this line
_MIN_ERROR_WIDTH = 9.0  # inches: the error figure's title fits with one or two formats


def outlier_example(block: int = 32, outlier: float = 48.0, seed: int = 0) -> np.ndarray:
    """Two rows of `block` values: gradient-like magnitudes spread over 2^-7…2^0 with random signs, and the same
    row with element 5 (or the last) replaced by `outlier`."""
    rng = np.random.default_rng(seed)
    row = rng.choice([-1.0, 1.0], block) * np.exp2(rng.uniform(-7, 0, block))
    spiked = row.copy()
    spiked[min(5, block - 1)] = outlier
    return np.stack([row, spiked])


def _rows(blocks: object, fmt: BlockFormat) -> np.ndarray:
    rows = np.asarray(blocks, dtype=np.float64)
    rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
    if rows.ndim != 2 or rows.shape[1] == 0 or rows.shape[1] > fmt.block:
        raise ValueError(f"blocks must be one block or rows of one block each, at most {fmt.block} values for "
                         f"{fmt.name}; got shape {np.shape(blocks)}")  # fmt: skip
    if not np.all(np.isfinite(rows)):
        raise ValueError("blocks must hold finite values (a NaN or inf block has no scale to show)")
    return rows


def block_diagram(blocks: object, fmt: BlockFormat | str = "mxfp4", ax: object = None):
    """One panel per block (row of `blocks`): each element's |x| and what quantizing the block to `fmt` made of it
    (fpsim.explain_block), on a log2 axis shaded by what the block's scale X lets an element become: flushed to 0,
    subnormal, normal, above max (rounds to max; saturated where it rounds past). Returns (Figure, Axes array)."""
    fmt = get_block_format(fmt)
    rows = _rows(blocks, fmt)
    # nvfp4: one tensor scale for all the rows, as for one tensor, so that each block's e4m3 scale shows its choice
    tensor_scale = None if fmt.power_of_two else quantize_blocks(rows, fmt).tensor_scale
    explained = [explain_block(row, fmt, tensor_scale=tensor_scale) for row in rows]
    figure, grid = panel_grid(ax, len(rows), 1, (11, 1.6 + 2.7 * len(rows)), sharex=True)
    for axis, row, explanation in zip(grid[:, 0], rows, explained):
        _draw_block(axis, row, fmt, explanation)
    grid[-1, 0].set_xlabel("element index in the block")
    grid[0, 0].legend(handles=_legend(fmt.element), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                      frameon=False)  # fmt: skip
    if ax is None:
        shared = "" if fmt.power_of_two else f", under one tensor scale s_t = {tensor_scale:.4g} for both rows"
        figure.suptitle(f"{fmt.name}: {fmt.block} {fmt.element.name} elements share one {fmt.scale} scale X, chosen "
                        f"from the block's largest |x|{shared}.\n{_outcome(explained, fmt)}", fontsize=10)  # fmt: skip
    return figure, grid


def _outcome(explained: list, fmt: BlockFormat) -> str:
    """What the figure shows, from the results: whether the block with the larger |x| flushes more neighbours."""
    low, high = min(explained, key=lambda e: e.amax), max(explained, key=lambda e: e.amax)
    if low is high:
        return (f"Elements at or below half the smallest {fmt.element.name} value times X flush to zero: "
                f"{high.flushed} of {len(high.elements)} here.")  # fmt: skip
    size = len(high.elements)
    if high.flushed > low.flushed:
        return (f"A large element raises X, and its small neighbours fall below the smallest element value times X:"
                f"\nhere {high.flushed} of {size} flush to zero, against {low.flushed} in the block "
                "without it.")  # fmt: skip
    return (f"A large element raises X, yet {fmt.element.name}'s range below its max still holds the small "
            f"neighbours:\nhere {high.flushed} of {size} flush to zero, as in the block without it.")  # fmt: skip


def _draw_block(axis, row: np.ndarray, fmt: BlockFormat, explained) -> None:
    scale = explained.scale * explained.tensor_scale  # what one element unit is worth in this block
    status = np.array([element.status for element in explained.elements])
    magnitude, result = np.abs(row), np.abs([element.value for element in explained.elements])
    flushed, saturated = status == "flushed to 0", status == "saturated"
    element = fmt.element
    bottom = min(magnitude[magnitude > 0].min(initial=np.inf), scale * element.smallest_subnormal / 2) / 4
    top = max(magnitude.max(), scale * element.max) * 4
    _shade(axis, scale, element, bottom, top)
    index, zero_line = np.arange(row.size), bottom * 1.6  # flushed results, drawn at the foot of the log axis
    axis.vlines(index, np.where(flushed, zero_line, result), magnitude, color="0.6", linewidth=0.8, zorder=1)
    axis.scatter(index, magnitude, s=30, facecolors="white", edgecolors="black", linewidths=1, zorder=3)
    kept = ~flushed & ~saturated
    axis.scatter(index[kept], result[kept], s=22, color=_KEPT, marker="o", zorder=4)
    axis.scatter(index[flushed], np.full(flushed.sum(), zero_line), s=40, color=_FLUSHED, marker="v", zorder=4)
    axis.scatter(index[saturated], result[saturated], s=40, color=_SATURATED, marker="s", zorder=4)
    axis.set_yscale("log", base=2)
    axis.set_ylim(bottom, top)
    ticks = [t for t in axis.get_yticks() if zero_line * 2 < t < top]
    axis.set_yticks([zero_line, *ticks], ["0", *map(power_label, ticks)])  # the foot of the axis stands for 0
    axis.set_xlim(-0.8, row.size - 0.2)
    axis.set_ylabel("|x|")
    axis.set_title(f"{_scale_text(explained, fmt)};  {int(flushed.sum())} of {row.size} flushed to 0, "
                   f"{int(saturated.sum())} saturated at {element.max:g}·X", fontsize=9, loc="left")  # fmt: skip


def _scale_text(explained, fmt: BlockFormat) -> str:
    if fmt.power_of_two:
        exponent = int(np.log2(explained.scale))
        return (f"largest |x| = {explained.amax:.4g}:  X = 2^(⌊log2 amax⌋ − emax) = 2^({exponent + fmt.element.emax} − "
                f"{fmt.element.emax}) = {power_label(explained.scale)}")  # fmt: skip
    return (f"largest |x| = {explained.amax:.4g}:  X = e4m3 block scale {explained.scale:g} × tensor scale "
            f"{explained.tensor_scale:.4g} = {explained.scale * explained.tensor_scale:.4g}")  # fmt: skip


def _shade(axis, scale: float, element: Format, bottom: float, top: float) -> None:
    """What an element of |x| becomes under this scale: flushed below half the least subnormal times X, subnormal,
    normal, above max times X (clamped to max)."""
    edges = [bottom, scale * element.smallest_subnormal / 2, scale * element.smallest_normal, scale * element.max, top]
    for (low, high), region in zip(itertools.pairwise(edges), ("flush", "subnormal", "normal", "overflow")):
        axis.axhspan(low, high, color=REGION_COLORS[region], alpha=0.13 if region != "overflow" else 0.08, lw=0)


def _legend(element: Format) -> list:
    half_least = power_label(element.smallest_subnormal / 2)
    return [
        Line2D([], [], marker="o", color="black", markerfacecolor="white", linestyle="", label="|x| before"),
        Line2D([], [], marker="o", color=_KEPT, linestyle="", label="after: rounded"),
        Line2D([], [], marker="v", color=_FLUSHED, linestyle="", label="after: flushed to 0"),
        Line2D([], [], marker="s", color=_SATURATED, linestyle="", label=f"after: saturated at {element.max:g}·X"),
        Patch(color=REGION_COLORS["flush"], alpha=0.3, label=f"|x| ≤ {half_least}·X: flushes to 0"),
        Patch(color=REGION_COLORS["subnormal"], alpha=0.3, label=f"subnormal {element.name} values · X"),
        Patch(color=REGION_COLORS["normal"], alpha=0.3, label=f"normal {element.name} values · X"),
        Patch(color=REGION_COLORS["overflow"], alpha=0.2, label=f"above {element.max:g}·X: becomes {element.max:g}·X"),
    ]


# ---- per-element error ---------------------------------------------------------------------------------------
def hidden_gradient(name: str = "underflow", steps: int = 150) -> np.ndarray:
    """The gradient with respect to the hidden activations (batch × units) at the last step of an fp32 run of the
    scenario: a whole, dense backward tensor, the operand an MX GEMM would quantize. (`hidden_source` says so.)"""
    gradients = last_gradients(scenario(name, policy="fp32", steps=steps))
    return gradients[3]  # backward order: the logits' gradient, W1's, b1's, then the hidden layer's output gradient


def hidden_source(name: str = "underflow", steps: int = 150) -> str:
    return f"The hidden layer's gradient at step {steps} of an fp32 run ({name} scenario)"


def quantized_like(sample: np.ndarray, fmt: str) -> np.ndarray:
    """`sample` through a block format (blocks along its last axis), or through an element format with the fp8
    policy's per-tensor scaling (the power of two that brings amax just under the format's max)."""
    block = block_format_or_none(fmt)
    if block is not None:
        return quantize_blocks(sample, block).values
    return scaled_cast(sample, get_format(fmt))


def check_error_format(name: object) -> str:
    """A block format's name, or an element format's (per-tensor scaled); ValueError naming both lists otherwise."""
    if isinstance(name, str) and block_format_or_none(name) is not None:
        return name
    try:
        fmt = get_format(name)
    except (ValueError, TypeError):
        raise ValueError(f"formats: {name!r} is neither a block format ({', '.join(BLOCK_FORMATS)}) nor an element "
                         "format such as fp8_e4m3") from None  # fmt: skip
    if not (fmt.signed and fmt.has_zero):  # E8M0: no sign, no zero, so no per-tensor scaled gradient either
        raise ValueError(f"formats: {fmt.name} has no {'sign' if not fmt.signed else 'zero'}, so it cannot hold a "
                         f"gradient; give a block format ({', '.join(BLOCK_FORMATS)}) or a signed element format such "
                         "as fp8_e4m3")  # fmt: skip
    return fmt.name


def element_errors(sample: object, formats: Sequence[str] = ERROR_FORMATS) -> dict[str, np.ndarray]:
    """Format name → |q − g| / |g| for every nonzero g of `sample` (1 where g flushed to zero); blocks run along
    the sample's last axis."""
    formats = [check_error_format(name) for name in formats]
    values = np.asarray(sample, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("sample must hold finite values (a block with NaN or inf has no scale)")
    if not np.any(values != 0):
        raise ValueError("sample holds no nonzero value: there is no relative error to show")
    nonzero = values != 0
    return {fmt: np.abs(quantized_like(values, fmt) - values)[nonzero] / np.abs(values[nonzero]) for fmt in formats}


def block_error(
    sample: object, formats: Sequence[str] = ERROR_FORMATS, ax: object = None, source: str = "One gradient tensor"
):
    """Per-element relative error of `sample` quantized to each format (block formats in blocks along the sample's
    last axis; element formats with per-tensor scaling): one scatter against |g| per format, then the fraction of
    elements with error at most e, all formats together. `source` names the sample in the title.
    Returns (Figure, Axes array)."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    if not formats:
        raise ValueError("formats must name at least one format")
    errors = element_errors(sample, formats)
    values = np.asarray(sample, dtype=np.float64)
    magnitude = np.abs(values[values != 0])
    width = max(3.6 * (len(formats) + 1) + 0.6, _MIN_ERROR_WIDTH)  # room for the two-line title
    figure, grid = panel_grid(ax, 1, len(formats) + 1, (width, 4.4))
    for axis, (fmt, error), color in zip(grid[0], errors.items(), _ERROR_COLORS):
        _scatter(axis, magnitude, error, fmt, color)
    grid[0, 0].set_ylabel("relative error |q − g| / |g|\n(top line: flushed to 0; bottom: exact)")
    _cumulative(grid[0, -1], errors)
    if ax is None:
        shape = " × ".join(map(str, values.shape))
        figure.suptitle(f"{source} ({shape}, {magnitude.size} nonzero values):\nthe per-element relative error in "
                        "each format", fontsize=10)  # fmt: skip
    return figure, grid


_ERROR_COLORS = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9") * 4


def _scatter(axis, magnitude: np.ndarray, error: np.ndarray, fmt: str, color: str) -> None:
    axis.scatter(magnitude, np.clip(error, _FLOOR, None), s=5, alpha=0.35, color=color, lw=0)
    axis.axhline(1, color="0.5", linewidth=0.8, linestyle=":")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log", base=2)
    axis.set_ylim(_FLOOR / 2, 2)
    axis.set_xlabel("|g|")
    axis.set_title(f"{_describe(fmt)}\nmedian error {100 * np.median(error):.3g}%, flushed to 0: "
                   f"{100 * np.mean(error == 1):.3g}%", fontsize=9)  # fmt: skip


def _cumulative(axis, errors: dict[str, np.ndarray]) -> None:
    for (fmt, error), color in zip(errors.items(), _ERROR_COLORS):
        ordered = np.sort(np.clip(error, _FLOOR, None))
        axis.step(ordered, np.arange(1, ordered.size + 1) / ordered.size, where="post", label=fmt, color=color)
    axis.set_xscale("log", base=2)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("relative error e")
    axis.set_ylabel("fraction of elements with error ≤ e")
    axis.set_title("all formats: the fraction with error ≤ e", fontsize=9)
    axis.legend(fontsize=8, loc="upper left", frameon=False)


def _describe(fmt: str) -> str:
    block = block_format_or_none(fmt)
    if block is not None:
        return f"{block.name}: {block.element}, blocks of {block.block},\n{block.scale} scale per block"
    return f"{get_format(fmt).name}:\none power-of-two scale per tensor"
