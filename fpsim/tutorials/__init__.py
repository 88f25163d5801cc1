"""The step-through tutorials: finding them, stepping through one in the terminal, exporting one as a notebook.

Invariant: the tutorial files (top-level tutorials/ in a checkout, fpsim/_tutorials in a wheel) are the only
source; the terminal stepper and the notebook both read them through `source`.
"""

from fpsim.tutorials.notebook import notebook, write_notebook
from fpsim.tutorials.source import FOLDER_VARIABLE, Cell, Tutorial, discover, folder, get, load
from fpsim.tutorials.stepper import OUT_VARIABLE, CellError, step_through

__all__ = [
    "FOLDER_VARIABLE",
    "OUT_VARIABLE",
    "Cell",
    "CellError",
    "Tutorial",
    "discover",
    "folder",
    "get",
    "load",
    "notebook",
    "step_through",
    "write_notebook",
]
