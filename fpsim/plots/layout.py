"""Figure scaffolding shared by every plot: figures without pyplot state, panel grids, exact labels in mathtext.

Invariant: a plot function given `ax=` draws only into those Axes; without it, it makes its own Figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fpsim.formats import Format, get_format


def axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """The given Axes and its Figure, or a new Figure (no pyplot state, any backend) with one Axes."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be one matplotlib Axes here; got {type(ax).__name__}")
        return ax.figure, ax
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.add_subplot()


def panel_grid(ax: object, rows: int, columns: int, size: tuple[float, float], **shared: object):
    """(Figure, Axes array of shape (rows, columns)): the given Axes, or a new Figure with that grid."""
    if ax is None:
        figure = Figure(figsize=size, layout="constrained")
        return figure, figure.subplots(rows, columns, squeeze=False, **shared)
    grid = np.asarray(ax, dtype=object).reshape(-1)
    if grid.size != rows * columns or not all(isinstance(a, Axes) for a in grid):
        raise ValueError(f"ax must hold {rows * columns} Axes ({rows} rows × {columns} columns) here; got {grid.size}")
    return grid[0].figure, grid.reshape(rows, columns)


def formats_list(formats: Sequence[Format | str] | Format | str) -> list[Format]:
    items = [formats] if isinstance(formats, (str, Format)) else list(formats)
    if not items:
        raise ValueError("formats must name at least one format")
    return [get_format(f) for f in items]


def power_label(value: float) -> str:
    """A power of two as mathtext ($2^{-9}$); any other value as its shortest decimal."""
    mantissa, exponent = math.frexp(value)
    return f"$2^{{{exponent - 1}}}$" if mantissa == 0.5 else f"{value:g}"


def max_label(fmt: Format) -> str:
    """max exactly: as an integer when short, else as (2 − k·2^-nmant)·2^emax in mathtext."""
    if fmt.max < 1e6:
        return f"{fmt.max:g}"
    if fmt.nmant == 0:  # e8m0: max is a power of two
        return power_label(fmt.max)
    k = round((2 - fmt.max / 2.0**fmt.emax) * 2**fmt.nmant)  # max = (2 - k·2^-nmant)·2^emax, k = 1 or 2
    times = "" if k == 1 else f"{k}\\cdot "
    return f"$(2-{times}2^{{-{fmt.nmant}}})\\cdot 2^{{{fmt.emax}}}$"
