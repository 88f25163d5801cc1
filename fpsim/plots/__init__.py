"""fpsim.plots: figures of formats, gradients and training runs, drawn with matplotlib (no pyplot state).

Every function returns (Figure, Axes) and accepts `ax=`; save with `figure.savefig(path)`.
"""

from fpsim.plots.formats import bit_layout, number_line, precision_diagram, range_diagram, rounding_error
from fpsim.plots.gradients import gradient_bands, gradient_histogram
from fpsim.plots.training import flushed_fraction, loss_curves, scale_trajectory, simulator_vs_hardware, training_figure

__all__ = [
    "bit_layout",
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
