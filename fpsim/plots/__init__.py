"""fpsim.plots: figures of formats, values, rounding, gradients, training runs, the simulator against torch, the
error of accumulation against K and block-scaled formats, drawn with matplotlib (no pyplot state).

Every drawing function returns (Figure, Axes) and accepts `ax=` (one Axes, or as many as its panels); save with
`figure.savefig(path)`. `dot_error_curves` measures, with fpsim's models, the curves `accumulation_error` draws.
"""

from fpsim.plots.accumulation import accumulation_error, dot_error_curves
from fpsim.plots.blocks import block_diagram, block_error
from fpsim.plots.comparison import simulator_vs_hardware
from fpsim.plots.formats import precision_diagram, range_diagram
from fpsim.plots.gradients import gradient_bands, gradient_histogram
from fpsim.plots.rounding import rounding_error
from fpsim.plots.training import flushed_fraction, loss_curves, scale_trajectory, training_figure
from fpsim.plots.values import bit_layout, number_line

__all__ = [
    "accumulation_error",
    "bit_layout",
    "block_diagram",
    "block_error",
    "dot_error_curves",
    "flushed_fraction",
    "gradient_bands",
    "gradient_histogram",
    "loss_curves",
    "number_line",
    "precision_diagram",
    "range_diagram",
    "rounding_error",
    "scale_trajectory",
    "simulator_vs_hardware",
    "training_figure",
]
