"""fpsim.plots: figures of formats, values, rounding, gradients, training runs and the simulator against torch,
drawn with matplotlib (no pyplot state).

Every function returns (Figure, Axes) and accepts `ax=` (one Axes, or as many as its panels); save with
`figure.savefig(path)`.
"""

from fpsim.plots.comparison import simulator_vs_hardware
from fpsim.plots.formats import precision_diagram, range_diagram
from fpsim.plots.gradients import gradient_bands, gradient_histogram
from fpsim.plots.rounding import rounding_error
from fpsim.plots.training import flushed_fraction, loss_curves, scale_trajectory, training_figure
from fpsim.plots.values import bit_layout, number_line

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
