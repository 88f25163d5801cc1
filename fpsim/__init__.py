"""fpsim: bit-exact floating-point formats, rounding and IEEE exception counts for mixed precision training.

Invariant: `import fpsim` loads only the numerics (NumPy); the training, plotting and torch modules load on
first use (`fpsim.train`, `fpsim.plots`, ...), so matplotlib, torch and hypothesis never load with it.
"""

from fpsim.accumulation import MODELS, AccumulationModel, dot, matmul, sum
from fpsim.arithmetic import abs, add, div, fma, mul, neg, sqrt, sub
from fpsim.array import FPArray, array
from fpsim.blocks import BLOCK_FORMATS, BlockFormat, explain_block, get_block_format, quantize_blocks
from fpsim.calc import calc
from fpsim.codec import classify, decode, encode, fields, next_down, next_up, round
from fpsim.explanation import Explanation, explain
from fpsim.flags import Flags, track_flags
from fpsim.formats import (
    BF16,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    FP16,
    FP32,
    FP64,
    PRESETS,
    TF32,
    Format,
    get_format,
)
from fpsim.matrix_unit import MATRIX_UNITS, MatrixUnit, explain_dot
from fpsim.rounding import ROUNDING_MODES

__version__ = "0.1.0"

# Submodules reached as attributes (`fpsim.train.run`) and imported on first use: they pull in heavy libraries
_LAZY_SUBMODULES = (
    "compare",
    "data",
    "demo",
    "nn",
    "plots",
    "policies",
    "report",
    "scaling",
    "strategies",
    "torch",
    "train",
)


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib  # here, not at the top: dir(fpsim) lists fpsim's API only

        return importlib.import_module(f"fpsim.{name}")  # the import also sets it as an attribute of fpsim
    raise AttributeError(f"module 'fpsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_SUBMODULES])


__all__ = [
    "BF16",
    "BLOCK_FORMATS",
    "FP4_E2M1",
    "FP6_E2M3",
    "FP6_E3M2",
    "FP8_E4M3",
    "FP8_E5M2",
    "FP16",
    "FP32",
    "FP64",
    "MATRIX_UNITS",
    "MODELS",
    "PRESETS",
    "ROUNDING_MODES",
    "TF32",
    "AccumulationModel",
    "BlockFormat",
    "Explanation",
    "FPArray",
    "Flags",
    "Format",
    "MatrixUnit",
    "abs",
    "add",
    "array",
    "calc",
    "classify",
    "decode",
    "div",
    "dot",
    "encode",
    "explain",
    "explain_block",
    "explain_dot",
    "fields",
    "fma",
    "get_block_format",
    "get_format",
    "matmul",
    "mul",
    "neg",
    "next_down",
    "next_up",
    "quantize_blocks",
    "round",
    "sqrt",
    "sub",
    "sum",
    "track_flags",
]
